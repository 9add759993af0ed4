//! The storage conformance suite: every behaviour in `conformance` runs against every backend — SQLite
//! on a temporary file, memory, and PostgreSQL (each test in a fresh schema, dropped afterwards). The
//! PostgreSQL tests are ignored unless asked for, so a run without a database reports them as ignored
//! rather than passed:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p portcullis-store -- --include-ignored
//! ```

// The suite's helpers are plain functions, which the test-only allowance does not reach.
#![allow(clippy::unwrap_used)]

mod conformance;
mod harness;
mod sqlite_file;

use harness::Backend;

/// One test per (backend, behaviour). Multi-threaded, so that racing tasks really run in parallel.
macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let mut backend = super::Backend::memory().await;
                    crate::conformance::$case(&mut backend).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let mut backend = super::Backend::sqlite().await;
                    crate::conformance::$case(&mut backend).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs PostgreSQL: set DATABASE_URL and pass --include-ignored (./scripts/test does)"]
                async fn $case() {
                    let mut backend = super::Backend::postgres().await;
                    crate::conformance::$case(&mut backend).await;
                }
            )*
        }
    };
}

conformance_suite!(
    clients,
    unused_clients_are_purged,
    delete_client_ends_grants,
    users,
    delete_user_ends_sessions,
    consents,
    pending_is_single_use,
    pending_expires,
    pending_concurrent_take,
    codes_are_single_use,
    codes_expire,
    code_replay_revokes_the_family,
    code_concurrent_redeem,
    code_redeemed_with_its_refresh_token,
    refresh_rotation,
    refresh_refusals,
    refresh_rotation_is_atomic,
    refresh_reuse_within_the_grace,
    refresh_concurrent_rotation,
    refresh_revocation,
    keys,
    upstream_tokens,
    purge,
    survives_restart,
    failures_are_counted_per_key_within_a_window,
    concurrent_failures_are_all_counted,
    the_probe_writes,
);
