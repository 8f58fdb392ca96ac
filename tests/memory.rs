//! Memory bounds over real sockets: rendered copies that nobody reads go,
//! `MaxCachedBytes` and `MaxChannels` hold with many channels and with large
//! events (evictions counted, refusals answered with ERR and 507), and the
//! process gives memory back after large events are trimmed.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// Bytes the server counts per cached message besides its text
/// (`channel::MESSAGE_OVERHEAD`).
const MESSAGE_OVERHEAD: u64 = 64;

fn get(s: &Server, path: &str) -> String {
    let r = control_http(
        s,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "GET {path}: {r:?}");
    r
}

fn stat(s: &Server, key: &str) -> u64 {
    json_u64(&get(s, "/stats"), key)
}

/// Sends `commands` (one line each) in one write and returns the reply
/// lines, without their line ends.
fn pipeline(ctl: &mut Controller, commands: &[Vec<u8>]) -> Vec<String> {
    let bytes = commands.concat();
    ctl.conn.stream.write_all(&bytes).expect("publish");
    (0..commands.len()).map(|_| ctl.read_reply_line()).collect()
}

fn add_command(channel: &str, size: usize, fill: u8) -> Vec<u8> {
    let mut line = format!("ADDMESSAGE {channel} ").into_bytes();
    line.resize(line.len() + size, fill);
    line.push(b'\n');
    line
}

/// Publishes `n` events of `size` bytes to `channel`, `batch` per write;
/// asserts each was taken.
fn publish(ctl: &mut Controller, channel: &str, n: usize, size: usize, batch: usize) {
    let command = add_command(channel, size, b'x');
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        for reply in pipeline(ctl, &vec![command.clone(); k]) {
            assert!(reply.starts_with("OK\t"), "ADDMESSAGE: {reply}");
        }
        left -= k;
    }
}

/// A mode section with a persistent subscriber and the message template `t`.
fn mode(name: &str, template: &str) -> String {
    format!("[{name}]\nPersist 1\nHeaderTemplate HDR\\n\nMessageTemplate {template}\n\n")
}

#[test]
fn escaping_modes_do_not_multiply_a_channel_once_their_readers_leave() {
    // One mode per escaping, and one more with the same escaping but its
    // own template: six rendered copies of the channel, JSON ones 6x.
    let templates = [
        "~text~",
        "~text:js~",
        "~text:json~",
        "~text:html~",
        "~text:sse~",
        "J~text:json~",
    ];
    let conf: String = templates
        .iter()
        .enumerate()
        .map(|(i, t)| mode(&format!("m{i}"), t))
        .collect();
    let s = Server::start(&[], &conf);
    let mut ctl = s.ctl();
    // 1 MiB of text that every escaping expands: '<' is 6 bytes in JSON.
    let events = 64;
    let size = 16 * 1024;
    let command = add_command("ch", size, b'<');
    for reply in pipeline(&mut ctl, &vec![command; events]) {
        assert!(reply.starts_with("OK\t"), "ADDMESSAGE: {reply}");
    }
    let raw = stat(&s, "bytes_cached");
    assert!(raw >= (events * size) as u64, "bytes_cached {raw}");
    // Six readers, one per mode, each asking for the whole cache.
    let mut readers: Vec<Conn> = (0..templates.len())
        .map(|i| s.subscribe(&format!("/push/h{i}/m{i}/ch.h"), "HDR\n"))
        .collect();
    let attacked = stat(&s, "bytes_cached");
    assert!(
        attacked > 10 * raw,
        "six copies should have been rendered: {attacked} vs {raw}"
    );
    for r in &mut readers {
        r.stream.shutdown(std::net::Shutdown::Both).ok();
    }
    drop(readers);
    // Back near the texts alone once the readers left (a grace time of 2 s
    // keeps copies for readers coming back).
    let mut now = attacked;
    let back = eventually(Duration::from_secs(15), || {
        now = stat(&s, "bytes_cached");
        now <= raw + raw / 10
    });
    eprintln!(
        "six modes: bytes_cached {raw} texts alone, {attacked} with six readers, {now} after"
    );
    assert!(
        back,
        "bytes_cached still {now} (texts alone: {raw}, with six readers: {attacked})"
    );
    assert!(stat(&s, "streams_dropped") >= 5);
    // The cache itself is intact: a new reader gets every event again.
    let mut again = s.subscribe("/push/h9/m2/ch.h", "HDR\n");
    let got = again
        .read_exact_n(events * size * 6, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("backlog after the copies went: {e}"));
    assert!(got.iter().all(|&b| b"\\u003c".contains(&b)));
}

#[test]
fn max_channels_refuses_new_channels_with_err_and_507() {
    let s = Server::start_test(&["-MaxChannels", "100"]);
    let mut ctl = s.ctl();
    let commands: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("ADDMESSAGE c{i} x\n").into_bytes())
        .collect();
    for reply in pipeline(&mut ctl, &commands) {
        assert!(reply.starts_with("OK\t"), "ADDMESSAGE: {reply}");
    }
    let reply = ctl.command("ADDMESSAGE one-more x");
    assert_eq!(reply, "ERR Too many channels (MaxChannels 100)");
    let r = control_http(
        &s,
        b"POST /pub/another HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert!(
        r.starts_with("HTTP/1.1 507 Insufficient Storage\r\n"),
        "{r}"
    );
    assert!(r.contains("MaxChannels 100"), "{r}");
    // Channels that exist still take events; a subscriber may still wait
    // on a new one (subscribers are bounded by MaxSubscribers).
    assert!(ctl.command("ADDMESSAGE c7 y").starts_with("OK\t"));
    let json = get(&s, "/stats");
    assert_eq!(json_u64(&json, "channel_count"), 100, "{json}");
    assert_eq!(json_u64(&json, "max_channels"), 100, "{json}");
    assert_eq!(
        json_u64(&json, "publishes_refused_max_channels"),
        2,
        "{json}"
    );
    let metrics = get(&s, "/metrics");
    assert!(
        metrics.contains("\nmeteord_publishes_refused_max_channels_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmeteord_max_channels 100\n"),
        "{metrics}"
    );
}

#[test]
fn many_channels_stay_under_max_cached_bytes_by_evicting_the_oldest() {
    let bound: u64 = 1024 * 1024;
    let s = Server::start_test(&["-MaxCachedBytes", &bound.to_string()]);
    let mut ctl = s.ctl();
    let text = "t".repeat(100);
    let channels = 20_000;
    for batch in 0..channels / 1000 {
        let commands: Vec<Vec<u8>> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| format!("ADDMESSAGE ch{i} {text}\n").into_bytes())
            .collect();
        for reply in pipeline(&mut ctl, &commands) {
            assert!(reply.starts_with("OK\t"), "ADDMESSAGE: {reply}");
        }
        let json = get(&s, "/stats");
        assert!(json_u64(&json, "bytes_cached") <= bound, "{json}");
    }
    let json = get(&s, "/stats");
    let kept = bound / (100 + MESSAGE_OVERHEAD);
    assert!(json_u64(&json, "channel_count") <= kept, "{json}");
    assert!(
        json_u64(&json, "evicted_events") >= channels - kept,
        "{json}"
    );
    assert_eq!(json_u64(&json, "publishes_refused_max_cached_bytes"), 0);
    // The newest survive, the oldest went.
    let mut poll = s.http_get(&format!("/push/h/poll/ch{}.h", channels - 1));
    let got = String::from_utf8_lossy(&poll.read_to_end(WAIT)).into_owned();
    assert_eq!(
        got,
        format!("{HDR_OK}{channels}:ch{}:{text}\n", channels - 1)
    );
    let mut poll = s.http_get("/push/h/poll/ch0.h");
    assert_eq!(
        String::from_utf8_lossy(&poll.read_to_end(WAIT)),
        HDR_OK.to_string()
    );
}

/// Reads a persistent subscription of `TEST_CONF`'s stream mode until
/// `count` events arrived; returns their ids.
fn read_events(mut socket: TcpStream, count: usize) -> Vec<u64> {
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut tmp = vec![0; 256 * 1024];
    let mut ids = Vec::new();
    let mut at = 0;
    while ids.len() < count {
        let n = match socket.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        while let Some(end) = memchr::memchr(b'\n', &buf[at..]) {
            let line = &buf[at..at + end];
            if let Some(colon) = memchr::memchr(b':', line) {
                let id = std::str::from_utf8(&line[..colon]).ok();
                ids.extend(id.and_then(|id| id.parse::<u64>().ok()));
            }
            at += end + 1;
        }
        buf.drain(..at);
        at = 0;
    }
    ids
}

#[test]
fn large_events_stay_under_max_cached_bytes_and_readers_get_them_all() {
    let bound: u64 = 8 * 1024 * 1024;
    let s = Server::start_test(&[
        "-MaxCachedBytes",
        &bound.to_string(),
        "-MaxControllerLineBytes",
        "16777216",
    ]);
    let mut ctl = s.ctl();
    let size = 256 * 1024;
    let per_channel = 40;
    let names: Vec<String> = (0..5).map(|i| format!("big{i}")).collect();
    let readers: Vec<_> = names
        .iter()
        .map(|name| {
            let mut c = s.subscribe(&format!("/push/{name}/stream/{name}"), HDR_OK);
            let socket = c.stream.try_clone().expect("clone");
            c.buf.clear();
            thread::spawn(move || read_events(socket, per_channel))
        })
        .collect();
    let mut max_seen = 0;
    for round in 0..per_channel {
        for name in &names {
            publish(&mut ctl, name, 1, size, 1);
        }
        if round % 5 == 4 {
            let cached = stat(&s, "bytes_cached");
            max_seen = max_seen.max(cached);
            assert!(cached <= bound, "bytes_cached {cached} above {bound}");
        }
    }
    for (name, reader) in names.iter().zip(readers) {
        let ids = reader.join().expect("reader");
        assert_eq!(ids.len(), per_channel, "{name} got {ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{name}: {ids:?}");
    }
    let json = get(&s, "/stats");
    assert!(json_u64(&json, "evicted_events") > 0, "{json}");
    assert_eq!(json_u64(&json, "slow_consumers_dropped"), 0, "{json}");
    assert!(
        max_seen > bound / 2,
        "the bound was never approached: {json}"
    );
    // An event larger than the bound by itself is refused, on both protocols.
    let huge = 9 * 1024 * 1024;
    let reply = pipeline(&mut ctl, &[add_command("big0", huge, b'x')]);
    assert!(
        reply[0].starts_with("ERR Message too large for the cache ("),
        "{reply:?}"
    );
    let mut post =
        format!("POST /pub/big1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {huge}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    post.resize(post.len() + huge, b'x');
    let r = control_http(&s, &post);
    assert!(
        r.starts_with("HTTP/1.1 507 Insufficient Storage\r\n"),
        "{r}"
    );
    let json = get(&s, "/stats");
    assert_eq!(
        json_u64(&json, "publishes_refused_max_cached_bytes"),
        2,
        "{json}"
    );
    assert!(json_u64(&json, "bytes_cached") <= bound, "{json}");
    let metrics = get(&s, "/metrics");
    assert!(
        metrics.contains(&format!("\nmeteord_max_cached_bytes {bound}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmeteord_publishes_refused_max_cached_bytes_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmeteord_evicted_events_total "),
        "{metrics}"
    );
}

/// 250 events of 1 MiB, then 300 small ones that push them out of the
/// channel's cache, with a subscriber reading: what the server holds and
/// its RSS come back down.
fn rss_after_big_events_are_trimmed(max_cached_bytes: &str) -> (u64, u64, u64) {
    let s = Server::start_test(&[
        "-MaxCachedBytes",
        max_cached_bytes,
        "-MaxControllerLineBytes",
        "2097152",
    ]);
    let mut ctl = s.ctl();
    publish(&mut ctl, "warm", 10, 100, 10);
    // A subscriber reading everything: the channel's rendered buffer grows
    // with the big events too.
    let reader = s.subscribe("/push/r/stream/big", HDR_OK);
    let mut socket = reader.stream.try_clone().expect("clone");
    thread::spawn(move || {
        let mut tmp = vec![0; 1 << 20];
        while matches!(socket.read(&mut tmp), Ok(n) if n > 0) {}
    });
    let baseline = rss_kib(s.pid());
    publish(&mut ctl, "big", 250, 1024 * 1024, 10);
    let peak = rss_kib(s.pid());
    publish(&mut ctl, "big", 300, 10, 100);
    let cached = stat(&s, "bytes_cached");
    assert!(cached < 64 * 1024, "bytes_cached {cached} after the trim");
    let mut now = peak;
    // Waits for the figure to settle (memory is returned at most once a
    // second); the callers assert on it.
    eventually(Duration::from_secs(6), || {
        now = rss_kib(s.pid());
        now < baseline + 4 * 1024
    });
    eprintln!(
        "MaxCachedBytes {max_cached_bytes}: RSS {baseline} KiB before, {peak} KiB after 250 x 1 MiB, \
         {now} KiB after 300 small ones ({cached} bytes cached)"
    );
    (baseline, peak, now)
}

#[test]
fn rss_comes_back_down_after_big_events_are_trimmed() {
    // Under the default bound (64 MiB): at most twice that at the peak.
    let (baseline, peak, after) = rss_after_big_events_are_trimmed("67108864");
    assert!(
        peak < baseline + 2 * 64 * 1024,
        "RSS {peak} KiB at the peak, {baseline} KiB before"
    );
    assert!(
        after < baseline + 16 * 1024,
        "RSS {after} KiB after the trim, {baseline} KiB before, {peak} KiB at the peak"
    );
}

#[test]
fn rss_comes_back_down_without_a_byte_bound_too() {
    // MaxCachedBytes 0: 250 MiB are held, then trimmed by the channel's
    // own limit; the buffers shrink and the allocator gives memory back.
    let (baseline, peak, after) = rss_after_big_events_are_trimmed("0");
    assert!(peak > baseline + 200 * 1024, "RSS {peak} KiB at the peak");
    assert!(
        after < baseline + 16 * 1024,
        "RSS {after} KiB after the trim, {baseline} KiB before, {peak} KiB at the peak"
    );
}
