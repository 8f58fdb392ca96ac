//! Issue 5, running it for real: signals (HUP, USR1, USR2, TERM, INT and the
//! drain timeout), the process (detaching, pid file, NOTIFY_SOCKET, the
//! open-file limit), logging (syslog over a datagram socket the test binds,
//! the tab-separated records field by field, LogTimeFormat, debug lines),
//! UDP, and HTTP on the controller port (every endpoint and its errors, the
//! Prometheus text format checked by a parser written here).
//!
//! Every wait is a read with a deadline, or a bounded poll of something the
//! server reports (its log, LISTCHANNELS, a pid file).

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ===========================================================================
// Helpers
// ===========================================================================

/// A configuration file with streaming modes whose templates say which
/// configuration rendered them.
fn conf_tagged(tag: &str) -> String {
    format!(
        "[stream]\nPersist 1\nHeaderTemplate {tag} ~status~\\n\n\
         MessageTemplate {tag}:~id~:~channel~:~text~\\n\nSubscriberShutdownMsg BYE\\n\n\
         PingInterval 0\n\
         [alt]\nPersist 1\nHeaderTemplate {tag} ~status~\\n\n\
         MessageTemplate {tag}:~id~:~channel~:~text~\\n\nSubscriberShutdownMsg ALTBYE\\n\n\
         PingInterval 0\n\
         [poll]\nPersist 0\nHeaderTemplate {tag} ~status~\\n\n\
         MessageTemplate {tag}:~id~:~channel~:~text~\\n\n"
    )
}

fn wait_log_or_panic(s: &Server, what: &str, pred: impl Fn(&str) -> bool) -> String {
    s.wait_log(WAIT, pred).unwrap_or_else(|| {
        panic!(
            "no log line {what} within {WAIT:?}; log:\n{}",
            s.logs().join("\n")
        )
    })
}

/// Number of log lines satisfying `pred` so far.
fn count_logs(s: &Server, pred: impl Fn(&str) -> bool) -> usize {
    s.logs().iter().filter(|l| pred(l)).count()
}

/// Waits for the `n`-th log line satisfying `pred` (1-based).
fn wait_nth_log(s: &Server, n: usize, what: &str, pred: impl Fn(&str) -> bool) {
    let ok = eventually(WAIT, || count_logs(s, &pred) >= n);
    assert!(
        ok,
        "log line #{n} {what} did not appear; log:\n{}",
        s.logs().join("\n")
    );
}

fn poll_all(s: &Server, path: &str) -> String {
    String::from_utf8_lossy(&s.http_get(path).read_to_end(WAIT)).into_owned()
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    if !exists {
        return false;
    }
    // A zombie (exited, not yet reaped by its new parent) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next().unwrap_or('?'));
            state != Some('Z')
        }
        Err(_) => false,
    }
}

fn send_signal(pid: i32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a process this test started.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// A meteord process started by hand (for syslog, detaching, NOTIFY_SOCKET),
/// its standard error collected line by line.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[String], env: &[(&str, &str)], cwd: &Path) -> Proc {
        let mut cmd = piped_stderr_command(binary(), args, cwd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start(cmd)
    }

    fn start(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("spawn meteord");
        let (stderr, _) = collect_lines(child.stderr.take().unwrap());
        Proc { child, stderr }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_stderr(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let found = || self.stderr().into_iter().find(|l| pred(l));
        let mut got = None;
        eventually(timeout, || {
            got = found();
            got.is_some()
        });
        got
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut st = None;
        eventually(timeout, || {
            st = self.child.try_wait().ok().flatten();
            st.is_some()
        });
        st
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // These processes may exit on purpose (detaching), but a panic
        // logged on standard error always fails the test.
        if !thread::panicking() && self.stderr().iter().any(|l| l.contains("panicked")) {
            panic!("meteord panicked: {:#?}", self.stderr());
        }
    }
}

/// A syslog daemon stand-in: a datagram socket bound by the test, every
/// datagram kept as a string.
struct Syslog {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Syslog {
    fn bind(path: PathBuf) -> Syslog {
        let sock = UnixDatagram::bind(&path).expect("bind syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let lines = lines.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        lines
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
            });
        }
        Syslog { path, lines, stop }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut got = None;
        eventually(WAIT, || {
            got = self.lines().into_iter().find(|l| pred(l));
            got.is_some()
        });
        got.unwrap_or_else(|| {
            panic!(
                "no syslog datagram {what} within {WAIT:?}; got:\n{}",
                self.lines().join("\n")
            )
        })
    }

    /// The message part of every well-formed datagram.
    fn messages(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| parse_syslog(l).unwrap_or_else(|e| panic!("{e}")).message)
            .collect()
    }

    fn wait_message(&self, what: &str, pred: impl Fn(&str) -> bool) -> SyslogLine {
        let line = self.wait(what, |l| parse_syslog(l).is_ok_and(|p| pred(&p.message)));
        parse_syslog(&line).unwrap()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct SyslogLine {
    pri: u32,
    pid: u32,
    message: String,
}

/// Parses `<PRI>Mmm dd hh:mm:ss meteord[pid]: message` strictly (RFC 3164).
fn parse_syslog(line: &str) -> Result<SyslogLine, String> {
    let bad = |why: &str| format!("malformed syslog datagram ({why}): {line:?}");
    let rest = line.strip_prefix('<').ok_or_else(|| bad("no <"))?;
    let (pri, rest) = rest.split_once('>').ok_or_else(|| bad("no >"))?;
    if pri.is_empty() || pri.len() > 3 || !pri.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("PRI"));
    }
    let pri: u32 = pri.parse().map_err(|_| bad("PRI"))?;
    if pri > 191 {
        return Err(bad("PRI over 191"));
    }
    let ts = rest.get(..15).ok_or_else(|| bad("short timestamp"))?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = ts.as_bytes();
    let day_ok = (b[4] == b' ' || (b'1'..=b'3').contains(&b[4])) && b[5].is_ascii_digit();
    let day: u32 = ts[4..6].trim().parse().unwrap_or(0);
    let time_ok = [7, 8, 10, 11, 13, 14]
        .iter()
        .all(|&i| b[i].is_ascii_digit())
        && b[9] == b':'
        && b[12] == b':';
    if !months.contains(&&ts[..3])
        || b[3] != b' '
        || !day_ok
        || !(1..=31).contains(&day)
        || b[6] != b' '
        || !time_ok
    {
        return Err(bad("timestamp"));
    }
    let (h, m, s): (u32, u32, u32) = (
        ts[7..9].parse().unwrap(),
        ts[10..12].parse().unwrap(),
        ts[13..15].parse().unwrap(),
    );
    if h > 23 || m > 59 || s > 60 {
        return Err(bad("time of day"));
    }
    let rest = rest[15..]
        .strip_prefix(" meteord[")
        .ok_or_else(|| bad("tag"))?;
    let (pid, message) = rest.split_once("]: ").ok_or_else(|| bad("pid"))?;
    let pid: u32 = pid.parse().map_err(|_| bad("pid"))?;
    Ok(SyslogLine {
        pri,
        pid,
        message: message.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// HTTP on the controller port
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http_req(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        out.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    out.push_str("\r\n");
    let mut v = out.into_bytes();
    if let Some(b) = body {
        v.extend_from_slice(b);
    }
    v
}

/// Reads one complete response (the body framed by Content-Length).
fn read_resp(c: &mut Conn) -> Resp {
    let head = c
        .read_until(b"\r\n\r\n", WAIT)
        .unwrap_or_else(|e| panic!("reading a response head: {e}"));
    let head = String::from_utf8(head).expect("utf-8 head");
    let mut lines = head.trim_end_matches("\r\n").split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let reason = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {l:?}"));
            (k.to_owned(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let body = c
        .read_exact_n(len, WAIT)
        .unwrap_or_else(|e| panic!("reading a response body: {e}"));
    Resp {
        status,
        reason,
        headers,
        body,
    }
}

fn exchange(c: &mut Conn, raw: &[u8]) -> Resp {
    c.send(raw);
    read_resp(c)
}

fn http(s: &Server) -> Conn {
    Conn::connect(s.ctl_addr)
}

// ---------------------------------------------------------------------------
// A small JSON parser (objects, arrays, strings, numbers, literals)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn num(&self, key: &str) -> f64 {
        match self.get(key) {
            Some(Json::Num(n)) => *n,
            other => panic!("{key}: expected a number, got {other:?} in {self:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(kv) => kv.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

fn parse_json(text: &str) -> Json {
    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && b" \t\r\n".contains(&self.b[self.i]) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            self.ws();
            if self.b.get(self.i) == Some(&c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", c as char, self.i))
            }
        }
        /// From an opening bracket: items parsed by `item`, separated by
        /// commas, up to `close`.
        fn seq(
            &mut self,
            close: u8,
            what: &str,
            mut item: impl FnMut(&mut Self) -> Result<(), String>,
        ) -> Result<(), String> {
            self.i += 1;
            self.ws();
            if self.b.get(self.i) == Some(&close) {
                self.i += 1;
                return Ok(());
            }
            loop {
                item(self)?;
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(&c) if c == close => {
                        self.i += 1;
                        return Ok(());
                    }
                    _ => return Err(format!("bad {what} at {}", self.i)),
                }
            }
        }
        fn value(&mut self) -> Result<Json, String> {
            self.ws();
            match self.b.get(self.i) {
                Some(b'{') => {
                    let mut kv = Vec::new();
                    self.seq(b'}', "object", |p| {
                        p.ws();
                        let Json::Str(k) = p.string()? else {
                            unreachable!()
                        };
                        p.eat(b':')?;
                        let v = p.value()?;
                        kv.push((k, v));
                        Ok(())
                    })?;
                    Ok(Json::Obj(kv))
                }
                Some(b'[') => {
                    let mut items = Vec::new();
                    self.seq(b']', "array", |p| {
                        items.push(p.value()?);
                        Ok(())
                    })?;
                    Ok(Json::Arr(items))
                }
                Some(b'"') => self.string(),
                Some(b't') if self.b[self.i..].starts_with(b"true") => {
                    self.i += 4;
                    Ok(Json::Bool(true))
                }
                Some(b'f') if self.b[self.i..].starts_with(b"false") => {
                    self.i += 5;
                    Ok(Json::Bool(false))
                }
                Some(b'n') if self.b[self.i..].starts_with(b"null") => {
                    self.i += 4;
                    Ok(Json::Null)
                }
                Some(c) if *c == b'-' || c.is_ascii_digit() => {
                    let start = self.i;
                    while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                        self.i += 1;
                    }
                    let s = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                    s.parse()
                        .map(Json::Num)
                        .map_err(|_| format!("bad number {s:?}"))
                }
                _ => Err(format!("unexpected input at {}", self.i)),
            }
        }
        fn string(&mut self) -> Result<Json, String> {
            if self.b.get(self.i) != Some(&b'"') {
                return Err(format!("expected a string at {}", self.i));
            }
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let c = *self.b.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => return Ok(Json::Str(String::from_utf8_lossy(&out).into_owned())),
                    b'\\' => {
                        let e = *self.b.get(self.i).ok_or("bad escape")?;
                        self.i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => out.push(e),
                            b'n' => out.push(b'\n'),
                            b'r' => out.push(b'\r'),
                            b't' => out.push(b'\t'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'u' => {
                                let hex = std::str::from_utf8(&self.b[self.i..self.i + 4])
                                    .map_err(|_| "bad \\u")?;
                                let cp = u32::from_str_radix(hex, 16).map_err(|_| "bad \\u")?;
                                self.i += 4;
                                let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                                out.extend_from_slice(ch.to_string().as_bytes());
                            }
                            _ => return Err("bad escape".into()),
                        }
                    }
                    c if c < 0x20 => return Err("control character in a string".into()),
                    c => out.push(c),
                }
            }
        }
    }
    let mut p = P {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p
        .value()
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {text:?}"));
    p.ws();
    assert_eq!(p.i, p.b.len(), "trailing bytes after JSON: {text:?}");
    v
}

// ---------------------------------------------------------------------------
// A Prometheus text format (0.0.4) checker
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Metrics {
    types: HashMap<String, String>,
    /// (name, sorted labels) -> value
    samples: HashMap<(String, Vec<(String, String)>), f64>,
}

impl Metrics {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.samples.get(&(name.to_owned(), l)).copied()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// Parses and validates a Prometheus text exposition; panics naming the
/// offending line.
fn parse_prometheus(text: &str) -> Metrics {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "exposition does not end with a line feed"
    );
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut samples = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    // A family's lines must be contiguous: moving on to another name ends it.
    let mut enter = |name: &str, n: usize, line: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            assert!(
                !finished.contains(name),
                "line {n}: metric {name} appears again after other metrics: {line:?}"
            );
            *current = Some(name.to_owned());
        }
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("HELP ") {
                let (name, _doc) = r.split_once(' ').unwrap_or((r, ""));
                assert!(is_metric_name(name), "line {n}: bad HELP name: {line:?}");
                assert!(
                    helps.insert(name.to_owned()),
                    "line {n}: second HELP for {name}"
                );
                enter(name, n, line, &mut current);
            } else if let Some(r) = rest.strip_prefix("TYPE ") {
                let mut w = r.split_whitespace();
                let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
                assert!(w.next().is_none(), "line {n}: junk after TYPE: {line:?}");
                assert!(is_metric_name(name), "line {n}: bad TYPE name: {line:?}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "line {n}: bad metric type {kind:?}"
                );
                enter(name, n, line, &mut current);
                assert!(
                    !samples.keys().any(|(s, _): &(String, _)| s == name),
                    "line {n}: TYPE for {name} after its samples"
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "line {n}: second TYPE for {name}"
                );
            }
            // Other comments are allowed and ignored.
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("line {n}: no value: {line:?}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "line {n}: bad metric name: {line:?}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                r = r.trim_start();
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r
                    .find('=')
                    .unwrap_or_else(|| panic!("line {n}: bad label: {line:?}"));
                let lname = r[..eq].trim();
                assert!(is_label_name(lname), "line {n}: bad label name: {line:?}");
                let after = r[eq + 1..].trim_start();
                let body = after
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("line {n}: unquoted label value: {line:?}"));
                let mut value = String::new();
                let mut chars = body.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => panic!("line {n}: bad escape in a label value: {line:?}"),
                        },
                        Some((j, '"')) => break j,
                        Some((_, c)) => value.push(c),
                        None => panic!("line {n}: unterminated label value: {line:?}"),
                    }
                };
                assert!(
                    !labels.iter().any(|(k, _): &(String, String)| k == lname),
                    "line {n}: label {lname} twice"
                );
                labels.push((lname.to_owned(), value));
                r = body[end + 1..].trim_start();
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                } else {
                    assert!(r.starts_with('}'), "line {n}: expected , or }}: {line:?}");
                }
            }
        }
        assert!(
            rest.starts_with(' '),
            "line {n}: no space before the value: {line:?}"
        );
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .unwrap_or_else(|| panic!("line {n}: no value: {line:?}"));
        let value =
            parse_value(value).unwrap_or_else(|| panic!("line {n}: value not numeric: {line:?}"));
        if let Some(ts) = fields.next() {
            assert!(
                ts.parse::<i64>().is_ok(),
                "line {n}: bad timestamp: {line:?}"
            );
        }
        assert!(
            fields.next().is_none(),
            "line {n}: junk after value: {line:?}"
        );
        // The family this sample belongs to must be declared with TYPE.
        let family = if types.contains_key(name) {
            name.to_owned()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|base| {
                    matches!(
                        types.get(*base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                })
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("line {n}: sample of {name} has no TYPE before it"))
        };
        enter(&family, n, line, &mut current);
        let kind = types[&family].as_str();
        if kind == "counter" {
            assert!(value >= 0.0, "line {n}: negative counter: {line:?}");
        }
        labels.sort();
        assert!(
            samples.insert((name.to_owned(), labels), value).is_none(),
            "line {n}: duplicate series: {line:?}"
        );
    }
    for name in types.keys() {
        assert!(
            samples
                .keys()
                .any(|(s, _)| s == name || s.starts_with(name)),
            "TYPE {name} declared without samples"
        );
    }
    Metrics { types, samples }
}

// ===========================================================================
// SIGHUP
// ===========================================================================

#[test]
fn sighup_new_template_for_new_subscribers_old_ones_keep_streaming() {
    let s = Server::start(&[], &conf_tagged("OLD"));
    let mut ctl = s.ctl();
    let mut old = s.subscribe("/push/h1/stream/a", "OLD 200 OK\n");
    assert_eq!(ctl.add("a", "one"), 1);
    old.expect_str("OLD:1:a:one\n");

    std::fs::write(&s.conf_path, conf_tagged("NEW")).unwrap();
    s.signal("HUP");
    wait_log_or_panic(&s, "'SIGHUP: configuration reloaded'", |l| {
        l.contains("SIGHUP: configuration reloaded")
    });

    // New connections get the new templates; the cache is untouched.
    let mut new = s.subscribe("/push/h2/stream/a.h", "NEW 200 OK\n");
    new.expect_str("NEW:1:a:one\n");
    assert_eq!(ctl.add("a", "two"), 2);
    new.expect_str("NEW:2:a:two\n");
    // The connected subscriber keeps its stream and its templates.
    old.expect_str("OLD:2:a:two\n");
    assert_eq!(ctl.list(), "OK\r\na(2/2)\r\n--EOT--\r\n");
    assert_eq!(
        poll_all(&s, "/push/h3/poll/a.h"),
        "NEW 200 OK\nNEW:1:a:one\nNEW:2:a:two\n"
    );
    old.expect_silence(Duration::from_millis(100));
}

/// `MaxSubscribers` from a reloaded file applies to new connections: the
/// subscribers already connected stay, new ones over the new limit get 503.
#[test]
fn sighup_applies_max_subscribers_to_new_connections() {
    let conf = format!("MaxSubscribers 3\n{}", conf_tagged("OLD"));
    let s = Server::start(&[], &conf);
    let mut ctl = s.ctl();
    let mut a = s.subscribe("/push/h1/stream/a", "OLD 200 OK\n");
    let mut b = s.subscribe("/push/h2/stream/a", "OLD 200 OK\n");
    std::fs::write(
        &s.conf_path,
        format!("MaxSubscribers 1\n{}", conf_tagged("OLD")),
    )
    .unwrap();
    s.signal("HUP");
    let line = wait_log_or_panic(&s, "'SIGHUP: configuration reloaded'", |l| {
        l.contains("SIGHUP: configuration reloaded")
    });
    assert!(line.contains("up to 1 subscribers"), "{line}");
    let mut refused = s.http_get("/push/h3/stream/a");
    assert_eq!(
        show(&refused.read_to_end(WAIT)),
        show(default_header("503 Service Unavailable").as_bytes())
    );
    // The two connected before the reload keep streaming.
    assert_eq!(ctl.add("a", "one"), 1);
    a.expect_str("OLD:1:a:one\n");
    b.expect_str("OLD:1:a:one\n");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let s = Server::start(&[], &conf_tagged("OLD"));
    let mut ctl = s.ctl();
    let mut sub = s.subscribe("/push/h1/stream/a", "OLD 200 OK\n");

    // A bad value: named in the log, old configuration kept.
    std::fs::write(
        &s.conf_path,
        format!("{}\n[stream]\nPersist maybe\n", conf_tagged("NEW")),
    )
    .unwrap();
    s.signal("HUP");
    let line = wait_log_or_panic(&s, "'SIGHUP: keeping the running configuration'", |l| {
        l.contains("SIGHUP: keeping the running configuration: ")
    });
    assert!(
        line.contains("Persist") && line.contains("maybe"),
        "the log does not say why: {line:?}"
    );
    assert_eq!(ctl.add("a", "x"), 1);
    sub.expect_str("OLD:1:a:x\n");
    assert_eq!(
        poll_all(&s, "/push/h2/poll/a.h"),
        "OLD 200 OK\nOLD:1:a:x\n",
        "the broken file was (partly) applied"
    );

    // An unknown key.
    std::fs::write(
        &s.conf_path,
        format!("{}\nNoSuchKeyAtAll 1\n", conf_tagged("NEW")),
    )
    .unwrap();
    s.signal("HUP");
    wait_nth_log(&s, 2, "'keeping the running configuration'", |l| {
        l.contains("SIGHUP: keeping the running configuration: ")
    });
    let last = s
        .logs()
        .into_iter()
        .rfind(|l| l.contains("SIGHUP: keeping the running configuration: "))
        .unwrap();
    assert!(last.contains("NoSuchKeyAtAll"), "not named: {last:?}");

    // An unreadable (missing) file.
    std::fs::remove_file(&s.conf_path).unwrap();
    s.signal("HUP");
    wait_nth_log(&s, 3, "'keeping the running configuration'", |l| {
        l.contains("SIGHUP: keeping the running configuration: ")
    });
    assert_eq!(poll_all(&s, "/push/h3/poll/a.h"), "OLD 200 OK\nOLD:1:a:x\n");
    assert_eq!(
        count_logs(&s, |l| l.contains("SIGHUP: configuration reloaded")),
        0
    );

    // A good file afterwards is applied: nothing got stuck.
    std::fs::write(&s.conf_path, conf_tagged("NEW")).unwrap();
    s.signal("HUP");
    wait_log_or_panic(&s, "'configuration reloaded'", |l| {
        l.contains("SIGHUP: configuration reloaded")
    });
    assert_eq!(poll_all(&s, "/push/h4/poll/a.h"), "NEW 200 OK\nNEW:1:a:x\n");
    assert_eq!(ctl.add("a", "y"), 2);
    sub.expect_str("OLD:2:a:y\n");
}

#[test]
fn sighup_logs_restart_only_settings_as_ignored() {
    let tmp = TempDir::new("hup-restart");
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server::start(&[], &conf_tagged("OLD"));
    let pid_path = tmp.join("later.pid");
    let changed: [(&str, String); 5] = [
        ("ControllerIP", "127.0.0.2".into()),
        ("UDPPort", udp_port.to_string()),
        (
            "SyslogSocket",
            tmp.join("nosuch.sock").display().to_string(),
        ),
        ("PidFile", pid_path.display().to_string()),
        ("Foreground", "1".into()),
    ];
    let mut file = String::new();
    for (k, v) in &changed {
        file.push_str(&format!("{k} {v}\n"));
    }
    file.push_str(&conf_tagged("NEW"));
    std::fs::write(&s.conf_path, file).unwrap();
    // A round trip first: the loop runs, so the signal handlers are in place
    // (see signal_handlers_are_in_place_once_the_server_says_it_listens).
    assert_eq!(s.ctl().list(), "OK\r\n--EOT--\r\n");
    s.signal("HUP");
    // The rest of the file is applied.
    wait_log_or_panic(&s, "'configuration reloaded'", |l| {
        l.contains("SIGHUP: configuration reloaded")
    });
    assert_eq!(poll_all(&s, "/push/h/poll/x"), "NEW 200 OK\n");
    let logs = s.logs();
    let said_ignored = |words: &[&str]| {
        logs.iter().any(|l| {
            l.contains("SIGHUP") && l.contains("ignored") && words.iter().any(|w| l.contains(w))
        })
    };
    let missing: Vec<&str> = [
        ("ControllerIP", &["ControllerIP", "controller address"][..]),
        ("UDPPort", &["UDPPort", "UDP"][..]),
        ("SyslogSocket", &["SyslogSocket", "syslog socket"][..]),
        ("PidFile", &["PidFile", "pid file"][..]),
        ("Foreground", &["Foreground", "foreground"][..]),
    ]
    .iter()
    .filter(|(_, words)| !said_ignored(words))
    .map(|(k, _)| *k)
    .collect();
    // Nothing of it took effect: same controller address, no pid file,
    // no UDP port.
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "still here"), 1);
    assert!(!pid_path.exists(), "PidFile applied on SIGHUP");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"ADDMESSAGE u via udp\n", ("127.0.0.1", udp_port))
        .unwrap();
    assert_eq!(ctl.add("a", "after udp"), 2, "UDPPort applied on SIGHUP");
    assert!(
        missing.is_empty(),
        "SIGHUP changed restart-only settings {missing:?} without logging them as ignored; log:\n{}",
        logs.join("\n")
    );
}

#[test]
fn sighup_syslog_facility_change_is_ignored() {
    let dir = TempDir::new("hup-facility");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let conf = dir.join("meteord.conf");
    let docroot = dir.join("docroot");
    std::fs::create_dir_all(&docroot).unwrap();
    let conf_text = |facility: &str| {
        format!(
            "SyslogFacility {facility}\nSyslogSocket {}\nForeground 1\n",
            syslog.path.display()
        )
    };
    std::fs::write(&conf, conf_text("local0")).unwrap();
    let proc = Proc::spawn(&base_args(&conf, &docroot), &[], &dir.path);
    let addrs = syslog_addrs(&syslog);
    assert_eq!(Controller::connect(addrs.ctl).list(), "OK\r\n--EOT--\r\n");
    std::fs::write(&conf, conf_text("local3")).unwrap();
    send_signal(proc.pid(), libc::SIGHUP);
    let done = syslog.wait_message("'SIGHUP: configuration reloaded'", |m| {
        m.contains("SIGHUP: configuration reloaded")
    });
    assert_eq!(done.pri, 16 * 8 + 6, "facility changed by SIGHUP");
    let msgs = syslog.messages();
    assert!(
        msgs.iter().any(|m| m.contains("SIGHUP")
            && m.contains("ignored")
            && (m.contains("SyslogFacility") || m.contains("facility"))),
        "SIGHUP changed SyslogFacility without logging it as ignored; syslog:\n{}",
        msgs.join("\n")
    );
}

/// "listening for ..." is what operators and scripts (and the test harness)
/// take as "up": a signal sent right after it must be handled, not kill the
/// process with the default action. Several tries, each signalling the
/// moment the line is read.
#[test]
fn signal_handlers_are_in_place_once_the_server_says_it_listens() {
    for attempt in 0..5 {
        let dir = TempDir::new("early-hup");
        let conf = dir.join("c.conf");
        std::fs::write(&conf, TEST_CONF).unwrap();
        let args = std_args(&conf, &dir.path, &[]);
        let mut child = piped_stderr_command(binary(), &args, &dir.path)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let listening = line.contains("listening for controllers on ");
                if listening {
                    // As early as a watcher could.
                    // SAFETY: a signal to the child this test started.
                    unsafe { libc::kill(pid, libc::SIGHUP) };
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let reloaded = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("SIGHUP: configuration reloaded");
                    seen.push(line);
                    if done {
                        break true;
                    }
                }
                Err(_) => break false,
            }
        };
        let mut status = None;
        if !reloaded {
            eventually(Duration::from_secs(1), || {
                status = child.try_wait().unwrap();
                status.is_some()
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            reloaded,
            "attempt {attempt}: SIGHUP right after 'listening for controllers' was not handled \
             (exit: {status:?}); log:\n{}",
            seen.join("\n")
        );
    }
}

// ===========================================================================
// SIGUSR1, SIGUSR2
// ===========================================================================

#[test]
fn sigusr1_empties_every_channel_cache() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let mut sub = s.subscribe("/push/h1/stream/a", HDR_OK);
    let mut idle = s.subscribe("/push/h2/stream/c", HDR_OK);
    ctl.add("a", "a1");
    ctl.add("a", "a2");
    ctl.add("b", "b1");
    sub.expect_str(&msgs(&[(1, "a", "a1"), (2, "a", "a2")]));
    assert_eq!(
        ctl.list(),
        "OK\r\na(2/1)\r\nb(1/0)\r\nc(0/1)\r\n--EOT--\r\n"
    );

    s.signal("USR1");
    // Channels with subscribers stay (0 messages), the others vanish.
    let want = "OK\r\na(0/1)\r\nc(0/1)\r\n--EOT--\r\n";
    assert_eq!(ctl.wait_list(want, WAIT), want);
    wait_log_or_panic(&s, "about SIGUSR1", |l| l.contains("SIGUSR1"));
    assert_eq!(poll_all(&s, "/push/p/poll/a.h/b.h"), HDR_OK);
    let mut c = http(&s);
    let st = parse_json(&exchange(&mut c, &http_req("GET", "/stats", &[], None)).text());
    assert_eq!(st.num("events_cached"), 0.0);

    // Subscribers keep streaming; ids keep counting.
    assert_eq!(ctl.add("a", "a3"), 4);
    sub.expect_str(&msgs(&[(4, "a", "a3")]));
    assert_eq!(ctl.add("c", "c1"), 5);
    idle.expect_str(&msgs(&[(5, "c", "c1")]));
    sub.expect_silence(Duration::from_millis(50));
    assert_eq!(
        poll_all(&s, "/push/p/poll/a.h"),
        format!("{HDR_OK}4:a:a3\n")
    );
}

#[test]
fn sigusr2_serves_a_changed_file_anew() {
    let s = Server::start_test(&[]);
    let fetch = |p: &str| String::from_utf8_lossy(&s.http_get(p).read_to_end(WAIT)).into_owned();
    let doc = |b: &str| format!("{}{b}", document_head("200 OK", "text/html", b.len()));
    s.write_doc("page.html", b"first");
    assert_eq!(fetch("/page.html"), doc("first"));
    s.write_doc("page.html", b"second version");
    assert_eq!(
        fetch("/page.html"),
        doc("first"),
        "the document is not cached"
    );
    s.signal("USR2");
    wait_log_or_panic(&s, "about SIGUSR2", |l| l.contains("SIGUSR2"));
    assert_eq!(fetch("/page.html"), doc("second version"));
    // Channels are not touched by SIGUSR2.
    let mut ctl = s.ctl();
    ctl.add("keep", "x");
    s.signal("USR2");
    wait_nth_log(&s, 2, "about SIGUSR2", |l| l.contains("SIGUSR2"));
    assert_eq!(ctl.list(), "OK\r\nkeep(1/0)\r\n--EOT--\r\n");
}

// ===========================================================================
// SIGTERM, SIGINT, the drain timeout
// ===========================================================================

#[test]
fn sigterm_with_three_streaming_subscribers() {
    let tmp = TempDir::new("term");
    let pid_path = tmp.join("meteord.pid");
    let pid_arg = pid_path.display().to_string();
    let mut s = Server::start(
        &["-PidFile", &pid_arg, "-ControllerShutdownMsg", "CTLBYE\\n"],
        &conf_tagged("T"),
    );
    let mut ctl = s.ctl();
    let mut a = s.subscribe("/push/h1/stream/a", "T 200 OK\n");
    // Written before the loop starts, so certainly there after a round trip.
    let pid_text = std::fs::read_to_string(&pid_path).expect("pid file written");
    assert_eq!(pid_text.trim(), s.pid().to_string(), "pid file content");
    let mut b = s.subscribe("/push/h2/alt/a", "T 200 OK\n");
    let mut c = s.subscribe("/push/h3/stream/b.h", "T 200 OK\n");
    ctl.add("a", "m1");
    ctl.add("b", "m2");
    a.expect_str("T:1:a:m1\n");
    b.expect_str("T:1:a:m1\n");
    c.expect_str("T:2:b:m2\n");

    s.signal("TERM");
    a.expect_str("BYE\n");
    a.expect_eof();
    b.expect_str("ALTBYE\n");
    b.expect_eof();
    c.expect_str("BYE\n");
    c.expect_eof();
    ctl.conn.expect_str("CTLBYE\n");
    ctl.conn.expect_eof();
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status after a clean drain");
    assert!(!pid_path.exists(), "pid file left behind");
    for host in ["h1", "h2", "h3"] {
        let tag = format!("\t{host}\t");
        wait_log_or_panic(&s, &format!("leavechannel ... shutdown for {host}"), |l| {
            l.contains("leavechannel\t127.0.0.1\t") && l.contains(&tag) && l.ends_with("\tshutdown")
        });
    }
}

#[test]
fn sigint_shuts_down_like_sigterm() {
    let mut s = Server::start_test(&[]);
    let mut a = s.subscribe("/push/h1/stream/a", HDR_OK);
    s.signal("INT");
    a.expect_str("BYE\n");
    a.expect_eof();
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGINT");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn sigterm_gives_up_after_drain_timeout_with_status_1() {
    // A header far larger than any socket buffer: a subscriber that reads
    // nothing can never be drained.
    let big = "x".repeat(16 * 1024 * 1024);
    let conf = format!("[big]\nPersist 1\nHeaderTemplate {big}\nSubscriberShutdownMsg BYE\\n\n");
    let tmp = TempDir::new("drain");
    let pid_path = tmp.join("p.pid");
    let pid_arg = pid_path.display().to_string();
    let mut s = Server::start(&["-DrainTimeout", "1", "-PidFile", &pid_arg], &conf);
    let mut stuck = connect_small_rcvbuf(s.sub_addr, 4096);
    stuck.send(get_request("/push/h1/big/a").as_bytes());
    let mut ctl = s.ctl();
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    // A well-behaved controller is still closed promptly.
    let started = Instant::now();
    s.signal("TERM");
    ctl.conn.expect_eof();
    wait_log_or_panic(&s, "'shutting down'", |l| l.contains("shutting down"));
    // Draining: no longer accepting.
    assert!(
        TcpStream::connect_timeout(&s.sub_addr, WAIT).is_err(),
        "the subscriber port still accepts while draining"
    );
    assert!(
        TcpStream::connect_timeout(&s.ctl_addr, WAIT).is_err(),
        "the controller port still accepts while draining"
    );
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM with DrainTimeout 1");
    let took = started.elapsed();
    assert_eq!(st.code(), Some(1), "exit status after the drain timeout");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before DrainTimeout 1"
    );
    let line = wait_log_or_panic(&s, "'giving up'", |l| l.contains("giving up"));
    assert!(
        line.contains(" 1 "),
        "does not say how many were left: {line:?}"
    );
    assert!(!pid_path.exists(), "pid file left behind after exit 1");
    drop(stuck);
}

// ===========================================================================
// Logging
// ===========================================================================

/// [`base_args`] plus syslog with facility local0 over `socket`, then `extra`.
fn syslog_args(conf: &Path, docroot: &Path, socket: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(conf, docroot);
    args.extend([
        "-SyslogFacility".to_owned(),
        "local0".to_owned(),
        "-SyslogSocket".to_owned(),
        socket.display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts meteord logging to `syslog` with facility local0 in the foreground.
fn start_syslogged(dir: &TempDir, syslog: &Syslog, conf: &str, extra: &[&str]) -> (Proc, Addrs) {
    let conf_path = dir.join("meteord.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let docroot = dir.join("docroot");
    std::fs::create_dir_all(&docroot).unwrap();
    let mut args = syslog_args(&conf_path, &docroot, &syslog.path, &["-Foreground", "1"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(&args, &[], &dir.path);
    let addrs = syslog_addrs(syslog);
    (proc, addrs)
}

struct Addrs {
    sub: SocketAddr,
    ctl: SocketAddr,
}

fn syslog_addrs(syslog: &Syslog) -> Addrs {
    let m = syslog.wait_message("'listening for subscribers'", |m| {
        m.starts_with("listening for subscribers on ")
    });
    let sub = address_after(&m.message, "listening for subscribers on ").unwrap();
    let m = syslog.wait_message("'listening for controllers'", |m| {
        m.starts_with("listening for controllers on ")
    });
    let ctl = address_after(&m.message, "listening for controllers on ").unwrap();
    Addrs { sub, ctl }
}

fn fields(msg: &str) -> Vec<&str> {
    msg.split('\t').collect()
}

#[test]
fn syslog_records_field_by_field() {
    let dir = TempDir::new("syslog");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let (mut proc, addrs) = start_syslogged(&dir, &syslog, TEST_CONF, &[]);
    std::fs::write(dir.join("docroot/doc.txt"), b"12345").unwrap();
    let mut ctl = Controller::connect(addrs.ctl);
    let t0 = now_unix();

    // joinchannel: one record per channel, with each start form.
    let mut sub = Conn::connect(addrs.sub);
    sub.send(
        b"GET /push/host1/stream/a/b.r5/c.b3/d.h HTTP/1.1\r\nHost: x\r\nUser-Agent: Tester/1.0 (x; y)\r\n\r\n",
    );
    sub.expect_str(HDR_OK);
    for (ch, start) in [("a", "-"), ("b", "5"), ("c", "-3"), ("d", "0")] {
        let m = syslog.wait_message(&format!("joinchannel for {ch}"), |m| {
            m.starts_with("joinchannel\t") && fields(m).get(3) == Some(&ch)
        });
        assert_eq!(m.pri, 16 * 8 + 6, "PRI of an info line with local0");
        assert_eq!(m.pid, proc.pid() as u32, "pid in the syslog tag");
        assert_eq!(
            fields(&m.message),
            [
                "joinchannel",
                "127.0.0.1",
                "host1",
                ch,
                "stream",
                start,
                "Tester/1.0 (x; y)"
            ],
            "{:?}",
            m.message
        );
    }

    // leavechannel after the client closes: messages and bytes sent.
    ctl.add("a", "hello");
    sub.expect_str("1:a:hello\n");
    drop(sub);
    let leave_a = syslog.wait_message("leavechannel host1 a", |m| {
        m.starts_with("leavechannel\t") && fields(m).get(3) == Some(&"a")
    });
    let f = fields(&leave_a.message);
    assert_eq!(f.len(), 8, "{f:?}");
    assert_eq!(&f[..4], ["leavechannel", "127.0.0.1", "host1", "a"]);
    let secs: u64 = f[4].parse().expect("seconds is a number");
    assert!(secs <= now_unix() - t0 + 1, "seconds {secs}");
    assert_eq!(f[5], "1", "messages sent: {f:?}");
    let msg_bytes = "1:a:hello\n".len();
    let bytes: usize = f[6].parse().expect("bytes is a number");
    assert!(
        bytes == msg_bytes || bytes == msg_bytes + HDR_OK.len(),
        "bytes sent {bytes}: {f:?}"
    );
    assert_eq!(f[7], "remoteClosed");
    for ch in ["b", "c", "d"] {
        let m = syslog.wait_message(&format!("leavechannel host1 {ch}"), |m| {
            m.starts_with("leavechannel\t") && fields(m).get(3) == Some(&ch)
        });
        assert_eq!(fields(&m.message)[7], "remoteClosed", "{:?}", m.message);
    }

    // responseComplete, maxMessages, replaced, disconnectRequested.
    let mut p = Conn::connect(addrs.sub);
    p.send(get_request("/push/host2/poll/a.h").as_bytes());
    assert_eq!(
        p.read_to_end(WAIT),
        format!("{HDR_OK}1:a:hello\n").as_bytes()
    );
    let m = syslog.wait_message("leavechannel host2", |m| {
        m.starts_with("leavechannel\t") && fields(m).get(2) == Some(&"host2")
    });
    let f = fields(&m.message);
    assert_eq!(
        (f[1], f[3], f[5], f[7]),
        ("127.0.0.1", "a", "1", "responseComplete"),
        "{f:?}"
    );
    let j = syslog.wait_message("joinchannel host2", |m| {
        m.starts_with("joinchannel\t") && fields(m).get(2) == Some(&"host2")
    });
    assert_eq!(
        fields(&j.message),
        [
            "joinchannel",
            "127.0.0.1",
            "host2",
            "a",
            "poll",
            "0",
            "meteord-tests"
        ]
    );

    let mut l = Conn::connect(addrs.sub);
    l.send(get_request("/push/host3/long/a.h").as_bytes());
    assert_eq!(
        l.read_to_end(WAIT),
        format!("{HDR_OK}1:a:hello\n").as_bytes()
    );
    let m = syslog.wait_message("leavechannel host3", |m| {
        m.starts_with("leavechannel\t") && fields(m).get(2) == Some(&"host3")
    });
    assert_eq!(fields(&m.message)[7], "maxMessages", "{:?}", m.message);

    let mut r1 = Conn::connect(addrs.sub);
    r1.send(get_request("/push/host4/stream/r").as_bytes());
    r1.expect_str(HDR_OK);
    let mut r2 = Conn::connect(addrs.sub);
    r2.send(get_request("/push/host4/stream/r").as_bytes());
    r2.expect_str(HDR_OK);
    r1.expect_str("BYE\n");
    r1.expect_eof();
    let m = syslog.wait_message("leavechannel host4 replaced", |m| {
        m.starts_with("leavechannel\t") && fields(m).get(2) == Some(&"host4")
    });
    assert_eq!(fields(&m.message)[7], "replaced", "{:?}", m.message);
    let mut d = Conn::connect(addrs.sub);
    d.send(get_request("/disconnect/host4").as_bytes());
    d.read_to_end(WAIT);
    r2.expect_str("BYE\n");
    r2.expect_eof();
    syslog.wait_message("leavechannel host4 disconnectRequested", |m| {
        m.starts_with("leavechannel\t")
            && fields(m).get(2) == Some(&"host4")
            && m.ends_with("\tdisconnectRequested")
    });

    // document records: found and not found.
    let mut g = Conn::connect(addrs.sub);
    g.send(get_request("/doc.txt").as_bytes());
    g.read_to_end(WAIT);
    let m = syslog.wait_message("document /doc.txt", |m| m.starts_with("document\t"));
    assert_eq!(fields(&m.message), ["document", "/doc.txt", "5", "200"]);
    let mut g = Conn::connect(addrs.sub);
    g.send(get_request("/missing.txt").as_bytes());
    g.read_to_end(WAIT);
    let m = syslog.wait_message("document /missing.txt", |m| {
        m.starts_with("document\t/missing.txt\t")
    });
    let f = fields(&m.message);
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f[2].parse::<u64>().is_ok(), "size not numeric: {f:?}");
    assert_eq!(f[3], "404");

    // Every datagram is well formed and from this process; nothing went
    // to standard error, no debug lines without Debug.
    for line in syslog.lines() {
        let p = parse_syslog(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.pid, proc.pid() as u32, "{line:?}");
        assert_eq!(p.pri, 134, "non-info line without Debug: {line:?}");
    }
    assert!(
        proc.stderr().iter().all(|l| !l.contains("joinchannel")),
        "records on standard error too: {:?}",
        proc.stderr()
    );
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "-Foreground 1 exited"
    );

    // Shutdown: the record says so.
    let mut last = Conn::connect(addrs.sub);
    last.send(get_request("/push/host5/stream/z").as_bytes());
    last.expect_str(HDR_OK);
    send_signal(proc.pid(), libc::SIGTERM);
    last.expect_str("BYE\n");
    last.expect_eof();
    let m = syslog.wait_message("leavechannel host5", |m| {
        m.starts_with("leavechannel\t") && fields(m).get(2) == Some(&"host5")
    });
    assert_eq!(fields(&m.message)[7], "shutdown");
    let st = proc.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn syslog_debug_lines_have_severity_7_after_sighup_enables_debug() {
    let dir = TempDir::new("syslog-debug");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let (proc, addrs) = start_syslogged(&dir, &syslog, TEST_CONF, &[]);
    assert_eq!(Controller::connect(addrs.ctl).list(), "OK\r\n--EOT--\r\n");
    std::fs::write(dir.join("meteord.conf"), format!("Debug 1\n{TEST_CONF}")).unwrap();
    send_signal(proc.pid(), libc::SIGHUP);
    syslog.wait_message("'configuration reloaded'", |m| {
        m.contains("SIGHUP: configuration reloaded")
    });
    let mut c = Conn::connect(addrs.sub);
    c.send(get_request("/push/h/poll/a").as_bytes());
    c.read_to_end(WAIT);
    let line = syslog.wait("a debug datagram (PRI 135)", |l| {
        parse_syslog(l).is_ok_and(|p| p.pri == 16 * 8 + 7)
    });
    // From this process, and a debug line about the poll just made.
    let p = parse_syslog(&line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.pid as i32, proc.pid(), "{line:?}");
    assert!(
        syslog
            .lines()
            .iter()
            .filter_map(|l| parse_syslog(l).ok())
            .any(|p| p.pri == 135 && p.message.contains("subscriber closed")),
        "no debug line about the closed poll: {:#?}",
        syslog.lines()
    );
}

#[test]
fn syslog_unreachable_falls_back_to_stderr() {
    let dir = TempDir::new("syslog-missing");
    let conf = dir.join("c.conf");
    std::fs::write(&conf, "").unwrap();
    let args = syslog_args(
        &conf,
        &dir.path,
        &dir.join("nobody-listens.sock"),
        &["-Foreground", "1"],
    );
    let p = Proc::spawn(&args, &[], &dir.path);
    p.wait_stderr(WAIT, |l| l.contains("listening for controllers on "))
        .unwrap_or_else(|| panic!("no fallback to standard error: {:?}", p.stderr()));
}

#[test]
fn log_time_format_unix_and_human() {
    let t0 = now_unix();
    let s = Server::start_test(&["-LogTimeFormat", "unix"]);
    let t1 = now_unix();
    let logs = s.logs();
    // The time stamp, one space, then the message itself.
    let port = s.sub_addr.port();
    assert!(
        logs.iter().any(|l| l
            .split_once(' ')
            .is_some_and(|(_, m)| m == format!("listening for subscribers on 127.0.0.1:{port}"))),
        "{logs:#?}"
    );
    for l in &logs {
        let (stamp, rest) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("no time stamp: {l:?}"));
        let t: u64 = stamp
            .parse()
            .unwrap_or_else(|_| panic!("not unix seconds: {l:?}"));
        assert!(t + 1 >= t0 && t <= t1 + 1, "time {t} not in [{t0}, {t1}]");
        assert!(!rest.is_empty());
    }

    let s = Server::start_test(&["-LogTimeFormat", "human"]);
    for l in s.logs() {
        let b = l.as_bytes();
        let ok = l.len() > 20
            && b[..19].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
            && b[19] == b' ';
        assert!(ok, "not 'YYYY-MM-DD HH:MM:SS ': {l:?}");
    }
    // A bad value is refused at start.
    let dir = TempDir::new("ltf");
    let conf = dir.join("c.conf");
    std::fs::write(&conf, "").unwrap();
    let conf = conf.display().to_string();
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            &conf,
            "-LogTimeFormat",
            "iso",
            "-SyslogFacility",
            "none",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("LogTimeFormat"), "{}", r.stderr);
}

#[test]
fn debug_lines_only_with_debug() {
    let debug_line = |l: &str| l.contains("subscriber connected as");
    // Without Debug: the joinchannel record comes after the point where
    // the debug line would have been written.
    let s = Server::start_test(&[]);
    let mut c = s.subscribe("/push/h/stream/a", HDR_OK);
    wait_log_or_panic(&s, "joinchannel", |l| l.contains("joinchannel\t"));
    c.expect_silence(Duration::from_millis(50));
    assert_eq!(
        count_logs(&s, debug_line),
        0,
        "debug lines without Debug:\n{}",
        s.logs().join("\n")
    );
    for flags in [&["-Debug", "1"][..], &["-d"][..]] {
        let s = Server::start_test(flags);
        let _c = s.subscribe("/push/h/stream/a", HDR_OK);
        wait_log_or_panic(&s, "a debug line", debug_line);
    }
}

#[test]
fn debug_with_a_syslog_facility_logs_to_stderr_in_the_foreground() {
    let dir = TempDir::new("debug-fg");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let conf = dir.join("c.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    let args = syslog_args(&conf, &dir.path, &syslog.path, &["-Debug", "1"]);
    let mut p = Proc::spawn(&args, &[], &dir.path);
    let line = p
        .wait_stderr(WAIT, |l| l.contains("listening for controllers on "))
        .unwrap_or_else(|| panic!("nothing on standard error: {:?}", p.stderr()));
    let ctl = address_after(&line, "listening for controllers on ").unwrap();
    let mut c = Controller::connect(ctl);
    assert_eq!(c.add("a", "x"), 1);
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "Debug detached or exited"
    );
    assert!(
        syslog.lines().is_empty(),
        "Debug still logged to syslog: {:?}",
        syslog.lines()
    );
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit_and_logged() {
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let want = hard.rlim_max.min(1 << 24);
    // Start with a low soft limit through the shell.
    let dir = TempDir::new("nofile");
    let conf = dir.join("c.conf");
    std::fs::write(&conf, "").unwrap();
    let mut args = vec![
        "-c".to_owned(),
        "ulimit -S -n 200 && exec \"$0\" \"$@\"".to_owned(),
    ];
    args.extend_from_slice(binary());
    args.extend(std_args(&conf, &dir.path, &["-MaxControllers", "10"]));
    let p = Proc::start(piped_stderr_command(&["sh".to_owned()], &args, &dir.path));
    let line = p
        .wait_stderr(WAIT, |l| l.contains("open-file limit "))
        .unwrap_or_else(|| panic!("no open-file limit line: {:?}", p.stderr()));
    let rest = &line[line.find("open-file limit ").unwrap() + "open-file limit ".len()..];
    let (n, rest) = rest.split_once(':').expect("N:");
    let n: u64 = n.parse().expect("numeric limit");
    assert_eq!(n, want, "soft limit not raised to the hard limit: {line:?}");
    let m: u64 = rest
        .trim_start()
        .strip_prefix("up to ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no 'up to M subscribers': {line:?}"));
    assert!(
        rest.contains(" subscribers"),
        "no 'up to M subscribers': {line:?}"
    );
    assert!(m > 0 && m < n, "subscribers {m} vs limit {n}: {line:?}");
}

// ===========================================================================
// Detaching, pid file, NOTIFY_SOCKET
// ===========================================================================

/// Kills a detached daemon when a test fails half way.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && pid_alive(pid)
        {
            // SAFETY: SIGKILL to the daemon this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// With no syslog daemon at `SyslogSocket` a detached server would log into
/// /dev/null: it says so, logs to standard error and stays in the
/// foreground (what the Debian package's configuration does where no
/// syslog daemon runs).
#[test]
fn unreachable_syslog_socket_keeps_the_server_in_the_foreground_on_stderr() {
    let dir = TempDir::new("nosyslog");
    let conf = dir.join("c.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    // No -Foreground: with a reachable socket this configuration detaches.
    let args = syslog_args(&conf, &dir.path, &dir.join("missing.sock"), &[]);
    let mut p = Proc::spawn(&args, &[], &dir.path);
    let warning = p.wait_stderr(WAIT, |l| l.contains("cannot log to syslog at "));
    let warning = warning.unwrap_or_else(|| panic!("no syslog warning: {:?}", p.stderr()));
    assert!(
        warning.contains("missing.sock") && warning.contains("staying in the foreground"),
        "{warning:?}"
    );
    let listening = p
        .wait_stderr(WAIT, |l| l.contains("listening for controllers on "))
        .unwrap_or_else(|| panic!("no listening line on stderr: {:?}", p.stderr()));
    let ctl = address_after(&listening, "listening for controllers on ").unwrap();
    // The process started is the server itself: it did not fork away.
    assert!(
        matches!(p.child.try_wait(), Ok(None)),
        "meteord exited (detached?): {:?}",
        p.stderr()
    );
    assert_eq!(Controller::connect(ctl).add("a", "x"), 1);
}

/// The exit status of the command that starts a detaching server (the
/// parent, which waits until the server is up or has failed).
fn parent_exit(parent: &mut std::process::Child) -> std::process::ExitStatus {
    let mut status = None;
    eventually(WAIT, || {
        status = parent.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap_or_else(|| {
        let _ = parent.kill();
        panic!("the parent did not exit within {WAIT:?}");
    })
}

#[test]
fn detaches_writes_a_pid_file_and_sigterm_removes_it() {
    let dir = TempDir::new("detach");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let conf = dir.join("c.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    let pid_path = dir.join("meteord.pid");
    let args = syslog_args(
        &conf,
        &dir.path,
        &syslog.path,
        &["-PidFile", &pid_path.display().to_string()],
    );
    let started = Instant::now();
    let mut parent = piped_stderr_command(binary(), &args, &dir.path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(None);
    let status = parent_exit(&mut parent);
    assert_eq!(status.code(), Some(0), "parent exit status");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the parent exited only after {took:?}"
    );
    // The daemon does not hold our pipes: both reach end of file.
    let (mut out, mut err) = (parent.stdout.take().unwrap(), parent.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let _ = out.read_to_end(&mut o);
        let _ = err.read_to_end(&mut e);
        let _ = tx.send((o, e));
    });
    let pid_text = {
        let mut text = String::new();
        eventually(WAIT, || {
            text = std::fs::read_to_string(&pid_path).unwrap_or_default();
            text.ends_with('\n')
        });
        text
    };
    let pid: i32 = pid_text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file content {pid_text:?}"));
    guard.0 = Some(pid);
    assert_ne!(pid as u32, parent.id(), "the pid file names the parent");
    assert!(pid_alive(pid), "pid {pid} from the pid file is not running");
    let addrs = syslog_addrs(&syslog);
    let mut ctl = Controller::connect(addrs.ctl);
    assert_eq!(ctl.add("a", "from the daemon"), 1);
    // Lines the daemon writes carry its pid. (The startup lines come from
    // before the fork and name the parent.)
    let line = syslog.wait_message("'controller connected'", |m| {
        m.contains("controller connected")
    });
    assert_eq!(line.pid, pid as u32, "syslog tag pid of the daemon");
    let (o, e) = rx
        .recv_timeout(WAIT)
        .expect("the daemon keeps the parent's stdout/stderr open");
    assert!(o.is_empty(), "stdout: {:?}", show(&o));
    assert!(e.is_empty(), "stderr: {:?}", show(&e));

    send_signal(pid, libc::SIGTERM);
    ctl.conn.expect_eof();
    assert!(
        eventually(WAIT, || !pid_path.exists()),
        "pid file still there after SIGTERM"
    );
    assert!(
        eventually(WAIT, || !pid_alive(pid)),
        "daemon still running after SIGTERM"
    );
    syslog.wait_message("'shutdown complete'", |m| m.contains("shutdown complete"));
}

#[test]
fn a_detaching_server_that_cannot_write_its_pid_file_says_why_on_the_terminal() {
    let dir = TempDir::new("detachfail");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let conf = dir.join("c.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    let pid_path = dir.join("missing-dir").join("meteord.pid");
    let args = syslog_args(
        &conf,
        &dir.path,
        &syslog.path,
        &["-PidFile", &pid_path.display().to_string()],
    );
    let mut parent = piped_stderr_command(binary(), &args, &dir.path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = parent_exit(&mut parent);
    assert_eq!(status.code(), Some(1), "parent exit status");
    let mut err = String::new();
    parent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("cannot write pid file") && err.contains("missing-dir"),
        "the parent's standard error: {err:?}"
    );
}

#[test]
fn foreground_1_with_syslog_does_not_detach() {
    let dir = TempDir::new("fg");
    let syslog = Syslog::bind(dir.join("log.sock"));
    let pid_path = dir.join("fg.pid");
    let (mut proc, addrs) = start_syslogged(
        &dir,
        &syslog,
        TEST_CONF,
        &["-PidFile", &pid_path.display().to_string()],
    );
    let mut ctl = Controller::connect(addrs.ctl);
    assert_eq!(ctl.add("a", "x"), 1);
    assert!(proc.child.try_wait().unwrap().is_none(), "exited");
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap().trim(),
        proc.pid().to_string()
    );
    let m = syslog.wait_message("any", |_| true);
    assert_eq!(m.pid, proc.pid() as u32);
    send_signal(proc.pid(), libc::SIGTERM);
    let st = proc.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(st.code(), Some(0));
    assert!(!pid_path.exists());
}

fn notify_test(abstract_name: bool) {
    let dir = TempDir::new("notify");
    let (sock, env_value) = if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("meteord-test-notify-{}-{}", std::process::id(), now_unix());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    } else {
        let path = dir.join("notify.sock");
        (
            UnixDatagram::bind(&path).unwrap(),
            path.display().to_string(),
        )
    };
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, TEST_CONF).unwrap();
    let args = std_args(&conf, &dir.path, &[]);
    let mut p = Proc::spawn(&args, &[("NOTIFY_SOCKET", &env_value)], &dir.path);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 datagram");
    assert_eq!(&buf[..n], b"READY=1", "{:?}", show(&buf[..n]));
    // Ready means listening: the ports are open now.
    let line = p
        .wait_stderr(WAIT, |l| l.contains("listening for controllers on "))
        .expect("no 'listening for controllers'");
    let ctl = address_after(&line, "listening for controllers on ").unwrap();
    let mut c = Controller::connect(ctl);
    assert_eq!(c.add("a", "x"), 1);
    send_signal(p.pid(), libc::SIGTERM);
    let n = sock.recv(&mut buf).expect("no STOPPING=1 datagram");
    assert_eq!(&buf[..n], b"STOPPING=1", "{:?}", show(&buf[..n]));
    let st = p.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn notify_socket_ready_and_stopping() {
    notify_test(false);
}

#[test]
fn notify_socket_abstract_address() {
    notify_test(true);
}

// ===========================================================================
// UDP
// ===========================================================================

#[test]
fn udp_delivery_to_a_streaming_subscriber() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server::start_test(&["-UDPPort", &port.to_string()]);
    wait_log_or_panic(&s, "'listening for UDP on 127.0.0.1:PORT'", |l| {
        l.contains(&format!("listening for UDP on 127.0.0.1:{port}"))
    });
    let mut sub = s.subscribe("/push/h/stream/u", HDR_OK);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"ADDMESSAGE u over udp\n", ("127.0.0.1", port))
        .unwrap();
    sub.expect_str("1:u:over udp\n");
    sock.send_to(b"NOTACOMMAND u x\n", ("127.0.0.1", port))
        .unwrap();
    sock.send_to(b"ADDMESSAGE u two", ("127.0.0.1", port))
        .unwrap();
    sub.expect_str("2:u:two\n");
    wait_log_or_panic(&s, "about the ignored datagram", |l| {
        l.contains("ignored a UDP datagram")
    });
}

// ===========================================================================
// HTTP on the controller port
// ===========================================================================

#[test]
fn http_publish_keep_alive_and_line_protocol_on_the_same_port() {
    let s = Server::start_test(&[]);
    let mut sub = s.subscribe("/push/h/stream/news", HDR_OK);
    let mut c = http(&s);
    let r = exchange(
        &mut c,
        &http_req("POST", "/pub/news", &[], Some(b"hello \"world\"\n")),
    );
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"), "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.text(), "{\"id\":1}\n");
    assert_eq!(r.header("Connection"), None, "keep-alive by default");
    sub.expect_str("1:news:hello \"world\"\n\n");
    // Same connection, two pipelined requests in one write.
    let mut two = http_req("POST", "/pub/news", &[], Some(b"second"));
    two.extend(http_req("POST", "/pub/other", &[], Some(b"")));
    c.send(&two);
    assert_eq!(read_resp(&mut c).text(), "{\"id\":2}\n");
    assert_eq!(read_resp(&mut c).text(), "{\"id\":3}\n");
    sub.expect_str("2:news:second\n");

    // GET /channels
    let r = exchange(&mut c, &http_req("GET", "/channels", &[], None));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let j = parse_json(&r.text());
    assert_eq!(
        j,
        parse_json(
            "{\"channels\":[{\"name\":\"news\",\"messages\":2,\"subscribers\":1,\"lastMsgID\":2},\
             {\"name\":\"other\",\"messages\":1,\"subscribers\":0,\"lastMsgID\":3}]}"
        )
    );

    // The line protocol, byte for byte, on another connection.
    let mut ctl = s.ctl();
    ctl.send("ADDMESSAGE news GET /x HTTP/1.1\n");
    assert_eq!(ctl.read_reply_line(), "OK\t4");
    // Only the first line decides: a request line later is a bad command.
    assert_eq!(
        ctl.command("GET /stats HTTP/1.1"),
        "ERR Invalid command syntax"
    );
    assert_eq!(ctl.list(), "OK\r\nnews(3/1)\r\nother(1/0)\r\n--EOT--\r\n");
    sub.expect_str("4:news:GET /x HTTP/1.1\n");

    // Connection: close, and HTTP/1.0 without keep-alive, close after the reply.
    let mut c2 = http(&s);
    let r = exchange(
        &mut c2,
        &http_req("GET", "/channels", &[("Connection", "close")], None),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    c2.expect_eof();
    let mut c3 = http(&s);
    c3.send(b"GET /stats HTTP/1.0\r\n\r\n");
    assert_eq!(read_resp(&mut c3).status, 200);
    c3.expect_eof();
    // The keep-alive connection is still usable.
    let r = exchange(&mut c, &http_req("POST", "/pub/news", &[], Some(b"last")));
    assert_eq!(r.text(), "{\"id\":5}\n");
}

#[test]
fn http_errors() {
    let s = Server::start_test(&["-MaxControllerLineBytes", "100"]);
    let errors_before = s.ctl().stat("errors_served");
    let mut c = http(&s);
    // 404, 405 and 400 keep the connection.
    let r = exchange(&mut c, &http_req("GET", "/nothing-here", &[], None));
    assert_eq!(r.status, 404, "{r:?}");
    for (m, p) in [
        ("DELETE", "/channels"),
        ("POST", "/stats"),
        ("PUT", "/metrics"),
        ("GET", "/pub/x"),
    ] {
        let r = exchange(&mut c, &http_req(m, p, &[], Some(b"")));
        assert_eq!(r.status, 405, "{m} {p}: {r:?}");
    }
    let long = format!("/pub/{}", "c".repeat(200));
    for p in ["/pub/", "/pub/a/b", long.as_str()] {
        let r = exchange(&mut c, &http_req("POST", p, &[], Some(b"x")));
        assert_eq!(r.status, 400, "POST {p}: {r:?}");
    }
    // Body at the limit is fine, over it is 413 and close.
    let r = exchange(
        &mut c,
        &http_req("POST", "/pub/ok", &[], Some(&[b'y'; 100])),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = exchange(
        &mut c,
        &http_req("POST", "/pub/ok", &[], Some(&[b'z'; 101])),
    );
    assert_eq!(r.status, 413, "{r:?}");
    c.expect_eof();
    // No Content-Length: 411 and close.
    let mut c = http(&s);
    c.send(b"POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nbody");
    let r = read_resp(&mut c);
    assert_eq!(r.status, 411, "{r:?}");
    c.expect_eof();
    // A malformed Content-Length: 400.
    let mut c = http(&s);
    c.send(b"POST /pub/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: lots\r\n\r\n");
    assert_eq!(read_resp(&mut c).status, 400);
    // Nothing of the failed requests was published.
    let mut ctl = s.ctl();
    assert_eq!(ctl.list(), "OK\r\nok(1/0)\r\n--EOT--\r\n");
    let errors = ctl.stat("errors_served");
    assert!(
        errors >= errors_before + 11,
        "errors_served {errors_before} -> {errors}"
    );
    // OPTIONS: 204 with the CORS preflight headers.
    let mut c = http(&s);
    let r = exchange(&mut c, &http_req("OPTIONS", "/pub/x", &[], None));
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or("");
    assert!(methods.contains("POST") && methods.contains("GET"), "{r:?}");
    assert!(
        r.header("Access-Control-Allow-Headers")
            .is_some_and(|h| h.contains("Authorization")),
        "{r:?}"
    );
}

#[test]
fn http_cors_and_password() {
    let s = Server::start_test(&[
        "-ControllerPassword",
        "s3cret",
        "-AllowedOrigins",
        "http://app.example",
    ]);
    let mut c = http(&s);
    let origin = [("Origin", "http://app.example")];
    // The preflight needs no password.
    let r = exchange(&mut c, &http_req("OPTIONS", "/pub/x", &origin, None));
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://app.example")
    );
    // Another origin is refused outright (its page may not use the port at
    // all), and the connection closes: use a connection of its own.
    let mut evil = http(&s);
    let r = exchange(
        &mut evil,
        &http_req(
            "OPTIONS",
            "/pub/x",
            &[("Origin", "http://evil.example")],
            None,
        ),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), None, "{r:?}");
    evil.expect_eof();
    for (path, method, body) in [
        ("/pub/x", "POST", Some(&b"hi"[..])),
        ("/channels", "GET", None),
        ("/stats", "GET", None),
        ("/metrics", "GET", None),
    ] {
        for (i, auth) in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut h = vec![];
            if let Some(a) = auth {
                h.push(("Authorization", a));
            }
            // A wrong password closes the connection and counts against
            // its address: each attempt comes from an address of its own.
            let source = std::net::Ipv4Addr::new(127, 0, 1, 10 + i as u8);
            let mut wrong = connect_from(s.ctl_addr, source);
            let r = exchange(&mut wrong, &http_req(method, path, &h, body));
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {r:?}");
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"), "{r:?}");
            assert_eq!(r.header("Connection"), Some("close"), "{r:?}");
            wrong.expect_eof();
        }
        let r = exchange(
            &mut c,
            &http_req(
                method,
                path,
                &[("Authorization", "Bearer s3cret"), origin[0]],
                body,
            ),
        );
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("http://app.example")
        );
    }
    let mut ctl = s.ctl();
    assert_eq!(ctl.command("AUTH s3cret"), "OK");
    assert_eq!(ctl.list(), "OK\r\nx(1/0)\r\n--EOT--\r\n");
}

#[test]
fn http_stats_matches_showstats() {
    let s = Server::start_test(&[]);
    let mut ctl = s.ctl();
    let mut sub = s.subscribe("/push/h/stream/a", HDR_OK);
    ctl.add("a", "12345");
    ctl.add("b", "x");
    sub.expect_str("1:a:12345\n");
    let mut c = http(&s);
    // One request first, so that both views count the same connections.
    assert_eq!(
        exchange(&mut c, &http_req("GET", "/channels", &[], None)).status,
        200
    );
    let showstats: HashMap<String, u64> = ctl.stats().into_iter().collect();
    let r = exchange(&mut c, &http_req("GET", "/stats", &[], None));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let j = parse_json(&r.text());
    let mut want = vec!["uptime", "channel_count"];
    want.extend(STAT_KEYS);
    want.extend([
        "slow_consumers_dropped",
        "connections_refused",
        "events_cached",
        "bytes_cached",
    ]);
    let keys: HashSet<&str> = j.keys().into_iter().collect();
    for k in &want {
        assert!(keys.contains(k), "no {k} in /stats: {}", r.text());
        let v = j.num(k);
        assert!(v >= 0.0 && v.fract() == 0.0, "{k}: {v}");
    }
    for k in [
        "channel_count",
        "current_subscribers",
        "current_controllers",
        "subscriber_connections_accepted",
        "controller_connections_accepted",
        "unique_messages",
        "messages_served",
        "documents_served",
        "documents_not_found",
    ] {
        assert_eq!(j.num(k) as u64, showstats[k], "{k}: /stats vs SHOWSTATS");
    }
    assert_eq!(j.num("channel_count"), 2.0);
    assert_eq!(j.num("events_cached"), 2.0);
    assert!(j.num("bytes_cached") >= 6.0);
    assert_eq!(j.num("slow_consumers_dropped"), 0.0);
}

#[test]
fn http_metrics_is_valid_prometheus_text() {
    let s = Server::start_test(&["-MaxSubscribers", "2"]);
    let mut ctl = s.ctl();
    s.write_doc("d.txt", b"doc");
    drop(s.http_get("/d.txt").read_to_end(WAIT));
    let mut a = s.subscribe("/push/h1/stream/a", HDR_OK);
    let mut b = s.subscribe("/push/h2/stream/a", HDR_OK);
    // A refused connection, to see a non-zero connections_refused.
    let mut refused = s.http_get("/push/h3/stream/a");
    let got = refused.read_to_end(WAIT);
    assert_eq!(
        show(&got),
        show(default_header("503 Service Unavailable").as_bytes())
    );
    ctl.add("a", "hello");
    a.expect_str("1:a:hello\n");
    b.expect_str("1:a:hello\n");
    let mut c = http(&s);
    assert_eq!(
        exchange(&mut c, &http_req("GET", "/channels", &[], None)).status,
        200
    );
    let showstats: HashMap<String, u64> = ctl.stats().into_iter().collect();
    let r = exchange(&mut c, &http_req("GET", "/metrics", &[], None));
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "Content-Type {ct:?}"
    );
    let text = r.text();
    let m = parse_prometheus(&text);
    // Every SHOWSTATS counter is exported, with the right kind.
    for k in STAT_KEYS {
        let (name, kind) = if k.starts_with("current_") {
            (format!("meteord_{k}"), "gauge")
        } else {
            (format!("meteord_{k}_total"), "counter")
        };
        let alt = format!("meteord_{k}");
        let (name, v) = match m.value(&name, &[]) {
            Some(v) => (name, v),
            None => (
                alt.clone(),
                m.value(&alt, &[])
                    .unwrap_or_else(|| panic!("{k} not exported:\n{text}")),
            ),
        };
        assert_eq!(m.types[&name], kind, "TYPE of {name}");
        if ![
            "total_requests",
            "total_inbound_bytes",
            "total_outbound_bytes",
        ]
        .contains(&k)
        {
            assert_eq!(v as u64, showstats[k], "{name} vs SHOWSTATS {k}");
        }
    }
    assert_eq!(
        m.value("meteord_connections", &[("kind", "subscriber")]),
        Some(2.0),
        "connections by kind:\n{text}"
    );
    assert_eq!(
        m.value("meteord_connections", &[("kind", "controller")]),
        Some(2.0),
        "connections by kind:\n{text}"
    );
    assert_eq!(m.value("meteord_events_cached", &[]), Some(1.0), "{text}");
    assert!(m.value("meteord_bytes_cached", &[]).unwrap_or(-1.0) >= 5.0);
    let find = |part: &str| {
        m.samples
            .iter()
            .find(|((n, _), _)| n.contains(part))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no metric containing {part}:\n{text}"))
    };
    assert_eq!(find("slow_consumers_dropped"), 0.0);
    assert_eq!(find("connections_refused"), 1.0);
    let uptime = find("uptime");
    assert!(
        (0.0..60.0).contains(&uptime) && uptime.fract() == 0.0,
        "uptime {uptime}"
    );

    // The checker itself rejects what it should.
    for bad in [
        "meteord_x 1\n",
        "# TYPE meteord_x counter\nmeteord_x one\n",
        "# TYPE meteord_x counter\nmeteord_x{kind=subscriber} 1\n",
        "# TYPE meteord_x gauge\nmeteord_x 1\n# TYPE meteord_y gauge\nmeteord_y 1\nmeteord_x 2\n",
        "# TYPE meteord_x gauge\nmeteord_x 1",
        "# TYPE meteord_x gauge\nmeteord_x 1\nmeteord_x 2\n",
        "# TYPE meteord_x sometimes\nmeteord_x 1\n",
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(r.is_err(), "checker accepted {bad:?}");
    }
}
