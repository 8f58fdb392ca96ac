//! Templates with `~name~` placeholders (optionally escaped, `~text:js~`),
//! parsed once when the configuration is loaded into literal and
//! placeholder parts, so that rendering an event never scans template text.

use crate::wsproto;
use std::io::Write;

/// A value a template can ask for. Which ones a template gets depends on
/// what it renders (a header, a message, a channel's info); any other
/// placeholder renders empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    Status,
    Server,
    ServerTime,
    ChannelInfo,
    Id,
    Channel,
    Text,
    Timestamp,
    Name,
    LastMsgId,
    MessageCount,
    SubscriberCount,
    /// `Access-Control-Allow-Origin` and `Vary` header lines when the
    /// request's `Origin` is allowed (`AllowedOrigins`), else nothing.
    Cors,
}

impl Placeholder {
    fn from_name(name: &[u8]) -> Option<Placeholder> {
        Some(match name {
            b"status" => Placeholder::Status,
            b"server" => Placeholder::Server,
            b"servertime" => Placeholder::ServerTime,
            b"channelinfo" => Placeholder::ChannelInfo,
            b"id" => Placeholder::Id,
            b"channel" => Placeholder::Channel,
            b"text" => Placeholder::Text,
            b"timestamp" => Placeholder::Timestamp,
            b"name" => Placeholder::Name,
            b"lastMsgID" => Placeholder::LastMsgId,
            b"messageCount" => Placeholder::MessageCount,
            b"subscriberCount" => Placeholder::SubscriberCount,
            b"cors" => Placeholder::Cors,
            _ => return None,
        })
    }
}

/// How a value is written into the template: `~name~` raw (the classic
/// behaviour), or `~name:js~`, `~name:html~`, `~name:json~`, `~name:sse~`
/// so that a published `</script>` or quote cannot break out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    Raw,
    /// Inside a JavaScript string literal (either quote) in a `<script>`.
    Js,
    /// HTML text or attribute value.
    Html,
    /// Inside a JSON string.
    Json,
    /// A server-sent event's data: each line break starts a new `data:` line.
    Sse,
}

impl Escape {
    fn from_name(name: &[u8]) -> Option<Escape> {
        Some(match name {
            b"js" => Escape::Js,
            b"html" => Escape::Html,
            b"json" => Escape::Json,
            b"sse" => Escape::Sse,
            _ => return None,
        })
    }

    /// Appends `bytes` to `out`, escaped.
    pub fn write(self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self == Escape::Raw {
            return out.extend_from_slice(bytes);
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            // U+2028 and U+2029 end lines in JavaScript and JSON embedded in it.
            let separator =
                bytes[i..].starts_with(b"\xe2\x80\xa8") || bytes[i..].starts_with(b"\xe2\x80\xa9");
            match self {
                Escape::Js | Escape::Json if separator => {
                    out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 3;
                    continue;
                }
                Escape::Js | Escape::Json => match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\'' if self == Escape::Js => out.extend_from_slice(b"\\'"),
                    b'<' | b'>' | b'&' | b'\'' | 0..0x20 | 0x7f => {
                        let _ = write!(out, "\\u{b:04x}");
                    }
                    _ => out.push(b),
                },
                Escape::Html => match b {
                    b'&' => out.extend_from_slice(b"&amp;"),
                    b'<' => out.extend_from_slice(b"&lt;"),
                    b'>' => out.extend_from_slice(b"&gt;"),
                    b'"' => out.extend_from_slice(b"&quot;"),
                    b'\'' => out.extend_from_slice(b"&#39;"),
                    _ => out.push(b),
                },
                Escape::Sse => match b {
                    b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                        out.extend_from_slice(b"\ndata: ");
                        i += 1;
                    }
                    b'\r' | b'\n' => out.extend_from_slice(b"\ndata: "),
                    _ => out.push(b),
                },
                Escape::Raw => out.push(b),
            }
            i += 1;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Field(Placeholder, Escape),
}

/// How each rendering is wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As rendered.
    None,
    /// One unmasked WebSocket text frame per rendering (its bytes that are
    /// not UTF-8 replaced by U+FFFD); an empty rendering is no frame.
    WebSocket,
}

/// A parsed template. `source` is kept so that equal templates of different
/// modes (or of a reloaded configuration) can share one channel buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: Vec<u8>,
    parts: Vec<Part>,
    framing: Framing,
}

/// `name` or `name:escape`; None for an unknown name or escape.
fn parse_field(name: &[u8]) -> Option<(Placeholder, Escape)> {
    match memchr::memchr(b':', name) {
        None => Some((Placeholder::from_name(name)?, Escape::Raw)),
        Some(colon) => Some((
            Placeholder::from_name(&name[..colon])?,
            Escape::from_name(&name[colon + 1..])?,
        )),
    }
}

/// A value to put in place of a placeholder.
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Number(u64),
    None,
}

impl Template {
    /// Parses `~name~` placeholders; `~~` is a literal `~`, an unknown name
    /// renders empty, and a `~` with no closing `~` is literal text.
    pub fn parse(source: &[u8]) -> Template {
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut rest = source;
        while let Some(open) = memchr::memchr(b'~', rest) {
            literal.extend_from_slice(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = memchr::memchr(b'~', after) else {
                literal.extend_from_slice(&rest[open..]);
                rest = &[];
                break;
            };
            let name = &after[..close];
            if name.is_empty() {
                literal.push(b'~');
            } else if let Some((field, escape)) = parse_field(name) {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(field, escape));
            }
            rest = &after[close + 1..];
        }
        literal.extend_from_slice(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Template {
            source: source.to_vec(),
            parts,
            framing: Framing::None,
        }
    }

    /// The same template with each rendering wrapped as `framing` says.
    pub fn framed(self, framing: Framing) -> Template {
        Template { framing, ..self }
    }

    /// Whether two templates render the same bytes (same text, same framing):
    /// then they can share one channel buffer.
    pub fn same_output(&self, other: &Template) -> bool {
        self.framing == other.framing && self.source == other.source
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Appends the rendered template to `out`, asking `value` for each
    /// placeholder; a framed template renders into a scratch buffer first,
    /// since a frame's header holds its payload's length.
    pub fn render<'a>(&self, out: &mut Vec<u8>, value: impl Fn(Placeholder) -> Value<'a>) {
        match self.framing {
            Framing::None => self.render_parts(out, value),
            Framing::WebSocket => {
                let mut payload = Vec::new();
                self.render_parts(&mut payload, value);
                if !payload.is_empty() {
                    wsproto::text_frame(out, &payload);
                }
            }
        }
    }

    fn render_parts<'a>(&self, out: &mut Vec<u8>, value: impl Fn(Placeholder) -> Value<'a>) {
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Field(field, escape) => match value(*field) {
                    Value::Bytes(bytes) => escape.write(out, bytes),
                    // Writing into a Vec cannot fail.
                    Value::Number(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::None => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> String {
        let mut out = Vec::new();
        Template::parse(template.as_bytes()).render(&mut out, |p| match p {
            Placeholder::Id => Value::Number(42),
            Placeholder::Text => Value::Bytes(b"hi ~there~"),
            _ => Value::None,
        });
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn placeholders_tildes_and_unknown_names() {
        assert_eq!(render("<~id~:~text~>"), "<42:hi ~there~>");
        assert_eq!(render("a~~b"), "a~b");
        assert_eq!(render("~nope~x~status~"), "x");
        assert_eq!(render("open ~ended"), "open ~ended");
        assert_eq!(render("~~id~~"), "~id~");
        assert_eq!(render(""), "");
        assert_eq!(render("~text:nope~|~id:js~"), "|42");
    }

    fn escaped(escape: Escape, input: &str) -> String {
        let mut out = Vec::new();
        escape.write(&mut out, input.as_bytes());
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn escapes_keep_published_text_inside_its_string() {
        let nasty = "</script>\"'\\\n\u{2028}&";
        assert_eq!(
            escaped(Escape::Js, nasty),
            "\\u003c/script\\u003e\\\"\\'\\\\\\n\\u2028\\u0026"
        );
        assert_eq!(
            escaped(Escape::Json, nasty),
            "\\u003c/script\\u003e\\\"\\u0027\\\\\\n\\u2028\\u0026"
        );
        assert_eq!(
            escaped(Escape::Html, nasty),
            "&lt;/script&gt;&quot;&#39;\\\n\u{2028}&amp;"
        );
        assert_eq!(
            escaped(Escape::Sse, "a\r\nb\nc\rd"),
            "a\ndata: b\ndata: c\ndata: d"
        );
        assert_eq!(escaped(Escape::Raw, nasty), nasty);
    }
}
