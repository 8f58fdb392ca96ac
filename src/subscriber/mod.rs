//! Browser connections on the subscriber port, as a state machine: reading
//! the request head, waiting for the hub to have the channels asked for,
//! streaming events from channel buffers through cursors, sending one
//! fixed reply before closing, or (kept alive) waiting for the next request.

pub mod documents;
pub mod keepalive;
pub mod private;
pub mod route;
pub mod stream;
pub mod websocket;

use crate::channel::Backlog;
use crate::config::keys::MAX_SECONDS;
use crate::config::{Config, Mode};
use crate::conn::{ConnId, Reason, Step};
use crate::http::{self, HttpError};
use crate::hub::Hub;
use crate::io::{Io, READS_PER_TURN, WRITE_BUDGET, read_some, write_some};
use crate::proxies::Peer;
use crate::stats::Stats;
use crate::template::{Placeholder, Template, Value};
use crate::wsproto::{self, close};
use crate::{debug, info};
use documents::{Document, Documents, FileBody, FileWrite};
use keepalive::KeepAlive;
use mio::net::TcpStream;
use route::{ChannelDef, Route, RouteLimits};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stream::{Hosts, Streaming};
use websocket::{Handshake, Incoming, WsInput};

/// The program name in `~server~` and `Server:`.
pub const PROGRAM: &str = "meteord";

/// A subscriber-port connection.
pub struct Subscriber {
    pub socket: TcpStream,
    /// Its peer, and the client behind it once a trusted proxy named one.
    pub peer: Peer,
    /// When the last kept-alive reply on this connection went out: the
    /// next poll holds its events until `PollBatchInterval` after it.
    replied: Option<Instant>,
    state: State,
}

/// What the connection is doing; each state owns exactly its data.
enum State {
    /// Reading the request head.
    Head(Head),
    /// Waiting until the hub has every channel asked for (channels shared
    /// with other nodes are loaded first).
    Loading(Loading),
    /// Sending events: backlog, then (when persistent) new ones.
    Streaming(Streaming),
    /// Sending one fixed response, then closing.
    Reply(Reply),
    /// Kept alive after a reply, with no request outstanding: holds no
    /// buffer, only its `KeepAliveTimeout`.
    Idle(Idle),
}

/// A request head being received.
struct Head {
    /// The head, and whatever arrived after it in the same reads.
    buf: Vec<u8>,
    deadline: Instant,
    /// Bytes after the head were dropped (over `MaxRequestHeadBytes`) or
    /// may be left unread: the connection is not kept alive after this
    /// request.
    dropped: bool,
}

impl Head {
    fn new(buf: Vec<u8>, deadline: Instant) -> Head {
        Head {
            buf,
            deadline,
            dropped: false,
        }
    }
}

/// A kept-alive connection between requests.
struct Idle {
    deadline: Instant,
}

/// A fixed response (document, error, farewell) being written.
struct Reply {
    bytes: Rc<[u8]>,
    pos: usize,
    /// Moves on with every write that makes progress: a slow but steady
    /// reader is never cut off.
    deadline: Instant,
    /// Why the connection closes once the reply is out.
    reason: Reason,
    /// A document body streamed from disk after `bytes` (its head).
    file: Option<FileBody>,
}

/// What a push request asks for, once routed.
struct StreamRequest {
    hostid: String,
    mode_name: String,
    mode: Rc<Mode>,
    user_agent: String,
    cors: String,
    defs: Vec<ChannelDef>,
    /// `Sec-WebSocket-Accept` for a WebSocket subscriber.
    accept: Option<String>,
    /// What its token allowed (private channels, bound hostid).
    access: private::Access,
    /// When the connection stays open after the reply: the bytes that
    /// came after the request (the start of the next one).
    keep: Option<Vec<u8>>,
}

/// A push request waiting for its channels.
struct Loading {
    request: StreamRequest,
    /// Channels not ready yet.
    outstanding: usize,
}

/// What subscribers need from the rest of the server, borrowed for one call.
pub struct Context<'a> {
    pub config: &'a Config,
    pub hub: &'a mut Hub,
    pub stats: &'a mut Stats,
    pub docs: &'a mut Documents,
    pub hosts: &'a mut Hosts,
    /// Other connections to end on the server's initiative, after this call.
    pub kicks: &'a mut Vec<(ConnId, Reason)>,
    /// The loop-wide read buffer.
    pub scratch: &'a mut [u8],
    /// The connection being driven.
    pub id: ConnId,
    pub now: Instant,
}

/// What one step of the machine produced.
enum Progress {
    Step(Step),
    /// The request head is complete: answer it.
    HeadComplete,
    /// The request head broke a bound: answer with this error.
    Refuse(HttpError),
    /// A WebSocket stream ends: with a close frame of this payload, or
    /// without one (None).
    WsEnd(Reason, Option<Vec<u8>>),
    /// A kept-alive reply is out (it ended for this reason): wait for the
    /// next request.
    Rested(Reason),
}

/// The close code a WebSocket subscriber gets when its stream ends for
/// `reason`; None when no close frame is sent (the peer is gone).
fn close_code(reason: Reason) -> Option<u16> {
    Some(match reason {
        Reason::ResponseComplete => close::NORMAL,
        Reason::Shutdown => close::GOING_AWAY,
        Reason::Replaced => close::REPLACED,
        Reason::DisconnectRequested => close::DISCONNECTED,
        Reason::MaxTime => close::MAX_TIME,
        Reason::MaxMessages => close::MAX_MESSAGES,
        Reason::WriteTimeout => close::WRITE_TIMEOUT,
        Reason::SlowConsumer => close::SLOW_CONSUMER,
        Reason::NoPong => close::NO_PONG,
        Reason::TokenExpired => close::TOKEN_EXPIRED,
        _ => return None,
    })
}

fn close_payload(reason: Reason) -> Option<Vec<u8>> {
    close_code(reason).map(|c| c.to_be_bytes().to_vec())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long until Unix time `secs` (zero if past), to the nanosecond and
/// at most ten years, like every other deadline.
fn until_unix(secs: u64) -> Duration {
    let most = Duration::from_secs(MAX_SECONDS);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .map_or(most, |at| {
            at.duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(most)
        })
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

/// Answers a connection the server has no room for with a best-effort
/// `503` (one write, no waiting) and drops it.
pub fn refuse(mut socket: TcpStream, config: &Config, stats: &mut Stats) {
    stats.errors_served += 1;
    let bytes = header(
        &config.global_mode.header,
        HttpError::Unavailable.status(),
        b"",
        "",
    );
    if let Io::Progress(n) = write_some(&mut socket, &bytes) {
        stats.total_outbound_bytes += n as u64;
    }
}

impl Subscriber {
    pub fn new(socket: TcpStream, peer: SocketAddr, now: Instant, head_timeout: u64) -> Subscriber {
        Subscriber {
            socket,
            peer: Peer::new(peer),
            replied: None,
            state: State::Head(Head::new(
                Vec::new(),
                now + Duration::from_secs(head_timeout),
            )),
        }
    }

    /// The earliest time this connection needs attention.
    pub fn deadline(&self, write_timeout: u64) -> Option<Instant> {
        match &self.state {
            State::Head(h) => Some(h.deadline),
            State::Idle(i) => Some(i.deadline),
            State::Loading(_) => None,
            State::Reply(r) => Some(r.deadline),
            State::Streaming(s) => {
                let stall = s
                    .blocked_since
                    .map(|t| t + Duration::from_secs(write_timeout));
                [s.next_ping, s.ends_at, stall, s.hold_until]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }

    /// Drives the connection after readiness or new data until it waits,
    /// yields or closes; `readable` says whether the socket may have input
    /// (a flush of new events only writes).
    pub fn ready(&mut self, ctx: &mut Context, readable: bool, writable: bool) -> Step {
        if writable && let State::Streaming(s) = &mut self.state {
            s.blocked_since = None;
        }
        let mut readable = readable;
        loop {
            match self.advance(ctx, readable) {
                Progress::Step(Step::Close(reason)) if self.is_websocket() => {
                    if let Some(step) = self.ws_end(ctx, reason, close_payload(reason)) {
                        return step;
                    }
                }
                Progress::WsEnd(reason, payload) => {
                    if let Some(step) = self.ws_end(ctx, reason, payload) {
                        return step;
                    }
                }
                Progress::Step(step) => return step,
                Progress::HeadComplete => {
                    self.start(ctx);
                    // The head's read took what had arrived; more input (or
                    // the peer's FIN) raises a new readiness event.
                    readable = false;
                }
                Progress::Refuse(error) => self.fail(ctx, error),
                Progress::Rested(reason) => {
                    self.rest(ctx, reason);
                    // A pipelined request waits for the next turn, so that
                    // one client's requests do not hold up everyone else.
                    if matches!(self.state, State::Head(_)) {
                        return Step::Yield;
                    }
                    // Its reads so far took what had arrived.
                    readable = false;
                }
            }
        }
    }

    /// New events were published on one of its channels: writes them, or
    /// drops a subscriber waiting on its socket that has lost events.
    /// A poll holding its events back (`PollBatchInterval`) is left alone:
    /// it is pinned, and its timer sends them.
    pub fn flush(&mut self, ctx: &mut Context) -> Step {
        match &self.state {
            State::Streaming(s) if s.hold_until.is_some_and(|t| ctx.now < t) => Step::Wait,
            State::Streaming(s) if s.blocked_since.is_none() => self.ready(ctx, false, false),
            State::Streaming(s) if s.lost_events(&ctx.hub.channels) => {
                self.end_stream(ctx, Reason::SlowConsumer)
            }
            _ => Step::Wait,
        }
    }

    /// One step of the machine.
    fn advance(&mut self, ctx: &mut Context, readable: bool) -> Progress {
        let stats = &mut *ctx.stats;
        let step = match &mut self.state {
            State::Head(head) => {
                return read_head(&mut self.socket, head, ctx.scratch, ctx.config, stats);
            }
            State::Idle(_) if !readable => Step::Wait,
            State::Idle(_) => {
                // HeadTimeout counts from the read that brings its first byte.
                let deadline = ctx.now + Duration::from_secs(ctx.config.limits.head_timeout);
                let mut head = Head::new(Vec::new(), deadline);
                let progress =
                    read_head(&mut self.socket, &mut head, ctx.scratch, ctx.config, stats);
                if !head.buf.is_empty() {
                    stats.total_requests += 1;
                    self.state = State::Head(head);
                }
                return progress;
            }
            State::Loading(loading) => {
                let before = stats.total_inbound_bytes;
                let end = discard_input(&mut self.socket, ctx.scratch, stats);
                // What arrived is gone: this reply closes its connection.
                if stats.total_inbound_bytes > before {
                    loading.request.keep = None;
                }
                match end {
                    Some(reason) if readable => Step::Close(reason),
                    _ => Step::Wait,
                }
            }
            State::Reply(reply) => write_reply(
                &mut self.socket,
                reply,
                ctx.scratch,
                ctx.config,
                stats,
                ctx.now,
            ),
            State::Streaming(s) if s.ws.is_some() => {
                if readable
                    && let Some(end) = read_frames(
                        &mut self.socket,
                        s,
                        ctx.scratch,
                        &ctx.hub.channels,
                        stats,
                        ctx.now,
                    )
                {
                    return end;
                }
                let step = s.write(&mut self.socket, &ctx.hub.channels, stats, ctx.now);
                s.pin(&mut ctx.hub.channels, matches!(step, Step::Yield));
                step
            }
            State::Streaming(s) => {
                let socket = &mut self.socket;
                let limit = ctx.config.limits.head_bytes;
                let input = readable.then(|| match &mut s.keep {
                    Some(keep) => keep.read_ahead(socket, ctx.scratch, limit, stats),
                    None => discard_input(socket, ctx.scratch, stats),
                });
                match input {
                    // A poll whose client half-closed after its request still
                    // gets its reply (the last on its connection); a stream
                    // ends with its client.
                    Some(Some(Reason::RemoteClosed)) if !s.mode.persist => {
                        if let Some(keep) = &mut s.keep {
                            keep.close_after.get_or_insert(Reason::ResponseComplete);
                        }
                    }
                    Some(Some(reason)) => return Progress::Step(Step::Close(reason)),
                    _ => {}
                }
                let step = s.write(socket, &ctx.hub.channels, stats, ctx.now);
                s.pin(&mut ctx.hub.channels, matches!(step, Step::Yield));
                match (step, &s.keep) {
                    (
                        Step::Close(reason @ (Reason::ResponseComplete | Reason::MaxMessages)),
                        Some(keep),
                    ) => {
                        return match keep.close_after {
                            Some(kicked) => Progress::Step(Step::Close(kicked)),
                            None => Progress::Rested(reason),
                        };
                    }
                    (step, _) => step,
                }
            }
        };
        Progress::Step(step)
    }

    /// An error reply (global header with an error status), then close.
    fn fail(&mut self, ctx: &mut Context, error: HttpError) {
        ctx.stats.errors_served += 1;
        let reason = match error {
            HttpError::Timeout => Reason::HeadTimeout,
            HttpError::Unavailable => Reason::TooManyConnections,
            _ => Reason::BadRequest,
        };
        let bytes = header(&ctx.config.global_mode.header, error.status(), b"", "");
        self.reply(bytes.into(), reason, ctx);
    }

    fn reply(&mut self, bytes: Rc<[u8]>, reason: Reason, ctx: &Context) {
        self.state = State::Reply(Reply {
            bytes,
            pos: 0,
            deadline: ctx.now + Duration::from_secs(ctx.config.limits.write_timeout),
            reason,
            file: None,
        });
    }

    /// A due timer: the head deadline, `MaxTime`, a stalled write, a ping.
    pub fn on_timer(&mut self, ctx: &mut Context) -> Step {
        let now = ctx.now;
        match &mut self.state {
            State::Head(h) if h.deadline <= now => {
                self.fail(ctx, HttpError::Timeout);
            }
            State::Idle(i) if i.deadline <= now => return Step::Close(Reason::IdleTimeout),
            State::Reply(r) if r.deadline <= now => return Step::Close(Reason::WriteTimeout),
            State::Streaming(s) => {
                // A held poll answers now with what came meanwhile, if any.
                if s.hold_until.is_some_and(|t| t <= now) {
                    s.hold_until = None;
                }
                if s.ends_at.is_some_and(|t| t <= now) {
                    if s.ends_by_token {
                        return self.kick(ctx, Reason::TokenExpired);
                    }
                    if s.keep.is_none() {
                        return self.end_stream(ctx, Reason::MaxTime);
                    }
                    // A kept-alive poll answers with what it has (a reply
                    // being written finishes) and waits for the next request.
                    s.ends_at = None;
                    if s.unframed() {
                        s.frame(&ctx.hub.channels, b"");
                    }
                }
                let stall = Duration::from_secs(ctx.config.limits.write_timeout);
                if s.blocked_since.is_some_and(|t| t + stall <= now) {
                    return self.end_stream(ctx, Reason::WriteTimeout);
                }
                if let Some(at) = s.next_ping.filter(|&t| t <= now) {
                    let interval = Duration::from_secs(s.mode.ping_interval);
                    let mut next = at + interval;
                    while next <= now {
                        next += interval;
                    }
                    s.next_ping = Some(next);
                    if s.ws.as_ref().is_some_and(|ws| ws.awaiting_pong) {
                        return self.end_stream(ctx, Reason::NoPong);
                    }
                    // Only an idle stream needs a ping; one busy writing is alive.
                    if s.out.is_empty() && s.blocked_since.is_none() {
                        match &mut s.ws {
                            Some(ws) => {
                                ws.awaiting_pong = true;
                                if s.settle(&ctx.hub.channels, ctx.stats) {
                                    wsproto::frame(&mut s.out, wsproto::OP_PING, b"");
                                }
                            }
                            None => s.out.extend_from_slice(&s.mode.ping),
                        }
                    }
                }
            }
            _ => {}
        }
        self.ready(ctx, false, false)
    }

    /// Ends the connection on the server's initiative (replaced hostid,
    /// disconnect request, shutdown): finishes the event being written,
    /// adds the mode's shutdown message, and closes once sent.
    pub fn kick(&mut self, ctx: &mut Context, reason: Reason) -> Step {
        if self.is_websocket() {
            return self.end_stream(ctx, reason);
        }
        let s = match &mut self.state {
            State::Head(_) | State::Loading(_) | State::Idle(_) => return Step::Close(reason),
            // Already sending its last bytes: let them go.
            State::Reply(_) => return self.ready(ctx, false, false),
            State::Streaming(s) => s,
        };
        let mode = Rc::clone(&s.mode);
        let farewell = if mode.persist {
            &mode.shutdown[..]
        } else {
            b""
        };
        if let Some(keep) = &mut s.keep {
            keep.close_after = Some(reason);
            // A kept-alive reply whose length is announced goes out whole,
            // then the connection closes; one not yet framed carries every
            // event there is (a poll holding them back by
            // `PollBatchInterval` has some), then the goodbye.
            if !keep.framed {
                s.frame(&ctx.hub.channels, farewell);
            }
            return self.ready(ctx, false, false);
        }
        // Unsent header or ping, the rest of a half-written event, goodbye.
        let channels = &mut ctx.hub.channels;
        let mut bytes = s.out[s.out_pos..].to_vec();
        for cursor in &s.cursors {
            if let Some(channel) = channels.get(cursor.channel) {
                bytes.extend_from_slice(channel.stream(cursor.stream).event_remainder(cursor.pos));
            }
        }
        bytes.extend_from_slice(farewell);
        s.leave(self.peer.ip(), channels, ctx.hosts, ctx.id, reason);
        if bytes.is_empty() {
            return Step::Close(reason);
        }
        self.reply(bytes.into(), reason, ctx);
        self.ready(ctx, false, false)
    }

    /// Whether it is streaming to a WebSocket subscriber.
    fn is_websocket(&self) -> bool {
        matches!(&self.state, State::Streaming(s) if s.ws.is_some())
    }

    /// Ends a stream on the server's initiative: a WebSocket subscriber
    /// gets its close frame first.
    fn end_stream(&mut self, ctx: &mut Context, reason: Reason) -> Step {
        if !self.is_websocket() {
            return Step::Close(reason);
        }
        match self.ws_end(ctx, reason, close_payload(reason)) {
            Some(step) => step,
            None => self.ready(ctx, false, false),
        }
    }

    /// Ends a WebSocket stream: the rest of a half-written event, the
    /// mode's `SubscriberShutdownMsg` as a text frame (replaced hostid,
    /// disconnect, shutdown), then a close frame of `payload`; the
    /// connection closes once they are sent. Some(step) when it closes at
    /// once instead (no close frame, or none can be framed).
    fn ws_end(
        &mut self,
        ctx: &mut Context,
        reason: Reason,
        payload: Option<Vec<u8>>,
    ) -> Option<Step> {
        let State::Streaming(s) = &mut self.state else {
            return Some(Step::Close(reason));
        };
        let whole = s.settle(&ctx.hub.channels, ctx.stats);
        let bytes = payload.filter(|_| whole).map(|payload| {
            let mut bytes = s.out[s.out_pos..].to_vec();
            let farewell = matches!(
                reason,
                Reason::Replaced
                    | Reason::DisconnectRequested
                    | Reason::Shutdown
                    | Reason::TokenExpired
            );
            if farewell && !s.mode.shutdown.is_empty() {
                wsproto::text_frame(&mut bytes, &s.mode.shutdown);
            }
            wsproto::frame(&mut bytes, wsproto::OP_CLOSE, &payload);
            bytes
        });
        s.leave(
            self.peer.ip(),
            &mut ctx.hub.channels,
            ctx.hosts,
            ctx.id,
            reason,
        );
        let Some(bytes) = bytes else {
            // Left its channels: the close hook must not leave them again.
            self.state = State::Idle(Idle { deadline: ctx.now });
            return Some(Step::Close(reason));
        };
        self.reply(bytes.into(), reason, ctx);
        None
    }

    /// The close hook: leaves channels and the hostid registry, lets go of
    /// channels it waited for, counts and logs.
    pub fn closed(self, ctx: &mut Context, reason: Reason) {
        match &self.state {
            State::Streaming(s) => s.leave(
                self.peer.ip(),
                &mut ctx.hub.channels,
                ctx.hosts,
                ctx.id,
                reason,
            ),
            State::Loading(loading) => {
                for def in &loading.request.defs {
                    ctx.hub.channels.release(&def.name);
                }
            }
            State::Head(_) | State::Reply(_) | State::Idle(_) => {}
        }
        ctx.stats.current_subscribers -= 1;
        if matches!(reason, Reason::SlowConsumer | Reason::WriteTimeout) {
            ctx.stats.slow_consumers_dropped += 1;
            info!(
                "{}: dropped slow subscriber ({})",
                self.peer,
                reason.as_str()
            );
        } else if let Reason::Error(kind) = reason {
            info!("{}: subscriber closed on a socket error: {kind}", self.peer);
        } else {
            debug!("{}: subscriber closed ({})", self.peer, reason.as_str());
        }
    }

    /// A kept-alive reply is out: leaves its channels and waits for the
    /// next request, which may have arrived already.
    fn rest(&mut self, ctx: &mut Context, reason: Reason) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        s.leave(
            self.peer.ip(),
            &mut ctx.hub.channels,
            ctx.hosts,
            ctx.id,
            reason,
        );
        let next = s.keep.take().map(|k| k.next).unwrap_or_default();
        self.replied = Some(ctx.now);
        let limits = &ctx.config.limits;
        self.state = if next.is_empty() {
            State::Idle(Idle {
                deadline: ctx.now + Duration::from_secs(limits.keep_alive_timeout),
            })
        } else {
            ctx.stats.total_requests += 1;
            State::Head(Head::new(
                next,
                ctx.now + Duration::from_secs(limits.head_timeout),
            ))
        };
    }

    /// Answers a complete request head: starts streaming, or a reply.
    fn start(&mut self, ctx: &mut Context) {
        let State::Head(head) = &mut self.state else {
            return;
        };
        let mut buf = std::mem::take(&mut head.buf);
        let dropped = head.dropped;
        let end = http::head_end(&buf).unwrap_or(buf.len());
        let after = buf.split_off(end);
        let request = match http::parse_head(&buf, ctx.config.limits.header_lines) {
            Ok(request) => request,
            Err(error) => return self.fail(ctx, error),
        };
        self.peer
            .forwarded(&ctx.config.trusted_proxies, &request.forwarding);
        debug!(
            "{}: {} {}",
            self.peer,
            request.method,
            private::redact(&request.target)
        );
        let limits = RouteLimits {
            channel_name_length: ctx.config.limits.channel_name_length,
            channels_per_request: ctx.config.limits.channels_per_request,
        };
        let route = if request.method == "GET" {
            route::route(&request.target, &ctx.config.dynamic_page_address, limits)
        } else {
            Route::BadDocument
        };
        let global = &ctx.config.global_mode;
        let mut accept_key = None;
        let cors = http::cors_lines(&ctx.config.allowed_origins, request.origin.as_deref());
        // Private channels and bound hostids: a token, or a refusal.
        let access = match private::check(
            &route,
            &request,
            ctx.config,
            ctx.hosts,
            self.peer.ip(),
            unix_now(),
        ) {
            Ok(access) => access,
            Err(denied) => {
                ctx.stats.errors_served += 1;
                let bytes = denied.response(&cors);
                return self.reply(bytes.into(), Reason::Unauthorized, ctx);
            }
        };
        match route {
            Route::Push {
                hostid,
                mode,
                channels,
            } => {
                let mode_settings = Rc::clone(ctx.config.mode(&mode));
                let allowed = &ctx.config.allowed_origins;
                let refusal = match websocket::handshake(&request.upgrade) {
                    Handshake::Broken => Some("400 Bad Request"),
                    Handshake::WrongVersion => Some("426 Upgrade Required"),
                    Handshake::None if mode_settings.websocket_only => Some("400 Bad Request"),
                    Handshake::Accept(_)
                        if !allowed.is_empty()
                            && request
                                .origin
                                .as_deref()
                                .is_some_and(|o| !http::origin_allowed(allowed, o)) =>
                    {
                        Some("403 Forbidden")
                    }
                    Handshake::Accept(_) if channels.is_empty() => Some("404 Not Found"),
                    Handshake::Accept(accept) => {
                        accept_key = Some(accept);
                        None
                    }
                    Handshake::None => None,
                };
                if let Some(status) = refusal {
                    ctx.stats.errors_served += 1;
                    let bytes = websocket::refusal(status, PROGRAM);
                    return self.reply(bytes.into(), Reason::BadRequest, ctx);
                }
                if channels.is_empty() {
                    ctx.stats.errors_served += 1;
                    let bytes = header(&mode_settings.header, "404 Not Found", b"", &cors);
                    return self.reply(bytes.into(), Reason::NotFound, ctx);
                }
                let mut channels = channels;
                if let Some(last) = request.last_event_id {
                    for def in &mut channels {
                        def.backlog = Backlog::FromId(last.saturating_add(1));
                    }
                }
                let keep = (accept_key.is_none()
                    && !dropped
                    && keepalive::wanted(
                        &request,
                        &mode_settings,
                        ctx.config.limits.keep_alive_timeout,
                    ))
                .then_some(after);
                let request = StreamRequest {
                    hostid,
                    mode_name: mode,
                    mode: mode_settings,
                    user_agent: request.user_agent,
                    cors,
                    defs: channels,
                    accept: accept_key,
                    access,
                    keep,
                };
                self.stream_when_ready(request, ctx);
            }
            Route::Disconnect { hostid } => {
                if let Some(other) = ctx.hosts.get(hostid.as_str()) {
                    ctx.kicks.push((other.conn, Reason::DisconnectRequested));
                }
                let bytes = header(&global.header, "200 OK", b"", &cors);
                self.reply(bytes.into(), Reason::ResponseComplete, ctx);
            }
            Route::TooLarge => self.fail(ctx, HttpError::BadRequest),
            Route::Document { .. } | Route::BadDocument
                if !ctx.docs.enabled() || request.method != "GET" =>
            {
                ctx.stats.errors_served += 1;
                let bytes = header(&global.header, "404 Not Found", b"", &cors);
                self.reply(bytes.into(), Reason::NotFound, ctx);
            }
            Route::Document { path } => {
                let doc = ctx.docs.get(&path);
                self.document(&format!("/{path}"), doc, ctx);
            }
            Route::BadDocument => {
                let doc = ctx.docs.not_found();
                let path = request.target.split('?').next().unwrap_or_default();
                self.document(path, doc, ctx);
            }
        }
    }

    fn document(&mut self, path: &str, doc: Document, ctx: &mut Context) {
        let reason = if doc.found {
            ctx.stats.documents_served += 1;
            Reason::ResponseComplete
        } else {
            ctx.stats.documents_not_found += 1;
            Reason::NotFound
        };
        info!("document\t{path}\t{}\t{}", doc.size, doc.status);
        self.reply(doc.response, reason, ctx);
        if let State::Reply(reply) = &mut self.state {
            reply.file = doc.file;
        }
    }

    /// Streams at once, or once the hub has every channel.
    fn stream_when_ready(&mut self, request: StreamRequest, ctx: &mut Context) {
        let outstanding = request
            .defs
            .iter()
            .filter(|def| !ctx.hub.ready_or_wait(&def.name, ctx.id))
            .count();
        if outstanding == 0 {
            return self.stream(request, ctx);
        }
        self.state = State::Loading(Loading {
            request,
            outstanding,
        });
    }

    /// The hub has one of the channels a waiting request asked for (this
    /// connection asked for it: a completion names its connection by an
    /// identity never reused); streams once all are there.
    pub fn loaded(&mut self, ctx: &mut Context, channel: &[u8]) -> Step {
        let State::Loading(loading) = &mut self.state else {
            return Step::Wait;
        };
        if !loading.request.defs.iter().any(|d| *d.name == *channel) {
            return Step::Wait;
        }
        loading.outstanding = loading.outstanding.saturating_sub(1);
        if loading.outstanding > 0 {
            return Step::Wait;
        }
        let placeholder = State::Idle(Idle { deadline: ctx.now });
        if let State::Loading(loading) = std::mem::replace(&mut self.state, placeholder) {
            self.stream(loading.request, ctx);
        }
        self.ready(ctx, false, false)
    }

    fn stream(&mut self, request: StreamRequest, ctx: &mut Context) {
        let StreamRequest {
            hostid,
            mode_name,
            mode,
            user_agent,
            cors,
            defs,
            accept,
            access,
            keep,
        } = request;
        let host = stream::Host {
            conn: ctx.id,
            bound: access.bound,
        };
        if mode.persist
            && let Some(old) = ctx.hosts.insert(hostid.as_str().into(), host)
        {
            ctx.kicks.push((old.conn, Reason::Replaced));
        }
        let channels = &mut ctx.hub.channels;
        // Channel info describes each channel before this subscriber joins.
        // A WebSocket subscriber gets its 101, then one frame per channel.
        let (mut out, info_template, message) = match &accept {
            Some(accept) => (
                websocket::switching_protocols(accept, PROGRAM),
                &mode.ws_channel_info,
                &mode.ws_message,
            ),
            None => (Vec::new(), &mode.channel_info, &mode.message),
        };
        let mut info = Vec::new();
        for def in &defs {
            let channel = channels.by_name(&def.name);
            info_template.render(&mut info, |p| match p {
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
        match accept {
            Some(_) => out.extend_from_slice(&info),
            None => out = header(&mode.header, "200 OK", &info, &cors),
        }
        let keep = keep.and_then(|next| KeepAlive::new(&out, next));
        if keep.is_some() {
            // The header waits with the poll until its length is known.
            out.shrink_to_fit();
        }
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
            cursors.push(channels.attach(&def.name, message, ctx.id, mode.persist, def.backlog));
        }
        let backlog: u64 = cursors
            .iter()
            .filter_map(|c| {
                let stream = channels.get(c.channel)?.stream(c.stream);
                Some(stream.events_completed(c.pos, stream.head()))
            })
            .sum();
        let limit = match mode.max_messages {
            0 => 0,
            max => max.max(backlog),
        };
        let secs = |s: u64| (s > 0).then(|| ctx.now + Duration::from_secs(s));
        // The stream ends at MaxTime, or when its token expires if sooner.
        let token_end = access.expires.map(|exp| ctx.now + until_unix(exp));
        let (ends_at, ends_by_token) = match (secs(mode.max_time), token_end) {
            (Some(max_time), Some(token)) if token < max_time => (Some(token), true),
            (None, Some(token)) => (Some(token), true),
            (max_time, _) => (max_time, false),
        };
        // A poll that comes sooner than `PollBatchInterval` after its
        // connection's last reply holds its events until then. A
        // non-persistent one answers at once: it takes no new events.
        let hold_until = self
            .replied
            .filter(|_| keep.is_some() && mode.persist)
            .map(|at| at + mode.poll_batch)
            .filter(|&at| at > ctx.now);
        self.state = State::Streaming(Streaming {
            hostid: hostid.into(),
            // A ping would be part of a kept-alive reply's body.
            next_ping: if mode.persist && keep.is_none() {
                secs(mode.ping_interval)
            } else {
                None
            },
            ends_at,
            ends_by_token,
            mode,
            cursors,
            out,
            out_pos: 0,
            started: ctx.now,
            blocked_since: None,
            pinned: false,
            limit,
            events: 0,
            bytes: 0,
            ws: accept.map(|_| Box::new(WsInput::new(ctx.now))),
            frame_left: 0,
            hold_until,
            keep,
        });
    }
}

/// Reads request head bytes; nothing is answered before the head is complete.
fn read_head(
    socket: &mut TcpStream,
    head: &mut Head,
    scratch: &mut [u8],
    config: &Config,
    stats: &mut Stats,
) -> Progress {
    let limit = config.limits.head_bytes;
    // A kept-alive connection's next request may be here already.
    if http::head_end(&head.buf).is_some() {
        return Progress::HeadComplete;
    }
    if head.buf.len() >= limit {
        return Progress::Refuse(HttpError::HeadTooLarge);
    }
    for _ in 0..READS_PER_TURN {
        match read_some(socket, scratch) {
            Io::Progress(n) => {
                stats.total_inbound_bytes += n as u64;
                let room = limit.saturating_sub(head.buf.len());
                head.buf.extend_from_slice(&scratch[..n.min(room)]);
                if http::head_end(&head.buf).is_some() {
                    // What came after the head is kept for a kept-alive
                    // connection's next request, unless some is lost.
                    head.dropped = n > room || n == scratch.len();
                    return Progress::HeadComplete;
                }
                if head.buf.len() >= limit {
                    return Progress::Refuse(HttpError::HeadTooLarge);
                }
            }
            Io::WouldBlock => return Progress::Step(Step::Wait),
            Io::Closed => return Progress::Step(Step::Close(Reason::RemoteClosed)),
            Io::Failed(e) => return Progress::Step(Step::Close(Reason::Error(e.kind()))),
        }
    }
    Progress::Step(Step::Yield)
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

/// Writes a fixed reply within the turn's budget; each write that makes
/// progress moves the reply's deadline on by `WriteTimeout`.
fn write_reply(
    socket: &mut TcpStream,
    reply: &mut Reply,
    scratch: &mut [u8],
    config: &Config,
    stats: &mut Stats,
    now: Instant,
) -> Step {
    let stall = Duration::from_secs(config.limits.write_timeout);
    let mut budget = WRITE_BUDGET;
    while reply.pos < reply.bytes.len() {
        let end = reply.bytes.len().min(reply.pos + budget);
        match write_some(socket, &reply.bytes[reply.pos..end]) {
            Io::Progress(n) => {
                reply.pos += n;
                budget -= n;
                stats.total_outbound_bytes += n as u64;
                reply.deadline = now + stall;
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
        let sent = stats.total_outbound_bytes;
        let result = documents::write_file_reply(
            socket,
            file,
            scratch,
            &mut budget,
            &mut stats.total_outbound_bytes,
        );
        if stats.total_outbound_bytes > sent {
            reply.deadline = now + stall;
        }
        match result {
            FileWrite::Done => {}
            FileWrite::Yield => return Step::Yield,
            FileWrite::Wait => return Step::Wait,
            FileWrite::Closed => return Step::Close(Reason::RemoteClosed),
            FileWrite::Failed(e) => return Step::Close(Reason::Error(e.kind())),
        }
    }
    Step::Close(reply.reason)
}

/// Reads what a WebSocket subscriber sent: pongs go out between frames,
/// pongs and pings are counted against the frame rate. Some(end) when the
/// stream ends (a close frame, a broken frame, a flood, the peer gone).
fn read_frames(
    socket: &mut TcpStream,
    s: &mut Streaming,
    scratch: &mut [u8],
    channels: &crate::channel::Channels,
    stats: &mut Stats,
    now: Instant,
) -> Option<Progress> {
    let end = |reason, code: u16| Some(Progress::WsEnd(reason, Some(code.to_be_bytes().to_vec())));
    for _ in 0..READS_PER_TURN {
        let n = match read_some(socket, scratch) {
            Io::Progress(n) => n,
            Io::WouldBlock => return None,
            Io::Closed => return Some(Progress::WsEnd(Reason::RemoteClosed, None)),
            Io::Failed(e) => return Some(Progress::WsEnd(Reason::Error(e.kind()), None)),
        };
        stats.total_inbound_bytes += n as u64;
        let ws = s.ws.as_mut()?;
        let mut replies = Vec::new();
        let result = ws.feed(&mut scratch[..n], now, |incoming| {
            if let Incoming::Ping(payload) = incoming {
                wsproto::frame(&mut replies, wsproto::OP_PONG, payload);
            }
        });
        if !replies.is_empty() {
            if !s.settle(channels, stats) {
                return Some(Progress::WsEnd(Reason::SlowConsumer, None));
            }
            s.out.extend_from_slice(&replies);
            if s.out.len() - s.out_pos > websocket::MAX_PENDING_REPLIES {
                return end(Reason::ProtocolError, close::POLICY_VIOLATION);
            }
        }
        match result {
            Ok(None) => {}
            Ok(Some(echo)) => return Some(Progress::WsEnd(Reason::RemoteClosed, Some(echo))),
            Err(code) => return end(Reason::ProtocolError, code),
        }
    }
    None
}
