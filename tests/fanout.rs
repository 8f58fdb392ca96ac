//! Fan-out: 1,000 subscribers on one channel all receive the same 100
//! events, in order, within a bounded time.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 1000;
const EVENTS: usize = 100;

#[test]
fn thousand_subscribers_receive_the_same_hundred_events_in_order() {
    // No pings: only the events may arrive.
    let s = Server::start_test(&["-PingInterval", "0"]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);

    let mut subs: Vec<Conn> = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        subs.push(s.http_get(&format!("/push/fan{i}/stream/fan")));
    }
    for (i, c) in subs.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        c.read_until(HDR_OK.as_bytes(), left)
            .unwrap_or_else(|e| panic!("subscriber {i} header: {e}"));
    }
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("fan"), SUBSCRIBERS as u64);

    let texts: Vec<String> = (1..=EVENTS).map(|i| format!("event-{i}")).collect();
    // The bound on delivery is the deadline of the reads below: every
    // subscriber has every event within 20 s of the first publish.
    let deliver_by = Instant::now() + Duration::from_secs(20);
    let ids = ctl.add_many("fan", &texts);
    let expected: String = ids
        .iter()
        .zip(&texts)
        .map(|(id, t)| format!("{id}:fan:{t}\n"))
        .collect();
    assert_eq!(ids, (1..=EVENTS as u64).collect::<Vec<_>>());

    for (i, c) in subs.iter_mut().enumerate() {
        let left = deliver_by.saturating_duration_since(Instant::now());
        let got = c
            .read_exact_n(expected.len(), left)
            .unwrap_or_else(|e| panic!("subscriber {i}: {e}"));
        assert!(
            got == expected.as_bytes(),
            "subscriber {i} got {}",
            show(&got)
        );
    }
    assert_eq!(ctl.stat("messages_served"), (SUBSCRIBERS * EVENTS) as u64);
    drop(subs);
    assert_eq!(ctl.wait_count("fan", 0, Duration::from_secs(10)), 0);
}

#[test]
fn many_channels_many_subscribers_get_only_their_channel() {
    let s = Server::start_test(&["-PingInterval", "0"]);
    let mut subs = Vec::new();
    for i in 0..100 {
        let c = s.http_get(&format!("/push/m{i}/stream/ch{}", i % 10));
        subs.push((i % 10, c));
    }
    for (_, c) in subs.iter_mut() {
        c.expect_str(HDR_OK);
    }
    let mut ctl = s.ctl();
    let mut ids = Vec::new();
    for ch in 0..10 {
        ids.push(ctl.add(&format!("ch{ch}"), &format!("to{ch}")));
    }
    for (ch, c) in subs.iter_mut() {
        c.expect_str(&format!("{}:ch{ch}:to{ch}\n", ids[*ch]));
        c.expect_silence(Duration::from_millis(5));
    }
}
