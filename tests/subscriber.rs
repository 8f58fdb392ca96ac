//! The subscriber port: push requests, channel definitions, persistence,
//! limits, hostid replacement, /disconnect, request heads and errors.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A mode section with the test message template: `settings` lines, then
/// `HeaderTemplate <header>\n` and `SubscriberShutdownMsg <shutdown>\n`.
fn mode(name: &str, settings: &str, header: &str, shutdown: &str) -> String {
    format!(
        "[{name}]\n{settings}HeaderTemplate {header}\\n\n\
         MessageTemplate ~id~:~channel~:~text~\\n\nSubscriberShutdownMsg {shutdown}\\n\n"
    )
}

/// TEST_CONF plus a few more modes used here.
fn conf() -> String {
    [
        TEST_CONF.to_owned(),
        mode("stream2", "Persist 1\n", "HDR2 ~status~", "BYE2"),
        mode("two", "Persist 1\nMaxMessages 2\n", "HDR ~status~", "BYE"),
        mode(
            "pollmax",
            "Persist 0\nMaxMessages 1\n",
            "HDR ~status~",
            "BYE",
        ),
        mode(
            "info",
            "Persist 1\nChannelInfoTemplate [~name~]\n",
            "HDR ~status~|~channelinfo~|",
            "BYE",
        ),
    ]
    .join("\n")
}

fn start() -> Server {
    Server::start(&[], &conf())
}

/// A Persist 0 poll: everything it gets (header included) until close.
fn poll(s: &Server, path: &str) -> String {
    let mut c = s.http_get(path);
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

fn hdr_msgs(items: &[(u64, &str, &str)]) -> String {
    format!("{HDR_OK}{}", msgs(items))
}

#[test]
fn global_settings_default_header_and_close() {
    // A mode without settings uses the global ones: default HeaderTemplate,
    // Persist 0, so the header alone and then close.
    let s = start();
    let mut c = s.http_get("/push/h1/nosuchmode/ch");
    c.expect_str(&default_header("200 OK"));
    c.expect_eof();
}

#[test]
fn poll_backlog_with_default_templates() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("ch", "a");
    ctl.add("ch", "b c");
    let mut c = s.http_get("/push/h1/plain/ch.h");
    c.expect_str(&default_header("200 OK"));
    c.expect_str(
        "<script>p(1,\"ch\",\"a\");</script>\r\n<script>p(2,\"ch\",\"b c\");</script>\r\n",
    );
    c.expect_eof();
}

#[test]
fn persistent_subscriber_gets_live_events_in_order() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/stream/ch", HDR_OK);
    assert_eq!(ctl.count("ch"), 1);
    for i in 1..=5 {
        assert_eq!(ctl.add("ch", &format!("m{i}")), i);
    }
    ctl.add("elsewhere", "not for us");
    c.expect_str(&msgs(&[
        (1, "ch", "m1"),
        (2, "ch", "m2"),
        (3, "ch", "m3"),
        (4, "ch", "m4"),
        (5, "ch", "m5"),
    ]));
    c.expect_silence(Duration::from_millis(200));
    ctl.add("ch", "last");
    c.expect_str("7:ch:last\n");
}

#[test]
fn plain_name_gets_only_new_messages() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("ch", "old");
    assert_eq!(poll(&s, "/push/h1/poll/ch"), HDR_OK);
    let mut c = s.subscribe("/push/h2/stream/ch", HDR_OK);
    ctl.add("ch", "new");
    c.expect_str("2:ch:new\n");
}

/// a:1, b:2, a:3, a:4
fn setup_abaa(s: &Server) {
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "x1"), 1);
    assert_eq!(ctl.add("b", "y2"), 2);
    assert_eq!(ctl.add("a", "x3"), 3);
    assert_eq!(ctl.add("a", "x4"), 4);
}

#[test]
fn resume_from_id() {
    let s = start();
    setup_abaa(&s);
    let all = [(1, "a", "x1"), (3, "a", "x3"), (4, "a", "x4")];
    assert_eq!(poll(&s, "/push/h/poll/a.r0"), hdr_msgs(&all));
    assert_eq!(poll(&s, "/push/h/poll/a.r1"), hdr_msgs(&all));
    // Id 2 belongs to channel b: start at the first id >= 2.
    assert_eq!(poll(&s, "/push/h/poll/a.r2"), hdr_msgs(&all[1..]));
    assert_eq!(poll(&s, "/push/h/poll/a.r3"), hdr_msgs(&all[1..]));
    assert_eq!(poll(&s, "/push/h/poll/a.r4"), hdr_msgs(&all[2..]));
    // Above the newest id: no backlog.
    assert_eq!(poll(&s, "/push/h/poll/a.r5"), HDR_OK);
    assert_eq!(poll(&s, "/push/h/poll/a.r999999"), HDR_OK);
}

#[test]
fn resume_from_id_older_than_the_cache() {
    let s = Server::start(&["-MaxMessagesPerChannel", "2"], &conf());
    setup_abaa(&s);
    assert_eq!(
        poll(&s, "/push/h/poll/a.r1"),
        hdr_msgs(&[(3, "a", "x3"), (4, "a", "x4")])
    );
}

#[test]
fn backlog_of_last_n() {
    let s = start();
    setup_abaa(&s);
    assert_eq!(
        poll(&s, "/push/h/poll/a.b2"),
        hdr_msgs(&[(3, "a", "x3"), (4, "a", "x4")])
    );
    assert_eq!(poll(&s, "/push/h/poll/a.b1"), hdr_msgs(&[(4, "a", "x4")]));
    assert_eq!(
        poll(&s, "/push/h/poll/a.b10"),
        hdr_msgs(&[(1, "a", "x1"), (3, "a", "x3"), (4, "a", "x4")])
    );
    // Defects table: .b0 sends no backlog.
    assert_eq!(poll(&s, "/push/h/poll/a.b0"), HDR_OK);
}

#[test]
fn whole_history() {
    let s = start();
    setup_abaa(&s);
    let all = hdr_msgs(&[(1, "a", "x1"), (3, "a", "x3"), (4, "a", "x4")]);
    assert_eq!(poll(&s, "/push/h/poll/a.h"), all);
    // Digits after .h are ignored.
    assert_eq!(poll(&s, "/push/h/poll/a.h4"), all);
    assert_eq!(poll(&s, "/push/h/poll/b.h"), hdr_msgs(&[(2, "b", "y2")]));
}

#[test]
fn upper_case_suffixes_mean_the_same() {
    let s = start();
    setup_abaa(&s);
    assert_eq!(
        poll(&s, "/push/h/poll/a.R3"),
        hdr_msgs(&[(3, "a", "x3"), (4, "a", "x4")])
    );
    assert_eq!(poll(&s, "/push/h/poll/a.B1"), hdr_msgs(&[(4, "a", "x4")]));
    assert_eq!(
        poll(&s, "/push/h/poll/a.H"),
        hdr_msgs(&[(1, "a", "x1"), (3, "a", "x3"), (4, "a", "x4")])
    );
}

#[test]
fn suffix_without_digits_is_not_a_channel_definition() {
    let s = start();
    setup_abaa(&s);
    assert_eq!(poll(&s, "/push/h/poll/a.r"), "HDR 404 Not Found\n");
    assert_eq!(poll(&s, "/push/h/poll/a.b"), "HDR 404 Not Found\n");
    assert_eq!(poll(&s, "/push/h/poll/a.x3"), "HDR 404 Not Found\n");
    // An invalid entry next to a valid one is skipped.
    assert_eq!(
        poll(&s, "/push/h/poll/a.r/b.h"),
        hdr_msgs(&[(2, "b", "y2")])
    );
}

#[test]
fn invalid_channel_names_are_skipped() {
    let s = start();
    setup_abaa(&s);
    assert_eq!(
        poll(&s, "/push/h/poll/bad!name/b.h/a.b.c"),
        hdr_msgs(&[(2, "b", "y2")])
    );
    // Only the valid channel was subscribed.
    let mut c = s.subscribe("/push/h1/info/bad!x/ok_-%9/b~d", "HDR 200 OK|[ok_-%9]|\n");
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ok_-%9"), 1);
    ctl.add("ok_-%9", "z");
    c.expect_str("5:ok_-%9:z\n");
}

#[test]
fn no_valid_channel_is_404_with_the_mode_header_and_no_shutdown_message() {
    let s = start();
    // Persistent mode: just the 404, no BYE (defects table), then close.
    let mut c = s.http_get("/push/h1/info/bad!");
    c.expect_str("HDR 404 Not Found||\n");
    c.expect_eof();
    let mut c = s.http_get("/push/h1/stream/a.r");
    c.expect_str("HDR 404 Not Found\n");
    c.expect_eof();
    // Global mode: the default header with 404.
    let mut c = s.http_get("/push/h1/global/.h");
    c.expect_str(&default_header("404 Not Found"));
    c.expect_eof();
    let mut ctl = s.ctl();
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
}

#[test]
fn percent_is_a_plain_character() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a%20b", "pct");
    ctl.add("a b", "space");
    assert_eq!(
        poll(&s, "/push/h/poll/a%20b.h"),
        hdr_msgs(&[(1, "a%20b", "pct")])
    );
}

#[test]
fn same_channel_twice_is_one_subscription() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "old");
    // Backlog once, live events once.
    let mut c = s.subscribe("/push/h1/stream/a.h/a/a.b1", HDR_OK);
    c.expect_str("1:a:old\n");
    assert_eq!(ctl.count("a"), 1);
    ctl.add("a", "new");
    c.expect_str("2:a:new\n");
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn query_string_and_trailing_slash_are_ignored() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    let want = hdr_msgs(&[(1, "a", "x")]);
    assert_eq!(poll(&s, "/push/h/poll/a.h?nc=123456"), want);
    assert_eq!(poll(&s, "/push/h/poll/a.h/"), want);
    assert_eq!(poll(&s, "/push/h/poll/a.h/?nc=1"), want);
    let mut c = s.subscribe("/push/h2/stream/a/?nc=99", HDR_OK);
    ctl.add("a", "y");
    c.expect_str("2:a:y\n");
}

#[test]
fn mode_and_channel_names_are_case_sensitive() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("Chan", "upper");
    // "Stream" is not "stream": global settings, default header, Persist 0.
    let mut c = s.http_get("/push/h1/Stream/Chan.h");
    c.expect_str(&default_header("200 OK"));
    c.expect_str("<script>p(1,\"Chan\",\"upper\");</script>\r\n");
    c.expect_eof();
    assert_eq!(poll(&s, "/push/h2/poll/chan.h"), HDR_OK);
}

#[test]
fn hostids_are_case_sensitive() {
    let s = start();
    let mut a = s.subscribe("/push/Host/stream/ch", HDR_OK);
    let mut b = s.subscribe("/push/host/stream/ch", HDR_OK);
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 2);
    ctl.add("ch", "both");
    a.expect_str("1:ch:both\n");
    b.expect_str("1:ch:both\n");
}

#[test]
fn invalid_hostid_is_not_a_subscription() {
    let s = start();
    // Not a push URL: a static document request, and there is no such file.
    let mut c = s.http_get("/push/h_1/stream/ch");
    c.expect_str(&document_404());
    c.expect_eof();
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 0);
}

#[test]
fn head_with_bare_lf_http10_and_extra_headers() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c =
        s.request(b"GET /push/h1/stream/ch HTTP/1.0\nAccept: */*\nUser-Agent: x\nX-Other: y\n\n");
    c.expect_str(HDR_OK);
    ctl.add("ch", "lf");
    c.expect_str("1:ch:lf\n");
    let mut d = s.request(b"GET /push/h2/poll/ch.h HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&d.read_to_end(WAIT)),
        hdr_msgs(&[(1, "ch", "lf")])
    );
}

#[test]
fn nothing_is_sent_before_the_head_is_complete() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.connect_sub();
    c.send(b"GET /push/h1/stre");
    c.expect_silence(Duration::from_millis(200));
    c.send(b"am/ch HTTP/1.1\r\nHost: x\r\n");
    c.expect_silence(Duration::from_millis(300));
    assert_eq!(ctl.count("ch"), 0);
    c.send(b"User-Agent: t\r\n\r");
    c.expect_silence(Duration::from_millis(200));
    c.send(b"\n");
    c.expect_str(HDR_OK);
    assert_eq!(ctl.count("ch"), 1);
}

#[test]
fn bytes_after_the_head_are_ignored() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.request(
        b"GET /push/h1/stream/ch HTTP/1.1\r\n\r\nGET /push/h2/stream/other HTTP/1.1\r\n\r\njunk",
    );
    c.expect_str(HDR_OK);
    c.send(b"more junk\r\n\r\n");
    ctl.add("ch", "still here");
    c.expect_str("1:ch:still here\n");
    assert_eq!(ctl.count("other"), 0);
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn backlog_is_sent_whole_beyond_max_messages_then_closed() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "1");
    ctl.add("a", "2");
    ctl.add("a", "3");
    // long: Persist 1, MaxMessages 1. All three, then close, no BYE.
    let mut c = s.http_get("/push/h1/long/a.h");
    c.expect_str(&hdr_msgs(&[(1, "a", "1"), (2, "a", "2"), (3, "a", "3")]));
    c.expect_eof();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
}

#[test]
fn max_messages_closes_after_n_live_messages() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/two/a", HDR_OK);
    ctl.add("a", "1");
    ctl.add("a", "2");
    ctl.add("a", "3");
    c.expect_str(&msgs(&[(1, "a", "1"), (2, "a", "2")]));
    c.expect_eof();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
}

#[test]
fn max_messages_counts_backlog_and_live_messages() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "1");
    let mut c = s.subscribe("/push/h1/two/a.h", HDR_OK);
    c.expect_str("1:a:1\n");
    c.expect_silence(Duration::from_millis(100));
    ctl.add("a", "2");
    ctl.add("a", "3");
    c.expect_str("2:a:2\n");
    c.expect_eof();
}

#[test]
fn longpoll_waits_for_one_message() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/long/a", HDR_OK);
    assert_eq!(ctl.count("a"), 1);
    c.expect_silence(Duration::from_millis(200));
    ctl.add("a", "first");
    c.expect_str("1:a:first\n");
    c.expect_eof();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
}

#[test]
fn longpoll_on_two_channels_with_backlogs_gets_both() {
    // Defects table: every requested channel's backlog in one reply.
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "a1");
    ctl.add("b", "b2");
    ctl.add("a", "a3");
    ctl.add("b", "b4");
    // Merged in id order (not a's backlog, then b's), then close.
    let mut c = s.http_get("/push/h1/long/a.h/b.h");
    c.expect_str(&hdr_msgs(&[
        (1, "a", "a1"),
        (2, "b", "b2"),
        (3, "a", "a3"),
        (4, "b", "b4"),
    ]));
    c.expect_eof();
    // No stall: another client is served at once.
    assert_eq!(poll(&s, "/push/h2/poll/a.b1"), hdr_msgs(&[(3, "a", "a3")]));
}

#[test]
fn persist_0_with_max_messages_reached_by_backlog_still_replies() {
    // Defects table: the reply is sent, then the connection closes.
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "1");
    ctl.add("a", "2");
    assert_eq!(
        poll(&s, "/push/h1/pollmax/a.h"),
        hdr_msgs(&[(1, "a", "1"), (2, "a", "2")])
    );
}

#[test]
fn persist_0_closes_after_backlog_without_shutdown_message() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "1");
    let mut c = s.http_get("/push/h1/poll/a.h");
    c.expect_str(&hdr_msgs(&[(1, "a", "1")]));
    c.expect_eof();
}

#[test]
fn non_persistent_request_does_not_touch_a_live_stream_with_its_hostid() {
    // Defects table: only persistent requests touch the hostid registry.
    let s = start();
    let mut ctl = s.ctl();
    let mut st = s.subscribe("/push/same/stream/a", HDR_OK);
    assert_eq!(poll(&s, "/push/same/poll/a"), HDR_OK);
    assert_eq!(ctl.count("a"), 1);
    ctl.add("a", "x");
    st.expect_str("1:a:x\n");
    // The stream is still registered: /disconnect finds it.
    let mut d = s.http_get("/disconnect/same");
    d.expect_str(&default_header("200 OK"));
    d.expect_eof();
    st.expect_str("BYE\n");
    st.expect_eof();
}

#[test]
fn same_hostid_replaces_the_older_connection() {
    let s = start();
    let mut ctl = s.ctl();
    let mut old = s.subscribe("/push/dup/stream2/x", "HDR2 200 OK\n");
    assert_eq!(ctl.count("x"), 1);
    // Different mode and channel: the old one still goes, with its own
    // mode's shutdown message.
    let mut new = s.subscribe("/push/dup/stream/y", HDR_OK);
    old.expect_str("BYE2\n");
    old.expect_eof();
    assert_eq!(ctl.wait_count("x", 0, WAIT), 0);
    assert_eq!(ctl.count("y"), 1);
    ctl.add("y", "for new");
    new.expect_str("1:y:for new\n");
    // A persistent long-poll with the same hostid replaces it too.
    let mut lp = s.subscribe("/push/dup/long/x", HDR_OK);
    new.expect_str("BYE\n");
    new.expect_eof();
    assert_eq!(ctl.wait_count("y", 0, WAIT), 0);
    ctl.add("x", "to lp");
    lp.expect_str("2:x:to lp\n");
    lp.expect_eof();
}

#[test]
fn disconnect_closes_the_hostid_with_its_shutdown_message() {
    let s = start();
    let mut ctl = s.ctl();
    let mut st = s.subscribe("/push/victim/stream/a/b", HDR_OK);
    let mut other = s.subscribe("/push/bystander/stream/a", HDR_OK);
    let mut d = s.http_get("/disconnect/victim");
    d.expect_str(&default_header("200 OK"));
    d.expect_eof();
    st.expect_str("BYE\n");
    st.expect_eof();
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    assert_eq!(ctl.count("b"), 0);
    ctl.add("a", "on");
    other.expect_str("1:a:on\n");
}

#[test]
fn disconnect_unknown_hostid_gets_the_same_answer() {
    let s = start();
    let mut d = s.http_get("/disconnect/nobody");
    d.expect_str(&default_header("200 OK"));
    d.expect_eof();
}

#[test]
fn client_going_away_unsubscribes_without_harm() {
    let s = start();
    let mut ctl = s.ctl();
    let c = s.subscribe("/push/h1/stream/a", HDR_OK);
    assert_eq!(ctl.count("a"), 1);
    drop(c);
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    ctl.add("a", "nobody listens");
    let mut d = s.subscribe("/push/h1/stream/a", HDR_OK);
    ctl.add("a", "x");
    d.expect_str("2:a:x\n");
}

#[test]
fn not_get_is_404_with_the_global_header() {
    let s = start();
    let mut c = s.request(b"POST /push/h1/stream/ch HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    c.expect_str(&default_header("404 Not Found"));
    c.expect_eof();
    let mut c = s.request(b"HEAD /index.html HTTP/1.1\r\n\r\n");
    c.expect_str(&default_header("404 Not Found"));
    c.expect_eof();
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 0);
}

#[test]
fn malformed_request_line_is_400_and_closed() {
    let s = start();
    for raw in [&b"garbage\r\n\r\n"[..], b"\x01\x02\x03 \xff\r\n\r\n"] {
        let mut c = s.request(raw);
        c.expect_str(&default_header("400 Bad Request"));
        c.expect_eof();
    }
    // Still serving.
    let mut c = s.http_get("/push/h1/poll/ch");
    c.expect_str(HDR_OK);
    c.expect_eof();
}

/// The exact 431 reply (the global header with the status), then close.
fn assert_431_and_closed(c: &mut Conn) {
    let got = c.read_to_end(Duration::from_secs(10));
    assert_eq!(
        show(&got[..got.len().min(300)]),
        show(default_header("431 Request Header Fields Too Large").as_bytes()),
    );
}

#[test]
fn overlong_request_head_is_refused() {
    // Part B2.
    let s = start();
    let mut c = s.connect_sub();
    let _ = c.try_send(b"GET /push/h1/stream/ch HTTP/1.1\r\nX-Big: ");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..64 {
        // 4 MiB
        if c.try_send(&chunk).is_err() {
            break;
        }
    }
    let _ = c.try_send(b"\r\n\r\n");
    assert_431_and_closed(&mut c);
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 0);
    let mut ok = s.http_get("/push/h2/poll/ch");
    ok.expect_str(HDR_OK);
}

#[test]
fn too_many_header_lines_are_refused() {
    // Part B2: a header count bound.
    let s = start();
    let mut c = s.connect_sub();
    let _ = c.try_send(b"GET /push/h1/stream/ch HTTP/1.1\r\n");
    let mut lines = Vec::new();
    // 1,500 tiny header lines: about 6 KB, far more lines than any browser
    // sends.
    for _ in 0..1500 {
        lines.extend_from_slice(b"a:\r\n");
    }
    let _ = c.try_send(&lines);
    let _ = c.try_send(b"\r\n");
    assert_431_and_closed(&mut c);
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 0);
}

#[test]
fn three_channels_in_one_request() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/stream/red/green/blue", HDR_OK);
    assert_eq!(ctl.count("red"), 1);
    assert_eq!(ctl.count("green"), 1);
    assert_eq!(ctl.count("blue"), 1);
    ctl.add("green", "g1");
    ctl.add("other", "o2");
    ctl.add("blue", "b3");
    ctl.add("red", "r4");
    ctl.add("green", "g5");
    c.expect_str(&msgs(&[
        (1, "green", "g1"),
        (3, "blue", "b3"),
        (4, "red", "r4"),
        (5, "green", "g5"),
    ]));
    assert_eq!(
        ctl.list(),
        "OK\r\nblue(1/1)\r\ngreen(2/1)\r\nother(1/0)\r\nred(1/1)\r\n--EOT--\r\n"
    );
    drop(c);
    assert_eq!(ctl.wait_count("green", 0, WAIT), 0);
}

#[test]
fn three_channels_with_mixed_backlogs() {
    let s = start();
    let mut ctl = s.ctl();
    ctl.add("a", "a1");
    ctl.add("b", "b2");
    ctl.add("c", "c3");
    ctl.add("a", "a4");
    ctl.add("b", "b5");
    // a: everything from id 4; b: last one; c: only new.
    let mut st = s.http_get("/push/h1/stream/a.r4/b.b1/c");
    st.expect_str(&hdr_msgs(&[(4, "a", "a4"), (5, "b", "b5")]));
    ctl.add("c", "c6");
    st.expect_str("6:c:c6\n");
    st.expect_silence(Duration::from_millis(100));
}

/// 1:a 2:b 3:a 4:b 5:c 6:a
fn setup_interleaved(ctl: &mut Controller) {
    for (i, ch) in ["a", "b", "a", "b", "c", "a"].iter().enumerate() {
        assert_eq!(ctl.add(ch, &format!("m{}", i + 1)), i as u64 + 1);
    }
}

#[test]
fn backlogs_of_several_channels_are_merged_in_id_order() {
    // Exact bytes: a server that sends one channel's backlog after the
    // other (1:a 3:a 6:a 2:b 4:b) fails here.
    let s = start();
    let mut ctl = s.ctl();
    setup_interleaved(&mut ctl);
    let m = |ids: &[u64]| -> String {
        let all = ["", "a", "b", "a", "b", "c", "a"];
        let items: Vec<(u64, &str, String)> = ids
            .iter()
            .map(|&id| (id, all[id as usize], format!("m{id}")))
            .collect();
        let items: Vec<(u64, &str, &str)> =
            items.iter().map(|(i, c, t)| (*i, *c, t.as_str())).collect();
        hdr_msgs(&items)
    };
    assert_eq!(poll(&s, "/push/h/poll/a.h/b.h"), m(&[1, 2, 3, 4, 6]));
    // The order of the channels in the URL does not matter.
    assert_eq!(poll(&s, "/push/h/poll/b.h/a.h"), m(&[1, 2, 3, 4, 6]));
    assert_eq!(poll(&s, "/push/h/poll/c.h/b.h/a.h"), m(&[1, 2, 3, 4, 5, 6]));
    // .r<id> backlogs: a from 2 (3, 6), b from 1 (2, 4), c whole (5).
    assert_eq!(poll(&s, "/push/h/poll/a.r2/b.r1/c.h"), m(&[2, 3, 4, 5, 6]));
    assert_eq!(poll(&s, "/push/h/poll/b.r3/a.r3"), m(&[3, 4, 6]));
    // .b<n> backlogs: a's last 2 (3, 6), b's last (4), c's last 5 (5).
    assert_eq!(poll(&s, "/push/h/poll/a.b2/b.b1/c.b5"), m(&[3, 4, 5, 6]));
    // A long poll (MaxMessages 1) gets the whole merged backlog, then close.
    let mut lp = s.http_get("/push/h2/long/b.h/a.h");
    lp.expect_str(&m(&[1, 2, 3, 4, 6]));
    lp.expect_eof();
}

#[test]
fn streaming_after_a_merged_backlog_keeps_id_order() {
    let s = start();
    let mut ctl = s.ctl();
    setup_interleaved(&mut ctl);
    let mut st = s.http_get("/push/h1/stream/b.r2/a.r2");
    st.expect_str(&hdr_msgs(&[
        (2, "b", "m2"),
        (3, "a", "m3"),
        (4, "b", "m4"),
        (6, "a", "m6"),
    ]));
    assert_eq!(ctl.count("a"), 1);
    // Live events of both channels, in publishing order, in one burst.
    assert_eq!(ctl.add("b", "m7"), 7);
    ctl.send("ADDMESSAGE a m8\nADDMESSAGE c m9\nADDMESSAGE b m10\nADDMESSAGE a m11\n");
    for id in 8..=11 {
        assert_eq!(parse_ok_id(&ctl.read_reply_line()), id);
    }
    st.expect_str(&msgs(&[
        (7, "b", "m7"),
        (8, "a", "m8"),
        (10, "b", "m10"),
        (11, "a", "m11"),
    ]));
    st.expect_silence(Duration::from_millis(100));
}

#[test]
fn many_interleaved_events_merge_in_id_order() {
    // 120 events over 4 channels in an irregular pattern, some trimmed by
    // MaxMessagesPerChannel: every request gets exactly the cached events
    // of its channels, sorted by id.
    let s = Server::start(&["-MaxMessagesPerChannel", "20"], &conf());
    let mut ctl = s.ctl();
    let names = ["w", "x", "y", "z"];
    let mut events: Vec<(u64, &str, String)> = Vec::new();
    for i in 0..120u64 {
        let ch = names[((i * i + 3 * i) / 5 % 4) as usize];
        let text = format!("t{i}");
        let id = ctl.add(ch, &text);
        events.push((id, ch, text));
    }
    // What each channel still holds: its last 20.
    let mut cached: Vec<&(u64, &str, String)> = Vec::new();
    for ch in names {
        let of: Vec<_> = events.iter().filter(|e| e.1 == ch).collect();
        cached.extend(&of[of.len().saturating_sub(20)..]);
    }
    cached.sort_by_key(|e| e.0);
    for (path, chans, from) in [
        ("w.h/x.h/y.h/z.h", &names[..], 0),
        ("z.h/x.h", &["x", "z"][..], 0),
        ("y.r60/w.r60/x.r60", &["w", "x", "y"][..], 60),
    ] {
        let want: String = cached
            .iter()
            .filter(|e| chans.contains(&e.1) && e.0 >= from)
            .map(|e| format!("{}:{}:{}\n", e.0, e.1, e.2))
            .collect();
        assert_eq!(
            poll(&s, &format!("/push/h/poll/{path}")),
            format!("{HDR_OK}{want}"),
            "{path}"
        );
    }
}

#[test]
fn resume_after_reconnect_loses_nothing_still_cached() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/me/stream/news", HDR_OK);
    ctl.add("news", "n1");
    ctl.add("news", "n2");
    ctl.add("sport", "s3");
    c.expect_str(&msgs(&[(1, "news", "n1"), (2, "news", "n2")]));
    let last_seen = 2;
    drop(c);
    assert_eq!(ctl.wait_count("news", 0, WAIT), 0);
    // Published while we were away.
    ctl.add("news", "n4");
    ctl.add("news", "n5");
    let mut c = s.subscribe(&format!("/push/me/stream/news.r{}", last_seen + 1), HDR_OK);
    c.expect_str(&msgs(&[(4, "news", "n4"), (5, "news", "n5")]));
    ctl.add("news", "n6");
    c.expect_str("6:news:n6\n");
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn slow_subscriber_is_disconnected_not_buffered_without_bound() {
    // Part B3: a subscriber that never reads falls behind the small cache
    // and is disconnected instead of being buffered for.
    let s = Server::start(&["-MaxMessagesPerChannel", "20"], &conf());
    let mut ctl = s.ctl();
    let mut slow = s.subscribe("/push/slow/stream/flood", HDR_OK);
    let text = "x".repeat(4000);
    let n = 4000;
    let mut batch = String::new();
    for _ in 0..100 {
        batch.push_str(&format!("ADDMESSAGE flood {text}\n"));
    }
    for _ in 0..(n / 100) {
        ctl.send(&batch);
        for _ in 0..100 {
            let r = ctl.read_reply_line();
            assert!(r.starts_with("OK\t"), "{r}");
        }
    }
    // Now read what the server kept for us: it must end (closed) and must
    // not be everything.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = slow
        .read_to_end_with_deadline(deadline)
        .unwrap_or_else(|v| panic!("slow subscriber not disconnected; got {} bytes", v.len()));
    let received = got.windows(6).filter(|w| w == b":flood").count();
    assert!(
        received < n,
        "all {n} messages were delivered: the server buffered them"
    );
    assert_eq!(ctl.wait_count("flood", 0, WAIT), 0);
    // The channel still works for others.
    let mut fresh = s.subscribe("/push/fresh/stream/flood", HDR_OK);
    let id = ctl.add("flood", "after");
    fresh.expect_str(&format!("{id}:flood:after\n"));
}

#[test]
fn join_and_leave_records_are_logged() {
    let s = start();
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/logger/stream/logch", HDR_OK);
    let join = s
        .wait_log(WAIT, |l| l.contains("joinchannel\t"))
        .unwrap_or_else(|| panic!("no joinchannel record in {:#?}", s.logs()));
    let rec = &join[join.find("joinchannel\t").unwrap()..];
    let f: Vec<&str> = rec.split('\t').collect();
    assert_eq!(
        f.len(),
        7,
        "joinchannel ip hostid channel mode startid useragent: {rec:?}"
    );
    assert_eq!(
        &f[1..5],
        ["127.0.0.1", "logger", "logch", "stream"],
        "{rec:?}"
    );
    assert_eq!(f[6], "meteord-tests", "{rec:?}");
    ctl.add("logch", "a");
    ctl.add("logch", "b");
    c.expect_str(&msgs(&[(1, "logch", "a"), (2, "logch", "b")]));
    drop(c);
    let leave = s
        .wait_log(WAIT, |l| l.contains("leavechannel\t"))
        .unwrap_or_else(|| panic!("no leavechannel record in {:#?}", s.logs()));
    let rec = &leave[leave.find("leavechannel\t").unwrap()..];
    let f: Vec<&str> = rec.split('\t').collect();
    assert_eq!(
        f.len(),
        8,
        "leavechannel ip hostid channel seconds messages bytes reason: {rec:?}"
    );
    assert_eq!(&f[1..4], ["127.0.0.1", "logger", "logch"], "{rec:?}");
    assert!(f[4].parse::<u64>().is_ok(), "{rec:?}");
    assert_eq!(f[5], "2", "{rec:?}");
    assert!(f[6].parse::<u64>().is_ok(), "{rec:?}");
    assert!(!f[7].is_empty(), "{rec:?}");
}

#[test]
fn custom_dynamic_page_address() {
    let s = Server::start(&["-SubscriberDynamicPageAddress", "/live"], &conf());
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    assert_eq!(poll(&s, "/live/h1/poll/a.h"), hdr_msgs(&[(1, "a", "x")]));
    // /push is now just a (missing) static path.
    let mut c = s.http_get("/push/h1/poll/a.h");
    c.expect_str(&document_404());
    c.expect_eof();
}

#[test]
fn slow_request_head_is_cut_off() {
    // Part B2: the time to send a request head is bounded (HeadTimeout, 10 s
    // by default; 1 s here): an incomplete head then gets exactly 408.
    let s = Server::start(&["-HeadTimeout", "1"], &conf());
    let t0 = Instant::now();
    let mut c = s.connect_sub();
    c.send(b"GET /push/h1/stream/ch HTTP/1.1\r\nHost: x\r\n");
    let got = match c.read_to_end_with_deadline(Instant::now() + Duration::from_secs(5)) {
        Ok(v) => v,
        Err(v) => panic!(
            "an incomplete head was kept open for 5 s with HeadTimeout 1; got {}",
            show(&v)
        ),
    };
    let took = t0.elapsed();
    assert_eq!(
        show(&got),
        show(default_header("408 Request Timeout").as_bytes())
    );
    assert!(took >= Duration::from_millis(900), "408 after {took:?}");
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("ch"), 0);
}

// ---------------------------------------------------------------------------
// Routing: what is not a push or disconnect URL is a static document
// ---------------------------------------------------------------------------

#[test]
fn routing_push_without_a_channel_part_is_a_document_request() {
    // `/push/<hostid>/<mode>` has no channel part: not a push request, so a
    // static document request; the document root has no such file.
    let s = start();
    let mut ctl = s.ctl();
    for path in ["/push/abc/stream", "/push/abc/poll", "/push/abc/stream?x=1"] {
        let mut c = s.http_get(path);
        c.expect_str(&document_404());
        c.expect_eof();
    }
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");
    assert_eq!(ctl.stat("documents_not_found"), 3);
}

#[test]
fn routing_disconnect_without_a_hostid_is_a_document_request() {
    // `/disconnect/` names no hostid: a static document request (no such
    // file), which disconnects nobody.
    let s = start();
    let mut ctl = s.ctl();
    let mut st = s.subscribe("/push/h1/stream/a", HDR_OK);
    let mut c = s.http_get("/disconnect/");
    c.expect_str(&document_404());
    c.expect_eof();
    assert_eq!(ctl.stat("documents_not_found"), 1);
    ctl.add("a", "still here");
    st.expect_str("1:a:still here\n");
}
