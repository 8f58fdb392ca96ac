//! The optional UDP port: one ADDMESSAGE per datagram, nothing sent back,
//! one trailing line end dropped (defects table).

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// The UDP socket may be bound after the TCP listeners are announced: wait
/// for the log line naming it (on loopback, the default UDPIP).
fn start_with_udp(port: u16) -> Server {
    let s = Server::start_test(&["-UDPPort", &port.to_string()]);
    let want = format!("listening for UDP on 127.0.0.1:{port}");
    assert!(
        s.wait_log(WAIT, |l| l.ends_with(&want)).is_some(),
        "no {want:?} in the log: {:#?}",
        s.logs()
    );
    s
}

#[test]
fn udp_addmessage() {
    let port = free_udp_port();
    let s = start_with_udp(port);
    let mut ctl = s.ctl();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to = format!("127.0.0.1:{port}");
    sock.send_to(b"ADDMESSAGE u hello world\n", &to).unwrap();
    let want = "OK\r\nu(1/0)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
    sock.send_to(b"ADDMESSAGE u crlf\r\n", &to).unwrap();
    sock.send_to(b"ADDMESSAGE u bare", &to).unwrap();
    let want = "OK\r\nu(3/0)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
    let mut p = s.http_get("/push/h/poll/u.h");
    assert_eq!(
        String::from_utf8_lossy(&p.read_to_end(WAIT)),
        format!("{HDR_OK}1:u:hello world\n2:u:crlf\n3:u:bare\n")
    );
    // Nothing is sent back.
    let mut buf = [0u8; 100];
    assert!(sock.recv_from(&mut buf).is_err(), "UDP got a reply");
    // Ids are shared with the controller.
    assert_eq!(ctl.add("u", "tcp"), 4);
}

#[test]
fn udp_listens_on_loopback_only_by_default() {
    // Part B6: a datagram to another loopback address is not received.
    let port = free_udp_port();
    let s = start_with_udp(port);
    let mut ctl = s.ctl();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"ADDMESSAGE u elsewhere\n", format!("127.0.0.2:{port}"))
        .unwrap();
    sock.send_to(b"ADDMESSAGE u here\n", format!("127.0.0.1:{port}"))
        .unwrap();
    let want = "OK\r\nu(1/0)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
    let mut p = s.http_get("/push/h/poll/u.h");
    let got = String::from_utf8_lossy(&p.read_to_end(WAIT)).into_owned();
    assert_eq!(got, format!("{HDR_OK}1:u:here\n"));
}
