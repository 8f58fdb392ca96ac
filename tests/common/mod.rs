//! Black-box harness for the meteord integration tests.
//!
//! Starts the real binary on OS-chosen loopback ports, learns the ports from
//! its startup log lines, and offers small clients for the controller line
//! protocol and the subscriber HTTP port. Only std is used. Nothing here
//! sleeps to synchronise: every wait is a read with a deadline.
//!
//! The server run is the binary cargo built, unless the environment
//! variable `METEORD_TEST_BINARY` names another command: its value is split
//! on whitespace into a program and leading arguments, so that
//! `METEORD_TEST_BINARY="qemu-aarch64 target/dist/meteord-aarch64"` runs a
//! cross-built release binary under qemu user-mode emulation for every
//! suite (see `tools/ci_release.sh`). The waits below leave room for the
//! emulator's slower start and execution.

#![allow(dead_code)]

pub mod browser;
pub mod fake_redis;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default wait for bytes that should arrive promptly.
pub const WAIT: Duration = Duration::from_secs(5);

/// The program name the server reports in `Server:` and `~server~`.
pub const PROGRAM: &str = "meteord";

/// The default HeaderTemplate (README, key table), rendered with `status`.
pub fn default_header(status: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: text/html; charset=utf-8\r\n\
         Pragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Expires: Thu, 1 Jan 1970 00:00:00 GMT\r\n\r\n"
    )
}

/// The exact head of a static document reply.
pub fn document_head(status: &str, content_type: &str, len: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: {content_type}; charset=utf-8\r\n\
         Pragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Expires: Thu, 1 Jan 1970 00:00:00 GMT\r\nContent-length: {len}\r\n\r\n"
    )
}

/// The exact static 404 reply.
pub fn document_404() -> String {
    document_head("404 Not Found", "text/html", 0)
}

/// One mode section of [`TEST_CONF`]: `[name]`, the `settings` lines, then
/// the test templates, shutdown message and ping message.
macro_rules! test_mode {
    ($name:literal, $settings:literal) => {
        concat!(
            "[",
            $name,
            "]\n",
            $settings,
            "HeaderTemplate HDR ~status~\\n\n",
            "MessageTemplate ~id~:~channel~:~text~\\n\n",
            "SubscriberShutdownMsg BYE\\n\n",
            "PingMessage PING\\n\n",
        )
    };
}

/// A configuration with a few modes whose templates are easy to assert on.
///
/// * `stream`: persistent, header `HDR <status>\n`, message `<id>:<channel>:<text>\n`,
///   shutdown `BYE\n`, ping `PING\n`.
/// * `poll`: same templates, `Persist 0`.
/// * `long`: same templates, `Persist 1`, `MaxMessages 1`.
pub const TEST_CONF: &str = concat!(
    "# test configuration\n",
    test_mode!("stream", "Persist 1\n"),
    "\n",
    test_mode!("poll", "Persist 0\n"),
    "\n",
    test_mode!("long", "Persist 1\nMaxMessages 1\n"),
);

/// The header the modes of [`TEST_CONF`] send with 200.
pub const HDR_OK: &str = "HDR 200 OK\n";

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs()
}

/// Render bytes readably in assertion messages.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "meteord-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// The words that run meteord: `METEORD_TEST_BINARY` split on whitespace
/// when it is set and not blank (an emulator and a cross-built binary, say),
/// else the binary cargo built for these tests.
pub fn binary() -> &'static [String] {
    static WORDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| {
        let words: Vec<String> = std::env::var("METEORD_TEST_BINARY")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if words.is_empty() {
            vec![env!("CARGO_BIN_EXE_meteord").to_owned()]
        } else {
            words
        }
    })
}

/// A running meteord. Dropping it kills the process; the drop fails the
/// test when the server had exited on its own (without the test saying it
/// expects that through [`Server::wait_exit`] / [`Server::expect_exit`]) or
/// when its standard error shows a panic.
pub struct Server {
    child: Child,
    pub sub_addr: SocketAddr,
    pub ctl_addr: SocketAddr,
    pub docroot: PathBuf,
    pub conf_path: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: TempDir,
    /// The test made the server exit on purpose (a signal, say).
    exit_expected: bool,
    /// Disconnected once the stderr reader has seen end of file.
    log_lines: mpsc::Receiver<String>,
}

/// The socket address in the word after `marker` in `line`.
pub fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let i = line.find(marker)?;
    let rest = &line[i + marker.len()..];
    let word = rest.split_whitespace().next()?;
    word.parse().ok()
}

impl Server {
    /// Start meteord with the standard test arguments, `conf` as its
    /// configuration file and `extra` appended to the command line.
    pub fn start(extra: &[&str], conf: &str) -> Server {
        match Server::try_start(extra, conf) {
            Ok(s) => s,
            Err(e) => panic!("meteord did not start: {e}"),
        }
    }

    /// Start with [`TEST_CONF`].
    pub fn start_test(extra: &[&str]) -> Server {
        Server::start(extra, TEST_CONF)
    }

    pub fn try_start(extra: &[&str], conf: &str) -> Result<Server, String> {
        let dir = TempDir::new("srv");
        let conf_path = dir.join("meteord.conf");
        std::fs::write(&conf_path, conf).expect("write config");
        let docroot = dir.join("docroot");
        std::fs::create_dir_all(&docroot).expect("create docroot");
        let args = std_args(&conf_path, &docroot, extra);
        let cwd = dir.path.clone();
        Server::launch(&args, &cwd, dir, conf_path, docroot)
    }

    /// Starts meteord with exactly `args` in the working directory `cwd`;
    /// `dir` (holding `conf_path` and `docroot`) lives as long as the server.
    pub fn launch(
        args: &[String],
        cwd: &Path,
        dir: TempDir,
        conf_path: PathBuf,
        docroot: PathBuf,
    ) -> Result<Server, String> {
        let mut child = piped_stderr_command(binary(), args, cwd)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary().join(" ")))?;
        let (logs, rx) = collect_lines(child.stderr.take().expect("stderr piped"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sub = None;
        let mut ctl = None;
        while sub.is_none() || ctl.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = address_after(&line, "listening for subscribers on ") {
                        sub = Some(a);
                    }
                    if let Some(a) = address_after(&line, "listening for controllers on ") {
                        ctl = Some(a);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let got = logs.lock().unwrap().join("\n");
                    return Err(format!(
                        "no 'listening for ...' lines within 10 s (exit: {status:?}); stderr:\n{got}"
                    ));
                }
            }
        }
        Ok(Server {
            child,
            sub_addr: sub.unwrap(),
            ctl_addr: ctl.unwrap(),
            docroot,
            conf_path,
            logs,
            dir,
            exit_expected: false,
            log_lines: rx,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`"USR1"`, `"HUP"`, `"TERM"`, ...) to the server process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} failed");
    }

    /// Wait for the process to exit, up to `timeout`. Calling this says the
    /// test makes the server exit on purpose: dropping it after it exited is
    /// then no failure.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.exit_expected = true;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the exit the test caused (see [`Server::wait_exit`]);
    /// panics when the server is still running after `timeout`.
    pub fn expect_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!("meteord still running {timeout:?} after it was told to exit")
        })
    }

    /// Is the server process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until a log line satisfying `pred` appears.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ctl(&self) -> Controller {
        Controller::connect(self.ctl_addr)
    }

    /// Open a subscriber-port connection without sending anything.
    pub fn connect_sub(&self) -> Conn {
        Conn::connect(self.sub_addr)
    }

    /// Send a raw request on a new subscriber-port connection.
    pub fn request(&self, raw: &[u8]) -> Conn {
        let mut c = self.connect_sub();
        c.send(raw);
        c
    }

    /// `GET <path> HTTP/1.1` with a couple of ordinary header lines.
    pub fn http_get(&self, path: &str) -> Conn {
        self.request(get_request(path).as_bytes())
    }

    /// Start a subscription and wait until `header` (the rendered header
    /// template, proof that the subscriber is registered) has arrived.
    pub fn subscribe(&self, path: &str, header: &str) -> Conn {
        let mut c = self.http_get(path);
        c.expect(header.as_bytes());
        c
    }

    pub fn write_doc(&self, rel: &str, content: &[u8]) {
        let p = self.docroot.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write doc");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Did it exit before we kill it?
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The process is gone: its standard error ends, and the reader
        // thread then drops its sender (bounded, in case something else
        // still holds the pipe).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log_lines.recv_timeout(left) {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if thread::panicking() {
            // The test already failed; a second panic would abort.
            return;
        }
        let logs = self.logs();
        let tail = || logs[logs.len().saturating_sub(40)..].join("\n");
        if let Some(at) = logs.iter().position(|l| l.contains("panicked")) {
            panic!(
                "meteord panicked during the test:\n{}\nlog (last 40 lines):\n{}",
                logs[at..logs.len().min(at + 5)].join("\n"),
                tail()
            );
        }
        if let Some(status) = exited
            && !self.exit_expected
        {
            panic!(
                "meteord exited during the test ({status}) without the test expecting it \
                 (Server::wait_exit / expect_exit); log (last 40 lines):\n{}",
                tail()
            );
        }
    }
}

pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: meteord-tests\r\n\r\n")
}

/// Run meteord to completion (for option errors, `-v`, `-help`).
pub struct RunResult {
    /// `None` when it had not exited within the timeout (it was killed).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_meteord(args: &[&str], timeout: Duration) -> RunResult {
    let dir = TempDir::new("run");
    let mut child = Command::new(&binary()[0])
        .args(&binary()[1..])
        .args(args)
        .current_dir(&dir.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meteord");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    RunResult {
        code,
        stdout,
        stderr,
    }
}

/// A command for `command` (a program and its leading arguments, like
/// [`binary`]) with `args`, run in `cwd`, with no standard input,
/// standard output discarded and standard error piped.
pub fn piped_stderr_command(command: &[String], args: &[String], cwd: &Path) -> Command {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Reads `r` line by line on a thread until it ends: each line, without its
/// line end, is kept in the returned list and sent to the receiver (which
/// may be dropped).
pub fn collect_lines(
    r: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    {
        let lines = lines.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        lines.lock().unwrap().push(s.clone());
                        let _ = tx.send(s);
                    }
                }
            }
        });
    }
    (lines, rx)
}

/// The arguments for a server on loopback with ports 0, `conf` and
/// `docroot`, and no syslog facility chosen.
pub fn base_args(conf: &Path, docroot: &Path) -> Vec<String> {
    vec![
        "-ConfigFileLocation".into(),
        conf.to_string_lossy().into_owned(),
        "-SubscriberIP".into(),
        "127.0.0.1".into(),
        "-SubscriberPort".into(),
        "0".into(),
        "-ControllerPort".into(),
        "0".into(),
        "-SubscriberDocumentRoot".into(),
        docroot.to_string_lossy().into_owned(),
    ]
}

/// The standard arguments (ports 0, loopback, syslog none) plus `extra`,
/// for runs that are expected to exit on their own.
pub fn std_args(conf: &Path, docroot: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = base_args(conf, docroot);
    v.extend(["-SyslogFacility".into(), "none".into()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

// ---------------------------------------------------------------------------
// A byte-exact client connection
// ---------------------------------------------------------------------------

/// A TCP connection with a receive buffer of bytes not yet consumed.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub closed: bool,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::from_stream(TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
    }

    /// A connected stream, set up as [`Conn::connect`] does.
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
        Conn {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
        self.stream.flush().ok();
    }

    /// Like `send`, but a failed write (the server closed) is not an error.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// One read into the buffer, waiting at most until `deadline`.
    /// Ok(0) = closed by the peer (a reset counts as closed).
    /// Err(TimedOut) = nothing arrived in time.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.closed {
            return Ok(0);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline"));
        }
        self.stream.set_read_timeout(Some(left)).ok();
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline"));
                }
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionReset
                        || e.kind() == io::ErrorKind::ConnectionAborted
                        || e.kind() == io::ErrorKind::BrokenPipe =>
                {
                    self.closed = true;
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read until `needle` is in the buffer; consume and return everything up
    /// to and including it.
    pub fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.buf, needle) {
                let end = i + needle.len();
                return Ok(self.buf.drain(..end).collect());
            }
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed before {:?} arrived; got {:?}",
                        show(needle),
                        show(&self.buf)
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{:?} did not arrive within {timeout:?}; got {:?}",
                        show(needle),
                        show(&self.buf)
                    ));
                }
            }
        }
    }

    /// Read exactly `n` bytes (consumed).
    pub fn read_exact_n(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed after {:?}, wanted {n} bytes",
                        show(&self.buf)
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "only {:?} within {timeout:?}, wanted {n} bytes",
                        show(&self.buf)
                    ));
                }
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Assert the next bytes are exactly `exact` (consumed).
    pub fn expect(&mut self, exact: &[u8]) {
        self.expect_within(exact, WAIT);
    }

    pub fn expect_within(&mut self, exact: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.buf.len().min(exact.len());
            if self.buf[..n] != exact[..n] {
                panic!(
                    "unexpected bytes:\n  expected {:?}\n  got      {:?}",
                    show(exact),
                    show(&self.buf)
                );
            }
            if self.buf.len() >= exact.len() {
                self.buf.drain(..exact.len());
                return;
            }
            match self.fill(deadline) {
                Ok(0) => panic!(
                    "connection closed:\n  expected {:?}\n  got      {:?} then EOF",
                    show(exact),
                    show(&self.buf)
                ),
                Ok(_) => {}
                Err(_) => panic!(
                    "timed out after {timeout:?}:\n  expected {:?}\n  got      {:?}",
                    show(exact),
                    show(&self.buf)
                ),
            }
        }
    }

    pub fn expect_str(&mut self, exact: &str) {
        self.expect(exact.as_bytes());
    }

    /// Everything until the server closes the connection (buffered bytes
    /// included). Panics when it is not closed within `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) -> Vec<u8> {
        match self.read_to_end_with_deadline(Instant::now() + timeout) {
            Ok(v) => v,
            Err(v) => panic!(
                "connection not closed within {timeout:?}; got {:?}",
                show(&v)
            ),
        }
    }

    /// Ok(all bytes) on EOF, Err(bytes so far) on deadline.
    pub fn read_to_end_with_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>, Vec<u8>> {
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(_) => return Err(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Assert that the server closes the connection with nothing more sent.
    pub fn expect_eof(&mut self) {
        let rest = self.read_to_end(WAIT);
        assert!(
            rest.is_empty(),
            "expected the connection to close, got {:?} first",
            show(&rest)
        );
    }

    /// Assert nothing arrives (and the connection stays open) for `dur`.
    pub fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            if !self.buf.is_empty() {
                panic!("expected silence, got {:?}", show(&self.buf));
            }
            match self.fill(deadline) {
                Ok(0) => panic!("expected silence, but the connection was closed"),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Whatever arrives within `dur` (consumed); stops early on EOF.
    pub fn read_for(&mut self, dur: Duration) -> Vec<u8> {
        let deadline = Instant::now() + dur;
        while let Ok(n) = self.fill(deadline) {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Read one `\r\n`-terminated line; returns it without the terminator.
    pub fn read_crlf_line(&mut self) -> String {
        let line = self
            .read_until(b"\r\n", WAIT)
            .unwrap_or_else(|e| panic!("reading a reply line: {e}"));
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    }
}

/// A connection whose receive buffer is set to `rcvbuf` bytes (or as small
/// as the kernel allows) before connecting, so that a server writing to it
/// blocks after a few kilobytes whatever the host's TCP autotuning does.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: libc::c_int) -> Conn {
    connect_with(addr, Some(rcvbuf), None)
}

/// Connects from the loopback address `source` (any of 127.0.0.0/8), so
/// that a test can act as several client addresses.
pub fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> Conn {
    assert!(source.is_loopback(), "tests only use loopback: {source}");
    connect_with(addr, None, Some(source))
}

fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking IPv4 connection, with a receive buffer size and a source
/// address when given.
fn connect_with(
    addr: SocketAddr,
    rcvbuf: Option<libc::c_int>,
    source: Option<std::net::Ipv4Addr>,
) -> Conn {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected: {addr}")
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; the structures
    // are fully initialised and sized for the calls; the descriptor is
    // handed to a TcpStream, which closes it.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        if let Some(rcvbuf) = rcvbuf {
            let r = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &rcvbuf as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        }
        if let Some(source) = source {
            let sin = sockaddr(source, 0);
            let r = libc::bind(
                fd,
                &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                len,
            );
            assert_eq!(r, 0, "bind {source}: {}", std::io::Error::last_os_error());
        }
        let sin = sockaddr(*v4.ip(), v4.port());
        let r = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    };
    Conn::from_stream(stream)
}

// ---------------------------------------------------------------------------
// Controller client
// ---------------------------------------------------------------------------

pub struct Controller {
    pub conn: Conn,
}

impl Controller {
    pub fn connect(addr: SocketAddr) -> Controller {
        Controller {
            conn: Conn::connect(addr),
        }
    }

    pub fn send(&mut self, s: &str) {
        self.conn.send(s.as_bytes());
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.conn.send(b);
    }

    /// One reply line, without its `\r\n` (which must be there).
    pub fn read_reply_line(&mut self) -> String {
        self.conn.read_crlf_line()
    }

    /// Send `line` plus `\n`, return the one-line reply without `\r\n`.
    pub fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n"));
        self.read_reply_line()
    }

    /// Everything up to and including `--EOT--\r\n`, raw.
    pub fn read_until_eot(&mut self) -> String {
        let v = self
            .conn
            .read_until(b"--EOT--\r\n", WAIT)
            .unwrap_or_else(|e| panic!("reading a multi-line reply: {e}"));
        String::from_utf8(v).expect("utf-8 reply")
    }

    /// Send a command with a multi-line reply; return the raw reply.
    pub fn multi(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n"));
        self.read_until_eot()
    }

    /// ADDMESSAGE; asserts `OK\t<id>` and returns the id.
    pub fn add(&mut self, channel: &str, text: &str) -> u64 {
        let r = self.command(&format!("ADDMESSAGE {channel} {text}"));
        parse_ok_id(&r)
    }

    /// Publish many messages in one write and collect the ids.
    pub fn add_many(&mut self, channel: &str, texts: &[String]) -> Vec<u64> {
        let mut s = String::new();
        for t in texts {
            s.push_str(&format!("ADDMESSAGE {channel} {t}\n"));
        }
        self.send(&s);
        texts
            .iter()
            .map(|_| {
                let r = self.read_reply_line();
                parse_ok_id(&r)
            })
            .collect()
    }

    pub fn count(&mut self, channel: &str) -> u64 {
        let r = self.command(&format!("COUNTSUBSCRIBERS {channel}"));
        let n = r
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("COUNTSUBSCRIBERS reply {:?}", r));
        n.parse()
            .unwrap_or_else(|_| panic!("COUNTSUBSCRIBERS reply {:?}", r))
    }

    /// Poll COUNTSUBSCRIBERS until it equals `n` (bounded); returns the last value.
    pub fn wait_count(&mut self, channel: &str, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count(channel);
            if c == n || Instant::now() >= deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn list(&mut self) -> String {
        self.multi("LISTCHANNELS")
    }

    /// Poll LISTCHANNELS until it equals `expected` (bounded); returns the last.
    pub fn wait_list(&mut self, expected: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.list();
            if l == expected || Instant::now() >= deadline {
                return l;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SHOWSTATS as (key, value) pairs in order, after checking the framing.
    pub fn stats(&mut self) -> Vec<(String, u64)> {
        let raw = self.multi("SHOWSTATS");
        parse_stats(&raw)
    }

    pub fn stat(&mut self, key: &str) -> u64 {
        self.stats()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in SHOWSTATS"))
            .1
    }

    /// Poll one counter until `pred` holds (bounded); returns the last value.
    pub fn wait_stat(&mut self, key: &str, timeout: Duration, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stat(key);
            if pred(v) || Instant::now() >= deadline {
                return v;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP request on the controller port; everything until it closes.
pub fn control_http(s: &Server, raw: impl AsRef<[u8]>) -> String {
    let mut c = Conn::connect(s.ctl_addr);
    c.send(raw.as_ref());
    String::from_utf8_lossy(&c.read_to_end(Duration::from_secs(30))).into_owned()
}

/// A whole number in a flat JSON object (`/stats`).
pub fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[i + pat.len()..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0, |n, d| n * 10 + u64::from(d - b'0'))
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"))
}

pub fn parse_ok_id(r: &str) -> u64 {
    let id = r
        .strip_prefix("OK\t")
        .unwrap_or_else(|| panic!("ADDMESSAGE reply {:?}, expected OK\\t<id>", r));
    id.parse()
        .unwrap_or_else(|_| panic!("ADDMESSAGE reply {:?}: id is not a number", r))
}

pub const STAT_KEYS: [&str; 12] = [
    "total_requests",
    "current_subscribers",
    "subscriber_connections_accepted",
    "current_controllers",
    "controller_connections_accepted",
    "unique_messages",
    "messages_served",
    "total_inbound_bytes",
    "total_outbound_bytes",
    "documents_served",
    "documents_not_found",
    "errors_served",
];

/// Check the exact SHOWSTATS framing and return the key/value pairs.
pub fn parse_stats(raw: &str) -> Vec<(String, u64)> {
    assert!(raw.starts_with("OK\r\n"), "SHOWSTATS reply {:?}", raw);
    assert!(raw.ends_with("--EOT--\r\n"), "SHOWSTATS reply {:?}", raw);
    let body = &raw["OK\r\n".len()..raw.len() - "--EOT--\r\n".len()];
    assert!(body.ends_with("\r\n"), "SHOWSTATS reply {:?}", raw);
    let lines: Vec<&str> = body[..body.len() - 2].split("\r\n").collect();
    let mut expected_keys = vec!["uptime", "channel_count"];
    expected_keys.extend(STAT_KEYS);
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(keys, expected_keys, "SHOWSTATS keys/order in {:?}", raw);
    lines
        .iter()
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad SHOWSTATS line {:?}", l));
            let v: u64 = v
                .parse()
                .unwrap_or_else(|_| panic!("bad SHOWSTATS value in {:?}", l));
            (k.to_string(), v)
        })
        .collect()
}

/// Poll `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Render messages the way the test modes' `~id~:~channel~:~text~\n` does.
pub fn msgs(items: &[(u64, &str, &str)]) -> String {
    items
        .iter()
        .map(|(id, ch, text)| format!("{id}:{ch}:{text}\n"))
        .collect()
}
