//! `TrustedProxies`: a reverse proxy's `X-Forwarded-For` or `Forwarded`
//! header names the client in the `joinchannel`/`leavechannel` records and
//! logs, and on the controller port the address wrong passwords count
//! against; from any other peer those headers are ignored.
//!
//! The tests connect from chosen loopback addresses: 127.0.0.2 is the
//! trusted proxy, 127.0.0.3 a stranger. 10.1.0.0/16 and fd00::/8 stand for
//! trusted proxies further along a chain.

mod common;

use common::*;
use std::net::Ipv4Addr;

const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const TRUSTED: &str = "127.0.0.2, 10.1.0.0/16 fd00::/8";

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["-TrustedProxies", TRUSTED, "-Debug", "1"];
    args.extend_from_slice(extra);
    Server::start(&args, TEST_CONF)
}

/// The second field of the first log record starting `kind\t` whose
/// third field is `hostid`: the address a join or leave was recorded for.
fn recorded(s: &Server, kind: &str, hostid: &str) -> String {
    let prefix = format!("{kind}\t");
    let line = s.wait_log(WAIT, |l| {
        l.find(&prefix)
            .is_some_and(|at| l[at..].split('\t').nth(2) == Some(hostid))
    });
    let line = line.unwrap_or_else(|| panic!("no {kind} for {hostid}: {:#?}", s.logs()));
    let at = line.find(&prefix).unwrap_or_default();
    line[at..].split('\t').nth(1).unwrap_or_default().to_owned()
}

/// A one-shot poll of channel `c` as `hostid` from `source` with the
/// extra header lines `headers`; returns the address `joinchannel`
/// recorded, after checking that `leavechannel` recorded the same.
fn poll_from(s: &Server, source: Ipv4Addr, hostid: &str, headers: &str) -> String {
    let mut c = connect_from(s.sub_addr, source);
    c.send(
        format!(
            "GET /push/{hostid}/poll/c HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}User-Agent: t\r\n\r\n"
        )
        .as_bytes(),
    );
    c.expect(HDR_OK.as_bytes());
    c.expect_eof();
    let joined = recorded(s, "joinchannel", hostid);
    assert_eq!(recorded(s, "leavechannel", hostid), joined, "{hostid}");
    joined
}

#[test]
fn a_trusted_proxy_names_the_client_and_a_stranger_cannot() {
    let s = server(&[]);
    let xff = "X-Forwarded-For: 203.0.113.9\r\n";
    assert_eq!(poll_from(&s, PROXY, "h1", xff), "203.0.113.9");
    assert_eq!(poll_from(&s, STRANGER, "h2", xff), "127.0.0.3");
    let fwd = "Forwarded: for=203.0.113.9\r\n";
    assert_eq!(poll_from(&s, STRANGER, "h3", fwd), "127.0.0.3");
    // Without headers the proxy is the client.
    assert_eq!(poll_from(&s, PROXY, "h4", ""), "127.0.0.2");
    // Debug lines name both.
    let mut c = connect_from(s.sub_addr, PROXY);
    c.send(format!("GET /nothing.html HTTP/1.1\r\nHost: x\r\n{xff}\r\n").as_bytes());
    c.read_until(b"404", WAIT).unwrap_or_else(|e| panic!("{e}"));
    let seen = s.wait_log(WAIT, |l| {
        l.contains(": GET /nothing.html") && l.contains("203.0.113.9 via 127.0.0.2:")
    });
    assert!(seen.is_some(), "{:#?}", s.logs());
}

#[test]
fn the_chain_is_walked_from_the_right() {
    let s = server(&[]);
    // A client's own X-Forwarded-For is kept by the proxy, which appends
    // the address it saw: the spoofed entry left of it is not believed.
    let spoofed = "X-Forwarded-For: 6.6.6.6, 10.0.0.7\r\n";
    assert_eq!(poll_from(&s, PROXY, "s1", spoofed), "10.0.0.7");
    // Trusted hops are skipped, across header lines in order.
    let chain = "X-Forwarded-For: 6.6.6.6, 198.51.100.4, 10.1.2.3\r\nX-Forwarded-For: 10.1.9.9\r\n";
    assert_eq!(poll_from(&s, PROXY, "s2", chain), "198.51.100.4");
    // Only trusted hops: the left-most.
    let inner = "X-Forwarded-For: 10.1.0.5, 10.1.0.6\r\n";
    assert_eq!(poll_from(&s, PROXY, "s3", inner), "10.1.0.5");
    // Garbage stops the walk; nothing left of it is believed.
    let garbage = "X-Forwarded-For: 6.6.6.6, not-an-address\r\n";
    assert_eq!(poll_from(&s, PROXY, "s4", garbage), "127.0.0.2");
    let garbage = "X-Forwarded-For: 6.6.6.6, 1.2.3.4.5, 10.1.0.1\r\n";
    assert_eq!(poll_from(&s, PROXY, "s5", garbage), "10.1.0.1");
    // X-Forwarded-For before Forwarded.
    let both = "Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 198.51.100.7\r\n";
    assert_eq!(poll_from(&s, PROXY, "s6", both), "198.51.100.7");
}

#[test]
fn forwarded_headers_and_ipv6_ranges() {
    let s = server(&[]);
    let quoted = "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https;by=127.0.0.2\r\n";
    assert_eq!(poll_from(&s, PROXY, "f1", quoted), "2001:db8:cafe::17");
    // fd00::5 lies in fd00::/8 and is skipped; fe00::5 does not.
    let v6 = "Forwarded: for=198.51.100.8, for=\"[fd00::5]\"\r\n";
    assert_eq!(poll_from(&s, PROXY, "f2", v6), "198.51.100.8");
    let v6 = "Forwarded: for=198.51.100.8, for=\"[fe00::5]\"\r\n";
    assert_eq!(poll_from(&s, PROXY, "f3", v6), "fe00::5");
    let v4 = "Forwarded: for=198.51.100.8, for=10.1.255.255:80\r\n";
    assert_eq!(poll_from(&s, PROXY, "f4", v4), "198.51.100.8");
    let v4 = "Forwarded: for=198.51.100.8, for=10.2.0.1\r\n";
    assert_eq!(poll_from(&s, PROXY, "f5", v4), "10.2.0.1");
    // unknown, an obfuscated node or a broken quote: the walk stops there.
    for (hostid, header) in [
        ("f6", "Forwarded: for=unknown\r\n"),
        ("f7", "Forwarded: for=6.6.6.6, for=_hidden\r\n"),
        ("f8", "Forwarded: for=\"6.6.6.6\r\n"),
        ("f9", "Forwarded: proto=https\r\n"),
    ] {
        assert_eq!(
            poll_from(&s, PROXY, hostid, header),
            "127.0.0.2",
            "{header}"
        );
    }
}

#[test]
fn websocket_subscribers_are_recorded_by_their_client() {
    let s = server(&[]);
    let mut c = connect_from(s.sub_addr, PROXY);
    c.send(
        b"GET /push/w1/stream/c HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 6.6.6.6, 2001:db8::42\r\n\r\n",
    );
    c.read_until(b"\r\n\r\n", WAIT)
        .unwrap_or_else(|e| panic!("no handshake reply: {e}"));
    assert_eq!(recorded(&s, "joinchannel", "w1"), "2001:db8::42");
    drop(c);
    assert_eq!(recorded(&s, "leavechannel", "w1"), "2001:db8::42");
}

#[test]
fn wrong_passwords_count_against_the_forwarded_client() {
    let s = server(&["-ControllerPassword", "pw"]);
    let attempt = |source: Ipv4Addr, client: &str, password: &str| {
        let mut c = connect_from(s.ctl_addr, source);
        c.send(
            format!(
                "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {password}\r\n\
                 X-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let reply = String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned();
        reply.split("\r\n").next().unwrap_or_default().to_owned()
    };
    // Four wrong passwords from one client behind the proxy: the fifth
    // attempt comes too soon for it, not for another client of the proxy.
    for _ in 0..4 {
        assert_eq!(
            attempt(PROXY, "198.51.100.1", "x"),
            "HTTP/1.1 401 Unauthorized"
        );
    }
    assert_eq!(
        attempt(PROXY, "198.51.100.1", "pw"),
        "HTTP/1.1 429 Too Many Requests"
    );
    assert_eq!(attempt(PROXY, "198.51.100.2", "pw"), "HTTP/1.1 200 OK");
    // A stranger's header is ignored: its failures are its own.
    for _ in 0..4 {
        assert_eq!(
            attempt(STRANGER, "198.51.100.3", "x"),
            "HTTP/1.1 401 Unauthorized"
        );
    }
    assert_eq!(
        attempt(STRANGER, "198.51.100.4", "pw"),
        "HTTP/1.1 429 Too Many Requests"
    );
}

#[test]
fn a_reload_changes_whom_it_trusts_and_a_bad_entry_keeps_the_old_list() {
    let xff = "X-Forwarded-For: 203.0.113.9\r\n";
    // In the file, not on the command line (which a reload would not change).
    let conf = TEST_CONF.replacen(
        "# test configuration\n",
        "# test configuration\nTrustedProxies 127.0.0.2\n",
        1,
    );
    let s = Server::start(&[], &conf);
    assert_eq!(poll_from(&s, PROXY, "r1", xff), "203.0.113.9");
    assert_eq!(poll_from(&s, STRANGER, "r2", xff), "127.0.0.3");
    let reload = |text: &str, marker: &str| {
        let before = s.logs().len();
        std::fs::write(&s.conf_path, text).unwrap_or_else(|e| panic!("write config: {e}"));
        s.signal("HUP");
        let seen = s.wait_log(WAIT, |l| l.contains(marker));
        assert!(
            seen.is_some(),
            "no {marker:?} after line {before}: {:#?}",
            s.logs()
        );
    };
    let moved = conf.replacen("TrustedProxies 127.0.0.2", "TrustedProxies 127.0.0.3", 1);
    reload(&moved, "SIGHUP: configuration reloaded");
    assert_eq!(poll_from(&s, PROXY, "r3", xff), "127.0.0.2");
    assert_eq!(poll_from(&s, STRANGER, "r4", xff), "203.0.113.9");
    let broken = conf.replacen(
        "TrustedProxies 127.0.0.2",
        "TrustedProxies 127.0.0.2 10.0.0.0/33",
        1,
    );
    reload(
        &broken,
        "SIGHUP: keeping the running configuration: TrustedProxies: '10.0.0.0/33' is not an IP address or CIDR range",
    );
    assert_eq!(poll_from(&s, STRANGER, "r5", xff), "203.0.113.9");
}

#[test]
fn a_malformed_entry_is_refused_at_start() {
    for bad in [
        "10.0.0.0/33",
        "localhost",
        "::/129",
        "1.2.3.4:80",
        "10.0.0.0/",
    ] {
        let dir = TempDir::new("proxies");
        let conf = dir.join("c.conf");
        std::fs::write(&conf, "").unwrap_or_else(|e| panic!("write config: {e}"));
        let list = format!("127.0.0.1 {bad}");
        let args = std_args(&conf, &dir.path, &["-TrustedProxies", &list]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_meteord(&refs, WAIT);
        assert_eq!(r.code, Some(1), "{bad}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "TrustedProxies: '{bad}' is not an IP address or CIDR range"
            )),
            "{bad}: {}",
            r.stderr
        );
    }
}
