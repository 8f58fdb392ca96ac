//! Hostile input, round two: silent and half-finished controllers (cut at
//! `ControllerCommandTimeout` with `ERR Timeout` or `408`, or silently at
//! `ControllerIdleTimeout`), path aliases of one static document (one cached
//! copy), one channel read in many escaping modes (its rendered copies must
//! go), a controller that pipelines `LISTCHANNELS` and never reads, and a
//! publisher that pipelines thousands of events to readers that keep up.

use crate::roles::{Kind, LineClient, Read, Shared, StreamReader, Track, inc, nap};
use crate::server::json_u64;
use crate::wire::{self, Got};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How a mode's `MessageTemplate` escapes `~text~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Esc {
    Raw,
    Json,
    Js,
    Html,
}

impl Esc {
    /// How `<a href="x">` looks once escaped.
    fn marker(self) -> &'static [u8] {
        match self {
            Esc::Raw => b"<a href=\"x\">",
            Esc::Json | Esc::Js => b"\\u003ca href=\\\"x\\\"\\u003e",
            Esc::Html => b"&lt;a href=&quot;x&quot;&gt;",
        }
    }
}

/// The modes of the bundled meteor.conf and what they do to `~text~`.
pub const BUNDLED_MODES: &[(&str, Esc)] = &[
    ("xhrinteractive", Esc::Raw),
    ("iframe", Esc::Raw),
    ("sse", Esc::Raw),
    ("fetchstream", Esc::Json),
    ("jsonlongpoll", Esc::Json),
];

/// Those plus the soak configuration's own `htmlesc` and `jsesc`.
pub const SOAK_MODES: &[(&str, Esc)] = &[
    ("xhrinteractive", Esc::Raw),
    ("iframe", Esc::Raw),
    ("sse", Esc::Raw),
    ("fetchstream", Esc::Json),
    ("jsonlongpoll", Esc::Json),
    ("htmlesc", Esc::Html),
    ("jsesc", Esc::Js),
];

#[derive(Default)]
pub struct HostileCounters {
    /// Item 1: silent, half-command and half-request controllers.
    pub idle_checked: AtomicU64,
    pub idle_bad: AtomicU64,
    /// `MaxControllers` silent clients on a server of their own.
    pub lockout: Mutex<Option<Result<String, String>>>,
    /// Item 4: aliases of /index.html.
    pub alias_requests: AtomicU64,
    pub alias_bad: AtomicU64,
    pub doc_cache_max: AtomicU64,
    pub doc_size: AtomicU64,
    pub doc_bound: AtomicU64,
    /// Item 5: one channel in every mode, closed at once.
    pub escape_rounds: AtomicU64,
    pub escape_requests: AtomicU64,
    pub escape_bad: AtomicU64,
    pub escape_not_returned: AtomicU64,
    pub escape_worst: Mutex<String>,
    pub bytes_cached_max: AtomicU64,
    /// Item 8: a controller that never reads.
    pub nonreader_rounds: AtomicU64,
    pub nonreader_commands: AtomicU64,
    pub nonreader_stalled: AtomicU64,
    pub nonreader_closed: AtomicU64,
    pub nonreader_open: AtomicU64,
    pub many_channels: AtomicU64,
    /// Item 10: a pipelining publisher and its readers.
    pub pipe_rounds: AtomicU64,
    pub pipe_events: AtomicU64,
    pub pipe_publish_failed: AtomicU64,
    pub pipe_readers: AtomicU64,
    pub pipe_readers_dropped: AtomicU64,
    pub pipe_missing: AtomicU64,
}

fn bad(sh: &Shared, counter: &AtomicU64, what: String) {
    inc(counter);
    sh.problem(what);
}

/// `GET /stats` on the controller port.
pub fn stats(sh: &Shared) -> Option<String> {
    let auth = sh
        .password
        .as_ref()
        .map(|p| format!("Authorization: Bearer {p}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    let got = wire::exchange(sh.ctl, req.as_bytes(), Duration::from_secs(5)).ok()?;
    let text = String::from_utf8_lossy(&got).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// Notes `bytes_cached` and `document_cache_bytes` from a /stats answer.
pub fn note_stats(sh: &Shared, json: &str) {
    if let Some(b) = json_u64(json, "bytes_cached") {
        sh.c.h.bytes_cached_max.fetch_max(b, Ordering::Relaxed);
    }
    if let Some(d) = json_u64(json, "document_cache_bytes") {
        sh.c.h.doc_cache_max.fetch_max(d, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Item 1: silent and half-finished controllers
// ---------------------------------------------------------------------------

/// Reads until the server closes, at most `limit`: (bytes, when closed).
fn until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    match wire::read_to_end(s, start + limit) {
        Ok(got) => (got, Some(start.elapsed())),
        Err(got) => (got, None),
    }
}

/// One silent or half-finished controller; checks the exact answer and
/// when it came. Needs the server's timeouts.
pub fn idler(sh: &Shared, idx: usize) {
    let Some((cmd, idle)) = sh.ctl_timeouts else {
        return;
    };
    let h = &sh.c.h;
    let slack = Duration::from_millis(600);
    let mut round = idx as u64;
    while !sh.draining() {
        round += 1;
        let action = round % 6;
        let Some(mut s) = sh.connect(sh.ctl) else {
            nap(Duration::from_secs(1), &sh.draining);
            continue;
        };
        let opened = Instant::now();
        let (write, want, wait): (&[u8], &[u8], Duration) = match action {
            0 => (b"", b"ERR Timeout\r\n", cmd),
            1 => (b"ADDMESSAGE soakhalf never-ending", b"ERR Timeout\r\n", cmd),
            2 => (
                b"POST /pub/soakhalf HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly ten b",
                b"HTTP/1.1 408 ",
                cmd,
            ),
            3 => (
                b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ",
                b"HTTP/1.1 408 ",
                cmd,
            ),
            4 => (b"COUNTSUBSCRIBERS soakidle\n", b"OK 0\r\n", idle),
            _ => (
                b"GET /channels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n",
                idle,
            ),
        };
        if !write.is_empty() && s.write_all(write).is_err() {
            bad(sh, &h.idle_bad, format!("idler {idx}: write failed"));
            continue;
        }
        let (got, closed) = until_closed(&mut s, wait + Duration::from_secs(4));
        let at = opened.elapsed();
        inc(&h.idle_checked);
        let what = [
            "silent controller",
            "half a command",
            "HTTP body never sent",
            "half an HTTP head",
            "silent after a command",
            "silent after an HTTP request",
        ][action as usize];
        let Some(_) = closed else {
            bad(
                sh,
                &h.idle_bad,
                format!(
                    "idler {idx}: {what}: not closed within {:?} (got {})",
                    wait + Duration::from_secs(4),
                    wire::show(&got)
                ),
            );
            continue;
        };
        let exact = match action {
            0 | 1 | 4 => got == want,
            2 | 3 => got.starts_with(want),
            // The whole response and nothing after it: closed without a word.
            _ => {
                got.starts_with(want)
                    && wire::response_head(&got).is_some_and(|(_, head)| {
                        wire::content_length(&got[..head]) == Some(got.len() - head)
                    })
            }
        };
        if !exact {
            bad(
                sh,
                &h.idle_bad,
                format!("idler {idx}: {what}: got {}", wire::show(&got)),
            );
        } else if at + slack < wait || at > wait + Duration::from_secs(3) {
            bad(
                sh,
                &h.idle_bad,
                format!("idler {idx}: {what}: closed after {at:?}, expected about {wait:?}"),
            );
        }
        nap(Duration::from_millis(200), &sh.draining);
    }
}

/// `max` silent controllers on a server of their own: the next connection
/// gets `ERR Too many connections`, and once the silent ones are cut
/// (`ERR Timeout` each) a real publisher gets in.
pub fn lockout(ctl: SocketAddr, max: usize, cmd: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut silent = Vec::new();
    for i in 0..max {
        let s = wire::connect(ctl).map_err(|e| format!("silent {i}: {e}"))?;
        silent.push(s);
    }
    thread::sleep(Duration::from_millis(200));
    let mut extra = wire::connect(ctl).map_err(|e| format!("one more: {e}"))?;
    let got = wire::read_to_end(&mut extra, Instant::now() + Duration::from_secs(5))
        .map_err(|g| format!("one more: not closed ({})", wire::show(&g)))?;
    if got != b"ERR Too many connections\r\n" {
        return Err(format!(
            "one more than MaxControllers: {}",
            wire::show(&got)
        ));
    }
    let mut cut = 0;
    for (i, s) in silent.iter_mut().enumerate() {
        let left = (start + cmd + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        match wire::read_to_end(s, Instant::now() + left) {
            Ok(g) if g == b"ERR Timeout\r\n" => cut += 1,
            Ok(g) => return Err(format!("silent {i}: {}", wire::show(&g))),
            Err(g) => return Err(format!("silent {i} not cut: {}", wire::show(&g))),
        }
    }
    let cut_after = start.elapsed();
    // The slots free as the server closes them: a few tries.
    let mut answer = String::new();
    for _ in 0..20 {
        let mut s = wire::connect(ctl).map_err(|e| format!("publisher: {e}"))?;
        s.write_all(b"ADDMESSAGE soaklockout after-the-silent-ones\n")
            .map_err(|e| format!("publisher: {e}"))?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(5);
        while wire::find(&buf, b"\r\n").is_none() && Instant::now() < deadline {
            match wire::read_some(&mut s, &mut buf, &mut tmp) {
                Ok(Got::Eof) | Err(_) => break,
                _ => {}
            }
        }
        answer = wire::show(&buf);
        if buf.starts_with(b"OK\t") {
            return Ok(format!(
                "{max} silent controllers held every slot (one more: ERR Too many connections), all {cut} cut with ERR Timeout after {:.1} s, then a publisher got {answer}",
                cut_after.as_secs_f64()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "after the silent ones were cut a publisher still got {answer}"
    ))
}

// ---------------------------------------------------------------------------
// Items 4 and 5: path aliases, escaping modes
// ---------------------------------------------------------------------------

const ALIASES: &[&str] = &[
    "/index.html",
    "/./index.html",
    "/././index.html",
    "//index.html",
    "///index.html",
    "/.//./index.html",
    "/./././././index.html",
    "//./index.html",
];

/// What the document cache counts besides the responses it holds (see
/// src/subscriber/documents.rs): per entry, and per path naming an entry.
const DOC_ENTRY_OVERHEAD: u64 = 128;
const DOC_PATH_OVERHEAD: u64 = 64;

/// Every alias of /index.html gives the same body; the server holds one
/// copy: `document_cache_bytes` stays within one response (head and body)
/// plus the bookkeeping of one entry and of each alias, below two copies.
fn aliases(sh: &Shared) {
    let h = &sh.c.h;
    let mut reference: Option<Vec<u8>> = None;
    let mut response_len = 0u64;
    for path in ALIASES {
        inc(&h.alias_requests);
        let req = format!("GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n");
        let got = match wire::exchange(sh.sub, req.as_bytes(), Duration::from_secs(10)) {
            Ok(g) => g,
            Err(e) => {
                bad(sh, &h.alias_bad, format!("GET {path}: {e}"));
                continue;
            }
        };
        inc(&sh.c.connections);
        let body = wire::response_head(&got).and_then(|(st, head)| {
            (st == "HTTP/1.1 200 OK"
                && wire::content_length(&got[..head]) == Some(got.len() - head))
            .then(|| got[head..].to_vec())
        });
        match (body, &reference) {
            (None, _) => bad(
                sh,
                &h.alias_bad,
                format!("GET {path}: {}", wire::show(&got)),
            ),
            (Some(b), None) => {
                response_len = got.len() as u64;
                reference = Some(b)
            }
            (Some(b), Some(r)) if &b != r => {
                bad(sh, &h.alias_bad, format!("GET {path}: another body"))
            }
            _ => {}
        }
    }
    let Some(size) = reference.map(|r| r.len() as u64) else {
        return;
    };
    h.doc_size.store(size, Ordering::Relaxed);
    let one_copy = response_len
        + DOC_ENTRY_OVERHEAD
        + ALIASES
            .iter()
            .map(|a| a.len() as u64 + DOC_PATH_OVERHEAD)
            .sum::<u64>();
    h.doc_bound.store(one_copy, Ordering::Relaxed);
    if let Some(j) = stats(sh) {
        note_stats(sh, &j);
        match json_u64(&j, "document_cache_bytes") {
            Some(d) if d <= one_copy => {}
            Some(d) => bad(
                sh,
                &h.alias_bad,
                format!(
                    "document_cache_bytes {d} for one response of {response_len} bytes (one copy and {} aliases: at most {one_copy})",
                    ALIASES.len()
                ),
            ),
            None => bad(sh, &h.alias_bad, "no document_cache_bytes in /stats".into()),
        }
    }
}

/// Publishes `n` events to channel `c` (pipelined), counted as extra.
/// Returns how many were acknowledged.
fn fill(sh: &Shared, c: &mut LineClient, name: &str, n: usize, text: &str) -> usize {
    let mut batch = String::new();
    for _ in 0..n {
        batch.push_str(&format!("ADDMESSAGE {name} {text}\n"));
    }
    if c.s.write_all(batch.as_bytes()).is_err() {
        return 0;
    }
    let mut ok = 0;
    for _ in 0..n {
        match c.reply() {
            Some(r) if r.starts_with("OK\t") => {
                ok += 1;
                inc(&sh.c.published_extra);
            }
            Some(r) => sh.problem(format!("publishing to {name}: {r}")),
            None => break,
        }
    }
    ok
}

/// One channel, requested in every mode and closed at once: its rendered
/// copies must go and `bytes_cached` come back.
fn escapes(sh: &Shared, chan: &str, rng_round: u64) {
    let h = &sh.c.h;
    let Some(mut c) = LineClient::open(sh) else {
        return;
    };
    // Large enough that the rendered copies of every mode (about 2.5 MB)
    // stand out of what the load's channels move meanwhile.
    let text = format!("{rng_round}.<a href=\"x\">&'</a>{}", "e".repeat(30_000));
    if fill(sh, &mut c, chan, 12, &text) < 12 {
        bad(sh, &h.escape_bad, format!("{chan}: publish failed"));
        return;
    }
    drop(c);
    // Rendered copies of an earlier round are gone after the grace time.
    thread::sleep(Duration::from_millis(2500));
    let Some(before) = stats(sh).and_then(|j| json_u64(&j, "bytes_cached")) else {
        return;
    };
    inc(&h.escape_rounds);
    for (mode, esc) in &sh.modes {
        inc(&h.escape_requests);
        let Some(mut s) = sh.connect(sh.sub) else {
            continue;
        };
        let req = format!("GET /push/esc/{mode}/{chan}.h HTTP/1.1\r\nHost: soak\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut closed = false;
        while wire::find(&buf, esc.marker()).is_none() && Instant::now() < deadline && !closed {
            match wire::read_some(&mut s, &mut buf, &mut tmp) {
                Ok(Got::Eof) | Err(_) => closed = true,
                _ => {}
            }
        }
        if !buf.starts_with(b"HTTP/1.1 200 OK\r\n") || wire::find(&buf, esc.marker()).is_none() {
            bad(
                sh,
                &h.escape_bad,
                format!(
                    "mode {mode}: no {} in {}",
                    wire::show(esc.marker()),
                    wire::show(&buf)
                ),
            );
        }
        if rng_round.is_multiple_of(2) {
            wire::set_linger_zero(&s);
        }
    }
    let peak = stats(sh).and_then(|j| {
        note_stats(sh, &j);
        json_u64(&j, "bytes_cached")
    });
    let peak = peak.unwrap_or(before);
    let grown = peak.saturating_sub(before);
    let allowed = before + (grown / 4).max(1024 * 1024);
    let left = Instant::now();
    let deadline = left + Duration::from_secs(8);
    let mut last = peak;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        if let Some(j) = stats(sh) {
            note_stats(sh, &j);
            if let Some(b) = json_u64(&j, "bytes_cached") {
                last = b;
                if b <= allowed {
                    break;
                }
            }
        }
    }
    let line = format!(
        "bytes_cached before {before}, with {} readers {peak}, {:.1} s after they left {last}",
        sh.modes.len(),
        left.elapsed().as_secs_f64()
    );
    if last > allowed {
        bad(sh, &h.escape_not_returned, format!("{chan}: {line}"));
    }
    let mut worst = h.escape_worst.lock().unwrap();
    if worst.is_empty() || last > allowed {
        *worst = line;
    }
}

/// Items 4 and 5 in turn.
pub fn prober(sh: &Shared) {
    let chan = format!("{}esc", sh.channels[0].name);
    let mut round = 0u64;
    while !sh.draining() && round < 100_000 {
        round += 1;
        aliases(sh);
        if !sh.modes.is_empty() {
            escapes(sh, &chan, round);
        }
        nap(Duration::from_secs(1), &sh.draining);
    }
}

// ---------------------------------------------------------------------------
// Item 8: a controller that never reads
// ---------------------------------------------------------------------------

/// Whether the peer has closed or reset (POLLRDHUP, POLLHUP, POLLERR), or a
/// write fails.
fn peer_gone(s: &mut TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a socket we own.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
        return true;
    }
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    match s.write(b"\n") {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        ),
        Ok(n) => n == 0,
    }
}

/// Creates many channels, then pipelines `LISTCHANNELS` without reading.
pub fn nonreader(sh: &Shared) {
    let h = &sh.c.h;
    // Many channels, one short event each.
    if let Some(mut c) = LineClient::open(sh) {
        let base = &sh.channels[0].name;
        for chunk in 0..4 {
            if sh.draining() {
                return;
            }
            let mut batch = String::new();
            for i in 0..500 {
                batch.push_str(&format!("ADDMESSAGE {base}many{} m\n", chunk * 500 + i));
            }
            if c.s.write_all(batch.as_bytes()).is_err() {
                break;
            }
            for _ in 0..500 {
                match c.reply() {
                    Some(r) if r.starts_with("OK\t") => {
                        inc(&sh.c.published_extra);
                        inc(&h.many_channels);
                    }
                    _ => break,
                }
            }
        }
    }
    let mut round = 0u64;
    while !sh.draining() && round < 10_000 {
        round += 1;
        let mut s = match wire::connect_small_rcvbuf(sh.ctl) {
            Ok(s) => s,
            Err(e) => {
                sh.problem(format!("non-reader: connect: {e}"));
                nap(Duration::from_secs(1), &sh.draining);
                continue;
            }
        };
        inc(&sh.c.connections);
        inc(&h.nonreader_rounds);
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let chunk = "LISTCHANNELS\n".repeat(100);
        let until = Instant::now() + Duration::from_secs(10);
        let mut stalled = false;
        let mut sent = 0u64;
        while Instant::now() < until && sent < 8_000_000 && !sh.draining() {
            match s.write(chunk.as_bytes()) {
                Ok(n) => sent += n as u64,
                Err(_) => {
                    stalled = true;
                    break;
                }
            }
        }
        h.nonreader_commands.fetch_add(sent / 13, Ordering::Relaxed);
        if stalled {
            inc(&h.nonreader_stalled);
        }
        // Hold it, unread, and see whether the server closes it.
        let hold = Instant::now() + Duration::from_secs(15);
        let mut closed = false;
        while Instant::now() < hold && !sh.draining() {
            if peer_gone(&mut s) {
                closed = true;
                break;
            }
            thread::sleep(Duration::from_millis(500));
        }
        if closed {
            inc(&h.nonreader_closed);
        } else {
            inc(&h.nonreader_open);
        }
        wire::set_linger_zero(&s);
        drop(s);
        nap(Duration::from_secs(2), &sh.draining);
    }
}

// ---------------------------------------------------------------------------
// Item 10: a pipelining publisher
// ---------------------------------------------------------------------------

/// Publishes `events` 1 KB events without waiting for the OKs to a channel
/// that `readers` streaming readers follow; each must get every one.
pub fn pipeliner(sh: &Shared, chan: usize, readers: usize, events: u64) {
    let h = &sh.c.h;
    let mut round = 0u64;
    while !sh.draining() && round < 10_000 {
        round += 1;
        inc(&h.pipe_rounds);
        let name = sh.channels[chan].name.clone();
        let ready = AtomicU64::new(0);
        let published_all = std::sync::atomic::AtomicBool::new(false);
        thread::scope(|scope| {
            let mut handles = Vec::new();
            for r in 0..readers {
                let (ready, published_all) = (&ready, &published_all);
                handles.push(
                    scope.spawn(move || pipe_reader(sh, chan, r, round, ready, published_all)),
                );
            }
            let wait_until = Instant::now() + Duration::from_secs(5);
            while ready.load(Ordering::Relaxed) < readers as u64 && Instant::now() < wait_until {
                thread::sleep(Duration::from_millis(20));
            }
            pipe_publish(sh, chan, &name, events);
            published_all.store(true, Ordering::Relaxed);
            for hd in handles {
                let _ = hd.join();
            }
        });
        nap(Duration::from_secs(2), &sh.draining);
    }
}

fn pipe_publish(sh: &Shared, chan: usize, name: &str, events: u64) {
    let h = &sh.c.h;
    let Some(mut c) = LineClient::open(sh) else {
        return;
    };
    let ch = &sh.channels[chan];
    let (first_seq, _) = ch.snapshot();
    let Ok(mut w) = c.s.try_clone() else {
        return;
    };
    let name = name.to_owned();
    thread::scope(|scope| {
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(64 * 1024);
            for k in 1..=events {
                let seq = first_seq + k;
                let mut t = format!("{seq}.");
                t.extend(std::iter::repeat_n('p', 1024 - t.len()));
                let _ = writeln!(batch, "ADDMESSAGE {name} {t}");
                if batch.len() > 60 * 1024 || k == events {
                    if w.write_all(&batch).is_err() {
                        return;
                    }
                    batch.clear();
                }
            }
        });
        for k in 1..=events {
            let seq = first_seq + k;
            match c.reply() {
                Some(r) if r.starts_with("OK\t") => match r[3..].parse::<u64>() {
                    Ok(id) => {
                        *ch.state.lock().unwrap() = (seq, id);
                        inc(&sh.c.published_extra);
                        inc(&h.pipe_events);
                    }
                    Err(_) => {
                        ch.unacked.lock().unwrap().push(seq);
                        let id = ch.snapshot().1;
                        *ch.state.lock().unwrap() = (seq, id);
                        inc(&h.pipe_publish_failed);
                    }
                },
                other => {
                    sh.problem(format!("pipelined ADDMESSAGE answered {other:?}"));
                    inc(&h.pipe_publish_failed);
                    // The rest are not acknowledged.
                    let mut un = ch.unacked.lock().unwrap();
                    for s in seq..=first_seq + events {
                        un.push(s);
                    }
                    drop(un);
                    let id = ch.snapshot().1;
                    *ch.state.lock().unwrap() = (first_seq + events, id);
                    let _ = c.s.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
    });
}

fn pipe_reader(
    sh: &Shared,
    chan: usize,
    r: usize,
    round: u64,
    ready: &AtomicU64,
    published_all: &std::sync::atomic::AtomicBool,
) {
    let h = &sh.c.h;
    let who = format!("pipe reader {r}.{round}");
    let mut track = Track::new(sh, vec![chan]);
    inc(&h.pipe_readers);
    let Some(mut s) = sh.connect(sh.sub) else {
        ready.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let req = format!(
        "GET /push/pipe{r}/xhrinteractive/{} HTTP/1.1\r\nHost: soak\r\n\r\n",
        track.defs(sh)
    );
    if s.write_all(req.as_bytes()).is_err() {
        ready.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut rd = StreamReader::new(s);
    let mut counted_ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut drain_end: Option<Instant> = None;
    loop {
        if !counted_ready && (rd.head_done || Instant::now() + Duration::from_secs(55) > deadline) {
            counted_ready = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
        if published_all.load(Ordering::Relaxed) {
            if track.caught_up(sh) {
                break;
            }
            let end = *drain_end.get_or_insert_with(|| Instant::now() + Duration::from_secs(20));
            if Instant::now() >= end {
                break;
            }
        }
        if Instant::now() >= deadline || sh.stopping() {
            break;
        }
        match rd.step(sh, &who, Kind::Pipe, &mut track) {
            Read::Progress => {}
            Read::Closed => {
                inc(&h.pipe_readers_dropped);
                sh.problem(format!("{who}: closed by the server (dropped)"));
                break;
            }
            Read::Failed(e) => {
                inc(&sh.c.bad_replies);
                sh.problem(format!("{who}: {e}"));
                break;
            }
        }
    }
    if !counted_ready {
        ready.fetch_add(1, Ordering::Relaxed);
    }
    // What it never got: the server dropped it or it ran out of time.
    let missing = track.missing(sh);
    if missing > 0 {
        h.pipe_missing.fetch_add(missing, Ordering::Relaxed);
    }
}
