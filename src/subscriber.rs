//! Browser connections on the subscriber port, as a state machine: reading
//! the request head, streaming events from channel buffers through cursors,
//! or sending one fixed reply before closing.

use crate::channel::{Backlog, Channels, Cursor};
use crate::config::{Config, Mode};
use crate::conn::{Io, READS_PER_TURN, Reason, WRITE_BUDGET, read_some, write_pair, write_some};
use crate::docs::Documents;
use crate::http::{self, HttpError, Route, RouteLimits};
use crate::stats::Stats;
use crate::template::{Placeholder, Template, Value};
use crate::{debug, info};
use mio::net::TcpStream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The program name in `~server~` and `Server:`.
pub const PROGRAM: &str = "meteord";

/// A subscriber-port connection.
pub struct Subscriber {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub state: State,
    /// The deadline this connection has in the server's timer index.
    pub timer: Option<Instant>,
}

/// What the connection is doing; each state owns exactly its data.
pub enum State {
    /// Reading the request head.
    Head(Head),
    /// Sending events: backlog, then (when persistent) new ones.
    Streaming(Streaming),
    /// Sending one fixed response, then closing.
    Reply(Reply),
    /// Waiting for its channels to be loaded from Redis (several nodes).
    Waiting(Waiting),
}

/// A request head being received.
pub struct Head {
    buf: Vec<u8>,
    deadline: Instant,
}

/// A fixed response (document, error, farewell) being written.
pub struct Reply {
    bytes: Rc<[u8]>,
    pos: usize,
    /// Moved on by each write that makes progress (`WriteTimeout` is a stall).
    deadline: Instant,
    stall: Duration,
    /// Why the connection closes once the reply is out.
    reason: Reason,
    /// A document body streamed from disk after `bytes` (its head).
    file: Option<crate::docs::FileBody>,
}

/// A subscriber reading channels.
pub struct Streaming {
    hostid: Box<str>,
    mode: Rc<Mode>,
    cursors: Vec<Cursor>,
    /// Header or ping bytes to send before more events; empty when idle.
    out: Vec<u8>,
    out_pos: usize,
    started: Instant,
    next_ping: Option<Instant>,
    ends_at: Option<Instant>,
    /// Set while the socket would block with bytes still to send.
    blocked_since: Option<Instant>,
    /// Close after this many events (0: never): `MaxMessages`, raised to
    /// the backlog's size since a backlog is always sent whole.
    limit: u64,
    events: u64,
    bytes: u64,
}

/// What the loop should do after driving a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for a readiness event, new data or a timer.
    Wait,
    /// Bytes remain but the turn's share is used: drive again next turn.
    Yield,
    /// The request head is complete: start answering it.
    HeadComplete,
    /// The request head broke a bound: answer with this error.
    Refuse(HttpError),
    Close(Reason),
}

/// What a push request asks for, once routed.
pub struct StreamRequest {
    hostid: String,
    mode_name: String,
    mode: Rc<Mode>,
    user_agent: String,
    cors: String,
    defs: Vec<http::ChannelDef>,
}

/// A push request waiting for channels to be loaded from Redis.
pub struct Waiting {
    request: StreamRequest,
    /// Channels not loaded yet.
    outstanding: usize,
}

/// What answering a request needs from the rest of the server.
pub struct Context<'a> {
    pub config: &'a Config,
    pub channels: &'a mut Channels,
    pub stats: &'a mut Stats,
    pub docs: &'a mut Documents,
    /// Persistent subscribers by hostid.
    pub hosts: &'a mut HashMap<Box<str>, usize>,
    /// Other connections to close with a shutdown message, after this call.
    pub kicks: &'a mut Vec<(usize, Reason)>,
    pub token: usize,
    pub now: Instant,
    /// The Redis side, when this node is one of several.
    pub cluster: Option<&'a mut crate::cluster::Cluster>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Renders a mode's header template with a status, channel info and CORS lines.
fn header(template: &Template, status: &str, channel_info: &[u8], cors: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + channel_info.len());
    let now = unix_now();
    template.render(&mut out, |p| match p {
        Placeholder::Status => Value::Bytes(status.as_bytes()),
        Placeholder::Server => Value::Bytes(PROGRAM.as_bytes()),
        Placeholder::ServerTime => Value::Number(now),
        Placeholder::ChannelInfo => Value::Bytes(channel_info),
        Placeholder::Cors => Value::Bytes(cors.as_bytes()),
        _ => Value::None,
    });
    out
}

impl Subscriber {
    pub fn new(socket: TcpStream, peer: SocketAddr, now: Instant, head_timeout: u64) -> Subscriber {
        Subscriber {
            socket,
            peer,
            state: State::Head(Head {
                buf: Vec::new(),
                deadline: now + Duration::from_secs(head_timeout),
            }),
            timer: None,
        }
    }

    /// The earliest time this connection needs attention.
    pub fn deadline(&self, write_timeout: u64) -> Option<Instant> {
        match &self.state {
            State::Head(h) => Some(h.deadline),
            State::Waiting(_) => None,
            State::Reply(r) => Some(r.deadline),
            State::Streaming(s) => {
                let stall = s
                    .blocked_since
                    .map(|t| t + Duration::from_secs(write_timeout));
                [s.next_ping, s.ends_at, stall].into_iter().flatten().min()
            }
        }
    }

    /// An error reply (global header with an error status), then close.
    pub fn fail(&mut self, config: &Config, error: HttpError, stats: &mut Stats, now: Instant) {
        stats.errors_served += 1;
        let reason = match error {
            HttpError::Timeout => Reason::HeadTimeout,
            HttpError::Unavailable => Reason::TooManyConnections,
            _ => Reason::BadRequest,
        };
        let bytes = header(&config.global_mode.header, error.status(), b"", "");
        self.reply(bytes.into(), reason, now, config.limits.write_timeout);
    }

    fn reply(&mut self, bytes: Rc<[u8]>, reason: Reason, now: Instant, write_timeout: u64) {
        self.state = State::Reply(Reply {
            bytes,
            pos: 0,
            deadline: now + Duration::from_secs(write_timeout),
            stall: Duration::from_secs(write_timeout),
            reason,
            file: None,
        });
    }

    /// Drives the connection after readiness or new data; `readable` says
    /// whether the socket may have input (a flush of new events only writes).
    pub fn drive(
        &mut self,
        channels: &Channels,
        stats: &mut Stats,
        scratch: &mut [u8],
        head_limit: usize,
        readable: bool,
        now: Instant,
    ) -> Step {
        match &mut self.state {
            State::Head(head) => read_head(&mut self.socket, head, scratch, head_limit, stats),
            State::Waiting(_) => match discard_input(&mut self.socket, scratch, stats) {
                Some(reason) if readable => Step::Close(reason),
                _ => Step::Wait,
            },
            State::Reply(reply) => write_reply(&mut self.socket, reply, scratch, stats, now),
            State::Streaming(s) => {
                match readable.then(|| discard_input(&mut self.socket, scratch, stats)) {
                    // A poll whose client half-closed after its request still
                    // gets its reply; a stream ends with its client.
                    Some(Some(Reason::RemoteClosed)) if !s.mode.persist => {}
                    Some(Some(reason)) => return Step::Close(reason),
                    _ => {}
                }
                s.write(&mut self.socket, channels, stats, now)
            }
        }
    }

    /// Tells a streaming subscriber its socket is writable again.
    pub fn writable(&mut self) {
        if let State::Streaming(s) = &mut self.state {
            s.blocked_since = None;
        }
    }

    /// Whether a flush pass should try writing (not waiting on the socket).
    pub fn wants_flush(&self) -> bool {
        matches!(&self.state, State::Streaming(s) if s.blocked_since.is_none())
    }

    /// Whether a streaming subscriber's cursor fell behind what its
    /// channel still holds.
    pub fn lost_events(&self, channels: &Channels) -> bool {
        let State::Streaming(s) = &self.state else {
            return false;
        };
        s.cursors.iter().any(|c| {
            channels
                .get(c.channel)
                .is_some_and(|ch| ch.stream(c.stream).bytes_from(c.pos).is_none())
        })
    }

    /// Handles a due timer: the head deadline, `MaxTime`, a stalled write,
    /// a ping.
    pub fn on_timer(&mut self, config: &Config, stats: &mut Stats, now: Instant) -> Option<Reason> {
        match &mut self.state {
            State::Head(h) if h.deadline <= now => {
                self.fail(config, HttpError::Timeout, stats, now);
                None
            }
            State::Reply(r) if r.deadline <= now => Some(Reason::WriteTimeout),
            State::Streaming(s) => {
                if s.ends_at.is_some_and(|t| t <= now) {
                    return Some(Reason::MaxTime);
                }
                let stall = Duration::from_secs(config.limits.write_timeout);
                if s.blocked_since.is_some_and(|t| t + stall <= now) {
                    return Some(Reason::WriteTimeout);
                }
                if let Some(at) = s.next_ping.filter(|&t| t <= now) {
                    let interval = Duration::from_secs(s.mode.ping_interval);
                    let mut next = at + interval;
                    while next <= now {
                        next += interval;
                    }
                    s.next_ping = Some(next);
                    // Only an idle stream needs a ping; one busy writing is alive.
                    if s.out.is_empty() && s.blocked_since.is_none() {
                        s.out.extend_from_slice(&s.mode.ping);
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Ends streaming on the server's initiative: finishes the event being
    /// written, adds the mode's shutdown message, and closes once sent.
    /// Returns false when the caller should close the connection now.
    pub fn farewell(
        &mut self,
        channels: &mut Channels,
        hosts: &mut HashMap<Box<str>, usize>,
        token: usize,
        reason: Reason,
        write_timeout: u64,
    ) -> bool {
        let s = match &self.state {
            State::Head(_) | State::Waiting(_) => return false,
            // Already sending its last bytes: let them go.
            State::Reply(_) => return true,
            State::Streaming(s) => s,
        };
        // Unsent header or ping, the rest of a half-written event, goodbye.
        let mut bytes = s.out[s.out_pos..].to_vec();
        for cursor in &s.cursors {
            if let Some(channel) = channels.get(cursor.channel) {
                bytes.extend_from_slice(channel.stream(cursor.stream).event_remainder(cursor.pos));
            }
        }
        if s.mode.persist {
            bytes.extend_from_slice(&s.mode.shutdown);
        }
        s.leave(self.peer, channels, hosts, token, reason);
        if bytes.is_empty() {
            return false;
        }
        self.reply(bytes.into(), reason, Instant::now(), write_timeout);
        true
    }

    /// Answers a complete request head: starts streaming, or a reply.
    pub fn start(&mut self, ctx: &mut Context) {
        let State::Head(head) = &mut self.state else {
            return;
        };
        let buf = std::mem::take(&mut head.buf);
        let write_timeout = ctx.config.limits.write_timeout;
        let request = match http::parse_head(&buf, ctx.config.limits.header_lines) {
            Ok(request) => request,
            Err(error) => return self.fail(ctx.config, error, ctx.stats, ctx.now),
        };
        debug!("{}: {} {}", self.peer, request.method, request.target);
        let limits = RouteLimits {
            channel_name_length: ctx.config.limits.channel_name_length,
            channels_per_request: ctx.config.limits.channels_per_request,
        };
        let route = if request.method == "GET" {
            http::route(&request.target, &ctx.config.dynamic_page_address, limits)
        } else {
            Route::BadDocument
        };
        let global = &ctx.config.global_mode;
        let cors = http::cors_lines(&ctx.config.allowed_origins, request.origin.as_deref());
        match route {
            Route::Push {
                hostid,
                mode,
                channels,
            } => {
                let mode_settings = Rc::clone(ctx.config.mode(&mode));
                if channels.is_empty() {
                    ctx.stats.errors_served += 1;
                    let bytes = header(&mode_settings.header, "404 Not Found", b"", &cors);
                    return self.reply(bytes.into(), Reason::NotFound, ctx.now, write_timeout);
                }
                let mut channels = channels;
                if let Some(last) = request.last_event_id {
                    for def in &mut channels {
                        def.backlog = Backlog::FromId(last.saturating_add(1));
                    }
                }
                let request = StreamRequest {
                    hostid,
                    mode_name: mode,
                    mode: mode_settings,
                    user_agent: request.user_agent,
                    cors,
                    defs: channels,
                };
                self.stream_when_loaded(request, ctx);
            }
            Route::Disconnect { hostid } => {
                if let Some(&other) = ctx.hosts.get(hostid.as_str()) {
                    ctx.kicks.push((other, Reason::DisconnectRequested));
                }
                let bytes = header(&global.header, "200 OK", b"", &cors);
                self.reply(
                    bytes.into(),
                    Reason::ResponseComplete,
                    ctx.now,
                    write_timeout,
                );
            }
            Route::TooLarge => self.fail(ctx.config, HttpError::BadRequest, ctx.stats, ctx.now),
            Route::Document { .. } | Route::BadDocument
                if !ctx.docs.enabled() || request.method != "GET" =>
            {
                ctx.stats.errors_served += 1;
                let bytes = header(&global.header, "404 Not Found", b"", &cors);
                self.reply(bytes.into(), Reason::NotFound, ctx.now, write_timeout);
            }
            Route::Document { path } => {
                let doc = ctx.docs.get(&path);
                self.document(&format!("/{path}"), doc, ctx);
            }
            Route::BadDocument => {
                let doc = ctx.docs.not_found();
                let path = request
                    .target
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                self.document(&path, doc, ctx);
            }
        }
    }

    fn document(&mut self, path: &str, doc: crate::docs::Document, ctx: &mut Context) {
        if doc.found {
            ctx.stats.documents_served += 1;
        } else {
            ctx.stats.documents_not_found += 1;
        }
        info!("document\t{path}\t{}\t{}", doc.size, doc.status);
        let reason = if doc.found {
            Reason::ResponseComplete
        } else {
            Reason::NotFound
        };
        self.reply(
            doc.response,
            reason,
            ctx.now,
            ctx.config.limits.write_timeout,
        );
        if let State::Reply(reply) = &mut self.state {
            reply.file = doc.file;
        }
    }

    /// Streams at once, or (several nodes) once every channel is loaded.
    fn stream_when_loaded(&mut self, request: StreamRequest, ctx: &mut Context) {
        let Some(cluster) = ctx.cluster.as_deref_mut() else {
            return self.stream(request, ctx);
        };
        let max = ctx.channels.max_per_channel;
        let outstanding = request
            .defs
            .iter()
            .filter(|def| !cluster.ready_or_wait(&def.name, ctx.channels, ctx.token, max))
            .count();
        if outstanding == 0 {
            return self.stream(request, ctx);
        }
        self.state = State::Waiting(Waiting {
            request,
            outstanding,
        });
    }

    /// One of the channels a waiting request needs is loaded; streams once
    /// all are.
    pub fn loaded(&mut self, channel: &[u8], ctx: &mut Context) {
        let State::Waiting(waiting) = &mut self.state else {
            return;
        };
        // The token may have been reused by another waiting request since
        // it asked: only a channel this request names counts.
        if !waiting.request.defs.iter().any(|d| *d.name == *channel) {
            return;
        }
        waiting.outstanding = waiting.outstanding.saturating_sub(1);
        if waiting.outstanding > 0 {
            return;
        }
        let placeholder = State::Head(Head {
            buf: Vec::new(),
            deadline: ctx.now,
        });
        if let State::Waiting(waiting) = std::mem::replace(&mut self.state, placeholder) {
            self.stream(waiting.request, ctx);
        }
    }

    /// The channels a waiting request holds in place (see `Channels::hold`).
    pub fn waiting_for(&self) -> impl Iterator<Item = &[u8]> {
        let defs = match &self.state {
            State::Waiting(w) => w.request.defs.as_slice(),
            _ => &[],
        };
        defs.iter().map(|d| d.name.as_slice())
    }

    fn stream(&mut self, request: StreamRequest, ctx: &mut Context) {
        let StreamRequest {
            hostid,
            mode_name,
            mode,
            user_agent,
            cors,
            defs,
        } = request;
        if mode.persist
            && let Some(old) = ctx.hosts.insert(hostid.as_str().into(), ctx.token)
        {
            ctx.kicks.push((old, Reason::Replaced));
        }
        // Channel info describes each channel before this subscriber joins.
        let mut info = Vec::new();
        for def in &defs {
            let channel = ctx.channels.by_name(&def.name);
            mode.channel_info.render(&mut info, |p| match p {
                Placeholder::Name => Value::Bytes(&def.name),
                Placeholder::LastMsgId => Value::Number(channel.map_or(0, |c| c.last_id())),
                Placeholder::MessageCount => {
                    Value::Number(channel.map_or(0, |c| c.message_count() as u64))
                }
                Placeholder::SubscriberCount => {
                    Value::Number(channel.map_or(0, |c| c.persistent as u64))
                }
                _ => Value::None,
            });
        }
        let out = header(&mode.header, "200 OK", &info, &cors);
        let mut cursors = Vec::with_capacity(defs.len());
        for def in &defs {
            let start = match def.backlog {
                Backlog::None => "-".to_owned(),
                Backlog::FromId(id) => id.to_string(),
                Backlog::Last(n) => format!("-{n}"),
                Backlog::All => "0".to_owned(),
            };
            info!(
                "joinchannel\t{}\t{hostid}\t{}\t{mode_name}\t{start}\t{user_agent}",
                self.peer.ip(),
                String::from_utf8_lossy(&def.name)
            );
            cursors.push(ctx.channels.attach(
                &def.name,
                &mode.message,
                ctx.token,
                mode.persist,
                def.backlog,
            ));
        }
        let backlog: u64 = cursors
            .iter()
            .filter_map(|c| {
                let stream = ctx.channels.get(c.channel)?.stream(c.stream);
                Some(stream.events_completed(c.pos, stream.head()))
            })
            .sum();
        let limit = match mode.max_messages {
            0 => 0,
            max => max.max(backlog),
        };
        let secs = |s: u64| (s > 0).then(|| ctx.now + Duration::from_secs(s));
        self.state = State::Streaming(Streaming {
            hostid: hostid.into(),
            next_ping: if mode.persist {
                secs(mode.ping_interval)
            } else {
                None
            },
            ends_at: secs(mode.max_time),
            mode,
            cursors,
            out,
            out_pos: 0,
            started: ctx.now,
            blocked_since: None,
            limit,
            events: 0,
            bytes: 0,
        });
    }
}

/// Reads request head bytes; nothing is answered before the head is complete.
fn read_head(
    socket: &mut TcpStream,
    head: &mut Head,
    scratch: &mut [u8],
    limit: usize,
    stats: &mut Stats,
) -> Step {
    for _ in 0..READS_PER_TURN {
        match read_some(socket, scratch) {
            Io::Progress(n) => {
                stats.total_inbound_bytes += n as u64;
                let room = limit.saturating_sub(head.buf.len());
                head.buf.extend_from_slice(&scratch[..n.min(room)]);
                if let Some(end) = http::head_end(&head.buf) {
                    head.buf.truncate(end);
                    return Step::HeadComplete;
                }
                if head.buf.len() >= limit {
                    return Step::Refuse(HttpError::HeadTooLarge);
                }
            }
            Io::WouldBlock => return Step::Wait,
            Io::Closed => return Step::Close(Reason::RemoteClosed),
            Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
        }
    }
    Step::Yield
}

/// Reads and drops what a subscriber sends after its head; notices EOF.
fn discard_input(socket: &mut TcpStream, scratch: &mut [u8], stats: &mut Stats) -> Option<Reason> {
    for _ in 0..READS_PER_TURN {
        match read_some(socket, scratch) {
            Io::Progress(n) => stats.total_inbound_bytes += n as u64,
            Io::WouldBlock => return None,
            Io::Closed => return Some(Reason::RemoteClosed),
            Io::Failed(e) => return Some(Reason::Error(e.kind())),
        }
    }
    None
}

fn write_reply(
    socket: &mut TcpStream,
    reply: &mut Reply,
    scratch: &mut [u8],
    stats: &mut Stats,
    now: Instant,
) -> Step {
    let mut budget = WRITE_BUDGET;
    while reply.pos < reply.bytes.len() {
        let end = reply.bytes.len().min(reply.pos + budget);
        match write_some(socket, &reply.bytes[reply.pos..end]) {
            Io::Progress(n) => {
                reply.pos += n;
                budget -= n;
                stats.total_outbound_bytes += n as u64;
                reply.deadline = now + reply.stall;
                if budget == 0 && reply.pos < reply.bytes.len() {
                    return Step::Yield;
                }
            }
            Io::WouldBlock => return Step::Wait,
            Io::Closed => return Step::Close(Reason::RemoteClosed),
            Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
        }
    }
    if let Some(file) = &mut reply.file {
        use crate::docs::{FileWrite, write_file_reply};
        let sent = stats.total_outbound_bytes;
        let step = write_file_reply(
            socket,
            file,
            scratch,
            &mut budget,
            &mut stats.total_outbound_bytes,
        );
        if stats.total_outbound_bytes > sent {
            reply.deadline = now + reply.stall;
        }
        match step {
            FileWrite::Done => {}
            FileWrite::Yield => return Step::Yield,
            FileWrite::Wait => return Step::Wait,
            FileWrite::Closed => return Step::Close(Reason::RemoteClosed),
            FileWrite::Failed(e) => return Step::Close(Reason::Error(e.kind())),
        }
    }
    Step::Close(reply.reason)
}

impl Streaming {
    /// Leaves every channel and the hostid registry, logging a
    /// `leavechannel` record per channel. Called once, as streaming ends.
    pub fn leave(
        &self,
        peer: SocketAddr,
        channels: &mut Channels,
        hosts: &mut HashMap<Box<str>, usize>,
        token: usize,
        reason: Reason,
    ) {
        let seconds = self.started.elapsed().as_secs();
        for cursor in &self.cursors {
            if let Some(channel) = channels.get(cursor.channel) {
                info!(
                    "leavechannel\t{}\t{}\t{}\t{seconds}\t{}\t{}\t{}",
                    peer.ip(),
                    self.hostid,
                    String::from_utf8_lossy(&channel.name),
                    self.events,
                    self.bytes,
                    reason.as_str()
                );
            }
            channels.detach(cursor, self.mode.persist);
        }
        if self.mode.persist && hosts.get(&self.hostid) == Some(&token) {
            hosts.remove(&self.hostid);
        }
    }

    /// The next run of bytes to send: (cursor index, start, end). Picks the
    /// channel whose next event has the lowest id, and stops before any
    /// other channel's next event so several channels interleave in id order.
    fn next_chunk(&self, channels: &Channels) -> Result<Option<(usize, u64, u64)>, Reason> {
        let mut best: Option<(u64, usize)> = None;
        let mut second = u64::MAX;
        for (i, cursor) in self.cursors.iter().enumerate() {
            let Some(channel) = channels.get(cursor.channel) else {
                continue;
            };
            let stream = channel.stream(cursor.stream);
            if cursor.pos >= cursor.end.min(stream.head()) {
                continue;
            }
            if stream.bytes_from(cursor.pos).is_none() {
                return Err(Reason::SlowConsumer);
            }
            let id = stream.id_at(cursor.pos).unwrap_or(u64::MAX);
            match best {
                Some((best_id, _)) if best_id <= id => second = second.min(id),
                _ => {
                    if let Some((best_id, _)) = best {
                        second = second.min(best_id);
                    }
                    best = Some((id, i));
                }
            }
        }
        let Some((_, i)) = best else {
            return Ok(None);
        };
        let cursor = &self.cursors[i];
        let Some(channel) = channels.get(cursor.channel) else {
            return Ok(None);
        };
        let stream = channel.stream(cursor.stream);
        let mut end = cursor.end.min(stream.head());
        if second != u64::MAX {
            end = end.min(stream.end_of_ids_up_to(second - 1));
        }
        if self.limit > 0 {
            let left = self.limit.saturating_sub(self.events);
            end = end.min(stream.after_events(cursor.pos, left));
        }
        Ok(Some((i, cursor.pos, end)))
    }

    /// Writes pending bytes, the header or ping first, then events, in one
    /// system call for both (a long-poll reply is one `writev`), within the
    /// turn's budget.
    fn write(
        &mut self,
        socket: &mut TcpStream,
        channels: &Channels,
        stats: &mut Stats,
        now: Instant,
    ) -> Step {
        let mut budget = WRITE_BUDGET;
        loop {
            let limit_reached = self.limit > 0 && self.events >= self.limit;
            let chunk = match limit_reached {
                true => None,
                false => match self.next_chunk(channels) {
                    Err(reason) => return Step::Close(reason),
                    Ok(chunk) => chunk,
                },
            };
            if self.out_pos == self.out.len() {
                if !self.out.is_empty() {
                    self.out = Vec::new();
                    self.out_pos = 0;
                }
                match chunk {
                    _ if limit_reached => return Step::Close(Reason::MaxMessages),
                    None if self.mode.persist => return Step::Wait,
                    None => return Step::Close(Reason::ResponseComplete),
                    Some(_) => {}
                }
            }
            if budget == 0 {
                return Step::Yield;
            }
            let (body, stream) = match chunk {
                None => (&[][..], None),
                Some((i, from, to)) => {
                    let cursor = &self.cursors[i];
                    let stream = channels
                        .get(cursor.channel)
                        .map(|c| c.stream(cursor.stream));
                    let Some(bytes) = stream.and_then(|s| s.bytes_from(from)) else {
                        return Step::Close(Reason::SlowConsumer);
                    };
                    (
                        &bytes[..((to - from) as usize).min(budget)],
                        stream.map(|s| (i, from, s)),
                    )
                }
            };
            let head = &self.out[self.out_pos..];
            let head_len = head.len();
            match write_pair(socket, head, body) {
                Io::Progress(n) => {
                    stats.total_outbound_bytes += n as u64;
                    budget = budget.saturating_sub(n);
                    let from_head = n.min(head_len);
                    self.out_pos += from_head;
                    if let (Some((i, from, stream)), true) = (stream, n > from_head) {
                        let cursor = &mut self.cursors[i];
                        cursor.pos += (n - from_head) as u64;
                        let done = stream.events_completed(from, cursor.pos);
                        self.events += done;
                        self.bytes += (n - from_head) as u64;
                        stats.messages_served += done;
                    }
                }
                Io::WouldBlock => {
                    self.blocked_since.get_or_insert(now);
                    return Step::Wait;
                }
                Io::Closed => return Step::Close(Reason::RemoteClosed),
                Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
            }
        }
    }
}
