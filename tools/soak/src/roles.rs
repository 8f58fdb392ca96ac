//! The clients of a soak run, one std thread each: publishers (line
//! protocol and HTTP), well-behaved streaming and long-poll subscribers
//! that check every event arrives once and in order, churning clients,
//! slow and stalled subscribers, and abusive clients that check the exact
//! answer to each bound they cross.

use crate::wire::{self, Got, Line};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A channel's publishing state: the last sequence number and message id
/// acknowledged by the server. Only its one publisher writes it.
pub struct Channel {
    pub name: String,
    pub state: Mutex<(u64, u64)>,
    /// Sequence numbers whose publish was not acknowledged (refused or no
    /// answer), in increasing order: subscribers need not get them.
    pub unacked: Mutex<Vec<u64>>,
}

impl Channel {
    pub fn new(name: String) -> Channel {
        Channel {
            name,
            state: Mutex::new((0, 0)),
            unacked: Mutex::new(Vec::new()),
        }
    }

    pub fn snapshot(&self) -> (u64, u64) {
        *self.state.lock().unwrap()
    }

    /// Acknowledged sequence numbers in `from..to`.
    fn acked_between(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        let un = self.unacked.lock().unwrap();
        let lo = un.partition_point(|&s| s < from);
        let hi = un.partition_point(|&s| s < to);
        (to - from) - (hi - lo) as u64
    }

    fn is_unacked(&self, seq: u64) -> bool {
        self.unacked.lock().unwrap().binary_search(&seq).is_ok()
    }
}

/// Figures of one node (the only one when standalone).
#[derive(Default)]
pub struct NodeCounters {
    pub published: AtomicU64,
    /// `ERR Backend unavailable` / HTTP 503: not expected to be delivered.
    pub refused: AtomicU64,
    pub deliveries: AtomicU64,
    pub closed_by_server: AtomicU64,
}

/// Publish acknowledgement times, in power-of-two buckets of microseconds.
#[derive(Default)]
pub struct Latency {
    pub buckets: [AtomicU64; 26],
    pub max_us: AtomicU64,
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let b = (64 - us.leading_zeros() as usize).min(self.buckets.len() - 1);
        inc(&self.buckets[b]);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The upper bound (microseconds) of the bucket holding quantile `q`.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return 1u64 << i;
            }
        }
        0
    }
}

/// Everything counted during a run.
#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub published_http: AtomicU64,
    pub publish_errors: AtomicU64,
    pub deliveries_stream: AtomicU64,
    pub deliveries_longpoll: AtomicU64,
    pub deliveries_churn: AtomicU64,
    pub deliveries_poll: AtomicU64,
    pub deliveries_slow: AtomicU64,
    /// Events a well-behaved subscriber never got (sequence jumps).
    pub gaps: AtomicU64,
    /// Events still missing when the drain ended.
    pub missing_at_end: AtomicU64,
    /// An event seen twice, or ids going backwards on one connection.
    pub duplicates: AtomicU64,
    pub reorders: AtomicU64,
    /// Sequence jumps seen by slow subscribers (the server must drop, never skip).
    pub slow_gaps: AtomicU64,
    /// Well-behaved connections the server closed (they reconnect and resume).
    pub wb_closed_by_server: AtomicU64,
    pub wb_closed_slow: AtomicU64,
    pub connections: AtomicU64,
    pub connect_errors: AtomicU64,
    pub slow_dropped_seen: AtomicU64,
    pub slow_not_dropped: AtomicU64,
    pub stalled_dropped_seen: AtomicU64,
    pub stalled_not_dropped: AtomicU64,
    pub abuse_sent: AtomicU64,
    pub abuse_unexpected: AtomicU64,
    pub churn_sessions: AtomicU64,
    pub bad_replies: AtomicU64,
    /// Events published by the hostile-input roles (not the publishers).
    pub published_extra: AtomicU64,
    /// Refused publishes (`ERR Backend unavailable`, 503) and delivered
    /// events whose publish was not acknowledged.
    pub refused: AtomicU64,
    pub delivered_unacked: AtomicU64,
    pub latency: Latency,
    pub deliveries_pipe: AtomicU64,
    pub pipe_gaps: AtomicU64,
    pub h: crate::hostile::HostileCounters,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What every client shares.
pub struct Shared {
    pub sub: SocketAddr,
    pub ctl: SocketAddr,
    /// Every node's ports (one entry when standalone; `sub`/`ctl` are the first).
    pub subs: Vec<SocketAddr>,
    pub ctls: Vec<SocketAddr>,
    pub nodes: Vec<NodeCounters>,
    /// Several nodes through Redis: refused publishes are expected.
    pub cluster: bool,
    /// Events up to 256 KB.
    pub big_events: bool,
    /// `channels[..load_channels]` carry the publishers' load; the rest
    /// belong to the hostile-input roles.
    pub load_channels: usize,
    /// `ControllerCommandTimeout` and `ControllerIdleTimeout` when known.
    pub ctl_timeouts: Option<(Duration, Duration)>,
    /// Modes for the escaping check: (name, escape of `~text~`).
    pub modes: Vec<(&'static str, crate::hostile::Esc)>,
    /// `MaxCachedBytes` when known.
    pub max_cached: Option<u64>,
    pub password: Option<String>,
    /// Limits of a server started here are known: controller abuse is on.
    pub known_limits: bool,
    /// The head timeout the slowloris abuser waits for (plus slack).
    pub head_timeout: Duration,
    pub channels: Vec<Channel>,
    pub c: Counters,
    /// Publishers stop.
    pub stop_publishing: AtomicBool,
    /// Churning, slow and abusive clients stop; readers catch up.
    pub draining: AtomicBool,
    /// Everyone stops now.
    pub stop: AtomicBool,
    /// The first problems seen, for the report.
    pub problems: Mutex<Vec<String>>,
}

impl Shared {
    pub fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap();
        if p.len() < 40 {
            p.push(what);
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.stopping()
    }

    pub fn connect(&self, addr: SocketAddr) -> Option<TcpStream> {
        match wire::connect(addr) {
            Ok(s) => {
                inc(&self.c.connections);
                Some(s)
            }
            Err(e) => {
                inc(&self.c.connect_errors);
                self.problem(format!("connect to {addr}: {e}"));
                None
            }
        }
    }
}

/// A small xorshift generator, one per thread.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Sleeps up to `d`, waking early when `flag` is raised.
pub fn nap(d: Duration, flag: &AtomicBool) {
    let end = Instant::now() + d;
    while !flag.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------

fn event_text(rng: &mut Rng, seq: u64, big: bool) -> String {
    let len = match rng.next() % 1000 {
        0..=2 if big => rng.range(64 * 1024, 256 * 1024 - 16),
        0..=4 => rng.range(16 * 1024, 32 * 1024),
        5..=54 => rng.range(2048, 8192),
        55..=299 => rng.range(200, 2048),
        _ => rng.range(8, 200),
    } as usize;
    let mut t = format!("{seq}.");
    let base = b'a' + (seq % 26) as u8;
    t.extend(std::iter::repeat_n(base as char, len));
    t
}

/// A line-protocol connection, authenticated when needed.
pub struct LineClient {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl LineClient {
    pub fn open(sh: &Shared) -> Option<LineClient> {
        LineClient::open_at(sh, sh.ctl)
    }

    pub fn open_at(sh: &Shared, addr: SocketAddr) -> Option<LineClient> {
        let s = sh.connect(addr)?;
        let mut c = LineClient { s, buf: Vec::new() };
        if let Some(pw) = &sh.password {
            let r = c.command(&format!("AUTH {pw}\n"))?;
            if r != "OK" {
                sh.problem(format!("AUTH answered {r:?}"));
                return None;
            }
        }
        Some(c)
    }

    /// Sends `line` (with its LF) and returns the reply line.
    pub fn command(&mut self, line: &str) -> Option<String> {
        self.s.write_all(line.as_bytes()).ok()?;
        self.reply()
    }

    pub fn reply(&mut self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(i) = wire::find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            match wire::read_some(&mut self.s, &mut self.buf, &mut tmp) {
                Ok(Got::Eof) | Err(_) => return None,
                _ => {}
            }
        }
    }
}

/// What became of one publish.
enum Outcome {
    Acked(u64),
    /// `ERR Backend unavailable` or HTTP 503: not stored, not expected.
    Refused,
    /// Another answer or none: counted as a failed publish.
    Failed,
}

/// Publishes to its channels at `rate` events per second until told to
/// stop, on node `node`; over HTTP (`POST /pub/<channel>`, keep-alive) when
/// `http`.
pub fn publisher(sh: &Shared, idx: usize, node: usize, chans: Vec<usize>, rate: f64, http: bool) {
    let mut rng = Rng::new(1000 + idx as u64);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut next = Instant::now();
    let mut conn: Option<LineClient> = None;
    let mut http_conn: Option<(TcpStream, Vec<u8>)> = None;
    let mut turn = 0usize;
    let ctl = sh.ctls[node];
    while !sh.stop_publishing.load(Ordering::Relaxed) {
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now;
        }
        let ch = &sh.channels[chans[turn % chans.len()]];
        turn += 1;
        let (seq, _) = ch.snapshot();
        let seq = seq + 1;
        let text = event_text(&mut rng, seq, sh.big_events);
        let sent = Instant::now();
        let outcome = if http {
            publish_http(sh, ctl, &mut http_conn, &ch.name, &text)
        } else {
            if conn.is_none() {
                conn = LineClient::open_at(sh, ctl);
            }
            match conn.as_mut() {
                Some(c) => {
                    let r = c.command(&format!("ADDMESSAGE {} {text}\n", ch.name));
                    match r.as_deref() {
                        Some(r) if r.starts_with("OK\t") => match r[3..].parse() {
                            Ok(id) => Outcome::Acked(id),
                            Err(_) => Outcome::Failed,
                        },
                        Some("ERR Backend unavailable") => Outcome::Refused,
                        _ => {
                            sh.problem(format!("ADDMESSAGE answered {r:?}"));
                            conn = None;
                            Outcome::Failed
                        }
                    }
                }
                None => Outcome::Failed,
            }
        };
        let nc = &sh.nodes[node];
        match outcome {
            Outcome::Acked(id) => {
                sh.c.latency.record(sent.elapsed());
                *ch.state.lock().unwrap() = (seq, id);
                inc(&sh.c.published);
                inc(&nc.published);
                if http {
                    inc(&sh.c.published_http);
                }
            }
            Outcome::Refused | Outcome::Failed => {
                // The event may or may not be out: subscribers need not get
                // it but may. Its sequence number is not used again.
                if matches!(outcome, Outcome::Refused) {
                    inc(&sh.c.refused);
                    inc(&nc.refused);
                    if !sh.cluster {
                        sh.problem(format!("publish to {} refused", ch.name));
                    }
                } else {
                    inc(&sh.c.publish_errors);
                }
                ch.unacked.lock().unwrap().push(seq);
                let (_, id) = ch.snapshot();
                *ch.state.lock().unwrap() = (seq, id);
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn publish_http(
    sh: &Shared,
    ctl: SocketAddr,
    conn: &mut Option<(TcpStream, Vec<u8>)>,
    channel: &str,
    text: &str,
) -> Outcome {
    if conn.is_none() {
        *conn = sh.connect(ctl).map(|s| (s, Vec::new()));
    }
    let Some((s, buf)) = conn.as_mut() else {
        return Outcome::Failed;
    };
    let auth = sh
        .password
        .as_ref()
        .map(|p| format!("Authorization: Bearer {p}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\r\n{text}",
        text.len()
    );
    let result = (|| {
        s.write_all(req.as_bytes()).ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tmp = [0u8; 4096];
        loop {
            if let Some((status, head)) = wire::response_head(buf) {
                let len = wire::content_length(&buf[..head])?;
                if buf.len() >= head + len {
                    let body = String::from_utf8_lossy(&buf[head..head + len]).into_owned();
                    buf.drain(..head + len);
                    if status.starts_with("HTTP/1.1 503 ") {
                        return Some(Outcome::Refused);
                    }
                    if status != "HTTP/1.1 200 OK" {
                        sh.problem(format!("POST /pub: {status} {body}"));
                        return None;
                    }
                    return crate::server::json_u64(&body, "id").map(Outcome::Acked);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            match wire::read_some(s, buf, &mut tmp) {
                Ok(Got::Eof) | Err(_) => return None,
                _ => {}
            }
        }
    })();
    match result {
        Some(o) => o,
        None => {
            *conn = None;
            Outcome::Failed
        }
    }
}

// ---------------------------------------------------------------------------
// Checking a stream of events
// ---------------------------------------------------------------------------

/// Where a subscriber is in each of its channels.
pub struct Track {
    /// The node it reads from, for the per-node figures.
    pub node: usize,
    chans: Vec<usize>,
    /// Next expected sequence number and the last id seen, per channel.
    next_seq: Vec<u64>,
    last_id: Vec<u64>,
}

/// How the checks count what they see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    LongPoll,
    Churn,
    Poll,
    Slow,
    Pipe,
}

impl Track {
    /// Starts at what has been published so far.
    pub fn new(sh: &Shared, chans: Vec<usize>) -> Track {
        let mut next_seq = Vec::new();
        let mut last_id = Vec::new();
        for &c in &chans {
            let (seq, id) = sh.channels[c].snapshot();
            next_seq.push(seq + 1);
            last_id.push(id);
        }
        Track {
            node: 0,
            chans,
            next_seq,
            last_id,
        }
    }

    /// `<name>.r<next id>/...`: resume exactly where this track is.
    pub fn defs(&self, sh: &Shared) -> String {
        self.chans
            .iter()
            .zip(&self.last_id)
            .map(|(&c, id)| format!("{}.r{}", sh.channels[c].name, id + 1))
            .collect::<Vec<_>>()
            .join("/")
    }

    pub fn caught_up(&self, sh: &Shared) -> bool {
        self.chans
            .iter()
            .zip(&self.next_seq)
            .all(|(&c, &next)| next > sh.channels[c].snapshot().0)
    }

    /// Acknowledged events not received yet.
    pub fn missing(&self, sh: &Shared) -> u64 {
        self.chans
            .iter()
            .zip(&self.next_seq)
            .map(|(&c, &next)| {
                let ch = &sh.channels[c];
                ch.acked_between(next, ch.snapshot().0 + 1)
            })
            .sum()
    }

    /// Checks one event; `conn_last_id` is the last id on this connection.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        sh: &Shared,
        who: &str,
        kind: Kind,
        id: u64,
        channel: &[u8],
        text: &[u8],
        conn_last_id: &mut u64,
    ) {
        let Some(i) = self
            .chans
            .iter()
            .position(|&c| sh.channels[c].name.as_bytes() == channel)
        else {
            inc(&sh.c.bad_replies);
            sh.problem(format!(
                "{who}: event {id} of channel {} it did not ask for",
                wire::show(channel)
            ));
            return;
        };
        if id <= *conn_last_id {
            inc(&sh.c.reorders);
            sh.problem(format!("{who}: id {id} after {conn_last_id}"));
        }
        *conn_last_id = id;
        let Some(seq) = wire::seq_of(text) else {
            inc(&sh.c.bad_replies);
            sh.problem(format!("{who}: event text {}", wire::show(text)));
            return;
        };
        let counter = match kind {
            Kind::Stream => &sh.c.deliveries_stream,
            Kind::LongPoll => &sh.c.deliveries_longpoll,
            Kind::Churn => &sh.c.deliveries_churn,
            Kind::Poll => &sh.c.deliveries_poll,
            Kind::Slow => &sh.c.deliveries_slow,
            Kind::Pipe => &sh.c.deliveries_pipe,
        };
        inc(counter);
        if kind != Kind::Pipe {
            inc(&sh.nodes[self.node].deliveries);
        }
        let ch = &sh.channels[self.chans[i]];
        let mut expected = self.next_seq[i];
        if expected == 0 {
            // A `.b<n>` poll: the first event sets where the run starts.
            expected = seq;
        }
        if seq >= expected && ch.is_unacked(seq) {
            inc(&sh.c.delivered_unacked);
        }
        let missed = if seq > expected {
            ch.acked_between(expected, seq)
        } else {
            0
        };
        if missed > 0 {
            match kind {
                Kind::Slow => add(&sh.c.slow_gaps, missed),
                Kind::Pipe => add(&sh.c.pipe_gaps, missed),
                _ => add(&sh.c.gaps, missed),
            }
            sh.problem(format!(
                "{who}: gap on {}: expected seq {expected}, got {seq} (id {id})",
                sh.channels[self.chans[i]].name
            ));
        } else if seq < expected {
            inc(&sh.c.duplicates);
            sh.problem(format!(
                "{who}: duplicate on {}: seq {seq} again (expected {expected})",
                sh.channels[self.chans[i]].name
            ));
            return;
        }
        self.next_seq[i] = seq + 1;
        self.last_id[i] = id;
    }
}

/// Reads a streaming reply: head, then event lines, feeding `track`.
pub struct StreamReader {
    pub s: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    tmp: Vec<u8>,
    pub head_done: bool,
    conn_last_id: u64,
    /// `eof();` arrived: the server closed us on its own initiative.
    pub farewell: bool,
}

pub enum Read {
    /// Some lines were processed (or nothing arrived within a tick).
    Progress,
    Closed,
    Failed(String),
}

impl StreamReader {
    pub fn new(s: TcpStream) -> StreamReader {
        StreamReader {
            s,
            buf: Vec::new(),
            pos: 0,
            tmp: vec![0u8; 64 * 1024],
            head_done: false,
            conn_last_id: 0,
            farewell: false,
        }
    }

    /// One read, then every complete line.
    pub fn step(&mut self, sh: &Shared, who: &str, kind: Kind, track: &mut Track) -> Read {
        let closed = match wire::read_some(&mut self.s, &mut self.buf, &mut self.tmp) {
            Ok(Got::Eof) => true,
            Ok(_) => false,
            Err(e) => return Read::Failed(e.to_string()),
        };
        if !self.head_done {
            match wire::response_head(&self.buf) {
                Some((status, len)) => {
                    if status != "HTTP/1.1 200 OK" {
                        return Read::Failed(format!("status {status:?}"));
                    }
                    self.pos = len;
                    self.head_done = true;
                }
                None if closed => {
                    return Read::Failed(format!(
                        "closed before the head: {}",
                        wire::show(&self.buf)
                    ));
                }
                None => return Read::Progress,
            }
        }
        while let Some(i) = wire::find(&self.buf[self.pos..], b"\r\n") {
            let line = &self.buf[self.pos..self.pos + i];
            match wire::parse_line(line) {
                Line::Event { id, channel, text } => {
                    track.event(sh, who, kind, id, channel, text, &mut self.conn_last_id)
                }
                Line::Eof => self.farewell = true,
                Line::Ping | Line::Info => {}
                Line::Other => {
                    inc(&sh.c.bad_replies);
                    sh.problem(format!("{who}: unexpected line {}", wire::show(line)));
                }
            }
            self.pos += i + 2;
        }
        if self.pos > 256 * 1024 || self.pos == self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if closed { Read::Closed } else { Read::Progress }
    }
}

// ---------------------------------------------------------------------------
// Well-behaved subscribers
// ---------------------------------------------------------------------------

/// A streaming subscriber that stays connected and reads everything;
/// reconnects (resuming with `.r<id>`) if the server closes it.
pub fn streamer(sh: &Shared, idx: usize, node: usize, chans: Vec<usize>) {
    let who = format!("streamer {idx} (node {node})");
    let hostid = format!("st{idx}");
    let mut track = Track::new(sh, chans);
    track.node = node;
    let sub = sh.subs[node];
    'outer: while !sh.stopping() {
        if sh.draining() && track.caught_up(sh) {
            break;
        }
        let Some(mut s) = sh.connect(sub) else {
            nap(Duration::from_millis(500), &sh.stop);
            continue;
        };
        let req = format!(
            "GET /push/{hostid}/xhrinteractive/{} HTTP/1.1\r\nHost: soak\r\nUser-Agent: meteor-soak\r\n\r\n",
            track.defs(sh)
        );
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        let mut r = StreamReader::new(s);
        loop {
            if sh.stopping() || (sh.draining() && track.caught_up(sh)) {
                break 'outer;
            }
            match r.step(sh, &who, Kind::Stream, &mut track) {
                Read::Progress => {}
                Read::Closed => {
                    inc(&sh.c.wb_closed_by_server);
                    inc(&sh.nodes[node].closed_by_server);
                    if !r.farewell {
                        inc(&sh.c.wb_closed_slow);
                    }
                    sh.problem(format!(
                        "{who}: closed by the server{}",
                        if r.farewell { " (with eof())" } else { "" }
                    ));
                    break;
                }
                Read::Failed(e) => {
                    inc(&sh.c.bad_replies);
                    sh.problem(format!("{who}: {e}"));
                    nap(Duration::from_millis(500), &sh.stop);
                    break;
                }
            }
        }
    }
    add(&sh.c.missing_at_end, track.missing(sh));
}

/// A long-poll subscriber: one request per event batch, resuming with
/// `.r<next id>` on each of its channels.
pub fn longpoller(sh: &Shared, idx: usize, node: usize, chans: Vec<usize>) {
    let who = format!("longpoller {idx} (node {node})");
    let hostid = format!("lp{idx}");
    let mut track = Track::new(sh, chans);
    track.node = node;
    let sub = sh.subs[node];
    while !sh.stopping() {
        if sh.draining() && track.caught_up(sh) {
            break;
        }
        let Some(mut s) = sh.connect(sub) else {
            nap(Duration::from_millis(500), &sh.stop);
            continue;
        };
        let req = format!(
            "GET /push/{hostid}/longpoll/{}?nc={} HTTP/1.1\r\nHost: soak\r\n\r\n",
            track.defs(sh),
            idx
        );
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        let mut r = StreamReader::new(s);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if sh.stopping() || (sh.draining() && track.caught_up(sh)) {
                break;
            }
            if Instant::now() >= deadline {
                sh.problem(format!("{who}: no answer within 40 s"));
                inc(&sh.c.bad_replies);
                break;
            }
            match r.step(sh, &who, Kind::LongPoll, &mut track) {
                Read::Progress => {}
                Read::Closed => break,
                Read::Failed(e) => {
                    inc(&sh.c.bad_replies);
                    sh.problem(format!("{who}: {e}"));
                    nap(Duration::from_millis(500), &sh.stop);
                    break;
                }
            }
        }
    }
    add(&sh.c.missing_at_end, track.missing(sh));
}

// ---------------------------------------------------------------------------
// Churning clients
// ---------------------------------------------------------------------------

/// Connects, does one short thing, leaves (politely or not), again.
pub fn churner(sh: &Shared, idx: usize) {
    let mut rng = Rng::new(2000 + idx as u64);
    let n = sh.load_channels as u64;
    let mut session = 0u64;
    while !sh.draining() {
        session += 1;
        inc(&sh.c.churn_sessions);
        let who = format!("churner {idx}.{session}");
        match rng.next() % 100 {
            0..=39 => {
                let k = rng.range(1, 4);
                let mut chans: Vec<usize> = (0..k).map(|_| rng.range(0, n) as usize).collect();
                chans.sort_unstable();
                chans.dedup();
                let mut track = Track::new(sh, chans);
                let Some(mut s) = sh.connect(sh.sub) else {
                    continue;
                };
                let req = format!(
                    "GET /push/ch{idx}x{session}/xhrinteractive/{} HTTP/1.1\r\nHost: soak\r\n\r\n",
                    track.defs(sh)
                );
                if s.write_all(req.as_bytes()).is_err() {
                    continue;
                }
                let s2 = s.try_clone().ok();
                let mut r = StreamReader::new(s);
                let until = Instant::now() + Duration::from_millis(rng.range(50, 3000));
                while Instant::now() < until && !sh.draining() {
                    match r.step(sh, &who, Kind::Churn, &mut track) {
                        Read::Progress => {}
                        Read::Closed => {
                            inc(&sh.c.wb_closed_by_server);
                            sh.problem(format!("{who}: closed by the server"));
                            break;
                        }
                        Read::Failed(e) => {
                            inc(&sh.c.bad_replies);
                            sh.problem(format!("{who}: {e}"));
                            break;
                        }
                    }
                }
                match (rng.next() % 10, s2) {
                    (0..=2, Some(s2)) => wire::set_linger_zero(&s2),
                    (3..=4, Some(s2)) => wire::shutdown_write(&s2),
                    _ => {}
                }
            }
            40..=59 => {
                let c = rng.range(0, n) as usize;
                let mut track = Track::new(sh, vec![c]);
                // The last few cached events: consecutive, in order.
                let b = rng.range(1, 30);
                track.next_seq[0] = 0;
                let req = format!(
                    "GET /push/poll{idx}/smartpoll/{}.b{b} HTTP/1.1\r\nHost: soak\r\n\r\n",
                    sh.channels[c].name
                );
                poll_once(sh, &who, &req, &mut track);
            }
            60..=69 => {
                let req = b"GET /index.html HTTP/1.1\r\nHost: soak\r\n\r\n";
                match wire::exchange(sh.sub, req, Duration::from_secs(10)) {
                    Ok(got) => {
                        inc(&sh.c.connections);
                        let ok = wire::response_head(&got).is_some_and(|(st, head)| {
                            st == "HTTP/1.1 200 OK"
                                && wire::content_length(&got[..head]) == Some(got.len() - head)
                        });
                        if !ok {
                            inc(&sh.c.bad_replies);
                            sh.problem(format!("{who}: /index.html: {}", wire::show(&got)));
                        }
                    }
                    Err(e) => {
                        inc(&sh.c.bad_replies);
                        sh.problem(format!("{who}: /index.html: {e}"));
                    }
                }
            }
            70..=74 => {
                let req = format!("GET /disconnect/nobody{idx} HTTP/1.1\r\nHost: soak\r\n\r\n");
                match wire::exchange(sh.sub, req.as_bytes(), Duration::from_secs(10)) {
                    Ok(got) if got.starts_with(b"HTTP/1.1 200 OK\r\n") => inc(&sh.c.connections),
                    other => {
                        inc(&sh.c.bad_replies);
                        sh.problem(format!("{who}: /disconnect: {other:?}"));
                    }
                }
            }
            75..=84 => {
                // A request, then gone before the answer.
                if let Some(mut s) = sh.connect(sh.sub) {
                    let c = rng.range(0, n) as usize;
                    let req = format!(
                        "GET /push/gone{idx}/smartpoll/{}.h HTTP/1.1\r\n\r\n",
                        sh.channels[c].name
                    );
                    let _ = s.write_all(req.as_bytes());
                    if rng.chance(50) {
                        wire::set_linger_zero(&s);
                    }
                }
            }
            _ => {
                // Connect and close at once.
                if let Some(s) = sh.connect(if rng.chance(50) { sh.sub } else { sh.ctl }) {
                    if rng.chance(30) {
                        wire::set_linger_zero(&s);
                    }
                    drop(s);
                }
            }
        }
        nap(Duration::from_millis(rng.range(5, 50)), &sh.draining);
    }
}

/// A `Persist 0` request: the reply must be complete and gapless.
fn poll_once(sh: &Shared, who: &str, req: &str, track: &mut Track) {
    let Some(mut s) = sh.connect(sh.sub) else {
        return;
    };
    if s.write_all(req.as_bytes()).is_err() {
        return;
    }
    let mut r = StreamReader::new(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match r.step(sh, who, Kind::Poll, track) {
            Read::Progress => {}
            Read::Closed => return,
            Read::Failed(e) => {
                inc(&sh.c.bad_replies);
                sh.problem(format!("{who}: {e}"));
                return;
            }
        }
    }
    inc(&sh.c.bad_replies);
    sh.problem(format!("{who}: poll not complete within 10 s"));
}

// ---------------------------------------------------------------------------
// Slow and stalled subscribers
// ---------------------------------------------------------------------------

/// Even `idx`: reads 4 KiB every 100 ms for 20 s, then drains. Odd: never reads
/// for 15 s, then looks whether the server dropped it. Both subscribe to
/// every channel with the smallest receive buffer; both reconnect.
pub fn slow(sh: &Shared, idx: usize) {
    let who = format!("slow {idx}");
    let all: Vec<usize> = (0..sh.load_channels).collect();
    while !sh.draining() {
        let mut track = Track::new(sh, all.clone());
        let s = match wire::connect_small_rcvbuf(sh.sub) {
            Ok(s) => {
                inc(&sh.c.connections);
                s
            }
            Err(e) => {
                inc(&sh.c.connect_errors);
                sh.problem(format!("{who}: connect: {e}"));
                nap(Duration::from_secs(1), &sh.draining);
                continue;
            }
        };
        let mut s = s;
        let req = format!(
            "GET /push/slow{idx}/xhrinteractive/{} HTTP/1.1\r\nHost: soak\r\n\r\n",
            track.defs(sh)
        );
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        if idx.is_multiple_of(2) {
            // About 40 KB/s, far less than all channels together carry, for
            // 20 s; then it reads as fast as it can to see whether the
            // server dropped it.
            let mut r = StreamReader::new(s);
            r.tmp.truncate(4096);
            let slow_until = Instant::now() + Duration::from_secs(20);
            let give_up = slow_until + Duration::from_secs(15);
            loop {
                if sh.draining() {
                    return;
                }
                let slow_phase = Instant::now() < slow_until;
                if !slow_phase && r.tmp.len() == 4096 {
                    r.tmp.resize(256 * 1024, 0);
                }
                if Instant::now() >= give_up {
                    inc(&sh.c.slow_not_dropped);
                    break;
                }
                match r.step(sh, &who, Kind::Slow, &mut track) {
                    Read::Progress if slow_phase => nap(Duration::from_millis(100), &sh.draining),
                    Read::Progress => {}
                    Read::Closed => {
                        inc(&sh.c.slow_dropped_seen);
                        break;
                    }
                    Read::Failed(e) => {
                        inc(&sh.c.bad_replies);
                        sh.problem(format!("{who}: {e}"));
                        break;
                    }
                }
            }
        } else {
            nap(Duration::from_secs(15), &sh.draining);
            if sh.draining() {
                return;
            }
            match wire::read_to_end(&mut s, Instant::now() + Duration::from_secs(10)) {
                Ok(_) => inc(&sh.c.stalled_dropped_seen),
                Err(_) => inc(&sh.c.stalled_not_dropped),
            }
        }
        nap(Duration::from_millis(500), &sh.draining);
    }
}

// ---------------------------------------------------------------------------
// Abusive clients
// ---------------------------------------------------------------------------

/// Crosses one bound after another and checks each answer.
pub fn abuser(sh: &Shared, idx: usize) {
    let mut rng = Rng::new(3000 + idx as u64);
    while !sh.draining() {
        inc(&sh.c.abuse_sent);
        let action = rng.next() % 12;
        let result = abuse(sh, idx, action, &mut rng);
        if let Err(e) = result {
            inc(&sh.c.abuse_unexpected);
            sh.problem(format!("abuser {idx} action {action}: {e}"));
        }
        nap(Duration::from_millis(rng.range(20, 200)), &sh.draining);
    }
}

fn expect_prefix(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    if got.starts_with(want) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {}..., got {}",
            wire::show(want),
            wire::show(got)
        ))
    }
}

fn abuse(sh: &Shared, idx: usize, action: u64, rng: &mut Rng) -> Result<(), String> {
    let t = Duration::from_secs(10);
    let sub = |req: &[u8]| {
        inc(&sh.c.connections);
        wire::exchange(sh.sub, req, t).map_err(|e| e.to_string())
    };
    match action {
        0 => {
            let mut req = b"GET /push/ab/xhrinteractive/soak0 HTTP/1.1\r\nX-Big: ".to_vec();
            req.extend(std::iter::repeat_n(b'b', 9000));
            req.extend_from_slice(b"\r\n\r\n");
            let got = sub(&req)?;
            expect_prefix(&got, b"HTTP/1.1 431 ", "oversized head")
        }
        1 => {
            let mut req = String::from("GET /push/ab/xhrinteractive/soak0 HTTP/1.1\r\n");
            for i in 0..70 {
                req.push_str(&format!("X-{i}: v\r\n"));
            }
            req.push_str("\r\n");
            let got = sub(req.as_bytes())?;
            expect_prefix(&got, b"HTTP/1.1 431 ", "70 header lines")
        }
        2 => {
            let defs: Vec<String> = (0..40).map(|i| format!("many{i}")).collect();
            let req = format!(
                "GET /push/ab/xhrinteractive/{} HTTP/1.1\r\n\r\n",
                defs.join("/")
            );
            let got = sub(req.as_bytes())?;
            expect_prefix(&got, b"HTTP/1.1 400 ", "40 channels")
        }
        3 => {
            let req = format!(
                "GET /push/ab/xhrinteractive/{} HTTP/1.1\r\n\r\n",
                "l".repeat(200)
            );
            let got = sub(req.as_bytes())?;
            expect_prefix(&got, b"HTTP/1.1 400 ", "a 200-byte channel name")
        }
        4 => {
            let mut req: Vec<u8> = (0..rng.range(1, 200)).map(|_| rng.next() as u8).collect();
            req.retain(|&b| b != b'\n');
            req.extend_from_slice(b"\r\n\r\n");
            let got = sub(&req)?;
            expect_prefix(&got, b"HTTP/1.1 400 ", "garbage")
        }
        5 => {
            // Slowloris: one byte at a time, never finishing the head.
            let mut s = sh.connect(sh.sub).ok_or("connect")?;
            let start = Instant::now();
            let _ = s.write_all(b"GET /push/loris/xhrinteractive/soak0 HTTP/1.1\r\n");
            let mut buf = Vec::new();
            let mut tmp = [0u8; 1024];
            loop {
                if start.elapsed() > sh.head_timeout {
                    return Err(format!("no 408 within {:?}", sh.head_timeout));
                }
                let _ = s.write_all(b"X");
                match wire::read_some(&mut s, &mut buf, &mut tmp) {
                    Ok(Got::Eof) | Err(_) => break,
                    _ => {}
                }
                if sh.draining() {
                    return Ok(());
                }
            }
            expect_prefix(&buf, b"HTTP/1.1 408 ", "slowloris")
        }
        6 => {
            let got =
                sub(b"POST /push/ab/xhrinteractive/soak0 HTTP/1.1\r\nContent-Length: 0\r\n\r\n")?;
            expect_prefix(&got, b"HTTP/1.1 404 ", "POST on the subscriber port")
        }
        7 if sh.known_limits && sh.password.is_none() => {
            let mut s = sh.connect(sh.ctl).ok_or("connect")?;
            let mut line = b"ADDMESSAGE abuse ".to_vec();
            line.extend(std::iter::repeat_n(b'z', 70_000));
            let _ = s.write_all(&line);
            let got = wire::read_to_end(&mut s, Instant::now() + t).map_err(|v| wire::show(&v))?;
            if got != b"ERR Line too long\r\n" {
                return Err(format!("overlong controller line: {}", wire::show(&got)));
            }
            Ok(())
        }
        8 if sh.password.is_none() => {
            let mut s = sh.connect(sh.ctl).ok_or("connect")?;
            let _ = s.write_all(b"FROB x\naddmessage a b\nQUIT\n");
            let got = wire::read_to_end(&mut s, Instant::now() + t).map_err(|v| wire::show(&v))?;
            let want = b"ERR Invalid command syntax\r\nERR Invalid command syntax\r\nOK\r\n";
            if got != want {
                return Err(format!("controller garbage: {}", wire::show(&got)));
            }
            Ok(())
        }
        9 => {
            for _ in 0..50 {
                if let Some(s) = sh.connect(if rng.chance(50) { sh.sub } else { sh.ctl }) {
                    wire::set_linger_zero(&s);
                }
            }
            Ok(())
        }
        10 => {
            // A whole-history reply, reset after the first bytes.
            let mut s = sh.connect(sh.sub).ok_or("connect")?;
            let defs: Vec<String> = sh.channels[..sh.load_channels]
                .iter()
                .map(|c| format!("{}.h", c.name))
                .collect();
            let req = format!(
                "GET /push/rst{idx}/smartpoll/{} HTTP/1.1\r\n\r\n",
                defs.join("/")
            );
            let _ = s.write_all(req.as_bytes());
            let mut buf = Vec::new();
            let mut tmp = [0u8; 2048];
            let _ = wire::read_some(&mut s, &mut buf, &mut tmp);
            wire::set_linger_zero(&s);
            Ok(())
        }
        _ => {
            // Half a head, then a half-close: closed without an answer, or 400.
            let mut s = sh.connect(sh.sub).ok_or("connect")?;
            let _ = s.write_all(b"GET /push/half/xhrinteractive/soak0 HTTP/1.1\r\nHo");
            wire::shutdown_write(&s);
            let got = wire::read_to_end(&mut s, Instant::now() + t).map_err(|v| wire::show(&v))?;
            if !got.is_empty() && !got.starts_with(b"HTTP/1.1 4") {
                return Err(format!("half head then half-close: {}", wire::show(&got)));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_events_are_not_expected() {
        let ch = Channel::new("c".into());
        ch.unacked.lock().unwrap().extend([3, 5, 6]);
        assert_eq!(ch.acked_between(1, 8), 4); // 1 2 4 7
        assert_eq!(ch.acked_between(5, 7), 0);
        assert_eq!(ch.acked_between(7, 7), 0);
        assert!(ch.is_unacked(5) && !ch.is_unacked(4));
    }

    #[test]
    fn latency_quantiles() {
        let l = Latency::default();
        for _ in 0..99 {
            l.record(Duration::from_micros(100));
        }
        l.record(Duration::from_millis(50));
        assert_eq!(l.quantile(0.5), 128);
        assert_eq!(l.quantile(0.99), 128);
        assert_eq!(l.quantile(1.0), 65_536);
        assert_eq!(l.max_us.load(Ordering::Relaxed), 50_000);
    }
}
