//! HTTP on the controller port, for tools that would rather use curl than a
//! raw socket: `POST /pub/<channel>`, `GET /channels` and `GET /stats` as
//! JSON, `GET /metrics` in the Prometheus text format. A connection is
//! taken for HTTP when its first line is an HTTP request line.

use crate::controller::{Context, same_secret};
use crate::http::{self, HttpError, cors_lines};
use crate::template::Escape;
use std::fmt::Write as _;

/// The parts of a control request head the endpoints use.
#[derive(Debug, PartialEq, Eq)]
pub struct ControlRequest {
    pub method: String,
    pub path: String,
    origin: Option<String>,
    authorization: Option<String>,
    /// `Content-Length`, when given.
    pub content_length: Option<usize>,
    /// Whether the client asked to close after this request.
    pub close: bool,
}

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

/// Parses a complete request head.
pub fn parse_request(head: &[u8], max_headers: usize) -> Result<ControlRequest, HttpError> {
    let head = http::parse(head, max_headers)?;
    let content_length = match head.header("Content-Length") {
        Some(v) => Some(v.parse().map_err(|_| HttpError::BadRequest)?),
        None => None,
    };
    if head.header("Transfer-Encoding").is_some() {
        return Err(HttpError::BadRequest);
    }
    let connection = head
        .header("Connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(ControlRequest {
        origin: head.header("Origin").map(str::to_owned),
        authorization: head.header("Authorization").map(str::to_owned),
        content_length,
        close: connection == "close" || (head.version == 0 && connection != "keep-alive"),
        method: head.method,
        path: head.target,
    })
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
    let status = error.status();
    response(
        status,
        "text/plain; charset=utf-8",
        &format!("{status}\n"),
        "",
        true,
    )
}

/// The response to a body over `MaxControllerLineBytes`.
pub fn too_large_response() -> Vec<u8> {
    response(
        "413 Content Too Large",
        "text/plain; charset=utf-8",
        "413 Content Too Large\n",
        "",
        true,
    )
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
    Now(Vec<u8>),
    Later { cors: String },
}

/// The response to a publish Redis answered (`id` None: it failed).
pub fn published(id: Option<u64>, cors: &str, close: bool) -> Vec<u8> {
    match id {
        Some(id) => response(
            "200 OK",
            "application/json",
            &format!("{{\"id\":{id}}}\n"),
            cors,
            close,
        ),
        None => unavailable(cors, close),
    }
}

fn unavailable(cors: &str, close: bool) -> Vec<u8> {
    let body = "503 Service Unavailable: backend unavailable\n";
    response(
        "503 Service Unavailable",
        "text/plain; charset=utf-8",
        body,
        cors,
        close,
    )
}

/// Answers one request; `body` is its complete body.
pub fn respond(request: &ControlRequest, body: &[u8], ctx: &mut Context) -> Answer {
    Answer::Now(match respond_now(request, body, ctx) {
        Ok(response) => response,
        Err(later) => return later,
    })
}

fn respond_now(
    request: &ControlRequest,
    body: &[u8],
    ctx: &mut Context,
) -> Result<Vec<u8>, Answer> {
    let cors = cors_lines(ctx.allowed_origins, request.origin.as_deref());
    let close = request.close;
    let text = "text/plain; charset=utf-8";
    let json = "application/json";
    if request.method == "OPTIONS" {
        let extra = format!(
            "{cors}Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
             Access-Control-Allow-Headers: Authorization, Content-Type\r\nAccess-Control-Max-Age: 600\r\n"
        );
        return Ok(response("204 No Content", text, "", &extra, close));
    }
    if let Some(expected) = ctx.password {
        let given = request
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), expected)) {
            ctx.stats.errors_served += 1;
            let extra = format!("{cors}WWW-Authenticate: Bearer\r\n");
            return Ok(response(
                "401 Unauthorized",
                text,
                "401 Unauthorized\n",
                &extra,
                close,
            ));
        }
    }
    let path = request.path.split('?').next().unwrap_or_default();
    let (status, content_type, payload) = match (request.method.as_str(), path) {
        ("POST", p) if p.starts_with("/pub/") => match publish(&p[5..], body, ctx) {
            Published::Now(reply) => reply,
            Published::Later => return Err(Answer::Later { cors }),
            Published::Unavailable => {
                ctx.stats.errors_served += 1;
                return Ok(unavailable(&cors, close));
            }
        },
        ("GET", "/channels") => ("200 OK", json, channels(ctx)),
        ("GET", "/stats") => ("200 OK", json, stats(ctx)),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(ctx),
        ),
        (_, "/channels" | "/stats" | "/metrics") => (
            "405 Method Not Allowed",
            text,
            "405 Method Not Allowed\n".into(),
        ),
        (_, p) if p.starts_with("/pub/") => (
            "405 Method Not Allowed",
            text,
            "405 Method Not Allowed\n".into(),
        ),
        _ => ("404 Not Found", text, "404 Not Found\n".into()),
    };
    if !status.starts_with('2') {
        ctx.stats.errors_served += 1;
    }
    Ok(response(status, content_type, &payload, &cors, close))
}

/// How a publish went.
enum Published {
    /// Done here: (status, content type, body).
    Now((&'static str, &'static str, String)),
    /// Sent to Redis.
    Later,
    /// Redis is not reachable.
    Unavailable,
}

fn publish(channel: &str, body: &[u8], ctx: &mut Context) -> Published {
    let text = "text/plain; charset=utf-8";
    let valid = !channel.is_empty()
        && !channel
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/');
    if !valid {
        return Published::Now((
            "400 Bad Request",
            text,
            "400 Bad Request: no valid channel name in the path\n".into(),
        ));
    }
    if channel.len() > ctx.max_channel_name {
        return Published::Now((
            "400 Bad Request",
            text,
            "400 Bad Request: channel name too long\n".into(),
        ));
    }
    if let Some(cluster) = ctx.cluster.as_deref_mut() {
        let max = ctx.channels.max_per_channel;
        if !cluster.publish(Some(ctx.token), channel.as_bytes(), body, ctx.now_ms, max) {
            return Published::Unavailable;
        }
        ctx.stats.unique_messages += 1;
        return Published::Later;
    }
    match ctx.channels.publish(channel.as_bytes(), body, ctx.now_ms) {
        Ok(id) => {
            ctx.stats.unique_messages += 1;
            Published::Now(("200 OK", "application/json", format!("{{\"id\":{id}}}\n")))
        }
        // MaxChannels or MaxCachedBytes.
        Err(refused) => Published::Now((
            "507 Insufficient Storage",
            text,
            format!("507 Insufficient Storage: {refused}\n"),
        )),
    }
}

fn channels(ctx: &Context) -> String {
    let mut out = String::from("{\"channels\":[");
    for (i, channel) in ctx.channels.sorted().into_iter().enumerate() {
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
        ctx.channels.count()
    );
    for (name, value) in s.counters().into_iter().chain(s.extra_counters()) {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    let _ = write!(
        out,
        ",\"events_cached\":{},\"bytes_cached\":{}",
        ctx.channels.cached_events(),
        ctx.channels.cached_bytes()
    );
    // Memory bounds: gauges, then counters.
    let memory = ctx.channels.memory_gauges();
    for (name, value) in memory.into_iter().chain(ctx.channels.memory_counters()) {
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
        &[("", ctx.channels.count() as u64)],
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
        &[("", ctx.channels.cached_events())],
    );
    metric(
        &mut out,
        "bytes_cached",
        "gauge",
        "Bytes held by channel caches and their rendered buffers.",
        &[("", ctx.channels.cached_bytes())],
    );
    // Memory bounds: gauges, then counters.
    for (name, value) in ctx.channels.memory_gauges() {
        let help = format!("Memory bounds: {name}.");
        metric(&mut out, name, "gauge", &help, &[("", value)]);
    }
    for (name, value) in ctx.channels.memory_counters() {
        let help = format!("Memory bounds: {name}.");
        metric(
            &mut out,
            &format!("{name}_total"),
            "counter",
            &help,
            &[("", value)],
        );
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

    #[test]
    fn heads_parse() {
        let r = parse_request(
            b"POST /pub/a HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            8,
        );
        assert_eq!(r.as_ref().map(|r| r.content_length), Ok(Some(3)));
        assert_eq!(r.map(|r| r.close), Ok(true));
        assert_eq!(
            parse_request(b"POST /pub/a HTTP/1.1\r\nContent-Length: x\r\n\r\n", 8),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.0\r\n\r\n", 8).map(|r| r.close),
            Ok(true)
        );
    }
}
