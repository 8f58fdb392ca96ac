//! Static documents below `SubscriberDocumentRoot`.
//!
//! Memory policy: small files are kept as complete responses in a cache
//! bounded in bytes (`DocumentCacheBytes`, least recently used out first)
//! until it is dropped (SIGHUP, SIGUSR2); a file whose response is larger
//! than an eighth of that bound is never held whole but streamed from disk
//! through the loop's scratch buffer (`write_file_reply`). The cache is keyed
//! by the normalised request path, and paths that lead to the same file
//! (`/d` and `/d/index.html`, links, case on a case-insensitive disk) share
//! one copy, so aliases cannot multiply it.
//!
//! Containment: unless `FollowSymlinks` is set, a path is resolved one
//! component at a time below an open descriptor of the root, never
//! following a link blindly: a link is read and resolved by hand, and
//! served only if where it leads still lies inside the root (like
//! `openat2(RESOLVE_BENEATH)`). `..` may not climb above the root, and
//! only regular files are served.

use crate::debug;
use crate::io::{Io, write_some};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// `DocumentCacheBytes` when the configuration does not say.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// A response is cached only if it takes at most this fraction of the
/// cache bound; larger files are streamed.
const CACHEABLE_FRACTION: usize = 8;
/// What one cache entry and one path pointing at it cost beyond their
/// bytes (map slots, the LRU index), charged against the bound.
const ENTRY_OVERHEAD: usize = 128;
const PATH_OVERHEAD: usize = 64;
/// Links followed while resolving one path, as the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;
/// Files streamed at once. Each holds a descriptor besides its socket, and
/// the subscriber limit is sized one descriptor per connection: past this,
/// a large file is answered 503 instead of eating the reserve that log
/// files and Redis links need.
pub const MAX_STREAMED_FILES: usize = 32;

/// A response to send: complete bytes, or a head followed by a file
/// streamed from disk.
#[derive(Debug)]
pub struct Document {
    /// The whole response, or only its head when `file` is set.
    pub response: Rc<[u8]>,
    /// The body still on disk, for files too large to cache.
    pub file: Option<FileBody>,
    /// Body bytes, for the `document` log record.
    pub size: u64,
    pub found: bool,
    /// The HTTP status, for the log record.
    pub status: u16,
}

/// An open file being sent as a response body.
#[derive(Debug)]
pub struct FileBody {
    file: File,
    /// The request path, for error messages.
    path: Box<str>,
    pos: u64,
    /// What `Content-length` promised.
    len: u64,
    _slot: StreamSlot,
}

/// Holds one of the `MAX_STREAMED_FILES` places while a file is sent.
#[derive(Debug)]
struct StreamSlot(Rc<Cell<usize>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What `write_file_reply` did.
#[derive(Debug)]
pub enum FileWrite {
    /// The whole body is sent.
    Done,
    /// The turn's budget is used; bytes remain.
    Yield,
    /// The socket would block.
    Wait,
    /// The peer went away.
    Closed,
    /// The socket failed, or the file could not be read (logged here).
    Failed(io::Error),
}

/// Sends the next part of a file body within `budget` bytes, reading at
/// the body's offset into `scratch` (the loop's shared buffer: nothing is
/// kept between calls, a partly written chunk is read again next time).
/// Adds what was written to `sent`.
pub fn write_file_reply(
    socket: &mut impl Write,
    body: &mut FileBody,
    scratch: &mut [u8],
    budget: &mut usize,
    sent: &mut u64,
) -> FileWrite {
    while body.pos < body.len {
        if *budget == 0 {
            return FileWrite::Yield;
        }
        let want = usize::try_from(body.len - body.pos)
            .unwrap_or(usize::MAX)
            .min(scratch.len())
            .min(*budget);
        if want == 0 {
            return FileWrite::Failed(io::Error::other("no scratch buffer to read a file into"));
        }
        let n = match body.file.read_at(&mut scratch[..want], body.pos) {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "document /{}: the file shrank to {} bytes while being sent ({} announced)",
                        body.path, body.pos, body.len
                    ),
                );
                crate::info!("{e}");
                return FileWrite::Failed(e);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = io::Error::new(
                    e.kind(),
                    format!("document /{}: reading at {}: {e}", body.path, body.pos),
                );
                crate::info!("{e}");
                return FileWrite::Failed(e);
            }
        };
        match write_some(socket, &scratch[..n]) {
            Io::Progress(m) => {
                body.pos += m as u64;
                *budget = budget.saturating_sub(m);
                *sent += m as u64;
            }
            Io::WouldBlock => return FileWrite::Wait,
            Io::Closed => return FileWrite::Closed,
            Io::Failed(e) => return FileWrite::Failed(e),
        }
    }
    FileWrite::Done
}

/// What identifies one cached response: the file (device, inode, and its
/// size and change time, so a rewritten file is not taken for the old one)
/// and the content type its name gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    content_type: &'static str,
}

impl FileId {
    fn of(meta: &Metadata, content_type: &'static str) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            content_type,
        }
    }
}

#[derive(Debug)]
struct Entry {
    response: Rc<[u8]>,
    size: u64,
    /// The normalised request paths that lead here.
    paths: Vec<Box<str>>,
    /// Position in the LRU index.
    tick: u64,
    /// What this entry charges against the bound.
    cost: usize,
}

/// The document cache and the rules for reaching files.
#[derive(Debug)]
pub struct Documents {
    root: Option<PathBuf>,
    /// The root with its own links resolved, for absolute links into it.
    real_root: Option<PathBuf>,
    index: String,
    follow_symlinks: bool,
    limit: usize,
    used: usize,
    paths: HashMap<Box<str>, FileId>,
    entries: HashMap<FileId, Entry>,
    /// Entries by last use, oldest first.
    lru: BTreeMap<u64, FileId>,
    tick: u64,
    streaming: Rc<Cell<usize>>,
    not_found: Rc<[u8]>,
}

/// The `Content-Type` for a file name (wire contract B5).
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

fn head(status: &str, content_type: &str, len: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: {content_type}; charset=utf-8\r\n\
         Pragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Expires: Thu, 1 Jan 1970 00:00:00 GMT\r\nContent-length: {len}\r\n\r\n"
    )
    .into_bytes()
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Rc<[u8]> {
    let mut out = head(status, content_type, body.len() as u64);
    out.extend_from_slice(body);
    out.into()
}

/// The one spelling of a request path: no empty or `.` segments, no
/// leading or trailing slash. None when a `..` segment (or a NUL) is in it:
/// such a path is refused, never resolved.
pub fn normalise(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') => return None,
            s => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s);
            }
        }
    }
    Some(out)
}

impl Documents {
    /// `cache_bytes` bounds the cache (`DocumentCacheBytes`);
    /// `follow_symlinks` lets links lead outside the root (`FollowSymlinks`).
    pub fn new(
        root: Option<PathBuf>,
        index: String,
        cache_bytes: usize,
        follow_symlinks: bool,
    ) -> Documents {
        let real_root = root.as_ref().and_then(|r| std::fs::canonicalize(r).ok());
        Documents {
            root,
            real_root,
            index,
            follow_symlinks,
            limit: cache_bytes,
            used: 0,
            paths: HashMap::new(),
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            streaming: Rc::new(Cell::new(0)),
            not_found: response("404 Not Found", "text/html", b""),
        }
    }

    /// The documents a configuration describes.
    pub fn from_config(config: &crate::config::Config) -> Documents {
        Documents::new(
            config.document_root.clone(),
            config.directory_index.clone(),
            config.document_cache_bytes,
            config.follow_symlinks,
        )
    }

    /// Whether static documents are served at all.
    pub fn enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The 404 reply for a refused or missing document.
    pub fn not_found(&self) -> Document {
        Document {
            response: Rc::clone(&self.not_found),
            file: None,
            size: 0,
            found: false,
            status: 404,
        }
    }

    fn unavailable() -> Document {
        Document {
            response: response("503 Service Unavailable", "text/html", b""),
            file: None,
            size: 0,
            found: false,
            status: 503,
        }
    }

    /// Bytes this cache charges against its bound now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Files in the cache (however many paths lead to each).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Drops every cached file (SIGHUP, SIGUSR2).
    pub fn clear(&mut self) {
        self.paths.clear();
        self.entries.clear();
        self.lru.clear();
        self.charge(-(self.used as isize));
    }

    fn charge(&mut self, delta: isize) {
        if delta >= 0 {
            self.used += delta as usize;
        } else {
            self.used -= delta.unsigned_abs().min(self.used);
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Marks an entry as just used; returns its response.
    fn touch(&mut self, id: FileId) -> Option<(Rc<[u8]>, u64)> {
        let tick = self.next_tick();
        let entry = self.entries.get_mut(&id)?;
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        self.lru.insert(tick, id);
        Some((Rc::clone(&entry.response), entry.size))
    }

    /// Evicts the least recently used entries, never `keep`, until `need`
    /// more bytes fit; false if they cannot.
    fn make_room(&mut self, need: usize, keep: Option<FileId>) -> bool {
        while self.used + need > self.limit {
            let Some((&tick, &id)) = self.lru.iter().find(|(_, id)| Some(**id) != keep) else {
                return false;
            };
            self.lru.remove(&tick);
            if let Some(entry) = self.entries.remove(&id) {
                for path in &entry.paths {
                    self.paths.remove(path);
                }
                self.charge(-(entry.cost as isize));
            }
        }
        true
    }

    /// Records that `path` leads to the cached `id`, if it fits.
    fn add_alias(&mut self, path: &str, id: FileId) {
        let cost = path.len() + PATH_OVERHEAD;
        if !self.make_room(cost, Some(id)) {
            return;
        }
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.paths.push(path.into());
            entry.cost += cost;
            self.paths.insert(path.into(), id);
            self.charge(cost as isize);
        }
    }

    fn insert(&mut self, path: &str, id: FileId, response: Rc<[u8]>, size: u64) {
        if self.entries.contains_key(&id) {
            // The file changed between `fstat` and the read into what is
            // cached already: replacing the entry would orphan its paths.
            self.add_alias(path, id);
            return;
        }
        let cost = response.len() + ENTRY_OVERHEAD + path.len() + PATH_OVERHEAD;
        if cost > self.limit || !self.make_room(cost, None) {
            return;
        }
        let tick = self.next_tick();
        self.entries.insert(
            id,
            Entry {
                response,
                size,
                paths: vec![path.into()],
                tick,
                cost,
            },
        );
        self.lru.insert(tick, id);
        self.paths.insert(path.into(), id);
        self.charge(cost as isize);
    }

    fn cached(response: Rc<[u8]>, size: u64) -> Document {
        Document {
            response,
            file: None,
            size,
            found: true,
            status: 200,
        }
    }

    /// The response for a request path (see `http::route`); any spelling
    /// of the same path gives the same entry.
    pub fn get(&mut self, path: &str) -> Document {
        let Some(path) = normalise(path) else {
            return self.not_found();
        };
        if let Some(&id) = self.paths.get(path.as_str())
            && let Some((response, size)) = self.touch(id)
        {
            return Documents::cached(response, size);
        }
        let Some(root) = &self.root else {
            return self.not_found();
        };
        let opened = if self.follow_symlinks {
            open_following(root, &path, &self.index)
        } else {
            let roots = [Some(root.as_path()), self.real_root.as_deref()];
            open_beneath(root, &roots, &path, &self.index)
        };
        let (mut file, meta, name) = match opened {
            Ok(found) => found,
            Err(e) => {
                debug!("document /{path}: {e}");
                return self.not_found();
            }
        };
        let content_type = content_type(&name);
        let id = FileId::of(&meta, content_type);
        if let Some((response, size)) = self.touch(id) {
            // Another spelling of a file already held: share its copy.
            self.add_alias(&path, id);
            return Documents::cached(response, size);
        }
        let head_len = head("200 OK", content_type, meta.len()).len() as u64;
        let cacheable =
            meta.len().saturating_add(head_len) <= (self.limit / CACHEABLE_FRACTION) as u64;
        if cacheable {
            // Read what is there now: a file that changed since `fstat` is
            // sent as read, with a length that matches.
            let mut body = Vec::with_capacity(meta.len() as usize);
            if let Err(e) =
                io::Read::read_to_end(&mut io::Read::take(&mut file, meta.len()), &mut body)
            {
                crate::info!("document /{path}: reading: {e}");
                return self.not_found();
            }
            let size = body.len() as u64;
            let response = response("200 OK", content_type, &body);
            let id = FileId { len: size, ..id };
            self.insert(&path, id, Rc::clone(&response), size);
            return Documents::cached(response, size);
        }
        if self.streaming.get() >= MAX_STREAMED_FILES {
            crate::info!(
                "document /{path}: {MAX_STREAMED_FILES} files are being streamed already: 503"
            );
            return Documents::unavailable();
        }
        self.streaming.set(self.streaming.get() + 1);
        Document {
            response: head("200 OK", content_type, meta.len()).into(),
            size: meta.len(),
            file: Some(FileBody {
                file,
                path: path.into(),
                pos: 0,
                len: meta.len(),
                _slot: StreamSlot(Rc::clone(&self.streaming)),
            }),
            found: true,
            status: 200,
        }
    }
}

/// Flags for every open of a document or directory: no controlling
/// terminal, and a FIFO does not block the loop (it is refused as not a
/// regular file once open).
const OPEN_FLAGS: libc::c_int = libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// A regular file, its metadata, and the name whose extension gives the
/// content type.
type Opened = (File, Metadata, String);

fn refused(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what.into())
}

/// Checks that an opened document is a regular file.
fn regular(file: File, name: String) -> io::Result<Opened> {
    let meta = file
        .metadata()
        .map_err(|e| io::Error::new(e.kind(), format!("fstat: {e}")))?;
    if !meta.is_file() {
        return Err(refused(format!("{name} is not a regular file")));
    }
    Ok((file, meta, name))
}

/// `FollowSymlinks 1`: the kernel resolves the path, links included.
fn open_following(root: &Path, path: &str, index: &str) -> io::Result<Opened> {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(p)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", p.display())))
    };
    let full = root.join(path);
    let file = open(&full)?;
    let meta = file
        .metadata()
        .map_err(|e| io::Error::new(e.kind(), format!("fstat: {e}")))?;
    if meta.is_dir() {
        return regular(open(&full.join(index))?, index.to_owned());
    }
    regular(file, path.to_owned())
}

/// `openat(dir, name)` without following a link in `name`.
fn open_at(dir: &File, name: &OsStr) -> io::Result<File> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a file name"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `dir` an open
    // descriptor for the duration of the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | OPEN_FLAGS,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The target of the link `name` in `dir`; an error if it is no link.
fn read_link_at(dir: &File, name: &OsStr) -> io::Result<PathBuf> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a file name"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for `buf.len()` bytes, `c` is
    // NUL-terminated, `dir` is open.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a link target longer than 4095 bytes",
        ));
    }
    buf.truncate(n);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// Resolves paths below an open root directory one component at a time,
/// reading links by hand so that nothing outside the root is reached.
struct Beneath<'a> {
    /// Open directories from the root (first) to the current one.
    stack: Vec<File>,
    /// Spellings of the root that absolute links may start with.
    roots: &'a [Option<&'a Path>],
    links: usize,
}

/// Where a walk ended.
enum Reached {
    File(File),
    /// The current directory (top of the stack).
    Dir,
}

impl Beneath<'_> {
    fn push_front(pending: &mut VecDeque<OsString>, target: &Path) {
        for component in target.components().rev() {
            match component {
                Component::Normal(s) => pending.push_front(s.to_owned()),
                Component::ParentDir => pending.push_front("..".into()),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
    }

    fn walk(&mut self, mut pending: VecDeque<OsString>) -> io::Result<Reached> {
        while let Some(name) = pending.pop_front() {
            if name.is_empty() || name == "." {
                continue;
            }
            if name == ".." {
                if self.stack.len() <= 1 {
                    return Err(refused("a link leads above the document root"));
                }
                self.stack.pop();
                continue;
            }
            let dir = self
                .stack
                .last()
                .ok_or_else(|| io::Error::other("internal: no open directory"))?;
            let file = match open_at(dir, &name) {
                Ok(file) => file,
                Err(open_error) => {
                    // O_NOFOLLOW fails on a link (ELOOP, or EMLINK/EFTYPE on
                    // some BSDs): read it; if it is no link the open error
                    // stands.
                    let Ok(target) = read_link_at(dir, &name) else {
                        return Err(io::Error::new(
                            open_error.kind(),
                            format!("open {}: {open_error}", name.to_string_lossy()),
                        ));
                    };
                    self.links += 1;
                    if self.links > MAX_LINKS {
                        return Err(refused("too many levels of links"));
                    }
                    if target.is_absolute() {
                        let inside = self
                            .roots
                            .iter()
                            .flatten()
                            .find_map(|root| target.strip_prefix(root).ok());
                        let Some(rest) = inside else {
                            return Err(refused(format!(
                                "the link {} leads outside the document root to {}",
                                name.to_string_lossy(),
                                target.display()
                            )));
                        };
                        self.stack.truncate(1);
                        Beneath::push_front(&mut pending, rest);
                    } else {
                        Beneath::push_front(&mut pending, &target);
                    }
                    continue;
                }
            };
            let is_dir = file
                .metadata()
                .map_err(|e| io::Error::new(e.kind(), format!("fstat: {e}")))?
                .is_dir();
            if is_dir {
                self.stack.push(file);
            } else if pending.is_empty() {
                return Ok(Reached::File(file));
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", name.to_string_lossy()),
                ));
            }
        }
        Ok(Reached::Dir)
    }
}

fn components(path: &str) -> VecDeque<OsString> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(OsString::from)
        .collect()
}

/// `FollowSymlinks 0`: opens `path` (or its directory's index) only if it
/// and every link on the way lie inside the root.
fn open_beneath(
    root: &Path,
    roots: &[Option<&Path>],
    path: &str,
    index: &str,
) -> io::Result<Opened> {
    let root_dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS | libc::O_DIRECTORY)
        .open(root)
        .map_err(|e| io::Error::new(e.kind(), format!("open the root {}: {e}", root.display())))?;
    let mut walk = Beneath {
        stack: vec![root_dir],
        roots,
        links: 0,
    };
    match walk.walk(components(path))? {
        Reached::File(file) => regular(file, path.to_owned()),
        Reached::Dir => match walk.walk(components(index))? {
            Reached::File(file) => regular(file, index.to_owned()),
            Reached::Dir => Err(refused(format!("the index {index} is a directory"))),
        },
    }
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
        let docs = Documents::new(None, "index.html".into(), DEFAULT_CACHE_BYTES, false);
        assert_eq!(
            &*docs.not_found().response,
            &b"HTTP/1.1 404 Not Found\r\nServer: meteord\r\nContent-Type: text/html; charset=utf-8\r\nPragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\r\nContent-length: 0\r\n\r\n"[..]
        );
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> io::Result<Scratch> {
            let dir = std::env::temp_dir().join(format!(
                "meteord-docs-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("root/sub"))?;
            Ok(Scratch(dir))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn aliases_share_and_the_bound_holds() -> io::Result<()> {
        let dir = Scratch::new("bound")?;
        let root = dir.0.join("root");
        std::fs::write(root.join("sub/index.html"), vec![b'i'; 1000])?;
        for i in 0..20 {
            std::fs::write(root.join(format!("f{i}.txt")), vec![b'f'; 1000])?;
        }
        let mut docs = Documents::new(Some(root), "index.html".into(), 16 * 1024, false);
        for p in [
            "sub",
            "sub/",
            "./sub/.",
            "sub/index.html",
            "sub//index.html",
        ] {
            let doc = docs.get(p);
            assert!(doc.found && doc.file.is_none() && doc.size == 1000, "{p}");
        }
        assert_eq!(docs.entries(), 1, "every spelling shares one entry");
        for i in 0..20 {
            assert!(docs.get(&format!("f{i}.txt")).found);
            assert!(docs.used() <= 16 * 1024, "{} bytes", docs.used());
        }
        assert!(docs.entries() < 21, "older entries were evicted");
        // Evicted files are read again.
        let doc = docs.get("f0.txt");
        assert!(doc.found && doc.size == 1000);
        docs.clear();
        assert_eq!((docs.used(), docs.entries()), (0, 0));
        Ok(())
    }

    #[test]
    fn large_files_stream_and_streams_are_bounded() -> io::Result<()> {
        let dir = Scratch::new("stream")?;
        let root = dir.0.join("root");
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("big.bin"), &body)?;
        let mut docs = Documents::new(Some(root), "index.html".into(), 64 * 1024, false);
        let mut held: Vec<Document> = (0..MAX_STREAMED_FILES)
            .map(|_| docs.get("big.bin"))
            .collect();
        assert!(held.iter().all(|d| d.found && d.file.is_some()));
        assert_eq!(docs.used(), 0, "a large file is not cached");
        assert_eq!(docs.get("big.bin").status, 503);
        let mut doc = held.pop().ok_or_else(|| io::Error::other("no document"))?;
        assert_eq!(docs.get("big.bin").status, 503, "the slot is held by `doc`");
        let mut out = Vec::new();
        let mut scratch = vec![0u8; 4096];
        let mut sent = 0;
        let file = doc
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no file"))?;
        loop {
            let mut budget = 10_000;
            match write_file_reply(&mut out, file, &mut scratch, &mut budget, &mut sent) {
                FileWrite::Done => break,
                FileWrite::Yield => assert_eq!(budget, 0),
                other => panic!("{other:?}"),
            }
        }
        assert!(out == body && sent == body.len() as u64);
        drop(doc);
        assert!(docs.get("big.bin").file.is_some(), "a slot is free again");
        Ok(())
    }

    #[test]
    fn links_stay_beneath_the_root() -> io::Result<()> {
        use std::os::unix::fs::symlink;
        let dir = Scratch::new("links")?;
        let root = dir.0.join("root");
        std::fs::write(dir.0.join("secret.txt"), b"secret")?;
        std::fs::write(root.join("sub/a.txt"), b"a")?;
        symlink("../secret.txt", root.join("up.txt"))?;
        symlink(dir.0.join("secret.txt"), root.join("abs.txt"))?;
        symlink("..", root.join("sub/parent"))?;
        symlink("sub/a.txt", root.join("in.txt"))?;
        symlink("loop", root.join("loop"))?;
        let mut docs = Documents::new(Some(root), "index.html".into(), 1 << 20, false);
        for p in [
            "up.txt",
            "abs.txt",
            "sub/parent/up.txt",
            "loop",
            "sub/a.txt/x",
        ] {
            assert!(!docs.get(p).found, "{p}");
        }
        for p in ["in.txt", "sub/parent/in.txt", "sub/parent/sub/a.txt"] {
            assert!(docs.get(p).found, "{p}");
        }
        Ok(())
    }

    #[test]
    fn paths_have_one_spelling() {
        for p in ["x", "/x", "./x", "/././x", "//x", "x/", "/./x/./", "x/."] {
            assert_eq!(normalise(p).as_deref(), Some("x"), "{p}");
        }
        assert_eq!(normalise("/a/./b//c/").as_deref(), Some("a/b/c"));
        assert_eq!(normalise("").as_deref(), Some(""));
        assert_eq!(normalise("/./").as_deref(), Some(""));
        assert_eq!(normalise("a/../b"), None);
        assert_eq!(normalise(".."), None);
        assert_eq!(normalise("a..b").as_deref(), Some("a..b"));
    }
}
