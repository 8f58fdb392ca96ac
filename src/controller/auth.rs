//! Publisher passwords: the slowdown that keeps one address from guessing
//! `ControllerPassword` quickly, on the line protocol and over HTTP alike.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong passwords an address may send before it has to wait.
const FREE_FAILURES: u32 = 3;
/// The longest wait between two attempts from one address.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond it those quiet for `MAX_DELAY`
/// are forgotten, and if none is, the oldest half.
const MAX_ADDRESSES: usize = 4096;

/// Wrong passwords per address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    by_addr: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// After `FREE_FAILURES`, each further failure makes the next attempt
    /// wait twice as long as the one before (1 s, 2 s, 4 s, ...), at most
    /// `MAX_DELAY`.
    fn delay(self) -> Duration {
        match self.count.saturating_sub(FREE_FAILURES) {
            0 => Duration::ZERO,
            extra => Duration::from_secs(1u64 << (extra - 1).min(6)).min(MAX_DELAY),
        }
    }
}

impl AuthFailures {
    /// Whether an attempt from `ip` comes too soon after its last failure
    /// and must be refused without looking at the password.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_addr
            .get(&ip)
            .is_some_and(|f| now < f.last + f.delay())
    }

    /// Counts a wrong password from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.by_addr.len() >= MAX_ADDRESSES && !self.by_addr.contains_key(&ip) {
            self.by_addr.retain(|_, f| now < f.last + MAX_DELAY);
            if self.by_addr.len() >= MAX_ADDRESSES {
                let mut times: Vec<Instant> = self.by_addr.values().map(|f| f.last).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                self.by_addr.retain(|_, f| f.last > cut);
            }
        }
        let entry = self.by_addr.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// A right password from `ip`: its count starts again.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.by_addr.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_failures() {
        let mut auth = AuthFailures::default();
        let ip = IpAddr::from([127, 0, 0, 9]);
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(!auth.blocked(ip, t));
            auth.failed(ip, t);
        }
        assert!(!auth.blocked(ip, t));
        auth.failed(ip, t);
        assert!(auth.blocked(ip, t));
        assert!(auth.blocked(ip, t + Duration::from_millis(999)));
        assert!(!auth.blocked(ip, t + Duration::from_secs(1)));
        auth.failed(ip, t);
        assert!(auth.blocked(ip, t + Duration::from_millis(1999)));
        assert!(!auth.blocked(IpAddr::from([127, 0, 0, 10]), t));
        auth.succeeded(ip);
        assert!(!auth.blocked(ip, t));
    }
}
