//! The bounds on waiting for Redis, replayed with a stand-in for Redis
//! whose replies wait until the test releases them (no redis-server
//! needed): publishes waiting for Redis are bounded (`RedisMaxPending`),
//! and a reply due for longer than `RedisTimeout` brings the links down,
//! fails the waiting publishes with `ERR Backend unavailable`, and the node
//! reconnects.

mod common;

use common::fake_redis::FakeRedis;
use common::*;
use std::time::{Duration, Instant};

/// A node sharing channels through `fake`, its link up.
fn node(fake: &FakeRedis, extra: &[&str]) -> Server {
    let addr = fake.addr.to_string();
    let mut args = vec!["-RedisAddress", addr.as_str(), "-PingInterval", "0"];
    args.extend_from_slice(extra);
    let s = Server::start(&args, TEST_CONF);
    wait_links_up(&s, 1);
    s
}

fn wait_links_up(s: &Server, n: usize) {
    let up = eventually(Duration::from_secs(10), || {
        s.logs().iter().filter(|l| l.contains(": link up")).count() >= n
    });
    assert!(
        up,
        "the node's Redis link did not come up {n} time(s); log:\n{}",
        s.logs().join("\n")
    );
}

#[test]
fn publishes_beyond_redis_max_pending_are_refused_at_once() {
    let fake = FakeRedis::start();
    let s = node(&fake, &["-RedisMaxPending", "3"]);
    fake.hold(true);
    let mut ctl = s.ctl();
    ctl.send("ADDMESSAGE ch m1\nADDMESSAGE ch m2\nADDMESSAGE ch m3\n");
    fake.wait_held(3, WAIT);
    // A second publisher is refused at once while three wait.
    let mut other = s.ctl();
    assert_eq!(other.command("ADDMESSAGE ch m4"), "ERR Backend unavailable");
    fake.release(3);
    let ids: Vec<u64> = (0..3)
        .map(|_| parse_ok_id(&ctl.read_reply_line()))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    fake.hold(false);
    // Room again once Redis answered.
    assert!(other.add("ch", "m5") > ids[2]);
}

#[test]
fn a_reply_overdue_for_redis_timeout_fails_waiting_publishes_and_reconnects() {
    let fake = FakeRedis::start();
    let s = node(&fake, &["-RedisTimeout", "1"]);
    fake.hold(true);
    let mut ctl = s.ctl();
    let started = Instant::now();
    ctl.send("ADDMESSAGE ch held\n");
    fake.wait_held(1, WAIT);
    assert_eq!(ctl.read_reply_line(), "ERR Backend unavailable");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "ERR after {took:?} with RedisTimeout 1"
    );
    // Log lines are written once per loop turn: wait for them.
    for line in ["no reply for 1 s (RedisTimeout)", "link lost"] {
        assert!(
            s.wait_log(WAIT, |l| l.contains(line)).is_some(),
            "no {line:?} in the log:\n{}",
            s.logs().join("\n")
        );
    }
    // The node reconnects; once Redis answers again, publishing works.
    fake.hold(false);
    wait_links_up(&s, 2);
    let id = ctl.add("ch", "after");
    assert!(id > 0);
}
