//! `portcullis users …` and `portcullis keys …`: administration of the gateway's store, through the
//! same configuration file `serve` uses.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use portcullis_authz::gateway::{Gateway, GatewayError};
use portcullis_config::{AdminSettings, ProcessEnv};
use portcullis_store::{Store, StoreError};
use portcullis_types::{Clock, SystemClock};

use crate::cli::{KeysCommand, UsersCommand};

/// The store a configuration names, read with only what administration needs from it.
async fn open(path: &Path) -> anyhow::Result<(AdminSettings, Arc<dyn Store>)> {
    let settings = settings(path)?;
    let store = open_store(&settings).await?;
    Ok((settings, store))
}

fn settings(path: &Path) -> anyhow::Result<AdminSettings> {
    AdminSettings::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))
}

async fn open_store(settings: &AdminSettings) -> anyhow::Result<Arc<dyn Store>> {
    // A SQLite file that is not there yet is made, wherever the command runs: say where, so that an
    // account added from another folder than the servers' is not taken as theirs.
    let new_file = settings
        .store_url
        .strip_prefix("sqlite://")
        .map(Path::new)
        .filter(|file| !file.exists())
        .map(|file| std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()));
    let store = portcullis_store::open(&settings.store_url)
        .await
        .with_context(|| format!("opening the store {}", crate::serve::redacted_store(&settings.store_url)))?;
    if let Some(file) = new_file {
        eprintln!(
            "note: there was no store at {}; a new one is made there. Servers use it only if their store.url \
             names this file (a relative path is read from the folder a command runs in).",
            file.display()
        );
    }
    Ok(store)
}

/// Local accounts are for servers where users sign in at portcullis itself.
fn local_sign_in(settings: &AdminSettings) -> anyhow::Result<()> {
    anyhow::ensure!(
        !settings.upstream_idp,
        "users sign in at the IdP in [gateway.upstream], so a local account could not sign in; nothing was changed"
    );
    Ok(())
}

/// Records a change in the audit log, when there is one.
fn audit(settings: &AdminSettings, kind: &str, fields: serde_json::Value) -> anyhow::Result<()> {
    if let Some(sink) = &settings.audit {
        portcullis_http::observe::append_audit(sink, kind, &fields).context("writing the audit log")?;
    }
    Ok(())
}

fn now() -> i64 {
    SystemClock.now_unix() as i64
}

/// A new password for `username`: asked twice, without echo, on a terminal; otherwise the first line of
/// standard input, for scripts.
fn read_password(username: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {username}: "))?;
        let again = rpassword::prompt_password("Once more: ")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing was changed");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(password.chars().count() >= 8, "the password must have at least 8 characters");
    Ok(password)
}

pub(crate) async fn users(cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCommand::Add { username, config } => {
            anyhow::ensure!(
                !username.is_empty() && !username.contains(char::is_whitespace),
                "invalid username {username:?}"
            );
            let settings = settings(&config)?;
            local_sign_in(&settings)?;
            let store = open_store(&settings).await?;
            let password = read_password(&username)?;
            Gateway::add_user(store.as_ref(), &username, &password, now()).await.map_err(|e| match e {
                GatewayError::Store(StoreError::Conflict(_)) => anyhow::anyhow!(
                    "an account named {username} already exists; `portcullis users passwd {username}` changes its password"
                ),
                e => anyhow::anyhow!("adding {username}: {e}"),
            })?;
            audit(&settings, "admin.user_added", serde_json::json!({"username": username, "result": "success"}))?;
            println!("added {username}");
        }
        UsersCommand::Passwd { username, config } => {
            let settings = settings(&config)?;
            local_sign_in(&settings)?;
            let store = open_store(&settings).await?;
            let password = read_password(&username)?;
            let changed = Gateway::change_password(store.as_ref(), &username, &password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(
                changed,
                "there is no account named {username}; `portcullis users add {username}` creates it"
            );
            let event = serde_json::json!({"username": username, "result": "success"});
            audit(&settings, "admin.password_changed", event)?;
            println!("password of {username} changed");
        }
        UsersCommand::List { config } => {
            let (_, store) = open(&config).await?;
            let users = store.list_users().await?;
            if users.is_empty() {
                println!("no local accounts yet: `portcullis users add NAME --config FILE` creates one");
            }
            for u in users {
                println!("{}\t{}", u.username, u.subject);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Rotate { config, publish_ahead } => {
            anyhow::ensure!(publish_ahead >= 0, "--publish-ahead cannot be negative");
            let (settings, store) = open(&config).await?;
            let reload = settings.keys_reload.as_secs() as i64;
            if publish_ahead < reload {
                eprintln!(
                    "warning: --publish-ahead {publish_ahead} is shorter than gateway.keys_reload_secs ({reload}): a server that \
                     has not re-read the keys yet may see tokens signed with a key it does not publish"
                );
            }
            // A new store may get its first operator key here; one that holds keys needs the servers'.
            let operator = if store.list_keys().await?.is_empty() {
                crate::serve::operator_key(&settings.operator_key_file, &ProcessEnv)?
            } else {
                crate::serve::existing_operator_key(&settings.operator_key_file, &ProcessEnv)?
            };
            let alg = settings.signing_alg;
            let now = now();
            let (kid, signs_from) = Gateway::rotate_keys(store.as_ref(), &operator, alg, now, publish_ahead)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let event =
                serde_json::json!({"kid": kid, "alg": alg.as_str(), "signs_from": signs_from, "result": "success"});
            audit(&settings, "gateway.key_rotated", event)?;
            if signs_from <= now {
                println!("key {kid} published; it signs now (no key was signing, so there was nothing to wait for)");
            } else {
                println!("key {kid} published; it signs from {} ({})", utc(signs_from), span(signs_from - now));
            }
        }
        KeysCommand::Revoke { kid, config } => {
            let (settings, store) = open(&config).await?;
            let operator = crate::serve::existing_operator_key(&settings.operator_key_file, &ProcessEnv)?;
            let now = now();
            let made = Gateway::revoke_key(store.as_ref(), &operator, settings.signing_alg, &kid, now)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let event = serde_json::json!({
                "kid": kid,
                "replaced_by": made.as_ref().map(|(kid, _)| kid),
                "signs_from": made.as_ref().map(|(_, at)| at),
                "result": "success",
            });
            audit(&settings, "gateway.key_revoked", event)?;
            println!(
                "key {kid} revoked: no longer published, and its tokens are refused once the servers re-read the keys \
                 (within gateway.keys_reload_secs, {} s)",
                settings.keys_reload.as_secs()
            );
            match made {
                Some((made, at)) if at <= now => println!("key {made} signs now in its place"),
                Some((made, at)) => {
                    println!("key {made} published in its place; it signs from {} ({})", utc(at), span(at - now))
                }
                None => {}
            }
        }
        KeysCommand::List { config } => {
            let (settings, store) = open(&config).await?;
            let keys = store.list_keys().await?;
            if keys.is_empty() {
                println!("no signing keys yet: `portcullis serve` creates one at its first start");
                return Ok(ExitCode::SUCCESS);
            }
            let keep = settings.access_token_ttl.as_secs() as i64 + 300;
            print!("{}", key_table(&keys, now(), keep));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys as a table, with what each does at `now` and what happens next. `keep` is how long a
/// retired key stays published.
fn key_table(keys: &[portcullis_store::KeyRecord], now: i64, keep: i64) -> String {
    use portcullis_authz::gateway::signs_at;
    // The newest key whose time has come signs (as the key ring decides).
    let signer = keys.iter().filter(|k| signs_at(k, now)).max_by_key(|k| k.not_before).map(|k| k.kid.as_str());
    let mut rows = vec![["KID".to_owned(), "ALG".to_owned(), "STATUS".to_owned()]];
    for k in keys {
        let status = if Some(k.kid.as_str()) == signer {
            match k.retired_at {
                Some(r) => format!("signing now, until {} ({})", utc(r), span(r - now)),
                None => "signing now".to_owned(),
            }
        } else if k.not_before > now && k.retired_at.is_none_or(|r| r > k.not_before) {
            format!("next: published, signs from {} ({})", utc(k.not_before), span(k.not_before - now))
        } else {
            match k.retired_at {
                Some(r) if r + keep > now => {
                    format!("retired {}; published until {} for its tokens", utc(r), utc(r + keep))
                }
                Some(r) => format!("retired {}; no longer published", utc(r)),
                None => "superseded by a newer key".to_owned(),
            }
        };
        rows.push([k.kid.to_string(), k.alg.clone(), status]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    rows.iter().map(|r| format!("{:w0$}  {:w1$}  {}\n", r[0], r[1], r[2])).collect()
}

/// Unix seconds as `2026-11-30 06:42:11 UTC`.
fn utc(unix: i64) -> String {
    let t = portcullis_types::Utc::from_unix(unix);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// A duration from now, in words: `in 9 min`, `3 h ago`.
fn span(secs: i64) -> String {
    let a = secs.unsigned_abs();
    let text = match a {
        0..60 => format!("{a} s"),
        60..7_200 => format!("{} min", a / 60),
        7_200..172_800 => format!("{} h", a / 3600),
        _ => format!("{} days", a / 86_400),
    };
    if secs >= 0 { format!("in {text}") } else { format!("{text} ago") }
}

#[cfg(test)]
mod tests {
    use portcullis_store::KeyRecord;

    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_800_000_000), "2027-01-15 08:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(span(600), "in 10 min");
        assert_eq!(span(-7_200), "2 h ago");
    }

    fn key(kid: &str, not_before: i64, retired_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            alg: "ES256".into(),
            public_jwk: serde_json::json!({}),
            private_sealed: Vec::new(),
            created_at: 0,
            not_before,
            retired_at,
        }
    }

    #[test]
    fn the_table_says_which_key_signs_and_what_comes_next() {
        let now = 1_800_000_000;
        let keys = [
            key("old", now - 9_000, Some(now - 4_000)),
            key("cur", now - 4_000, Some(now + 600)),
            key("next", now + 600, None),
        ];
        let table = key_table(&keys, now, 3_900);
        let line = |kid: &str| table.lines().find(|l| l.starts_with(kid)).unwrap().to_owned();
        assert!(line("cur").contains("signing now, until 2027-01-15 08:10:00 UTC (in 10 min)"), "{table}");
        assert!(line("next").contains("next: published, signs from 2027-01-15 08:10:00 UTC"), "{table}");
        assert!(line("old").contains("retired 2027-01-15 06:53:20 UTC; no longer published"), "{table}");
        // A key waiting to sign is never called active.
        let pending_only = key_table(&[key("p", now + 600, None)], now, 0);
        assert!(pending_only.contains("next: published") && !pending_only.contains("signing now"), "{pending_only}");
    }
}
