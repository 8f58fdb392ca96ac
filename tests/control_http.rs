//! HTTP on the controller port against hostile pages and sloppy framing,
//! over real sockets: a page's `Origin` not in `AllowedOrigins` is refused,
//! a `Host` the port does not answer for (DNS rebinding) is refused,
//! HTTP/1.1 needs `Host`, `Content-Length` is one run of digits given once,
//! `Transfer-Encoding` is not implemented, and `Expect: 100-continue` gets
//! its interim response. Every refusal is checked byte for byte, and that
//! nothing was published (a subscriber and `LISTCHANNELS`).

mod common;

use common::*;
use std::time::Duration;

/// The exact response to a request refused from its head: the status,
/// a body saying why, and close.
fn refusal(status: &str, why: &str) -> String {
    let body = format!("{status}: {why}\n");
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exact response to a publish that got `id`.
fn published(id: u64, extra: &str, close: bool) -> String {
    let body = format!("{{\"id\":{id}}}\n");
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\n{extra}{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Sends `raw` on a new controller connection; everything until it closes.
fn send_all(s: &Server, raw: &str) -> String {
    let mut c = Conn::connect(s.ctl_addr);
    c.send(raw.as_bytes());
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

/// `POST /pub/<channel>` with `headers` (each ending in CRLF) and `body`.
fn post(channel: &str, headers: &str, body: &str) -> String {
    format!(
        "POST /pub/{channel} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const LOCAL: &str = "Host: 127.0.0.1\r\n";
const NO_ORIGIN: &str = "requests from this Origin are not allowed (see AllowedOrigins)";
const NO_HOST: &str = "this port does not answer for that Host (see ControllerHosts)";

#[test]
fn a_page_of_another_origin_cannot_publish_or_read() {
    let s = Server::start_test(&["-AllowedOrigins", "http://app.example"]);
    let mut sub = s.subscribe("/push/h1/stream/news", HDR_OK);
    let mut ctl = s.ctl();
    let evil = "Origin: http://evil.example\r\nContent-Type: text/plain\r\n";
    // The simple request a browser sends without a preflight.
    let r = send_all(&s, &post("news", &format!("{LOCAL}{evil}"), "pwned"));
    assert_eq!(r, refusal("403 Forbidden", NO_ORIGIN));
    // Nor may such a page read, or get a preflight through.
    for request in [
        format!("GET /stats HTTP/1.1\r\n{LOCAL}{evil}\r\n"),
        format!("GET /channels HTTP/1.1\r\n{LOCAL}{evil}\r\n"),
        format!("OPTIONS /pub/news HTTP/1.1\r\n{LOCAL}{evil}\r\n"),
        post("news", &format!("{LOCAL}Origin: null\r\n"), "pwned"),
        post(
            "news",
            &format!("{LOCAL}Origin: http://app.example.evil\r\n"),
            "pwned",
        ),
    ] {
        assert_eq!(
            send_all(&s, &request),
            refusal("403 Forbidden", NO_ORIGIN),
            "{request:?}"
        );
    }
    assert_eq!(ctl.list(), "OK\r\nnews(0/1)\r\n--EOT--\r\n");
    // A listed origin publishes (and may read the answer); so does a tool
    // that sends no Origin at all.
    let r = send_all(
        &s,
        &post(
            "news",
            &format!("{LOCAL}Origin: http://app.example\r\n"),
            "one",
        ),
    );
    let cors = "Access-Control-Allow-Origin: http://app.example\r\nVary: Origin\r\n";
    assert_eq!(r, published(1, cors, true));
    let r = send_all(&s, &post("news", LOCAL, "two"));
    assert_eq!(r, published(2, "", true));
    // Only the allowed ones reached the subscriber.
    sub.expect_str("1:news:one\n2:news:two\n");
    assert_eq!(ctl.list(), "OK\r\nnews(2/1)\r\n--EOT--\r\n");
}

#[test]
fn without_allowed_origins_no_page_may_publish() {
    let s = Server::start_test(&[]);
    let r = send_all(
        &s,
        &post(
            "x",
            &format!("{LOCAL}Origin: http://127.0.0.1:8080\r\n"),
            "a",
        ),
    );
    assert_eq!(r, refusal("403 Forbidden", NO_ORIGIN));
    assert_eq!(s.ctl().list(), "OK\r\n--EOT--\r\n");
}

#[test]
fn a_foreign_host_is_refused() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let port = s.ctl_addr.port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "10.1.2.3".to_owned(),
    ] {
        let h = format!("Host: {host}\r\n");
        for request in [
            format!("GET /stats HTTP/1.1\r\n{h}\r\n"),
            format!("GET /channels HTTP/1.1\r\n{h}\r\n"),
            format!("GET /metrics HTTP/1.1\r\n{h}\r\n"),
            post("x", &h, "rebound"),
        ] {
            assert_eq!(
                send_all(&s, &request),
                refusal("421 Misdirected Request", NO_HOST),
                "{request:?}"
            );
        }
    }
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
    // The names of this machine, with any port or none, are answered.
    for (i, host) in [
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let r = send_all(&s, &post("x", &format!("Host: {host}\r\n"), "ok"));
        assert_eq!(r, published(i as u64 + 1, "", true), "Host: {host}");
    }
    assert_eq!(ctl.list(), "OK\r\nx(4/0)\r\n--EOT--\r\n");
}

#[test]
fn controller_hosts_replaces_the_names_but_keeps_controller_ip() {
    let s = Server::start_test(&[
        "-ControllerHosts",
        "pub.example",
        "-ControllerIP",
        "127.0.0.1",
    ]);
    let get = |host: &str| {
        send_all(
            &s,
            &format!("GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert!(get("pub.example:4671").starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(get("127.0.0.1").starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        get("localhost"),
        refusal("421 Misdirected Request", NO_HOST)
    );
}

#[test]
fn http11_needs_exactly_one_valid_host() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let cases = [
        ("", "HTTP/1.1 requires a Host header"),
        (
            "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",
            "Host given more than once",
        ),
        (
            "Host: 127.0.0.1\r\nHost: evil.example\r\n",
            "Host given more than once",
        ),
        ("Host: 127.0.0.1:80x\r\n", "malformed Host header"),
        ("Host: evil@127.0.0.1\r\n", "malformed Host header"),
    ];
    for (headers, why) in cases {
        assert_eq!(
            send_all(&s, &post("x", headers, "nope")),
            refusal("400 Bad Request", why),
            "{headers:?}"
        );
        assert_eq!(
            send_all(&s, &format!("GET /stats HTTP/1.1\r\n{headers}\r\n")),
            refusal("400 Bad Request", why),
            "{headers:?}"
        );
    }
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
    // HTTP/1.0 may leave it out.
    let r = send_all(&s, "GET /stats HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r:?}");
}

#[test]
fn content_length_is_one_run_of_digits_given_once() {
    let s = Server::start_test(&[]);
    let mut sub = s.subscribe("/push/h1/stream/x", HDR_OK);
    let mut ctl = s.ctl();
    let head = |lengths: &str| format!("POST /pub/x HTTP/1.1\r\n{LOCAL}{lengths}\r\nabc");
    let twice = "Content-Length given more than once";
    let digits = "Content-Length must be decimal digits only";
    for (lengths, why) in [
        ("Content-Length: 3\r\nContent-Length: 3\r\n", twice),
        ("Content-Length: 3\r\nContent-Length: 2\r\n", twice),
        ("Content-Length: 3\r\ncontent-length: 3\r\n", twice),
        ("Content-Length: +3\r\n", digits),
        ("Content-Length: -1\r\n", digits),
        ("Content-Length: 3,3\r\n", digits),
        ("Content-Length: 3 3\r\n", digits),
        ("Content-Length: 0x3\r\n", digits),
        ("Content-Length:\r\n", digits),
        ("Content-Length: \u{a0}3\r\n", digits),
    ] {
        assert_eq!(
            send_all(&s, &head(lengths)),
            refusal("400 Bad Request", why),
            "{lengths:?}"
        );
    }
    // Folded lines, space before the colon, a header name that is not a
    // token: malformed heads.
    for bad in [
        "Content-Length: 3\r\nX-A: 1\r\n folded\r\n",
        "Content-Length : 3\r\n",
        "Content-Length: 3\r\nX(A): 1\r\n",
    ] {
        assert_eq!(
            send_all(&s, &head(bad)),
            refusal("400 Bad Request", "malformed request head"),
            "{bad:?}"
        );
    }
    assert_eq!(ctl.list(), "OK\r\nx(0/1)\r\n--EOT--\r\n");
    // Whitespace around the value is not part of it (RFC 9110 5.5).
    let r = send_all(&s, &head("Content-Length:  3 \t\r\nConnection: close\r\n"));
    assert_eq!(r, published(1, "", true));
    sub.expect_str("1:x:abc\n");
}

#[test]
fn transfer_encoding_is_not_implemented() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let why = "Transfer-Encoding is not supported; send the body with Content-Length";
    for te in [
        "Transfer-Encoding:\r\nContent-Length: 3\r\n\r\nabc",
        "Transfer-Encoding: \r\nContent-Length: 3\r\n\r\nabc",
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        "Content-Length: 3\r\nTransfer-Encoding: identity\r\n\r\nabc",
    ] {
        let r = send_all(&s, &format!("POST /pub/x HTTP/1.1\r\n{LOCAL}{te}"));
        assert_eq!(r, refusal("501 Not Implemented", why), "{te:?}");
    }
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
}

/// How long a client waits for `100 Continue` before it gives up (curl
/// waits one second, then sends the body anyway).
const CONTINUE_WAIT: Duration = Duration::from_millis(900);

#[test]
fn expect_100_continue_gets_its_interim_response() {
    let s = Server::start_test(&[]);
    let mut sub = s.subscribe("/push/h1/stream/x", HDR_OK);
    let mut c = Conn::connect(s.ctl_addr);
    for (id, body) in [(1, "hello"), (2, "again")] {
        c.send(
            format!(
                "POST /pub/x HTTP/1.1\r\n{LOCAL}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
            )
            .as_bytes(),
        );
        c.expect_within(b"HTTP/1.1 100 Continue\r\n\r\n", CONTINUE_WAIT);
        // Nothing else before the body.
        c.expect_silence(Duration::from_millis(100));
        c.send(body.as_bytes());
        c.expect_str(&published(id, "", false));
        sub.expect_str(&format!("{id}:x:{body}\n"));
    }
    // The body already sent with the head: no interim response.
    c.send(
        format!(
            "POST /pub/x HTTP/1.1\r\n{LOCAL}Expect: 100-continue\r\nContent-Length: 4\r\n\
             Connection: close\r\n\r\nlast"
        )
        .as_bytes(),
    );
    c.expect_str(&published(3, "", true));
    c.expect_eof();
    sub.expect_str("3:x:last\n");
}

#[test]
fn expect_100_continue_is_refused_at_once_when_the_request_will_be() {
    let s = Server::start_test(&[
        "-MaxControllerLineBytes",
        "100",
        "-ControllerPassword",
        "s3cret",
    ]);
    let auth = "Authorization: Bearer s3cret\r\n";
    let expect = "Expect: 100-continue\r\n";
    let cases = [
        (
            format!("Host: evil.example\r\n{auth}{expect}Content-Length: 5\r\n"),
            refusal("421 Misdirected Request", NO_HOST),
        ),
        (
            format!("{LOCAL}Origin: http://evil.example\r\n{auth}{expect}Content-Length: 5\r\n"),
            refusal("403 Forbidden", NO_ORIGIN),
        ),
        (
            format!("{LOCAL}{auth}{expect}Content-Length: 101\r\n"),
            refusal(
                "413 Content Too Large",
                "the body is over MaxControllerLineBytes",
            ),
        ),
        (
            format!("{LOCAL}Authorization: Bearer wrong\r\n{expect}Content-Length: 5\r\n"),
            "HTTP/1.1 401 Unauthorized\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Cache-Control: no-store\r\nContent-Length: 17\r\nWWW-Authenticate: Bearer\r\n\
             Connection: close\r\n\r\n401 Unauthorized\n"
                .to_owned(),
        ),
    ];
    for (headers, want) in cases {
        let mut c = Conn::connect(s.ctl_addr);
        c.send(format!("POST /pub/x HTTP/1.1\r\n{headers}\r\n").as_bytes());
        // The final answer comes without the body being sent, and closes.
        let got = c.read_to_end(CONTINUE_WAIT);
        assert_eq!(String::from_utf8_lossy(&got), want, "{headers:?}");
    }
    let mut ctl = s.ctl();
    assert_eq!(ctl.command("AUTH s3cret"), "OK");
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
}

/// A body within `MaxControllerLineBytes` is accepted even when its head and
/// body together are longer (the input bound is one head plus one body),
/// also when the client half-closes after sending; a client that goes away
/// mid-body frees its connection.
#[test]
fn a_body_near_the_limit_is_answered_and_a_vanished_client_freed() {
    let s = Server::start_test(&["-MaxControllerLineBytes", "1000"]);
    let mut ctl = s.ctl();
    let body = "b".repeat(1000);
    let headers = format!("{LOCAL}X-Pad: {}\r\n", "p".repeat(500));
    let mut c = Conn::connect(s.ctl_addr);
    c.send(post("big", &headers, &body).as_bytes());
    c.shutdown_write();
    let got = String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned();
    assert_eq!(got, published(1, "", true));
    assert_eq!(ctl.list(), "OK\r\nbig(1/0)\r\n--EOT--\r\n");
    // Head and half of a body over the line limit, then the client is gone.
    let mut gone = Conn::connect(s.ctl_addr);
    let head = format!(
        "POST /pub/big HTTP/1.1\r\n{headers}Content-Length: 1000\r\n\r\n{}",
        "b".repeat(700)
    );
    gone.send(head.as_bytes());
    drop(gone);
    let freed = eventually(WAIT, || {
        parse_stats(&ctl.multi("SHOWSTATS"))
            .iter()
            .any(|(k, v)| k == "current_controllers" && *v == 1)
    });
    assert!(freed, "the vanished client's connection is still open");
}

#[test]
fn connection_is_a_list_of_options_on_the_controller_port() {
    let s = Server::start(&[], "");
    // `close` anywhere in the list (any case, any header line) closes.
    for connection in [
        "Connection: keep-alive, Close\r\n",
        "Connection: TE\r\nConnection: close\r\n",
    ] {
        let raw = format!("POST /pub/x HTTP/1.1\r\n{LOCAL}{connection}Content-Length: 1\r\n\r\na");
        let reply = send_all(&s, &raw);
        assert!(
            reply.contains("Connection: close\r\n") && reply.ends_with("}\n"),
            "{connection:?}: {reply:?}"
        );
    }
    // HTTP/1.0 stays open when `keep-alive` is listed among other options.
    let mut c = Conn::connect(s.ctl_addr);
    let raw = format!(
        "POST /pub/x HTTP/1.0\r\n{LOCAL}Connection: TE, Keep-Alive\r\nContent-Length: 1\r\n\r\nb"
    );
    c.send(raw.as_bytes());
    c.expect_str(&published(3, "", false));
    c.send(post("x", LOCAL, "c").as_bytes());
    c.expect_str(&published(4, "", true));
}
