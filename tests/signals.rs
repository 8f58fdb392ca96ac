//! Signals (README, wire contract: signals and logs): SIGHUP rereads the
//! configuration and drops the document cache, SIGUSR2 drops the document
//! cache, SIGTERM closes every connection with its shutdown message and
//! exits, completing the event in progress but not sending those queued
//! behind it.

mod common;

use common::*;
use std::time::Duration;

fn fetch(s: &Server, path: &str) -> Vec<u8> {
    let mut c = s.http_get(path);
    c.read_to_end(WAIT)
}

fn doc(body: &[u8]) -> Vec<u8> {
    let mut v = document_head("200 OK", "text/plain", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn sigusr2_drops_the_document_cache() {
    let s = Server::start_test(&[]);
    s.write_doc("c.txt", b"one");
    assert_eq!(fetch(&s, "/c.txt"), doc(b"one"));
    s.write_doc("c.txt", b"two!");
    assert_eq!(fetch(&s, "/c.txt"), doc(b"one"));
    s.signal("USR2");
    assert!(
        eventually(WAIT, || fetch(&s, "/c.txt") == doc(b"two!")),
        "still cached after SIGUSR2"
    );
}

#[test]
fn sighup_drops_the_document_cache_and_rereads_the_config() {
    let s = Server::start(&[], "[m]\nMessageTemplate A~id~\\n\n");
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    s.write_doc("c.txt", b"one");
    assert_eq!(fetch(&s, "/c.txt"), doc(b"one"));
    s.write_doc("c.txt", b"two!");
    let poll = |s: &Server| String::from_utf8_lossy(&fetch(s, "/push/h/m/a.h")).into_owned();
    assert_eq!(poll(&s), format!("{}A1\n", default_header("200 OK")));
    std::fs::write(&s.conf_path, "[m]\nMessageTemplate B~id~\\n\n").unwrap();
    s.signal("HUP");
    assert!(
        eventually(WAIT, || poll(&s)
            == format!("{}B1\n", default_header("200 OK"))),
        "config not reread after SIGHUP: {:?}",
        poll(&s)
    );
    assert_eq!(fetch(&s, "/c.txt"), doc(b"two!"));
    // Channels survive a reload.
    assert_eq!(ctl.list(), "OK\r\na(1/0)\r\n--EOT--\r\n");
}

#[test]
fn sigterm_closes_everyone_and_exits() {
    let mut s = Server::start_test(&["-ControllerShutdownMsg", "CTLBYE\\n"]);
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("a"), 0);
    let mut a = s.subscribe("/push/h1/stream/a", HDR_OK);
    let mut b = s.subscribe("/push/h2/long/b", HDR_OK);
    s.signal("TERM");
    a.expect_str("BYE\n");
    a.expect_eof();
    b.expect_str("BYE\n");
    b.expect_eof();
    ctl.conn.expect_str("CTLBYE\n");
    ctl.conn.expect_eof();
    assert!(
        s.wait_exit(Duration::from_secs(10)).is_some(),
        "server still running 10 s after SIGTERM"
    );
}

/// Splits a `stream` reply after its header into `<id>:a:<text>\n`
/// events: their ids, checking that each is whole, and what follows the
/// last one.
fn whole_events<'a>(reply: &'a [u8], text: &str) -> (Vec<u64>, &'a [u8]) {
    let mut rest = reply
        .strip_prefix(HDR_OK.as_bytes())
        .unwrap_or_else(|| panic!("no header: {}", show(&reply[..reply.len().min(64)])));
    let mut ids = Vec::new();
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = std::str::from_utf8(&rest[..end]).expect("event is UTF-8");
        let Some((id, body)) = line.split_once(':') else {
            break;
        };
        let Ok(id) = id.parse::<u64>() else {
            break;
        };
        assert_eq!(body, format!("a:{text}"), "event {id} is not whole");
        ids.push(id);
        rest = &rest[end + 1..];
    }
    (ids, rest)
}

#[test]
fn sigterm_completes_the_event_in_progress_then_says_goodbye() {
    // README, Shutdown: a stream gets the rest of the event it is being
    // sent and its goodbye; events queued behind that are not sent. A
    // reader that keeps up has nothing queued and gets every event.
    // 7,500 events of about 1 KB: more than the socket buffers of a
    // reader that does not read hold, less than the 8 MiB a stalled
    // reader may lag before it counts as a slow consumer.
    const EVENTS: u64 = 7_500;
    let mut s = Server::start_test(&["-MaxMessagesPerChannel", "10000"]);
    let mut stalled = connect_small_rcvbuf(s.sub_addr, 4096);
    stalled.send(get_request("/push/h1/stream/a").as_bytes());
    let mut reader = s.subscribe("/push/h2/stream/a", HDR_OK);
    let mut ctl = s.ctl();
    assert_eq!(ctl.wait_count("a", 2, WAIT), 2);
    let text = "x".repeat(1000);
    let expected: Vec<u8> = (1..=EVENTS)
        .flat_map(|id| format!("{id}:a:{text}\n").into_bytes())
        .collect();
    let (caught_up, wait_caught_up) = std::sync::mpsc::channel();
    let want = expected.len();
    let reading = std::thread::spawn(move || {
        let mut got = reader
            .read_exact_n(want, Duration::from_secs(60))
            .expect("every event reaches the reader");
        let _ = caught_up.send(());
        got.extend(reader.read_to_end(Duration::from_secs(30)));
        got
    });
    let batch: Vec<String> = (0..500).map(|_| text.clone()).collect();
    for _ in 0..EVENTS / 500 {
        ctl.add_many("a", &batch);
    }
    // The reader has nothing queued when the signal comes.
    wait_caught_up
        .recv_timeout(Duration::from_secs(60))
        .expect("the reader caught up");
    s.signal("TERM");

    let all = reading.join().expect("the reading subscriber's thread");
    assert!(all.starts_with(&expected), "the reader's events");
    assert_eq!(show(&all[want..]), "BYE\\n", "the reader's last bytes");

    let got = stalled.read_to_end(Duration::from_secs(30));
    let (ids, after) = whole_events(&got, &text);
    let last = ids.last().copied().unwrap_or(0);
    assert_eq!(
        ids,
        (1..=last).collect::<Vec<_>>(),
        "the stalled reader's events"
    );
    assert!(
        last < EVENTS,
        "the stalled reader got all {EVENTS} events: the queued ones should not be sent"
    );
    assert_eq!(show(after), "BYE\\n", "the stalled reader's last bytes");
    let status = s.expect_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status after the drain");
}
