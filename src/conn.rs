//! What the loop and every connection kind share: the identity that names a
//! connection for as long as the process lives, and why a connection closed.

use std::fmt;
use std::io;

/// Names one connection, never reused while the process lives. The slot is
/// where the connection sits in the loop's slab (a place, reused as soon as
/// the connection closes); the serial tells that connection from every other
/// that ever sat there. Work that finishes later (a Redis reply, a channel
/// load, a kick, a timer) carries this, and is dropped when the connection
/// it names is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: usize,
    serial: u64,
}

impl ConnId {
    /// The identity of the connection numbered `serial`, stored at `slot`.
    pub fn new(slot: usize, serial: u64) -> ConnId {
        ConnId { slot, serial }
    }

    /// The slab key (and poll token) of the connection.
    pub fn slot(self) -> usize {
        self.slot
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.serial)
    }
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
    /// A WebSocket subscriber answered no ping within `PingInterval`.
    NoPong,
    /// A WebSocket subscriber sent a frame it may not send (or too many).
    ProtocolError,
    /// A controller sent nothing for `ControllerIdleTimeout`.
    IdleTimeout,
    /// A controller did not complete a command (or `AUTH`) within
    /// `ControllerCommandTimeout`.
    CommandTimeout,
    BadRequest,
    NotFound,
    TooManyConnections,
    LineTooLong,
    BadPassword,
    /// A subscriber refused for its token (401) or what it grants (403).
    Unauthorized,
    /// A subscriber's token reached its `exp`.
    TokenExpired,
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
            Reason::NoPong => "noPong",
            Reason::ProtocolError => "protocolError",
            Reason::IdleTimeout => "idleTimeout",
            Reason::CommandTimeout => "commandTimeout",
            Reason::BadRequest => "badRequest",
            Reason::NotFound => "notFound",
            Reason::TooManyConnections => "tooManyConnections",
            Reason::LineTooLong => "lineTooLong",
            Reason::BadPassword => "badPassword",
            Reason::Unauthorized => "unauthorized",
            Reason::TokenExpired => "tokenExpired",
            Reason::Quit => "quit",
            Reason::Error(_) => "error",
        }
    }
}

/// What the loop does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for a readiness event, new data or a timer.
    Wait,
    /// Work is left but the turn's share is used: drive again next turn.
    Yield,
    Close(Reason),
}
