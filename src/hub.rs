//! The one place that publishes and the one place readers ask for a
//! channel: the channels of this node, and the Redis side when several
//! nodes share them. Every protocol (the line protocol, HTTP POST, UDP)
//! publishes through `Hub::publish`; the connection state machines never
//! see whether Redis exists.

use crate::channel::{Channels, PublishRefused};
use crate::cluster::link::{Link, LinkError};
use crate::cluster::{Cluster, Completion, Limits, Received, Tick};
use crate::conn::ConnId;
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
}

/// The channels, and where events come from and go to.
pub struct Hub {
    pub channels: Channels,
    cluster: Option<Cluster>,
    /// Work finished for connections, for the loop to hand over.
    done: Vec<Completion>,
}

impl Hub {
    /// A hub for these channels, standalone (`cluster` None) or one node of
    /// several.
    pub fn new(channels: Channels, cluster: Option<Cluster>) -> Hub {
        Hub {
            channels,
            cluster,
            done: Vec::new(),
        }
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

    /// When the Redis side needs `tick`.
    pub fn deadline(&self) -> Option<Instant> {
        self.cluster.as_ref().and_then(Cluster::deadline)
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
