//! Local accounts: argon2id password hashes in the store, checked off the async threads, with a dummy
//! hash for unknown names so timing does not tell which accounts exist.

use portcullis_store::{Store, UserRecord};

use super::{Gateway, GatewayError};

impl Gateway {
    /// Creates a local account with an argon2id password hash.
    pub async fn add_user(store: &dyn Store, username: &str, password: &str, now: i64) -> Result<(), GatewayError> {
        let password_hash = hash_password(password)?;
        store
            .put_user(UserRecord {
                username: username.to_owned(),
                subject: format!("local:{username}"),
                password_hash,
                created_at: now,
            })
            .await?;
        Ok(())
    }

    /// Whether a local account exists.
    pub async fn user_exists(&self, username: &str) -> Result<bool, GatewayError> {
        Ok(self.store.get_user(username).await?.is_some())
    }

    /// Creates a local account.
    pub async fn create_user(&self, username: &str, password: &str) -> Result<(), GatewayError> {
        Self::add_user(self.store.as_ref(), username, password, self.now()).await
    }

    /// Replaces a local account's password.
    pub async fn set_user_password(&self, username: &str, password: &str) -> Result<bool, GatewayError> {
        Self::change_password(self.store.as_ref(), username, password).await
    }

    /// Replaces a local account's password in `store`.
    pub async fn change_password(store: &dyn Store, username: &str, password: &str) -> Result<bool, GatewayError> {
        Ok(store.set_password(username, hash_password(password)?).await?)
    }

    /// Checks a local account's password; the subject on success. Runs argon2 off the async threads.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<Option<String>, GatewayError> {
        let user = self.store.get_user(username).await?;
        let password = password.to_owned();
        // Verify against a dummy hash for unknown users too, so timing does not reveal which exist.
        let (stored, subject) = match user {
            Some(u) => (u.password_hash, Some(u.subject)),
            None => (dummy_hash().to_owned(), None),
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|e| GatewayError::Other(e.to_string()))?;
        Ok(subject.filter(|_| ok))
    }
}

/// An argon2id PHC string (the crate's default parameters) with a random 16-byte salt.
fn hash_password(password: &str) -> Result<String, GatewayError> {
    use argon2::password_hash::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| GatewayError::Other(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| GatewayError::Other(format!("hashing the password: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("portcullis-dummy-password").unwrap_or_default())
}
