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
use crate::io::{COMMANDS_PER_TURN, READS_PER_TURN};
use crate::{debug, info};
use link::{Link, LinkError, Read, Role};
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
/// and announces `<id> <ms> <channel> <text>`, atomically. A counter that
/// does not exist (a new Redis, or one that lost its data) starts a new
/// generation at Redis's clock in microseconds: every id handed out before
/// is below it, whichever node asks first (see `FLOOR_SCRIPT`). Lua
/// numbers are doubles: the id is written with `%.0f` (exact below 2^53),
/// never with `..` (which would write `1.7e+15`).
const PUBLISH_SCRIPT: &[u8] = b"if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
local n = redis.call('INCR', KEYS[1])
local id = string.format('%.0f', n)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 't', ARGV[2], 'x', ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[2] .. ' ' .. ARGV[5] .. ' ' .. ARGV[3])
return n";

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

/// The id rule. The counter is created at Redis's clock in microseconds
/// (a new generation) and counts up by one per publish from there. Redis
/// runs at most one publish script per microsecond, so every id handed out
/// is below the clock of the moment: a counter created again after Redis
/// lost its data starts above every id of the previous generation, even
/// when the first node to reconnect has never seen any (a fresh node).
/// Then each node raises the counter to the highest id it has seen (the
/// floor), which also covers a Redis whose clock went back. Ids stay below
/// 2^53 (exact in JavaScript) until the year 2255.
///
/// Returns `{created, counter}`: whether this call started a generation.
const FLOOR_SCRIPT: &[u8] = b"local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
  created = 1
end
if tonumber(redis.call('GET', KEYS[1])) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return {created, redis.call('GET', KEYS[1])}";

/// Publishes waiting for Redis, by default (`RedisMaxPending`).
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// Text bytes of publishes waiting for Redis at most (one publish is
/// always let through when none waits).
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Bytes a reply may carry besides the event texts: per stream entry (its
/// id, time and field names, RESP headers) and per reply.
const ENTRY_OVERHEAD: usize = 160;
const REPLY_OVERHEAD: usize = 1024;
/// The least bound on one reply (the cluster view of many nodes).
const MIN_REPLY_BYTES: usize = 1024 * 1024;

/// What the configuration allows, which bounds a reply and the wait for
/// one. The loop passes the current values on every tick (`set_limits`),
/// so a reload applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RedisTimeout`: a reply due for this long, with nothing received,
    /// means Redis is hung.
    pub timeout: Duration,
    /// `RedisMaxPending`: publishes waiting for Redis at most.
    pub max_pending: usize,
    /// The longest event text a node may publish (`MaxControllerLineBytes`
    /// or `UDPMaxBytes`, whichever is larger).
    pub max_text: usize,
    /// `MaxChannelNameLength`.
    pub max_channel_name: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(5),
            max_pending: DEFAULT_MAX_PENDING,
            max_text: 1024 * 1024,
            max_channel_name: 1024,
        }
    }
}

impl Limits {
    /// The largest reply the configuration allows: a history of
    /// `max_len` events (or one announced event), each of the longest text.
    pub fn max_reply_bytes(&self, max_len: usize) -> usize {
        let entry = self
            .max_text
            .saturating_add(self.max_channel_name)
            .saturating_add(ENTRY_OVERHEAD);
        entry
            .saturating_mul(max_len.max(1))
            .saturating_add(REPLY_OVERHEAD)
            .max(MIN_REPLY_BYTES)
    }
}

/// What the loop must do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// Open both links now (then `connected`, or `down` when that failed).
    Open,
    /// The links failed (no reply in time): bring them down.
    Failed(LinkError),
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
    /// A publish from a controller, or from UDP (None), with its text's
    /// length (counted against `MAX_PENDING_BYTES`).
    Publish(Option<ConnId>, usize),
    /// A channel's history or, after a lost link, the events after the
    /// newest one held: `XREVRANGE ... COUNT MaxMessagesPerChannel`, newest
    /// first.
    Load {
        channel: Box<[u8]>,
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
    /// What each reply due on the command link answers, with when it was
    /// asked.
    pending: VecDeque<(Instant, Pending)>,
    /// When each reply due on the pub/sub link (AUTH, SUBSCRIBE, PING)
    /// was asked.
    pubsub_pending: VecDeque<Instant>,
    /// When bytes last arrived on the command and the pub/sub link.
    heard: [Instant; 2],
    /// Publishes waiting for Redis, and their text bytes.
    waiting_publishes: usize,
    waiting_bytes: usize,
    limits: Limits,
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
            pubsub_pending: VecDeque::new(),
            heard: [now; 2],
            waiting_publishes: 0,
            waiting_bytes: 0,
            limits: Limits::default(),
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

    /// What the configuration allows now (the loop passes it every tick).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// When the loop must call `tick`: a reconnection, a heartbeat, or
    /// the moment a reply due becomes overdue.
    pub fn deadline(&self) -> Option<Instant> {
        let state = match self.state {
            LinkState::Down(at) => Some(at),
            LinkState::Up => Some(self.next_heartbeat),
            LinkState::Connecting { .. } => None,
        };
        [state, self.overdue_at()].into_iter().flatten().min()
    }

    /// When the oldest reply due on either link is overdue: `RedisTimeout`
    /// after it was asked, or after bytes last arrived on that link if
    /// later (a large reply still coming in is not overdue).
    fn overdue_at(&self) -> Option<Instant> {
        if matches!(self.state, LinkState::Down(_)) {
            return None;
        }
        let command = self.pending.front().map(|(at, _)| (*at).max(self.heard[0]));
        let pubsub = self
            .pubsub_pending
            .front()
            .map(|at| (*at).max(self.heard[1]));
        [command, pubsub]
            .into_iter()
            .flatten()
            .min()
            .map(|since| since + self.limits.timeout)
    }

    fn command(&mut self, pending: Pending, args: &[&[u8]]) {
        resp::encode(&mut self.commands_out, args);
        self.pending.push_back((Instant::now(), pending));
    }

    fn pubsub_command(&mut self, args: &[&[u8]]) {
        resp::encode(&mut self.pubsub_out, args);
        self.pubsub_pending.push_back(Instant::now());
    }

    /// Refreshes the cluster view when due (and checks the pub/sub link
    /// with a PING); says when the links must be opened, or failed
    /// because Redis did not answer within `RedisTimeout`.
    pub fn tick(&mut self, now: Instant, counts: &str) -> Tick {
        if self.overdue_at().is_some_and(|at| at <= now) {
            return Tick::Failed(LinkError::Timeout(self.limits.timeout));
        }
        match self.state {
            LinkState::Down(at) if at <= now => Tick::Open,
            LinkState::Up if self.next_heartbeat <= now => {
                self.next_heartbeat = now + HEARTBEAT;
                self.pubsub_command(&[b"PING"]);
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
                Tick::Nothing
            }
            _ => Tick::Nothing,
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
        let now = Instant::now();
        self.heard = [now; 2];
        let db = self.settings.db.to_string();
        if let Some(password) = self.settings.password.clone() {
            self.command(Pending::Setup, &[b"AUTH", &password]);
            self.pubsub_command(&[b"AUTH", &password]);
        }
        self.command(Pending::Setup, &[b"SELECT", db.as_bytes()]);
        self.command(Pending::PublishSha, &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT]);
        self.command(Pending::ViewSha, &[b"SCRIPT", b"LOAD", VIEW_SCRIPT]);
        let floor = channels.last_id().to_string();
        self.command(
            Pending::Floor,
            &[b"EVAL", FLOOR_SCRIPT, b"1", ID_KEY, floor.as_bytes()],
        );
        self.pubsub_command(&[b"SUBSCRIBE", EVENTS]);
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
        self.pubsub_pending.clear();
        self.waiting_publishes = 0;
        self.waiting_bytes = 0;
        for loading in self.loading.values_mut() {
            loading.requested = false;
        }
        done.extend(self.pending.drain(..).filter_map(|(_, p)| match p {
            Pending::Publish(Some(to), _) => Some(Completion::Published { to, id: None }),
            _ => None,
        }));
        std::mem::take(&mut self.links)
    }

    /// Sends a publish to Redis; false when the link is down or too many
    /// publishes wait for Redis already (`RedisMaxPending`, or 64 MiB of
    /// text): the caller answers with an error at once.
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
        let bytes = text.len().saturating_add(channel.len());
        if self.waiting_publishes >= self.limits.max_pending
            || (self.waiting_publishes > 0
                && self.waiting_bytes.saturating_add(bytes) > MAX_PENDING_BYTES)
        {
            debug!(
                "redis {}: {} publishes already wait for Redis; refusing one",
                self.settings.addr, self.waiting_publishes
            );
            return false;
        }
        self.waiting_publishes += 1;
        self.waiting_bytes = self.waiting_bytes.saturating_add(bytes);
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
        self.command(Pending::Publish(from, bytes), &args);
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
                    },
                    &args,
                );
            }
            // The newest events after the newest one held, as many as a
            // channel keeps: the reply stays within what a history may be.
            Some(id) => {
                let end = format!("({id}-0");
                let count = max_len.max(1).to_string();
                let args: [&[u8]; 6] = [
                    b"XREVRANGE",
                    &key,
                    b"+",
                    end.as_bytes(),
                    b"COUNT",
                    count.as_bytes(),
                ];
                self.command(
                    Pending::Load {
                        channel: channel.into(),
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

    /// Reads what a link received and acts on each complete reply, until
    /// the socket is drained. Err means the link failed and must be brought
    /// down; what it had received before is applied first (an event
    /// announced just before the break is not lost).
    ///
    /// `More` means work is left (the turn's share of reads or of announced
    /// events is used): the loop drives the link again next turn, since the
    /// socket will not signal again for bytes already there. `All` is only
    /// answered once a read found the socket empty. A reply larger than
    /// the configuration allows (`Limits::max_reply_bytes`) is a protocol
    /// error.
    pub fn receive(
        &mut self,
        link: &mut Link,
        scratch: &mut [u8],
        channels: &mut Channels,
        done: &mut Vec<Completion>,
    ) -> Result<Received, LinkError> {
        let max_len = channels.max_per_channel;
        let max_bytes = self.limits.max_reply_bytes(max_len);
        let role = match link.role {
            Role::Command => 0,
            Role::PubSub => 1,
        };
        let mut events = 0;
        let mut reads = 0;
        let mut failure = None;
        let result = loop {
            // Everything complete first: after a break, all of it at once.
            if events < COMMANDS_PER_TURN || failure.is_some() {
                match link.next_reply(max_bytes) {
                    Ok(Some(value)) => {
                        let acted = match link.role {
                            Role::Command => self.on_reply(value, channels, max_len, done),
                            Role::PubSub => {
                                events += 1;
                                self.on_pubsub(value, channels, max_len)
                            }
                        };
                        match acted {
                            Ok(()) => continue,
                            Err(e) => break Err(e),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            } else {
                break Ok(Received::More);
            }
            if let Some(failure) = failure.take() {
                break Err(failure);
            }
            if reads == READS_PER_TURN {
                break Ok(Received::More);
            }
            link.compact();
            match link.read_once(scratch) {
                Ok(Read::Data) => {
                    reads += 1;
                    self.heard[role] = Instant::now();
                }
                Ok(Read::Drained) => break Ok(Received::All),
                Err(e) => failure = Some(e),
            }
        };
        link.compact();
        result
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
        let (_, pending) = self.pending.pop_front().ok_or(LinkError::Unexpected)?;
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
            Pending::Floor => {
                if let Value::Array(items) = &value
                    && items.first().and_then(Value::integer) == Some(1)
                {
                    let counter = items.get(1).and_then(Value::integer).unwrap_or(0);
                    info!(
                        "redis {}: the id counter did not exist (a new Redis, or one that \
                         lost its data): new generation of ids from {counter}",
                        self.settings.addr
                    );
                }
                self.link_ready(true, false, channels, max_len)
            }
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
            Pending::Publish(from, bytes) => {
                self.waiting_publishes = self.waiting_publishes.saturating_sub(1);
                self.waiting_bytes = self.waiting_bytes.saturating_sub(bytes);
                let id = value.integer().and_then(|n| u64::try_from(n).ok());
                if let Some(id) = id {
                    channels.saw_id(id);
                }
                if let Some(to) = from {
                    done.push(Completion::Published { to, id });
                }
            }
            Pending::Load { channel } => {
                let Value::Array(mut entries) = value else {
                    return Err(LinkError::BadReply("a stream read"));
                };
                entries.reverse();
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
            _ => {
                self.pubsub_pending.pop_front();
                return Ok(());
            }
        };
        match items.first().and_then(Value::bytes) {
            Some(b"subscribe") => {
                self.pubsub_pending.pop_front();
                self.link_ready(false, true, channels, max_len)
            }
            Some(b"pong") => {
                self.pubsub_pending.pop_front();
            }
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
