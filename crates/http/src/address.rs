//! Where a request came from. Without trusted proxies, the connection's peer. Behind proxies the
//! operator names (`proxy.trusted_proxies`), the right-most forwarded address that is not one of them:
//! each trusted proxy appends the address it received from, so that address is the last one nobody
//! trusted could have written. The addresses are read from the header the proxies write
//! (`proxy.forwarded_header`): `X-Forwarded-For`, or the RFC 7239 `Forwarded` header's `for=`
//! parameters; never from the other, which a proxy that does not write it passes on as the client sent
//! it. Anything unreadable (an obfuscated or `unknown` node included), or a header of trusted addresses
//! only, leaves the peer: the allowances then count the proxy, which is stricter, never looser.

use std::net::IpAddr;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use ipnet::IpNet;
use portcullis_config::{ForwardedHeader, ProxyConfig};

/// The source address of a request with `headers` and `extensions` (its connection's peer), behind
/// `proxy`'s trusted proxies.
pub(crate) fn of_request(proxy: &ProxyConfig, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    source(&proxy.trusted_proxies, proxy.forwarded_header, headers, peer)
}

/// The source address of a request from `peer` with `headers`, behind the `trusted` proxies that write
/// `header`.
fn source(trusted: &[IpNet], header: ForwardedHeader, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded = header == ForwardedHeader::Forwarded;
    let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
    let mut lines = headers.get_all(name).iter().collect::<Vec<_>>();
    lines.reverse();
    for value in lines {
        let Ok(value) = value.to_str() else { return Some(peer) };
        for hop in value.rsplit(',') {
            let ip = if forwarded { forwarded_for(hop) } else { hop.trim().parse::<IpAddr>().ok() };
            let Some(ip) = ip else { return Some(peer) };
            if !is_trusted(&ip) {
                return Some(ip);
            }
        }
    }
    Some(peer)
}

/// The address in the `for=` parameter of one `Forwarded` element (RFC 7239 §4, §6): `192.0.2.43`,
/// `"192.0.2.43:47011"`, `"[2001:db8:cafe::17]"` or `"[2001:db8:cafe::17]:4711"`; `None` for
/// `unknown`, an obfuscated name, a missing parameter or anything unreadable. Parameter names are
/// case-insensitive. Quoted values with `,` or `;` inside are not expected in `for=` and read as
/// unreadable.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    if let Some(bracketed) = value.strip_prefix('[') {
        let (ip, port) = bracketed.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = match value.split_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return None,
        None => value,
    };
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_right_most_untrusted_forwarded_address_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let balancer = ip("10.0.0.2");
        // No proxy in front: the peer, whatever the header says.
        assert_eq!(source(&trusted, XFF, &headers(&["203.0.113.9"]), ip("198.51.100.1")), ip("198.51.100.1"));
        // Behind the balancer: the address it appended, not what the client claimed before it.
        assert_eq!(source(&trusted, XFF, &headers(&["1.2.3.4, 203.0.113.9"]), balancer), ip("203.0.113.9"));
        // Two trusted hops, and the header split over two lines.
        assert_eq!(source(&trusted, XFF, &headers(&["203.0.113.9", "10.1.1.1"]), balancer), ip("203.0.113.9"));
        assert_eq!(source(&trusted, XFF, &headers(&["2001:db8::7, 10.9.9.9"]), balancer), ip("2001:db8::7"));
        // Nothing readable, nothing untrusted, no header: the balancer itself (stricter, not looser).
        assert_eq!(source(&trusted, XFF, &headers(&["203.0.113.9, garbage"]), balancer), balancer);
        assert_eq!(source(&trusted, XFF, &headers(&["10.3.3.3"]), balancer), balancer);
        assert_eq!(source(&trusted, XFF, &HeaderMap::new(), balancer), balancer);
        assert_eq!(source(&[], XFF, &headers(&["203.0.113.9"]), balancer), balancer, "no proxy trusted");
        assert_eq!(source(&trusted, XFF, &HeaderMap::new(), None), None);
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("forwarded", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_the_proxies_write_it() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let balancer = ip("10.0.0.2");
        let cases = [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"192.0.2.43:47011\"", "192.0.2.43"),
            ("for=198.51.100.17, for=10.1.2.3", "198.51.100.17"),
            ("for=1.2.3.4, for=198.51.100.17;proto=https", "198.51.100.17"),
        ];
        for (header, want) in cases {
            assert_eq!(
                source(&trusted, ForwardedHeader::Forwarded, &forwarded(&[header]), balancer),
                ip(want),
                "{header}"
            );
        }
        // Only the header the proxies write is read: the other is the client's, passed on.
        let mut both = forwarded(&["for=192.0.2.60"]);
        both.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        assert_eq!(source(&trusted, ForwardedHeader::Forwarded, &both, balancer), ip("192.0.2.60"));
        assert_eq!(source(&trusted, XFF, &both, balancer), ip("198.51.100.1"));
        assert_eq!(source(&trusted, XFF, &forwarded(&["for=192.0.2.60"]), balancer), balancer);
        // Unknown, obfuscated, missing or malformed: the balancer.
        for header in
            ["for=unknown", "for=_hidden", "proto=https", "for=\"[2001:db8::1\"", "for=192.0.2.1:x", "for=\"1.2.3.4"]
        {
            assert_eq!(
                source(&trusted, ForwardedHeader::Forwarded, &forwarded(&[header]), balancer),
                balancer,
                "{header}"
            );
        }
        // Not behind a trusted proxy: the peer, whatever the header says.
        assert_eq!(
            source(&trusted, ForwardedHeader::Forwarded, &forwarded(&["for=192.0.2.60"]), ip("198.51.100.9")),
            ip("198.51.100.9")
        );
    }
}
