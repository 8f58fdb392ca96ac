//! The server under test: started here on loopback with a temporary
//! configuration, or attached to by ports and pid. Its descriptors, memory
//! and CPU come from /proc; its log (when started here) is scanned for
//! drops, refusals and panics.

use crate::wire;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Counters taken from the server's log lines.
#[derive(Default)]
pub struct LogCounts {
    pub lines: AtomicU64,
    pub slow_consumer: AtomicU64,
    pub write_timeout: AtomicU64,
    pub panics: AtomicU64,
    pub accept_failed: AtomicU64,
    pub refused: AtomicU64,
    pub socket_errors: AtomicU64,
    /// The last lines, for a failure report.
    pub tail: Mutex<VecDeque<String>>,
}

impl LogCounts {
    fn take(&self, line: &str, full_log: Option<&mut std::fs::File>) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        if line.contains("dropped slow subscriber (slowConsumer)") {
            self.slow_consumer.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("dropped slow subscriber (writeTimeout)") {
            self.write_timeout.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("panicked") {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("accept failed") {
            self.accept_failed.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains(": refused") || line.contains("controller refused") {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("closed on a socket error") {
            self.socket_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(f) = full_log {
            let _ = writeln!(f, "{line}");
        }
        let mut tail = self.tail.lock().unwrap();
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
}

/// The server under test.
pub struct Target {
    pub sub: SocketAddr,
    pub ctl: SocketAddr,
    pub pid: u32,
    pub password: Option<String>,
    /// Set when this tool started the server.
    child: Option<Child>,
    pub logs: Arc<LogCounts>,
    /// Removed on drop unless the log is kept.
    dir: Option<PathBuf>,
    keep_dir: bool,
    pub spawned_binary: Option<PathBuf>,
}

/// The configuration a started server runs with: the classic modes of the
/// bundled meteor.conf (so an attached server with that file works too)
/// and limits small enough that abuse and slowness resolve in seconds.
pub fn config_text(docroot: &Path) -> String {
    let head = "HTTP/1.1 ~status~\\r\\nServer: ~server~\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n\
                Pragma: no-cache\\r\\nCache-Control: no-cache, no-store, must-revalidate\\r\\n\
                Expires: Thu, 1 Jan 1970 00:00:00 GMT\\r\\n\\r\\n~channelinfo~";
    format!(
        "# meteor-soak configuration\n\
         SyslogFacility none\n\
         SubscriberIP 127.0.0.1\n\
         ControllerIP 127.0.0.1\n\
         SubscriberDocumentRoot {}\n\
         PingInterval 5\n\
         MaxMessagesPerChannel 250\n\
         HeadTimeout 3\n\
         WriteTimeout 10\n\
         MaxControllerLineBytes 65536\n\
         MaxCachedBytes {MAX_CACHED}\n\
         ControllerCommandTimeout {CTL_COMMAND_TIMEOUT}\n\
         ControllerIdleTimeout {CTL_IDLE_TIMEOUT}\n\
         [xhrinteractive]\n\
         HeaderTemplate {head}\n\
         ChannelInfoTemplate ch(\"~name~\", ~lastMsgID~);\\r\\n\n\
         MessageTemplate p(~id~,\"~channel~\",\"~text~\");\\r\\n\n\
         PingMessage p(-1,\"\");\\r\\n\n\
         SubscriberShutdownMsg eof();\\r\\n\n\
         Persist 1\n\
         [longpoll]\n\
         HeaderTemplate {head}\n\
         ChannelInfoTemplate ch(\"~name~\", ~lastMsgID~);\\r\\n\n\
         MessageTemplate p(~id~,\"~channel~\",\"~text~\");\\r\\n\n\
         PingMessage p(-1,\"\");\\r\\n\n\
         SubscriberShutdownMsg eof();\\r\\n\n\
         Persist 1\n\
         MaxMessages 1\n\
         MaxTime 30\n\
         [smartpoll]\n\
         HeaderTemplate {head}\n\
         ChannelInfoTemplate ch(\"~name~\", ~lastMsgID~);\\r\\n\n\
         MessageTemplate p(~id~,\"~channel~\",\"~text~\");\\r\\n\n\
         SubscriberShutdownMsg eof();\\r\\n\n\
         Persist 0\n\
         [iframe]\n\
         HeaderTemplate {head}\n\
         MessageTemplate <script>p(~id~,\"~channel~\",\"~text~\");</script>\\r\\n\n\
         Persist 1\n\
         [sse]\n\
         HeaderTemplate {head}\n\
         MessageTemplate id: ~id~\\nevent: ~channel~\\ndata: ~text:sse~\\n\\n\n\
         Persist 1\n\
         [fetchstream]\n\
         HeaderTemplate {head}\n\
         MessageTemplate {{\"id\":~id~,\"channel\":\"~channel:json~\",\"text\":\"~text:json~\"}}\\n\n\
         Persist 1\n\
         [jsonlongpoll]\n\
         HeaderTemplate {head}\n\
         MessageTemplate {{\"id\":~id~,\"channel\":\"~channel:json~\",\"text\":\"~text:json~\"}}\\n\n\
         Persist 1\n\
         MaxMessages 1\n\
         [htmlesc]\n\
         HeaderTemplate {head}\n\
         MessageTemplate <p data-id=\"~id~\">~text:html~</p>\\r\\n\n\
         Persist 1\n\
         [jsesc]\n\
         HeaderTemplate {head}\n\
         MessageTemplate p(~id~,\"~channel:js~\",\"~text:js~\");\\r\\n\n\
         Persist 1\n",
        docroot.display()
    )
}

/// `ControllerCommandTimeout` and `ControllerIdleTimeout` of a started server.
pub const CTL_COMMAND_TIMEOUT: u64 = 2;
pub const CTL_IDLE_TIMEOUT: u64 = 5;
/// `MaxCachedBytes` of a started server.
pub const MAX_CACHED: u64 = 32 * 1024 * 1024;

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Target {
    /// Starts `binary` on loopback, ports chosen by the kernel.
    pub fn spawn(binary: &Path, keep_log: bool, extra: &[String]) -> io::Result<Target> {
        // The server runs in its temporary directory: a relative path would
        // be looked up there.
        let binary = &binary
            .canonicalize()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("meteor-soak-{}-{nanos}", std::process::id()));
        let docroot = dir.join("docroot");
        std::fs::create_dir_all(&docroot)?;
        std::fs::write(
            docroot.join("index.html"),
            "<!doctype html><title>soak</title><p>meteor-soak\n".repeat(40),
        )?;
        let conf = dir.join("meteord.conf");
        std::fs::write(&conf, config_text(&docroot))?;
        let mut args: Vec<String> = vec![
            "-ConfigFileLocation".into(),
            conf.display().to_string(),
            "-SubscriberPort".into(),
            "0".into(),
            "-ControllerPort".into(),
            "0".into(),
        ];
        args.extend(extra.iter().cloned());
        let mut child = Command::new(binary)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        let stderr = child.stderr.take().expect("piped");
        let logs = Arc::new(LogCounts::default());
        let (tx, rx) = mpsc::channel::<String>();
        {
            let logs = Arc::clone(&logs);
            let mut full = if keep_log {
                std::fs::File::create(dir.join("meteord.log")).ok()
            } else {
                None
            };
            thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = Vec::new();
                let mut started = false;
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let s = String::from_utf8_lossy(&line).trim_end().to_string();
                            logs.take(&s, full.as_mut());
                            if !started {
                                started = tx.send(s).is_err();
                            }
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut sub, mut ctl) = (None, None);
        while sub.is_none() || ctl.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    sub = sub.or_else(|| address_after(&line, "listening for subscribers on "));
                    ctl = ctl.or_else(|| address_after(&line, "listening for controllers on "));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let tail: Vec<String> = logs.tail.lock().unwrap().iter().cloned().collect();
                    return Err(io::Error::other(format!(
                        "meteord did not start within 10 s:\n{}",
                        tail.join("\n")
                    )));
                }
            }
        }
        let (sub, ctl) = (sub.unwrap(), ctl.unwrap());
        for a in [sub, ctl] {
            if a.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
                let _ = child.kill();
                return Err(io::Error::other(format!("not on 127.0.0.1: {a}")));
            }
        }
        Ok(Target {
            sub,
            ctl,
            pid: child.id(),
            password: None,
            child: Some(child),
            logs,
            dir: Some(dir),
            keep_dir: keep_log,
            spawned_binary: Some(binary.to_owned()),
        })
    }

    /// A server already running on 127.0.0.1.
    pub fn attach(sub_port: u16, ctl_port: u16, pid: u32, password: Option<String>) -> Target {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Target {
            sub: SocketAddr::new(lo, sub_port),
            ctl: SocketAddr::new(lo, ctl_port),
            pid,
            password,
            child: None,
            logs: Arc::new(LogCounts::default()),
            dir: None,
            keep_dir: false,
            spawned_binary: None,
        }
    }

    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .filter(|_| self.keep_dir)
            .map(|d| d.join("meteord.log"))
    }

    /// Whether the server process still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// `GET /stats` on the controller port (JSON), bearer token when set.
    pub fn stats_json(&self) -> io::Result<String> {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!("Authorization: Bearer {p}\r\n"))
            .unwrap_or_default();
        let req =
            format!("GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
        let got = wire::exchange(self.ctl, req.as_bytes(), Duration::from_secs(5))?;
        let text = String::from_utf8_lossy(&got).into_owned();
        if !text.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!(
                "GET /stats: {}",
                wire::show(&got)
            )));
        }
        Ok(text)
    }

    /// Stops a server this tool started: SIGTERM, then SIGKILL after 10 s.
    /// Returns the exit status when it stopped by itself.
    pub fn stop(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.dir
            && !self.keep_dir
        {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A number in a flat JSON object.
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = json.find(&pat)? + pat.len();
    json[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// One sample of the server process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub fds: u64,
    pub rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu: f64,
}

pub fn sample(pid: u32) -> io::Result<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(Sample {
        fds,
        rss_kib,
        cpu: ticks as f64 / hz,
    })
}
