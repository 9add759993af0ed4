//! What only the SQLite backend has: a file on disk, its folder and its permissions.

use std::path::PathBuf;

use portcullis_store::{ConsentRecord, StoreError, open};

/// A temporary folder removed at the end, even on panic.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        TempDir(std::env::temp_dir().join(format!("portcullis-store-{name}-{}-{nanos}", std::process::id())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn creates_a_private_file_and_its_folder() {
    let dir = TempDir::new("private");
    let path = dir.0.join("nested").join("state.db");
    let store = open(&format!("sqlite://{}", path.display())).await.unwrap();
    let consent = ConsentRecord { subject: "user-1".into(), client_id: "c".into(), scope: "mcp".into(), granted_at: 0 };
    store.put_consent(consent).await.unwrap();
    assert!(path.is_file());
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600, "the database holds sealed keys and token hashes");
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600, "SQLite gives the log the database's mode");
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn leaves_an_existing_file_as_the_operator_made_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("existing");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("state.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    open(&format!("sqlite://{}", path.display())).await.unwrap();
    assert_eq!(mode(&path), 0o640);
}

#[tokio::test]
async fn refuses_a_file_that_is_not_a_database() {
    let dir = TempDir::new("garbage");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("state.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let error = open(&format!("sqlite://{}", path.display())).await.unwrap_err();
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
}

#[tokio::test]
async fn names_the_accepted_forms_for_an_unknown_scheme() {
    let error = open("redis://:hunter2@cache:6379").await.unwrap_err();
    let StoreError::InvalidUrl(message) = &error else { panic!("{error:?}") };
    assert!(message.contains("sqlite://PATH") && message.contains("postgres://") && message.contains("memory:"));
    assert!(!error.to_string().contains("hunter2"));
}
