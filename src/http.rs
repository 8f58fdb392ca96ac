//! HTTP request heads on both ports: finding the end of a head, parsing it
//! with `httparse`, the errors a head can earn, and the CORS lines.

/// Why a request head is refused (spec B2); each maps to an HTTP status.
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
    /// A header's value, trimmed; None when absent or empty.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
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
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).trim().to_owned();
                (h.name.to_owned(), value)
            })
            .collect(),
    })
}

/// Parses a subscriber's complete head.
pub fn parse_head(head: &[u8], max_headers: usize) -> Result<RequestHead, HttpError> {
    let head = parse(head, max_headers)?;
    Ok(RequestHead {
        user_agent: head.header("User-Agent").unwrap_or("-").to_owned(),
        origin: head.header("Origin").map(str::to_owned),
        last_event_id: head.header("Last-Event-ID").and_then(|v| v.parse().ok()),
        method: head.method,
        target: head.target,
    })
}

/// The header lines `~cors~` renders: the request's origin is echoed
/// when `allowed` (from `AllowedOrigins`) lists it or is `*`.
pub fn cors_lines(allowed: &[String], origin: Option<&str>) -> String {
    let any = allowed.iter().any(|a| a == "*");
    match origin {
        Some(o) if any || allowed.iter().any(|a| a == o) => {
            format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n")
        }
        None if any => "Access-Control-Allow-Origin: *\r\n".to_owned(),
        _ => String::new(),
    }
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
