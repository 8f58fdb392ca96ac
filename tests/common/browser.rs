//! What the tests that drive Chromium or node share: the tools they need,
//! the demo files they serve, and running a node script with a deadline.

use super::Server;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Debian's Chromium, which playwright-core drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The repository, where tests/browser and public_html are.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing to run a browser test, if anything.
pub fn missing_tool() -> Option<&'static str> {
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
pub fn fill_docroot(server: &Server) {
    let public = repo().join("public_html");
    for entry in std::fs::read_dir(&public).expect("read public_html") {
        let path = entry.expect("public_html entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        server.write_doc(
            &name,
            &std::fs::read(&path).expect("read a public_html file"),
        );
    }
    server.write_doc("test.html", include_bytes!("../browser/test.html"));
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `node tests/browser/<script>` to completion (or kills it after
/// `timeout`); returns whether it exited 0, and everything it printed.
pub fn run_node(script: &str, args: &[String], timeout: Duration) -> (bool, String) {
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
    let deadline = Instant::now() + timeout;
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
        None => (false, format!("{output}\nnode killed after {timeout:?}")),
    }
}
