//! The event loop: one `mio::Poll`, every socket in one slab. The loop only
//! dispatches: readiness, timers, kicks and finished work go to the
//! connection kinds' own modules, which answer with a `Step`; new events
//! are flushed to subscribers before each poll; and `close` is the one
//! place where a connection ends.

mod accept;
mod conns;
mod links;
mod signals;

use crate::channel::Channels;
use crate::cluster::{Cluster, Completion};
use crate::config::{Config, RawSettings};
use crate::conn::{ConnId, Reason, Step};
use crate::controller::{self, auth::AuthFailures};
use crate::deadline::Deadlines;
use crate::hub::{Failed, Hub};
use crate::io::SCRATCH_BYTES;
use crate::state_file::StateFile;
use crate::stats::Stats;
use crate::subscriber::{self, documents::Documents, stream::Hosts};
use crate::{info, log};
use conns::{Conn, Conns};
use mio::{Events, Poll};
use signals::Signals;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the connections share, kept apart from the slab so that one
/// connection and all of this can be borrowed at once.
struct World {
    config: Config,
    hub: Hub,
    stats: Stats,
    docs: Documents,
    hosts: Hosts,
    /// Connections to end on the server's initiative, after the current
    /// dispatch (`freeClientAsync`).
    kicks: Vec<(ConnId, Reason)>,
    /// The loop-wide read buffer.
    scratch: Vec<u8>,
    /// Wrong publisher passwords by address.
    auth: AuthFailures,
}

impl World {
    fn subscriber(&mut self, id: ConnId, now: Instant) -> subscriber::Context<'_> {
        subscriber::Context {
            config: &self.config,
            hub: &mut self.hub,
            stats: &mut self.stats,
            docs: &mut self.docs,
            hosts: &mut self.hosts,
            kicks: &mut self.kicks,
            scratch: &mut self.scratch,
            id,
            now,
        }
    }

    fn controller(&mut self, id: ConnId) -> controller::Context<'_> {
        let (commands_left, bytes_left) = controller::Context::budget();
        controller::Context {
            config: &self.config,
            hub: &mut self.hub,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
            id,
            commands_left,
            bytes_left,
            now_ms: unix_ms(),
            now: Instant::now(),
            auth: &mut self.auth,
            document_cache_bytes: self.docs.used(),
        }
    }
}

/// The whole server.
pub struct Server {
    poll: Poll,
    conns: Conns,
    world: World,
    /// The command line, re-applied on every reload.
    command_line: RawSettings,
    /// The deadline of every connection that has one.
    timers: Deadlines<Instant, ConnId>,
    /// Connections that yielded with work left, driven again next turn.
    pending: Vec<ConnId>,
    /// Listeners, to resume accepting or to stop on shutdown.
    listeners: Vec<ConnId>,
    accept_paused_until: Option<Instant>,
    /// Set once SIGTERM or SIGINT arrived: when to give up draining.
    draining_until: Option<Instant>,
    /// The open-file limit the process runs with.
    fd_limit: usize,
    max_subscribers: usize,
    signals: Signals,
    /// Reused list of a channel's subscribers during a flush.
    fanout: Vec<ConnId>,
}

/// Milliseconds since the epoch, the clock of message timestamps.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Server {
    /// Binds the listeners and sets up signals; `fd_limit` is the open-file
    /// limit the process runs with.
    pub fn new(config: Config, command_line: RawSettings, fd_limit: usize) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut conns = Conns::default();
        // Signals first: from the moment the ports are announced, a signal
        // must reach the loop instead of its default action.
        let signals = Signals::register(&poll, &mut conns)?;
        let max_subscribers = accept::max_subscribers(&config, fd_limit);
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
        let mut channels = Channels::with_bounds(
            config.max_messages_per_channel,
            config.max_message_age,
            config.max_cached_bytes,
            config.max_channels,
        );
        let state = match (&config.state_file, &config.redis) {
            (Some(path), Some(_)) => {
                info!(
                    "RedisAddress is set: Redis is the store, the state file {} is not used",
                    path.display()
                );
                None
            }
            (Some(path), None) => Some(
                StateFile::open(path, config.state_sync, &mut channels, unix_ms())
                    .map_err(io::Error::other)?,
            ),
            (None, _) => None,
        };
        // Listen once the channels are back: no client sees them half read.
        let listeners = accept::listen(&poll, &mut conns, &config)?;
        Ok(Server {
            poll,
            conns,
            world: World {
                hub: Hub::new(channels, cluster).with_state(state),
                stats: Stats::default(),
                docs: Documents::from_config(&config),
                config,
                hosts: Hosts::new(),
                kicks: Vec::new(),
                scratch: vec![0; SCRATCH_BYTES],
                auth: AuthFailures::default(),
            },
            command_line,
            timers: Deadlines::default(),
            pending: Vec::new(),
            listeners,
            accept_paused_until: None,
            draining_until: None,
            fd_limit,
            max_subscribers,
            signals,
            fanout: Vec::new(),
        })
    }

    /// Runs until a shutdown completes; returns the process exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        loop {
            self.flush();
            if let Some(until) = self.draining_until {
                let left = self.conns.clients().len();
                if left == 0 {
                    self.world.hub.close_state();
                    info!("shutdown complete");
                    return 0;
                }
                if Instant::now() >= until {
                    self.world.hub.close_state();
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
                self.world.hub.close_state();
                return 1;
            }
            for event in events.iter() {
                if let Some(id) = self.conns.at(event.token()) {
                    let readable =
                        event.is_readable() || event.is_read_closed() || event.is_error();
                    self.drive(id, readable, event.is_writable());
                    self.run_kicks();
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.tick_hub(now);
            self.world.hub.channels.expire(unix_ms());
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                for id in self.listeners.clone() {
                    self.accept(id);
                }
            }
        }
    }

    /// Sleeps until the nearest deadline: a connection timer, a message
    /// expiry, the Redis side, the end of an accept pause or of the drain.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let expiry = self
            .world
            .hub
            .channels
            .next_expiry_ms()
            .map(|ms| now + Duration::from_millis(ms.saturating_sub(unix_ms())));
        [
            self.world.hub.deadline(),
            self.timers.next(),
            expiry,
            self.accept_paused_until,
            self.draining_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Dispatches readiness (or a turn after yielding) to the connection's
    /// own module.
    fn drive(&mut self, id: ConnId, readable: bool, writable: bool) {
        let Some(slot) = self.conns.get(id) else {
            return;
        };
        if slot.pending {
            // It gets its turn from the pending list: one budget a turn.
            return;
        }
        let world = &mut self.world;
        let step = match &mut slot.conn {
            Conn::Listener(..) => return self.accept(id),
            Conn::Signals(_) => return self.on_signals(id),
            Conn::Redis(_) => return self.drive_link(id),
            Conn::Udp(socket) => controller::udp::receive(socket, &mut world.controller(id)),
            Conn::Controller(c) => c.ready(&mut world.controller(id)),
            Conn::Subscriber(s) => s.ready(
                &mut world.subscriber(id, Instant::now()),
                readable,
                writable,
            ),
        };
        self.after(id, step);
    }

    /// Acts on what a connection's module answered, and keeps the timer
    /// index in step with the connection's deadline.
    fn after(&mut self, id: ConnId, step: Step) {
        if let Step::Close(reason) = step {
            return self.close(id, reason);
        }
        let config = &self.world.config;
        let Some(slot) = self.conns.get(id) else {
            return;
        };
        if step == Step::Yield && !slot.pending {
            slot.pending = true;
            self.pending.push(id);
        }
        let wanted = match &slot.conn {
            Conn::Subscriber(s) => s.deadline(config.limits.write_timeout),
            Conn::Controller(c) => c.deadline(config),
            _ => None,
        };
        slot.timer = self.timers.set(id, slot.timer, wanted);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((_, id)) = self.timers.pop_due(now) {
            let Some(slot) = self.conns.get(id) else {
                continue;
            };
            slot.timer = None;
            let step = match &mut slot.conn {
                Conn::Subscriber(s) => s.on_timer(&mut self.world.subscriber(id, now)),
                Conn::Controller(c) => c.on_timer(&mut self.world.controller(id)),
                _ => Step::Wait,
            };
            self.after(id, step);
        }
    }

    /// Writes new events: first to connections that yielded last turn, then
    /// to the subscribers of every channel published to since.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        // The first of last turn goes last: no publisher keeps first pick
        // of a channel's room (`controller::has_room`).
        if !pending.is_empty() {
            pending.rotate_left(1);
        }
        for id in pending {
            if let Some(slot) = self.conns.get(id) {
                slot.pending = false;
                self.drive(id, true, false);
            }
        }
        // This turn's events reach the state file before subscribers see
        // them; their publishers hear OK after.
        self.world.hub.persist(Instant::now());
        self.answer_stored();
        let mut dirty = Vec::new();
        self.world.hub.channels.take_dirty(&mut dirty);
        let mut readers = std::mem::take(&mut self.fanout);
        for key in dirty {
            readers.clear();
            if let Some(channel) = self.world.hub.channels.get(key) {
                readers.extend(channel.subscribers());
            }
            for &id in &readers {
                let Some(slot) = self.conns.get(id) else {
                    continue;
                };
                if let Conn::Subscriber(s) = &mut slot.conn {
                    let step = s.flush(&mut self.world.subscriber(id, Instant::now()));
                    self.after(id, step);
                }
            }
        }
        self.fanout = readers;
        self.run_kicks();
        self.send_links();
    }

    /// Hands finished work (publish answers, loaded channels) to the
    /// connections it names; work for a connection that is gone is dropped.
    fn complete(&mut self) {
        for completion in self.world.hub.take_completions() {
            match completion {
                Completion::Published { to, id } => {
                    let Some(slot) = self.conns.get(to) else {
                        continue;
                    };
                    if let Conn::Controller(c) = &mut slot.conn {
                        let answer = id.ok_or(Failed::Backend);
                        let step = c.published(&mut self.world.controller(to), answer);
                        self.after(to, step);
                    }
                }
                Completion::Loaded { channel, waiters } => {
                    for to in waiters {
                        let Some(slot) = self.conns.get(to) else {
                            continue;
                        };
                        if let Conn::Subscriber(s) = &mut slot.conn {
                            let ctx = &mut self.world.subscriber(to, Instant::now());
                            let step = s.loaded(ctx, &channel);
                            self.after(to, step);
                        }
                    }
                }
            }
        }
        self.run_kicks();
    }

    /// Hands publishers the answers that waited for the state file.
    fn answer_stored(&mut self) {
        let stored = self.world.hub.take_stored();
        let mut answers = Vec::new();
        // A publisher's answers are consecutive: one write for each run.
        for run in stored.chunk_by(|a, b| a.0 == b.0) {
            let to = run[0].0;
            let Some(slot) = self.conns.get(to) else {
                continue;
            };
            if let Conn::Controller(c) = &mut slot.conn {
                answers.clear();
                answers.extend(run.iter().map(|a| a.1));
                let step = c.published_all(&mut self.world.controller(to), &answers);
                self.after(to, step);
            }
        }
        self.run_kicks();
    }

    /// Ends connections the server decided to end (replaced hostid,
    /// disconnect request, shutdown), each with its goodbye.
    fn run_kicks(&mut self) {
        while let Some((id, reason)) = self.world.kicks.pop() {
            let Some(slot) = self.conns.get(id) else {
                continue;
            };
            let world = &mut self.world;
            let step = match &mut slot.conn {
                Conn::Subscriber(s) => s.kick(&mut world.subscriber(id, Instant::now()), reason),
                Conn::Controller(c) => {
                    c.shut_down(&world.config.controller_shutdown);
                    c.ready(&mut world.controller(id))
                }
                _ => Step::Close(reason),
            };
            self.after(id, step);
        }
    }

    /// The one place a connection ends: drops its timer, runs its kind's
    /// close hook (leave channels, count, log) and frees its slot. Safe to
    /// call for a connection already gone.
    fn close(&mut self, id: ConnId, reason: Reason) {
        let Some(mut slot) = self.conns.remove(id) else {
            return;
        };
        self.timers.set(id, slot.timer, None);
        Conns::deregister(self.poll.registry(), &mut slot.conn);
        match slot.conn {
            Conn::Subscriber(s) => s.closed(&mut self.world.subscriber(id, Instant::now()), reason),
            Conn::Controller(c) => c.closed(&mut self.world.controller(id), reason),
            Conn::Listener(..) | Conn::Signals(_) | Conn::Udp(_) | Conn::Redis(_) => {}
        }
    }
}
