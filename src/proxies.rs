//! Trusted proxies (`TrustedProxies`): which peers may say, in
//! `X-Forwarded-For` or `Forwarded` (RFC 7239), whom they forward, and
//! finding that client in the headers. Pure functions, no I/O.
//!
//! The chain is walked from the right (the hop nearest to us) to the
//! left: addresses that are themselves trusted are skipped, the first one
//! that is not is the client. When every entry is trusted the left-most
//! is. An entry that is not an address (garbage, `unknown`, an obfuscated
//! identifier, a `Forwarded` element without `for=`) stops the walk:
//! nothing left of it is believed, and the client is the last address
//! found right of it (a trusted hop), or the peer when there is none.
//! `X-Forwarded-For` takes precedence: `Forwarded` is read only when a
//! request has no `X-Forwarded-For`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One address range: the address with its host bits cleared, and the
/// number of leading bits that must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    net: IpAddr,
    prefix: u8,
}

impl Range {
    fn contains(self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), self.prefix, 32) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (an address of `width` bits, right-aligned) with all but the
/// first `prefix` cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    match u32::from(width - prefix.min(width)) {
        128 => 0,
        host => bits & !((1u128 << host) - 1),
    }
}

/// The peers whose forwarding headers are believed: addresses and CIDR
/// ranges, IPv4 and IPv6. Empty (the default) believes no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Range>);

impl TrustedProxies {
    /// Parses a list of addresses and ranges separated by spaces or commas
    /// (`127.0.0.1, 10.0.0.0/8 fd00::/8`). A prefix longer than the
    /// address is refused; host bits under the prefix are ignored. The
    /// error names the entry, for the operator.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|e| !e.is_empty())
        {
            let bad = || {
                format!(
                    "'{entry}' is not an IP address or CIDR range (e.g. 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8)"
                )
            };
            let (address, prefix) = match entry.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (entry, None),
            };
            let ip: IpAddr = address.parse().map_err(|_| bad())?;
            let ip = ip.to_canonical();
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => width,
                Some(p)
                    if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    match p.parse::<u8>() {
                        Ok(n) if n <= width => n,
                        _ => return Err(bad()),
                    }
                }
                Some(_) => return Err(bad()),
            };
            let net = match ip {
                IpAddr::V4(v4) => {
                    let bits = mask(u32::from(v4).into(), prefix, 32);
                    IpAddr::V4(Ipv4Addr::from(bits as u32))
                }
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask(u128::from(v6), prefix, 128))),
            };
            ranges.push(Range { net, prefix });
        }
        Ok(TrustedProxies(ranges))
    }

    /// Whether `ip` is trusted; an IPv4-mapped IPv6 address is matched as
    /// the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|r| r.contains(ip))
    }

    /// The client of a request from `peer`: the peer itself unless it is
    /// trusted, else what the forwarding headers say (see the module
    /// comment for the walk and the precedence).
    pub fn client(&self, peer: IpAddr, headers: &Forwarding) -> IpAddr {
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        if headers.x_forwarded_for.iter().any(|v| !blank(v)) {
            let mut entries = Vec::new();
            for value in &headers.x_forwarded_for {
                entries.extend(
                    value
                        .split(',')
                        .filter(|e| !blank(e))
                        .map(|e| node(e.trim_matches([' ', '\t']))),
                );
            }
            return self.walk(peer, &entries);
        }
        let mut entries = Vec::new();
        for value in &headers.forwarded {
            match forwarded_for(value) {
                Some(list) => entries.extend(list),
                // A line that cannot be split is one entry of garbage.
                None => entries.push(None),
            }
        }
        self.walk(peer, &entries)
    }

    /// Walks `entries` (None: not an address) from the right.
    fn walk(&self, peer: IpAddr, entries: &[Option<IpAddr>]) -> IpAddr {
        let mut last = peer;
        for entry in entries.iter().rev() {
            match *entry {
                Some(ip) if self.contains(ip) => last = ip,
                Some(ip) => return ip,
                None => return last,
            }
        }
        last
    }
}

fn blank(s: &str) -> bool {
    s.bytes().all(|b| b == b' ' || b == b'\t')
}

/// The forwarding headers of one request, every line as sent and in
/// order, for [`TrustedProxies::client`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// `X-Forwarded-For` lines: comma-separated addresses, nearest last.
    pub x_forwarded_for: Vec<String>,
    /// `Forwarded` lines (RFC 7239): read only without `X-Forwarded-For`.
    pub forwarded: Vec<String>,
}

/// A node as a proxy writes it: an IP address, an IPv6 address in
/// brackets, either with a port (`1.2.3.4:80`, `[::1]:80`; an obfuscated
/// `_port` too). None for anything else (`unknown`, `_hidden`, garbage).
pub fn node(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port))
            .then_some(IpAddr::V6(ip));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (ip, port) = text.rsplit_once(':')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// RFC 7239 `node-port`: a port number (1 to 5 digits, at most 65535), or
/// `_` and an obfuscated name.
fn is_port(p: &str) -> bool {
    let digits = !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok();
    let obfuscated = p.strip_prefix('_').is_some_and(|o| {
        !o.is_empty()
            && o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    digits || obfuscated
}

/// The `for=` node of each element of one `Forwarded` line, in order
/// (None for an element without exactly one `for=`, or whose node is not
/// an address); None for the line when its quotes do not balance.
pub fn forwarded_for(line: &str) -> Option<Vec<Option<IpAddr>>> {
    let mut out = Vec::new();
    for element in split_outside_quotes(line, b',')? {
        if blank(element) {
            continue;
        }
        let mut found = None;
        let mut count = 0;
        for pair in split_outside_quotes(element, b';')? {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("for") {
                count += 1;
                found = unquote(value.trim_matches([' ', '\t'])).and_then(|v| node(&v));
            }
        }
        out.push(found.filter(|_| count == 1));
    }
    Some(out)
}

/// `text` split at each `sep` outside double quotes (a backslash escapes
/// the next character inside them); None if a quote is left open.
fn split_outside_quotes(text: &str, sep: u8) -> Option<Vec<&str>> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// A token or quoted string (RFC 9110 5.6.4), unquoted; None when a quote
/// is not closed at the end.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Who a connection is from: the socket's peer and, when a trusted proxy
/// forwarded the request, the client it named. Logs show both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The socket's peer: the proxy, when there is one.
    pub socket: SocketAddr,
    client: IpAddr,
}

impl Peer {
    /// A connection's peer, its own client until a request names another.
    pub fn new(socket: SocketAddr) -> Peer {
        Peer {
            socket,
            client: socket.ip(),
        }
    }

    /// The client's address: what `joinchannel`, `leavechannel` and
    /// `refused` records show.
    pub fn ip(&self) -> IpAddr {
        self.client
    }

    /// Takes the client from a request's forwarding headers, when the
    /// socket's peer is trusted to send them.
    pub fn forwarded(&mut self, trusted: &TrustedProxies, headers: &Forwarding) {
        self.client = trusted.client(self.socket.ip(), headers);
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.client == self.socket.ip() {
            write!(f, "{}", self.socket)
        } else {
            write!(f, "{} via {}", self.client, self.socket)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap_or_default()
    }

    fn xff(lines: &[&str]) -> Forwarding {
        Forwarding {
            x_forwarded_for: lines.iter().map(|s| s.to_string()).collect(),
            forwarded: Vec::new(),
        }
    }

    fn fwd(lines: &[&str]) -> Forwarding {
        Forwarding {
            x_forwarded_for: Vec::new(),
            forwarded: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ranges_of_both_families() {
        let t = trusted("127.0.0.2, 10.0.0.0/8 fd00::/8,::1 192.168.1.77/24 0.0.0.0/0");
        assert!(t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("fdab::1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        let t = trusted("127.0.0.2 10.0.0.0/8 fd00::/8 192.168.1.77/24");
        assert!(!t.contains(ip("127.0.0.3")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(!t.contains(ip("fe00::1")));
        assert!(t.contains(ip("192.168.1.1")));
        assert!(!t.contains(ip("192.168.2.1")));
        assert!(trusted("::/0").contains(ip("2001:db8::1")));
        assert!(!trusted("::/0").contains(ip("1.2.3.4")));
        assert!(TrustedProxies::parse("").is_ok_and(|t| t == TrustedProxies::default()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.0.0",
            "localhost",
            "fe80::1%eth0",
            "1.2.3.4:80",
            "[::1]",
        ] {
            let e = TrustedProxies::parse(&format!("127.0.0.1 {bad}"));
            assert!(e.as_ref().is_err_and(|e| e.contains(bad)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn nodes() {
        assert_eq!(node("1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(node("1.2.3.4:8080"), Some(ip("1.2.3.4")));
        assert_eq!(node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(node("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(node("1.2.3.4:_x1"), Some(ip("1.2.3.4")));
        for bad in [
            "",
            "unknown",
            "_hidden",
            "1.2.3.4:",
            "1.2.3.4:123456",
            "1.2.3.4:65536",
            "1.2.3.4:+80",
            "[1.2.3.4]",
            "[::1",
            "[::1]x",
            "::1:80:",
            "a.b.c.d",
            "1.2.3.4 5",
        ] {
            assert_eq!(node(bad), None, "{bad}");
        }
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right() {
        let t = trusted("127.0.0.2 10.0.0.0/24");
        let proxy = ip("127.0.0.2");
        // Untrusted peers are never believed.
        assert_eq!(
            t.client(ip("127.0.0.3"), &xff(&["9.9.9.9"])),
            ip("127.0.0.3")
        );
        assert_eq!(t.client(proxy, &xff(&["9.9.9.9"])), ip("9.9.9.9"));
        // A spoofed entry left of the real client is ignored.
        assert_eq!(
            t.client(proxy, &xff(&["6.6.6.6, 10.0.1.7"])),
            ip("10.0.1.7")
        );
        // Trusted hops are skipped.
        assert_eq!(
            t.client(proxy, &xff(&["6.6.6.6, 5.5.5.5, 10.0.0.9,10.0.0.8"])),
            ip("5.5.5.5")
        );
        // All trusted: the left-most.
        assert_eq!(
            t.client(proxy, &xff(&["10.0.0.9, 10.0.0.8"])),
            ip("10.0.0.9")
        );
        // Lines are one list, in order.
        assert_eq!(
            t.client(proxy, &xff(&["5.5.5.5", "10.0.0.8"])),
            ip("5.5.5.5")
        );
        assert_eq!(
            t.client(proxy, &xff(&["10.0.0.8", "5.5.5.5"])),
            ip("5.5.5.5")
        );
        // Garbage stops the walk: nothing left of it is believed.
        assert_eq!(t.client(proxy, &xff(&["5.5.5.5, junk"])), proxy);
        assert_eq!(
            t.client(proxy, &xff(&["5.5.5.5, junk, 10.0.0.8"])),
            ip("10.0.0.8")
        );
        // Empty elements and lines carry nothing.
        assert_eq!(t.client(proxy, &xff(&["", " 5.5.5.5 ,, "])), ip("5.5.5.5"));
        assert_eq!(t.client(proxy, &xff(&[""])), proxy);
        // Ports and brackets, as some proxies write them.
        assert_eq!(
            t.client(proxy, &xff(&["[2001:db8::7]:443, 10.0.0.8:80"])),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn forwarded_for_parameters() {
        let t = trusted("127.0.0.2 10.0.0.0/24");
        let proxy = ip("127.0.0.2");
        assert_eq!(
            t.client(
                proxy,
                &fwd(&["for=\"[2001:db8:cafe::17]:4711\";proto=https"])
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            t.client(proxy, &fwd(&["For=192.0.2.60;proto=http;by=203.0.113.43"])),
            ip("192.0.2.60")
        );
        assert_eq!(
            t.client(proxy, &fwd(&["for=6.6.6.6, for=5.5.5.5", "for=10.0.0.8"])),
            ip("5.5.5.5")
        );
        // unknown, obfuscated, missing or doubled for=: the walk stops.
        assert_eq!(t.client(proxy, &fwd(&["for=unknown"])), proxy);
        assert_eq!(
            t.client(proxy, &fwd(&["for=5.5.5.5, for=_hidden, for=10.0.0.8"])),
            ip("10.0.0.8")
        );
        assert_eq!(t.client(proxy, &fwd(&["proto=https"])), proxy);
        assert_eq!(t.client(proxy, &fwd(&["for=5.5.5.5;for=6.6.6.6"])), proxy);
        // A comma inside quotes does not split; an open quote spoils the line.
        assert_eq!(
            forwarded_for("for=\"1.2.3.4\";x=\"a,b\", for=5.6.7.8"),
            Some(vec![Some(ip("1.2.3.4")), Some(ip("5.6.7.8"))])
        );
        assert_eq!(forwarded_for("for=\"1.2.3.4"), None);
        assert_eq!(
            t.client(
                proxy,
                &fwd(&["for=5.5.5.5", "for=\"6.6.6.6", "for=10.0.0.8"])
            ),
            ip("10.0.0.8")
        );
        // X-Forwarded-For first.
        let both = Forwarding {
            x_forwarded_for: vec!["5.5.5.5".into()],
            forwarded: vec!["for=6.6.6.6".into()],
        };
        assert_eq!(t.client(proxy, &both), ip("5.5.5.5"));
    }

    #[test]
    fn peers_show_the_client_and_the_proxy() {
        let socket: SocketAddr = "127.0.0.2:5000"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        let mut peer = Peer::new(socket);
        assert_eq!(peer.to_string(), "127.0.0.2:5000");
        peer.forwarded(&trusted("127.0.0.2"), &xff(&["9.9.9.9"]));
        assert_eq!(peer.ip(), ip("9.9.9.9"));
        assert_eq!(peer.to_string(), "9.9.9.9 via 127.0.0.2:5000");
        peer.forwarded(&trusted(""), &xff(&["9.9.9.9"]));
        assert_eq!(peer.ip(), ip("127.0.0.2"));
    }
}
