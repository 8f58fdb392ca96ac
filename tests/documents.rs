//! Static documents below SubscriberDocumentRoot: exact reply bytes,
//! DirectoryIndex, path rules, content types, the in-memory cache.

mod common;

use common::*;
use std::time::Duration;

fn fetch(s: &Server, path: &str) -> Vec<u8> {
    let mut c = s.http_get(path);
    c.read_to_end(WAIT)
}

fn ok_reply(ctype: &str, body: &[u8]) -> Vec<u8> {
    let mut v = document_head("200 OK", ctype, body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

/// Asserts that `path` is served as exactly the 200 reply with `body`.
fn assert_doc(s: &Server, path: &str, ctype: &str, body: &[u8], what: &str) {
    assert_bytes(&fetch(s, path), &ok_reply(ctype, body), what);
}

/// Asserts that `path` is exactly the static 404 reply.
fn assert_404(s: &Server, path: &str) {
    assert_bytes(&fetch(s, path), document_404().as_bytes(), path);
}

fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}:\n  expected {}\n  got      {}",
        show(want),
        show(got)
    );
}

#[test]
fn serves_a_file_with_the_exact_head() {
    let s = Server::start_test(&[]);
    s.write_doc("meteor.js", b"var Meteor = {};\n");
    let mut c = s.http_get("/meteor.js");
    c.expect_str(&document_head("200 OK", "text/javascript", 17));
    c.expect(b"var Meteor = {};\n");
    c.expect_eof();
}

#[test]
fn missing_file_is_the_exact_404() {
    let s = Server::start_test(&[]);
    let mut c = s.http_get("/nothing-here.html");
    c.expect_str(&document_404());
    c.expect_eof();
}

#[test]
fn content_types_follow_the_extension() {
    let s = Server::start_test(&[]);
    for (name, ctype) in [
        ("a.html", "text/html"),
        ("a.js", "text/javascript"),
        ("a.css", "text/css"),
        ("a.json", "application/json"),
        ("a.txt", "text/plain"),
    ] {
        s.write_doc(name, b"body");
        assert_doc(&s, &format!("/{name}"), ctype, b"body", name);
    }
    // The exact classic head for images too (wire contract: `<type>; charset=utf-8`).
    for (name, ctype) in [("a.png", "image/png"), ("a.svg", "image/svg+xml")] {
        s.write_doc(name, b"\x89PNG\0\x01");
        assert_doc(&s, &format!("/{name}"), ctype, b"\x89PNG\0\x01", name);
    }
}

#[test]
fn binary_empty_and_large_files() {
    let s = Server::start_test(&[]);
    let bin: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    s.write_doc("b.js", &bin);
    assert_doc(&s, "/b.js", "text/javascript", &bin, "binary");
    s.write_doc("empty.html", b"");
    assert_doc(&s, "/empty.html", "text/html", b"", "empty");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    s.write_doc("big.txt", &big);
    let got = fetch(&s, "/big.txt");
    assert!(
        got == ok_reply("text/plain", &big),
        "large file differs ({} bytes)",
        got.len()
    );
}

#[test]
fn directory_index_for_directories_with_and_without_slash() {
    let s = Server::start_test(&[]);
    s.write_doc("index.html", b"root index");
    s.write_doc("sub/index.html", b"sub index");
    let root = ok_reply("text/html", b"root index");
    let sub = ok_reply("text/html", b"sub index");
    assert_bytes(&fetch(&s, "/"), &root, "/");
    assert_bytes(&fetch(&s, "/sub"), &sub, "/sub");
    assert_bytes(&fetch(&s, "/sub/"), &sub, "/sub/");
    assert_bytes(&fetch(&s, "/sub/index.html"), &sub, "/sub/index.html");
}

#[test]
fn directory_without_index_is_404() {
    let s = Server::start_test(&[]);
    s.write_doc("noindex/file.txt", b"x");
    assert_404(&s, "/noindex");
    assert_404(&s, "/noindex/");
    // No index in the root either.
    assert_404(&s, "/");
}

#[test]
fn custom_directory_index() {
    let s = Server::start_test(&["-DirectoryIndex", "start.html"]);
    s.write_doc("d/start.html", b"start");
    s.write_doc("d/index.html", b"index");
    assert_doc(&s, "/d/", "text/html", b"start", "/d/");
}

#[test]
fn slashes_and_query_strings_are_tolerated() {
    let s = Server::start_test(&[]);
    s.write_doc("sub/a.txt", b"A");
    let want = ok_reply("text/plain", b"A");
    for p in [
        "//sub/a.txt",
        "/sub//a.txt",
        "/sub/a.txt/",
        "///sub///a.txt//",
        "/sub/a.txt?x=1&y=../..",
        "/sub/a.txt?",
    ] {
        assert_bytes(&fetch(&s, p), &want, p);
    }
}

#[test]
fn forbidden_paths_are_404_even_if_the_file_exists() {
    let s = Server::start_test(&[]);
    s.write_doc("a..b.txt", b"dots");
    s.write_doc("pct%20.txt", b"pct");
    s.write_doc("t~x.txt", b"tilde");
    s.write_doc("at@x.txt", b"at");
    s.write_doc("sub/ok.txt", b"ok");
    s.write_doc("plus+x.txt", b"plus");
    // Sanity: the allowed characters work.
    assert_doc(&s, "/sub/ok.txt", "text/plain", b"ok", "/sub/ok.txt");
    for p in [
        "/a..b.txt",
        "/pct%20.txt",
        "/t~x.txt",
        "/at@x.txt",
        "/plus+x.txt",
        "/sub/../sub/ok.txt",
        "/../etc/passwd",
        "/..",
    ] {
        assert_404(&s, p);
    }
}

#[test]
fn files_are_cached_once_read() {
    let s = Server::start_test(&[]);
    s.write_doc("c.txt", b"one");
    assert_doc(&s, "/c.txt", "text/plain", b"one", "first");
    s.write_doc("c.txt", b"two, longer");
    assert_doc(&s, "/c.txt", "text/plain", b"one", "cached");
    std::fs::remove_file(s.docroot.join("c.txt")).unwrap();
    assert_doc(&s, "/c.txt", "text/plain", b"one", "removed");
}

#[test]
fn document_root_slash_disables_static_files() {
    let s = Server::start_test(&["-SubscriberDocumentRoot", "/"]);
    let mut c = s.http_get("/etc/hostname");
    c.expect_str(&default_header("404 Not Found"));
    c.expect_eof();
}

#[test]
fn http10_and_bare_lf_requests() {
    let s = Server::start_test(&[]);
    s.write_doc("x.js", b"1");
    let mut c = s.request(b"GET /x.js HTTP/1.0\n\n");
    assert_bytes(
        &c.read_to_end(WAIT),
        &ok_reply("text/javascript", b"1"),
        "HTTP/1.0",
    );
}

#[test]
fn document_record_is_logged() {
    let s = Server::start_test(&[]);
    s.write_doc("logged.txt", b"12345");
    fetch(&s, "/logged.txt");
    let line = s
        .wait_log(WAIT, |l| {
            l.contains("document\t") && l.contains("logged.txt")
        })
        .unwrap_or_else(|| panic!("no document record in {:#?}", s.logs()));
    let rec = &line[line.find("document\t").unwrap()..];
    let f: Vec<&str> = rec.split('\t').collect();
    assert_eq!(f.len(), 4, "document path size status: {rec:?}");
    assert_eq!(f[1], "/logged.txt", "{rec:?}");
    assert_eq!(f[2], "5", "{rec:?}");
    assert_eq!(f[3], "200", "{rec:?}");
}

// ---------------------------------------------------------------------------
// Memory bound and containment
// ---------------------------------------------------------------------------

/// A number from the controller port's `GET /stats` JSON.
fn http_stat(s: &Server, key: &str) -> Option<u64> {
    let mut c = Conn::connect(s.ctl_addr);
    c.send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let got = c.read_to_end(WAIT);
    let text = String::from_utf8_lossy(&got);
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Bytes that differ at every offset modulo a prime, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

/// Fetches `path` and checks the exact head and body of a 200 reply.
fn assert_big(s: &Server, path: &str, ctype: &str, body: &[u8]) {
    let got = fetch(s, path);
    let head = document_head("200 OK", ctype, body.len());
    assert!(
        got.starts_with(head.as_bytes()),
        "{path}: head {}",
        show(&got[..got.len().min(300)])
    );
    assert!(
        got.len() == head.len() + body.len() && &got[head.len()..] == body,
        "{path}: body differs ({} bytes, {} expected)",
        got.len() - head.len().min(got.len()),
        body.len()
    );
}

const MIB: usize = 1024 * 1024;

#[test]
fn aliases_of_one_file_take_one_cache_entry() {
    let s = Server::start_test(&[]);
    // Cached (under an eighth of the default 16 MiB bound) and streamed.
    let small = pattern(MIB, 1);
    let large = pattern(4 * MIB, 2);
    s.write_doc("d/small.js", &small);
    s.write_doc("d/large.js", &large);
    let before = rss_kib(s.pid());
    let mut aliases = Vec::new();
    for i in 0..100 {
        let path = match i % 5 {
            0 => format!("/{}d/NAME", "./".repeat(i + 1)),
            1 => format!("/d/{}NAME", "./".repeat(i)),
            2 => format!("{}d//NAME/", "/".repeat(i + 1)),
            3 => format!("/d/./NAME?v={i}"),
            _ => format!("/{}d/{}NAME", "./".repeat(i % 7), "./".repeat(i / 7 + 1)),
        };
        aliases.push(path);
    }
    for alias in &aliases {
        assert_big(
            &s,
            &alias.replace("NAME", "small.js"),
            "text/javascript",
            &small,
        );
        assert_big(
            &s,
            &alias.replace("NAME", "large.js"),
            "text/javascript",
            &large,
        );
    }
    let after = rss_kib(s.pid());
    let cached = http_stat(&s, "document_cache_bytes");
    eprintln!(
        "alias attack: 100 aliases each of 1 MiB and 4 MiB: RSS {before} KiB -> {after} KiB, \
         document_cache_bytes {cached:?}"
    );
    assert!(
        after.saturating_sub(before) < 24 * 1024,
        "RSS grew from {before} KiB to {after} KiB: aliases were cached as copies"
    );
    let cached = cached.unwrap_or_else(|| panic!("no document_cache_bytes in /stats"));
    assert!(
        cached >= MIB as u64 && cached < (MIB + 64 * 1024) as u64,
        "one 1 MiB entry expected in the cache, it holds {cached} bytes"
    );
}

#[test]
fn a_file_larger_than_the_cache_is_streamed_byte_for_byte() {
    let s = Server::start_test(&[]);
    // Over the default 16 MiB bound (and over the old 16 MiB refusal).
    let body = pattern(40 * MIB + 12345, 3);
    s.write_doc("huge.bin", &body);
    let before = rss_kib(s.pid());
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let mut c = s.http_get("/huge.bin");
            std::thread::spawn(move || c.read_to_end(Duration::from_secs(30)))
        })
        .collect();
    let head = document_head("200 OK", "application/octet-stream", body.len());
    for client in clients {
        let got = client.join().unwrap_or_else(|_| panic!("reader panicked"));
        assert!(
            got.starts_with(head.as_bytes()),
            "head: {}",
            show(&got[..got.len().min(300)])
        );
        assert!(
            got.len() == head.len() + body.len() && got[head.len()..] == body[..],
            "body differs: {} bytes after the head, {} expected",
            got.len().saturating_sub(head.len()),
            body.len()
        );
    }
    let after = rss_kib(s.pid());
    eprintln!("40 MiB file to 3 clients at once: RSS {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB while streaming"
    );
    assert_eq!(http_stat(&s, "document_cache_bytes"), Some(0));
}

#[test]
fn the_cache_is_bounded_in_bytes() {
    let s = Server::start_test(&["-DocumentCacheBytes", "4194304"]);
    let bodies: Vec<Vec<u8>> = (0..24).map(|i| pattern(400 * 1024, i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        s.write_doc(&format!("f{i}.txt"), body);
    }
    for round in 0..2 {
        for (i, body) in bodies.iter().enumerate() {
            assert_big(&s, &format!("/f{i}.txt"), "text/plain", body);
        }
        let cached = http_stat(&s, "document_cache_bytes").unwrap_or(u64::MAX);
        assert!(
            cached <= 4 * MIB as u64 && cached > 0,
            "round {round}: the cache holds {cached} bytes, bound 4 MiB"
        );
    }
}

#[test]
fn no_cache_serves_each_file_from_disk() {
    let s = Server::start_test(&["-DocumentCacheBytes", "0"]);
    s.write_doc("c.txt", b"one");
    assert_doc(&s, "/c.txt", "text/plain", b"one", "first");
    s.write_doc("c.txt", b"two, longer");
    assert_doc(&s, "/c.txt", "text/plain", b"two, longer", "rewritten");
    assert_eq!(http_stat(&s, "document_cache_bytes"), Some(0));
}

/// A document root with links to a directory outside it and links inside.
fn link_farm(s: &Server, outside: &TempDir) {
    use std::os::unix::fs::symlink;
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::write(outside.join("index.html"), b"outside index").unwrap();
    s.write_doc("sub/a.txt", b"inside");
    s.write_doc("top.txt", b"top");
    let root = &s.docroot;
    let outside_name = outside.path.file_name().unwrap().to_string_lossy();
    // root = <tmp>/meteord-test-srv-.../docroot; outside = <tmp>/meteord-test-out-...
    let links: [(&str, String); 10] = [
        ("out.txt", outside.join("secret.txt").display().to_string()),
        ("outdir", outside.path.display().to_string()),
        ("rel_out.txt", format!("../../{outside_name}/secret.txt")),
        ("sub/up.txt", format!("../../../{outside_name}/secret.txt")),
        ("sub/chain.txt", "../out.txt".into()),
        ("in.txt", "sub/a.txt".into()),
        ("abs_in.txt", root.join("sub/a.txt").display().to_string()),
        ("insub", "sub".into()),
        ("sub/back.txt", "../top.txt".into()),
        ("sub/self", ".".into()),
    ];
    for (link, target) in &links {
        symlink(target, root.join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
    }
}

const OUTSIDE: [&str; 9] = [
    "/out.txt",
    "/outdir/secret.txt",
    "/outdir",
    "/outdir/",
    "/outdir/index.html",
    "/rel_out.txt",
    "/sub/up.txt",
    "/sub/chain.txt",
    "/insub/up.txt",
];

#[test]
fn links_are_followed_only_inside_the_root() {
    let s = Server::start_test(&[]);
    let outside = TempDir::new("out");
    link_farm(&s, &outside);
    for p in OUTSIDE {
        assert_404(&s, p);
    }
    for (p, body) in [
        ("/in.txt", &b"inside"[..]),
        ("/abs_in.txt", b"inside"),
        ("/insub/a.txt", b"inside"),
        ("/sub/back.txt", b"top"),
        ("/insub/back.txt", b"top"),
        ("/sub/self/self/a.txt", b"inside"),
    ] {
        assert_doc(&s, p, "text/plain", body, p);
    }
    // A FIFO is no document, and opening it does not stall the server.
    let fifo = std::ffi::CString::new(s.docroot.join("pipe.txt").display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    assert_404(&s, "/pipe.txt");
    assert_doc(&s, "/in.txt", "text/plain", b"inside", "after the FIFO");
}

#[test]
fn follow_symlinks_serves_links_that_leave_the_root() {
    let s = Server::start_test(&["-FollowSymlinks", "1"]);
    let outside = TempDir::new("out");
    link_farm(&s, &outside);
    for p in OUTSIDE {
        let got = fetch(&s, p);
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{p}: {}",
            show(&got)
        );
    }
    assert_doc(&s, "/out.txt", "text/plain", b"secret", "/out.txt");
    assert_doc(&s, "/outdir", "text/html", b"outside index", "/outdir");
    assert_doc(&s, "/in.txt", "text/plain", b"inside", "/in.txt");
}

/// A reply's deadline moves with its progress: a large document read
/// slowly but steadily, for much longer than `WriteTimeout`, arrives whole.
#[test]
fn a_slow_but_steady_download_is_not_cut_off() {
    let s = Server::start_test(&["-WriteTimeout", "2"]);
    let body = pattern(8 * 1024 * 1024, 7);
    s.write_doc("big.bin", &body);
    let mut c = connect_small_rcvbuf(s.sub_addr, 16 * 1024);
    c.send(get_request("/big.bin").as_bytes());
    let head = c
        .read_until(b"\r\n\r\n", WAIT)
        .unwrap_or_else(|e| panic!("no head: {e}"));
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", show(&head));
    let started = std::time::Instant::now();
    let mut got = Vec::with_capacity(body.len());
    // About 1.3 MB/s, some 6 s in all: never stalled for WriteTimeout.
    while got.len() < body.len() {
        let n = (body.len() - got.len()).min(64 * 1024);
        let chunk = c
            .read_exact_n(n, WAIT)
            .unwrap_or_else(|e| panic!("cut off after {} bytes: {e}", got.len()));
        got.extend(chunk);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "not slow enough to test anything"
    );
    assert!(got == body, "the body differs");
}
