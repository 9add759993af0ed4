//! `portcullis users …` and `portcullis keys …`: administration of the gateway's store, through the
//! same configuration file `serve` uses.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use portcullis_config::{Config, GatewayConfig, ProcessEnv};
use portcullis_oauth::server::gateway::Gateway;
use portcullis_oauth::server::keys::KeyAlg;
use portcullis_store::Store;
use portcullis_types::{Clock, SystemClock};

use crate::cli::{KeysCommand, UsersCommand};

async fn open(path: &Path) -> anyhow::Result<(Config, GatewayConfig, Arc<dyn Store>)> {
    let config = Config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let gateway =
        config.gateway.clone().context("the configuration has no gateway-mode server ([[server]] gateway = true)")?;
    let store = portcullis_store::open(&config.store.url)
        .await
        .with_context(|| format!("opening the store {}", config.store.url))?;
    Ok((config, gateway, store))
}

fn now() -> i64 {
    SystemClock.now_unix() as i64
}

/// The first line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
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
            let (_, _, store) = open(&config).await?;
            let password = read_password()?;
            Gateway::add_user(store.as_ref(), &username, &password, now())
                .await
                .map_err(|e| anyhow::anyhow!("adding {username}: {e}"))?;
            println!("added {username}");
        }
        UsersCommand::Passwd { username, config } => {
            let (_, _, store) = open(&config).await?;
            let password = read_password()?;
            let changed = Gateway::change_password(store.as_ref(), &username, &password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(changed, "no account named {username}");
            println!("password of {username} changed");
        }
        UsersCommand::List { config } => {
            let (_, _, store) = open(&config).await?;
            for u in store.list_users().await? {
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
            let (_, gateway, store) = open(&config).await?;
            let operator = crate::serve::operator_key(&gateway, &ProcessEnv)?;
            let alg = KeyAlg::parse(&gateway.signing_alg).context("unsupported signing algorithm")?;
            let kid = Gateway::rotate_keys(store.as_ref(), &operator, alg, now(), publish_ahead)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("published key {kid}; it signs from {} seconds from now", publish_ahead);
        }
        KeysCommand::List { config } => {
            let (_, _, store) = open(&config).await?;
            for k in store.list_keys().await? {
                let retired = k.retired_at.map(|r| format!("retires at {r}")).unwrap_or_else(|| "active".to_owned());
                println!("{}\t{}\tsigns from {}\t{retired}", k.kid, k.alg, k.not_before);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
