//! The coordinator: spreads subscribers over worker processes, measures the server, publishes,
//! waits for the deliveries and builds the report.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::hist::Histogram;
use crate::opts::Opts;
use crate::procstat::{self, Sample};
use crate::publish::{self, PubStats};
use crate::report::{Report, Val};

/// One worker process and what it last reported.
struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    fields: HashMap<String, u64>,
    ready: bool,
    hist: Option<Histogram>,
    exited: bool,
}

/// All workers plus the channel their stdout lines arrive on.
struct Pool {
    workers: Vec<WorkerProc>,
    rx: mpsc::Receiver<(usize, Option<String>)>,
}

impl Pool {
    /// Starts one worker process per `per_worker` subscribers (or part of it), sharing
    /// the subscribers evenly.
    fn spawn(opts: &Opts, args: &[String]) -> Result<Pool, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::new();
        let nworkers = opts.subscribers.div_ceil(opts.per_worker).max(1);
        let mut first = 0;
        while first < opts.subscribers {
            let count = opts
                .subscribers
                .div_ceil(nworkers)
                .min(opts.subscribers - first);
            let mut cmd = Command::new(&exe);
            cmd.args(args);
            // Every worker must derive the same hostids: pass the tag unless the user did.
            if !args.iter().any(|a| a.starts_with("--tag")) {
                cmd.arg("--tag").arg(&opts.tag);
            }
            let mut child = cmd
                .arg("--worker")
                .arg(format!("{first},{count}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start worker process: {e}"))?;
            let stdout = child.stdout.take().ok_or("worker has no stdout")?;
            let stdin = child.stdin.take();
            let idx = workers.len();
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send((idx, Some(l))).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send((idx, None));
            });
            workers.push(WorkerProc {
                child,
                stdin,
                fields: HashMap::new(),
                ready: false,
                hist: None,
                exited: false,
            });
            first += count;
        }
        Ok(Pool { workers, rx })
    }

    /// Applies worker lines until `done` holds or `timeout` passes; false on timeout.
    fn wait(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Pool) -> bool,
    ) -> Result<bool, String> {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            match self
                .rx
                .recv_timeout((end - now).min(Duration::from_millis(50)))
            {
                Ok((w, Some(line))) => self.apply(w, &line),
                Ok((w, None)) => {
                    self.workers[w].exited = true;
                    if self.workers[w].hist.is_none() {
                        return Err(format!("worker {w} exited without a result"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(done(self)),
            }
        }
    }

    fn apply(&mut self, w: usize, line: &str) {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap_or("");
        let wp = &mut self.workers[w];
        for word in words {
            if let Some((k, v)) = word.split_once('=') {
                if k == "hist" {
                    wp.hist = Histogram::decode(v);
                } else if let Ok(n) = v.parse() {
                    wp.fields.insert(k.to_string(), n);
                }
            }
        }
        if kind == "READY" {
            wp.ready = true;
        }
    }

    fn total(&self, key: &str) -> u64 {
        self.workers
            .iter()
            .map(|w| w.fields.get(key).copied().unwrap_or(0))
            .sum()
    }

    fn max(&self, key: &str) -> u64 {
        self.workers
            .iter()
            .map(|w| w.fields.get(key).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Tells every worker to stop and collects the final results.
    fn stop(&mut self) -> Result<(), String> {
        for w in &mut self.workers {
            if let Some(mut s) = w.stdin.take() {
                let _ = s.write_all(b"STOP\n");
            }
        }
        let ok = self.wait(Duration::from_secs(30), |p| {
            p.workers.iter().all(|w| w.hist.is_some())
        })?;
        for w in &mut self.workers {
            if !ok {
                // Ends only our own child, by its pid.
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
        if ok {
            Ok(())
        } else {
            Err("workers did not report their results within 30 s".into())
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if w.child.try_wait().ok().flatten().is_none() {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// Samples the server every 20 ms in a thread and keeps the largest RSS.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pids: Vec<u32>) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut peak = 0;
            // Bounded: at most one hour of samples.
            for _ in 0..180_000 {
                if let Ok(s) = procstat::sample(&pids) {
                    peak = peak.max(s.rss);
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        PeakSampler { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

fn server_sample(opts: &Opts) -> Result<Option<Sample>, String> {
    if opts.pids.is_empty() {
        return Ok(None);
    }
    procstat::sample(&opts.pids)
        .map(Some)
        .map_err(|e| format!("reading /proc for {:?}: {e}", opts.pids))
}

/// Runs one scenario end to end.
pub fn run(opts: &Opts, args: &[String]) -> Result<Report, String> {
    let started = Instant::now();
    let deadline = started + opts.max_time;
    let idle = server_sample(opts)?;
    let overflows_before = procstat::listen_overflows();
    let mut pool = Pool::spawn(opts, args)?;
    let n = opts.subscribers as u64;
    let all_ready = pool.wait(opts.connect_timeout + Duration::from_secs(15), |p| {
        p.workers.iter().all(|w| w.ready)
    })?;
    if !all_ready {
        return Err("workers did not finish connecting in time".into());
    }
    let connect_s = started.elapsed().as_secs_f64();
    let connected = pool.total("ready");
    pool.wait(opts.settle + opts.idle, |_| false)?;
    let subscribed = server_sample(opts)?;

    let mut pub_stats = PubStats::default();
    let mut cpu = None;
    let mut client_cpu = None;
    let mut peak = None;
    if opts.events > 0 && connected > 0 {
        let sampler = (!opts.pids.is_empty()).then(|| PeakSampler::start(opts.pids.clone()));
        let before = server_sample(opts)?;
        let client_before = pool.total("cpu_ms");
        pub_stats = publish::publish(opts, deadline);
        // Wait for every delivery, or until deliveries stop coming.
        let expected = connected * opts.events;
        let mut last = (pool.total("unique") + pool.total("dups"), Instant::now());
        pool.wait(deadline.saturating_duration_since(Instant::now()), |p| {
            let got = p.total("unique") + p.total("dups");
            if got != last.0 {
                last = (got, Instant::now());
            }
            p.total("unique") >= expected || last.1.elapsed() >= opts.drain_timeout
        })?;
        let after = server_sample(opts)?;
        client_cpu = Some(pool.total("cpu_ms").saturating_sub(client_before) as f64 / 1000.0);
        if let (Some(a), Some(b)) = (after, before) {
            cpu = Some(a.cpu - b.cpu);
        }
        peak = sampler.map(PeakSampler::finish);
    }
    pool.stop()?;
    let overflows = procstat::listen_overflows()
        .zip(overflows_before)
        .map(|(a, b)| a.saturating_sub(b));

    let mut hist = Histogram::new();
    for w in &pool.workers {
        if let Some(h) = &w.hist {
            hist.merge(h);
        }
    }
    let delivered = pool.total("unique");
    let last_ns = pool.max("last_ns");
    let span = (last_ns > pub_stats.first_ns && pub_stats.first_ns > 0)
        .then(|| (last_ns - pub_stats.first_ns) as f64 / 1e9);
    let per = |count: u64, secs: Option<f64>| secs.filter(|s| *s > 0.0).map(|s| count as f64 / s);

    let mut r = Report::default();
    r.set("label", Val::Str(opts.label.clone()));
    r.set(
        "mode",
        Val::Str(if opts.longpoll { "longpoll" } else { "stream" }.into()),
    );
    r.int("subscribers", n);
    r.int("connected", connected);
    r.int("connect_failed", pool.total("failed"));
    r.num("connect_s", Some(connect_s));
    r.set(
        "listen_overflows",
        overflows.map_or(Val::Null, |o| Val::Int(o as i64)),
    );
    r.int("events", opts.events);
    r.num("rate", Some(opts.rate));
    r.int("published", pub_stats.acked);
    r.int(
        "publish_errors",
        pub_stats.errors
            + (opts.events - pub_stats.acked.min(opts.events) - pub_stats.errors.min(opts.events)),
    );
    r.num(
        "publish_s",
        (pub_stats.last_ns > pub_stats.first_ns)
            .then(|| (pub_stats.last_ns - pub_stats.first_ns) as f64 / 1e9),
    );
    // Expected is over all requested subscribers: failed connects count as lost.
    let expected = n * opts.events;
    r.int("expected", expected);
    r.int("delivered", delivered);
    r.int("lost", expected.saturating_sub(delivered));
    r.int("duplicates", pool.total("dups"));
    if opts.longpoll {
        let cycles = pool.total("cycles");
        r.int("cycles", cycles);
        r.num("cycles_per_s", per(cycles, span));
        r.int("connections", pool.total("connects"));
        r.int("lp_errors", pool.total("errors") + pool.total("bad_status"));
    } else {
        r.int("disconnected", pool.total("closed"));
    }
    r.num("delivery_s", span);
    r.num("deliveries_per_s", per(delivered, span));
    let ms = |us: u64| (hist.count() > 0).then_some(us as f64 / 1000.0);
    r.num("lat_p50_ms", ms(hist.quantile(0.5)));
    r.num("lat_p99_ms", ms(hist.quantile(0.99)));
    r.num("lat_p999_ms", ms(hist.quantile(0.999)));
    r.num("lat_max_ms", ms(hist.max()));
    let kb = |s: Option<u64>| s.map(|b| (b / 1024) as f64);
    r.num("rss_idle_kb", kb(idle.map(|s| s.rss)));
    r.num("rss_subscribed_kb", kb(subscribed.map(|s| s.rss)));
    r.num(
        "rss_per_sub_b",
        match (idle, subscribed) {
            (Some(i), Some(s)) if connected > 0 => {
                Some((s.rss as f64 - i.rss as f64) / connected as f64)
            }
            _ => None,
        },
    );
    r.num("rss_peak_kb", kb(peak));
    r.num("cpu_s", cpu);
    r.num("client_cpu_s", client_cpu);
    r.int("client_workers", pool.workers.len() as u64);
    r.num(
        "deliveries_per_cpu_s",
        cpu.filter(|c| *c > 0.0).map(|c| delivered as f64 / c),
    );
    if let Some(e) = pub_stats.fatal.or(pub_stats.first_error) {
        r.set("error", Val::Str(e));
    }
    Ok(r)
}
