//! HTTP on the controller port, for tools that would rather use curl than a
//! raw socket: `POST /pub/<channel>`, `GET /channels` and `GET /stats` as
//! JSON, `GET /metrics` in the Prometheus text format. A connection is
//! taken for HTTP when its first line is an HTTP request line.

use super::Context;
use super::commands::same_secret;
use crate::channel::PublishRefused;
use crate::http::{self, HttpError, cors_lines};
use crate::hub::{Failed, Publish};
use crate::proxies::Forwarding;
use crate::template::Escape;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The parts of a control request head the endpoints use.
#[derive(Debug, PartialEq, Eq)]
pub struct ControlRequest {
    pub method: String,
    pub path: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The host named by `Host`, lower-cased and without its port (see
    /// `http::host_name`); None only for HTTP/1.0 without `Host`.
    pub host: Option<String>,
    origin: Option<String>,
    authorization: Option<String>,
    /// `Content-Length`, when given (saturated: too large is still too large).
    pub content_length: Option<u64>,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for
    /// `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// Whether the client asked to close after this request.
    pub close: bool,
    /// `X-Forwarded-For` and `Forwarded`: from a trusted proxy, the client
    /// that wrong passwords count against (each request may be another's).
    pub forwarding: Forwarding,
}

/// A request refused from its head alone: the status line text and a short
/// reason for the body. The response closes the connection (the body, if
/// any, is not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: &'static str,
    pub why: &'static str,
}

impl Refusal {
    const fn new(status: &'static str, why: &'static str) -> Refusal {
        Refusal { status, why }
    }

    /// The complete response: `<status>: <why>` as the body, then close.
    pub fn response(self) -> Vec<u8> {
        let body = format!("{}: {}\n", self.status, self.why);
        response(self.status, "text/plain; charset=utf-8", &body, "", true)
    }
}

impl From<HttpError> for Refusal {
    fn from(error: HttpError) -> Refusal {
        let why = match error {
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header lines",
            HttpError::Timeout => "request head not complete in time",
            HttpError::Unavailable => "too many connections",
            HttpError::LengthRequired => "Content-Length required",
            HttpError::BadRequest => "malformed request head",
        };
        Refusal::new(error.status(), why)
    }
}

const BAD_REQUEST: &str = "400 Bad Request";

/// `100 Continue`, sent once a head that asked for it is accepted and
/// before its body is read (RFC 9110 10.1.1).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether a controller's first line is an HTTP request line.
pub fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let version = words.next().unwrap_or_default();
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && target.starts_with(b"/")
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
        && words.next().is_none()
}

/// Parses a complete request head as strictly as RFC 9112 asks of a server
/// that reads request bodies: httparse refuses malformed request lines,
/// header names that are not tokens, whitespace before the colon, obs-fold
/// and control characters in values; on top of that a `Content-Length`
/// must be `1*DIGIT` and appear once, `Host` must appear exactly once on
/// HTTP/1.1 (at most once on HTTP/1.0) with a valid value, and
/// `Transfer-Encoding` is not implemented (501: request bodies need
/// `Content-Length`; a body of unknown framing cannot be skipped, so the
/// connection closes).
pub fn parse_request(head: &[u8], max_headers: usize) -> Result<ControlRequest, Refusal> {
    let head = http::parse(head, max_headers)?;
    if head.values("Transfer-Encoding").next().is_some() {
        return Err(Refusal::new(
            "501 Not Implemented",
            "Transfer-Encoding is not supported; send the body with Content-Length",
        ));
    }
    let content_length = match head.single("Content-Length") {
        Err(_) => {
            return Err(Refusal::new(
                BAD_REQUEST,
                "Content-Length given more than once",
            ));
        }
        Ok(None) => None,
        Ok(Some(v)) => Some(http::content_length(v).ok_or(Refusal::new(
            BAD_REQUEST,
            "Content-Length must be decimal digits only",
        ))?),
    };
    let host = match head.single("Host") {
        Err(_) => return Err(Refusal::new(BAD_REQUEST, "Host given more than once")),
        Ok(None) if head.version >= 1 => {
            return Err(Refusal::new(BAD_REQUEST, "HTTP/1.1 requires a Host header"));
        }
        Ok(None) => None,
        Ok(Some(v)) => {
            Some(http::host_name(v).ok_or(Refusal::new(BAD_REQUEST, "malformed Host header"))?)
        }
    };
    let origin = head
        .single("Origin")
        .map_err(|_| Refusal::new(BAD_REQUEST, "Origin given more than once"))?
        .map(str::to_owned);
    let authorization = head
        .single("Authorization")
        .map_err(|_| Refusal::new(BAD_REQUEST, "Authorization given more than once"))?
        .map(str::to_owned);
    let mut expect_continue = false;
    for value in head.values("Expect") {
        for expectation in value.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            if expectation.eq_ignore_ascii_case("100-continue") {
                expect_continue = true;
            } else if !expectation.is_empty() {
                return Err(Refusal::new(
                    "417 Expectation Failed",
                    "only Expect: 100-continue is supported",
                ));
            }
        }
    }
    let close =
        head.connection_has("close") || (head.version == 0 && !head.connection_has("keep-alive"));
    Ok(ControlRequest {
        forwarding: head.forwarding(),
        host,
        origin,
        authorization,
        content_length,
        // RFC 9110 10.1.1: an HTTP/1.0 client cannot take a 100 response.
        expect_continue: expect_continue && head.version >= 1,
        close,
        version: head.version,
        method: head.method,
        path: head.target,
    })
}

/// Who may use the controller port over HTTP, and the body bound.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// `ControllerHosts` plus `ControllerIP`: the names `Host` may give.
    pub hosts: &'a [String],
    /// `AllowedOrigins`: the pages (by `Origin`) that may use the port.
    pub origins: &'a [String],
    /// `MaxControllerLineBytes`: the largest body.
    pub max_body: usize,
}

/// Checks a parsed head against the gate, before any body is read:
/// a `Host` this port does not answer for (DNS rebinding) gets 421, an
/// `Origin` not in `AllowedOrigins` (a page in a browser; tools send none)
/// gets 403, a POST without `Content-Length` 411, a body over the bound 413.
pub fn screen(request: &ControlRequest, gate: &Gate) -> Result<(), Refusal> {
    if let Some(host) = &request.host
        && !http::host_allowed(host, gate.hosts)
    {
        return Err(Refusal::new(
            "421 Misdirected Request",
            "this port does not answer for that Host (see ControllerHosts)",
        ));
    }
    if let Some(origin) = &request.origin
        && !http::origin_allowed(gate.origins, origin)
    {
        return Err(Refusal::new(
            "403 Forbidden",
            "requests from this Origin are not allowed (see AllowedOrigins)",
        ));
    }
    if request.method == "POST" && request.content_length.is_none() {
        return Err(HttpError::LengthRequired.into());
    }
    let too_large = request
        .content_length
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > gate.max_body));
    if too_large {
        return Err(Refusal::new(
            "413 Content Too Large",
            "the body is over MaxControllerLineBytes",
        ));
    }
    Ok(())
}

/// The body length of a screened request.
pub fn body_len(request: &ControlRequest) -> usize {
    request
        .content_length
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

/// A complete response.
fn response(status: &str, content_type: &str, body: &str, extra: &str, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: meteord\r\nContent-Type: {content_type}\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\n{extra}",
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// The response to a head that could not be parsed or was too large.
pub fn error_response(error: HttpError) -> Vec<u8> {
    Refusal::from(error).response()
}

fn json_string(out: &mut String, bytes: &[u8]) {
    let mut escaped = Vec::with_capacity(bytes.len() + 2);
    Escape::Json.write(&mut escaped, bytes);
    out.push('"');
    out.push_str(&String::from_utf8_lossy(&escaped));
    out.push('"');
}

/// What a request gets: a response now, or (a publish sent to Redis) one
/// once Redis answered, made by `published`.
pub enum Answer {
    /// The response, and whether the connection closes after it.
    Now(Vec<u8>, bool),
    Later {
        cors: String,
    },
}

/// The response to a publish answered later (by Redis, or once the state
/// file was written).
pub fn published(id: Result<u64, Failed>, cors: &str, close: bool) -> Vec<u8> {
    match id {
        Ok(id) => response(
            "200 OK",
            "application/json",
            &format!("{{\"id\":{id}}}\n"),
            cors,
            close,
        ),
        Err(failed) => unavailable(failed, cors, close),
    }
}

fn unavailable(failed: Failed, cors: &str, close: bool) -> Vec<u8> {
    let body = match failed {
        Failed::Backend => "503 Service Unavailable: backend unavailable\n",
        Failed::Storage => "503 Service Unavailable: storage unavailable\n",
    };
    response(
        "503 Service Unavailable",
        "text/plain; charset=utf-8",
        body,
        cors,
        close,
    )
}

/// Answers one request from `peer` (a trusted proxy's forwarding headers
/// name the client instead); `body` is its complete body.
pub fn respond(request: &ControlRequest, body: &[u8], peer: IpAddr, ctx: &mut Context) -> Answer {
    let client = ctx.config.trusted_proxies.client(peer, &request.forwarding);
    match respond_now(request, body, client, ctx) {
        Ok((response, close)) => Answer::Now(response, close),
        Err(later) => later,
    }
}

/// What a request asks for, once its head passed `screen` and `endpoint`.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'r> {
    /// `OPTIONS`: the CORS preflight (needs no password).
    Preflight,
    /// `POST /pub/<channel>`, the channel name checked.
    Publish(&'r str),
    Channels,
    Stats,
    Metrics,
}

/// An answer that the head alone decides (the body does not matter).
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    status: &'static str,
    body: &'static str,
    /// Add `WWW-Authenticate: Bearer` (a 401).
    challenge: bool,
}

impl Refused {
    const fn new(status: &'static str, body: &'static str) -> Refused {
        Refused {
            status,
            body,
            challenge: false,
        }
    }

    fn response(&self, cors: &str, close: bool) -> Vec<u8> {
        let mut extra = cors.to_owned();
        if self.challenge {
            extra.push_str("WWW-Authenticate: Bearer\r\n");
        }
        let text = "text/plain; charset=utf-8";
        response(self.status, text, self.body, &extra, close)
    }
}

/// The channel a `POST /pub/<channel>` request names, unchecked.
pub fn publish_channel(request: &ControlRequest) -> Option<&str> {
    let path = request.path.split('?').next().unwrap_or_default();
    (request.method == "POST").then(|| path.strip_prefix("/pub/"))?
}

/// Routes a request and checks its password and channel name.
fn endpoint<'r>(
    request: &'r ControlRequest,
    password: Option<&[u8]>,
    max_channel_name: usize,
) -> Result<Endpoint<'r>, Refused> {
    if request.method == "OPTIONS" {
        return Ok(Endpoint::Preflight);
    }
    if let Some(expected) = password {
        let given = request
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), expected)) {
            return Err(Refused {
                challenge: true,
                ..Refused::new("401 Unauthorized", "401 Unauthorized\n")
            });
        }
    }
    let not_allowed = Refused::new("405 Method Not Allowed", "405 Method Not Allowed\n");
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("POST", p) if p.starts_with("/pub/") => {
            let channel = publish_channel(request).unwrap_or_default();
            let valid = !channel.is_empty()
                && !channel
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'/');
            if !valid {
                return Err(Refused::new(
                    BAD_REQUEST,
                    "400 Bad Request: no valid channel name in the path\n",
                ));
            }
            if channel.len() > max_channel_name {
                return Err(Refused::new(
                    BAD_REQUEST,
                    "400 Bad Request: channel name too long\n",
                ));
            }
            Ok(Endpoint::Publish(channel))
        }
        ("GET", "/channels") => Ok(Endpoint::Channels),
        ("GET", "/stats") => Ok(Endpoint::Stats),
        ("GET", "/metrics") => Ok(Endpoint::Metrics),
        (_, "/channels" | "/stats" | "/metrics") => Err(not_allowed),
        (_, p) if p.starts_with("/pub/") => Err(not_allowed),
        _ => Err(Refused::new("404 Not Found", "404 Not Found\n")),
    }
}

/// For a head that asked for `100 Continue`: the answer, when the request
/// will be refused whatever its body (wrong password, unknown path, bad
/// channel name), so that it is sent at once instead of `100 Continue`. The
/// response closes the connection, as the body is never read.
pub fn refuse_before_body(request: &ControlRequest, ctx: &Context) -> Option<Vec<u8>> {
    let password = ctx.config.controller_password.as_deref();
    let refused = endpoint(request, password, ctx.config.limits.channel_name_length).err()?;
    let cors = cors_lines(&ctx.config.allowed_origins, request.origin.as_deref());
    Some(refused.response(&cors, true))
}

fn respond_now(
    request: &ControlRequest,
    body: &[u8],
    peer: IpAddr,
    ctx: &mut Context,
) -> Result<(Vec<u8>, bool), Answer> {
    let cors = cors_lines(&ctx.config.allowed_origins, request.origin.as_deref());
    let close = request.close;
    let json = "application/json";
    let password = ctx.config.controller_password.as_deref();
    if password.is_some() && ctx.auth.blocked(peer, ctx.now) {
        ctx.stats.errors_served += 1;
        let refused = Refused::new(
            "429 Too Many Requests",
            "429 Too Many Requests: too many wrong passwords from this address; wait\n",
        );
        return Ok((refused.response(&cors, true), true));
    }
    let endpoint = match endpoint(request, password, ctx.config.limits.channel_name_length) {
        Ok(endpoint) => endpoint,
        Err(refused) => {
            ctx.stats.errors_served += 1;
            // A wrong password ends the connection, as `AUTH` does, and
            // counts against the address.
            if refused.challenge {
                ctx.auth.failed(peer, ctx.now);
                return Ok((refused.response(&cors, true), true));
            }
            return Ok((refused.response(&cors, close), close));
        }
    };
    if password.is_some() && endpoint != Endpoint::Preflight {
        ctx.auth.succeeded(peer);
    }
    let (content_type, payload) = match endpoint {
        Endpoint::Preflight => {
            let extra = format!(
                "{cors}Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
                 Access-Control-Allow-Headers: Authorization, Content-Type\r\nAccess-Control-Max-Age: 600\r\n"
            );
            let text = "text/plain; charset=utf-8";
            return Ok((response("204 No Content", text, "", &extra, close), close));
        }
        Endpoint::Publish(channel) => match publish(channel, body, ctx) {
            Published::Now(id) => (json, format!("{{\"id\":{id}}}\n")),
            Published::Later => return Err(Answer::Later { cors }),
            Published::Unavailable(failed) => {
                ctx.stats.errors_served += 1;
                return Ok((unavailable(failed, &cors, close), close));
            }
            Published::Refused(refused) => {
                ctx.stats.errors_served += 1;
                let status = "507 Insufficient Storage";
                let body = format!("{status}: {refused}\n");
                let text = "text/plain; charset=utf-8";
                return Ok((response(status, text, &body, &cors, close), close));
            }
        },
        Endpoint::Channels => (json, channels(ctx)),
        Endpoint::Stats => (json, stats(ctx)),
        Endpoint::Metrics => ("text/plain; version=0.0.4; charset=utf-8", metrics(ctx)),
    };
    Ok((
        response("200 OK", content_type, &payload, &cors, close),
        close,
    ))
}

/// How a publish went.
enum Published {
    /// Done here, with this id.
    Now(u64),
    /// Answered later by the hub.
    Later,
    /// The backend is not reachable, or the state file not writable.
    Unavailable(Failed),
    /// Over a memory bound: 507.
    Refused(PublishRefused),
}

fn publish(channel: &str, body: &[u8], ctx: &mut Context) -> Published {
    match ctx.hub.publish(
        ctx.stats,
        Some(ctx.id),
        channel.as_bytes(),
        body,
        ctx.now_ms,
    ) {
        Publish::Done(id) => Published::Now(id),
        Publish::Pending => Published::Later,
        Publish::Unavailable => Published::Unavailable(Failed::Backend),
        Publish::StorageUnavailable => Published::Unavailable(Failed::Storage),
        Publish::Refused(refused) => Published::Refused(refused),
    }
}

fn channels(ctx: &Context) -> String {
    let mut out = String::from("{\"channels\":[");
    for (i, channel) in ctx.hub.channels.sorted().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_string(&mut out, &channel.name);
        let _ = write!(
            out,
            ",\"messages\":{},\"subscribers\":{},\"lastMsgID\":{}}}",
            channel.message_count(),
            channel.persistent,
            channel.last_id()
        );
    }
    out.push_str("]}\n");
    out
}

fn stats(ctx: &Context) -> String {
    let s = &*ctx.stats;
    let mut out = format!(
        "{{\"uptime\":{},\"channel_count\":{}",
        s.started.elapsed().as_secs(),
        ctx.hub.channels.count()
    );
    for (name, value) in s.counters().into_iter().chain(s.extra_counters()) {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    let _ = write!(
        out,
        ",\"events_cached\":{},\"bytes_cached\":{},\"document_cache_bytes\":{}",
        ctx.hub.channels.cached_events(),
        ctx.hub.channels.cached_bytes(),
        ctx.document_cache_bytes
    );
    // Memory bounds: gauges, then counters; then the state file's.
    let channels = &ctx.hub.channels;
    let (state_gauges, state_counters) = ctx.hub.state_figures();
    for (name, value) in channels
        .memory_gauges()
        .into_iter()
        .chain(channels.memory_counters())
        .chain(state_gauges)
        .chain(state_counters)
    {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    out.push_str("}\n");
    out
}

/// One metric in the Prometheus text format.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(
        out,
        "# HELP meteord_{name} {help}\n# TYPE meteord_{name} {kind}"
    );
    for (labels, value) in samples {
        let _ = writeln!(out, "meteord_{name}{labels} {value}");
    }
}

fn metrics(ctx: &Context) -> String {
    let s = &*ctx.stats;
    let mut out = String::new();
    metric(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[("", s.started.elapsed().as_secs())],
    );
    metric(
        &mut out,
        "channels",
        "gauge",
        "Channels that exist (channel_count).",
        &[("", ctx.hub.channels.count() as u64)],
    );
    for (name, value) in s.counters().into_iter().chain(s.extra_counters()) {
        match name.strip_prefix("current_") {
            Some(_) => metric(
                &mut out,
                name,
                "gauge",
                &format!("SHOWSTATS {name}."),
                &[("", value)],
            ),
            None => metric(
                &mut out,
                &format!("{name}_total"),
                "counter",
                &format!("SHOWSTATS {name}."),
                &[("", value)],
            ),
        }
    }
    metric(
        &mut out,
        "connections",
        "gauge",
        "Open connections by kind.",
        &[
            ("{kind=\"subscriber\"}", s.current_subscribers),
            ("{kind=\"controller\"}", s.current_controllers),
        ],
    );
    metric(
        &mut out,
        "events_cached",
        "gauge",
        "Messages held in channel caches.",
        &[("", ctx.hub.channels.cached_events())],
    );
    metric(
        &mut out,
        "bytes_cached",
        "gauge",
        "Bytes held by channel caches and their rendered buffers.",
        &[("", ctx.hub.channels.cached_bytes())],
    );
    // Memory bounds: gauges, then counters.
    for (name, value) in ctx.hub.channels.memory_gauges() {
        let help = format!("Memory bounds: {name}.");
        metric(&mut out, name, "gauge", &help, &[("", value)]);
    }
    for (name, value) in ctx.hub.channels.memory_counters() {
        let help = format!("Memory bounds: {name}.");
        let name = format!("{name}_total");
        metric(&mut out, &name, "counter", &help, &[("", value)]);
    }
    let (state_gauges, state_counters) = ctx.hub.state_figures();
    for (name, value) in state_gauges {
        let help = format!("State file: {name}.");
        metric(&mut out, name, "gauge", &help, &[("", value)]);
    }
    for (name, value) in state_counters {
        let help = format!("State file: {name}.");
        let name = format!("{name}_total");
        metric(&mut out, &name, "counter", &help, &[("", value)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_told_from_commands() {
        assert!(is_request_line(b"POST /pub/x HTTP/1.1\r"));
        assert!(is_request_line(b"GET /metrics HTTP/1.0"));
        assert!(!is_request_line(b"ADDMESSAGE a HTTP/1.1"));
        assert!(!is_request_line(b"GET /x HTTP/2"));
        assert!(!is_request_line(b"SHOWSTATS"));
    }

    fn parse(head: &str) -> Result<ControlRequest, Refusal> {
        parse_request(head.as_bytes(), 16)
    }

    fn status(head: &str) -> &'static str {
        match parse(head) {
            Ok(_) => "ok",
            Err(r) => r.status,
        }
    }

    #[test]
    fn heads_parse() {
        let r = parse(
            "POST /pub/a HTTP/1.1\r\nHost: localhost:4671\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.as_ref().map(|r| r.content_length), Ok(Some(3)));
        assert_eq!(r.as_ref().map(|r| r.host.as_deref()), Ok(Some("localhost")));
        assert_eq!(r.map(|r| r.close), Ok(true));
        assert_eq!(parse("GET / HTTP/1.0\r\n\r\n").map(|r| r.close), Ok(true));
        assert_eq!(parse("GET / HTTP/1.0\r\n\r\n").map(|r| r.host), Ok(None));
    }

    #[test]
    fn lengths_are_digits_and_single() {
        let post = |cl: &str| {
            status(&format!(
                "POST /pub/a HTTP/1.1\r\nHost: localhost\r\n{cl}\r\n"
            ))
        };
        assert_eq!(post("Content-Length: 3\r\n"), "ok");
        assert_eq!(post("Content-Length:  3 \t\r\n"), "ok");
        assert_eq!(post("Content-Length: 99999999999999999999999\r\n"), "ok");
        for bad in [
            "Content-Length: x\r\n",
            "Content-Length: +3\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 3 3\r\n",
            "Content-Length: 3,3\r\n",
            "Content-Length: 0x3\r\n",
            "Content-Length:\r\n",
            "Content-Length: \u{a0}3\r\n",
            "Content-Length: 3\r\nContent-Length: 3\r\n",
            "Content-Length: 3\r\ncontent-length: 4\r\n",
        ] {
            assert_eq!(post(bad), "400 Bad Request", "{bad:?}");
        }
        for te in ["chunked", "", "identity", "gzip, chunked"] {
            let head = format!("Transfer-Encoding: {te}\r\n");
            assert_eq!(post(&head), "501 Not Implemented", "{te:?}");
            let both = format!("Content-Length: 3\r\n{head}");
            assert_eq!(post(&both), "501 Not Implemented", "{te:?} with a length");
        }
    }

    #[test]
    fn strict_field_syntax() {
        for bad in [
            "GET /stats HTTP/1.1\r\nHost: localhost\r\nA: b\r\n c\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost : localhost\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost\t: localhost\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHo(st: localhost\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: local\x01host\r\n\r\n",
            "G@T /stats HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET  /stats HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET /stats HTTP/1.1\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",
            "GET /stats HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: local host\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: localhost:80x\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: [::1\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: a@b\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost:\r\n\r\n",
            "GET /stats HTTP/1.1\r\nHost: x\r\nOrigin: a\r\nOrigin: a\r\n\r\n",
        ] {
            assert_eq!(status(bad), "400 Bad Request", "{bad:?}");
        }
        assert_eq!(
            status("POST /pub/a HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"),
            "417 Expectation Failed"
        );
        let expects = |head: &str| parse(head).map(|r| r.expect_continue);
        assert_eq!(
            expects("POST /pub/a HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            expects("POST /pub/a HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"),
            Ok(false)
        );
    }

    #[test]
    fn the_gate_checks_host_origin_and_length() {
        let hosts = [
            "localhost".to_owned(),
            "[::1]".to_owned(),
            "10.0.0.5".to_owned(),
        ];
        let origins = ["http://app.example".to_owned()];
        let gate = Gate {
            hosts: &hosts,
            origins: &origins,
            max_body: 10,
        };
        let check = |head: &str| match parse(head).and_then(|r| screen(&r, &gate)) {
            Ok(()) => "ok",
            Err(r) => r.status,
        };
        let get = |headers: &str| check(&format!("GET /stats HTTP/1.1\r\n{headers}\r\n"));
        assert_eq!(get("Host: localhost\r\n"), "ok");
        assert_eq!(get("Host: LOCALHOST.:4671\r\n"), "ok");
        assert_eq!(get("Host: [::1]:4671\r\n"), "ok");
        assert_eq!(get("Host: 10.0.0.5:1\r\n"), "ok");
        assert_eq!(get("Host: evil.example\r\n"), "421 Misdirected Request");
        assert_eq!(
            get("Host: localhost.evil.example\r\n"),
            "421 Misdirected Request"
        );
        assert_eq!(get("Host: 127.0.0.1\r\n"), "421 Misdirected Request");
        assert_eq!(check("GET /stats HTTP/1.0\r\n\r\n"), "ok");
        assert_eq!(
            get("Host: localhost\r\nOrigin: http://app.example\r\n"),
            "ok"
        );
        assert_eq!(
            get("Host: localhost\r\nOrigin: http://evil.example\r\n"),
            "403 Forbidden"
        );
        assert_eq!(get("Host: localhost\r\nOrigin: null\r\n"), "403 Forbidden");
        let post = |headers: &str| {
            check(&format!(
                "POST /pub/a HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"
            ))
        };
        assert_eq!(post("Content-Length: 10\r\n"), "ok");
        assert_eq!(post("Content-Length: 11\r\n"), "413 Content Too Large");
        assert_eq!(
            post("Content-Length: 99999999999999999999999\r\n"),
            "413 Content Too Large"
        );
        assert_eq!(post(""), "411 Length Required");
        let any = ["*".to_owned()];
        let open = Gate {
            hosts: &any,
            origins: &any,
            max_body: 10,
        };
        let r = parse("GET /stats HTTP/1.1\r\nHost: x.example\r\nOrigin: http://y\r\n\r\n");
        assert_eq!(r.and_then(|r| screen(&r, &open)), Ok(()));
    }

    #[test]
    fn refusals_say_why_and_close() {
        let r = Refusal::new("403 Forbidden", "no").response();
        assert_eq!(
            String::from_utf8_lossy(&r),
            "HTTP/1.1 403 Forbidden\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Cache-Control: no-store\r\nContent-Length: 18\r\nConnection: close\r\n\r\n403 Forbidden: no\n"
        );
    }
}
