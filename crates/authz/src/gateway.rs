//! The gateway's authorization server state: its issuer, keys, store and settings, and its start-up.
//! The operations that are not part of one sign-in live in the submodules, along the seams:
//!
//! - `signing`: signing keys, the key ring and its JWKS; sealing secrets at rest.
//! - `clients`: finding a client (configured, registered, metadata document) and registration.
//! - `accounts`: local accounts and their passwords.

mod accounts;
mod clients;
mod signing;

use std::sync::{Arc, RwLock};

use portcullis_config::{CLIENT_CREDENTIALS, GatewayConfig, JWT_BEARER_GRANT};
use portcullis_store::{CLIENT_USE_RESOLUTION, ClientRecord, ClientSource, Store, StoreError};
use portcullis_types::{Clock, IssuerUrl};
use serde_json::json;
use sha2::{Digest, Sha256};

use portcullis_oauth::jwks::{JwksCache, KeySet};

pub(crate) use self::clients::ClientLookup;
use self::clients::register_policy;
pub use self::signing::signs_at;
use crate::cimd::ClientMetadataDocuments;
use crate::keys::{KeyAlg, KeyError, KeyRing, OperatorKey};
use crate::metadata::Advertised;

/// The clock skew allowed on the gateway's own access tokens (`exp`, `nbf`, `iat`): between replicas
/// only, so a few seconds, where an IdP's tokens get a minute.
pub const OWN_TOKEN_LEEWAY_SECS: u64 = 5;

/// Errors of gateway operations that are not the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Other(String),
}

impl GatewayError {
    /// Whether the store is unreachable for now (the request may be retried).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_unavailable())
    }
}

/// The settings every operation reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub access_token_ttl: u64,
    pub refresh_token_ttl: u64,
    /// The longest a grant lasts from its sign-in, refreshed or not.
    pub session_max: u64,
    /// Seconds after its rotation during which a refresh token rotates again instead of counting as
    /// reused.
    pub refresh_reuse_grace: u64,
    pub code_ttl: u64,
    /// Scopes clients may request.
    pub scopes: Vec<String>,
    pub registration: bool,
    /// Seconds after which a registered client never used is deleted.
    pub unused_registration_ttl: Option<u64>,
    /// Seconds after which a registered client unused, and holding no live grant, is deleted.
    pub idle_registration_ttl: Option<u64>,
    /// The resource URLs of the gateway-protected servers (every public origin), the valid `resource`
    /// values and `aud` of our tokens.
    pub resources: Vec<String>,
    /// Base scopes per resource (what a token needs at minimum), used when a client asks for none.
    pub default_scopes: Vec<(String, String)>,
    pub signing_alg: KeyAlg,
    /// Sign every request in as this local account without pages (`dangerous.auto_approve_as`).
    pub auto_approve_as: Option<String>,
}

/// What the gateway serves, beyond its own configuration section.
#[derive(Debug, Default)]
pub struct Serves {
    /// The resource URLs of the gateway-protected servers, on every public origin.
    pub resources: Vec<String>,
    /// Each resource's base scopes (space-separated), granted when a client asks for none.
    pub default_scopes: Vec<(String, String)>,
    /// `dangerous.auto_approve_as`.
    pub auto_approve_as: Option<String>,
    /// Sign-in at an upstream IdP instead of local accounts.
    pub upstream: Option<super::upstream::Upstream>,
    /// `dangerous.client_metadata_from_loopback`.
    pub client_metadata_from_loopback: bool,
    /// Enterprise IdPs whose identity assertion grants are accepted, with their keys; added by the
    /// caller once their keys are found.
    pub trusted_idps: Vec<crate::id_jag::TrustedIdp>,
}

impl Serves {
    /// What a configuration asks the gateway to serve: its gateway-mode servers' resources and base
    /// scopes, and the `[dangerous]` switches that concern it. Sign-in at an upstream IdP is added by
    /// the caller, once the IdP is discovered.
    pub fn from_config(config: &portcullis_config::Config) -> Self {
        let mut resources = Vec::new();
        let mut default_scopes = Vec::new();
        for s in config.servers.iter().filter(|s| matches!(s.auth, portcullis_config::ServerAuth::Gateway)) {
            for r in &s.resources {
                resources.push(r.to_string());
                default_scopes.push((r.to_string(), s.scopes.to_space_separated()));
            }
        }
        Self {
            resources,
            default_scopes,
            auto_approve_as: config.dangerous.auto_approve_as.clone(),
            upstream: None,
            client_metadata_from_loopback: config.dangerous.client_metadata_from_loopback,
            trusted_idps: Vec::new(),
        }
    }
}

/// The gateway.
pub struct Gateway {
    pub issuer: IssuerUrl,
    pub settings: Settings,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    operator: OperatorKey,
    ring: RwLock<Arc<KeyRing>>,
    /// The verifier-side view of our own keys, shared with the protected servers.
    public_keys: Arc<JwksCache>,
    /// Where users sign in, when not with local accounts.
    pub(crate) upstream: Option<super::upstream::Upstream>,
    /// Upstream tokens unsealed for forwarding, and the locks that serialise their refreshes.
    pub(crate) forward: super::forward::ForwardState,
    /// Client ID metadata documents, when accepted.
    documents: Option<ClientMetadataDocuments>,
    /// Enterprise IdPs whose identity assertion grants are accepted.
    pub(crate) trusted_idps: Vec<crate::id_jag::TrustedIdp>,
    /// The grants some client may use beyond a user's sign-in and its refresh, for the metadata.
    headless_grants: Vec<&'static str>,
    /// Whether some configured client signs `private_key_jwt` assertions with registered keys.
    configured_key_clients: bool,
    /// Where events go (the audit log and metrics), once installed.
    events: std::sync::OnceLock<Arc<dyn crate::events::EventSink>>,
    /// The sign-ins whose password is being checked now.
    pub(crate) checking: super::throttle::Checking,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("issuer", &self.issuer)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A `[[gateway.clients]]` entry as the store keeps it: its grants, how it authenticates (a secret, its
/// public keys for `private_key_jwt`, or neither) and the scopes it may be granted.
fn configured_client(
    c: &portcullis_config::ConfiguredClient,
    signing_alg: KeyAlg,
    now: i64,
) -> Result<ClientRecord, GatewayError> {
    let method = match (&c.client_secret, &c.jwks) {
        (Some(_), _) => "client_secret_basic",
        (None, Some(_)) => "private_key_jwt",
        (None, None) => "none",
    };
    let signs_in = c.may_use("authorization_code");
    let mut metadata = json!({
        "redirect_uris": c.redirect_uris,
        "grant_types": c.grant_types,
        "response_types": if signs_in { vec!["code"] } else { Vec::new() },
        "token_endpoint_auth_method": method,
        "id_token_signed_response_alg": signing_alg.as_str(),
    });
    if let Some(jwks) = &c.jwks {
        let (keys, skipped) = KeySet::parse(jwks.as_bytes())
            .map_err(|e| GatewayError::Other(format!("client {:?}: its jwks: {e}", c.client_id)))?;
        if keys.keys.is_empty() {
            return Err(GatewayError::Other(format!(
                "client {:?}: its jwks has no usable signing key ({})",
                c.client_id,
                skipped.join("; ")
            )));
        }
        metadata["jwks"] = serde_json::from_str(jwks).map_err(|e| GatewayError::Other(e.to_string()))?;
    }
    if let Some(scopes) = &c.scopes {
        metadata["scope"] = json!(scopes.join(" "));
    }
    if let Some(name) = &c.name {
        metadata["client_name"] = json!(name);
    }
    Ok(ClientRecord {
        client_id: c.client_id.as_str().into(),
        secret_hash: c.client_secret.as_ref().map(|s| hash(s.expose())),
        metadata,
        source: ClientSource::Configured,
        created_at: now,
        used_at: None,
    })
}

/// Lowercase hex SHA-256, the form in which the store keeps codes, tokens, secrets and flow ids.
pub fn hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Gateway {
    /// Sends events to `sink` from now on (once; a second sink is ignored).
    pub fn set_events(&self, sink: Arc<dyn crate::events::EventSink>) {
        let _ = self.events.set(sink);
    }

    /// Hands `event` to the sink, if there is one.
    pub(crate) fn emit(&self, event: crate::events::Event<'_>) {
        if let Some(sink) = self.events.get() {
            sink.record(&event);
        }
    }

    /// Opens the gateway: loads (or on first start generates) the signing keys and writes the
    /// configured clients to the store.
    pub async fn start(
        config: &GatewayConfig,
        serves: Serves,
        store: Arc<dyn Store>,
        operator: OperatorKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, GatewayError> {
        let Serves {
            resources,
            default_scopes,
            auto_approve_as,
            upstream,
            client_metadata_from_loopback,
            trusted_idps,
        } = serves;
        let signing_alg = config.signing_alg;
        let settings = Settings {
            access_token_ttl: config.access_token_ttl.as_secs(),
            refresh_token_ttl: config.refresh_token_ttl.as_secs(),
            session_max: config.session_max.as_secs(),
            refresh_reuse_grace: config.refresh_reuse_grace.as_secs(),
            code_ttl: config.code_ttl.as_secs(),
            scopes: config.scopes.clone(),
            registration: config.registration,
            unused_registration_ttl: config.unused_registration_ttl.map(|d| d.as_secs()),
            idle_registration_ttl: config.idle_registration_ttl.map(|d| d.as_secs()),
            resources,
            default_scopes,
            signing_alg,
            auto_approve_as,
        };
        let now = clock.now_unix() as i64;
        Self::ensure_signing_key_across_replicas(store.as_ref(), &operator, signing_alg, clock.as_ref()).await?;
        for c in &config.clients {
            store.upsert_client(configured_client(c, signing_alg, now)?).await?;
        }
        let documents = match config.client_metadata_documents {
            true => Some(
                ClientMetadataDocuments::new(register_policy(&settings), client_metadata_from_loopback)
                    .map_err(GatewayError::Other)?
                    .shared_through(store.clone(), clock.clone()),
            ),
            false => None,
        };
        let public_keys = JwksCache::fixed(KeySet::default(), clock.clone());
        let gateway = Arc::new(Self {
            issuer: config.issuer.clone(),
            settings,
            store,
            clock,
            operator,
            ring: RwLock::new(Arc::new(KeyRing::default())),
            public_keys,
            upstream,
            forward: Default::default(),
            documents,
            trusted_idps,
            headless_grants: [CLIENT_CREDENTIALS, JWT_BEARER_GRANT]
                .into_iter()
                .filter(|g| config.clients.iter().any(|c| c.may_use(g)))
                .collect(),
            configured_key_clients: config.clients.iter().any(|c| c.jwks.is_some()),
            events: std::sync::OnceLock::new(),
            checking: Default::default(),
        });
        gateway.reload_keys().await?;
        // A token signed with a key another replica added (a rotation, or a `signing_alg` change in a
        // rolling deploy) is checked after one more look at the store, instead of failing until the
        // next scheduled reload.
        let weak = Arc::downgrade(&gateway);
        let reload: std::sync::Weak<dyn portcullis_oauth::jwks::Reload> = weak;
        gateway.public_keys.set_reload(reload);
        Ok(gateway)
    }

    /// What a gateway-mode server accepts: exactly what this gateway mints (our issuer, our keys, `typ`
    /// `at+jwt`, `aud` one of the server's resource URLs).
    pub fn verifier_config(&self, server: &portcullis_config::ServerConfig) -> portcullis_oauth::VerifierConfig {
        portcullis_oauth::VerifierConfig {
            issuers: vec![self.issuer.to_string()],
            audience: portcullis_oauth::AudiencePolicy {
                resources: server.resources.iter().map(ToString::to_string).collect(),
                ..portcullis_oauth::AudiencePolicy::default()
            },
            tenants: None,
            clients: Vec::new(),
            required_claims: Vec::new(),
            // Tokens issued without a user say so (`gty`); a user's subject may equal a client's id.
            marks_machines: true,
            // Our own clock minted these: only the replicas' clocks may differ (by well under a second
            // under NTP; `iat` and `exp` are whole seconds).
            leeway: OWN_TOKEN_LEEWAY_SECS,
            require_at_jwt: true,
            // Every algorithm the gateway can sign with: after a change of `signing_alg`, tokens of the
            // retired key stay valid until they expire. Only our own published keys verify.
            algorithms: vec![
                portcullis_types::SigningAlg::ES256,
                portcullis_types::SigningAlg::EdDSA,
                portcullis_types::SigningAlg::RS256,
            ],
            hs256_secret: None,
            cache_capacity: portcullis_oauth::verify::TOKEN_CACHE_CAPACITY,
            cache_ttl: portcullis_oauth::verify::TOKEN_CACHE_SECS,
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_unix() as i64
    }

    /// What the discovery documents advertise.
    pub fn advertised(&self) -> Advertised {
        Advertised {
            scopes: self.settings.scopes.clone(),
            signing_alg: self.settings.signing_alg.as_str().to_owned(),
            registration: self.settings.registration,
            client_id_metadata_documents: self.documents.is_some(),
            extra_grants: self.headless_grants.clone(),
            configured_key_clients: self.configured_key_clients,
        }
    }

    /// Counts one more event under `key` in a window of `window` seconds, shared by every replica on the
    /// store; whether the count stays within `limit`.
    pub async fn within_rate(&self, key: &str, limit: u32, window: i64) -> Result<bool, GatewayError> {
        Ok(self.store.count_event(&format!("rate\n{key}"), self.now(), window).await? <= limit)
    }

    /// Remembers the single-use `jti` of a `kind` of assertion from `issuer` until `until`: `true` the first
    /// time, `false` when any replica has seen it before.
    pub(crate) async fn first_use(
        &self,
        kind: &str,
        issuer: &str,
        jti: &str,
        until: i64,
    ) -> Result<bool, GatewayError> {
        let record = portcullis_store::PendingRecord {
            id_hash: hash(&format!("{kind}\n{issuer}\n{jti}")),
            kind: kind.into(),
            data: serde_json::Value::Null,
            expires_at: until,
        };
        match self.store.put_pending(record).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes to the store and reads back: `Ok` when it is reachable and writable.
    pub async fn probe_store(&self) -> Result<(), GatewayError> {
        Ok(self.store.probe(self.now()).await?)
    }

    /// Removes expired codes, flows and refresh tokens, and registered clients no longer in use (see
    /// `unused_registration_ttl` and `idle_registration_ttl`).
    pub async fn purge_expired(&self) -> Result<u64, GatewayError> {
        let now = self.now();
        let purged = self.store.purge_expired(now).await?;
        let (unused, idle) = (self.settings.unused_registration_ttl, self.settings.idle_registration_ttl);
        if unused.is_none() && idle.is_none() {
            return Ok(purged);
        }
        let never_used_before = unused.map_or(i64::MIN, |t| now.saturating_sub(t as i64));
        // A client's last use is noted to within a day: one noted a day ago may have been used since.
        let idle_before = idle.map_or(i64::MIN, |t| now.saturating_sub(t as i64).saturating_sub(CLIENT_USE_RESOLUTION));
        let clients = self.store.purge_unused_clients(never_used_before, idle_before, now).await?;
        for c in &clients {
            self.emit(crate::events::Event::ClientPurged {
                client_id: c.client_id.as_str(),
                never_used: c.used_at.is_none(),
            });
        }
        if !clients.is_empty() {
            tracing::info!(clients = clients.len(), "registered clients no longer in use deleted, with their consents");
        }
        Ok(purged + clients.len() as u64)
    }
}
