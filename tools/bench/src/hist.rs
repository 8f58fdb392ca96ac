//! A fixed-size latency histogram (microseconds, relative error under 0.1 %).

/// Values below this are counted exactly, one bucket per microsecond.
const LINEAR: u64 = 2048;
/// Sub-buckets per power of two above `LINEAR`.
const SUB: u64 = 1024;
/// Highest power of two tracked (2^40 us is about 12 days); larger values are clamped.
const MAX_EXP: u64 = 40;
const BUCKETS: usize = (LINEAR + (MAX_EXP - 10) * SUB) as usize;

/// Counts of latencies in microseconds, mergeable across processes.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = (63 - v.leading_zeros() as u64).min(MAX_EXP);
        if exp == MAX_EXP {
            return BUCKETS - 1;
        }
        let sub = (v >> (exp - 10)) & (SUB - 1);
        (LINEAR + (exp - 11) * SUB + sub) as usize
    }

    /// The smallest value that falls into bucket `i`.
    fn value_of(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let exp = (i - LINEAR) / SUB + 11;
        let sub = (i - LINEAR) % SUB;
        (SUB + sub) << (exp - 10)
    }

    pub fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_of(i).min(self.max);
            }
        }
        self.max
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Compact text form: `max;index:count,index:count,...` (non-empty buckets only).
    pub fn encode(&self) -> String {
        let mut s = format!("{};", self.max);
        for (i, &c) in self.counts.iter().enumerate() {
            if c != 0 {
                s.push_str(&format!("{i}:{c},"));
            }
        }
        s
    }

    /// Parses the output of [`Histogram::encode`].
    pub fn decode(s: &str) -> Option<Histogram> {
        let (max, rest) = s.split_once(';')?;
        let mut h = Histogram::new();
        h.max = max.parse().ok()?;
        for pair in rest.split(',').filter(|p| !p.is_empty()) {
            let (i, c) = pair.split_once(':')?;
            let i: usize = i.parse().ok()?;
            let c: u64 = c.parse().ok()?;
            *h.counts.get_mut(i)? += c;
            h.total += c;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut prev = 0;
        for v in (0..5_000_000u64).step_by(997) {
            let i = Histogram::index(v);
            assert!(i >= prev);
            prev = i;
            let low = Histogram::value_of(i);
            assert!(low <= v && v - low <= v / 1000 + 1, "v={v} low={low}");
        }
    }

    #[test]
    fn quantiles_and_roundtrip() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v * 100);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5);
        assert!((49_900..=50_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 100_000);
        let back = Histogram::decode(&h.encode()).expect("decodes");
        assert_eq!(back.count(), 1000);
        assert_eq!(back.quantile(0.99), h.quantile(0.99));
    }
}
