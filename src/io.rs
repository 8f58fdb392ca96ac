//! Socket reads and writes, with their results folded once into what the
//! state machines act on, and the per-turn budgets that keep one connection
//! from holding up the others.

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
/// Datagrams (UDP) or announced events (the Redis link) one connection may
/// take per loop turn: well under `channel::STREAM_FLOOR_EVENTS`, so a
/// subscriber that reads as fast as it can is always written to before it
/// could fall behind. These sources publish without asking a channel for
/// room, so publishers leave this much of it to them.
pub const COMMANDS_PER_TURN: usize = 32;
/// Publishes (line commands or HTTP requests) one publisher connection may
/// run per loop turn, so that a pipelined burst goes to subscribers in a
/// few passes, not one pass per 32 events. What keeps readers safe is not
/// this count but a channel's room (`Channels::room`), asked before every
/// publish; this only bounds how long one connection holds the loop (about
/// a millisecond).
pub const BURST_COMMANDS_PER_TURN: usize = 1024;
/// What a command other than a publish takes of `BURST_COMMANDS_PER_TURN`:
/// those still run at most `COMMANDS_PER_TURN` a turn, since one may cost
/// far more than a publish (statistics, a channel listing, a large reply).
pub const OTHER_COMMAND_COST: usize = BURST_COMMANDS_PER_TURN / COMMANDS_PER_TURN;
/// Size of the loop-wide read buffer every connection reads into.
pub const SCRATCH_BYTES: usize = 64 * 1024;

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
