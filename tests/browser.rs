//! meteor.js in a real browser: starts meteord with the bundled meteor.conf
//! and the files of public_html (plus tests/browser/test.html), then runs
//! `node tests/browser/run.mjs`, which drives Debian's headless Chromium
//! through playwright-core over every transport of meteor.js and writes
//! target/demo-screenshot.png.
//!
//! It needs /usr/bin/chromium, node and tests/browser/node_modules (made by
//! `npm ci` in tests/browser), so it is `#[ignore]`d: a plain `cargo test`
//! lists it as ignored, `cargo test -- --include-ignored` (as CI does) runs
//! it, and a missing tool then fails it, naming what to install.
//!
//! The second test drives WebSocket subscribers with an independent client,
//! the `ws` package from npm (`node tests/browser/ws_client.mjs`).

mod common;

use common::Server;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run normally takes well under 20 s.
const NODE_TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing to run the browser test, if anything.
fn missing_tool() -> Option<&'static str> {
    let node_runs = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !Path::new(CHROMIUM).exists() {
        Some("/usr/bin/chromium (apt-get install chromium)")
    } else if !node_runs {
        Some("node (apt-get install nodejs npm)")
    } else if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        Some("tests/browser/node_modules/playwright-core (cd tests/browser && npm ci)")
    } else {
        None
    }
}

/// Serves what the bundled configuration serves, plus the test page.
fn fill_docroot(server: &Server) {
    let public = repo().join("public_html");
    for entry in std::fs::read_dir(&public).expect("read public_html") {
        let path = entry.expect("public_html entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        server.write_doc(
            &name,
            &std::fs::read(&path).expect("read a public_html file"),
        );
    }
    server.write_doc("test.html", include_bytes!("browser/test.html"));
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `node <script>` to completion (or kills it after NODE_TIMEOUT);
/// returns whether it exited 0, and everything it printed.
fn run_node(script: &str, args: &[String]) -> (bool, String) {
    let mut child = Command::new("node")
        .arg(repo().join("tests/browser").join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = stdout.join().unwrap_or_default() + &stderr.join().unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("{output}\nnode killed after {NODE_TIMEOUT:?}"),
        ),
    }
}

#[test]
#[ignore = "needs chromium, node and playwright-core (cd tests/browser && npm ci): run with --include-ignored (see README)"]
fn meteor_js_in_chromium() {
    if let Some(missing) = missing_tool() {
        panic!("the browser test needs {missing}, which is missing here");
    }
    // The demo page's form posts to the controller port, another origin
    // than the page's (a random port here): allow it.
    // Channels named private-* need a token (minted by run.mjs with this secret).
    let secret = "browser-test-subscriber-secret-0123456789";
    let server = Server::start(
        &["-AllowedOrigins", "*", "-SubscriberSecret", secret],
        include_str!("../meteor.conf"),
    );
    fill_docroot(&server);
    let screenshot: PathBuf = repo().join("target/demo-screenshot.png");
    let (ok, output) = run_node(
        "run.mjs",
        &[
            server.sub_addr.port().to_string(),
            server.ctl_addr.port().to_string(),
            screenshot.to_string_lossy().into_owned(),
            secret.to_owned(),
        ],
    );
    assert!(
        ok,
        "the browser test failed:\n{output}\nmeteord log (last 40 lines):\n{}",
        server
            .logs()
            .iter()
            .rev()
            .take(40)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{output}");
}

#[test]
#[ignore = "needs node and the ws package (cd tests/browser && npm ci): run with --include-ignored (see README)"]
fn websocket_subscribers_through_the_ws_package() {
    let node_runs = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_runs,
        "this test needs node (apt-get install nodejs npm)"
    );
    assert!(
        repo().join("tests/browser/node_modules/ws").is_dir(),
        "this test needs tests/browser/node_modules/ws (cd tests/browser && npm ci)"
    );
    let mut server = Server::start(&["-PingInterval", "3"], include_str!("../meteor.conf"));
    let (ok, output) = run_node(
        "ws_client.mjs",
        &[
            server.sub_addr.port().to_string(),
            server.ctl_addr.port().to_string(),
            server.pid().to_string(),
        ],
    );
    assert!(
        ok,
        "the ws client failed:\n{output}\nmeteord log:\n{}",
        server.logs().join("\n")
    );
    // The client ends by sending SIGTERM: the server drains and exits.
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "meteord did not exit after SIGTERM"
    );
    println!("{output}");
}
