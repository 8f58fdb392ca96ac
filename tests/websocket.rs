//! WebSocket subscribers over real sockets, byte for byte: the handshake
//! and its refusals (400, 403, 404, 426), channel-info and event frames
//! from the bundled `[websocket]` mode, UTF-8 repair, ping frames and the
//! pong bound, frames from the client (pong, close handshake, 1002, 1003,
//! 1007, 1008), and the close code of every ending (1000, 1001, 4000-4006).

mod common;

use common::*;
use std::time::Duration;

/// The RFC 6455 example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The exact 101 reply to a handshake with `KEY`.
fn switching() -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\nServer: meteord\r\n\r\n"
    )
}

/// The exact reply to a refused handshake.
fn refusal(status: &str) -> String {
    let version = if status.starts_with("426") {
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\n{version}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// The bundled meteor.conf, pings off unless `extra` says otherwise.
fn bundled(extra: &[&str]) -> Server {
    let mut args = vec!["-PingInterval", "0"];
    args.extend_from_slice(extra);
    Server::start(&args, include_str!("../meteor.conf"))
}

/// A handshake request for `path` with `headers` (whole lines) added.
fn handshake(path: &str, headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{headers}User-Agent: t\r\n\r\n"
    )
}

/// Opens a WebSocket subscriber and checks the exact 101.
fn open(s: &Server, path: &str) -> Conn {
    let mut c = s.request(handshake(path, "").as_bytes());
    c.expect_str(&switching());
    c
}

/// An unmasked server frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn text(payload: &str) -> Vec<u8> {
    frame(0x81, payload.as_bytes())
}

fn close(code: u16) -> Vec<u8> {
    frame(0x88, &code.to_be_bytes())
}

/// A masked client frame (`first` is FIN, RSV and opcode); a length over
/// 125 uses the 16-bit form.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![first];
    if payload.len() > 125 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        f.push(0x80 | payload.len() as u8);
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn info(channel: &str, last: u64) -> Vec<u8> {
    text(&format!(
        "{{\"channel\":\"{channel}\",\"lastMsgID\":{last}}}"
    ))
}

fn event(id: u64, channel: &str, t: &str) -> Vec<u8> {
    text(&format!(
        "{{\"id\":{id},\"channel\":\"{channel}\",\"text\":\"{t}\"}}"
    ))
}

/// Reads one server frame: (first byte, payload).
fn read_frame(c: &mut Conn) -> (u8, Vec<u8>) {
    let head = c.read_exact_n(2, WAIT).expect("frame head");
    assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
    let len = match head[1] & 0x7f {
        126 => {
            let b = c.read_exact_n(2, WAIT).expect("length");
            u64::from(u16::from_be_bytes([b[0], b[1]]))
        }
        127 => {
            let b = c.read_exact_n(8, WAIT).expect("length");
            u64::from_be_bytes(b.try_into().expect("8 bytes"))
        }
        n => u64::from(n),
    };
    let payload = c.read_exact_n(len as usize, WAIT).expect("payload");
    (head[0], payload)
}

/// Reads frames until a close frame: the text payloads before it and the code.
fn until_close(c: &mut Conn) -> (Vec<String>, u16) {
    let mut texts = Vec::new();
    loop {
        let (first, payload) = read_frame(c);
        match first {
            0x81 => texts.push(String::from_utf8(payload).expect("UTF-8 text frame")),
            0x88 => return (texts, u16::from_be_bytes([payload[0], payload[1]])),
            0x89 => {}
            other => panic!("unexpected frame {other:#x}"),
        }
    }
}

#[test]
fn handshake_backlog_and_events_are_exact_frames() {
    let s = bundled(&[]);
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "one"), 1);
    assert_eq!(ctl.add("a", "two \"q\" </script>"), 2);
    let mut c = open(&s, "/push/h1/websocket/a.b2/b");
    let mut want = info("a", 2);
    want.extend(info("b", 0));
    want.extend(event(1, "a", "one"));
    want.extend(event(2, "a", "two \\\"q\\\" \\u003c/script\\u003e"));
    c.expect(&want);
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    assert_eq!(ctl.add("b", "three"), 3);
    c.expect(&event(3, "b", "three"));
    // A payload over 125 bytes takes the 16-bit length, one over 65535 the 64-bit one.
    let long = "x".repeat(200);
    assert_eq!(ctl.add("a", &long), 4);
    c.expect(&event(4, "a", &long));
    let huge = "y".repeat(70_000);
    assert_eq!(ctl.add("a", &huge), 5);
    let want = event(5, "a", &huge);
    assert_eq!(&want[..2], [0x81, 127]);
    c.expect(&want);
    // Text that is not UTF-8: each bad byte becomes U+FFFD in the frame.
    ctl.send_bytes(b"ADDMESSAGE a ok\xff\xfeok\n");
    assert_eq!(ctl.read_reply_line(), "OK\t6");
    c.expect(&event(6, "a", "ok\u{fffd}\u{fffd}ok"));
    // joinchannel records name the mode.
    assert!(
        s.wait_log(WAIT, |l| l
            .contains("joinchannel\t127.0.0.1\th1\ta\twebsocket\t-2\tt"))
            .is_some(),
        "{:#?}",
        s.logs()
    );
}

#[test]
fn any_mode_can_be_asked_for_over_websocket_and_ends_with_its_backlog() {
    let s = Server::start_test(&["-PingInterval", "0"]);
    let mut ctl = s.ctl();
    ctl.add("c", "hello");
    // `stream` is persistent: its message template, framed.
    // Channel information (here the default ChannelInfoTemplate) comes first.
    let mut c = open(&s, "/push/h1/stream/c.b1");
    c.expect(&text("<script>ch(\"c\", 1);</script>\r\n"));
    c.expect(&text("1:c:hello\n"));
    // `poll` is not: the backlog, then a normal close.
    let mut p = open(&s, "/push/h2/poll/c.b1");
    p.expect(&text("<script>ch(\"c\", 1);</script>\r\n"));
    p.expect(&text("1:c:hello\n"));
    p.expect(&close(1000));
    p.expect_eof();
    // `long` ends after MaxMessages 1 with 4003.
    let mut l = open(&s, "/push/h3/long/c");
    l.expect(&text("<script>ch(\"c\", 1);</script>\r\n"));
    assert_eq!(ctl.wait_count("c", 2, WAIT), 2);
    ctl.add("c", "bye");
    c.expect(&text("2:c:bye\n"));
    l.expect(&text("2:c:bye\n"));
    l.expect(&close(4003));
    l.expect_eof();
}

#[test]
fn broken_handshakes_are_refused() {
    let s = Server::start(
        &[
            "-PingInterval",
            "0",
            "-AllowedOrigins",
            "https://ok.example",
        ],
        include_str!("../meteor.conf"),
    );
    let path = "/push/h1/websocket/a";
    let cases: Vec<(String, &str)> = vec![
        (
            handshake(path, "").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "426 Upgrade Required",
        ),
        (
            handshake(path, "").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            "400 Bad Request",
        ),
        (
            handshake(path, "").replace(KEY, "c2hvcnQ="),
            "400 Bad Request",
        ),
        (
            handshake(path, "").replace("Connection: Upgrade", "Connection: close"),
            "400 Bad Request",
        ),
        (
            handshake(path, "").replace("Upgrade: websocket\r\n", ""),
            "400 Bad Request",
        ),
        (
            handshake(path, "").replace("Sec-WebSocket-Version: 13\r\n", ""),
            "400 Bad Request",
        ),
        (
            handshake(path, "").replace("HTTP/1.1", "HTTP/1.0"),
            "400 Bad Request",
        ),
        (
            handshake(path, &format!("Sec-WebSocket-Key: {KEY}\r\n")),
            "400 Bad Request",
        ),
        // The websocket mode answers nothing but handshakes.
        (get_request(path), "400 Bad Request"),
        (
            handshake(path, "Origin: https://evil.example\r\n"),
            "403 Forbidden",
        ),
        (handshake("/push/h1/websocket/bad!", ""), "404 Not Found"),
    ];
    for (request, status) in cases {
        let mut c = s.request(request.as_bytes());
        c.expect_str(&refusal(status));
        c.expect_eof();
    }
    // An allowed origin, and no origin (not a browser), are accepted.
    let mut c = s.request(handshake(path, "Origin: https://ok.example\r\n").as_bytes());
    c.expect_str(&switching());
    c.expect(&info("a", 0));
    let mut c = open(&s, path);
    c.expect(&info("a", 0));
}

#[test]
fn pings_are_frames_and_a_silent_peer_is_dropped() {
    let s = Server::start(&["-PingInterval", "3"], include_str!("../meteor.conf"));
    let mut c = open(&s, "/push/h1/websocket/a");
    c.expect(&info("a", 0));
    c.expect_within(&[0x89, 0x00], Duration::from_secs(5));
    c.send(&masked(0x8A, b""));
    c.expect_within(&[0x89, 0x00], Duration::from_secs(5));
    // No pong this time: the next ping time closes it with 4006.
    c.expect_within(&close(4006), Duration::from_secs(5));
    c.expect_eof();
    assert!(
        s.wait_log(WAIT, |l| l.contains("leavechannel\t127.0.0.1\th1\ta\t")
            && l.ends_with("\tnoPong"))
            .is_some(),
        "{:#?}",
        s.logs()
    );
}

#[test]
fn client_pings_get_pongs_and_a_close_gets_its_echo() {
    let s = bundled(&[]);
    let mut c = open(&s, "/push/h1/websocket/a");
    c.expect(&info("a", 0));
    // A ping in two pieces, then one with 125 bytes.
    let ping = masked(0x89, b"abc");
    c.send(&ping[..3]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&ping[3..]);
    c.expect(&frame(0x8A, b"abc"));
    let big = [b'p'; 125];
    c.send(&masked(0x89, &big));
    c.expect(&frame(0x8A, &big));
    c.send(&masked(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
    c.expect(&close(1000));
    c.expect_eof();
    // A close without a code gets an empty close.
    let mut c = open(&s, "/push/h2/websocket/a");
    c.expect(&info("a", 0));
    c.send(&masked(0x88, b""));
    c.expect(&frame(0x88, b""));
    c.expect_eof();
}

#[test]
fn frames_a_client_may_not_send_close_the_connection() {
    let s = bundled(&[]);
    let mut unmasked_ping = vec![0x89, 0x01, b'x'];
    let too_long: Vec<u8> = masked(0x89, &[b'x'; 126]);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (std::mem::take(&mut unmasked_ping), 1002),
        (masked(0x81, b"publish?"), 1003),
        (masked(0x82, b"\x00\x01"), 1003),
        (masked(0x01, b"frag"), 1003),
        (masked(0x09, b""), 1002),
        (too_long, 1002),
        (masked(0xC9, b""), 1002),
        (masked(0x83, b""), 1002),
        (masked(0x88, b"\x03"), 1002),
        (masked(0x88, &[0x03, 0xed]), 1002),
        (masked(0x88, &[0x03, 0xe8, 0xc3]), 1007),
    ];
    for (bytes, code) in cases {
        let mut c = open(&s, "/push/h1/websocket/a");
        c.expect(&info("a", 0));
        c.send(&bytes);
        c.expect(&close(code));
        c.expect_eof();
    }
    // A flood of control frames is cut with 1008.
    let mut c = open(&s, "/push/h1/websocket/a");
    c.expect(&info("a", 0));
    let _ = c.try_send(&masked(0x8A, b"").repeat(1000));
    let (_, code) = until_close(&mut c);
    assert_eq!(code, 1008);
    let mut ctl = s.ctl();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
    assert!(
        s.logs().iter().any(|l| l.ends_with("\tprotocolError")),
        "{:#?}",
        s.logs()
    );
}

#[test]
fn server_endings_send_the_shutdown_message_then_a_close_code() {
    let s = bundled(&["-MaxTime.websocket", "3"]);
    let mut ctl = s.ctl();
    // A second request with the same hostid replaces the first: 4000.
    let mut first = open(&s, "/push/same/websocket/a");
    first.expect(&info("a", 0));
    let mut second = open(&s, "/push/same/websocket/a");
    first.expect(&text("{\"eof\":true}"));
    first.expect(&close(4000));
    first.expect_eof();
    second.expect(&info("a", 0));
    // /disconnect/<hostid>: 4001.
    let mut d = s.http_get("/disconnect/same");
    d.read_to_end(WAIT);
    second.expect(&text("{\"eof\":true}"));
    second.expect(&close(4001));
    second.expect_eof();
    // MaxTime: 4002.
    let mut t = open(&s, "/push/t/websocket/a");
    t.expect(&info("a", 0));
    t.expect_within(&close(4002), Duration::from_secs(5));
    t.expect_eof();
    assert_eq!(ctl.wait_count("a", 0, WAIT), 0);
}

#[test]
fn sigterm_sends_going_away() {
    let mut s = bundled(&[]);
    let mut ctl = s.ctl();
    let mut c = open(&s, "/push/h1/websocket/a");
    c.expect(&info("a", 0));
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    // Counted as a subscriber everywhere.
    let stats = ctl.multi("SHOWSTATS");
    assert!(stats.contains("current_subscribers: 1"), "{stats}");
    s.signal("TERM");
    c.expect(&text("{\"eof\":true}"));
    c.expect(&close(1001));
    c.expect_eof();
    s.expect_exit(Duration::from_secs(10));
}

#[test]
fn write_timeout_and_slow_consumers_end_with_their_codes() {
    // Stalled: the socket takes nothing for WriteTimeout (4004).
    let s = bundled(&["-WriteTimeout", "1", "-MaxMessagesPerChannel", "100000"]);
    let mut ctl = s.ctl();
    let mut c = connect_small_rcvbuf(s.sub_addr, 1024);
    c.send(handshake("/push/stall/websocket/a", "").as_bytes());
    c.expect_str(&switching());
    c.expect(&info("a", 0));
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    let big = "z".repeat(16 * 1024);
    let texts: Vec<String> = (0..200).map(|_| big.clone()).collect();
    ctl.add_many("a", &texts);
    assert!(
        s.wait_log(Duration::from_secs(10), |l| l.contains("\tstall\ta\t")
            && l.ends_with("\twriteTimeout"))
            .is_some(),
        "{:#?}",
        s.logs()
    );
    let (got, code) = until_close(&mut c);
    assert_eq!(code, 4004);
    assert!(got.len() < 200);
    drop(s);
    // Fallen behind what the channel keeps (4005): the frame it was in is
    // completed, then the close frame.
    let s = bundled(&["-MaxMessagesPerChannel", "10"]);
    let mut ctl = s.ctl();
    let mut c = connect_small_rcvbuf(s.sub_addr, 1024);
    c.send(handshake("/push/slow/websocket/b", "").as_bytes());
    c.expect_str(&switching());
    c.expect(&info("b", 0));
    assert_eq!(ctl.wait_count("b", 1, WAIT), 1);
    // More than the 8 MiB a blocked reader's position is kept for.
    let texts: Vec<String> = (0..800).map(|_| big.clone()).collect();
    for chunk in texts.chunks(50) {
        ctl.add_many("b", chunk);
    }
    assert!(
        s.wait_log(Duration::from_secs(10), |l| l
            .contains("dropped slow subscriber"))
            .is_some(),
        "{:#?}",
        s.logs()
    );
    let (got, code) = until_close(&mut c);
    assert_eq!(code, 4005);
    assert!(got.len() < 800);
}

/// A private channel read over WebSocket: when the token expires the stream
/// ends with the shutdown message and close code 4401, so the page asks for
/// a fresh token before it reconnects.
#[test]
fn an_expired_token_ends_with_4401() {
    let secret = "a-websocket-test-secret-0123456789";
    let s = bundled(&["-SubscriberSecret", secret]);
    let claims = meteord::token::jwt::Claims {
        exp: now_unix() + 2,
        nbf: None,
        channels: vec!["private-w".into()],
        hostid: None,
    };
    let token = meteord::token::jwt::mint(secret.as_bytes(), &claims);
    let mut c = open(&s, &format!("/push/pw/websocket/private-w?token={token}"));
    c.expect(&info("private-w", 0));
    let id = s.ctl().add("private-w", "before");
    c.expect(&event(id, "private-w", "before"));
    c.expect_within(&text("{\"eof\":true}"), Duration::from_secs(5));
    c.expect(&close(4401));
    c.expect_eof();
}
