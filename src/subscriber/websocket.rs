//! WebSocket subscribers (RFC 6455): checking the opening handshake and
//! answering it, and reading what a subscriber may send afterwards (control
//! frames only: subscribers do not publish). Frames out are rendered into
//! the channels' shared buffers (`template::Framing::WebSocket`).

use crate::http::UpgradeHeaders;
use crate::wsproto::{self, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, close};
use std::time::{Duration, Instant};

/// The largest client frame kept while it arrives: a masked control frame.
const MAX_CLIENT_FRAME: usize = 2 + 4 + wsproto::MAX_CONTROL_PAYLOAD;
/// Control frames a client may send per second before it is cut (1008).
pub const MAX_FRAMES_PER_SECOND: u32 = 64;
/// Bytes of pongs and other replies a client may leave unread before it
/// is cut (1008): pinging without reading cannot grow its buffer.
pub const MAX_PENDING_REPLIES: usize = 16 * 1024;

/// What the handshake headers of a push request amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// No WebSocket header at all: a plain HTTP request.
    None,
    /// A valid handshake: the `Sec-WebSocket-Accept` value.
    Accept(String),
    /// A broken handshake (400).
    Broken,
    /// A version other than 13 (426).
    WrongVersion,
}

/// Whether a comma-separated header lists `token` (ASCII case ignored).
fn lists(values: &[String], token: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a request's handshake headers (RFC 6455 4.2.1). Any of
/// `Upgrade: websocket`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version`
/// makes it a handshake, which must then be whole.
pub fn handshake(h: &UpgradeHeaders) -> Handshake {
    let attempt = lists(&h.upgrade, "websocket") || !h.key.is_empty() || !h.version.is_empty();
    if !attempt {
        return Handshake::None;
    }
    if let [version] = h.version.as_slice()
        && version.trim() != "13"
    {
        return Handshake::WrongVersion;
    }
    let key = match h.key.as_slice() {
        [key] => key.trim(),
        _ => return Handshake::Broken,
    };
    let key_ok = crate::base64::decode(key.as_bytes()).is_some_and(|k| k.len() == 16);
    let whole = h.http11
        && lists(&h.upgrade, "websocket")
        && lists(&h.connection, "upgrade")
        && h.version.len() == 1
        && key_ok;
    if !whole {
        return Handshake::Broken;
    }
    Handshake::Accept(wsproto::accept_key(key))
}

/// The `101` reply for an accepted handshake.
pub fn switching_protocols(accept: &str, server: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nServer: {server}\r\n\r\n"
    )
    .into_bytes()
}

/// A refusal of a handshake: `400`, `403`, `404`, `426` (with
/// `Sec-WebSocket-Version: 13`), an empty body, then the connection closes.
pub fn refusal(status: &str, server: &str) -> Vec<u8> {
    let version = if status.starts_with("426") {
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: {server}\r\n{version}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A control frame the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Answer with a pong of the same payload.
    Ping(&'a [u8]),
    Pong,
    /// The client closes: the payload to echo (its code, or nothing).
    Close(Vec<u8>),
}

/// What a client frame's start says.
enum Parsed<'a> {
    /// More bytes are needed.
    Incomplete,
    /// A whole frame and how many bytes it took.
    Frame(u8, &'a mut [u8], usize),
}

/// Parses one client frame at the start of `bytes`, unmasking it in place;
/// Err is the close code the frame earns.
fn parse(bytes: &mut [u8]) -> Result<Parsed<'_>, u16> {
    let [b0, b1, ..] = *bytes else {
        return Ok(Parsed::Incomplete);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        // Reserved bits without an extension, or an unmasked frame.
        return Err(close::PROTOCOL_ERROR);
    }
    match opcode {
        OP_CONTINUATION | wsproto::OP_TEXT | wsproto::OP_BINARY => {
            return Err(close::UNSUPPORTED_DATA);
        }
        OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(close::PROTOCOL_ERROR),
    }
    let len = usize::from(b1 & 0x7f);
    if !fin || len > wsproto::MAX_CONTROL_PAYLOAD {
        return Err(close::PROTOCOL_ERROR);
    }
    let total = 2 + 4 + len;
    if bytes.len() < total {
        return Ok(Parsed::Incomplete);
    }
    let (head, rest) = bytes.split_at_mut(6);
    let mask = [head[2], head[3], head[4], head[5]];
    let payload = &mut rest[..len];
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Parsed::Frame(opcode, payload, total))
}

/// Checks a client's close payload: what to echo, or the code it earns.
fn close_reply(payload: &[u8]) -> Result<Vec<u8>, u16> {
    match payload {
        [] => Ok(Vec::new()),
        [_] => Err(close::PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(close::PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(close::INVALID_PAYLOAD);
            }
            Ok(vec![*hi, *lo])
        }
    }
}

/// What a WebSocket subscriber has sent and been sent: a frame arriving in
/// pieces (at most one control frame, 131 bytes), the ping awaiting its
/// pong, and the frame rate.
#[derive(Debug)]
pub struct WsInput {
    partial: Vec<u8>,
    /// A ping went out and no pong came back yet.
    pub awaiting_pong: bool,
    window: Instant,
    frames: u32,
}

impl WsInput {
    /// A reader for a subscriber whose stream starts at `now`.
    pub fn new(now: Instant) -> WsInput {
        WsInput {
            partial: Vec::new(),
            awaiting_pong: false,
            window: now,
            frames: 0,
        }
    }

    /// Counts a frame against the rate bound.
    fn count(&mut self, now: Instant) -> Result<(), u16> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.frames = 0;
        }
        self.frames += 1;
        if self.frames > MAX_FRAMES_PER_SECOND {
            return Err(close::POLICY_VIOLATION);
        }
        Ok(())
    }

    /// Takes bytes the client sent and hands each whole control frame to
    /// `on`, stopping after a close frame (Ok(Some(echo))). Err is the
    /// close code a broken frame or a flood earns.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        now: Instant,
        mut on: impl FnMut(Incoming<'_>),
    ) -> Result<Option<Vec<u8>>, u16> {
        let mut data = data;
        loop {
            if data.is_empty() {
                return Ok(None);
            }
            let (opcode, payload, used_of_data): (u8, Vec<u8>, usize);
            if self.partial.is_empty() {
                match parse(data)? {
                    Parsed::Incomplete => {
                        self.partial.extend_from_slice(data);
                        return Ok(None);
                    }
                    Parsed::Frame(op, p, used) => {
                        opcode = op;
                        payload = p.to_vec();
                        used_of_data = used;
                    }
                }
            } else {
                let had = self.partial.len();
                let take = data.len().min(MAX_CLIENT_FRAME - had);
                self.partial.extend_from_slice(&data[..take]);
                match parse(&mut self.partial)? {
                    Parsed::Incomplete => {
                        // At most one frame's worth is kept: a frame that
                        // would not fit has already been refused.
                        return Ok(None);
                    }
                    Parsed::Frame(op, p, used) => {
                        opcode = op;
                        payload = p.to_vec();
                        used_of_data = used.saturating_sub(had);
                    }
                }
                self.partial.clear();
            }
            data = &mut data[used_of_data..];
            self.count(now)?;
            match opcode {
                OP_PING => on(Incoming::Ping(&payload)),
                OP_PONG => {
                    self.awaiting_pong = false;
                    on(Incoming::Pong);
                }
                _ => {
                    let echo = close_reply(&payload)?;
                    on(Incoming::Close(echo.clone()));
                    return Ok(Some(echo));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(upgrade: &str, connection: &str, key: &str, version: &str) -> UpgradeHeaders {
        let v = |s: &str| {
            if s.is_empty() {
                Vec::new()
            } else {
                vec![s.to_owned()]
            }
        };
        UpgradeHeaders {
            http11: true,
            upgrade: v(upgrade),
            connection: v(connection),
            key: v(key),
            version: v(version),
        }
    }

    #[test]
    fn handshakes() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            handshake(&headers("websocket", "keep-alive, Upgrade", key, "13")),
            Handshake::Accept("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        assert_eq!(handshake(&headers("", "", "", "")), Handshake::None);
        assert_eq!(
            handshake(&headers("websocket", "Upgrade", key, "8")),
            Handshake::WrongVersion
        );
        for broken in [
            headers("websocket", "close", key, "13"),
            headers("", "Upgrade", key, "13"),
            headers("websocket", "Upgrade", "", "13"),
            headers("websocket", "Upgrade", "c2hvcnQ=", "13"),
            headers("websocket", "Upgrade", "not base64!", "13"),
            headers("websocket", "Upgrade", key, ""),
        ] {
            assert_eq!(handshake(&broken), Handshake::Broken, "{broken:?}");
        }
    }

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![first, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn frames_in_pieces_and_errors() {
        let now = Instant::now();
        let mut input = WsInput::new(now);
        let mut bytes = masked(0x89, b"hello");
        bytes.extend(masked(0x8A, b""));
        bytes.extend(masked(0x88, &[0x03, 0xe8, b'b']));
        let mut seen = Vec::new();
        let mut result = Ok(None);
        for b in &bytes {
            let mut one = [*b];
            result = input.feed(&mut one, now, |i| seen.push(format!("{i:?}")));
        }
        assert_eq!(result, Ok(Some(vec![0x03, 0xe8])));
        assert_eq!(
            seen,
            ["Ping([104, 101, 108, 108, 111])", "Pong", "Close([3, 232])"]
        );
        let cases: [(Vec<u8>, u16); 7] = [
            (b"\x89\x00".to_vec(), 1002),
            (masked(0x81, b"hi"), 1003),
            (masked(0x82, b"hi"), 1003),
            (masked(0xC9, b""), 1002),
            (masked(0x09, b""), 1002),
            (masked(0x88, &[0x03, 0xee]), 1002),
            (masked(0x88, &[0x03, 0xe8, 0xff]), 1007),
        ];
        for (mut frame, code) in cases {
            let mut input = WsInput::new(now);
            assert_eq!(input.feed(&mut frame, now, |_| {}), Err(code), "{frame:?}");
        }
        let mut big = vec![0x89, 0x80 | 126, 0, 200];
        assert_eq!(WsInput::new(now).feed(&mut big, now, |_| {}), Err(1002));
        let mut flood = masked(0x8A, b"").repeat(MAX_FRAMES_PER_SECOND as usize + 1);
        assert_eq!(WsInput::new(now).feed(&mut flood, now, |_| {}), Err(1008));
    }

    #[test]
    fn random_input_never_panics() {
        let now = Instant::now();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u8
        };
        for _ in 0..2000 {
            let mut input = WsInput::new(now);
            for _ in 0..8 {
                let len = usize::from(next()) % 40;
                let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
                // Often a plausible masked control frame start.
                if let Some(b) = bytes.first_mut() {
                    *b = [0x89, 0x8A, 0x88, *b][usize::from(next()) % 4];
                }
                if let Some(b) = bytes.get_mut(1) {
                    *b |= 0x80;
                }
                if input.feed(&mut bytes, now, |_| {}).is_err() {
                    break;
                }
            }
        }
    }
}
