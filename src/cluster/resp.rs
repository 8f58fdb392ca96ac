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
}
