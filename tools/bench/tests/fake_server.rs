//! End-to-end check of meteor-bench against a tiny in-test Meteor-like server (std threads).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Messages published so far (id = index + 1), and a condvar rung on each publish.
type Log = Arc<(Mutex<Vec<String>>, Condvar)>;

/// Reads a request head and returns its first line.
fn request_line(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 || head.len() > 4096 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    text.lines().next().map(str::to_string)
}

/// Serves one subscriber: streams every new message, or (long-poll, `.r<id>`) the waiting
/// messages from that id in one reply, then closes.
fn subscriber(mut s: TcpStream, log: Log) {
    let Some(line) = request_line(&mut s) else {
        return;
    };
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let longpoll = path.contains("/benchlp/");
    let (lock, cv) = &*log;
    let Ok(guard) = lock.lock() else { return };
    let mut next = match path.rsplit_once(".r") {
        Some((_, id)) => id.parse::<usize>().unwrap_or(1),
        None => guard.len() + 1,
    };
    drop(guard);
    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        .is_err()
    {
        return;
    }
    for _ in 0..10_000 {
        let Ok(guard) = lock.lock() else { return };
        let Ok((guard, _)) =
            cv.wait_timeout_while(guard, Duration::from_secs(5), |m| m.len() < next)
        else {
            return;
        };
        if guard.len() < next {
            return;
        }
        let mut out = String::new();
        for (i, m) in guard.iter().enumerate().skip(next - 1) {
            out.push_str(&format!("{} {m}\n", i + 1));
        }
        next = guard.len() + 1;
        drop(guard);
        if s.write_all(out.as_bytes()).is_err() || longpoll {
            return;
        }
    }
}

/// Serves one controller connection: `ADDMESSAGE <channel> <text>` -> `OK\t<id>`.
fn controller(s: TcpStream, log: Log) {
    let Ok(mut w) = s.try_clone() else { return };
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        let Some(rest) = line.strip_prefix("ADDMESSAGE ") else {
            return;
        };
        let text = rest
            .split_once(' ')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let (lock, cv) = &*log;
        let id = {
            let Ok(mut m) = lock.lock() else { return };
            m.push(text);
            m.len()
        };
        cv.notify_all();
        if w.write_all(format!("OK\t{id}\r\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts the fake server; returns (subscriber port, controller port).
fn fake_server() -> (u16, u16) {
    let log: Log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let subs = TcpListener::bind("127.0.0.1:0").expect("bind subscriber port");
    let ctl = TcpListener::bind("127.0.0.1:0").expect("bind controller port");
    let ports = (
        subs.local_addr().expect("addr").port(),
        ctl.local_addr().expect("addr").port(),
    );
    for (listener, is_ctl) in [(subs, false), (ctl, true)] {
        let log = log.clone();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let log = log.clone();
                thread::spawn(move || {
                    if is_ctl {
                        controller(s, log)
                    } else {
                        subscriber(s, log)
                    }
                });
            }
        });
    }
    ports
}

fn run_bench(extra: &[&str]) -> String {
    let (sp, cp) = fake_server();
    let out = Command::new(env!("CARGO_BIN_EXE_meteor-bench"))
        .args([
            "-t",
            &format!("127.0.0.1:{sp}"),
            "--controller",
            &format!("127.0.0.1:{cp}"),
        ])
        .args([
            "--settle",
            "0.2",
            "--drain-timeout",
            "2",
            "--max-time",
            "30",
            "--json",
        ])
        .args(["--pid", &std::process::id().to_string()])
        .args(extra)
        .output()
        .expect("run meteor-bench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn streaming_counts_every_delivery() {
    let out = run_bench(&["-n", "30", "-m", "20", "--per-worker", "10"]);
    assert!(out.contains("\"connected\":30,"), "{out}");
    assert!(out.contains("\"delivered\":600,"), "{out}");
    assert!(out.contains("\"lost\":0,"), "{out}");
    assert!(out.contains("\"client_workers\":3,"), "{out}");
}

#[test]
fn streaming_at_a_rate() {
    let out = run_bench(&["-n", "5", "-m", "20", "-r", "100"]);
    assert!(out.contains("\"delivered\":100,"), "{out}");
    assert!(out.contains("\"lost\":0,"), "{out}");
}

#[test]
fn longpoll_resumes_without_loss() {
    let out = run_bench(&["--longpoll", "-n", "10", "-m", "50", "-r", "200"]);
    assert!(out.contains("\"delivered\":500,"), "{out}");
    assert!(out.contains("\"lost\":0,"), "{out}");
    assert!(out.contains("\"duplicates\":0,"), "{out}");
}
