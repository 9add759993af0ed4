//! Work that one replica at a time may do (make the first signing key, refresh a user's upstream
//! token), under a lease in the store: a counting window that only its first taker sees at 1. The
//! others wait for it; a holder that dies keeps them waiting until the window lapses.

use std::time::{Duration, Instant};

use portcullis_store::{Store, StoreError};

/// How often a replica waiting for a lease tries again.
const POLL: Duration = Duration::from_millis(200);

pub(crate) struct Lease<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) name: &'a str,
    /// How long the lease lasts when its holder does not release it.
    pub(crate) lapse_secs: i64,
    /// How long to wait for it before giving up.
    pub(crate) wait: Duration,
}

impl Lease<'_> {
    /// Runs `work` holding the lease (`now` is the store's clock; `work` is not polled before), then
    /// releases it. While another replica holds it, `meanwhile` is asked after each wait whether that
    /// replica's work already gave what is needed, which ends the wait. `None`: the lease stayed taken for
    /// longer than `wait`.
    pub(crate) async fn hold<T, E: From<StoreError>, Waited: Future<Output = Result<Option<T>, E>>>(
        &self,
        now: impl Fn() -> i64,
        work: impl Future<Output = Result<T, E>>,
        mut meanwhile: impl FnMut() -> Waited,
    ) -> Result<Option<T>, E> {
        let give_up = Instant::now() + self.wait;
        loop {
            if self.store.count_event(self.name, now(), self.lapse_secs).await? == 1 {
                let outcome = work.await;
                if let Err(e) = self.store.clear_failures(self.name).await {
                    tracing::warn!(lease = self.name, error = %e, "releasing a lease failed; it lapses by itself");
                }
                return outcome.map(Some);
            }
            tokio::time::sleep(POLL).await;
            if let Some(done) = meanwhile().await? {
                return Ok(Some(done));
            }
            if Instant::now() >= give_up {
                return Ok(None);
            }
        }
    }
}
