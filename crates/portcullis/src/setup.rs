//! Start-up wiring of the verifiers: one discovery and one key cache per IdP (its issuer, the issuer its
//! document states, a configured key set URL, and whether its servers can do without keys), shared by
//! every server that trusts it; an IdP that cannot be reached now is awaited. Gateway-mode servers
//! verify against the gateway's own keys.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_authz::gateway::Gateway;
use portcullis_config::{Config, ServerAuth, TokenInfoKind, VerifyConfig};
use portcullis_oauth::discovery::{Awaited, discover_publishing, retry};
use portcullis_oauth::error::DiscoveryError;
use portcullis_oauth::introspect::Introspector;
use portcullis_oauth::jwks::{JwksCache, KeySet};
use portcullis_oauth::verify::{Verifier, VerifierConfig};
use portcullis_types::Clock;

/// What makes two servers' IdPs one: the issuer, the issuer its document states, a configured key set
/// URL, and whether the servers can do without a key set.
type IdpKey = (String, Option<String>, Option<String>, bool);

/// One verifier per configured server (`None` for unauthenticated servers), in configuration order.
///
/// An IdP that cannot be reached at start (or answers 5xx, 429 or 408) does not keep the gate down: its
/// servers refuse every token as unavailable (503, and `/readyz` says not ready) while discovery is
/// tried again in the background, 1 s after start and then twice as long each time up to a minute.
/// One that answers with something wrong (another issuer, no `jwks_uri`, an unusable field, no
/// metadata where it should be) is a configuration to fix: that fails here, naming the server.
pub(crate) async fn verifiers(
    config: &Config,
    http: &reqwest::Client,
    clock: Arc<dyn Clock>,
    gateway: Option<&Gateway>,
) -> Result<Vec<Option<Arc<Verifier>>>, (String, DiscoveryError)> {
    // One key set per IdP (its issuer, how its document names itself, and any configured key set URL),
    // shared by every server that trusts it.
    let mut caches: HashMap<IdpKey, Arc<JwksCache>> = HashMap::new();
    let mut out = Vec::new();
    for server in &config.servers {
        let v = match (&server.auth, gateway) {
            (ServerAuth::Verify(v), _) => v,
            (ServerAuth::Gateway, Some(g)) => {
                out.push(Some(Arc::new(Verifier::new(
                    g.verifier_config(server),
                    g.public_keys(),
                    clock.clone(),
                    None,
                ))));
                continue;
            }
            _ => {
                out.push(None);
                continue;
            }
        };
        // Opaque tokens checked at the IdP's own token-info endpoint (Google, GitHub) need neither its
        // metadata nor keys.
        let token_info_only = v.introspection.as_ref().is_some_and(|i| i.kind != TokenInfoKind::Rfc7662);
        let keys = if token_info_only {
            JwksCache::fixed(KeySet::default(), clock.clone())
        } else {
            // Whether the server can do without a key set (a shared secret, introspection) is part of it:
            // a server that needs one must not reuse the empty set another server was content with.
            let keyless = v.hs256_secret.is_some() || v.introspection.is_some();
            let idp =
                (v.issuer.to_string(), v.published_issuer.clone(), v.jwks_uri.as_ref().map(|u| u.to_string()), keyless);
            match caches.get(&idp) {
                Some(c) => c.clone(),
                None => {
                    let why = format!("the IdP {} has not been discovered yet", v.issuer);
                    let cache = JwksCache::awaiting(http.clone(), clock.clone(), why);
                    match resolve_keys(&cache, http, v).await {
                        Ok(()) => {}
                        Err(e) if e.is_transient() => {
                            tracing::error!(
                                path = %server.path,
                                issuer = %v.issuer,
                                error = %e,
                                "the IdP cannot be discovered now: tokens for this server are refused as unavailable (503) \
                                 until it can; trying again in the background"
                            );
                            keep_discovering(cache.clone(), http.clone(), (**v).clone());
                        }
                        Err(e) => return Err((server.path.clone(), e)),
                    }
                    caches.insert(idp, cache.clone());
                    cache
                }
            }
        };
        let introspector = v
            .introspection
            .as_ref()
            .map(|i| Introspector::from_config(i, http.clone(), clock.clone()).with_max_cache_secs(v.cache.as_secs()));
        let cfg = VerifierConfig::for_server(server, v);
        tracing::info!(
            path = %server.path,
            issuer = %v.issuer,
            jwks_uri = keys.uri().map(|u| u.as_str()).unwrap_or("-"),
            accepted_audiences = ?cfg.audience.accepted(),
            resource_claim_audiences = ?cfg.audience.resource_claim_audiences,
            "verifying tokens"
        );
        out.push(Some(Arc::new(Verifier::new(cfg, keys, clock.clone(), introspector))));
    }
    Ok(out)
}

/// Discovers `v`'s IdP (its metadata is checked even where the key set URL is configured) and puts its
/// key set in force in `cache`.
async fn resolve_keys(cache: &Arc<JwksCache>, http: &reqwest::Client, v: &VerifyConfig) -> Result<(), DiscoveryError> {
    let meta = discover_publishing(http, &v.issuer, v.published_issuer.as_deref()).await?;
    match v.jwks_uri.clone().or_else(|| meta.jwks_uri.clone()) {
        Some(uri) => cache.resolve(Some(uri)).await,
        // A shared-secret-only or introspection-only deployment needs no key set.
        None if v.hs256_secret.is_some() || v.introspection.is_some() => cache.resolve(None).await,
        None => Err(DiscoveryError::NoJwksUri { url: meta.source.to_string() }),
    }
}

/// Tries again, in the background, to discover an IdP that could not be discovered at start, until it
/// can: its servers answer 503 until then.
fn keep_discovering(cache: Arc<JwksCache>, http: reqwest::Client, v: VerifyConfig) {
    tokio::spawn(async move {
        let awaited = Awaited {
            issuer: v.issuer.as_str(),
            what: "the IdP",
            meanwhile: "tokens for its servers are refused as unavailable (503)",
        };
        retry(awaited, || resolve_keys(&cache, &http, &v), DiscoveryError::is_transient).await;
    });
}
