//! HTTP request heads on both ports: finding the end of a head, parsing it
//! with `httparse`, the errors a head can earn, and the CORS lines.

use crate::proxies::Forwarding;

/// Why a request head is refused (wire contract B2); each maps to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    BadRequest,
    HeadTooLarge,
    TooManyHeaders,
    Timeout,
    Unavailable,
    LengthRequired,
}

impl HttpError {
    /// The status line text for `~status~`.
    pub fn status(self) -> &'static str {
        match self {
            HttpError::BadRequest => "400 Bad Request",
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => {
                "431 Request Header Fields Too Large"
            }
            HttpError::Timeout => "408 Request Timeout",
            HttpError::Unavailable => "503 Service Unavailable",
            HttpError::LengthRequired => "411 Length Required",
        }
    }
}

/// The parts of a request head the server uses.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    pub user_agent: String,
    /// `Origin`, for the `~cors~` placeholder.
    pub origin: Option<String>,
    /// `Last-Event-ID` (sent by a reconnecting EventSource): resume every
    /// requested channel after this id.
    pub last_event_id: Option<u64>,
    /// The WebSocket handshake headers, as sent.
    pub upgrade: UpgradeHeaders,
    /// `Authorization` (the first one), where a subscriber token may travel
    /// as `Bearer <token>`.
    pub authorization: Option<String>,
    /// Every `Cookie` header, where a subscriber token may travel too.
    pub cookies: Vec<String>,
    /// `X-Forwarded-For` and `Forwarded`, believed from trusted proxies only.
    pub forwarding: Forwarding,
    /// HTTP/1.1 without `Connection: close`: the client may send its next
    /// request on this connection (RFC 9112 9.3).
    pub keep_alive: bool,
}

/// The headers of a WebSocket opening handshake (RFC 6455 4.1), every
/// value as sent; `subscriber::websocket` checks them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpgradeHeaders {
    /// Whether the request line says HTTP/1.1 (a handshake needs it).
    pub http11: bool,
    pub upgrade: Vec<String>,
    pub connection: Vec<String>,
    pub key: Vec<String>,
    pub version: Vec<String>,
}

/// Where the head ends: just past the first empty line (CRLF or bare LF).
/// One empty line before the request line is skipped, as RFC 9112 (2.2)
/// asks of servers; a second one ends an (empty, refused) head.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let start = match buf {
        [b'\r', b'\n', ..] => 2,
        [b'\n', ..] => 1,
        _ => 0,
    };
    let rest = &buf[start..];
    let empty_line = |at: &[u8]| match at {
        [b'\n', ..] => Some(1),
        [b'\r', b'\n', ..] => Some(2),
        _ => None,
    };
    if let Some(len) = empty_line(rest) {
        return Some(start + len);
    }
    memchr::memchr_iter(b'\n', rest).find_map(|i| Some(start + i + 1 + empty_line(&rest[i + 1..])?))
}

/// A parsed request head, headers kept by name.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (the first one when repeated); None when absent or
    /// empty.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.values(name).next().filter(|v| !v.is_empty())
    }

    /// Every value of a header, in order, empty ones included.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` header lists `option` (a comma-separated
    /// list, without ASCII case: RFC 9110 7.6.1), e.g. `close`.
    pub fn connection_has(&self, option: &str) -> bool {
        self.values("Connection")
            .flat_map(|v| v.split(','))
            .any(|token| token.trim_matches([' ', '\t']).eq_ignore_ascii_case(option))
    }

    /// The forwarding headers, every line in order (see `proxies`).
    pub fn forwarding(&self) -> Forwarding {
        let all = |name| self.values(name).map(str::to_owned).collect();
        Forwarding {
            x_forwarded_for: all("X-Forwarded-For"),
            forwarded: all("Forwarded"),
        }
    }

    /// The value of a header that may appear at most once (RFC 9110 5.3:
    /// `Host`, `Content-Length`, ...): None when absent (an empty value is
    /// `Some("")`), an error when it appears more than once, even with the
    /// same value.
    pub fn single(&self, name: &str) -> Result<Option<&str>, HttpError> {
        let mut values = self.values(name);
        let first = values.next();
        match values.next() {
            Some(_) => Err(HttpError::BadRequest),
            None => Ok(first),
        }
    }
}

/// A `Content-Length` value: `1*DIGIT` only (RFC 9112 6.2; no sign, no
/// list, no inner space; the surrounding whitespace is already gone).
/// Values too large for a u64 saturate: they are refused as too large, not
/// as malformed.
pub fn content_length(value: &str) -> Option<u64> {
    digits(value.as_bytes())
}

/// The host of a `Host` value (`uri-host [":" port]`, RFC 9112 3.2 and
/// RFC 3986 3.2.2), lower-cased, without the port and a final dot; None
/// when the value is not of that form (a server answers that with 400).
pub fn host_name(value: &str) -> Option<String> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let ip_literal = !inside.is_empty()
                && inside
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            if !ip_literal {
                return None;
            }
            (&value[..inside.len() + 2], after)
        }
        None => {
            let end = value.find(':').unwrap_or(value.len());
            (&value[..end], &value[end..])
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
    let host_ok = !host.is_empty() && (host.starts_with('[') || host.bytes().all(reg_name));
    if !port_ok || !host_ok {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// Whether `host` (from `host_name`) is one of `allowed` (`*`: any). Entries
/// are compared without case; an IPv6 address may be listed with or without
/// its brackets.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.strip_suffix('.').unwrap_or(entry);
        entry == "*"
            || entry.eq_ignore_ascii_case(host)
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| entry.eq_ignore_ascii_case(h))
    })
}

/// Whether `AllowedOrigins` (`allowed`) lists `origin` or is `*`. Origins
/// are compared without ASCII case (scheme and host are case-insensitive).
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Parses a complete head (as delimited by `head_end`) with `httparse`,
/// allowing at most `max_headers` header lines.
pub fn parse(head: &[u8], max_headers: usize) -> Result<Head, HttpError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::BadRequest),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::BadRequest),
    }
    Ok(Head {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        version: request.version.unwrap_or(1),
        headers: request
            .headers
            .iter()
            // httparse has already dropped the optional whitespace (SP and
            // HTAB only) around the value; nothing else is trimmed, so that
            // e.g. a no-break space around a length is not taken for OWS.
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    })
}

/// Parses a subscriber's complete head.
pub fn parse_head(head: &[u8], max_headers: usize) -> Result<RequestHead, HttpError> {
    let head = parse(head, max_headers)?;
    let all = |name| head.values(name).map(str::to_owned).collect();
    let upgrade = UpgradeHeaders {
        http11: head.version >= 1,
        upgrade: all("Upgrade"),
        connection: all("Connection"),
        key: all("Sec-WebSocket-Key"),
        version: all("Sec-WebSocket-Version"),
    };
    let close = head.connection_has("close");
    // Request bodies are never read, so the bytes after such a head could
    // be taken for a next request (smuggled past a proxy that pools its
    // connections to us): a request that announces a body is answered and
    // the connection closed.
    let body = head.values("Transfer-Encoding").next().is_some()
        || head.values("Content-Length").any(|v| v != "0");
    Ok(RequestHead {
        keep_alive: head.version >= 1 && !close && !body,
        upgrade,
        user_agent: head.header("User-Agent").unwrap_or("-").to_owned(),
        origin: head.header("Origin").map(str::to_owned),
        last_event_id: head.header("Last-Event-ID").and_then(|v| v.parse().ok()),
        authorization: head.header("Authorization").map(str::to_owned),
        cookies: head.values("Cookie").map(str::to_owned).collect(),
        forwarding: head.forwarding(),
        method: head.method,
        target: head.target,
    })
}

/// The header lines `~cors~` renders: the request's origin is echoed
/// when `allowed` (from `AllowedOrigins`) lists it or is `*`.
pub fn cors_lines(allowed: &[String], origin: Option<&str>) -> String {
    let any = allowed.iter().any(|a| a == "*");
    match origin {
        Some(o) if origin_allowed(allowed, o) => {
            format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n")
        }
        None if any => "Access-Control-Allow-Origin: *\r\n".to_owned(),
        _ => String::new(),
    }
}

/// Reads digits as a number, saturating; None if there are none or any
/// other character.
pub fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\nA: b\n\nrest"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"\r\nGET / HTTP/1.0\n\n"), Some(18));
        assert_eq!(head_end(b"\r\n\r\n"), Some(4));
        assert_eq!(head_end(b"\n"), None);
        let parsed = parse_head(b"GET /x?y HTTP/1.1\nUser-Agent: t\nLast-Event-ID: 7\n\n", 8);
        assert_eq!(parsed.as_ref().map(|h| h.user_agent.as_str()), Ok("t"));
        assert_eq!(parsed.map(|h| h.last_event_id), Ok(Some(7)));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 1),
            Err(HttpError::TooManyHeaders)
        );
        assert_eq!(parse_head(b"\x01\r\n\r\n", 8), Err(HttpError::BadRequest));
        let keep = |head: &[u8]| parse_head(head, 8).map(|h| h.keep_alive);
        assert_eq!(keep(b"GET / HTTP/1.1\r\n\r\n"), Ok(true));
        assert_eq!(
            keep(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            keep(b"GET / HTTP/1.1\r\nConnection: x, Close\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(
            keep(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(
            keep(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            keep(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(
            keep(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(false)
        );
    }

    #[test]
    fn host_values() {
        assert_eq!(host_name("LocalHost:4671").as_deref(), Some("localhost"));
        assert_eq!(host_name("localhost.").as_deref(), Some("localhost"));
        assert_eq!(host_name("localhost:").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in [
            "", ":80", "a b", "a:b", "a:80:80", "[::1", "[x]", "[]", "a/b", "a@b", "a\\b",
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
        let list = [
            "localhost".to_owned(),
            "::1".to_owned(),
            "[fe80::1]".to_owned(),
        ];
        assert!(host_allowed("localhost", &list));
        assert!(host_allowed("[::1]", &list));
        assert!(host_allowed("[fe80::1]", &list));
        assert!(!host_allowed("evil.example", &list));
        assert!(!host_allowed("", &list));
        assert!(host_allowed("x", &["*".to_owned()]));
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length("0"), Some(0));
        assert_eq!(content_length("0012"), Some(12));
        assert_eq!(content_length("99999999999999999999999"), Some(u64::MAX));
        for bad in ["", "+3", "-1", "3 ", " 3", "3,3", "1e3", "\u{663}"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
        let head = parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\na: 3\r\nC:\r\n\r\n", 8);
        let head = head.as_ref().ok();
        assert_eq!(
            head.map(|h| h.values("A").collect::<Vec<_>>()),
            Some(vec!["1", "3"])
        );
        assert_eq!(
            head.map(|h| h.single("A")),
            Some(Err(HttpError::BadRequest))
        );
        assert_eq!(head.map(|h| h.single("B")), Some(Ok(Some("2"))));
        assert_eq!(head.map(|h| h.single("C")), Some(Ok(Some(""))));
        assert_eq!(head.map(|h| h.header("C")), Some(None));
        assert_eq!(head.map(|h| h.single("D")), Some(Ok(None)));
    }

    #[test]
    fn cors_echoes_allowed_origins_only() {
        let allowed = vec!["https://a.example".to_owned()];
        assert_eq!(
            cors_lines(&allowed, Some("https://a.example")),
            "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n"
        );
        assert_eq!(cors_lines(&allowed, Some("https://b.example")), "");
        assert_eq!(cors_lines(&[], Some("https://a.example")), "");
        assert_eq!(
            cors_lines(&["*".to_owned()], None),
            "Access-Control-Allow-Origin: *\r\n"
        );
    }
}
