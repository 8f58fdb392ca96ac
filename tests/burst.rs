//! Bursts: many events pipelined on one controller connection reach a
//! reader that keeps up whole, in order, and without dropping it; and a
//! burst in flight does not keep another publisher waiting.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Reads from `conn` (what it buffered first) until `lines` newlines have
/// arrived, the peer closes, or `timeout` passes; `first` is called once,
/// with the first complete line. Returns everything read.
fn read_lines(
    conn: &mut Conn,
    lines: usize,
    timeout: Duration,
    mut first: impl FnMut(&[u8]),
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut got = std::mem::take(&mut conn.buf);
    let mut seen = got.iter().filter(|&&b| b == b'\n').count();
    let mut told = false;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if !told && let Some(nl) = got.iter().position(|&b| b == b'\n') {
            first(&got[..=nl]);
            told = true;
        }
        if seen >= lines {
            return Ok(got);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{seen} of {lines} lines within {timeout:?}"));
        }
        conn.stream.set_read_timeout(Some(left)).ok();
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {seen} of {lines} lines")),
            Ok(n) => {
                seen += chunk[..n].iter().filter(|&&b| b == b'\n').count();
                got.extend_from_slice(&chunk[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("after {seen} of {lines} lines: {e}")),
        }
    }
}

/// A streaming subscriber of `channel` in the `stream` mode, header read.
fn subscribe(s: &Server, channel: &str) -> Conn {
    let mut sub = s.http_get(&format!("/push/reader/stream/{channel}"));
    sub.read_until(HDR_OK.as_bytes(), WAIT)
        .unwrap_or_else(|e| panic!("subscriber header: {e}"));
    sub
}

/// Reads `lines` events on a thread of its own, as fast as they come;
/// hands the connection back, still open.
fn read_on_thread(mut sub: Conn, lines: usize) -> thread::JoinHandle<(Conn, Vec<u8>)> {
    thread::spawn(move || {
        let got = read_lines(&mut sub, lines, Duration::from_secs(60), |_| {})
            .unwrap_or_else(|e| panic!("reader: {e}"));
        (sub, got)
    })
}

/// No reader was dropped: by the counter and by the log.
fn assert_no_slow_consumer(s: &Server, ctl: &mut Controller, channel: &str) {
    let stats = control_http(
        s,
        "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(json_u64(&stats, "slow_consumers_dropped"), 0, "{stats}");
    assert_eq!(ctl.count(channel), 1, "the reader is still subscribed");
    let dropped: Vec<String> = s
        .logs()
        .into_iter()
        .filter(|l| l.contains("slowConsumer"))
        .collect();
    assert!(dropped.is_empty(), "{dropped:?}");
}

#[test]
fn a_burst_of_ten_thousand_events_reaches_a_reader_that_keeps_up_whole_and_in_order() {
    const BURST: usize = 10_000;
    // Default MaxMessagesPerChannel (250): a turn that took the whole
    // burst at once would trim events the reader has yet to get.
    let s = Server::start_test(&["-PingInterval", "0"]);
    let sub = subscribe(&s, "burst");
    let texts: Vec<String> = (0..BURST).map(|i| format!("event-{i}")).collect();
    let expected: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}:burst:{t}\n", i + 1))
        .collect();
    let reader = read_on_thread(sub, BURST);

    // All of it in one write, the replies read after.
    let mut ctl = s.ctl();
    let ids = ctl.add_many("burst", &texts);
    assert_eq!(ids, (1..=BURST as u64).collect::<Vec<_>>());

    let (_sub, got) = reader.join().expect("reader thread");
    assert!(
        got == expected.as_bytes(),
        "the reader got {} bytes, not the {} expected; first difference at byte {:?}",
        got.len(),
        expected.len(),
        got.iter()
            .zip(expected.as_bytes())
            .position(|(a, b)| a != b)
    );
    assert_no_slow_consumer(&s, &mut ctl, "burst");
    assert_eq!(ctl.stat("messages_served"), BURST as u64);
}

#[test]
fn a_reader_catching_up_after_a_pause_is_not_dropped() {
    // A reader that stopped reading while megabytes piled up (its cursor
    // pinned, far behind the 250 events the channel caches), then reads
    // as fast as it can: the server catches it up a write budget a turn,
    // and must keep what it has yet to send between those turns, even
    // when a write stopped at the budget rather than at a full socket.
    const EVENTS: usize = 6_000;
    let s = Server::start_test(&["-PingInterval", "0"]);
    let sub = subscribe(&s, "pause");
    let text = "p".repeat(1000);
    let texts: Vec<String> = (0..EVENTS).map(|_| text.clone()).collect();
    let mut ctl = s.ctl();
    let ids = ctl.add_many("pause", &texts);
    assert_eq!(ids.len(), EVENTS);
    let expected: String = (1..=EVENTS)
        .map(|id| format!("{id}:pause:{text}\n"))
        .collect();
    let (_sub, got) = read_on_thread(sub, EVENTS).join().expect("reader thread");
    assert!(
        got == expected.as_bytes(),
        "the reader got {} of {} bytes",
        got.len(),
        expected.len()
    );
    assert_no_slow_consumer(&s, &mut ctl, "pause");
}

#[test]
fn a_second_publisher_is_answered_while_a_burst_is_in_flight() {
    // The channel's room stops the burst every few hundred events.
    second_publisher_during_a_burst(&["-PingInterval", "0"], 1);
}

#[test]
fn a_second_publisher_is_answered_while_a_burst_in_the_room_of_its_channel_is_in_flight() {
    // Room for the whole burst: only the turn's budget stops it.
    let args = ["-PingInterval", "0", "-MaxMessagesPerChannel", "200000"];
    second_publisher_during_a_burst(&args, 1);
}

#[test]
fn two_bursts_on_one_channel_take_turns() {
    // Both stop at the channel's room every turn: neither may keep first pick.
    second_publisher_during_a_burst(&["-PingInterval", "0"], 5_000);
}

/// A publisher writing pipelined publishes on one thread and reading its
/// replies on another, as fast as they come.
struct Burst {
    writing: thread::JoinHandle<std::io::Result<()>>,
    replies: thread::JoinHandle<Result<Vec<u8>, String>>,
    /// Its first reply, as soon as it came.
    first: mpsc::Receiver<Vec<u8>>,
    events: usize,
}

/// Starts `events` publishes of `<tag><n>` on `channel`, on a connection of
/// their own.
fn burst(s: &Server, channel: &str, tag: &str, events: usize) -> Burst {
    let mut ctl = s.ctl();
    let mut writer = ctl
        .conn
        .stream
        .try_clone()
        .expect("clone the controller socket");
    let lines: String = (0..events)
        .map(|i| format!("ADDMESSAGE {channel} {tag}{i}\n"))
        .collect();
    let writing = thread::spawn(move || writer.write_all(lines.as_bytes()));
    let (first_tx, first) = mpsc::channel();
    let replies = thread::spawn(move || {
        read_lines(&mut ctl.conn, events, Duration::from_secs(60), |line| {
            let _ = first_tx.send(line.to_vec());
        })
    });
    Burst {
        writing,
        replies,
        first,
        events,
    }
}

impl Burst {
    /// The ids it was answered, once all came; they grow.
    fn ids(self, who: &str) -> Vec<u64> {
        self.writing
            .join()
            .expect("writer thread")
            .unwrap_or_else(|e| panic!("{who}'s burst not written: {e}"));
        let replies = self
            .replies
            .join()
            .expect("reply thread")
            .unwrap_or_else(|e| panic!("{who}'s replies: {e}"));
        let ids: Vec<u64> = String::from_utf8_lossy(&replies)
            .lines()
            .map(parse_ok_id)
            .collect();
        assert_eq!(ids.len(), self.events, "{who}'s replies");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{who}'s ids grow");
        ids
    }
}

/// Publisher A pipelines 100,000 events; once they are being answered,
/// publisher B pipelines `b_events` (a fifth of A's or fewer) on the same
/// channel. B is answered in full before A's last, and the reader gets all
/// of both, each once, each publisher's in its order.
fn second_publisher_during_a_burst(args: &[&str], b_events: usize) {
    const BURST: usize = 100_000;
    let s = Server::start_test(args);
    let sub = subscribe(&s, "shared");
    let reader = read_on_thread(sub, BURST + b_events);

    let a = burst(&s, "shared", "a", BURST);
    let first = a
        .first
        .recv_timeout(Duration::from_secs(10))
        .expect("A's first reply");
    assert_eq!(first, b"OK\t1\r\n");
    let b = burst(&s, "shared", "b", b_events);
    let b_ids = b.ids("B");
    let a_ids = a.ids("A");
    let last_a = a_ids[BURST - 1];
    // B, a fifth of A or less, is done before A: it was not held back
    // until A's burst ran out.
    let last_b = b_ids[b_events - 1];
    assert!(
        last_b < last_a,
        "B's last publish ({last_b}) waited for the whole burst (last id {last_a})"
    );
    let mut all: Vec<u64> = a_ids.iter().chain(&b_ids).copied().collect();
    all.sort_unstable();

    // The reader got all of both, each once, in id order.
    let (sub, got) = reader.join().expect("reader thread");
    let got = String::from_utf8(got).expect("utf-8 events");
    let mut ids = Vec::new();
    let mut next = [0usize; 2];
    for line in got.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some("shared"), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("unexpected event line {line:?}");
        };
        ids.push(id.parse::<u64>().expect("numeric id"));
        let who = usize::from(text.starts_with('b'));
        assert_eq!(
            text,
            format!("{}{}", ["a", "b"][who], next[who]),
            "each publisher's events in its order"
        );
        next[who] += 1;
    }
    assert_eq!(ids, all, "every answered id once, in order");
    let mut ctl = s.ctl();
    assert_no_slow_consumer(&s, &mut ctl, "shared");
    drop(sub);
}
