//! Templates with `~name~` placeholders, parsed once when the configuration
//! is loaded into literal and placeholder parts, so that rendering an event
//! never scans template text.

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
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Field(Placeholder),
}

/// A parsed template. `source` is kept so that equal templates of different
/// modes (or of a reloaded configuration) can share one channel buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: Vec<u8>,
    parts: Vec<Part>,
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
            } else if let Some(field) = Placeholder::from_name(name) {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(field));
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
        }
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Appends the rendered template to `out`, asking `value` for each placeholder.
    pub fn render<'a>(&self, out: &mut Vec<u8>, value: impl Fn(Placeholder) -> Value<'a>) {
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Field(field) => match value(*field) {
                    Value::Bytes(bytes) => out.extend_from_slice(bytes),
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
    }
}
