//! Reading a state file back into the channels at start-up: every complete
//! record in order, under the cache limits configured now; a torn or
//! corrupt tail ends the reading where the last good record ends.

use super::format::{self, MAGIC, MAX_PAYLOAD, RECORD_HEAD, Record};
use crate::channel::Channels;
use std::fs::File;
use std::io::{self, BufReader, Read};

/// What reading a state file found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Where the last complete record ends: the file is cut here.
    pub good_len: u64,
    /// Bytes after it that were not a complete, intact record.
    pub dropped: u64,
    /// Records read.
    pub records: u64,
    /// Events put back into the cache (some may have been trimmed since).
    pub events: u64,
    /// Events older than `MaxMessageAge`, skipped.
    pub expired: u64,
    /// The highest id an event or a clear named.
    pub highest_id: u64,
    /// The last reservation: every id handed out is at most this or
    /// `highest_id` (the last one counts, so that a clean stop can give
    /// back what it did not use).
    pub reserved: u64,
}

/// Why a file cannot be read as a state file.
#[derive(Debug)]
pub enum NotState {
    /// It starts with something else.
    WrongMagic,
    Io(io::Error),
}

/// Reads until `buf` is full or the file ends; how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Replays `file` (of `file_len` bytes) into `channels`; `now_ms` decides
/// which events are already older than `MaxMessageAge`.
pub fn replay(
    file: &File,
    file_len: u64,
    channels: &mut Channels,
    now_ms: u64,
) -> Result<Replayed, NotState> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; MAGIC.len()];
    let got = read_full(&mut reader, &mut magic).map_err(NotState::Io)?;
    let mut found = Replayed::default();
    if got < MAGIC.len() {
        // Empty, or a header torn by a crash right after creating the file.
        if magic[..got] != MAGIC[..got] {
            return Err(NotState::WrongMagic);
        }
        found.dropped = got as u64;
        return Ok(found);
    }
    if &magic != MAGIC {
        return Err(NotState::WrongMagic);
    }
    let mut at = MAGIC.len() as u64;
    let mut payload = Vec::new();
    let age_ms = channels.max_age.saturating_mul(1000);
    loop {
        let mut head = [0u8; RECORD_HEAD];
        let got = read_full(&mut reader, &mut head).map_err(NotState::Io)?;
        if got == 0 {
            break;
        }
        if got < RECORD_HEAD {
            break;
        }
        let (len, crc) = format::head(&head);
        if len == 0 || len > MAX_PAYLOAD || at + RECORD_HEAD as u64 + len as u64 > file_len {
            break;
        }
        payload.resize(len as usize, 0);
        if read_full(&mut reader, &mut payload).map_err(NotState::Io)? < payload.len() {
            break;
        }
        if format::crc32(&payload) != crc {
            break;
        }
        let Some(record) = format::decode(&payload) else {
            break;
        };
        match record {
            Record::Event {
                id,
                ms,
                channel,
                text,
            } => {
                found.highest_id = found.highest_id.max(id);
                if age_ms > 0 && ms.saturating_add(age_ms) <= now_ms {
                    found.expired += 1;
                    channels.saw_id(id);
                } else {
                    channels.insert(channel, id, text, ms);
                    found.events += 1;
                }
            }
            Record::Reserve(id) => found.reserved = id,
            Record::Clear(through) => {
                found.highest_id = found.highest_id.max(through);
                // Only up to its id: a compacted file may hold newer
                // events of some channels before it.
                channels.clear_through(through);
            }
        }
        found.records += 1;
        at += RECORD_HEAD as u64 + len as u64;
    }
    found.good_len = at;
    found.dropped = file_len.saturating_sub(at);
    Ok(found)
}
