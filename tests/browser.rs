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
use common::browser::{fill_docroot, missing_tool, repo, run_node};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The whole browser run normally takes well under 20 s.
const NODE_TIMEOUT: Duration = Duration::from_secs(90);

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
        NODE_TIMEOUT,
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
        NODE_TIMEOUT,
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
