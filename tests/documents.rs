//! Static documents below SubscriberDocumentRoot: exact reply bytes,
//! DirectoryIndex, path rules, content types, the in-memory cache.

mod common;

use common::*;

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
    // The exact classic head for images too (spec: `<type>; charset=utf-8`).
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
