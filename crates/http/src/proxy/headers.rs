//! What the gate does to headers on their way through: hop-by-hop headers dropped both ways, headers
//! the gate manages (credentials, forwarding and identity headers) stripped from requests under any
//! spelling, and the forwarding headers that say who called set.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::ServerRuntime;

/// Connection-level headers (RFC 9110 §7.6.1) that must not be forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful) rather than a lookup per hop-by-hop name; nothing is
    // allocated when there is nothing to remove.
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    doomed.extend(headers.keys().filter(|k| HOP_BY_HOP.contains(k)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// Headers the gate sets or drops itself, besides the identity headers: a client's own values never
/// pass. The hop-by-hop names are among them, every `x-forwarded-*`, the client-address headers of
/// CDNs and load balancers that upstream frameworks trust (the gate's `X-Forwarded-For` says it), and
/// the method and URL overrides some frameworks obey (the gate judged the request's own method and
/// path).
fn gate_managed(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "cookie"
            | "content-length"
            | "forwarded"
            | "x-real-ip"
            | "true-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
            | "x-original-url"
            | "x-rewrite-url"
            | "proxy-authorization"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with("x-forwarded-")
}

/// A header name as CGI and WSGI upstreams see it: `X_User_Sub` and `x-user-sub` both become
/// `HTTP_X_USER_SUB` there, so names are compared case-insensitively with `_` read as `-`.
pub(crate) fn cgi_name(name: &str) -> String {
    name.bytes().map(|b| if b == b'_' { '-' } else { b.to_ascii_lowercase() as char }).collect()
}

/// Removes every inbound header that names, or normalises to, something the gate manages: credentials,
/// forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`), identity headers and the forwarded
/// IdP token's header. Clients cannot spoof them under any spelling. `Mcp-Method` and `Mcp-Name` pass
/// only as spelt, once checked against the body.
pub(super) fn strip_managed(headers: &mut HeaderMap, server: &ServerRuntime, identity: &[(HeaderName, HeaderValue)]) {
    // The ones nearly every request carries, removed by name; what the scan below then finds is rare, and
    // an empty list costs no allocation.
    for name in [header::HOST, header::CONTENT_LENGTH, header::AUTHORIZATION] {
        headers.remove(name);
    }
    let managed = |name: &str| {
        // Header names are lower case already; only an `_` makes a CGI spelling differ.
        let cgi = name.contains('_');
        let name = if cgi { std::borrow::Cow::Owned(cgi_name(name)) } else { name.into() };
        let name = name.as_ref();
        // `Mcp-Method` and `Mcp-Name` are checked against the body (`rpc::check_headers`), and
        // `Last-Event-ID` is withheld where rules filter answers; another spelling of them would reach a
        // CGI or WSGI upstream unchecked.
        (cgi && matches!(name, "mcp-method" | "mcp-name" | "last-event-id"))
            || gate_managed(name)
            || server.identity_names.iter().any(|n| n == name)
            || identity.iter().map(|(n, _)| n.as_str()).any(|n| n == name || (n.contains('_') && cgi_name(n) == name))
    };
    let doomed: Vec<HeaderName> = headers.keys().filter(|k| managed(k.as_str())).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The parts of the forwarding headers that depend only on the public origin a request came in on,
/// written once per configured origin rather than once per request.
#[derive(Debug)]
pub(crate) struct OriginHeaders {
    proto: HeaderValue,
    /// `None` for an origin without a host (never for a valid `public_url`).
    host: Option<HeaderValue>,
    /// `proto=…;host="…"`: how every `Forwarded` value for this origin ends.
    forwarded: String,
}

impl OriginHeaders {
    pub(crate) fn new(origin: &url::Url) -> Self {
        let host = crate::authority(origin);
        let mut forwarded = format!("proto={}", origin.scheme());
        if !host.is_empty() {
            forwarded.push_str(&format!(";host=\"{host}\""));
        }
        Self {
            proto: HeaderValue::from_str(origin.scheme()).unwrap_or_else(|_| HeaderValue::from_static("http")),
            host: HeaderValue::from_str(&host).ok().filter(|_| !host.is_empty()),
            forwarded,
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Who called, as the gate saw it: `X-Forwarded-For`, `X-Real-IP` and RFC 7239 `Forwarded` (the peer
/// address), `X-Forwarded-Proto` and `-Host` (the public origin the request came in on), set in
/// `headers` (replacing whatever the names held). The three values that name the peer are written into
/// one buffer and share it.
pub(super) fn set_forwarding_headers(headers: &mut HeaderMap, peer: Option<std::net::IpAddr>, origin: &OriginHeaders) {
    use std::fmt::Write;
    headers.reserve(5);
    let mut forwarded = bytes::BytesMut::with_capacity(56 + origin.forwarded.len());
    let ip_at = peer.map(|ip| match ip {
        std::net::IpAddr::V4(v4) => {
            forwarded.extend_from_slice(b"for=");
            let start = forwarded.len();
            push_ipv4(&mut forwarded, v4);
            let at = start..forwarded.len();
            forwarded.extend_from_slice(b";");
            at
        }
        // RFC 7239 §6: IPv6 addresses are bracketed and quoted.
        std::net::IpAddr::V6(v6) => {
            let _ = write!(forwarded, "for=\"[{v6}]\";");
            6..forwarded.len() - 3
        }
    });
    forwarded.extend_from_slice(origin.forwarded.as_bytes());
    let forwarded = forwarded.freeze();
    if let Some(at) = ip_at
        && let Ok(v) = HeaderValue::from_maybe_shared(forwarded.slice(at))
    {
        headers.insert(X_FORWARDED_FOR, v.clone());
        headers.insert(X_REAL_IP, v);
    }
    headers.insert(X_FORWARDED_PROTO, origin.proto.clone());
    if let Some(host) = &origin.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// An IPv4 address in dotted decimal, as `Display` writes it, without the formatting machinery (a
/// thousand instructions on every proxied request).
fn push_ipv4(out: &mut bytes::BytesMut, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b".");
        }
        if octet >= 100 {
            out.extend_from_slice(&[b'0' + octet / 100]);
        }
        if octet >= 10 {
            out.extend_from_slice(&[b'0' + octet / 10 % 10]);
        }
        out.extend_from_slice(&[b'0' + octet % 10]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-session-id"));
    }

    #[test]
    fn forwarding_headers_name_the_peer_and_the_public_origin() {
        let origin = OriginHeaders::new(&url::Url::parse("https://mcp.example.com:8443").unwrap());
        let mut headers = HeaderMap::new();
        set_forwarding_headers(&mut headers, Some("2001:db8::1".parse().unwrap()), &origin);
        let h: HashMap<String, String> =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect();
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=https;host=\"mcp.example.com:8443\"");
        assert_eq!(h["x-real-ip"], "2001:db8::1");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-host"], "mcp.example.com:8443");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn forwarding_headers_for_an_ipv4_peer_on_a_default_port() {
        let origin = OriginHeaders::new(&url::Url::parse("http://127.0.0.1").unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        set_forwarding_headers(&mut headers, Some("192.0.2.7".parse().unwrap()), &origin);
        assert_eq!(headers["forwarded"], "for=192.0.2.7;proto=http;host=\"127.0.0.1\"");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(headers["x-real-ip"], "192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "127.0.0.1");
        set_forwarding_headers(&mut headers, None, &origin);
        assert_eq!(headers["forwarded"], "proto=http;host=\"127.0.0.1\"");
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            for ip in [[octet, 0, 0, 0], [1, octet, 2, 3], [255, 9, octet, 10], [99, 100, 0, octet]] {
                let ip = std::net::Ipv4Addr::from(ip);
                let mut out = bytes::BytesMut::new();
                push_ipv4(&mut out, ip);
                assert_eq!(out, ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn cgi_spellings_collide() {
        assert_eq!(cgi_name("X_User_Sub"), "x-user-sub");
        assert_eq!(cgi_name("X_Forwarded_For"), "x-forwarded-for");
    }
}
