//! RESP, the Redis wire protocol: encoding commands and decoding replies
//! incrementally from a byte buffer, with bounds on what a reply may hold.

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a string holding one.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            other => std::str::from_utf8(other.bytes()?).ok()?.parse().ok(),
        }
    }
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Why a reply cannot be decoded: the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Largest bulk string or array accepted from the server.
const MAX_LEN: i64 = 512 * 1024 * 1024;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 8;

/// Decodes one complete reply from the start of `buf`: the value and the
/// bytes it used, None when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    decode_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(bytes: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad number"))
}

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let value = match kind {
        b'+' => (Value::Simple(head.to_vec()), next),
        b'-' => (Value::Error(head.to_vec()), next),
        b':' => (Value::Integer(number(head)?), next),
        b'$' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if len > MAX_LEN {
                return Err(ProtocolError("bulk string too long"));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated"));
            }
            (Value::Bulk(buf[next..end].to_vec()), end + 2)
        }
        b'*' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if len > MAX_LEN || depth >= MAX_DEPTH {
                return Err(ProtocolError("array too large or too deep"));
            }
            let mut items = Vec::with_capacity((len as usize).min(1024));
            let mut pos = next;
            for _ in 0..len {
                match decode_at(buf, pos, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        pos = after;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(items), pos)
        }
        _ => return Err(ProtocolError("unknown reply type")),
    };
    Ok(Some(value))
}

/// Finds where the reply at the start of a buffer ends, without decoding
/// it, and resumes where it stopped when more bytes arrive: a reply of
/// many megabytes that comes in pieces is scanned once, not again from its
/// start on every read (which would be quadratic). Once it says the reply
/// is complete, `decode` turns it into a `Value` in one pass.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Where the next element header starts, from the reply's start.
    pos: usize,
    /// How far the search for the end of the header at `pos` has looked.
    searched: usize,
    /// Items still to come in each array opened and not finished.
    open: Vec<u64>,
}

impl Scanner {
    /// The length of the complete reply at the start of `buf`, or None when
    /// more bytes are needed. `buf` must start where the previous call's
    /// did (bytes may only have been appended). A reply that would exceed
    /// `max_bytes` is an error as soon as its size is known.
    pub fn scan(&mut self, buf: &[u8], max_bytes: usize) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let from = self.searched.max(self.pos + 1);
            if from > buf.len() {
                return Ok(None);
            }
            // A header's CR may be the last byte searched last time.
            let back = usize::from(from > self.pos + 1);
            let Some(found) = memchr::memmem::find(&buf[from - back..], b"\r\n") else {
                self.searched = buf.len();
                if buf.len() > max_bytes {
                    return Err(ProtocolError("reply larger than the configuration allows"));
                }
                return Ok(None);
            };
            let end = from - back + found;
            let head = &buf[self.pos + 1..end];
            let next = end + 2;
            match kind {
                b'+' | b'-' => {}
                b':' => {
                    number(head)?;
                }
                b'$' => {
                    let len = number(head)?;
                    if len >= 0 {
                        if len > MAX_LEN {
                            return Err(ProtocolError("bulk string too long"));
                        }
                        let stop = next + len as usize + 2;
                        if stop > max_bytes {
                            return Err(ProtocolError(
                                "reply larger than the configuration allows",
                            ));
                        }
                        if buf.len() < stop {
                            // The header is read again next time: a few bytes.
                            self.searched = self.pos + 1;
                            return Ok(None);
                        }
                        if &buf[stop - 2..stop] != b"\r\n" {
                            return Err(ProtocolError("bulk string not terminated"));
                        }
                        self.advance(stop);
                        if let Some(n) = self.finish_item() {
                            return Ok(Some(n));
                        }
                        continue;
                    }
                }
                b'*' => {
                    let len = number(head)?;
                    if len >= 0 {
                        if len > MAX_LEN || self.open.len() >= MAX_DEPTH {
                            return Err(ProtocolError("array too large or too deep"));
                        }
                        if len > 0 {
                            self.open.push(len as u64);
                            self.advance(next);
                            continue;
                        }
                    }
                }
                _ => return Err(ProtocolError("unknown reply type")),
            }
            if next > max_bytes {
                return Err(ProtocolError("reply larger than the configuration allows"));
            }
            self.advance(next);
            if let Some(n) = self.finish_item() {
                return Ok(Some(n));
            }
        }
    }

    fn advance(&mut self, to: usize) {
        self.pos = to;
        self.searched = to + 1;
    }

    /// One item is complete: close the arrays it completes. The reply's
    /// length when that was its last item (the scanner is then reset).
    fn finish_item(&mut self) -> Option<usize> {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return None;
            }
            self.open.pop();
        }
        let n = self.pos;
        *self = Scanner::default();
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"a b"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n");
    }

    #[test]
    fn replies_decode_incrementally() {
        let full = b"*3\r\n:7\r\n$5\r\nhe\r\no\r\n*2\r\n+OK\r\n$-1\r\nrest";
        let expected = Value::Array(vec![
            Value::Integer(7),
            Value::Bulk(b"he\r\no".to_vec()),
            Value::Array(vec![Value::Simple(b"OK".to_vec()), Value::Nil]),
        ]);
        assert_eq!(decode(full), Ok(Some((expected, full.len() - 4))));
        for cut in 0..full.len() - 4 {
            assert_eq!(decode(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            decode(b"-ERR no\r\n"),
            Ok(Some((Value::Error(b"ERR no".to_vec()), 9)))
        );
        assert!(decode(b"?x\r\n").is_err());
        assert!(decode(b":x\r\n").is_err());
    }

    /// Scans `full` fed in pieces of `step` bytes; the lengths of the
    /// replies found, each checked against `decode`.
    fn scan_in_pieces(full: &[u8], step: usize) -> Vec<usize> {
        let mut scanner = Scanner::default();
        let mut start = 0;
        let mut found = Vec::new();
        let mut have = 0;
        while start < full.len() {
            have = (have + step).min(full.len());
            while let Ok(Some(n)) = scanner.scan(&full[start..have], usize::MAX) {
                let decoded = decode(&full[start..start + n]);
                assert!(matches!(decoded, Ok(Some((_, m))) if m == n), "{decoded:?}");
                found.push(n);
                start += n;
            }
            if have == full.len() && start < full.len() {
                break;
            }
        }
        found
    }

    #[test]
    fn the_scanner_finds_reply_ends_in_any_pieces() {
        let full: &[u8] =
            b"*3\r\n:7\r\n$5\r\nhe\r\no\r\n*2\r\n+OK\r\n$-1\r\n+PONG\r\n*0\r\n$0\r\n\r\n";
        for step in 1..full.len() {
            assert_eq!(scan_in_pieces(full, step), vec![33, 7, 4, 6], "step {step}");
        }
        let mut s = Scanner::default();
        assert!(s.scan(b"?x\r\n", 100).is_err());
        let mut s = Scanner::default();
        assert!(s.scan(b"$100\r\n", 50).is_err(), "over the bound");
        let mut s = Scanner::default();
        assert!(
            s.scan(b"+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 20)
                .is_err()
        );
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        let mut s = Scanner::default();
        assert!(s.scan(deep.as_bytes(), 1000).is_err(), "too deep");
        assert!(decode(format!("{deep}:1\r\n").as_bytes()).is_err());
    }

    #[test]
    fn a_large_reply_in_small_pieces_is_scanned_once() {
        // 2,000 entries of 1 KB, fed 1 KB at a time.
        let mut full = b"*2000\r\n".to_vec();
        for _ in 0..2000 {
            full.extend_from_slice(b"$1024\r\n");
            full.extend_from_slice(&[b'x'; 1024]);
            full.extend_from_slice(b"\r\n");
        }
        assert_eq!(scan_in_pieces(&full, 1024), vec![full.len()]);
    }
}
