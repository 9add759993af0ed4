//! Redirect URIs: which may be registered (OAuth 2.1 §2.3.1, RFC 8252 §7, MCP: "localhost or HTTPS") and
//! when a requested one matches a registered one.

use url::Url;

/// Why a redirect URI cannot be registered (RFC 7591 §3.2.2 `invalid_redirect_uri`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("{0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("{0:?} has a fragment, which redirect URIs must not have (RFC 6749 §3.1.2)")]
    Fragment(String),
    #[error("{0:?} must use https, a loopback http address, or a private-use scheme such as com.example.app:/cb")]
    Insecure(String),
    #[error(
        "{0:?} is a native application's redirect URI, and this client registered as a web application (OpenID Connect Registration §2: web clients use https)"
    )]
    NotForWeb(String),
}

/// Schemes that hand a browser's navigation to something other than an application that registered
/// for them: never redirect URIs.
const DANGEROUS_SCHEMES: [&str; 14] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "ftp",
    "ws",
    "wss",
    "chrome",
    "chrome-extension",
    "view-source",
    "filesystem",
    "intent",
];

/// The kinds RFC 8252 distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    Https,
    /// `http://127.0.0.1`, `http://[::1]` or `http://localhost`: the port may vary (RFC 8252 §7.3).
    Loopback,
    /// `com.example.app:/callback` (RFC 8252 §7.1), or a scheme an application claims without a
    /// reverse-domain name (`cursor://…`): RFC 8252 §7.1 says SHOULD, and clients in use do not.
    PrivateUse,
}

/// Checks that `uri` may be registered and says which kind it is.
pub fn classify(uri: &str) -> Result<RedirectKind, RedirectError> {
    let url = Url::parse(uri).map_err(|_| RedirectError::NotAbsolute(uri.to_owned()))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(RedirectError::Fragment(uri.to_owned()));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(RedirectKind::Https),
        "http" if is_loopback_host(&url) => Ok(RedirectKind::Loopback),
        "http" | "https" => Err(RedirectError::Insecure(uri.to_owned())),
        scheme if DANGEROUS_SCHEMES.contains(&scheme) => Err(RedirectError::Insecure(uri.to_owned())),
        _ => Ok(RedirectKind::PrivateUse),
    }
}

/// OpenID Connect Registration §2 `application_type`: a client that says it is a web application
/// redirects to https only; a native one (or one that does not say) may also use loopback and
/// private-use schemes.
pub fn check_for_application(
    uri: &str,
    kind: RedirectKind,
    application_type: Option<&str>,
) -> Result<(), RedirectError> {
    match (application_type, kind) {
        (Some("web"), RedirectKind::Loopback | RedirectKind::PrivateUse) => {
            Err(RedirectError::NotForWeb(uri.to_owned()))
        }
        _ => Ok(()),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Whether the `requested` redirect URI matches one of `registered`: exact string comparison
/// (OAuth 2.1 §4.1.3), except that a loopback URI may use any port (RFC 8252 §7.3), since native
/// clients bind an ephemeral port per sign-in.
pub fn matches(requested: &str, registered: &[String]) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(req) = Url::parse(requested) else { return false };
    if req.scheme() != "http" || !is_loopback_host(&req) {
        return false;
    }
    registered.iter().filter_map(|r| Url::parse(r).ok()).any(|reg| {
        reg.scheme() == "http"
            && reg.host() == req.host()
            && reg.path() == req.path()
            && reg.query() == req.query()
            && req.fragment().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_be_registered() {
        assert_eq!(classify("https://app.example.com/cb"), Ok(RedirectKind::Https));
        assert_eq!(classify("http://127.0.0.1:33418/callback"), Ok(RedirectKind::Loopback));
        assert_eq!(classify("http://[::1]/cb"), Ok(RedirectKind::Loopback));
        assert_eq!(classify("http://localhost:6274/oauth/callback"), Ok(RedirectKind::Loopback));
        assert_eq!(classify("com.example.app:/oauth2redirect"), Ok(RedirectKind::PrivateUse));
        assert!(matches!(classify("http://app.example.com/cb"), Err(RedirectError::Insecure(_))));
        assert!(matches!(classify("https://app.example.com/cb#x"), Err(RedirectError::Fragment(_))));
        assert!(matches!(classify("javascript:alert(1)"), Err(RedirectError::Insecure(_))));
        // Schemes without a reverse-domain name, as Cursor registers them.
        assert_eq!(classify("cursor://anysphere.cursor-mcp/oauth/callback"), Ok(RedirectKind::PrivateUse));
        assert_eq!(classify("myapp:/cb"), Ok(RedirectKind::PrivateUse));
        for bad in [
            "data:text/html,x",
            "file:///etc/passwd",
            "vbscript:x",
            "blob:https://a/b",
            "about:blank",
            "ws://a/b",
            "view-source:https://a",
        ] {
            assert!(matches!(classify(bad), Err(RedirectError::Insecure(_))), "{bad}");
        }
        assert!(check_for_application("cursor://a/cb", RedirectKind::PrivateUse, Some("web")).is_err());
        assert!(check_for_application("http://127.0.0.1/cb", RedirectKind::Loopback, Some("web")).is_err());
        assert!(check_for_application("cursor://a/cb", RedirectKind::PrivateUse, Some("native")).is_ok());
        assert!(check_for_application("cursor://a/cb", RedirectKind::PrivateUse, None).is_ok());
        assert!(matches!(classify("/relative"), Err(RedirectError::NotAbsolute(_))));
    }

    #[test]
    fn exact_matching_with_loopback_ports_free() {
        let reg = vec!["http://127.0.0.1/callback".to_owned(), "https://app.example.com/cb".to_owned()];
        assert!(matches("https://app.example.com/cb", &reg));
        assert!(!matches("https://app.example.com/cb/", &reg));
        assert!(!matches("https://app.example.com/cb?x=1", &reg));
        assert!(matches("http://127.0.0.1:50123/callback", &reg));
        assert!(!matches("http://127.0.0.1:50123/other", &reg));
        assert!(!matches("http://localhost:50123/callback", &reg), "the loopback host itself must match");
    }
}
