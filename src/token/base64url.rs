//! base64url without padding (RFC 4648 section 5, as JWS uses it,
//! RFC 7515 section 2), strict: only the URL-safe alphabet, no `=`, no
//! white space, and the unused bits of the last character must be zero,
//! so that every byte string has exactly one encoding and a changed
//! character can never decode to the same bytes.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 6-bit value of an alphabet character.
fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Whether every byte of `text` is in the base64url alphabet.
pub fn is_alphabet(text: &[u8]) -> bool {
    text.iter().all(|&c| value(c).is_some())
}

/// Encodes `data` without padding.
pub fn encode(data: &[u8]) -> String {
    crate::base64::encode_with(data, ALPHABET, false)
}

/// Decodes unpadded base64url; None for any character outside the
/// alphabet, an impossible length, or non-zero unused bits.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let keep = chunk.len() - 1;
        // The bits below the bytes kept must be zero (canonical encoding).
        if n & (0x00ff_ffff >> (8 * keep)) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[1..1 + keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 section 10, in the URL-safe alphabet without padding.
    #[test]
    fn rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(
                decode(encoded.as_bytes()).as_deref(),
                Some(plain.as_bytes())
            );
        }
    }

    #[test]
    fn url_safe_alphabet_and_strictness() {
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode(b"-_8"), Some(vec![0xfb, 0xff]));
        for bad in [
            &b"Zg=="[..],
            b"Zm9v+g",
            b"Zm9v/g",
            b"Z",
            b"Zh",
            b"Zm9",
            b"Zm 9v",
            b"Zm9\n",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            assert_eq!(
                decode(encode(&all[..len]).as_bytes()).as_deref(),
                Some(&all[..len])
            );
        }
    }
}
