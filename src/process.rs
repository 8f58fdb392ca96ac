//! The process around the loop: the open-file limit, detaching into the
//! background, the pid file, and systemd's readiness notifications.

use std::io;
use std::path::{Path, PathBuf};

/// Raises the open-file soft limit to the hard limit; returns the limit in force.
pub fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur)
        .unwrap_or(usize::MAX)
        .min(1 << 24)
}

/// Detaches into the background: forks, starts a new session and points
/// the standard streams at /dev/null. The parent waits until the child calls
/// `Detached::ready` (after writing its pid file), then exits 0, so that a
/// supervisor that reads the pid file when the parent is gone finds it. A
/// child that fails first (`Detached::fail`) sends its reason, which the
/// parent prints on its standard error before it exits 1, so the operator
/// at the terminal sees why. Only call this before any thread exists.
pub fn detach() -> io::Result<Detached> {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array we pass.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    // SAFETY: the process is single-threaded here; the child continues
    // with a copy of everything, the parent only waits and exits.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        _ => unsafe {
            libc::close(write_end);
            let mut reply = [0u8; 1024];
            let n = libc::read(read_end, reply.as_mut_ptr().cast(), reply.len());
            let n = usize::try_from(n).unwrap_or(0);
            if n >= 1 && reply[0] == READY {
                libc::_exit(0)
            }
            let reason: &[u8] = match reply.get(1..n) {
                Some(reason) if !reason.is_empty() => reason,
                _ => b"meteord: the detached server ended during start-up (see its log)\n",
            };
            libc::write(2, reason.as_ptr().cast(), reason.len());
            libc::_exit(1)
        },
    }
    // SAFETY: plain system calls on our own process and descriptors.
    unsafe {
        libc::close(read_end);
        if libc::setsid() == -1 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    Ok(Detached(write_end))
}

/// The detached child's way to let its parent exit.
pub struct Detached(libc::c_int);

/// The first byte the child sends: start-up is complete. Anything else is
/// followed by the reason it failed.
const READY: u8 = 1;
const FAILED: u8 = 0;

impl Detached {
    /// Tells the waiting parent that start-up is complete.
    pub fn ready(self) {
        self.send(&[READY]);
    }

    /// Tells the waiting parent why start-up failed, for it to print.
    pub fn fail(self, reason: &dyn std::fmt::Display) {
        let mut message = vec![FAILED];
        message.extend_from_slice(format!("meteord: {reason}\n").as_bytes());
        message.truncate(1024);
        self.send(&message);
    }

    fn send(self, bytes: &[u8]) {
        // SAFETY: writes our own buffer to, then closes, the pipe end we
        // own; a pipe takes up to PIPE_BUF (4096) bytes at once.
        unsafe {
            libc::write(self.0, bytes.as_ptr().cast(), bytes.len());
            libc::close(self.0);
        }
    }
}

/// A pid file that is removed when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write pid file {}: {e}", path.display()),
            )
        })?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Tells systemd (or any supervisor that sets `NOTIFY_SOCKET`) about a state
/// change, such as `READY=1` or `STOPPING=1`. Without the variable it does
/// nothing.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> io::Result<()> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(Path::new(&path))?,
        };
        socket.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        crate::info!("cannot notify {}: {e}", path.to_string_lossy());
    }
}
