//! The event loop: one `mio::Poll`, every socket in one slab. The loop only
//! dispatches (readiness, timers, signals) to the connection state machines,
//! flushes new events to subscribers before each poll, and owns the one
//! place where a connection closes.

use crate::channel::Channels;
use crate::cluster::{Cluster, Completion, Received};
use crate::config::{self, Config, RawSettings};
use crate::conn::{COMMANDS_PER_TURN, Conn, INPUT_BYTES_PER_TURN, Reason, SCRATCH_BYTES};
use crate::controller::{self, Controller};
use crate::docs::Documents;
use crate::http::HttpError;
use crate::stats::Stats;
use crate::subscriber::{self, State, Step, Subscriber};
use crate::{debug, info, log};
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted per listener per turn before others get a go.
const ACCEPTS_PER_TURN: usize = 256;
/// Descriptors kept free for listeners, files and the signal pipe.
const RESERVED_FDS: usize = 32;

/// The signals the loop reacts to, each raising its own flag.
struct Signals {
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    usr2: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    /// Routes SIGHUP, SIGUSR1, SIGUSR2, SIGTERM and SIGINT into the loop:
    /// each raises its flag and writes to a self-pipe the loop polls.
    fn register(poll: &Poll, conns: &mut Slab<Conn>) -> io::Result<Signals> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let flag = |signals: &[i32]| -> io::Result<Arc<AtomicBool>> {
            let raised = Arc::new(AtomicBool::new(false));
            for &signal in signals {
                signal_hook::flag::register(signal, Arc::clone(&raised))?;
                signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
            }
            Ok(raised)
        };
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
        let signals = Signals {
            hup: flag(&[SIGHUP])?,
            usr1: flag(&[SIGUSR1])?,
            usr2: flag(&[SIGUSR2])?,
            term: flag(&[SIGTERM, SIGINT])?,
        };
        // SAFETY: the descriptor comes straight from a std UnixStream we own.
        let mut reader = unsafe { UnixStream::from_raw_fd(reader.into_raw_fd()) };
        let entry = conns.vacant_entry();
        poll.registry()
            .register(&mut reader, Token(entry.key()), Interest::READABLE)?;
        entry.insert(Conn::Signals(reader));
        Ok(signals)
    }
}

/// The whole server state. Fields are separate so that a connection and
/// the channels can be borrowed at once.
pub struct Server {
    poll: Poll,
    conns: Slab<Conn>,
    config: Config,
    command_line: RawSettings,
    channels: Channels,
    stats: Stats,
    docs: Documents,
    /// Persistent subscribers by hostid.
    hosts: HashMap<Box<str>, usize>,
    /// (deadline, token) of every connection that has one.
    timers: BTreeSet<(Instant, usize)>,
    /// Connections that yielded with work left, driven again next turn.
    pending: Vec<usize>,
    /// Connections to close on the server's initiative, after the current dispatch.
    kicks: Vec<(usize, Reason)>,
    /// Listener tokens, to resume accepting or to stop on shutdown.
    listeners: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// Set once SIGTERM or SIGINT arrived: when to give up draining.
    draining_until: Option<Instant>,
    max_subscribers: usize,
    signals: Signals,
    scratch: Vec<u8>,
    /// Reused list of a channel's subscriber tokens during a flush.
    fanout: Vec<usize>,
    /// The Redis side when `RedisAddress` is set; None when standalone.
    cluster: Option<Cluster>,
}

/// The controller context, built from the server's fields (a macro so that
/// the borrow of one connection and of the rest can coexist).
macro_rules! controller_context {
    ($server:ident, $token:expr) => {
        controller::Context {
            channels: &mut $server.channels,
            stats: &mut $server.stats,
            max_line: $server.config.limits.controller_line_bytes,
            max_channel_name: $server.config.limits.channel_name_length,
            password: $server.config.controller_password.as_deref(),
            allowed_origins: &$server.config.allowed_origins,
            head_bytes: $server.config.limits.head_bytes,
            header_lines: $server.config.limits.header_lines,
            now_ms: unix_ms(),
            cluster: $server.cluster.as_mut(),
            token: $token,
            commands_left: COMMANDS_PER_TURN,
            bytes_left: INPUT_BYTES_PER_TURN,
        }
    };
}

/// The subscriber context, likewise.
macro_rules! subscriber_context {
    ($server:ident, $token:expr, $now:expr) => {
        subscriber::Context {
            config: &$server.config,
            channels: &mut $server.channels,
            stats: &mut $server.stats,
            docs: &mut $server.docs,
            hosts: &mut $server.hosts,
            kicks: &mut $server.kicks,
            token: $token,
            now: $now,
            cluster: $server.cluster.as_mut(),
        }
    };
}

/// Milliseconds since the epoch, the clock of message timestamps.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds a listener with a deep accept queue: browsers reconnect in bursts
/// (every long-poll client at once after each event), and a full queue
/// drops connects that then wait a whole second for the SYN retransmission.
fn bind(addr: SocketAddr, what: &str, backlog: i32) -> io::Result<TcpListener> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(context)?;
    // mio listens with 128; listening again raises it (the kernel caps it
    // at net.core.somaxconn).
    // SAFETY: listen() on a socket we own, with a plain integer.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } == -1 {
        return Err(context(io::Error::last_os_error()));
    }
    Ok(listener)
}

impl Server {
    /// Binds the listeners and sets up signals; `fd_limit` is the open-file
    /// limit the process runs with.
    pub fn new(config: Config, command_line: RawSettings, fd_limit: usize) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut conns = Slab::new();
        // Signals first: from the moment the ports are announced, a signal
        // must reach the loop instead of its default action.
        let signals = Signals::register(&poll, &mut conns)?;
        // UDP first: once the TCP ports are announced, everything listens.
        if let Some(addr) = config.udp_addr {
            let mut socket = UdpSocket::bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen for UDP on {addr}: {e}"))
            })?;
            let entry = conns.vacant_entry();
            poll.registry()
                .register(&mut socket, Token(entry.key()), Interest::READABLE)?;
            info!("listening for UDP on {}", socket.local_addr()?);
            entry.insert(Conn::Udp(socket));
        }
        let mut listeners = Vec::new();
        for (addr, what) in [
            (config.subscriber_addr, "subscribers"),
            (config.controller_addr, "controllers"),
        ] {
            let mut listener = bind(addr, what, config.limits.listen_backlog)?;
            let entry = conns.vacant_entry();
            poll.registry()
                .register(&mut listener, Token(entry.key()), Interest::READABLE)?;
            info!("listening for {what} on {}", listener.local_addr()?);
            listeners.push(entry.key());
            entry.insert(if what == "subscribers" {
                Conn::SubscriberListener(listener)
            } else {
                Conn::ControllerListener(listener)
            });
        }

        let max_subscribers = match config.limits.subscribers {
            0 => fd_limit
                .saturating_sub(RESERVED_FDS + config.limits.controllers)
                .max(1),
            n => n,
        };
        info!(
            "open-file limit {fd_limit}: up to {max_subscribers} subscribers and {} controllers at once",
            config.limits.controllers
        );
        for warning in &config.warnings {
            info!("warning: {warning}");
        }
        let cluster = config.redis.clone().map(|settings| {
            let node = format!("{}-{}", config.subscriber_addr, std::process::id());
            info!(
                "sharing channels through redis {} as node {node}",
                settings.addr
            );
            Cluster::new(settings, node, Instant::now())
        });
        Ok(Server {
            poll,
            conns,
            channels: Channels::with_bounds(
                config.max_messages_per_channel,
                config.max_message_age,
                config.max_cached_bytes,
                config.max_channels,
            ),
            stats: Stats::default(),
            docs: Documents::new(config.document_root.clone(), config.directory_index.clone()),
            config,
            command_line,
            hosts: HashMap::new(),
            timers: BTreeSet::new(),
            pending: Vec::new(),
            kicks: Vec::new(),
            listeners,
            accept_paused_until: None,
            draining_until: None,
            max_subscribers,
            signals,
            scratch: vec![0; SCRATCH_BYTES],
            fanout: Vec::new(),
            cluster,
        })
    }

    /// Runs until a shutdown completes; returns the process exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        loop {
            self.flush();
            if let Some(until) = self.draining_until {
                let left = self
                    .conns
                    .iter()
                    .filter(|(_, c)| matches!(c, Conn::Controller(_) | Conn::Subscriber(_)))
                    .count();
                if left == 0 {
                    info!("shutdown complete");
                    return 0;
                }
                if Instant::now() >= until {
                    info!("shutdown: giving up with {left} connections still draining");
                    return 1;
                }
            }
            let timeout = self.poll_timeout();
            log::flush();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                info!("poll failed: {e}; exiting");
                return 1;
            }
            for event in events.iter() {
                self.ready(
                    event.token().0,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                );
                self.run_kicks();
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.tick_cluster(now);
            self.channels.expire(unix_ms());
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                for token in self.listeners.clone() {
                    self.accept(token);
                }
            }
        }
    }

    /// Sleeps until the nearest deadline: a connection timer, a message
    /// expiry, the end of an accept pause or of the shutdown drain.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let expiry = self
            .channels
            .next_expiry_ms()
            .map(|ms| now + Duration::from_millis(ms.saturating_sub(unix_ms())));
        [
            self.cluster.as_ref().and_then(Cluster::deadline),
            self.timers.first().map(|&(t, _)| t),
            expiry,
            self.accept_paused_until,
            self.draining_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Dispatches one readiness event.
    fn ready(&mut self, token: usize, readable: bool, writable: bool) {
        match self.conns.get_mut(token) {
            None => {}
            Some(Conn::SubscriberListener(_) | Conn::ControllerListener(_)) => self.accept(token),
            Some(Conn::Signals(_)) => self.on_signals(token),
            Some(Conn::Udp(_)) => self.receive_datagrams(token),
            Some(Conn::Redis(_)) => self.drive_redis(token),
            Some(Conn::Controller(_)) => self.drive_controller(token),
            Some(Conn::Subscriber(sub)) => {
                if writable {
                    sub.writable();
                }
                self.drive_subscriber(token, readable);
            }
        }
    }

    fn accept(&mut self, token: usize) {
        if self.accept_paused_until.is_some() || self.draining_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let result = match self.conns.get(token) {
                Some(Conn::SubscriberListener(l) | Conn::ControllerListener(l)) => l.accept(),
                _ => return,
            };
            match result {
                Ok((socket, peer)) => {
                    if matches!(self.conns.get(token), Some(Conn::SubscriberListener(_))) {
                        self.admit_subscriber(socket, peer);
                    } else {
                        self.admit_controller(socket, peer);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    info!(
                        "accept failed: {e}; pausing accepts for {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => debug!("accept failed: {e}"),
            }
        }
        self.pending.push(token);
    }

    fn admit_subscriber(&mut self, socket: TcpStream, peer: SocketAddr) {
        self.stats.total_requests += 1;
        self.stats.subscriber_connections_accepted += 1;
        let now = Instant::now();
        if self.stats.current_subscribers as usize >= self.max_subscribers {
            self.stats.connections_refused += 1;
            let mut sub = Subscriber::new(socket, peer, now, 1);
            sub.fail(&self.config, HttpError::Unavailable, &mut self.stats, now);
            if let State::Reply(_) = sub.state {
                // Best effort, without waiting: the table is full.
                let _ = sub.drive(
                    &self.channels,
                    &mut self.stats,
                    &mut self.scratch,
                    0,
                    false,
                    now,
                );
            }
            info!(
                "{peer}: refused, {} subscribers connected",
                self.max_subscribers
            );
            return;
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let head_timeout = self.config.limits.head_timeout;
        let Some(token) = self.register(socket, peer, |socket| {
            Conn::Subscriber(Subscriber::new(socket, peer, now, head_timeout))
        }) else {
            return;
        };
        self.stats.current_subscribers += 1;
        debug!("{peer}: subscriber connected as {token}");
        self.reschedule(token);
    }

    /// Registers an accepted socket for reading and writing (edge-triggered,
    /// so writable events only come after a write would block) and stores
    /// the connection `make` builds around it.
    fn register(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        make: impl FnOnce(TcpStream) -> Conn,
    ) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(token), interest)
        {
            info!("{peer}: cannot register the connection: {e}");
            return None;
        }
        entry.insert(make(socket));
        Some(token)
    }

    fn admit_controller(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.stats.total_requests += 1;
        self.stats.controller_connections_accepted += 1;
        if self.stats.current_controllers as usize >= self.config.limits.controllers {
            self.stats.connections_refused += 1;
            self.stats.errors_served += 1;
            let _ = socket.write(b"ERR Too many connections\r\n");
            info!(
                "{peer}: controller refused, {} connected",
                self.config.limits.controllers
            );
            return;
        }
        // Replies are small and answer requests one by one: never delay them.
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let locked = self.config.controller_password.is_some();
        let registered = self.register(socket, peer, |socket| {
            Conn::Controller(Controller::new(socket, peer, locked))
        });
        if registered.is_none() {
            return;
        }
        self.stats.current_controllers += 1;
        info!("{peer}: controller connected");
    }

    fn drive_controller(&mut self, token: usize) {
        let Some(Conn::Controller(c)) = self.conns.get_mut(token) else {
            return;
        };
        let mut ctx = controller_context!(self, token);
        match c.drive(&mut ctx, &mut self.scratch) {
            controller::Step::Wait => {}
            controller::Step::Yield => self.pending.push(token),
            controller::Step::Close(reason) => self.close(token, reason),
        }
    }

    /// Drives a subscriber until it waits, yields or closes, starting its
    /// request once the head is complete.
    fn drive_subscriber(&mut self, token: usize, readable: bool) {
        let mut readable = readable;
        loop {
            let Some(Conn::Subscriber(sub)) = self.conns.get_mut(token) else {
                return;
            };
            let now = Instant::now();
            let step = sub.drive(
                &self.channels,
                &mut self.stats,
                &mut self.scratch,
                self.config.limits.head_bytes,
                readable,
                now,
            );
            match step {
                Step::HeadComplete => {
                    let mut ctx = subscriber_context!(self, token, now);
                    sub.start(&mut ctx);
                    // The head's read took what had arrived; more input (or
                    // the peer's FIN) raises a new readiness event.
                    readable = false;
                }
                Step::Refuse(error) => sub.fail(&self.config, error, &mut self.stats, now),
                Step::Wait => break,
                Step::Yield => {
                    self.pending.push(token);
                    break;
                }
                Step::Close(reason) => return self.close(token, reason),
            }
        }
        self.reschedule(token);
    }

    /// Keeps the timer index in step with a connection's deadline.
    fn reschedule(&mut self, token: usize) {
        let Some(Conn::Subscriber(sub)) = self.conns.get_mut(token) else {
            return;
        };
        let wanted = sub.deadline(self.config.limits.write_timeout);
        if wanted != sub.timer {
            if let Some(old) = sub.timer {
                self.timers.remove(&(old, token));
            }
            if let Some(new) = wanted {
                self.timers.insert((new, token));
            }
            sub.timer = wanted;
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, token));
            let Some(Conn::Subscriber(sub)) = self.conns.get_mut(token) else {
                continue;
            };
            sub.timer = None;
            match sub.on_timer(&self.config, &mut self.stats, now) {
                Some(reason) => self.close(token, reason),
                None => self.drive_subscriber(token, false),
            }
        }
    }

    /// Writes new events: first to connections that yielded last turn, then
    /// to the subscribers of every channel published to since.
    fn flush(&mut self) {
        for token in std::mem::take(&mut self.pending) {
            match self.conns.get(token) {
                Some(Conn::Subscriber(_)) => self.drive_subscriber(token, true),
                Some(Conn::Controller(_)) => self.drive_controller(token),
                Some(Conn::SubscriberListener(_) | Conn::ControllerListener(_)) => {
                    self.accept(token)
                }
                Some(Conn::Udp(_)) => self.receive_datagrams(token),
                Some(Conn::Redis(_)) => self.drive_redis(token),
                _ => {}
            }
        }
        let mut dirty = Vec::new();
        self.channels.take_dirty(&mut dirty);
        let mut tokens = std::mem::take(&mut self.fanout);
        for key in dirty {
            tokens.clear();
            if let Some(channel) = self.channels.get(key) {
                tokens.extend(channel.subscriber_tokens());
            }
            for &token in &tokens {
                match self.conns.get(token) {
                    Some(Conn::Subscriber(s)) if s.wants_flush() => {
                        self.drive_subscriber(token, false);
                    }
                    // Waiting on its socket: dropped as soon as the channel
                    // no longer holds what it has not received (spec B3).
                    Some(Conn::Subscriber(s)) if s.lost_events(&self.channels) => {
                        self.close(token, Reason::SlowConsumer);
                    }
                    _ => {}
                }
            }
        }
        self.fanout = tokens;
        self.run_kicks();
        self.send_redis();
    }

    /// Reconnects to Redis or refreshes the cluster view when due.
    fn tick_cluster(&mut self, now: Instant) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let counts = format!(
            "current_subscribers={} current_controllers={} channel_count={} messages_served={}",
            self.stats.current_subscribers,
            self.stats.current_controllers,
            self.channels.count(),
            self.stats.messages_served
        );
        cluster.tick(
            now,
            self.poll.registry(),
            &mut self.conns,
            &self.channels,
            &counts,
        );
        self.send_redis();
    }

    /// Reads a Redis link's replies and acts on them; a failed link is
    /// brought down (both links) and retried with backoff.
    fn drive_redis(&mut self, token: usize) {
        let (Some(cluster), Some(Conn::Redis(conn))) =
            (self.cluster.as_mut(), self.conns.get_mut(token))
        else {
            return;
        };
        let mut done = Vec::new();
        let max = self.channels.max_per_channel;
        let result = cluster
            .receive(conn, &mut self.scratch, &mut self.channels, max, &mut done)
            .and_then(|received| cluster.send(conn).map(|()| received));
        if result == Ok(Received::More) {
            self.pending.push(token);
        }
        if let Err(e) = result {
            info!("redis link failed: {e}");
            self.redis_down(&mut done);
        }
        self.complete(done);
    }

    /// Brings both Redis links down after one failed, applying first what
    /// the other had already received (an event announced just before).
    fn redis_down(&mut self, done: &mut Vec<Completion>) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let max = self.channels.max_per_channel;
        for token in cluster.tokens() {
            if let Some(Conn::Redis(conn)) = self.conns.get_mut(token) {
                // Its own failure, if any, is the same outage: ignore it.
                let _ = cluster.receive(conn, &mut self.scratch, &mut self.channels, max, done);
            }
        }
        done.extend(cluster.down(Instant::now(), self.poll.registry(), &mut self.conns));
    }

    /// Writes what is queued for Redis (publishes, loads) on both links.
    fn send_redis(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        for token in cluster.tokens() {
            if let Some(Conn::Redis(conn)) = self.conns.get_mut(token)
                && let Err(e) = cluster.send(conn)
            {
                info!("redis link failed: {e}");
                let mut done = Vec::new();
                self.redis_down(&mut done);
                return self.complete(done);
            }
        }
    }

    /// Delivers what Redis answered: publish replies to their controllers,
    /// loaded channels to the subscribers waiting for them.
    fn complete(&mut self, done: Vec<Completion>) {
        let now = Instant::now();
        for completion in done {
            match completion {
                Completion::Published { token, id } => {
                    if let Some(id) = id {
                        self.channels.saw_id(id);
                    }
                    if let Some(Conn::Controller(c)) = self.conns.get_mut(token) {
                        let mut ctx = controller_context!(self, token);
                        c.published(id, &mut ctx);
                        self.drive_controller(token);
                    }
                }
                Completion::Synced { channel, waiters } => {
                    for token in waiters {
                        if let Some(Conn::Subscriber(sub)) = self.conns.get_mut(token) {
                            let mut ctx = subscriber_context!(self, token, now);
                            sub.loaded(&channel, &mut ctx);
                            self.drive_subscriber(token, false);
                        }
                    }
                }
            }
        }
        self.run_kicks();
    }

    /// Closes connections the server decided to end (replaced hostid,
    /// disconnect request, shutdown), sending their goodbye first.
    fn run_kicks(&mut self) {
        while let Some((token, reason)) = self.kicks.pop() {
            match self.conns.get_mut(token) {
                Some(Conn::Subscriber(sub)) => {
                    let wt = self.config.limits.write_timeout;
                    if sub.farewell(&mut self.channels, &mut self.hosts, token, reason, wt) {
                        self.drive_subscriber(token, false);
                    } else {
                        self.close(token, reason);
                    }
                }
                Some(Conn::Controller(c)) => {
                    c.shut_down(&self.config.controller_shutdown);
                    self.drive_controller(token);
                }
                _ => {}
            }
        }
    }

    /// The one place a connection ends: leaves its channels, drops its
    /// timer, counts and logs. Client sockets are not deregistered first:
    /// closing a descriptor removes it from epoll (none is ever duplicated),
    /// which saves a system call on every long-poll cycle.
    fn close(&mut self, token: usize, reason: Reason) {
        let Some(conn) = self.conns.try_remove(token) else {
            return;
        };
        let registry = self.poll.registry();
        match conn {
            Conn::Subscriber(sub) => {
                if let State::Streaming(s) = &sub.state {
                    s.leave(sub.peer, &mut self.channels, &mut self.hosts, token, reason);
                }
                for name in sub.waiting_for() {
                    self.channels.release(name);
                }
                if let Some(at) = sub.timer {
                    self.timers.remove(&(at, token));
                }
                self.stats.current_subscribers -= 1;
                if matches!(reason, Reason::SlowConsumer | Reason::WriteTimeout) {
                    self.stats.slow_consumers_dropped += 1;
                    info!(
                        "{}: dropped slow subscriber ({})",
                        sub.peer,
                        reason.as_str()
                    );
                } else if let Reason::Error(kind) = reason {
                    info!("{}: subscriber closed on a socket error: {kind}", sub.peer);
                } else {
                    debug!("{}: subscriber closed ({})", sub.peer, reason.as_str());
                }
            }
            Conn::Controller(c) => {
                self.stats.current_controllers -= 1;
                info!("{}: controller closed ({})", c.peer, reason.as_str());
            }
            Conn::SubscriberListener(mut l) | Conn::ControllerListener(mut l) => {
                let _ = registry.deregister(&mut l);
            }
            Conn::Signals(mut s) => {
                let _ = registry.deregister(&mut s);
            }
            Conn::Udp(mut u) => {
                let _ = registry.deregister(&mut u);
            }
            Conn::Redis(mut r) => {
                let _ = registry.deregister(&mut r.socket);
            }
        }
    }

    /// Publishes each `ADDMESSAGE` datagram; nothing is sent back.
    fn receive_datagrams(&mut self, token: usize) {
        for _ in 0..COMMANDS_PER_TURN {
            let Some(Conn::Udp(socket)) = self.conns.get(token) else {
                return;
            };
            let (n, peer) = match socket.recv_from(&mut self.scratch) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    info!("UDP receive failed: {e}");
                    return;
                }
            };
            self.stats.total_inbound_bytes += n as u64;
            if n > self.config.limits.udp_bytes {
                info!(
                    "{peer}: dropped a UDP datagram of {n} bytes (UDPMaxBytes {})",
                    self.config.limits.udp_bytes
                );
                continue;
            }
            let datagram = &self.scratch[..n];
            let datagram = datagram
                .strip_suffix(b"\r\n")
                .or_else(|| datagram.strip_suffix(b"\n"))
                .unwrap_or(datagram);
            match controller::parse(datagram) {
                Some(controller::Command::AddMessage { channel, text })
                    if channel.len() <= self.config.limits.channel_name_length =>
                {
                    let published = match self.cluster.as_mut() {
                        None => match self.channels.publish(channel, text, unix_ms()) {
                            Ok(_) => true,
                            // MaxChannels or MaxCachedBytes.
                            Err(refused) => {
                                info!("{peer}: UDP publish refused: {refused}");
                                continue;
                            }
                        },
                        Some(cluster) => {
                            let max = self.channels.max_per_channel;
                            cluster.publish(None, channel, text, unix_ms(), max)
                        }
                    };
                    if published {
                        self.stats.unique_messages += 1;
                    } else {
                        info!("{peer}: UDP publish dropped: the Redis link is down");
                    }
                }
                _ => info!("{peer}: ignored a UDP datagram that is not a valid ADDMESSAGE"),
            }
        }
        self.pending.push(token);
    }

    fn on_signals(&mut self, token: usize) {
        if let Some(Conn::Signals(pipe)) = self.conns.get_mut(token) {
            while matches!(pipe.read(&mut self.scratch), Ok(n) if n > 0) {}
        }
        if self.signals.usr1.swap(false, Ordering::SeqCst) {
            info!("SIGUSR1: emptying every channel's message cache");
            self.channels.clear_caches();
        }
        if self.signals.usr2.swap(false, Ordering::SeqCst) {
            info!("SIGUSR2: dropping the document cache");
            self.docs.clear();
        }
        if self.signals.hup.swap(false, Ordering::SeqCst) {
            self.reload();
        }
        if self.signals.term.swap(false, Ordering::SeqCst) && self.draining_until.is_none() {
            self.shut_down();
        }
    }

    /// SIGHUP: re-reads the configuration for new connections; a bad file
    /// keeps the running configuration.
    fn reload(&mut self) {
        let config = match config::load(&self.command_line) {
            Ok(config) => config,
            Err(e) => {
                info!("SIGHUP: keeping the running configuration: {e}");
                return;
            }
        };
        let old = &self.config;
        let restart_only = [
            (
                "SubscriberIP/SubscriberPort",
                old.subscriber_addr != config.subscriber_addr,
            ),
            (
                "ControllerIP/ControllerPort",
                old.controller_addr != config.controller_addr,
            ),
            ("UDPIP/UDPPort", old.udp_addr != config.udp_addr),
            (
                "SyslogFacility",
                old.syslog_facility != config.syslog_facility,
            ),
            ("SyslogSocket", old.syslog_socket != config.syslog_socket),
            ("PidFile", old.pid_file != config.pid_file),
            ("Foreground", old.foreground != config.foreground),
            ("RedisAddress", old.redis != config.redis),
        ];
        for (what, changed) in restart_only {
            if changed {
                info!("SIGHUP: the change of {what} is ignored until a restart");
            }
        }
        log::configure(config.debug, config.log_time_format);
        self.channels
            .set_limits(config.max_messages_per_channel, config.max_message_age);
        self.channels
            .set_bounds(config.max_cached_bytes, config.max_channels);
        self.docs = Documents::new(config.document_root.clone(), config.directory_index.clone());
        for warning in &config.warnings {
            info!("warning: {warning}");
        }
        info!(
            "SIGHUP: configuration reloaded from {}",
            config.file.display()
        );
        self.config = config;
    }

    /// SIGTERM/SIGINT: stop accepting, say goodbye to everyone, drain.
    fn shut_down(&mut self) {
        info!("shutting down: closing listeners and connections");
        crate::process::notify("STOPPING=1");
        for token in std::mem::take(&mut self.listeners) {
            self.close(token, Reason::Shutdown);
        }
        let tokens: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Controller(_) | Conn::Subscriber(_)))
            .map(|(t, _)| t)
            .collect();
        self.kicks
            .extend(tokens.into_iter().map(|t| (t, Reason::Shutdown)));
        self.run_kicks();
        self.draining_until = Some(Instant::now() + Duration::from_secs(self.config.drain_timeout));
    }
}
