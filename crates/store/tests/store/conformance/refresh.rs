//! Refresh-token rotation, reuse detection and revocation (RFC 9700 §4.14.2).

use portcullis_store::{RefreshRecord, Rotation, StoreError};

use super::{NOW, ROUNDS, h, instances, race, refresh};
use crate::harness::Backend;

pub(crate) async fn refresh_rotation(b: &mut Backend) {
    let s = &b.store;
    // A token stored before sign-in ends were kept has none; the next has one: both read back as stored.
    let first = RefreshRecord { session_ends_at: None, ..refresh("rt-1", "family-1", NOW + 3600) };
    s.put_refresh(first.clone()).await.unwrap();
    assert_eq!(s.put_refresh(first.clone()).await, Err(StoreError::Conflict("refresh token")));
    assert_eq!(s.get_refresh(&h("rt-1")).await.unwrap(), Some(first.clone()));
    assert_eq!(s.get_refresh(&h("rt-unknown")).await.unwrap(), None);
    assert!(s.family_active("family-1").await.unwrap());
    assert!(!s.refresh_rotated(&h("rt-1")).await.unwrap());
    assert!(!s.refresh_rotated(&h("rt-unknown")).await.unwrap());

    // The new token joins the old one's family, whatever family it names.
    let second =
        RefreshRecord { scope: "mcp:tools".into(), created_at: NOW + 10, ..refresh("rt-2", "elsewhere", NOW + 7200) };
    assert_eq!(
        s.rotate_refresh(&h("rt-1"), second.clone(), NOW + 10, 0).await.unwrap(),
        Rotation::Rotated(first.clone())
    );
    let stored = s.get_refresh(&h("rt-2")).await.unwrap().unwrap();
    assert_eq!(stored, RefreshRecord { family_id: "family-1".into(), ..second });
    assert!(s.refresh_rotated(&h("rt-1")).await.unwrap(), "spent by the rotation");
    assert!(!s.refresh_rotated(&h("rt-2")).await.unwrap());
    assert!(!s.family_active("elsewhere").await.unwrap());

    let third = refresh("rt-3", "family-1", NOW + 9000);
    assert_eq!(s.rotate_refresh(&h("rt-2"), third, NOW + 20, 0).await.unwrap(), Rotation::Rotated(stored));
    assert!(s.family_active("family-1").await.unwrap());

    // Presenting a rotated token again is reuse: the whole family goes, the newest token included.
    let replay = refresh("rt-x", "family-1", NOW + 9000);
    let reused = s.rotate_refresh(&h("rt-1"), replay.clone(), NOW + 30, 0).await.unwrap();
    assert_eq!(reused, Rotation::Reused { family_id: "family-1".into() });
    assert!(!s.family_active("family-1").await.unwrap());
    assert_eq!(s.get_refresh(&h("rt-x")).await.unwrap(), None, "nothing stored on reuse");
    assert_eq!(s.rotate_refresh(&h("rt-3"), replay.clone(), NOW + 40, 0).await.unwrap(), Rotation::Revoked);
    assert_eq!(s.rotate_refresh(&h("rt-1"), replay, NOW + 40, 0).await.unwrap(), Rotation::Revoked);
}

pub(crate) async fn refresh_refusals(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("expired", "family-1", NOW)).await.unwrap();
    let next = refresh("next", "family-1", NOW + 3600);
    assert_eq!(s.rotate_refresh(&h("expired"), next.clone(), NOW, 0).await.unwrap(), Rotation::Expired);
    assert_eq!(s.rotate_refresh(&h("unknown"), next.clone(), NOW, 0).await.unwrap(), Rotation::Unknown);
    assert_eq!(s.get_refresh(&h("next")).await.unwrap(), None);

    // Another client presenting the token learns nothing and spends nothing (RFC 6749 §6).
    s.put_refresh(refresh("live", "family-2", NOW + 3600)).await.unwrap();
    let theirs = RefreshRecord { client_id: "client-2".into(), ..refresh("theirs", "family-2", NOW + 3600) };
    assert_eq!(s.rotate_refresh(&h("live"), theirs, NOW, 0).await.unwrap(), Rotation::Unknown);
    assert!(s.family_active("family-2").await.unwrap());
    let ours = refresh("ours", "family-2", NOW + 3600);
    assert!(matches!(s.rotate_refresh(&h("live"), ours, NOW, 0).await.unwrap(), Rotation::Rotated(_)));
}

/// A rotation whose new token cannot be stored leaves the old token unspent.
pub(crate) async fn refresh_rotation_is_atomic(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("rt-1", "family-1", NOW + 3600)).await.unwrap();
    s.put_refresh(refresh("taken", "family-9", NOW + 3600)).await.unwrap();
    let clash = refresh("taken", "family-1", NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-1"), clash, NOW, 0).await, Err(StoreError::Conflict("refresh token")));
    let next = refresh("rt-2", "family-1", NOW + 7200);
    assert!(matches!(s.rotate_refresh(&h("rt-1"), next, NOW, 0).await.unwrap(), Rotation::Rotated(_)));
    assert!(s.family_active("family-1").await.unwrap());
}

/// Within the reuse grace, a rotated token rotates again (one more live token in the family); the grace
/// counts from the first rotation, and past it the token is reused as ever.
pub(crate) async fn refresh_reuse_within_the_grace(b: &mut Backend) {
    const GRACE: i64 = 10;
    let s = &b.store;
    s.put_refresh(refresh("rt-1", "family-1", NOW + 3600)).await.unwrap();
    let old = h("rt-1");
    for label in ["rt-2a", "rt-2b"] {
        let answer = s.rotate_refresh(&old, refresh(label, "family-1", NOW + 7200), NOW, GRACE).await.unwrap();
        assert!(matches!(answer, Rotation::Rotated(_)), "{label}: {answer:?}");
    }
    // Later within the grace, from its first rotation on: still a retry.
    let again = refresh("rt-2c", "family-1", NOW + 7200);
    assert!(matches!(s.rotate_refresh(&h("rt-1"), again, NOW + GRACE - 1, GRACE).await.unwrap(), Rotation::Rotated(_)));
    assert!(s.family_active("family-1").await.unwrap());
    for label in ["rt-2a", "rt-2b", "rt-2c"] {
        let next = refresh(&format!("{label}-next"), "family-1", NOW + 9000);
        let answer = s.rotate_refresh(&h(label), next, NOW + GRACE - 1, GRACE).await.unwrap();
        assert!(matches!(answer, Rotation::Rotated(_)), "{label}: {answer:?}");
    }
    // The grace ran from the first rotation, not from the last one: this is reuse.
    let late = refresh("rt-late", "family-1", NOW + 9000);
    let answer = s.rotate_refresh(&h("rt-1"), late, NOW + GRACE, GRACE).await.unwrap();
    assert_eq!(answer, Rotation::Reused { family_id: "family-1".into() });
    assert!(!s.family_active("family-1").await.unwrap());

    // Without a grace, the second presentation is reuse at once.
    s.put_refresh(refresh("strict", "family-2", NOW + 3600)).await.unwrap();
    let first = refresh("strict-2", "family-2", NOW + 7200);
    assert!(matches!(s.rotate_refresh(&h("strict"), first, NOW, 0).await.unwrap(), Rotation::Rotated(_)));
    let second = refresh("strict-3", "family-2", NOW + 7200);
    let answer = s.rotate_refresh(&h("strict"), second, NOW, 0).await.unwrap();
    assert_eq!(answer, Rotation::Reused { family_id: "family-2".into() });
}

pub(crate) async fn refresh_concurrent_rotation(b: &mut Backend) {
    let stores = instances(b).await;
    for round in 0..ROUNDS {
        let (old, family) = (format!("contested-{round}"), format!("family-{round}"));
        b.store.put_refresh(refresh(&old, &family, NOW + 3600)).await.unwrap();
        let outcomes = race(&stores, |s, i| {
            let (old, new) = (h(&old), refresh(&format!("new-{round}-{i}"), &family, NOW + 7200));
            async move { (i, s.rotate_refresh(&old, new, NOW, 0).await.unwrap()) }
        })
        .await;
        let winners: Vec<usize> =
            outcomes.iter().filter(|(_, o)| matches!(o, Rotation::Rotated(_))).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        // Everyone after the winner presented a rotated token: the first of them revoked the family.
        assert!(outcomes.iter().any(|(_, o)| matches!(o, Rotation::Reused { .. })), "{outcomes:?}");
        for (_, outcome) in &outcomes {
            assert!(
                matches!(outcome, Rotation::Rotated(_) | Rotation::Reused { .. } | Rotation::Revoked),
                "{outcome:?}"
            );
        }
        // The winner's fresh token went with the family.
        assert!(!b.store.family_active(&family).await.unwrap());
        let next = refresh(&format!("after-{round}"), &family, NOW + 9000);
        let winner = h(&format!("new-{round}-{}", winners[0]));
        assert_eq!(b.store.rotate_refresh(&winner, next, NOW + 1, 0).await.unwrap(), Rotation::Revoked);
    }
}

pub(crate) async fn refresh_revocation(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("rt-1", "family-1", NOW + 3600)).await.unwrap();
    s.rotate_refresh(&h("rt-1"), refresh("rt-2", "family-1", NOW + 3600), NOW, 0).await.unwrap();
    assert_eq!(s.revoke_family("family-1").await.unwrap(), 1, "one unrotated token");
    assert_eq!(s.revoke_family("family-1").await.unwrap(), 0, "already revoked");
    assert_eq!(s.revoke_family("family-unknown").await.unwrap(), 0);
    assert!(!s.family_active("family-1").await.unwrap());
    assert!(!s.family_active("family-unknown").await.unwrap());

    // Revoking one token revokes its family (RFC 7009 §2.1).
    s.put_refresh(refresh("rt-3", "family-2", NOW + 3600)).await.unwrap();
    s.put_refresh(refresh("rt-4", "family-2", NOW + 3600)).await.unwrap();
    s.put_refresh(refresh("rt-5", "family-3", NOW + 3600)).await.unwrap();
    assert!(s.revoke_refresh(&h("rt-3")).await.unwrap());
    assert!(!s.revoke_refresh(&h("rt-3")).await.unwrap(), "nothing left to revoke");
    assert!(!s.revoke_refresh(&h("rt-unknown")).await.unwrap());
    let next = refresh("rt-6", "family-2", NOW + 3600);
    assert_eq!(s.rotate_refresh(&h("rt-4"), next, NOW, 0).await.unwrap(), Rotation::Revoked);
    assert!(s.family_active("family-3").await.unwrap(), "other families untouched");
}
