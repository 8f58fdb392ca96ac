//! Channels and messages: the global id counter, the per-channel cache
//! bound, channels vanishing when empty, SIGUSR1.

mod common;

use common::*;

const EMPTY_LIST: &str = "OK\r\n--EOT--\r\n";

fn poll(s: &Server, path: &str) -> String {
    let mut c = s.http_get(path);
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

#[test]
fn ids_start_at_one_and_are_shared_across_channels() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let mut a = s.subscribe("/push/ha/stream/a", HDR_OK);
    let mut b = s.subscribe("/push/hb/stream/b", HDR_OK);
    assert_eq!(ctl.add("a", "first"), 1);
    assert_eq!(ctl.add("b", "second"), 2);
    assert_eq!(ctl.add("c", "third"), 3);
    assert_eq!(ctl.add("a", "fourth"), 4);
    a.expect_str(&msgs(&[(1, "a", "first"), (4, "a", "fourth")]));
    b.expect_str(&msgs(&[(2, "b", "second")]));
}

#[test]
fn ids_keep_increasing_when_channels_come_and_go() {
    let s = Server::start_test(&["-MaxMessagesPerChannel", "1"]);
    let mut ctl = s.ctl();
    let mut last = 0;
    for i in 0..50 {
        let id = ctl.add(&format!("ch{}", i % 4), "x");
        assert!(id > last, "id {id} not above {last}");
        last = id;
    }
    assert_eq!(last, 50);
}

#[test]
fn max_messages_per_channel_drops_the_oldest() {
    let s = Server::start_test(&["-MaxMessagesPerChannel", "3"]);
    let mut ctl = s.ctl();
    for i in 1..=5 {
        ctl.add("a", &format!("m{i}"));
    }
    ctl.add("b", "only");
    assert_eq!(ctl.list(), "OK\r\na(3/0)\r\nb(1/0)\r\n--EOT--\r\n");
    let want = format!(
        "{HDR_OK}{}",
        msgs(&[(3, "a", "m3"), (4, "a", "m4"), (5, "a", "m5")])
    );
    assert_eq!(poll(&s, "/push/h/poll/a.h"), want);
    assert_eq!(poll(&s, "/push/h/poll/a.r1"), want);
    assert_eq!(poll(&s, "/push/h/poll/a.b10"), want);
}

#[test]
fn default_cache_is_250_messages() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let texts: Vec<String> = (1..=260).map(|i| format!("t{i}")).collect();
    let ids = ctl.add_many("big", &texts);
    assert_eq!(ids, (1..=260).collect::<Vec<u64>>());
    assert_eq!(ctl.list(), "OK\r\nbig(250/0)\r\n--EOT--\r\n");
    let got = poll(&s, "/push/h/poll/big.b1000");
    let body = got.strip_prefix(HDR_OK).expect("header");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 250);
    assert_eq!(lines[0], "11:big:t11");
    assert_eq!(lines[249], "260:big:t260");
}

#[test]
fn channel_with_only_a_subscriber_disappears_when_it_leaves() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let sub = s.subscribe("/push/h1/stream/fresh", HDR_OK);
    assert_eq!(ctl.list(), "OK\r\nfresh(0/1)\r\n--EOT--\r\n");
    assert_eq!(ctl.stat("channel_count"), 1);
    drop(sub);
    assert_eq!(ctl.wait_list(EMPTY_LIST, WAIT), EMPTY_LIST);
    assert_eq!(ctl.stat("channel_count"), 0);
}

#[test]
fn channel_with_messages_stays_after_its_subscriber_leaves() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let sub = s.subscribe("/push/h1/stream/kept", HDR_OK);
    ctl.add("kept", "x");
    drop(sub);
    let want = "OK\r\nkept(1/0)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
}

#[test]
fn polling_an_unknown_channel_does_not_create_it() {
    // Defects table: a channel with no messages and no subscribers
    // disappears, whoever created it.
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    assert_eq!(poll(&s, "/push/h1/poll/ghost"), HDR_OK);
    assert_eq!(
        poll(&s, "/push/h1/poll/ghost.h/ghost2.r5/ghost3.b2"),
        HDR_OK
    );
    assert_eq!(
        poll(&s, "/push/h1/global/ghost4.h"),
        default_header("200 OK")
    );
    assert_eq!(ctl.wait_list(EMPTY_LIST, WAIT), EMPTY_LIST);
    assert_eq!(ctl.stat("channel_count"), 0);
    assert_eq!(ctl.count("ghost"), 0);
}

#[test]
fn longpoll_on_a_new_channel_then_message() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let mut lp = s.subscribe("/push/h1/long/fresh", HDR_OK);
    assert_eq!(ctl.list(), "OK\r\nfresh(0/1)\r\n--EOT--\r\n");
    ctl.add("fresh", "hi");
    lp.expect_str("1:fresh:hi\n");
    lp.expect_eof();
    let want = "OK\r\nfresh(1/0)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
}

#[test]
fn sigusr1_empties_every_cache() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    ctl.add("a", "1");
    ctl.add("a", "2");
    ctl.add("b", "3");
    let mut sub = s.subscribe("/push/h1/stream/b", HDR_OK);
    s.signal("USR1");
    // a had only messages: it disappears; b keeps its subscriber.
    let want = "OK\r\nb(0/1)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
    assert_eq!(poll(&s, "/push/h2/poll/b.h"), HDR_OK);
    // Ids are not reset, and the subscriber is unaffected.
    assert_eq!(ctl.add("b", "after"), 4);
    sub.expect_str("4:b:after\n");
}
