//! Non-blocking TCP connects from a chosen loopback source address, and fd-limit setup.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: lim is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    lim.rlim_cur
}

/// The source address of subscriber `index`: 127.0.0.1 for the first `per_source`,
/// then 127.0.0.2, ... so no source runs out of ephemeral ports.
pub fn source_for(index: usize, per_source: usize) -> Option<Ipv4Addr> {
    let n = index / per_source.max(1);
    if n == 0 {
        return None;
    }
    let n = (n as u32).min(250);
    Some(Ipv4Addr::new(127, 0, 0, 1 + n as u8))
}

/// Starts a non-blocking connect to `dst`, bound to `src` when given (the port is
/// chosen at connect time, so each source address has its own ephemeral range).
pub fn connect(dst: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<mio::net::TcpStream> {
    let SocketAddr::V4(dst4) = dst else {
        // IPv6 targets: no source spreading.
        return mio::net::TcpStream::connect(dst);
    };
    // SAFETY: plain socket(2) call; the fd is owned by the TcpStream below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; from here on it is closed on drop.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option pointer/length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of_val(&one) as libc::socklen_t,
        )
    };
    if let Some(src) = src {
        // SAFETY: valid fd and option pointer/length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of_val(&one) as libc::socklen_t,
            )
        };
        let sa = sockaddr(SocketAddrV4::new(src, 0));
        // SAFETY: sa is a valid sockaddr_in of the given length.
        let rc = unsafe {
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sa = sockaddr(dst4);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    let rc = unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(mio::net::TcpStream::from_std(stream))
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread() {
        assert_eq!(source_for(0, 100), None);
        assert_eq!(source_for(99, 100), None);
        assert_eq!(source_for(100, 100), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_for(250, 100), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
