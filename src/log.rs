//! Logging to syslog (RFC 3164 lines over the local datagram socket) or to
//! standard error: free-text lines, debug lines, and the tab-separated
//! records (`joinchannel`, `leavechannel`, `document`) operators parse.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the time at the start of each log line is written (`LogTimeFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2026-11-27 17:09:09`, UTC.
    Human,
    /// Unix seconds.
    Unix,
}

/// Where log lines go.
enum Sink {
    Stderr,
    /// A datagram socket connected to syslog, and the facility number.
    Syslog(UnixDatagram, u8),
}

thread_local! {
    static DEBUG: Cell<bool> = const { Cell::new(false) };
    static FORMAT: Cell<TimeFormat> = const { Cell::new(TimeFormat::Human) };
    static SINK: RefCell<Sink> = const { RefCell::new(Sink::Stderr) };
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The last human time stamp and its second: a busy second's lines
    /// (a long-poll cycle logs two records) format it once.
    static STAMP: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Applies the logging settings of a (re)loaded configuration.
pub fn configure(debug: bool, format: TimeFormat) {
    DEBUG.with(|d| d.set(debug));
    FORMAT.with(|f| f.set(format));
}

/// The syslog facility number for a `SyslogFacility` name; None for an
/// unknown name.
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Sends log lines to the syslog socket at `path` from now on.
pub fn to_syslog(path: &Path, facility: u8) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    // A slow or stuck syslog daemon must not stall the loop: drop lines then.
    socket.set_nonblocking(true)?;
    SINK.with(|s| *s.borrow_mut() = Sink::Syslog(socket, facility));
    Ok(())
}

/// Sends log lines to standard error from now on.
pub fn to_stderr() {
    SINK.with(|s| *s.borrow_mut() = Sink::Stderr);
}

/// Whether debug lines are written; callers skip building them otherwise.
pub fn debug_enabled() -> bool {
    DEBUG.with(Cell::get)
}

/// Writes one line: to syslog with the given severity (6 info, 7 debug),
/// or to standard error prefixed by the time.
pub fn line(severity: u8, args: std::fmt::Arguments) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SINK.with(|sink| match &*sink.borrow() {
        Sink::Syslog(socket, facility) => {
            // RFC 3164: <PRI>Mmm dd hh:mm:ss TAG[pid]: message
            let stamp = human_time(now);
            let month = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ][stamp[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
            let day: u32 = stamp[8..10].parse().unwrap_or(1);
            let message = format!(
                "<{}>{month} {day:>2} {} meteord[{}]: {args}",
                u32::from(*facility) * 8 + u32::from(severity),
                &stamp[11..],
                std::process::id()
            );
            // A full socket or a missing daemon must not stop the server.
            let _ = socket.send(message.as_bytes());
        }
        Sink::Stderr => {
            PENDING.with(|pending| {
                let mut pending = pending.borrow_mut();
                // Writing into a Vec cannot fail.
                let _ = match FORMAT.with(Cell::get) {
                    TimeFormat::Unix => writeln!(pending, "{now} {args}"),
                    TimeFormat::Human => STAMP.with(|stamp| {
                        let mut stamp = stamp.borrow_mut();
                        if stamp.0 != now || stamp.1.is_empty() {
                            *stamp = (now, human_time(now));
                        }
                        writeln!(pending, "{} {args}", stamp.1)
                    }),
                };
                if pending.len() >= FLUSH_AT {
                    write_stderr(&mut pending);
                }
            });
        }
    });
}

/// Lines logged to standard error are gathered and written once per loop
/// turn (a long-poll cycle logs two records; a write each would double its
/// system calls), or once this much is waiting.
const FLUSH_AT: usize = 16 * 1024;

fn write_stderr(pending: &mut Vec<u8>) {
    // A full or closed stderr must not take the server down: drop the lines.
    let _ = std::io::stderr().lock().write_all(pending);
    pending.clear();
}

/// Writes the lines gathered for standard error; the loop calls it before
/// it sleeps, and `main` before the process exits.
pub fn flush() {
    PENDING.with(|pending| write_stderr(&mut pending.borrow_mut()));
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC) without a time crate.
fn human_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Logs a line: `info!("...", args)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line(6, format_args!($($arg)*)) };
}

/// Logs a line only when `Debug` is set; the arguments are not evaluated otherwise.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::line(7, format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_by_name() {
        assert_eq!(facility("daemon"), Some(3));
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("nope"), None);
    }

    #[test]
    fn human_time_is_utc_calendar_time() {
        assert_eq!(human_time(0), "1970-01-01 00:00:00");
        assert_eq!(human_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(human_time(1_795_799_349), "2026-11-27 17:09:09");
    }
}
