//! The Redis protocol (RESP) and a scripted stand-in for Redis.
//!
//! [`FakeRedis`] answers what a node sends the way a Redis with meteord's
//! scripts would: ids come from one counter, a publish is appended to the
//! channel's stream and announced on `{meteor}:events`, `XREVRANGE` and
//! `XRANGE` read the streams back. A test can hold the replies to publishes
//! and stream reads (and, to keep replies in command order, everything
//! behind them on the same link) until it releases them one by one, to
//! replay a race step by step; it can also announce an event and drop every
//! link at an exact point.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::show;

/// A reply of the Redis protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b)
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {self:?}")),
            other => panic!("not a number: {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("not a string: {other:?}"),
        }
    }

    pub fn items(&self) -> Vec<Resp> {
        match self {
            Resp::Array(Some(v)) => v.clone(),
            other => panic!("not an array: {other:?}"),
        }
    }
}

pub fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(std::io::Error::other(format!(
            "bad RESP line {:?}",
            show(&line)
        )));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || -> std::io::Result<i64> {
        body.parse()
            .map_err(|_| std::io::Error::other(format!("bad RESP number {body:?}")))
    };
    Ok(match line[0] {
        b'+' => Resp::Simple(body.clone()),
        b'-' => Resp::Error(body.clone()),
        b':' => Resp::Int(number()?),
        b'$' => match number()? {
            n if n < 0 => Resp::Bulk(None),
            n => {
                let mut data = vec![0; n as usize + 2];
                r.read_exact(&mut data)?;
                data.truncate(n as usize);
                Resp::Bulk(Some(data))
            }
        },
        b'*' => match number()? {
            n if n < 0 => Resp::Array(None),
            n => Resp::Array(Some(
                (0..n).map(|_| read_resp(r)).collect::<Result<_, _>>()?,
            )),
        },
        other => {
            return Err(std::io::Error::other(format!(
                "bad RESP type {:?}",
                other as char
            )));
        }
    })
}

/// A command as the Redis protocol sends it: an array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

/// Holds back small writes (TCP_CORK) until the socket is shut down.
#[cfg(target_os = "linux")]
pub fn cork(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_CORK");
}

#[cfg(not(target_os = "linux"))]
pub fn cork(_: &TcpStream) {}

/// The key prefix of a channel's stream.
const STREAM_PREFIX: &str = "{meteor}:s:";
const NODES_KEY: &str = "{meteor}:nodes";
const EVENTS: &str = "{meteor}:events";

/// An event as [`FakeRedis`] stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: u64,
    pub ms: u64,
    pub channel: String,
    pub text: String,
}

/// One accepted connection of a node.
struct Link {
    pubsub: bool,
    socket: TcpStream,
}

/// A command whose reply waits (held, or behind a held one on its link).
struct Queued {
    link: usize,
    args: Vec<String>,
    out: TcpStream,
}

#[derive(Default)]
struct State {
    /// Every link accepted and not dropped by `announce_and_close`, by id.
    links: Vec<(usize, Link)>,
    next_link: usize,
    /// Whether publishes and stream reads wait for `release`.
    hold: bool,
    /// Unanswered commands of every command link, in arrival order.
    queue: VecDeque<Queued>,
    last_id: u64,
    /// Every event stored, in id order.
    events: Vec<Stored>,
}

impl State {
    /// Runs one command; the reply, and what to announce on pub/sub.
    fn execute(&mut self, args: &[String]) -> (Vec<u8>, Option<String>) {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
        let reply = match name(args).as_str() {
            "SCRIPT" => bulk(&"0".repeat(40)),
            // The counter floor: never below what the node has seen.
            "EVAL" => {
                self.last_id = self.last_id.max(arg(4).parse().unwrap_or(0));
                ":1\r\n".to_owned()
            }
            // The cluster view: no node listed.
            "EVALSHA" if arg(3) == NODES_KEY => "*0\r\n".to_owned(),
            // A publish: KEYS id, stream; ARGV max, ms, text, events, channel.
            "EVALSHA" => {
                let ms = arg(6).parse().unwrap_or(0);
                let event = self.store(arg(9), arg(7), ms);
                let payload = format!("{} {ms} {} {}", event.id, event.channel, event.text);
                return (format!(":{}\r\n", event.id).into_bytes(), Some(payload));
            }
            "XREVRANGE" => {
                let count = if arg(4).eq_ignore_ascii_case("COUNT") {
                    arg(5).parse().unwrap_or(usize::MAX)
                } else {
                    usize::MAX
                };
                // `XREVRANGE key + (<id>-0 COUNT n`: after <id> (a back-fill).
                let after = arg(3)
                    .strip_prefix('(')
                    .and_then(|end| end.split('-').next())
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(0);
                let mut found = self.stream(arg(1), after);
                found.reverse();
                found.truncate(count);
                entries(&found)
            }
            "XRANGE" => {
                let after = arg(2)
                    .trim_start_matches('(')
                    .split('-')
                    .next()
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(0);
                entries(&self.stream(arg(1), after))
            }
            "PING" => "+PONG\r\n".to_owned(),
            _ => "+OK\r\n".to_owned(),
        };
        (reply.into_bytes(), None)
    }

    fn store(&mut self, channel: &str, text: &str, ms: u64) -> Stored {
        self.last_id += 1;
        let event = Stored {
            id: self.last_id,
            ms,
            channel: channel.to_owned(),
            text: text.to_owned(),
        };
        self.events.push(event.clone());
        event
    }

    /// The events of the stream `key` with an id above `after`, oldest first.
    fn stream(&self, key: &str, after: u64) -> Vec<Stored> {
        let channel = key.strip_prefix(STREAM_PREFIX).unwrap_or(key);
        self.events
            .iter()
            .filter(|e| e.channel == channel && e.id > after)
            .cloned()
            .collect()
    }

    /// Sends `payload` as a message on `{meteor}:events` to every pub/sub link.
    fn announce(&mut self, payload: &str) {
        let message = format!("*3\r\n{}{}{}", bulk("message"), bulk(EVENTS), bulk(payload));
        for (_, link) in &mut self.links {
            if link.pubsub {
                let _ = link.socket.write_all(message.as_bytes());
            }
        }
    }

    /// Answers the queued command at the front; whether it was a held kind.
    fn answer_front(&mut self) -> Option<bool> {
        let mut queued = self.queue.pop_front()?;
        let (reply, announce) = self.execute(&queued.args);
        // Announced before the reply, as the script publishes before it returns.
        if let Some(payload) = announce {
            self.announce(&payload);
        }
        let _ = queued.out.write_all(&reply);
        Some(holdable(&queued.args))
    }

    fn held(&self) -> Vec<Vec<String>> {
        self.queue
            .iter()
            .filter(|q| holdable(&q.args))
            .map(|q| q.args.clone())
            .collect()
    }
}

fn name(args: &[String]) -> String {
    args.first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default()
}

/// Publishes and stream reads: what `hold` holds.
fn holdable(args: &[String]) -> bool {
    match name(args).as_str() {
        "EVALSHA" => args.get(3).is_none_or(|k| k != NODES_KEY),
        "XRANGE" | "XREVRANGE" => true,
        _ => false,
    }
}

/// Stream entries `[id, [t, ms, x, text]]` as an array reply.
fn entries(events: &[Stored]) -> String {
    let mut out = format!("*{}\r\n", events.len());
    for e in events {
        out.push_str("*2\r\n");
        out.push_str(&bulk(&format!("{}-0", e.id)));
        out.push_str("*4\r\n");
        for field in ["t", &e.ms.to_string(), "x", &e.text] {
            out.push_str(&bulk(field));
        }
    }
    out
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stand-in for Redis on a loopback port; see the module comment.
pub struct FakeRedis {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeRedis {
    pub fn start() -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake redis");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let shared = accepting.clone();
                thread::spawn(move || serve(stream, shared));
            }
        });
        FakeRedis { addr, shared }
    }

    /// Stores an event in `channel`'s stream (as a publish from another
    /// node whose announcement nobody here heard); returns its id.
    pub fn add_history(&self, channel: &str, text: &str) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.shared.lock().store(channel, text, ms).id
    }

    /// Every event stored so far, in id order.
    pub fn events(&self) -> Vec<Stored> {
        self.shared.lock().events.clone()
    }

    /// From now on, publishes and stream reads wait for [`FakeRedis::release`]
    /// (`true`), or everything waiting is answered at once (`false`).
    pub fn hold(&self, on: bool) {
        let mut state = self.shared.lock();
        state.hold = on;
        if !on {
            while state.answer_front().is_some() {}
        }
    }

    /// Waits until `n` publishes or stream reads are held; returns the
    /// arguments of every one held, oldest first.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> Vec<Vec<String>> {
        self.wait_held_until(&format!("{n} command(s)"), timeout, |held| held.len() >= n)
    }

    /// Waits until the held commands (their arguments, oldest first) are
    /// as `ready` wants; returns them.
    pub fn wait_held_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&[Vec<String>]) -> bool,
    ) -> Vec<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            let held = state.held();
            if ready(&held) {
                return held;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("fake redis: {what} not held within {timeout:?}; held: {held:?}");
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Answers the `n` oldest held commands (and what waits behind them on
    /// their link up to the next held one), in order.
    pub fn release(&self, n: usize) {
        let mut state = self.shared.lock();
        let held = state.held();
        assert!(
            held.len() >= n,
            "fake redis: release({n}) with only {} held: {held:?}",
            held.len()
        );
        let mut released = 0;
        while released < n || state.queue.front().is_some_and(|q| !holdable(&q.args)) {
            if state.answer_front() == Some(true) {
                released += 1;
            }
        }
    }

    /// Sends `payload` as an announced event on every pub/sub link, then
    /// closes the pub/sub links (`all`: every link, the way a Redis that
    /// dies right after does).
    pub fn announce_and_close(&self, payload: &str, all: bool) {
        let mut state = self.shared.lock();
        let message = format!("*3\r\n{}{}{}", bulk("message"), bulk(EVENTS), bulk(payload));
        for (_, link) in &mut state.links {
            if link.pubsub {
                // One segment carries the message and the close, so that the
                // node finds both at once, as when Redis is killed.
                cork(&link.socket);
                link.socket.write_all(message.as_bytes()).expect("announce");
            }
        }
        // Pub/sub first: what Redis wrote before dying is on its way
        // before any link ends.
        state.links.sort_by_key(|(_, link)| !link.pubsub);
        for (_, link) in state.links.drain(..) {
            if all || link.pubsub {
                let _ = link.socket.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.queue.clear();
        for (_, link) in state.links.drain(..) {
            let _ = link.socket.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one link: pub/sub once it sends SUBSCRIBE, commands otherwise.
fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut out = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let mut link = None;
    while let Ok(Resp::Array(Some(args))) = read_resp(&mut r) {
        let args: Vec<String> = args.iter().map(Resp::text).collect();
        let command = name(&args);
        let mut state = shared.lock();
        let pubsub = command == "SUBSCRIBE";
        // A link is known from its first command after AUTH.
        if link.is_none() && (pubsub || command != "AUTH") {
            let id = state.next_link;
            state.next_link += 1;
            let socket = out.try_clone().expect("clone");
            state.links.push((id, Link { pubsub, socket }));
            link = Some((id, pubsub));
        }
        let reply = match link {
            Some((id, false)) => {
                let waiting = state.queue.iter().any(|q| q.link == id);
                if waiting || (state.hold && holdable(&args)) {
                    let out = out.try_clone().expect("clone");
                    state.queue.push_back(Queued {
                        link: id,
                        args,
                        out,
                    });
                    shared.changed.notify_all();
                    continue;
                }
                let (reply, announce) = state.execute(&args);
                if let Some(payload) = announce {
                    state.announce(&payload);
                }
                reply
            }
            // PING on a subscribed link, answered as Redis does (RESP2).
            Some((_, true)) if command == "PING" => {
                format!("*2\r\n{}{}", bulk("pong"), bulk("")).into_bytes()
            }
            _ if pubsub => {
                format!("*3\r\n{}{}:1\r\n", bulk("subscribe"), bulk(EVENTS)).into_bytes()
            }
            _ => b"+OK\r\n".to_vec(),
        };
        if out.write_all(&reply).is_err() {
            break;
        }
    }
}
