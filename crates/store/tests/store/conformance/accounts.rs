//! Clients, local accounts and consents.

use portcullis_store::{ClientRecord, ClientSource, ConsentRecord, Rotation, StoreError, UserRecord};

use super::{NOW, client, h, refresh};
use crate::harness::Backend;

pub(crate) async fn clients(b: &mut Backend) {
    let s = &b.store;
    let public = client("client-public");
    let confidential = ClientRecord {
        client_id: "client-confidential".into(),
        secret_hash: Some(h("secret")),
        source: ClientSource::MetadataDocument,
        created_at: NOW + 10,
        ..client("unused")
    };
    s.put_client(public.clone()).await.unwrap();
    s.put_client(confidential.clone()).await.unwrap();
    assert_eq!(s.get_client("client-public").await.unwrap(), Some(public.clone()));
    assert_eq!(s.get_client("client-confidential").await.unwrap(), Some(confidential.clone()));
    assert_eq!(s.get_client("client-other").await.unwrap(), None);

    // A duplicate id is refused and changes nothing.
    let imposter = ClientRecord { secret_hash: Some(h("mine")), ..public.clone() };
    assert_eq!(s.put_client(imposter).await, Err(StoreError::Conflict("client")));
    assert_eq!(s.get_client("client-public").await.unwrap(), Some(public.clone()));

    // Upsert inserts, then replaces everything but `created_at`.
    let configured = ClientRecord { source: ClientSource::Configured, ..client("client-configured") };
    s.upsert_client(configured.clone()).await.unwrap();
    assert_eq!(s.get_client("client-configured").await.unwrap(), Some(configured.clone()));
    let changed = ClientRecord {
        secret_hash: Some(h("rotated")),
        metadata: serde_json::json!({ "client_name": "renamed" }),
        created_at: NOW + 500,
        ..configured.clone()
    };
    s.upsert_client(changed.clone()).await.unwrap();
    assert_eq!(s.get_client("client-configured").await.unwrap(), Some(ClientRecord { created_at: NOW, ..changed }));

    assert_eq!(s.count_clients_created_since(NOW).await.unwrap(), 3);
    assert_eq!(s.count_clients_created_since(NOW + 1).await.unwrap(), 1);
    assert_eq!(s.count_clients_created_since(NOW + 11).await.unwrap(), 0);

    assert!(s.delete_client("client-public").await.unwrap());
    assert!(!s.delete_client("client-public").await.unwrap());
    assert_eq!(s.get_client("client-public").await.unwrap(), None);
    // The id is free again.
    s.put_client(public).await.unwrap();
}

/// Deleting a client removes its consents and revokes its refresh families, and nobody else's.
pub(crate) async fn delete_client_ends_grants(b: &mut Backend) {
    let s = &b.store;
    s.put_client(client("client-1")).await.unwrap();
    s.put_client(client("client-2")).await.unwrap();
    for client_id in ["client-1", "client-2"] {
        let consent = ConsentRecord {
            subject: "user-1".into(),
            client_id: client_id.into(),
            scope: "mcp".into(),
            granted_at: NOW,
        };
        s.put_consent(consent).await.unwrap();
    }
    s.put_refresh(refresh("rt-1", "family-1", NOW + 600)).await.unwrap();
    let other =
        portcullis_store::RefreshRecord { client_id: "client-2".into(), ..refresh("rt-2", "family-2", NOW + 600) };
    s.put_refresh(other).await.unwrap();

    assert!(s.delete_client("client-1").await.unwrap());
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(!s.family_active("family-1").await.unwrap());
    assert_eq!(
        s.rotate_refresh(&h("rt-1"), refresh("rt-1b", "family-1", NOW + 900), NOW, 0).await.unwrap(),
        Rotation::Revoked
    );

    assert!(s.get_consent("user-1", "client-2").await.unwrap().is_some());
    assert!(s.family_active("family-2").await.unwrap());
}

fn user(username: &str, subject: &str) -> UserRecord {
    UserRecord {
        username: username.into(),
        subject: subject.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${username}"),
        created_at: NOW,
    }
}

pub(crate) async fn users(b: &mut Backend) {
    let s = &b.store;
    let (ada, grace) = (user("ada", "sub-ada"), user("grace", "sub-grace"));
    s.put_user(grace.clone()).await.unwrap();
    s.put_user(ada.clone()).await.unwrap();
    assert_eq!(s.get_user("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(s.get_user("nobody").await.unwrap(), None);

    assert_eq!(s.put_user(user("ada", "sub-new")).await, Err(StoreError::Conflict("user")));
    assert_eq!(s.put_user(user("ada2", "sub-ada")).await, Err(StoreError::Conflict("user")), "subjects are unique");

    assert!(s.set_password("ada", "$argon2id$new".into()).await.unwrap());
    assert!(!s.set_password("nobody", "$argon2id$new".into()).await.unwrap());
    let ada = UserRecord { password_hash: "$argon2id$new".into(), ..ada };
    assert_eq!(s.get_user("ada").await.unwrap(), Some(ada.clone()));

    assert_eq!(s.list_users().await.unwrap(), vec![ada, grace.clone()], "ordered by username");

    assert!(s.delete_user("ada").await.unwrap());
    assert!(!s.delete_user("ada").await.unwrap());
    assert_eq!(s.list_users().await.unwrap(), vec![grace]);
}

/// Deleting an account removes its consents and revokes its refresh families, and nobody else's.
pub(crate) async fn delete_user_ends_sessions(b: &mut Backend) {
    let s = &b.store;
    s.put_user(user("ada", "user-1")).await.unwrap();
    s.put_user(user("grace", "user-2")).await.unwrap();
    for subject in ["user-1", "user-2"] {
        let consent = ConsentRecord {
            subject: subject.into(),
            client_id: "client-1".into(),
            scope: "mcp".into(),
            granted_at: NOW,
        };
        s.put_consent(consent).await.unwrap();
    }
    s.put_refresh(refresh("rt-1", "family-1", NOW + 600)).await.unwrap();
    let other = portcullis_store::RefreshRecord { subject: "user-2".into(), ..refresh("rt-2", "family-2", NOW + 600) };
    s.put_refresh(other).await.unwrap();

    assert!(s.delete_user("ada").await.unwrap());
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(!s.family_active("family-1").await.unwrap());
    assert!(s.get_consent("user-2", "client-1").await.unwrap().is_some());
    assert!(s.family_active("family-2").await.unwrap());
}

pub(crate) async fn consents(b: &mut Backend) {
    let s = &b.store;
    let consent = |subject: &str, client_id: &str, scope: &str, granted_at| ConsentRecord {
        subject: subject.into(),
        client_id: client_id.into(),
        scope: scope.into(),
        granted_at,
    };
    s.put_consent(consent("user-1", "client-1", "mcp:tools", NOW)).await.unwrap();
    s.put_consent(consent("user-2", "client-1", "mcp:tools", NOW)).await.unwrap();
    s.put_consent(consent("user-1", "client-2", "mcp:tools", NOW)).await.unwrap();
    assert_eq!(
        s.get_consent("user-1", "client-1").await.unwrap(),
        Some(consent("user-1", "client-1", "mcp:tools", NOW))
    );
    assert_eq!(s.get_consent("user-3", "client-1").await.unwrap(), None);

    // Consenting again replaces the earlier grant.
    s.put_consent(consent("user-1", "client-1", "mcp:tools mcp:resources", NOW + 60)).await.unwrap();
    assert_eq!(
        s.get_consent("user-1", "client-1").await.unwrap(),
        Some(consent("user-1", "client-1", "mcp:tools mcp:resources", NOW + 60))
    );

    assert_eq!(s.delete_consents_for_client("client-1").await.unwrap(), 2);
    assert_eq!(s.delete_consents_for_client("client-1").await.unwrap(), 0);
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(s.get_consent("user-1", "client-2").await.unwrap().is_some());
}
