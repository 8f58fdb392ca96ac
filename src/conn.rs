//! What every connection shares: the slab entry, why a connection closes,
//! and socket results folded once into what the state machines act on.

use crate::cluster::RedisConn;
use crate::controller::Controller;
use crate::subscriber::Subscriber;
use mio::net::{TcpListener, UdpSocket, UnixStream};
use std::io::{self, Read, Write};

/// Bytes a connection may write in one loop turn before it yields to the
/// others (Redis's `NET_MAX_WRITES_PER_EVENT`). Four times what one
/// publisher may bring in per turn (`INPUT_BYTES_PER_TURN`), so a subscriber
/// that reads as fast as events come is never outrun by the budget alone.
pub const WRITE_BUDGET: usize = 1024 * 1024;
/// Command bytes a publisher may have run per turn (at least one command).
pub const INPUT_BYTES_PER_TURN: usize = 256 * 1024;
/// Reads a connection may do in one loop turn before it yields.
pub const READS_PER_TURN: usize = 16;
/// Commands (or datagrams, or announced events) one connection may run per
/// loop turn: well under `channel::STREAM_FLOOR_EVENTS`, so a subscriber that
/// reads as fast as it can is always written to before it could fall behind.
pub const COMMANDS_PER_TURN: usize = 32;
/// Size of the loop-wide read buffer every connection reads into.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// One socket of the loop, as stored in the slab.
pub enum Conn {
    /// Accepts browsers (subscriber port).
    SubscriberListener(TcpListener),
    /// Accepts publishers (controller port).
    ControllerListener(TcpListener),
    /// Takes one `ADDMESSAGE` per datagram.
    Udp(UdpSocket),
    /// The read end of the signal self-pipe.
    Signals(UnixStream),
    Controller(Controller),
    Subscriber(Subscriber),
    /// A link to Redis, when this node is one of several.
    Redis(RedisConn),
}

/// Why a connection closed: logged, and part of `leavechannel` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RemoteClosed,
    ResponseComplete,
    MaxMessages,
    MaxTime,
    Replaced,
    DisconnectRequested,
    Shutdown,
    SlowConsumer,
    WriteTimeout,
    HeadTimeout,
    BadRequest,
    NotFound,
    TooManyConnections,
    LineTooLong,
    BadPassword,
    Quit,
    /// A socket error other than the peer going away.
    Error(io::ErrorKind),
}

impl Reason {
    /// The word used in log records.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RemoteClosed => "remoteClosed",
            Reason::ResponseComplete => "responseComplete",
            Reason::MaxMessages => "maxMessages",
            Reason::MaxTime => "maxTime",
            Reason::Replaced => "replaced",
            Reason::DisconnectRequested => "disconnectRequested",
            Reason::Shutdown => "shutdown",
            Reason::SlowConsumer => "slowConsumer",
            Reason::WriteTimeout => "writeTimeout",
            Reason::HeadTimeout => "headTimeout",
            Reason::BadRequest => "badRequest",
            Reason::NotFound => "notFound",
            Reason::TooManyConnections => "tooManyConnections",
            Reason::LineTooLong => "lineTooLong",
            Reason::BadPassword => "badPassword",
            Reason::Quit => "quit",
            Reason::Error(_) => "error",
        }
    }
}

/// What a read or write did, with `Interrupted` retried inside.
#[derive(Debug)]
pub enum Io {
    Progress(usize),
    WouldBlock,
    /// The peer closed (a read of 0 bytes, a reset, a broken pipe).
    Closed,
    Failed(io::Error),
}

fn classify(result: io::Result<usize>) -> Option<Io> {
    match result {
        Ok(0) => Some(Io::Closed),
        Ok(n) => Some(Io::Progress(n)),
        Err(e) => match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock => Some(Io::WouldBlock),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Some(Io::Closed),
            _ => Some(Io::Failed(e)),
        },
    }
}

/// Reads once into `buf`.
pub fn read_some(socket: &mut impl Read, buf: &mut [u8]) -> Io {
    loop {
        if let Some(io) = classify(socket.read(buf)) {
            return io;
        }
    }
}

/// Writes two buffers in one system call (`writev`); either may be empty,
/// not both.
pub fn write_pair(socket: &mut impl Write, first: &[u8], second: &[u8]) -> Io {
    let slices = [io::IoSlice::new(first), io::IoSlice::new(second)];
    loop {
        if let Some(io) = classify(socket.write_vectored(&slices)) {
            return io;
        }
    }
}

/// Writes once from `bytes` (which must not be empty).
pub fn write_some(socket: &mut impl Write, bytes: &[u8]) -> Io {
    loop {
        if let Some(io) = classify(socket.write(bytes)) {
            return io;
        }
    }
}
