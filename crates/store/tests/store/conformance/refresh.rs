//! Refresh-token rotation, reuse detection and revocation (RFC 9700 §4.14.2).

use portcullis_store::{RefreshRecord, Rotation, StoreError};

use super::{NOW, ROUNDS, h, instances, race, refresh};
use crate::harness::Backend;

pub(crate) async fn refresh_rotation(b: &mut Backend) {
    let s = &b.store;
    let first = refresh("rt-1", "family-1", NOW + 3600);
    s.put_refresh(first.clone()).await.unwrap();
    assert_eq!(s.put_refresh(first.clone()).await, Err(StoreError::Conflict("refresh token")));
    assert_eq!(s.get_refresh(&h("rt-1")).await.unwrap(), Some(first.clone()));
    assert_eq!(s.get_refresh(&h("rt-unknown")).await.unwrap(), None);
    assert!(s.family_active("family-1").await.unwrap());

    // The new token joins the old one's family, whatever family it names.
    let second =
        RefreshRecord { scope: "mcp:tools".into(), created_at: NOW + 10, ..refresh("rt-2", "elsewhere", NOW + 7200) };
    assert_eq!(s.rotate_refresh(&h("rt-1"), second.clone(), NOW + 10).await.unwrap(), Rotation::Rotated(first.clone()));
    let stored = s.get_refresh(&h("rt-2")).await.unwrap().unwrap();
    assert_eq!(stored, RefreshRecord { family_id: "family-1".into(), ..second });
    assert!(!s.family_active("elsewhere").await.unwrap());

    let third = refresh("rt-3", "family-1", NOW + 9000);
    assert_eq!(s.rotate_refresh(&h("rt-2"), third, NOW + 20).await.unwrap(), Rotation::Rotated(stored));
    assert!(s.family_active("family-1").await.unwrap());

    // Presenting a rotated token again is reuse: the whole family goes, the newest token included.
    let replay = refresh("rt-x", "family-1", NOW + 9000);
    let reused = s.rotate_refresh(&h("rt-1"), replay.clone(), NOW + 30).await.unwrap();
    assert_eq!(reused, Rotation::Reused { family_id: "family-1".into() });
    assert!(!s.family_active("family-1").await.unwrap());
    assert_eq!(s.get_refresh(&h("rt-x")).await.unwrap(), None, "nothing stored on reuse");
    assert_eq!(s.rotate_refresh(&h("rt-3"), replay.clone(), NOW + 40).await.unwrap(), Rotation::Revoked);
    assert_eq!(s.rotate_refresh(&h("rt-1"), replay, NOW + 40).await.unwrap(), Rotation::Revoked);
}

pub(crate) async fn refresh_refusals(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("expired", "family-1", NOW)).await.unwrap();
    let next = refresh("next", "family-1", NOW + 3600);
    assert_eq!(s.rotate_refresh(&h("expired"), next.clone(), NOW).await.unwrap(), Rotation::Expired);
    assert_eq!(s.rotate_refresh(&h("unknown"), next.clone(), NOW).await.unwrap(), Rotation::Unknown);
    assert_eq!(s.get_refresh(&h("next")).await.unwrap(), None);

    // Another client presenting the token learns nothing and spends nothing (RFC 6749 §6).
    s.put_refresh(refresh("live", "family-2", NOW + 3600)).await.unwrap();
    let theirs = RefreshRecord { client_id: "client-2".into(), ..refresh("theirs", "family-2", NOW + 3600) };
    assert_eq!(s.rotate_refresh(&h("live"), theirs, NOW).await.unwrap(), Rotation::Unknown);
    assert!(s.family_active("family-2").await.unwrap());
    let ours = refresh("ours", "family-2", NOW + 3600);
    assert!(matches!(s.rotate_refresh(&h("live"), ours, NOW).await.unwrap(), Rotation::Rotated(_)));
}

/// A rotation whose new token cannot be stored leaves the old token unspent.
pub(crate) async fn refresh_rotation_is_atomic(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("rt-1", "family-1", NOW + 3600)).await.unwrap();
    s.put_refresh(refresh("taken", "family-9", NOW + 3600)).await.unwrap();
    let clash = refresh("taken", "family-1", NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-1"), clash, NOW).await, Err(StoreError::Conflict("refresh token")));
    let next = refresh("rt-2", "family-1", NOW + 7200);
    assert!(matches!(s.rotate_refresh(&h("rt-1"), next, NOW).await.unwrap(), Rotation::Rotated(_)));
    assert!(s.family_active("family-1").await.unwrap());
}

pub(crate) async fn refresh_concurrent_rotation(b: &mut Backend) {
    let stores = instances(b).await;
    for round in 0..ROUNDS {
        let (old, family) = (format!("contested-{round}"), format!("family-{round}"));
        b.store.put_refresh(refresh(&old, &family, NOW + 3600)).await.unwrap();
        let outcomes = race(&stores, |s, i| {
            let (old, new) = (h(&old), refresh(&format!("new-{round}-{i}"), &family, NOW + 7200));
            async move { (i, s.rotate_refresh(&old, new, NOW).await.unwrap()) }
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
        assert_eq!(b.store.rotate_refresh(&winner, next, NOW + 1).await.unwrap(), Rotation::Revoked);
    }
}

pub(crate) async fn refresh_revocation(b: &mut Backend) {
    let s = &b.store;
    s.put_refresh(refresh("rt-1", "family-1", NOW + 3600)).await.unwrap();
    s.rotate_refresh(&h("rt-1"), refresh("rt-2", "family-1", NOW + 3600), NOW).await.unwrap();
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
    assert_eq!(s.rotate_refresh(&h("rt-4"), next, NOW).await.unwrap(), Rotation::Revoked);
    assert!(s.family_active("family-3").await.unwrap(), "other families untouched");
}
