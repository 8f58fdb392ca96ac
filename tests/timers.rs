//! Timers: PingInterval pings, MaxTime, MaxMessageAge (wire contract B7: enforced to
//! within a second). These tests let real time pass, bounded by deadlines.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn pings_repeat_every_ping_interval_and_do_not_disturb_messages() {
    // MaxMessageAge 2 as well: the defects table has pings going silent
    // after the first when MaxMessageAge <= 2.
    let s = Server::start_test(&["-PingInterval", "3", "-MaxMessageAge", "2"]);
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/stream/a", HDR_OK);
    let t0 = Instant::now();
    // The next bytes are exactly one ping, about 3 s after the subscription...
    c.expect_within(b"PING\n", Duration::from_millis(4500));
    let first = t0.elapsed();
    let t1 = Instant::now();
    // ...and exactly one more about 3 s later.
    c.expect_within(b"PING\n", Duration::from_millis(4500));
    let gap = t1.elapsed();
    assert!(
        first >= Duration::from_millis(2000) && first <= Duration::from_millis(4200),
        "first ping after {first:?}, expected about 3 s"
    );
    assert!(
        gap >= Duration::from_millis(2000) && gap <= Duration::from_millis(4200),
        "pings {gap:?} apart, expected about 3 s"
    );
    // Messages go on being delivered, unchanged, between pings.
    ctl.add("a", "x");
    c.expect_str("1:a:x\n");
}

#[test]
fn default_ping_interval_and_message_and_pings_off_at_zero_and_two() {
    // One server, three modes: `p` has the defaults (PingInterval 5, the
    // default PingMessage), `stream` PingInterval 0 (off), `long`
    // PingInterval 2 (off too, with a warning).
    let s = Server::start_test(&[
        "-Persist.p",
        "1",
        "-PingInterval.stream",
        "0",
        "-PingInterval.long",
        "2",
    ]);
    let mut zero = s.subscribe("/push/h1/stream/a", HDR_OK);
    let mut two = s.subscribe("/push/h2/long/a", HDR_OK);
    let mut dflt = s.subscribe("/push/h3/p/a", &default_header("200 OK"));
    let t0 = Instant::now();
    // The first default ping comes 5 s after the subscription, and it is
    // the next bytes.
    dflt.expect_within(
        b"<script>p(-1,\"\");</script>\r\n",
        Duration::from_millis(6500),
    );
    let first = t0.elapsed();
    assert!(
        first >= Duration::from_millis(4000) && first <= Duration::from_millis(6200),
        "first ping after {first:?}, expected about 5 s"
    );
    // Six seconds in all (past a fallback to the default 5) without a byte
    // for the other two.
    let left = Duration::from_secs(6).saturating_sub(t0.elapsed());
    zero.expect_silence(left.max(Duration::from_millis(10)));
    two.expect_silence(Duration::from_millis(10));
    assert!(
        s.logs()
            .iter()
            .any(|l| l.to_lowercase().contains("pinginterval")),
        "expected a warning naming PingInterval in {:#?}",
        s.logs()
    );
}

#[test]
fn max_time_closes_without_shutdown_message() {
    let s = Server::start_test(&["-MaxTime.stream", "2"]);
    let t0 = Instant::now();
    let mut c = s.subscribe("/push/h1/stream/a", HDR_OK);
    c.expect_silence(Duration::from_millis(1200));
    let rest = c.read_to_end(Duration::from_secs(4));
    let took = t0.elapsed();
    assert!(
        rest.is_empty(),
        "MaxTime close must not send the shutdown message: {}",
        show(&rest)
    );
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_millis(3600),
        "closed after {took:?}, expected about 2 s (within a second)"
    );
    let mut ctl = s.ctl();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
}

#[test]
fn max_time_is_per_mode() {
    let s = Server::start_test(&["-MaxTime.long", "1"]);
    let mut other = s.subscribe("/push/h0/stream/a", HDR_OK);
    let mut lp = s.subscribe("/push/h1/long/a", HDR_OK);
    let rest = lp.read_to_end(Duration::from_secs(4));
    assert!(rest.is_empty(), "{}", show(&rest));
    // The stream mode has no MaxTime: still connected.
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    other.expect_str("1:a:x\n");
}

#[test]
fn global_max_time_applies_to_all_modes() {
    let s = Server::start_test(&["-MaxTime", "1"]);
    let t0 = Instant::now();
    let mut c = s.subscribe("/push/h1/stream/a", HDR_OK);
    let rest = c.read_to_end(Duration::from_secs(4));
    assert!(rest.is_empty(), "{}", show(&rest));
    assert!(t0.elapsed() >= Duration::from_millis(700));
}

#[test]
fn max_message_age_expires_messages() {
    let s = Server::start_test(&["-MaxMessageAge", "2"]);
    let mut ctl = s.ctl();
    let mut sub = s.subscribe("/push/h1/stream/held", HDR_OK);
    let t0 = Instant::now();
    ctl.add("gone", "x");
    ctl.add("held", "y");
    sub.expect_str("2:held:y\n");
    assert_eq!(ctl.list(), "OK\r\ngone(1/0)\r\nheld(1/1)\r\n--EOT--\r\n");
    // The channel with no subscriber disappears; the other one keeps its
    // subscriber but loses the message.
    let want = "OK\r\nheld(0/1)\r\n--EOT--\r\n";
    let got = ctl.wait_list(want, Duration::from_secs(6));
    let took = t0.elapsed();
    assert_eq!(got, want);
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(4200),
        "expired after {took:?}, expected 2-3 s"
    );
    let mut p = s.http_get("/push/h2/poll/held.h");
    assert_eq!(p.read_to_end(WAIT), HDR_OK.as_bytes());
    // New messages are still delivered and cached.
    ctl.add("held", "z");
    sub.expect_str("3:held:z\n");
}

#[test]
fn max_message_age_keeps_young_messages() {
    let s = Server::start_test(&["-MaxMessageAge", "3"]);
    let mut ctl = s.ctl();
    ctl.add("a", "old");
    let t0 = Instant::now();
    // Add a younger message once the first is about two seconds old.
    let mut probe = s.subscribe("/push/h1/stream/tick", HDR_OK);
    probe.expect_silence(Duration::from_millis(2000));
    ctl.add("a", "young");
    let want = "OK\r\na(1/0)\r\ntick(0/1)\r\n--EOT--\r\n";
    let got = ctl.wait_list(want, Duration::from_secs(5));
    assert_eq!(got, want, "after {:?}", t0.elapsed());
    let mut p = s.http_get("/push/h2/poll/a.h");
    assert_eq!(
        String::from_utf8_lossy(&p.read_to_end(WAIT)),
        format!("{HDR_OK}2:a:young\n")
    );
}
