//! Private channels and bound hostids on the subscriber port: finding the
//! token a request carries (`Authorization: Bearer`, the `token=` query
//! parameter, or the cookie named by `SubscriberTokenCookie`), deciding
//! whether the request needs one, and answering a refusal with its status
//! and reason. The token itself is read and verified by `crate::token`.
//!
//! Without `SubscriberSecret` nothing here applies and every request is
//! let through as before.

use super::route::Route;
use super::stream::Hosts;
use crate::config::Config;
use crate::http::RequestHead;
use crate::info;
use crate::token::{self, Refusal, pattern};
use std::borrow::Cow;
use std::net::IpAddr;

/// What a request was let through with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// The token's `exp` (Unix seconds) when one was used: the stream is
    /// closed then, with its mode's shutdown message.
    pub expires: Option<u64>,
    /// The token is bound to the request's hostid (and the request is
    /// persistent): replacing or disconnecting that hostid needs a token
    /// bound to it too.
    pub bound: bool,
}

/// A refused request: why, and the private channel concerned if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why.
    pub refusal: Refusal,
    /// The private channel not granted, for `ChannelNotGranted`.
    pub channel: Option<String>,
}

impl Denied {
    fn new(refusal: Refusal) -> Denied {
        Denied {
            refusal,
            channel: None,
        }
    }

    /// The reason as the body and the log say it: fixed words, the
    /// channel name for a channel not granted; never the token.
    pub fn reason(&self) -> String {
        match &self.channel {
            Some(channel) => format!("{}: {channel}", self.refusal),
            None => self.refusal.to_string(),
        }
    }

    /// The whole response: status, a `WWW-Authenticate` challenge
    /// (RFC 6750), the CORS lines so that a page can read why, and a
    /// one-line body `<status>: <reason>`.
    pub fn response(&self, cors: &str) -> Vec<u8> {
        let status = self.refusal.status();
        let body = format!("{status}: {}\n", self.reason());
        let challenge = match self.refusal.bearer_error() {
            Some(error) => format!("Bearer realm=\"meteord\", error=\"{error}\""),
            None => "Bearer realm=\"meteord\"".to_owned(),
        };
        format!(
            "HTTP/1.1 {status}\r\nServer: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Cache-Control: no-store\r\nWWW-Authenticate: {challenge}\r\n\
             Content-Length: {}\r\nConnection: close\r\n{cors}\r\n{body}",
            super::PROGRAM,
            body.len()
        )
        .into_bytes()
    }
}

/// The token a request carries: the `Authorization: Bearer` header first,
/// then the first `token=` query parameter, then the cookie named
/// `cookie`. None when there is none.
pub fn find_token<'a>(request: &'a RequestHead, cookie: Option<&str>) -> Option<&'a str> {
    if let Some(value) = request.authorization.as_deref()
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("Bearer")
    {
        return Some(token.trim_matches([' ', '\t']));
    }
    if let Some((_, query)) = request.target.split_once('?')
        && let Some(token) = query.split('&').find_map(|p| p.strip_prefix("token="))
    {
        return Some(token);
    }
    let name = cookie?;
    request.cookies.iter().find_map(|header| {
        header.split(';').find_map(|pair| {
            let (n, v) = pair.trim_matches([' ', '\t']).split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
    })
}

/// The request target with the value of every `token=` parameter hidden,
/// for the log.
pub fn redact(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    if !query.split('&').any(|p| p.starts_with("token=")) {
        return Cow::Borrowed(target);
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|p| {
            if p.starts_with("token=") {
                "token=-"
            } else {
                p
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", query.join("&")))
}

/// Whether `channel` is private under `PrivateChannels`.
pub fn is_private(config: &Config, channel: &[u8]) -> bool {
    pattern::any_matches(&config.private_channels, channel)
}

/// Decides whether a routed request may go on, at Unix time `now`: a push
/// request naming a private channel needs a valid token granting every
/// private channel it names (one not granted refuses the whole request);
/// a persistent request replacing a bound hostid, or `/disconnect` of
/// one, needs a token bound to that hostid; a token bound to a hostid is
/// refused for any other. Logs each refusal as a `refused` record.
pub fn check(
    route: &Route,
    request: &RequestHead,
    config: &Config,
    hosts: &Hosts,
    client: IpAddr,
    now: u64,
) -> Result<Access, Denied> {
    if config.subscriber_secrets.is_empty() {
        return Ok(Access::default());
    }
    let token = find_token(request, config.token_cookie.as_deref());
    let verify = || {
        token::verify(
            token.unwrap_or_default().as_bytes(),
            &config.subscriber_secrets,
            now,
        )
    };
    let bound = |hostid: &str| hosts.get(hostid).is_some_and(|h| h.bound);
    let result = match route {
        Route::Push {
            hostid,
            mode,
            channels,
        } => {
            let persist = config.mode(mode).persist;
            let private: Vec<&[u8]> = channels
                .iter()
                .map(|def| def.name.as_slice())
                .filter(|name| is_private(config, name))
                .collect();
            let replaces_bound = persist && bound(hostid);
            if private.is_empty() && !replaces_bound {
                // No token needed. One that is valid and bound to this
                // hostid still binds it (and ends the stream at exp); any
                // other is ignored, so that a stale cookie cannot break
                // public channels.
                Ok(match verify() {
                    Ok(claims) if persist && claims.hostid.as_deref() == Some(hostid) => Access {
                        expires: Some(claims.exp),
                        bound: true,
                    },
                    _ => Access::default(),
                })
            } else {
                verify().map_err(Denied::new).and_then(|claims| {
                    let token_hostid = claims.hostid.as_deref();
                    if token_hostid.is_some_and(|h| h != hostid)
                        || (replaces_bound && token_hostid != Some(hostid))
                    {
                        return Err(Denied::new(Refusal::HostidMismatch));
                    }
                    if let Some(name) = private.iter().find(|name| !claims.grants(name)) {
                        return Err(Denied {
                            refusal: Refusal::ChannelNotGranted,
                            channel: Some(String::from_utf8_lossy(name).into_owned()),
                        });
                    }
                    Ok(Access {
                        expires: Some(claims.exp),
                        bound: persist && token_hostid == Some(hostid),
                    })
                })
            }
        }
        Route::Disconnect { hostid } if bound(hostid) => {
            verify().map_err(Denied::new).and_then(|claims| {
                match claims.hostid.as_deref() == Some(hostid) {
                    true => Ok(Access::default()),
                    false => Err(Denied::new(Refusal::HostidMismatch)),
                }
            })
        }
        _ => Ok(Access::default()),
    };
    if let Err(denied) = &result {
        let hostid = match route {
            Route::Push { hostid, .. } | Route::Disconnect { hostid } => hostid.as_str(),
            _ => "-",
        };
        let code = denied
            .refusal
            .status()
            .split(' ')
            .next()
            .unwrap_or_default();
        info!("refused\t{client}\t{hostid}\t{code}\t{}", denied.reason());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, authorization: Option<&str>, cookies: &[&str]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: target.into(),
            user_agent: "-".into(),
            origin: None,
            last_event_id: None,
            authorization: authorization.map(str::to_owned),
            cookies: cookies.iter().map(|c| c.to_string()).collect(),
            upgrade: Default::default(),
            forwarding: Default::default(),
            keep_alive: true,
        }
    }

    #[test]
    fn where_tokens_travel() {
        let c = Some("meteord_token");
        assert_eq!(
            find_token(&head("/p?token=q", Some("Bearer  h "), &[]), c),
            Some("h")
        );
        assert_eq!(
            find_token(&head("/p?token=q", Some("Basic x"), &[]), c),
            Some("q")
        );
        assert_eq!(
            find_token(&head("/p?nc=1&token=q&token=r", None, &[]), c),
            Some("q")
        );
        assert_eq!(
            find_token(&head("/p", None, &["a=b; meteord_token=k", "x=y"]), c),
            Some("k")
        );
        assert_eq!(
            find_token(&head("/p", None, &["meteord_token=k"]), None),
            None
        );
        assert_eq!(find_token(&head("/p?tokens=1", None, &[]), c), None);
    }

    #[test]
    fn the_log_never_shows_a_token() {
        assert_eq!(
            redact("/p/h/m/c?nc=1&token=abc.def"),
            "/p/h/m/c?nc=1&token=-"
        );
        assert_eq!(redact("/p/h/m/c?nc=1"), "/p/h/m/c?nc=1");
    }

    #[test]
    fn responses() {
        let denied = Denied {
            refusal: Refusal::ChannelNotGranted,
            channel: Some("private-b".into()),
        };
        let text = String::from_utf8(denied.response("")).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n403 Forbidden: channel not granted: private-b\n"));
        assert!(text.contains("Content-Length: 46\r\n"), "{text}");
    }
}
