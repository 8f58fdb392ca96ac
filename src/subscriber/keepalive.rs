//! Replies on kept-alive connections (`KeepAlive` modes): the reply's
//! length is announced once its body is known, and what the client sends
//! meanwhile (its next, pipelined request) is kept for when the reply is out.

use crate::config::Mode;
use crate::conn::Reason;
use crate::http::{self, RequestHead};
use crate::io::{Io, READS_PER_TURN, read_some};
use crate::stats::Stats;
use mio::net::TcpStream;

/// A reply whose connection stays open for the client's next request.
pub struct KeepAlive {
    /// Bytes of the next request(s) received meanwhile, at most
    /// `MaxRequestHeadBytes` of them.
    pub next: Vec<u8>,
    /// Where the head's final empty line starts in the rendered header:
    /// `Content-Length` goes there.
    blank: usize,
    /// Where the body starts in the rendered header (the channel info).
    body: usize,
    /// The length is announced: the reply's bytes are fixed.
    pub framed: bool,
    /// Close once the reply is out, for this reason (a kick, or more input
    /// arrived than can be kept).
    pub close_after: Option<Reason>,
    /// Sent after the reply's events (a shutdown message): part of its length.
    pub tail: Vec<u8>,
}

/// Whether a request's reply keeps its connection: the mode says so, its
/// replies end by themselves, the client is HTTP/1.1 and did not ask to
/// close, and nothing it sent was dropped.
pub fn wanted(request: &RequestHead, mode: &Mode, timeout: u64) -> bool {
    mode.keep_alive && timeout > 0 && request.keep_alive && (!mode.persist || mode.max_messages > 0)
}

impl KeepAlive {
    /// A kept-alive reply whose rendered header is `header`, with `next`
    /// already received after its request; None when the header has no end
    /// of head (a template that is not an HTTP response head).
    pub fn new(header: &[u8], next: Vec<u8>) -> Option<Box<KeepAlive>> {
        let body = http::head_end(header)?;
        let blank = body
            - if header[..body].ends_with(b"\r\n") {
                2
            } else {
                1
            };
        // The header template must start with a status line, not an empty one.
        (blank > 0).then(|| {
            Box::new(KeepAlive {
                next,
                blank,
                body,
                framed: false,
                close_after: None,
                tail: Vec::new(),
            })
        })
    }

    /// Announces the length of the reply: `out` is the unsent rendered
    /// header, `events` the bytes of events to follow, `extra` the bytes
    /// that end the reply (a shutdown message): appended to `out` when
    /// there are no events, else kept in `tail` for after them.
    /// `Connection: close` is added when the connection closes after it.
    pub fn frame(&mut self, out: &mut Vec<u8>, events: u64, extra: &[u8]) {
        let length = (out.len() - self.body) as u64 + events + extra.len() as u64;
        let mut fields = format!("Content-Length: {length}\r\n");
        if self.close_after.is_some() {
            fields.push_str("Connection: close\r\n");
        }
        out.splice(self.blank..self.blank, fields.into_bytes());
        match events {
            0 => out.extend_from_slice(extra),
            _ => self.tail = extra.to_vec(),
        }
        self.framed = true;
    }

    /// The bytes to send after the events, once.
    pub fn take_tail(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tail)
    }

    /// Reads what the client sends while its reply is pending, keeping up
    /// to `limit` bytes: more (or more than one turn's reads) and the
    /// connection closes after this reply, the client resending what was
    /// not answered. Some(reason) when the client went away.
    pub fn read_ahead(
        &mut self,
        socket: &mut TcpStream,
        scratch: &mut [u8],
        limit: usize,
        stats: &mut Stats,
    ) -> Option<Reason> {
        for _ in 0..READS_PER_TURN {
            match read_some(socket, scratch) {
                Io::Progress(n) => {
                    stats.total_inbound_bytes += n as u64;
                    let room = limit.saturating_sub(self.next.len());
                    if n > room {
                        self.close_after.get_or_insert(Reason::ResponseComplete);
                    }
                    self.next.extend_from_slice(&scratch[..n.min(room)]);
                }
                Io::WouldBlock => return None,
                Io::Closed => return Some(Reason::RemoteClosed),
                Io::Failed(e) => return Some(Reason::Error(e.kind())),
            }
        }
        self.close_after.get_or_insert(Reason::ResponseComplete);
        None
    }
}
