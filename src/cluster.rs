//! Several nodes sharing channels through Redis. Publishing goes to Redis
//! in one script (id from a shared counter, append to the channel's stream,
//! announce on pub/sub); every node applies announced events to the
//! channels it holds and fans them out from its own buffers as usual. A
//! channel a node does not hold yet is loaded from its Redis stream before
//! anyone reads it, and after a lost link every held channel is back-filled,
//! so subscribers see neither gaps nor duplicates.
//!
//! The two Redis connections (commands, pub/sub) are sockets of the loop
//! like any other; replies arrive in command order and are matched against
//! a queue of what each one answers.

use crate::channel::Channels;
use crate::conn::{COMMANDS_PER_TURN, Conn, Io, SCRATCH_BYTES, read_some, write_some};
use crate::resp::{self, Value};
use crate::{debug, info};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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

pub use crate::config::RedisSettings;

/// Which of the two links a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Command,
    PubSub,
}

/// A Redis connection in the slab: the socket and the reply bytes not yet
/// decoded. What to send lives in `Cluster`, which anyone can queue into.
pub struct RedisConn {
    pub socket: TcpStream,
    pub role: Role,
    inbuf: Vec<u8>,
}

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
    /// A publish from a controller (token), or from UDP (None).
    Publish(Option<usize>),
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
    /// Subscriber tokens waiting for this channel.
    waiters: Vec<usize>,
    /// The load command is queued on the current link.
    requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
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

/// What the loop must do for connections after Redis answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// A controller's publish: the id, or None when Redis failed it.
    Published { token: usize, id: Option<u64> },
    /// These subscribers waited for this channel, now up to date.
    Synced {
        channel: Box<[u8]>,
        waiters: Vec<usize>,
    },
}

/// The Redis side of a node.
pub struct Cluster {
    settings: RedisSettings,
    /// This node's name in the cluster view.
    pub node: String,
    link: Link,
    backoff: Duration,
    /// Slab tokens of the connections currently open.
    tokens: Vec<usize>,
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
            link: Link::Down(now),
            backoff: BACKOFF_MIN,
            tokens: Vec::new(),
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
        self.link == Link::Up
    }

    /// When the loop must call `tick`.
    pub fn deadline(&self) -> Option<Instant> {
        match self.link {
            Link::Down(at) => Some(at),
            Link::Up => Some(self.next_heartbeat),
            Link::Connecting { .. } => None,
        }
    }

    fn command(&mut self, pending: Pending, args: &[&[u8]]) {
        resp::encode(&mut self.commands_out, args);
        self.pending.push_back(pending);
    }

    /// Reconnects when due; refreshes the cluster view when due.
    pub fn tick(
        &mut self,
        now: Instant,
        registry: &Registry,
        conns: &mut Slab<Conn>,
        channels: &Channels,
        stats: &str,
    ) {
        match self.link {
            Link::Down(at) if at <= now => self.connect(now, registry, conns, channels),
            Link::Up if self.next_heartbeat <= now => {
                self.next_heartbeat = now + HEARTBEAT;
                let sha = self.view_sha.clone();
                let node = self.node.clone();
                let args: [&[u8]; 7] = [
                    b"EVALSHA",
                    &sha,
                    b"1",
                    NODES_KEY,
                    node.as_bytes(),
                    stats.as_bytes(),
                    NODE_TTL_SECS,
                ];
                self.command(Pending::View, &args);
            }
            _ => {}
        }
    }

    fn connect(
        &mut self,
        now: Instant,
        registry: &Registry,
        conns: &mut Slab<Conn>,
        channels: &Channels,
    ) {
        for role in [Role::Command, Role::PubSub] {
            let registered = TcpStream::connect(self.settings.addr).and_then(|mut socket| {
                let _ = socket.set_nodelay(true);
                let entry = conns.vacant_entry();
                let token = entry.key();
                registry.register(
                    &mut socket,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Conn::Redis(RedisConn {
                    socket,
                    role,
                    inbuf: Vec::new(),
                }));
                Ok(token)
            });
            match registered {
                Ok(token) => self.tokens.push(token),
                Err(e) => {
                    info!("redis {}: cannot connect: {e}", self.settings.addr);
                    // Nothing is in flight yet, so there is nothing to complete.
                    let _ = self.down(now, registry, conns);
                    return;
                }
            }
        }
        self.link = Link::Connecting {
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
    /// are asked again once reconnected. Returns the completions.
    pub fn down(
        &mut self,
        now: Instant,
        registry: &Registry,
        conns: &mut Slab<Conn>,
    ) -> Vec<Completion> {
        for token in self.tokens.drain(..) {
            if let Some(Conn::Redis(mut c)) = conns.try_remove(token) {
                let _ = registry.deregister(&mut c.socket);
            }
        }
        if self.link == Link::Up {
            info!(
                "redis {}: link lost; publishing fails until it is back",
                self.settings.addr
            );
        }
        self.link = Link::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.commands_out.clear();
        self.pubsub_out.clear();
        for loading in self.loading.values_mut() {
            loading.requested = false;
        }
        self.pending
            .drain(..)
            .filter_map(|p| match p {
                Pending::Publish(Some(token)) => Some(Completion::Published { token, id: None }),
                _ => None,
            })
            .collect()
    }

    /// Sends a publish to Redis; false when the link is down (the caller
    /// answers with an error at once).
    pub fn publish(
        &mut self,
        token: Option<usize>,
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
        self.command(Pending::Publish(token), &args);
        true
    }

    /// Whether a channel can be read now: held locally and not loading.
    /// Otherwise the subscriber `token` is queued until it is.
    pub fn ready_or_wait(
        &mut self,
        channel: &[u8],
        channels: &Channels,
        token: usize,
        max_len: usize,
    ) -> bool {
        if !self.loading.contains_key(channel) && channels.by_name(channel).is_some() {
            return true;
        }
        let loading = self.loading.entry(channel.into()).or_default();
        loading.waiters.push(token);
        if !loading.requested && self.link == Link::Up {
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

    /// Tokens of the open Redis connections.
    pub fn tokens(&self) -> Vec<usize> {
        self.tokens.clone()
    }

    /// The bytes each link has to send, taken for writing.
    pub fn outgoing(&mut self, role: Role) -> &mut Vec<u8> {
        match role {
            Role::Command => &mut self.commands_out,
            Role::PubSub => &mut self.pubsub_out,
        }
    }

    /// Reads and decodes what a link received, then acts on each reply.
    /// Err means the link failed and must be brought down.
    pub fn receive(
        &mut self,
        conn: &mut RedisConn,
        scratch: &mut [u8],
        channels: &mut Channels,
        max_len: usize,
        done: &mut Vec<Completion>,
    ) -> Result<Received, String> {
        // Read only while little is buffered: what is left is decoded on
        // the next turns, `COMMANDS_PER_TURN` announced events at a time.
        let mut failure = None;
        while failure.is_none() && conn.inbuf.len() < SCRATCH_BYTES {
            match read_some(&mut conn.socket, scratch) {
                Io::Progress(n) => conn.inbuf.extend_from_slice(&scratch[..n]),
                Io::WouldBlock => break,
                Io::Closed => failure = Some("connection closed".to_owned()),
                Io::Failed(e) => failure = Some(e.to_string()),
            }
        }
        let mut used = 0;
        let mut events = 0;
        // After a break, everything received is applied at once.
        while events < COMMANDS_PER_TURN || failure.is_some() {
            let Some((value, n)) =
                resp::decode(&conn.inbuf[used..]).map_err(|e| e.0.to_string())?
            else {
                break;
            };
            used += n;
            match conn.role {
                Role::Command => self.on_reply(value, channels, max_len, done)?,
                Role::PubSub => {
                    self.on_pubsub(value, channels, max_len)?;
                    events += 1;
                }
            }
        }
        conn.inbuf.drain(..used);
        // Replies that arrived before the link broke have been applied (an
        // event announced just before is not lost); now report the break.
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(
            if events == COMMANDS_PER_TURN || conn.inbuf.len() >= SCRATCH_BYTES {
                Received::More
            } else {
                Received::All
            },
        )
    }

    /// Writes what is queued for a link.
    pub fn send(&mut self, conn: &mut RedisConn) -> Result<(), String> {
        let out = self.outgoing(conn.role);
        let mut sent = 0;
        while sent < out.len() {
            match write_some(&mut conn.socket, &out[sent..]) {
                Io::Progress(n) => sent += n,
                Io::WouldBlock => break,
                Io::Closed => return Err("connection closed".into()),
                Io::Failed(e) => return Err(e.to_string()),
            }
        }
        out.drain(..sent);
        Ok(())
    }

    /// The link is up once both handshakes are through: back-fill every
    /// channel held, and load those readers wait for.
    fn link_ready(&mut self, commands: bool, pubsub: bool, channels: &Channels, max_len: usize) {
        let Link::Connecting {
            commands: c,
            pubsub: p,
        } = self.link
        else {
            return;
        };
        let (commands, pubsub) = (c || commands, p || pubsub);
        self.link = Link::Connecting { commands, pubsub };
        if !(commands && pubsub) {
            return;
        }
        self.link = Link::Up;
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
    ) -> Result<(), String> {
        let pending = self.pending.pop_front().ok_or("a reply nobody asked for")?;
        if let Value::Error(e) = &value {
            info!(
                "redis {}: {pending:?} failed: {}",
                self.settings.addr,
                String::from_utf8_lossy(e)
            );
        }
        match pending {
            Pending::Setup | Pending::Floor if matches!(value, Value::Error(_)) => {
                return Err("handshake refused".into());
            }
            Pending::Setup => {}
            Pending::Floor => self.link_ready(true, false, channels, max_len),
            Pending::PublishSha => {
                self.publish_sha = value.bytes().ok_or("SCRIPT LOAD failed")?.to_vec()
            }
            Pending::ViewSha => self.view_sha = value.bytes().ok_or("SCRIPT LOAD failed")?.to_vec(),
            Pending::Publish(token) => {
                let id = value.integer().and_then(|n| u64::try_from(n).ok());
                if let Some(token) = token {
                    done.push(Completion::Published { token, id });
                }
            }
            Pending::Load {
                channel,
                newest_first,
            } => {
                let Value::Array(mut entries) = value else {
                    return Err("stream read failed".into());
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
                    done.push(Completion::Synced {
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
    ) -> Result<(), String> {
        let items = match value {
            Value::Array(items) => items,
            Value::Error(e) => return Err(String::from_utf8_lossy(&e).into_owned()),
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
