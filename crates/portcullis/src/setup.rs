//! Start-up wiring of the verifiers: one discovery per distinct issuer, one key cache per distinct
//! `jwks_uri`, shared by every server that trusts it; gateway-mode servers verify against the gateway's
//! own keys.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_authz::gateway::Gateway;
use portcullis_config::{Config, ServerAuth, TokenInfoKind};
use portcullis_oauth::discovery::{AuthServerMetadata, discover_publishing};
use portcullis_oauth::error::DiscoveryError;
use portcullis_oauth::introspect::Introspector;
use portcullis_oauth::jwks::{JwksCache, KeySet};
use portcullis_oauth::verify::{Verifier, VerifierConfig};
use portcullis_types::Clock;

/// One verifier per configured server (`None` for unauthenticated servers), in configuration order.
/// Fails on the first IdP that cannot be discovered or whose keys cannot be loaded.
pub(crate) async fn verifiers(
    config: &Config,
    http: &reqwest::Client,
    clock: Arc<dyn Clock>,
    gateway: Option<&Gateway>,
) -> Result<Vec<Option<Arc<Verifier>>>, (String, DiscoveryError)> {
    let mut metadata: HashMap<String, AuthServerMetadata> = HashMap::new();
    let mut caches: HashMap<String, Arc<JwksCache>> = HashMap::new();
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
        let at = |e| (server.path.clone(), e);
        // Opaque tokens checked at the IdP's own token-info endpoint (Google, GitHub) need neither its
        // metadata nor keys.
        let token_info_only = v.introspection.as_ref().is_some_and(|i| i.kind != TokenInfoKind::Rfc7662);
        let keys = if token_info_only {
            JwksCache::fixed(KeySet::default(), clock.clone())
        } else {
            let meta = match metadata.get(v.issuer.as_str()) {
                Some(m) => m.clone(),
                None => {
                    let m = discover_publishing(http, &v.issuer, v.published_issuer.as_deref()).await.map_err(at)?;
                    metadata.insert(v.issuer.to_string(), m.clone());
                    m
                }
            };
            match v.jwks_uri.clone().or_else(|| meta.jwks_uri.clone()) {
                Some(uri) => match caches.get(uri.as_str()) {
                    Some(c) => c.clone(),
                    None => {
                        let c = JwksCache::load(uri.clone(), http.clone(), clock.clone()).await.map_err(at)?;
                        c.spawn_refresher();
                        caches.insert(uri.to_string(), c.clone());
                        c
                    }
                },
                // A shared-secret-only or introspection-only deployment needs no key set.
                None if v.hs256_secret.is_some() || v.introspection.is_some() => {
                    JwksCache::fixed(KeySet::default(), clock.clone())
                }
                None => return Err(at(DiscoveryError::NoJwksUri { url: meta.source.to_string() })),
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
