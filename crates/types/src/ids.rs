//! Identifier newtypes. URLs keep the exact string they were given: RFC 8414 §3.3, RFC 9207 §2.4 and
//! RFC 9728 §3.3 all compare by simple string comparison, so normalising here would hide real faults.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

/// Why a string is not a valid identifier of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{0:?} is not an absolute URL: {1}")]
    NotAUrl(String, String),
    #[error("{0:?} must use https (http is allowed only for loopback hosts)")]
    Insecure(String),
    #[error("{0:?} must not contain a fragment")]
    Fragment(String),
    #[error("{0:?} must not contain a query")]
    Query(String),
    #[error("{0:?} must not contain user information")]
    UserInfo(String),
}

/// Whether `url` names this machine (RFC 8252 §7.3 loopback, plus `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

/// Whether what is sent to `url` is protected in transit: https, or a loopback address (nothing
/// crosses a network).
pub fn https_or_loopback(url: &Url) -> bool {
    url.scheme() == "https" || is_loopback(url)
}

fn parse_web_url(s: &str) -> Result<Url, IdError> {
    let url = Url::parse(s).map_err(|e| IdError::NotAUrl(s.to_owned(), e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => return Err(IdError::Insecure(s.to_owned())),
    }
    if url.fragment().is_some() || s.contains('#') {
        return Err(IdError::Fragment(s.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(IdError::UserInfo(s.to_owned()));
    }
    Ok(url)
}

macro_rules! url_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name {
            raw: String,
            #[serde(skip)]
            url: Url,
        }

        impl $name {
            /// The exact string, as configured or received.
            pub fn as_str(&self) -> &str {
                &self.raw
            }

            /// The parsed URL, for building derived URLs.
            pub fn url(&self) -> &Url {
                &self.url
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.raw
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.raw)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.raw)
            }
        }
    };
}

url_newtype!(
    /// An authorization server's issuer identifier (RFC 8414 §2): https (or loopback http), no query,
    /// no fragment. Compared exactly as written, trailing slash included.
    IssuerUrl
);

impl IssuerUrl {
    /// Parses an issuer identifier.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let url = parse_web_url(s)?;
        if url.query().is_some() {
            return Err(IdError::Query(s.to_owned()));
        }
        Ok(Self { raw: s.to_owned(), url })
    }
}

url_newtype!(
    /// A protected resource identifier (RFC 8707 §2, RFC 9728 §1): the canonical URL of one MCP
    /// endpoint, the value clients send as `resource` and we expect in `aud`.
    ResourceUrl
);

impl ResourceUrl {
    /// Parses a resource identifier. A query is tolerated by RFC 8707 but discouraged; we refuse it so
    /// that the identifier clients derive from the MCP URL is unambiguous.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let url = parse_web_url(s)?;
        if url.query().is_some() {
            return Err(IdError::Query(s.to_owned()));
        }
        Ok(Self { raw: s.to_owned(), url })
    }

    /// The resource URL for `path` on the origin `base` (`https://host[:port]`), without a trailing
    /// slash unless `path` is `/` and the origin alone is meant.
    pub fn for_path(base: &Url, path: &str) -> Result<Self, IdError> {
        let origin = base.origin().ascii_serialization();
        let s = if path == "/" { origin } else { format!("{origin}{path}") };
        Self::parse(&s)
    }

    /// The origin alone, e.g. `https://mcp.example.com`.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps the value as given.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

string_newtype!(
    /// An OAuth client identifier (RFC 6749 §2.2).
    ClientId
);
string_newtype!(
    /// A JWK key id (RFC 7517 §4.5).
    Kid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_keeps_the_exact_string() {
        let a = IssuerUrl::parse("https://idp.example.com/").unwrap();
        let b = IssuerUrl::parse("https://idp.example.com").unwrap();
        assert_ne!(a, b, "a trailing slash is a different issuer (RFC 8414 §3.3)");
        assert_eq!(a.as_str(), "https://idp.example.com/");
    }

    #[test]
    fn issuer_rejects_insecure_query_fragment_userinfo() {
        assert!(matches!(IssuerUrl::parse("http://idp.example.com"), Err(IdError::Insecure(_))));
        assert!(IssuerUrl::parse("http://127.0.0.1:9000").is_ok());
        assert!(IssuerUrl::parse("http://localhost:9000").is_ok());
        assert!(matches!(IssuerUrl::parse("https://a.example/?x=1"), Err(IdError::Query(_))));
        assert!(matches!(IssuerUrl::parse("https://a.example/#x"), Err(IdError::Fragment(_))));
        assert!(matches!(IssuerUrl::parse("https://u:p@a.example/"), Err(IdError::UserInfo(_))));
        assert!(matches!(IssuerUrl::parse("not a url"), Err(IdError::NotAUrl(..))));
    }

    #[test]
    fn resource_for_path_has_no_trailing_slash() {
        let base = Url::parse("https://mcp.example.com/").unwrap();
        assert_eq!(ResourceUrl::for_path(&base, "/mcp").unwrap().as_str(), "https://mcp.example.com/mcp");
        assert_eq!(ResourceUrl::for_path(&base, "/").unwrap().as_str(), "https://mcp.example.com");
        let port = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(ResourceUrl::for_path(&port, "/a/b").unwrap().as_str(), "http://127.0.0.1:8080/a/b");
    }

    #[test]
    fn serde_round_trip() {
        let r: ResourceUrl = serde_json::from_str("\"https://mcp.example.com/mcp\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"https://mcp.example.com/mcp\"");
        assert!(serde_json::from_str::<ResourceUrl>("\"ftp://x\"").is_err());
    }
}
