//! Issue 4: hostile and careless clients over real sockets. Every input
//! bound answers exactly as documented when crossed (and not one byte
//! before), running out of descriptors neither spins nor kills the loop,
//! slow and stalled subscribers are dropped and counted instead of being
//! buffered for, abrupt clients leak nothing, and the controller port can
//! be locked with a password. After each case a well-behaved subscriber is
//! still served.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A name no other check in this process uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", UNIQUE.fetch_add(1, Ordering::SeqCst))
}

/// The exact error reply of the subscriber port: the global default
/// `HeaderTemplate` with `status`, then close.
fn error_reply(status: &str) -> String {
    default_header(status)
}

/// The exact reply of the controller port's HTTP side to a refused head or
/// body: `status` as a text/plain body, then close.
fn control_error(status: &str, why: &str) -> String {
    let body = format!("{status}: {why}\n");
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exact reply to a publish over HTTP with `Connection: close`.
fn control_published(id: u64) -> String {
    let body = format!("{{\"id\":{id}}}\n");
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The moment a log line satisfying `pred` first appears, watched from a
/// thread started now (polling every 5 ms, for at most 60 s).
fn watch_log(s: &Server, pred: fn(&str) -> bool) -> thread::JoinHandle<Option<Instant>> {
    let logs = s.logs.clone();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if logs.lock().unwrap().iter().any(|l| pred(l)) {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// Asserts the connection gets exactly `want` and is then closed.
fn expect_reply_and_close(c: &mut Conn, want: &str, what: &str) {
    let got = c.read_to_end(WAIT);
    assert_eq!(show(&got), show(want.as_bytes()), "{what}");
}

/// A well-behaved subscriber on a fresh channel gets the next event: the
/// server still serves after whatever the test did to it.
fn assert_serves(s: &Server, ctl: &mut Controller) {
    let ch = unique("v");
    let host = unique("h");
    let mut sub = s.subscribe(&format!("/push/{host}/stream/{ch}"), HDR_OK);
    let id = ctl.add(&ch, "still-here");
    sub.expect_str(&format!("{id}:{ch}:still-here\n"));
}

/// `GET <path> HTTP/1.1` padded with an `X-Pad` header so that the whole
/// head is exactly `total` bytes.
fn padded_head(path: &str, total: usize) -> Vec<u8> {
    let start = format!("GET {path} HTTP/1.1\r\nX-Pad: ");
    let end = "\r\n\r\n";
    let pad = total
        .checked_sub(start.len() + end.len())
        .expect("head too small to pad");
    let mut v = start.into_bytes();
    v.extend(std::iter::repeat_n(b'p', pad));
    v.extend_from_slice(end.as_bytes());
    assert_eq!(v.len(), total);
    v
}

/// A head with the request line and exactly `lines` header lines.
fn head_with_lines(path: &str, lines: usize) -> String {
    let mut h = format!("GET {path} HTTP/1.1\r\n");
    for i in 0..lines {
        h.push_str(&format!("X-H{i}: v\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
}

/// Waits until the server has exactly `want` descriptors open; returns the
/// last count.
fn wait_fds(pid: u32, want: usize, timeout: Duration) -> usize {
    let mut last = 0;
    eventually(timeout, || {
        last = fd_count(pid);
        last == want
    });
    last
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    let after = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Closing this socket sends a reset instead of a FIN.
fn set_linger_zero(stream: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Closes with a reset (SO_LINGER 0).
fn reset(c: Conn) {
    set_linger_zero(&c.stream);
    drop(c);
}

/// Lowers the open-file limit (soft and hard) of another process.
fn set_fd_limit(pid: u32, limit: u64) {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit on a child process we own, with a valid new limit.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// One HTTP request on the controller port; everything until it closes.
fn control_http(s: &Server, raw: &str) -> String {
    let mut c = Conn::connect(s.ctl_addr);
    c.send(raw.as_bytes());
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

/// `GET /stats` JSON (with a bearer token when given).
fn stats_json(s: &Server, password: Option<&str>) -> String {
    let auth = password
        .map(|p| format!("Authorization: Bearer {p}\r\n"))
        .unwrap_or_default();
    let r = control_http(
        s,
        &format!("GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "GET /stats: {r:?}");
    r
}

/// A number in a flat JSON object.
fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[i + pat.len()..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0, |n, d| n * 10 + u64::from(d - b'0'))
}

/// The ids of the complete `id:channel:text\n` lines in `bytes` (a cut
/// last line is ignored).
fn complete_event_ids(bytes: &[u8]) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[start..end];
        start = end + 1;
        let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
        assert!(
            digits > 0 && line.get(digits) == Some(&b':'),
            "not an event line: {:?}",
            show(&line[..80.min(line.len())])
        );
        let id = std::str::from_utf8(&line[..digits])
            .unwrap()
            .parse()
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Asserts `ids` are consecutive (the subscriber saw no gap).
fn assert_consecutive(ids: &[u64], what: &str) {
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: gap or reorder after id {}", w[0]);
    }
}

/// Publishes `n` events of `size` bytes to `channel`, `batch` commands per
/// write (then waiting for their replies); returns the ids.
fn publish_big(
    ctl: &mut Controller,
    channel: &str,
    n: usize,
    size: usize,
    batch: usize,
) -> Vec<u64> {
    let command = format!("ADDMESSAGE {channel} {}\n", "x".repeat(size)).into_bytes();
    let mut ids = Vec::with_capacity(n);
    let mut tmp = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let bytes = command.repeat(k);
        ctl.conn.stream.write_all(&bytes).expect("publish");
        // Read the k replies in bulk: the publisher is as fast as it can be.
        let deadline = Instant::now() + Duration::from_secs(30);
        while memchr::memchr_iter(b'\n', &ctl.conn.buf).count() < k {
            assert!(Instant::now() < deadline, "replies to {k} ADDMESSAGEs");
            ctl.conn
                .stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            match ctl.conn.stream.read(&mut tmp) {
                Ok(0) => panic!("controller closed"),
                Ok(got) => ctl.conn.buf.extend_from_slice(&tmp[..got]),
                Err(_) => {}
            }
        }
        for _ in 0..k {
            ids.push(parse_ok_id(&ctl.read_reply_line()));
        }
        left -= k;
    }
    ids
}

/// Tests that push megabytes through the server run one at a time, so
/// that a well-behaved reader is not starved of CPU by another test's load.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_with(extra: &[&str]) -> (Server, Controller) {
    let s = Server::start_test(extra);
    let ctl = s.ctl();
    (s, ctl)
}

// ---------------------------------------------------------------------------
// Bounded input on the subscriber port
// ---------------------------------------------------------------------------

#[test]
fn request_head_of_exactly_max_bytes_is_served_one_more_is_431() {
    let (s, mut ctl) = start_with(&[]);
    // Exactly MaxRequestHeadBytes (default 8192): an ordinary poll reply.
    let mut ok = s.request(&padded_head("/push/h1/poll/a.h", 8192));
    expect_reply_and_close(&mut ok, HDR_OK, "a head of exactly 8192 bytes");
    // One byte more: 431 and close.
    let mut big = s.request(&padded_head("/push/h1/poll/a.h", 8193));
    expect_reply_and_close(
        &mut big,
        &error_reply("431 Request Header Fields Too Large"),
        "a head of 8193 bytes",
    );
    // A head that never ends, far over the bound: 431 as soon as the bound
    // is crossed, without waiting for an end that never comes.
    let mut endless = s.connect_sub();
    endless.send(b"GET /push/h2/stream/a HTTP/1.1\r\nX-Pad: ");
    endless.send(&vec![b'p'; 9000]);
    expect_reply_and_close(
        &mut endless,
        &error_reply("431 Request Header Fields Too Large"),
        "an endless head",
    );
    assert_eq!(ctl.count("a"), 0);
    assert_serves(&s, &mut ctl);
}

#[test]
fn request_head_bound_is_configurable() {
    let (s, mut ctl) = start_with(&["-MaxRequestHeadBytes", "300"]);
    let mut ok = s.request(&padded_head("/push/h1/poll/a.h", 300));
    expect_reply_and_close(&mut ok, HDR_OK, "a head of exactly 300 bytes");
    let mut big = s.request(&padded_head("/push/h1/poll/a.h", 301));
    expect_reply_and_close(
        &mut big,
        &error_reply("431 Request Header Fields Too Large"),
        "a head of 301 bytes",
    );
    assert_serves(&s, &mut ctl);
}

#[test]
fn header_line_count_bound_is_431() {
    let (s, mut ctl) = start_with(&[]);
    // MaxHeaderLines (default 64) header lines are fine...
    let mut ok = s.request(head_with_lines("/push/h1/poll/a.h", 64).as_bytes());
    expect_reply_and_close(&mut ok, HDR_OK, "64 header lines");
    // ...one more is 431.
    let mut many = s.request(head_with_lines("/push/h1/poll/a.h", 65).as_bytes());
    expect_reply_and_close(
        &mut many,
        &error_reply("431 Request Header Fields Too Large"),
        "65 header lines",
    );
    assert_serves(&s, &mut ctl);
}

#[test]
fn header_line_count_bound_is_configurable() {
    let (s, mut ctl) = start_with(&["-MaxHeaderLines", "3"]);
    let mut ok = s.request(head_with_lines("/push/h1/stream/a", 3).as_bytes());
    ok.expect_str(HDR_OK);
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    let mut many = s.request(head_with_lines("/push/h2/stream/b", 4).as_bytes());
    expect_reply_and_close(
        &mut many,
        &error_reply("431 Request Header Fields Too Large"),
        "4 header lines",
    );
    assert_eq!(ctl.count("b"), 0);
    let id = ctl.add("a", "x");
    ok.expect_str(&format!("{id}:a:x\n"));
    assert_serves(&s, &mut ctl);
}

#[test]
fn slowloris_head_gets_408_at_the_head_timeout_even_while_trickling() {
    let (s, mut ctl) = start_with(&["-HeadTimeout", "1"]);
    let before = ctl.stat("errors_served");
    let t0 = Instant::now();
    let mut c = s.connect_sub();
    c.send(b"GET /push/loris/stream/a HTTP/1.1\r\n");
    // One header line every 150 ms: activity must not extend the deadline.
    let got = loop {
        let _ = c.try_send(b"X-Loris: 1\r\n");
        if let Ok(v) = c.read_to_end_with_deadline(Instant::now() + Duration::from_millis(150)) {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a trickling head was kept open for 5 s with HeadTimeout 1"
        );
    };
    let took = t0.elapsed();
    assert_eq!(
        show(&got),
        show(error_reply("408 Request Timeout").as_bytes())
    );
    assert!(
        took >= Duration::from_millis(900),
        "408 after {took:?}, before HeadTimeout"
    );
    assert!(took < Duration::from_secs(3), "408 only after {took:?}");
    assert_eq!(ctl.count("a"), 0);
    assert_eq!(ctl.stat("errors_served"), before + 1);
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 0), 0);
    assert_serves(&s, &mut ctl);
}

#[test]
fn silent_connection_gets_408_at_the_head_timeout() {
    let (s, mut ctl) = start_with(&["-HeadTimeout", "1"]);
    let t0 = Instant::now();
    let mut c = s.connect_sub();
    expect_reply_and_close(
        &mut c,
        &error_reply("408 Request Timeout"),
        "a connection that sends nothing",
    );
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_serves(&s, &mut ctl);
}

#[test]
fn channels_per_request_bound_is_400_and_subscribes_to_nothing() {
    let (s, mut ctl) = start_with(&[]);
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("c{i}")).collect() };
    // MaxChannelsPerRequest (default 32) channels: subscribed to all.
    let mut ok = s.subscribe(&format!("/push/h1/stream/{}", names(32).join("/")), HDR_OK);
    assert_eq!(ctl.wait_count("c31", 1, WAIT), 1);
    // The same channel twice is one subscription, so 33 entries naming 32
    // channels are fine too.
    let mut dup = names(32);
    dup.push("c0".into());
    let mut ok2 = s.subscribe(&format!("/push/h2/stream/{}", dup.join("/")), HDR_OK);
    assert_eq!(ctl.wait_count("c0", 2, WAIT), 2);
    // 33 distinct channels: 400, and none of them is subscribed to.
    let mut more = names(32);
    more.push("extra".into());
    let mut bad = s.http_get(&format!("/push/h3/stream/{}", more.join("/")));
    expect_reply_and_close(&mut bad, &error_reply("400 Bad Request"), "33 channels");
    assert_eq!(ctl.count("c0"), 2);
    assert_eq!(ctl.count("extra"), 0);
    let list = ctl.list();
    assert!(!list.contains("extra("), "{list}");
    let id = ctl.add("c31", "x");
    ok.expect_str(&format!("{id}:c31:x\n"));
    ok2.expect_str(&format!("{id}:c31:x\n"));
    assert_serves(&s, &mut ctl);
}

#[test]
fn channels_per_request_bound_is_configurable() {
    let (s, mut ctl) = start_with(&["-MaxChannelsPerRequest", "2"]);
    let mut ok = s.subscribe("/push/h1/stream/a/b", HDR_OK);
    let mut bad = s.http_get("/push/h2/stream/a/b/c");
    expect_reply_and_close(&mut bad, &error_reply("400 Bad Request"), "3 channels");
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    let id = ctl.add("b", "x");
    ok.expect_str(&format!("{id}:b:x\n"));
    assert_serves(&s, &mut ctl);
}

#[test]
fn channel_name_length_bound_on_both_ports() {
    let (s, mut ctl) = start_with(&[]);
    let max = "n".repeat(128);
    let over = "n".repeat(129);
    // Subscriber port: 128 is fine, 129 is 400.
    let mut ok = s.subscribe(&format!("/push/h1/stream/{max}"), HDR_OK);
    let mut bad = s.http_get(&format!("/push/h2/stream/{over}"));
    expect_reply_and_close(&mut bad, &error_reply("400 Bad Request"), "a 129-byte name");
    // Controller: ERR for the long one, and the connection stays usable.
    assert_eq!(
        ctl.command(&format!("ADDMESSAGE {over} x")),
        "ERR Channel name too long"
    );
    assert_eq!(
        ctl.command(&format!("COUNTSUBSCRIBERS {over}")),
        "ERR Channel name too long"
    );
    let id = ctl.add(&max, "fits");
    assert_eq!(id, 1, "the refused ADDMESSAGE must not have used an id");
    ok.expect_str(&format!("1:{max}:fits\n"));
    assert_eq!(ctl.list(), format!("OK\r\n{max}(1/1)\r\n--EOT--\r\n"));
    // HTTP publishing on the controller port has the same bound.
    let body = "b";
    let r = control_http(
        &s,
        &format!(
            "POST /pub/{over} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let body = "400 Bad Request: channel name too long\n";
    assert_eq!(
        r,
        format!(
            "HTTP/1.1 400 Bad Request\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    );
    assert_eq!(ctl.list(), format!("OK\r\n{max}(1/1)\r\n--EOT--\r\n"));
    assert_serves(&s, &mut ctl);
}

#[test]
fn channel_name_length_bound_is_configurable() {
    let (s, mut ctl) = start_with(&["-MaxChannelNameLength", "4"]);
    let mut ok = s.subscribe("/push/h1/stream/abcd", HDR_OK);
    let mut bad = s.http_get("/push/h2/stream/abcde");
    expect_reply_and_close(&mut bad, &error_reply("400 Bad Request"), "a 5-byte name");
    assert_eq!(
        ctl.command("ADDMESSAGE abcde x"),
        "ERR Channel name too long"
    );
    let id = ctl.add("abcd", "x");
    ok.expect_str(&format!("{id}:abcd:x\n"));
    assert_serves(&s, &mut ctl);
}

// ---------------------------------------------------------------------------
// Connection limits
// ---------------------------------------------------------------------------

#[test]
fn subscriber_connections_over_max_get_503_without_blocking_the_others() {
    let (s, mut ctl) = start_with(&["-MaxSubscribers", "2"]);
    let mut a = s.subscribe("/push/a/stream/lim", HDR_OK);
    let mut b = s.subscribe("/push/b/stream/lim", HDR_OK);
    // The third gets its answer at once, before it even sent a request.
    let mut c = s.connect_sub();
    expect_reply_and_close(
        &mut c,
        &error_reply("503 Service Unavailable"),
        "a third subscriber with MaxSubscribers 2",
    );
    // And again: refusing does not disturb the table.
    let mut d = s.http_get("/push/d/stream/lim");
    expect_reply_and_close(
        &mut d,
        &error_reply("503 Service Unavailable"),
        "a fourth subscriber with MaxSubscribers 2",
    );
    let id = ctl.add("lim", "x");
    a.expect_str(&format!("{id}:lim:x\n"));
    b.expect_str(&format!("{id}:lim:x\n"));
    assert_eq!(ctl.count("lim"), 2);
    let json = stats_json(&s, None);
    assert_eq!(json_u64(&json, "connections_refused"), 2, "{json}");
    assert_eq!(json_u64(&json, "current_subscribers"), 2, "{json}");
    // A freed slot is usable again.
    drop(a);
    assert_eq!(ctl.wait_stat("current_subscribers", WAIT, |n| n == 1), 1);
    let mut e = s.subscribe("/push/e/stream/lim", HDR_OK);
    let id = ctl.add("lim", "y");
    b.expect_str(&format!("{id}:lim:y\n"));
    e.expect_str(&format!("{id}:lim:y\n"));
}

#[test]
fn controller_connections_over_max_get_err_too_many_connections() {
    let (s, mut c1) = start_with(&["-MaxControllers", "2"]);
    let mut c2 = s.ctl();
    assert_eq!(c2.command("COUNTSUBSCRIBERS x"), "OK 0");
    let mut c3 = Conn::connect(s.ctl_addr);
    expect_reply_and_close(
        &mut c3,
        "ERR Too many connections\r\n",
        "a third controller with MaxControllers 2",
    );
    // The two connected ones are unaffected.
    assert_eq!(c1.add("ch", "a"), 1);
    assert_eq!(c2.add("ch", "b"), 2);
    assert_eq!(c2.stat("current_controllers"), 2);
    // One leaves: a new one is admitted.
    assert_eq!(c1.command("QUIT"), "OK");
    assert_eq!(c2.wait_stat("current_controllers", WAIT, |n| n == 1), 1);
    let mut c4 = s.ctl();
    assert_eq!(c4.add("ch", "c"), 3);
    let json = stats_json_when_full(&s, &mut c2);
    assert_eq!(json_u64(&json, "connections_refused"), 1, "{json}");
    assert_serves(&s, &mut c4);
}

/// `/stats` needs a controller slot of its own: free one first.
fn stats_json_when_full(s: &Server, ctl: &mut Controller) -> String {
    assert_eq!(ctl.command("QUIT"), "OK");
    ctl.conn.expect_eof();
    let mut probe = s.ctl();
    assert_eq!(probe.wait_stat("current_controllers", WAIT, |n| n == 2), 2);
    drop(probe);
    let mut json = String::new();
    let ok = eventually(WAIT, || {
        json = control_http(
            s,
            "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        json.starts_with("HTTP/1.1 200 OK\r\n")
    });
    assert!(ok, "GET /stats: {json:?}");
    json
}

// ---------------------------------------------------------------------------
// Bounded controller lines and UDP datagrams
// ---------------------------------------------------------------------------

#[test]
fn controller_line_of_max_bytes_is_accepted_one_more_is_err_and_close() {
    let (s, mut other) = start_with(&["-MaxControllerLineBytes", "100"]);
    let prefix = "ADDMESSAGE long ";
    let fits = format!("{prefix}{}", "x".repeat(100 - prefix.len()));
    assert_eq!(fits.len(), 100);
    let mut c = s.ctl();
    assert_eq!(c.add("long", &fits[prefix.len()..]), 1);
    // The same line in two pieces, the first exactly at the bound.
    c.send(&fits);
    c.send("\n");
    assert_eq!(c.read_reply_line(), "OK\t2");
    // 101 bytes with its line end: ERR, then close; nothing published.
    let over = format!("{fits}y");
    c.send(&format!("{over}\n"));
    expect_reply_and_close(&mut c.conn, "ERR Line too long\r\n", "a 101-byte line");
    // 101 bytes without a line end: ERR as soon as the bound is crossed.
    let mut d = s.ctl();
    d.send(&over);
    expect_reply_and_close(&mut d.conn, "ERR Line too long\r\n", "101 bytes, no LF");
    // A good command before the long one is still answered.
    let mut e = s.ctl();
    e.send(&format!("ADDMESSAGE long ok\n{over}\n"));
    expect_reply_and_close(
        &mut e.conn,
        "OK\t3\r\nERR Line too long\r\n",
        "a good line, then a long one",
    );
    assert_eq!(other.list(), "OK\r\nlong(3/0)\r\n--EOT--\r\n");
    assert_serves(&s, &mut other);
}

#[test]
fn control_http_heads_and_bodies_are_bounded() {
    let (s, mut ctl) = start_with(&["-MaxControllerLineBytes", "1000"]);
    // A request head over MaxRequestHeadBytes (8192): 431, then close.
    let mut big = Conn::connect(s.ctl_addr);
    big.send(format!("GET /stats HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(9000)).as_bytes());
    let got = String::from_utf8_lossy(&big.read_to_end(WAIT)).into_owned();
    let too_large = "431 Request Header Fields Too Large";
    assert_eq!(got, control_error(too_large, "request head too large"));
    // Too many header lines: 431.
    let mut lines = String::from("GET /stats HTTP/1.1\r\n");
    for i in 0..65 {
        lines.push_str(&format!("X-{i}: v\r\n"));
    }
    lines.push_str("\r\n");
    let got = control_http(&s, &lines);
    assert_eq!(got, control_error(too_large, "too many header lines"));
    // A body over MaxControllerLineBytes: 413, nothing published.
    let body = "b".repeat(1001);
    let got = control_http(
        &s,
        &format!(
            "POST /pub/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let why = "the body is over MaxControllerLineBytes";
    assert_eq!(got, control_error("413 Content Too Large", why));
    // Exactly the bound is fine.
    let body = "b".repeat(1000);
    let got = control_http(
        &s,
        &format!(
            "POST /pub/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(got, control_published(1));
    assert_eq!(ctl.list(), "OK\r\nbig(1/0)\r\n--EOT--\r\n");
    assert_serves(&s, &mut ctl);
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

#[test]
fn udp_datagram_over_the_bound_is_dropped_and_logged() {
    let port = free_udp_port();
    let (s, mut ctl) = start_with(&["-UDPPort", &port.to_string(), "-UDPMaxBytes", "64"]);
    assert!(
        s.wait_log(WAIT, |l| l
            .contains(&format!("listening for UDP on 127.0.0.1:{port}")))
            .is_some(),
        "UDP must listen on loopback by default: {:#?}",
        s.logs()
    );
    let mut sub = s.subscribe("/push/u/stream/u", HDR_OK);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{port}");
    let prefix = "ADDMESSAGE u ";
    let fits = format!("{prefix}{}", "f".repeat(64 - prefix.len()));
    let over = format!("{prefix}{}", "o".repeat(65 - prefix.len()));
    sock.send_to(over.as_bytes(), &to).unwrap();
    sock.send_to(fits.as_bytes(), &to).unwrap();
    // The 64-byte one is published with the first id: the 65-byte one was not.
    sub.expect_str(&format!("1:u:{}\n", &fits[prefix.len()..]));
    assert!(
        s.wait_log(WAIT, |l| l
            .contains("dropped a UDP datagram of 65 bytes (UDPMaxBytes 64)"))
            .is_some(),
        "no log line for the dropped datagram: {:#?}",
        s.logs()
    );
    assert_eq!(ctl.add("u", "tcp"), 2);
    sub.expect_str("2:u:tcp\n");
    assert_serves(&s, &mut ctl);
}

// ---------------------------------------------------------------------------
// Password, HTTP bearer, UDP refused without authentication
// ---------------------------------------------------------------------------

const PW: &str = "s3cr3t-pw";

#[test]
fn controller_password_requires_auth_first() {
    let (s, mut c) = start_with(&["-ControllerPassword", PW]);
    // Nothing works before AUTH, and the connection stays usable.
    assert_eq!(c.command("ADDMESSAGE a early"), "ERR Not authenticated");
    assert_eq!(c.command("LISTCHANNELS"), "ERR Not authenticated");
    assert_eq!(c.command("SHOWSTATS"), "ERR Not authenticated");
    assert_eq!(c.command("COUNTSUBSCRIBERS a"), "ERR Not authenticated");
    assert_eq!(c.command(&format!("AUTH {PW}")), "OK");
    // The early ADDMESSAGE published nothing: this is id 1.
    assert_eq!(c.add("a", "late"), 1);
    assert_eq!(c.list(), "OK\r\na(1/0)\r\n--EOT--\r\n");
    // A wrong password: ERR, then close.
    let mut w = s.ctl();
    w.send(&format!("AUTH {PW}x\n"));
    expect_reply_and_close(&mut w.conn, "ERR Invalid password\r\n", "a wrong password");
    let mut w2 = s.ctl();
    w2.send("AUTH \n");
    expect_reply_and_close(
        &mut w2.conn,
        "ERR Invalid password\r\n",
        "an empty password",
    );
    assert!(
        s.wait_log(WAIT, |l| l.contains("wrong password")).is_some(),
        "{:#?}",
        s.logs()
    );
    // Subscribers need no password.
    assert_serves(&s, &mut c);
}

#[test]
fn http_control_endpoints_need_the_bearer_token() {
    let (s, mut c) = start_with(&["-ControllerPassword", PW]);
    assert_eq!(c.command(&format!("AUTH {PW}")), "OK");
    let unauthorized = "HTTP/1.1 401 Unauthorized\r\nServer: meteord\r\n\
        Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\
        Content-Length: 17\r\nWWW-Authenticate: Bearer\r\nConnection: close\r\n\r\n\
        401 Unauthorized\n";
    // Each wrong attempt from an address of its own: repeated failures
    // from one address are slowed down (see `wrong_passwords_slow_down`).
    let mut attempt = 0u8;
    let mut wrong = |raw: &str| {
        attempt += 1;
        let mut c = connect_from(s.ctl_addr, std::net::Ipv4Addr::new(127, 0, 2, attempt));
        c.send(raw.as_bytes());
        String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
    };
    for (what, auth) in [
        ("no Authorization", String::new()),
        ("a wrong token", format!("Authorization: Bearer {PW}x\r\n")),
        (
            "Basic instead of Bearer",
            format!("Authorization: Basic {PW}\r\n"),
        ),
    ] {
        for path in ["/stats", "/channels", "/metrics"] {
            let r = wrong(&format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
            ));
            assert_eq!(r, unauthorized, "GET {path} with {what}");
        }
        let r = wrong(&format!(
            "POST /pub/news HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 4\r\nConnection: close\r\n\r\nnope"
        ));
        assert_eq!(r, unauthorized, "POST /pub with {what}");
    }
    // Nothing was published by the refused POSTs.
    assert_eq!(c.list(), "OK\r\n--EOT--\r\n");
    let mut sub = s.subscribe("/push/h/stream/news", HDR_OK);
    let r = control_http(
        &s,
        &format!(
            "POST /pub/news HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {PW}\r\nContent-Length: 5\r\n\
             Connection: close\r\n\r\nhello"
        ),
    );
    assert_eq!(r, control_published(1));
    sub.expect_str("1:news:hello\n");
    let json = stats_json(&s, Some(PW));
    assert_eq!(json_u64(&json, "unique_messages"), 1, "{json}");
    assert_serves(&s, &mut c);
}

#[test]
fn http_control_endpoints_are_open_without_a_password() {
    let (s, mut ctl) = start_with(&[]);
    let json = stats_json(&s, None);
    assert_eq!(json_u64(&json, "slow_consumers_dropped"), 0, "{json}");
    assert_serves(&s, &mut ctl);
}

#[test]
fn udp_with_a_password_is_refused_at_start_unless_allowed() {
    let dir = TempDir::new("udp-pw");
    let conf = dir.join("meteord.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    let docroot = dir.join("docroot");
    std::fs::create_dir_all(&docroot).unwrap();
    let port = free_udp_port().to_string();
    let args = std_args(
        &conf,
        &docroot,
        &["-ControllerPassword", PW, "-UDPPort", &port],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_meteord(&args, Duration::from_secs(10));
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("UDPAllowUnauthenticated"),
        "the message should name the way out: {}",
        r.stderr
    );
    // Allowed explicitly: it starts, UDP publishes without a password and
    // the controller port still needs one.
    let (s, mut c) = start_with(&[
        "-ControllerPassword",
        PW,
        "-UDPPort",
        &port,
        "-UDPAllowUnauthenticated",
        "1",
    ]);
    assert_eq!(c.command("LISTCHANNELS"), "ERR Not authenticated");
    assert_eq!(c.command(&format!("AUTH {PW}")), "OK");
    let mut sub = s.subscribe("/push/h/stream/u", HDR_OK);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"ADDMESSAGE u via-udp\n", format!("127.0.0.1:{port}"))
        .unwrap();
    sub.expect_str("1:u:via-udp\n");
}

#[test]
fn controller_port_listens_on_loopback_by_default() {
    let (s, mut c) = start_with(&[]);
    assert!(s.ctl_addr.ip().is_loopback(), "{}", s.ctl_addr);
    assert!(
        s.logs()
            .iter()
            .any(|l| l.contains("listening for controllers on 127.0.0.1:")),
        "{:#?}",
        s.logs()
    );
    assert_serves(&s, &mut c);
}

// ---------------------------------------------------------------------------
// Out of descriptors
// ---------------------------------------------------------------------------

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning_and_recovers() {
    // MaxSubscribers high, so that descriptors run out before the table does.
    let (s, mut ctl) = start_with(&["-MaxSubscribers", "100000", "-MaxControllers", "4"]);
    let pid = s.pid();
    assert_eq!(ctl.count("fdch"), 0);
    let base = fd_count(pid);
    // The limit bounds descriptor numbers: holes below it are usable too.
    set_fd_limit(pid, base as u64 + 20);
    // Open subscribers until one is no longer served.
    let mut held = Vec::new();
    let mut unserved = None;
    for i in 0..200 {
        let mut c = s.http_get(&format!("/push/fd{i}/stream/fdch"));
        match c.read_until(HDR_OK.as_bytes(), Duration::from_millis(500)) {
            Ok(_) => held.push(c),
            Err(_) => {
                unserved = Some(c);
                break;
            }
        }
    }
    let mut unserved = unserved.expect("200 subscribers served with 20 spare descriptors");
    assert!(
        (10..=25).contains(&held.len()),
        "{} subscribers served with 20 spare descriptors",
        held.len()
    );
    // More arrive while the server is out of descriptors.
    let mut queued: Vec<Conn> = (0..5)
        .map(|i| s.http_get(&format!("/push/q{i}/stream/fdch")))
        .collect();
    assert!(
        s.wait_log(WAIT, |l| l.contains("accept failed")
            && l.contains("pausing"))
            .is_some(),
        "no log line about the failed accept: {:#?}",
        s.logs()
    );
    // Over one second the loop must not spin: measure its CPU time while
    // checking that the waiting connection stays unserved.
    let hz = clock_ticks_per_second();
    let t0 = cpu_ticks(pid);
    let w0 = Instant::now();
    unserved.expect_silence(Duration::from_secs(1));
    let used = cpu_ticks(pid) - t0;
    let wall = w0.elapsed();
    assert!(
        used * 1000 / hz < 250,
        "the server used {used} ticks ({hz}/s) of CPU in {wall:?} while out of descriptors"
    );
    // The existing subscribers are still served meanwhile.
    let id = ctl.add("fdch", "during");
    for c in held.iter_mut() {
        c.expect_str(&format!("{id}:fdch:during\n"));
    }
    // Descriptors free up: the waiting connections are served by themselves.
    drop(held);
    unserved.expect_str(HDR_OK);
    for c in queued.iter_mut() {
        c.expect_str(HDR_OK);
    }
    let id = ctl.add("fdch", "after");
    unserved.expect_str(&format!("{id}:fdch:after\n"));
    for c in queued.iter_mut() {
        c.expect_str(&format!("{id}:fdch:after\n"));
    }
    drop(unserved);
    drop(queued);
    assert_eq!(ctl.wait_count("fdch", 0, WAIT), 0);
    assert_serves(&s, &mut ctl);
}

// ---------------------------------------------------------------------------
// Slow and stalled consumers
// ---------------------------------------------------------------------------

/// Reads `n` events on another thread; returns their ids.
/// Reads `n` events on another thread as fast as it can; returns their ids
/// and the connection, still open.
fn reader(mut c: Conn, n: usize) -> thread::JoinHandle<(Vec<u64>, Conn)> {
    thread::spawn(move || {
        let mut all = std::mem::take(&mut c.buf);
        let mut lines = memchr::memchr_iter(b'\n', &all).count();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tmp = vec![0u8; 256 * 1024];
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while lines < n && Instant::now() < deadline {
            match c.stream.read(&mut tmp) {
                Ok(0) => break,
                Ok(k) => {
                    lines += memchr::memchr_iter(b'\n', &tmp[..k]).count();
                    all.extend_from_slice(&tmp[..k]);
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (complete_event_ids(&all), c)
    })
}

#[test]
fn subscriber_that_never_reads_is_dropped_as_slow_consumer() {
    never_reading_subscriber_is_dropped(&[]);
}

#[test]
fn subscriber_that_never_reads_is_dropped_as_slow_consumer_with_pings_off() {
    // Without pings no timer wakes the blocked subscriber up: falling
    // behind alone must get it dropped.
    never_reading_subscriber_is_dropped(&["-PingInterval", "0"]);
}

/// WriteTimeout stays at its default (120 s): what drops the subscriber
/// here must be falling behind the channel, not the stall.
fn never_reading_subscriber_is_dropped(extra: &[&str]) {
    let _heavy = heavy();
    // The channel keeps 500 events (1 MiB): room enough for a well-behaved
    // reader that the scheduler holds up for a moment.
    let mut args = vec!["-MaxMessagesPerChannel", "500"];
    args.extend_from_slice(extra);
    let (s, mut ctl) = start_with(&args);
    let pid = s.pid();
    let n = 5000;
    let size = 2048;
    let good = s.subscribe("/push/good/stream/flood", HDR_OK);
    let good = reader(good, n);
    let mut slow = connect_small_rcvbuf(s.sub_addr, 1024);
    slow.send(get_request("/push/slow/stream/flood").as_bytes());
    slow.expect_str(HDR_OK);
    assert_eq!(ctl.wait_count("flood", 2, WAIT), 2);
    let rss0 = rss_kib(pid);
    // 5000 events of 2 KiB (10 MiB), far more than socket buffers and the
    // channel hold, each published after the previous one was acknowledged.
    let ids = publish_big(&mut ctl, "flood", n, size, 1);
    let dropped = s.wait_log(Duration::from_secs(10), |l| {
        l.contains("dropped slow subscriber (slowConsumer)")
    });
    let (got, _good) = good.join().unwrap();
    assert_eq!(got, ids, "the well-behaved subscriber missed events");
    assert!(
        dropped.is_some(),
        "a subscriber that never reads was not dropped as slowConsumer within 10 s \
         of falling {} events behind a channel that keeps 500; log: {:#?}",
        n - 500,
        s.logs()
            .iter()
            .filter(|l| l.contains("slow") || l.contains("leavechannel"))
            .collect::<Vec<_>>()
    );
    let dropped = dropped.unwrap_or_default();
    let peer = slow.stream.local_addr().expect("local address");
    assert!(
        dropped.ends_with(&format!("{peer}: dropped slow subscriber (slowConsumer)")),
        "the line does not name the subscriber {peer}: {dropped:?}"
    );
    let leave = s
        .wait_log(WAIT, |l| {
            l.contains("leavechannel\t127.0.0.1\tslow\tflood\t") && l.ends_with("\tslowConsumer")
        })
        .unwrap_or_else(|| panic!("no leavechannel record: {:#?}", s.logs()));
    // leavechannel ip hostid channel seconds events bytes reason: it was
    // sent fewer than all events, and some bytes.
    let rec = &leave[leave.find("leavechannel\t").unwrap_or(0)..];
    let f: Vec<&str> = rec.split('\t').collect();
    assert_eq!(f.len(), 8, "{rec:?}");
    let events: usize = f[5].parse().unwrap_or_else(|_| panic!("events in {rec:?}"));
    let bytes: usize = f[6].parse().unwrap_or_else(|_| panic!("bytes in {rec:?}"));
    assert!(events < n, "{rec:?}");
    assert!(bytes > 0 && bytes < n * size, "{rec:?}");
    let json = stats_json(&s, None);
    assert_eq!(json_u64(&json, "slow_consumers_dropped"), 1, "{json}");
    assert_eq!(ctl.count("flood"), 1);
    // Memory: the server held the channel's buffer, not the backlog of the
    // subscriber that did not read.
    let grew = rss_kib(pid).saturating_sub(rss0);
    assert!(
        grew < (n * size / 1024 * 6 / 10) as u64,
        "server RSS grew by {grew} KiB while publishing {} KiB",
        n * size / 1024
    );
    // Texts and one rendered buffer of 500 events, give or take.
    assert!(
        json_u64(&json, "bytes_cached") < (2 * 600 * (size + 64)) as u64,
        "{json}"
    );
    // What the slow one did get before it was dropped has no gap.
    let prefix = complete_event_ids(&slow.read_to_end(WAIT));
    assert_consecutive(&prefix, "the slow subscriber");
    assert!(prefix.len() < n, "the slow subscriber got everything");
    assert!(prefix.is_empty() || prefix[0] == ids[0]);
    assert_serves(&s, &mut ctl);
}

#[test]
fn subscriber_that_reads_too_slowly_is_dropped_and_never_sees_a_gap() {
    let _heavy = heavy();
    let (s, mut ctl) = start_with(&["-MaxMessagesPerChannel", "500"]);
    // 20 MB: more than the kernel's buffers and `MAX_PINNED_LAG` together.
    let n = 5000;
    let size = 4096;
    let good = reader(s.subscribe("/push/good/stream/flood", HDR_OK), n);
    let mut slow = connect_small_rcvbuf(s.sub_addr, 1024);
    slow.send(get_request("/push/slow/stream/flood").as_bytes());
    slow.expect_str(HDR_OK);
    // Publish while the slow one reads a little now and then.
    let text = "x".repeat(size);
    let mut published = Vec::new();
    let mut seen = Vec::new();
    for i in 0..n {
        published.push(ctl.add("flood", &text));
        if i.is_multiple_of(25) {
            seen.extend(slow.read_for(Duration::from_millis(1)));
        }
    }
    // It then reads as fast as it can: it must end up closed, having
    // received an unbroken run of events from the first one.
    seen.extend(slow.read_to_end(Duration::from_secs(20)));
    let (got, _good) = good.join().unwrap();
    assert_eq!(got, published, "the well-behaved subscriber missed events");
    let ids = complete_event_ids(&seen);
    assert!(ids.len() < n, "the slow subscriber got all {n} events");
    assert_eq!(
        ids.first(),
        published.first(),
        "the slow subscriber's first event"
    );
    assert_consecutive(&ids, "the slow subscriber");
    assert!(
        s.wait_log(WAIT, |l| l
            .contains("dropped slow subscriber (slowConsumer)"))
            .is_some(),
        "{:#?}",
        s.logs()
    );
    let json = stats_json(&s, None);
    assert_eq!(json_u64(&json, "slow_consumers_dropped"), 1, "{json}");
    assert_serves(&s, &mut ctl);
}

#[test]
fn stalled_subscriber_is_dropped_after_write_timeout() {
    let _heavy = heavy();
    // A large cache, so it never falls behind the channel: only the stall
    // can drop it.
    let (s, mut ctl) = start_with(&["-WriteTimeout", "1", "-MaxMessagesPerChannel", "100000"]);
    let n = 800;
    let size = 16 * 1024;
    let good = reader(s.subscribe("/push/good/stream/stall", HDR_OK), n);
    let mut slow = connect_small_rcvbuf(s.sub_addr, 1024);
    slow.send(get_request("/push/stalled/stream/stall").as_bytes());
    slow.expect_str(HDR_OK);
    let t0 = Instant::now();
    let dropped_at = watch_log(&s, |l| l.contains("dropped slow subscriber (writeTimeout)"));
    let ids = publish_big(&mut ctl, "stall", n, size, 1);
    let line = s
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("dropped slow subscriber (writeTimeout)")
        })
        .unwrap_or_else(|| panic!("stalled subscriber not dropped: {:#?}", s.logs()));
    let peer = slow.stream.local_addr().expect("local address");
    assert!(
        line.ends_with(&format!("{peer}: dropped slow subscriber (writeTimeout)")),
        "the line does not name the stalled subscriber {peer}: {line:?}"
    );
    assert!(
        s.wait_log(WAIT, |l| l.contains("\tstalled\tstall\t")
            && l.ends_with("\twriteTimeout"))
            .is_some(),
        "no leavechannel record with writeTimeout: {:#?}",
        s.logs()
    );
    // It could not stall before the first event was published (after t0),
    // and must then have made no progress for WriteTimeout (1 s).
    let dropped_after = dropped_at
        .join()
        .expect("log watcher")
        .expect("the drop was logged")
        .duration_since(t0);
    assert!(
        dropped_after >= Duration::from_millis(900),
        "dropped {dropped_after:?} after the first publish, before WriteTimeout 1"
    );
    let (got, _good) = good.join().unwrap();
    assert_eq!(got, ids);
    let json = stats_json(&s, None);
    assert_eq!(json_u64(&json, "slow_consumers_dropped"), 1, "{json}");
    assert_eq!(ctl.wait_count("stall", 1, WAIT), 1);
    assert!(
        !s.logs().iter().any(|l| l.contains("(slowConsumer)")),
        "dropped as slowConsumer although the channel still held its events"
    );
    assert_serves(&s, &mut ctl);
}

#[test]
fn pipelining_publisher_does_not_get_a_fast_subscriber_dropped() {
    pipelined_burst_reaches_fast_subscribers(4096, 100, 2000);
}

#[test]
fn pipelining_publisher_of_large_events_does_not_get_a_fast_subscriber_dropped() {
    // Bursts of 200 events of 16 KiB: fewer events than the channel keeps
    // (250), but far more bytes than one turn's write to a subscriber.
    pipelined_burst_reaches_fast_subscribers(16 * 1024, 200, 1000);
}

/// Default cache (250 events). The publisher writes `batch` commands at a
/// time, fewer than the channel holds, and waits for their replies; two
/// subscribers reading as fast as loopback allows must get every event.
fn pipelined_burst_reaches_fast_subscribers(size: usize, batch: usize, n: usize) {
    let _heavy = heavy();
    let (s, mut ctl) = start_with(&[]);
    let a = reader(s.subscribe("/push/fasta/stream/pipe", HDR_OK), n);
    let b = reader(s.subscribe("/push/fastb/stream/pipe", HDR_OK), n);
    let ids = publish_big(&mut ctl, "pipe", n, size, batch);
    let (got_a, _a) = a.join().unwrap();
    let (got_b, _b) = b.join().unwrap();
    assert!(
        !s.logs()
            .iter()
            .any(|l| l.contains("dropped slow subscriber")),
        "a fast reader was dropped: {:#?}",
        s.logs()
            .iter()
            .filter(|l| l.contains("leavechannel") || l.contains("dropped"))
            .collect::<Vec<_>>()
    );
    assert_eq!(got_a, ids);
    assert_eq!(got_b, ids);
}

// ---------------------------------------------------------------------------
// Abrupt clients: nothing leaks
// ---------------------------------------------------------------------------

/// What must come back to where it was after abrupt clients left.
struct Baseline {
    fds: usize,
    list: String,
    subscribers: u64,
    controllers: u64,
}

fn baseline(s: &Server, ctl: &mut Controller) -> Baseline {
    // Ask the controller first: its connection is then surely accepted.
    let list = ctl.list();
    let subscribers = ctl.stat("current_subscribers");
    let controllers = ctl.stat("current_controllers");
    Baseline {
        fds: fd_count(s.pid()),
        list,
        subscribers,
        controllers,
    }
}

fn assert_back_to(s: &Server, ctl: &mut Controller, b: &Baseline, what: &str) {
    let subs = ctl.wait_stat("current_subscribers", Duration::from_secs(10), |n| {
        n == b.subscribers
    });
    assert_eq!(subs, b.subscribers, "{what}: current_subscribers");
    let ctls = ctl.wait_stat("current_controllers", WAIT, |n| n == b.controllers);
    assert_eq!(ctls, b.controllers, "{what}: current_controllers");
    assert_eq!(ctl.wait_list(&b.list, WAIT), b.list, "{what}: LISTCHANNELS");
    let fds = wait_fds(s.pid(), b.fds, WAIT);
    assert_eq!(fds, b.fds, "{what}: descriptors of the server");
    assert!(
        !s.logs().iter().any(|l| l.contains("panicked")),
        "{what}: {:#?}",
        s.logs()
    );
}

#[test]
fn reset_in_the_middle_of_a_write_leaks_nothing() {
    let _heavy = heavy();
    let (s, mut ctl) = start_with(&["-MaxMessagesPerChannel", "1000"]);
    // A 8 MiB backlog, so that every reply below is cut mid-write.
    let backlog = publish_big(&mut ctl, "big", 512, 16 * 1024, 50);
    let b = baseline(&s, &mut ctl);
    let mut conns = Vec::new();
    for i in 0..10 {
        conns.push(s.http_get(&format!("/push/p{i}/poll/big.h")));
        conns.push(s.http_get(&format!("/push/s{i}/stream/big.h")));
    }
    for c in conns.iter_mut() {
        c.read_exact_n(HDR_OK.len() + 1000, WAIT).unwrap();
    }
    assert_eq!(ctl.wait_count("big", 10, WAIT), 10);
    for c in conns {
        reset(c);
    }
    // Live subscribers reset while events are being written to them.
    let mut live = Vec::new();
    for i in 0..10 {
        live.push(s.subscribe(&format!("/push/l{i}/stream/big"), HDR_OK));
    }
    let text = "y".repeat(16 * 1024);
    ctl.send(&format!("ADDMESSAGE big {text}\n").repeat(64));
    for c in live {
        reset(c);
    }
    // Every one of the 64 was published, with the next ids.
    let last = backlog.last().copied().unwrap_or(0);
    let ids: Vec<u64> = (0..64)
        .map(|_| parse_ok_id(&ctl.read_reply_line()))
        .collect();
    assert_eq!(ids, (last + 1..=last + 64).collect::<Vec<u64>>());
    // A controller reset with megabytes of replies pending.
    let mut greedy = s.ctl();
    greedy.send(&"SHOWSTATS\n".repeat(20_000));
    greedy.conn.read_exact_n(1000, WAIT).unwrap();
    reset(greedy.conn);
    let b = Baseline {
        list: ctl.list(),
        ..b
    };
    assert_back_to(&s, &mut ctl, &b, "after resets mid-write");
    assert_serves(&s, &mut ctl);
}

#[test]
fn half_closed_clients_leak_nothing() {
    let (s, mut ctl) = start_with(&[]);
    ctl.add("hc", "one");
    let b = baseline(&s, &mut ctl);
    // A controller that half-closes after its commands still gets replies.
    let mut c = s.ctl();
    c.send("ADDMESSAGE hc two\nCOUNTSUBSCRIBERS hc\n");
    c.conn.shutdown_write();
    expect_reply_and_close(&mut c.conn, "OK\t2\r\nOK 0\r\n", "a half-closed controller");
    // A poll that half-closes after its request.
    let mut p = s.http_get("/push/hp/poll/hc.h");
    p.shutdown_write();
    let got = p.read_to_end(WAIT);
    // A subscriber that half-closes in the middle of its head.
    let mut h = s.connect_sub();
    h.send(b"GET /push/hh/stream/hc HTTP/1.1\r\n");
    h.shutdown_write();
    let got_h = h.read_to_end(WAIT);
    // A streaming subscriber that half-closes after its head.
    let mut st = s.http_get("/push/hs/stream/hc");
    st.shutdown_write();
    let got_st = st.read_for(Duration::from_millis(300));
    drop(st);
    let b = Baseline {
        list: "OK\r\nhc(2/0)\r\n--EOT--\r\n".into(),
        ..b
    };
    assert_back_to(&s, &mut ctl, &b, "after half-closed clients");
    assert_eq!(
        show(&got),
        show(format!("{HDR_OK}1:hc:one\n2:hc:two\n").as_bytes()),
        "a poll whose client half-closed after the request"
    );
    assert!(got_h.is_empty(), "{}", show(&got_h));
    assert!(
        got_st.is_empty() || got_st == HDR_OK.as_bytes(),
        "{}",
        show(&got_st)
    );
    assert_serves(&s, &mut ctl);
}

#[test]
fn clients_that_send_a_request_and_vanish_leak_nothing() {
    let (s, mut ctl) = start_with(&[]);
    s.write_doc("page.html", &vec![b'd'; 200_000]);
    ctl.add("keep", "k");
    let b = baseline(&s, &mut ctl);
    for i in 0..50u64 {
        for path in [
            format!("/push/v{i}/stream/gone{i}"),
            format!("/push/w{i}/poll/keep.h"),
            format!("/push/x{i}/long/gone{i}/keep"),
            "/page.html".to_string(),
        ] {
            let c = s.http_get(&path);
            if i.is_multiple_of(2) {
                drop(c);
            } else {
                reset(c);
            }
        }
        // Half a head, then gone.
        let mut c = s.connect_sub();
        c.send(b"GET /push/y/stream/gone HTTP/1.1\r\nHo");
        drop(c);
    }
    assert_back_to(&s, &mut ctl, &b, "after clients vanished");
    assert_eq!(ctl.count("keep"), 0);
    assert_serves(&s, &mut ctl);
}

#[test]
fn flood_of_connect_and_close_leaks_nothing_and_counters_come_back() {
    let (s, mut ctl) = start_with(&[]);
    let b = baseline(&s, &mut ctl);
    let sub0 = ctl.stat("subscriber_connections_accepted");
    let ctl0 = ctl.stat("controller_connections_accepted");
    let n: u64 = 400;
    for i in 0..n {
        let c = s.connect_sub();
        if i.is_multiple_of(3) {
            reset(c);
        } else {
            drop(c);
        }
        let k = Conn::connect(s.ctl_addr);
        if i % 3 == 1 {
            reset(k);
        } else {
            drop(k);
        }
    }
    // Every connection was accepted (the kernel queued the ones closed
    // before accept) and every one is gone again.
    let got = ctl.wait_stat(
        "subscriber_connections_accepted",
        Duration::from_secs(10),
        |v| v == sub0 + n,
    );
    assert_eq!(got, sub0 + n);
    // The controller counter includes our own SHOWSTATS connection only once.
    let got = ctl.wait_stat(
        "controller_connections_accepted",
        Duration::from_secs(10),
        |v| v == ctl0 + n,
    );
    assert_eq!(got, ctl0 + n);
    assert_back_to(&s, &mut ctl, &b, "after a connect/close flood");
    assert_serves(&s, &mut ctl);
}

#[test]
fn garbage_and_binary_input_is_answered_and_leaks_nothing() {
    let (s, mut ctl) = start_with(&[]);
    let b = baseline(&s, &mut ctl);
    let inputs: [&[u8]; 5] = [
        b"\x00\x01\x02\xff\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /push/h/stream/a HTTP/9.9\r\n\r\n",
        b"\r\n\r\n",
        b"GET /push/h/stream/a HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ];
    for raw in inputs {
        let mut c = s.request(raw);
        expect_reply_and_close(&mut c, &error_reply("400 Bad Request"), &show(raw));
    }
    let mut k = s.ctl();
    k.send_bytes(b"\x00\xff\xfe\r\n");
    assert_eq!(k.read_reply_line(), "ERR Invalid command syntax");
    assert_eq!(k.command("QUIT"), "OK");
    assert_back_to(&s, &mut ctl, &b, "after garbage");
    assert_serves(&s, &mut ctl);
}

/// Guessing the password is slow: a wrong bearer token closes the
/// connection (keep-alive does not help), and after three wrong passwords
/// from one address, on either protocol, further attempts from it are
/// refused unchecked for a growing while; other addresses are not affected.
#[test]
fn wrong_passwords_slow_down() {
    let (s, mut c) = start_with(&["-ControllerPassword", PW]);
    assert_eq!(c.command(&format!("AUTH {PW}")), "OK");
    let guess = |raw: &str| {
        let mut h = Conn::connect(s.ctl_addr);
        h.send(raw.as_bytes());
        String::from_utf8_lossy(&h.read_to_end(WAIT)).into_owned()
    };
    // Keep-alive asked for, yet closed after the 401.
    let bad = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n\r\n";
    for _ in 0..2 {
        let r = guess(bad);
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
    }
    // The third wrong password, by AUTH.
    let mut w = s.ctl();
    w.send("AUTH nope\n");
    expect_reply_and_close(&mut w.conn, "ERR Invalid password\r\n", "a third wrong one");
    // The fourth still gets its answer; the fifth comes too soon.
    assert!(guess(bad).starts_with("HTTP/1.1 401 Unauthorized\r\n"));
    let body = "429 Too Many Requests: too many wrong passwords from this address; wait\n";
    let r = guess(bad);
    assert_eq!(
        r,
        format!(
            "HTTP/1.1 429 Too Many Requests\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    );
    // Even the right password waits, on both protocols.
    let right = format!(
        "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {PW}\r\nConnection: close\r\n\r\n"
    );
    assert!(guess(&right).starts_with("HTTP/1.1 429 "));
    let mut w = s.ctl();
    w.send(&format!("AUTH {PW}\n"));
    expect_reply_and_close(
        &mut w.conn,
        "ERR Too many failed attempts, wait\r\n",
        "AUTH while slowed down",
    );
    // Another address is not slowed down.
    let mut other = connect_from(s.ctl_addr, std::net::Ipv4Addr::new(127, 0, 3, 1));
    other.send(right.as_bytes());
    let r = String::from_utf8_lossy(&other.read_to_end(WAIT)).into_owned();
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    // After the wait (1 s after the fourth failure), the right one works.
    let mut ok = false;
    for _ in 0..30 {
        if guess(&right).starts_with("HTTP/1.1 200 OK\r\n") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the right password was still refused after the wait");
    assert_serves(&s, &mut c);
}

/// The controller port has time limits: a connection must complete its
/// first command, and any command or HTTP request it starts, within
/// `ControllerCommandTimeout`; once it has completed one, it may stay
/// silent up to `ControllerIdleTimeout` (a publisher that keeps its
/// connection and publishes from time to time is not cut off).
#[test]
fn controller_connections_have_time_limits() {
    let (s, _) = start_with(&[
        "-ControllerCommandTimeout",
        "1",
        "-ControllerIdleTimeout",
        "3",
    ]);
    // Says nothing at all.
    let mut silent = Conn::connect(s.ctl_addr);
    expect_reply_and_close(&mut silent, "ERR Timeout\r\n", "a silent controller");
    // Half a command.
    let mut half = Conn::connect(s.ctl_addr);
    half.send(b"ADDMESSAGE ch he");
    expect_reply_and_close(&mut half, "ERR Timeout\r\n", "half a command");
    // An HTTP request whose body never comes.
    let mut body = Conn::connect(s.ctl_addr);
    body.send(b"POST /pub/ch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc");
    let got = String::from_utf8_lossy(&body.read_to_end(WAIT)).into_owned();
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
    // A publisher that publishes every 1.5 s (longer than the command
    // limit, shorter than the idle limit) keeps its connection.
    let mut publisher = s.ctl();
    for i in 0..3 {
        assert_eq!(publisher.add("ch", &format!("tick{i}")), i + 1);
        let quiet = publisher.conn.read_for(Duration::from_millis(1500));
        assert!(quiet.is_empty(), "unexpected bytes: {quiet:?}");
    }
    // Silent for longer than the idle limit: closed, without a word.
    publisher.conn.expect_eof();
    assert_eq!(s.ctl().list(), "OK\r\nch(3/0)\r\n--EOT--\r\n");
}

/// A controller that pipelines long answers and never reads gets no more
/// than the output bound buffered for it, and does not hold up the others;
/// once it reads, every answer arrives whole and in order.
#[test]
fn a_controller_that_never_reads_has_bounded_output() {
    let (s, mut c) = start_with(&[]);
    // 20,000 channels: each listing is about 360 KB.
    let mut publish = String::new();
    for i in 0..20_000 {
        publish.push_str(&format!("ADDMESSAGE channel-number-{i:05} x\n"));
    }
    let mut p = s.ctl();
    p.send(&publish);
    for i in 0..20_000u64 {
        assert_eq!(p.read_reply_line(), format!("OK\t{}", i + 1));
    }
    let rss0 = rss_kib(s.pid());
    // 32 listings, about 11.5 MB, to a client with a small receive buffer
    // that does not read.
    let mut hog = connect_small_rcvbuf(s.ctl_addr, 4096);
    hog.send("LISTCHANNELS\n".repeat(32).as_bytes());
    // The others are served meanwhile (without changing the listing).
    for _ in 0..20 {
        assert_eq!(c.command("COUNTSUBSCRIBERS channel-number-00001"), "OK 0");
    }
    let grew = rss_kib(s.pid()).saturating_sub(rss0);
    assert!(
        grew < 6 * 1024,
        "RSS grew by {grew} KiB for a client that does not read"
    );
    // Now it reads: 32 whole listings, in order.
    let mut expected = String::from("OK\r\n");
    for i in 0..20_000 {
        expected.push_str(&format!("channel-number-{i:05}(1/0)\r\n"));
    }
    expected.push_str("--EOT--\r\n");
    let want = expected.repeat(32);
    let got = hog
        .read_exact_n(want.len(), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("reading the listings: {e}"));
    assert!(got == want.as_bytes(), "the listings differ");
    assert_serves(&s, &mut c);
}

/// A publisher that pipelines thousands of events without waiting for its
/// `OK`s does not make readers that keep up lose events: each of five
/// streaming readers (two with small receive buffers, whose sockets fill up
/// now and then, one of which pauses for 300 ms) gets
/// every event, in order, and none is dropped.
#[test]
fn a_pipelining_publisher_does_not_outrun_readers_that_keep_up() {
    let (s, mut c) = start_with(&[]);
    const EVENTS: usize = 5_000;
    let text = "e".repeat(1000);
    let mut readers = Vec::new();
    for r in 0..5 {
        // Two of them with small receive buffers: their sockets fill up
        // now and then although they read all the time.
        let path = format!("/push/reader{r}/stream/flood");
        let mut sub = if r < 2 {
            let mut sub = connect_small_rcvbuf(s.sub_addr, 8192);
            sub.send(get_request(&path).as_bytes());
            sub.expect(HDR_OK.as_bytes());
            sub
        } else {
            s.subscribe(&path, HDR_OK)
        };
        let text = text.clone();
        readers.push(thread::spawn(move || {
            for id in 1..=EVENTS {
                // One of them pauses now and then, as a busy browser does.
                if r == 1 && id == 500 {
                    thread::sleep(Duration::from_millis(300));
                }
                let want = format!("{id}:flood:{text}\n");
                let got = sub
                    .read_exact_n(want.len(), Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("reader {r}, event {id}: {e}"));
                assert!(
                    got == want.as_bytes(),
                    "reader {r}, event {id}: {:?}",
                    show(&got)
                );
            }
        }));
    }
    let mut p = s.ctl();
    let mut burst = String::new();
    for _ in 0..EVENTS {
        burst.push_str(&format!("ADDMESSAGE flood {text}\n"));
    }
    p.send(&burst);
    for id in 1..=EVENTS {
        assert_eq!(p.read_reply_line(), format!("OK\t{id}"));
    }
    let lost = readers.into_iter().filter_map(|r| r.join().err()).count();
    let logs = s.logs();
    let drops: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("subscriber") || l.contains("DEBUG"))
        .collect();
    assert_eq!(lost, 0, "readers lost events; the server said: {drops:#?}");
    assert_serves(&s, &mut c);
}

/// With a password, the `AUTH` must come within `ControllerCommandTimeout`
/// of connecting: commands refused before it do not keep the slot.
#[test]
fn a_controller_that_never_authenticates_is_cut_off() {
    let (s, _) = start_with(&["-ControllerPassword", PW, "-ControllerCommandTimeout", "1"]);
    let mut w = s.ctl();
    let started = Instant::now();
    let mut answers = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        w.send("LISTCHANNELS\n");
        let got = w.conn.read_for(Duration::from_millis(300));
        answers.push_str(&String::from_utf8_lossy(&got));
        if answers.contains("ERR Timeout\r\n") {
            break;
        }
    }
    assert!(
        answers.starts_with("ERR Not authenticated\r\n"),
        "{answers:?}"
    );
    assert!(answers.ends_with("ERR Timeout\r\n"), "{answers:?}");
    w.conn.expect_eof();
}
