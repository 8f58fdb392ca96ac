//! Private channels over real sockets: tokens minted by an independent JWT
//! implementation (the npm package `jsonwebtoken`, a dev dependency in
//! tests/browser/package.json, run with node), every refusal reason with
//! its exact status and body, tampered and foreign tokens, expiry closing
//! a live stream, rotation with two secrets, hostids bound by a token, and
//! the `-token` helper.
//!
//! The tests that need node and tests/browser/node_modules (made by `npm
//! ci` in tests/browser, as .ci/run does) are `#[ignore]`d like the browser
//! test: `cargo test -- --include-ignored` runs them, and a missing tool
//! then fails them, naming what to install. The rest need nothing.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "test-subscriber-secret-0123456789abcdef";

/// Signs `claims` (JSON) with `secret` using `alg`, through jsonwebtoken.
fn sign(claims: &str, secret: &str, alg: &str) -> String {
    let module =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/jsonwebtoken");
    assert!(
        module.is_dir(),
        "these tests need {} (cd tests/browser && npm ci)",
        module.display()
    );
    let script = "const jwt = require(process.env.JWT_MODULE);\
        const [claims, secret, alg] = process.argv.slice(1);\
        process.stdout.write(jwt.sign(JSON.parse(claims), secret, { algorithm: alg }));";
    let out = Command::new("node")
        .env("JWT_MODULE", &module)
        .args(["-e", script, claims, secret, alg])
        .output()
        .expect("run node (apt-get install nodejs npm)");
    assert!(
        out.status.success(),
        "jsonwebtoken failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a token is ASCII")
}

/// A token from jsonwebtoken granting `channels`, valid for `seconds`.
fn token_for(channels: &[&str], seconds: i64, extra: &str) -> String {
    let list: Vec<String> = channels.iter().map(|c| format!("\"{c}\"")).collect();
    let exp = now_unix() as i64 + seconds;
    let claims = format!("{{\"channels\":[{}],\"exp\":{exp}{extra}}}", list.join(","));
    sign(&claims, SECRET, "HS256")
}

/// base64url without padding, written here so the handcrafted tokens do
/// not depend on the server's own encoder.
fn b64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["-SubscriberSecret", SECRET];
    args.extend_from_slice(extra);
    Server::start_test(&args)
}

/// The exact refusal: status, challenge, one-line body.
fn refusal(status: &str, error: Option<&str>, reason: &str) -> String {
    let body = format!("{status}: {reason}\n");
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"meteord\", error=\"{e}\""),
        None => "Bearer realm=\"meteord\"".to_owned(),
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Cache-Control: no-store\r\nWWW-Authenticate: {challenge}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn unauthorized(reason: &str) -> String {
    refusal("401 Unauthorized", Some("invalid_token"), reason)
}

fn forbidden(reason: &str) -> String {
    refusal("403 Forbidden", Some("insufficient_scope"), reason)
}

/// `GET path` with extra header lines; the whole answer up to the close.
fn get_with(server: &Server, path: &str, headers: &str) -> String {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    let mut c = server.request(raw.as_bytes());
    String::from_utf8_lossy(&c.read_to_end(WAIT)).into_owned()
}

fn get(server: &Server, path: &str) -> String {
    get_with(server, path, "")
}

/// Subscribes with extra header lines and waits for the header of the
/// test modes (proof that the subscriber is registered).
fn subscribe_with(server: &Server, path: &str, headers: &str) -> Conn {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    let mut c = server.request(raw.as_bytes());
    c.expect_str(HDR_OK);
    c
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// The server's log never shows the token nor the secret.
fn assert_never_logged(server: &Server, secrets: &[&str]) {
    for line in server.logs() {
        for s in secrets {
            assert!(!line.contains(s), "the log shows a secret or token: {line}");
        }
    }
}

#[test]
fn without_a_secret_nothing_changes() {
    let s = Server::start_test(&[]);
    let mut c = s.subscribe("/push/h1/stream/private-a", HDR_OK);
    let id = s.ctl().add("private-a", "x");
    c.expect_str(&format!("{id}:private-a:x\n"));
}

#[test]
fn public_channels_need_no_token() {
    let s = server(&[]);
    let mut c = s.subscribe("/push/h1/stream/public", HDR_OK);
    let id = s.ctl().add("public", "hello");
    c.expect_str(&format!("{id}:public:hello\n"));
}

#[test]
fn a_missing_token_is_401_with_the_reason() {
    let s = server(&["-PrivateChannels", "private-* user-*"]);
    let missing = refusal("401 Unauthorized", None, "token missing");
    assert_eq!(get(&s, "/push/h1/stream/private-a"), missing);
    assert_eq!(get(&s, "/push/h1/stream/user-7.b5"), missing);
    // A public channel beside it does not help: the request is refused whole.
    assert_eq!(get(&s, "/push/h1/stream/public/private-a"), missing);
    // Another authorization scheme is no token.
    assert_eq!(
        get_with(
            &s,
            "/push/h1/stream/private-a",
            "Authorization: Basic eDp5\r\n"
        ),
        missing
    );
    let line = s
        .wait_log(WAIT, |l| l.contains("refused\t"))
        .expect("a refused record");
    assert!(
        line.ends_with("refused\t127.0.0.1\th1\t401\ttoken missing"),
        "{line}"
    );
    assert_eq!(s.ctl().count("private-a"), 0);
}

#[test]
fn malformed_tokens_are_401_malformed() {
    let s = server(&[]);
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url(br#"{"channels":["private-a"],"exp":9999999999}"#);
    let cases = [
        ("abc".to_owned(), "not three dot-separated parts"),
        ("a.b.c.d".to_owned(), "not three dot-separated parts"),
        (
            format!("{header}!.{payload}.sig"),
            "header or payload is not base64url",
        ),
        (
            format!("{header}.{payload}+.sig"),
            "header or payload is not base64url",
        ),
        (
            format!("{header}=.{payload}.sig"),
            "header or payload is not base64url",
        ),
        (
            format!("{header}.{payload}.si/g"),
            "signature is not base64url",
        ),
        (
            format!("{}.{payload}.sig", b64url(b"not json")),
            "header is not a JSON object",
        ),
        ("x".repeat(5000), "longer than 4096 bytes"),
    ];
    for (token, detail) in cases {
        assert_eq!(
            get_with(&s, "/push/h1/stream/private-a", &bearer(&token)),
            unauthorized(&format!("token malformed ({detail})")),
            "{detail}"
        );
    }
    // The same in the query string.
    assert_eq!(
        get(&s, "/push/h1/stream/private-a?token=abc"),
        unauthorized("token malformed (not three dot-separated parts)")
    );
    assert_never_logged(&s, &[SECRET, "xxxxxxxx"]);
}

#[test]
fn alg_none_is_a_bad_signature() {
    let s = server(&[]);
    let payload = format!(
        "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
        now_unix() + 600
    );
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let token = format!(
            "{}.{}.",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        );
        assert_eq!(
            get_with(&s, "/push/h1/stream/private-a", &bearer(&token)),
            unauthorized("bad signature"),
            "{header}"
        );
    }
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn tokens_from_jsonwebtoken_open_private_channels() {
    let s = server(&["-PrivateChannels", "private-* user-*"]);
    let token = token_for(&["private-a", "user-*"], 600, "");
    // In the Authorization header, with a backlog.
    let id = s.ctl().add("private-a", "one");
    let mut c = subscribe_with(
        &s,
        "/push/h1/stream/private-a.h/user-7/public",
        &bearer(&token),
    );
    c.expect_str(&format!("{id}:private-a:one\n"));
    let id = s.ctl().add("user-7", "two");
    c.expect_str(&format!("{id}:user-7:two\n"));
    // In the query string (what EventSource and WebSocket can send).
    let mut q = s.subscribe(
        &format!("/push/h2/stream/private-a?nc=1&token={token}"),
        HDR_OK,
    );
    // In the cookie named by SubscriberTokenCookie (meteord_token by default).
    let mut k = subscribe_with(
        &s,
        "/push/h3/stream/private-a",
        &format!("Cookie: theme=dark; meteord_token={token}\r\n"),
    );
    let id = s.ctl().add("private-a", "three");
    for conn in [&mut c, &mut q, &mut k] {
        conn.expect_str(&format!("{id}:private-a:three\n"));
    }
    assert_never_logged(&s, &[SECRET, &token]);
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn another_cookie_name_is_configurable() {
    let s = server(&["-SubscriberTokenCookie", "auth"]);
    let token = token_for(&["private-a"], 600, "");
    let mut k = subscribe_with(
        &s,
        "/push/h1/stream/private-a",
        &format!("Cookie: auth={token}\r\n"),
    );
    let id = s.ctl().add("private-a", "x");
    k.expect_str(&format!("{id}:private-a:x\n"));
    assert_eq!(
        get_with(
            &s,
            "/push/h2/stream/private-a",
            &format!("Cookie: meteord_token={token}\r\n")
        ),
        refusal("401 Unauthorized", None, "token missing")
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn a_request_is_refused_whole_when_one_private_channel_is_not_granted() {
    let s = server(&[]);
    let token = token_for(&["private-a"], 600, "");
    assert_eq!(
        get_with(
            &s,
            "/push/h1/stream/public/private-a/private-b",
            &bearer(&token)
        ),
        forbidden("channel not granted: private-b")
    );
    let line = s
        .wait_log(WAIT, |l| l.contains("refused\t"))
        .expect("a refused record");
    assert!(
        line.ends_with("refused\t127.0.0.1\th1\t403\tchannel not granted: private-b"),
        "{line}"
    );
    // Nothing was joined.
    let mut ctl = s.ctl();
    assert_eq!(ctl.count("public"), 0);
    assert_eq!(ctl.count("private-a"), 0);
    // A pattern in the token grants what it matches.
    let all = token_for(&["private-*"], 600, "");
    subscribe_with(
        &s,
        "/push/h1/stream/public/private-a/private-b",
        &bearer(&all),
    );
    ctl.wait_count("private-b", 1, WAIT);
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn tampered_foreign_and_wrong_algorithm_tokens_are_refused() {
    let s = server(&[]);
    let token = token_for(&["private-a"], 600, "");
    let parts: Vec<&str> = token.split('.').collect();
    // The payload rewritten to grant more, the signature kept.
    let grant_all =
        b64url(format!("{{\"channels\":[\"*\"],\"exp\":{}}}", now_unix() + 600).as_bytes());
    let rewritten = format!("{}.{grant_all}.{}", parts[0], parts[2]);
    // One character of the signature changed (the last one too: its unused
    // bits must not let a changed character pass).
    let mut flipped = Vec::new();
    for at in [0, parts[2].len() / 2, parts[2].len() - 1] {
        let mut sig = parts[2].as_bytes().to_vec();
        sig[at] = if sig[at] == b'A' { b'B' } else { b'A' };
        flipped.push(format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8_lossy(&sig)
        ));
    }
    let foreign = sign(
        &format!(
            "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
            now_unix() + 600
        ),
        "some-other-secret",
        "HS256",
    );
    let hs512 = sign(
        &format!(
            "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
            now_unix() + 600
        ),
        SECRET,
        "HS512",
    );
    let hs384 = sign(
        &format!(
            "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
            now_unix() + 600
        ),
        SECRET,
        "HS384",
    );
    let mut bad = vec![rewritten, foreign, hs512, hs384];
    bad.extend(flipped);
    for t in &bad {
        assert_eq!(
            get_with(&s, "/push/h1/stream/private-a", &bearer(t)),
            unauthorized("bad signature"),
            "{t}"
        );
    }
    // The untouched token works.
    subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&token));
    let mut secrets = vec![SECRET];
    secrets.extend(bad.iter().map(String::as_str));
    assert_never_logged(&s, &secrets);
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn expired_and_not_yet_valid_tokens_are_401() {
    let s = server(&[]);
    let expired = token_for(&["private-a"], -60, "");
    assert_eq!(
        get_with(&s, "/push/h1/stream/private-a", &bearer(&expired)),
        unauthorized("token expired")
    );
    let early = token_for(
        &["private-a"],
        7200,
        &format!(",\"nbf\":{}", now_unix() + 3600),
    );
    assert_eq!(
        get_with(&s, "/push/h1/stream/private-a", &bearer(&early)),
        unauthorized("token not yet valid")
    );
    // Within the clock skew allowed (30 s), nbf ahead is accepted.
    let skewed = token_for(
        &["private-a"],
        7200,
        &format!(",\"nbf\":{}", now_unix() + 10),
    );
    subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&skewed));
    // Claims of the wrong type are malformed.
    let no_list = sign(
        &format!(
            "{{\"channels\":\"private-a\",\"exp\":{}}}",
            now_unix() + 600
        ),
        SECRET,
        "HS256",
    );
    assert_eq!(
        get_with(&s, "/push/h2/stream/private-a", &bearer(&no_list)),
        unauthorized("token malformed (channels is not an array of strings)")
    );
    let no_exp = sign(r#"{"channels":["private-a"]}"#, SECRET, "HS256");
    assert_eq!(
        get_with(&s, "/push/h2/stream/private-a", &bearer(&no_exp)),
        unauthorized("token malformed (exp is missing)")
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn expiry_closes_a_live_stream_with_the_shutdown_message() {
    let s = server(&[]);
    let token = token_for(&["private-a"], 2, "");
    let mut c = subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&token));
    let id = s.ctl().add("private-a", "before");
    c.expect_str(&format!("{id}:private-a:before\n"));
    c.expect_within(b"BYE\n", Duration::from_secs(5));
    c.expect_eof();
    let line = s
        .wait_log(WAIT, |l| {
            l.starts_with("leavechannel\t") || l.contains("leavechannel\t")
        })
        .expect("a leavechannel record");
    assert!(line.ends_with("\ttokenExpired"), "{line}");
    // Reconnecting with the expired token is refused.
    assert_eq!(
        get_with(&s, "/push/h1/stream/private-a", &bearer(&token)),
        unauthorized("token expired")
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn two_secrets_rotate_without_a_flag_day() {
    let s = Server::start_test(&[
        "-SubscriberSecret",
        &format!("new-secret-0123456789abcdef01 {SECRET}"),
    ]);
    let claims = format!(
        "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
        now_unix() + 600
    );
    let old = sign(&claims, SECRET, "HS256");
    let new = sign(&claims, "new-secret-0123456789abcdef01", "HS256");
    subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&old));
    subscribe_with(&s, "/push/h2/stream/private-a", &bearer(&new));
    s.ctl().wait_count("private-a", 2, WAIT);
    let third = sign(&claims, "a-third-secret", "HS256");
    assert_eq!(
        get_with(&s, "/push/h3/stream/private-a", &bearer(&third)),
        unauthorized("bad signature")
    );
    // Once the old secret is dropped, its tokens are refused.
    let s2 = Server::start_test(&["-SubscriberSecret", "new-secret-0123456789abcdef01"]);
    assert_eq!(
        get_with(&s2, "/push/h1/stream/private-a", &bearer(&old)),
        unauthorized("bad signature")
    );
    subscribe_with(&s2, "/push/h2/stream/private-a", &bearer(&new));
    // Three secrets are refused at start.
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SubscriberSecret",
            "a b c",
            "-v",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(0), "-v prints the version before loading");
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SyslogFacility",
            "none",
            "-SubscriberSecret",
            "a b c",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("SubscriberSecret: at most two secrets"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn a_token_bound_to_a_hostid_guards_it() {
    let s = server(&[]);
    let bound = token_for(&["private-a"], 600, ",\"hostid\":\"h1\"");
    // Bound to h1: not usable for another hostid.
    assert_eq!(
        get_with(&s, "/push/h2/stream/private-a", &bearer(&bound)),
        forbidden("hostid mismatch")
    );
    let mut first = subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&bound));
    // Disconnecting h1 needs a token bound to h1.
    assert_eq!(
        get(&s, "/disconnect/h1"),
        refusal("401 Unauthorized", None, "token missing")
    );
    let unbound = token_for(&["private-a"], 600, "");
    let other = token_for(&["private-a"], 600, ",\"hostid\":\"h2\"");
    assert_eq!(
        get_with(&s, "/disconnect/h1", &bearer(&unbound)),
        forbidden("hostid mismatch")
    );
    assert_eq!(
        get_with(&s, "/disconnect/h1", &bearer(&other)),
        forbidden("hostid mismatch")
    );
    // So does replacing it, even with only public channels.
    assert_eq!(
        get(&s, "/push/h1/stream/public"),
        refusal("401 Unauthorized", None, "token missing")
    );
    assert_eq!(
        get_with(&s, "/push/h1/stream/private-a", &bearer(&unbound)),
        forbidden("hostid mismatch")
    );
    // Nothing above touched the stream.
    let id = s.ctl().add("private-a", "still");
    first.expect_str(&format!("{id}:private-a:still\n"));
    // A token bound to h1 replaces it, and disconnects it.
    let mut second = subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&bound));
    first.expect_str("BYE\n");
    first.expect_eof();
    let answer = get(&s, &format!("/disconnect/h1?token={bound}"));
    assert!(
        answer.starts_with("HDR 200 OK") || answer.starts_with("HTTP/1.1 200 OK"),
        "{answer}"
    );
    second.expect_str("BYE\n");
    second.expect_eof();
    // Unbound hostids stay as they were: anyone may disconnect them.
    let mut free = subscribe_with(&s, "/push/h3/stream/private-a", &bearer(&unbound));
    assert!(get(&s, "/disconnect/h3").contains("200 OK"));
    free.expect_str("BYE\n");
}

#[test]
fn the_subscriber_secret_must_differ_from_the_controller_password() {
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SyslogFacility",
            "none",
            "-ControllerPassword",
            "same",
            "-SubscriberSecret",
            "other same",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("SubscriberSecret must not be the same as ControllerPassword"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("same\n") && !r.stderr.contains(" other"),
        "{}",
        r.stderr
    );
    // Patterns without a secret would protect nothing: refused too.
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SyslogFacility",
            "none",
            "-PrivateChannels",
            "user-*",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("PrivateChannels is set but SubscriberSecret is empty"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn the_token_helper_prints_a_token_jsonwebtoken_accepts() {
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            "/dev/null",
            "-SubscriberSecret",
            SECRET,
            "-token",
            "private-a,user-*",
            "120",
            "h1",
        ],
        WAIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let token = r.stdout.trim_end();
    assert_eq!(r.stdout, format!("{token}\n"));
    let module =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/jsonwebtoken");
    let out = Command::new("node")
        .env("JWT_MODULE", &module)
        .args([
            "-e",
            "const jwt = require(process.env.JWT_MODULE);\
             const c = jwt.verify(process.argv[1], process.argv[2], { algorithms: ['HS256'] });\
             process.stdout.write(JSON.stringify([c.channels, c.hostid, c.exp - Math.floor(Date.now() / 1000)]));",
            token,
            SECRET,
        ])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        verified.starts_with(r#"[["private-a","user-*"],"h1",1"#),
        "{verified}"
    );
    // And the server takes it.
    let s = server(&["-PrivateChannels", "private-* user-*"]);
    subscribe_with(&s, "/push/h1/stream/private-a/user-9", &bearer(token));
    // Without a secret the helper says what is missing.
    let r = run_meteord(
        &["-ConfigFileLocation", "/dev/null", "-token", "a", "60"],
        WAIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("SubscriberSecret is not set"),
        "{}",
        r.stderr
    );
    let r = run_meteord(&["-token", "a"], WAIT);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("-token needs <channels> <seconds>"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn debug_logs_hide_the_token_of_the_query_string() {
    let s = server(&["-Debug", "1"]);
    let token = token_for(&["private-a"], 600, "");
    s.subscribe(&format!("/push/h1/stream/private-a?token={token}"), HDR_OK);
    s.wait_log(WAIT, |l| {
        l.contains("GET /push/h1/stream/private-a?token=-")
    })
    .expect("the request in the debug log, token hidden");
    assert_never_logged(&s, &[SECRET, &token]);
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn max_time_before_the_token_expires_still_ends_as_max_time() {
    let s = server(&["-MaxTime.stream", "1"]);
    let token = token_for(&["private-a"], 600, "");
    let mut c = subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&token));
    // MaxTime closes without the shutdown message, as it always did.
    assert_eq!(c.read_to_end(WAIT), b"");
    let line = s
        .wait_log(WAIT, |l| l.contains("leavechannel\t"))
        .expect("a leavechannel record");
    assert!(line.ends_with("\tmaxTime"), "{line}");
}

#[test]
#[ignore = "needs node and tests/browser/node_modules (cd tests/browser && npm ci): run with --include-ignored"]
fn rotation_by_reload_keeps_streams_and_refuses_a_secret_equal_to_the_password() {
    const NEW: &str = "rotated-secret-0123456789abcdef0123";
    let conf = |settings: &str| format!("{settings}\n{TEST_CONF}");
    let s = Server::start(&[], &conf(&format!("SubscriberSecret {SECRET}")));
    let reload = |settings: &str, reloads: usize| {
        std::fs::write(&s.conf_path, conf(settings)).expect("rewrite the configuration");
        s.signal("HUP");
        assert!(
            eventually(WAIT, || s
                .logs()
                .iter()
                .filter(|l| l.contains("SIGHUP: "))
                .count()
                >= reloads),
            "no SIGHUP line"
        );
    };
    let claims = format!(
        "{{\"channels\":[\"private-a\"],\"exp\":{}}}",
        now_unix() + 600
    );
    let old = sign(&claims, SECRET, "HS256");
    let new = sign(&claims, NEW, "HS256");
    let mut first = subscribe_with(&s, "/push/h1/stream/private-a", &bearer(&old));
    // 1. Both secrets, the new one first.
    reload(&format!("SubscriberSecret {NEW} {SECRET}"), 1);
    subscribe_with(&s, "/push/h2/stream/private-a", &bearer(&new));
    subscribe_with(&s, "/push/h3/stream/private-a", &bearer(&old));
    // 2. The old one dropped: its tokens are refused, open streams stay.
    reload(&format!("SubscriberSecret {NEW}"), 2);
    assert_eq!(
        get_with(&s, "/push/h4/stream/private-a", &bearer(&old)),
        unauthorized("bad signature")
    );
    let id = s.ctl().add("private-a", "still here");
    first.expect_str(&format!("{id}:private-a:still here\n"));
    // A reload that would make the secret the controller password is refused.
    reload(
        &format!("SubscriberSecret {NEW}\nControllerPassword {NEW}"),
        3,
    );
    let kept = s
        .wait_log(WAIT, |l| {
            l.contains("SIGHUP: keeping the running configuration")
        })
        .expect("the reload refused");
    assert!(
        kept.contains("must not be the same as ControllerPassword"),
        "{kept}"
    );
    assert_never_logged(&s, &[SECRET, NEW, &old, &new]);
}
