//! Routing a subscriber request's target: a push URL with its channel
//! definitions, a disconnect request, or a static document.

use crate::channel::Backlog;
use crate::http::digits;

/// One entry of a push URL's channel list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDef {
    pub name: Vec<u8>,
    pub backlog: Backlog,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `<SubscriberDynamicPageAddress>/<hostid>/<mode>/<channeldefs>`;
    /// `channels` holds the valid, distinct entries and may be empty.
    Push {
        hostid: String,
        mode: String,
        channels: Vec<ChannelDef>,
    },
    /// `/disconnect/<hostid>`.
    Disconnect { hostid: String },
    /// A static file, as a normalised relative path (`a/b.html`, or `` for the root).
    Document { path: String },
    /// A document path with forbidden characters or `..`.
    BadDocument,
    /// A push URL with more channels than allowed, or a channel name too long.
    TooLarge,
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Parses `<name>`, `<name>.r<id>`, `<name>.b<n>` or `<name>.h[digits]`;
/// suffix letters may be upper-case. None for anything else.
pub fn parse_channel_def(entry: &[u8]) -> Option<ChannelDef> {
    let (name, suffix) = match memchr::memchr(b'.', entry) {
        Some(dot) => (&entry[..dot], Some(&entry[dot + 1..])),
        None => (entry, None),
    };
    let name_ok = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'%' | b'-'));
    if !name_ok {
        return None;
    }
    let backlog = match suffix {
        None => Backlog::None,
        Some([kind, rest @ ..]) => match kind.to_ascii_lowercase() {
            b'r' => Backlog::FromId(digits(rest)?),
            b'b' => Backlog::Last(digits(rest)?),
            b'h' if rest.is_empty() || digits(rest).is_some() => Backlog::All,
            _ => return None,
        },
        Some([]) => return None,
    };
    Some(ChannelDef {
        name: name.to_vec(),
        backlog,
    })
}

/// Limits that routing enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimits {
    pub channel_name_length: usize,
    pub channels_per_request: usize,
}

/// Routes a request target; `push_prefix` is `SubscriberDynamicPageAddress`
/// without a trailing slash.
pub fn route(target: &str, push_prefix: &str, limits: RouteLimits) -> Route {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if let Some(rest) = path
        .strip_prefix(push_prefix)
        .and_then(|r| r.strip_prefix('/'))
    {
        let mut parts = rest.split('/');
        let hostid = parts.next().unwrap_or_default();
        let mode = parts.next().unwrap_or_default();
        // Without a channel part it is not a push request at all, but a
        // document like any other path (classic wire contract).
        let has_channel_part = parts.clone().any(|entry| !entry.is_empty());
        if is_id(hostid) && is_id(mode) && has_channel_part {
            let mut channels: Vec<ChannelDef> = Vec::new();
            for entry in parts.filter(|e| !e.is_empty()) {
                let Some(def) = parse_channel_def(entry.as_bytes()) else {
                    continue;
                };
                if def.name.len() > limits.channel_name_length {
                    return Route::TooLarge;
                }
                if !channels.iter().any(|c| c.name == def.name) {
                    channels.push(def);
                }
                if channels.len() > limits.channels_per_request {
                    return Route::TooLarge;
                }
            }
            return Route::Push {
                hostid: hostid.to_owned(),
                mode: mode.to_owned(),
                channels,
            };
        }
    }
    if let Some(hostid) = path.strip_prefix("/disconnect/") {
        let hostid = hostid.trim_end_matches('/');
        if is_id(hostid) {
            return Route::Disconnect {
                hostid: hostid.to_owned(),
            };
        }
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-');
    if !path.bytes().all(allowed) || path.contains("..") {
        return Route::BadDocument;
    }
    let normal: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Route::Document {
        path: normal.join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RouteLimits = RouteLimits {
        channel_name_length: 16,
        channels_per_request: 3,
    };

    fn def(name: &str, backlog: Backlog) -> ChannelDef {
        ChannelDef {
            name: name.as_bytes().to_vec(),
            backlog,
        }
    }

    #[test]
    fn channel_definitions() {
        assert_eq!(
            parse_channel_def(b"a_%-1"),
            Some(def("a_%-1", Backlog::None))
        );
        assert_eq!(
            parse_channel_def(b"a.r5"),
            Some(def("a", Backlog::FromId(5)))
        );
        assert_eq!(parse_channel_def(b"a.B2"), Some(def("a", Backlog::Last(2))));
        assert_eq!(parse_channel_def(b"a.h"), Some(def("a", Backlog::All)));
        assert_eq!(parse_channel_def(b"a.H12"), Some(def("a", Backlog::All)));
        for bad in [
            &b"a.r"[..],
            b"a.b",
            b"a.x1",
            b"a.",
            b".r1",
            b"a b",
            b"a.r1x",
            b"a.hx",
        ] {
            assert_eq!(parse_channel_def(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("/push/h1/m/a/b.r3/a.b9/bad!/?nc=1", "/push", LIMITS),
            Route::Push {
                hostid: "h1".into(),
                mode: "m".into(),
                channels: vec![def("a", Backlog::None), def("b", Backlog::FromId(3))],
            }
        );
        assert_eq!(
            route("/push/h1/m/a/b/c/d", "/push", LIMITS),
            Route::TooLarge
        );
        assert_eq!(
            route("/disconnect/h1", "/push", LIMITS),
            Route::Disconnect {
                hostid: "h1".into()
            }
        );
        assert_eq!(
            route("//sub//x.js?q", "/push", LIMITS),
            Route::Document {
                path: "sub/x.js".into()
            }
        );
        assert_eq!(route("/a/../b", "/push", LIMITS), Route::BadDocument);
        assert_eq!(route("/a%20b", "/push", LIMITS), Route::BadDocument);
        assert_eq!(route("/push/h!/m/a", "/push", LIMITS), Route::BadDocument);
        // No channel part, no hostid: documents, not push or disconnect.
        for path in ["/push/h1/m", "/push/h1/m/", "/push/h1/m//"] {
            assert_eq!(
                route(path, "/push", LIMITS),
                Route::Document {
                    path: path
                        .trim_start_matches('/')
                        .trim_end_matches('/')
                        .replace("//", "/")
                },
                "{path}"
            );
        }
        assert_eq!(
            route("/disconnect/", "/push", LIMITS),
            Route::Document {
                path: "disconnect".into()
            }
        );
    }
}
