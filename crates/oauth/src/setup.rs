//! Builds the verifiers of a configuration at start-up: one discovery per distinct issuer, one key cache
//! per distinct `jwks_uri`, shared by every server that trusts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{Config, ServerAuth, ServerConfig, VerifyConfig};
use portcullis_types::{Clock, SigningAlg};

use crate::server::gateway::Gateway;

use crate::audience::AudiencePolicy;
use crate::discovery::{AuthServerMetadata, discover};
use crate::error::DiscoveryError;
use crate::introspect::Introspector;
use crate::jwks::{JwksCache, KeySet};
use crate::verify::{Verifier, VerifierConfig};

/// Capacity of each server's verified-token cache.
pub const TOKEN_CACHE_CAPACITY: u64 = 100_000;

/// The HTTP client for talking to IdPs: bounded in time, never following redirects (a discovery or key
/// URL that redirects is reported, not silently trusted).
pub fn idp_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// One verifier per configured server (`None` for unauthenticated servers), in configuration order.
/// Fails on the first IdP that cannot be discovered or whose keys cannot be loaded.
pub async fn verifiers(
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
                    gateway_verifier_config(server, g),
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
        let meta = match metadata.get(v.issuer.as_str()) {
            Some(m) => m.clone(),
            None => {
                let m = discover(http, &v.issuer).await.map_err(at)?;
                metadata.insert(v.issuer.to_string(), m.clone());
                m
            }
        };
        let keys = match v.jwks_uri.clone().or_else(|| meta.jwks_uri.clone()) {
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
        };
        let introspector = v.introspection.as_ref().map(|i| {
            Introspector::new(
                i.endpoint.clone(),
                i.client_id.clone(),
                i.client_secret.clone(),
                http.clone(),
                clock.clone(),
            )
            .with_max_cache_secs(v.cache.as_secs())
        });
        let cfg = verifier_config(server, v);
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

/// A gateway server accepts exactly what the gateway mints: our issuer, our keys, `typ` `at+jwt`, `aud`
/// one of this server's resource URLs.
pub fn gateway_verifier_config(server: &ServerConfig, gateway: &Gateway) -> VerifierConfig {
    VerifierConfig {
        issuers: vec![gateway.issuer.to_string()],
        audience: AudiencePolicy {
            resources: server.resources.iter().map(ToString::to_string).collect(),
            extra: Vec::new(),
            resource_claim_audiences: Vec::new(),
        },
        leeway: 30,
        require_at_jwt: true,
        // Every algorithm the gateway can sign with: after a change of `signing_alg`, tokens of the retired
        // key stay valid until they expire. Only our own published keys verify.
        algorithms: vec![SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256],
        hs256_secret: None,
        cache_capacity: TOKEN_CACHE_CAPACITY,
        cache_ttl: crate::verify::TOKEN_CACHE_SECS,
    }
}

/// The verifier settings of one server.
pub fn verifier_config(server: &ServerConfig, v: &VerifyConfig) -> VerifierConfig {
    VerifierConfig {
        issuers: std::iter::once(&v.issuer).chain(&v.extra_issuers).map(ToString::to_string).collect(),
        audience: AudiencePolicy {
            resources: server.resources.iter().map(ToString::to_string).collect(),
            extra: v.audiences.clone(),
            resource_claim_audiences: v.resource_claim_audiences.clone(),
        },
        leeway: v.leeway.as_secs(),
        require_at_jwt: v.require_at_jwt,
        algorithms: v.algorithms.clone(),
        hs256_secret: v.hs256_secret.clone(),
        cache_capacity: TOKEN_CACHE_CAPACITY,
        cache_ttl: v.cache.as_secs(),
    }
}
