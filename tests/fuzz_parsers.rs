//! Property and fuzz tests for every parser of meteord: the request head and
//! its target, controller HTTP heads, channel definitions, controller lines,
//! the configuration file and command line (values and escapes included)
//! templates, subscriber tokens (JWT, base64url, JSON), and the forwarding
//! headers of trusted proxies.
//!
//! Each test feeds `METEORD_FUZZ_CASES` inputs (default 3,000: the short run
//! that CI does with `cargo test`) to one parser: fully random bytes, random
//! bytes from the parser's own alphabet, and mutations (bit flips, byte
//! insertion, deletion, duplication, splicing, truncation) of a corpus of
//! valid inputs. Besides "does not panic", every test checks properties from
//! the wire contract (README.md, "Wire contract", and the sections it
//! links), most of them against a small reference written from it. The generator is a seeded splitmix64, so runs
//! are reproducible; a failure prints the seed, the case and the input.
//!
//! ```text
//! cargo test --test fuzz_parsers                                      # CI
//! METEORD_FUZZ_CASES=100000 cargo test --release --test fuzz_parsers  # long run
//! METEORD_FUZZ_SEED=0x1234 cargo test --test fuzz_parsers             # another seed
//! ```

use meteord::channel::Backlog;
use meteord::config::{self, Action, ConfigError};
use meteord::controller::commands::{self, Command};
use meteord::controller::http as control_http;
use meteord::http::{self, HttpError};
use meteord::proxies::{self, Forwarding, TrustedProxies};
use meteord::subscriber::route::{self, ChannelDef, Route, RouteLimits};
use meteord::template::{Escape, Placeholder, Template, Value};
use meteord::token::{self, Claims, base64url, json};
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;

// ----------------------------------------------------------------------------
// The generator and the runner
// ----------------------------------------------------------------------------

/// splitmix64: tiny, fast and plenty random for a fuzzer.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `len` bytes from `alphabet`, or of any value when it is empty.
    fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| match alphabet {
                [] => self.next_u64() as u8,
                _ => *self.pick(alphabet),
            })
            .collect()
    }

    /// Up to `max_atoms` pieces picked from `atoms`, concatenated.
    fn join(&mut self, max_atoms: usize, atoms: &[&str]) -> Vec<u8> {
        let n = self.below(max_atoms + 1);
        (0..n).flat_map(|_| self.pick(atoms).bytes()).collect()
    }
}

/// Reads a number (decimal or `0x` hex) from the environment.
fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}: '{text}' is not a number"))
}

fn seed() -> u64 {
    env_number("METEORD_FUZZ_SEED", 0x6d65_7465_6f72_6421)
}

fn cases() -> usize {
    env_number("METEORD_FUZZ_CASES", 3_000) as usize
}

/// Gives each test its own stream, so that tests do not depend on each other.
fn rng_for(test: &str) -> Rng {
    let fnv = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Rng(seed() ^ fnv)
}

/// Bytes that print escaped (`b"..."`) in failure reports.
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Runs `cases()` cases made by `generate` through `property`. A panic, in
/// the parser or in an assertion, is reported with what reproduces it.
fn fuzz_with<T: fmt::Debug>(
    test: &str,
    mut generate: impl FnMut(&mut Rng) -> T,
    mut property: impl FnMut(&T),
) {
    let mut rng = rng_for(test);
    for case in 0..cases() {
        let input = generate(&mut rng);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| property(&input))) {
            eprintln!(
                "\nfuzz_parsers::{test} failed on case {case} (METEORD_FUZZ_SEED={:#x})\n  input: {input:?}\n",
                seed()
            );
            resume_unwind(panic);
        }
    }
}

/// Runs `property` on random inputs and on mutations of `corpus`.
fn fuzz(test: &str, corpus: &[&[u8]], alphabet: &[u8], mut property: impl FnMut(&[u8])) {
    fuzz_with(
        test,
        |rng| Bytes(generate(rng, corpus, alphabet)),
        |input| property(&input.0),
    );
}

/// One input: fully random (1 in 10), random from the alphabet (2 in 10), or
/// a corpus entry with 0 to 4 mutations.
fn generate(rng: &mut Rng, corpus: &[&[u8]], alphabet: &[u8]) -> Vec<u8> {
    match rng.below(10) {
        0 => {
            let len = rng.below(96);
            rng.bytes(len, &[])
        }
        1 | 2 => {
            let len = rng.below(96);
            rng.bytes(len, alphabet)
        }
        _ => mutate(rng, corpus, alphabet),
    }
}

fn mutate(rng: &mut Rng, corpus: &[&[u8]], alphabet: &[u8]) -> Vec<u8> {
    let mut data = rng.pick(corpus).to_vec();
    for _ in 0..rng.below(5) {
        let len = data.len();
        let at = rng.below(len + 1);
        let end = (at + 1 + rng.below(12)).min(len);
        match rng.below(8) {
            0 if at < len => data[at] ^= 1 << rng.below(8),
            1 => {
                let byte = if rng.one_in(2) {
                    rng.next_u64() as u8
                } else {
                    *rng.pick(alphabet)
                };
                data.insert(at, byte);
            }
            2 => {
                data.drain(at..end);
            }
            3 => {
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            4 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            5 => data.truncate(at),
            6 if at < len => data[at] = *rng.pick(alphabet),
            _ => {
                let n = rng.below(6);
                let chunk = rng.bytes(n, alphabet);
                data.splice(at..at, chunk);
            }
        }
    }
    data
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ----------------------------------------------------------------------------
// Request heads
// ----------------------------------------------------------------------------

const HEADS: &[(&str, &str, &str)] = &[
    (
        "GET /push/h1/iframe/news.r12/sport.b3 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
        "/push/h1/iframe/news.r12/sport.b3",
        "Mozilla/5.0",
    ),
    (
        "GET /push/a/longpoll/c.h HTTP/1.0\n\n",
        "/push/a/longpoll/c.h",
        "-",
    ),
    (
        "GET /disconnect/h1 HTTP/1.1\nHost: x\nuser-agent: t 1\n\n",
        "/disconnect/h1",
        "t 1",
    ),
    (
        "GET /meteor.js?nc=123 HTTP/1.1\r\nAccept: */*\r\nLast-Event-ID: 7\r\n\r\nbody after",
        "/meteor.js?nc=123",
        "-",
    ),
    ("GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\n", "/", "-"),
    (
        "POST /push/h/m/c HTTP/1.1\r\nOrigin: http://a\r\nContent-Length: 3\r\n\r\nabc",
        "/push/h/m/c",
        "-",
    ),
];

/// The reference for `head_end`: after at most one empty line before the
/// request line (RFC 9112 section 2.2), the shortest prefix ending in an
/// empty line.
fn reference_head_end(buf: &[u8]) -> Option<usize> {
    let start = if buf.starts_with(b"\r\n") {
        2
    } else {
        usize::from(buf.starts_with(b"\n"))
    };
    (start + 1..=buf.len()).find(|&n| {
        let line = [b"\n", &buf[start..n]].concat();
        line.ends_with(b"\n\n") || line.ends_with(b"\n\r\n")
    })
}

#[test]
fn request_heads() {
    for (head, target, user_agent) in HEADS {
        let end = http::head_end(head.as_bytes()).expect("corpus head has an end");
        let parsed = http::parse_head(&head.as_bytes()[..end], 64).expect("corpus head parses");
        assert_eq!(
            (parsed.target.as_str(), parsed.user_agent.as_str()),
            (*target, *user_agent)
        );
    }
    let corpus: Vec<&[u8]> = HEADS.iter().map(|h| h.0.as_bytes()).collect();
    fuzz(
        "request_heads",
        &corpus,
        b"GET /push:\r\n\n HTTP/1.1 Agent\t",
        |buf| {
            let end = http::head_end(buf);
            assert_eq!(
                end,
                reference_head_end(buf),
                "head_end is not the first empty line"
            );
            let Some(end) = end else {
                return;
            };
            let head = &buf[..end];
            let parsed = http::parse_head(head, 64);
            // A second empty line before any request line ends the head: it
            // is refused at once (a head of blank lines never waits for the
            // head timeout), though httparse alone would skip on.
            if head.iter().all(|b| b"\r\n".contains(b)) {
                assert_eq!(parsed, Err(HttpError::BadRequest), "a head of blank lines");
                return;
            }
            assert_eq!(
                parsed,
                http::parse_head(buf, 64),
                "bytes after the head changed the parse"
            );
            let Ok(request) = &parsed else {
                return;
            };
            assert!(
                !request.method.is_empty() && request.method.bytes().all(|b| b.is_ascii_graphic())
            );
            assert!(!request.target.is_empty());
            assert!(
                !request
                    .target
                    .chars()
                    .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
            );
            assert!(
                !request.user_agent.is_empty(),
                "an absent User-Agent is '-'"
            );
            assert_eq!(
                http::parse_head(head, 1000).as_ref(),
                Ok(request),
                "more headers allowed"
            );
            let few = http::parse_head(head, 2);
            assert!(few.as_ref() == Ok(request) || few == Err(HttpError::TooManyHeaders));
        },
    );
}

// ----------------------------------------------------------------------------
// Controller request heads (HTTP on the controller port)
// ----------------------------------------------------------------------------

const CONTROL_HEADS: &[&str] = &[
    "POST /pub/news HTTP/1.1\r\nHost: 127.0.0.1:4671\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    "GET /stats HTTP/1.1\r\nHost: localhost\r\nOrigin: http://a.example\r\nConnection: close\r\n\r\n",
    "GET /channels HTTP/1.0\n\n",
    "POST /pub/x HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: +3\r\nAuthorization: Bearer s\r\n\r\nabc",
];

/// The header lines of a head httparse accepted: (name, value without
/// the SP/HTAB around it), and the minor version of its request line.
fn reference_fields(head: &[u8]) -> (u8, Vec<(String, String)>) {
    let text = lossy(head);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let version = match lines.next() {
        Some(l) if l.ends_with("HTTP/1.0") => 0,
        _ => 1,
    };
    let fields = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.trim_matches([' ', '\t']).to_owned(),
            )
        })
        .collect();
    (version, fields)
}

#[test]
fn control_heads() {
    let corpus: Vec<&[u8]> = CONTROL_HEADS.iter().map(|h| h.as_bytes()).collect();
    let alphabet = b"POST /pub:\r\n\t Host Content-Length Transfer-Encoding Expect 0123+-,[]";
    fuzz("control_heads", &corpus, alphabet, |buf| {
        let Some(end) = http::head_end(buf) else {
            return;
        };
        let head = &buf[..end];
        let parsed = control_http::parse_request(head, 64);
        let Ok(_) = http::parse_head(head, 64) else {
            assert!(parsed.is_err(), "httparse refused a head that was accepted");
            return;
        };
        let (version, fields) = reference_fields(head);
        let all = |name: &str| -> Vec<&str> {
            fields
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let request = match parsed {
            Err(refusal) => {
                if !all("transfer-encoding").is_empty() {
                    assert_eq!(refusal.status, "501 Not Implemented");
                }
                assert!(
                    [
                        "400 Bad Request",
                        "417 Expectation Failed",
                        "501 Not Implemented"
                    ]
                    .contains(&refusal.status),
                    "{refusal:?}"
                );
                return;
            }
            Ok(request) => request,
        };
        assert!(
            all("transfer-encoding").is_empty(),
            "Transfer-Encoding accepted"
        );
        let lengths = all("content-length");
        assert!(lengths.len() <= 1, "Content-Length repeated: {lengths:?}");
        match lengths.first() {
            None => assert_eq!(request.content_length, None),
            Some(v) => {
                assert!(
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                    "Content-Length {v:?} accepted"
                );
                let n = v.bytes().fold(0u64, |n, d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                assert_eq!(request.content_length, Some(n));
            }
        }
        let hosts = all("host");
        assert!(
            hosts.len() == 1 || (hosts.is_empty() && version == 0),
            "Host {hosts:?}"
        );
        assert_eq!(request.host.is_some(), hosts.len() == 1);
        assert!(all("origin").len() <= 1 && all("authorization").len() <= 1);
        assert_eq!(request.version, version);
        if version == 0 {
            assert!(!request.expect_continue, "100-continue on HTTP/1.0");
        }
    });
}

// ----------------------------------------------------------------------------
// Channel definitions and routing
// ----------------------------------------------------------------------------

/// The reference for channel definitions, from the wire contract: a name of
/// `[a-zA-Z0-9_%-]+`, then nothing, `.r<digits>`, `.b<digits>` or `.h[digits]`,
/// suffix letters in either case. Numbers too large saturate.
fn reference_def(entry: &[u8]) -> Option<ChannelDef> {
    let name_len = entry
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || b"_%-".contains(b))
        .count();
    let (name, suffix) = entry.split_at(name_len);
    let number = |d: &[u8]| lossy(d).parse::<u64>().unwrap_or(u64::MAX);
    let backlog = match suffix {
        [] => Backlog::None,
        [b'.', kind, digits @ ..] if digits.iter().all(u8::is_ascii_digit) => {
            match (kind.to_ascii_lowercase(), digits.is_empty()) {
                (b'h', _) => Backlog::All,
                (b'r', false) => Backlog::FromId(number(digits)),
                (b'b', false) => Backlog::Last(number(digits)),
                _ => return None,
            }
        }
        _ => return None,
    };
    (!name.is_empty()).then(|| ChannelDef {
        name: name.to_vec(),
        backlog,
    })
}

const DEFS: &[&str] = &[
    "news",
    "a_%-Z9",
    "c.r12",
    "c.R0",
    "c.b3",
    "c.B250",
    "c.h",
    "c.H77",
    "x.r18446744073709551616",
];

#[test]
fn channel_definitions() {
    for def in DEFS {
        assert!(route::parse_channel_def(def.as_bytes()).is_some(), "{def}");
    }
    let corpus: Vec<&[u8]> = DEFS.iter().map(|d| d.as_bytes()).collect();
    fuzz(
        "channel_definitions",
        &corpus,
        b"aZ09_%-.rRbBhHx/ ~",
        |entry| {
            assert_eq!(route::parse_channel_def(entry), reference_def(entry));
        },
    );
}

const LIMITS: RouteLimits = RouteLimits {
    channel_name_length: 8,
    channels_per_request: 3,
};

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The reference router for prefix `/push` and `LIMITS`, from the wire contract.
fn reference_route(target: &str) -> Route {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    // Without a channel part (`/push/<hostid>/<mode>`) it is a document.
    if let ["", "push", hostid, mode, defs @ ..] = segments.as_slice()
        && is_id(hostid)
        && is_id(mode)
        && defs.iter().any(|d| !d.is_empty())
    {
        let mut channels: Vec<ChannelDef> = Vec::new();
        for def in defs.iter().filter_map(|d| reference_def(d.as_bytes())) {
            if def.name.len() > LIMITS.channel_name_length {
                return Route::TooLarge;
            }
            if !channels.iter().any(|c| c.name == def.name) {
                channels.push(def);
            }
        }
        if channels.len() > LIMITS.channels_per_request {
            return Route::TooLarge;
        }
        return Route::Push {
            hostid: hostid.to_string(),
            mode: mode.to_string(),
            channels,
        };
    }
    // `/disconnect/<hostid>` with a hostid of the grammar; anything else
    // under `/disconnect/` (no hostid at all) is a document.
    if let Some(hostid) = path.strip_prefix("/disconnect/") {
        let hostid = hostid.trim_end_matches('/');
        if is_id(hostid) {
            return Route::Disconnect {
                hostid: hostid.to_owned(),
            };
        }
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._/-".contains(c);
    if !path.chars().all(allowed) || path.contains("..") {
        return Route::BadDocument;
    }
    let kept: Vec<&str> = segments.into_iter().filter(|s| !s.is_empty()).collect();
    Route::Document {
        path: kept.join("/"),
    }
}

const TARGETS: &[&str] = &[
    "/push/h1/iframe/news/sport.r12/x.b3/y.h?nc=1712",
    "/push/H/m/a/a.r1/",
    "/push/h/m/a/b/c/d",
    "/push/h/m/waytoolongname",
    "/push/host42/longpoll/chat.R7/chat.b2/news.H/",
    "/push/a/b/c_1.B0/%41-x.r99999999999999999999/",
    "/push/h/smartpoll/a.h1/b.x/.r1/c.r/d",
    "/disconnect/h1",
    "/disconnect/h1/",
    "//sub//meteor.js?x=..",
    "/public/a-b_c.1.html",
    "/a/../b",
    "/",
];

#[test]
fn routes() {
    let corpus: Vec<&[u8]> = TARGETS.iter().map(|t| t.as_bytes()).collect();
    let alphabet = b"/pushdisconect.rbhRBH019_%-?&=~ !\\:";
    fuzz("routes", &corpus, alphabet, |bytes| {
        let target = lossy(bytes);
        let route = route::route(&target, "/push", LIMITS);
        assert_eq!(route, reference_route(&target));
        if let Route::Document { path } = &route {
            assert!(!path.contains("..") && !path.starts_with('/') && !path.ends_with('/'));
            assert!(!path.contains("//"));
            assert!(
                path.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
            );
        }
        if let Route::Push { channels, .. } = &route {
            assert!(channels.len() <= LIMITS.channels_per_request);
            assert!(
                channels
                    .iter()
                    .all(|c| c.name.len() <= LIMITS.channel_name_length)
            );
        }
        if !target.contains('?') {
            let with_query = route::route(&format!("{target}?nc=1/../%"), "/push", LIMITS);
            assert_eq!(with_query, route, "the query string changed the route");
            // A trailing slash is ignored.
            let slashed = route::route(&format!("{target}/"), "/push", LIMITS);
            assert_eq!(slashed, route, "a trailing slash changed the route");
        }
    });
}

// ----------------------------------------------------------------------------
// Controller lines
// ----------------------------------------------------------------------------

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// The reference controller parser, from the wire contract.
fn reference_command(line: &[u8]) -> Option<Command<'_>> {
    if let Some(rest) = line.strip_prefix(b"ADDMESSAGE") {
        let lead = rest.iter().take_while(|b| is_space(b)).count();
        let rest = &rest[lead..];
        let name = rest.iter().take_while(|b| !is_space(b)).count();
        // One separator after the channel, then the text byte for byte.
        let (channel, [_, text @ ..]) = rest.split_at(name) else {
            return None;
        };
        return (lead > 0 && name > 0).then_some(Command::AddMessage { channel, text });
    }
    if let Some(rest) = line.strip_prefix(b"COUNTSUBSCRIBERS") {
        let mut words = rest.split(is_space).filter(|w| !w.is_empty());
        return match (
            rest.first().is_some_and(is_space),
            words.next(),
            words.next(),
        ) {
            (true, Some(channel), None) => Some(Command::CountSubscribers { channel }),
            _ => None,
        };
    }
    if let Some(password) = line.strip_prefix(b"AUTH ") {
        return Some(Command::Auth { password });
    }
    let end = line.iter().rposition(|b| !is_space(b)).map_or(0, |i| i + 1);
    match &line[..end] {
        b"LISTCHANNELS" => Some(Command::ListChannels),
        b"SHOWSTATS" => Some(Command::ShowStats),
        b"QUIT" => Some(Command::Quit),
        _ => None,
    }
}

const LINES: &[&str] = &[
    "ADDMESSAGE news Hello, world!",
    "ADDMESSAGE \t chan a  b\tc ",
    "ADDMESSAGE chan ",
    "ADDMESSAGE chan\t\t<script>x</script>\r",
    "COUNTSUBSCRIBERS news",
    "COUNTSUBSCRIBERS\tnews \t",
    "LISTCHANNELS",
    "SHOWSTATS  ",
    "QUIT",
    "AUTH s3 cret",
];

#[test]
fn controller_lines() {
    let corpus: Vec<&[u8]> = LINES.iter().map(|l| l.as_bytes()).collect();
    let alphabet = b"ADDMESSAGE COUNTSUBSCRIBERS LISTCHANNELS\t\r\n~xQUIT";
    fuzz("controller_lines", &corpus, alphabet, |line| {
        let command = commands::parse(line);
        assert_eq!(command, reference_command(line));
        if let Some(Command::AddMessage { channel, text }) = command {
            // The text is the exact suffix after the single separator.
            let before = &line[..line.len() - text.len()];
            assert!(line.ends_with(text) && before.last().is_some_and(is_space));
            assert!(before[..before.len() - 1].ends_with(channel));
        }
    });
}

/// Constructed `ADDMESSAGE` lines give back their channel and text exactly.
#[test]
fn addmessage_keeps_text() {
    let not_lf: Vec<u8> = (0..=255).filter(|&b| b != b'\n').collect();
    let channel_bytes: Vec<u8> = not_lf.iter().copied().filter(|b| !is_space(b)).collect();
    fuzz_with(
        "addmessage_keeps_text",
        |rng| {
            let n = 1 + rng.below(12);
            let channel = rng.bytes(n, &channel_bytes);
            let n = rng.below(40);
            let alphabet: &[u8] = if rng.one_in(2) { &not_lf } else { b" \tab~" };
            let text = rng.bytes(n, alphabet);
            let mut line = b"ADDMESSAGE".to_vec();
            for _ in 0..=rng.below(3) {
                line.push(*rng.pick(b" \t"));
            }
            line.extend_from_slice(&channel);
            line.push(*rng.pick(b" \t"));
            line.extend_from_slice(&text);
            (Bytes(line), Bytes(channel), Bytes(text))
        },
        |(line, channel, text)| {
            let expected = Command::AddMessage {
                channel: &channel.0,
                text: &text.0,
            };
            assert_eq!(commands::parse(&line.0), Some(expected));
        },
    );
}

// ----------------------------------------------------------------------------
// Configuration: file, command line, values and escapes
// ----------------------------------------------------------------------------

const ORIGIN: &str = "fuzz.conf";

const FILES: &[&str] = &[
    "# comment\r\n\r\nPingMessage a\\tb\\sc\\\\\\x  \r\n[ m ]\nMessageTemplate --~id~\n",
    "SubscriberPort 4670\nMaxMessages 0\n[longpoll]\nPersist 1\nMaxMessages 1\nMaxTime 30\n[]\nDebug 1",
    "  \t# indented comment\n[iframe]\nHeaderTemplate HTTP/1.1 ~status~\\r\\n\\r\\n~channelinfo~\n",
    "PingMessage\nSubscriberShutdownMsg <script>eof();</script>\\r\\n\nLogTimeFormat unix\n",
    "SubscriberIP 127.0.0.1\nUDPPort 0\nMaxMessageAge 7200\nPingInterval 2\n",
    include_str!("../meteor.conf"),
];

/// The line number an error of `parse_file` names, checking its form.
fn error_line(error: &ConfigError) -> usize {
    let rest = error
        .0
        .strip_prefix(ORIGIN)
        .and_then(|r| r.strip_prefix(" line "));
    let digits = rest.map(|r| r.split(':').next().unwrap_or_default());
    digits
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("error does not name the line: {}", error.0))
}

/// `text` with each LF not preceded by a CR turned into CRLF.
fn with_crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A configuration file on disk, unique to this process and test.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str) -> TempFile {
        let name = format!("meteord-fuzz-{}-{test}.conf", std::process::id());
        TempFile(std::env::temp_dir().join(name))
    }

    /// Writes `text` and loads it (plus `args`) the way the server does.
    fn load(&self, text: &[u8], args: &[&str]) -> Result<config::Config, ConfigError> {
        let mut file = std::fs::File::create(&self.0).expect("temp file");
        file.write_all(text).expect("temp file write");
        let path = self.0.to_string_lossy();
        let mut line = vec!["-ConfigFileLocation", &path];
        line.extend_from_slice(args);
        let args: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        let (_, raw) = config::parse_args(&args)?;
        config::load(&raw)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn config_files() {
    let corpus: Vec<&[u8]> = FILES.iter().map(|f| f.as_bytes()).collect();
    let temp = TempFile::new("config_files");
    let alphabet = b"[]# \t\\rnts0-~\r\n\n\nPingMessageMaxTimePersist1.";
    fuzz("config_files", &corpus, alphabet, |text| {
        let parsed = config::parse_file(text, ORIGIN);
        let lines = text.split(|&b| b == b'\n').count();
        if let Err(e) = &parsed {
            assert!(
                (1..=lines).contains(&error_line(e)),
                "line out of range: {}",
                e.0
            );
        }
        // Comments and blank lines in front only shift the lines.
        let mut shifted = b"# fuzz\n\n".to_vec();
        shifted.extend_from_slice(text);
        match (&parsed, config::parse_file(&shifted, ORIGIN)) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(b)) => assert_eq!(error_line(a) + 2, error_line(&b)),
            (a, b) => panic!("a comment in front changed {a:?} into {b:?}"),
        }
        // CRLF and LF files mean the same.
        let crlf = config::parse_file(&with_crlf(text), ORIGIN);
        assert_eq!(
            parsed.as_ref().err(),
            crlf.as_ref().err(),
            "CRLF changed the result"
        );
        let loaded = temp.load(text, &[]);
        if parsed.is_err() {
            assert!(loaded.is_err(), "load accepted a file parse_file refused");
        }
        if parsed.is_ok() {
            let mut more = text.to_vec();
            more.extend_from_slice(b"\n[fuzz]\nMaxTime 5\n\t# end\n");
            assert!(
                config::parse_file(&more, ORIGIN).is_ok(),
                "a valid section was refused"
            );
            more.extend_from_slice(b"NoSuchKey 1");
            let e = config::parse_file(&more, ORIGIN).expect_err("an unknown key was accepted");
            assert_eq!(error_line(&e), lines + 4);
            assert!(e.0.contains("NoSuchKey"), "{}", e.0);
        }
    });
}

/// Pieces of the values the round-trip tests write (all valid UTF-8).
const VALUE_ATOMS: &[&str] = &[
    "a", "Z", "0", "x", " ", " ", "\t", "\r", "\n", "\0", "\\", "-", "--", "#", "~", "~id~", "[",
    "]", "é", "€", "=",
];

/// Writes `value` so that unescaping gives it back: `\r \n \t \s \0 \\`,
/// sometimes `\x` for a plain letter, and a leading space, tab or dash
/// escaped; with `dash_rule`, a leading dash may instead be doubled (`--x`).
fn escape_value(rng: &mut Rng, value: &[u8], dash_rule: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in value.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\r' => b"\\r",
            b'\n' => b"\\n",
            0 => b"\\0",
            b'\t' if i == 0 || rng.one_in(2) => b"\\t",
            b' ' if i == 0 || rng.one_in(2) => b"\\s",
            b'-' if i == 0 && dash_rule && rng.one_in(2) => b"--",
            b'-' if i == 0 => b"\\-",
            b'a' | b'x' | b'Z' | b'#' | b'~' if rng.one_in(4) => &[b'\\', b],
            _ => &[b][..],
        };
        out.extend_from_slice(escaped);
    }
    out
}

#[test]
fn unescape() {
    fuzz_with(
        "unescape",
        |rng| {
            let value = rng.join(12, VALUE_ATOMS);
            let escaped = lossy(&escape_value(rng, &value, false));
            (Bytes(value), escaped)
        },
        |(value, escaped)| assert_eq!(config::unescape(escaped), value.0),
    );
    let corpus: &[&[u8]] = &[b"a\\tb\\sc\\\\\\x", b"<script>\\r\\n", b"\\0\\"];
    fuzz("unescape_any", corpus, b"\\rntsx0 ", |bytes| {
        let text = lossy(bytes);
        let out = config::unescape(&text);
        assert!(out.len() <= text.len());
        if !text.contains('\\') {
            assert_eq!(out, text.as_bytes(), "text without a backslash changed");
        }
    });
}

/// Values written in the file (global and in a `[ fuzz ]` section) and on
/// the command line come back exactly from the loaded configuration.
#[test]
fn config_values_round_trip() {
    let temp = TempFile::new("config_values_round_trip");
    fuzz_with(
        "config_values_round_trip",
        |rng| {
            let values: Vec<Bytes> = (0..4).map(|_| Bytes(rng.join(10, VALUE_ATOMS))).collect();
            let cli = lossy(&escape_value(rng, &values[3].0, true));
            let mut file = b"# round trip\n".to_vec();
            for (i, key) in ["PingMessage", "[ fuzz ]\nPingMessage", "MessageTemplate"]
                .iter()
                .enumerate()
            {
                file.extend_from_slice(key.as_bytes());
                file.extend_from_slice(if rng.one_in(2) { b" " } else { b" \t " });
                file.extend_from_slice(&escape_value(rng, &values[i].0, true));
                file.extend_from_slice(if rng.one_in(2) { b"\n" } else { b"\r\n" });
            }
            (Bytes(file), cli, values)
        },
        |(file, cli, values)| {
            let config = temp
                .load(&file.0, &["-PingMessage.cli", cli])
                .expect("valid file");
            let fuzz = config.mode("fuzz");
            assert_eq!(config.global_mode.ping, values[0].0, "global PingMessage");
            assert_eq!(fuzz.ping, values[1].0, "[fuzz] PingMessage");
            assert_eq!(fuzz.message.source(), values[2].0, "[fuzz] MessageTemplate");
            assert_eq!(config.mode("cli").ping, values[3].0, "-PingMessage.cli");
        },
    );
}

/// Every key name, read from `-help`.
fn key_names() -> Vec<String> {
    let help = config::help();
    let names = help
        .lines()
        .filter_map(|l| l.strip_prefix("  -")?.split(' ').next());
    names.map(str::to_owned).collect()
}

/// Command lines are written one argument per line.
fn split_args(bytes: &[u8]) -> Vec<String> {
    match bytes {
        [] => Vec::new(),
        _ => bytes.split(|&b| b == b'\n').map(lossy).collect(),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const COMMAND_LINES: &[&str] = &[
    "-SubscriberPort\n4670\n-d\n-MaxTime.longpoll\n30",
    "-subscriberp\n1234\n-PingMessage.x\n--y\n-Persist.x",
    "-ConfigFileLocation\n/tmp/x.conf\n-debug\n-messaget\n~id~\\r\\n",
    "--PingInterval\n5\n-HeaderTemplate.iframe\n-\n-v",
    "-help",
];

#[test]
fn command_lines() {
    let keys = key_names();
    assert!(
        keys.len() > 20 && keys.iter().any(|k| k == "PingMessage"),
        "{keys:?}"
    );
    let corpus: Vec<&[u8]> = COMMAND_LINES.iter().map(|l| l.as_bytes()).collect();
    let alphabet = b"-.\n\n-SubscriberPortMaxTimepingd v help --x 1 iframe";
    fuzz("command_lines", &corpus, alphabet, |bytes| {
        let line = split_args(bytes);
        let result = config::parse_args(&line);
        if let Err(e) = &result {
            assert!(!e.0.is_empty());
        }
        if line
            .first()
            .is_some_and(|a| !a.starts_with('-') || a == "-")
        {
            assert!(
                result.is_err(),
                "a first argument that is no option was accepted"
            );
        }
        if let Ok((Action::Run, _)) = result {
            let with = |extra: &[&str]| config::parse_args(&[line.clone(), args(extra)].concat());
            assert_eq!(with(&["-v"]).map(|r| r.0), Ok(Action::Version));
            assert_eq!(with(&["-help"]).map(|r| r.0), Ok(Action::Help));
            assert_eq!(with(&["-MaxTime", "5"]).map(|r| r.0), Ok(Action::Run));
            assert_eq!(
                with(&["-PingMessage.fuzz", "--x"]).map(|r| r.0),
                Ok(Action::Run)
            );
        }
    });
    // Any case-insensitive exact name or unambiguous prefix is a key.
    fuzz_with(
        "command_line_prefixes",
        |rng| {
            let key = rng.pick(&keys);
            let len = 1 + rng.below(key.len());
            let flip = |c: char, upper: bool| if upper { c.to_ascii_uppercase() } else { c };
            key.chars()
                .take(len)
                .map(|c| flip(c.to_ascii_lowercase(), rng.one_in(2)))
                .collect::<String>()
        },
        |name| {
            let lower = name.to_ascii_lowercase();
            if lower == "d" || lower == "h" {
                return; // -d is -Debug; -h is -help
            }
            let exact = keys.iter().any(|k| k.eq_ignore_ascii_case(name));
            let matching = keys
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with(&lower));
            let expected = exact || matching.count() == 1;
            let result = config::parse_args(&args(&[&format!("-{name}"), "1"]));
            assert_eq!(result.is_ok(), expected, "-{name}: {result:?}");
        },
    );
}

// ----------------------------------------------------------------------------
// Templates and escapes
// ----------------------------------------------------------------------------

/// Placeholder names as the wire contract writes them.
const FIELDS: &[(&str, Placeholder)] = &[
    ("status", Placeholder::Status),
    ("server", Placeholder::Server),
    ("servertime", Placeholder::ServerTime),
    ("channelinfo", Placeholder::ChannelInfo),
    ("id", Placeholder::Id),
    ("channel", Placeholder::Channel),
    ("text", Placeholder::Text),
    ("timestamp", Placeholder::Timestamp),
    ("name", Placeholder::Name),
    ("lastMsgID", Placeholder::LastMsgId),
    ("messageCount", Placeholder::MessageCount),
    ("subscriberCount", Placeholder::SubscriberCount),
    ("cors", Placeholder::Cors),
];

const ESCAPES: &[(&str, Escape)] = &[
    ("js", Escape::Js),
    ("html", Escape::Html),
    ("json", Escape::Json),
    ("sse", Escape::Sse),
];

/// A distinct value per placeholder: numbers for some, bytes that every
/// escape changes for the others.
fn value_of(field: Placeholder) -> Value<'static> {
    let i = FIELDS.iter().position(|f| f.1 == field).unwrap_or_default();
    const BYTES: &[&[u8]] = &[b"<a href='x'>\"&\r\n", b"\\~\t\x01\xe2\x80\xa8", b"plain"];
    match i % 4 {
        3 => Value::Number(i as u64 * 1001),
        _ => Value::Bytes(BYTES[i % 3]),
    }
}

/// The reference renderer: `~~` is `~`, `~name~` or `~name:escape~` its
/// value, an unknown name or escape nothing, an unclosed `~` literal.
fn reference_render(source: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.iter().position(|&b| b == b'~') {
        out.extend_from_slice(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.iter().position(|&b| b == b'~') else {
            out.extend_from_slice(&rest[open..]);
            return out;
        };
        let name = lossy(&after[..close]);
        let (field, escape) = name.split_once(':').unwrap_or((&name, ""));
        let field = FIELDS.iter().find(|f| f.0 == field).map(|f| f.1);
        let escape = match escape {
            "" if !name.contains(':') => Some(Escape::Raw),
            e => ESCAPES.iter().find(|x| x.0 == e).map(|x| x.1),
        };
        match (name.is_empty(), field, escape) {
            (true, ..) => out.push(b'~'),
            (false, Some(field), Some(escape)) => match value_of(field) {
                Value::Bytes(bytes) => escape.write(&mut out, bytes),
                Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
                Value::None => {}
            },
            _ => {}
        }
        rest = &after[close + 1..];
    }
    out.extend_from_slice(rest);
    out
}

const TEMPLATES: &[&str] = &[
    "<script>p(~id~,\"~channel:js~\",\"~text:js~\");</script>\r\n",
    "HTTP/1.1 ~status~\r\nServer: ~server~\r\n~cors~\r\n~channelinfo~",
    "ch(\"~name~\", ~lastMsgID~, ~messageCount~/~subscriberCount~);",
    "data: ~text:sse~\n\n<p>~text:html~</p>{\"t\":\"~text:json~\"}",
    "a~~b ~~id~~ ~nope~ ~text:nope~ open ~ended",
    "",
];

#[test]
fn templates() {
    let corpus: Vec<&[u8]> = TEMPLATES.iter().map(|t| t.as_bytes()).collect();
    let alphabet = b"~~~:idtextstatusjshtmlsse \r\n\"";
    fuzz("templates", &corpus, alphabet, |source| {
        let template = Template::parse(source);
        assert_eq!(template.source(), source);
        assert_eq!(
            template,
            Template::parse(source),
            "parsing is not deterministic"
        );
        let mut out = b"kept".to_vec();
        template.render(&mut out, value_of);
        assert!(out.starts_with(b"kept"), "render must append");
        assert_eq!(out[4..], reference_render(source));
        if !source.contains(&b'~') {
            assert_eq!(&out[4..], source, "a template without '~' is literal");
        }
    });
}

/// Undoes the `js` and `json` escapes: `\" \' \\ \n \r \t \uXXXX`.
fn unescape_js(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < escaped.len() {
        let (b, next) = (escaped[i], escaped.get(i + 1).copied());
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        i += 1;
        match next.expect("a lone backslash") {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hex = lossy(&escaped[i..(i + 4).min(escaped.len())]);
                let code = u32::from_str_radix(&hex, 16).expect("four hex digits");
                let c = char::from_u32(code).expect("a character");
                out.extend_from_slice(c.to_string().as_bytes());
                i += 4;
            }
            other => out.push(other),
        }
    }
    out
}

/// The bytes of a `js` or `json` escaped string outside its escapes.
fn unescaped_bytes(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = escaped.get(i) {
        i += match (b, escaped.get(i + 1)) {
            (b'\\', Some(b'u')) => 6,
            (b'\\', _) => 2,
            _ => {
                out.push(b);
                1
            }
        };
    }
    out
}

/// Undoes the `html` escape.
fn unescape_html(escaped: &[u8]) -> Vec<u8> {
    let text = lossy(escaped);
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"");
    text.replace("&#39;", "'")
        .replace("&amp;", "&")
        .into_bytes()
}

#[test]
fn escapes() {
    let corpus: &[&[u8]] = &[b"</script>\"'\\\n\xe2\x80\xa8&", b"a\r\nb\nc\rd", b"plain"];
    let alphabet = b"<>&\"'\\\r\n\t\x00\x7f\xe2\x80\xa8\xa9abc";
    fuzz("escapes", corpus, alphabet, |value| {
        let write = |escape: Escape| {
            let mut out = Vec::new();
            escape.write(&mut out, value);
            out
        };
        assert_eq!(write(Escape::Raw), value);
        for escape in [Escape::Js, Escape::Json] {
            let out = write(escape);
            let unsafe_byte = |b: &u8| b"<>&\"'\r\n\x7f".contains(b) || *b < 0x20;
            assert!(
                !unescaped_bytes(&out).iter().any(unsafe_byte),
                "{escape:?}: {}",
                out.escape_ascii()
            );
            assert!(
                !out.windows(3)
                    .any(|w| w == b"\xe2\x80\xa8" || w == b"\xe2\x80\xa9")
            );
            assert_eq!(unescape_js(&out), value, "{escape:?} does not round-trip");
        }
        let html = write(Escape::Html);
        assert!(!html.iter().any(|b| b"<>\"'".contains(b)));
        if std::str::from_utf8(value).is_ok() {
            assert_eq!(unescape_html(&html), value, "html does not round-trip");
        }
        // SSE: every line break (CRLF, CR or LF) starts a new `data: ` line.
        let text = lossy(value);
        if text.as_bytes() == value {
            let lines = text.replace("\r\n", "\n").replace('\r', "\n");
            let expected = lines.replace('\n', "\ndata: ");
            assert_eq!(lossy(&write(Escape::Sse)), expected);
        }
    });
}

// ----------------------------------------------------------------------------
// Subscriber tokens
// ----------------------------------------------------------------------------

const TOKEN_SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123";
const TOKEN_NOW: u64 = 1_800_000_000;

fn token_claims(channels: &[&str], hostid: Option<&str>) -> Claims {
    Claims {
        exp: TOKEN_NOW + 600,
        nbf: None,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        hostid: hostid.map(str::to_owned),
    }
}

/// Random bytes and mutations of valid tokens: never a panic, and nothing
/// but an unchanged valid token is ever accepted (a changed character is
/// a changed signature, or a changed signed text).
#[test]
fn tokens() {
    let valid: Vec<String> = [
        token_claims(&["private-a"], None),
        token_claims(&["private-*", "user-7", "\"\\\u{1}é"], Some("h1")),
        token_claims(&[], None),
    ]
    .iter()
    .map(|c| token::mint(TOKEN_SECRET, c))
    .collect();
    let corpus: Vec<&[u8]> = valid.iter().map(|t| t.as_bytes()).collect();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    fuzz("tokens", &corpus, alphabet, |bytes| {
        let result = token::verify(bytes, &[TOKEN_SECRET], TOKEN_NOW);
        if result.is_ok() {
            assert!(
                corpus.contains(&bytes),
                "a token that was never minted was accepted: {}",
                bytes.escape_ascii()
            );
        }
        if let Err(refusal) = result {
            // The reason is fixed words: never the input.
            let said = refusal.to_string();
            assert!(bytes.len() < 8 || !said.contains(&lossy(bytes)), "{said}");
        }
    });
}

/// Any claims minted verify to the same claims, under either of two
/// secrets; base64url and JSON round-trip on their own too.
#[test]
fn tokens_round_trip() {
    let pieces = [
        "a", "-", "*", "é", "\"", "\\", "\n", "\u{1}", "😀", "private-", "x y",
    ];
    fuzz_with(
        "tokens_round_trip",
        |rng| {
            let channels: Vec<String> = (0..rng.below(5))
                .map(|_| (0..rng.below(4)).map(|_| *rng.pick(&pieces)).collect())
                .collect();
            let hostid = rng.one_in(2).then(|| {
                (0..1 + rng.below(8))
                    .map(|_| *rng.pick(&["a", "Z", "9"]))
                    .collect()
            });
            Claims {
                exp: TOKEN_NOW + 1 + rng.next_u64() % (1 << 40),
                nbf: rng.one_in(2).then(|| rng.next_u64() % (TOKEN_NOW + 1)),
                channels,
                hostid,
            }
        },
        |claims| {
            let secrets: [&[u8]; 2] = [b"new", TOKEN_SECRET];
            let token = token::mint(TOKEN_SECRET, claims);
            assert_eq!(
                token::verify(token.as_bytes(), &secrets, TOKEN_NOW).as_ref(),
                Ok(claims)
            );
            let payload = token::jwt::payload(claims);
            assert_eq!(
                base64url::decode(base64url::encode(payload.as_bytes()).as_bytes()).as_deref(),
                Some(payload.as_bytes())
            );
            assert!(json::parse(payload.as_bytes()).is_some(), "{payload}");
        },
    );
    fuzz(
        "base64url_and_json",
        &[b"eyJhIjpbMSwiXHUwMGU5Il19", b"{\"a\":[1,\"\\u00e9\"]}"],
        b"{}[]\",:\\u0123456789eE.-+truefalsenullAZaz_",
        |bytes| {
            if let Some(decoded) = base64url::decode(bytes) {
                assert_eq!(
                    base64url::encode(&decoded).as_bytes(),
                    bytes,
                    "one encoding per byte string"
                );
            }
            let _ = json::parse(bytes);
        },
    );
}

// ----------------------------------------------------------------------------
// Forwarding headers (TrustedProxies)
// ----------------------------------------------------------------------------

const FORWARDED_FOR: &[&str] = &[
    "203.0.113.7",
    "6.6.6.6, 10.0.0.7",
    "198.51.100.1, 10.0.0.1:8080, 127.0.0.2",
    "[2001:db8::17]:4711, ::1",
    "2001:db8::9,fd00::1, 10.1.2.3",
    " , 1.2.3.4 ,",
];

/// The reference for one `X-Forwarded-For` entry: what the standard library
/// reads as an IP address or a socket address (`1.2.3.4:80`, `[::1]:80`),
/// or an IPv6 address in brackets.
fn reference_node(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The reference walk over `X-Forwarded-For` lines, from the spec: right to
/// left, trusted addresses skipped, the first untrusted one is the client;
/// an entry that is not an address stops the walk at the last address
/// right of it (or the peer); all trusted: the left-most.
fn reference_client(trusted: &TrustedProxies, peer: IpAddr, lines: &[String]) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let joined = lines.join(",");
    let entries: Vec<&str> = joined
        .split(',')
        .map(|e| e.trim_matches([' ', '\t']))
        .filter(|e| !e.is_empty())
        .collect();
    let mut last = peer;
    for entry in entries.iter().rev() {
        match reference_node(entry) {
            Some(ip) if trusted.contains(ip) => last = ip,
            Some(ip) => return ip,
            None => return last,
        }
    }
    last
}

#[test]
fn forwarding_headers() {
    let trusted = TrustedProxies::parse("127.0.0.2 10.0.0.0/8 ::1 fd00::/8").expect("trusted");
    let proxy: IpAddr = "127.0.0.2".parse().expect("ip");
    let stranger: IpAddr = "127.0.0.3".parse().expect("ip");
    let corpus: Vec<&[u8]> = FORWARDED_FOR.iter().map(|h| h.as_bytes()).collect();
    // No '%' (scope ids), '+' or '_' (obfuscated ports), which the standard
    // library reads differently from RFC 7239.
    fuzz(
        "forwarding_headers",
        &corpus,
        b"0123456789abcdef.:,[] \t\n",
        |bytes| {
            let lines: Vec<String> = lossy(bytes).split('\n').map(str::to_owned).collect();
            let headers = Forwarding {
                x_forwarded_for: lines.clone(),
                forwarded: Vec::new(),
            };
            assert_eq!(trusted.client(stranger, &headers), stranger);
            assert_eq!(
                trusted.client(proxy, &headers),
                reference_client(&trusted, proxy, &lines)
            );
        },
    );
    let forwarded: Vec<String> = FORWARDED_FOR
        .iter()
        .map(|line| {
            line.split(',')
                .map(|e| format!("for=\"{}\";proto=https", e.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    let corpus: Vec<&[u8]> = forwarded.iter().map(|h| h.as_bytes()).collect();
    fuzz(
        "forwarded_headers",
        &corpus,
        b"0123456789abcdef.:,;=\"\\[] \tforunknown_",
        |bytes| {
            let line = lossy(bytes);
            let headers = Forwarding {
                x_forwarded_for: Vec::new(),
                forwarded: vec![line.clone()],
            };
            assert_eq!(trusted.client(stranger, &headers), stranger);
            // The client is the proxy or an address the line names.
            let client = trusted.client(proxy, &headers);
            let named = proxies::forwarded_for(&line).unwrap_or_default();
            assert!(
                client == proxy || named.contains(&Some(client)),
                "{client} from {line:?}"
            );
        },
    );
}
