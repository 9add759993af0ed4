//! The [`Store`](crate::Store) implementation of the two SQL backends. Their SQL text is shared (see
//! `sql`) and so is every method body: only the pool, the way a writing transaction begins, and the row
//! locks in `SELECT_CODE` and `SELECT_REFRESH_FOR_ROTATION` differ, and those the invoking module
//! defines. sqlx's generic executor bounds make one generic implementation unwieldy; a macro keeps one
//! text.
//!
//! The invoking module provides a store type with a `pool` field, an async `write()` that begins a
//! writing transaction, async `redeem_code()` and `rotate()` that run the generated `redeem_in` and
//! `rotate_in` in a writing transaction of their choosing (SQLite commits many at once), and the
//! constants `SELECT_CODE` and `SELECT_REFRESH_FOR_ROTATION`.

/// `impl Store for $store` over the sqlx database `$db`, plus the `insert_refresh` helper it uses.
macro_rules! impl_sql_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use $crate::sql;
            use $crate::verdict::{self, CodeStep, RotationStep};
            use $crate::{
                ClientRecord, CodeRecord, CodeRedemption, ConsentRecord, KeyRecord, PendingRecord, RefreshRecord,
            };
            use $crate::{Failures, IssueRefresh, Rotation, StoreError, UpstreamTokenRecord, UserRecord};

            #[async_trait]
            impl $crate::Store for $store {
                async fn put_client(&self, c: ClientRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::INSERT_CLIENT)
                        .bind(c.client_id.as_str())
                        .bind(&c.secret_hash)
                        .bind(c.metadata.to_string())
                        .bind(c.source.as_str())
                        .bind(c.created_at)
                        .bind(c.used_at)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::insert("client"))?;
                    Ok(())
                }

                async fn upsert_client(&self, c: ClientRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::UPSERT_CLIENT)
                        .bind(c.client_id.as_str())
                        .bind(&c.secret_hash)
                        .bind(c.metadata.to_string())
                        .bind(c.source.as_str())
                        .bind(c.created_at)
                        .bind(c.used_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
                    let row: Option<sql::ClientRow> =
                        sqlx::query_as(sql::SELECT_CLIENT).bind(client_id).fetch_optional(&self.pool).await?;
                    row.map(sql::client_from_row).transpose()
                }

                async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
                    let mut tx = self.write().await?;
                    let deleted =
                        sqlx::query(sql::DELETE_CLIENT).bind(client_id).execute(&mut *tx).await?.rows_affected();
                    sqlx::query(sql::DELETE_CONSENTS_FOR_CLIENT).bind(client_id).execute(&mut *tx).await?;
                    sqlx::query(sql::REVOKE_FAMILIES_FOR_CLIENT).bind(client_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(deleted > 0)
                }

                async fn count_clients_created_since(&self, since: i64) -> Result<u64, StoreError> {
                    let n: i64 = sqlx::query_scalar(sql::COUNT_CLIENTS_SINCE).bind(since).fetch_one(&self.pool).await?;
                    sql::count(n)
                }

                async fn put_user(&self, u: UserRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::INSERT_USER)
                        .bind(&u.username)
                        .bind(&u.subject)
                        .bind(&u.password_hash)
                        .bind(u.created_at)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::insert("user"))?;
                    Ok(())
                }

                async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
                    let row: Option<sql::UserRow> =
                        sqlx::query_as(sql::SELECT_USER).bind(username).fetch_optional(&self.pool).await?;
                    Ok(row.map(sql::user_from_row))
                }

                async fn set_password(&self, username: &str, password_hash: String) -> Result<bool, StoreError> {
                    let done =
                        sqlx::query(sql::SET_PASSWORD).bind(username).bind(password_hash).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
                    let rows: Vec<sql::UserRow> = sqlx::query_as(sql::LIST_USERS).fetch_all(&self.pool).await?;
                    Ok(rows.into_iter().map(sql::user_from_row).collect())
                }

                async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
                    let mut tx = self.write().await?;
                    let subject: Option<String> =
                        sqlx::query_scalar(sql::DELETE_USER).bind(username).fetch_optional(&mut *tx).await?;
                    if let Some(subject) = &subject {
                        sqlx::query(sql::DELETE_CONSENTS_FOR_SUBJECT).bind(subject).execute(&mut *tx).await?;
                        sqlx::query(sql::REVOKE_FAMILIES_FOR_SUBJECT).bind(subject).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(subject.is_some())
                }

                async fn put_consent(&self, c: ConsentRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::UPSERT_CONSENT)
                        .bind(&c.subject)
                        .bind(c.client_id.as_str())
                        .bind(&c.scope)
                        .bind(c.granted_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn get_consent(
                    &self,
                    subject: &str,
                    client_id: &str,
                ) -> Result<Option<ConsentRecord>, StoreError> {
                    let row: Option<sql::ConsentRow> = sqlx::query_as(sql::SELECT_CONSENT)
                        .bind(subject)
                        .bind(client_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(sql::consent_from_row))
                }

                async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64, StoreError> {
                    let done = sqlx::query(sql::DELETE_CONSENTS_FOR_CLIENT).bind(client_id).execute(&self.pool).await?;
                    Ok(done.rows_affected())
                }

                async fn put_pending(&self, p: PendingRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::INSERT_PENDING)
                        .bind(&p.id_hash)
                        .bind(&p.kind)
                        .bind(p.data.to_string())
                        .bind(p.expires_at)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::insert("pending flow"))?;
                    Ok(())
                }

                async fn take_pending(&self, id_hash: &str, now: i64) -> Result<Option<PendingRecord>, StoreError> {
                    let row: Option<sql::PendingRow> =
                        sqlx::query_as(sql::TAKE_PENDING).bind(id_hash).fetch_optional(&self.pool).await?;
                    let pending = row.map(sql::pending_from_row).transpose()?;
                    Ok(pending.filter(|p| now < p.expires_at))
                }

                async fn put_code(&self, c: CodeRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::INSERT_CODE)
                        .bind(&c.code_hash)
                        .bind(c.client_id.as_str())
                        .bind(&c.subject)
                        .bind(&c.redirect_uri)
                        .bind(&c.resource)
                        .bind(&c.scope)
                        .bind(&c.code_challenge)
                        .bind(&c.nonce)
                        .bind(c.auth_time)
                        .bind(c.expires_at)
                        .bind(&c.family_id)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::insert("code"))?;
                    Ok(())
                }

                async fn redeem_code_issuing(
                    &self,
                    code_hash: &str,
                    now: i64,
                    issue: &IssueRefresh<'_>,
                ) -> Result<CodeRedemption, StoreError> {
                    self.redeem_code(code_hash, now, issue).await
                }

                async fn put_refresh(&self, t: RefreshRecord) -> Result<(), StoreError> {
                    let mut tx = self.write().await?;
                    insert_refresh(&mut *tx, &t).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn get_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
                    let row: Option<sql::RefreshRow> =
                        sqlx::query_as(sql::SELECT_REFRESH).bind(token_hash).fetch_optional(&self.pool).await?;
                    Ok(row.map(sql::refresh_from_row))
                }

                async fn rotate_refresh(
                    &self,
                    old_hash: &str,
                    new: RefreshRecord,
                    now: i64,
                    grace: i64,
                ) -> Result<Rotation, StoreError> {
                    self.rotate(old_hash, new, now, grace).await
                }

                async fn revoke_family(&self, family_id: &str) -> Result<u64, StoreError> {
                    let mut tx = self.write().await?;
                    let revoked =
                        sqlx::query(sql::REVOKE_FAMILY).bind(family_id).execute(&mut *tx).await?.rows_affected();
                    let live: i64 = if revoked == 0 {
                        0
                    } else {
                        sqlx::query_scalar(sql::COUNT_LIVE_IN_FAMILY).bind(family_id).fetch_one(&mut *tx).await?
                    };
                    tx.commit().await?;
                    sql::count(live)
                }

                async fn revoke_refresh(&self, token_hash: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query(sql::REVOKE_FAMILY_OF_TOKEN).bind(token_hash).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn family_active(&self, family_id: &str) -> Result<bool, StoreError> {
                    let revoked: Option<bool> =
                        sqlx::query_scalar(sql::FAMILY_REVOKED).bind(family_id).fetch_optional(&self.pool).await?;
                    Ok(revoked == Some(false))
                }

                async fn refresh_rotated(&self, token_hash: &str) -> Result<bool, StoreError> {
                    let rotated: Option<Option<i64>> =
                        sqlx::query_scalar(sql::REFRESH_ROTATED_AT).bind(token_hash).fetch_optional(&self.pool).await?;
                    Ok(rotated.flatten().is_some())
                }

                async fn put_key(&self, k: KeyRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::INSERT_KEY)
                        .bind(k.kid.as_str())
                        .bind(&k.alg)
                        .bind(k.public_jwk.to_string())
                        .bind(&k.private_sealed)
                        .bind(k.created_at)
                        .bind(k.not_before)
                        .bind(k.retired_at)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::insert("key"))?;
                    Ok(())
                }

                async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
                    let rows: Vec<sql::KeyRow> = sqlx::query_as(sql::LIST_KEYS).fetch_all(&self.pool).await?;
                    rows.into_iter().map(sql::key_from_row).collect()
                }

                async fn retire_key(&self, kid: &str, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query(sql::RETIRE_KEY).bind(kid).bind(at).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn delete_key(&self, kid: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query(sql::DELETE_KEY).bind(kid).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn put_upstream_token(&self, t: UpstreamTokenRecord) -> Result<(), StoreError> {
                    sqlx::query(sql::UPSERT_UPSTREAM)
                        .bind(&t.subject)
                        .bind(&t.provider)
                        .bind(&t.sealed)
                        .bind(t.expires_at)
                        .bind(t.updated_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn get_upstream_token(
                    &self,
                    subject: &str,
                    provider: &str,
                ) -> Result<Option<UpstreamTokenRecord>, StoreError> {
                    let row: Option<sql::UpstreamRow> = sqlx::query_as(sql::SELECT_UPSTREAM)
                        .bind(subject)
                        .bind(provider)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(sql::upstream_from_row))
                }

                async fn record_failure(&self, key: &str, now: i64, window: i64) -> Result<Failures, StoreError> {
                    let row: sql::FailuresRow = sqlx::query_as(sql::RECORD_FAILURE)
                        .bind(key)
                        .bind(now)
                        .bind(now.saturating_add(window))
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(sql::failures_from_row(row))
                }

                async fn failures(&self, key: &str, now: i64) -> Result<Option<Failures>, StoreError> {
                    let row: Option<sql::FailuresRow> =
                        sqlx::query_as(sql::SELECT_FAILURES).bind(key).bind(now).fetch_optional(&self.pool).await?;
                    Ok(row.map(sql::failures_from_row))
                }

                async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
                    sqlx::query(sql::DELETE_FAILURES).bind(key).execute(&self.pool).await?;
                    Ok(())
                }

                async fn probe(&self, now: i64) -> Result<(), StoreError> {
                    let mut tx = self.write().await?;
                    sqlx::query(sql::PROBE_WRITE).bind(now).execute(&mut *tx).await?;
                    let (read,): (i64,) = sqlx::query_as(sql::PROBE_READ).fetch_one(&mut *tx).await?;
                    tx.commit().await?;
                    if read != now {
                        return Err(StoreError::Corrupt(format!("probe: wrote {now}, read {read}")));
                    }
                    Ok(())
                }

                async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
                    let mut tx = self.write().await?;
                    let mut purged = 0;
                    for (statement, cutoff) in [
                        (sql::PURGE_PENDING, now),
                        (sql::PURGE_CODES, now.saturating_sub(crate::CODE_REPLAY_WINDOW)),
                        (sql::PURGE_REFRESH, now),
                        (sql::PURGE_FAMILIES, now),
                        (sql::PURGE_FAILURES, now),
                    ] {
                        purged += sqlx::query(statement).bind(cutoff).execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(purged)
                }

                async fn purge_unused_clients(
                    &self,
                    never_used_before: i64,
                    idle_before: i64,
                    now: i64,
                ) -> Result<Vec<$crate::UnusedClient>, StoreError> {
                    let mut tx = self.write().await?;
                    let gone: Vec<(String, Option<i64>)> = sqlx::query_as(sql::PURGE_UNUSED_CLIENTS)
                        .bind(never_used_before)
                        .bind(idle_before)
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await?;
                    for (client_id, _) in &gone {
                        sqlx::query(sql::DELETE_CONSENTS_FOR_CLIENT).bind(client_id).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(gone
                        .into_iter()
                        .map(|(client_id, used_at)| $crate::UnusedClient {
                            client_id: portcullis_types::ClientId::new(client_id),
                            used_at,
                        })
                        .collect())
                }
            }

            /// Stores a refresh token, creating or extending its family first.
            impl $store {
                /// Redeems a code in the writing transaction `conn` is in: judges it as read there and, if it
                /// may be redeemed, marks it, records its family and stores the refresh token `issue` makes.
                async fn redeem_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    code_hash: &str,
                    now: i64,
                    issue: &IssueRefresh<'_>,
                ) -> Result<CodeRedemption, StoreError> {
                    let row: Option<sql::CodeRow> =
                        sqlx::query_as(SELECT_CODE).bind(code_hash).fetch_optional(&mut *conn).await?;
                    Ok(match verdict::judge_code(row.map(sql::code_from_row), now) {
                        CodeStep::Answer(answer) => answer,
                        CodeStep::Redeem(code) => {
                            sqlx::query(sql::MARK_CODE_REDEEMED).bind(code_hash).bind(now).execute(&mut *conn).await?;
                            sqlx::query(sql::MARK_CLIENT_USED)
                                .bind(code.client_id.as_str())
                                .bind(now)
                                .bind(crate::CLIENT_USE_RESOLUTION)
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query(sql::UPSERT_FAMILY)
                                .bind(&code.family_id)
                                .bind(code.client_id.as_str())
                                .bind(&code.subject)
                                .bind(verdict::family_expiry_for(&code))
                                .execute(&mut *conn)
                                .await?;
                            if let Some(mut refresh) = issue(&code) {
                                refresh.family_id.clone_from(&code.family_id);
                                insert_refresh(&mut *conn, &refresh).await?;
                            }
                            CodeRedemption::Redeemed(code)
                        }
                    })
                }
            }

            impl $store {
                /// Rotates a refresh token in the writing transaction `conn` is in: judges it as read there,
                /// then marks it rotated and stores `new` in its family, or revokes the family of a token
                /// presented again.
                async fn rotate_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    old_hash: &str,
                    mut new: RefreshRecord,
                    now: i64,
                    grace: i64,
                ) -> Result<Rotation, StoreError> {
                    let row: Option<sql::RotationRow> =
                        sqlx::query_as(SELECT_REFRESH_FOR_ROTATION).bind(old_hash).fetch_optional(&mut *conn).await?;
                    let read = row.map(sql::rotation_from_row);
                    Ok(match verdict::judge_rotation(read, new.client_id.as_str(), now, grace) {
                        RotationStep::Answer(answer) => answer,
                        RotationStep::RevokeFamily(family_id) => {
                            sqlx::query(sql::REVOKE_FAMILY).bind(&family_id).execute(&mut *conn).await?;
                            Rotation::Reused { family_id }
                        }
                        RotationStep::Rotate(old) => {
                            sqlx::query(sql::MARK_REFRESH_ROTATED).bind(old_hash).bind(now).execute(&mut *conn).await?;
                            new.family_id.clone_from(&old.family_id);
                            insert_refresh(&mut *conn, &new).await?;
                            Rotation::Rotated(old)
                        }
                    })
                }
            }

            async fn insert_refresh(
                conn: &mut <$db as sqlx::Database>::Connection,
                t: &RefreshRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(sql::UPSERT_FAMILY)
                    .bind(&t.family_id)
                    .bind(t.client_id.as_str())
                    .bind(&t.subject)
                    .bind(t.expires_at)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(sql::INSERT_REFRESH)
                    .bind(&t.token_hash)
                    .bind(&t.family_id)
                    .bind(t.client_id.as_str())
                    .bind(&t.subject)
                    .bind(&t.resource)
                    .bind(&t.scope)
                    .bind(t.expires_at)
                    .bind(t.created_at)
                    .bind(t.session_ends_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::insert("refresh token"))?;
                Ok(())
            }
        };
    };
}

pub(crate) use impl_sql_store;
