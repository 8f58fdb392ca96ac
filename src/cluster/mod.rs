//! Several nodes sharing channels through Redis. Publishing goes to Redis
//! in one script (id from a shared counter, append to the channel's stream,
//! announce on pub/sub); every node applies announced events to the
//! channels it holds and fans them out from its own buffers as usual. A
//! channel a node does not hold yet is loaded from its Redis stream before
//! anyone reads it, and after a lost link every held channel is back-filled,
//! so subscribers see neither gaps nor duplicates.
//!
//! The two Redis connections (commands, pub/sub) are sockets of the loop
//! like any other (`Link`); the loop opens and closes them when this side
//! asks. Replies arrive in command order and are matched against a queue of
//! what each one answers. Work that finishes later names the connection it
//! is for by `ConnId`.

pub mod link;
pub mod resp;

use crate::channel::Channels;
use crate::conn::ConnId;
use crate::io::{COMMANDS_PER_TURN, SCRATCH_BYTES};
use crate::{debug, info};
use link::{Link, LinkError, Role};
use resp::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::RedisSettings;

/// The keys share one hash tag so that a script touches one Redis Cluster slot.
const ID_KEY: &[u8] = b"{meteor}:id";
const STREAM_PREFIX: &[u8] = b"{meteor}:s:";
const NODES_KEY: &[u8] = b"{meteor}:nodes";
const EVENTS: &[u8] = b"{meteor}:events";
/// How often a node refreshes its counts in Redis (and reads the others').
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a node's counts stay in Redis without a refresh.
const NODE_TTL_SECS: &[u8] = b"10";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Assigns the id, appends to the stream (trimmed near MaxMessagesPerChannel)
/// and announces `<id> <ms> <channel> <text>`, atomically.
const PUBLISH_SCRIPT: &[u8] = b"local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 't', ARGV[2], 'x', ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[2] .. ' ' .. ARGV[5] .. ' ' .. ARGV[3])
return id";

/// Refreshes this node's counts and returns every live node's.
const VIEW_SCRIPT: &[u8] = b"redis.call('SET', KEYS[1] .. ':' .. ARGV[1], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local counts = redis.call('GET', KEYS[1] .. ':' .. node)
  if counts then table.insert(out, node); table.insert(out, counts)
  else redis.call('SREM', KEYS[1], node) end
end
return out";

/// Never lets the shared counter fall below ids this node has seen (a Redis
/// restarted without persistence would otherwise hand out old ids again).
const FLOOR_SCRIPT: &[u8] = b"local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1";

/// What the next reply on the command link answers.
#[derive(Debug)]
enum Pending {
    /// A handshake step (AUTH, SELECT).
    Setup,
    /// The last handshake step: the counter floor.
    Floor,
    /// `SCRIPT LOAD` of the publish or the view script.
    PublishSha,
    ViewSha,
    /// A publish from a controller, or from UDP (None).
    Publish(Option<ConnId>),
    /// A channel's history (`XREVRANGE`, newest first) or, after a lost
    /// link, the events after the newest one held (`XRANGE`).
    Load {
        channel: Box<[u8]>,
        newest_first: bool,
    },
    View,
}

/// An event as announced on pub/sub.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    id: u64,
    ms: u64,
    channel: Vec<u8>,
    text: Vec<u8>,
}

impl Event {
    /// Parses `<id> <ms> <channel> <text>`.
    fn parse(payload: &[u8]) -> Option<Event> {
        let mut parts = payload.splitn(4, |&b| b == b' ');
        let number = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse().ok();
        Some(Event {
            id: number(parts.next())?,
            ms: number(parts.next())?,
            channel: parts.next()?.to_vec(),
            text: parts.next()?.to_vec(),
        })
    }
}

/// A channel being brought up to date; readers wait until it is.
#[derive(Debug, Default)]
struct Loading {
    /// Announced while loading: applied after the loaded history.
    events: Vec<Event>,
    /// Subscribers waiting for this channel.
    waiters: Vec<ConnId>,
    /// The load command is queued on the current link.
    requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Not connected; reconnect at this time.
    Down(Instant),
    /// Connected, handshakes in flight.
    Connecting {
        commands: bool,
        pubsub: bool,
    },
    Up,
}

/// Whether a link has more buffered than one turn may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    All,
    /// Drive the link again next turn.
    More,
}

/// Work that finished for a connection after Redis answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// A controller's publish: the id, or None when Redis failed it.
    Published { to: ConnId, id: Option<u64> },
    /// These subscribers waited for this channel, now up to date.
    Loaded {
        channel: Box<[u8]>,
        waiters: Vec<ConnId>,
    },
}

/// The Redis side of a node.
pub struct Cluster {
    settings: RedisSettings,
    /// This node's name in the cluster view.
    pub node: String,
    state: LinkState,
    backoff: Duration,
    /// The links currently open (command, pub/sub).
    links: Vec<ConnId>,
    commands_out: Vec<u8>,
    pubsub_out: Vec<u8>,
    pending: VecDeque<Pending>,
    publish_sha: Vec<u8>,
    view_sha: Vec<u8>,
    loading: HashMap<Box<[u8]>, Loading>,
    next_heartbeat: Instant,
    /// Every live node's counts, as last read: (node, counts).
    pub view: Vec<(String, String)>,
}

fn stream_key(channel: &[u8]) -> Vec<u8> {
    [STREAM_PREFIX, channel].concat()
}

fn entry_id(id: &[u8]) -> Option<u64> {
    let id = id.split(|&b| b == b'-').next()?;
    std::str::from_utf8(id).ok()?.parse().ok()
}

impl Cluster {
    pub fn new(settings: RedisSettings, node: String, now: Instant) -> Cluster {
        Cluster {
            settings,
            node,
            state: LinkState::Down(now),
            backoff: BACKOFF_MIN,
            links: Vec::new(),
            commands_out: Vec::new(),
            pubsub_out: Vec::new(),
            pending: VecDeque::new(),
            publish_sha: Vec::new(),
            view_sha: Vec::new(),
            loading: HashMap::new(),
            next_heartbeat: now,
            view: Vec::new(),
        }
    }

    /// Whether publishes can go to Redis now.
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }

    /// When the loop must call `tick`.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            LinkState::Down(at) => Some(at),
            LinkState::Up => Some(self.next_heartbeat),
            LinkState::Connecting { .. } => None,
        }
    }

    fn command(&mut self, pending: Pending, args: &[&[u8]]) {
        resp::encode(&mut self.commands_out, args);
        self.pending.push_back(pending);
    }

    /// Refreshes the cluster view when due; true when the links should
    /// be opened now (the loop then calls `connected` or `down`).
    pub fn tick(&mut self, now: Instant, counts: &str) -> bool {
        match self.state {
            LinkState::Down(at) => at <= now,
            LinkState::Up if self.next_heartbeat <= now => {
                self.next_heartbeat = now + HEARTBEAT;
                let sha = self.view_sha.clone();
                let node = self.node.clone();
                let args: [&[u8]; 7] = [
                    b"EVALSHA",
                    &sha,
                    b"1",
                    NODES_KEY,
                    node.as_bytes(),
                    counts.as_bytes(),
                    NODE_TTL_SECS,
                ];
                self.command(Pending::View, &args);
                false
            }
            _ => false,
        }
    }

    /// Where Redis listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.settings.addr
    }

    /// The loop opened both links (command first, then pub/sub): queues
    /// the handshakes, and a back-fill of every channel held.
    pub fn connected(&mut self, links: [ConnId; 2], channels: &Channels) {
        self.links = links.to_vec();
        self.state = LinkState::Connecting {
            commands: false,
            pubsub: false,
        };
        // Every channel held is back-filled once the link is up; events
        // announced before then wait behind that, in order.
        for name in channels.names() {
            self.loading.entry(name).or_default();
        }
        let db = self.settings.db.to_string();
        if let Some(password) = self.settings.password.clone() {
            self.command(Pending::Setup, &[b"AUTH", &password]);
            resp::encode(&mut self.pubsub_out, &[b"AUTH", &password]);
        }
        self.command(Pending::Setup, &[b"SELECT", db.as_bytes()]);
        self.command(Pending::PublishSha, &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT]);
        self.command(Pending::ViewSha, &[b"SCRIPT", b"LOAD", VIEW_SCRIPT]);
        let floor = channels.last_id().to_string();
        self.command(
            Pending::Floor,
            &[b"EVAL", FLOOR_SCRIPT, b"1", ID_KEY, floor.as_bytes()],
        );
        resp::encode(&mut self.pubsub_out, &[b"SUBSCRIBE", EVENTS]);
        debug!("redis {}: connecting", self.settings.addr);
    }

    /// Drops both links after a failure: publishes in flight fail, loads
    /// are asked again once reconnected. Returns the links for the loop to
    /// close; the failed publishes go to `done`.
    pub fn down(
        &mut self,
        now: Instant,
        error: &LinkError,
        done: &mut Vec<Completion>,
    ) -> Vec<ConnId> {
        match error {
            LinkError::Connect(kind) => {
                info!("redis {}: cannot connect: {kind}", self.settings.addr)
            }
            _ => info!("redis link failed: {error}"),
        }
        if self.state == LinkState::Up {
            info!(
                "redis {}: link lost; publishing fails until it is back",
                self.settings.addr
            );
        }
        self.state = LinkState::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.commands_out.clear();
        self.pubsub_out.clear();
        for loading in self.loading.values_mut() {
            loading.requested = false;
        }
        done.extend(self.pending.drain(..).filter_map(|p| match p {
            Pending::Publish(Some(to)) => Some(Completion::Published { to, id: None }),
            _ => None,
        }));
        std::mem::take(&mut self.links)
    }

    /// Sends a publish to Redis; false when the link is down (the caller
    /// answers with an error at once).
    pub fn publish(
        &mut self,
        from: Option<ConnId>,
        channel: &[u8],
        text: &[u8],
        now_ms: u64,
        max_len: usize,
    ) -> bool {
        if !self.is_up() {
            return false;
        }
        let sha = self.publish_sha.clone();
        let key = stream_key(channel);
        let max = max_len.max(1).to_string();
        let ms = now_ms.to_string();
        let args: [&[u8]; 10] = [
            b"EVALSHA",
            &sha,
            b"2",
            ID_KEY,
            &key,
            max.as_bytes(),
            ms.as_bytes(),
            text,
            EVENTS,
            channel,
        ];
        self.command(Pending::Publish(from), &args);
        true
    }

    /// Whether a channel can be read now: held locally and not loading.
    /// Otherwise the subscriber `reader` is queued until it is.
    pub fn ready_or_wait(
        &mut self,
        channel: &[u8],
        channels: &Channels,
        reader: ConnId,
        max_len: usize,
    ) -> bool {
        if !self.loading.contains_key(channel) && channels.by_name(channel).is_some() {
            return true;
        }
        let loading = self.loading.entry(channel.into()).or_default();
        loading.waiters.push(reader);
        if !loading.requested && self.state == LinkState::Up {
            loading.requested = true;
            self.request_load(channel, None, max_len);
        }
        false
    }

    fn request_load(&mut self, channel: &[u8], after: Option<u64>, max_len: usize) {
        let key = stream_key(channel);
        match after {
            None => {
                let count = max_len.max(1).to_string();
                let args: [&[u8]; 6] = [b"XREVRANGE", &key, b"+", b"-", b"COUNT", count.as_bytes()];
                self.command(
                    Pending::Load {
                        channel: channel.into(),
                        newest_first: true,
                    },
                    &args,
                );
            }
            Some(id) => {
                let start = format!("({id}-0");
                let args: [&[u8]; 4] = [b"XRANGE", &key, start.as_bytes(), b"+"];
                self.command(
                    Pending::Load {
                        channel: channel.into(),
                        newest_first: false,
                    },
                    &args,
                );
            }
        }
    }

    /// The open links (command, pub/sub).
    pub fn links(&self) -> &[ConnId] {
        &self.links
    }

    /// Reads and decodes what a link received, then acts on each reply.
    /// Err means the link failed and must be brought down; what it had
    /// received before is applied first (an event announced just before
    /// the break is not lost).
    pub fn receive(
        &mut self,
        link: &mut Link,
        scratch: &mut [u8],
        channels: &mut Channels,
        done: &mut Vec<Completion>,
    ) -> Result<Received, LinkError> {
        let failure = link.fill(scratch).err();
        let max_len = channels.max_per_channel;
        let mut used = 0;
        let mut events = 0;
        // After a break, everything received is applied at once.
        while events < COMMANDS_PER_TURN || failure.is_some() {
            let Some((value, n)) =
                resp::decode(&link.inbuf[used..]).map_err(|e| LinkError::Protocol(e.0))?
            else {
                break;
            };
            used += n;
            match link.role {
                Role::Command => self.on_reply(value, channels, max_len, done)?,
                Role::PubSub => {
                    self.on_pubsub(value, channels, max_len)?;
                    events += 1;
                }
            }
        }
        link.inbuf.drain(..used);
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(
            if events == COMMANDS_PER_TURN || link.inbuf.len() >= SCRATCH_BYTES {
                Received::More
            } else {
                Received::All
            },
        )
    }

    /// Writes what is queued for a link.
    pub fn send(&mut self, link: &mut Link) -> Result<(), LinkError> {
        match link.role {
            Role::Command => link.send(&mut self.commands_out),
            Role::PubSub => link.send(&mut self.pubsub_out),
        }
    }

    /// The link is up once both handshakes are through: back-fill every
    /// channel held, and load those readers wait for.
    fn link_ready(&mut self, commands: bool, pubsub: bool, channels: &Channels, max_len: usize) {
        let LinkState::Connecting {
            commands: c,
            pubsub: p,
        } = self.state
        else {
            return;
        };
        let (commands, pubsub) = (c || commands, p || pubsub);
        self.state = LinkState::Connecting { commands, pubsub };
        if !(commands && pubsub) {
            return;
        }
        self.state = LinkState::Up;
        self.backoff = BACKOFF_MIN;
        info!("redis {}: link up", self.settings.addr);
        let names: Vec<Box<[u8]>> = self.loading.keys().cloned().collect();
        for name in names {
            let after = channels.by_name(&name).map(|c| c.newest_id());
            if let Some(loading) = self.loading.get_mut(&name) {
                loading.requested = true;
            }
            self.request_load(&name, after, max_len);
        }
    }

    fn on_reply(
        &mut self,
        value: Value,
        channels: &mut Channels,
        max_len: usize,
        done: &mut Vec<Completion>,
    ) -> Result<(), LinkError> {
        let pending = self.pending.pop_front().ok_or(LinkError::Unexpected)?;
        if let Value::Error(e) = &value {
            info!(
                "redis {}: {pending:?} failed: {}",
                self.settings.addr,
                String::from_utf8_lossy(e)
            );
        }
        match pending {
            Pending::Setup | Pending::Floor if matches!(value, Value::Error(_)) => {
                return Err(LinkError::HandshakeRefused);
            }
            Pending::Setup => {}
            Pending::Floor => self.link_ready(true, false, channels, max_len),
            Pending::PublishSha => {
                self.publish_sha = value
                    .bytes()
                    .ok_or(LinkError::BadReply("SCRIPT LOAD"))?
                    .to_vec()
            }
            Pending::ViewSha => {
                self.view_sha = value
                    .bytes()
                    .ok_or(LinkError::BadReply("SCRIPT LOAD"))?
                    .to_vec()
            }
            Pending::Publish(from) => {
                let id = value.integer().and_then(|n| u64::try_from(n).ok());
                if let Some(id) = id {
                    channels.saw_id(id);
                }
                if let Some(to) = from {
                    done.push(Completion::Published { to, id });
                }
            }
            Pending::Load {
                channel,
                newest_first,
            } => {
                let Value::Array(mut entries) = value else {
                    return Err(LinkError::BadReply("a stream read"));
                };
                if newest_first {
                    entries.reverse();
                }
                let loading = self.loading.remove(&channel).unwrap_or_default();
                let history = entries
                    .into_iter()
                    .filter_map(|e| stream_event(&channel, e));
                for event in history.chain(loading.events) {
                    channels.insert(&event.channel, event.id, &event.text, event.ms);
                }
                if !loading.waiters.is_empty() {
                    // Held from now on, so that events announced before its
                    // readers attach are kept.
                    channels.hold(&channel);
                    done.push(Completion::Loaded {
                        channel,
                        waiters: loading.waiters,
                    });
                }
            }
            Pending::View => {
                if let Value::Array(items) = value {
                    self.view = items
                        .chunks(2)
                        .filter_map(|pair| match pair {
                            [node, counts] => Some((
                                String::from_utf8_lossy(node.bytes()?).into_owned(),
                                String::from_utf8_lossy(counts.bytes()?).into_owned(),
                            )),
                            _ => None,
                        })
                        .collect();
                    self.view.sort();
                }
            }
        }
        Ok(())
    }

    fn on_pubsub(
        &mut self,
        value: Value,
        channels: &mut Channels,
        max_len: usize,
    ) -> Result<(), LinkError> {
        let items = match value {
            Value::Array(items) => items,
            Value::Error(e) => {
                return Err(LinkError::Refused(String::from_utf8_lossy(&e).into_owned()));
            }
            // The answer to AUTH.
            _ => return Ok(()),
        };
        match items.first().and_then(Value::bytes) {
            Some(b"subscribe") => self.link_ready(false, true, channels, max_len),
            Some(b"message") => {
                let Some(event) = items.get(2).and_then(Value::bytes).and_then(Event::parse) else {
                    return Ok(());
                };
                channels.saw_id(event.id);
                if let Some(loading) = self.loading.get_mut(event.channel.as_slice()) {
                    loading.events.push(event);
                } else if channels.by_name(&event.channel).is_some() {
                    channels.insert(&event.channel, event.id, &event.text, event.ms);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A stream entry `[id, [field, value, ...]]` as an event of `channel`.
fn stream_event(channel: &[u8], entry: Value) -> Option<Event> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let id = entry_id(parts.first()?.bytes()?)?;
    let Some(Value::Array(fields)) = parts.get(1) else {
        return None;
    };
    let field = |name: &[u8]| {
        fields
            .chunks(2)
            .find(|pair| pair.first().and_then(Value::bytes) == Some(name))
            .and_then(|pair| pair.get(1)?.bytes().map(<[u8]>::to_vec))
    };
    let ms = std::str::from_utf8(&field(b"t")?).ok()?.parse().ok()?;
    Some(Event {
        id,
        ms,
        channel: channel.to_vec(),
        text: field(b"x")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_entries() {
        assert_eq!(
            Event::parse(b"7 1000 ch a b"),
            Some(Event {
                id: 7,
                ms: 1000,
                channel: b"ch".to_vec(),
                text: b"a b".to_vec()
            })
        );
        assert_eq!(Event::parse(b"x 1 ch t"), None);
        let entry = Value::Array(vec![
            Value::Bulk(b"12-0".to_vec()),
            Value::Array(vec![
                Value::Bulk(b"t".to_vec()),
                Value::Bulk(b"5".to_vec()),
                Value::Bulk(b"x".to_vec()),
                Value::Bulk(b"hi".to_vec()),
            ]),
        ]);
        assert_eq!(
            stream_event(b"c", entry),
            Some(Event {
                id: 12,
                ms: 5,
                channel: b"c".to_vec(),
                text: b"hi".to_vec()
            })
        );
    }
}
