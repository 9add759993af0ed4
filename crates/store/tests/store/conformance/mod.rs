//! The behaviour every [`Store`] backend must show, one async function per behaviour. `main.rs` runs each
//! of them against every backend.

mod accounts;
mod codes;
mod durability;
mod failures;
mod refresh;

use std::future::Future;
use std::sync::Arc;

use portcullis_store::{ClientRecord, ClientSource, CodeRecord, RefreshRecord, Store};
use tokio::sync::Barrier;

pub(crate) use accounts::*;
pub(crate) use codes::*;
pub(crate) use durability::*;
pub(crate) use failures::*;
pub(crate) use refresh::*;

/// The time every test pretends it is.
pub(crate) const NOW: i64 = 1_800_000_000;

/// How many tasks race for one single-use value.
const RACERS: usize = 24;

/// How many values each concurrency test races for: one race can end before the losers overlap the
/// winner, several in a row rarely all do.
pub(crate) const ROUNDS: usize = 5;

/// A stand-in for the SHA-256 of a secret: 64 lowercase hex characters derived from `label`.
pub(crate) fn h(label: &str) -> String {
    let hex: String = label.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0>64}")
}

pub(crate) fn client(client_id: &str) -> ClientRecord {
    ClientRecord {
        client_id: client_id.into(),
        secret_hash: None,
        metadata: serde_json::json!({
            "client_name": "Tool Runner — ünïcode ✓",
            "redirect_uris": ["http://127.0.0.1:33418/callback", "https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_id_issued_at": 1_800_000_000,
            "nested": { "list": [1, 2.5, null, true] },
        }),
        source: ClientSource::Dynamic,
        created_at: NOW,
        used_at: None,
    }
}

pub(crate) fn code(label: &str, family_id: &str, expires_at: i64) -> CodeRecord {
    CodeRecord {
        code_hash: h(label),
        client_id: "client-1".into(),
        subject: "user-1".into(),
        redirect_uri: "http://127.0.0.1:33418/callback".into(),
        resource: "https://mcp.example.com/mcp".into(),
        scope: "mcp:tools offline_access".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        auth_time: NOW - 30,
        expires_at,
        family_id: family_id.into(),
    }
}

pub(crate) fn refresh(label: &str, family_id: &str, expires_at: i64) -> RefreshRecord {
    RefreshRecord {
        token_hash: h(label),
        family_id: family_id.into(),
        client_id: "client-1".into(),
        subject: "user-1".into(),
        resource: "https://mcp.example.com/mcp".into(),
        scope: "mcp:tools offline_access".into(),
        expires_at,
        created_at: NOW,
        session_ends_at: Some(NOW + 30 * 86_400),
    }
}

/// Runs `RACERS` copies of `task` at once, spread over `stores` (several instances of one state), released
/// together by a barrier so they really overlap, and returns what each got.
pub(crate) async fn race<T, F, Fut>(stores: &[Arc<dyn Store>], task: F) -> Vec<T>
where
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|i| {
            let barrier = barrier.clone();
            let work = task(stores[i % stores.len()].clone(), i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(RACERS);
    for handle in handles {
        results.push(handle.await.expect("racing task panicked"));
    }
    results
}

/// The store under test plus, for the SQL backends, a second instance on the same state.
pub(crate) async fn instances(backend: &crate::harness::Backend) -> Vec<Arc<dyn Store>> {
    let mut stores = vec![backend.store.clone()];
    stores.extend(backend.another_instance().await);
    stores
}
