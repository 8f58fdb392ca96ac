//! Several nodes (`--nodes 2|3`): a redis-server started here on a free
//! loopback port (no persistence) and that many meteord nodes sharing
//! channels through it. Publishers and subscribers are spread over the
//! nodes; a third of the way in Redis is killed and started again, empty;
//! two thirds in it is paused (SIGSTOP) for longer than the nodes'
//! `RedisTimeout`, then resumed. Every event whose publish was acknowledged
//! must reach every subscriber of its channel on every node, once, in
//! order; refused publishes (`ERR Backend unavailable`, 503) are not
//! expected (and counted if they arrive all the same).

use crate::roles::{self, Channel, Counters, NodeCounters, Shared};
use crate::server::{self, Target};
use crate::{Opts, Watch, join_by, load};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A redis-server of our own on 127.0.0.1.
struct Redis {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(binary: &Path, port: u16) -> Result<Redis, String> {
        let mut r = Redis {
            binary: binary.to_owned(),
            port,
            child: None,
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("redis-server did not answer on port {}", self.port))
    }

    fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.id() as libc::pid_t)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Killed (SIGKILL), then started again: empty.
    fn restart(&mut self) -> Result<(), String> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        thread::sleep(Duration::from_millis(500));
        self.spawn()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// What happened to Redis during the run.
#[derive(Default)]
struct Chaos {
    restarts: u32,
    pauses: u32,
    notes: Vec<String>,
}

pub fn run(o: &Opts) -> Result<bool, String> {
    let port = free_port()?;
    let mut redis = Redis::start(&o.redis_server, port)?;
    let addr = format!("127.0.0.1:{port}");
    let mut with_timeout = o.redis_timeout > 0;
    let mut nodes: Vec<Target> = Vec::new();
    for n in 0..o.nodes {
        let mut args = o.server_args.clone();
        args.extend([
            "-RedisAddress".to_string(),
            addr.clone(),
            "-MaxControllerLineBytes".to_string(),
            "1048576".to_string(),
        ]);
        let mut tries = 0;
        let node = loop {
            tries += 1;
            let mut a = args.clone();
            if with_timeout {
                a.extend(["-RedisTimeout".to_string(), o.redis_timeout.to_string()]);
            }
            match Target::spawn(&o.meteord, o.keep_log, &a) {
                Ok(t) => break t,
                Err(e) if with_timeout && tries == 1 && e.to_string().contains("RedisTimeout") => {
                    eprintln!(
                        "meteor-soak: this meteord does not know RedisTimeout; nodes run without it"
                    );
                    with_timeout = false;
                }
                Err(e) => return Err(format!("cannot start node {n}: {e}")),
            }
        };
        nodes.push(node);
    }
    let tag = std::process::id() % 10_000;
    let channels: Vec<Channel> = (0..o.channels)
        .map(|i| Channel::new(format!("soak{tag}n{i}")))
        .collect();
    let sh = Arc::new(Shared {
        sub: nodes[0].sub,
        ctl: nodes[0].ctl,
        subs: nodes.iter().map(|t| t.sub).collect(),
        ctls: nodes.iter().map(|t| t.ctl).collect(),
        nodes: (0..o.nodes).map(|_| NodeCounters::default()).collect(),
        cluster: true,
        big_events: !o.small_events,
        load_channels: o.channels,
        ctl_timeouts: None,
        modes: Vec::new(),
        max_cached: None,
        password: None,
        known_limits: false,
        head_timeout: Duration::from_secs(8),
        channels,
        c: Counters::default(),
        stop_publishing: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        problems: Mutex::new(Vec::new()),
    });
    let start_json: Vec<String> = nodes
        .iter()
        .map(|t| t.stats_json().unwrap_or_default())
        .collect();
    let mut watches: Vec<Watch> = Vec::new();
    for t in &nodes {
        let mut w = Watch::default();
        let s = server::sample(t.pid).map_err(|e| format!("/proc/{}: {e}", t.pid))?;
        w.start = s;
        w.take(s);
        watches.push(w);
    }
    eprintln!(
        "meteor-soak: {} s against {} nodes ({}) through redis-server on {addr}{}",
        o.duration.as_secs(),
        o.nodes,
        nodes
            .iter()
            .map(|t| format!("pid {} sub {} ctl {}", t.pid, t.sub.port(), t.ctl.port()))
            .collect::<Vec<_>>()
            .join("; "),
        if with_timeout {
            format!(", RedisTimeout {}", o.redis_timeout)
        } else {
            ", no RedisTimeout".into()
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
        let (rate, node) = (o.rate, p % o.nodes);
        publishers.push(spawn(
            format!("publisher {p} (node {node})"),
            Box::new(move |sh| roles::publisher(sh, p, node, chans, rate, http)),
        ));
    }
    let mut readers = Vec::new();
    for i in 0..o.streamers {
        let mut chans = vec![i % n, (i + 1 + i / n) % n];
        chans.dedup();
        let node = i % o.nodes;
        readers.push(spawn(
            format!("streamer {i}"),
            Box::new(move |sh| roles::streamer(sh, i, node, chans)),
        ));
    }
    for i in 0..o.longpollers {
        let mut chans = vec![i % n, (i + 2) % n];
        chans.dedup();
        let node = i % o.nodes;
        readers.push(spawn(
            format!("longpoller {i}"),
            Box::new(move |sh| roles::longpoller(sh, i, node, chans)),
        ));
    }

    let t0 = Instant::now();
    let restart_at = o.duration / 3;
    let pause_at = o.duration * 2 / 3;
    let pause_for = Duration::from_secs(o.redis_timeout.max(2) + 2);
    let mut chaos = Chaos::default();
    let mut paused_until: Option<Instant> = None;
    let mut next_report = t0 + o.report_every;
    let mut died = false;
    while t0.elapsed() < o.duration {
        thread::sleep(Duration::from_millis(250));
        let el = t0.elapsed();
        if chaos.restarts == 0 && el >= restart_at {
            chaos.restarts += 1;
            let before = load(&sh.c.refused);
            match redis.restart() {
                Ok(()) => chaos.notes.push(format!(
                    "at {:.1} s Redis killed and started again, empty (refused so far {before})",
                    el.as_secs_f64()
                )),
                Err(e) => {
                    sh.problem(format!("redis restart: {e}"));
                    chaos.notes.push(format!("restart failed: {e}"));
                }
            }
        }
        if chaos.pauses == 0 && el >= pause_at {
            chaos.pauses += 1;
            redis.signal(libc::SIGSTOP);
            paused_until = Some(Instant::now() + pause_for);
            chaos.notes.push(format!(
                "at {:.1} s Redis paused (SIGSTOP) for {} s (refused so far {})",
                el.as_secs_f64(),
                pause_for.as_secs(),
                load(&sh.c.refused)
            ));
        }
        if let Some(u) = paused_until
            && Instant::now() >= u
        {
            redis.signal(libc::SIGCONT);
            paused_until = None;
            chaos.notes.push(format!(
                "at {:.1} s Redis resumed (SIGCONT)",
                t0.elapsed().as_secs_f64()
            ));
        }
        for (t, w) in nodes.iter_mut().zip(watches.iter_mut()) {
            if !t.alive() {
                died = true;
            } else if let Ok(s) = server::sample(t.pid) {
                w.take(s);
            }
        }
        if died {
            sh.problem("a node died".into());
            break;
        }
        if Instant::now() >= next_report {
            next_report += o.report_every;
            eprintln!(
                "[{:>5} s] published {} refused {} delivered {} gaps {} closed-by-server {}",
                t0.elapsed().as_secs(),
                load(&sh.c.published),
                load(&sh.c.refused),
                load(&sh.c.deliveries_stream) + load(&sh.c.deliveries_longpoll),
                load(&sh.c.gaps),
                load(&sh.c.wb_closed_by_server)
            );
        }
    }
    if paused_until.is_some() {
        redis.signal(libc::SIGCONT);
        chaos.notes.push("resumed at the end of the load".into());
    }
    let load_time = t0.elapsed();
    sh.stop_publishing.store(true, Ordering::Relaxed);
    let mut stuck = join_by(&mut publishers, Instant::now() + Duration::from_secs(15));
    sh.draining.store(true, Ordering::Relaxed);
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs(30);
    while Instant::now() < drain_deadline && readers.iter().any(|(_, h)| !h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
    }
    let drain_time = drain_start.elapsed();
    let not_caught_up = readers.iter().filter(|(_, h)| !h.is_finished()).count();
    if not_caught_up > 0 {
        sh.problem(format!(
            "{not_caught_up} subscribers had not caught up after {} s",
            drain_time.as_secs()
        ));
    }
    // Stragglers stop now and count what they still miss.
    sh.stop.store(true, Ordering::Relaxed);
    stuck.extend(join_by(
        &mut readers,
        Instant::now() + Duration::from_secs(5),
    ));

    // Settle: every node back to no subscriber and its start descriptors.
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    let mut end_json = vec![String::new(); nodes.len()];
    let mut settled = vec![false; nodes.len()];
    while !died && Instant::now() < settle_deadline && settled.iter().any(|s| !s) {
        for (i, t) in nodes.iter().enumerate() {
            if settled[i] {
                continue;
            }
            if let Ok(j) = t.stats_json() {
                let subs = server::json_u64(&j, "current_subscribers");
                end_json[i] = j;
                if subs == Some(0)
                    && let Ok(s) = server::sample(t.pid)
                    && s.fds <= watches[i].start.fds
                {
                    watches[i].take(s);
                    settled[i] = true;
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    let mut exits = Vec::new();
    for (i, t) in nodes.iter_mut().enumerate() {
        if let Ok(s) = server::sample(t.pid) {
            watches[i].take(s);
        }
        let alive = t.alive();
        exits.push((alive, if alive { t.stop() } else { None }));
    }
    drop(redis);
    report(
        o,
        &sh,
        &nodes,
        &watches,
        &start_json,
        &end_json,
        &settled,
        &exits,
        &chaos,
        load_time,
        drain_time,
        &stuck,
        with_timeout,
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    sh: &Shared,
    nodes: &[Target],
    watches: &[Watch],
    start_json: &[String],
    end_json: &[String],
    settled: &[bool],
    exits: &[(bool, Option<i32>)],
    chaos: &Chaos,
    load_time: Duration,
    drain_time: Duration,
    stuck: &[String],
    with_timeout: bool,
) -> Result<bool, String> {
    let c = &sh.c;
    let stat = |json: &str, key: &str| server::json_u64(json, key).unwrap_or(0);
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            fails.push(what);
        }
    };
    for (i, (alive, _)) in exits.iter().enumerate() {
        check(*alive, format!("node {i} died"));
    }
    // Counters that must stay at zero, and what a non-zero one means.
    for (counter, what) in [
        (&c.gaps, "acknowledged events missed by subscribers"),
        (
            &c.missing_at_end,
            "acknowledged events never delivered by the end",
        ),
        (&c.duplicates, "duplicate events"),
        (&c.reorders, "ids out of order"),
        (&c.bad_replies, "bad replies"),
        (
            &c.publish_errors,
            "publishes failed otherwise than ERR Backend unavailable",
        ),
    ] {
        let n = load(counter);
        check(n == 0, format!("{n} {what}"));
    }
    for (i, t) in nodes.iter().enumerate() {
        check(
            t.logs.panics.load(Ordering::Relaxed) == 0,
            format!("node {i}'s log mentions a panic"),
        );
        check(
            settled[i] && watches[i].last.fds == watches[i].start.fds,
            format!(
                "node {i}: descriptors did not come back: start {}, end {}",
                watches[i].start.fds, watches[i].last.fds
            ),
        );
    }
    check(
        stuck.is_empty(),
        format!("client threads did not stop: {stuck:?}"),
    );
    let secs = load_time.as_secs_f64().max(0.001);
    println!("meteor-soak report (several nodes)");
    println!(
        "  load                   {:.0} s; {} nodes through Redis{}; {} channels, {} publishers x {}/s (events up to {} KB), {} streaming, {} long-poll",
        secs,
        nodes.len(),
        if with_timeout {
            format!(" (RedisTimeout {})", o.redis_timeout)
        } else {
            " (no RedisTimeout: this meteord does not know it)".into()
        },
        o.channels,
        o.publishers,
        o.rate,
        if o.small_events { 32 } else { 256 },
        o.streamers,
        o.longpollers
    );
    for note in &chaos.notes {
        println!("  redis                  {note}");
    }
    println!(
        "  events published       {} acknowledged ({:.0}/s, {} over HTTP), {} refused (ERR Backend unavailable / 503), {} other failures",
        load(&c.published),
        load(&c.published) as f64 / secs,
        load(&c.published_http),
        load(&c.refused),
        load(&c.publish_errors)
    );
    println!(
        "  deliveries checked     {} (streaming {}, long-poll {}); refused events delivered all the same {}",
        load(&c.deliveries_stream) + load(&c.deliveries_longpoll),
        load(&c.deliveries_stream),
        load(&c.deliveries_longpoll),
        load(&c.delivered_unacked)
    );
    println!(
        "  GAPS                   {}  (missing at end {}, duplicates {}, out of order {}; drained in {:.1} s); subscribers closed by a node {}",
        load(&c.gaps),
        load(&c.missing_at_end),
        load(&c.duplicates),
        load(&c.reorders),
        drain_time.as_secs_f64(),
        load(&c.wb_closed_by_server)
    );
    let lat = &c.latency;
    println!(
        "  publish latency        p50 <= {:.1} ms, p99 <= {:.1} ms, max {:.1} ms",
        lat.quantile(0.5) as f64 / 1000.0,
        lat.quantile(0.99) as f64 / 1000.0,
        lat.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    for (i, t) in nodes.iter().enumerate() {
        let nc = &sh.nodes[i];
        let w = &watches[i];
        let d = |k: &str| stat(&end_json[i], k).saturating_sub(stat(&start_json[i], k));
        println!(
            "  node {i} (pid {})       published {} refused {}; delivered {} to its subscribers, closed {} of them; server messages_served +{}, unique_messages +{}; fds {}/{}/{}, RSS {}/{}/{} KiB (start/peak/end); log: panics {}, slowConsumer {}; exit {}",
            t.pid,
            load(&nc.published),
            load(&nc.refused),
            load(&nc.deliveries),
            load(&nc.closed_by_server),
            d("messages_served"),
            d("unique_messages"),
            w.start.fds,
            w.peak_fds,
            w.last.fds,
            w.start.rss_kib,
            w.peak_rss,
            w.last.rss_kib,
            t.logs.panics.load(Ordering::Relaxed),
            t.logs.slow_consumer.load(Ordering::Relaxed),
            exits[i]
                .1
                .map_or("none (killed)".to_string(), |c| c.to_string())
        );
        if let Some(p) = t.log_path() {
            println!("  node {i} full log       {}", p.display());
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
        for (i, t) in nodes.iter().enumerate() {
            println!("  node {i} log tail:");
            for l in t.logs.tail.lock().unwrap().iter().rev().take(12).rev() {
                println!("    {l}");
            }
        }
    }
    Ok(fails.is_empty())
}
