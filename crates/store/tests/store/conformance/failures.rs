//! Failed-attempt counting (sign-in throttling, shared by every instance on one store) and the health
//! probe.

use std::collections::BTreeSet;

use portcullis_store::Failures;

use super::{NOW, instances, race};
use crate::harness::Backend;

const WINDOW: i64 = 900;

pub(crate) async fn failures_are_counted_per_key_within_a_window(backend: &mut Backend) {
    let s = &backend.store;
    assert_eq!(s.failures("account:alice", NOW).await.unwrap(), None);
    for (i, at) in [NOW, NOW + 5, NOW + 9].into_iter().enumerate() {
        let f = s.record_failure("account:alice", at, WINDOW).await.unwrap();
        assert_eq!(f, Failures { count: i as u32 + 1, last_at: at, window_ends: NOW + WINDOW });
    }
    s.record_failure("address:192.0.2.1", NOW + 1, WINDOW).await.unwrap();
    assert_eq!(s.failures("account:alice", NOW + 10).await.unwrap().map(|f| f.count), Some(3));
    assert_eq!(s.failures("address:192.0.2.1", NOW + 10).await.unwrap().map(|f| f.count), Some(1));
    // The window closes: counting starts again.
    assert_eq!(s.failures("account:alice", NOW + WINDOW).await.unwrap(), None);
    let f = s.record_failure("account:alice", NOW + WINDOW, WINDOW).await.unwrap();
    assert_eq!(f, Failures { count: 1, last_at: NOW + WINDOW, window_ends: NOW + 2 * WINDOW });
    // A success forgets the account's failures, and only those.
    s.clear_failures("account:alice").await.unwrap();
    assert_eq!(s.failures("account:alice", NOW + WINDOW).await.unwrap(), None);
    assert!(s.failures("address:192.0.2.1", NOW + 10).await.unwrap().is_some());
    // Closed windows are purged.
    assert!(s.purge_expired(NOW + WINDOW + 1).await.unwrap() >= 1);
    assert_eq!(s.failures("address:192.0.2.1", NOW).await.unwrap(), None);
}

pub(crate) async fn concurrent_failures_are_all_counted(backend: &mut Backend) {
    let stores = instances(backend).await;
    let counts =
        race(&stores, |s, _| async move { s.record_failure("account:bob", NOW, WINDOW).await.unwrap().count }).await;
    let distinct: BTreeSet<u32> = counts.iter().copied().collect();
    assert_eq!(distinct, (1..=counts.len() as u32).collect(), "each failure got its own count");
    let f = stores[0].failures("account:bob", NOW).await.unwrap().unwrap();
    assert_eq!(f.count as usize, counts.len());
}

pub(crate) async fn the_probe_writes(backend: &mut Backend) {
    backend.store.probe(NOW).await.unwrap();
    backend.store.probe(NOW + 1).await.unwrap();
}
