//! The state file (`StateFile`, `StateSync`): an append-only log of what
//! changes the cache (published events, SIGUSR1 clears) and of the ids
//! reserved ahead, so that a restart finds the cached events again and the
//! id counter never goes back.
//!
//! The loop buffers this turn's records and writes them once per turn
//! (`flush`), syncing as `StateSync` promises; publishers hear `OK` only
//! after that. Ids are reserved `RESERVE_BLOCK` ahead with a synced record,
//! so after any crash the counter resumes above every id handed out. When
//! the file has grown past twice what the cache holds it is rewritten from
//! the cache (`compact`). Write and sync errors are counted, logged once,
//! and retried every second; this module depends only on `channel`,
//! `config` and `log`.

mod compact;
pub mod format;
mod replay;

use crate::channel::Channels;
use crate::config::StateSync;
use crate::info;
use format::{MAGIC, Record};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many ids one reservation covers; a new one is written once half
/// of it is used, so a sync for ids is rare (and a crash skips at most this many).
pub const RESERVE_BLOCK: u64 = 100_000;
/// How often a failing file is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long after a failed compaction (with the file itself fine) the
/// next is tried.
pub(crate) const COMPACT_RETRY: Duration = Duration::from_secs(10);
/// `everysec`: the longest a written record stays unsynced.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The file is compacted once it is larger than twice what the cache
/// holds plus this.
const COMPACT_SLACK: u64 = 1 << 20;
/// Records kept in memory while the file fails; beyond this they are
/// dropped and the file is rewritten from the cache once it works again.
const MAX_BUFFERED: usize = 16 << 20;

/// Counters for `/stats` and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Writes, syncs and compactions that failed.
    pub write_errors: u64,
    /// Syncs done (`fdatasync`).
    pub syncs: u64,
    /// Microseconds the loop spent in syncs.
    pub sync_micros: u64,
    /// Rewrites of the file from the cache.
    pub compactions: u64,
    /// The longest the loop stood still for the file (a sync or a
    /// compaction), in microseconds.
    pub longest_pause_micros: u64,
}

/// A failing file: retried at `retry_at`.
#[derive(Debug)]
struct Failing {
    retry_at: Instant,
    /// The file may not hold what it was told (a sync failed, or records
    /// were dropped from memory): the retry rewrites it from the cache.
    rewrite: bool,
}

/// An open state file.
pub struct StateFile {
    path: PathBuf,
    /// Where a compaction writes before renaming over `path`.
    tmp: PathBuf,
    file: File,
    sync: StateSync,
    /// Bytes of complete records in the file.
    len: u64,
    /// This turn's records, not yet written.
    buf: Vec<u8>,
    /// Written since the last sync.
    unsynced: bool,
    /// A reservation is in `buf`: sync this turn whatever `StateSync` says.
    must_sync: bool,
    last_sync: Instant,
    /// Ids up to this may be handed out (the reservation is on disk).
    reserved: u64,
    /// The size right after the last compaction.
    base: u64,
    failing: Option<Failing>,
    /// A compaction failed: not before this.
    compact_after: Option<Instant>,
    /// A compaction under way, a slice per turn.
    compaction: Option<compact::Compaction>,
    pub counters: Counters,
}

/// An I/O error with what was being done to which file.
fn context(path: &Path, what: &str, e: io::Error) -> String {
    format!("StateFile {}: {what}: {e}", path.display())
}

/// Writes all of `bytes` to `file` (opened for appending).
fn write_all(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)
}

/// Takes an exclusive lock so that two servers never share a file.
fn lock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens `path` for appending (creating it), readable too.
fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_APPEND | libc::O_CLOEXEC)
        .open(path)
}

impl StateFile {
    /// Opens (or creates) the state file at `path`, reads it back into
    /// `channels` and reserves ids above everything it names. Err is the
    /// message to stop the server with.
    pub fn open(
        path: &Path,
        sync: StateSync,
        channels: &mut Channels,
        now_ms: u64,
    ) -> Result<StateFile, String> {
        // A file over RLIMIT_FSIZE must fail the write (EFBIG), not kill
        // the process with SIGXFSZ.
        // SAFETY: setting a signal's disposition to ignore touches no memory.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        let started = Instant::now();
        let file = open_rw(path, false)
            .map_err(|e| context(path, "cannot open for reading and writing", e))?;
        let meta = file
            .metadata()
            .map_err(|e| context(path, "cannot read its size", e))?;
        if !meta.is_file() {
            return Err(format!("StateFile {}: not a regular file", path.display()));
        }
        lock(&file)
            .map_err(|e| context(path, "cannot lock it (is another meteord using it?)", e))?;
        let found = replay::replay(&file, meta.len(), channels, now_ms).map_err(|e| match e {
            replay::NotState::WrongMagic => format!(
                "StateFile {}: not a state file (it does not start with {:?}); refusing to use it",
                path.display(),
                String::from_utf8_lossy(MAGIC)
            ),
            replay::NotState::Io(e) => context(path, "cannot read", e),
        })?;
        if found.dropped > 0 {
            file.set_len(found.good_len)
                .map_err(|e| context(path, "cannot cut the torn tail", e))?;
            info!(
                "state file {}: dropped {} bytes of a torn or corrupt tail after {} complete records (the file now ends at byte {})",
                path.display(),
                found.dropped,
                found.records,
                found.good_len
            );
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // Compaction writes a new file beside this one: the directory must
        // take it.
        File::create(&tmp)
            .and_then(|_| std::fs::remove_file(&tmp))
            .map_err(|e| {
                context(
                    &tmp,
                    "cannot create a file beside the state file (needed to compact it)",
                    e,
                )
            })?;
        let counter = found.highest_id.max(found.reserved);
        channels.saw_id(counter);
        let mut state = StateFile {
            path: path.to_owned(),
            tmp,
            file,
            sync,
            len: found.good_len,
            buf: Vec::new(),
            unsynced: false,
            must_sync: false,
            last_sync: Instant::now(),
            reserved: counter,
            base: 0,
            failing: None,
            compact_after: None,
            compaction: None,
            counters: Counters::default(),
        };
        if state.len == 0 {
            state.buf.extend_from_slice(MAGIC);
        }
        state.reserve(counter.saturating_add(RESERVE_BLOCK));
        state
            .write_and_sync()
            .map_err(|e| context(path, "cannot write", e))?;
        info!(
            "state file {}: restored {} events ({} cached now, {} older than MaxMessageAge skipped) from {} bytes in {} ms; ids continue after {}; StateSync {}",
            path.display(),
            found.events,
            channels.cached_events(),
            found.expired,
            found.good_len,
            started.elapsed().as_millis(),
            counter,
            match sync {
                StateSync::Always => "always",
                StateSync::EverySec => "everysec",
                StateSync::No => "no",
            }
        );
        Ok(state)
    }

    /// Queues a reservation of ids up to `up_to` and a sync this turn.
    fn reserve(&mut self, up_to: u64) {
        format::encode(&mut self.buf, &Record::Reserve(up_to));
        self.must_sync = true;
        self.reserved = up_to;
    }

    /// Writes what is buffered (also into a compaction's tail); on
    /// failure cuts what part of it made it, and says whether that worked.
    fn append(&mut self) -> Result<(), (io::Error, bool)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = write_all(&self.file, &self.buf) {
            // The next attempt writes the records whole after the last
            // complete one.
            let cut = self.file.set_len(self.len).is_ok();
            return Err((e, cut));
        }
        if let Some(c) = self.compaction.as_mut() {
            c.tail.extend_from_slice(&self.buf);
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > MAX_BUFFERED {
            self.buf = Vec::new();
        }
        self.unsynced = true;
        Ok(())
    }

    /// Writes what is buffered and syncs, now (start-up, a reservation
    /// needed in the middle of a turn, shutdown).
    fn write_and_sync(&mut self) -> io::Result<()> {
        self.append().map_err(|(e, _)| e)?;
        self.sync_file()
    }

    /// `fdatasync`, timed.
    fn sync_file(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let result = self.file.sync_data();
        let micros = started.elapsed().as_micros() as u64;
        self.counters.syncs += 1;
        self.counters.sync_micros += micros;
        self.counters.longest_pause_micros = self.counters.longest_pause_micros.max(micros);
        self.last_sync = Instant::now();
        if result.is_ok() {
            self.unsynced = false;
            self.must_sync = false;
        }
        result
    }

    /// Whether `OK` waits for a sync (`always`).
    pub fn promises_sync(&self) -> bool {
        self.sync == StateSync::Always
    }

    /// Whether publishes are refused: `always`, and the file fails.
    pub fn refuses_publishes(&self) -> bool {
        self.promises_sync() && self.failing.is_some()
    }

    /// Makes sure the id `id` is covered by a reservation on disk before
    /// it is handed out; false when that could not be written.
    pub fn ensure_reserved(&mut self, id: u64, now: Instant) -> bool {
        if id <= self.reserved && self.failing.is_none() {
            return true;
        }
        if id <= self.reserved {
            return !self.promises_sync();
        }
        self.reserve(id.saturating_add(RESERVE_BLOCK));
        match self.write_and_sync() {
            Ok(()) => true,
            Err(e) => {
                self.fail(now, "writing an id reservation", &e, true);
                false
            }
        }
    }

    /// Records a published event.
    pub fn event(&mut self, id: u64, ms: u64, channel: &[u8], text: &[u8]) {
        format::encode(
            &mut self.buf,
            &Record::Event {
                id,
                ms,
                channel,
                text,
            },
        );
    }

    /// Records that every cached event up to `through` was dropped (SIGUSR1).
    pub fn clear(&mut self, through: u64) {
        format::encode(&mut self.buf, &Record::Clear(through));
    }

    /// When `flush` has something to do without new records: an
    /// `everysec` sync, a retry.
    pub fn deadline(&self) -> Option<Instant> {
        if let Some(failing) = &self.failing {
            return Some(failing.retry_at);
        }
        if !self.buf.is_empty() || self.compaction.is_some() {
            return Some(Instant::now());
        }
        (self.unsynced && self.sync == StateSync::EverySec)
            .then_some(self.last_sync + SYNC_INTERVAL)
    }

    /// Once per loop turn: writes this turn's records and syncs as
    /// `StateSync` says; compacts when the file has grown too large.
    /// True when the records are stored as promised.
    pub fn flush(&mut self, now: Instant, channels: &Channels) -> bool {
        // Renew the reservation once half of it is used.
        if channels.last_id().saturating_add(RESERVE_BLOCK / 2) > self.reserved {
            self.reserve(channels.last_id().saturating_add(RESERVE_BLOCK));
        }
        if let Some(failing) = &self.failing {
            if now < failing.retry_at {
                if self.buf.len() > MAX_BUFFERED {
                    self.buf = Vec::new();
                    self.failing = Some(Failing {
                        retry_at: failing.retry_at,
                        rewrite: true,
                    });
                }
                return false;
            }
            if failing.rewrite {
                return match self.compact(channels, now) {
                    Ok(()) => {
                        self.recovered();
                        true
                    }
                    Err(e) => {
                        self.fail(now, "rewriting the file", &e, true);
                        false
                    }
                };
            }
        }
        if let Err((e, cut)) = self.append() {
            self.fail(now, "write", &e, !cut);
            return false;
        }
        let due = match self.sync {
            StateSync::Always => self.unsynced,
            StateSync::EverySec => self.unsynced && now >= self.last_sync + SYNC_INTERVAL,
            StateSync::No => false,
        };
        if (due || self.must_sync)
            && let Err(e) = self.sync_file()
        {
            // What the kernel held may be lost: write it all again.
            self.fail(now, "sync", &e, true);
            return false;
        }
        if self.failing.is_some() {
            self.recovered();
        }
        self.maybe_compact(channels, now);
        true
    }

    /// The file works again.
    fn recovered(&mut self) {
        self.failing = None;
        info!(
            "state file {}: writing works again ({} bytes)",
            self.path.display(),
            self.len
        );
    }

    /// A write, sync or rewrite failed: counted always, logged once until
    /// it works again, retried in a second.
    fn fail(&mut self, now: Instant, what: &str, e: &io::Error, rewrite: bool) {
        self.counters.write_errors += 1;
        self.abort_compaction();
        let rewrite = rewrite || self.failing.as_ref().is_some_and(|f| f.rewrite);
        if self.failing.is_none() {
            let consequence = if self.promises_sync() {
                "publishes get ERR Storage unavailable until the file can be written again"
            } else {
                "events are kept in memory only until the file can be written again"
            };
            info!(
                "state file {}: {what} failed: {e}; {consequence}; retrying every {} s",
                self.path.display(),
                RETRY.as_secs()
            );
        }
        self.failing = Some(Failing {
            retry_at: now + RETRY,
            rewrite,
        });
    }

    /// Compacts when the file is larger than twice what the cache holds
    /// (or what the last compaction wrote) plus `COMPACT_SLACK`.
    /// Goes on with a compaction under way, a slice per turn.
    fn maybe_compact(&mut self, channels: &Channels, now: Instant) {
        if self.compaction.is_some() {
            return self.step_compaction(channels, now);
        }
        let live = channels.message_bytes().max(self.base);
        if self.len <= live.saturating_mul(2).saturating_add(COMPACT_SLACK)
            || self.compact_after.is_some_and(|t| now < t)
        {
            return;
        }
        if let Err(e) = self.start_compaction() {
            self.counters.write_errors += 1;
            self.compact_after = Some(now + COMPACT_RETRY);
            info!(
                "state file {}: compaction failed: {e}; the file stays as it is (retrying in {} s)",
                self.path.display(),
                COMPACT_RETRY.as_secs()
            );
        }
    }

    /// At exit: writes what is left, gives back the ids reserved but not
    /// used, and syncs whatever `StateSync` says (a clean stop loses nothing).
    pub fn close(&mut self, last_id: u64) {
        self.abort_compaction();
        if self.failing.is_some() {
            info!(
                "state file {}: still failing at exit; events since the failure are lost",
                self.path.display()
            );
            return;
        }
        format::encode(&mut self.buf, &Record::Reserve(last_id));
        self.reserved = last_id;
        match self.write_and_sync() {
            Ok(()) => info!(
                "state file {}: {} bytes, synced; ids continue after {last_id}",
                self.path.display(),
                self.len
            ),
            Err(e) => info!(
                "state file {}: final write failed: {e}",
                self.path.display()
            ),
        }
    }

    /// Gauges for `/stats` and `/metrics`.
    pub fn gauges(&self) -> [(&'static str, u64); 3] {
        [
            ("state_file_bytes", self.len),
            ("state_file_failing", u64::from(self.failing.is_some())),
            (
                "state_longest_pause_micros",
                self.counters.longest_pause_micros,
            ),
        ]
    }

    /// Counters for `/stats` and `/metrics` (`_total` there).
    pub fn counter_list(&self) -> [(&'static str, u64); 4] {
        let c = &self.counters;
        [
            ("state_write_errors", c.write_errors),
            ("state_syncs", c.syncs),
            ("state_sync_micros", c.sync_micros),
            ("state_compactions", c.compactions),
        ]
    }
}
