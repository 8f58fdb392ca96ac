//! Channels: each keeps its recent messages and, per message template in
//! use, one shared append-only buffer of rendered events that subscribers
//! read through cursors (byte offsets). Publishing renders an event once per
//! template, never once per subscriber.

use crate::conn::ConnId;
use crate::deadline::Deadlines;
use crate::template::{Placeholder, Template, Value};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Events a stream keeps for subscribers that are still writing them out,
/// even when the message cache keeps fewer (`MaxMessagesPerChannel 0`, or
/// after SIGUSR1): a subscriber further behind than this and than the cache
/// has lost events and is dropped as a slow consumer.
pub const STREAM_FLOOR_EVENTS: usize = 64;

/// One published message.
#[derive(Debug)]
pub struct Message {
    pub id: u64,
    /// Unix time in milliseconds.
    pub added_ms: u64,
    pub text: Box<[u8]>,
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
}

impl Stream {
    fn new(template: Rc<Template>) -> Stream {
        Stream {
            template,
            buf: Vec::new(),
            start: 0,
            base: 0,
            marks: VecDeque::new(),
        }
    }

    /// The absolute offset just past the newest event.
    pub fn head(&self) -> u64 {
        self.base + (self.buf.len() - self.start) as u64
    }

    fn append(&mut self, channel: &[u8], message: &Message) {
        let offset = self.head();
        self.marks.push_back(Mark {
            id: message.id,
            offset,
        });
        self.template.render(&mut self.buf, |p| match p {
            Placeholder::Id => Value::Number(message.id),
            Placeholder::Channel => Value::Bytes(channel),
            Placeholder::Text => Value::Bytes(&message.text),
            Placeholder::Timestamp => Value::Number(message.added_ms / 1000),
            _ => Value::None,
        });
    }

    /// Drops events with ids below `id` from the front.
    fn trim_before_id(&mut self, id: u64) {
        while self.marks.front().is_some_and(|m| m.id < id) {
            self.marks.pop_front();
        }
        let to = self.marks.front().map_or(self.head(), |m| m.offset);
        self.start += (to - self.base) as usize;
        self.base = to;
        // Compact once the dead front outweighs the live part.
        if self.start > 4096 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.marks.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
            self.start = 0;
        }
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

/// One named channel.
#[derive(Debug)]
pub struct Channel {
    pub name: Box<[u8]>,
    messages: VecDeque<Message>,
    streams: Vec<Stream>,
    /// Everyone reading this channel.
    subscribers: Slab<ConnId>,
    /// Persistent subscribers, the ones `COUNTSUBSCRIBERS` reports.
    pub persistent: usize,
    /// Queued in `Channels::dirty` for the next flush.
    dirty: bool,
    /// The key of this channel's entry in `Channels::expiries`.
    expires_ms: Option<u64>,
}

impl Channel {
    /// Messages in the cache (`LISTCHANNELS`, `~messageCount~`).
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// The newest cached message id, 0 when the cache is empty.
    pub fn last_id(&self) -> u64 {
        self.messages.back().map_or(0, |m| m.id)
    }

    /// The newest id held, in the cache or a stream; 0 when none.
    pub fn newest_id(&self) -> u64 {
        let streams = self
            .streams
            .iter()
            .filter_map(|s| s.marks.back())
            .map(|m| m.id);
        streams
            .chain(self.messages.back().map(|m| m.id))
            .max()
            .unwrap_or(0)
    }

    /// The rendered buffer a cursor reads (`Cursor::stream`).
    pub fn stream(&self, index: usize) -> &Stream {
        &self.streams[index]
    }

    /// Every connection reading this channel.
    pub fn subscribers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.subscribers.iter().map(|(_, &id)| id)
    }

    /// Keeps the streams to what the cache holds plus the floor.
    fn trim_streams(&mut self) {
        let cache_front = self.messages.front().map_or(u64::MAX, |m| m.id);
        for stream in &mut self.streams {
            let floor = stream
                .marks
                .len()
                .checked_sub(STREAM_FLOOR_EVENTS)
                .and_then(|i| stream.marks.get(i))
                .map_or(0, |m| m.id);
            stream.trim_before_id(cache_front.min(floor));
        }
    }
}

/// Every channel, the shared message id counter and the age-expiry index.
#[derive(Debug)]
pub struct Channels {
    slab: Slab<Channel>,
    by_name: HashMap<Box<[u8]>, usize>,
    last_id: u64,
    /// When each channel's oldest message expires (unix ms), by channel key.
    expiries: Deadlines<u64, usize>,
    /// Channels published to since the last flush.
    dirty: Vec<usize>,
    pub max_per_channel: usize,
    /// Seconds; 0 is no limit.
    pub max_age: u64,
}

impl Channels {
    pub fn new(max_per_channel: usize, max_age: u64) -> Channels {
        Channels {
            slab: Slab::new(),
            by_name: HashMap::new(),
            last_id: 0,
            expiries: Deadlines::default(),
            dirty: Vec::new(),
            max_per_channel,
            max_age,
        }
    }

    /// The channel a cursor points at.
    pub fn get(&self, key: usize) -> Option<&Channel> {
        self.slab.get(key)
    }

    /// A channel by name; None when it does not exist (it is not created).
    pub fn by_name(&self, name: &[u8]) -> Option<&Channel> {
        self.by_name.get(name).and_then(|&k| self.slab.get(k))
    }

    /// How many channels exist (`channel_count`).
    pub fn count(&self) -> usize {
        self.slab.len()
    }

    fn get_or_create(&mut self, name: &[u8]) -> usize {
        if let Some(&key) = self.by_name.get(name) {
            return key;
        }
        let key = self.slab.insert(Channel {
            name: name.into(),
            messages: VecDeque::new(),
            streams: Vec::new(),
            subscribers: Slab::new(),
            persistent: 0,
            dirty: false,
            expires_ms: None,
        });
        self.by_name.insert(name.into(), key);
        key
    }

    /// Adds a message with the next id (creating the channel), renders it
    /// into each of the channel's streams and queues the channel for the
    /// next flush. Returns the id.
    pub fn publish(&mut self, name: &[u8], text: &[u8], now_ms: u64) -> u64 {
        let id = self.last_id + 1;
        self.insert(name, id, text, now_ms);
        id
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
    pub fn insert(&mut self, name: &[u8], id: u64, text: &[u8], added_ms: u64) {
        let key = self.get_or_create(name);
        self.last_id = self.last_id.max(id);
        let newest = self.slab[key]
            .streams
            .iter()
            .filter_map(|s| s.marks.back())
            .map(|m| m.id);
        if newest
            .chain(self.slab[key].messages.back().map(|m| m.id))
            .any(|n| n >= id)
        {
            return self.remove_if_unused(key);
        }
        let message = Message {
            id,
            added_ms,
            text: text.into(),
        };
        let channel = &mut self.slab[key];
        for stream in &mut channel.streams {
            stream.append(&channel.name, &message);
        }
        channel.messages.push_back(message);
        while channel.messages.len() > self.max_per_channel {
            channel.messages.pop_front();
        }
        channel.trim_streams();
        if !channel.dirty {
            channel.dirty = true;
            self.dirty.push(key);
        }
        self.index_expiry(key);
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

    /// When the oldest cached message of any channel expires (unix ms).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.next()
    }

    /// Drops messages older than `MaxMessageAge`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((_, key)) = self.expiries.pop_due(now_ms) {
            let age_ms = self.max_age.saturating_mul(1000);
            if let Some(channel) = self.slab.get_mut(key) {
                while channel
                    .messages
                    .front()
                    .is_some_and(|m| age_ms > 0 && m.added_ms.saturating_add(age_ms) <= now_ms)
                {
                    channel.messages.pop_front();
                }
                channel.trim_streams();
            }
            // The entry is gone; it comes back only later than now.
            if let Some(channel) = self.slab.get_mut(key) {
                channel.expires_ms = None;
            }
            self.index_expiry(key);
            self.remove_if_unused(key);
        }
    }

    /// Empties every channel's message cache (SIGUSR1).
    pub fn clear_caches(&mut self) {
        let keys: Vec<usize> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.slab[key].messages.clear();
            self.slab[key].trim_streams();
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
            let channel = &mut self.slab[key];
            while channel.messages.len() > max_per_channel {
                channel.messages.pop_front();
            }
            channel.trim_streams();
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
            let channel = self.slab.remove(key);
            self.by_name.remove(&channel.name);
            self.expiries.set(key, channel.expires_ms, None);
        }
    }

    /// Registers connection `reader` on a channel (creating it) and returns
    /// its cursor, placed at the start of the requested backlog.
    pub fn attach(
        &mut self,
        name: &[u8],
        template: &Rc<Template>,
        reader: ConnId,
        persistent: bool,
        backlog: Backlog,
    ) -> Cursor {
        let key = self.get_or_create(name);
        let channel = &mut self.slab[key];
        let stream = match channel
            .streams
            .iter()
            .position(|s| s.template.source() == template.source())
        {
            Some(i) => i,
            None => {
                let mut stream = Stream::new(Rc::clone(template));
                for message in &channel.messages {
                    stream.append(&channel.name, message);
                }
                channel.streams.push(stream);
                channel.streams.len() - 1
            }
        };
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
        let slot = channel.subscribers.insert(reader);
        if persistent {
            channel.persistent += 1;
        }
        Cursor {
            channel: key,
            slot,
            stream,
            pos,
            end,
        }
    }

    /// The slow-consumer policy, in one place: a reader has lost events
    /// once its cursor is behind what its channel's stream still holds
    /// (spec B3). Such a reader is dropped, never sent a gap.
    pub fn lost_events(&self, cursor: &Cursor) -> bool {
        self.get(cursor.channel).is_some_and(|c| {
            cursor.pos < cursor.end && c.stream(cursor.stream).bytes_from(cursor.pos).is_none()
        })
    }

    /// Unregisters a cursor; the channel goes when it has neither messages
    /// nor subscribers left.
    pub fn detach(&mut self, cursor: &Cursor, persistent: bool) {
        if let Some(channel) = self.slab.get_mut(cursor.channel)
            && channel.subscribers.try_remove(cursor.slot).is_some()
            && persistent
        {
            channel.persistent -= 1;
        }
        self.remove_if_unused(cursor.channel);
    }

    /// Takes the channels published to since the last call.
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        for key in self.dirty.drain(..) {
            if let Some(channel) = self.slab.get_mut(key) {
                channel.dirty = false;
                into.push(key);
            }
        }
    }

    /// Messages held in all caches (for `/metrics`; walks every channel).
    pub fn cached_events(&self) -> u64 {
        self.slab.iter().map(|(_, c)| c.messages.len() as u64).sum()
    }

    /// Bytes held by caches and rendered buffers (for `/metrics`).
    pub fn cached_bytes(&self) -> u64 {
        self.slab
            .iter()
            .map(|(_, c)| {
                let texts: usize = c.messages.iter().map(|m| m.text.len()).sum();
                let streams: usize = c.streams.iter().map(|s| s.buf.len() - s.start).sum();
                (texts + streams) as u64
            })
            .sum()
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
    pub fn sorted(&self) -> Vec<&Channel> {
        let mut list: Vec<&Channel> = self.slab.iter().map(|(_, c)| c).collect();
        list.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        list
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
            assert_eq!(ch.publish(b"a", b"x", 0), i + 1);
        }
        ch.publish(b"b", b"x", 0);
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
        ch.publish(b"old", b"x", 1_000);
        ch.publish(b"old", b"y", 2_500);
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
            ch.publish(b"a", b"x", 0);
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
}
