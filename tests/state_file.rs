//! The state file (`StateFile`, `StateSync`): cached events and ids survive
//! a kill -9, a clean stop, a torn tail; foreign files are refused; the
//! file is compacted; a full disk (RLIMIT_FSIZE) under each `StateSync`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A server on `state` with `sync` and `extra` settings.
fn start(state: &Path, sync: &str, extra: &[&str]) -> Server {
    let path = state.to_string_lossy().into_owned();
    let mut args = vec!["-StateFile", &path, "-StateSync", sync];
    args.extend_from_slice(extra);
    Server::start(&args, TEST_CONF)
}

/// Kills the server without warning (SIGKILL).
fn kill9(server: &mut Server) {
    server.signal("KILL");
    server.expect_exit(Duration::from_secs(5));
}

/// Stops the server cleanly (SIGTERM) and checks it exited 0.
fn stop(server: &mut Server) {
    server.signal("TERM");
    let status = server.expect_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

/// Every cached event of `channel` as (id, text), oldest first.
fn cached(server: &Server, channel: &str) -> Vec<(u64, String)> {
    let mut c = server.http_get(&format!("/push/h/poll/{channel}.h"));
    let body = c.read_to_end(WAIT);
    let text = String::from_utf8_lossy(&body).into_owned();
    let rest = text
        .strip_prefix(HDR_OK)
        .unwrap_or_else(|| panic!("poll reply {text:?}"));
    rest.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next().and_then(|i| i.parse().ok());
            let ch = parts.next();
            let t = parts.next();
            match (id, ch, t) {
                (Some(id), Some(ch), Some(t)) if ch == channel => (id, t.to_owned()),
                _ => panic!("bad event line {line:?} in {text:?}"),
            }
        })
        .collect()
}

/// GET on the controller port over HTTP; the whole response.
fn ctl_http(server: &Server, path: &str) -> String {
    let mut s = TcpStream::connect(server.ctl_addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// POST /pub/<channel> on the controller port; the whole response.
fn http_publish(server: &Server, channel: &str, text: &str) -> String {
    let mut s = TcpStream::connect(server.ctl_addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A figure of `/stats` (JSON on the controller port).
fn stat(server: &Server, key: &str) -> u64 {
    let body = ctl_http(server, "/stats");
    let needle = format!("\"{key}\":");
    let at = body
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in /stats: {body}"));
    body[at + needle.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("bad {key} in {body}"))
}

/// An acknowledged event: when, id, channel, text.
type Acked = (Instant, u64, String, String);

/// Publishes on three channels from a thread until `stop` is set; returns
/// every acknowledged event. A publish that gets no answer (the server
/// was killed) is not acknowledged.
fn steady_load(server: &Server, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Acked>> {
    let addr = server.ctl_addr;
    thread::spawn(move || {
        let mut acked = Vec::new();
        let Ok(mut s) = TcpStream::connect(addr) else {
            return acked;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = std::io::BufReader::new(match s.try_clone() {
            Ok(r) => r,
            Err(_) => return acked,
        });
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let channel = format!("ch{}", n % 3);
            let text = format!("event-{n}");
            if s.write_all(format!("ADDMESSAGE {channel} {text}\n").as_bytes())
                .is_err()
            {
                break;
            }
            let mut line = String::new();
            match std::io::BufRead::read_line(&mut reader, &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Some(id) = line.trim_end().strip_prefix("OK\t") else {
                break;
            };
            let Ok(id) = id.parse() else { break };
            acked.push((Instant::now(), id, channel, text));
            n += 1;
        }
        acked
    })
}

/// Publishes under load for `run`, kills -9, and returns what was
/// acknowledged and when the kill happened.
fn load_then_kill(server: &mut Server, run: Duration) -> (Vec<Acked>, Instant) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(server, Arc::clone(&stop));
    thread::sleep(run);
    let killed = Instant::now();
    kill9(server);
    stop.store(true, Ordering::SeqCst);
    let acked = load.join().expect("load thread");
    assert!(acked.len() > 20, "only {} events published", acked.len());
    (acked, killed)
}

/// What the restarted server holds for the load's channels, by id.
fn restored(server: &Server) -> BTreeMap<u64, (String, String)> {
    let mut all = BTreeMap::new();
    for ch in ["ch0", "ch1", "ch2"] {
        let events = cached(server, ch);
        let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted, "{ch} not in id order or doubled");
        for (id, text) in events {
            all.insert(id, (ch.to_owned(), text));
        }
    }
    all
}

#[test]
fn kill_9_with_always_keeps_every_acknowledged_event() {
    let dir = TempDir::new("state-always");
    let path = dir.join("meteord.state");
    let mut s = start(&path, "always", &["-MaxMessagesPerChannel", "1000000"]);
    let (acked, _) = load_then_kill(&mut s, Duration::from_millis(1500));
    let s2 = start(&path, "always", &["-MaxMessagesPerChannel", "1000000"]);
    let back = restored(&s2);
    for (_, id, ch, text) in &acked {
        assert_eq!(
            back.get(id),
            Some(&(ch.clone(), text.clone())),
            "acknowledged event {id} lost or changed"
        );
    }
    let highest = back.keys().last().copied().unwrap_or(0);
    let next = s2.ctl().add("ch0", "after");
    assert!(next > highest, "next id {next} not above {highest}");
    assert!(
        s2.wait_log(WAIT, |l| l.contains("restored") && l.contains("events"))
            .is_some()
    );
}

#[test]
fn kill_9_with_everysec_loses_nothing_acknowledged_a_second_before() {
    let dir = TempDir::new("state-everysec");
    let path = dir.join("meteord.state");
    let mut s = start(&path, "everysec", &["-MaxMessagesPerChannel", "1000000"]);
    let (acked, killed) = load_then_kill(&mut s, Duration::from_millis(2500));
    let s2 = start(&path, "everysec", &["-MaxMessagesPerChannel", "1000000"]);
    let back = restored(&s2);
    let mut missing_recent = 0;
    for (at, id, ch, text) in &acked {
        match back.get(id) {
            Some(got) => assert_eq!(got, &(ch.clone(), text.clone()), "event {id} changed"),
            None if killed.duration_since(*at) < Duration::from_millis(1200) => missing_recent += 1,
            None => panic!("event {id} acknowledged over a second before the kill is missing"),
        }
    }
    // A process crash (not a power loss) loses nothing: every event was
    // written before its OK.
    assert_eq!(missing_recent, 0, "acknowledged events lost by a kill -9");
    let highest = acked.iter().map(|a| a.1).max().unwrap_or(0);
    assert!(s2.ctl().add("ch1", "after") > highest);
}

#[test]
fn sigterm_and_restart_resume_streams_with_no_gap_and_no_duplicate() {
    let dir = TempDir::new("state-term");
    let path = dir.join("meteord.state");
    let mut s = start(&path, "no", &[]);
    let mut subs: Vec<Conn> = (0..3)
        .map(|i| s.subscribe(&format!("/push/s{i}/stream/news"), HDR_OK))
        .collect();
    let mut ctl = s.ctl();
    let mut published: Vec<(u64, String)> = (0..20)
        .map(|i| {
            let text = format!("before-{i}");
            (ctl.add("news", &text), text)
        })
        .collect();
    drop(ctl);
    // Each subscriber reads part of the stream, then the server stops.
    let mut seen: Vec<Vec<u64>> = Vec::new();
    for (i, sub) in subs.iter_mut().enumerate() {
        let want = (i + 1) * 5;
        let mut got = Vec::new();
        while got.len() < want {
            let line = sub.read_until(b"\n", WAIT).expect("event line");
            let line = String::from_utf8_lossy(&line).into_owned();
            let id: u64 = line
                .split(':')
                .next()
                .and_then(|x| x.parse().ok())
                .expect("id");
            got.push(id);
        }
        seen.push(got);
    }
    stop(&mut s);
    let s2 = start(&path, "no", &[]);
    let mut ctl = s2.ctl();
    for i in 0..5 {
        let text = format!("after-{i}");
        published.push((ctl.add("news", &text), text));
    }
    let all: Vec<u64> = published.iter().map(|p| p.0).collect();
    for (i, got) in seen.iter().enumerate() {
        let last = got.last().copied().unwrap_or(0);
        let path = format!("/push/s{i}/poll/news.r{}", last + 1);
        let mut c = s2.http_get(&path);
        let body = String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned();
        let rest = body.strip_prefix(HDR_OK).expect("header");
        let mut ids = got.clone();
        ids.extend(rest.lines().map(|l| {
            l.split(':')
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .expect("id")
        }));
        assert_eq!(
            ids, all,
            "subscriber {i}: gap or duplicate across the restart"
        );
    }
}

/// Runs a server on `path` that publishes `n` events on `ch`, then stops
/// cleanly; returns the ids.
fn fill(path: &Path, ch: &str, n: usize) -> Vec<u64> {
    let mut s = start(path, "always", &[]);
    let mut ctl = s.ctl();
    let ids = (0..n).map(|i| ctl.add(ch, &format!("m{i}"))).collect();
    drop(ctl);
    stop(&mut s);
    ids
}

#[test]
fn a_torn_tail_is_cut_and_logged() {
    let dir = TempDir::new("state-torn");
    let path = dir.join("meteord.state");
    let ids = fill(&path, "a", 5);
    // Cut the file in the middle of its last record (the clean stop's
    // reservation, 17 bytes) and into the last event.
    let len = std::fs::metadata(&path).expect("size").len();
    let cut = len - 17 - 3;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(cut).expect("truncate");
    drop(f);
    let s = start(&path, "always", &[]);
    let log = s
        .wait_log(WAIT, |l| l.contains("dropped") && l.contains("bytes"))
        .expect("a log line saying what was dropped");
    assert!(
        log.contains(" 17 bytes") || log.contains("dropped"),
        "{log}"
    );
    let back: Vec<u64> = cached(&s, "a").into_iter().map(|e| e.0).collect();
    assert_eq!(back, ids[..4].to_vec());
    assert!(s.ctl().add("a", "next") > ids[4], "an id was reused");
}

#[test]
fn garbage_appended_is_dropped_with_a_log_line() {
    let dir = TempDir::new("state-garbage");
    let path = dir.join("meteord.state");
    let ids = fill(&path, "g", 4);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"\x10\x00\x00\x00garbage that is not a record at all")
        .expect("append");
    drop(f);
    let s = start(&path, "everysec", &[]);
    let log = s
        .wait_log(WAIT, |l| l.contains("dropped"))
        .expect("dropped line");
    assert!(log.contains("dropped 39 bytes"), "{log}");
    let back: Vec<u64> = cached(&s, "g").into_iter().map(|e| e.0).collect();
    assert_eq!(back, ids);
    // New records after the cut are read back next time.
    let id = s.ctl().add("g", "more");
    let mut s = s;
    stop(&mut s);
    let s = start(&path, "everysec", &[]);
    let back: Vec<u64> = cached(&s, "g").into_iter().map(|e| e.0).collect();
    assert_eq!(back.last(), Some(&id));
}

#[test]
fn an_empty_file_starts_fresh() {
    let dir = TempDir::new("state-empty");
    let path = dir.join("meteord.state");
    std::fs::write(&path, b"").expect("write");
    let s = start(&path, "always", &[]);
    assert_eq!(s.ctl().add("x", "first"), 1);
    assert!(
        std::fs::read(&path)
            .expect("read")
            .starts_with(b"METEORD-STATE 1\n")
    );
}

#[test]
fn a_file_of_another_program_or_a_bad_path_stops_the_server() {
    let dir = TempDir::new("state-foreign");
    let foreign = dir.join("notes.txt");
    std::fs::write(&foreign, b"shopping list\n- milk\n").expect("write");
    let conf = dir.join("meteord.conf");
    std::fs::write(&conf, TEST_CONF).expect("conf");
    let run = |state: &Path| {
        let state = state.to_string_lossy().into_owned();
        let conf = conf.to_string_lossy().into_owned();
        run_meteord(
            &[
                "-ConfigFileLocation",
                &conf,
                "-SyslogFacility",
                "none",
                "-SubscriberPort",
                "0",
                "-ControllerPort",
                "0",
                "-StateFile",
                &state,
            ],
            Duration::from_secs(10),
        )
    };
    let r = run(&foreign);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("not a state file"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(&foreign).expect("read"),
        b"shopping list\n- milk\n",
        "the foreign file was changed"
    );
    let r = run(&dir.join("no/such/dir/meteord.state"));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("StateFile"), "{}", r.stderr);
    let r = run(&dir.path);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("StateFile"), "{}", r.stderr);
}

#[test]
fn compaction_bounds_the_file_and_survives_a_restart() {
    let dir = TempDir::new("state-compact");
    let path = dir.join("meteord.state");
    let mut s = start(&path, "no", &["-MaxMessagesPerChannel", "5"]);
    let mut ctl = s.ctl();
    let text = "x".repeat(1000);
    let mut last = Vec::new();
    for round in 0..30 {
        let texts: Vec<String> = (0..100).map(|i| format!("{round}-{i}-{text}")).collect();
        let ids = ctl.add_many("big", &texts);
        last = ids.into_iter().zip(texts).collect::<Vec<_>>();
    }
    assert!(
        s.wait_log(WAIT, |l| l.contains("compacted")).is_some(),
        "no compaction after 3 MB"
    );
    let size = std::fs::metadata(&path).expect("size").len();
    assert!(size < 2 * 1024 * 1024 + 50_000, "file of {size} bytes");
    drop(ctl);
    kill9(&mut s);
    let s = start(&path, "no", &["-MaxMessagesPerChannel", "5"]);
    let back = cached(&s, "big");
    let want: Vec<(u64, String)> = last[last.len() - 5..].to_vec();
    assert_eq!(back, want);
}

#[test]
fn a_restart_with_a_smaller_max_messages_per_channel_keeps_the_newest() {
    let dir = TempDir::new("state-smaller");
    let path = dir.join("meteord.state");
    let ids = fill(&path, "c", 10);
    let s = start(&path, "always", &["-MaxMessagesPerChannel", "3"]);
    let back: Vec<u64> = cached(&s, "c").into_iter().map(|e| e.0).collect();
    assert_eq!(back, ids[7..].to_vec());
    assert!(s.ctl().add("c", "next") > ids[9]);
}

#[test]
fn sigusr1_then_restart_keeps_the_caches_empty_and_ids_going_up() {
    let dir = TempDir::new("state-usr1");
    let path = dir.join("meteord.state");
    let mut s = start(&path, "everysec", &[]);
    let mut ctl = s.ctl();
    let before: Vec<u64> = (0..5).map(|i| ctl.add("u", &format!("old{i}"))).collect();
    s.signal("USR1");
    assert!(s.wait_log(WAIT, |l| l.contains("SIGUSR1")).is_some());
    assert!(eventually(WAIT, || cached(&s, "u").is_empty()));
    let kept = ctl.add("u", "new");
    drop(ctl);
    stop(&mut s);
    let s = start(&path, "everysec", &[]);
    assert_eq!(cached(&s, "u"), vec![(kept, "new".to_owned())]);
    assert!(s.ctl().add("u", "later") > kept.max(before[4]));
}

#[test]
fn with_redis_the_state_file_is_not_used() {
    let dir = TempDir::new("state-redis");
    let path = dir.join("meteord.state");
    let redis = fake_redis::FakeRedis::start();
    let addr = redis.addr.to_string();
    let s = start(&path, "always", &["-RedisAddress", &addr]);
    assert!(
        s.wait_log(WAIT, |l| l.contains("state file") && l.contains("not used"))
            .is_some()
    );
    assert!(!path.exists(), "the state file was created");
}

/// Limits the server's file size (RLIMIT_FSIZE) to `bytes`, as a full disk.
fn limit_file_size(server: &Server, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on a child process we own, with a valid new limit.
    let r = unsafe {
        libc::prlimit(
            server.pid() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Fills the file up to a limit under `sync`; checks what publishers get,
/// the counters, the single log line, and recovery once there is room.
fn disk_full(sync: &str) {
    let dir = TempDir::new("state-full");
    let path = dir.join("meteord.state");
    let mut s = start(&path, sync, &["-MaxMessagesPerChannel", "100000"]);
    let size = std::fs::metadata(&path).expect("size").len();
    limit_file_size(&s, size + 20_000);
    let mut ctl = s.ctl();
    let text = "y".repeat(500);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        let r = ctl.command(&format!("ADDMESSAGE full {i}-{text}"));
        if let Some(id) = r.strip_prefix("OK\t") {
            acked.push(id.parse::<u64>().expect("id"));
        } else {
            assert_eq!(r, "ERR Storage unavailable", "reply to publish {i}");
            refused += 1;
        }
    }
    if sync == "always" {
        assert!(refused > 50, "{refused} refused");
        assert!(http_publish(&s, "full", "z").starts_with("HTTP/1.1 503 "));
    } else {
        // Kept in memory and served.
        assert_eq!(refused, 0);
        assert_eq!(cached(&s, "full").len(), 100);
    }
    assert!(stat(&s, "state_write_errors") >= 1);
    assert_eq!(stat(&s, "state_file_failing"), 1);
    assert!(ctl_http(&s, "/metrics").contains("meteord_state_write_errors_total "));
    let failures = s
        .logs()
        .iter()
        .filter(|l| l.contains("state file") && l.contains("failed"))
        .count();
    assert_eq!(failures, 1, "logged once");
    // Room again: the server retries by itself.
    limit_file_size(&s, libc::RLIM_INFINITY);
    assert!(
        s.wait_log(WAIT, |l| l.contains("writing works again"))
            .is_some()
    );
    assert_eq!(stat(&s, "state_file_failing"), 0, "{}", s.logs().join("\n"));
    let after = ctl.add("full", "after");
    acked.push(after);
    drop(ctl);
    kill9(&mut s);
    let s = start(&path, sync, &["-MaxMessagesPerChannel", "100000"]);
    let back: Vec<u64> = cached(&s, "full").into_iter().map(|e| e.0).collect();
    for id in &acked {
        assert!(back.contains(id), "acknowledged event {id} lost");
    }
    assert!(s.ctl().add("full", "next") > after);
}

#[test]
fn disk_full_with_always_refuses_publishes() {
    disk_full("always");
}

#[test]
fn disk_full_with_everysec_serves_from_memory() {
    disk_full("everysec");
}

#[test]
fn disk_full_with_no_serves_from_memory() {
    disk_full("no");
}

#[test]
fn a_compaction_over_several_turns_keeps_events_published_meanwhile() {
    let dir = TempDir::new("state-compact-turns");
    let path = dir.join("meteord.state");
    let args = ["-MaxMessagesPerChannel", "1500", "-MaxCachedBytes", "0"];
    let mut s = start(&path, "everysec", &args);
    let mut ctl = s.ctl();
    let pad = "p".repeat(1000);
    let mut acked: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut compacted_at = None;
    for round in 0..200 {
        for ch in ["a", "b", "c"] {
            let texts: Vec<String> = (0..50).map(|i| format!("{round}-{i}-{pad}")).collect();
            let ids = ctl.add_many(ch, &texts);
            acked
                .entry(ch.to_owned())
                .or_default()
                .extend(ids.into_iter().zip(texts));
        }
        if compacted_at.is_none() && s.logs().iter().any(|l| l.contains("compacted from")) {
            compacted_at = Some(round);
        }
        if compacted_at.is_some_and(|r| round > r + 3) {
            break;
        }
    }
    let log = s
        .wait_log(WAIT, |l| l.contains("compacted from"))
        .expect("a compaction");
    assert!(log.contains("longest loop turn"), "{log}");
    drop(ctl);
    kill9(&mut s);
    let s = start(&path, "everysec", &args);
    for (ch, events) in &acked {
        let want = events[events.len().saturating_sub(1500)..].to_vec();
        assert_eq!(cached(&s, ch), want, "channel {ch}");
    }
}

#[test]
fn an_unknown_state_sync_stops_the_server() {
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SyslogFacility",
            "none",
            "-StateSync",
            "sometimes",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("StateSync"), "{}", r.stderr);
}
