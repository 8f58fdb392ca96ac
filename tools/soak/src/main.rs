//! meteor-soak: runs meteord for a chosen time under publishers, streaming,
//! long-poll, churning, slow and abusive clients, then reports events
//! published, deliveries, gaps seen by well-behaved subscribers (must be 0)
//! and the server's descriptors and memory at start, peak and end.
//!
//! It starts its own meteord on 127.0.0.1 with a temporary configuration
//! (`--meteord PATH`, default `target/release/meteord`), or attaches to a
//! running one (`--attach --sub-port P --ctl-port P --pid N`, which must
//! have the classic `xhrinteractive`, `longpoll` and `smartpoll` modes of
//! the bundled meteor.conf). Only std threads, only 127.0.0.1, and it stops
//! by itself: every socket wait has a deadline.

mod cluster;
mod hostile;
mod roles;
mod server;
mod wire;

use roles::{Channel, Counters, NodeCounters, Shared};
use server::{Sample, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: meteor-soak [options]

  --duration SECS      how long to run the load (default 600)
  --meteord PATH       meteord binary to start (default target/release/meteord)
  --server-arg ARG     extra argument for the started meteord (repeatable)
  --keep-log           keep the started server's full log (path in the report)
  --attach             use a running server instead (on 127.0.0.1):
  --sub-port N           its subscriber port
  --ctl-port N           its controller port
  --pid N                its process id (for descriptors, memory, CPU)
  --password PW          its ControllerPassword, if any
  --channels N         channels (default 6)
  --publishers N       publishers, the last one over HTTP (default 3)
  --rate R             events per second per publisher (default 150)
  --streamers N        well-behaved streaming subscribers (default 40)
  --longpollers N      well-behaved long-poll subscribers (default 10)
  --churners N         connect/act/leave clients (default 6)
  --slow N             slow and stalled subscribers (default 4)
  --abusers N          clients crossing every input bound (default 2)
  --idlers N           silent / half-finished controllers (default 3)
  --pipe-readers N     readers of the pipelining publisher's channel (default 4)
  --pipe-events N      events per pipelined burst, 1 KB each (default 3000)
  --no-hostile         without the round-two hostile roles (idlers, path
                       aliases, escaping modes, non-reading controller,
                       pipelining publisher)
  --nodes N            several nodes (2 or 3) sharing channels through a
                       redis-server started here; Redis is restarted and
                       paused during the run
  --redis-server PATH  redis-server binary (default redis-server)
  --redis-timeout S    the nodes' RedisTimeout (default 2; 0: leave it out)
  --small-events       with --nodes: events up to 32 KB instead of 256 KB
  --report-every SECS  progress line interval (default 30)
";

pub(crate) struct Opts {
    duration: Duration,
    meteord: PathBuf,
    server_args: Vec<String>,
    keep_log: bool,
    attach: Option<(u16, u16, u32)>,
    password: Option<String>,
    channels: usize,
    publishers: usize,
    rate: f64,
    streamers: usize,
    longpollers: usize,
    churners: usize,
    slow: usize,
    abusers: usize,
    idlers: usize,
    pipe_readers: usize,
    pipe_events: u64,
    hostile: bool,
    nodes: usize,
    redis_server: PathBuf,
    redis_timeout: u64,
    small_events: bool,
    report_every: Duration,
}

fn parse_opts(args: &[String]) -> Result<Option<Opts>, String> {
    let mut o = Opts {
        duration: Duration::from_secs(600),
        meteord: PathBuf::from("target/release/meteord"),
        server_args: Vec::new(),
        keep_log: false,
        attach: None,
        password: None,
        channels: 6,
        publishers: 3,
        rate: 150.0,
        streamers: 40,
        longpollers: 10,
        churners: 6,
        slow: 4,
        abusers: 2,
        idlers: 3,
        pipe_readers: 4,
        pipe_events: 3000,
        hostile: true,
        nodes: 0,
        redis_server: PathBuf::from("redis-server"),
        redis_timeout: 2,
        small_events: false,
        report_every: Duration::from_secs(30),
    };
    let (mut attach, mut sub, mut ctl, mut pid) = (false, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: '{v}' is not a number"))
        }
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--duration" => o.duration = Duration::from_secs_f64(num(a, value(a)?)?),
            "--meteord" => o.meteord = PathBuf::from(value(a)?),
            "--server-arg" => o.server_args.push(value(a)?),
            "--keep-log" => o.keep_log = true,
            "--attach" => attach = true,
            "--sub-port" => sub = Some(num(a, value(a)?)?),
            "--ctl-port" => ctl = Some(num(a, value(a)?)?),
            "--pid" => pid = Some(num(a, value(a)?)?),
            "--password" => o.password = Some(value(a)?),
            "--channels" => o.channels = num(a, value(a)?)?,
            "--publishers" => o.publishers = num(a, value(a)?)?,
            "--rate" => o.rate = num(a, value(a)?)?,
            "--streamers" => o.streamers = num(a, value(a)?)?,
            "--longpollers" => o.longpollers = num(a, value(a)?)?,
            "--churners" => o.churners = num(a, value(a)?)?,
            "--slow" => o.slow = num(a, value(a)?)?,
            "--abusers" => o.abusers = num(a, value(a)?)?,
            "--idlers" => o.idlers = num(a, value(a)?)?,
            "--pipe-readers" => o.pipe_readers = num(a, value(a)?)?,
            "--pipe-events" => o.pipe_events = num(a, value(a)?)?,
            "--no-hostile" => o.hostile = false,
            "--nodes" => o.nodes = num(a, value(a)?)?,
            "--redis-server" => o.redis_server = PathBuf::from(value(a)?),
            "--redis-timeout" => o.redis_timeout = num(a, value(a)?)?,
            "--small-events" => o.small_events = true,
            "--report-every" => o.report_every = Duration::from_secs_f64(num(a, value(a)?)?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if attach {
        match (sub, ctl, pid) {
            (Some(s), Some(c), Some(p)) => o.attach = Some((s, c, p)),
            _ => return Err("--attach needs --sub-port, --ctl-port and --pid".into()),
        }
    } else if o.password.is_some() {
        return Err("--password is for --attach".into());
    }
    if o.nodes != 0 {
        if !(2..=3).contains(&o.nodes) {
            return Err("--nodes must be 2 or 3".into());
        }
        if o.attach.is_some() {
            return Err("--nodes starts its own servers: not with --attach".into());
        }
    }
    if o.pipe_events > 100_000 || o.idlers > 50 || o.pipe_readers > 50 {
        return Err("--pipe-events at most 100000, --idlers and --pipe-readers at most 50".into());
    }
    if o.channels == 0 || o.publishers == 0 {
        return Err("--channels and --publishers must be at least 1".into());
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_opts(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("meteor-soak: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if opts.nodes > 0 {
        cluster::run(&opts)
    } else {
        run(&opts)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("meteor-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Start, peak and end of the server's descriptors and memory.
#[derive(Default)]
pub(crate) struct Watch {
    pub(crate) start: Sample,
    pub(crate) peak_fds: u64,
    pub(crate) peak_rss: u64,
    pub(crate) last: Sample,
}

impl Watch {
    pub(crate) fn take(&mut self, s: Sample) {
        self.peak_fds = self.peak_fds.max(s.fds);
        self.peak_rss = self.peak_rss.max(s.rss_kib);
        self.last = s;
    }
}

pub(crate) fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Waits for threads to finish, up to `deadline`; returns how many did not.
pub(crate) fn join_by(
    handles: &mut Vec<(String, JoinHandle<()>)>,
    deadline: Instant,
) -> Vec<String> {
    while Instant::now() < deadline && handles.iter().any(|(_, h)| !h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
    }
    let mut stuck = Vec::new();
    for (name, h) in handles.drain(..) {
        if h.is_finished() {
            if h.join().is_err() {
                stuck.push(format!("{name} (panicked)"));
            }
        } else {
            stuck.push(name);
        }
    }
    stuck
}

fn run(o: &Opts) -> Result<bool, String> {
    let mut target = match o.attach {
        Some((sub, ctl, pid)) => Target::attach(sub, ctl, pid, o.password.clone()),
        None => Target::spawn(&o.meteord, o.keep_log, &o.server_args)
            .map_err(|e| format!("cannot start {}: {e}", o.meteord.display()))?,
    };
    let pid = target.pid;
    let start_json = target.stats_json().map_err(|e| e.to_string())?;
    let mut watch = Watch::default();
    let first = server::sample(pid).map_err(|e| format!("/proc/{pid}: {e}"))?;
    watch.start = first;
    watch.take(first);
    let tag = std::process::id() % 10_000;
    let mut channels: Vec<Channel> = (0..o.channels)
        .map(|i| Channel::new(format!("soak{tag}x{i}")))
        .collect();
    let pipe_chan = channels.len();
    channels.push(Channel::new(format!("soak{tag}pipe")));
    let started = o.attach.is_none();
    let sh = Arc::new(Shared {
        sub: target.sub,
        ctl: target.ctl,
        subs: vec![target.sub],
        ctls: vec![target.ctl],
        nodes: vec![NodeCounters::default()],
        cluster: false,
        big_events: false,
        load_channels: o.channels,
        ctl_timeouts: started.then_some((
            Duration::from_secs(server::CTL_COMMAND_TIMEOUT),
            Duration::from_secs(server::CTL_IDLE_TIMEOUT),
        )),
        modes: if started {
            hostile::SOAK_MODES.to_vec()
        } else {
            hostile::BUNDLED_MODES.to_vec()
        },
        max_cached: started.then_some(server::MAX_CACHED),
        password: o.password.clone(),
        known_limits: o.attach.is_none(),
        head_timeout: if o.attach.is_none() {
            Duration::from_secs(8)
        } else {
            Duration::from_secs(20)
        },
        channels,
        c: Counters::default(),
        stop_publishing: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        problems: Mutex::new(Vec::new()),
    });
    eprintln!(
        "meteor-soak: {} s against meteord pid {pid} (subscribers {}, controllers {}){}",
        o.duration.as_secs(),
        target.sub,
        target.ctl,
        match &target.spawned_binary {
            Some(b) => format!(", started from {}", b.display()),
            None => ", attached".into(),
        }
    );
    let spawn = |name: String, f: Box<dyn FnOnce(&Shared) + Send>| {
        let sh = Arc::clone(&sh);
        let h = thread::Builder::new()
            .name(name.clone())
            .stack_size(256 * 1024)
            .spawn(move || f(&sh))
            .expect("spawn thread");
        (name, h)
    };
    let n = o.channels;
    let mut publishers = Vec::new();
    for p in 0..o.publishers {
        let chans: Vec<usize> = (0..n).filter(|c| c % o.publishers == p).collect();
        if chans.is_empty() {
            continue;
        }
        let http = o.publishers > 1 && p == o.publishers - 1;
        let rate = o.rate;
        publishers.push(spawn(
            format!("publisher {p}"),
            Box::new(move |sh| roles::publisher(sh, p, 0, chans, rate, http)),
        ));
    }
    let mut readers = Vec::new();
    for i in 0..o.streamers {
        let chans = vec![i % n, (i + 1 + i / n) % n];
        let mut chans = chans;
        chans.dedup();
        readers.push(spawn(
            format!("streamer {i}"),
            Box::new(move |sh| roles::streamer(sh, i, 0, chans)),
        ));
    }
    for i in 0..o.longpollers {
        let mut chans = vec![i % n, (i + 2) % n];
        chans.dedup();
        readers.push(spawn(
            format!("longpoller {i}"),
            Box::new(move |sh| roles::longpoller(sh, i, 0, chans)),
        ));
    }
    let mut others = Vec::new();
    for i in 0..o.churners {
        others.push(spawn(
            format!("churner {i}"),
            Box::new(move |sh| roles::churner(sh, i)),
        ));
    }
    for i in 0..o.slow {
        others.push(spawn(
            format!("slow {i}"),
            Box::new(move |sh| roles::slow(sh, i)),
        ));
    }
    for i in 0..o.abusers {
        others.push(spawn(
            format!("abuser {i}"),
            Box::new(move |sh| roles::abuser(sh, i)),
        ));
    }

    if o.hostile {
        for i in 0..o.idlers {
            others.push(spawn(
                format!("idler {i}"),
                Box::new(move |sh| hostile::idler(sh, i)),
            ));
        }
        others.push(spawn("prober".into(), Box::new(hostile::prober)));
        others.push(spawn("non-reader".into(), Box::new(hostile::nonreader)));
        let (readers, events) = (o.pipe_readers, o.pipe_events);
        others.push(spawn(
            "pipeliner".into(),
            Box::new(move |sh| hostile::pipeliner(sh, pipe_chan, readers, events)),
        ));
        if started {
            // MaxControllers silent clients, on a server of their own so
            // that the load's publishers are not locked out meanwhile.
            let (bin, args) = (o.meteord.clone(), o.server_args.clone());
            others.push(spawn(
                "lockout".into(),
                Box::new(move |sh| {
                    let mut a = args;
                    a.extend(["-MaxControllers".to_string(), "8".to_string()]);
                    let r = match Target::spawn(&bin, false, &a) {
                        Ok(t) => hostile::lockout(
                            t.ctl,
                            8,
                            Duration::from_secs(server::CTL_COMMAND_TIMEOUT),
                        ),
                        Err(e) => Err(format!("cannot start a second server: {e}")),
                    };
                    *sh.c.h.lockout.lock().unwrap() = Some(r);
                }),
            ));
        }
    }

    // The load runs; the server is watched every second.
    let t0 = Instant::now();
    let mut next_report = t0 + o.report_every;
    let mut died = false;
    while t0.elapsed() < o.duration {
        thread::sleep(Duration::from_secs(1).min(o.duration.saturating_sub(t0.elapsed())));
        if !target.alive() {
            died = true;
            sh.problem("the server process is gone".into());
            break;
        }
        if let Ok(s) = server::sample(pid) {
            watch.take(s);
        }
        if t0.elapsed().as_secs().is_multiple_of(2)
            && let Some(j) = hostile::stats(&sh)
        {
            hostile::note_stats(&sh, &j);
        }
        if Instant::now() >= next_report {
            next_report += o.report_every;
            let c = &sh.c;
            eprintln!(
                "[{:>5} s] published {} delivered {} gaps {} closed-by-server {} slow-dropped {} abuse {} (unexpected {}) fds {} rss {} KiB",
                t0.elapsed().as_secs(),
                load(&c.published),
                deliveries(c),
                load(&c.gaps),
                load(&c.wb_closed_by_server),
                load(&c.slow_dropped_seen) + load(&c.stalled_dropped_seen),
                load(&c.abuse_sent),
                load(&c.abuse_unexpected),
                watch.last.fds,
                watch.last.rss_kib
            );
        }
    }
    let load_time = t0.elapsed();

    // Publishers stop; readers catch up with the last event; everyone stops.
    sh.stop_publishing.store(true, Ordering::Relaxed);
    let mut stuck = join_by(&mut publishers, Instant::now() + Duration::from_secs(15));
    sh.draining.store(true, Ordering::Relaxed);
    let drain_start = Instant::now();
    stuck.extend(join_by(
        &mut readers,
        Instant::now() + Duration::from_secs(20),
    ));
    let drain_time = drain_start.elapsed();
    sh.stop.store(true, Ordering::Relaxed);
    stuck.extend(join_by(
        &mut others,
        Instant::now() + Duration::from_secs(20),
    ));

    // Settle: every client connection is gone; the server must be back
    // where it started.
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    let mut end_json = String::new();
    let mut settled = false;
    while !died && Instant::now() < settle_deadline {
        if let Ok(j) = target.stats_json() {
            let subs = server::json_u64(&j, "current_subscribers");
            let ctls = server::json_u64(&j, "current_controllers");
            end_json = j;
            if subs == Some(0)
                && ctls == Some(1)
                && let Ok(s) = server::sample(pid)
                && s.fds <= watch.start.fds
            {
                watch.take(s);
                settled = true;
                break;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    if !died && let Ok(s) = server::sample(pid) {
        watch.take(s);
    }
    let alive_at_end = !died && target.alive();
    let exit = if alive_at_end { target.stop() } else { None };
    report(
        o,
        &sh,
        &target,
        &watch,
        &start_json,
        &end_json,
        load_time,
        drain_time,
        settled,
        alive_at_end,
        exit,
        &stuck,
    )
}

/// The round-two hostile roles' lines of the report.
fn hostile_report(sh: &Shared) {
    let c = &sh.c;
    let h = &c.h;
    println!(
        "  idle controllers       {} checked (silent, half command, HTTP body never sent, half head: ERR Timeout / 408 at ControllerCommandTimeout; silent after a command: closed without a word at ControllerIdleTimeout), {} unexpected",
        load(&h.idle_checked),
        load(&h.idle_bad)
    );
    match &*h.lockout.lock().unwrap() {
        Some(Ok(t)) => println!("  MaxControllers lockout {t}"),
        Some(Err(e)) => println!("  MaxControllers lockout FAILED: {e}"),
        None => {
            println!("  MaxControllers lockout not run (attached server, or no result in time)")
        }
    }
    println!(
        "  path aliases           {} requests of /index.html aliases, {} bad; document_cache_bytes peak {} for a file of {} bytes (one copy with its head and bookkeeping: at most {})",
        load(&h.alias_requests),
        load(&h.alias_bad),
        load(&h.doc_cache_max),
        load(&h.doc_size),
        load(&h.doc_bound)
    );
    println!(
        "  escaping modes         {} rounds x {} modes ({} requests), {} bad replies, {} rounds memory not back; {}; bytes_cached peak {}{}",
        load(&h.escape_rounds),
        sh.modes.len(),
        load(&h.escape_requests),
        load(&h.escape_bad),
        load(&h.escape_not_returned),
        h.escape_worst.lock().unwrap(),
        load(&h.bytes_cached_max),
        sh.max_cached
            .map(|m| format!(" (MaxCachedBytes {m})"))
            .unwrap_or_default()
    );
    println!(
        "  non-reading controller {} rounds over {} channels, ~{} LISTCHANNELS sent unread; the server stopped reading (our writes stalled) in {}, closed it in {}, left it open (15 s) in {}",
        load(&h.nonreader_rounds),
        load(&h.many_channels),
        load(&h.nonreader_commands),
        load(&h.nonreader_stalled),
        load(&h.nonreader_closed),
        load(&h.nonreader_open)
    );
    println!(
        "  pipelining publisher   {} bursts, {} events acknowledged ({} not); {} readers: {} deliveries, dropped {}, missing {}, skipped {}",
        load(&h.pipe_rounds),
        load(&h.pipe_events),
        load(&h.pipe_publish_failed),
        load(&h.pipe_readers),
        load(&c.deliveries_pipe),
        load(&h.pipe_readers_dropped),
        load(&h.pipe_missing),
        load(&c.pipe_gaps)
    );
}

fn deliveries(c: &Counters) -> u64 {
    load(&c.deliveries_stream)
        + load(&c.deliveries_longpoll)
        + load(&c.deliveries_churn)
        + load(&c.deliveries_poll)
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    sh: &Shared,
    target: &Target,
    w: &Watch,
    start_json: &str,
    end_json: &str,
    load_time: Duration,
    drain_time: Duration,
    settled: bool,
    alive: bool,
    exit: Option<i32>,
    stuck: &[String],
) -> Result<bool, String> {
    let c = &sh.c;
    let stat = |json: &str, key: &str| server::json_u64(json, key).unwrap_or(0);
    let delta = |key: &str| stat(end_json, key).saturating_sub(stat(start_json, key));
    let published = load(&c.published);
    let extra = load(&c.published_extra);
    let server_published = delta("unique_messages");
    let h = &c.h;
    let cpu = w.last.cpu - w.start.cpu;
    let logs = &target.logs;
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            fails.push(what);
        }
    };
    check(alive, "the server died".into());
    // Counters that must stay at zero, and what a non-zero one means.
    for (counter, what) in [
        (&c.gaps, "events missed by well-behaved subscribers"),
        (&c.missing_at_end, "events never delivered by the end"),
        (&c.duplicates, "duplicate events"),
        (&c.reorders, "ids out of order"),
        (
            &c.slow_gaps,
            "events skipped for slow subscribers (must drop, not skip)",
        ),
        (&c.abuse_unexpected, "unexpected answers to abuse"),
        (&c.bad_replies, "bad replies"),
        (&c.publish_errors, "failed publishes"),
        (&c.refused, "publishes refused"),
    ] {
        let n = load(counter);
        check(n == 0, format!("{n} {what}"));
    }
    check(
        server_published == published + extra,
        format!(
            "the server counted {server_published} new messages, publishers {published} + hostile roles {extra}"
        ),
    );
    if o.hostile {
        check(
            load(&h.idle_bad) == 0,
            format!(
                "{} silent or half-finished controllers not answered as expected",
                load(&h.idle_bad)
            ),
        );
        if let Some(Err(e)) = &*h.lockout.lock().unwrap() {
            check(false, format!("MaxControllers silent clients: {e}"));
        }
        check(
            load(&h.alias_bad) == 0,
            format!("{} path-alias problems", load(&h.alias_bad)),
        );
        check(
            load(&h.escape_bad) == 0 && load(&h.escape_not_returned) == 0,
            format!(
                "escaping modes: {} bad replies, {} rounds where bytes_cached did not come back",
                load(&h.escape_bad),
                load(&h.escape_not_returned)
            ),
        );
        if let Some(max) = sh.max_cached {
            check(
                load(&h.bytes_cached_max) <= max,
                format!(
                    "bytes_cached reached {} over MaxCachedBytes {max}",
                    load(&h.bytes_cached_max)
                ),
            );
        }
        check(
            load(&h.pipe_missing) == 0
                && load(&h.pipe_readers_dropped) == 0
                && load(&c.pipe_gaps) == 0,
            format!(
                "pipelined publishing: {} readers dropped, {} events missing, {} skipped",
                load(&h.pipe_readers_dropped),
                load(&h.pipe_missing),
                load(&c.pipe_gaps)
            ),
        );
    }
    check(
        settled && w.last.fds == w.start.fds,
        format!(
            "descriptors did not come back: start {}, end {}",
            w.start.fds, w.last.fds
        ),
    );
    check(
        logs.panics.load(Ordering::Relaxed) == 0,
        "the server log mentions a panic".into(),
    );
    check(
        stuck.is_empty(),
        format!("client threads did not stop: {stuck:?}"),
    );

    let secs = load_time.as_secs_f64().max(0.001);
    println!("meteor-soak report");
    println!(
        "  server                 pid {} {}",
        target.pid,
        match &target.spawned_binary {
            Some(b) => format!("(started from {})", b.display()),
            None => "(attached)".into(),
        }
    );
    println!(
        "  load                   {:.0} s; {} channels, {} publishers x {}/s, {} streaming, {} long-poll, {} churning, {} slow, {} abusive",
        secs,
        o.channels,
        o.publishers,
        o.rate,
        o.streamers,
        o.longpollers,
        o.churners,
        o.slow,
        o.abusers
    );
    println!(
        "  events published       {published} ({:.0}/s; {} over HTTP; {extra} more by the hostile roles; server counted {server_published}; publish errors {})",
        published as f64 / secs,
        load(&c.published_http),
        load(&c.publish_errors)
    );
    println!(
        "  deliveries checked     {} (streaming {}, long-poll {}, churning {}, polls {}, slow {}); server messages_served {}",
        deliveries(c) + load(&c.deliveries_slow),
        load(&c.deliveries_stream),
        load(&c.deliveries_longpoll),
        load(&c.deliveries_churn),
        load(&c.deliveries_poll),
        load(&c.deliveries_slow),
        delta("messages_served")
    );
    println!(
        "  GAPS (well-behaved)    {}  (missing at end {}, duplicates {}, out of order {}; drained in {:.1} s)",
        load(&c.gaps),
        load(&c.missing_at_end),
        load(&c.duplicates),
        load(&c.reorders),
        drain_time.as_secs_f64()
    );
    println!(
        "  well-behaved closed    {} by the server ({} without eof(), i.e. dropped); they resumed with .r<id>",
        load(&c.wb_closed_by_server),
        load(&c.wb_closed_slow)
    );
    println!(
        "  slow subscribers       dropped: slow readers {} (not dropped {}), stalled {} (not dropped {}); skipped events {}; server slow_consumers_dropped {} (log: slowConsumer {}, writeTimeout {})",
        load(&c.slow_dropped_seen),
        load(&c.slow_not_dropped),
        load(&c.stalled_dropped_seen),
        load(&c.stalled_not_dropped),
        load(&c.slow_gaps),
        delta("slow_consumers_dropped"),
        logs.slow_consumer.load(Ordering::Relaxed),
        logs.write_timeout.load(Ordering::Relaxed)
    );
    println!(
        "  abuse                  {} actions, {} unexpected answers; server errors_served +{}, connections_refused +{}",
        load(&c.abuse_sent),
        load(&c.abuse_unexpected),
        delta("errors_served"),
        delta("connections_refused")
    );
    println!(
        "  connections            {} opened by clients ({} failed), {} churn sessions; server accepted +{} subscriber, +{} controller",
        load(&c.connections),
        load(&c.connect_errors),
        load(&c.churn_sessions),
        delta("subscriber_connections_accepted"),
        delta("controller_connections_accepted")
    );
    let lat = &c.latency;
    println!(
        "  publish latency        p50 <= {:.1} ms, p99 <= {:.1} ms, max {:.1} ms (acknowledged publishes of the load)",
        lat.quantile(0.5) as f64 / 1000.0,
        lat.quantile(0.99) as f64 / 1000.0,
        lat.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    if o.hostile {
        hostile_report(sh);
    }
    println!(
        "  server descriptors     start {}, peak {}, end {}",
        w.start.fds, w.peak_fds, w.last.fds
    );
    println!(
        "  server RSS (KiB)       start {}, peak {}, end {}",
        w.start.rss_kib, w.peak_rss, w.last.rss_kib
    );
    println!(
        "  server CPU             {:.1} s ({:.1}% of one core over the run)",
        cpu,
        100.0 * cpu / secs
    );
    if o.attach.is_none() {
        println!(
            "  server log             {} lines, panics {}, accept failures {}, refusals {}, socket errors {}; exit status {}",
            logs.lines.load(Ordering::Relaxed),
            logs.panics.load(Ordering::Relaxed),
            logs.accept_failed.load(Ordering::Relaxed),
            logs.refused.load(Ordering::Relaxed),
            logs.socket_errors.load(Ordering::Relaxed),
            exit.map_or("none (killed)".to_string(), |c| c.to_string())
        );
        if let Some(p) = target.log_path() {
            println!("  full server log        {}", p.display());
        }
    }
    let problems = sh.problems.lock().unwrap();
    if !problems.is_empty() {
        println!("  first problems seen:");
        for p in problems.iter().take(20) {
            println!("    - {p}");
        }
    }
    if fails.is_empty() {
        println!("RESULT: PASS");
    } else {
        println!("RESULT: FAIL");
        for f in &fails {
            println!("  - {f}");
        }
        if o.attach.is_none() {
            println!("  server log tail:");
            for l in logs.tail.lock().unwrap().iter() {
                println!("    {l}");
            }
        }
    }
    Ok(fails.is_empty())
}
