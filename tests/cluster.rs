//! Several nodes sharing channels through Redis (`RedisAddress`).
//!
//! Every test starts its own `redis-server` on a free loopback port (no
//! persistence) and two or three meteord nodes pointing at it, then talks
//! to them over real sockets. The tests that need redis-server are
//! `#[ignore]`d, so a plain `cargo test` lists them as ignored; run them with
//! `cargo test -- --include-ignored` (as CI does), where a missing
//! redis-server fails them.
//!
//! Waits are reads with deadlines or bounded polls; the nodes reconnect
//! with a backoff that starts at 100 ms, so an outage of a few hundred
//! milliseconds is over within about a second.

mod common;

use common::fake_redis::{FakeRedis, Resp, encode, read_resp};
use common::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// Fails the test, saying what to install, when redis-server cannot run.
fn require_redis() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs redis-server, which is not installed here (apt-get install redis-server)"
    );
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Starts redis-server on `port` and waits (bounded) until it answers.
fn spawn_redis(port: u16, dir: &TempDir, extra: &[String]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir.path)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn redis-server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        if ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer in 10 s"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a Redis answers PING on `port` (NOAUTH counts: it is up).
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        _ => false,
    }
}

/// A redis-server child on a loopback port; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    extra: Vec<String>,
    dir: TempDir,
}

impl Redis {
    /// A running Redis (the test fails when redis-server is not installed).
    fn start() -> Redis {
        Redis::start_with(&[], None)
    }

    fn start_with(extra: &[&str], password: Option<&str>) -> Redis {
        let mut redis = Redis::unstarted(extra, password);
        let mut last = String::new();
        for _ in 0..5 {
            match spawn_redis(redis.port, &redis.dir, &redis.extra) {
                Ok(child) => {
                    redis.child = Some(child);
                    return redis;
                }
                // Someone took the port in the meantime: another one.
                Err(e) => {
                    last = e;
                    redis.port = free_port();
                }
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// A port reserved for a Redis that `restart` starts later.
    fn unstarted(extra: &[&str], password: Option<&str>) -> Redis {
        require_redis();
        Redis {
            child: None,
            port: free_port(),
            password: password.map(str::to_owned),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: TempDir::new("redis"),
        }
    }

    /// `host:port` for `RedisAddress`.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends `sig` to redis-server (SIGSTOP hangs it with its connections
    /// open, SIGCONT lets it go on).
    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Kills it at once (SIGKILL): nothing is saved, links break.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty Redis on the same port.
    fn restart(&mut self) {
        self.kill();
        match spawn_redis(self.port, &self.dir, &self.extra) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("restarting redis: {e}"),
        }
    }

    /// One command on a fresh connection (AUTH first when there is a password).
    fn cmd(&self, args: &[&str]) -> Resp {
        self.cmd_db(None, args)
    }

    fn cmd_db(&self, db: Option<u32>, args: &[&str]) -> Resp {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to redis");
        s.set_read_timeout(Some(WAIT)).ok();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut request = Vec::new();
        let mut skip = 0;
        if let Some(pw) = &self.password {
            request.extend(encode(&["AUTH", pw]));
            skip += 1;
        }
        if let Some(db) = db {
            request.extend(encode(&["SELECT", &db.to_string()]));
            skip += 1;
        }
        request.extend(encode(args));
        w.write_all(&request).expect("write to redis");
        for _ in 0..skip {
            let r = read_resp(&mut r).expect("redis reply");
            assert_eq!(r, Resp::Simple("OK".into()), "redis setup for {args:?}");
        }
        read_resp(&mut r).unwrap_or_else(|e| panic!("redis reply to {args:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// A node sharing channels through the Redis at `addr` (TEST_CONF modes, no pings).
fn node(addr: &str) -> Server {
    node_with(addr, &[])
}

/// `node` with more command-line settings.
fn node_with(addr: &str, extra: &[&str]) -> Server {
    let mut args = vec!["-RedisAddress", addr, "-PingInterval", "0"];
    args.extend_from_slice(extra);
    Server::start(&args, TEST_CONF)
}

fn log_count(s: &Server, needle: &str) -> usize {
    s.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until the node has logged `link up` `n` times in all.
fn wait_link_up(s: &Server, n: usize) {
    wait_log_count(s, ": link up", n, Duration::from_secs(8));
}

fn wait_log_count(s: &Server, needle: &str, n: usize, timeout: Duration) {
    assert!(
        eventually(timeout, || log_count(s, needle) >= n),
        "node {} did not log {needle:?} {n} time(s) within {timeout:?}; log:\n{}",
        s.pid(),
        s.logs().join("\n")
    );
}

/// A node that is connected to `redis`.
fn node_up(redis: &Redis) -> Server {
    let s = node(&redis.addr());
    wait_link_up(&s, 1);
    s
}

type Event = (u64, String, String);

fn event_line(line: &[u8]) -> Event {
    let text = String::from_utf8_lossy(line);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut parts = body.splitn(3, ':');
    let id = parts.next().and_then(|p| p.parse().ok());
    match (id, parts.next(), parts.next()) {
        (Some(id), Some(ch), Some(t)) => (id, ch.to_string(), t.to_string()),
        _ => panic!("not an event line: {:?}", show(line)),
    }
}

/// Reads `n` events (`id:channel:text` lines).
fn read_events(c: &mut Conn, n: usize, timeout: Duration) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.read_until(b"\n", left) {
            Ok(line) => got.push(event_line(&line)),
            Err(e) => panic!("after {} of {n} events: {e}; events: {got:?}", got.len()),
        }
    }
    got
}

/// Reads events until one with an id of at least `last`.
fn read_events_through(c: &mut Conn, last: u64, timeout: Duration) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<Event> = Vec::new();
    while got.last().is_none_or(|e| e.0 < last) {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.read_until(b"\n", left) {
            Ok(line) => got.push(event_line(&line)),
            Err(e) => panic!(
                "waiting for id {last} after {} events: {e}; last events: {:?}",
                got.len(),
                &got[got.len().saturating_sub(5)..]
            ),
        }
    }
    got
}

fn events(ch: &str, ids: &[u64], texts: &[String]) -> Vec<Event> {
    ids.iter()
        .zip(texts)
        .map(|(&id, t)| (id, ch.to_string(), t.clone()))
        .collect()
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

fn assert_increasing(ids: &[u64], what: &str) {
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "{what}: ids not strictly increasing: {ids:?}");
    }
}

/// One HTTP request on a new controller-port connection; the whole response.
fn http_on_controller(s: &Server, raw: &str) -> String {
    let mut c = Conn::connect(s.ctl_addr);
    c.send(raw.as_bytes());
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

fn post_pub(channel: &str, body: &str) -> String {
    format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn http_ok(id: u64) -> String {
    let body = format!("{{\"id\":{id}}}\n");
    format!(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn http_503() -> String {
    let body = "503 Service Unavailable: backend unavailable\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The id in a `{"id":N}` publish response.
fn http_id(response: &str) -> u64 {
    let start = response
        .find("{\"id\":")
        .unwrap_or_else(|| panic!("no id in {response:?}"));
    let rest = &response[start + 6..];
    rest[..rest.find('}').expect("}")]
        .parse()
        .unwrap_or_else(|_| panic!("bad id in {response:?}"))
}

/// The established TCP connections of process `pid`: (local port, remote port).
#[cfg(target_os = "linux")]
fn tcp_connections(pid: u32) -> Vec<(u16, u16)> {
    let mut inodes = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let t = target.to_string_lossy().into_owned();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(ino.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !inodes.contains(f[9]) || f[3] == "0A" {
                continue;
            }
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
            if let (Some(l), Some(r)) = (port(f[1]), port(f[2])) {
                out.push((l, r));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Sharing channels
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn two_nodes_share_a_channel_both_ways() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let mut sub_a = a.subscribe("/push/ha/stream/ch", HDR_OK);
    let mut sub_b = b.subscribe("/push/hb/stream/ch", HDR_OK);
    let mut ctl_a = a.ctl();
    let mut ctl_b = b.ctl();

    let texts_a = texts("from-a", 20);
    let ids_a = ctl_a.add_many("ch", &texts_a);
    let texts_b = texts("from-b", 20);
    let ids_b = ctl_b.add_many("ch", &texts_b);
    let all_ids: Vec<u64> = ids_a.iter().chain(&ids_b).copied().collect();
    assert_increasing(&all_ids, "one counter for both nodes");
    // A new counter starts a generation at Redis's clock in microseconds
    // (so a Redis that lost its data never hands out an old id again),
    // below 2^53 so that JavaScript reads ids exactly.
    let now_us = now_unix() * 1_000_000;
    assert!(
        ids_a[0] + 120_000_000 > now_us && ids_a[0] < now_us + 120_000_000,
        "the first id {} is not a generation start near {now_us}",
        ids_a[0]
    );
    assert!(ids_a[0] < 1 << 53, "ids stay exact in JavaScript");

    let mut expected = events("ch", &ids_a, &texts_a);
    expected.extend(events("ch", &ids_b, &texts_b));
    assert_eq!(
        read_events(&mut sub_a, 40, WAIT),
        expected,
        "subscriber on A"
    );
    assert_eq!(
        read_events(&mut sub_b, 40, WAIT),
        expected,
        "subscriber on B"
    );
    assert_eq!(ctl_a.list(), "OK\r\nch(40/1)\r\n--EOT--\r\n");
    assert_eq!(ctl_b.list(), "OK\r\nch(40/1)\r\n--EOT--\r\n");

    // What Redis holds: the counter and the channel's stream.
    assert_eq!(redis.cmd(&["GET", "{meteor}:id"]).int(), ids_b[19] as i64);
    let entries = redis.cmd(&["XRANGE", "{meteor}:s:ch", "-", "+"]).items();
    assert_eq!(entries.len(), 40);
    let first = entries[0].items();
    assert_eq!(first[0].text(), format!("{}-0", ids_a[0]));
    let fields: Vec<String> = first[1].items().iter().map(Resp::text).collect();
    assert_eq!(fields.len(), 4, "fields {fields:?}");
    assert_eq!(
        (&*fields[0], &*fields[2], &*fields[3]),
        ("t", "x", "from-a-1")
    );
    let ms: u64 = fields[1].parse().expect("t is milliseconds");
    let now_ms = now_unix() * 1000;
    assert!(
        ms + 60_000 > now_ms && ms < now_ms + 60_000,
        "t={ms}, now={now_ms}"
    );

    // Each node keeps two links (commands, pub/sub) to Redis.
    #[cfg(target_os = "linux")]
    for s in [&a, &b] {
        let to_redis = tcp_connections(s.pid())
            .iter()
            .filter(|(_, remote)| *remote == redis.port)
            .count();
        assert_eq!(to_redis, 2, "links from node {} to redis", s.pid());
    }
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn three_nodes_deliver_every_event_in_the_same_order() {
    let redis = Redis::start();
    let nodes = [node_up(&redis), node_up(&redis), node_up(&redis)];
    let mut subs: Vec<Conn> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        subs.push(n.subscribe(&format!("/push/s{i}/stream/ch"), HDR_OK));
        subs.push(n.subscribe(&format!("/push/t{i}/stream/ch/other"), HDR_OK));
    }

    // All three publish at once, 100 each.
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut ctl = n.ctl();
            thread::spawn(move || {
                let t = texts(&format!("n{i}"), 100);
                let ids = ctl.add_many("ch", &t);
                assert_increasing(&ids, "replies to one publisher");
                events("ch", &ids, &t)
            })
        })
        .collect();
    let mut acked: Vec<Event> = publishers
        .into_iter()
        .flat_map(|p| p.join().expect("publisher"))
        .collect();
    acked.sort();
    let ids: Vec<u64> = acked.iter().map(|e| e.0).collect();
    assert_increasing(&ids, "ids from three nodes (unique)");

    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_events(sub, 300, Duration::from_secs(10));
        assert_eq!(got, acked, "subscriber {i} (node {})", i / 2);
    }
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn late_subscribers_get_their_backlog_from_redis() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let c = node_up(&redis);
    // Nobody holds `late` while it is published on A.
    let t = texts("m", 300);
    let ids = a.ctl().add_many("late", &t);
    let all = events("late", &ids, &t);
    assert_eq!(
        c.ctl().list(),
        "OK\r\n--EOT--\r\n",
        "C does not hold it yet"
    );

    // C loads it from Redis: exactly the last 50, then live events.
    let mut on_c = c.subscribe("/push/c1/stream/late.b50", HDR_OK);
    assert_eq!(read_events(&mut on_c, 50, WAIT), all[250..]);
    // B: everything a channel holds (MaxMessagesPerChannel 250).
    let mut on_b = b.subscribe("/push/b1/stream/late.h", HDR_OK);
    assert_eq!(read_events(&mut on_b, 250, WAIT), all[50..]);
    // A published it but never held it: `.r<id>` loads it too.
    let mut on_a = a.subscribe(&format!("/push/a1/stream/late.r{}", ids[280]), HDR_OK);
    assert_eq!(read_events(&mut on_a, 20, WAIT), all[280..]);
    // A non-persistent poll on another node gets its backlog and is closed.
    let mut poll = c.http_get(&format!("/push/p1/poll/late.r{}", ids[297]));
    let body = poll.read_to_end(WAIT);
    let mut expected = String::from(HDR_OK);
    for e in &all[297..] {
        expected.push_str(&format!("{}:{}:{}\n", e.0, e.1, e.2));
    }
    assert_eq!(show(&body), show(expected.as_bytes()));

    // The backlog is followed by what is published next, on any node.
    let next = b.ctl().add("late", "live");
    let live = vec![(next, "late".to_string(), "live".to_string())];
    for sub in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(read_events(sub, 1, WAIT), live);
    }
    assert_eq!(c.ctl().list(), "OK\r\nlate(250/1)\r\n--EOT--\r\n");
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn last_event_id_resumes_on_another_node() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let t = texts("e", 10);
    let ids = a.ctl().add_many("sse", &t);
    let all = events("sse", &ids, &t);

    // A browser that saw the 4th event on A reconnects to B.
    let request = format!(
        "GET /push/h1/stream/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: {}\r\n\r\n",
        ids[3]
    );
    let mut resumed = b.request(request.as_bytes());
    resumed.expect_str(HDR_OK);
    assert_eq!(read_events(&mut resumed, 6, WAIT), all[4..]);
    // B holds the channel now; a second resume is answered from its cache.
    let request = format!(
        "GET /push/h2/stream/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: {}\r\n\r\n",
        ids[7]
    );
    let mut again = b.request(request.as_bytes());
    again.expect_str(HDR_OK);
    assert_eq!(read_events(&mut again, 2, WAIT), all[8..]);

    let id = a.ctl().add("sse", "next");
    let next = vec![(id, "sse".to_string(), "next".to_string())];
    assert_eq!(read_events(&mut resumed, 1, WAIT), next);
    assert_eq!(read_events(&mut again, 1, WAIT), next);
}

// ---------------------------------------------------------------------------
// Failures: Redis away, nodes restarted
// ---------------------------------------------------------------------------

/// What a publisher thread saw: every reply, in order, with the text sent.
#[derive(Default)]
struct Log {
    replies: Vec<(String, String)>,
    ok: usize,
    err: usize,
}

/// Publishes `<tag>-<n>` on `channel` one at a time until `stop`.
fn publisher(
    s: &Server,
    tag: &str,
    channel: &str,
    pace: Duration,
    limit: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Log>>, thread::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut ctl = s.ctl();
    let (tag, channel, shared) = (tag.to_string(), channel.to_string(), log.clone());
    let handle = thread::spawn(move || {
        for n in 1..=limit {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let text = format!("{tag}-{n}");
            let reply = ctl.command(&format!("ADDMESSAGE {channel} {text}"));
            let mut l = shared.lock().unwrap();
            if reply.starts_with("OK\t") {
                l.ok += 1;
            } else {
                l.err += 1;
            }
            l.replies.push((text, reply));
            drop(l);
            thread::sleep(pace);
        }
    });
    (log, handle)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    assert!(eventually(timeout, &mut cond), "timed out: {what}");
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn redis_killed_and_restarted_mid_stream_leaves_no_gap() {
    let mut redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let c = node_up(&redis);
    let mut subs = [
        a.subscribe("/push/sa/stream/ch", HDR_OK),
        b.subscribe("/push/sb/stream/ch", HDR_OK),
        c.subscribe("/push/sc/stream/ch", HDR_OK),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let pace = Duration::from_millis(2);
    let (log_a, pub_a) = publisher(&a, "a", "ch", pace, 100_000, stop.clone());
    let (log_b, pub_b) = publisher(&b, "b", "ch", pace, 100_000, stop.clone());
    let ok = |l: &Arc<Mutex<Log>>| l.lock().unwrap().ok;
    let err = |l: &Arc<Mutex<Log>>| l.lock().unwrap().err;

    wait_for("30 publishes on each node", WAIT, || {
        ok(&log_a) >= 30 && ok(&log_b) >= 30
    });
    redis.kill();
    for n in [&a, &b, &c] {
        wait_log_count(n, "link lost", 1, WAIT);
    }
    wait_for("publishes refused while Redis is away", WAIT, || {
        err(&log_a) >= 3 && err(&log_b) >= 3
    });
    let before = (ok(&log_a), ok(&log_b));
    redis.restart();
    for n in [&a, &b, &c] {
        wait_link_up(n, 2);
    }
    wait_for(
        "30 more publishes on each node",
        Duration::from_secs(10),
        || ok(&log_a) >= before.0 + 30 && ok(&log_b) >= before.1 + 30,
    );
    stop.store(true, Ordering::SeqCst);
    pub_a.join().expect("publisher on A");
    pub_b.join().expect("publisher on B");

    // Every reply is an id or the documented error; ids never repeat and
    // never go back, on either node, across the restart.
    let mut acked: Vec<Event> = Vec::new();
    let mut refused: HashSet<String> = HashSet::new();
    for log in [&log_a, &log_b] {
        let log = log.lock().unwrap();
        let mut ids = Vec::new();
        for (text, reply) in &log.replies {
            match reply.strip_prefix("OK\t") {
                Some(id) => {
                    let id: u64 = id.parse().expect("id");
                    ids.push(id);
                    acked.push((id, "ch".into(), text.clone()));
                }
                None => {
                    assert_eq!(reply, "ERR Backend unavailable", "reply to {text}");
                    refused.insert(text.clone());
                }
            }
        }
        assert_increasing(&ids, "ids acknowledged to one publisher across the restart");
        assert!(log.err >= 3, "refused publishes: {}", log.err);
    }
    acked.sort();
    let ids: Vec<u64> = acked.iter().map(|e| e.0).collect();
    assert_increasing(&ids, "ids acknowledged on both nodes");
    let last = *ids.last().expect("acked");

    // Each subscriber has every acknowledged event, in id order; anything
    // else it got is a publish that was refused (Redis ran it, then died
    // before the reply), never something unknown.
    let acked_by_id: HashMap<u64, &Event> = acked.iter().map(|e| (e.0, e)).collect();
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_events_through(sub, last, Duration::from_secs(10));
        let got_ids: Vec<u64> = got.iter().map(|e| e.0).collect();
        assert_increasing(&got_ids, &format!("subscriber {i}"));
        let got_set: HashSet<u64> = got_ids.iter().copied().collect();
        let missing: Vec<&Event> = acked.iter().filter(|e| !got_set.contains(&e.0)).collect();
        assert!(
            missing.is_empty(),
            "subscriber {i} missed acknowledged events {missing:?} (publishes acknowledged \
             before the restart on A and B: {before:?}); it got ids {got_ids:?}"
        );
        for e in &got {
            match acked_by_id.get(&e.0) {
                Some(&a) => assert_eq!(e, a, "subscriber {i}"),
                None => assert!(
                    refused.contains(&e.2),
                    "subscriber {i} got {e:?}, which nobody published"
                ),
            }
        }
    }
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn publishing_answers_errors_while_redis_is_away() {
    // Nothing listens on the port yet: the node starts anyway.
    let mut redis = Redis::unstarted(&[], None);
    let a = node(&redis.addr());
    let mut ctl = a.ctl();
    assert_eq!(ctl.command("ADDMESSAGE ch one"), "ERR Backend unavailable");
    assert_eq!(http_on_controller(&a, &post_pub("ch", "one")), http_503());
    // The controller stays usable, and nothing was created.
    assert_eq!(ctl.list(), "OK\r\n--EOT--\r\n");

    redis.restart();
    wait_link_up(&a, 1);
    let first = http_id(&http_on_controller(&a, &post_pub("ch", "two")));
    assert_eq!(
        http_on_controller(&a, &post_pub("ch", "three")),
        http_ok(first + 1)
    );
    assert_eq!(ctl.add("ch", "four"), first + 2);

    redis.kill();
    wait_log_count(&a, "link lost", 1, WAIT);
    assert_eq!(http_on_controller(&a, &post_pub("ch", "five")), http_503());
    assert_eq!(ctl.command("ADDMESSAGE ch five"), "ERR Backend unavailable");
    // A keep-alive HTTP connection gets 503, then 200 once Redis is back.
    let mut keep = Conn::connect(a.ctl_addr);
    keep.send(b"POST /pub/ch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nsix");
    keep.read_until(b"503 Service Unavailable: backend unavailable\n", WAIT)
        .expect("503 on a keep-alive connection");

    redis.restart();
    wait_link_up(&a, 2);
    keep.send(b"POST /pub/ch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nseven");
    let reply = keep
        .read_until(b"}\n", WAIT)
        .expect("200 on the same connection");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    // The restarted Redis was empty; the node raised its counter again.
    let id = http_id(&reply);
    assert!(id > first + 2, "{reply}");
    // Exactly the 200 of a keep-alive connection (no Connection: close).
    assert_eq!(reply, http_ok(id).replace("Connection: close\r\n", ""));
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn ids_are_not_reused_after_redis_restarts_empty() {
    let mut redis = Redis::start();
    let a = node_up(&redis);
    // Nobody subscribes to `quiet`: only the publisher ever sees its ids.
    let mut ctl = a.ctl();
    let before = ctl.add_many("quiet", &texts("q", 5));
    redis.restart();
    wait_link_up(&a, 2);
    let after = ctl.add("quiet", "after-restart");
    assert!(
        after > before[4],
        "id {after} after the restart was already given out before it: {before:?}"
    );
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn a_restarted_node_resumes_subscribers_from_redis() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let mut old_sub = b.subscribe("/push/old/stream/ch", HDR_OK);
    let stop = Arc::new(AtomicBool::new(false));
    // At most 200 events, so that the channel's 250 cover them all.
    let (log, pub_a) = publisher(&a, "p", "ch", Duration::from_millis(5), 200, stop.clone());
    let ok = || log.lock().unwrap().ok;
    wait_for("20 publishes", WAIT, || ok() >= 20);
    read_events(&mut old_sub, 20, WAIT);

    // B goes away and comes back as a new process while A keeps publishing.
    let pid = b.pid();
    drop(b);
    let during = ok();
    let b = node_up(&redis);
    assert_ne!(b.pid(), pid);
    wait_for("publishes while B restarted", WAIT, || ok() >= during + 5);

    let resume = {
        let l = log.lock().unwrap();
        parse_ok_id(&l.replies[9].1)
    };
    let mut sub = b.subscribe(&format!("/push/new/stream/ch.r{resume}"), HDR_OK);
    let subscribed = ok();
    wait_for("publishes after the resume", WAIT, || {
        ok() >= subscribed + 10
    });
    stop.store(true, Ordering::SeqCst);
    pub_a.join().expect("publisher");

    let log = log.lock().unwrap();
    let all: Vec<Event> = log
        .replies
        .iter()
        .map(|(text, reply)| (parse_ok_id(reply), "ch".to_string(), text.clone()))
        .collect();
    let last = all.last().expect("published").0;
    let got = read_events_through(&mut sub, last, WAIT);
    assert_eq!(
        got,
        all[9..],
        "resumed from id {resume} on the restarted node"
    );
    // The restarted node counts only its new subscriber.
    assert_eq!(b.ctl().count("ch"), 1);
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn showstats_cluster_lists_every_live_node() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let c = node_up(&redis);
    let _s1 = b.subscribe("/push/s1/stream/x", HDR_OK);
    let _s2 = b.subscribe("/push/s2/stream/y", HDR_OK);
    let _idle = c.ctl();
    let mut ctl = a.ctl();

    let parse = |raw: &str| -> Vec<(String, Vec<(String, u64)>)> {
        assert!(
            raw.starts_with("OK\r\n") && raw.ends_with("--EOT--\r\n"),
            "{raw:?}"
        );
        raw["OK\r\n".len()..raw.len() - "--EOT--\r\n".len()]
            .split_terminator("\r\n")
            .map(|line| {
                let mut words = line.split(' ');
                assert_eq!(words.next(), Some("node"), "{line:?}");
                let name = words.next().expect("node name").to_string();
                let counts: Vec<(String, u64)> = words
                    .map(|w| {
                        let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                        (
                            k.to_string(),
                            v.parse().unwrap_or_else(|_| panic!("{line:?}")),
                        )
                    })
                    .collect();
                let keys: Vec<&str> = counts.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(
                    keys,
                    [
                        "current_subscribers",
                        "current_controllers",
                        "channel_count",
                        "messages_served"
                    ],
                    "{line:?}"
                );
                (name, counts)
            })
            .collect()
    };
    let by_pid = |view: &[(String, Vec<(String, u64)>)], pid: u32| {
        view.iter()
            .find(|(name, _)| name.ends_with(&format!("-{pid}")))
            .map(|(_, counts)| counts.clone())
    };
    let pids = [a.pid(), b.pid(), c.pid()];
    // Nodes refresh every 2 s: within two rounds every node is there with
    // B's two subscribers counted.
    let mut view = Vec::new();
    let complete = eventually(Duration::from_secs(8), || {
        view = parse(&ctl.multi("SHOWSTATS CLUSTER"));
        view.len() == 3
            && pids.iter().all(|&p| by_pid(&view, p).is_some())
            && by_pid(&view, b.pid()).is_some_and(|n| n[0].1 == 2 && n[2].1 == 2)
            && by_pid(&view, c.pid()).is_some_and(|n| n[1].1 >= 1)
    });
    assert!(complete, "SHOWSTATS CLUSTER on A: {view:?}");
    let names: Vec<&String> = view.iter().map(|(n, _)| n).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "nodes in name order");

    // Each node's entry expires 10 s after its last refresh.
    let c_name = view
        .iter()
        .find(|(n, _)| n.ends_with(&format!("-{}", c.pid())))
        .map(|(n, _)| n.clone())
        .expect("C");
    let key = format!("{{meteor}}:nodes:{c_name}");
    let ttl = redis.cmd(&["PTTL", &key]).int();
    assert!(ttl > 0 && ttl <= 10_000, "PTTL {key} = {ttl}");
    assert_eq!(redis.cmd(&["SCARD", "{meteor}:nodes"]).int(), 3);

    // C stops; once its entry expires (made to happen now) A stops listing
    // it. A heartbeat C sent just before it was killed may still reach Redis
    // after the DEL and bring the entry back, so the expiry is repeated.
    drop(c);
    let gone = eventually(Duration::from_secs(8), || {
        redis.cmd(&["DEL", &key]);
        view = parse(&ctl.multi("SHOWSTATS CLUSTER"));
        view.len() == 2 && redis.cmd(&["SCARD", "{meteor}:nodes"]).int() == 2
    });
    assert!(gone, "C still listed: {view:?}");
    // B reads the view with its own heartbeat (every 2 s).
    let mut from_b = b.ctl();
    let b_sees_two = eventually(Duration::from_secs(8), || {
        parse(&from_b.multi("SHOWSTATS CLUSTER")).len() == 2
    });
    assert!(b_sees_two, "B still lists C");
}

#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn password_and_database_in_the_redis_address() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"], Some("s3cret"));
    let good = node(&format!("s3cret@127.0.0.1:{}/3", redis.port));
    wait_link_up(&good, 1);
    let id = good.ctl().add("ch", "hello");
    assert_eq!(
        redis.cmd_db(Some(3), &["GET", "{meteor}:id"]).int(),
        id as i64
    );
    assert_eq!(
        redis.cmd_db(Some(0), &["EXISTS", "{meteor}:id"]),
        Resp::Int(0)
    );

    let bad = node(&format!("wrong@127.0.0.1:{}/3", redis.port));
    wait_log_count(&bad, "redis link failed", 1, WAIT);
    assert_eq!(log_count(&bad, ": link up"), 0);
    assert_eq!(
        bad.ctl().command("ADDMESSAGE ch nope"),
        "ERR Backend unavailable"
    );
}

#[test]
fn a_standalone_node_never_touches_redis() {
    let s = Server::start_test(&["-PingInterval", "0"]);
    let mut sub = s.subscribe("/push/h/stream/ch", HDR_OK);
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("ch", "hello"), 1);
    sub.expect_str("1:ch:hello\n");
    assert_eq!(
        ctl.multi("SHOWSTATS CLUSTER"),
        "OK\r\nnode standalone current_subscribers=1 current_controllers=1 \
         channel_count=1 messages_served=1\r\n--EOT--\r\n"
    );
    let logs = s.logs().join("\n");
    assert!(!logs.to_lowercase().contains("redis"), "log:\n{logs}");
    // Its only connections are the ones accepted from us.
    #[cfg(target_os = "linux")]
    for (local, remote) in tcp_connections(s.pid()) {
        assert!(
            local == s.sub_addr.port() || local == s.ctl_addr.port(),
            "standalone node has an outgoing connection {local} -> {remote}"
        );
    }
}

// ---------------------------------------------------------------------------
// A proxy in front of Redis that can cut a node's links and hold back the
// replies on its command link, to replay a reconnection step by step.
// ---------------------------------------------------------------------------

struct Proxy {
    addr: SocketAddr,
    /// Replies on command links wait while this is set.
    hold: Arc<AtomicBool>,
    /// Every socket of the current connections, to cut them.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    /// Subscribe confirmations passed to pub/sub links.
    subscribed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// New connections are closed at once while this is set.
    refuse: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            hold: Arc::new(AtomicBool::new(false)),
            sockets: Arc::new(Mutex::new(Vec::new())),
            subscribed: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            refuse: Arc::new(AtomicBool::new(false)),
        };
        let (hold, sockets, subscribed, stop, refuse) = (
            proxy.hold.clone(),
            proxy.sockets.clone(),
            proxy.subscribed.clone(),
            proxy.stop.clone(),
            proxy.refuse.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let up = SocketAddr::from(([127, 0, 0, 1], upstream));
                let Ok(server) = TcpStream::connect_timeout(&up, WAIT) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut all = sockets.lock().unwrap();
                    all.push(client.try_clone().expect("clone"));
                    all.push(server.try_clone().expect("clone"));
                }
                // 0: not known yet, 1: command link, 2: pub/sub link.
                let role = Arc::new(AtomicU8::new(0));
                let (c2, s2, role2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    role.clone(),
                );
                thread::spawn(move || pump_up(c2, s2, role2));
                let (hold, subscribed, stop) = (hold.clone(), subscribed.clone(), stop.clone());
                thread::spawn(move || pump_down(server, client, role, hold, subscribed, stop));
            }
        });
        proxy
    }

    /// Breaks every connection through the proxy (the node reconnects).
    fn cut(&self) {
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.hold.store(false, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Node to Redis; the first bytes tell which link this is.
fn pump_up(mut from: TcpStream, mut to: TcpStream, role: Arc<AtomicU8>) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if role.load(Ordering::SeqCst) == 0 {
            let pubsub = find(&buf[..n], b"SUBSCRIBE").is_some_and(|i| i < 16);
            role.store(if pubsub { 2 } else { 1 }, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Redis to node, holding command-link replies while `hold` is set.
fn pump_down(
    mut from: TcpStream,
    mut to: TcpStream,
    role: Arc<AtomicU8>,
    hold: Arc<AtomicBool>,
    subscribed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        match role.load(Ordering::SeqCst) {
            1 => {
                // Bounded: the test releases it, or gives up after 10 s.
                let until = Instant::now() + Duration::from_secs(10);
                while hold.load(Ordering::SeqCst)
                    && !stop.load(Ordering::SeqCst)
                    && Instant::now() < until
                {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            _ => {
                if find(&buf[..n], b"subscribe").is_some() {
                    subscribed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A node reconnecting gets its pub/sub link back before its command link
/// has finished the handshake; events announced in between must not make
/// it skip the ones published while it was away.
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn events_announced_during_a_reconnection_do_not_hide_missed_ones() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let proxy = Proxy::start(redis.port);
    let b = node(&proxy.addr.to_string());
    wait_link_up(&b, 1);
    let mut sub = b.subscribe("/push/h/stream/ch", HDR_OK);
    let mut ctl = a.ctl();
    let e1 = ctl.add("ch", "e1");
    assert_eq!(
        read_events(&mut sub, 1, WAIT),
        events("ch", &[e1], &["e1".into()])
    );

    // B loses its links; A goes on publishing.
    proxy.hold.store(true, Ordering::SeqCst);
    let subscribed = proxy.subscribed.load(Ordering::SeqCst);
    proxy.cut();
    wait_log_count(&b, "link lost", 1, WAIT);
    let missed = ctl.add_many("ch", &texts("missed", 2));
    // B is back on pub/sub, its command link is still in its handshake.
    wait_for("B's pub/sub link resubscribed", WAIT, || {
        proxy.subscribed.load(Ordering::SeqCst) > subscribed
    });
    let e4 = ctl.add("ch", "e4");
    // Give B the time to read the announcement before the handshake ends.
    let early = sub.read_for(Duration::from_millis(300));
    proxy.hold.store(false, Ordering::SeqCst);
    wait_link_up(&b, 2);

    let mut expected = events("ch", &missed, &texts("missed", 2));
    expected.push((e4, "ch".into(), "e4".into()));
    sub.buf.splice(0..0, early);
    let got = read_events_through(&mut sub, e4, WAIT);
    assert_eq!(got, expected, "B's subscriber after the reconnection");
}

// ---------------------------------------------------------------------------
// A scripted stand-in for Redis (common::fake_redis), to make it die at an
// exact point.
// ---------------------------------------------------------------------------

/// The pub/sub link brings an announcement and its end in one segment: the
/// node applies the announcement before it treats the link as lost.
#[test]
fn an_event_announced_as_the_pubsub_link_breaks_is_delivered() {
    // No redis-server needed: a stand-in answers.
    let fake = FakeRedis::start();
    let a = node(&fake.addr.to_string());
    wait_link_up(&a, 1);
    let mut sub = a.subscribe("/push/h/stream/ch", HDR_OK);
    fake.announce_and_close(&format!("7 {} ch last words", now_unix() * 1000), false);
    wait_log_count(&a, "link lost", 1, WAIT);
    assert_eq!(
        read_events(&mut sub, 1, WAIT),
        vec![(7, "ch".to_string(), "last words".to_string())]
    );
}

/// Redis announces an event and dies at once: whichever link the node finds
/// broken first, the announcement that reached it is delivered.
#[test]
fn an_event_announced_just_before_redis_dies_is_delivered() {
    let fake = FakeRedis::start();
    let a = node(&fake.addr.to_string());
    wait_link_up(&a, 1);
    let mut sub = a.subscribe("/push/h/stream/ch", HDR_OK);
    fake.announce_and_close(&format!("7 {} ch last words", now_unix() * 1000), true);
    wait_log_count(&a, "link lost", 1, WAIT);
    assert_eq!(
        read_events(&mut sub, 1, WAIT),
        vec![(7, "ch".to_string(), "last words".to_string())]
    );
}

// ---------------------------------------------------------------------------
// Large replies, many loads at once, a fresh node after Redis lost its
// data, a hung Redis
// ---------------------------------------------------------------------------

/// `n` bytes of text tagged `tag` (no spaces or newlines).
fn big_text(tag: &str, n: usize) -> String {
    let mut t = format!("{tag}:");
    while t.len() < n {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t.truncate(n);
    t
}

/// Checks what a subscriber got against what publishers were told: ids
/// strictly increasing (no duplicate, nothing out of order), every
/// acknowledged event there with its text, and anything else a publish
/// that was answered ERR (Redis may have run it before the link failed).
fn check_delivery(who: &str, got: &[Event], acked: &[Event], refused: &HashSet<String>) {
    let got_ids: Vec<u64> = got.iter().map(|e| e.0).collect();
    assert_increasing(&got_ids, who);
    let by_id: HashMap<u64, &Event> = got.iter().map(|e| (e.0, e)).collect();
    let missing: Vec<&Event> = acked
        .iter()
        .filter(|e| by_id.get(&e.0) != Some(e))
        .collect();
    assert!(
        missing.is_empty(),
        "{who} missed (or got other text under the id of) acknowledged events {:?}; \
         it got ids {got_ids:?}",
        missing.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    let acked_ids: HashSet<u64> = acked.iter().map(|e| e.0).collect();
    for e in got {
        assert!(
            acked_ids.contains(&e.0) || refused.contains(&e.2),
            "{who} got {:?}, which nobody published",
            (e.0, &e.1)
        );
    }
}

/// Events of 100 KB and of 1 MiB, far over a link's read budget of one
/// turn, reach subscribers on every node, and the links go on working.
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn events_of_100_kb_and_1_mib_reach_every_node() {
    let redis = Redis::start();
    // A 1 MiB text on one ADDMESSAGE line needs a longer line.
    let extra = ["-MaxControllerLineBytes", "2097152"];
    let nodes: Vec<Server> = (0..3)
        .map(|_| {
            let n = node_with(&redis.addr(), &extra);
            wait_link_up(&n, 1);
            n
        })
        .collect();
    let mut subs: Vec<Conn> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.subscribe(&format!("/push/s{i}/stream/big"), HDR_OK))
        .collect();
    let texts: Vec<String> = [100 * 1024, 100 * 1024, 1024 * 1024, 100 * 1024, 1024 * 1024]
        .iter()
        .enumerate()
        .map(|(i, &n)| big_text(&format!("e{i}"), n))
        .chain(["small-after".to_string()])
        .collect();
    // Published from every node in turn.
    let mut acked = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let id = nodes[i % 3].ctl().add("big", t);
        acked.push((id, "big".to_string(), t.clone()));
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_events(sub, acked.len(), Duration::from_secs(20));
        let ids: Vec<u64> = got.iter().map(|e| e.0).collect();
        assert_eq!(
            ids,
            acked.iter().map(|e| e.0).collect::<Vec<_>>(),
            "node {i}"
        );
        assert!(got == acked, "node {i}: texts differ");
    }
    // Nothing is frozen: a small event still goes through every node.
    let id = nodes[1].ctl().add("big", "later");
    for sub in subs.iter_mut() {
        assert_eq!(
            read_events(sub, 1, WAIT),
            vec![(id, "big".to_string(), "later".to_string())]
        );
    }
}

/// A node that never saw a channel loads a full history of large events
/// (MaxMessagesPerChannel events of 64 KB: one reply of 16 MB).
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn a_history_of_large_events_loads_on_a_node_that_never_saw_the_channel() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    let t: Vec<String> = (0..250)
        .map(|i| big_text(&format!("h{i}"), 64 * 1024))
        .collect();
    let mut ctl = a.ctl();
    let mut ids = Vec::new();
    for chunk in t.chunks(25) {
        ids.extend(ctl.add_many("hist", chunk));
    }
    let all = events("hist", &ids, &t);
    assert_eq!(b.ctl().list(), "OK\r\n--EOT--\r\n", "B does not hold it");

    let mut sub = b.subscribe("/push/h/stream/hist.h", HDR_OK);
    let got = read_events(&mut sub, 250, Duration::from_secs(20));
    assert!(got == all, "B's history differs from what was published");
    // B's command link still answers: a publish on B, seen live.
    let id = b.ctl().add("hist", "live");
    assert_eq!(
        read_events(&mut sub, 1, WAIT),
        vec![(id, "hist".to_string(), "live".to_string())]
    );
}

/// 1,000 subscribers join 1,000 different channels on one node at once:
/// 1,000 history loads on the command link, every one answered.
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn a_thousand_subscribers_join_a_thousand_channels_at_once() {
    let redis = Redis::start();
    let a = node_up(&redis);
    let b = node_up(&redis);
    // Every channel has a history of 5 events of 200 bytes.
    let mut ctl = a.ctl();
    let mut expected = Vec::new();
    for c in 0..1000 {
        let ch = format!("c{c}");
        let t: Vec<String> = (0..5)
            .map(|i| big_text(&format!("{ch}-{i}"), 200))
            .collect();
        ctl.send(
            &t.iter()
                .map(|x| format!("ADDMESSAGE {ch} {x}\n"))
                .collect::<String>(),
        );
        expected.push((ch, t));
    }
    let mut ids = Vec::new();
    for _ in 0..5000 {
        ids.push(parse_ok_id(&ctl.read_reply_line()));
    }
    let mut subs = Vec::new();
    for (ch, _) in &expected {
        let mut c = b.connect_sub();
        c.send(get_request(&format!("/push/{ch}/poll/{ch}.h")).as_bytes());
        subs.push(c);
    }
    for (i, (sub, (ch, t))) in subs.iter_mut().zip(&expected).enumerate() {
        let body = sub.read_to_end(Duration::from_secs(20));
        let mut want = String::from(HDR_OK);
        for (k, text) in t.iter().enumerate() {
            want.push_str(&format!("{}:{ch}:{text}\n", ids[i * 5 + k]));
        }
        assert_eq!(show(&body), show(want.as_bytes()), "subscriber {i}");
    }
    // The command link is not stalled.
    let id = b.ctl().add("c0", "after");
    assert!(id > ids[4999]);
}

/// Nodes A and B publish; Redis restarts empty; a fresh node C (which has
/// seen no id) connects first and publishes; then A and B reconnect. No id
/// is acknowledged twice, and subscribers on every node see every
/// acknowledged event since they joined, once, in order.
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn a_fresh_node_first_after_redis_restarts_empty_reuses_no_id() {
    let mut redis = Redis::start();
    let proxy = Proxy::start(redis.port);
    let a = node(&proxy.addr.to_string());
    let b = node(&proxy.addr.to_string());
    wait_link_up(&a, 1);
    wait_link_up(&b, 1);
    let mut sub_a = a.subscribe("/push/sa/stream/ch", HDR_OK);
    let mut sub_b = b.subscribe("/push/sb/stream/ch", HDR_OK);
    let (mut ctl_a, mut ctl_b) = (a.ctl(), b.ctl());
    let mut acked = Vec::new();
    for (ctl, tag) in [(&mut ctl_a, "a"), (&mut ctl_b, "b")] {
        let t = texts(&format!("before-{tag}"), 20);
        acked.extend(events("ch", &ctl.add_many("ch", &t), &t));
    }

    // Both nodes deliver these before Redis goes: what Redis announced but
    // a node had not yet read when Redis lost its data is lost with it.
    let last_before = acked.iter().map(|e| e.0).max().expect("acked");
    let mut seen_a = read_events_through(&mut sub_a, last_before, Duration::from_secs(10));
    let mut seen_b = read_events_through(&mut sub_b, last_before, Duration::from_secs(10));

    // Redis loses everything; A and B cannot reach it for now.
    proxy.refuse.store(true, Ordering::SeqCst);
    redis.restart();
    proxy.cut();
    wait_log_count(&a, "link lost", 1, WAIT);
    wait_log_count(&b, "link lost", 1, WAIT);

    // A fresh node connects first and publishes.
    let c = node_up(&redis);
    let mut sub_c = c.subscribe("/push/sc/stream/ch", HDR_OK);
    let t = texts("fresh-c", 20);
    let from_c = events("ch", &c.ctl().add_many("ch", &t), &t);
    acked.extend(from_c.iter().cloned());

    // A and B come back, and everyone publishes again.
    proxy.refuse.store(false, Ordering::SeqCst);
    wait_link_up(&a, 2);
    wait_link_up(&b, 2);
    let mut after = Vec::new();
    for (s, tag) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let t = texts(&format!("after-{tag}"), 10);
        after.extend(events("ch", &s.ctl().add_many("ch", &t), &t));
    }
    acked.extend(after.iter().cloned());

    let ids: Vec<u64> = acked.iter().map(|e| e.0).collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an id was acknowledged twice: {ids:?}"
    );
    let mut sorted = acked.clone();
    sorted.sort();
    let last = sorted.last().expect("acked").0;
    let none = HashSet::new();
    for (who, sub, seen) in [
        ("A", &mut sub_a, &mut seen_a),
        ("B", &mut sub_b, &mut seen_b),
    ] {
        seen.extend(read_events_through(sub, last, Duration::from_secs(10)));
        check_delivery(&format!("subscriber on {who}"), seen, &sorted, &none);
    }
    let mut on_c: Vec<Event> = from_c.iter().chain(&after).cloned().collect();
    on_c.sort();
    let got = read_events_through(&mut sub_c, last, Duration::from_secs(10));
    check_delivery("subscriber on C", &got, &on_c, &none);
}

/// Redis hangs (SIGSTOP) for longer than RedisTimeout, then goes on:
/// publishes are answered ERR within RedisTimeout (none waits forever),
/// the node reconnects, and no acknowledged event is lost anywhere.
#[test]
#[ignore = "needs redis-server: run with --include-ignored (see README)"]
fn a_hung_redis_fails_publishes_in_time_and_loses_nothing_acknowledged() {
    let redis = Redis::start();
    let extra = ["-RedisTimeout", "1"];
    let a = node_with(&redis.addr(), &extra);
    let b = node_with(&redis.addr(), &extra);
    wait_link_up(&a, 1);
    wait_link_up(&b, 1);
    let mut subs = [
        a.subscribe("/push/sa/stream/ch", HDR_OK),
        b.subscribe("/push/sb/stream/ch", HDR_OK),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    // (text, reply, how long the reply took)
    let log: Arc<Mutex<Vec<(String, String, Duration)>>> = Arc::default();
    let publisher = {
        let (mut ctl, stop, log) = (a.ctl(), stop.clone(), log.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let text = format!("p-{n}");
                let started = Instant::now();
                let reply = ctl.command(&format!("ADDMESSAGE ch {text}"));
                log.lock().unwrap().push((text, reply, started.elapsed()));
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let count = |ok: bool| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, r, _)| r.starts_with("OK\t") == ok)
            .count()
    };
    wait_for("20 publishes", WAIT, || count(true) >= 20);
    redis.signal(libc::SIGSTOP);
    wait_log_count(&a, "link lost", 1, Duration::from_secs(5));
    wait_for("publishes refused while Redis hangs", WAIT, || {
        count(false) >= 3
    });
    thread::sleep(Duration::from_millis(1500));
    redis.signal(libc::SIGCONT);
    wait_link_up(&a, 2);
    let ok_before = count(true);
    wait_for("20 publishes after Redis went on", WAIT, || {
        count(true) >= ok_before + 20
    });
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");

    let log = log.lock().unwrap();
    let mut acked = Vec::new();
    let mut refused = HashSet::new();
    for (text, reply, took) in log.iter() {
        assert!(
            *took < Duration::from_millis(2500),
            "the reply to {text} ({reply:?}) took {took:?} with RedisTimeout 1"
        );
        match reply.strip_prefix("OK\t") {
            Some(id) => acked.push((id.parse().expect("id"), "ch".to_string(), text.clone())),
            None => {
                assert_eq!(reply, "ERR Backend unavailable", "reply to {text}");
                refused.insert(text.clone());
            }
        }
    }
    let ids: Vec<u64> = acked.iter().map(|e: &Event| e.0).collect();
    assert_increasing(&ids, "ids acknowledged across the hang");
    let last = *ids.last().expect("acked");
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_events_through(sub, last, Duration::from_secs(10));
        check_delivery(&format!("subscriber {i}"), &got, &acked, &refused);
    }
    let logs = a.logs().join("\n");
    assert!(
        logs.contains("RedisTimeout"),
        "A's log names the timeout:\n{logs}"
    );
}
