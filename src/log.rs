//! Logging to standard error: free-text lines, debug lines, and the
//! tab-separated records (`joinchannel`, `leavechannel`, `document`) that
//! operators parse.

use std::cell::Cell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the time at the start of each log line is written (`LogTimeFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2026-11-27 17:09:09`, UTC.
    Human,
    /// Unix seconds.
    Unix,
}

thread_local! {
    static DEBUG: Cell<bool> = const { Cell::new(false) };
    static FORMAT: Cell<TimeFormat> = const { Cell::new(TimeFormat::Human) };
}

/// Applies the logging settings of a (re)loaded configuration.
pub fn configure(debug: bool, format: TimeFormat) {
    DEBUG.with(|d| d.set(debug));
    FORMAT.with(|f| f.set(format));
}

/// Whether debug lines are written; callers skip building them otherwise.
pub fn debug_enabled() -> bool {
    DEBUG.with(Cell::get)
}

/// Writes one line, prefixed by the time, to standard error.
pub fn line(args: std::fmt::Arguments) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = match FORMAT.with(Cell::get) {
        TimeFormat::Unix => now.to_string(),
        TimeFormat::Human => human_time(now),
    };
    // A full or closed stderr must not take the server down: drop the line.
    let _ = writeln!(std::io::stderr().lock(), "{stamp} {args}");
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
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

/// Logs a line only when `Debug` is set; the arguments are not evaluated otherwise.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::line(format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::human_time;

    #[test]
    fn human_time_is_utc_calendar_time() {
        assert_eq!(human_time(0), "1970-01-01 00:00:00");
        assert_eq!(human_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(human_time(1_795_799_349), "2026-11-27 17:09:09");
    }
}
