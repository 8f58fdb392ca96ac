//! Configuration: the typed settings (global, per mode, and every input
//! bound) the server runs with, and `load`, which builds them from the
//! defaults, the configuration file and the command line.
//!
//! `keys` is the table of keys, `man` turns it into the manual page,
//! `parse` reads the file and the command line into raw text, `redis`
//! parses `RedisAddress`. Configuration depends on no part of the server
//! but the leaf modules `log`, `template` and `proxies`.

use crate::log::TimeFormat;
use crate::proxies::TrustedProxies;
use crate::template::{Framing, Template};
use keys::*;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

pub mod keys;
mod man;
mod parse;
mod redis;

pub use keys::help;
pub use man::man;
use parse::defaults;
pub use parse::{Action, RawSettings, is_mode_name, parse_args, parse_file, unescape};
pub use redis::RedisSettings;

/// A configuration problem, worded for the operator: the server prints it
/// and exits 1 at start, or logs it and keeps its settings on reload.
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

/// Reads and merges defaults, the configuration file named on the command
/// line (or the default one), and the command line itself. Relative paths
/// in the file are taken from the file's directory, those on the command
/// line from the working directory.
pub fn load(command_line: &RawSettings) -> Result<Config, ConfigError> {
    let named = command_line.get(&CONFIG_FILE_LOCATION, None);
    let location = named.unwrap_or(CONFIG_FILE_LOCATION.default).to_owned();
    let file = match std::fs::read(&location) {
        Ok(text) => {
            let mut file = parse_file(&text, &location)?;
            file.resolve_paths(&directory_of(Path::new(&location)));
            file
        }
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

/// The directory relative paths in the configuration file at `location`
/// are taken from: the file's own, made absolute, so that the server finds
/// its documents, state and pid file wherever it was started from.
fn directory_of(location: &Path) -> PathBuf {
    let location = std::path::absolute(location).unwrap_or_else(|_| location.to_owned());
    match location.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Defaults, overlaid with the file, overlaid with the command line.
fn raw_with(file: &RawSettings, command_line: &RawSettings) -> RawSettings {
    let mut raw = defaults();
    raw.merge(file);
    raw.merge(command_line);
    raw
}

/// Subscriber behaviour for one mode: the global settings overlaid with
/// the mode's own, with templates parsed once.
#[derive(Debug)]
pub struct Mode {
    /// `HeaderTemplate`: the response head and page start.
    pub header: Template,
    /// Shared with channel buffers rendered from it.
    pub message: Rc<Template>,
    /// `ChannelInfoTemplate`: one per requested channel, for ~channelinfo~.
    pub channel_info: Template,
    /// `PingMessage`, escapes expanded.
    pub ping: Vec<u8>,
    /// `SubscriberShutdownMsg`, escapes expanded.
    pub shutdown: Vec<u8>,
    /// `Persist`: stay open for new messages after the backlog.
    pub persist: bool,
    /// `MaxMessages`; 0 is no limit.
    pub max_messages: u64,
    /// `MaxTime` in seconds (at most `keys::MAX_SECONDS`); 0 is no limit.
    pub max_time: u64,
    /// Seconds between pings; 0 when off.
    pub ping_interval: u64,
    /// `MessageTemplate` for WebSocket subscribers: each rendering is one
    /// text frame, so framing happens once per event per channel.
    pub ws_message: Rc<Template>,
    /// `ChannelInfoTemplate` for WebSocket subscribers: one text frame per
    /// channel, the first frames they get.
    pub ws_channel_info: Template,
    /// `WebSocketOnly`: requests that are not WebSocket handshakes get 400.
    pub websocket_only: bool,
    /// `KeepAlive`: replies that end by themselves carry their length and
    /// leave the connection open for the next request (HTTP/1.1).
    pub keep_alive: bool,
    /// `PollBatchInterval`: the least time between two kept-alive replies
    /// on one connection; zero when off.
    pub poll_batch: Duration,
}

/// Bounds on what clients may send or hold (wire contract B2), each within
/// its key's range: no minimum is applied silently.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `MaxRequestHeadBytes` (at least 64).
    pub head_bytes: usize,
    /// `MaxHeaderLines` (1 to `keys::HEADER_LINES_MAX`).
    pub header_lines: usize,
    /// `HeadTimeout` in seconds (1 to `keys::MAX_SECONDS`).
    pub head_timeout: u64,
    /// `MaxControllerLineBytes` (at least 64).
    pub controller_line_bytes: usize,
    /// `MaxControllers` (1 to `keys::MAX_CONNECTIONS`).
    pub controllers: usize,
    /// `MaxSubscribers` (at most `keys::MAX_CONNECTIONS`); 0 leaves it to
    /// the server, which knows its descriptor limit.
    pub subscribers: usize,
    /// `MaxChannelNameLength` (at least 1).
    pub channel_name_length: usize,
    /// `MaxChannelsPerRequest` (at least 1).
    pub channels_per_request: usize,
    /// `WriteTimeout` in seconds (1 to `keys::MAX_SECONDS`).
    pub write_timeout: u64,
    /// `KeepAliveTimeout` in seconds (at most `keys::MAX_SECONDS`); 0 turns
    /// keep-alive off.
    pub keep_alive_timeout: u64,
    /// `UDPMaxBytes` (16 to 65535).
    pub udp_bytes: usize,
    /// `ListenBacklog` (at least 1).
    pub listen_backlog: i32,
}

/// The whole configuration the server runs with. Durations are in seconds
/// and at most `keys::MAX_SECONDS`, so adding one to an `Instant` cannot
/// overflow; every other number is within its key's range (see `keys`).
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
    /// `DrainTimeout` in seconds (at most `keys::MAX_SECONDS`).
    pub drain_timeout: u64,
    pub log_time_format: TimeFormat,
    pub document_root: Option<PathBuf>,
    pub directory_index: String,
    /// `DocumentCacheBytes`: static files held in memory at most.
    pub document_cache_bytes: usize,
    /// `FollowSymlinks`: serve links that lead out of the document root.
    pub follow_symlinks: bool,
    /// `AllowedOrigins`, split on whitespace.
    pub allowed_origins: Vec<String>,
    /// `ControllerHosts`, split on whitespace, plus `ControllerIP` (unless
    /// it is 0.0.0.0 or ::): the hosts a controller HTTP request may name.
    pub controller_hosts: Vec<String>,
    /// `TrustedProxies`: the peers whose forwarding headers name the
    /// client; read for each request, so a reload applies to the next.
    pub trusted_proxies: TrustedProxies,
    pub dynamic_page_address: String,
    /// `MaxMessagesPerChannel` (at most `keys::MAX_REDIS_COUNT`).
    pub max_messages_per_channel: usize,
    /// `MaxMessageAge` in seconds (at most `keys::MAX_SECONDS`); 0 is no limit.
    pub max_message_age: u64,
    /// `MaxCachedBytes`: what all channels may hold; 0 is no limit.
    pub max_cached_bytes: u64,
    /// `MaxChannels`: channels at most; 0 is no limit.
    pub max_channels: usize,
    pub controller_shutdown: Vec<u8>,
    /// `ControllerCommandTimeout` in seconds.
    pub controller_command_timeout: u64,
    /// `ControllerIdleTimeout` in seconds; 0 is never.
    pub controller_idle_timeout: u64,
    /// `ControllerPassword`; None when empty.
    pub controller_password: Option<Vec<u8>>,
    /// `SubscriberSecret`: the secrets tokens may be signed with, the one
    /// `meteord -token` signs with first; empty when there are no private
    /// channels.
    pub subscriber_secrets: Vec<Vec<u8>>,
    /// `PrivateChannels`, split on whitespace; empty without a secret.
    pub private_channels: Vec<Vec<u8>>,
    /// `SubscriberTokenCookie`; None when empty.
    pub token_cookie: Option<String>,
    pub limits: Limits,
    /// `RedisAddress`, parsed; None when standalone.
    pub redis: Option<RedisSettings>,
    /// `RedisTimeout` in seconds (1 to `keys::MAX_SECONDS`): how long a
    /// reply may be due with nothing received from Redis.
    pub redis_timeout: u64,
    /// `RedisMaxPending`: publishes waiting for Redis at most.
    pub redis_max_pending: usize,
    /// `StateFile`; None when empty (off).
    pub state_file: Option<PathBuf>,
    /// `StateSync`.
    pub state_sync: StateSync,
    pub global_mode: Rc<Mode>,
    pub modes: HashMap<String, Rc<Mode>>,
    /// Warnings found while loading (e.g. PingInterval 1), logged by the caller.
    pub warnings: Vec<String>,
}

/// `StateSync`: when the state file reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSync {
    /// Synced before a publisher hears OK.
    Always,
    /// Synced about once a second.
    EverySec,
    /// Left to the operating system.
    No,
}

/// Reads typed values out of merged raw settings, naming the key in errors.
/// It takes a key constant, never a name, so a misspelt key does not compile.
struct Reader<'a> {
    raw: &'a RawSettings,
}

impl Reader<'_> {
    /// The value as written: the mode's own, else the global one, else the default.
    fn raw(&self, key: &Key, mode: Option<&str>) -> &str {
        mode.and_then(|m| self.raw.get(key, Some(m)))
            .or_else(|| self.raw.get(key, None))
            .unwrap_or(key.default)
    }

    fn text(&self, key: &Key, mode: Option<&str>) -> Vec<u8> {
        unescape(self.raw(key, mode))
    }

    fn string(&self, key: &Key, mode: Option<&str>) -> Result<String, ConfigError> {
        String::from_utf8(self.text(key, mode))
            .map_err(|_| error(format!("{}: the value is not valid UTF-8", key.name)))
    }

    /// A whole number within the key's range (any u64 for a flag).
    fn number(&self, key: &Key, mode: Option<&str>) -> Result<u64, ConfigError> {
        let value = self.string(key, mode)?;
        let where_ = match mode {
            Some(m) => format!("{}.{m}", key.name),
            None => key.name.to_owned(),
        };
        let (min, max, unit) = match key.kind {
            Kind::Number { min, max, unit } => (min, max, unit),
            Kind::Flag | Kind::Text | Kind::Path => (0, u64::MAX, Unit::Plain),
        };
        let digits = value.trim();
        let above = || {
            error(format!(
                "{where_}: {digits} is above the maximum of {}",
                unit.describe(max)
            ))
        };
        let n = match digits.parse::<u64>() {
            Ok(n) => n,
            // Too many digits for any number: above every maximum.
            Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(above());
            }
            Err(_) => {
                return Err(error(format!(
                    "{where_}: '{value}' is not a number (a whole number of 0 or more)"
                )));
            }
        };
        if n > max {
            return Err(above());
        }
        if n < min {
            return Err(error(format!(
                "{where_}: {n} is below the minimum of {}",
                unit.describe(min)
            )));
        }
        Ok(n)
    }

    fn flag(&self, key: &Key, mode: Option<&str>) -> Result<bool, ConfigError> {
        Ok(self.number(key, mode)? != 0)
    }

    fn port(&self, key: &Key) -> Result<u16, ConfigError> {
        let n = self.number(key, None)?;
        u16::try_from(n).map_err(|_| error(format!("{}: {n} is not a port (0-65535)", key.name)))
    }

    fn ip(&self, key: &Key, default: IpAddr) -> Result<IpAddr, ConfigError> {
        let value = self.string(key, None)?;
        let value = value.trim();
        if value.is_empty() {
            return Ok(default);
        }
        value
            .parse()
            .map_err(|_| error(format!("{}: '{value}' is not an IP address", key.name)))
    }

    /// A `listen(2)` backlog: an `int` (the key's maximum is `i32::MAX`).
    fn backlog(&self, key: &Key) -> Result<i32, ConfigError> {
        let n = self.number(key, None)?;
        i32::try_from(n).map_err(|_| error(format!("{}: {n} is too large", key.name)))
    }

    /// A count or size in memory. On a 32-bit machine a value past
    /// `usize::MAX` bounds nothing the address space could hold, so it
    /// saturates (as the key's maximum does on 64 bits) instead of refusing
    /// a value the key's range allows.
    fn size(&self, key: &Key) -> Result<usize, ConfigError> {
        let n = self.number(key, None)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn mode(&self, mode: Option<&str>, warnings: &mut Vec<String>) -> Result<Mode, ConfigError> {
        let mut ping_interval = self.number(&PING_INTERVAL, mode)?;
        if ping_interval == 1 || ping_interval == 2 {
            warnings.push(format!(
                "PingInterval {ping_interval}{}: intervals of 1 and 2 seconds disable pings",
                mode.map(|m| format!(" (mode {m})")).unwrap_or_default()
            ));
            ping_interval = 0;
        }
        let message = Template::parse(&self.text(&MESSAGE_TEMPLATE, mode));
        let channel_info = Template::parse(&self.text(&CHANNEL_INFO_TEMPLATE, mode));
        Ok(Mode {
            header: Template::parse(&self.text(&HEADER_TEMPLATE, mode)),
            ws_message: Rc::new(message.clone().framed(Framing::WebSocket)),
            ws_channel_info: channel_info.clone().framed(Framing::WebSocket),
            websocket_only: self.flag(&WEBSOCKET_ONLY, mode)?,
            keep_alive: self.flag(&KEEP_ALIVE, mode)?,
            poll_batch: Duration::from_millis(self.number(&POLL_BATCH_INTERVAL, mode)?),
            message: Rc::new(message),
            channel_info,
            ping: self.text(&PING_MESSAGE, mode),
            shutdown: self.text(&SUBSCRIBER_SHUTDOWN_MSG, mode),
            persist: self.flag(&PERSIST, mode)?,
            max_messages: self.number(&MAX_MESSAGES, mode)?,
            max_time: self.number(&MAX_TIME, mode)?,
            ping_interval,
        })
    }
}

/// The subscriber secrets, newest first.
type Secrets = Vec<Vec<u8>>;
/// Channel name patterns (see `token::pattern`).
type Patterns = Vec<Vec<u8>>;

/// `SubscriberSecret` and `PrivateChannels`: the secrets (one, or two
/// while rotating), and the patterns they protect. Refused: more than two
/// secrets, a secret equal to `ControllerPassword` (a subscriber could
/// then publish), and patterns other than the default without a secret
/// (they would protect nothing).
fn private_channels(
    r: &Reader,
    controller_password: Option<&[u8]>,
) -> Result<(Secrets, Patterns), ConfigError> {
    let secrets: Vec<Vec<u8>> = r
        .string(&SUBSCRIBER_SECRET, None)?
        .split_whitespace()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    if secrets.len() > 2 {
        return Err(error(format!(
            "{}: at most two secrets (the new one, then the old one while rotating)",
            SUBSCRIBER_SECRET.name
        )));
    }
    if let Some(password) = controller_password
        && secrets.iter().any(|s| s == password)
    {
        return Err(error(format!(
            "{} must not be the same as {}: whoever holds a subscriber token's secret could publish",
            SUBSCRIBER_SECRET.name, CONTROLLER_PASSWORD.name
        )));
    }
    let patterns = r.string(&PRIVATE_CHANNELS, None)?;
    // Commas separate too: no channel name contains one.
    let patterns: Vec<Vec<u8>> = patterns
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if secrets.is_empty() {
        let default: Vec<&[u8]> = PRIVATE_CHANNELS
            .default
            .split_whitespace()
            .map(str::as_bytes)
            .collect();
        if !patterns.is_empty() && patterns.iter().map(Vec::as_slice).ne(default) {
            return Err(error(format!(
                "{} is set but {} is empty: no token could be checked, so no channel would be private",
                PRIVATE_CHANNELS.name, SUBSCRIBER_SECRET.name
            )));
        }
        return Ok((Vec::new(), Vec::new()));
    }
    Ok((secrets, patterns))
}

/// A warning for secrets too short to resist guessing offline (RFC 7518
/// 3.2 asks for keys at least as long as the hash, 32 bytes).
fn short_secret_warning(secrets: &[Vec<u8>]) -> Option<String> {
    secrets.iter().any(|s| s.len() < 32).then(|| {
        format!(
            "{}: a secret shorter than 32 bytes can be guessed from any token it signed; use 32 random bytes or more",
            SUBSCRIBER_SECRET.name
        )
    })
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
        let udp_port = r.port(&UDP_PORT)?;
        let root = r.string(&SUBSCRIBER_DOCUMENT_ROOT, None)?;
        let facility_name = r.string(&SYSLOG_FACILITY, None)?;
        let syslog_facility = match facility_name.trim() {
            "none" => None,
            name => Some(crate::log::facility(name).ok_or_else(|| {
                error(format!(
                    "{}: '{name}' is not a syslog facility (daemon, user, local0-local7, ... or none)",
                    SYSLOG_FACILITY.name
                ))
            })?),
        };
        let log_time_format = match r.string(&LOG_TIME_FORMAT, None)?.trim() {
            "human" => TimeFormat::Human,
            "unix" => TimeFormat::Unix,
            other => {
                return Err(error(format!(
                    "{}: '{other}' is neither human nor unix",
                    LOG_TIME_FORMAT.name
                )));
            }
        };
        let mut dynamic_page_address = r.string(&SUBSCRIBER_DYNAMIC_PAGE_ADDRESS, None)?;
        while dynamic_page_address.ends_with('/') {
            dynamic_page_address.pop();
        }
        if !dynamic_page_address.starts_with('/') {
            dynamic_page_address.insert(0, '/');
        }
        let max_messages_per_channel = r.size(&MAX_MESSAGES_PER_CHANNEL)?;
        let controller_password =
            Some(r.text(&CONTROLLER_PASSWORD, None)).filter(|p| !p.is_empty());
        if controller_password.is_some()
            && udp_port != 0
            && !r.flag(&UDP_ALLOW_UNAUTHENTICATED, None)?
        {
            return Err(error(format!(
                "{} is set but UDP has no authentication while {} is set: \
                 turn UDP off or set {} 1",
                UDP_PORT.name, CONTROLLER_PASSWORD.name, UDP_ALLOW_UNAUTHENTICATED.name
            )));
        }
        let (subscriber_secrets, private_channels) =
            private_channels(&r, controller_password.as_deref())?;
        warnings.extend(short_secret_warning(&subscriber_secrets));
        let controller_ip = r.ip(&CONTROLLER_IP, loopback)?;
        let mut controller_hosts: Vec<String> = r
            .string(&CONTROLLER_HOSTS, None)?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !controller_ip.is_unspecified() {
            controller_hosts.push(match controller_ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        let state_sync = match r.string(&STATE_SYNC, None)?.trim() {
            "always" => StateSync::Always,
            "everysec" => StateSync::EverySec,
            "no" => StateSync::No,
            other => {
                return Err(error(format!(
                    "{}: '{other}' is not always, everysec or no",
                    STATE_SYNC.name
                )));
            }
        };
        let state_file = Some(r.string(&STATE_FILE, None)?)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let trusted_proxies = TrustedProxies::parse(&r.string(&TRUSTED_PROXIES, None)?)
            .map_err(|e| error(format!("{}: {e}", TRUSTED_PROXIES.name)))?;
        Ok(Config {
            trusted_proxies,
            state_file,
            state_sync,
            controller_hosts,
            file,
            subscriber_addr: SocketAddr::new(
                r.ip(&SUBSCRIBER_IP, IpAddr::V4(Ipv4Addr::UNSPECIFIED))?,
                r.port(&SUBSCRIBER_PORT)?,
            ),
            controller_addr: SocketAddr::new(controller_ip, r.port(&CONTROLLER_PORT)?),
            udp_addr: (udp_port != 0)
                .then(|| {
                    r.ip(&UDP_IP, loopback)
                        .map(|ip| SocketAddr::new(ip, udp_port))
                })
                .transpose()?,
            debug: r.flag(&DEBUG, None)?,
            syslog_facility,
            syslog_socket: PathBuf::from(r.string(&SYSLOG_SOCKET, None)?),
            foreground: r.flag(&FOREGROUND, None)?,
            pid_file: Some(r.string(&PID_FILE, None)?)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            drain_timeout: r.number(&DRAIN_TIMEOUT, None)?,
            log_time_format,
            document_root: (!root.is_empty() && root != "/").then(|| PathBuf::from(root)),
            directory_index: r.string(&DIRECTORY_INDEX, None)?,
            document_cache_bytes: r.size(&DOCUMENT_CACHE_BYTES)?,
            follow_symlinks: r.flag(&FOLLOW_SYMLINKS, None)?,
            allowed_origins: r
                .string(&ALLOWED_ORIGINS, None)?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            dynamic_page_address,
            max_messages_per_channel,
            max_message_age: r.number(&MAX_MESSAGE_AGE, None)?,
            max_cached_bytes: r.number(&MAX_CACHED_BYTES, None)?,
            max_channels: r.size(&MAX_CHANNELS)?,
            controller_shutdown: r.text(&CONTROLLER_SHUTDOWN_MSG, None),
            controller_password,
            subscriber_secrets,
            private_channels,
            token_cookie: Some(r.string(&SUBSCRIBER_TOKEN_COOKIE, None)?.trim().to_owned())
                .filter(|c| !c.is_empty()),
            controller_idle_timeout: r.number(&CONTROLLER_IDLE_TIMEOUT, None)?,
            controller_command_timeout: r.number(&CONTROLLER_COMMAND_TIMEOUT, None)?,
            redis: match r.string(&REDIS_ADDRESS, None)?.trim() {
                "" => None,
                value => Some(
                    RedisSettings::parse(value)
                        .map_err(|e| error(format!("{}: {e}", REDIS_ADDRESS.name)))?,
                ),
            },
            redis_timeout: r.number(&REDIS_TIMEOUT, None)?,
            redis_max_pending: r.size(&REDIS_MAX_PENDING)?,
            limits: Limits {
                // Each within its key's range: see keys.rs for the minimums.
                head_bytes: r.size(&MAX_REQUEST_HEAD_BYTES)?,
                header_lines: r.size(&MAX_HEADER_LINES)?,
                head_timeout: r.number(&HEAD_TIMEOUT, None)?,
                controller_line_bytes: r.size(&MAX_CONTROLLER_LINE_BYTES)?,
                controllers: r.size(&MAX_CONTROLLERS)?,
                subscribers: r.size(&MAX_SUBSCRIBERS)?,
                channel_name_length: r.size(&MAX_CHANNEL_NAME_LENGTH)?,
                channels_per_request: r.size(&MAX_CHANNELS_PER_REQUEST)?,
                write_timeout: r.number(&WRITE_TIMEOUT, None)?,
                keep_alive_timeout: r.number(&KEEP_ALIVE_TIMEOUT, None)?,
                udp_bytes: r.size(&UDP_MAX_BYTES)?,
                listen_backlog: r.backlog(&LISTEN_BACKLOG)?,
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
        assert_eq!(c.redis_timeout, 5);
        assert_eq!(c.redis_max_pending, 10_000);
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

    /// The error for `value` of `key` (on the command line), or a panic.
    fn refusal(key: &str, value: &str) -> String {
        match config("", &[&format!("-{key}"), value]) {
            Ok(_) => panic!("-{key} {value} was accepted"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn every_number_outside_its_range_is_refused_naming_the_key() -> Result<(), ConfigError> {
        for key in KEYS {
            let Kind::Number { min, max, .. } = key.kind else {
                continue;
            };
            // The bounds themselves are accepted...
            for n in [min, max] {
                config("", &[&format!("-{}", key.name), &n.to_string()])?;
            }
            // ...and a number of too many digits for a u64 is "above the
            // maximum", not "not a number".
            let huge = format!("{}0", u64::MAX);
            let e = refusal(key.name, &huge);
            assert!(
                e.starts_with(&format!("{}: {huge} is above the maximum of ", key.name)),
                "{e}"
            );
            if max < u64::MAX {
                let e = refusal(key.name, &(max + 1).to_string());
                assert!(e.starts_with(&format!("{}: ", key.name)), "{e}");
                assert!(e.contains(&format!("maximum of {max}")), "{e}");
            }
            if min > 0 {
                let e = refusal(key.name, &(min - 1).to_string());
                assert!(e.contains(&format!("below the minimum of {min}")), "{e}");
            }
        }
        Ok(())
    }

    #[test]
    fn durations_that_would_overflow_a_deadline_are_refused() {
        for key in [
            &HEAD_TIMEOUT,
            &WRITE_TIMEOUT,
            &MAX_TIME,
            &PING_INTERVAL,
            &DRAIN_TIMEOUT,
            &MAX_MESSAGE_AGE,
            &REDIS_TIMEOUT,
        ] {
            for value in ["9223372036854775808", "18446744073709551615"] {
                assert_eq!(
                    refusal(key.name, value),
                    format!(
                        "{}: {value} is above the maximum of 315360000 seconds (10 years)",
                        key.name
                    )
                );
            }
        }
        let e = refusal("MaxTime.x", "9223372036854775808");
        assert!(e.starts_with("MaxTime.x: "), "{e}");
    }

    #[test]
    fn minimums_are_refused_not_applied_silently() {
        assert_eq!(
            refusal("MaxControllerLineBytes", "20"),
            "MaxControllerLineBytes: 20 is below the minimum of 64 bytes"
        );
        assert_eq!(
            refusal("HeadTimeout", "0"),
            "HeadTimeout: 0 is below the minimum of 1 second"
        );
        assert!(refusal("ListenBacklog", "0").starts_with("ListenBacklog: "));
        assert_eq!(
            refusal("PollBatchInterval.x", "60001"),
            "PollBatchInterval.x: 60001 is above the maximum of 60000 ms"
        );
    }

    #[test]
    fn poll_batch_interval_is_in_milliseconds_per_mode() -> Result<(), ConfigError> {
        let c = config("[x]\nPollBatchInterval 50\n", &[])?;
        assert_eq!(c.mode("x").poll_batch, Duration::from_millis(50));
        assert_eq!(c.mode("other").poll_batch, Duration::ZERO);
        Ok(())
    }

    #[test]
    fn private_channel_settings() -> Result<(), ConfigError> {
        // Without a secret nothing is private, whatever the default pattern.
        let c = config("", &[])?;
        assert!(c.subscriber_secrets.is_empty() && c.private_channels.is_empty());
        assert_eq!(c.token_cookie.as_deref(), Some("meteord_token"));
        let c = config(
            "SubscriberSecret new old\nPrivateChannels private-* user-*\n",
            &["-SubscriberTokenCookie", ""],
        )?;
        assert_eq!(c.subscriber_secrets, vec![b"new".to_vec(), b"old".to_vec()]);
        assert_eq!(
            c.private_channels,
            vec![b"private-*".to_vec(), b"user-*".to_vec()]
        );
        assert_eq!(c.token_cookie, None);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("shorter than 32 bytes"))
        );
        let c = config("SubscriberSecret s\nPrivateChannels a-*, b-*,c\n", &[])?;
        assert_eq!(
            c.private_channels,
            vec![b"a-*".to_vec(), b"b-*".to_vec(), b"c".to_vec()]
        );
        let c = config("SubscriberSecret s\n", &[])?;
        assert_eq!(c.private_channels, vec![b"private-*".to_vec()]);
        let e = refusal("SubscriberSecret", "a b c");
        assert!(
            e.starts_with("SubscriberSecret: at most two secrets"),
            "{e}"
        );
        let e = config("ControllerPassword pw\nSubscriberSecret new pw\n", &[]).err();
        assert!(e.is_some_and(
            |e| e.0.contains("must not be the same as ControllerPassword") && !e.0.contains("pw")
        ));
        let (action, raw) = parse_args(&args(&[
            "-token",
            "private-a,user-*",
            "60",
            "h1",
            "-SubscriberSecret",
            "x",
        ]))?;
        assert_eq!(
            action,
            Action::Token {
                channels: vec!["private-a".into(), "user-*".into()],
                seconds: 60,
                hostid: Some("h1".into()),
            }
        );
        assert_eq!(raw.get(&SUBSCRIBER_SECRET, None), Some("x"));
        for bad in [
            &["-token"][..],
            &["-token", "a"],
            &["-token", "a", "0"],
            &["-token", "a", "x"],
            &["-token", "", "5"],
            &["-token", "a", "5", "h!"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        let e = refusal("PrivateChannels", "user-*");
        assert!(e.contains("SubscriberSecret is empty"), "{e}");
        Ok(())
    }

    #[test]
    fn flags_and_texts_take_any_value_they_always_took() -> Result<(), ConfigError> {
        let c = config(
            "",
            &[
                "-Debug",
                "18446744073709551615",
                "-PingMessage",
                "99999999999999999999999",
            ],
        )?;
        assert!(c.debug);
        assert_eq!(c.global_mode.ping, b"99999999999999999999999");
        Ok(())
    }
}
