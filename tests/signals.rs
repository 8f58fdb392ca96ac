//! Signals (part A "Signals and process"): SIGHUP rereads the configuration
//! and drops the document cache, SIGUSR2 drops the document cache, SIGTERM
//! closes every connection with its shutdown message and exits.

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
