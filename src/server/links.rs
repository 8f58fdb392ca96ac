//! The Redis links as the loop sees them: opening both when the hub asks,
//! driving their reads and writes, and closing both when one fails.

use super::Server;
use super::conns::Conn;
use crate::cluster::link::{Link, LinkError, Role};
use crate::cluster::{Limits, Received, Tick};
use crate::conn::{ConnId, Reason, Step};
use mio::Interest;
use mio::net::TcpStream;
use std::time::{Duration, Instant};

impl Server {
    /// Heartbeats and reconnects when due; brings the links down when a
    /// reply is overdue (`RedisTimeout`).
    pub(super) fn tick_hub(&mut self, now: Instant) {
        let config = &self.world.config;
        let limits = Limits {
            timeout: Duration::from_secs(config.redis_timeout),
            max_pending: config.redis_max_pending,
            max_text: config
                .limits
                .controller_line_bytes
                .max(config.limits.udp_bytes),
            max_channel_name: config.limits.channel_name_length,
        };
        let stats = &self.world.stats;
        let counts = format!(
            "current_subscribers={} current_controllers={} channel_count={} messages_served={}",
            stats.current_subscribers,
            stats.current_controllers,
            self.world.hub.channels.count(),
            stats.messages_served
        );
        match self.world.hub.tick(now, &counts, limits) {
            Tick::Nothing => {}
            Tick::Open => self.open_links(now),
            Tick::Failed(e) => self.links_down(&e),
        }
        self.send_links();
    }

    /// Opens the command and pub/sub links.
    fn open_links(&mut self, now: Instant) {
        let Some(addr) = self.world.hub.cluster().map(|c| c.addr()) else {
            return;
        };
        let mut opened = Vec::new();
        for role in [Role::Command, Role::PubSub] {
            let registered = TcpStream::connect(addr).and_then(|socket| {
                let _ = socket.set_nodelay(true);
                let interest = Interest::READABLE | Interest::WRITABLE;
                let link = Conn::Redis(Link::new(socket, role));
                self.conns.register(self.poll.registry(), interest, link)
            });
            match registered {
                Ok(id) => opened.push(id),
                Err(e) => {
                    for id in opened {
                        self.close(id, Reason::Error(e.kind()));
                    }
                    // Nothing is in flight yet: this only schedules a retry.
                    self.world
                        .hub
                        .link_failed(now, &LinkError::Connect(e.kind()));
                    return;
                }
            }
        }
        if let [command, pubsub] = opened[..] {
            self.world.hub.connected([command, pubsub]);
        }
    }

    /// Reads a link's replies and acts on them, then writes what is queued.
    pub(super) fn drive_link(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get(id) else {
            return;
        };
        let Conn::Redis(link) = &mut slot.conn else {
            return;
        };
        let hub = &mut self.world.hub;
        let result = hub
            .receive(link, &mut self.world.scratch)
            .and_then(|received| hub.send(link).map(|()| received));
        match result {
            Ok(Received::More) => self.after(id, Step::Yield),
            Ok(Received::All) => {}
            Err(e) => self.links_down(&e),
        }
        self.complete();
    }

    /// Brings both links down after one failed, applying first what the
    /// other had already received (an event announced just before).
    fn links_down(&mut self, error: &LinkError) {
        for id in self.world.hub.links() {
            if let Some(slot) = self.conns.get(id)
                && let Conn::Redis(link) = &mut slot.conn
            {
                // Its own failure, if any, is the same outage.
                let _ = self.world.hub.receive(link, &mut self.world.scratch);
            }
        }
        for id in self.world.hub.link_failed(Instant::now(), error) {
            self.close(id, Reason::RemoteClosed);
        }
    }

    /// Writes what is queued for Redis (publishes, loads) on both links.
    pub(super) fn send_links(&mut self) {
        for id in self.world.hub.links() {
            let Some(slot) = self.conns.get(id) else {
                continue;
            };
            let Conn::Redis(link) = &mut slot.conn else {
                continue;
            };
            if let Err(e) = self.world.hub.send(link) {
                self.links_down(&e);
                break;
            }
        }
        self.complete();
    }
}
