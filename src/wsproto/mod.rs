//! The WebSocket protocol (RFC 6455) pieces shared by templates and
//! subscribers: the handshake's accept value, server frame headers, and the
//! close codes meteord sends.

pub mod sha1;

/// The GUID every `Sec-WebSocket-Accept` is computed with (RFC 6455 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes (RFC 6455 5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes meteord sends, and why (README, "Limits and security").
pub mod close {
    /// The subscription is over: a non-persistent mode sent its backlog,
    /// or the client closed first (echoed when it gave no code).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (SIGTERM, SIGINT, `SHUTDOWN`).
    pub const GOING_AWAY: u16 = 1001;
    /// A broken frame: unmasked, reserved bits, an unknown opcode, a
    /// fragmented or oversized control frame, a malformed close frame.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data frame from the client: subscribers do not publish.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A close frame whose reason is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client floods control frames.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Another request with the same hostid replaced this one.
    pub const REPLACED: u16 = 4000;
    /// `/disconnect/<hostid>` ended it.
    pub const DISCONNECTED: u16 = 4001;
    /// The mode's `MaxTime` is over.
    pub const MAX_TIME: u16 = 4002;
    /// The mode's `MaxMessages` were sent.
    pub const MAX_MESSAGES: u16 = 4003;
    /// The socket accepted nothing for `WriteTimeout`.
    pub const WRITE_TIMEOUT: u16 = 4004;
    /// The client fell behind what the channel still holds.
    pub const SLOW_CONSUMER: u16 = 4005;
    /// No pong came back within a `PingInterval` of a ping.
    pub const NO_PONG: u16 = 4006;
    /// The subscriber's token expired (private channels): 4401, after
    /// HTTP's 401, so the page asks for a fresh token before reconnecting.
    pub const TOKEN_EXPIRED: u16 = 4401;
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(GUID.as_bytes());
    crate::base64::encode(&sha1::sha1(&input))
}

/// Appends an unmasked, final frame's header for a payload of `len` bytes.
pub fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends a whole unmasked frame.
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    frame_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a text frame for `payload`, whose bytes that are not UTF-8 are
/// replaced by U+FFFD first (a text frame must hold UTF-8).
pub fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    match String::from_utf8_lossy(payload) {
        std::borrow::Cow::Borrowed(_) => frame(out, OP_TEXT, payload),
        std::borrow::Cow::Owned(fixed) => frame(out, OP_TEXT, fixed.as_bytes()),
    }
}

/// Appends a close frame with `code` and no reason.
pub fn close_frame(out: &mut Vec<u8>, code: u16) {
    frame(out, OP_CLOSE, &code.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_handshake_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frame_lengths() {
        let mut out = Vec::new();
        frame_header(&mut out, OP_TEXT, 5);
        assert_eq!(out, [0x81, 5]);
        out.clear();
        frame_header(&mut out, OP_TEXT, 126);
        assert_eq!(out, [0x81, 126, 0, 126]);
        out.clear();
        frame_header(&mut out, OP_TEXT, 70_000);
        assert_eq!(out, [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        text_frame(&mut out, b"a\xffb");
        assert_eq!(out, b"\x81\x05a\xef\xbf\xbdb");
        out.clear();
        close_frame(&mut out, close::GOING_AWAY);
        assert_eq!(out, [0x88, 2, 0x03, 0xe9]);
    }
}
