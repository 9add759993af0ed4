//! Finding a client: configured and registered clients from the store, metadata-document clients from
//! memory, the store or a fetch; and RFC 7591 registration.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_store::{ClientRecord, ClientSource};
use serde_json::Value;

use super::{Gateway, GatewayError, Settings, hash};
use crate::cimd::{CimdError, ClientMetadataDocuments, Document, is_document_url};
use crate::error::{AuthzError, Refusal};
use crate::register::{ClientMetadata, RegisterPolicy, Registration, register};
use portcullis_types::ErrorCode;

impl Gateway {
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
                client_id: client_id.into(),
                secret_hash: None,
                metadata: document.to_stored(now + ttl.as_secs() as i64),
                source: ClientSource::MetadataDocument,
                created_at: now,
                used_at: None,
            };
            if let Err(e) = self.store.upsert_client(record).await {
                tracing::warn!(error = %e, "storing a client metadata document failed");
            }
        }
        Ok(document)
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
                        client_id: client_id.into(),
                        secret_hash: None,
                        metadata: Value::Object(document.metadata.to_json()),
                        source: ClientSource::MetadataDocument,
                        created_at: self.now(),
                        used_at: None,
                    },
                    Box::new(document.metadata.clone()),
                    Some(document),
                ),
                Err(e) => {
                    tracing::info!(client_id, error = %e, "client metadata document refused");
                    ClientLookup::Unknown(e.for_caller())
                }
            });
        }
        Ok(match self.store.get_client(client_id).await? {
            Some(record) => {
                let metadata = ClientMetadata::from_stored(&record.metadata).map_err(|e| {
                    GatewayError::Other(format!("the stored metadata of client {client_id:?} cannot be read: {e}"))
                })?;
                ClientLookup::Known(record, Box::new(metadata), None)
            }
            None => ClientLookup::Unknown(format!("client {client_id:?} is not registered here; register again")),
        })
    }

    /// RFC 7591 registration of the JSON `body`: validates, stores, and returns the 201 body. Anything
    /// unreadable is invalid metadata (§3.2.2), and so is a member named twice, since parsers disagree
    /// on which one counts.
    pub async fn register(&self, body: &[u8]) -> Result<Value, AuthzError> {
        let result = self.register_client(body).await;
        if let Err(AuthzError::Refused(r)) = &result {
            self.emit(crate::events::Event::RegistrationRefused { error: r.code.as_str() });
        }
        result
    }

    async fn register_client(&self, body: &[u8]) -> Result<Value, AuthzError> {
        if !self.settings.registration {
            return Err(Refusal::new(ErrorCode::AccessDenied, "registration is closed").into());
        }
        let request = crate::json::parse(body).map_err(|e| {
            let description = match e.classify() {
                serde_json::error::Category::Data => format!("the metadata is ambiguous: {e}"),
                _ => "the body must be a JSON object".to_owned(),
            };
            Refusal::new(ErrorCode::InvalidClientMetadata, description)
        })?;
        let request = &request;
        let reg: Registration = register(request, &register_policy(&self.settings))?;
        let now = self.now();
        let body = reg.response(now.max(0) as u64);
        self.store
            .put_client(ClientRecord {
                client_id: reg.client_id.as_str().into(),
                secret_hash: reg.client_secret.as_deref().map(hash),
                metadata: Value::Object(reg.metadata.to_json()),
                source: ClientSource::Dynamic,
                created_at: now,
                used_at: None,
            })
            .await?;
        tracing::info!(client_id = %reg.client_id, "client registered");
        self.emit(crate::events::Event::ClientRegistered {
            client_id: reg.client_id.as_str(),
            client_name: reg.metadata.client_name.as_deref(),
        });
        Ok(body)
    }
}

/// What registrations and metadata documents may ask for.
pub(super) fn register_policy(settings: &Settings) -> RegisterPolicy {
    RegisterPolicy { allowed_scopes: settings.scopes.clone(), id_token_alg: settings.signing_alg.as_str().to_owned() }
}

/// The outcome of looking a client up.
#[derive(Debug)]
pub(crate) enum ClientLookup {
    /// The client, its metadata, and its metadata document when it is known by one.
    Known(ClientRecord, Box<ClientMetadata>, Option<Arc<Document>>),
    /// Why no client can be used under that id.
    Unknown(String),
}
