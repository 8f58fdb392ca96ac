//! Publisher connections: the controller line protocol (`ADDMESSAGE`,
//! `COUNTSUBSCRIBERS`, `LISTCHANNELS`, `SHOWSTATS`, `QUIT`) as a small
//! state machine that reads lines, answers them and closes after flushing.

use crate::channel::Channels;
use crate::cluster::Cluster;
use crate::conn::{Io, READS_PER_TURN, Reason, read_some, write_some};
use crate::control_http::Answer;
use crate::http::{self, HttpError};
use crate::stats::Stats;
use crate::{control_http, info};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;

/// Stop reading commands while this many reply bytes wait for the peer.
const OUT_HIGH_WATER: usize = 1024 * 1024;

/// Compares two secrets in time that depends only on their lengths, so a
/// wrong guess does not reveal how much of it was right.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let longest = given.len().max(expected.len());
    let mut diff = u8::from(given.len() != expected.len());
    for i in 0..longest {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

/// One parsed controller command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    AddMessage {
        channel: &'a [u8],
        text: &'a [u8],
    },
    CountSubscribers {
        channel: &'a [u8],
    },
    ListChannels,
    ShowStats,
    /// `SHOWSTATS CLUSTER`: every node's counts (several nodes).
    ShowStatsCluster,
    Quit,
    /// `AUTH <password>`: unlocks a connection when `ControllerPassword` is set.
    Auth {
        password: &'a [u8],
    },
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off a run of non-whitespace after at least one whitespace byte.
fn argument(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let skip = rest.iter().position(|&b| !is_space(b))?;
    if skip == 0 {
        return None;
    }
    let rest = &rest[skip..];
    let end = rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Parses one line (without its LF; a CR before it is already dropped).
pub fn parse(line: &[u8]) -> Option<Command<'_>> {
    let word_end = line.iter().position(|&b| is_space(b)).unwrap_or(line.len());
    let (word, rest) = line.split_at(word_end);
    let only_space = |r: &[u8]| r.iter().all(|&b| is_space(b));
    match word {
        b"ADDMESSAGE" => {
            let (channel, after) = argument(rest)?;
            // Exactly one separator, then the text byte for byte.
            let text = after.get(1..)?;
            Some(Command::AddMessage { channel, text })
        }
        b"COUNTSUBSCRIBERS" => {
            let (channel, after) = argument(rest)?;
            only_space(after).then_some(Command::CountSubscribers { channel })
        }
        b"LISTCHANNELS" if only_space(rest) => Some(Command::ListChannels),
        b"SHOWSTATS" if only_space(rest) => Some(Command::ShowStats),
        b"SHOWSTATS" => {
            let (word, after) = argument(rest)?;
            (word == b"CLUSTER" && only_space(after)).then_some(Command::ShowStatsCluster)
        }
        b"QUIT" if only_space(rest) => Some(Command::Quit),
        b"AUTH" => {
            let password = rest.strip_prefix(b" ")?;
            Some(Command::Auth { password })
        }
        _ => None,
    }
}

/// Where a controller is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `ControllerPassword` is set: only `AUTH` is answered.
    Locked,
    /// Reading and answering commands.
    Open,
    /// The first line was an HTTP request line: answering HTTP requests.
    Http,
    /// Sending what is left of the replies, then closing for this reason.
    Closing(Reason),
}

/// A publisher connection.
pub struct Controller {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    /// Bytes of a line not yet complete; empty (unallocated) when idle.
    partial: Vec<u8>,
    /// Replies not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    phase: Phase,
    /// Lines answered so far: the first one decides between the line
    /// protocol and HTTP.
    lines: u64,
    /// Publishes sent to Redis and not yet answered, oldest first.
    awaiting: VecDeque<Awaiting>,
    /// The peer closed its sending side: answer what is buffered, then close.
    peer_done: bool,
}

/// A reply owed once Redis has answered a publish.
#[derive(Debug)]
enum Awaiting {
    /// `OK\t<id>` on the line protocol.
    Line,
    /// An HTTP response, with its CORS lines and whether to close after.
    Http { cors: String, close: bool },
}

/// What the loop should do after driving a controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for the next readiness event.
    Wait,
    /// More input may be waiting: drive again next turn.
    Yield,
    Close(Reason),
}

/// What commands need from the rest of the server.
pub struct Context<'a> {
    pub channels: &'a mut Channels,
    pub stats: &'a mut Stats,
    pub max_line: usize,
    pub max_channel_name: usize,
    /// `ControllerPassword`, when set.
    pub password: Option<&'a [u8]>,
    pub allowed_origins: &'a [String],
    pub head_bytes: usize,
    pub header_lines: usize,
    /// The Redis side, when this node is one of several.
    pub cluster: Option<&'a mut Cluster>,
    /// This connection's token, for replies that come back later.
    pub token: usize,
    /// Commands this connection may still run this turn, so that subscribers
    /// get a write between bursts and are not outrun by one publisher.
    pub commands_left: usize,
    /// Likewise in bytes, for large events.
    pub bytes_left: usize,
    pub now_ms: u64,
}

impl Controller {
    /// A new connection; `locked` when it must send `AUTH` first.
    pub fn new(socket: TcpStream, peer: SocketAddr, locked: bool) -> Controller {
        Controller {
            socket,
            peer,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            phase: if locked { Phase::Locked } else { Phase::Open },
            lines: 0,
            awaiting: VecDeque::new(),
            peer_done: false,
        }
    }

    /// Queues a last message (the `ControllerShutdownMsg`) and closes once sent.
    pub fn shut_down(&mut self, message: &[u8]) {
        if self.reading() {
            self.out.extend_from_slice(message);
            self.phase = Phase::Closing(Reason::Shutdown);
        }
    }

    /// Writes pending replies; false when the peer is gone.
    fn flush(&mut self, stats: &mut Stats) -> Result<(), Reason> {
        while self.out_pos < self.out.len() {
            match write_some(&mut self.socket, &self.out[self.out_pos..]) {
                Io::Progress(n) => {
                    self.out_pos += n;
                    stats.total_outbound_bytes += n as u64;
                }
                Io::WouldBlock => return Ok(()),
                Io::Closed => return Err(Reason::RemoteClosed),
                Io::Failed(e) => return Err(Reason::Error(e.kind())),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Locked | Phase::Http)
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads, answers and writes until the socket would block, the reply
    /// backlog is too large, or the turn's share is used up.
    pub fn drive(&mut self, ctx: &mut Context, scratch: &mut [u8]) -> Step {
        for _ in 0..READS_PER_TURN {
            if let Err(reason) = self.flush(ctx.stats) {
                return Step::Close(reason);
            }
            if let Phase::Closing(reason) = self.phase {
                return if self.backlog() == 0 {
                    Step::Close(reason)
                } else {
                    Step::Wait
                };
            }
            if self.backlog() > OUT_HIGH_WATER {
                return Step::Wait;
            }
            // Answer what is buffered before reading more.
            self.process(ctx);
            if !self.reading() {
                continue;
            }
            if ctx.commands_left == 0 {
                // Let the loop write these events to subscribers first.
                return match self.flush(ctx.stats) {
                    Err(reason) => Step::Close(reason),
                    Ok(()) => Step::Yield,
                };
            }
            if self.peer_done {
                if self.awaiting.is_empty() {
                    // A half-closed publisher (nc -N) got all its replies.
                    self.phase = Phase::Closing(Reason::RemoteClosed);
                    continue;
                }
                return Step::Wait;
            }
            if self.partial.len() > ctx.max_line {
                // Waiting for Redis to answer before taking more input.
                return Step::Wait;
            }
            match read_some(&mut self.socket, scratch) {
                Io::Progress(n) => {
                    ctx.stats.total_inbound_bytes += n as u64;
                    self.partial.extend_from_slice(&scratch[..n]);
                }
                Io::WouldBlock => {
                    return match self.flush(ctx.stats) {
                        Err(reason) => Step::Close(reason),
                        Ok(()) => Step::Wait,
                    };
                }
                Io::Closed => self.peer_done = true,
                Io::Failed(e) => return Step::Close(Reason::Error(e.kind())),
            }
        }
        Step::Yield
    }

    /// Answers the complete requests waiting in `partial`, in order. While a
    /// publish awaits Redis only further publishes go ahead, so replies keep
    /// the order of the requests.
    fn process(&mut self, ctx: &mut Context) {
        if self.phase == Phase::Http {
            return self.take_http(ctx);
        }
        let mut input = std::mem::take(&mut self.partial);
        let mut used = 0;
        while self.reading() && ctx.commands_left > 0 {
            let Some(nl) = memchr::memchr(b'\n', &input[used..]) else {
                break;
            };
            let line = &input[used..used + nl];
            if self.lines == 0 && control_http::is_request_line(line) {
                self.phase = Phase::Http;
                break;
            }
            if !self.awaiting.is_empty() && !line.starts_with(b"ADDMESSAGE") {
                break;
            }
            self.lines += 1;
            ctx.commands_left -= 1;
            ctx.bytes_left = ctx.bytes_left.saturating_sub(nl + 1);
            if ctx.bytes_left == 0 {
                ctx.commands_left = 0;
            }
            self.answer(line, ctx);
            used += nl + 1;
        }
        input.drain(..used);
        if !self.reading() {
            return;
        }
        if input.len() > ctx.max_line && memchr::memchr(b'\n', &input).is_none() {
            self.reply(ctx.stats, b"ERR Line too long\r\n");
            self.phase = Phase::Closing(Reason::LineTooLong);
            return;
        }
        // An idle connection keeps no buffer.
        self.partial = if input.is_empty() { Vec::new() } else { input };
        if self.phase == Phase::Http {
            self.take_http(ctx);
        }
    }

    /// Answers the oldest publish waiting for Redis (`id` None: it failed),
    /// then goes on with the requests queued behind it.
    pub fn published(&mut self, id: Option<u64>, ctx: &mut Context) {
        match (self.awaiting.pop_front(), id) {
            (Some(Awaiting::Line), Some(id)) => {
                let _ = write!(self.out, "OK\t{id}\r\n");
            }
            (Some(Awaiting::Line), None) => self.reply(ctx.stats, b"ERR Backend unavailable\r\n"),
            (Some(Awaiting::Http { cors, close }), id) => {
                if id.is_none() {
                    ctx.stats.errors_served += 1;
                }
                self.out
                    .extend_from_slice(&control_http::published(id, &cors, close));
                if close {
                    self.phase = Phase::Closing(Reason::ResponseComplete);
                }
            }
            (None, _) => return,
        }
        if self.awaiting.is_empty() {
            self.process(ctx);
        }
    }

    /// Answers every complete HTTP request in `partial` (keep-alive and
    /// pipelining work); a request over the bounds is answered and closes.
    fn take_http(&mut self, ctx: &mut Context) {
        while self.phase == Phase::Http && self.awaiting.is_empty() && ctx.commands_left > 0 {
            let Some(head_len) = http::head_end(&self.partial) else {
                if self.partial.len() > ctx.head_bytes {
                    self.fail_http(control_http::error_response(HttpError::HeadTooLarge), ctx);
                }
                return;
            };
            if head_len > ctx.head_bytes {
                return self.fail_http(control_http::error_response(HttpError::HeadTooLarge), ctx);
            }
            let request =
                match control_http::parse_request(&self.partial[..head_len], ctx.header_lines) {
                    Ok(request) => request,
                    Err(error) => return self.fail_http(control_http::error_response(error), ctx),
                };
            let body_len = request.content_length.unwrap_or(0);
            if body_len > ctx.max_line {
                return self.fail_http(control_http::too_large_response(), ctx);
            }
            if request.method == "POST" && request.content_length.is_none() {
                let error = control_http::error_response(HttpError::LengthRequired);
                return self.fail_http(error, ctx);
            }
            if self.partial.len() < head_len + body_len {
                return;
            }
            self.lines += 1;
            ctx.commands_left -= 1;
            ctx.bytes_left = ctx.bytes_left.saturating_sub(head_len + body_len);
            if ctx.bytes_left == 0 {
                ctx.commands_left = 0;
            }
            let body = &self.partial[head_len..head_len + body_len];
            let close = match control_http::respond(&request, body, ctx) {
                Answer::Now(response) => {
                    self.out.extend_from_slice(&response);
                    request.close
                }
                Answer::Later { cors } => {
                    let close = request.close;
                    self.awaiting.push_back(Awaiting::Http { cors, close });
                    // Closes once the response is out (see `published`).
                    false
                }
            };
            self.partial.drain(..head_len + body_len);
            if close {
                self.phase = Phase::Closing(Reason::ResponseComplete);
            }
        }
    }

    fn fail_http(&mut self, response: Vec<u8>, ctx: &mut Context) {
        ctx.stats.errors_served += 1;
        self.out.extend_from_slice(&response);
        self.partial = Vec::new();
        self.phase = Phase::Closing(Reason::BadRequest);
    }

    fn reply(&mut self, stats: &mut Stats, bytes: &[u8]) {
        if bytes.starts_with(b"ERR") {
            stats.errors_served += 1;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Executes one line and queues its reply.
    fn answer(&mut self, line: &[u8], ctx: &mut Context) {
        if line.len() > ctx.max_line {
            self.reply(ctx.stats, b"ERR Line too long\r\n");
            self.phase = Phase::Closing(Reason::LineTooLong);
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let command = parse(line);
        if self.phase == Phase::Locked {
            match (command, ctx.password) {
                (Some(Command::Auth { password }), Some(expected))
                    if same_secret(password, expected) =>
                {
                    self.out.extend_from_slice(b"OK\r\n");
                    self.phase = Phase::Open;
                }
                (Some(Command::Auth { .. }), _) => {
                    info!("{}: controller sent a wrong password", self.peer);
                    self.reply(ctx.stats, b"ERR Invalid password\r\n");
                    self.phase = Phase::Closing(Reason::BadPassword);
                }
                _ => self.reply(ctx.stats, b"ERR Not authenticated\r\n"),
            }
            return;
        }
        // Writing into a Vec cannot fail.
        match command {
            Some(Command::AddMessage { channel, .. } | Command::CountSubscribers { channel })
                if channel.len() > ctx.max_channel_name =>
            {
                self.reply(ctx.stats, b"ERR Channel name too long\r\n");
            }
            Some(Command::AddMessage { channel, text }) => match ctx.cluster.as_deref_mut() {
                None => match ctx.channels.publish(channel, text, ctx.now_ms) {
                    Ok(id) => {
                        ctx.stats.unique_messages += 1;
                        let _ = write!(self.out, "OK\t{id}\r\n");
                    }
                    // MaxChannels or MaxCachedBytes: ERR <reason>.
                    Err(refused) => self.reply(ctx.stats, format!("ERR {refused}\r\n").as_bytes()),
                },
                Some(cluster) => {
                    let max = ctx.channels.max_per_channel;
                    if cluster.publish(Some(ctx.token), channel, text, ctx.now_ms, max) {
                        ctx.stats.unique_messages += 1;
                        self.awaiting.push_back(Awaiting::Line);
                    } else {
                        self.reply(ctx.stats, b"ERR Backend unavailable\r\n");
                    }
                }
            },
            Some(Command::CountSubscribers { channel }) => {
                let n = ctx.channels.by_name(channel).map_or(0, |c| c.persistent);
                let _ = write!(self.out, "OK {n}\r\n");
            }
            Some(Command::ListChannels) => {
                self.out.extend_from_slice(b"OK\r\n");
                for channel in ctx.channels.sorted() {
                    self.out.extend_from_slice(&channel.name);
                    let _ = write!(
                        self.out,
                        "({}/{})\r\n",
                        channel.message_count(),
                        channel.persistent
                    );
                }
                self.out.extend_from_slice(b"--EOT--\r\n");
            }
            Some(Command::ShowStats) => {
                let stats = &*ctx.stats;
                let _ = write!(
                    self.out,
                    "OK\r\nuptime: {}\r\nchannel_count: {}\r\n",
                    stats.started.elapsed().as_secs(),
                    ctx.channels.count()
                );
                for (name, value) in stats.counters() {
                    let _ = write!(self.out, "{name}: {value}\r\n");
                }
                self.out.extend_from_slice(b"--EOT--\r\n");
            }
            Some(Command::ShowStatsCluster) => {
                self.out.extend_from_slice(b"OK\r\n");
                match ctx.cluster.as_deref() {
                    Some(cluster) => {
                        for (node, counts) in &cluster.view {
                            let _ = write!(self.out, "node {node} {counts}\r\n");
                        }
                    }
                    None => {
                        let _ = write!(
                            self.out,
                            "node standalone current_subscribers={} current_controllers={} channel_count={} messages_served={}\r\n",
                            ctx.stats.current_subscribers,
                            ctx.stats.current_controllers,
                            ctx.channels.count(),
                            ctx.stats.messages_served
                        );
                    }
                }
                self.out.extend_from_slice(b"--EOT--\r\n");
            }
            Some(Command::Quit) => {
                self.out.extend_from_slice(b"OK\r\n");
                self.phase = Phase::Closing(Reason::Quit);
            }
            // Publishers configured with a password may talk to a server without one.
            Some(Command::Auth { .. }) => self.out.extend_from_slice(b"OK\r\n"),
            None => self.reply(ctx.stats, b"ERR Invalid command syntax\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addmessage_keeps_the_text_byte_for_byte() {
        assert_eq!(
            parse(b"ADDMESSAGE \t chan a  b\tc "),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b"a  b\tc "
            })
        );
        assert_eq!(
            parse(b"ADDMESSAGE chan "),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b""
            })
        );
        assert_eq!(
            parse(b"ADDMESSAGE chan\t\tx"),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b"\tx"
            })
        );
        assert_eq!(parse(b"ADDMESSAGE chan"), None);
        assert_eq!(parse(b"ADDMESSAGE"), None);
        assert_eq!(parse(b"ADDMESSAGEx chan t"), None);
    }

    #[test]
    fn other_commands_are_exact() {
        assert_eq!(
            parse(b"COUNTSUBSCRIBERS c"),
            Some(Command::CountSubscribers { channel: b"c" })
        );
        assert_eq!(parse(b"COUNTSUBSCRIBERS c d"), None);
        assert_eq!(parse(b"COUNTSUBSCRIBERS"), None);
        assert_eq!(parse(b"LISTCHANNELS"), Some(Command::ListChannels));
        assert_eq!(parse(b"SHOWSTATS"), Some(Command::ShowStats));
        assert_eq!(parse(b"SHOWSTATSx"), None);
        assert_eq!(parse(b"SHOWSTATS x"), None);
        assert_eq!(parse(b"SHOWSTATS CLUSTER"), Some(Command::ShowStatsCluster));
        assert_eq!(parse(b"showstats"), None);
        assert_eq!(parse(b"QUIT"), Some(Command::Quit));
        assert_eq!(
            parse(b"AUTH s3 cret"),
            Some(Command::Auth {
                password: b"s3 cret"
            })
        );
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"a"));
        assert_eq!(parse(b""), None);
    }
}
