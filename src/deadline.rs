//! An index of deadlines, ordered by time: the connection timers of the
//! loop and the message expiry of the channels both use it, so that the
//! loop sleeps exactly until the nearest one.

use std::collections::BTreeSet;

/// Deadlines of type `T` for keys of type `K`, each key at most once. The
/// owner of a key remembers its current deadline and hands it back on
/// every change, so the index needs no map of its own.
#[derive(Debug)]
pub struct Deadlines<T, K> {
    due: BTreeSet<(T, K)>,
}

impl<T: Ord + Copy, K: Ord + Copy> Default for Deadlines<T, K> {
    fn default() -> Self {
        Deadlines {
            due: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Copy, K: Ord + Copy> Deadlines<T, K> {
    /// Moves `key` from deadline `old` to `new` (either may be None) and
    /// returns `new`, for the owner to remember.
    pub fn set(&mut self, key: K, old: Option<T>, new: Option<T>) -> Option<T> {
        if old != new {
            if let Some(old) = old {
                self.due.remove(&(old, key));
            }
            if let Some(new) = new {
                self.due.insert((new, key));
            }
        }
        new
    }

    /// The nearest deadline.
    pub fn next(&self) -> Option<T> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Removes and returns the nearest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: T) -> Option<(T, K)> {
        match self.due.first() {
            Some(&(at, key)) if at <= now => {
                self.due.remove(&(at, key));
                Some((at, key))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first_and_moves_replace() {
        let mut d: Deadlines<u64, usize> = Deadlines::default();
        let a = d.set(1, None, Some(30));
        d.set(2, None, Some(10));
        assert_eq!(d.next(), Some(10));
        d.set(1, a, Some(5));
        assert_eq!(d.pop_due(7), Some((5, 1)));
        assert_eq!(d.pop_due(7), None);
        assert_eq!(d.pop_due(10), Some((10, 2)));
        assert_eq!(d.next(), None);
    }
}
