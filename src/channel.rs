//! Channels: each keeps its recent messages and, per message template in
//! use, one shared append-only buffer of rendered events that subscribers
//! read through cursors (byte offsets). Publishing renders an event once per
//! template, never once per subscriber.
//!
//! Memory (`MaxCachedBytes`, `MaxChannels`): every byte held for events
//! (texts, rendered buffers, and a fixed bookkeeping cost per event) is
//! counted in one total kept as events come and go, never by walking the
//! channels. Above `MaxCachedBytes`, rendered buffers nobody reads go first,
//! then the oldest events across all channels, in publishing order, from one
//! queue. The newest event of a buffer with readers is never evicted (they
//! may not have sent it yet): a publish that would not fit beside those, or
//! an event larger than the bound by itself, is refused, and so is a
//! publish that would create a channel beyond `MaxChannels`. A buffer
//! whose last reader left is dropped `STREAM_GRACE_MS` later and rendered
//! again from the cache when a reader comes back. Buffers shrink when what
//! they hold shrinks, and after a large drop the allocator is asked to give
//! the memory back to the system.

use crate::conn::ConnId;
use crate::deadline::Deadlines;
use crate::template::{Placeholder, Template, Value};
use slab::Slab;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::rc::Rc;

/// Events a stream keeps for subscribers that are still writing them out,
/// even when the message cache keeps fewer (`MaxMessagesPerChannel 0`, or
/// after SIGUSR1): a subscriber further behind than this and than the cache
/// has lost events and is dropped as a slow consumer. `MaxCachedBytes` may
/// evict below the floor (never a read stream's newest event).
pub const STREAM_FLOOR_EVENTS: usize = 64;

/// `MaxCachedBytes` by default: 64 MiB.
pub const DEFAULT_MAX_CACHED_BYTES: u64 = 64 * 1024 * 1024;
/// `MaxChannels` by default.
pub const DEFAULT_MAX_CHANNELS: usize = 100_000;
/// Bytes counted for a cached message besides its text: its record, its
/// slots in the cache and the eviction queue, the allocator's header.
pub const MESSAGE_OVERHEAD: u64 = 64;
/// Bytes counted for a rendered event besides its bytes (its mark).
pub const MARK_OVERHEAD: u64 = 16;
/// How long a rendered buffer nobody reads is kept for a reader coming back
/// (a long-poll client asking again) before it is dropped.
pub const STREAM_GRACE_MS: u64 = 2_000;
/// Held bytes that must have gone since the peak before the allocator is
/// asked to return free memory to the system (`malloc_trim`)...
const TRIM_AFTER_BYTES: u64 = 8 * 1024 * 1024;
/// ... and the least time between two such requests.
const TRIM_INTERVAL_MS: u64 = 1_000;

/// One published message.
#[derive(Debug)]
pub struct Message {
    pub id: u64,
    /// Unix time in milliseconds.
    pub added_ms: u64,
    pub text: Box<[u8]>,
}

impl Message {
    /// The bytes this message counts for.
    fn cost(&self) -> u64 {
        self.text.len() as u64 + MESSAGE_OVERHEAD
    }
}

/// Why a publish was refused; its `Display` is the reason sent back
/// (`ERR <reason>` on the line protocol, 507 over HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefused {
    /// The channel is new and `MaxChannels` channels exist.
    TooManyChannels { max: usize },
    /// The event by itself (text, and rendered copies that subscribers are
    /// reading) needs more than `MaxCachedBytes`.
    TooLarge { bytes: u64, max: u64 },
    /// The newest events of channels with subscribers, which are not
    /// evicted, would not leave room under `MaxCachedBytes`.
    Full { max: u64 },
}

impl fmt::Display for PublishRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishRefused::TooManyChannels { max } => {
                write!(f, "Too many channels (MaxChannels {max})")
            }
            PublishRefused::TooLarge { bytes, max } => write!(
                f,
                "Message too large for the cache ({bytes} bytes, MaxCachedBytes {max})"
            ),
            PublishRefused::Full { max } => {
                write!(f, "Cache full of undelivered events (MaxCachedBytes {max})")
            }
        }
    }
}

/// What the memory bounds did, for `/stats` and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryCounters {
    /// Events dropped early to stay under `MaxCachedBytes`.
    pub evicted_events: u64,
    /// Bytes those evictions freed.
    pub evicted_bytes: u64,
    /// Rendered buffers dropped because nobody read them.
    pub streams_dropped: u64,
    /// Publishes refused by `MaxChannels`.
    pub refused_channels: u64,
    /// Publishes refused by `MaxCachedBytes`.
    pub refused_bytes: u64,
}

/// Where an event starts in a stream.
#[derive(Debug, Clone, Copy)]
struct Mark {
    id: u64,
    offset: u64,
}

/// The rendered events of one channel for one message template.
#[derive(Debug)]
pub struct Stream {
    template: Rc<Template>,
    buf: Vec<u8>,
    /// `buf[start..]` is live; the front is trimmed lazily to avoid memmoves.
    start: usize,
    /// The absolute offset of `buf[start]`.
    base: u64,
    marks: VecDeque<Mark>,
    /// Cursors reading this stream.
    readers: usize,
    /// Where readers whose sockets are full stand (offset -> how many).
    pins: BTreeMap<u64, u32>,
    /// Set (from `Channels::next_serial`) each time the last reader
    /// leaves, telling a current entry of `Channels::idle` from an outdated one.
    idle_gen: u64,
}

/// Renders one event of `channel` with `template`, appending to `out`.
fn render(template: &Template, out: &mut Vec<u8>, channel: &[u8], message: &Message) {
    template.render(out, |p| match p {
        Placeholder::Id => Value::Number(message.id),
        Placeholder::Channel => Value::Bytes(channel),
        Placeholder::Text => Value::Bytes(&message.text),
        Placeholder::Timestamp => Value::Number(message.added_ms / 1000),
        _ => Value::None,
    });
}

/// Gives back most of a byte buffer's spare capacity once it is far above
/// what the buffer holds (halving at a quarter: amortised O(1)).
fn shrink_bytes(buf: &mut Vec<u8>) {
    if buf.capacity() > 4096 && buf.capacity() / 4 > buf.len() {
        buf.shrink_to(buf.len() * 2);
    }
}

/// Likewise for a queue.
fn shrink_queue<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > 64 && queue.capacity() / 4 > queue.len() {
        queue.shrink_to(queue.len() * 2);
    }
}

impl Stream {
    fn new(template: Rc<Template>) -> Stream {
        Stream {
            template,
            buf: Vec::new(),
            start: 0,
            base: 0,
            marks: VecDeque::new(),
            readers: 0,
            pins: BTreeMap::new(),
            idle_gen: 0,
        }
    }

    /// The absolute offset just past the newest event.
    pub fn head(&self) -> u64 {
        self.base + (self.buf.len() - self.start) as u64
    }

    /// The bytes this stream counts for.
    fn held(&self) -> u64 {
        (self.buf.len() - self.start) as u64 + self.marks.len() as u64 * MARK_OVERHEAD
    }

    /// What its newest event counts for.
    fn newest_cost(&self) -> u64 {
        self.marks
            .back()
            .map_or(0, |m| self.head() - m.offset + MARK_OVERHEAD)
    }

    /// The bytes eviction must leave: the newest event while someone reads.
    fn protected(&self) -> u64 {
        if self.readers > 0 {
            self.newest_cost()
        } else {
            0
        }
    }

    fn append(&mut self, channel: &[u8], message: &Message) {
        let offset = self.head();
        self.marks.push_back(Mark {
            id: message.id,
            offset,
        });
        render(&self.template, &mut self.buf, channel, message);
    }

    /// Takes back the event `id` if it is the newest (a refused publish).
    fn unappend(&mut self, id: u64) {
        if let Some(mark) = self.marks.back().copied().filter(|m| m.id == id) {
            self.marks.pop_back();
            self.buf
                .truncate(self.start + (mark.offset - self.base) as usize);
        }
    }

    /// Forgets one reader's pin at `pos`.
    fn unpin(&mut self, pos: u64) {
        if let Some(count) = self.pins.get_mut(&pos) {
            *count -= 1;
            if *count == 0 {
                self.pins.remove(&pos);
            }
        }
    }

    /// Drops events with ids below `id` from the front.
    fn trim_before_id(&mut self, id: u64) {
        if self.marks.front().is_none_or(|m| m.id >= id) {
            return;
        }
        while self.marks.front().is_some_and(|m| m.id < id) {
            self.marks.pop_front();
        }
        let to = self.marks.front().map_or(self.head(), |m| m.offset);
        self.start += (to - self.base) as usize;
        self.base = to;
        if self.marks.is_empty() {
            // Nothing live: give the whole buffer back.
            self.buf = Vec::new();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.buf.len() {
            // Compact once the dead front outweighs the live part.
            self.buf.drain(..self.start);
            self.start = 0;
            shrink_bytes(&mut self.buf);
        }
        shrink_queue(&mut self.marks);
    }

    /// The offset where the first event with an id of at least `id` starts.
    fn offset_of_id(&self, id: u64) -> u64 {
        let i = self.marks.partition_point(|m| m.id < id);
        self.marks.get(i).map_or(self.head(), |m| m.offset)
    }

    /// The rest of the event `pos` is in the middle of; empty at a boundary.
    pub fn event_remainder(&self, pos: u64) -> &[u8] {
        let at_boundary =
            pos >= self.head() || self.marks.binary_search_by_key(&pos, |m| m.offset).is_ok();
        if at_boundary {
            return &[];
        }
        let end = self.after_events(pos, 1);
        match self.bytes_from(pos) {
            Some(bytes) => &bytes[..(end - pos) as usize],
            None => &[],
        }
    }

    /// The unsent bytes from `pos`, or None when `pos` has been trimmed away
    /// (the reader fell behind what the channel still holds).
    pub fn bytes_from(&self, pos: u64) -> Option<&[u8]> {
        let skip = pos.checked_sub(self.base)?;
        self.buf.get(self.start + skip as usize..)
    }

    /// Index of the event that contains `pos` (or starts at it).
    fn event_at(&self, pos: u64) -> usize {
        self.marks
            .partition_point(|m| m.offset <= pos)
            .saturating_sub(1)
    }

    /// The id of the event that contains `pos`; None at the head.
    pub fn id_at(&self, pos: u64) -> Option<u64> {
        (pos < self.head()).then(|| self.marks[self.event_at(pos)].id)
    }

    /// The offset at which `count` more events will have been completed.
    pub fn after_events(&self, pos: u64, count: u64) -> u64 {
        let i = self.event_at(pos).saturating_add(count as usize);
        self.marks.get(i).map_or(self.head(), |m| m.offset)
    }

    /// The offset where the first event with an id above `id` starts.
    pub fn end_of_ids_up_to(&self, id: u64) -> u64 {
        let i = self.marks.partition_point(|m| m.id <= id);
        self.marks.get(i).map_or(self.head(), |m| m.offset)
    }

    /// How many events end in `(from, to]`.
    pub fn events_completed(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        let lo = self.marks.partition_point(|m| m.offset <= from);
        let hi = self.marks.partition_point(|m| m.offset <= to);
        (hi - lo) as u64 + u64::from(to == self.head())
    }
}

/// What part of the cache a subscriber asks for before new messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Only new messages (`<name>`).
    None,
    /// Cached messages with an id of at least this (`.r<id>`).
    FromId(u64),
    /// The last n cached messages (`.b<n>`).
    Last(u64),
    /// Everything cached (`.h`).
    All,
}

/// A subscriber's position in one channel.
#[derive(Debug)]
pub struct Cursor {
    pub channel: usize,
    slot: usize,
    pub stream: usize,
    /// Next byte to send.
    pub pos: u64,
    /// Where to stop: the head at request time for a non-persistent reply.
    pub end: u64,
}

/// A connection reading a channel.
#[derive(Debug)]
struct Reader {
    id: ConnId,
    /// The stream it reads (`Cursor::stream`).
    stream: usize,
    /// Where its socket filled up, while it does: the stream keeps what it
    /// has not received (at most `MAX_PINNED_LAG` bytes behind the head),
    /// so a reader that keeps up is not dropped because a publisher was
    /// fast for a moment.
    pin: Option<u64>,
}

/// How far a reader whose socket is full may fall behind the newest event
/// before the stream stops keeping its events for it (it is then dropped as
/// a slow consumer once they are trimmed). Redis's `client-output-buffer-
/// limit` for pub/sub plays the same part.
pub const MAX_PINNED_LAG: u64 = 8 * 1024 * 1024;

/// One named channel.
#[derive(Debug)]
pub struct Channel {
    pub name: Box<[u8]>,
    messages: VecDeque<Message>,
    /// What `messages` count for (`Message::cost`).
    message_bytes: u64,
    /// By index (`Cursor::stream`): stable while the stream has readers.
    streams: Slab<Stream>,
    /// Everyone reading this channel.
    subscribers: Slab<Reader>,
    /// Persistent subscribers, the ones `COUNTSUBSCRIBERS` reports.
    pub persistent: usize,
    /// Events taken since its subscribers were last written (`take_dirty`);
    /// above 0 it is queued in `Channels::dirty` for the next flush.
    fresh: usize,
    /// The key of this channel's entry in `Channels::expiries`.
    expires_ms: Option<u64>,
    /// Unique per channel ever created: tells this channel from an earlier
    /// one at the same slab key in `Channels::queue` and `Channels::idle`.
    serial: u64,
    /// Events up to this id were evicted for `MaxCachedBytes`: streams keep
    /// none of them but the newest event of a stream with readers.
    evicted_through: u64,
}

/// What one channel (or all) holds, in the units the bounds count.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    /// Messages and rendered events, with their overheads.
    held: u64,
    /// Of which in rendered buffers.
    rendered: u64,
    /// Of which eviction must leave (`Stream::protected`).
    protected: u64,
    /// Cached messages.
    events: u64,
}

impl Channel {
    /// Messages in the cache (`LISTCHANNELS`, `~messageCount~`).
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// The cached messages, oldest first (the state file's snapshot).
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter()
    }

    /// The newest cached message id, 0 when the cache is empty.
    pub fn last_id(&self) -> u64 {
        self.messages.back().map_or(0, |m| m.id)
    }

    /// The newest id held, in the cache or a stream, or evicted; 0 when none.
    pub fn newest_id(&self) -> u64 {
        let streams = self
            .streams
            .iter()
            .filter_map(|(_, s)| s.marks.back())
            .map(|m| m.id);
        streams
            .chain(self.messages.back().map(|m| m.id))
            .fold(self.evicted_through, u64::max)
    }

    /// The oldest id held, in the cache or a stream.
    fn oldest_id(&self) -> Option<u64> {
        let streams = self
            .streams
            .iter()
            .filter_map(|(_, s)| s.marks.front())
            .map(|m| m.id);
        streams.chain(self.messages.front().map(|m| m.id)).min()
    }

    /// Whether an event this channel took is still held somewhere.
    fn holds(&self, id: u64) -> bool {
        id > self.evicted_through && self.oldest_id().is_some_and(|o| o <= id)
    }

    /// The rendered buffer a cursor reads (`Cursor::stream`).
    pub fn stream(&self, index: usize) -> &Stream {
        &self.streams[index]
    }

    /// Every connection reading this channel.
    pub fn subscribers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.subscribers.iter().map(|(_, r)| r.id)
    }

    fn usage(&self) -> Usage {
        let mut usage = Usage {
            held: self.message_bytes,
            events: self.messages.len() as u64,
            ..Usage::default()
        };
        for (_, stream) in &self.streams {
            let held = stream.held();
            usage.held += held;
            usage.rendered += held;
            usage.protected += stream.protected();
        }
        usage
    }

    fn push_message(&mut self, message: Message) {
        self.message_bytes += message.cost();
        self.messages.push_back(message);
    }

    /// Drops the oldest cached messages while `drop` says so.
    fn pop_messages_while(&mut self, mut drop: impl FnMut(&Message, usize) -> bool) {
        while let Some(m) = self.messages.front() {
            if !drop(m, self.messages.len()) {
                break;
            }
            self.message_bytes -= m.cost();
            self.messages.pop_front();
        }
        shrink_queue(&mut self.messages);
    }

    /// Keeps the streams to what the cache holds plus, for streams with
    /// readers, the floor; never beyond what was evicted, but always the
    /// newest event while someone reads it.
    fn trim_streams(&mut self) {
        let cache_front = self.messages.front().map_or(u64::MAX, |m| m.id);
        let evicted = self.evicted_through.saturating_add(1);
        for (_, stream) in &mut self.streams {
            let mut below = cache_front;
            if stream.readers > 0 {
                let floor = stream
                    .marks
                    .len()
                    .checked_sub(STREAM_FLOOR_EVENTS)
                    .and_then(|i| stream.marks.get(i))
                    .map_or(0, |m| m.id);
                // Readers whose sockets are full keep what they have yet
                // to receive, within `MAX_PINNED_LAG`.
                let oldest_kept = stream.head().saturating_sub(MAX_PINNED_LAG);
                let pinned = stream
                    .pins
                    .range(oldest_kept..)
                    .next()
                    .and_then(|(&pin, _)| stream.id_at(pin))
                    .unwrap_or(u64::MAX);
                below = below.min(floor).min(pinned).max(evicted);
                if let Some(newest) = stream.marks.back() {
                    below = below.min(newest.id);
                }
            } else {
                below = below.max(evicted);
            }
            stream.trim_before_id(below);
        }
    }
}

/// An event in the eviction queue.
#[derive(Debug, Clone, Copy)]
struct Queued {
    key: usize,
    serial: u64,
    id: u64,
}

/// A stream whose last reader left.
#[derive(Debug, Clone, Copy)]
struct Idle {
    key: usize,
    serial: u64,
    stream: usize,
    generation: u64,
    /// When it goes (unix ms); 0 until `expire` has seen it.
    until: u64,
}

/// Every channel, the shared message id counter, the age-expiry index and
/// the memory bounds.
#[derive(Debug)]
pub struct Channels {
    slab: Slab<Box<Channel>>,
    /// Channel keys by name, in name order (`LISTCHANNELS` resumes from a name).
    by_name: BTreeMap<Box<[u8]>, usize>,
    last_id: u64,
    /// When each channel's oldest message expires (unix ms), by channel key.
    expiries: Deadlines<u64, usize>,
    /// Channels published to since the last flush.
    dirty: Vec<usize>,
    pub max_per_channel: usize,
    /// Seconds; 0 is no limit.
    pub max_age: u64,
    /// `MaxCachedBytes`; 0 is no limit.
    max_bytes: u64,
    /// `MaxChannels`; 0 is no limit.
    max_channels: usize,
    /// Every channel's `Usage`, summed.
    total: Usage,
    /// Each event once, in the order channels took them: the eviction
    /// order. Entries of events gone otherwise are skipped when reached,
    /// and swept out once they outnumber the rest.
    queue: VecDeque<Queued>,
    /// Entries in `queue` after the last sweep.
    queue_swept: usize,
    /// Streams whose last reader left, oldest first.
    idle: VecDeque<Idle>,
    /// Entries at the back of `idle` not yet given a time by `expire`.
    idle_unstamped: usize,
    /// Numbers channels (`Channel::serial`) and idle periods (`Stream::idle_gen`).
    next_serial: u64,
    /// The most held since the allocator last returned memory.
    high_water: u64,
    last_trim_ms: u64,
    pub counters: MemoryCounters,
}

impl Channels {
    pub fn new(max_per_channel: usize, max_age: u64) -> Channels {
        Channels::with_bounds(
            max_per_channel,
            max_age,
            DEFAULT_MAX_CACHED_BYTES,
            DEFAULT_MAX_CHANNELS,
        )
    }

    /// With `MaxCachedBytes` and `MaxChannels` (0: no limit).
    pub fn with_bounds(
        max_per_channel: usize,
        max_age: u64,
        max_bytes: u64,
        max_channels: usize,
    ) -> Channels {
        Channels {
            slab: Slab::new(),
            by_name: BTreeMap::new(),
            last_id: 0,
            expiries: Deadlines::default(),
            dirty: Vec::new(),
            max_per_channel,
            max_age,
            max_bytes,
            max_channels,
            total: Usage::default(),
            queue: VecDeque::new(),
            queue_swept: 0,
            idle: VecDeque::new(),
            idle_unstamped: 0,
            next_serial: 0,
            high_water: 0,
            last_trim_ms: 0,
            counters: MemoryCounters::default(),
        }
    }

    /// Applies new memory bounds (configuration reload), evicting at once
    /// when the byte bound went down.
    pub fn set_bounds(&mut self, max_bytes: u64, max_channels: usize) {
        self.max_bytes = max_bytes;
        self.max_channels = max_channels;
        self.enforce();
    }

    /// The channel a cursor points at.
    pub fn get(&self, key: usize) -> Option<&Channel> {
        self.slab.get(key).map(|c| &**c)
    }

    /// A channel by name; None when it does not exist (it is not created).
    pub fn by_name(&self, name: &[u8]) -> Option<&Channel> {
        self.by_name.get(name).and_then(|&k| self.get(k))
    }

    /// How many channels exist (`channel_count`).
    pub fn count(&self) -> usize {
        self.slab.len()
    }

    fn get_or_create(&mut self, name: &[u8]) -> usize {
        if let Some(&key) = self.by_name.get(name) {
            return key;
        }
        self.next_serial += 1;
        let key = self.slab.insert(Box::new(Channel {
            name: name.into(),
            messages: VecDeque::new(),
            message_bytes: 0,
            streams: Slab::new(),
            subscribers: Slab::new(),
            persistent: 0,
            fresh: 0,
            expires_ms: None,
            serial: self.next_serial,
            evicted_through: 0,
        }));
        self.by_name.insert(name.into(), key);
        key
    }

    /// What channel `key` holds now (nothing when it does not exist).
    fn usage_of(&self, key: usize) -> Usage {
        self.slab.get(key).map_or(Usage::default(), |c| c.usage())
    }

    /// Brings the totals in step after channel `key` changed from `before`.
    fn settle(&mut self, key: usize, before: Usage) {
        let after = self.usage_of(key);
        let t = &mut self.total;
        t.held = t.held.saturating_sub(before.held) + after.held;
        t.rendered = t.rendered.saturating_sub(before.rendered) + after.rendered;
        t.protected = t.protected.saturating_sub(before.protected) + after.protected;
        t.events = t.events.saturating_sub(before.events) + after.events;
        self.high_water = self.high_water.max(t.held);
    }

    /// Adds a message with the next id (creating the channel), renders it
    /// into each of the channel's streams and queues the channel for the
    /// next flush. Returns the id, or why the message was not taken
    /// (nothing changed then, and no id was used).
    pub fn publish(
        &mut self,
        name: &[u8],
        text: &[u8],
        now_ms: u64,
    ) -> Result<u64, PublishRefused> {
        let id = self.last_id + 1;
        self.add(name, id, text, now_ms, true)?;
        self.last_id = self.last_id.max(id);
        Ok(id)
    }

    /// Notes an id handed out elsewhere (several nodes), so that this node
    /// never lets the shared counter go back below it.
    pub fn saw_id(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// The newest id this server has seen, in any channel.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Adds a message whose id was assigned elsewhere (by Redis, for a
    /// cluster of nodes). Ids must grow per channel: an id not above the
    /// channel's newest is ignored, so a replayed event is never doubled.
    /// An event the memory bounds refuse is logged and counted.
    pub fn insert(&mut self, name: &[u8], id: u64, text: &[u8], added_ms: u64) {
        self.last_id = self.last_id.max(id);
        if let Err(refused) = self.add(name, id, text, added_ms, false) {
            crate::info!(
                "event {id} of channel {} not cached: {refused}",
                String::from_utf8_lossy(name)
            );
        }
    }

    /// `publish` and `insert`: `new_channel_bound` applies `MaxChannels`.
    fn add(
        &mut self,
        name: &[u8],
        id: u64,
        text: &[u8],
        added_ms: u64,
        new_channel_bound: bool,
    ) -> Result<(), PublishRefused> {
        let key = match self.by_name.get(name) {
            Some(&key) => key,
            None if new_channel_bound
                && self.max_channels > 0
                && self.slab.len() >= self.max_channels =>
            {
                self.counters.refused_channels += 1;
                return Err(PublishRefused::TooManyChannels {
                    max: self.max_channels,
                });
            }
            None => self.get_or_create(name),
        };
        if self.slab[key].newest_id() >= id {
            self.remove_if_unused(key);
            return Ok(());
        }
        let before = self.usage_of(key);
        let message = Message {
            id,
            added_ms,
            text: text.into(),
        };
        let channel = &mut self.slab[key];
        // Render first: the rendered size is only known once rendered.
        let mut needed = message.cost();
        for (_, stream) in &mut channel.streams {
            let head = stream.head();
            stream.append(&channel.name, &message);
            if stream.readers > 0 {
                needed += stream.head() - head + MARK_OVERHEAD;
            }
        }
        // What eviction cannot take once this event is in: the newest
        // events of streams with readers (this one's among them), and the
        // new message itself must fit beside them.
        let kept = self.total.protected.saturating_sub(before.protected)
            + channel.usage().protected
            + message.cost();
        if self.max_bytes > 0 && (needed > self.max_bytes || kept > self.max_bytes) {
            for (_, stream) in &mut channel.streams {
                stream.unappend(id);
            }
            self.counters.refused_bytes += 1;
            self.remove_if_unused(key);
            return Err(if needed > self.max_bytes {
                PublishRefused::TooLarge {
                    bytes: needed,
                    max: self.max_bytes,
                }
            } else {
                PublishRefused::Full {
                    max: self.max_bytes,
                }
            });
        }
        channel.push_message(message);
        let max = self.max_per_channel;
        channel.pop_messages_while(|_, len| len > max);
        channel.trim_streams();
        if channel.fresh == 0 {
            self.dirty.push(key);
        }
        channel.fresh += 1;
        let serial = channel.serial;
        self.queue.push_back(Queued { key, serial, id });
        self.settle(key, before);
        self.index_expiry(key);
        self.enforce();
        self.sweep_queue();
        self.remove_if_unused(key);
        Ok(())
    }

    /// Keeps what is held under `MaxCachedBytes`: drops the rendered
    /// buffers nobody reads, then evicts the oldest events.
    fn enforce(&mut self) {
        if self.max_bytes == 0 {
            return;
        }
        while self.total.held > self.max_bytes {
            let Some(idle) = self.idle.pop_front() else {
                break;
            };
            self.idle_unstamped = self.idle_unstamped.min(self.idle.len());
            self.drop_idle(idle);
        }
        while self.total.held > self.max_bytes {
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            self.queue_swept = self.queue_swept.saturating_sub(1);
            self.evict(queued);
        }
        shrink_queue(&mut self.queue);
        shrink_queue(&mut self.idle);
    }

    /// Evicts one event (and any older of its channel) from the cache and
    /// the streams, but the newest event of a stream with readers.
    fn evict(&mut self, queued: Queued) {
        let key = queued.key;
        let live = self
            .slab
            .get(key)
            .is_some_and(|c| c.serial == queued.serial && c.holds(queued.id));
        if !live {
            return;
        }
        let before = self.usage_of(key);
        let channel = &mut self.slab[key];
        channel.evicted_through = queued.id;
        channel.pop_messages_while(|m, _| m.id <= queued.id);
        channel.trim_streams();
        self.settle(key, before);
        let freed = before.held.saturating_sub(self.usage_of(key).held);
        if freed > 0 {
            self.counters.evicted_events += 1;
            self.counters.evicted_bytes += freed;
        }
        self.index_expiry(key);
        self.remove_if_unused(key);
    }

    /// Sweeps entries of events gone otherwise out of the eviction queue
    /// once they could outnumber the rest (amortised O(1) per event).
    fn sweep_queue(&mut self) {
        if self.queue.len() <= 2 * self.queue_swept + 1024 {
            return;
        }
        let slab = &self.slab;
        self.queue.retain(|q| {
            slab.get(q.key)
                .is_some_and(|c| c.serial == q.serial && c.holds(q.id))
        });
        self.queue_swept = self.queue.len();
        shrink_queue(&mut self.queue);
    }

    /// Drops a stream whose last reader left, unless one came back since.
    fn drop_idle(&mut self, idle: Idle) {
        let key = idle.key;
        let current = self.slab.get(key).is_some_and(|c| {
            c.serial == idle.serial
                && c.streams
                    .get(idle.stream)
                    .is_some_and(|s| s.readers == 0 && s.idle_gen == idle.generation)
        });
        if !current {
            return;
        }
        let before = self.usage_of(key);
        self.slab[key].streams.remove(idle.stream);
        self.counters.streams_dropped += 1;
        self.settle(key, before);
        self.remove_if_unused(key);
    }

    /// Keeps `expiries` in step with the channel's oldest message.
    fn index_expiry(&mut self, key: usize) {
        let Some(channel) = self.slab.get_mut(key) else {
            return;
        };
        let wanted = match (self.max_age, channel.messages.front()) {
            (0, _) | (_, None) => None,
            (age, Some(m)) => Some(m.added_ms.saturating_add(age.saturating_mul(1000))),
        };
        channel.expires_ms = self.expiries.set(key, channel.expires_ms, wanted);
    }

    /// When `expire` has something to do next (unix ms): the oldest cached
    /// message of any channel expires, an unread stream goes, or memory is
    /// to be returned to the system.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let idle = match self.idle_unstamped {
            0 => self.idle.front().map(|i| i.until),
            _ => Some(0),
        };
        [
            self.expiries.next(),
            idle,
            self.trim_due()
                .then_some(self.last_trim_ms + TRIM_INTERVAL_MS),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drops messages older than `MaxMessageAge` and streams nobody read
    /// for `STREAM_GRACE_MS`, and returns memory to the system after a
    /// large drop. Called once per loop turn.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((_, key)) = self.expiries.pop_due(now_ms) {
            let age_ms = self.max_age.saturating_mul(1000);
            let before = self.usage_of(key);
            if let Some(channel) = self.slab.get_mut(key) {
                channel.pop_messages_while(|m, _| {
                    age_ms > 0 && m.added_ms.saturating_add(age_ms) <= now_ms
                });
                channel.trim_streams();
            }
            self.settle(key, before);
            // The entry is gone; it comes back only later than now.
            if let Some(channel) = self.slab.get_mut(key) {
                channel.expires_ms = None;
            }
            self.index_expiry(key);
            self.remove_if_unused(key);
        }
        let stamped = self.idle.len() - self.idle_unstamped;
        for idle in self.idle.range_mut(stamped..) {
            idle.until = now_ms.saturating_add(STREAM_GRACE_MS);
        }
        self.idle_unstamped = 0;
        while let Some(&idle) = self.idle.front() {
            if idle.until > now_ms {
                break;
            }
            self.idle.pop_front();
            self.drop_idle(idle);
        }
        shrink_queue(&mut self.idle);
        if self.trim_due() && now_ms >= self.last_trim_ms + TRIM_INTERVAL_MS {
            release_free_memory();
            crate::debug!(
                "returned free memory to the system: {} bytes held, {} at the peak",
                self.total.held,
                self.high_water
            );
            self.high_water = self.total.held;
            self.last_trim_ms = now_ms;
        }
    }

    /// Whether enough was freed since the peak to return memory: at least
    /// `TRIM_AFTER_BYTES` and a third of the peak.
    fn trim_due(&self) -> bool {
        let freed = self.high_water - self.total.held.min(self.high_water);
        freed >= TRIM_AFTER_BYTES && freed >= self.total.held / 2
    }

    /// Empties every channel's message cache (SIGUSR1).
    pub fn clear_caches(&mut self) {
        let keys: Vec<usize> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            let before = self.usage_of(key);
            self.slab[key].pop_messages_while(|_, _| true);
            self.slab[key].trim_streams();
            self.settle(key, before);
            self.index_expiry(key);
            self.remove_if_unused(key);
        }
    }

    /// Drops every cached message with an id up to `id` (a SIGUSR1 read
    /// back from the state file).
    pub fn clear_through(&mut self, id: u64) {
        let keys: Vec<usize> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            let before = self.usage_of(key);
            self.slab[key].pop_messages_while(|m, _| m.id <= id);
            self.slab[key].trim_streams();
            self.settle(key, before);
            self.index_expiry(key);
            self.remove_if_unused(key);
        }
    }

    /// Applies new cache limits (configuration reload) to every channel.
    pub fn set_limits(&mut self, max_per_channel: usize, max_age: u64) {
        self.max_per_channel = max_per_channel;
        self.max_age = max_age;
        let keys: Vec<usize> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            let before = self.usage_of(key);
            let channel = &mut self.slab[key];
            channel.pop_messages_while(|_, len| len > max_per_channel);
            channel.trim_streams();
            self.settle(key, before);
            self.index_expiry(key);
            self.remove_if_unused(key);
        }
    }

    fn remove_if_unused(&mut self, key: usize) {
        let unused = self
            .slab
            .get(key)
            .is_some_and(|c| c.messages.is_empty() && c.subscribers.is_empty());
        if unused {
            let before = self.usage_of(key);
            let channel = self.slab.remove(key);
            self.settle(key, before);
            self.by_name.remove(&channel.name);
            self.expiries.set(key, channel.expires_ms, None);
        }
    }

    /// Registers connection `reader` on a channel (creating it) and returns
    /// its cursor, placed at the start of the requested backlog. A new
    /// stream renders the cache, as much of it as the byte bound leaves.
    pub fn attach(
        &mut self,
        name: &[u8],
        template: &Rc<Template>,
        reader: ConnId,
        persistent: bool,
        backlog: Backlog,
    ) -> Cursor {
        let key = self.get_or_create(name);
        let before = self.usage_of(key);
        let room = match self.max_bytes {
            0 => u64::MAX,
            max => max.saturating_sub(self.total.protected),
        };
        let channel = &mut self.slab[key];
        let found = channel
            .streams
            .iter()
            .find(|(_, s)| s.template.same_output(template))
            .map(|(i, _)| i);
        let stream = match found {
            Some(i) => i,
            None => {
                let mut stream = Stream::new(Rc::clone(template));
                let skip = channel.messages.len() - renderable(channel, template, room);
                for message in channel.messages.iter().skip(skip) {
                    stream.append(&channel.name, message);
                }
                channel.streams.insert(stream)
            }
        };
        channel.streams[stream].readers += 1;
        let slot = channel.subscribers.insert(Reader {
            id: reader,
            stream,
            pin: None,
        });
        if persistent {
            channel.persistent += 1;
        }
        self.settle(key, before);
        // The new copy counts: this may evict (never this new reader's
        // channel, which now has a subscriber).
        self.enforce();
        let channel = &self.slab[key];
        let first_id = match backlog {
            Backlog::None => None,
            Backlog::FromId(id) => channel.messages.iter().find(|m| m.id >= id).map(|m| m.id),
            Backlog::Last(0) => None,
            Backlog::Last(n) => {
                let skip = channel.messages.len().saturating_sub(n as usize);
                channel.messages.get(skip).map(|m| m.id)
            }
            Backlog::All => channel.messages.front().map(|m| m.id),
        };
        let s = &channel.streams[stream];
        let pos = first_id.map_or(s.head(), |id| s.offset_of_id(id));
        let end = if persistent { u64::MAX } else { s.head() };
        Cursor {
            channel: key,
            slot,
            stream,
            pos,
            end,
        }
    }

    /// Pins (a reader's socket is full: keep what it has not received) or
    /// unpins a reader at its cursor.
    pub fn pin(&mut self, cursor: &Cursor, pinned: bool) {
        let key = cursor.channel;
        let before = self.usage_of(key);
        let Some(channel) = self.slab.get_mut(key) else {
            return;
        };
        if let (Some(reader), Some(stream)) = (
            channel.subscribers.get_mut(cursor.slot),
            channel.streams.get_mut(cursor.stream),
        ) {
            if let Some(old) = reader.pin.take() {
                stream.unpin(old);
            }
            if pinned {
                *stream.pins.entry(cursor.pos).or_default() += 1;
                reader.pin = Some(cursor.pos);
            }
        }
        if !pinned {
            channel.trim_streams();
            self.settle(key, before);
        }
    }

    /// The slow-consumer policy, in one place: a reader has lost events
    /// once its cursor is behind what its channel's stream still holds
    /// (wire contract B3). Such a reader is dropped, never sent a gap.
    pub fn lost_events(&self, cursor: &Cursor) -> bool {
        self.get(cursor.channel).is_some_and(|c| {
            cursor.pos < cursor.end && c.stream(cursor.stream).bytes_from(cursor.pos).is_none()
        })
    }

    /// Unregisters a cursor; the channel goes when it has neither messages
    /// nor subscribers left. A stream left without readers is dropped
    /// `STREAM_GRACE_MS` later (sooner if the byte bound needs it).
    pub fn detach(&mut self, cursor: &Cursor, persistent: bool) {
        let key = cursor.channel;
        let before = self.usage_of(key);
        if let Some(channel) = self.slab.get_mut(key)
            && let Some(reader) = channel.subscribers.try_remove(cursor.slot)
        {
            if let (Some(pin), Some(stream)) = (reader.pin, channel.streams.get_mut(reader.stream))
            {
                stream.unpin(pin);
            }
            if persistent {
                channel.persistent -= 1;
            }
            if let Some(stream) = channel.streams.get_mut(cursor.stream) {
                stream.readers = stream.readers.saturating_sub(1);
                if stream.readers == 0 {
                    // Unique across streams: a stream later put at the same
                    // index is not mistaken for this one.
                    self.next_serial += 1;
                    stream.idle_gen = self.next_serial;
                    let idle = Idle {
                        key,
                        serial: channel.serial,
                        stream: cursor.stream,
                        generation: stream.idle_gen,
                        until: 0,
                    };
                    channel.trim_streams();
                    // An empty one costs nothing to render again: it goes now.
                    if channel.streams[cursor.stream].marks.is_empty() {
                        channel.streams.remove(cursor.stream);
                    } else {
                        self.idle.push_back(idle);
                        self.idle_unstamped += 1;
                    }
                }
            }
        }
        self.settle(key, before);
        self.remove_if_unused(key);
    }

    /// How many more events channel `name` can take before its subscribers
    /// are next written without one that was caught up losing any: its
    /// streams keep at least the newest `max(MaxMessagesPerChannel,
    /// STREAM_FLOOR_EVENTS)` events (the cache, or the floor), short of
    /// `MaxCachedBytes` eviction. Publishers with a burst pipelined stop
    /// here for the turn (the burst rule: `controller::has_room`).
    pub fn room(&self, name: &[u8]) -> usize {
        let kept = self.max_per_channel.max(STREAM_FLOOR_EVENTS);
        let fresh = self
            .by_name
            .get(name)
            .and_then(|&key| self.slab.get(key))
            .map_or(0, |channel| channel.fresh);
        kept.saturating_sub(fresh)
    }

    /// Takes the channels published to since the last call.
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        for key in self.dirty.drain(..) {
            if let Some(channel) = self.slab.get_mut(key) {
                channel.fresh = 0;
                into.push(key);
            }
        }
        if self.dirty.capacity() > 1024 {
            self.dirty = Vec::new();
        }
    }

    /// Messages held in all caches (for `/metrics`).
    pub fn cached_events(&self) -> u64 {
        self.total.events
    }

    /// Bytes held by caches and rendered buffers, with the bookkeeping of
    /// each event (`MaxCachedBytes` bounds this).
    pub fn cached_bytes(&self) -> u64 {
        self.total.held
    }

    /// Bytes counted for cached messages alone (texts and their
    /// bookkeeping, no rendered copies): what a snapshot of the cache takes.
    pub fn message_bytes(&self) -> u64 {
        self.total.held.saturating_sub(self.total.rendered)
    }

    /// The memory gauges for `/stats` and `/metrics`, beyond `bytes_cached`.
    pub fn memory_gauges(&self) -> [(&'static str, u64); 3] {
        [
            ("bytes_rendered", self.total.rendered),
            ("max_cached_bytes", self.max_bytes),
            ("max_channels", self.max_channels as u64),
        ]
    }

    /// The memory counters for `/stats` and `/metrics` (`_total` there).
    pub fn memory_counters(&self) -> [(&'static str, u64); 5] {
        let c = &self.counters;
        [
            ("evicted_events", c.evicted_events),
            ("evicted_bytes", c.evicted_bytes),
            ("streams_dropped", c.streams_dropped),
            ("publishes_refused_max_channels", c.refused_channels),
            ("publishes_refused_max_cached_bytes", c.refused_bytes),
        ]
    }

    /// Every channel's name.
    pub fn names(&self) -> Vec<Box<[u8]>> {
        self.slab.iter().map(|(_, c)| c.name.clone()).collect()
    }

    /// Creates a channel that stays, even empty, until `release` or a
    /// reader leaves: readers are about to attach (cluster loads).
    pub fn hold(&mut self, name: &[u8]) {
        self.get_or_create(name);
    }

    /// Drops a channel `hold` kept if nobody came to use it.
    pub fn release(&mut self, name: &[u8]) {
        if let Some(&key) = self.by_name.get(name) {
            self.remove_if_unused(key);
        }
    }

    /// Channels sorted by name, for `LISTCHANNELS`.
    pub fn sorted(&self) -> impl Iterator<Item = &Channel> {
        self.after(None)
    }

    /// Channels in name order, starting after `name` (from the first when
    /// None): a long listing is written a part at a time.
    pub fn after(&self, name: Option<&[u8]>) -> impl Iterator<Item = &Channel> {
        let from = match name {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        self.by_name
            .range::<[u8], _>((from, Bound::Unbounded))
            .filter_map(|(_, &key)| self.get(key))
    }
}

/// How many of the newest cached messages a new stream can render within
/// `room` bytes (all of them when they fit, measured newest first).
fn renderable(channel: &Channel, template: &Template, room: u64) -> usize {
    if room == u64::MAX {
        return channel.messages.len();
    }
    let mut scratch = Vec::new();
    let mut used = 0;
    let mut count = 0;
    for message in channel.messages.iter().rev() {
        scratch.clear();
        render(template, &mut scratch, &channel.name, message);
        used += scratch.len() as u64 + MARK_OVERHEAD;
        if used > room {
            break;
        }
        count += 1;
    }
    count
}

/// Asks the allocator to return free memory to the system: glibc keeps
/// freed heap memory (and raises its mmap threshold after large frees, so
/// that large buffers come from the heap too).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointer and leaves every live allocation in place.
    unsafe {
        libc::malloc_trim(0);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Rc<Template> {
        Rc::new(Template::parse(b"~id~;"))
    }

    fn unsent(channels: &Channels, c: &Cursor) -> Vec<u8> {
        let stream = channels.get(c.channel).map(|ch| ch.stream(c.stream));
        stream
            .and_then(|s| s.bytes_from(c.pos))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    #[test]
    fn backlog_forms_and_ids() {
        let mut ch = Channels::new(3, 0);
        let t = template();
        for i in 0..5 {
            assert_eq!(ch.publish(b"a", b"x", 0), Ok(i + 1));
        }
        assert!(ch.publish(b"b", b"x", 0).is_ok());
        let all = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::All);
        assert_eq!(unsent(&ch, &all), b"3;4;5;");
        let last = ch.attach(b"a", &t, ConnId::new(2, 2), true, Backlog::Last(2));
        assert_eq!(unsent(&ch, &last), b"4;5;");
        let from = ch.attach(b"a", &t, ConnId::new(3, 3), true, Backlog::FromId(1));
        assert_eq!(unsent(&ch, &from), b"3;4;5;");
        let above = ch.attach(b"a", &t, ConnId::new(4, 4), true, Backlog::FromId(7));
        assert_eq!(unsent(&ch, &above), b"");
        let none = ch.attach(b"a", &t, ConnId::new(5, 5), false, Backlog::Last(0));
        assert_eq!(unsent(&ch, &none), b"");
        assert_eq!(ch.by_name(b"a").map(|c| c.persistent), Some(4));
    }

    #[test]
    fn channels_vanish_when_unused_and_expire() {
        let mut ch = Channels::new(10, 2);
        let t = template();
        let c = ch.attach(b"poll", &t, ConnId::new(1, 1), false, Backlog::None);
        assert_eq!(ch.count(), 1);
        ch.detach(&c, false);
        assert_eq!(ch.count(), 0);
        assert!(ch.publish(b"old", b"x", 1_000).is_ok());
        assert!(ch.publish(b"old", b"y", 2_500).is_ok());
        assert_eq!(ch.next_expiry_ms(), Some(3_000));
        ch.expire(3_000);
        assert_eq!(ch.by_name(b"old").map(Channel::message_count), Some(1));
        ch.expire(4_500);
        assert_eq!(ch.count(), 0);
    }

    #[test]
    fn event_accounting() {
        let mut ch = Channels::new(10, 0);
        let t = template();
        let c = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::None);
        for _ in 0..3 {
            assert!(ch.publish(b"a", b"x", 0).is_ok());
        }
        let s = ch.get(c.channel).map(|x| x.stream(c.stream));
        let Some(s) = s else {
            panic!("channel missing")
        };
        assert_eq!(s.events_completed(0, 2), 1);
        assert_eq!(s.events_completed(0, 3), 1);
        assert_eq!(s.events_completed(0, 6), 3);
        assert_eq!(s.after_events(0, 2), 4);
        assert_eq!(s.id_at(3), Some(2));
        assert_eq!(s.end_of_ids_up_to(2), 4);
    }

    /// A template that renders the text alone, so sizes are known.
    fn text_only() -> Rc<Template> {
        Rc::new(Template::parse(b"~text~"))
    }

    fn publish(ch: &mut Channels, name: &[u8], size: usize) -> u64 {
        match ch.publish(name, &vec![b'x'; size], 0) {
            Ok(id) => id,
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn cached_ids(ch: &Channels, name: &[u8]) -> Vec<u64> {
        ch.by_name(name)
            .map(|c| c.messages.iter().map(|m| m.id).collect())
            .unwrap_or_default()
    }

    /// What the totals should say, counted from scratch.
    fn recount(ch: &Channels) -> (u64, u64, u64, u64) {
        let mut t = Usage::default();
        for (_, c) in &ch.slab {
            let u = c.usage();
            t.held += u.held;
            t.rendered += u.rendered;
            t.protected += u.protected;
            t.events += u.events;
        }
        (t.held, t.rendered, t.protected, t.events)
    }

    fn totals(ch: &Channels) -> (u64, u64, u64, u64) {
        let t = ch.total;
        (t.held, t.rendered, t.protected, t.events)
    }

    #[test]
    fn eviction_takes_the_oldest_events_across_channels() {
        // Four messages of 100 bytes (164 counted each) fit, no more.
        let cost = 100 + MESSAGE_OVERHEAD;
        let mut ch = Channels::with_bounds(10, 0, 4 * cost, 0);
        publish(&mut ch, b"a", 100); // 1
        publish(&mut ch, b"b", 100); // 2
        publish(&mut ch, b"c", 100); // 3
        publish(&mut ch, b"a", 100); // 4
        assert_eq!(ch.cached_bytes(), 4 * cost);
        assert_eq!(ch.counters.evicted_events, 0);
        publish(&mut ch, b"b", 100); // 5 evicts 1, a's oldest
        assert_eq!(cached_ids(&ch, b"a"), [4]);
        assert_eq!(cached_ids(&ch, b"b"), [2, 5]);
        publish(&mut ch, b"c", 100); // 6 evicts 2
        assert_eq!(cached_ids(&ch, b"b"), [5]);
        assert_eq!(cached_ids(&ch, b"c"), [3, 6]);
        publish(&mut ch, b"d", 100); // 7 evicts 3
        publish(&mut ch, b"d", 100); // 8 evicts 4: a is gone
        assert_eq!(cached_ids(&ch, b"c"), [6]);
        assert!(ch.by_name(b"a").is_none());
        assert_eq!(ch.count(), 3);
        assert_eq!(ch.counters.evicted_events, 4);
        assert_eq!(ch.counters.evicted_bytes, 4 * cost);
        assert_eq!(ch.cached_bytes(), 4 * cost);
        assert_eq!(totals(&ch), recount(&ch));
        // A larger event evicts as many of the oldest as it needs.
        publish(&mut ch, b"e", 250); // 9 evicts 5 and 6
        assert_eq!(cached_ids(&ch, b"d"), [7, 8]);
        assert!(ch.by_name(b"b").is_none() && ch.by_name(b"c").is_none());
        assert!(ch.cached_bytes() <= 4 * cost);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn a_read_stream_keeps_its_newest_event_until_a_newer_one() {
        let cost = 100 + MESSAGE_OVERHEAD;
        let rendered = 100 + MARK_OVERHEAD;
        let mut ch = Channels::with_bounds(10, 0, 3 * cost + rendered, 0);
        let t = text_only();
        let c = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::None);
        publish(&mut ch, b"a", 100); // 1: raw and rendered
        for _ in 0..4 {
            publish(&mut ch, b"b", 100); // 2..=5
        }
        // a's message went, oldest first, but not its unsent rendered event.
        assert_eq!(cached_ids(&ch, b"a"), Vec::<u64>::new());
        assert_eq!(unsent(&ch, &c).len(), 100);
        assert_eq!(cached_ids(&ch, b"b"), [3, 4, 5]);
        assert!(ch.cached_bytes() <= 3 * cost + rendered);
        // A newer event replaces it; the evicted one leaves the stream.
        publish(&mut ch, b"a", 100); // 6
        let s = ch.get(c.channel).map(|x| x.stream(c.stream));
        assert_eq!(s.and_then(|s| s.id_at(s.head() - 1)), Some(6));
        assert!(s.is_some_and(|s| s.bytes_from(c.pos).is_none()));
        assert!(ch.cached_bytes() <= 3 * cost + rendered);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn refused_publishes_change_nothing() {
        let cost = 400 + MESSAGE_OVERHEAD;
        let rendered = 400 + MARK_OVERHEAD;
        let max = 2 * rendered + cost + 100;
        let mut ch = Channels::with_bounds(10, 0, max, 3);
        let t = text_only();
        let ca = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::None);
        // Alone larger than the bound: its text and the copy read on a.
        let big = max as usize - 100;
        assert_eq!(
            ch.publish(b"a", &vec![b'y'; big], 0),
            Err(PublishRefused::TooLarge {
                bytes: big as u64 + MESSAGE_OVERHEAD + big as u64 + MARK_OVERHEAD,
                max
            })
        );
        assert_eq!(ch.last_id(), 0);
        assert_eq!(unsent(&ch, &ca), b"");
        assert_eq!(ch.cached_bytes(), 0);
        let cb = ch.attach(b"b", &t, ConnId::new(2, 2), true, Backlog::None);
        publish(&mut ch, b"a", 400);
        publish(&mut ch, b"b", 400);
        // The unsent newest events of a and b leave no room for c.
        assert_eq!(
            ch.publish(b"c", &[b'z'; 600], 0),
            Err(PublishRefused::Full { max })
        );
        // A small one fits.
        assert_eq!(ch.publish(b"c", b"z", 0), Ok(3));
        // MaxChannels 3: a fourth channel is refused, existing ones are not.
        assert_eq!(
            ch.publish(b"d", b"z", 0),
            Err(PublishRefused::TooManyChannels { max: 3 })
        );
        assert_eq!(ch.count(), 3);
        assert_eq!(ch.last_id(), 3);
        assert_eq!(ch.counters.refused_bytes, 2);
        assert_eq!(ch.counters.refused_channels, 1);
        assert_eq!(unsent(&ch, &ca).len(), 400);
        assert_eq!(unsent(&ch, &cb).len(), 400);
        assert!(ch.cached_bytes() <= max);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn unread_streams_go_after_the_grace_time_and_come_back() {
        let mut ch = Channels::with_bounds(10, 0, 0, 0);
        let json = Rc::new(Template::parse(b"[~text:json~]"));
        for _ in 0..3 {
            assert!(ch.publish(b"a", b"<<<<", 0).is_ok());
        }
        let raw = ch.cached_bytes();
        let c = ch.attach(b"a", &json, ConnId::new(1, 1), false, Backlog::All);
        assert_eq!(unsent(&ch, &c).len(), 3 * 26);
        assert!(ch.cached_bytes() > raw);
        ch.detach(&c, false);
        ch.expire(10_000); // sees the stream go idle
        assert_eq!(ch.next_expiry_ms(), Some(10_000 + STREAM_GRACE_MS));
        ch.expire(10_000 + STREAM_GRACE_MS - 1);
        assert!(ch.cached_bytes() > raw);
        ch.expire(10_000 + STREAM_GRACE_MS);
        assert_eq!(ch.cached_bytes(), raw);
        assert_eq!(ch.counters.streams_dropped, 1);
        // A reader coming back gets it rendered again from the cache.
        let c = ch.attach(b"a", &json, ConnId::new(2, 2), false, Backlog::All);
        assert_eq!(unsent(&ch, &c), b"[\\u003c\\u003c\\u003c\\u003c]".repeat(3));
        // One that comes back within the grace time keeps it.
        ch.detach(&c, false);
        ch.expire(20_000);
        let c = ch.attach(b"a", &json, ConnId::new(3, 3), false, Backlog::Last(1));
        ch.expire(20_000 + STREAM_GRACE_MS);
        assert_eq!(unsent(&ch, &c).len(), 26);
        assert_eq!(ch.counters.streams_dropped, 1);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn unread_streams_go_first_under_the_bound() {
        let mut ch = Channels::with_bounds(10, 0, 2_000, 0);
        let json = Rc::new(Template::parse(b"~text:json~"));
        for _ in 0..3 {
            publish(&mut ch, b"a", 100);
        }
        let c = ch.attach(b"a", &json, ConnId::new(1, 1), false, Backlog::All);
        ch.detach(&c, false);
        assert!(ch.cached_bytes() > 3 * (100 + MESSAGE_OVERHEAD));
        // Over the bound: the unread copy goes, not the oldest event.
        publish(&mut ch, b"b", 1_200);
        assert_eq!(ch.counters.streams_dropped, 1);
        assert_eq!(ch.counters.evicted_events, 0);
        assert_eq!(cached_ids(&ch, b"a"), [1, 2, 3]);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn a_new_stream_renders_only_what_fits() {
        let mut ch = Channels::with_bounds(100, 0, 10_000, 0);
        let t = text_only();
        for _ in 0..10 {
            publish(&mut ch, b"a", 500);
        }
        // Ten copies of 516 do not fit beside ten messages of 564.
        let c = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::All);
        assert!(ch.cached_bytes() <= 10_000);
        let got = unsent(&ch, &c).len();
        assert!(got >= 500 && got.is_multiple_of(500), "{got}");
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn totals_match_a_recount_and_the_queue_stays_small() {
        let t = template();
        let json = Rc::new(Template::parse(b"~text:json~;"));
        let mut ch = Channels::with_bounds(5, 3, 20_000, 50);
        let mut cursors: Vec<(Cursor, bool)> = Vec::new();
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for step in 0..20_000u64 {
            let name = format!("c{}", next(80));
            match next(20) {
                0 => {
                    let tpl = if next(2) == 0 { &t } else { &json };
                    let persistent = next(2) == 0;
                    let c = ch.attach(
                        name.as_bytes(),
                        tpl,
                        ConnId::new(1, 1),
                        persistent,
                        Backlog::All,
                    );
                    cursors.push((c, persistent));
                }
                1 if !cursors.is_empty() => {
                    let i = next(cursors.len() as u64) as usize;
                    let (c, p) = cursors.swap_remove(i);
                    ch.detach(&c, p);
                }
                2 => ch.expire(step * 10),
                3 if step % 1000 == 3 => ch.clear_caches(),
                _ => {
                    let size = next(600) as usize;
                    let _ = ch.publish(name.as_bytes(), &vec![b'<'; size], step * 10);
                }
            }
            assert_eq!(totals(&ch), recount(&ch), "step {step}");
            assert!(ch.count() <= 50 + cursors.len());
            let live = ch.total.events as usize + 64 * ch.slab.len() * 2;
            assert!(ch.queue.len() <= 2 * live + 1025, "step {step}");
        }
        assert!(ch.counters.evicted_events > 0);
    }

    #[test]
    fn a_lower_bound_on_reload_evicts_at_once() {
        let mut ch = Channels::with_bounds(100, 0, 0, 0);
        for i in 0..50u64 {
            let name = format!("c{}", i % 5);
            publish(&mut ch, name.as_bytes(), 1_000);
        }
        assert_eq!(ch.counters.evicted_events, 0);
        ch.set_bounds(10_000, 0);
        assert!(ch.cached_bytes() <= 10_000);
        // The newest nine (ids 42 to 50) remain, whatever their channel.
        assert_eq!(cached_ids(&ch, b"c4"), [45, 50]);
        assert_eq!(cached_ids(&ch, b"c0"), [46]);
        assert_eq!(ch.counters.evicted_events, 41);
        assert_eq!(totals(&ch), recount(&ch));
    }

    #[test]
    fn buffers_shrink_when_what_they_hold_shrinks() {
        let mut ch = Channels::with_bounds(5, 0, 0, 0);
        let t = text_only();
        let c = ch.attach(b"a", &t, ConnId::new(1, 1), true, Backlog::None);
        for _ in 0..100 {
            publish(&mut ch, b"a", 256 * 1024);
        }
        for _ in 0..STREAM_FLOOR_EVENTS + 10 {
            publish(&mut ch, b"a", 10);
        }
        let channel = ch.get(c.channel);
        let stream = channel.map(|x| x.stream(c.stream));
        let Some(stream) = stream else {
            panic!("stream missing")
        };
        assert!(stream.buf.capacity() <= 4096, "{}", stream.buf.capacity());
        assert!(stream.marks.capacity() <= 4 * STREAM_FLOOR_EVENTS);
        assert!(ch.cached_bytes() < 4096);
        assert!(ch.next_expiry_ms().is_some(), "no memory return planned");
        ch.expire(5_000);
        assert!(!ch.trim_due());
    }
}
