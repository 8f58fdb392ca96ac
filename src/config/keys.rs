//! The table of configuration keys. Each key is a constant (name, default,
//! scope, kind of value with its accepted range, description), so code that
//! reads a setting names a constant the compiler checks; `KEYS` lists them
//! all for `-help`, the configuration file and the command line.
//!
//! Numbers have a range, shown by `-help` and enforced at load: a value
//! outside it stops the server at start with a message naming the key,
//! rather than being silently raised or overflowing later. Durations are at
//! most [`MAX_SECONDS`] (ten years), so that every deadline the server
//! computes from them fits in an `Instant`; counts and sizes that end in an
//! allocation or in arithmetic have a maximum that keeps both safe.

use std::fmt::Write as _;

/// Where a key may be set: globally only, or also per subscriber mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Mode,
}

/// What a key's value is, so that the reader knows how to check it and
/// `-help` how to describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text; escapes (`\r \n \t \s \0`) are expanded.
    Text,
    /// A file or directory, as text. Relative in the configuration file:
    /// from the file's directory; on the command line: from the working
    /// directory.
    Path,
    /// A switch: 0 is off, any other whole number on.
    Flag,
    /// A whole number from `min` to `max` (both included), counting `unit`.
    Number { min: u64, max: u64, unit: Unit },
}

/// What a number counts; named in `-help` and in range errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Milliseconds,
    Bytes,
    /// Connections, lines, messages, a port: no word after the number.
    Plain,
}

impl Unit {
    /// `n` followed by its unit, as -help and error messages write it.
    pub fn describe(self, n: u64) -> String {
        match self {
            Unit::Seconds if n == MAX_SECONDS => format!("{n} seconds (10 years)"),
            Unit::Seconds if n == 1 => "1 second".to_owned(),
            Unit::Seconds => format!("{n} seconds"),
            Unit::Milliseconds => format!("{n} ms"),
            Unit::Bytes if n == 1 => "1 byte".to_owned(),
            Unit::Bytes => format!("{n} bytes"),
            Unit::Plain => n.to_string(),
        }
    }
}

/// One configuration key: its canonical name (as the file and `-help` write
/// it), default (as the file writes it, escapes included), scope, kind of
/// value and description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub scope: Scope,
    pub kind: Kind,
    pub help: &'static str,
}

/// The longest duration any key accepts: ten years (of 365 days), in
/// seconds. Long enough to mean "forever" to an operator, short enough that
/// `Instant::now()` plus it cannot overflow.
pub const MAX_SECONDS: u64 = 315_360_000;

/// The most connections of a kind: Linux's own ceiling on a process's open
/// descriptors (`fs.nr_open` cannot exceed 2^30), so any larger value is
/// meaningless, and sums with it cannot overflow.
pub const MAX_CONNECTIONS: u64 = 1 << 30;

/// The most header lines: room for this many is allocated for each request
/// head parsed, so it must stay small.
pub const HEADER_LINES_MAX: u64 = 10_000;

/// The largest UDP payload there can be (IPv4 and IPv6 alike are below it).
pub const MAX_UDP_BYTES: u64 = 65_535;

/// The most messages a channel keeps: with RedisAddress this count goes to
/// Redis (XADD MAXLEN, XREVRANGE COUNT), which reads it as a signed 64-bit
/// number.
pub const MAX_REDIS_COUNT: u64 = i64::MAX as u64;

/// `listen(2)` takes an `int`.
pub const MAX_LISTEN_BACKLOG: u64 = i32::MAX as u64;

/// A duration in seconds of at least `min`.
const fn seconds(min: u64) -> Kind {
    Kind::Number {
        min,
        max: MAX_SECONDS,
        unit: Unit::Seconds,
    }
}

/// A size in bytes.
const fn bytes(min: u64, max: u64) -> Kind {
    Kind::Number {
        min,
        max,
        unit: Unit::Bytes,
    }
}

/// A count of connections, lines or messages.
const fn count(min: u64, max: u64) -> Kind {
    Kind::Number {
        min,
        max,
        unit: Unit::Plain,
    }
}

/// A TCP or UDP port; 0 lets the system choose (or turns UDP off).
const PORT: Kind = count(0, u16::MAX as u64);

/// The default `HeaderTemplate`, too long for its table entry.
const DEFAULT_HEADER: &str = "HTTP/1.1 ~status~\\r\\nServer: ~server~\\r\\nContent-Type: text/html; charset=utf-8\\r\\nPragma: no-cache\\r\\nCache-Control: no-cache, no-store, must-revalidate\\r\\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\\r\\n\\r\\n";

/// Defines each key as a documented constant and `KEYS` as the list of
/// them all, from one list, so that no key can be defined and not listed.
macro_rules! keys {
    ($($id:ident = Key {
        name: $name:literal,
        default: $default:expr,
        scope: $scope:expr,
        kind: $kind:expr,
        help: $help:literal $(,)?
    };)+) => {
        $(
            #[doc = concat!("`", $name, "`: ", $help, ".")]
            pub const $id: Key = Key {
                name: $name,
                default: $default,
                scope: $scope,
                kind: $kind,
                help: $help,
            };
        )+

        /// Every key the server knows, in `-help` order: what the
        /// configuration file and the command line may set.
        pub const KEYS: &[Key] = &[$($id),+];
    };
}

keys! {
    ALLOWED_ORIGINS = Key {
        name: "AllowedOrigins",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Origins (space-separated, or *) whose pages may read subscriber replies (see ~cors~) and use the controller port over HTTP (other origins: 403)",
    };
    CHANNEL_INFO_TEMPLATE = Key {
        name: "ChannelInfoTemplate",
        default: "<script>ch(\"~name~\", ~lastMsgID~);</script>\\r\\n",
        scope: Scope::Mode,
        kind: Kind::Text,
        help: "Template for each requested channel, joined into the header's ~channelinfo~ (~name~, ~lastMsgID~, ~messageCount~, ~subscriberCount~)",
    };
    CONFIG_FILE_LOCATION = Key {
        name: "ConfigFileLocation",
        default: "/etc/meteord.conf",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Configuration file to read (command line only)",
    };
    CONTROLLER_IDLE_TIMEOUT = Key {
        name: "ControllerIdleTimeout",
        default: "600",
        scope: Scope::Global,
        kind: seconds(0),
        help: "Seconds a controller that has completed a command may stay silent before it is closed (0: never)",
    };
    CONTROLLER_COMMAND_TIMEOUT = Key {
        name: "ControllerCommandTimeout",
        default: "30",
        scope: Scope::Global,
        kind: seconds(1),
        help: "Seconds a controller has to complete a command or HTTP request once it started one, and to complete its first command (or AUTH) after connecting; then ERR Timeout (408 over HTTP) and close",
    };
    CONTROLLER_IP = Key {
        name: "ControllerIP",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Address the controller port listens on (empty: 127.0.0.1)",
    };
    CONTROLLER_HOSTS = Key {
        name: "ControllerHosts",
        default: "localhost 127.0.0.1 [::1]",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Host names (space-separated, any port; * = any) that HTTP requests on the controller port may name in Host, besides ControllerIP; others get 421",
    };
    CONTROLLER_PORT = Key {
        name: "ControllerPort",
        default: "4671",
        scope: Scope::Global,
        kind: PORT,
        help: "Port publishers connect to",
    };
    CONTROLLER_PASSWORD = Key {
        name: "ControllerPassword",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "When set, controllers must send AUTH <password> first (empty: no password)",
    };
    CONTROLLER_SHUTDOWN_MSG = Key {
        name: "ControllerShutdownMsg",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Sent to each controller when the server shuts down",
    };
    DEBUG = Key {
        name: "Debug",
        default: "0",
        scope: Scope::Global,
        kind: Kind::Flag,
        help: "1: log debug lines to standard error and stay in the foreground",
    };
    DIRECTORY_INDEX = Key {
        name: "DirectoryIndex",
        default: "index.html",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "File served for a directory of the document root",
    };
    DOCUMENT_CACHE_BYTES = Key {
        name: "DocumentCacheBytes",
        default: "16777216",
        scope: Scope::Global,
        kind: bytes(0, u64::MAX),
        help: "Bytes of static files kept in memory; a file over an eighth of this is streamed from disk (0: cache nothing)",
    };
    DRAIN_TIMEOUT = Key {
        name: "DrainTimeout",
        default: "120",
        scope: Scope::Global,
        kind: seconds(0),
        help: "Seconds a shutdown waits for unsent data before exiting with status 1",
    };
    FOLLOW_SYMLINKS = Key {
        name: "FollowSymlinks",
        default: "0",
        scope: Scope::Global,
        kind: Kind::Flag,
        help: "1: serve links in SubscriberDocumentRoot wherever they lead; 0: only what lies inside the root",
    };
    FOREGROUND = Key {
        name: "Foreground",
        default: "0",
        scope: Scope::Global,
        kind: Kind::Flag,
        help: "1: never detach, even when logging to syslog (for systemd and other supervisors)",
    };
    HEADER_TEMPLATE = Key {
        name: "HeaderTemplate",
        default: DEFAULT_HEADER,
        scope: Scope::Mode,
        kind: Kind::Text,
        help: "HTTP response head and page start for subscribers (~status~, ~server~, ~servertime~, ~channelinfo~)",
    };
    HEAD_TIMEOUT = Key {
        name: "HeadTimeout",
        default: "10",
        scope: Scope::Global,
        kind: seconds(1),
        help: "Seconds a client may take to send a complete request head (then 408)",
    };
    KEEP_ALIVE = Key {
        name: "KeepAlive",
        default: "0",
        scope: Scope::Mode,
        kind: Kind::Flag,
        help: "1: a reply that ends by itself (Persist 0, or MaxMessages) to an HTTP/1.1 request without Connection: close carries Content-Length and the connection waits for the next request; such replies get no pings",
    };
    KEEP_ALIVE_TIMEOUT = Key {
        name: "KeepAliveTimeout",
        default: "60",
        scope: Scope::Global,
        kind: seconds(0),
        help: "Seconds a kept-alive subscriber connection may wait with no request outstanding before it is closed (0: never keep a connection alive); HeadTimeout counts from the first byte of its next request",
    };
    LISTEN_BACKLOG = Key {
        name: "ListenBacklog",
        default: "4096",
        scope: Scope::Global,
        kind: count(1, MAX_LISTEN_BACKLOG),
        help: "Accept queue of each listening port (the kernel caps it further at net.core.somaxconn)",
    };
    LOG_TIME_FORMAT = Key {
        name: "LogTimeFormat",
        default: "human",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Time stamp of log lines: human or unix",
    };
    MAX_CACHED_BYTES = Key {
        name: "MaxCachedBytes",
        default: "67108864",
        scope: Scope::Global,
        kind: bytes(0, u64::MAX),
        help: "Bytes all channels may hold for events (texts, rendered copies, 64 bytes per message and 16 per copy); the oldest events across channels are evicted first (0: no limit)",
    };
    MAX_CHANNELS = Key {
        name: "MaxChannels",
        default: "100000",
        scope: Scope::Global,
        kind: count(0, MAX_CONNECTIONS),
        help: "Most channels at once; a publish that would create one more gets ERR (HTTP 507) (0: no limit)",
    };
    MAX_CHANNEL_NAME_LENGTH = Key {
        name: "MaxChannelNameLength",
        default: "128",
        scope: Scope::Global,
        kind: bytes(1, u64::MAX),
        help: "Longest channel name a subscriber or publisher may use",
    };
    MAX_CHANNELS_PER_REQUEST = Key {
        name: "MaxChannelsPerRequest",
        default: "32",
        scope: Scope::Global,
        kind: count(1, u64::MAX),
        help: "Most channels one subscriber request may name (more: 400)",
    };
    MAX_CONTROLLER_LINE_BYTES = Key {
        name: "MaxControllerLineBytes",
        default: "1048576",
        scope: Scope::Global,
        kind: bytes(64, u64::MAX),
        help: "Longest controller command line (then ERR Line too long and close)",
    };
    MAX_CONTROLLERS = Key {
        name: "MaxControllers",
        default: "256",
        scope: Scope::Global,
        kind: count(1, MAX_CONNECTIONS),
        help: "Most controller connections at once (then ERR Too many connections)",
    };
    MAX_HEADER_LINES = Key {
        name: "MaxHeaderLines",
        default: "64",
        scope: Scope::Global,
        kind: count(1, HEADER_LINES_MAX),
        help: "Most header lines in a request head (then 431); room for this many is set aside for each request head parsed",
    };
    MAX_MESSAGE_AGE = Key {
        name: "MaxMessageAge",
        default: "7200",
        scope: Scope::Global,
        kind: seconds(0),
        help: "Seconds a message stays in its channel's cache (0: no limit)",
    };
    MAX_MESSAGES = Key {
        name: "MaxMessages",
        default: "0",
        scope: Scope::Mode,
        kind: count(0, u64::MAX),
        help: "Close a subscriber after this many messages, or after the backlog it asked for if that is more (0: no limit)",
    };
    MAX_MESSAGES_PER_CHANNEL = Key {
        name: "MaxMessagesPerChannel",
        default: "250",
        scope: Scope::Global,
        kind: count(0, MAX_REDIS_COUNT),
        help: "Messages kept per channel, oldest dropped first (with RedisAddress, the shared stream keeps at least 1)",
    };
    MAX_REQUEST_HEAD_BYTES = Key {
        name: "MaxRequestHeadBytes",
        default: "8192",
        scope: Scope::Global,
        kind: bytes(64, u64::MAX),
        help: "Largest request head a subscriber may send (then 431)",
    };
    MAX_SUBSCRIBERS = Key {
        name: "MaxSubscribers",
        default: "0",
        scope: Scope::Global,
        kind: count(0, MAX_CONNECTIONS),
        help: "Most subscriber-port connections at once (then 503; 0: every descriptor not kept for MaxControllers); the maximum is Linux's own ceiling on descriptors",
    };
    MAX_TIME = Key {
        name: "MaxTime",
        default: "0",
        scope: Scope::Mode,
        kind: seconds(0),
        help: "Close a subscriber after this many seconds (0: no limit)",
    };
    MESSAGE_TEMPLATE = Key {
        name: "MessageTemplate",
        default: "<script>p(~id~,\"~channel~\",\"~text~\");</script>\\r\\n",
        scope: Scope::Mode,
        kind: Kind::Text,
        help: "Template for each message (~id~, ~channel~, ~text~, ~timestamp~)",
    };
    PID_FILE = Key {
        name: "PidFile",
        default: "",
        scope: Scope::Global,
        kind: Kind::Path,
        help: "Pid file written at start and removed at exit (empty: /var/run/meteord.pid when detaching, none otherwise)",
    };
    PERSIST = Key {
        name: "Persist",
        default: "0",
        scope: Scope::Mode,
        kind: Kind::Flag,
        help: "1: keep the connection open for new messages after the backlog",
    };
    PING_INTERVAL = Key {
        name: "PingInterval",
        default: "5",
        scope: Scope::Mode,
        kind: seconds(0),
        help: "Seconds between pings to persistent subscribers (0, 1, 2: off)",
    };
    PING_MESSAGE = Key {
        name: "PingMessage",
        default: "<script>p(-1,\"\");</script>\\r\\n",
        scope: Scope::Mode,
        kind: Kind::Text,
        help: "Sent to persistent subscribers every PingInterval",
    };
    POLL_BATCH_INTERVAL = Key {
        name: "PollBatchInterval",
        default: "0",
        scope: Scope::Mode,
        kind: Kind::Number {
            min: 0,
            max: 60_000,
            unit: Unit::Milliseconds,
        },
        help: "Least milliseconds between two replies on one kept-alive connection (KeepAlive, Persist 1): a poll that comes sooner holds its events back until then and answers with all of them; an event after a quiet interval goes out at once (0: off)",
    };
    PRIVATE_CHANNELS = Key {
        name: "PrivateChannels",
        default: "private-*",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Channel name patterns (separated by spaces or commas, * = any run of characters) that only a subscriber with a token granting them may read; in force only when SubscriberSecret is set",
    };
    REDIS_ADDRESS = Key {
        name: "RedisAddress",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "[password@]host:port[/db] of the Redis that several nodes share channels through (empty: standalone)",
    };
    REDIS_MAX_PENDING = Key {
        name: "RedisMaxPending",
        default: "10000",
        scope: Scope::Global,
        kind: count(1, MAX_CONNECTIONS),
        help: "Publishes that may wait for Redis's answer at once (with RedisAddress); more get ERR Backend unavailable at once",
    };
    REDIS_TIMEOUT = Key {
        name: "RedisTimeout",
        default: "5",
        scope: Scope::Global,
        kind: seconds(1),
        help: "Seconds Redis may leave a reply due with nothing received before the node treats it as down: waiting publishes get ERR Backend unavailable, the node reconnects and back-fills",
    };
    STATE_FILE = Key {
        name: "StateFile",
        default: "",
        scope: Scope::Global,
        kind: Kind::Path,
        help: "Append-only file that keeps cached events and the id counter across restarts (empty: off; not used with RedisAddress)",
    };
    STATE_SYNC = Key {
        name: "StateSync",
        default: "everysec",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "When the StateFile is synced to disk: always (before OK), everysec (about once a second) or no (left to the system)",
    };
    SUBSCRIBER_DOCUMENT_ROOT = Key {
        name: "SubscriberDocumentRoot",
        default: "/usr/local/meteor/public_html",
        scope: Scope::Global,
        kind: Kind::Path,
        help: "Directory of static files (empty or /: none)",
    };
    SUBSCRIBER_DYNAMIC_PAGE_ADDRESS = Key {
        name: "SubscriberDynamicPageAddress",
        default: "/push",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Path prefix of subscriber requests",
    };
    SUBSCRIBER_IP = Key {
        name: "SubscriberIP",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Address the subscriber port listens on (empty: all)",
    };
    SUBSCRIBER_PORT = Key {
        name: "SubscriberPort",
        default: "4670",
        scope: Scope::Global,
        kind: PORT,
        help: "Port browsers connect to",
    };
    SUBSCRIBER_SECRET = Key {
        name: "SubscriberSecret",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Secret (or two, space-separated: the new one first, for rotation) that subscriber tokens (HS256 JWT) are signed with; must differ from ControllerPassword (empty: no private channels)",
    };
    SUBSCRIBER_SHUTDOWN_MSG = Key {
        name: "SubscriberShutdownMsg",
        default: "<script>eof();</script>\\r\\n",
        scope: Scope::Mode,
        kind: Kind::Text,
        help: "Sent to a persistent subscriber the server closes on its own initiative",
    };
    SUBSCRIBER_TOKEN_COOKIE = Key {
        name: "SubscriberTokenCookie",
        default: "meteord_token",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Name of the cookie a subscriber token may travel in, after the Authorization header and the token= query parameter (empty: cookies are not read)",
    };
    SYSLOG_SOCKET = Key {
        name: "SyslogSocket",
        default: "/dev/log",
        scope: Scope::Global,
        kind: Kind::Path,
        help: "Local datagram socket of the syslog daemon",
    };
    SYSLOG_FACILITY = Key {
        name: "SyslogFacility",
        default: "daemon",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Syslog facility (none: log to standard error)",
    };
    TRUSTED_PROXIES = Key {
        name: "TrustedProxies",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Addresses and CIDR ranges (IPv4 or IPv6, separated by spaces or commas) of reverse proxies whose X-Forwarded-For (first) or Forwarded header names the client that logs and records show; from other peers these headers are ignored (empty: trust no one)",
    };
    UDP_IP = Key {
        name: "UDPIP",
        default: "",
        scope: Scope::Global,
        kind: Kind::Text,
        help: "Address the UDP port listens on (empty: 127.0.0.1)",
    };
    UDP_ALLOW_UNAUTHENTICATED = Key {
        name: "UDPAllowUnauthenticated",
        default: "0",
        scope: Scope::Global,
        kind: Kind::Flag,
        help: "1: allow UDP publishing even though ControllerPassword is set",
    };
    UDP_MAX_BYTES = Key {
        name: "UDPMaxBytes",
        default: "8192",
        scope: Scope::Global,
        kind: bytes(16, MAX_UDP_BYTES),
        help: "Largest UDP datagram accepted (larger ones are dropped and logged); no datagram is larger than 65535 bytes",
    };
    UDP_PORT = Key {
        name: "UDPPort",
        default: "0",
        scope: Scope::Global,
        kind: PORT,
        help: "Port for ADDMESSAGE datagrams (0: off)",
    };
    WEBSOCKET_ONLY = Key {
        name: "WebSocketOnly",
        default: "0",
        scope: Scope::Mode,
        kind: Kind::Flag,
        help: "1: answer only WebSocket handshakes (any other request gets 400)",
    };
    WRITE_TIMEOUT = Key {
        name: "WriteTimeout",
        default: "120",
        scope: Scope::Global,
        kind: seconds(1),
        help: "Seconds a write may make no progress before the subscriber is dropped",
    };
}

/// Finds a key by case-insensitive exact name (the configuration file).
pub(super) fn find_exact(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

/// The `-help` text: every key with its description, default and range.
pub fn help() -> String {
    let mut out = String::from(
        "meteord: a Comet server. Usage: meteord [-Key value | -Key.mode value]... [-d] [-v] [-help] [-man]\n\
         Keys are case-insensitive and may be abbreviated; -d is -Debug 1; -v prints the version;\n\
         -man prints the manual page meteord(8) (roff, for man -l -).\n\
         meteord [-Key value]... -token <channels> <seconds> [<hostid>] prints a subscriber token\n\
         granting the channels (comma-separated names or patterns) for that many seconds,\n\
         signed with SubscriberSecret.\n\
         A number outside its key's range stops the server at start with a message naming the key;\n\
         durations are at most 315360000 seconds (10 years).\n\
         Relative paths in the configuration file are taken from the file's directory,\n\
         relative paths on the command line from the working directory.\n\n",
    );
    for key in KEYS {
        let scope = if key.scope == Scope::Mode {
            " (per mode)"
        } else {
            ""
        };
        let default = if key.default.is_empty() {
            "(empty)"
        } else {
            key.default
        };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "  -{:<30} {}{scope}\n  {:<31} default: {default}{}\n",
            key.name,
            key.help,
            "",
            range(key.kind)
        );
    }
    out
}

/// How -help (and the manual page) states a number's range: empty when any
/// number will do.
pub(super) fn range(kind: Kind) -> String {
    match kind {
        Kind::Number {
            min: 0,
            max: u64::MAX,
            ..
        } => String::new(),
        Kind::Number {
            min,
            max: u64::MAX,
            unit,
        } => format!("; at least {}", unit.describe(min)),
        Kind::Number { min, max, unit } => format!("; from {min} to {}", unit.describe(max)),
        Kind::Text | Kind::Path | Kind::Flag => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_ignoring_case() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{} twice", a.name);
            }
        }
    }

    #[test]
    fn numeric_defaults_are_in_range() {
        for key in KEYS {
            let Kind::Number { min, max, .. } = key.kind else {
                continue;
            };
            let n: Result<u64, _> = key.default.parse();
            assert!(
                n.as_ref().is_ok_and(|n| (min..=max).contains(n)),
                "{}: default {} outside {min}..={max}",
                key.name,
                key.default
            );
        }
    }

    #[test]
    fn help_states_ranges() {
        let help = help();
        assert!(help.contains("default: 10; from 1 to 315360000 seconds (10 years)"));
        assert!(help.contains("default: 1048576; at least 64 bytes"));
        assert!(help.contains("default: 4670; from 0 to 65535\n"));
    }
}
