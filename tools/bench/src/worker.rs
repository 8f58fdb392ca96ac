//! A worker process: holds a slice of the subscribers on one mio loop and reports to the coordinator.
//!
//! Protocol on stdout (one line each, `key=value` fields): `READY`, `PROGRESS` (every 100 ms)
//! and a final `RESULT`. The coordinator writes `STOP` on stdin (or closes it) to end the worker.

use std::collections::VecDeque;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::hist::Histogram;
use crate::net;
use crate::opts::{Opts, render};
use crate::wire::{Body, Splitter, head_len, leading_id, now_ns, parse_head, parse_marker};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Attempts to connect a streaming subscriber before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 3;
/// Reads per readiness event before serving other sockets.
const READS_PER_EVENT: usize = 16;

/// Where one subscriber connection is.
enum State {
    /// No socket: waiting in the start queue or for a retry.
    Idle,
    /// Non-blocking connect in progress.
    Connecting,
    /// Writing the request.
    Sending { req: Vec<u8>, off: usize },
    /// Reading the response head.
    Head { buf: Vec<u8> },
    /// Reading the body: streaming deliveries, or one long-poll response.
    Body { body: Body, keep_alive: bool },
    /// Given up (streaming subscriber closed, or failed to connect).
    Dead,
}

/// One subscriber or long-poll client.
struct Sub {
    sock: Option<TcpStream>,
    state: State,
    split: Splitter,
    /// Still in the initial connect phase (not yet counted as ready or failed).
    initial: bool,
    attempts: u32,
    last_seq: Option<u64>,
    next_id: Option<u64>,
    lastmod: Option<String>,
    etag: Option<String>,
}

/// Totals this worker reports.
#[derive(Default)]
struct Tally {
    ready: u64,
    failed: u64,
    unique: u64,
    dups: u64,
    closed: u64,
    cycles: u64,
    /// Connections opened (a kept-alive long-poll client opens one).
    connects: u64,
    errors: u64,
    bad_status: u64,
    last_ns: u64,
}

/// What one step of a connection's state machine achieved.
enum Step {
    Again,
    Wait,
    /// The peer closed the connection (cleanly).
    Eof,
    /// A socket error or a protocol failure.
    Failed,
    /// A long-poll response is complete.
    CycleDone,
}

struct Worker<'a> {
    opts: &'a Opts,
    first: usize,
    poll: Poll,
    subs: Vec<Sub>,
    queue: VecDeque<usize>,
    retry: VecDeque<(Instant, usize)>,
    /// Connections that yielded with data left to read.
    pending: VecDeque<usize>,
    inflight: usize,
    hist: Histogram,
    tally: Tally,
    scratch: Vec<u8>,
}

/// Runs a worker for subscribers `first .. first + count` until told to stop.
pub fn run(opts: &Opts, first: usize, count: usize) -> io::Result<()> {
    let limit = net::raise_fd_limit();
    if count as u64 + 64 > limit {
        return Err(io::Error::other(format!(
            "{count} subscribers do not fit the open-file limit {limit}: lower --per-worker"
        )));
    }
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        // A line `STOP` or end of input ends the worker.
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) if l.trim() == "STOP" => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    let mut w = Worker {
        opts,
        first,
        poll: Poll::new()?,
        subs: (0..count)
            .map(|_| Sub {
                sock: None,
                state: State::Idle,
                split: Splitter::default(),
                initial: true,
                attempts: 0,
                last_seq: None,
                next_id: None,
                lastmod: None,
                etag: None,
            })
            .collect(),
        queue: (0..count).collect(),
        retry: VecDeque::new(),
        pending: VecDeque::new(),
        inflight: 0,
        hist: Histogram::new(),
        tally: Tally::default(),
        scratch: vec![0; 64 * 1024],
    };
    let mut events = Events::with_capacity(4096);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut reported_ready = false;
    let mut out = io::stdout();
    loop {
        let now = Instant::now();
        if now - start > opts.max_time || !matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            break;
        }
        if !reported_ready && now - start > opts.connect_timeout {
            w.fail_initial();
        }
        while w.inflight < opts.concurrency {
            let Some(i) = w.queue.pop_front() else { break };
            w.inflight += 1;
            w.start(i);
        }
        while w.retry.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, i)) = w.retry.pop_front() {
                w.start(i);
            }
        }
        for _ in 0..w.pending.len() {
            if let Some(i) = w.pending.pop_front() {
                w.drive(i);
            }
        }
        let timeout = if w.pending.is_empty() {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        };
        if let Err(e) = w.poll.poll(&mut events, Some(timeout))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(io::Error::new(e.kind(), format!("worker poll: {e}")));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i < w.subs.len() {
                w.drive(i);
            }
        }
        if !reported_ready && w.tally.ready + w.tally.failed >= count as u64 {
            reported_ready = true;
            writeln!(out, "READY {}", w.fields())?;
            out.flush()?;
        }
        if last_report.elapsed() >= Duration::from_millis(100) {
            last_report = Instant::now();
            writeln!(out, "PROGRESS {}", w.fields())?;
            out.flush()?;
        }
    }
    writeln!(out, "RESULT {} hist={}", w.fields(), w.hist.encode())?;
    out.flush()?;
    Ok(())
}

impl Worker<'_> {
    fn fields(&self) -> String {
        let t = &self.tally;
        format!(
            "ready={} failed={} unique={} dups={} closed={} cycles={} connects={} errors={} bad_status={} last_ns={} cpu_ms={}",
            t.ready,
            t.failed,
            t.unique,
            t.dups,
            t.closed,
            t.cycles,
            t.connects,
            t.errors,
            t.bad_status,
            t.last_ns,
            own_cpu_ms()
        )
    }

    /// Opens (or reopens) the connection of subscriber `i`.
    fn start(&mut self, i: usize) {
        let src = net::source_for(self.first + i, self.opts.per_source);
        let sub = &mut self.subs[i];
        sub.attempts += 1;
        sub.split = Splitter::default();
        self.tally.connects += 1;
        match net::connect(self.opts.target, src) {
            Ok(mut sock) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .register(&mut sock, Token(i), interest)
                    .is_err()
                {
                    self.on_failure(i);
                    return;
                }
                sub.sock = Some(sock);
                sub.state = State::Connecting;
            }
            Err(_) => self.on_failure(i),
        }
    }

    /// Marks every subscriber still connecting as failed (connect timeout).
    fn fail_initial(&mut self) {
        self.queue.clear();
        for i in 0..self.subs.len() {
            if self.subs[i].initial {
                self.drop_socket(i);
                self.subs[i].initial = false;
                self.subs[i].state = State::Dead;
                self.tally.failed += 1;
            }
        }
        self.retry.clear();
        self.inflight = 0;
    }

    fn drop_socket(&mut self, i: usize) {
        if let Some(mut s) = self.subs[i].sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    /// A connect or request failed: retry, or give up on a streaming subscriber.
    fn on_failure(&mut self, i: usize) {
        self.drop_socket(i);
        let sub = &mut self.subs[i];
        sub.state = State::Idle;
        let retry = if sub.initial {
            sub.attempts < CONNECT_ATTEMPTS || self.opts.longpoll
        } else {
            self.tally.errors += 1;
            self.opts.longpoll
        };
        if retry {
            self.retry
                .push_back((Instant::now() + Duration::from_millis(50), i));
        } else {
            if sub.initial {
                sub.initial = false;
                self.tally.failed += 1;
                self.inflight = self.inflight.saturating_sub(1);
            }
            sub.state = State::Dead;
        }
    }

    /// Runs the state machine of subscriber `i` until it must wait for the socket.
    fn drive(&mut self, i: usize) {
        let mut reads = 0;
        loop {
            if matches!(self.subs[i].state, State::Head { .. } | State::Body { .. }) {
                reads += 1;
                if reads > READS_PER_EVENT {
                    // Edge-triggered: keep going later instead of starving the others.
                    self.pending.push_back(i);
                    return;
                }
            }
            match self.step(i) {
                Step::Again => continue,
                Step::Wait => return,
                Step::Failed => return self.on_failure(i),
                Step::CycleDone => {
                    self.tally.cycles += 1;
                    return self.next_cycle(i);
                }
                Step::Eof => return self.on_eof(i),
            }
        }
    }

    /// The server closed the connection.
    fn on_eof(&mut self, i: usize) {
        let opts = self.opts;
        let close_delimited = matches!(
            self.subs[i].state,
            State::Body {
                body: Body::UntilClose,
                ..
            }
        );
        if opts.longpoll && close_delimited {
            // A close-delimited long-poll response: the cycle is complete.
            let sub = &mut self.subs[i];
            let (t, h) = (&mut self.tally, &mut self.hist);
            sub.split
                .finish(|rec| on_record(rec, &mut sub.last_seq, &mut sub.next_id, t, h, now_ns()));
            self.tally.cycles += 1;
            self.drop_socket(i);
            self.subs[i].state = State::Idle;
            self.start(i);
        } else if opts.longpoll || self.subs[i].initial {
            self.on_failure(i);
        } else {
            self.tally.closed += 1;
            self.drop_socket(i);
            self.subs[i].state = State::Dead;
        }
    }

    /// A long-poll response is complete: ask again, on the same connection if it is kept.
    fn next_cycle(&mut self, i: usize) {
        let keep = matches!(
            self.subs[i].state,
            State::Body {
                keep_alive: true,
                ..
            }
        );
        if keep && self.subs[i].sock.is_some() {
            let req = request_for(&self.subs[i], self.opts, self.first + i);
            self.subs[i].state = State::Sending { req, off: 0 };
            self.drive(i);
        } else {
            self.drop_socket(i);
            self.subs[i].state = State::Idle;
            self.start(i);
        }
    }

    fn step(&mut self, i: usize) -> Step {
        let opts = self.opts;
        let Worker {
            subs,
            tally,
            hist,
            scratch,
            inflight,
            first,
            ..
        } = self;
        let sub = &mut subs[i];
        let Some(sock) = sub.sock.as_mut() else {
            return Step::Wait;
        };
        match &mut sub.state {
            State::Idle | State::Dead => Step::Wait,
            State::Connecting => {
                if let Ok(Some(_)) | Err(_) = sock.take_error() {
                    return Step::Failed;
                }
                match sock.peer_addr() {
                    Ok(_) => {
                        sub.state = State::Sending {
                            req: request_for(sub, opts, *first + i),
                            off: 0,
                        };
                        Step::Again
                    }
                    Err(e)
                        if e.kind() == ErrorKind::NotConnected
                            || e.kind() == ErrorKind::WouldBlock =>
                    {
                        Step::Wait
                    }
                    Err(_) => Step::Failed,
                }
            }
            State::Sending { req, off } => match sock.write(&req[*off..]) {
                Ok(n) => {
                    *off += n;
                    if *off == req.len() {
                        sub.state = State::Head { buf: Vec::new() };
                        if opts.longpoll {
                            mark_ready(sub, tally, inflight);
                        }
                    }
                    Step::Again
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Step::Wait,
                Err(e) if e.kind() == ErrorKind::Interrupted => Step::Again,
                Err(_) => Step::Failed,
            },
            State::Head { buf } => {
                let n = match read(sock, scratch) {
                    Ok(0) => return Step::Eof,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                    Err(_) => return Step::Failed,
                };
                buf.extend_from_slice(&scratch[..n]);
                let Some(len) = head_len(buf) else {
                    return if buf.len() > MAX_HEAD {
                        Step::Failed
                    } else {
                        Step::Again
                    };
                };
                let Some(head) = parse_head(&buf[..len]) else {
                    return Step::Failed;
                };
                let websocket = head.status == 101;
                if !(200..300).contains(&head.status) && !websocket {
                    tally.bad_status += 1;
                    if !opts.longpoll || head.status != 304 {
                        return Step::Failed;
                    }
                }
                if head.last_modified.is_some() {
                    sub.lastmod = head.last_modified;
                }
                if head.etag.is_some() {
                    sub.etag = head.etag;
                }
                let rest = buf.split_off(len);
                let mut body = if websocket {
                    Body::WebSocket(Default::default())
                } else {
                    head.body
                };
                let done = feed(&mut body, &rest, sub, opts, tally, hist);
                sub.state = State::Body {
                    body,
                    keep_alive: head.keep_alive,
                };
                if !opts.longpoll {
                    mark_ready(sub, tally, inflight);
                }
                if done { Step::CycleDone } else { Step::Again }
            }
            State::Body { .. } => {
                let n = match read(sock, scratch) {
                    Ok(0) => return Step::Eof,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                    Err(_) => return Step::Failed,
                };
                let State::Body { body, .. } = &mut sub.state else {
                    return Step::Wait;
                };
                let mut body = std::mem::replace(body, Body::UntilClose);
                let done = feed(&mut body, &scratch[..n], sub, opts, tally, hist);
                if let State::Body { body: b, .. } = &mut sub.state {
                    *b = body;
                }
                if done { Step::CycleDone } else { Step::Again }
            }
        }
    }
}

/// The request for a subscriber's next connection (global index `i`): long-poll clients
/// that know where to resume use the follow-up template.
fn request_for(sub: &Sub, opts: &Opts, i: usize) -> Vec<u8> {
    let resume = sub.next_id.is_some() || sub.lastmod.is_some() || sub.etag.is_some();
    let tpl = if opts.longpoll && resume {
        &opts.next_request
    } else {
        &opts.request
    };
    render(
        tpl,
        opts,
        i,
        sub.next_id,
        sub.lastmod.as_deref(),
        sub.etag.as_deref(),
    )
}

/// Counts a subscriber as ready the first time it gets there.
fn mark_ready(sub: &mut Sub, tally: &mut Tally, inflight: &mut usize) {
    if sub.initial {
        sub.initial = false;
        tally.ready += 1;
        *inflight = inflight.saturating_sub(1);
    }
}

/// This process's CPU time in milliseconds (0 if /proc is unreadable).
fn own_cpu_ms() -> u64 {
    crate::procstat::sample(&[std::process::id()]).map_or(0, |s| (s.cpu * 1000.0) as u64)
}

/// Reads once, retrying on EINTR.
fn read(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Passes response bytes through the body framing into the record splitter.
/// Returns true when the body is complete.
fn feed(
    body: &mut Body,
    data: &[u8],
    sub: &mut Sub,
    opts: &Opts,
    tally: &mut Tally,
    hist: &mut Histogram,
) -> bool {
    let now = now_ns();
    let Sub {
        split,
        last_seq,
        next_id,
        ..
    } = sub;
    let (_, done) = body.feed(data, |chunk| {
        split.feed(chunk, &opts.delimiter, |rec| {
            on_record(rec, last_seq, next_id, tally, hist, now)
        });
    });
    if done {
        split.finish(|rec| on_record(rec, last_seq, next_id, tally, hist, now));
    }
    done
}

/// Counts one delimited record if it carries an event marker.
fn on_record(
    rec: &[u8],
    last_seq: &mut Option<u64>,
    next_id: &mut Option<u64>,
    tally: &mut Tally,
    hist: &mut Histogram,
    now: u64,
) {
    let Some((seq, sent)) = parse_marker(rec) else {
        return;
    };
    if last_seq.is_none_or(|l| seq > l) {
        *last_seq = Some(seq);
        tally.unique += 1;
        tally.last_ns = tally.last_ns.max(now);
        hist.record(now.saturating_sub(sent) / 1000);
    } else {
        tally.dups += 1;
    }
    if let Some(id) = leading_id(rec) {
        *next_id = Some(next_id.map_or(id + 1, |n| n.max(id + 1)));
    }
}
