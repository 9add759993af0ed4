//! The second stage: RFC 9728 protected resource metadata, found where the challenge says or at the
//! well-known URLs clients try, with `resource` identical to the URL used and an authorization server.

use portcullis_oauth::discovery::fetch_json;
use serde_json::Value;
use url::Url;

use super::Report;

/// What the metadata names.
pub(super) struct Resource {
    /// Its `resource`, as published.
    pub(super) resource: String,
    /// `authorization_servers[0]`.
    pub(super) issuer: String,
}

pub(super) async fn check(
    http: &reqwest::Client,
    url: &Url,
    prm_from_header: Option<String>,
    r: &mut Report,
) -> Option<Resource> {
    const P: &str = "protected resource metadata";
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut candidates = Vec::new();
    if let Some(h) = &prm_from_header {
        candidates.push(h.clone());
    }
    if !path.is_empty() {
        candidates.push(format!("{origin}/.well-known/oauth-protected-resource{path}"));
    }
    candidates.push(format!("{origin}/.well-known/oauth-protected-resource"));
    let mut prm = None;
    let mut tried = Vec::new();
    for c in &candidates {
        let Ok(u) = Url::parse(c) else { continue };
        match fetch_json(http, &u).await {
            Ok(doc) => {
                prm = Some((c.clone(), doc));
                break;
            }
            Err(e) => tried.push(format!("{c} → {e}")),
        }
    }
    let Some((prm_url, prm)) = prm else {
        r.fail(
            P,
            "prm.found",
            format!("no metadata found: {}", tried.join("; ")),
            "serve RFC 9728 metadata at /.well-known/oauth-protected-resource<path>",
        );
        return None;
    };
    r.pass(P, "prm.found", prm_url.clone());
    let resource = prm.get("resource").and_then(Value::as_str).unwrap_or_default();
    let expected = url.as_str().trim_end_matches('/');
    if resource == expected || resource == url.as_str() {
        r.pass(P, "prm.resource-matches", format!("resource \"{resource}\""));
    } else {
        let hint =
            if resource.trim_end_matches('/') == expected { " (they differ only by a trailing slash)" } else { "" };
        r.fail(P, "prm.resource-matches", format!("resource is \"{resource}\", the URL used is \"{expected}\"{hint}; RFC 9728 §3.3 requires them identical"), "set resource to the MCP endpoint URL exactly as clients use it");
    }
    let Some(as_issuer) =
        prm.get("authorization_servers").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str)
    else {
        r.fail(
            P,
            "prm.authorization-servers",
            "no authorization_servers",
            "list the authorization server's issuer (RFC 9728 §2, MCP authorization)",
        );
        return None;
    };
    r.pass(P, "prm.authorization-servers", format!("authorization_servers[0] = \"{as_issuer}\""));

    Some(Resource { resource: resource.to_owned(), issuer: as_issuer.to_owned() })
}
