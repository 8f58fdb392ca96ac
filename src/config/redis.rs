//! `RedisAddress`, parsed: where the Redis that several nodes share
//! channels through lives. Here rather than in the cluster module so that
//! configuration depends on no part of the server it configures.

use std::net::{SocketAddr, ToSocketAddrs};

/// `RedisAddress`: `[password@]host:port[/db]`, with the host resolved once
/// at load so that a typo is reported at start rather than at each reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub addr: SocketAddr,
    /// Sent with AUTH after connecting; None when the address has no `@`.
    pub password: Option<Vec<u8>>,
    /// Selected with SELECT after connecting (0 when not given).
    pub db: u32,
}

impl RedisSettings {
    /// Parses `RedisAddress`; the host is resolved once, here.
    pub fn parse(value: &str) -> Result<RedisSettings, String> {
        let (password, rest) = match value.rsplit_once('@') {
            Some((p, r)) => (Some(p.as_bytes().to_vec()), r),
            None => (None, value),
        };
        let (host, db) = match rest.split_once('/') {
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| format!("'{d}' is not a database index"))?,
            ),
            None => (rest, 0),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve '{host}': {e}"))?
            .next()
            .ok_or_else(|| format!("'{host}' has no address"))?;
        Ok(RedisSettings { addr, password, db })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() -> Result<(), String> {
        let s = RedisSettings::parse("pw@127.0.0.1:6380/2")?;
        assert_eq!(s.addr, SocketAddr::from(([127, 0, 0, 1], 6380)));
        assert_eq!(s.password, Some(b"pw".to_vec()));
        assert_eq!(s.db, 2);
        assert!(RedisSettings::parse("127.0.0.1:1/x").is_err());
        Ok(())
    }
}
