//! The gateway's authorization server state: its issuer, keys, store and settings, and the operations
//! that are not part of one sign-in (bootstrapping keys, configured clients, registration, accounts).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use portcullis_config::GatewayConfig;
use portcullis_store::{ClientRecord, ClientSource, KeyRecord, Store, StoreError, UserRecord};
use portcullis_types::{Clock, IssuerUrl};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cimd::{CimdError, ClientMetadataDocuments, Document, is_document_url};
use super::keys::{KeyAlg, KeyError, KeyRing, OperatorKey, RingKey, generate};
use super::metadata::Advertised;
use super::register::{RegisterError, RegisterPolicy, Registration, register};
use portcullis_oauth::jwks::{JwksCache, KeySet};

/// How long a retired key stays published: long enough for every token it signed to expire.
fn keep_after_retirement(settings: &Settings) -> i64 {
    settings.access_token_ttl as i64 + 300
}

/// `true` when `key` signs at `now`: its time has come and it is not retired.
pub fn signs_at(key: &KeyRecord, now: i64) -> bool {
    key.not_before <= now && key.retired_at.is_none_or(|r| r > now)
}

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

/// The settings every operation reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub access_token_ttl: u64,
    pub refresh_token_ttl: u64,
    pub code_ttl: u64,
    /// Scopes clients may request.
    pub scopes: Vec<String>,
    pub registration: bool,
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
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("issuer", &self.issuer)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
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
    /// Opens the gateway: loads (or on first start generates) the signing keys and writes the
    /// configured clients to the store.
    pub async fn start(
        config: &GatewayConfig,
        serves: Serves,
        store: Arc<dyn Store>,
        operator: OperatorKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, GatewayError> {
        let Serves { resources, default_scopes, auto_approve_as, upstream, client_metadata_from_loopback } = serves;
        let signing_alg = KeyAlg::parse(&config.signing_alg)
            .ok_or_else(|| GatewayError::Other(format!("unsupported signing algorithm {}", config.signing_alg)))?;
        let settings = Settings {
            access_token_ttl: config.access_token_ttl.as_secs(),
            refresh_token_ttl: config.refresh_token_ttl.as_secs(),
            code_ttl: config.code_ttl.as_secs(),
            scopes: config.scopes.clone(),
            registration: config.registration,
            resources,
            default_scopes,
            signing_alg,
            auto_approve_as,
        };
        let now = clock.now_unix() as i64;
        Self::ensure_signing_key(store.as_ref(), &operator, signing_alg, now).await?;
        for c in &config.clients {
            let mut metadata = json!({
                "redirect_uris": c.redirect_uris,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": if c.client_secret.is_some() { "client_secret_basic" } else { "none" },
                "id_token_signed_response_alg": signing_alg.as_str(),
            });
            if let Some(name) = &c.name {
                metadata["client_name"] = json!(name);
            }
            store
                .upsert_client(ClientRecord {
                    client_id: c.client_id.clone(),
                    secret_hash: c.client_secret.as_ref().map(|s| hash(s.expose())),
                    metadata,
                    source: ClientSource::Configured,
                    created_at: now,
                })
                .await?;
        }
        let documents = match config.client_metadata_documents {
            true => Some(
                ClientMetadataDocuments::new(register_policy(&settings), client_metadata_from_loopback)
                    .map_err(GatewayError::Other)?,
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
        });
        gateway.reload_keys().await?;
        Ok(gateway)
    }

    /// Re-reads the keys from the store (after `keys rotate`, or another replica's rotation).
    pub async fn reload_keys(&self) -> Result<(), GatewayError> {
        let mut keys = Vec::new();
        for r in self.store.list_keys().await? {
            keys.push(RingKey::unseal(&self.operator, &r.kid, &r.alg, &r.private_sealed, r.not_before, r.retired_at)?);
        }
        let ring = Arc::new(KeyRing::new(keys));
        let jwks = ring.jwks(self.now(), keep_after_retirement(&self.settings));
        let (set, _) = KeySet::parse(jwks.to_string().as_bytes()).map_err(GatewayError::Other)?;
        self.public_keys.replace(set);
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        Ok(())
    }

    /// Adds the next signing key: published now, signing from `now + publish_ahead` seconds; the
    /// current key retires then, and stays published until its tokens expire. When no key signs at
    /// `now` (a new store), nothing has been published that caches must catch up with: the new key
    /// signs at once. Returns the new key's id and when it signs.
    pub async fn rotate_keys(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
        publish_ahead: i64,
    ) -> Result<(String, i64), GatewayError> {
        let existing = store.list_keys().await?;
        let signing_now = existing.iter().any(|k| signs_at(k, now));
        let switch = if signing_now { now + publish_ahead } else { now };
        for k in existing.iter().filter(|k| k.retired_at.is_none()) {
            store.retire_key(&k.kid, switch).await?;
        }
        let kid = Self::put_new_key(store, operator, alg, now, switch).await?;
        Ok((kid, switch))
    }

    async fn put_new_key(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
        not_before: i64,
    ) -> Result<String, GatewayError> {
        let key = generate(alg)?;
        store
            .put_key(KeyRecord {
                kid: key.kid.clone(),
                alg: alg.as_str().to_owned(),
                public_jwk: key.public_jwk.clone(),
                private_sealed: operator.seal(&key.pkcs8, &key.kid)?,
                created_at: now,
                not_before,
                retired_at: None,
            })
            .await?;
        Ok(key.kid)
    }

    /// Makes sure a key of `alg` signs at `now`: a gateway is never up without one. A first start
    /// generates it; a changed algorithm retires the others (still published until their tokens
    /// expire); a store whose only key of `alg` is still waiting to sign (rotated before any start) gets
    /// a key that signs until that one takes over.
    async fn ensure_signing_key(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
    ) -> Result<(), GatewayError> {
        let keys = store.list_keys().await?;
        let of_alg = |k: &&KeyRecord| k.alg == alg.as_str();
        if keys.iter().filter(of_alg).any(|k| signs_at(k, now)) {
            return Ok(());
        }
        let pending = keys
            .iter()
            .filter(of_alg)
            .filter(|k| k.retired_at.is_none() && k.not_before > now)
            .min_by_key(|k| k.not_before);
        match pending {
            Some(next) => {
                let kid = Self::put_new_key(store, operator, alg, now, now).await?;
                store.retire_key(&kid, next.not_before).await?;
                tracing::info!(%kid, until = next.not_before, next = %next.kid, "generated a signing key to bridge until the next key signs");
            }
            None => {
                let (kid, _) = Self::rotate_keys(store, operator, alg, now, 0).await?;
                tracing::info!(%kid, alg = alg.as_str(), "generated a signing key");
            }
        }
        Ok(())
    }

    /// What a gateway-mode server accepts: exactly what this gateway mints (our issuer, our keys, `typ`
    /// `at+jwt`, `aud` one of the server's resource URLs).
    pub fn verifier_config(&self, server: &portcullis_config::ServerConfig) -> portcullis_oauth::VerifierConfig {
        portcullis_oauth::VerifierConfig {
            issuers: vec![self.issuer.to_string()],
            audience: portcullis_oauth::AudiencePolicy {
                resources: server.resources.iter().map(ToString::to_string).collect(),
                extra: Vec::new(),
                resource_claim_audiences: Vec::new(),
            },
            leeway: 30,
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

    /// `true` when a key signs now. Readiness depends on it.
    pub fn has_signing_key(&self) -> bool {
        self.ring().active(self.now()).is_some()
    }

    /// Seals a secret at rest under the operator key, bound to `context`.
    pub(crate) fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, GatewayError> {
        Ok(self.operator.seal(plain, context)?)
    }

    /// Opens what [`seal`](Self::seal) sealed for the same `context`.
    pub(crate) fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, GatewayError> {
        Ok(self.operator.open(sealed, context)?)
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_unix() as i64
    }

    /// The key ring in force.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Our public keys as a verifier sees them (for the protected servers).
    pub fn public_keys(&self) -> Arc<JwksCache> {
        self.public_keys.clone()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        self.ring().jwks(self.now(), keep_after_retirement(&self.settings))
    }

    /// A metadata document: from this process's memory, else from the store (where any replica may have
    /// put it, and where it survives restarts), else fetched now and stored for as long as its headers
    /// allow. A failed fetch is never stored, and an expired copy never used.
    async fn document(
        &self,
        documents: &ClientMetadataDocuments,
        client_id: &str,
        requester: Option<IpAddr>,
    ) -> Result<Arc<Document>, CimdError> {
        if let Some(document) = documents.cached(client_id).await {
            return Ok(document);
        }
        let now = self.now();
        match self.store.get_client(client_id).await {
            Ok(Some(stored)) if stored.source == ClientSource::MetadataDocument => {
                if let Some((document, left)) = Document::from_stored(&stored.metadata, now) {
                    let document = Arc::new(document);
                    documents.remember(client_id, document.clone(), Duration::from_secs(left as u64)).await;
                    return Ok(document);
                }
            }
            Ok(_) => {}
            // The store only saves a fetch here: without it, fetch.
            Err(e) => tracing::warn!(error = %e, "reading a stored client metadata document failed"),
        }
        let (document, ttl) = documents.fetch(client_id, requester).await?;
        if !ttl.is_zero() {
            let record = ClientRecord {
                client_id: client_id.to_owned(),
                secret_hash: None,
                metadata: document.to_stored(now + ttl.as_secs() as i64),
                source: ClientSource::MetadataDocument,
                created_at: now,
            };
            if let Err(e) = self.store.upsert_client(record).await {
                tracing::warn!(error = %e, "storing a client metadata document failed");
            }
        }
        Ok(document)
    }

    /// What the discovery documents advertise.
    pub fn advertised(&self) -> Advertised {
        Advertised {
            scopes: self.settings.scopes.clone(),
            signing_alg: self.settings.signing_alg.as_str().to_owned(),
            registration: self.settings.registration,
            client_id_metadata_documents: self.documents.is_some(),
        }
    }

    /// A client by id: registered (configured or dynamic), or known by its metadata document.
    /// `requester` is the address the request came from: metadata-document fetches are limited per address.
    pub(crate) async fn find_client(
        &self,
        client_id: &str,
        requester: Option<IpAddr>,
    ) -> Result<ClientLookup, GatewayError> {
        if is_document_url(client_id) {
            let Some(documents) = &self.documents else {
                return Ok(ClientLookup::Unknown("client ID metadata documents are not accepted here".into()));
            };
            return Ok(match self.document(documents, client_id, requester).await {
                Ok(document) => ClientLookup::Known(
                    ClientRecord {
                        client_id: client_id.to_owned(),
                        secret_hash: None,
                        metadata: Value::Object(document.metadata.clone()),
                        source: ClientSource::MetadataDocument,
                        created_at: self.now(),
                    },
                    Some(document),
                ),
                Err(e) => {
                    tracing::info!(client_id, error = %e, "client metadata document refused");
                    ClientLookup::Unknown(e.to_string())
                }
            });
        }
        Ok(match self.store.get_client(client_id).await? {
            Some(record) => ClientLookup::Known(record, None),
            None => ClientLookup::Unknown(format!("client {client_id:?} is not registered here; register again")),
        })
    }

    /// RFC 7591 registration: validates, stores, and returns the 201 body.
    pub async fn register(&self, request: &Value) -> Result<Result<Value, RegisterError>, GatewayError> {
        let reg: Registration = match register(request, &register_policy(&self.settings)) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let now = self.now();
        let body = reg.response(now.max(0) as u64);
        self.store
            .put_client(ClientRecord {
                client_id: reg.client_id.clone(),
                secret_hash: reg.client_secret.as_deref().map(hash),
                metadata: Value::Object(reg.metadata.clone()),
                source: ClientSource::Dynamic,
                created_at: now,
            })
            .await?;
        tracing::info!(client_id = %reg.client_id, "client registered");
        Ok(Ok(body))
    }

    /// Creates a local account with an argon2id password hash.
    pub async fn add_user(store: &dyn Store, username: &str, password: &str, now: i64) -> Result<(), GatewayError> {
        let password_hash = hash_password(password)?;
        store
            .put_user(UserRecord {
                username: username.to_owned(),
                subject: format!("local:{username}"),
                password_hash,
                created_at: now,
            })
            .await?;
        Ok(())
    }

    /// Whether a local account exists.
    pub async fn user_exists(&self, username: &str) -> Result<bool, GatewayError> {
        Ok(self.store.get_user(username).await?.is_some())
    }

    /// Creates a local account.
    pub async fn create_user(&self, username: &str, password: &str) -> Result<(), GatewayError> {
        Self::add_user(self.store.as_ref(), username, password, self.now()).await
    }

    /// Replaces a local account's password.
    pub async fn set_user_password(&self, username: &str, password: &str) -> Result<bool, GatewayError> {
        Self::change_password(self.store.as_ref(), username, password).await
    }

    /// Replaces a local account's password in `store`.
    pub async fn change_password(store: &dyn Store, username: &str, password: &str) -> Result<bool, GatewayError> {
        Ok(store.set_password(username, hash_password(password)?).await?)
    }

    /// Writes to the store and reads back: `Ok` when it is reachable and writable.
    pub async fn probe_store(&self) -> Result<(), GatewayError> {
        Ok(self.store.probe(self.now()).await?)
    }

    /// Removes expired codes, flows and refresh tokens.
    pub async fn purge_expired(&self) -> Result<u64, GatewayError> {
        Ok(self.store.purge_expired(self.now()).await?)
    }

    /// Checks a local account's password; the subject on success. Runs argon2 off the async threads.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<Option<String>, GatewayError> {
        let user = self.store.get_user(username).await?;
        let password = password.to_owned();
        // Verify against a dummy hash for unknown users too, so timing does not reveal which exist.
        let (stored, subject) = match user {
            Some(u) => (u.password_hash, Some(u.subject)),
            None => (dummy_hash().to_owned(), None),
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|e| GatewayError::Other(e.to_string()))?;
        Ok(subject.filter(|_| ok))
    }
}

/// What registrations and metadata documents may ask for.
fn register_policy(settings: &Settings) -> RegisterPolicy {
    RegisterPolicy { allowed_scopes: settings.scopes.clone(), id_token_alg: settings.signing_alg.as_str().to_owned() }
}

/// The outcome of looking a client up.
#[derive(Debug)]
pub(crate) enum ClientLookup {
    /// The client, and its metadata document when it is known by one.
    Known(ClientRecord, Option<Arc<Document>>),
    /// Why no client can be used under that id.
    Unknown(String),
}

/// An argon2id PHC string (the crate's default parameters) with a random 16-byte salt.
fn hash_password(password: &str) -> Result<String, GatewayError> {
    use argon2::password_hash::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| GatewayError::Other(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| GatewayError::Other(format!("hashing the password: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("portcullis-dummy-password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use portcullis_store::MemoryStore;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn operator() -> OperatorKey {
        OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap()
    }

    async fn signers(store: &dyn Store, at: i64) -> Vec<String> {
        store.list_keys().await.unwrap().into_iter().filter(|k| signs_at(k, at)).map(|k| k.kid).collect()
    }

    #[tokio::test]
    async fn a_new_store_gets_a_key_that_signs_at_once() {
        let store = MemoryStore::new();
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW).await.unwrap();
        assert_eq!(signers(&store, NOW).await.len(), 1);
        // Idempotent.
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW + 5).await.unwrap();
        assert_eq!(store.list_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_key_waiting_to_sign_is_bridged_until_its_time() {
        let store = MemoryStore::new();
        let pending = Gateway::put_new_key(&store, &operator(), KeyAlg::Es256, NOW, NOW + 600).await.unwrap();
        assert!(signers(&store, NOW).await.is_empty());
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW).await.unwrap();
        let bridge = signers(&store, NOW).await;
        assert_eq!(bridge.len(), 1);
        assert_ne!(bridge[0], pending);
        // At its time the waiting key takes over, and the bridge retires.
        assert_eq!(signers(&store, NOW + 600).await, [pending]);
    }

    #[tokio::test]
    async fn rotation_on_an_empty_store_signs_now_and_otherwise_waits() {
        let store = MemoryStore::new();
        let (first, at) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW, 600).await.unwrap();
        assert_eq!(at, NOW);
        let (next, at) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW + 10, 600).await.unwrap();
        assert_eq!(at, NOW + 610);
        assert_eq!(signers(&store, NOW + 10).await, [first]);
        assert_eq!(signers(&store, NOW + 610).await, [next]);
    }
}
