//! The publisher: sends events through the Meteor controller protocol or HTTP POST.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::opts::{Opts, Publisher};
use crate::wire::{Body, event_text, head_len, now_ns, parse_head};

/// What the publisher did.
#[derive(Debug, Default)]
pub struct PubStats {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The first and last message id the server returned (Meteor only).
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    /// First error reply, for the report.
    pub first_error: Option<String>,
    /// Why publishing stopped early, if it did.
    pub fatal: Option<String>,
}

/// Publishes `opts.events` events at `opts.rate` (0 = as fast as the window allows).
/// Stops early on a connection failure, recorded in `fatal`.
pub fn publish(opts: &Opts, deadline: Instant) -> PubStats {
    let mut st = PubStats::default();
    if let Err(e) = publish_into(opts, deadline, &mut st) {
        st.fatal = Some(e.to_string());
    }
    st
}

fn connect(opts: &Opts) -> io::Result<TcpStream> {
    let addr = match &opts.publisher {
        Publisher::Meteor(a) => *a,
        Publisher::Http { addr, .. } => *addr,
    };
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| io::Error::new(e.kind(), format!("publisher: connect to {addr}: {e}")))?;
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(sock)
}

fn publish_into(opts: &Opts, deadline: Instant, st: &mut PubStats) -> io::Result<()> {
    let mut sock = connect(opts)?;
    let mut replies = Replies::new(matches!(opts.publisher, Publisher::Http { .. }));
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let due = |k: u64| -> Option<Instant> {
        (opts.rate > 0.0).then(|| start + Duration::from_secs_f64(k as f64 / opts.rate))
    };
    while st.acked + st.errors < opts.events {
        let now = Instant::now();
        if now > deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "publisher: run time limit reached",
            ));
        }
        // Send every event that is due and fits in the window, in one write.
        let mut out = Vec::new();
        while st.sent < opts.events
            && st.sent - st.acked - st.errors < opts.window as u64
            && due(st.sent).is_none_or(|d| d <= now)
        {
            let ns = now_ns();
            if st.sent == 0 {
                st.first_ns = ns;
            }
            st.last_ns = ns;
            request(opts, &event_text(st.sent, ns, opts.size), &mut out);
            st.sent += 1;
        }
        if !out.is_empty() {
            sock.write_all(&out)
                .map_err(|e| io::Error::new(e.kind(), format!("publisher: write: {e}")))?;
        }
        // Wait for replies, but not past the next due time.
        let outstanding = st.sent - st.acked - st.errors;
        let wait = match due(st.sent) {
            Some(d) if st.sent < opts.events && outstanding < opts.window as u64 => d
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(200)),
            _ => Duration::from_millis(200),
        };
        if outstanding == 0 {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        sock.set_read_timeout(Some(wait))?;
        match sock.read(&mut buf) {
            Ok(0) if replies.http && st.sent == st.acked + st.errors => {
                // An HTTP server may close a keep-alive connection between requests.
                sock = connect(opts)?;
                replies = Replies::new(true);
            }
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "publisher: server closed the connection",
                ));
            }
            Ok(n) => replies.feed(&buf[..n], st),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("publisher: read: {e}"))),
        }
    }
    if matches!(opts.publisher, Publisher::Meteor(_)) {
        let _ = sock.write_all(b"QUIT\n");
    }
    Ok(())
}

/// Appends the publish request for one event.
fn request(opts: &Opts, text: &[u8], out: &mut Vec<u8>) {
    match &opts.publisher {
        Publisher::Meteor(_) => {
            out.extend_from_slice(format!("ADDMESSAGE {} ", opts.channel).as_bytes());
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        Publisher::Http { host, path, .. } => {
            out.extend_from_slice(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    text.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(text);
        }
    }
}

/// Parses the stream of publish replies.
struct Replies {
    http: bool,
    buf: Vec<u8>,
    /// HTTP: the body of the current reply still being read, with its status.
    body: Option<(u16, Body)>,
}

impl Replies {
    fn new(http: bool) -> Self {
        Replies {
            http,
            buf: Vec::new(),
            body: None,
        }
    }

    fn feed(&mut self, data: &[u8], st: &mut PubStats) {
        self.buf.extend_from_slice(data);
        if self.http {
            self.feed_http(st);
        } else {
            self.feed_meteor(st);
        }
    }

    /// `OK\t<id>\r\n` per ADDMESSAGE.
    fn feed_meteor(&mut self, st: &mut PubStats) {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            match line
                .strip_prefix("OK\t")
                .and_then(|id| id.trim().parse::<u64>().ok())
            {
                Some(id) => {
                    st.acked += 1;
                    st.first_id.get_or_insert(id);
                    st.last_id = Some(id);
                }
                None => error(st, line),
            }
        }
    }

    /// One HTTP response per POST; 2xx counts as published.
    fn feed_http(&mut self, st: &mut PubStats) {
        loop {
            if let Some((status, body)) = &mut self.body {
                let (n, done) = body.feed(&self.buf, |_| {});
                let status = *status;
                self.buf.drain(..n);
                if !done {
                    return;
                }
                self.body = None;
                if (200..300).contains(&status) {
                    st.acked += 1;
                } else {
                    error(st, &format!("HTTP status {status}"));
                }
                continue;
            }
            let Some(len) = head_len(&self.buf) else {
                return;
            };
            match parse_head(&self.buf[..len]) {
                Some(h) => self.body = Some((h.status, h.body)),
                None => error(st, "not an HTTP reply"),
            }
            self.buf.drain(..len);
        }
    }
}

fn error(st: &mut PubStats, what: &str) {
    st.errors += 1;
    if st.first_error.is_none() {
        st.first_error = Some(what.chars().take(120).collect());
    }
}
