//! One connection to Redis as a socket of the loop: the bytes received and
//! not yet decoded, and the typed ways a link can fail.

use crate::io::{Io, SCRATCH_BYTES, read_some, write_some};
use mio::net::TcpStream;
use std::fmt;

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
        }
    }
}

/// A Redis connection in the slab: the socket and the reply bytes not yet
/// decoded. What to send lives in `Cluster`, which anyone can queue into.
pub struct Link {
    pub socket: TcpStream,
    pub role: Role,
    /// Received, not yet decoded.
    pub inbuf: Vec<u8>,
}

impl Link {
    pub fn new(socket: TcpStream, role: Role) -> Link {
        Link {
            socket,
            role,
            inbuf: Vec::new(),
        }
    }

    /// Reads while little is buffered (what is left is decoded on the next
    /// turns). Err once the link broke; what arrived before stays in `inbuf`.
    pub fn fill(&mut self, scratch: &mut [u8]) -> Result<(), LinkError> {
        while self.inbuf.len() < SCRATCH_BYTES {
            match read_some(&mut self.socket, scratch) {
                Io::Progress(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Io::WouldBlock => return Ok(()),
                Io::Closed => return Err(LinkError::Closed),
                Io::Failed(e) => return Err(LinkError::Io(e.kind())),
            }
        }
        Ok(())
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
