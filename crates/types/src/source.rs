//! Which source a request's address counts as, for limits kept per source.

use std::net::{IpAddr, Ipv6Addr};

/// The block `ip` counts in for per-source limits: an IPv4 address (also one written as IPv4-mapped
/// IPv6) is its own block; an IPv6 address counts as its /64, the smallest prefix a network is given
/// (RFC 6177), since a host picks any address in its /64 and would otherwise get a fresh allowance
/// for every one.
pub fn source_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_ipv4_as_itself() {
        let block = |s: &str| source_block(s.parse().unwrap()).to_string();
        assert_eq!(block("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(block("2001:db8:1:2::1"), block("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(block("2001:db8:1:2::1"), block("2001:db8:1:3::1"));
        assert_eq!(block("192.0.2.7"), "192.0.2.7");
        assert_eq!(block("::ffff:192.0.2.7"), "192.0.2.7");
        assert_ne!(block("192.0.2.7"), block("192.0.2.8"));
    }
}
