//! Long-poll on kept-alive connections (`KeepAlive` modes) over real
//! sockets: several cycles on one connection with exact bytes, pipelined
//! requests, a client that leaves between cycles, and every bound between
//! requests (KeepAliveTimeout, HeadTimeout, MaxRequestHeadBytes,
//! MaxSubscribers, hostid replacement); `Connection: close`, HTTP/1.0 and
//! the classic `longpoll` keep closing.

mod common;

use common::*;
use std::time::Duration;

/// The templates of the test modes, easy to assert on.
macro_rules! templates {
    () => {
        "HeaderTemplate HTTP/1.1 ~status~\\r\\nServer: ~server~\\r\\n\\r\\n~channelinfo~
ChannelInfoTemplate ~name~=~lastMsgID~\\n
MessageTemplate ~id~:~channel~:~text~\\n
SubscriberShutdownMsg BYE\\n
"
    };
}

/// A kept-alive long-poll mode `ka`, the same without `KeepAlive` as
/// `long`, and a kept-alive poll (`Persist 0`) as `kapoll`.
const CONF: &str = concat!(
    "[ka]\n",
    templates!(),
    "Persist 1\nMaxMessages 1\nKeepAlive 1\n\n[long]\n",
    templates!(),
    "Persist 1\nMaxMessages 1\n\n[kapoll]\n",
    templates!(),
    "Persist 0\nKeepAlive 1\n",
);

fn start(extra: &[&str]) -> (Server, Controller) {
    let mut args = vec!["-PingInterval", "0"];
    args.extend_from_slice(extra);
    let s = Server::start(&args, CONF);
    let ctl = s.ctl();
    (s, ctl)
}

/// A request for `path` with extra header lines.
fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n")
}

/// The exact kept-alive reply: `body` with its length, plus `fields`.
fn framed(body: &str, fields: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Length: {}\r\n{fields}\r\n{body}",
        body.len()
    )
}

/// The exact classic reply: head and body, no length (the end is the close).
fn classic(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nServer: meteord\r\n\r\n{body}")
}

/// A new connection after one cycle: the backlog of `a`, which holds
/// event 1 (`one`).
fn one_cycle(s: &Server) -> Conn {
    let mut c = s.connect_sub();
    c.send(get("/push/h/ka/a.h", "").as_bytes());
    c.expect_str(&framed("a=1\n1:a:one\n", ""));
    c
}

#[test]
fn several_cycles_on_one_connection() {
    let (s, mut ctl) = start(&[]);
    let mut c = s.connect_sub();
    // Nothing after id 1: nothing is sent (not even the head) until an event.
    c.send(get("/push/h1/ka/a.r1", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    c.expect_silence(Duration::from_millis(200));
    assert_eq!(ctl.add("a", "one"), 1);
    c.expect_str(&framed("a=0\n1:a:one\n", ""));
    // The channel was left: the connection waits for its next request.
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    // Backlog: answered at once, whole, on the same connection.
    ctl.add("a", "two");
    ctl.add("b", "three");
    c.send(get("/push/h1/ka/a.r2/b.r2", "").as_bytes());
    c.expect_str(&framed("a=2\nb=3\n2:a:two\n3:b:three\n", ""));
    // And a third cycle waiting again.
    c.send(get("/push/h1/ka/a.r4/b.r4", "").as_bytes());
    assert_eq!(ctl.wait_count("b", 1, WAIT), 1);
    ctl.add("b", "four");
    c.expect_str(&framed("a=2\nb=3\n4:b:four\n", ""));
    c.expect_silence(Duration::from_millis(100));
    // Events published together while it waits come in one reply, whole,
    // as a backlog does (MaxMessages only says that replies end).
    c.send(get("/push/h1/ka/a.r5/b.r5", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    let texts = ["five".to_owned(), "six".to_owned()];
    assert_eq!(ctl.add_many("a", &texts), vec![5, 6]);
    c.expect_str(&framed("a=2\nb=4\n5:a:five\n6:a:six\n", ""));
    let stats = ctl.stats();
    let stat = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(stat("subscriber_connections_accepted"), Some(1));
    assert_eq!(stat("current_subscribers"), Some(1));
}

#[test]
fn the_bundled_jsonlongpoll_mode_keeps_connections() {
    let s = Server::start(&["-PingInterval", "0"], include_str!("../meteor.conf"));
    let mut ctl = s.ctl();
    let mut c = s.connect_sub();
    let head = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/x-ndjson; charset=utf-8\r\n\
             Cache-Control: no-cache, no-store, must-revalidate\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    for i in 1..=3u64 {
        c.send(get(&format!("/push/h/jsonlongpoll/a.r{i}"), "").as_bytes());
        assert_eq!(ctl.wait_count("a", 1, WAIT), 1, "cycle {i}");
        assert_eq!(ctl.add("a", &format!("m{i}")), i);
        let body = format!(
            "{{\"channel\":\"a\",\"lastMsgID\":{}}}\n{{\"id\":{i},\"channel\":\"a\",\"text\":\"m{i}\"}}\n",
            i - 1
        );
        c.expect_str(&format!("{}{body}", head(body.len())));
    }
    assert_eq!(ctl.stat("subscriber_connections_accepted"), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (s, mut ctl) = start(&[]);
    ctl.add("a", "one");
    ctl.add("a", "two");
    // Two requests in one write, both with a backlog.
    let mut c = s.connect_sub();
    let two = format!(
        "{}{}",
        get("/push/h/ka/a.r1", ""),
        get("/push/h/ka/a.r2", "")
    );
    c.send(two.as_bytes());
    c.expect_str(&framed("a=2\n1:a:one\n2:a:two\n", ""));
    c.expect_str(&framed("a=2\n2:a:two\n", ""));
    // A second request sent while the first still waits: kept, and answered
    // after it (its backlog is the event that ended the first).
    c.send(get("/push/h/ka/a.r3", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    c.send(get("/push/h/ka/a.r3", "").as_bytes());
    c.expect_silence(Duration::from_millis(200));
    assert_eq!(ctl.add("a", "three"), 3);
    c.expect_str(&framed("a=2\n3:a:three\n", ""));
    c.expect_str(&framed("a=3\n3:a:three\n", ""));
    // A third, split across writes, still works.
    c.send(b"GET /push/h/ka/a.r3 HT");
    c.expect_silence(Duration::from_millis(100));
    c.send(b"TP/1.1\r\n\r\n");
    c.expect_str(&framed("a=3\n3:a:three\n", ""));
    // Many in one write (one a turn): every one answered, in order.
    let many: String = (1..=3)
        .cycle()
        .take(60)
        .map(|id| get(&format!("/push/h/ka/a.r{id}"), ""))
        .collect();
    c.send(many.as_bytes());
    let backlog = [
        "1:a:one\n2:a:two\n3:a:three\n",
        "2:a:two\n3:a:three\n",
        "3:a:three\n",
    ];
    for i in 0..60 {
        c.expect_str(&framed(&format!("a=3\n{}", backlog[i % 3]), ""));
    }
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn a_client_that_closes_between_cycles_is_cleaned_up() {
    let (s, mut ctl) = start(&["-MaxSubscribers", "1"]);
    let mut c = s.connect_sub();
    c.send(get("/push/h/ka/a", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    ctl.add("a", "one");
    c.expect_str(&framed("a=0\n1:a:one\n", ""));
    assert_eq!(ctl.stat("current_subscribers"), 1);
    drop(c);
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
    // Its slot is free again; one that leaves while its poll waits too.
    let mut d = s.connect_sub();
    d.send(get("/push/h/ka/a.r2", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    drop(d);
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
    one_cycle(&s);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout() {
    let (s, mut ctl) = start(&["-KeepAliveTimeout", "1", "-HeadTimeout", "30"]);
    ctl.add("a", "one");
    let mut c = one_cycle(&s);
    // Closed without a word: the client may be sending at that moment.
    c.expect_eof();
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
    // KeepAliveTimeout 0: no connection is kept.
    let (s, mut ctl) = start(&["-KeepAliveTimeout", "0"]);
    ctl.add("a", "one");
    let mut c = s.request(get("/push/h/ka/a.h", "").as_bytes());
    c.expect_str(&classic("a=1\n1:a:one\n"));
    c.expect_eof();
}

#[test]
fn head_timeout_counts_from_the_first_byte_of_the_next_request() {
    let (s, mut ctl) = start(&["-HeadTimeout", "1", "-KeepAliveTimeout", "30"]);
    ctl.add("a", "one");
    let mut c = one_cycle(&s);
    // Idle for longer than HeadTimeout: still open.
    c.expect_silence(Duration::from_millis(1500));
    // Half a head: 408 once HeadTimeout has passed.
    c.send(b"GET /push/h/ka/a.h HTTP/1.1\r\n");
    let got = c.read_to_end(WAIT);
    assert_eq!(
        show(&got),
        show(default_header("408 Request Timeout").as_bytes())
    );
}

#[test]
fn max_request_head_bytes_holds_for_the_next_request() {
    let (s, mut ctl) = start(&["-MaxRequestHeadBytes", "256"]);
    ctl.add("a", "one");
    let mut c = one_cycle(&s);
    let pad = format!("X-Pad: {}\r\n", "p".repeat(300));
    c.send(get("/push/h/ka/a.h", &pad).as_bytes());
    let got = c.read_to_end(WAIT);
    let want = default_header("431 Request Header Fields Too Large");
    assert_eq!(show(&got), show(want.as_bytes()));
    // Too much sent while a poll waits: that reply comes whole, announced
    // as the last, then the connection closes.
    let mut d = s.connect_sub();
    d.send(get("/push/h/ka/a.r2", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    d.send(get("/push/h/ka/a.h", &pad).as_bytes());
    d.expect_silence(Duration::from_millis(200));
    ctl.add("a", "two");
    d.expect_str(&framed("a=1\n2:a:two\n", "Connection: close\r\n"));
    d.expect_eof();
}

#[test]
fn kept_alive_connections_count_against_max_subscribers() {
    let (s, mut ctl) = start(&["-MaxSubscribers", "2"]);
    ctl.add("a", "one");
    let mut conns: Vec<Conn> = (0..2).map(|_| one_cycle(&s)).collect();
    // Both idle, both counted: a third is refused.
    let mut third = s.connect_sub();
    let got = third.read_to_end(WAIT);
    assert_eq!(
        show(&got),
        show(default_header("503 Service Unavailable").as_bytes())
    );
    // One leaves: there is room again.
    conns.pop();
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 1), 1);
    one_cycle(&s);
}

#[test]
fn a_hostid_is_replaced_between_requests() {
    let (s, mut ctl) = start(&[]);
    ctl.add("a", "one");
    // A: one cycle done, idle (it holds no hostid between requests).
    let mut a = one_cycle(&s);
    // B waits under hostid h.
    let mut b = s.connect_sub();
    b.send(get("/push/h/ka/a.r2", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    // A's next request with hostid h replaces B: B's reply is the goodbye
    // alone, announced as the last, then B closes.
    a.send(get("/push/h/ka/a.r2", "").as_bytes());
    b.expect_str(&framed("a=1\nBYE\n", "Connection: close\r\n"));
    b.expect_eof();
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    // A keeps working, and a classic request with hostid h replaces it.
    let mut c = s.http_get("/push/h/long/a.r2");
    a.expect_str(&framed("a=1\nBYE\n", "Connection: close\r\n"));
    a.expect_eof();
    ctl.add("a", "two");
    c.expect_str(&classic("a=1\n2:a:two\n"));
    c.expect_eof();
}

#[test]
fn connection_close_http10_and_classic_longpoll_still_close() {
    let (s, mut ctl) = start(&[]);
    ctl.add("a", "one");
    let cases = [
        get("/push/h/ka/a.h", "Connection: close\r\n"),
        get("/push/h/ka/a.h", "Connection: keep-alive, Close\r\n"),
        "GET /push/h/ka/a.h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_owned(),
        get("/push/h/long/a.h", ""),
    ];
    for request in cases {
        let mut c = s.request(request.as_bytes());
        let got = c.read_to_end(WAIT);
        assert_eq!(
            show(&got),
            show(classic("a=1\n1:a:one\n").as_bytes()),
            "{request:?}"
        );
    }
}

#[test]
fn max_time_ends_a_kept_alive_poll_with_an_empty_reply() {
    let (s, mut ctl) = start(&["-MaxTime.ka", "1"]);
    let mut c = s.connect_sub();
    c.send(get("/push/h/ka/a", "").as_bytes());
    // Within WAIT: MaxTime is 1 s.
    c.expect_str(&framed("a=0\n", ""));
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    c.send(get("/push/h/ka/a", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    ctl.add("a", "one");
    c.expect_str(&framed("a=0\n1:a:one\n", ""));
}

#[test]
fn a_persist_0_poll_is_kept_alive_too() {
    let (s, mut ctl) = start(&[]);
    let mut c = s.connect_sub();
    c.send(get("/push/h/kapoll/a.h", "").as_bytes());
    c.expect_str(&framed("a=0\n", ""));
    ctl.add("a", "one");
    ctl.add("a", "two");
    c.send(get("/push/h/kapoll/a.h", "").as_bytes());
    c.expect_str(&framed("a=2\n1:a:one\n2:a:two\n", ""));
    // A client that half-closes between requests is closed.
    c.shutdown_write();
    c.expect_eof();
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
}

#[test]
fn a_request_with_a_body_is_answered_and_closed_so_its_body_is_never_a_request() {
    let (s, mut ctl) = start(&[]);
    assert_eq!(ctl.add("a", "one"), 1);
    let smuggled = get("/push/h2/ka/a.h", "");
    for length in [
        format!("Content-Length: {}\r\n", smuggled.len()),
        "Transfer-Encoding: chunked\r\n".to_owned(),
    ] {
        let mut c = s.connect_sub();
        let mut request = get("/push/h1/ka/a.h", &length);
        request.push_str(&smuggled);
        c.send(request.as_bytes());
        // The classic reply, ended by the close: the body is not answered
        // (kept alive, the first reply would be framed and the body
        // answered as a second request).
        let reply = String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned();
        assert_eq!(reply, classic("a=1\n1:a:one\n"), "with {length:?}");
    }
    // Both requests were logged (the log is written once a turn), and
    // neither body was taken for a request of h2.
    let h1_left = |logs: &[String]| {
        let left = |l: &&String| l.contains("leavechannel\t127.0.0.1\th1\t");
        logs.iter().filter(left).count()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while h1_left(&s.logs()) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = s.logs();
    assert_eq!(h1_left(&logs), 2, "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("\th2\t")), "{logs:?}");
}

/// `start` with `PollBatchInterval` of `ms` for mode `ka`.
fn start_batched(ms: u64, extra: &[&str]) -> (Server, Controller) {
    let ms = ms.to_string();
    let mut args = vec!["-PollBatchInterval.ka", ms.as_str()];
    args.extend_from_slice(extra);
    start(&args)
}

/// A connection whose first reply (never held) is out, holding event 1
/// (`one`) of channel `a`, and whose next poll (`a.r2`) waits.
fn replied_once(s: &Server, ctl: &mut Controller, hostid: &str) -> Conn {
    let mut c = s.connect_sub();
    c.send(get(&format!("/push/{hostid}/ka/a.r1"), "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    assert_eq!(ctl.add("a", "one"), 1);
    c.expect_str(&framed("a=0\n1:a:one\n", ""));
    c.send(get(&format!("/push/{hostid}/ka/a.r2"), "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    c
}

#[test]
fn events_within_the_batch_interval_go_out_in_one_reply() {
    // 5 s: the events below are published well within it however loaded
    // the machine is, and the reply comes well within the read timeout.
    let (s, mut ctl) = start_batched(5000, &[]);
    let mut c = replied_once(&s, &mut ctl, "h");
    // Published one at a time, right after the first reply: held back.
    assert_eq!(ctl.add("a", "two"), 2);
    c.expect_silence(Duration::from_secs(1));
    assert_eq!(ctl.add("a", "three"), 3);
    assert_eq!(ctl.add("b", "elsewhere"), 4);
    assert_eq!(ctl.add("a", "four"), 5);
    // Once the interval has passed: all of them, whole, in one reply.
    c.expect_within(
        framed("a=1\n2:a:two\n3:a:three\n5:a:four\n", "").as_bytes(),
        Duration::from_secs(15),
    );
    c.expect_silence(Duration::from_millis(200));
    // The connection goes on.
    c.send(get("/push/h/ka/a.r6", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
}

#[test]
fn an_event_after_a_quiet_batch_interval_goes_out_at_once() {
    // 3 s: an event published after it is answered within 2 s, which a
    // reply held for the interval could not be.
    let (s, mut ctl) = start_batched(3000, &[]);
    let mut c = replied_once(&s, &mut ctl, "h");
    c.expect_silence(Duration::from_millis(3500));
    assert_eq!(ctl.add("a", "two"), 2);
    c.expect_within(
        framed("a=1\n2:a:two\n", "").as_bytes(),
        Duration::from_secs(2),
    );
}

#[test]
fn shutdown_during_a_hold_sends_the_held_events_and_the_goodbye() {
    let (mut s, mut ctl) = start_batched(60_000, &[]);
    let mut c = replied_once(&s, &mut ctl, "h");
    assert_eq!(ctl.add("a", "two"), 2);
    assert_eq!(ctl.add("a", "three"), 3);
    c.expect_silence(Duration::from_millis(300));
    s.signal("TERM");
    c.expect_str(&framed(
        "a=1\n2:a:two\n3:a:three\nBYE\n",
        "Connection: close\r\n",
    ));
    c.expect_eof();
    s.expect_exit(Duration::from_secs(10));
}

#[test]
fn a_hostid_replaced_during_a_hold_gets_its_held_events_and_the_goodbye() {
    let (s, mut ctl) = start_batched(60_000, &[]);
    let mut c = replied_once(&s, &mut ctl, "h");
    assert_eq!(ctl.add("a", "two"), 2);
    assert_eq!(ctl.add("a", "three"), 3);
    c.expect_silence(Duration::from_millis(300));
    // A new connection with hostid h: its first reply is not held.
    let mut d = s.connect_sub();
    d.send(get("/push/h/ka/a.r2", "").as_bytes());
    c.expect_str(&framed(
        "a=1\n2:a:two\n3:a:three\nBYE\n",
        "Connection: close\r\n",
    ));
    c.expect_eof();
    d.expect_str(&framed("a=3\n2:a:two\n3:a:three\n", ""));
}

#[test]
fn max_time_ends_a_hold_with_the_held_events() {
    let (s, mut ctl) = start_batched(60_000, &["-MaxTime.ka", "1"]);
    let mut c = replied_once(&s, &mut ctl, "h");
    assert_eq!(ctl.add("a", "two"), 2);
    // Within the read timeout: MaxTime is 1 s, the interval a minute.
    c.expect_within(
        framed("a=1\n2:a:two\n", "").as_bytes(),
        Duration::from_secs(10),
    );
    // A client that closes during a hold is cleaned up.
    c.send(get("/push/h/ka/a.r3", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    assert_eq!(ctl.add("a", "three"), 3);
    drop(c);
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
}

#[test]
fn a_trusted_proxy_reusing_one_connection_names_each_client() {
    let (s, mut ctl) = start(&["-TrustedProxies", "127.0.0.2"]);
    ctl.add("a", "one");
    let mut c = connect_from(s.sub_addr, std::net::Ipv4Addr::new(127, 0, 0, 2));
    for (hostid, client) in [("k1", "203.0.113.1"), ("k2", "203.0.113.2")] {
        let xff = format!("X-Forwarded-For: {client}\r\n");
        c.send(get(&format!("/push/{hostid}/ka/a.h"), &xff).as_bytes());
        c.expect_str(&framed("a=1\n1:a:one\n", ""));
        let line = s.wait_log(WAIT, |l| {
            l.contains(&format!("joinchannel\t{client}\t{hostid}\t"))
        });
        assert!(line.is_some(), "{hostid} from {client}: {:#?}", s.logs());
    }
    assert_eq!(ctl.stat("subscriber_connections_accepted"), 1);
}

#[test]
fn a_held_poll_keeps_its_events_however_many_come_during_the_hold() {
    // The channel caches 2 events: without the hold pinning its place in
    // the channel's buffer, the 100 published during the hold would be
    // trimmed under it and it would be dropped as a slow consumer.
    let (s, mut ctl) = start_batched(60_000, &["-MaxTime.ka", "1", "-MaxMessagesPerChannel", "2"]);
    let mut c = replied_once(&s, &mut ctl, "h");
    let texts: Vec<String> = (2..=101).map(|i| format!("m{i}")).collect();
    assert_eq!(ctl.add_many("a", &texts), (2..=101).collect::<Vec<u64>>());
    let events: String = (2..=101).map(|i| format!("{i}:a:m{i}\n")).collect();
    c.expect_within(
        framed(&format!("a=1\n{events}"), "").as_bytes(),
        Duration::from_secs(10),
    );
    c.send(get("/push/h/ka/a.r102", "").as_bytes());
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
}
