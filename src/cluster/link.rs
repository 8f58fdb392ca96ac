//! One connection to Redis as a socket of the loop: the bytes received and
//! not yet decoded, and the typed ways a link can fail.

use super::resp::{self, Scanner, Value};
use crate::io::{Io, SCRATCH_BYTES, read_some, write_some};
use mio::net::TcpStream;
use std::fmt;
use std::time::Duration;

/// Which of the two links a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Commands and their replies, in order.
    Command,
    /// The subscription to announced events.
    PubSub,
}

/// Why a Redis link was brought down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The connection could not be opened.
    Connect(std::io::ErrorKind),
    /// Redis closed the connection.
    Closed,
    /// A socket error.
    Io(std::io::ErrorKind),
    /// Bytes that are not RESP.
    Protocol(&'static str),
    /// A reply that answers nothing we asked.
    Unexpected,
    /// AUTH, SELECT or the counter floor was refused.
    HandshakeRefused,
    /// A reply of the wrong shape for what it answers.
    BadReply(&'static str),
    /// An error on the pub/sub link.
    Refused(String),
    /// Redis sent nothing for `RedisTimeout` while a reply was due.
    Timeout(Duration),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect(kind) => write!(f, "cannot connect: {kind}"),
            LinkError::Closed => f.write_str("connection closed"),
            LinkError::Io(kind) => write!(f, "socket error: {kind}"),
            LinkError::Protocol(what) => write!(f, "protocol error: {what}"),
            LinkError::Unexpected => f.write_str("a reply nobody asked for"),
            LinkError::HandshakeRefused => f.write_str("handshake refused"),
            LinkError::BadReply(what) => write!(f, "unexpected reply to {what}"),
            LinkError::Refused(message) => write!(f, "error: {message}"),
            LinkError::Timeout(after) => write!(
                f,
                "no reply for {} s (RedisTimeout): Redis is hung or unreachable",
                after.as_secs()
            ),
        }
    }
}

/// A Redis connection in the slab: the socket and the reply bytes not yet
/// decoded. What to send lives in `Cluster`, which anyone can queue into.
pub struct Link {
    pub socket: TcpStream,
    pub role: Role,
    /// Received, not yet decoded: complete replies, then at most one
    /// partial reply (which may grow to the largest reply allowed).
    pub inbuf: Vec<u8>,
    /// How far the partial reply at `inbuf[used..]` has been scanned.
    scanner: Scanner,
    /// Bytes at the front of `inbuf` already decoded, dropped by `compact`.
    used: usize,
}

/// What one read did.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Bytes arrived.
    Data,
    /// The socket is drained: the next readiness event comes with new data.
    Drained,
}

impl Link {
    pub fn new(socket: TcpStream, role: Role) -> Link {
        Link {
            socket,
            role,
            inbuf: Vec::new(),
            scanner: Scanner::default(),
            used: 0,
        }
    }

    /// Reads once (through the loop's scratch buffer). Err once the link
    /// broke; what arrived before stays in `inbuf`.
    pub fn read_once(&mut self, scratch: &mut [u8]) -> Result<Read, LinkError> {
        match read_some(&mut self.socket, scratch) {
            Io::Progress(n) => {
                self.inbuf.extend_from_slice(&scratch[..n]);
                Ok(Read::Data)
            }
            Io::WouldBlock => Ok(Read::Drained),
            Io::Closed => Err(LinkError::Closed),
            Io::Failed(e) => Err(LinkError::Io(e.kind())),
        }
    }

    /// The next complete reply received, None when the one at the front is
    /// still partial. A reply over `max_bytes` (what the configuration
    /// allows) is a protocol error: the link must be dropped.
    pub fn next_reply(&mut self, max_bytes: usize) -> Result<Option<Value>, LinkError> {
        let buf = &self.inbuf[self.used..];
        let Some(n) = self
            .scanner
            .scan(buf, max_bytes)
            .map_err(|e| LinkError::Protocol(e.0))?
        else {
            return Ok(None);
        };
        match resp::decode(&buf[..n]).map_err(|e| LinkError::Protocol(e.0))? {
            Some((value, m)) if m == n => {
                self.used += n;
                Ok(Some(value))
            }
            _ => Err(LinkError::Protocol(
                "a reply the decoder does not take whole",
            )),
        }
    }

    /// Drops the decoded bytes; returns memory a large reply needed.
    pub fn compact(&mut self) {
        if self.used > 0 {
            self.inbuf.drain(..self.used);
            self.used = 0;
        }
        if self.inbuf.capacity() > 4 * SCRATCH_BYTES && self.inbuf.len() < SCRATCH_BYTES {
            self.inbuf.shrink_to(SCRATCH_BYTES);
        }
    }
    /// Writes what it can of `out`, removing what was written.
    pub fn send(&mut self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        let mut sent = 0;
        let result = loop {
            if sent == out.len() {
                break Ok(());
            }
            match write_some(&mut self.socket, &out[sent..]) {
                Io::Progress(n) => sent += n,
                Io::WouldBlock => break Ok(()),
                Io::Closed => break Err(LinkError::Closed),
                Io::Failed(e) => break Err(LinkError::Io(e.kind())),
            }
        };
        out.drain(..sent);
        result
    }
}
