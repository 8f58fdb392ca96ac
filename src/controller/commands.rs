//! The controller line protocol's commands (`ADDMESSAGE`,
//! `COUNTSUBSCRIBERS`, `LISTCHANNELS`, `SHOWSTATS`, `QUIT`, `AUTH`) as
//! parsed lines, and the constant-time secret comparison `AUTH` uses.

/// Compares two secrets in time that depends only on their lengths, so a
/// wrong guess does not reveal how much of it was right.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let longest = given.len().max(expected.len());
    let mut diff = u8::from(given.len() != expected.len());
    for i in 0..longest {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

/// One parsed controller command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    AddMessage {
        channel: &'a [u8],
        text: &'a [u8],
    },
    CountSubscribers {
        channel: &'a [u8],
    },
    ListChannels,
    ShowStats,
    /// `SHOWSTATS CLUSTER`: every node's counts (several nodes).
    ShowStatsCluster,
    Quit,
    /// `AUTH <password>`: unlocks a connection when `ControllerPassword` is set.
    Auth {
        password: &'a [u8],
    },
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off a run of non-whitespace after at least one whitespace byte.
fn argument(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let skip = rest.iter().position(|&b| !is_space(b))?;
    if skip == 0 {
        return None;
    }
    let rest = &rest[skip..];
    let end = rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Parses one line (without its LF; a CR before it is already dropped).
pub fn parse(line: &[u8]) -> Option<Command<'_>> {
    let word_end = line.iter().position(|&b| is_space(b)).unwrap_or(line.len());
    let (word, rest) = line.split_at(word_end);
    let only_space = |r: &[u8]| r.iter().all(|&b| is_space(b));
    match word {
        b"ADDMESSAGE" => {
            let (channel, after) = argument(rest)?;
            // Exactly one separator, then the text byte for byte.
            let text = after.get(1..)?;
            Some(Command::AddMessage { channel, text })
        }
        b"COUNTSUBSCRIBERS" => {
            let (channel, after) = argument(rest)?;
            only_space(after).then_some(Command::CountSubscribers { channel })
        }
        b"LISTCHANNELS" if only_space(rest) => Some(Command::ListChannels),
        b"SHOWSTATS" if only_space(rest) => Some(Command::ShowStats),
        b"SHOWSTATS" => {
            let (word, after) = argument(rest)?;
            (word == b"CLUSTER" && only_space(after)).then_some(Command::ShowStatsCluster)
        }
        b"QUIT" if only_space(rest) => Some(Command::Quit),
        b"AUTH" => {
            let password = rest.strip_prefix(b" ")?;
            Some(Command::Auth { password })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addmessage_keeps_the_text_byte_for_byte() {
        assert_eq!(
            parse(b"ADDMESSAGE \t chan a  b\tc "),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b"a  b\tc "
            })
        );
        assert_eq!(
            parse(b"ADDMESSAGE chan "),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b""
            })
        );
        assert_eq!(
            parse(b"ADDMESSAGE chan\t\tx"),
            Some(Command::AddMessage {
                channel: b"chan",
                text: b"\tx"
            })
        );
        assert_eq!(parse(b"ADDMESSAGE chan"), None);
        assert_eq!(parse(b"ADDMESSAGE"), None);
        assert_eq!(parse(b"ADDMESSAGEx chan t"), None);
    }

    #[test]
    fn other_commands_are_exact() {
        assert_eq!(
            parse(b"COUNTSUBSCRIBERS c"),
            Some(Command::CountSubscribers { channel: b"c" })
        );
        assert_eq!(parse(b"COUNTSUBSCRIBERS c d"), None);
        assert_eq!(parse(b"COUNTSUBSCRIBERS"), None);
        assert_eq!(parse(b"LISTCHANNELS"), Some(Command::ListChannels));
        assert_eq!(parse(b"SHOWSTATS"), Some(Command::ShowStats));
        assert_eq!(parse(b"SHOWSTATSx"), None);
        assert_eq!(parse(b"SHOWSTATS x"), None);
        assert_eq!(parse(b"SHOWSTATS CLUSTER"), Some(Command::ShowStatsCluster));
        assert_eq!(parse(b"showstats"), None);
        assert_eq!(parse(b"QUIT"), Some(Command::Quit));
        assert_eq!(
            parse(b"AUTH s3 cret"),
            Some(Command::Auth {
                password: b"s3 cret"
            })
        );
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"a"));
        assert_eq!(parse(b""), None);
    }
}
