//! JSON Web Tokens signed with HS256 (RFC 7519, RFC 7515 compact form):
//! reading and verifying the tokens subscribers present, and minting them
//! (`meteord -token`). Only HS256 is accepted: any other `alg`, `none`
//! included, is refused before the signature is looked at.

use super::base64url;
use super::hmac::{constant_time_eq, hmac_sha256};
use super::json::{self, Json};
use super::pattern;
use std::fmt;

/// The longest token accepted, in bytes: far more than any sensible list
/// of channels needs, and well inside a request head.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// How far in the future a token's `nbf` may lie and still be accepted,
/// in seconds: the clocks of the application that mints tokens and of
/// meteord may differ by this much. `exp` is honoured exactly, since it is
/// also when a stream reading with the token ends.
pub const CLOCK_SKEW: u64 = 30;

/// Why a token does not let a request through. The words are what the
/// refusal says (`reason`): never the token or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token came with the request.
    Missing,
    /// Not a compact HS256 JWT with the claims required; the detail says
    /// what is wrong, in fixed words.
    Malformed(&'static str),
    /// The signature is not HS256 by any configured secret (or another
    /// algorithm is named).
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` lies ahead (beyond the clock skew allowed).
    NotYetValid,
    /// The token grants none of the patterns matching a private channel.
    ChannelNotGranted,
    /// The token is bound to another hostid, or the hostid is bound and
    /// the token is not bound to it.
    HostidMismatch,
}

impl Refusal {
    /// The HTTP status: 401 when the request has no valid token, 403 when
    /// its valid token does not grant what was asked.
    pub fn status(self) -> &'static str {
        match self {
            Refusal::ChannelNotGranted | Refusal::HostidMismatch => "403 Forbidden",
            _ => "401 Unauthorized",
        }
    }

    /// The short reason, as the body and the log give it.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "token missing",
            Refusal::Malformed(_) => "token malformed",
            Refusal::BadSignature => "bad signature",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not yet valid",
            Refusal::ChannelNotGranted => "channel not granted",
            Refusal::HostidMismatch => "hostid mismatch",
        }
    }

    /// The `error` of a `WWW-Authenticate: Bearer` challenge (RFC 6750 3.1);
    /// None for a missing token, which gets a challenge without one.
    pub fn bearer_error(self) -> Option<&'static str> {
        match self {
            Refusal::Missing => None,
            Refusal::ChannelNotGranted | Refusal::HostidMismatch => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(detail) => write!(f, "token malformed ({detail})"),
            other => f.write_str(other.reason()),
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `exp`: Unix seconds from which the token is no longer valid.
    pub exp: u64,
    /// `nbf`: Unix seconds before which it is not valid yet.
    pub nbf: Option<u64>,
    /// `channels`: names or patterns of the channels it grants.
    pub channels: Vec<String>,
    /// `hostid`: the hostid it is bound to.
    pub hostid: Option<String>,
}

impl Claims {
    /// Whether the token grants `channel`.
    pub fn grants(&self, channel: &[u8]) -> bool {
        pattern::any_matches(&self.channels, channel)
    }
}

/// Unix seconds from a NumericDate (RFC 7519 2): fractions dropped, a
/// date before 1970 is 0, one past the largest u64 is that (far away
/// either way). Works on the number as written, exponent included, with
/// integers only.
fn seconds(value: &Json) -> Option<u64> {
    let Json::Number(text) = value else {
        return None;
    };
    if text.starts_with('-') {
        return Some(0);
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => {
            let (negative, digits) = match e.as_bytes().first() {
                Some(b'-') => (true, &e[1..]),
                Some(b'+') => (false, &e[1..]),
                _ => (false, e),
            };
            // Capped: past 10^40 every value saturates or vanishes anyway.
            let n = digits.bytes().fold(0i64, |n, d| {
                (n * 10 + i64::from(d.wrapping_sub(b'0'))).min(1000)
            });
            (m, if negative { -n } else { n })
        }
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = digits(int frac) * 10^(exponent - frac.len())
    let shift = exponent - frac.len() as i64;
    let digits = int.bytes().chain(frac.bytes());
    let count = int.len() + frac.len();
    let keep = if shift < 0 {
        count.saturating_sub(shift.unsigned_abs() as usize)
    } else {
        count
    };
    let mut n = digits.take(keep).fold(0u64, |n, d| {
        n.saturating_mul(10)
            .saturating_add(u64::from(d.wrapping_sub(b'0')))
    });
    for _ in 0..shift.clamp(0, 40) {
        n = n.saturating_mul(10);
    }
    Some(n)
}

/// Reads and checks a token presented at Unix time `now` against the
/// configured `secrets` (either may have signed it, for rotation): its
/// form, its algorithm, its signature (compared in constant time), then
/// `exp` and `nbf`. Granting channels and hostids is up to the caller.
pub fn verify<S: AsRef<[u8]>>(token: &[u8], secrets: &[S], now: u64) -> Result<Claims, Refusal> {
    if token.is_empty() {
        return Err(Refusal::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed("longer than 4096 bytes"));
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("not three dot-separated parts"));
    };
    let (Some(header), Some(payload)) = (
        base64url::decode(header_b64),
        base64url::decode(payload_b64),
    ) else {
        return Err(Refusal::Malformed("header or payload is not base64url"));
    };
    if !base64url::is_alphabet(signature_b64) {
        return Err(Refusal::Malformed("signature is not base64url"));
    }
    let header = match json::parse(&header) {
        Some(header @ Json::Object(_)) => header,
        _ => return Err(Refusal::Malformed("header is not a JSON object")),
    };
    if header.get("crit").is_some() {
        return Err(Refusal::Malformed(
            "crit header parameters are not supported",
        ));
    }
    // Only HS256: `none`, HS512, RS256 (signed with a public key taken
    // for an HMAC secret) and the rest are refused outright.
    if header.get("alg") != Some(&Json::String("HS256".to_owned())) {
        return Err(Refusal::BadSignature);
    }
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    // Every secret is tried, matching or not, so the time taken does not
    // say which one matched. The signature is compared as text: any
    // character changed is a different signature.
    let mut valid = false;
    for secret in secrets {
        let expected = base64url::encode(&hmac_sha256(secret.as_ref(), signed));
        valid |= constant_time_eq(expected.as_bytes(), signature_b64);
    }
    if !valid {
        return Err(Refusal::BadSignature);
    }
    let claims = match json::parse(&payload) {
        Some(claims @ Json::Object(_)) => claims,
        _ => return Err(Refusal::Malformed("payload is not a JSON object")),
    };
    let exp = match claims.get("exp").map(seconds) {
        Some(Some(exp)) => exp,
        Some(None) => return Err(Refusal::Malformed("exp is not a number")),
        None => return Err(Refusal::Malformed("exp is missing")),
    };
    let nbf = match claims.get("nbf").map(seconds) {
        Some(Some(nbf)) => Some(nbf),
        Some(None) => return Err(Refusal::Malformed("nbf is not a number")),
        None => None,
    };
    let channels = match claims.get("channels") {
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or(Refusal::Malformed("channels is not an array of strings"))?,
        Some(_) => return Err(Refusal::Malformed("channels is not an array of strings")),
        None => return Err(Refusal::Malformed("channels is missing")),
    };
    let hostid = match claims.get("hostid") {
        Some(Json::String(h)) => Some(h.clone()),
        Some(_) => return Err(Refusal::Malformed("hostid is not a string")),
        None => None,
    };
    if now >= exp {
        return Err(Refusal::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW) < nbf) {
        return Err(Refusal::NotYetValid);
    }
    Ok(Claims {
        exp,
        nbf,
        channels,
        hostid,
    })
}

/// Writes `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON payload of `claims`, in a fixed member order.
pub fn payload(claims: &Claims) -> String {
    let mut out = String::from("{\"channels\":[");
    for (i, channel) in claims.channels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, channel);
    }
    out.push_str(&format!("],\"exp\":{}", claims.exp));
    if let Some(nbf) = claims.nbf {
        out.push_str(&format!(",\"nbf\":{nbf}"));
    }
    if let Some(hostid) = &claims.hostid {
        out.push_str(",\"hostid\":");
        json_string(&mut out, hostid);
    }
    out.push('}');
    out
}

/// A token for `claims`, signed with HS256 under `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let header = base64url::encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = base64url::encode(payload(claims).as_bytes());
    let signed = format!("{header}.{body}");
    let signature = base64url::encode(&hmac_sha256(secret, signed.as_bytes()));
    format!("{signed}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            exp: NOW + 60,
            nbf: None,
            channels: vec!["private-*".into(), "user-7".into()],
            hostid: None,
        }
    }

    /// Signs an arbitrary header and payload with `secret`.
    fn sign(secret: &[u8], header: &str, payload: &str) -> String {
        let signed = format!(
            "{}.{}",
            base64url::encode(header.as_bytes()),
            base64url::encode(payload.as_bytes())
        );
        let sig = base64url::encode(&hmac_sha256(secret, signed.as_bytes()));
        format!("{signed}.{sig}")
    }

    #[test]
    fn round_trip_and_grants() {
        let token = mint(b"k1", &claims());
        let got = verify(token.as_bytes(), &[b"k1"], NOW);
        assert_eq!(got, Ok(claims()));
        let c = claims();
        assert!(c.grants(b"private-x"));
        assert!(c.grants(b"user-7"));
        assert!(!c.grants(b"user-8"));
    }

    /// The example of RFC 7515 A.1 is HS256 with another key: its
    /// signature checks, and it lacks our claims.
    #[test]
    fn rfc_7515_example_signature() {
        let token = b"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = base64url::decode(b"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow").unwrap_or_default();
        assert_eq!(
            verify(token, &[&key], 0),
            Err(Refusal::Malformed("channels is missing"))
        );
        assert_eq!(verify(token, &[b"other"], 0), Err(Refusal::BadSignature));
    }

    #[test]
    fn rotation_either_secret() {
        let old = mint(b"old", &claims());
        let new = mint(b"new", &claims());
        let both: [&[u8]; 2] = [b"new", b"old"];
        assert!(verify(old.as_bytes(), &both, NOW).is_ok());
        assert!(verify(new.as_bytes(), &both, NOW).is_ok());
        assert_eq!(
            verify(old.as_bytes(), &[b"new"], NOW),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn refusals() {
        let k: [&[u8]; 1] = [b"k"];
        let good = mint(b"k", &claims());
        assert_eq!(verify(b"", &k, NOW), Err(Refusal::Missing));
        assert!(matches!(
            verify(b"a.b", &k, NOW),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            verify(b"a.b.c.d", &k, NOW),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            verify("x".repeat(5000).as_bytes(), &k, NOW),
            Err(Refusal::Malformed(_))
        ));
        // Tampered: every single character changed, anywhere.
        for i in 0..good.len() {
            let mut t = good.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            if t[i] == good.as_bytes()[i] {
                continue;
            }
            assert!(verify(&t, &k, NOW).is_err(), "changed at {i}");
        }
        let payload = payload(&claims());
        assert_eq!(
            verify(
                sign(b"k", r#"{"alg":"HS512","typ":"JWT"}"#, &payload).as_bytes(),
                &k,
                NOW
            ),
            Err(Refusal::BadSignature)
        );
        let none = format!(
            "{}.{}.",
            base64url::encode(br#"{"alg":"none"}"#),
            base64url::encode(payload.as_bytes())
        );
        assert_eq!(verify(none.as_bytes(), &k, NOW), Err(Refusal::BadSignature));
        assert_eq!(
            verify(
                sign(b"k", r#"{"alg":"HS256"}"#, r#"{"channels":["a"]}"#).as_bytes(),
                &k,
                NOW
            ),
            Err(Refusal::Malformed("exp is missing"))
        );
        assert_eq!(
            verify(
                sign(b"k", r#"{"alg":"HS256"}"#, r#"{"exp":1e12}"#).as_bytes(),
                &k,
                NOW
            ),
            Err(Refusal::Malformed("channels is missing"))
        );
        let expired = Claims {
            exp: NOW,
            ..claims()
        };
        assert_eq!(
            verify(mint(b"k", &expired).as_bytes(), &k, NOW),
            Err(Refusal::Expired)
        );
        let early = Claims {
            nbf: Some(NOW + CLOCK_SKEW + 1),
            ..claims()
        };
        assert_eq!(
            verify(mint(b"k", &early).as_bytes(), &k, NOW),
            Err(Refusal::NotYetValid)
        );
        let skewed = Claims {
            nbf: Some(NOW + CLOCK_SKEW),
            ..claims()
        };
        assert!(verify(mint(b"k", &skewed).as_bytes(), &k, NOW).is_ok());
        let bad_b64 = good.replacen('.', "!.", 1);
        assert!(matches!(
            verify(bad_b64.as_bytes(), &k, NOW),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn numeric_dates() {
        let cases = [
            ("0", 0),
            ("1700000000", 1_700_000_000),
            ("1700000000.999", 1_700_000_000),
            ("-5", 0),
            ("-0.5", 0),
            ("1.7e9", 1_700_000_000),
            ("17E+8", 1_700_000_000),
            ("1700000000e-3", 1_700_000),
            ("5e-1", 0),
            ("1e-99999999999999999999", 0),
            ("1e19", 10_000_000_000_000_000_000),
            ("1e20", u64::MAX),
            ("1e99999999999999999999", u64::MAX),
            ("0e99999", 0),
            ("99999999999999999999999", u64::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(seconds(&Json::Number(text.into())), Some(want), "{text}");
        }
        assert_eq!(seconds(&Json::String("1".into())), None);
    }

    #[test]
    fn words() {
        assert_eq!(Refusal::Missing.status(), "401 Unauthorized");
        assert_eq!(Refusal::HostidMismatch.status(), "403 Forbidden");
        assert_eq!(Refusal::Malformed("x").to_string(), "token malformed (x)");
    }
}
