//! The state file's bytes: a magic header line, then records, each a
//! little-endian `u32` payload length, a `u32` CRC-32 of the payload, and
//! the payload (a kind byte and its fields).

/// The first bytes of every state file: a file that starts otherwise is
/// not one and is refused.
pub const MAGIC: &[u8; 16] = b"METEORD-STATE 1\n";

/// Bytes before a record's payload: its length and checksum.
pub const RECORD_HEAD: usize = 8;

/// The largest payload a record may declare; anything larger is corrupt.
pub const MAX_PAYLOAD: u32 = 1 << 30;

const EVENT: u8 = 1;
const RESERVE: u8 = 2;
const CLEAR: u8 = 3;

/// One change to the cache or the id counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A published event.
    Event {
        id: u64,
        /// Unix time in milliseconds.
        ms: u64,
        channel: &'a [u8],
        text: &'a [u8],
    },
    /// Ids up to this one may have been handed out: the counter resumes
    /// above it (the last such record counts).
    Reserve(u64),
    /// Every cached event with an id up to this one was dropped (SIGUSR1).
    Clear(u64),
}

/// Appends `record`, framed, to `out`.
pub fn encode(out: &mut Vec<u8>, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEAD]);
    match *record {
        Record::Event {
            id,
            ms,
            channel,
            text,
        } => {
            out.push(EVENT);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&ms.to_le_bytes());
            out.extend_from_slice(&(channel.len() as u32).to_le_bytes());
            out.extend_from_slice(channel);
            out.extend_from_slice(text);
        }
        Record::Reserve(id) => {
            out.push(RESERVE);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Record::Clear(id) => {
            out.push(CLEAR);
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    let payload = &out[start + RECORD_HEAD..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
}

/// The payload length and checksum in a record head.
pub fn head(bytes: &[u8; RECORD_HEAD]) -> (u32, u32) {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (len, crc)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The record in a payload whose checksum matched; None when it makes no
/// sense (an unknown kind, fields cut short).
pub fn decode(payload: &[u8]) -> Option<Record<'_>> {
    match *payload.first()? {
        EVENT => {
            let id = u64_at(payload, 1)?;
            let ms = u64_at(payload, 9)?;
            let len: [u8; 4] = payload.get(17..21)?.try_into().ok()?;
            let end = 21usize.checked_add(u32::from_le_bytes(len) as usize)?;
            let channel = payload.get(21..end)?;
            let text = payload.get(end..)?;
            Some(Record::Event {
                id,
                ms,
                channel,
                text,
            })
        }
        RESERVE if payload.len() == 9 => Some(Record::Reserve(u64_at(payload, 1)?)),
        CLEAR if payload.len() == 9 => Some(Record::Clear(u64_at(payload, 1)?)),
        _ => None,
    }
}

/// The CRC-32 (IEEE 802.3, as zlib computes it) table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes`: a torn or overwritten record does not pass it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Event {
                id: 7,
                ms: 1_700_000_000_000,
                channel: b"news",
                text: b"hello\tworld",
            },
            Record::Event {
                id: 8,
                ms: 0,
                channel: b"",
                text: b"",
            },
            Record::Reserve(100_000),
            Record::Clear(8),
        ];
        for record in records {
            let mut out = Vec::new();
            encode(&mut out, &record);
            let mut h = [0; RECORD_HEAD];
            h.copy_from_slice(&out[..RECORD_HEAD]);
            let (len, crc) = head(&h);
            let payload = &out[RECORD_HEAD..];
            assert_eq!(len as usize, payload.len());
            assert_eq!(crc, crc32(payload));
            assert_eq!(decode(payload), Some(record));
        }
        assert_eq!(decode(&[9, 0]), None);
        assert_eq!(decode(&[EVENT, 1, 2]), None);
    }
}
