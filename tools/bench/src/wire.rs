//! Wire helpers: HTTP response heads and body framing, delimited records, event markers.

use memchr::memmem;

/// Returns the length of the response head (through the empty line), if complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a response head says about itself and its body.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub body: Body,
    /// The server keeps the connection open after the body.
    pub keep_alive: bool,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

/// Parses a complete response head; `None` when it is not HTTP.
pub fn parse_head(head: &[u8]) -> Option<Head> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = version != "HTTP/1.0";
    let mut last_modified = None;
    let mut etag = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            "last-modified" => last_modified = Some(value.to_string()),
            "etag" => etag = Some(value.to_string()),
            _ => {}
        }
    }
    let body = if chunked {
        Body::Chunked(Chunk::Size(0))
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        keep_alive = false;
        Body::UntilClose
    };
    Some(Head {
        status,
        body,
        keep_alive,
        last_modified,
        etag,
    })
}

/// How the body of a response ends.
#[derive(Debug)]
pub enum Body {
    /// When the server closes the connection.
    UntilClose,
    /// After this many more bytes.
    Length(u64),
    /// Chunked transfer coding, in the given decoder state.
    Chunked(Chunk),
    /// WebSocket frames after a `101`: text payloads are the content.
    WebSocket(Frames),
}

/// WebSocket frame decoder state (RFC 6455; server frames are unmasked,
/// a masked one is skipped the same way).
#[derive(Debug, Default)]
pub struct Frames {
    /// Header bytes of the frame being read.
    head: Vec<u8>,
    /// Payload bytes left in the current frame.
    left: u64,
    opcode: u8,
    /// A close frame came.
    closed: bool,
}

/// Chunked decoder state.
#[derive(Debug, Clone, Copy)]
pub enum Chunk {
    /// Reading hex digits of a chunk size.
    Size(u64),
    /// Skipping a chunk extension up to LF.
    SizeLine(u64),
    /// This many data bytes remain in the chunk.
    Data(u64),
    /// Skipping the CRLF after chunk data.
    DataEnd,
    /// After the last (empty) chunk: skipping trailers up to the final empty line.
    Trailer { line_len: u64 },
    /// The body is complete.
    Done,
}

impl Body {
    /// Feeds raw bytes: body content goes to `sink`. Returns (bytes consumed, body complete).
    pub fn feed<'a>(
        &mut self,
        mut input: &'a [u8],
        mut sink: impl FnMut(&'a [u8]),
    ) -> (usize, bool) {
        let total = input.len();
        match self {
            Body::UntilClose => {
                sink(input);
                (total, false)
            }
            Body::Length(left) => {
                let n = (*left).min(total as u64) as usize;
                if n > 0 {
                    sink(&input[..n]);
                }
                *left -= n as u64;
                (n, *left == 0)
            }
            Body::WebSocket(f) => {
                while !input.is_empty() {
                    if f.left > 0 {
                        let n = f.left.min(input.len() as u64) as usize;
                        if f.opcode <= 2 {
                            sink(&input[..n]);
                        }
                        input = &input[n..];
                        f.left -= n as u64;
                        continue;
                    }
                    if f.closed {
                        break;
                    }
                    f.head.push(input[0]);
                    input = &input[1..];
                    let Some(&b1) = f.head.get(1) else {
                        continue;
                    };
                    let ext = match b1 & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
                    if f.head.len() < 2 + ext + mask {
                        continue;
                    }
                    f.left = match ext {
                        0 => u64::from(b1 & 0x7f),
                        _ => f.head[2..2 + ext]
                            .iter()
                            .fold(0, |n, &b| n << 8 | u64::from(b)),
                    };
                    f.opcode = f.head[0] & 0x0f;
                    f.closed = f.opcode == 8;
                    f.head.clear();
                }
                (total - input.len(), f.closed && f.left == 0)
            }
            Body::Chunked(state) => {
                while !input.is_empty() {
                    match *state {
                        Chunk::Done => break,
                        Chunk::Data(left) => {
                            let n = left.min(input.len() as u64) as usize;
                            sink(&input[..n]);
                            input = &input[n..];
                            *state = if left == n as u64 {
                                Chunk::DataEnd
                            } else {
                                Chunk::Data(left - n as u64)
                            };
                            continue;
                        }
                        _ => {}
                    }
                    let b = input[0];
                    input = &input[1..];
                    *state = match (*state, b) {
                        (Chunk::Size(n), b'0'..=b'9') => Chunk::Size(n * 16 + (b - b'0') as u64),
                        (Chunk::Size(n), b'a'..=b'f') => {
                            Chunk::Size(n * 16 + (b - b'a' + 10) as u64)
                        }
                        (Chunk::Size(n), b'A'..=b'F') => {
                            Chunk::Size(n * 16 + (b - b'A' + 10) as u64)
                        }
                        (Chunk::Size(n) | Chunk::SizeLine(n), b'\n') if n == 0 => {
                            Chunk::Trailer { line_len: 0 }
                        }
                        (Chunk::Size(n) | Chunk::SizeLine(n), b'\n') => Chunk::Data(n),
                        (Chunk::Size(n) | Chunk::SizeLine(n), _) => Chunk::SizeLine(n),
                        (Chunk::DataEnd, b'\n') => Chunk::Size(0),
                        (Chunk::DataEnd, _) => Chunk::DataEnd,
                        (Chunk::Trailer { line_len: 0 }, b'\n') => Chunk::Done,
                        (Chunk::Trailer { .. }, b'\n') => Chunk::Trailer { line_len: 0 },
                        (Chunk::Trailer { line_len }, b'\r') => Chunk::Trailer { line_len },
                        (Chunk::Trailer { line_len }, _) => Chunk::Trailer {
                            line_len: line_len + 1,
                        },
                        (s @ (Chunk::Data(_) | Chunk::Done), _) => s,
                    };
                }
                let done = matches!(state, Chunk::Done);
                (total - input.len(), done)
            }
        }
    }
}

/// Splits a byte stream into records ending with a delimiter, keeping an incomplete tail.
#[derive(Default)]
pub struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    /// Calls `on_record` for every complete record in `partial + data`.
    pub fn feed(&mut self, data: &[u8], delim: &[u8], mut on_record: impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            let rest = split(data, delim, &mut on_record);
            self.partial.extend_from_slice(rest);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let rest_len = split(&buf, delim, &mut on_record).len();
            buf.drain(..buf.len() - rest_len);
            self.partial = buf;
        }
        if self.partial.capacity() > 65536 && self.partial.len() < 1024 {
            self.partial.shrink_to_fit();
        }
    }

    /// Ends the stream: a non-empty tail counts as a last record.
    pub fn finish(&mut self, mut on_record: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            on_record(&self.partial);
            self.partial = Vec::new();
        }
    }

    /// Bytes held for an incomplete record.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// Calls `on_record` for each delimited record and returns the incomplete rest.
fn split<'a>(mut data: &'a [u8], delim: &[u8], on_record: &mut impl FnMut(&[u8])) -> &'a [u8] {
    if delim.is_empty() {
        return data;
    }
    let finder = memmem::Finder::new(delim);
    while let Some(i) = finder.find(data) {
        on_record(&data[..i]);
        data = &data[i + delim.len()..];
    }
    data
}

/// Builds an event text of `size` bytes (at least the marker): `@<seq>:<ns>:xxxx...`.
pub fn event_text(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut t = format!("@{seq}:{sent_ns}:").into_bytes();
    if t.len() < size {
        t.resize(size, b'x');
    }
    t
}

/// Finds the marker of [`event_text`] in a record: (sequence number, send time in ns).
pub fn parse_marker(rec: &[u8]) -> Option<(u64, u64)> {
    let at = memchr::memchr(b'@', rec)?;
    let mut rest = &rec[at + 1..];
    let seq = take_number(&mut rest, b':')?;
    let ns = take_number(&mut rest, b':')?;
    Some((seq, ns))
}

/// Parses decimal digits up to `end` and advances past it.
fn take_number(rest: &mut &[u8], end: u8) -> Option<u64> {
    let stop = rest.iter().position(|&b| !b.is_ascii_digit())?;
    if stop == 0 || rest[stop] != end {
        return None;
    }
    let n = std::str::from_utf8(&rest[..stop]).ok()?.parse().ok()?;
    *rest = &rest[stop + 1..];
    Some(n)
}

/// The message id at the start of a record (`<id> <text>`, as the bench modes render it).
pub fn leading_id(rec: &[u8]) -> Option<u64> {
    let mut rest = rec;
    take_number(&mut rest, b' ')
}

/// Monotonic clock in nanoseconds, comparable across processes on this machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Replaces `\r \n \t \0 \\` escapes in command-line strings.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_roundtrip() {
        let t = event_text(42, 123456789, 64);
        assert_eq!(t.len(), 64);
        let rec = [b"17 ".as_slice(), &t].concat();
        assert_eq!(parse_marker(&rec), Some((42, 123456789)));
        assert_eq!(leading_id(&rec), Some(17));
        assert_eq!(parse_marker(b"p(-1,\"\");"), None);
        assert_eq!(leading_id(b"@1:2:"), None);
    }

    #[test]
    fn splitter_handles_boundaries() {
        let mut s = Splitter::default();
        let mut got = Vec::new();
        for piece in [&b"ab\r"[..], b"\ncd", b"\r\n\r\nef"] {
            s.feed(piece, b"\r\n", |r| got.push(r.to_vec()));
        }
        assert_eq!(got, vec![b"ab".to_vec(), b"cd".to_vec(), b"".to_vec()]);
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn websocket_frames() {
        let mut body = Body::WebSocket(Frames::default());
        let mut raw = vec![0x81, 3];
        raw.extend_from_slice(b"ab\n");
        raw.extend_from_slice(&[0x89, 0]);
        raw.extend_from_slice(&[0x81, 126, 0, 200]);
        raw.extend_from_slice(&[b'y'; 200]);
        raw.extend_from_slice(&[0x88, 2, 3, 0xe8]);
        let mut out = Vec::new();
        let mut done = false;
        for b in raw.chunks(1) {
            done = body.feed(b, |s| out.extend_from_slice(s)).1;
        }
        assert!(done);
        assert_eq!(out, [&b"ab\n"[..], &[b'y'; 200]].concat());
    }

    #[test]
    fn chunked_body() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut h = parse_head(head).expect("head");
        assert_eq!(h.status, 200);
        let raw = b"5\r\nhello\r\n3;x=y\r\n ab\r\n0\r\n\r\n";
        let mut out = Vec::new();
        // Feed byte by byte to exercise every state boundary.
        let mut done = false;
        for b in raw.chunks(1) {
            let (n, d) = h.body.feed(b, |s| out.extend_from_slice(s));
            assert_eq!(n, 1);
            done = d;
        }
        assert!(done);
        assert_eq!(out, b"hello ab");
    }

    #[test]
    fn length_body_and_headers() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nEtag: 7\r\nLast-Modified: Thu\r\n\r\n";
        assert_eq!(head_len(head), Some(head.len()));
        let mut h = parse_head(head).expect("head");
        assert!(h.keep_alive);
        assert_eq!(h.etag.as_deref(), Some("7"));
        let mut out = Vec::new();
        assert_eq!(
            h.body.feed(b"abcdef", |s| out.extend_from_slice(s)),
            (3, true)
        );
        assert_eq!(out, b"abc");
    }
}
