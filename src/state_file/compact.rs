//! Compaction: the state file rewritten to what the cache holds. A new
//! file beside it gets the header, the reservation and every cached event;
//! it is synced, renamed over the old one, and the directory synced, so a
//! crash at any point leaves either the old file or the new one, whole.

use super::format::{self, MAGIC, Record};
use super::{StateFile, lock, open_rw, write_all};
use crate::channel::Channels;
use crate::info;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Instant;

/// Bytes gathered before each write of the new file.
const CHUNK: usize = 1 << 20;

/// Syncs the directory holding `path`, so that a rename in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Writes the cache to `file`: header, reservation, events channel by
/// channel, oldest first. Returns the bytes written.
fn write_snapshot(file: &File, channels: &Channels, reserved: u64) -> io::Result<u64> {
    let mut out = Vec::with_capacity(CHUNK + 4096);
    out.extend_from_slice(MAGIC);
    format::encode(&mut out, &Record::Reserve(reserved));
    let mut written = 0u64;
    for channel in channels.sorted() {
        for message in channel.messages() {
            format::encode(
                &mut out,
                &Record::Event {
                    id: message.id,
                    ms: message.added_ms,
                    channel: &channel.name,
                    text: &message.text,
                },
            );
            if out.len() >= CHUNK {
                write_all(file, &out)?;
                written += out.len() as u64;
                out.clear();
            }
        }
    }
    write_all(file, &out)?;
    written += out.len() as u64;
    Ok(written)
}

impl StateFile {
    /// Rewrites the file from the cache (and drops the records buffered,
    /// which the cache already reflects). On failure the old file stays.
    pub(super) fn compact(&mut self, channels: &Channels, now: Instant) -> io::Result<()> {
        let started = Instant::now();
        let before = self.len;
        let result = (|| {
            let file = open_rw(&self.tmp, true)?;
            lock(&file)?;
            let written = write_snapshot(&file, channels, self.reserved)?;
            file.sync_data()?;
            std::fs::rename(&self.tmp, &self.path)?;
            sync_dir(&self.path)?;
            Ok((file, written))
        })();
        let (file, written) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(e);
            }
        };
        self.file = file;
        self.len = written;
        self.base = written;
        self.buf.clear();
        self.unsynced = false;
        self.must_sync = false;
        self.last_sync = now;
        self.compact_after = None;
        let micros = started.elapsed().as_micros() as u64;
        self.counters.compactions += 1;
        self.counters.longest_pause_micros = self.counters.longest_pause_micros.max(micros);
        info!(
            "state file {}: compacted from {before} to {written} bytes ({} events) in {} ms",
            self.path.display(),
            channels.cached_events(),
            micros / 1000
        );
        Ok(())
    }
}
