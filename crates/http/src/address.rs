//! Where a request came from. Without trusted proxies, the connection's peer. Behind proxies the
//! operator names (`proxy.trusted_proxies`), the right-most `X-Forwarded-For` address that is not one of
//! them: each trusted proxy appends the address it received from, so that address is the last one
//! nobody trusted could have written. Anything unreadable in the header, or a header of trusted
//! addresses only, leaves the peer: the allowances then count the proxy, which is stricter, never looser.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The source address of a request from `peer` with `headers`.
pub(crate) fn source(trusted: &[IpNet], headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>();
    hops.reverse();
    for value in hops {
        let Ok(value) = value.to_str() else { return Some(peer) };
        for hop in value.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { return Some(peer) };
            if !is_trusted(&ip) {
                return Some(ip);
            }
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(source(&trusted, &headers(&["203.0.113.9"]), ip("198.51.100.1")), ip("198.51.100.1"));
        // Behind the balancer: the address it appended, not what the client claimed before it.
        assert_eq!(source(&trusted, &headers(&["1.2.3.4, 203.0.113.9"]), balancer), ip("203.0.113.9"));
        // Two trusted hops, and the header split over two lines.
        assert_eq!(source(&trusted, &headers(&["203.0.113.9", "10.1.1.1"]), balancer), ip("203.0.113.9"));
        assert_eq!(source(&trusted, &headers(&["2001:db8::7, 10.9.9.9"]), balancer), ip("2001:db8::7"));
        // Nothing readable, nothing untrusted, no header: the balancer itself (stricter, not looser).
        assert_eq!(source(&trusted, &headers(&["203.0.113.9, garbage"]), balancer), balancer);
        assert_eq!(source(&trusted, &headers(&["10.3.3.3"]), balancer), balancer);
        assert_eq!(source(&trusted, &HeaderMap::new(), balancer), balancer);
        assert_eq!(source(&[], &headers(&["203.0.113.9"]), balancer), balancer, "no proxy trusted");
        assert_eq!(source(&trusted, &HeaderMap::new(), None), None);
    }
}
