//! A subscriber reading channels: its cursors into the channels' shared
//! buffers, and the writer that sends from those buffers straight to the
//! socket, several channels interleaved in id order.

use crate::channel::{Channels, Cursor};
use crate::config::Mode;
use crate::conn::{ConnId, Reason, Step};
use crate::info;
use crate::io::{Io, WRITE_BUDGET, write_pair};
use crate::stats::Stats;
use crate::subscriber::keepalive::KeepAlive;
use crate::subscriber::websocket::WsInput;
use mio::net::TcpStream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

/// Persistent subscribers by hostid: a new request with the same hostid
/// replaces the one registered.
pub type Hosts = HashMap<Box<str>, Host>;

/// The persistent subscriber registered under a hostid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// The connection registered.
    pub conn: ConnId,
    /// Its token is bound to the hostid: replacing or disconnecting it
    /// needs a token bound to it too (see `private`).
    pub bound: bool,
}

/// A subscriber reading channels.
pub struct Streaming {
    pub hostid: Box<str>,
    pub mode: Rc<Mode>,
    pub cursors: Vec<Cursor>,
    /// Header or ping bytes to send before more events; empty when idle.
    pub out: Vec<u8>,
    pub out_pos: usize,
    pub started: Instant,
    pub next_ping: Option<Instant>,
    pub ends_at: Option<Instant>,
    /// `ends_at` is when its token expires (before `MaxTime`, if any): it
    /// is then closed like a kick, with the mode's shutdown message.
    pub ends_by_token: bool,
    /// Set while the socket would block with bytes still to send.
    pub blocked_since: Option<Instant>,
    /// Whether its cursors are pinned in their channels (see `Channels::pin`).
    pub pinned: bool,
    /// Close after this many events (0: never): `MaxMessages`, raised to
    /// the backlog's size since a backlog is always sent whole; 0 once a
    /// kept-alive reply is framed (its cursors' ends bound it).
    pub limit: u64,
    pub events: u64,
    pub bytes: u64,
    /// The WebSocket side of a WebSocket subscriber.
    pub ws: Option<Box<WsInput>>,
    /// Bytes left of the frame a WebSocket subscriber's last write stopped
    /// inside (0 at a frame boundary).
    pub frame_left: u64,
    /// Set when the connection stays open for another request after this
    /// reply: the reply then carries its length.
    pub keep: Option<Box<KeepAlive>>,
    /// A kept-alive poll holds its events back until then
    /// (`PollBatchInterval` after its connection's last reply), so that
    /// they go out together; None once its reply is framed.
    pub hold_until: Option<Instant>,
}

/// The next run of bytes to send from one cursor.
struct Chunk<'a> {
    cursor: usize,
    from: u64,
    bytes: &'a [u8],
}

impl Streaming {
    /// Leaves every channel and the hostid registry, logging a
    /// `leavechannel` record per channel. Called once, as streaming ends.
    pub fn leave(
        &self,
        client: IpAddr,
        channels: &mut Channels,
        hosts: &mut Hosts,
        id: ConnId,
        reason: Reason,
    ) {
        let seconds = self.started.elapsed().as_secs();
        for cursor in &self.cursors {
            if let Some(channel) = channels.get(cursor.channel) {
                info!(
                    "leavechannel\t{client}\t{}\t{}\t{seconds}\t{}\t{}\t{}",
                    self.hostid,
                    String::from_utf8_lossy(&channel.name),
                    self.events,
                    self.bytes,
                    reason.as_str()
                );
            }
            channels.detach(cursor, self.mode.persist);
        }
        if self.mode.persist && hosts.get(&self.hostid).map(|h| h.conn) == Some(id) {
            hosts.remove(&self.hostid);
        }
    }

    /// Pins its cursors while it is behind, so that the channels keep what
    /// it has yet to receive: its socket is full, or its last write stopped
    /// at the turn's budget (`yielded`: a reader catching up after a pause
    /// may write freely and still be far behind), or it is a poll holding
    /// its events back. Unpins them once it has written all there is.
    pub fn pin(&mut self, channels: &mut Channels, yielded: bool) {
        let behind = self.blocked_since.is_some() || self.hold_until.is_some() || yielded;
        if behind || self.pinned {
            for cursor in &self.cursors {
                channels.pin(cursor, behind);
            }
            self.pinned = behind;
        }
    }

    /// Moves the rest of any half-written event into `out`, so that what is
    /// added to `out` next (a control frame) goes out between frames. When
    /// that rest is gone (a slow consumer that stopped inside a frame), the
    /// frame is completed with spaces: it no longer holds an event, but the
    /// close frame after it can still be read.
    pub fn settle(&mut self, channels: &Channels, stats: &mut Stats) -> bool {
        for cursor in &mut self.cursors {
            let Some(channel) = channels.get(cursor.channel) else {
                continue;
            };
            let stream = channel.stream(cursor.stream);
            if channels.lost_events(cursor) {
                let left = usize::try_from(self.frame_left).unwrap_or(usize::MAX);
                if left > crate::io::WRITE_BUDGET {
                    return false;
                }
                self.out.resize(self.out.len() + left, b' ');
                self.frame_left = 0;
                continue;
            }
            let rest = stream.event_remainder(cursor.pos);
            if rest.is_empty() {
                continue;
            }
            self.out.extend_from_slice(rest);
            cursor.pos += rest.len() as u64;
            self.events += 1;
            self.bytes += rest.len() as u64;
            stats.messages_served += 1;
        }
        self.frame_left = 0;
        true
    }

    /// Whether a cursor fell behind what its channel still holds.
    pub fn lost_events(&self, channels: &Channels) -> bool {
        self.cursors.iter().any(|c| channels.lost_events(c))
    }

    /// The next run of bytes to send. Picks the channel whose next event
    /// has the lowest id, and stops before any other channel's next event,
    /// so several channels interleave in id order.
    fn next_chunk<'a>(&self, channels: &'a Channels) -> Option<Chunk<'a>> {
        let mut best: Option<(u64, usize)> = None;
        let mut second = u64::MAX;
        for (i, cursor) in self.cursors.iter().enumerate() {
            let Some(channel) = channels.get(cursor.channel) else {
                continue;
            };
            let stream = channel.stream(cursor.stream);
            if cursor.pos >= cursor.end.min(stream.head()) {
                continue;
            }
            let id = stream.id_at(cursor.pos).unwrap_or(u64::MAX);
            match best {
                Some((best_id, _)) if best_id <= id => second = second.min(id),
                _ => {
                    if let Some((best_id, _)) = best {
                        second = second.min(best_id);
                    }
                    best = Some((id, i));
                }
            }
        }
        let (_, i) = best?;
        let cursor = &self.cursors[i];
        let stream = channels.get(cursor.channel)?.stream(cursor.stream);
        let mut end = cursor.end.min(stream.head());
        if second != u64::MAX {
            end = end.min(stream.end_of_ids_up_to(second - 1));
        }
        if self.limit > 0 {
            let left = self.limit.saturating_sub(self.events);
            end = end.min(stream.after_events(cursor.pos, left));
        }
        let bytes = stream.bytes_from(cursor.pos)?;
        Some(Chunk {
            cursor: i,
            from: cursor.pos,
            bytes: &bytes[..(end - cursor.pos) as usize],
        })
    }

    /// Fixes what a kept-alive reply sends, announces its length and ends
    /// it there: every event its channels hold now (the backlog, or what
    /// came while it waited: whole, like a backlog, however many), then
    /// `extra` (a shutdown message).
    pub fn frame(&mut self, channels: &Channels, extra: &[u8]) {
        let mut bytes = 0;
        for cursor in &mut self.cursors {
            let head = channels
                .get(cursor.channel)
                .map_or(cursor.pos, |c| c.stream(cursor.stream).head());
            cursor.end = cursor.end.min(head).max(cursor.pos);
            bytes += cursor.end - cursor.pos;
        }
        // The reply ends where its events do, whatever `MaxMessages` says.
        self.limit = 0;
        self.hold_until = None;
        if let Some(keep) = &mut self.keep {
            keep.frame(&mut self.out, bytes, extra);
        }
    }

    /// Whether it is a kept-alive reply whose length is not announced yet
    /// (nothing of it is sent before).
    pub fn unframed(&self) -> bool {
        self.keep.as_ref().is_some_and(|k| !k.framed)
    }

    /// Writes pending bytes, the header or ping first, then events, in one
    /// system call for both (a long-poll reply is one `writev`), within the
    /// turn's budget. A kept-alive long-poll sends nothing until it has an
    /// event, then announces the length of what it has.
    pub fn write(
        &mut self,
        socket: &mut TcpStream,
        channels: &Channels,
        stats: &mut Stats,
        now: Instant,
    ) -> Step {
        if self.unframed() {
            if self.mode.persist && self.next_chunk(channels).is_none() {
                return Step::Wait;
            }
            if self.hold_until.is_some_and(|t| now < t) {
                return Step::Wait;
            }
            self.frame(channels, b"");
        }
        let mut budget = WRITE_BUDGET;
        loop {
            if self.lost_events(channels) {
                return Step::Close(Reason::SlowConsumer);
            }
            let limit_reached = self.limit > 0 && self.events >= self.limit;
            let chunk = match limit_reached {
                true => None,
                false => self.next_chunk(channels),
            };
            if self.out_pos == self.out.len() {
                if !self.out.is_empty() {
                    self.out = Vec::new();
                    self.out_pos = 0;
                }
                match chunk {
                    _ if limit_reached => return Step::Close(Reason::MaxMessages),
                    None if self.mode.persist && self.keep.is_none() => return Step::Wait,
                    // A kept-alive reply's shutdown message follows its events.
                    None if self.keep.as_ref().is_some_and(|k| !k.tail.is_empty()) => {
                        self.out = self
                            .keep
                            .as_mut()
                            .map(|k| k.take_tail())
                            .unwrap_or_default();
                        continue;
                    }
                    None => return Step::Close(Reason::ResponseComplete),
                    Some(_) => {}
                }
            }
            if budget == 0 {
                return Step::Yield;
            }
            let body = chunk
                .as_ref()
                .map_or(&[][..], |c| &c.bytes[..c.bytes.len().min(budget)]);
            let head = &self.out[self.out_pos..];
            let head_len = head.len();
            match write_pair(socket, head, body) {
                Io::Progress(n) => {
                    stats.total_outbound_bytes += n as u64;
                    budget = budget.saturating_sub(n);
                    let from_head = n.min(head_len);
                    self.out_pos += from_head;
                    if let (Some(chunk), true) = (chunk, n > from_head) {
                        let cursor = &mut self.cursors[chunk.cursor];
                        cursor.pos += (n - from_head) as u64;
                        let done = channels.get(cursor.channel).map_or(0, |c| {
                            c.stream(cursor.stream)
                                .events_completed(chunk.from, cursor.pos)
                        });
                        self.events += done;
                        self.bytes += (n - from_head) as u64;
                        stats.messages_served += done;
                        // A chunk ends at a frame boundary: only a write
                        // that stopped inside it needs the frame's rest.
                        if self.ws.is_some() {
                            let whole = n - from_head == chunk.bytes.len();
                            self.frame_left = match channels.get(cursor.channel) {
                                Some(c) if !whole => {
                                    c.stream(cursor.stream).event_remainder(cursor.pos).len() as u64
                                }
                                _ => 0,
                            };
                        }
                    }
                }
                Io::WouldBlock => {
                    self.blocked_since.get_or_insert(now);
                    return Step::Wait;
                }
                Io::Closed => return Step::Close(Reason::RemoteClosed),
                Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
            }
        }
    }
}
