//! Reading settings as written: the configuration file, the hand-parsed
//! command line, and the escapes both use. The result is `RawSettings`,
//! text per (key, mode), which `Config` later checks and types.

use super::keys::{self, CONFIG_FILE_LOCATION, DEBUG, KEYS, Key, Kind, Scope};
use super::{ConfigError, error};
use std::collections::HashMap;
use std::path::Path;

/// Settings as written: (key, mode) -> raw value, before escapes. Layers
/// are merged in precedence order: defaults, file, command line. Kept
/// between reloads so that the command line still wins after SIGHUP.
#[derive(Clone, Debug, Default)]
pub struct RawSettings {
    /// Keyed by the key's canonical name (names are unique).
    values: HashMap<(&'static str, Option<String>), String>,
}

impl RawSettings {
    pub(super) fn set(&mut self, key: &Key, mode: Option<String>, value: String) {
        self.values.insert((key.name, mode), value);
    }

    /// The value set for `key` in exactly this scope (no fallback).
    pub(super) fn get(&self, key: &Key, mode: Option<&str>) -> Option<&str> {
        self.values
            .get(&(key.name, mode.map(str::to_owned)))
            .map(String::as_str)
    }

    /// Overlays `other` on top of `self`.
    pub(super) fn merge(&mut self, other: &RawSettings) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    /// Makes every relative path (a key of `Kind::Path`) relative to
    /// `dir` instead: the configuration file's directory.
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for ((name, _), value) in &mut self.values {
            let is_path = keys::find_exact(name).is_some_and(|k| k.kind == Kind::Path);
            let path = String::from_utf8_lossy(&unescape(value)).into_owned();
            if is_path && !path.is_empty() && Path::new(&path).is_relative() {
                // Backslashes in the directory must survive `unescape`.
                *value = dir.join(path).to_string_lossy().replace('\\', "\\\\");
            }
        }
    }

    /// Every mode something is set for (with repeats).
    pub(super) fn modes(&self) -> impl Iterator<Item = &str> {
        self.values.keys().filter_map(|(_, m)| m.as_deref())
    }
}

/// Every key at its default: the bottom layer.
pub(super) fn defaults() -> RawSettings {
    let mut raw = RawSettings::default();
    for key in KEYS {
        raw.set(key, None, key.default.to_owned());
    }
    raw
}

/// Finds a key by case-insensitive exact name or unambiguous prefix.
fn find_prefix(name: &str) -> Result<&'static Key, ConfigError> {
    if let Some(key) = keys::find_exact(name) {
        return Ok(key);
    }
    let lower = name.to_ascii_lowercase();
    let matches: Vec<&Key> = KEYS
        .iter()
        .filter(|k| k.name.to_ascii_lowercase().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [key] => Ok(key),
        [] => Err(error(format!("unknown option -{name} (see -help)"))),
        many => Err(error(format!(
            "ambiguous option -{name}: could be {}",
            many.iter()
                .map(|k| format!("-{}", k.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A value starting with `--` stands for the same value with one `-` less.
fn unescape_dashes(value: &str) -> String {
    match value.strip_prefix('-') {
        Some(rest) if rest.starts_with('-') => rest.to_owned(),
        _ => value.to_owned(),
    }
}

/// Expands `\r \n \t \s \0` to CR, LF, TAB, space, NUL; `\x` is `x`.
/// Public so that tests and fuzzers can check the escapes on their own.
pub fn unescape(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b's') => out.push(b' '),
            Some(b'0') => out.push(0),
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// What the command line asks for besides settings.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Run,
    Version,
    Help,
    /// `-man`: print the manual page meteord(8) in roff.
    Man,
    /// `-token <channels> <seconds> [<hostid>]`: print a subscriber token
    /// granting `channels` (names or patterns, separated by commas or
    /// spaces) for `seconds`, bound to `hostid` if given, signed with the
    /// configured `SubscriberSecret`.
    Token {
        channels: Vec<String>,
        seconds: u64,
        hostid: Option<String>,
    },
}

/// Reads the arguments of `-token` from `args[*i..]`, moving `i` past them.
fn token_action(args: &[String], i: &mut usize) -> Result<Action, ConfigError> {
    let usage =
        "-token needs <channels> <seconds> [<hostid>], e.g. -token private-orders,user-7 3600";
    let (Some(channels), Some(seconds)) = (args.get(*i), args.get(*i + 1)) else {
        return Err(error(usage));
    };
    let channels: Vec<String> = channels
        .split([',', ' '])
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let seconds = match seconds.parse::<u64>() {
        Ok(n) if (1..=keys::MAX_SECONDS).contains(&n) => n,
        _ => {
            return Err(error(format!(
                "-token: '{seconds}' is not a number of seconds from 1 to {} ({usage})",
                keys::MAX_SECONDS
            )));
        }
    };
    if channels.is_empty() {
        return Err(error(usage));
    }
    *i += 2;
    let hostid = match args.get(*i) {
        Some(h) if !h.starts_with('-') => {
            if !is_mode_name(h) {
                return Err(error(format!(
                    "-token: invalid hostid '{h}': hostids are [0-9a-zA-Z]+"
                )));
            }
            *i += 1;
            Some(h.clone())
        }
        _ => None,
    };
    Ok(Action::Token {
        channels,
        seconds,
        hostid,
    })
}

/// Parses the command line (without the program name): `-Key value`,
/// `-Key.mode value`, case-insensitive unambiguous prefixes, a key with no
/// value meaning `1`, `--x` as a value meaning `-x`, `-d`, `-v`, `-help`,
/// `-man`.
pub fn parse_args(args: &[String]) -> Result<(Action, RawSettings), ConfigError> {
    let mut raw = RawSettings::default();
    let mut action = Action::Run;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(name) = arg.strip_prefix('-').filter(|n| !n.is_empty()) else {
            return Err(error(format!(
                "unexpected argument '{arg}': options are -Key value (see -help)"
            )));
        };
        let name = name.strip_prefix('-').unwrap_or(name);
        match name {
            "v" | "version" => return Ok((Action::Version, raw)),
            "help" | "h" => return Ok((Action::Help, raw)),
            "man" => return Ok((Action::Man, raw)),
            "token" => {
                action = token_action(args, &mut i)?;
                continue;
            }
            _ => {}
        }
        let (key, mode) = if name == "d" {
            (&DEBUG, None)
        } else {
            match name.split_once('.') {
                Some((k, m)) => (find_prefix(k)?, Some(m.to_owned())),
                None => (find_prefix(name)?, None),
            }
        };
        if let Some(m) = &mode {
            check_mode_key(key, m)?;
        }
        let value = match args.get(i) {
            Some(next) if next.starts_with("--") => {
                i += 1;
                next[1..].to_owned()
            }
            Some(next) if !next.starts_with('-') || next == "-" => {
                i += 1;
                next.clone()
            }
            _ => "1".to_owned(),
        };
        raw.set(key, mode, value);
    }
    Ok((action, raw))
}

fn check_mode_key(key: &Key, mode: &str) -> Result<(), ConfigError> {
    if !is_mode_name(mode) {
        return Err(error(format!(
            "invalid mode name '{mode}' for {}: modes are [0-9a-zA-Z]+",
            key.name
        )));
    }
    if key.scope == Scope::Global {
        return Err(error(format!(
            "{} cannot be set per mode (mode '{mode}'): it is a global setting",
            key.name
        )));
    }
    Ok(())
}

/// Mode names as they appear in URLs; public for the URL parser's tests.
pub fn is_mode_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Parses configuration file text; `origin` names the file in errors.
pub fn parse_file(text: &[u8], origin: &str) -> Result<RawSettings, ConfigError> {
    let mut raw = RawSettings::default();
    let mut mode: Option<String> = None;
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        let at = || format!("{origin} line {}", number + 1);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(section) = trimmed.strip_prefix('[') {
            let Some(name) = section.trim_end().strip_suffix(']') else {
                return Err(error(format!("{}: unclosed section '{trimmed}'", at())));
            };
            let name = name.trim();
            if !name.is_empty() && !is_mode_name(name) {
                return Err(error(format!(
                    "{}: invalid mode name '{name}': modes are [0-9a-zA-Z]+",
                    at()
                )));
            }
            mode = (!name.is_empty()).then(|| name.to_owned());
            continue;
        }
        let split = trimmed.find([' ', '\t']).unwrap_or(trimmed.len());
        let (name, rest) = trimmed.split_at(split);
        let value = rest.trim_start_matches([' ', '\t']);
        let Some(key) = keys::find_exact(name) else {
            return Err(error(format!("{}: unknown key '{name}'", at())));
        };
        if *key == CONFIG_FILE_LOCATION {
            return Err(error(format!(
                "{}: ConfigFileLocation cannot be set in the configuration file",
                at()
            )));
        }
        if let Some(m) = &mode {
            check_mode_key(key, m).map_err(|e| error(format!("{}: {e}", at())))?;
        }
        raw.set(key, mode.clone(), unescape_dashes(value));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{DIRECTORY_INDEX, PID_FILE, STATE_FILE, SUBSCRIBER_DOCUMENT_ROOT};

    #[test]
    fn relative_paths_are_resolved_against_the_file_directory() -> Result<(), ConfigError> {
        let mut raw = parse_file(
            b"SubscriberDocumentRoot public\\sdocs\nPidFile /run/m.pid\nStateFile\nDirectoryIndex x.html\n",
            "t.conf",
        )?;
        raw.resolve_paths(Path::new("/etc/a\\b"));
        let value = |key| raw.get(key, None).map(unescape);
        assert_eq!(
            value(&SUBSCRIBER_DOCUMENT_ROOT).as_deref(),
            Some(&b"/etc/a\\b/public docs"[..])
        );
        assert_eq!(value(&PID_FILE).as_deref(), Some(&b"/run/m.pid"[..]));
        assert_eq!(value(&STATE_FILE).as_deref(), Some(&b""[..]));
        // Not a path.
        assert_eq!(value(&DIRECTORY_INDEX).as_deref(), Some(&b"x.html"[..]));
        Ok(())
    }
}
