//! Configuration: the table of keys with their defaults and descriptions,
//! the configuration file, the command line, and the typed settings (global,
//! per mode, and every input bound) the server runs with.

use crate::log::TimeFormat;
use crate::template::Template;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;

/// Where a key may be set: globally only, or also per subscriber mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Mode,
}

/// One configuration key: its canonical name, default and description.
struct Key {
    name: &'static str,
    default: &'static str,
    scope: Scope,
    help: &'static str,
}

const DEFAULT_HEADER: &str = "HTTP/1.1 ~status~\\r\\nServer: ~server~\\r\\nContent-Type: text/html; charset=utf-8\\r\\nPragma: no-cache\\r\\nCache-Control: no-cache, no-store, must-revalidate\\r\\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\\r\\n\\r\\n";

/// Every key the server knows, in `-help` order. Defaults are written as in
/// the configuration file (escapes included). The limits of spec part B
/// live here too, so that every bound is one line of this table.
const KEYS: &[Key] = &[
    Key {
        name: "AllowedOrigins",
        default: "",
        scope: Scope::Global,
        help: "Origins (space-separated, or *) whose pages may read subscriber replies; see ~cors~",
    },
    Key {
        name: "ChannelInfoTemplate",
        default: "<script>ch(\"~name~\", ~lastMsgID~);</script>\\r\\n",
        scope: Scope::Mode,
        help: "Template for each requested channel, joined into the header's ~channelinfo~ (~name~, ~lastMsgID~, ~messageCount~, ~subscriberCount~)",
    },
    Key {
        name: "ConfigFileLocation",
        default: "/etc/meteord.conf",
        scope: Scope::Global,
        help: "Configuration file to read (command line only)",
    },
    Key {
        name: "ControllerIP",
        default: "",
        scope: Scope::Global,
        help: "Address the controller port listens on (empty: 127.0.0.1)",
    },
    Key {
        name: "ControllerPort",
        default: "4671",
        scope: Scope::Global,
        help: "Port publishers connect to",
    },
    Key {
        name: "ControllerPassword",
        default: "",
        scope: Scope::Global,
        help: "When set, controllers must send AUTH <password> first (empty: no password)",
    },
    Key {
        name: "ControllerShutdownMsg",
        default: "",
        scope: Scope::Global,
        help: "Sent to each controller when the server shuts down",
    },
    Key {
        name: "Debug",
        default: "0",
        scope: Scope::Global,
        help: "1: log debug lines to standard error and stay in the foreground",
    },
    Key {
        name: "DirectoryIndex",
        default: "index.html",
        scope: Scope::Global,
        help: "File served for a directory of the document root",
    },
    Key {
        name: "DrainTimeout",
        default: "120",
        scope: Scope::Global,
        help: "Seconds a shutdown waits for unsent data before exiting with status 1",
    },
    Key {
        name: "Foreground",
        default: "0",
        scope: Scope::Global,
        help: "1: never detach, even when logging to syslog (for systemd and other supervisors)",
    },
    Key {
        name: "HeaderTemplate",
        default: DEFAULT_HEADER,
        scope: Scope::Mode,
        help: "HTTP response head and page start for subscribers (~status~, ~server~, ~servertime~, ~channelinfo~)",
    },
    Key {
        name: "HeadTimeout",
        default: "10",
        scope: Scope::Global,
        help: "Seconds a client may take to send a complete request head (then 408)",
    },
    Key {
        name: "ListenBacklog",
        default: "4096",
        scope: Scope::Global,
        help: "Accept queue of each listening port (capped by net.core.somaxconn)",
    },
    Key {
        name: "LogTimeFormat",
        default: "human",
        scope: Scope::Global,
        help: "Time stamp of log lines: human or unix",
    },
    // --- memory bounds (src/channel.rs) ---
    Key {
        name: "MaxCachedBytes",
        default: "67108864",
        scope: Scope::Global,
        help: "Bytes all channels may hold for events (texts, rendered copies, 64 bytes per message and 16 per copy); the oldest events across channels are evicted first (0: no limit)",
    },
    Key {
        name: "MaxChannels",
        default: "100000",
        scope: Scope::Global,
        help: "Most channels at once; a publish that would create one more gets ERR (HTTP 507) (0: no limit)",
    },
    // --- end of memory bounds ---
    Key {
        name: "MaxChannelNameLength",
        default: "128",
        scope: Scope::Global,
        help: "Longest channel name a subscriber or publisher may use",
    },
    Key {
        name: "MaxChannelsPerRequest",
        default: "32",
        scope: Scope::Global,
        help: "Most channels one subscriber request may name (more: 400)",
    },
    Key {
        name: "MaxControllerLineBytes",
        default: "1048576",
        scope: Scope::Global,
        help: "Longest controller command line (then ERR Line too long and close)",
    },
    Key {
        name: "MaxControllers",
        default: "256",
        scope: Scope::Global,
        help: "Most controller connections at once (then ERR Too many connections)",
    },
    Key {
        name: "MaxHeaderLines",
        default: "64",
        scope: Scope::Global,
        help: "Most header lines in a request head (then 431)",
    },
    Key {
        name: "MaxMessageAge",
        default: "7200",
        scope: Scope::Global,
        help: "Seconds a message stays in its channel's cache (0: no limit)",
    },
    Key {
        name: "MaxMessages",
        default: "0",
        scope: Scope::Mode,
        help: "Close a subscriber after this many messages (0: no limit)",
    },
    Key {
        name: "MaxMessagesPerChannel",
        default: "250",
        scope: Scope::Global,
        help: "Messages kept per channel, oldest dropped first",
    },
    Key {
        name: "MaxRequestHeadBytes",
        default: "8192",
        scope: Scope::Global,
        help: "Largest request head a subscriber may send (then 431)",
    },
    Key {
        name: "MaxSubscribers",
        default: "0",
        scope: Scope::Global,
        help: "Most subscriber-port connections at once (then 503; 0: as many as descriptors allow)",
    },
    Key {
        name: "MaxTime",
        default: "0",
        scope: Scope::Mode,
        help: "Close a subscriber after this many seconds (0: no limit)",
    },
    Key {
        name: "MessageTemplate",
        default: "<script>p(~id~,\"~channel~\",\"~text~\");</script>\\r\\n",
        scope: Scope::Mode,
        help: "Template for each message (~id~, ~channel~, ~text~, ~timestamp~)",
    },
    Key {
        name: "PidFile",
        default: "",
        scope: Scope::Global,
        help: "Pid file written at start and removed at exit (empty: /var/run/meteord.pid when detaching, none otherwise)",
    },
    Key {
        name: "Persist",
        default: "0",
        scope: Scope::Mode,
        help: "1: keep the connection open for new messages after the backlog",
    },
    Key {
        name: "PingInterval",
        default: "5",
        scope: Scope::Mode,
        help: "Seconds between pings to persistent subscribers (0, 1, 2: off)",
    },
    Key {
        name: "PingMessage",
        default: "<script>p(-1,\"\");</script>\\r\\n",
        scope: Scope::Mode,
        help: "Sent to persistent subscribers every PingInterval",
    },
    Key {
        name: "RedisAddress",
        default: "",
        scope: Scope::Global,
        help: "[password@]host:port[/db] of the Redis that several nodes share channels through (empty: standalone)",
    },
    Key {
        name: "SubscriberDocumentRoot",
        default: "/usr/local/meteor/public_html",
        scope: Scope::Global,
        help: "Directory of static files (empty or /: none)",
    },
    Key {
        name: "SubscriberDynamicPageAddress",
        default: "/push",
        scope: Scope::Global,
        help: "Path prefix of subscriber requests",
    },
    Key {
        name: "SubscriberIP",
        default: "",
        scope: Scope::Global,
        help: "Address the subscriber port listens on (empty: all)",
    },
    Key {
        name: "SubscriberPort",
        default: "4670",
        scope: Scope::Global,
        help: "Port browsers connect to",
    },
    Key {
        name: "SubscriberShutdownMsg",
        default: "<script>eof();</script>\\r\\n",
        scope: Scope::Mode,
        help: "Sent to a persistent subscriber the server closes on its own initiative",
    },
    Key {
        name: "SyslogSocket",
        default: "/dev/log",
        scope: Scope::Global,
        help: "Local datagram socket of the syslog daemon",
    },
    Key {
        name: "SyslogFacility",
        default: "daemon",
        scope: Scope::Global,
        help: "Syslog facility (none: log to standard error)",
    },
    Key {
        name: "UDPIP",
        default: "",
        scope: Scope::Global,
        help: "Address the UDP port listens on (empty: 127.0.0.1)",
    },
    Key {
        name: "UDPAllowUnauthenticated",
        default: "0",
        scope: Scope::Global,
        help: "1: allow UDP publishing even though ControllerPassword is set",
    },
    Key {
        name: "UDPMaxBytes",
        default: "8192",
        scope: Scope::Global,
        help: "Largest UDP datagram accepted (larger ones are dropped and logged)",
    },
    Key {
        name: "UDPPort",
        default: "0",
        scope: Scope::Global,
        help: "Port for ADDMESSAGE datagrams (0: off)",
    },
    Key {
        name: "WriteTimeout",
        default: "120",
        scope: Scope::Global,
        help: "Seconds a write may make no progress before the subscriber is dropped",
    },
];

/// A configuration problem, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Settings as written: (key index, mode) -> raw value, before escapes.
/// Layers are merged in precedence order: defaults, file, command line.
#[derive(Clone, Debug, Default)]
pub struct RawSettings {
    values: HashMap<(usize, Option<String>), String>,
}

impl RawSettings {
    fn set(&mut self, key: usize, mode: Option<String>, value: String) {
        self.values.insert((key, mode), value);
    }

    fn get(&self, key: usize, mode: Option<&str>) -> Option<&str> {
        self.values
            .get(&(key, mode.map(str::to_owned)))
            .map(String::as_str)
    }

    /// Overlays `other` on top of `self`.
    fn merge(&mut self, other: &RawSettings) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    fn modes(&self) -> impl Iterator<Item = &str> {
        self.values.keys().filter_map(|(_, m)| m.as_deref())
    }
}

fn key_index(name: &str) -> Option<usize> {
    KEYS.iter().position(|k| k.name == name)
}

/// Finds a key by case-insensitive exact name.
fn find_exact(name: &str) -> Option<usize> {
    KEYS.iter().position(|k| k.name.eq_ignore_ascii_case(name))
}

/// Finds a key by case-insensitive exact name or unambiguous prefix.
fn find_prefix(name: &str) -> Result<usize, ConfigError> {
    if let Some(i) = find_exact(name) {
        return Ok(i);
    }
    let lower = name.to_ascii_lowercase();
    let matches: Vec<usize> = (0..KEYS.len())
        .filter(|&i| KEYS[i].name.to_ascii_lowercase().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => Err(error(format!("unknown option -{name} (see -help)"))),
        many => Err(error(format!(
            "ambiguous option -{name}: could be {}",
            many.iter()
                .map(|&i| format!("-{}", KEYS[i].name))
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
}

/// Parses the command line (without the program name): `-Key value`,
/// `-Key.mode value`, case-insensitive unambiguous prefixes, a key with no
/// value meaning `1`, `--x` as a value meaning `-x`, `-d`, `-v`, `-help`.
pub fn parse_args(args: &[String]) -> Result<(Action, RawSettings), ConfigError> {
    let mut raw = RawSettings::default();
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
            _ => {}
        }
        let (key, mode) = if name == "d" {
            (find_prefix("Debug")?, None)
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
    Ok((Action::Run, raw))
}

fn check_mode_key(key: usize, mode: &str) -> Result<(), ConfigError> {
    if !is_mode_name(mode) {
        return Err(error(format!(
            "invalid mode name '{mode}' for {}: modes are [0-9a-zA-Z]+",
            KEYS[key].name
        )));
    }
    if KEYS[key].scope == Scope::Global {
        return Err(error(format!(
            "{} cannot be set per mode (mode '{mode}'): it is a global setting",
            KEYS[key].name
        )));
    }
    Ok(())
}

/// Mode names as they appear in URLs.
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
        let Some(key) = find_exact(name) else {
            return Err(error(format!("{}: unknown key '{name}'", at())));
        };
        if KEYS[key].name == "ConfigFileLocation" {
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

fn defaults() -> RawSettings {
    let mut raw = RawSettings::default();
    for (i, key) in KEYS.iter().enumerate() {
        raw.set(i, None, key.default.to_owned());
    }
    raw
}

/// Reads and merges defaults, the configuration file named on the command
/// line (or the default one), and the command line itself.
pub fn load(command_line: &RawSettings) -> Result<Config, ConfigError> {
    let location_key = key_index("ConfigFileLocation").unwrap_or(0);
    let named = command_line.get(location_key, None);
    let location = named.unwrap_or(KEYS[location_key].default).to_owned();
    let file = match std::fs::read(&location) {
        Ok(text) => parse_file(&text, &location)?,
        // Without a file of its own the server runs on defaults and the
        // command line; a file that was named must be readable.
        Err(e) if named.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            let mut config = Config::from_raw(
                &raw_with(&RawSettings::default(), command_line),
                PathBuf::from(&location),
            )?;
            config.warnings.push(format!(
                "no configuration file at {location}: running on the defaults and the command line"
            ));
            return Ok(config);
        }
        Err(e) => {
            return Err(error(format!(
                "cannot read configuration file {location}: {e} (set -ConfigFileLocation)"
            )));
        }
    };
    Config::from_raw(&raw_with(&file, command_line), PathBuf::from(location))
}

/// Defaults, overlaid with the file, overlaid with the command line.
fn raw_with(file: &RawSettings, command_line: &RawSettings) -> RawSettings {
    let mut raw = defaults();
    raw.merge(file);
    raw.merge(command_line);
    raw
}

/// The `-help` text: every key with its description and default.
pub fn help() -> String {
    let mut out = String::from(
        "meteord: a Comet server. Usage: meteord [-Key value | -Key.mode value]... [-d] [-v] [-help]\n\
         Keys are case-insensitive and may be abbreviated; -d is -Debug 1; -v prints the version.\n\n",
    );
    for key in KEYS {
        let scope = if key.scope == Scope::Mode {
            " (per mode)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  -{:<30} {}{scope}\n  {:<31} default: {}\n",
            key.name,
            key.help,
            "",
            if key.default.is_empty() {
                "(empty)"
            } else {
                key.default
            }
        ));
    }
    out
}

/// Subscriber behaviour for one mode: the global settings overlaid with
/// the mode's own, with templates parsed once.
#[derive(Debug)]
pub struct Mode {
    pub header: Template,
    /// Shared with channel buffers rendered from it.
    pub message: Rc<Template>,
    pub channel_info: Template,
    pub ping: Vec<u8>,
    pub shutdown: Vec<u8>,
    pub persist: bool,
    pub max_messages: u64,
    pub max_time: u64,
    /// Seconds between pings; 0 when off.
    pub ping_interval: u64,
}

/// Bounds on what clients may send or hold (spec part B2).
#[derive(Debug, Clone)]
pub struct Limits {
    pub head_bytes: usize,
    pub header_lines: usize,
    pub head_timeout: u64,
    pub controller_line_bytes: usize,
    pub controllers: usize,
    /// 0 until the server knows its descriptor limit.
    pub subscribers: usize,
    pub channel_name_length: usize,
    pub channels_per_request: usize,
    pub write_timeout: u64,
    pub udp_bytes: usize,
    pub listen_backlog: i32,
}

/// The whole configuration the server runs with.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub subscriber_addr: SocketAddr,
    pub controller_addr: SocketAddr,
    pub udp_addr: Option<SocketAddr>,
    pub debug: bool,
    /// The syslog facility number; None for `none` (log to standard error).
    pub syslog_facility: Option<u8>,
    pub syslog_socket: PathBuf,
    pub foreground: bool,
    pub pid_file: Option<PathBuf>,
    pub drain_timeout: u64,
    pub log_time_format: TimeFormat,
    pub document_root: Option<PathBuf>,
    pub directory_index: String,
    /// `AllowedOrigins`, split on whitespace.
    pub allowed_origins: Vec<String>,
    pub dynamic_page_address: String,
    pub max_messages_per_channel: usize,
    pub max_message_age: u64,
    // --- memory bounds (src/channel.rs); 0 is no limit ---
    pub max_cached_bytes: u64,
    pub max_channels: usize,
    // --- end of memory bounds ---
    pub controller_shutdown: Vec<u8>,
    /// `ControllerPassword`; None when empty.
    pub controller_password: Option<Vec<u8>>,
    pub limits: Limits,
    /// `RedisAddress`, parsed; None when standalone.
    pub redis: Option<crate::cluster::RedisSettings>,
    pub global_mode: Rc<Mode>,
    pub modes: HashMap<String, Rc<Mode>>,
    /// Warnings found while loading (e.g. PingInterval 1), logged by the caller.
    pub warnings: Vec<String>,
}

/// Reads typed values out of merged raw settings, naming the key in errors.
struct Reader<'a> {
    raw: &'a RawSettings,
}

impl Reader<'_> {
    fn text(&self, name: &str, mode: Option<&str>) -> Result<Vec<u8>, ConfigError> {
        let key = key_index(name).ok_or_else(|| error(format!("internal: no key named {name}")))?;
        let value = mode
            .and_then(|m| self.raw.get(key, Some(m)))
            .or_else(|| self.raw.get(key, None))
            .unwrap_or(KEYS[key].default);
        Ok(unescape(value))
    }

    fn string(&self, name: &str, mode: Option<&str>) -> Result<String, ConfigError> {
        String::from_utf8(self.text(name, mode)?)
            .map_err(|_| error(format!("{name}: the value is not valid UTF-8")))
    }

    fn number(&self, name: &str, mode: Option<&str>) -> Result<u64, ConfigError> {
        let value = self.string(name, mode)?;
        let where_ = mode
            .map(|m| format!("{name}.{m}"))
            .unwrap_or(name.to_owned());
        value.trim().parse::<u64>().map_err(|_| {
            error(format!(
                "{where_}: '{value}' is not a number (a whole number of 0 or more)"
            ))
        })
    }

    fn flag(&self, name: &str, mode: Option<&str>) -> Result<bool, ConfigError> {
        Ok(self.number(name, mode)? != 0)
    }

    fn port(&self, name: &str) -> Result<u16, ConfigError> {
        let n = self.number(name, None)?;
        u16::try_from(n).map_err(|_| error(format!("{name}: {n} is not a port (0-65535)")))
    }

    fn ip(&self, name: &str, default: IpAddr) -> Result<IpAddr, ConfigError> {
        let value = self.string(name, None)?;
        let value = value.trim();
        if value.is_empty() {
            return Ok(default);
        }
        value
            .parse()
            .map_err(|_| error(format!("{name}: '{value}' is not an IP address")))
    }

    fn size(&self, name: &str) -> Result<usize, ConfigError> {
        let n = self.number(name, None)?;
        usize::try_from(n).map_err(|_| error(format!("{name}: {n} is too large")))
    }

    fn mode(&self, mode: Option<&str>, warnings: &mut Vec<String>) -> Result<Mode, ConfigError> {
        let mut ping_interval = self.number("PingInterval", mode)?;
        if ping_interval == 1 || ping_interval == 2 {
            warnings.push(format!(
                "PingInterval {ping_interval}{}: intervals of 1 and 2 seconds disable pings",
                mode.map(|m| format!(" (mode {m})")).unwrap_or_default()
            ));
            ping_interval = 0;
        }
        Ok(Mode {
            header: Template::parse(&self.text("HeaderTemplate", mode)?),
            message: Rc::new(Template::parse(&self.text("MessageTemplate", mode)?)),
            channel_info: Template::parse(&self.text("ChannelInfoTemplate", mode)?),
            ping: self.text("PingMessage", mode)?,
            shutdown: self.text("SubscriberShutdownMsg", mode)?,
            persist: self.flag("Persist", mode)?,
            max_messages: self.number("MaxMessages", mode)?,
            max_time: self.number("MaxTime", mode)?,
            ping_interval,
        })
    }
}

impl Config {
    fn from_raw(raw: &RawSettings, file: PathBuf) -> Result<Config, ConfigError> {
        let r = Reader { raw };
        let mut warnings = Vec::new();
        let global_mode = Rc::new(r.mode(None, &mut warnings)?);
        let mut modes = HashMap::new();
        let mut names: Vec<&str> = raw.modes().collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let mode = r.mode(Some(name), &mut warnings)?;
            // Modes with the same message template share one buffer.
            let mode = Mode {
                message: if mode.message == global_mode.message {
                    Rc::clone(&global_mode.message)
                } else {
                    mode.message
                },
                ..mode
            };
            modes.insert(name.to_owned(), Rc::new(mode));
        }
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let udp_port = r.port("UDPPort")?;
        let root = r.string("SubscriberDocumentRoot", None)?;
        let facility_name = r.string("SyslogFacility", None)?;
        let syslog_facility = match facility_name.trim() {
            "none" => None,
            name => Some(crate::log::facility(name).ok_or_else(|| {
                error(format!(
                    "SyslogFacility: '{name}' is not a syslog facility (daemon, user, local0-local7, ... or none)"
                ))
            })?),
        };
        let log_time_format = match r.string("LogTimeFormat", None)?.trim() {
            "human" => TimeFormat::Human,
            "unix" => TimeFormat::Unix,
            other => {
                return Err(error(format!(
                    "LogTimeFormat: '{other}' is neither human nor unix"
                )));
            }
        };
        let mut dynamic_page_address = r.string("SubscriberDynamicPageAddress", None)?;
        while dynamic_page_address.ends_with('/') {
            dynamic_page_address.pop();
        }
        if !dynamic_page_address.starts_with('/') {
            dynamic_page_address.insert(0, '/');
        }
        let max_messages_per_channel = r.size("MaxMessagesPerChannel")?;
        let controller_password =
            Some(r.text("ControllerPassword", None)?).filter(|p| !p.is_empty());
        if controller_password.is_some()
            && udp_port != 0
            && !r.flag("UDPAllowUnauthenticated", None)?
        {
            return Err(error(
                "UDPPort is set but UDP has no authentication while ControllerPassword is set: \
                 turn UDP off or set UDPAllowUnauthenticated 1",
            ));
        }
        Ok(Config {
            file,
            subscriber_addr: SocketAddr::new(
                r.ip("SubscriberIP", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?,
                r.port("SubscriberPort")?,
            ),
            controller_addr: SocketAddr::new(
                r.ip("ControllerIP", loopback)?,
                r.port("ControllerPort")?,
            ),
            udp_addr: (udp_port != 0)
                .then(|| {
                    r.ip("UDPIP", loopback)
                        .map(|ip| SocketAddr::new(ip, udp_port))
                })
                .transpose()?,
            debug: r.flag("Debug", None)?,
            syslog_facility,
            syslog_socket: PathBuf::from(r.string("SyslogSocket", None)?),
            foreground: r.flag("Foreground", None)?,
            pid_file: Some(r.string("PidFile", None)?)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            drain_timeout: r.number("DrainTimeout", None)?,
            log_time_format,
            document_root: (!root.is_empty() && root != "/").then(|| PathBuf::from(root)),
            directory_index: r.string("DirectoryIndex", None)?,
            allowed_origins: r
                .string("AllowedOrigins", None)?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            dynamic_page_address,
            max_messages_per_channel,
            max_message_age: r.number("MaxMessageAge", None)?,
            // --- memory bounds ---
            max_cached_bytes: r.number("MaxCachedBytes", None)?,
            max_channels: r.size("MaxChannels")?,
            // --- end of memory bounds ---
            controller_shutdown: r.text("ControllerShutdownMsg", None)?,
            controller_password,
            redis: match r.string("RedisAddress", None)?.trim() {
                "" => None,
                value => Some(
                    crate::cluster::RedisSettings::parse(value)
                        .map_err(|e| error(format!("RedisAddress: {e}")))?,
                ),
            },
            limits: Limits {
                head_bytes: r.size("MaxRequestHeadBytes")?.max(64),
                header_lines: r.size("MaxHeaderLines")?.max(1),
                head_timeout: r.number("HeadTimeout", None)?.max(1),
                controller_line_bytes: r.size("MaxControllerLineBytes")?.max(64),
                controllers: r.size("MaxControllers")?.max(1),
                subscribers: r.size("MaxSubscribers")?,
                channel_name_length: r.size("MaxChannelNameLength")?.max(1),
                channels_per_request: r.size("MaxChannelsPerRequest")?.max(1),
                write_timeout: r.number("WriteTimeout", None)?.max(1),
                udp_bytes: r.size("UDPMaxBytes")?.max(16),
                listen_backlog: i32::try_from(r.number("ListenBacklog", None)?.max(1))
                    .unwrap_or(i32::MAX),
            },
            global_mode,
            modes,
            warnings,
        })
    }

    /// The settings for a mode named in a URL; unknown modes use the global ones.
    pub fn mode(&self, name: &str) -> &Rc<Mode> {
        self.modes.get(name).unwrap_or(&self.global_mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn config(file: &str, cmd: &[&str]) -> Result<Config, ConfigError> {
        let (_, cmd) = parse_args(&args(cmd))?;
        let mut raw = defaults();
        raw.merge(&parse_file(file.as_bytes(), "test.conf")?);
        raw.merge(&cmd);
        Config::from_raw(&raw, PathBuf::from("test.conf"))
    }

    #[test]
    fn defaults_match_the_spec() -> Result<(), ConfigError> {
        let c = config("", &[])?;
        assert_eq!(c.subscriber_addr.to_string(), "0.0.0.0:4670");
        assert_eq!(c.controller_addr.to_string(), "127.0.0.1:4671");
        assert_eq!(c.udp_addr, None);
        assert_eq!(c.max_messages_per_channel, 250);
        assert_eq!(c.global_mode.ping, b"<script>p(-1,\"\");</script>\r\n");
        assert_eq!(c.global_mode.ping_interval, 5);
        assert!(!c.global_mode.persist);
        Ok(())
    }

    #[test]
    fn command_line_prefixes_modes_and_flags() -> Result<(), ConfigError> {
        let c = config(
            "[x]\nPersist 1\n",
            &[
                "-subscriberp",
                "1234",
                "-MaxTime.x",
                "7",
                "-d",
                "-PingMessage.x",
                "--y",
            ],
        )?;
        assert_eq!(c.subscriber_addr.port(), 1234);
        assert!(c.debug);
        let x = c.mode("x");
        assert!(x.persist);
        assert_eq!(x.max_time, 7);
        assert_eq!(x.ping, b"-y");
        assert_eq!(c.mode("other").max_time, 0);
        assert!(parse_args(&args(&["-Max", "1"])).is_err());
        assert!(parse_args(&args(&["-Bogus", "1"])).is_err());
        assert_eq!(parse_args(&args(&["-v"]))?.0, Action::Version);
        Ok(())
    }

    #[test]
    fn file_sections_escapes_and_errors() -> Result<(), ConfigError> {
        let c = config(
            "# comment\r\n\r\nPingMessage a\\tb\\sc\\\\\\x  \r\n[ m ]\nMessageTemplate --~id~\n",
            &[],
        )?;
        assert_eq!(c.global_mode.ping, b"a\tb c\\x  ");
        assert_eq!(c.mode("m").message.source(), b"-~id~");
        assert!(config("Nope 1\n", &[]).is_err());
        assert!(config("ConfigFileLocation x\n", &[]).is_err());
        let e = config("SubscriberPort abc\n", &[]).err();
        assert!(e.is_some_and(|e| e.0.contains("SubscriberPort")));
        Ok(())
    }
}
