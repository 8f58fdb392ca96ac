//! Compaction: the state file rewritten to what the cache holds. A new
//! file beside it gets the header, the reservation and every cached event;
//! it is synced, renamed over the old one, and the directory synced, so a
//! crash at any point leaves either the old file or the new one, whole.
//!
//! While running normally this is done a slice per loop turn (`STEP`
//! bytes of channels, in name order), so the loop never stands still for
//! the whole cache: records appended to the old file meanwhile are kept
//! (`tail`) and follow the snapshot in the new file. Reading back is
//! idempotent (an event not newer than its channel's newest is skipped, a
//! clear drops ids up to its own), so events both in a channel's snapshot
//! and in the tail count once. After a failure the file is rewritten at
//! once (`compact`).

use super::format::{self, MAGIC, Record};
use super::{StateFile, lock, open_rw, write_all};
use crate::channel::Channels;
use crate::info;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

/// Bytes of snapshot written per loop turn.
const STEP: usize = 1 << 20;

/// A compaction under way.
pub(super) struct Compaction {
    file: File,
    /// The last channel written (None: none yet).
    after: Option<Box<[u8]>>,
    /// Bytes in the new file.
    written: u64,
    /// Records appended to the old file since it started.
    pub(super) tail: Vec<u8>,
    started: Instant,
    /// The size of the old file when it started.
    before: u64,
    /// Where writeback was started up to, this turn and the one before.
    kicked: u64,
    kicked_before: u64,
    /// The longest turn it took, in microseconds.
    longest_step: u64,
}

/// Syncs the directory holding `path`, so that a rename in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Waits until the bytes before `settled` (whose writeback started two
/// turns ago) are on disk, then starts writing back those from `done` up to
/// `to` without waiting: the disk gets a turn to catch up, no turn waits
/// for more than a slice, and the final sync has little left to do.
fn writeback(file: &File, settled: u64, done: u64, to: u64) {
    let fd = file.as_raw_fd();
    let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: hints on a descriptor we own; no memory is passed. A failure
    // only means the final sync does more.
    unsafe {
        if settled > 0 {
            libc::sync_file_range(fd, 0, settled as libc::off64_t, wait);
        }
        libc::sync_file_range(
            fd,
            done as libc::off64_t,
            to.saturating_sub(done) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Appends the records of every cached event of the channels after
/// `after` (in name order) to `out` until it holds `limit` bytes; returns
/// the last channel done, or None when none is left.
fn snapshot(
    channels: &Channels,
    after: Option<&[u8]>,
    out: &mut Vec<u8>,
    limit: usize,
) -> Option<Box<[u8]>> {
    for channel in channels.after(after) {
        for message in channel.messages() {
            format::encode(
                out,
                &Record::Event {
                    id: message.id,
                    ms: message.added_ms,
                    channel: &channel.name,
                    text: &message.text,
                },
            );
        }
        if out.len() >= limit {
            return Some(channel.name.clone());
        }
    }
    None
}

impl StateFile {
    /// Rewrites the file from the cache at once (and drops the records
    /// buffered, which the cache already reflects). On failure the old
    /// file stays.
    pub(super) fn compact(&mut self, channels: &Channels, now: Instant) -> io::Result<()> {
        self.abort_compaction();
        let started = Instant::now();
        let before = self.len;
        let result = (|| -> io::Result<(File, u64)> {
            let file = open_rw(&self.tmp, true)?;
            lock(&file)?;
            let mut out = Vec::with_capacity(STEP + 4096);
            out.extend_from_slice(MAGIC);
            format::encode(&mut out, &Record::Reserve(self.reserved));
            let mut written = 0u64;
            let mut after = None;
            loop {
                let next = snapshot(channels, after.as_deref(), &mut out, STEP);
                write_all(&file, &out)?;
                written += out.len() as u64;
                out.clear();
                match next {
                    Some(name) => after = Some(name),
                    None => break,
                }
            }
            file.sync_data()?;
            std::fs::rename(&self.tmp, &self.path)?;
            sync_dir(&self.path)?;
            Ok((file, written))
        })();
        let (file, written) = result.inspect_err(|_| {
            let _ = std::fs::remove_file(&self.tmp);
        })?;
        self.switch_to(file, written, now);
        self.buf.clear();
        let micros = started.elapsed().as_micros() as u64;
        self.counters.longest_pause_micros = self.counters.longest_pause_micros.max(micros);
        info!(
            "state file {}: rewritten from {before} to {written} bytes ({} events) in {} ms",
            self.path.display(),
            channels.cached_events(),
            micros / 1000
        );
        Ok(())
    }

    /// The new file is in place.
    fn switch_to(&mut self, file: File, len: u64, now: Instant) {
        self.file = file;
        self.len = len;
        self.base = len;
        self.unsynced = false;
        self.must_sync = false;
        self.last_sync = now;
        self.compact_after = None;
        self.counters.compactions += 1;
    }

    /// Starts a compaction: the new file with its header and reservation.
    pub(super) fn start_compaction(&mut self) -> io::Result<()> {
        let file = open_rw(&self.tmp, true)?;
        lock(&file)?;
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        format::encode(&mut head, &Record::Reserve(self.reserved));
        if let Err(e) = write_all(&file, &head) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        self.compaction = Some(Compaction {
            file,
            after: None,
            written: head.len() as u64,
            tail: Vec::new(),
            started: Instant::now(),
            before: self.len,
            kicked: 0,
            kicked_before: 0,
            longest_step: 0,
        });
        Ok(())
    }

    /// One turn of the compaction under way: the next slice of channels,
    /// or, when all are written, the tail, sync and rename.
    pub(super) fn step_compaction(&mut self, channels: &Channels, now: Instant) {
        let Some(mut c) = self.compaction.take() else {
            return;
        };
        let started = Instant::now();
        let result = (|| -> io::Result<bool> {
            let mut out = Vec::with_capacity(STEP + 4096);
            let next = snapshot(channels, c.after.as_deref(), &mut out, STEP);
            write_all(&c.file, &out)?;
            c.written += out.len() as u64;
            writeback(&c.file, c.kicked_before, c.kicked, c.written);
            c.kicked_before = c.kicked;
            c.kicked = c.written;
            match next {
                Some(name) => {
                    c.after = Some(name);
                    Ok(false)
                }
                None => {
                    write_all(&c.file, &c.tail)?;
                    c.written += c.tail.len() as u64;
                    c.file.sync_data()?;
                    std::fs::rename(&self.tmp, &self.path)?;
                    sync_dir(&self.path)?;
                    Ok(true)
                }
            }
        })();
        let micros = started.elapsed().as_micros() as u64;
        self.counters.longest_pause_micros = self.counters.longest_pause_micros.max(micros);
        match result {
            Ok(false) => {
                c.longest_step = c.longest_step.max(micros);
                self.compaction = Some(c);
            }
            Ok(true) => {
                info!(
                    "state file {}: compacted from {} to {} bytes ({} events) in {} ms, the longest loop turn of it {} ms (the last, with the sync and rename: {} ms)",
                    self.path.display(),
                    c.before,
                    c.written,
                    channels.cached_events(),
                    c.started.elapsed().as_millis(),
                    c.longest_step.max(micros) / 1000,
                    micros / 1000
                );
                self.switch_to(c.file, c.written, now);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                self.counters.write_errors += 1;
                self.compact_after = Some(now + super::COMPACT_RETRY);
                info!(
                    "state file {}: compaction failed: {e}; the file stays as it is (retrying in {} s)",
                    self.path.display(),
                    super::COMPACT_RETRY.as_secs()
                );
            }
        }
    }

    /// Drops a compaction under way (the old file is failing, or is being
    /// rewritten at once).
    pub(super) fn abort_compaction(&mut self) {
        if self.compaction.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
