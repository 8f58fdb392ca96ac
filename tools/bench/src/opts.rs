//! Command-line options shared by the coordinator and its worker processes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::wire::unescape;

/// Default streaming request: the `[bench]` mode of tools/compare.sh's meteord config.
const STREAM_REQUEST: &str =
    "GET /push/{host}/bench/{channel} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n";
/// Streaming request with `--websocket`: a WebSocket handshake for the
/// `[benchws]` mode (events arrive as text frames after `101`).
const WS_REQUEST: &str = "GET /push/{host}/benchws/{channel} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n";
/// Default first long-poll request (`[benchlp]`: Persist 1, MaxMessages 1).
const LP_FIRST: &str =
    "GET /push/{host}/benchlp/{channel} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n";
/// Default follow-up long-poll request, resuming at the next id.
const LP_NEXT: &str =
    "GET /push/{host}/benchlp/{channel}.r{next} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n";
/// First long-poll request with `--keep-alive` (`[benchka]`: `[benchlp]`
/// plus `KeepAlive 1`, so replies carry their length and the connection
/// is reused).
const KA_FIRST: &str =
    "GET /push/{host}/benchka/{channel} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n";
/// Follow-up request with `--keep-alive`, on the same connection.
const KA_NEXT: &str =
    "GET /push/{host}/benchka/{channel}.r{next} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n";

/// How events are published.
#[derive(Clone, Debug)]
pub enum Publisher {
    /// Meteor controller protocol: `ADDMESSAGE <channel> <text>\n`, reply `OK\t<id>`.
    Meteor(SocketAddr),
    /// HTTP POST of the event text to this address and path.
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
    },
}

/// Everything a run needs; workers get the same arguments plus `--worker`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub target: SocketAddr,
    pub subscribers: usize,
    pub request: String,
    pub next_request: String,
    pub delimiter: Vec<u8>,
    pub channel: String,
    pub publisher: Publisher,
    pub events: u64,
    pub rate: f64,
    pub size: usize,
    pub window: usize,
    pub pids: Vec<u32>,
    pub per_worker: usize,
    pub per_source: usize,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub settle: Duration,
    pub idle: Duration,
    pub drain_timeout: Duration,
    pub max_time: Duration,
    pub longpoll: bool,
    pub json: bool,
    pub label: String,
    pub tag: String,
    /// Set in worker processes: (first subscriber index, count).
    pub worker: Option<(usize, usize)>,
}

pub fn usage(program: &str) -> String {
    let o = options();
    let brief = format!(
        "Usage: {program} [options]\n       {program} compare A.jsonl B.jsonl [C.jsonl ...] [--names a,b,c]\n\n\
         Opens N subscribers against a running Comet server, publishes M events, and reports\n\
         deliveries, losses, latency and (with --pid) the server's memory and CPU use.\n\
         Request templates take \\r \\n \\t escapes and {{host}} {{i}} {{channel}} {{next}} {{lastmod}} {{etag}}."
    );
    o.usage(&brief)
}

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "t",
        "target",
        "subscriber address (default 127.0.0.1:4670)",
        "HOST:PORT",
    );
    o.optopt(
        "n",
        "subscribers",
        "subscriber connections or long-poll clients (default 100)",
        "N",
    );
    o.optopt(
        "",
        "request",
        "subscriber request template (long-poll: the first request)",
        "TPL",
    );
    o.optopt(
        "",
        "next-request",
        "long-poll follow-up request template",
        "TPL",
    );
    o.optopt(
        "d",
        "delimiter",
        "delivery delimiter in the response body (default \\n)",
        "STR",
    );
    o.optopt("c", "channel", "channel name (default bench)", "NAME");
    o.optopt(
        "",
        "controller",
        "publish through the Meteor controller (default 127.0.0.1:4671)",
        "HOST:PORT",
    );
    o.optopt(
        "",
        "pub-url",
        "publish by HTTP POST instead, e.g. http://127.0.0.1:8080/pub?id={channel}",
        "URL",
    );
    o.optopt(
        "m",
        "events",
        "events to publish (default 10; 0 = idle only)",
        "M",
    );
    o.optopt(
        "r",
        "rate",
        "events per second (default 0 = as fast as possible)",
        "R",
    );
    o.optopt("", "size", "event text size in bytes (default 64)", "B");
    o.optopt(
        "",
        "window",
        "publishes awaiting a reply at once (default 8)",
        "W",
    );
    o.optmulti(
        "p",
        "pid",
        "server pid(s) for RSS/CPU from /proc (repeat or comma-separate)",
        "PID",
    );
    o.optopt(
        "",
        "per-worker",
        "subscribers per worker process (default 5000, at most 19000)",
        "N",
    );
    o.optopt(
        "",
        "per-source",
        "connections per source address 127.0.0.x (default 25000)",
        "N",
    );
    o.optopt(
        "",
        "concurrency",
        "connects in progress per worker (default 256)",
        "N",
    );
    o.optopt(
        "",
        "connect-timeout",
        "seconds to get every subscriber connected (default 60)",
        "S",
    );
    o.optopt(
        "",
        "settle",
        "seconds to wait after connecting before measuring (default 1)",
        "S",
    );
    o.optopt(
        "",
        "idle",
        "extra seconds to hold subscribers idle before publishing (default 0)",
        "S",
    );
    o.optopt(
        "",
        "drain-timeout",
        "stop waiting after this many seconds without a delivery (default 5)",
        "S",
    );
    o.optopt(
        "",
        "max-time",
        "hard limit for the whole run in seconds (default 600)",
        "S",
    );
    o.optflag(
        "",
        "longpoll",
        "long-poll clients: request, one event, reconnect with the next id",
    );
    o.optflag(
        "",
        "keep-alive",
        "with --longpoll: meteord's kept-alive mode (benchka) by default; every client reuses its connection while replies carry a length",
    );
    o.optflag(
        "",
        "websocket",
        "WebSocket subscribers: the default request is a handshake for [benchws]",
    );
    o.optflag("", "json", "print one JSON object instead of a table");
    o.optopt("", "label", "scenario name in the output", "NAME");
    o.optopt(
        "",
        "tag",
        "prefix making hostids unique (default from the pid)",
        "ALNUM",
    );
    o.optopt(
        "",
        "worker",
        "internal: run as a worker for subscribers FIRST..FIRST+COUNT",
        "FIRST,COUNT",
    );
    o.optflag("h", "help", "print this help");
    o
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {s}"))
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{name}: not a number: {v}")),
    }
}

fn secs(m: &getopts::Matches, name: &str, default: f64) -> Result<Duration, String> {
    let v: f64 = num(m, name, default)?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("--{name}: out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses `http://host:port/path` into (address, host header, path).
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--pub-url must start with http://: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((resolve(&with_port)?, hostport.to_string(), path.to_string()))
}

/// Returns `Ok(None)` when help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    let m = options().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(None);
    }
    if !m.free.is_empty() {
        return Err(format!("unexpected argument: {}", m.free[0]));
    }
    let longpoll = m.opt_present("longpoll");
    let channel = m.opt_str("channel").unwrap_or_else(|| "bench".into());
    let publisher = match m.opt_str("pub-url") {
        Some(url) => {
            let (addr, host, path) = parse_url(&url.replace("{channel}", &channel))?;
            Publisher::Http { addr, host, path }
        }
        None => Publisher::Meteor(resolve(
            &m.opt_str("controller")
                .unwrap_or_else(|| "127.0.0.1:4671".into()),
        )?),
    };
    let request = m.opt_str("request");
    let keep_alive = m.opt_present("keep-alive");
    let default_req = if longpoll && keep_alive {
        KA_FIRST
    } else if longpoll {
        LP_FIRST
    } else if m.opt_present("websocket") {
        WS_REQUEST
    } else {
        STREAM_REQUEST
    };
    let next_default = if request.is_some() {
        request.clone().unwrap_or_default()
    } else if keep_alive {
        KA_NEXT.to_string()
    } else {
        LP_NEXT.to_string()
    };
    let mut pids = Vec::new();
    for p in m.opt_strs("pid") {
        for part in p.split(',').filter(|s| !s.is_empty()) {
            pids.push(
                part.trim()
                    .parse()
                    .map_err(|_| format!("--pid: not a pid: {part}"))?,
            );
        }
    }
    let worker = match m.opt_str("worker") {
        None => None,
        Some(w) => {
            let (a, b) = w.split_once(',').ok_or("--worker FIRST,COUNT")?;
            Some((
                a.parse().map_err(|_| "--worker")?,
                b.parse().map_err(|_| "--worker")?,
            ))
        }
    };
    let tag = m
        .opt_str("tag")
        .unwrap_or_else(|| format!("b{}", std::process::id()));
    if !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("--tag must be [0-9a-zA-Z]+".into());
    }
    let opts = Opts {
        target: resolve(
            &m.opt_str("target")
                .unwrap_or_else(|| "127.0.0.1:4670".into()),
        )?,
        subscribers: num(&m, "subscribers", 100)?,
        request: unescape(&request.unwrap_or_else(|| default_req.into())),
        next_request: unescape(&m.opt_str("next-request").unwrap_or(next_default)),
        delimiter: unescape(&m.opt_str("delimiter").unwrap_or_else(|| "\\n".into())).into_bytes(),
        channel,
        publisher,
        events: num(&m, "events", 10)?,
        rate: num(&m, "rate", 0.0)?,
        size: num(&m, "size", 64)?,
        window: num::<usize>(&m, "window", 8)?.max(1),
        pids,
        per_worker: num::<usize>(&m, "per-worker", 5000)?.clamp(1, 19_000),
        per_source: num::<usize>(&m, "per-source", 25_000)?.max(1),
        concurrency: num::<usize>(&m, "concurrency", 256)?.max(1),
        connect_timeout: secs(&m, "connect-timeout", 60.0)?,
        settle: secs(&m, "settle", 1.0)?,
        idle: secs(&m, "idle", 0.0)?,
        drain_timeout: secs(&m, "drain-timeout", 5.0)?,
        max_time: secs(&m, "max-time", 600.0)?,
        longpoll,
        json: m.opt_present("json"),
        label: m.opt_str("label").unwrap_or_default(),
        tag,
        worker,
    };
    if opts.subscribers > 100_000 {
        return Err("--subscribers: at most 100000".into());
    }
    if opts.rate < 0.0 || !opts.rate.is_finite() {
        return Err("--rate must be >= 0".into());
    }
    Ok(Some(opts))
}

/// Fills a request template for subscriber `i`.
pub fn render(
    tpl: &str,
    opts: &Opts,
    i: usize,
    next: Option<u64>,
    lastmod: Option<&str>,
    etag: Option<&str>,
) -> Vec<u8> {
    let mut s = tpl
        .replace("{host}", &format!("{}x{i}", opts.tag))
        .replace("{i}", &i.to_string())
        .replace("{channel}", &opts.channel);
    s = s.replace("{next}", &next.map(|n| n.to_string()).unwrap_or_default());
    s = s.replace("{lastmod}", lastmod.unwrap_or(""));
    s = s.replace("{etag}", etag.unwrap_or(""));
    s.into_bytes()
}
