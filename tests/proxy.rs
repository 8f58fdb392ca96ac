//! The reverse-proxy recipes of tools/deploy/ tested as deployed: meteord
//! with the bundled meteor.conf, and in front of it nginx (tools/deploy/
//! nginx.conf) and Caddy (tools/deploy/Caddyfile) on free loopback ports with
//! a self-signed certificate made here by openssl. The recipes are used as
//! they are, with only what a user changes replaced: the hostname, the
//! certificate paths, the ports (each replacement must find its line, so a
//! recipe that changes shape fails here rather than going untested).
//!
//! Then `node tests/browser/proxy.mjs` drives Debian's Chromium over https://
//! through each proxy: every transport, each event arriving before the next
//! is published, pings, HTTP/2 (see the script). The nginx around the recipe
//! compresses every type meteord sends, so a recipe without `gzip off` for the
//! streams would fail. Last, curl from 127.0.0.5 with a forged
//! X-Forwarded-For through each proxy shows `TrustedProxies` at work.
//!
//! It needs nginx, caddy, openssl and curl besides what tests/browser.rs needs, so
//! it is `#[ignore]`d: `cargo test -- --include-ignored` (as CI does) runs it,
//! and a missing tool then fails it, naming what to install.

mod common;

use common::browser::{fill_docroot, missing_tool, repo, run_node};
use common::{Conn, Server, TempDir};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
const CADDY: &str = "/usr/bin/caddy";
/// Short, so pings show within the browser script's waits (1 and 2
/// turn pings off, as in the classic server).
const PING_SECONDS: &str = "3";
/// Both proxies' checks take well under a minute.
const NODE_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a proxy may take to start listening.
const START: Duration = Duration::from_secs(15);

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// `text` with each line whose directive (what precedes its `#` comment,
/// indentation aside) reads `from` turned into `to`; each `from` must be
/// `count` lines, or the recipe changed shape and the test says where (text
/// in comments never matches).
fn substitute(recipe: &str, text: &str, edits: &[(&str, &str, usize)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (from, to, count) in edits {
        let mut found = 0;
        for line in lines.iter_mut() {
            let code = line.split('#').next().unwrap_or_default();
            if code.trim() == *from {
                let indent = &code[..code.len() - code.trim_start().len()];
                *line = format!("{indent}{to}");
                found += 1;
            }
        }
        assert_eq!(
            found, *count,
            "{recipe}: expected the line {from:?} {count} time(s), found it {found} time(s)"
        );
    }
    lines.join("\n") + "\n"
}

/// The files of a certificate and its key.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed certificate for localhost, valid for a day.
fn self_signed(dir: &TempDir) -> Tls {
    let (cert, key) = (dir.join("localhost.pem"), dir.join("localhost.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Tls { cert, key }
}

/// A proxy process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proxy {
    name: &'static str,
    child: Child,
    port: u16,
    /// Its logs, for failure messages; the first has its standard output
    /// and error.
    logs: Vec<PathBuf>,
}

impl Proxy {
    fn spawn(name: &'static str, command: &mut Command, port: u16, logs: Vec<PathBuf>) -> Proxy {
        let out = File::create(&logs[0]).expect("create the proxy's log");
        let err = out.try_clone().expect("clone the log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut proxy = Proxy {
            name,
            child,
            port,
            logs,
        };
        proxy.wait_listening();
        proxy
    }

    /// Returns once the port accepts connections; fails if the proxy exits
    /// or does not listen within START.
    fn wait_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {addr} after {START:?}:\n{}",
                self.name,
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn origin(&self) -> String {
        format!("{}=https://localhost:{}", self.name, self.port)
    }

    fn log_text(&self) -> String {
        let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        self.logs.iter().map(read).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers too (SIGKILL would
        // leave them listening).
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with tools/deploy/nginx.conf inside a minimal main configuration
/// of its own (no system includes), everything it writes in `dir`.
fn start_nginx(dir: &TempDir, ports: (u16, u16), upstream: SocketAddr, tls: &Tls) -> Proxy {
    let (port, http_port) = ports;
    let recipe = std::fs::read_to_string(repo().join("tools/deploy/nginx.conf"))
        .expect("read tools/deploy/nginx.conf");
    let https = format!("listen 127.0.0.1:{port} ssl http2;");
    let http = format!("listen 127.0.0.1:{http_port};");
    let server = format!("server {upstream};");
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let site = substitute(
        "tools/deploy/nginx.conf",
        &recipe,
        &[
            ("listen 443 ssl http2;", &https, 1),
            ("listen [::]:443 ssl http2;", "", 1),
            ("listen 80;", &http, 1),
            ("listen [::]:80;", "", 1),
            ("server 127.0.0.1:4670;", &server, 1),
            (
                "server_name meteor.example.com;",
                "server_name localhost;",
                2,
            ),
            (
                "ssl_certificate     /etc/ssl/certs/meteor.example.com.pem;",
                &format!("ssl_certificate {cert};"),
                1,
            ),
            (
                "ssl_certificate_key /etc/ssl/private/meteor.example.com.key;",
                &format!("ssl_certificate_key {key};"),
                1,
            ),
        ],
    );
    std::fs::write(dir.join("site.conf"), site).expect("write the nginx site");
    let d = dir.path.display();
    let main = format!(
        "worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
         access_log {d}/nginx-access.log;\n\
         client_body_temp_path {d}/client_body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         # Debian's nginx.conf turns gzip on; here it compresses every type\n\
         # meteord sends, so only the recipe's gzip off keeps streams flowing.\n\
         gzip on;\n\
         gzip_min_length 1;\n\
         gzip_types text/plain text/event-stream application/x-ndjson;\n\
         include {d}/site.conf;\n\
         }}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).expect("write nginx.conf");
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(&dir.path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let logs = vec![dir.join("nginx-output.log"), dir.join("nginx-error.log")];
    Proxy::spawn("nginx", &mut command, port, logs)
}

/// Caddy with tools/deploy/Caddyfile, its admin endpoint off and its data
/// (certificates, autosaved config) in `dir`.
fn start_caddy(dir: &TempDir, port: u16, upstream: SocketAddr, tls: &Tls) -> Proxy {
    let recipe = std::fs::read_to_string(repo().join("tools/deploy/Caddyfile"))
        .expect("read tools/deploy/Caddyfile");
    let site = format!("https://localhost:{port} {{");
    let tls = format!("tls {} {}", tls.cert.display(), tls.key.display());
    let upstream = format!("reverse_proxy {upstream} {{");
    let caddyfile = substitute(
        "tools/deploy/Caddyfile",
        &recipe,
        &[
            ("meteor.example.com {", &site, 1),
            (
                "tls /etc/ssl/certs/meteor.example.com.pem /etc/ssl/private/meteor.example.com.key",
                &tls,
                1,
            ),
            ("reverse_proxy 127.0.0.1:4670 {", &upstream, 1),
        ],
    );
    // Global options first: no admin endpoint (port 2019 is shared), no
    // redirect listener on port 80.
    let caddyfile = format!("{{\n\tadmin off\n\tauto_https disable_redirects\n}}\n\n{caddyfile}");
    let path = dir.join("Caddyfile");
    std::fs::write(&path, caddyfile).expect("write the Caddyfile");
    let mut command = Command::new(CADDY);
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", &dir.path)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    Proxy::spawn("caddy", &mut command, port, vec![dir.join("caddy.log")])
}

/// The nginx recipe's plain-HTTP server only redirects to https://.
fn expect_redirect(http_port: u16) {
    let mut c = Conn::connect(SocketAddr::from(([127, 0, 0, 1], http_port)));
    c.send(b"GET /push/h/sse/demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let reply = String::from_utf8_lossy(&c.read_to_end(Duration::from_secs(5))).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 301 ")
            && reply.contains("\r\nLocation: https://localhost/push/h/sse/demo\r\n"),
        "the plain-HTTP server of tools/deploy/nginx.conf answered:\n{reply}"
    );
}

#[test]
#[ignore = "needs nginx, caddy, openssl, chromium, node and playwright-core (cd tests/browser && npm ci): run with --include-ignored (see README)"]
fn recipes_pass_every_transport_unbuffered() {
    if let Some(missing) = missing_tool() {
        panic!("the proxy test needs {missing}, which is missing here");
    }
    for (tool, install) in [(NGINX, "nginx"), (CADDY, "caddy")] {
        assert!(
            Path::new(tool).exists(),
            "the proxy test needs {tool} (apt-get install {install})"
        );
    }
    let dir = TempDir::new("proxy");
    let tls = self_signed(&dir);
    let (nginx_port, http_port, caddy_port) = (free_port(), free_port(), free_port());
    // The pages' origins in AllowedOrigins, as the recipes tell users to do
    // (WebSocket handshakes from other origins are refused).
    let origins = format!("https://localhost:{nginx_port} https://localhost:{caddy_port}");
    let server = Server::start(
        &[
            "-PingInterval",
            PING_SECONDS,
            "-AllowedOrigins",
            &origins,
            "-TrustedProxies",
            "127.0.0.1",
        ],
        include_str!("../meteor.conf"),
    );
    fill_docroot(&server);
    let (nginx_dir, caddy_dir) = (TempDir::new("nginx"), TempDir::new("caddy"));
    let nginx = start_nginx(&nginx_dir, (nginx_port, http_port), server.sub_addr, &tls);
    let caddy = start_caddy(&caddy_dir, caddy_port, server.sub_addr, &tls);
    expect_redirect(http_port);

    let (ok, output) = run_node(
        "proxy.mjs",
        &[
            server.ctl_addr.port().to_string(),
            PING_SECONDS.to_owned(),
            nginx.origin(),
            caddy.origin(),
        ],
        NODE_TIMEOUT,
    );
    assert!(
        ok,
        "the proxy test failed:\n{output}\nnginx error log:\n{}\ncaddy log (last 30 lines):\n{}\n\
         meteord log (last 40 lines):\n{}",
        nginx.log_text(),
        last_lines(&caddy.log_text(), 30),
        last_lines(&server.logs().join("\n"), 40),
    );
    println!("{output}");

    for (proxy, hostid) in [(&nginx, "xffnginx"), (&caddy, "xffcaddy")] {
        expect_forwarded_client(proxy, &server, hostid);
    }
}

/// Behind each recipe with `TrustedProxies 127.0.0.1` (what the README
/// tells users to set), the joinchannel record names the real client
/// (curl from 127.0.0.5), never the proxy nor the address the client
/// forged in its own X-Forwarded-For.
fn expect_forwarded_client(proxy: &Proxy, server: &Server, hostid: &str) {
    let url = format!("https://localhost:{}/push/{hostid}/sse/demo", proxy.port);
    let out = Command::new("curl")
        .args(["-4", "-sk", "-o", "/dev/null", "--max-time", "2"])
        .args(["--interface", "127.0.0.5", "-H", "X-Forwarded-For: 6.6.6.6"])
        .arg(&url)
        .output()
        .expect("run curl (apt-get install curl)");
    // 28: the stream was still open when --max-time ended it, as expected.
    assert!(
        matches!(out.status.code(), Some(0 | 28)),
        "curl {url} through {}: {}\n{}",
        proxy.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let record = server
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("joinchannel") && l.contains(hostid)
        })
        .unwrap_or_else(|| panic!("no joinchannel record for {hostid} through {}", proxy.name));
    assert!(
        record.contains("\t127.0.0.5\t") && !record.contains("6.6.6.6"),
        "through {} the record should name 127.0.0.5, not the proxy nor the forged 6.6.6.6: {record}",
        proxy.name
    );
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
