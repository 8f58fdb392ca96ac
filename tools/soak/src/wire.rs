//! Sockets and the bytes on them: connecting with deadlines, socket
//! options (reset on close, tiny receive buffers), HTTP heads and the
//! `p(id,"channel","text");` event lines of the classic modes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

/// Connect and read timeouts used everywhere: nothing blocks longer.
pub const TICK: Duration = Duration::from_millis(500);

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Closing this socket will send a reset instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Connects with the smallest receive buffer the kernel allows (set before
/// connecting, so the advertised window stays small).
pub fn connect_small_rcvbuf(addr: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: plain socket calls on a descriptor we own, with fully
    // initialised, correctly sized structures; the descriptor is handed to
    // a TcpStream exactly once (or closed on error).
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let size: libc::c_int = 1024;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        TcpStream::from_raw_fd(fd)
    };
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// What one read with a deadline gave.
pub enum Got {
    Data,
    /// Closed by the peer (a reset counts as closed).
    Eof,
    /// Nothing within the read timeout.
    Idle,
}

pub fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]) -> io::Result<Got> {
    loop {
        match s.read(tmp) {
            Ok(0) => return Ok(Got::Eof),
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                return Ok(Got::Data);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Ok(Got::Idle);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(Got::Eof);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Everything until the peer closes or `deadline`; `Err` holds what came
/// before the deadline.
pub fn read_to_end(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(buf);
        }
        match read_some(s, &mut buf, &mut tmp) {
            Ok(Got::Eof) => return Ok(buf),
            Ok(_) => {}
            Err(_) => return Ok(buf),
        }
    }
}

/// Sends a request and returns everything the server answers before
/// closing (or what came within `timeout`).
pub fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut s = connect(addr)?;
    s.write_all(request)?;
    read_to_end(&mut s, Instant::now() + timeout)
        .map_err(|partial| io::Error::new(io::ErrorKind::TimedOut, show(&partial)))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Bytes made printable for reports.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(160) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 160 {
        s.push_str("...");
    }
    s
}

pub fn shutdown_write(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

/// One line of a classic-mode stream body.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `p(id,"channel","text");`
    Event {
        id: u64,
        channel: &'a [u8],
        text: &'a [u8],
    },
    /// `p(-1,"");`
    Ping,
    /// `ch("name", id);` from `~channelinfo~`.
    Info,
    /// `eof();`: the server closes this subscriber on its own initiative.
    Eof,
    Other,
}

/// Parses one line (without its CRLF).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    if line == b"eof();" {
        return Line::Eof;
    }
    if line.starts_with(b"ch(") {
        return Line::Info;
    }
    if line == b"p(-1,\"\");" {
        return Line::Ping;
    }
    let Some(rest) = line
        .strip_prefix(b"p(")
        .and_then(|r| r.strip_suffix(b"\");"))
    else {
        return Line::Other;
    };
    let Some(comma) = memchr::memchr(b',', rest) else {
        return Line::Other;
    };
    let Some(id) = std::str::from_utf8(&rest[..comma])
        .ok()
        .and_then(|d| d.parse().ok())
    else {
        return Line::Other;
    };
    let rest = &rest[comma + 1..];
    let Some(rest) = rest.strip_prefix(b"\"") else {
        return Line::Other;
    };
    let Some(sep) = memchr::memmem::find(rest, b"\",\"") else {
        return Line::Other;
    };
    Line::Event {
        id,
        channel: &rest[..sep],
        text: &rest[sep + 3..],
    }
}

/// The publisher's sequence number at the start of an event text
/// (`<seq>.<padding>`).
pub fn seq_of(text: &[u8]) -> Option<u64> {
    let end = memchr::memchr(b'.', text).unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

/// Splits an HTTP response head from `buf` once complete: (status line,
/// head length).
pub fn response_head(buf: &[u8]) -> Option<(String, usize)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let line_end = find(buf, b"\r\n")?;
    Some((String::from_utf8_lossy(&buf[..line_end]).into_owned(), end))
}

/// The `Content-Length` of a response head.
pub fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(b"p(12,\"soak3\",\"7.xx\");"),
            Line::Event {
                id: 12,
                channel: b"soak3",
                text: b"7.xx"
            }
        );
        assert_eq!(parse_line(b"p(-1,\"\");"), Line::Ping);
        assert_eq!(parse_line(b"ch(\"a\", 0);"), Line::Info);
        assert_eq!(parse_line(b"eof();"), Line::Eof);
        assert_eq!(parse_line(b"junk"), Line::Other);
        assert_eq!(seq_of(b"42.abc"), Some(42));
        assert_eq!(seq_of(b"42"), Some(42));
        assert_eq!(seq_of(b"x"), None);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"id\":1}\n";
        let (status, n) = response_head(r).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(content_length(&r[..n]), Some(9));
    }
}
