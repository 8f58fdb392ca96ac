//! The modes of the bundled meteor.conf for today's browsers (`sse`,
//! `fetchstream`, `jsonlongpoll`) byte for byte over real sockets: headers,
//! `retry:`, channel-info events, pings, multi-line `data:`, JSON escaping,
//! shutdown messages; `~cors~` with `AllowedOrigins`; `Last-Event-ID`
//! resuming several channels on a standalone node.

mod common;

use common::*;
use std::time::Duration;

/// The bundled meteor.conf with pings off (a ping in the middle would break
/// the exact comparisons) and `extra` on the command line.
fn bundled(extra: &[&str]) -> Server {
    let mut args = vec!["-PingInterval", "0"];
    args.extend_from_slice(extra);
    Server::start(&args, include_str!("../meteor.conf"))
}

/// The exact `sse` head with `cors` lines, `retry:` included.
fn sse_head(cors: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\nX-Accel-Buffering: no\r\n{cors}\r\n\
         retry: 2000\n\n"
    )
}

fn fetchstream_head(cors: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/x-ndjson; charset=utf-8\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\nX-Accel-Buffering: no\r\n{cors}\r\n"
    )
}

fn jsonlongpoll_head(cors: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/x-ndjson; charset=utf-8\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\n{cors}\r\n"
    )
}

/// The `sse` channel-info event.
fn sse_info(channel: &str, last: u64) -> String {
    format!("event: meteor.channel\ndata: {{\"channel\":\"{channel}\",\"lastMsgID\":{last}}}\n\n")
}

/// The JSON channel-info line of `fetchstream` and `jsonlongpoll`.
fn json_info(channel: &str, last: u64) -> String {
    format!("{{\"channel\":\"{channel}\",\"lastMsgID\":{last}}}\n")
}

/// The JSON line of one event; `text` is already escaped.
fn json_event(id: u64, channel: &str, text: &str) -> String {
    format!("{{\"id\":{id},\"channel\":\"{channel}\",\"text\":\"{text}\"}}\n")
}

/// Asks for the reply to end with the connection, as every reply did
/// before `KeepAlive`.
const CLOSE: &str = "Connection: close\r\n";

/// A GET on the subscriber port with extra header lines.
fn get_with(s: &Server, path: &str, headers: &str) -> Conn {
    s.request(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}User-Agent: t\r\n\r\n")
            .as_bytes(),
    )
}

/// Publishes `body` (any bytes, line breaks included) with `POST /pub` and
/// asserts the exact reply, with id `id`.
fn publish_http(s: &Server, channel: &str, body: &[u8], id: u64) {
    let mut c = Conn::connect(s.ctl_addr);
    let mut req = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    c.send(&req);
    let json = format!("{{\"id\":{id}}}\n");
    let want = format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    assert_eq!(
        show(&c.read_to_end(WAIT)),
        show(want.as_bytes()),
        "POST /pub/{channel}"
    );
}

fn disconnect(s: &Server, hostid: &str) {
    let mut d = s.http_get(&format!("/disconnect/{hostid}"));
    d.read_to_end(WAIT);
}

// ---------------------------------------------------------------------------
// sse
// ---------------------------------------------------------------------------

#[test]
fn sse_stream_byte_for_byte() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("news", "hello world"), 1);
    let mut c = s.http_get("/push/h1/sse/news.h/other");
    c.expect_str(&sse_head(""));
    // One channel-info event per requested channel, in request order.
    c.expect_str(&sse_info("news", 1));
    c.expect_str(&sse_info("other", 0));
    c.expect_str("id: 1\nevent: news\ndata: hello world\n\n");
    // Each line break of the text (LF, CRLF, a lone CR) starts a new data:
    // line; a trailing one leaves an empty data: line.
    publish_http(&s, "other", b"line one\nline two\r\nline three\rend", 2);
    c.expect_str(
        "id: 2\nevent: other\ndata: line one\ndata: line two\ndata: line three\ndata: end\n\n",
    );
    publish_http(&s, "news", b"ends in a break\n", 3);
    c.expect_str("id: 3\nevent: news\ndata: ends in a break\ndata: \n\n");
    // Quotes, backslashes and markup are not escaped in an event stream.
    publish_http(&s, "news", b"<b>\"q\" \\ 'x'</b>", 4);
    c.expect_str("id: 4\nevent: news\ndata: <b>\"q\" \\ 'x'</b>\n\n");
    publish_http(&s, "news", b"", 5);
    c.expect_str("id: 5\nevent: news\ndata: \n\n");
    disconnect(&s, "h1");
    c.expect_str("event: eof\ndata: \n\n");
    c.expect_eof();
}

#[test]
fn sse_and_fetchstream_pings() {
    let s = Server::start(&["-PingInterval", "3"], include_str!("../meteor.conf"));
    let mut sse = s.http_get("/push/h1/sse/a");
    sse.expect_str(&format!("{}{}", sse_head(""), sse_info("a", 0)));
    let mut fetch = s.http_get("/push/h2/fetchstream/a");
    fetch.expect_str(&format!("{}{}", fetchstream_head(""), json_info("a", 0)));
    // Nothing else comes first: the next bytes are exactly one ping.
    sse.expect_within(b": ping\n\n", Duration::from_millis(4500));
    fetch.expect_within(b"{\"ping\":true}\n", Duration::from_millis(4500));
    let mut ctl = s.ctl();
    ctl.add("a", "after the ping");
    sse.expect_str("id: 1\nevent: a\ndata: after the ping\n\n");
    fetch.expect_str(&json_event(1, "a", "after the ping"));
}

// ---------------------------------------------------------------------------
// fetchstream and jsonlongpoll: JSON lines
// ---------------------------------------------------------------------------

/// Text with everything `~text:json~` must escape, and what it becomes.
const NASTY: &[u8] =
    b"say \"hi\" \\ back </script><!-- & 'q' \x01\x1f\x7f\ttab\nlf\rcr \xe2\x80\xa8ls \xe2\x80\xa9ps \xc3\xa9";
const NASTY_JSON: &str = "say \\\"hi\\\" \\\\ back \\u003c/script\\u003e\\u003c!-- \\u0026 \\u0027q\\u0027 \
    \\u0001\\u001f\\u007f\\ttab\\nlf\\rcr \\u2028ls \\u2029ps \u{e9}";

#[test]
fn fetchstream_byte_for_byte_with_json_escaping() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "plain"), 1);
    let mut c = s.http_get("/push/h1/fetchstream/a.h/b");
    c.expect_str(&fetchstream_head(""));
    c.expect_str(&json_info("a", 1));
    c.expect_str(&json_info("b", 0));
    c.expect_str(&json_event(1, "a", "plain"));
    publish_http(&s, "b", NASTY, 2);
    c.expect_str(&json_event(2, "b", NASTY_JSON));
    publish_http(&s, "a", b"", 3);
    c.expect_str(&json_event(3, "a", ""));
    disconnect(&s, "h1");
    c.expect_str("{\"eof\":true}\n");
    c.expect_eof();
}

#[test]
fn jsonlongpoll_backlog_or_one_event_then_close() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    // Nothing cached after the id asked for: the reply waits for one event.
    // (Kept-alive replies, without Connection: close, are in keepalive.rs.)
    let mut c = get_with(&s, "/push/h1/jsonlongpoll/a.r1/b.r1", CLOSE);
    c.expect_str(&jsonlongpoll_head(""));
    c.expect_str(&format!("{}{}", json_info("a", 0), json_info("b", 0)));
    c.expect_silence(Duration::from_millis(200));
    publish_http(&s, "b", NASTY, 1);
    ctl.add("a", "second");
    c.expect_str(&json_event(1, "b", NASTY_JSON));
    c.expect_eof();
    // The client comes back with .r<next id> per channel: the backlog of
    // both channels, merged in id order, then close (MaxMessages 1 is
    // reached by the backlog).
    ctl.add("b", "third");
    let mut c = get_with(&s, "/push/h1/jsonlongpoll/a.r2/b.r2", CLOSE);
    c.expect_str(&format!(
        "{}{}{}{}{}",
        jsonlongpoll_head(""),
        json_info("a", 2),
        json_info("b", 3),
        json_event(2, "a", "second"),
        json_event(3, "b", "third"),
    ));
    c.expect_eof();
}

// ---------------------------------------------------------------------------
// ~cors~ and AllowedOrigins
// ---------------------------------------------------------------------------

fn allow(origin: &str) -> String {
    format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n")
}

#[test]
fn cors_lines_only_for_allowed_origins() {
    // meteor.conf: AllowedOrigins http://127.0.0.1:4670 http://localhost:4670
    let s = bundled(&[]);
    let cases: [(&str, String); 5] = [
        ("http://127.0.0.1:4670", allow("http://127.0.0.1:4670")),
        ("http://localhost:4670", allow("http://localhost:4670")),
        ("http://evil.example", String::new()),
        // Exact match only: another port or scheme is another origin.
        ("http://localhost:4671", String::new()),
        ("https://localhost:4670", String::new()),
    ];
    for (i, (origin, cors)) in cases.iter().enumerate() {
        let origin_line = format!("Origin: {origin}\r\n");
        let mut c = get_with(&s, &format!("/push/s{i}/sse/a"), &origin_line);
        c.expect_str(&format!("{}{}", sse_head(cors), sse_info("a", 0)));
        let mut c = get_with(&s, &format!("/push/f{i}/fetchstream/a"), &origin_line);
        c.expect_str(&format!("{}{}", fetchstream_head(cors), json_info("a", 0)));
        let close = format!("{origin_line}{CLOSE}");
        let mut c = get_with(&s, &format!("/push/j{i}/jsonlongpoll/a.h"), &close);
        c.expect_str(&format!("{}{}", jsonlongpoll_head(cors), json_info("a", 0)));
    }
    // No Origin at all: no lines.
    let mut c = get_with(&s, "/push/n/sse/a", "");
    c.expect_str(&format!("{}{}", sse_head(""), sse_info("a", 0)));
}

#[test]
fn cors_lines_on_the_404_and_disconnect_replies_too() {
    // A page must be able to read why it was refused.
    let s = bundled(&[]);
    let origin = "Origin: http://localhost:4670\r\n";
    let cors = allow("http://localhost:4670");
    let mut c = get_with(&s, "/push/h1/sse/bad!name", origin);
    c.expect_str(&sse_head(&cors).replace("200 OK", "404 Not Found"));
    c.expect_eof();
    let mut c = get_with(&s, "/push/h1/fetchstream/a.r", origin);
    c.expect_str(&fetchstream_head(&cors).replace("200 OK", "404 Not Found"));
    c.expect_eof();
    // /disconnect answers with the global header (the default template,
    // which has no ~cors~).
    let mut c = get_with(&s, "/disconnect/h1", origin);
    c.expect_str(&default_header("200 OK"));
    c.expect_eof();
}

#[test]
fn cors_with_allowed_origins_star() {
    let s = bundled(&["-AllowedOrigins", "*"]);
    // Any origin is echoed back...
    let mut c = get_with(
        &s,
        "/push/h1/sse/a",
        "Origin: http://anywhere.example:8080\r\n",
    );
    c.expect_str(&format!(
        "{}{}",
        sse_head(&allow("http://anywhere.example:8080")),
        sse_info("a", 0)
    ));
    let mut c = get_with(&s, "/push/h2/fetchstream/a", "Origin: null\r\n");
    c.expect_str(&format!(
        "{}{}",
        fetchstream_head(&allow("null")),
        json_info("a", 0)
    ));
    // ...and without an Origin the wildcard is sent, without Vary.
    let mut c = get_with(&s, "/push/h3/jsonlongpoll/a.h", CLOSE);
    c.expect_str(&format!(
        "{}{}",
        jsonlongpoll_head("Access-Control-Allow-Origin: *\r\n"),
        json_info("a", 0)
    ));
}

#[test]
fn no_cors_lines_without_allowed_origins() {
    let s = bundled(&["-AllowedOrigins", ""]);
    let mut c = get_with(&s, "/push/h1/sse/a", "Origin: http://127.0.0.1:4670\r\n");
    c.expect_str(&format!("{}{}", sse_head(""), sse_info("a", 0)));
}

// ---------------------------------------------------------------------------
// Last-Event-ID on a standalone node
// ---------------------------------------------------------------------------

/// 1:a 2:b 3:c 4:a 5:b 6:c 7:a
fn publish_abc(ctl: &mut Controller) {
    for (i, ch) in ["a", "b", "c", "a", "b", "c", "a"].iter().enumerate() {
        assert_eq!(ctl.add(ch, &format!("m{}", i + 1)), i as u64 + 1);
    }
}

#[test]
fn last_event_id_resumes_every_channel_after_it() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    publish_abc(&mut ctl);
    // Whatever the suffixes say (none, .b0, .h), every channel resumes
    // after id 3, merged in id order.
    let mut c = get_with(&s, "/push/h1/sse/a/b.b0/c.h", "Last-Event-ID: 3\r\n");
    c.expect_str(&format!(
        "{}{}{}{}\
         id: 4\nevent: a\ndata: m4\n\n\
         id: 5\nevent: b\ndata: m5\n\n\
         id: 6\nevent: c\ndata: m6\n\n\
         id: 7\nevent: a\ndata: m7\n\n",
        sse_head(""),
        sse_info("a", 7),
        sse_info("b", 5),
        sse_info("c", 6),
    ));
    // Then live events of all three.
    ctl.add("c", "m8");
    ctl.add("d", "not asked for");
    ctl.add("b", "m10");
    c.expect_str("id: 8\nevent: c\ndata: m8\n\nid: 10\nevent: b\ndata: m10\n\n");
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn last_event_id_in_other_modes_and_at_the_edges() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    publish_abc(&mut ctl);
    // fetchstream, the URL asking for everything: only what follows id 5.
    let mut c = get_with(
        &s,
        "/push/h1/fetchstream/c.h/a.h/b.h",
        "Last-Event-ID: 5\r\n",
    );
    c.expect_str(&format!(
        "{}{}{}{}{}{}",
        fetchstream_head(""),
        json_info("c", 6),
        json_info("a", 7),
        json_info("b", 5),
        json_event(6, "c", "m6"),
        json_event(7, "a", "m7"),
    ));
    // The newest id: nothing to resume, the stream waits for new events.
    let mut d = get_with(&s, "/push/h2/sse/a/b", "Last-Event-ID: 7\r\n");
    d.expect_str(&format!(
        "{}{}{}",
        sse_head(""),
        sse_info("a", 7),
        sse_info("b", 5)
    ));
    d.expect_silence(Duration::from_millis(200));
    // 0: everything cached, in id order.
    let mut e = get_with(
        &s,
        "/push/h3/jsonlongpoll/b/c",
        &format!("Last-Event-ID: 0\r\n{CLOSE}"),
    );
    e.expect_str(&format!(
        "{}{}{}{}{}{}{}",
        jsonlongpoll_head(""),
        json_info("b", 5),
        json_info("c", 6),
        json_event(2, "b", "m2"),
        json_event(3, "c", "m3"),
        json_event(5, "b", "m5"),
        json_event(6, "c", "m6"),
    ));
    e.expect_eof();
    ctl.add("b", "m8");
    c.expect_str(&json_event(8, "b", "m8"));
    d.expect_str("id: 8\nevent: b\ndata: m8\n\n");
}
