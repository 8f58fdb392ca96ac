//! Publisher connections on the controller port: the line protocol or, when
//! the first line is an HTTP request line, HTTP; a small state machine that
//! reads requests, answers them in order and closes after flushing. Every
//! publish goes through the hub, which answers now or later.

pub mod auth;
pub mod commands;
pub mod http;
pub mod udp;

use crate::config::Config;
use crate::conn::{ConnId, Reason, Step};
use crate::http::{HttpError, head_end};
use crate::hub::{Failed, Hub, Publish};
use crate::info;
use crate::io::{
    BURST_COMMANDS_PER_TURN, COMMANDS_PER_TURN, INPUT_BYTES_PER_TURN, Io, OTHER_COMMAND_COST,
    READS_PER_TURN, read_some, write_some,
};
use crate::stats::Stats;
use auth::AuthFailures;
use commands::{Command, parse, same_secret};
use http::Answer;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Stop reading commands while this many reply bytes wait for the peer.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// How much of a `LISTCHANNELS` answer is written at a time: a long
/// listing goes out a part per turn as the peer reads, never whole.
const LIST_CHUNK: usize = 64 * 1024;

/// Where a controller is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `ControllerPassword` is set: only `AUTH` is answered.
    Locked,
    /// Reading and answering commands.
    Open,
    /// The first line was an HTTP request line: answering HTTP requests.
    Http,
    /// Sending what is left of the replies, then closing for this reason.
    Closing(Reason),
}

/// A publisher connection.
pub struct Controller {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    /// Bytes of a line not yet complete; empty (unallocated) when idle.
    partial: Vec<u8>,
    /// Replies not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    phase: Phase,
    /// Lines answered so far: the first one decides between the line
    /// protocol and HTTP.
    lines: u64,
    /// Publishes the hub will answer later, oldest first.
    awaiting: VecDeque<Awaiting>,
    /// The peer closed its sending side: answer what is buffered, then close.
    peer_done: bool,
    /// When it last completed a command or request (or connected).
    last_command: Instant,
    /// When it connected.
    connected: Instant,
    /// When the first byte of the incomplete command in `partial` came.
    partial_since: Option<Instant>,
    /// A `LISTCHANNELS` answer being written a part at a time; commands
    /// behind it wait, so that replies keep their order.
    listing: Option<Listing>,
    /// `100 Continue` was sent for the HTTP request being read.
    continued: bool,
}

/// Where a `LISTCHANNELS` answer goes on.
struct Listing {
    /// The last channel name written (None: none yet).
    after: Option<Box<[u8]>>,
}

/// A reply owed once the hub has answered a publish.
#[derive(Debug)]
enum Awaiting {
    /// `OK\t<id>` on the line protocol.
    Line,
    /// An HTTP response, with its CORS lines and whether to close after.
    Http { cors: String, close: bool },
}

/// What publishers need from the rest of the server, borrowed for one call.
pub struct Context<'a> {
    pub config: &'a Config,
    pub hub: &'a mut Hub,
    pub stats: &'a mut Stats,
    /// The loop-wide read buffer.
    pub scratch: &'a mut [u8],
    /// The connection being driven, named in publishes answered later.
    pub id: ConnId,
    /// Commands this connection may still run this turn, so that the others
    /// and the subscribers get their turn (see `has_room` for what keeps
    /// readers from being outrun).
    pub commands_left: usize,
    /// Likewise in bytes, for large events.
    pub bytes_left: usize,
    pub now_ms: u64,
    pub now: Instant,
    /// Wrong passwords by address.
    pub auth: &'a mut AuthFailures,
    /// What the document cache holds, for `/stats`.
    pub document_cache_bytes: usize,
}

impl Context<'_> {
    /// A fresh turn's budget.
    pub fn budget() -> (usize, usize) {
        (BURST_COMMANDS_PER_TURN, INPUT_BYTES_PER_TURN)
    }

    /// Takes a command's `cost` and `bytes` from the turn's budget.
    fn charge(&mut self, cost: usize, bytes: usize) {
        self.commands_left = self.commands_left.saturating_sub(cost);
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        if self.bytes_left == 0 {
            self.commands_left = 0;
        }
    }
}

/// What a command takes of the turn's budget (`publish_to` is its channel
/// when it is a publish): 1 for a publish, `OTHER_COMMAND_COST` for anything
/// else; None when it is a publish that must wait for the next turn
/// (`has_room`).
fn cost(ctx: &Context, publish_to: Option<&[u8]>) -> Option<usize> {
    match publish_to {
        Some(channel) if !has_room(ctx, channel) => None,
        Some(_) => Some(1),
        None => Some(OTHER_COMMAND_COST),
    }
}

/// The burst rule: whether a publish to `channel` may run in this turn.
///
/// A publisher runs what it pipelined, up to `BURST_COMMANDS_PER_TURN`
/// publishes (other commands count `OTHER_COMMAND_COST` each) and
/// `INPUT_BYTES_PER_TURN` bytes a turn, so a burst reaches the
/// subscribers in one pass instead of one pass per 32 events. Each publish
/// first asks its channel for room: it runs only while the channel can take
/// more than `COMMANDS_PER_TURN` further events before its subscribers are
/// written (`Channels::room`); otherwise the connection yields with the
/// command unread and runs it once the loop has written the channel's
/// subscribers.
///
/// Why it is safe:
/// - A reader that was caught up when subscribers were last written finds
///   its next event still held: its channel keeps the newest
///   `max(MaxMessagesPerChannel, STREAM_FLOOR_EVENTS)` events, and until the
///   next write publishers add at most that less `COMMANDS_PER_TURN`,
///   whichever connections they come on, and the one source that does not
///   ask (the UDP socket standalone, the Redis link in a cluster) at most
///   `COMMANDS_PER_TURN`. So it is never dropped as a slow consumer because
///   publishers were fast; only `MaxCachedBytes` eviction, or `SIGUSR1`
///   emptying the caches in the middle of a burst, can still reach it.
///   A reader whose socket is full is pinned as before, and one connection
///   still brings at most `INPUT_BYTES_PER_TURN`, a quarter of what a reader
///   is written per turn (`WRITE_BUDGET`).
/// - No publisher starves the others: each runs at most its own budget per
///   turn, and connections that yielded are driven in turn order, the first
///   of one turn last in the next, so none keeps first pick of a channel's
///   room.
/// - No subscriber waits long: a turn holds at most one budget per
///   connection (about a millisecond of work) before subscribers are written.
fn has_room(ctx: &Context, channel: &[u8]) -> bool {
    ctx.hub.channels.room(channel) > COMMANDS_PER_TURN
}

impl Controller {
    /// A new connection; `locked` when it must send `AUTH` first.
    pub fn new(socket: TcpStream, peer: SocketAddr, locked: bool, now: Instant) -> Controller {
        Controller {
            socket,
            peer,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            phase: if locked { Phase::Locked } else { Phase::Open },
            lines: 0,
            awaiting: VecDeque::new(),
            peer_done: false,
            continued: false,
            last_command: now,
            connected: now,
            partial_since: None,
            listing: None,
        }
    }

    /// When this connection must next have done something: finished the
    /// command (or request) it started, or its first command, or `AUTH`,
    /// within `ControllerCommandTimeout`; and once it has, sent another within
    /// `ControllerIdleTimeout` (a publisher that keeps its connection open
    /// and publishes from time to time is told apart by having completed a
    /// command). None while the hub owes it an answer.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        if !self.reading() || !self.awaiting.is_empty() {
            return None;
        }
        if self.owes_a_command() {
            // Commands refused before `AUTH` do not count: the password
            // must come within the limit of connecting.
            let since = match self.phase {
                Phase::Locked => self.connected,
                _ => self.partial_since.unwrap_or(self.last_command),
            };
            return Some(since + Duration::from_secs(config.controller_command_timeout));
        }
        match config.controller_idle_timeout {
            0 => None,
            idle => Some(self.last_command + Duration::from_secs(idle)),
        }
    }

    /// Whether it has yet to complete a command it started, its first one,
    /// or its `AUTH`.
    fn owes_a_command(&self) -> bool {
        self.lines == 0 || self.phase == Phase::Locked || !self.partial.is_empty()
    }

    /// A due deadline: a command not completed in time gets `ERR Timeout`
    /// (or `408` over HTTP) and the connection closes; an idle one closes.
    pub fn on_timer(&mut self, ctx: &mut Context) -> Step {
        if self.deadline(ctx.config).is_none_or(|at| at > ctx.now) {
            return self.ready(ctx);
        }
        if !self.owes_a_command() {
            info!("{}: controller idle for ControllerIdleTimeout", self.peer);
            return Step::Close(Reason::IdleTimeout);
        }
        info!(
            "{}: controller did not complete a command within ControllerCommandTimeout",
            self.peer
        );
        if self.phase == Phase::Http {
            ctx.stats.errors_served += 1;
            self.out
                .extend_from_slice(&http::error_response(HttpError::Timeout));
        } else {
            self.reply(ctx.stats, b"ERR Timeout\r\n");
        }
        self.partial = Vec::new();
        self.phase = Phase::Closing(Reason::CommandTimeout);
        self.ready(ctx)
    }

    /// Queues a last message (the `ControllerShutdownMsg`) and closes once sent.
    pub fn shut_down(&mut self, message: &[u8]) {
        if self.reading() {
            self.out.extend_from_slice(message);
            self.phase = Phase::Closing(Reason::Shutdown);
        }
    }

    /// Writes pending replies; false when the peer is gone.
    fn flush(&mut self, stats: &mut Stats) -> Result<(), Reason> {
        while self.out_pos < self.out.len() {
            match write_some(&mut self.socket, &self.out[self.out_pos..]) {
                Io::Progress(n) => {
                    self.out_pos += n;
                    stats.total_outbound_bytes += n as u64;
                }
                Io::WouldBlock => return Ok(()),
                Io::Closed => return Err(Reason::RemoteClosed),
                Io::Failed(e) => return Err(Reason::Error(e.kind())),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// The most unanswered input worth holding: one command, or one HTTP
    /// request (head and body). Beyond it, reading waits for the hub.
    fn input_cap(&self, config: &Config) -> usize {
        let limits = &config.limits;
        match self.phase {
            Phase::Http => limits.head_bytes + limits.controller_line_bytes,
            _ => limits.controller_line_bytes,
        }
    }

    /// Whether answers are left to write that wait only for room in the
    /// reply backlog: the rest of a listing, or (line protocol) complete
    /// commands held back behind a full backlog.
    fn has_work(&self) -> bool {
        self.listing.is_some()
            || (self.phase != Phase::Http
                && self.awaiting.is_empty()
                && memchr::memchr(b'\n', &self.partial).is_some())
    }

    /// Flushes, then waits for the socket, or (everything written and more
    /// to answer, when no writable event will come) yields to come back.
    fn wait_or_yield(&mut self, stats: &mut Stats) -> Step {
        match self.flush(stats) {
            Err(reason) => Step::Close(reason),
            Ok(()) if self.backlog() == 0 && self.has_work() => Step::Yield,
            Ok(()) => Step::Wait,
        }
    }

    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Locked | Phase::Http)
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads, answers and writes until the socket would block, the reply
    /// backlog is too large, or the turn's share is used up.
    pub fn ready(&mut self, ctx: &mut Context) -> Step {
        for _ in 0..READS_PER_TURN {
            if let Err(reason) = self.flush(ctx.stats) {
                return Step::Close(reason);
            }
            if let Phase::Closing(reason) = self.phase {
                return if self.backlog() == 0 {
                    Step::Close(reason)
                } else {
                    Step::Wait
                };
            }
            if self.backlog() > OUT_HIGH_WATER {
                return Step::Wait;
            }
            // Answer what is buffered before reading more.
            self.process(ctx);
            if self.partial.is_empty() {
                self.partial_since = None;
            } else {
                self.partial_since.get_or_insert(ctx.now);
            }
            if !self.reading() {
                continue;
            }
            if ctx.commands_left == 0 {
                // Let the loop write these events to subscribers first.
                return match self.flush(ctx.stats) {
                    Err(reason) => Step::Close(reason),
                    Ok(()) => Step::Yield,
                };
            }
            if self.peer_done {
                if self.awaiting.is_empty() && !self.has_work() {
                    // A half-closed publisher (nc -N) got all its replies.
                    self.phase = Phase::Closing(Reason::RemoteClosed);
                    continue;
                }
                return self.wait_or_yield(ctx.stats);
            }
            if !self.awaiting.is_empty() && self.partial.len() > self.input_cap(ctx.config) {
                // Waiting for the hub to answer before taking more input.
                return Step::Wait;
            }
            match read_some(&mut self.socket, ctx.scratch) {
                Io::Progress(n) => {
                    ctx.stats.total_inbound_bytes += n as u64;
                    self.partial_since.get_or_insert(ctx.now);
                    self.partial.extend_from_slice(&ctx.scratch[..n]);
                }
                Io::WouldBlock => return self.wait_or_yield(ctx.stats),
                Io::Closed => self.peer_done = true,
                Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
            }
        }
        Step::Yield
    }

    /// Answers the complete requests waiting in `partial`, in order. While a
    /// publish awaits Redis only further publishes go ahead, so replies keep
    /// the order of the requests.
    fn process(&mut self, ctx: &mut Context) {
        if self.listing.is_some() {
            self.list_more(ctx);
            if self.listing.is_some() {
                return;
            }
        }
        if self.phase == Phase::Http {
            return self.take_http(ctx);
        }
        let mut input = std::mem::take(&mut self.partial);
        let mut used = 0;
        // Output is bounded where it is appended: no command runs while
        // a reply backlog is over the high-water mark or a listing is on.
        while self.reading()
            && ctx.commands_left > 0
            && self.listing.is_none()
            && self.backlog() <= OUT_HIGH_WATER
        {
            let Some(nl) = memchr::memchr(b'\n', &input[used..]) else {
                break;
            };
            let line = &input[used..used + nl];
            if self.lines == 0 && http::is_request_line(line) {
                self.phase = Phase::Http;
                break;
            }
            if !self.awaiting.is_empty() && !line.starts_with(b"ADDMESSAGE") {
                break;
            }
            let command = parse(line.strip_suffix(b"\r").unwrap_or(line));
            let target = match command {
                Some(Command::AddMessage { channel, .. }) if self.phase == Phase::Open => {
                    Some(channel)
                }
                _ => None,
            };
            let Some(cost) = cost(ctx, target) else {
                // The rest of the burst goes next turn (`has_room`).
                ctx.commands_left = 0;
                break;
            };
            self.lines += 1;
            self.last_command = ctx.now;
            // The time limit runs for each command from its first byte.
            self.partial_since = None;
            ctx.charge(cost, nl + 1);
            self.answer(line.len(), command, ctx);
            used += nl + 1;
        }
        input.drain(..used);
        if !self.reading() {
            return;
        }
        let max_line = ctx.config.limits.controller_line_bytes;
        if input.len() > max_line && memchr::memchr(b'\n', &input).is_none() {
            self.reply(ctx.stats, b"ERR Line too long\r\n");
            self.phase = Phase::Closing(Reason::LineTooLong);
            return;
        }
        // An idle connection keeps no buffer.
        self.partial = if input.is_empty() { Vec::new() } else { input };
        if self.phase == Phase::Http {
            self.take_http(ctx);
        }
    }

    /// Answers the oldest publish the hub answered later (with its id, or
    /// why it failed), then goes on with the requests queued behind it.
    pub fn published(&mut self, ctx: &mut Context, id: Result<u64, Failed>) -> Step {
        self.published_all(ctx, &[id])
    }

    /// `published` for several answers in a row, with one write after.
    pub fn published_all(&mut self, ctx: &mut Context, ids: &[Result<u64, Failed>]) -> Step {
        let mut answered = false;
        for &id in ids {
            answered |= self.answer_published(ctx, id);
        }
        if !answered {
            return Step::Wait;
        }
        if self.awaiting.is_empty() {
            self.process(ctx);
        }
        self.ready(ctx)
    }

    /// Queues the reply to the oldest publish awaiting one; false when
    /// none was awaited.
    fn answer_published(&mut self, ctx: &mut Context, id: Result<u64, Failed>) -> bool {
        match (self.awaiting.pop_front(), id) {
            (Some(Awaiting::Line), Ok(id)) => {
                let _ = write!(self.out, "OK\t{id}\r\n");
            }
            (Some(Awaiting::Line), Err(Failed::Backend)) => {
                self.reply(ctx.stats, b"ERR Backend unavailable\r\n")
            }
            (Some(Awaiting::Line), Err(Failed::Storage)) => {
                self.reply(ctx.stats, b"ERR Storage unavailable\r\n")
            }
            (Some(Awaiting::Http { cors, close }), id) => {
                if id.is_err() {
                    ctx.stats.errors_served += 1;
                }
                self.out
                    .extend_from_slice(&http::published(id, &cors, close));
                if close {
                    self.phase = Phase::Closing(Reason::ResponseComplete);
                }
            }
            (None, _) => return false,
        }
        true
    }

    /// The close hook: counts and logs.
    pub fn closed(self, ctx: &mut Context, reason: Reason) {
        ctx.stats.current_controllers -= 1;
        info!("{}: controller closed ({})", self.peer, reason.as_str());
    }

    /// Answers every complete HTTP request in `partial` (keep-alive and
    /// pipelining work); a request over the bounds is answered and closes.
    fn take_http(&mut self, ctx: &mut Context) {
        let limits = &ctx.config.limits;
        let (head_bytes, header_lines) = (limits.head_bytes, limits.header_lines);
        let max_body = limits.controller_line_bytes;
        while self.phase == Phase::Http
            && self.awaiting.is_empty()
            && ctx.commands_left > 0
            && self.backlog() <= OUT_HIGH_WATER
        {
            let Some(head_len) = head_end(&self.partial) else {
                if self.partial.len() > head_bytes {
                    self.fail_http(http::error_response(HttpError::HeadTooLarge), ctx);
                }
                return;
            };
            if head_len > head_bytes {
                return self.fail_http(http::error_response(HttpError::HeadTooLarge), ctx);
            }
            let gate = http::Gate {
                hosts: &ctx.config.controller_hosts,
                origins: &ctx.config.allowed_origins,
                max_body,
            };
            // Malformed heads, foreign Host or Origin, no or too large a
            // length: refused at once, the body unread, and closed.
            let request = http::parse_request(&self.partial[..head_len], header_lines)
                .and_then(|r| http::screen(&r, &gate).map(|()| r));
            let request = match request {
                Ok(request) => request,
                Err(refusal) => return self.fail_http(refusal.response(), ctx),
            };
            let body_len = http::body_len(&request);
            if self.partial.len() < head_len + body_len {
                if request.expect_continue && !self.continued {
                    if let Some(response) = http::refuse_before_body(&request, ctx) {
                        return self.fail_http(response, ctx);
                    }
                    self.out.extend_from_slice(http::CONTINUE);
                    self.continued = true;
                }
                return;
            }
            let target = http::publish_channel(&request).map(str::as_bytes);
            let Some(cost) = cost(ctx, target) else {
                // The rest of the burst goes next turn (`has_room`).
                ctx.commands_left = 0;
                return;
            };
            self.continued = false;
            self.lines += 1;
            self.last_command = ctx.now;
            // The time limit runs for each command from its first byte.
            self.partial_since = None;
            ctx.charge(cost, head_len + body_len);
            let body = &self.partial[head_len..head_len + body_len];
            let close = match http::respond(&request, body, self.peer.ip(), ctx) {
                Answer::Now(response, close) => {
                    self.out.extend_from_slice(&response);
                    close
                }
                Answer::Later { cors } => {
                    let close = request.close;
                    self.awaiting.push_back(Awaiting::Http { cors, close });
                    // Closes once the response is out (see `published`).
                    false
                }
            };
            self.partial.drain(..head_len + body_len);
            if close {
                self.phase = Phase::Closing(Reason::ResponseComplete);
            }
        }
    }

    fn fail_http(&mut self, response: Vec<u8>, ctx: &mut Context) {
        ctx.stats.errors_served += 1;
        self.out.extend_from_slice(&response);
        self.partial = Vec::new();
        self.phase = Phase::Closing(Reason::BadRequest);
    }

    fn reply(&mut self, stats: &mut Stats, bytes: &[u8]) {
        if bytes.starts_with(b"ERR") {
            stats.errors_served += 1;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Appends the next part of a `LISTCHANNELS` answer, and its end once
    /// every channel is listed. Channels created or removed meanwhile are
    /// listed or not depending on their name's place.
    fn list_more(&mut self, ctx: &Context) {
        let Some(listing) = &mut self.listing else {
            return;
        };
        let after = listing.after.take();
        let start = self.out.len();
        let mut last = None;
        let mut more = false;
        for channel in ctx.hub.channels.after(after.as_deref()) {
            if self.out.len() - start >= LIST_CHUNK {
                more = true;
                break;
            }
            self.out.extend_from_slice(&channel.name);
            let _ = write!(
                self.out,
                "({}/{})\r\n",
                channel.message_count(),
                channel.persistent
            );
            last = Some(&*channel.name);
        }
        if more {
            listing.after = last.map(Box::from);
        } else {
            self.out.extend_from_slice(b"--EOT--\r\n");
            self.listing = None;
        }
    }

    /// Executes one line (`line_len` bytes, parsed into `command`) and
    /// queues its reply.
    fn answer(&mut self, line_len: usize, command: Option<Command>, ctx: &mut Context) {
        if line_len > ctx.config.limits.controller_line_bytes {
            self.reply(ctx.stats, b"ERR Line too long\r\n");
            self.phase = Phase::Closing(Reason::LineTooLong);
            return;
        }
        if self.phase == Phase::Locked {
            let ip = self.peer.ip();
            match (command, ctx.config.controller_password.as_deref()) {
                (Some(Command::Auth { .. }), _) if ctx.auth.blocked(ip, ctx.now) => {
                    info!("{}: AUTH refused: too many wrong passwords", self.peer);
                    self.reply(ctx.stats, b"ERR Too many failed attempts, wait\r\n");
                    self.phase = Phase::Closing(Reason::BadPassword);
                }
                (Some(Command::Auth { password }), Some(expected))
                    if same_secret(password, expected) =>
                {
                    ctx.auth.succeeded(ip);
                    self.out.extend_from_slice(b"OK\r\n");
                    self.phase = Phase::Open;
                }
                (Some(Command::Auth { .. }), _) => {
                    ctx.auth.failed(ip, ctx.now);
                    info!("{}: controller sent a wrong password", self.peer);
                    self.reply(ctx.stats, b"ERR Invalid password\r\n");
                    self.phase = Phase::Closing(Reason::BadPassword);
                }
                _ => self.reply(ctx.stats, b"ERR Not authenticated\r\n"),
            }
            return;
        }
        let channels = &ctx.hub.channels;
        // Writing into a Vec cannot fail.
        match command {
            Some(Command::AddMessage { channel, .. } | Command::CountSubscribers { channel })
                if channel.len() > ctx.config.limits.channel_name_length =>
            {
                self.reply(ctx.stats, b"ERR Channel name too long\r\n");
            }
            Some(Command::AddMessage { channel, text }) => {
                match ctx
                    .hub
                    .publish(ctx.stats, Some(ctx.id), channel, text, ctx.now_ms)
                {
                    Publish::Done(id) => {
                        let _ = write!(self.out, "OK\t{id}\r\n");
                    }
                    Publish::Pending => self.awaiting.push_back(Awaiting::Line),
                    Publish::Unavailable => self.reply(ctx.stats, b"ERR Backend unavailable\r\n"),
                    Publish::StorageUnavailable => {
                        self.reply(ctx.stats, b"ERR Storage unavailable\r\n")
                    }
                    // MaxChannels or MaxCachedBytes: ERR <reason>.
                    Publish::Refused(refused) => {
                        self.reply(ctx.stats, format!("ERR {refused}\r\n").as_bytes())
                    }
                }
            }
            Some(Command::CountSubscribers { channel }) => {
                let n = channels.by_name(channel).map_or(0, |c| c.persistent);
                let _ = write!(self.out, "OK {n}\r\n");
            }
            Some(Command::ListChannels) => {
                self.out.extend_from_slice(b"OK\r\n");
                self.listing = Some(Listing { after: None });
                self.list_more(ctx);
            }
            Some(Command::ShowStats) => {
                let stats = &*ctx.stats;
                let _ = write!(
                    self.out,
                    "OK\r\nuptime: {}\r\nchannel_count: {}\r\n",
                    stats.started.elapsed().as_secs(),
                    channels.count()
                );
                for (name, value) in stats.counters() {
                    let _ = write!(self.out, "{name}: {value}\r\n");
                }
                self.out.extend_from_slice(b"--EOT--\r\n");
            }
            Some(Command::ShowStatsCluster) => {
                self.out.extend_from_slice(b"OK\r\n");
                match ctx.hub.cluster() {
                    Some(cluster) => {
                        for (node, counts) in &cluster.view {
                            let _ = write!(self.out, "node {node} {counts}\r\n");
                        }
                    }
                    None => {
                        let _ = write!(
                            self.out,
                            "node standalone current_subscribers={} current_controllers={} channel_count={} messages_served={}\r\n",
                            ctx.stats.current_subscribers,
                            ctx.stats.current_controllers,
                            channels.count(),
                            ctx.stats.messages_served
                        );
                    }
                }
                self.out.extend_from_slice(b"--EOT--\r\n");
            }
            Some(Command::Quit) => {
                self.out.extend_from_slice(b"OK\r\n");
                self.phase = Phase::Closing(Reason::Quit);
            }
            // Publishers configured with a password may talk to a server without one.
            Some(Command::Auth { .. }) => self.out.extend_from_slice(b"OK\r\n"),
            None => self.reply(ctx.stats, b"ERR Invalid command syntax\r\n"),
        }
    }
}
