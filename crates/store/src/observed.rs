//! A [`Store`] that times every operation: the `portcullis_store_operation_duration_seconds` histogram
//! and `portcullis_store_errors_total` counter by operation (through the `metrics` facade, a no-op
//! until a recorder is installed), and a `store` span per operation for traces (a `debug` span, not
//! built unless something asks for it).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use crate::{
    ClientRecord, CodeRecord, CodeRedemption, ConsentRecord, Failures, IssueRefresh, KeyRecord, PendingRecord,
    RefreshRecord, Rotation, Store, StoreError, UnusedClient, UpstreamTokenRecord, UserRecord,
};

/// Metric names.
pub mod metric {
    /// How long each operation took, by `operation`.
    pub const DURATION: &str = "portcullis_store_operation_duration_seconds";
    /// Operations that failed, by `operation`.
    pub const ERRORS: &str = "portcullis_store_errors_total";

    /// Describes them (their HELP lines).
    pub fn describe() {
        metrics::describe_histogram!(DURATION, metrics::Unit::Seconds, "Store operations' duration, by operation.");
        metrics::describe_counter!(ERRORS, metrics::Unit::Count, "Store operations that failed, by operation.");
    }
}

/// `inner`, observed.
#[derive(Debug)]
pub struct Observed {
    inner: Arc<dyn Store>,
}

impl Observed {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

async fn timed<T>(operation: &'static str, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = work.instrument(tracing::debug_span!("store", operation)).await;
    metrics::histogram!(metric::DURATION, "operation" => operation).record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(metric::ERRORS, "operation" => operation).increment(1);
    }
    result
}

/// Each method delegates to the inner store through [`timed`], under its own name.
macro_rules! observed {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        #[async_trait]
        impl Store for Observed {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    timed(stringify!($name), self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

observed! {
    fn put_client(&self, client: ClientRecord) -> ();
    fn upsert_client(&self, client: ClientRecord) -> ();
    fn get_client(&self, client_id: &str) -> Option<ClientRecord>;
    fn delete_client(&self, client_id: &str) -> bool;
    fn count_clients_created_since(&self, since: i64) -> u64;
    fn put_user(&self, user: UserRecord) -> ();
    fn get_user(&self, username: &str) -> Option<UserRecord>;
    fn set_password(&self, username: &str, password_hash: String) -> bool;
    fn list_users(&self) -> Vec<UserRecord>;
    fn delete_user(&self, username: &str) -> bool;
    fn put_consent(&self, consent: ConsentRecord) -> ();
    fn get_consent(&self, subject: &str, client_id: &str) -> Option<ConsentRecord>;
    fn delete_consents_for_client(&self, client_id: &str) -> u64;
    fn put_pending(&self, pending: PendingRecord) -> ();
    fn take_pending(&self, id_hash: &str, now: i64) -> Option<PendingRecord>;
    fn put_code(&self, code: CodeRecord) -> ();
    fn redeem_code(&self, code_hash: &str, now: i64) -> CodeRedemption;
    fn redeem_code_issuing(&self, code_hash: &str, now: i64, issue: &IssueRefresh<'_>) -> CodeRedemption;
    fn put_refresh(&self, token: RefreshRecord) -> ();
    fn get_refresh(&self, token_hash: &str) -> Option<RefreshRecord>;
    fn rotate_refresh(&self, old_hash: &str, new: RefreshRecord, now: i64, grace: i64) -> Rotation;
    fn revoke_family(&self, family_id: &str) -> u64;
    fn revoke_refresh(&self, token_hash: &str) -> bool;
    fn family_active(&self, family_id: &str) -> bool;
    fn refresh_rotated(&self, token_hash: &str) -> bool;
    fn put_key(&self, key: KeyRecord) -> ();
    fn list_keys(&self) -> Vec<KeyRecord>;
    fn retire_key(&self, kid: &str, at: i64) -> bool;
    fn delete_key(&self, kid: &str) -> bool;
    fn put_upstream_token(&self, token: UpstreamTokenRecord) -> ();
    fn get_upstream_token(&self, subject: &str, provider: &str) -> Option<UpstreamTokenRecord>;
    fn record_failure(&self, key: &str, now: i64, window: i64) -> Failures;
    fn failures(&self, key: &str, now: i64) -> Option<Failures>;
    fn clear_failures(&self, key: &str) -> ();
    fn probe(&self, now: i64) -> ();
    fn purge_expired(&self, now: i64) -> u64;
    fn purge_unused_clients(&self, never_used_before: i64, idle_before: i64, now: i64) -> Vec<UnusedClient>;
}
