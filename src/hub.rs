//! The one place that publishes and the one place readers ask for a
//! channel: the channels of this node, and the Redis side when several
//! nodes share them. Every protocol (the line protocol, HTTP POST, UDP)
//! publishes through `Hub::publish`; the connection state machines never
//! see whether Redis exists.

use crate::channel::{Channels, PublishRefused};
use crate::cluster::link::{Link, LinkError};
use crate::cluster::{Cluster, Completion, Limits, Received, Tick};
use crate::conn::ConnId;
use crate::state_file::StateFile;
use crate::stats::Stats;
use std::time::Instant;

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Stored and queued for the subscribers under this id.
    Done(u64),
    /// Sent on; the answer comes later as a `Completion::Published` for the
    /// publisher named in the call.
    Pending,
    /// The backend is away: nothing was stored.
    Unavailable,
    /// Over a memory bound (`MaxChannels`, `MaxCachedBytes`): not stored.
    Refused(PublishRefused),
    /// `StateSync always` and the state file cannot be written: not stored.
    StorageUnavailable,
}

/// Named figures for `/stats` and `/metrics`.
pub type Figures = Vec<(&'static str, u64)>;

/// Why a publish answered later failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Redis did not take it.
    Backend,
    /// `StateSync always`: the state file could not be written or synced.
    Storage,
}

/// The channels, and where events come from and go to.
pub struct Hub {
    pub channels: Channels,
    cluster: Option<Cluster>,
    /// Work finished for connections, for the loop to hand over.
    done: Vec<Completion>,
    /// The state file, standalone with `StateFile` set.
    state: Option<StateFile>,
    /// Publishes answered once this turn's records are written (and, with
    /// `StateSync always`, synced).
    waiting: Vec<(ConnId, u64)>,
    /// Their answers, for the loop to hand over.
    stored: Vec<(ConnId, Result<u64, Failed>)>,
}

impl Hub {
    /// A hub for these channels, standalone (`cluster` None) or one node of
    /// several.
    pub fn new(channels: Channels, cluster: Option<Cluster>) -> Hub {
        Hub {
            channels,
            cluster,
            done: Vec::new(),
            state: None,
            waiting: Vec::new(),
            stored: Vec::new(),
        }
    }

    /// Keeps the channels in `state` from now on (standalone only).
    pub fn with_state(mut self, state: Option<StateFile>) -> Hub {
        if self.cluster.is_none() {
            self.state = state;
        }
        self
    }

    /// Publishes `text` on `channel`; `from` is the connection to answer
    /// when the answer comes later (None for UDP, which gets no answer).
    pub fn publish(
        &mut self,
        stats: &mut Stats,
        from: Option<ConnId>,
        channel: &[u8],
        text: &[u8],
        now_ms: u64,
    ) -> Publish {
        let result = match self.cluster.as_mut() {
            None if self.state.is_some() => self.publish_stored(from, channel, text, now_ms),
            None => match self.channels.publish(channel, text, now_ms) {
                Ok(id) => Publish::Done(id),
                Err(refused) => Publish::Refused(refused),
            },
            Some(cluster) => {
                let max = self.channels.max_per_channel;
                match cluster.publish(from, channel, text, now_ms, max) {
                    true => Publish::Pending,
                    false => Publish::Unavailable,
                }
            }
        };
        if matches!(result, Publish::Done(_) | Publish::Pending) {
            stats.unique_messages += 1;
        }
        result
    }

    /// Standalone with a state file: the event is recorded for this
    /// turn's write, and a publisher is answered once that is done.
    fn publish_stored(
        &mut self,
        from: Option<ConnId>,
        channel: &[u8],
        text: &[u8],
        now_ms: u64,
    ) -> Publish {
        let Some(state) = self.state.as_mut() else {
            return Publish::StorageUnavailable;
        };
        let next = self.channels.last_id().saturating_add(1);
        if state.refuses_publishes()
            || (!state.ensure_reserved(next, Instant::now()) && state.promises_sync())
        {
            return Publish::StorageUnavailable;
        }
        match self.channels.publish(channel, text, now_ms) {
            Ok(id) => {
                state.event(id, now_ms, channel, text);
                match from {
                    Some(to) => {
                        self.waiting.push((to, id));
                        Publish::Pending
                    }
                    None => Publish::Done(id),
                }
            }
            Err(refused) => Publish::Refused(refused),
        }
    }

    /// Once per loop turn: writes (and syncs) this turn's records and
    /// answers the publishes that waited for them.
    pub fn persist(&mut self, now: Instant) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let stored = state.flush(now, &self.channels);
        let ok = stored || !state.promises_sync();
        for (to, id) in self.waiting.drain(..) {
            let answer = if ok { Ok(id) } else { Err(Failed::Storage) };
            self.stored.push((to, answer));
        }
    }

    /// Publish answers that waited for the state file.
    pub fn take_stored(&mut self) -> Vec<(ConnId, Result<u64, Failed>)> {
        std::mem::take(&mut self.stored)
    }

    /// Empties every channel's cache (SIGUSR1), in the state file too.
    pub fn clear_caches(&mut self) {
        self.channels.clear_caches();
        if let Some(state) = self.state.as_mut() {
            state.clear(self.channels.last_id());
        }
    }

    /// At exit: the state file gets what is left and is synced.
    pub fn close_state(&mut self) {
        self.persist(Instant::now());
        let last_id = self.channels.last_id();
        if let Some(state) = self.state.as_mut() {
            state.close(last_id);
        }
    }

    /// The state file's gauges and counters for `/stats` and `/metrics`
    /// (counters get `_total` there); empty without a state file.
    pub fn state_figures(&self) -> (Figures, Figures) {
        match &self.state {
            Some(state) => (state.gauges().to_vec(), state.counter_list().to_vec()),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Whether `channel` can be read now. Otherwise it is being brought up
    /// to date and `reader` gets a `Completion::Loaded` naming it.
    pub fn ready_or_wait(&mut self, channel: &[u8], reader: ConnId) -> bool {
        match self.cluster.as_mut() {
            None => true,
            Some(cluster) => {
                let max = self.channels.max_per_channel;
                cluster.ready_or_wait(channel, &self.channels, reader, max)
            }
        }
    }

    /// The Redis side, when there is one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Work finished for connections since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.done)
    }

    /// When the Redis side needs `tick`, or the state file `persist`
    /// (now, while records or answers wait).
    pub fn deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            Some(_) if !self.waiting.is_empty() || !self.stored.is_empty() => Some(Instant::now()),
            Some(state) => state.deadline(),
            None => None,
        };
        [self.cluster.as_ref().and_then(Cluster::deadline), state]
            .into_iter()
            .flatten()
            .min()
    }

    /// Heartbeats, reconnects and the reply timeout: whether the loop
    /// should open the links now (then `connected` or `link_failed`), or
    /// bring them down (`link_failed`). `limits` is what the configuration
    /// allows now.
    pub fn tick(&mut self, now: Instant, counts: &str, limits: Limits) -> Tick {
        match self.cluster.as_mut() {
            None => Tick::Nothing,
            Some(cluster) => {
                cluster.set_limits(limits);
                cluster.tick(now, counts)
            }
        }
    }

    /// The loop opened the Redis links.
    pub fn connected(&mut self, links: [ConnId; 2]) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.connected(links, &self.channels);
        }
    }

    /// Reads and answers a link; Err when it broke.
    pub fn receive(&mut self, link: &mut Link, scratch: &mut [u8]) -> Result<Received, LinkError> {
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(Received::All);
        };
        cluster.receive(link, scratch, &mut self.channels, &mut self.done)
    }

    /// Writes what is queued for a link.
    pub fn send(&mut self, link: &mut Link) -> Result<(), LinkError> {
        match self.cluster.as_mut() {
            None => Ok(()),
            Some(cluster) => cluster.send(link),
        }
    }

    /// Takes down both links after one failed; returns them for the loop
    /// to close. Publishes in flight are answered as failed.
    pub fn link_failed(&mut self, now: Instant, error: &LinkError) -> Vec<ConnId> {
        match self.cluster.as_mut() {
            None => Vec::new(),
            Some(cluster) => cluster.down(now, error, &mut self.done),
        }
    }

    /// The links open now.
    pub fn links(&self) -> Vec<ConnId> {
        self.cluster
            .as_ref()
            .map_or_else(Vec::new, |c| c.links().to_vec())
    }
}
