//! Static documents below `SubscriberDocumentRoot`: read once, kept in
//! memory as complete responses until the cache is dropped (SIGHUP, SIGUSR2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Files larger than this are not served (they would sit in memory).
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A ready-to-send response and what the `document` log record needs.
#[derive(Debug, Clone)]
pub struct Document {
    pub response: Rc<[u8]>,
    pub size: usize,
    pub found: bool,
}

/// The document cache.
#[derive(Debug)]
pub struct Documents {
    root: Option<PathBuf>,
    index: String,
    cache: HashMap<String, Document>,
    not_found: Document,
}

/// The `Content-Type` for a file name (spec B5).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html",
        "js" | "mjs" => "text/javascript",
        "css" => "text/css",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "txt" => "text/plain",
        "xml" => "application/xml",
        "swf" => "application/x-shockwave-flash",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Rc<[u8]> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: {content_type}; charset=utf-8\r\n\
         Pragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Expires: Thu, 1 Jan 1970 00:00:00 GMT\r\nContent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.into()
}

impl Documents {
    pub fn new(root: Option<PathBuf>, index: String) -> Documents {
        Documents {
            root,
            index,
            cache: HashMap::new(),
            not_found: Document {
                response: response("404 Not Found", "text/html", b""),
                size: 0,
                found: false,
            },
        }
    }

    /// Whether static documents are served at all.
    pub fn enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The 404 reply for a refused or missing document.
    pub fn not_found(&self) -> Document {
        self.not_found.clone()
    }

    /// Drops every cached file (SIGHUP, SIGUSR2).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// The response for a normalised relative path (see `http::route`).
    pub fn get(&mut self, path: &str) -> Document {
        if let Some(doc) = self.cache.get(path) {
            return doc.clone();
        }
        let Some(root) = &self.root else {
            return self.not_found();
        };
        let doc = match read_document(root, path, &self.index) {
            Some((name, body)) => Document {
                response: response("200 OK", content_type(&name), &body),
                size: body.len(),
                found: true,
            },
            None => self.not_found(),
        };
        // Misses are not cached, so a file created later is found.
        if doc.found {
            self.cache.insert(path.to_owned(), doc.clone());
        }
        doc
    }
}

/// Reads a file (or a directory's index file); returns the name whose
/// extension gives the type, and the bytes.
fn read_document(root: &Path, path: &str, index: &str) -> Option<(String, Vec<u8>)> {
    let mut file = root.join(path);
    let mut name = path.to_owned();
    let meta = std::fs::metadata(&file).ok()?;
    if meta.is_dir() {
        file.push(index);
        name = index.to_owned();
    }
    let meta = std::fs::metadata(&file).ok()?;
    if !meta.is_file() || meta.len() > MAX_DOCUMENT_BYTES {
        return None;
    }
    std::fs::read(&file).ok().map(|body| (name, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(content_type("a/meteor.js"), "text/javascript");
        assert_eq!(content_type("x.CSS"), "text/css");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn the_404_is_exact() {
        let docs = Documents::new(None, "index.html".into());
        assert_eq!(
            &*docs.not_found().response,
            &b"HTTP/1.1 404 Not Found\r\nServer: meteord\r\nContent-Type: text/html; charset=utf-8\r\nPragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\r\nContent-length: 0\r\n\r\n"[..]
        );
    }
}
