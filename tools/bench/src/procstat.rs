//! Reads a server's resident memory and CPU time from /proc.

use std::fs;
use std::io;

/// One sample of the watched processes (summed when several pids are given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Resident set size in bytes.
    pub rss: u64,
    /// User + system CPU time in seconds.
    pub cpu: f64,
}

/// Reads `VmRSS` of one process, in bytes.
fn rss_of(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|e| io::Error::other(format!("bad VmRSS line {line:?}: {e}")))?;
            return Ok(kb * 1024);
        }
    }
    Err(io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// Reads utime + stime of one process, in seconds.
fn cpu_of(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields after the last ')' are fixed.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat field {i}")))
    };
    let ticks = parse(11)? + parse(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// Samples every pid and sums them.
pub fn sample(pids: &[u32]) -> io::Result<Sample> {
    let mut s = Sample::default();
    for &pid in pids {
        s.rss += rss_of(pid)?;
        s.cpu += cpu_of(pid)?;
    }
    Ok(s)
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat; system-wide).
pub fn listen_overflows() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let s = super::sample(&[std::process::id()]).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(s.cpu >= 0.0);
        assert!(super::listen_overflows().is_some());
    }
}
