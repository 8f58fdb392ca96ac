//! The manual page meteord(8) in roff (`meteord -man`), made from the same
//! key table as `-help`, so that the page shipped in the Debian package
//! cannot drift from the keys the binary accepts.

use super::keys::{KEYS, Kind, Scope, range};
use std::fmt::Write as _;

/// Text as roff prints it: backslashes doubled as `\e`, hyphens as `\-`
/// (so they stay ASCII minus signs for copy and paste), and a line that
/// would start with a control character (`.` or `'`) guarded by `\&`.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    if text.starts_with(['.', '\'']) {
        out.push_str("\\&");
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    out
}

/// The fixed sections before the key list: name, synopsis, description
/// and the options that are not keys.
const HEAD: &str = r#".SH NAME
meteord \- Comet server: publishers push events into channels, browsers receive them live over HTTP
.SH SYNOPSIS
.B meteord
[\fB\-\fIKey\fR \fIvalue\fR | \fB\-\fIKey\fB.\fImode\fR \fIvalue\fR]... [\fB\-d\fR]
.br
.B meteord
[\fB\-\fIKey\fR \fIvalue\fR]... \fB\-token\fR \fIchannels\fR \fIseconds\fR [\fIhostid\fR]
.br
.B meteord
\fB\-v\fR | \fB\-help\fR | \fB\-man\fR
.SH DESCRIPTION
.B meteord
is a Comet server, a re\-creation of the classic Meteor server.
Publishers ("controllers") connect to the controller port and push events
into named channels with a line protocol
(\fBADDMESSAGE\fR \fIchannel\fR \fItext\fR);
browsers subscribe over plain HTTP on the subscriber port
(\fB/push/\fIhostid\fB/\fImode\fB/\fIchannel\fR...)
and receive those events as they happen, streamed, long\-polled,
as server\-sent events or over WebSocket, in the format the mode's
templates give.
.PP
Settings come from the command line, then the configuration file, then the
defaults below. The file has one \fIKey value\fR per line,
\fB#\fR comments, and \fB[\fImode\fB]\fR lines that start the settings of a
subscriber mode; keys marked "per mode" may be set there.
On the command line key names are case\-insensitive and may be abbreviated.
A number outside its key's range stops the server at start with a message
naming the key.
.SH OPTIONS
.TP
.B \-d
The same as \fB\-Debug 1\fR.
.TP
.B \-v
Print the version and exit.
.TP
.B \-help
Print every key with its description, default and range, and exit.
.TP
.B \-man
Print this manual page (roff) and exit.
.TP
\fB\-token\fR \fIchannels\fR \fIseconds\fR [\fIhostid\fR]
Print a subscriber token granting the channels (comma\-separated names or
patterns) for that many seconds, signed with \fBSubscriberSecret\fR, and
exit.
.SH KEYS
A \fIpath\fR value that is relative is taken from the configuration
file's directory when it comes from that file, and from the working
directory when it comes from the command line.
"#;

/// The fixed sections after the key list.
const TAIL: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re\-read the configuration file and drop the document cache.
.TP
.B SIGUSR1
Empty every channel's message cache.
.TP
.B SIGUSR2
Drop the document cache.
.TP
.BR SIGTERM ", " SIGINT
Stop accepting, send every subscriber and controller its shutdown message,
drain, and exit 0 (or 1 after \fBDrainTimeout\fR).
.SH ENVIRONMENT
.TP
.B NOTIFY_SOCKET
When set (by systemd), the server sends READY=1 once it listens and
STOPPING=1 when it starts shutting down.
.SH FILES
.TP
.I /etc/meteord.conf
The configuration file (\fBConfigFileLocation\fR).
.TP
.I /usr/share/meteord/public_html
Static files and meteor.js, as the Debian package configures
\fBSubscriberDocumentRoot\fR.
.TP
.I /var/lib/meteord/meteord.state
Cached events and the id counter, as the Debian package configures
\fBStateFile\fR.
.SH LOGGING
Without \fBDebug\fR and with a \fBSyslogFacility\fR other than \fBnone\fR,
the server logs to the syslog socket \fBSyslogSocket\fR and, unless
\fBForeground\fR is set, detaches into the background. When that socket
cannot be reached at start, it says so on standard error, logs there and
stays in the foreground.
"#;

/// The manual page meteord(8): fixed sections around one entry per key of
/// the table, each with its description, scope, default and range, as
/// `-help` prints them.
pub fn man() -> String {
    let mut out = format!(
        ".TH METEORD 8 \"\" \"meteord {}\" \"System Administration\"\n{HEAD}",
        env!("CARGO_PKG_VERSION")
    );
    for key in KEYS {
        let value = match key.kind {
            Kind::Flag => " 0|1",
            Kind::Path => " path",
            Kind::Text | Kind::Number { .. } => " value",
        };
        let scope = if key.scope == Scope::Mode {
            " (per mode)"
        } else {
            ""
        };
        let default = if key.default.is_empty() {
            "(empty)".to_owned()
        } else {
            format!("\\fB{}\\fR", roff(key.default))
        };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            ".TP\n.BI \\-{} \"{value}\"\n{}{scope}.\n.br\nDefault: {default}{}\n",
            key.name,
            roff(key.help),
            roff(&range(key.kind))
        );
    }
    out.push_str(TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes_backslashes_hyphens_and_leading_dots() {
        assert_eq!(roff(r"a\r\n-b"), r"a\er\en\-b");
        assert_eq!(roff(".x"), r"\&.x");
        assert_eq!(roff("'x"), r"\&'x");
    }

    #[test]
    fn every_key_has_an_entry() {
        let page = man();
        for key in KEYS {
            assert!(
                page.contains(&format!(".BI \\-{} ", key.name)),
                "{}",
                key.name
            );
        }
    }
}
