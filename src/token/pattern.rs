//! Channel name patterns, as `PrivateChannels` and a token's `channels`
//! claim write them: `*` stands for any run of characters (none
//! included), every other character for itself. `private-*` matches
//! `private-` and `private-orders`; `*` matches every channel.

/// Whether `name` matches `pattern`. Runs in time proportional to the
/// product of the lengths at worst (no exponential backtracking).
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more character, and retry.
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Whether `name` matches any of `patterns`.
pub fn any_matches<P: AsRef<[u8]>>(patterns: &[P], name: &[u8]) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let yes = [
            ("private-*", "private-a"),
            ("private-*", "private-"),
            ("*", "anything"),
            ("*", ""),
            ("a*b*c", "aXbYc"),
            ("a*b*c", "abc"),
            ("a*c", "abcbc"),
            ("exact", "exact"),
            ("*-orders", "user-1-orders"),
            ("**", "x"),
        ];
        for (p, n) in yes {
            assert!(matches(p.as_bytes(), n.as_bytes()), "{p} {n}");
        }
        let no = [
            ("private-*", "privat"),
            ("private-*", "public-a"),
            ("exact", "exactly"),
            ("exact", "exac"),
            ("a*b*c", "aXbY"),
            ("", "a"),
            ("*-orders", "user-1-order"),
        ];
        for (p, n) in no {
            assert!(!matches(p.as_bytes(), n.as_bytes()), "{p} {n}");
        }
        let long = "a".repeat(2000);
        let pattern = "*a".repeat(100) + "b";
        assert!(!matches(pattern.as_bytes(), long.as_bytes()));
    }
}
