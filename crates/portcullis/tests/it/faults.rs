//! Faults of the machine around the gate, through real processes: a store that cannot be written, a
//! database that goes away and comes back, and keys rotated before the first start. The gate is never
//! ready when it cannot do its work, and recovers without a restart.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::support::{Gate, STEP, Sample, TempDir, admin, bin, client, reserve_port, write_config};

/// A base64url operator key, so a process of another user needs no key file.
const OPERATOR_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

fn is_root() -> bool {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn a_store_that_cannot_be_written_is_refused_at_start() {
    let sample = Sample::start().await;
    let port = reserve_port();
    let dir = TempDir::new();
    let path = write_config(&crate::gateway::config(&sample.mcp()), port, &dir);
    // A first run creates the store (and leaves its -wal and -shm files behind).
    let gate =
        Gate::start_at(&path, port, TempDir { path: dir.path.clone() }, &[("PORTCULLIS_OPERATOR_KEY", OPERATOR_KEY)])
            .await;
    let r = client().get(gate.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    std::mem::forget(gate.kill().await);
    let state = dir.path.join("state");
    let db = state.join("portcullis.db");
    assert!(state.join("portcullis.db-wal").exists() || state.join("portcullis.db-shm").exists());
    // Read-only for the user that serves: as root, by serving as `nobody` (root writes anything).
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve").arg("--config").arg(&path).env("PORTCULLIS_OPERATOR_KEY", OPERATOR_KEY);
    for entry in std::fs::read_dir(&state).unwrap() {
        chmod(&entry.unwrap().path(), 0o444);
    }
    chmod(&state, 0o555);
    if is_root() {
        chmod(&dir.path, 0o755);
        chmod(&path, 0o644);
        cmd.uid(65534).gid(65534);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output()).await.expect("serve should exit").unwrap();
    chmod(&state, 0o755);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started on a read-only store; stderr: {stderr}");
    assert!(stderr.contains("cannot be written"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "the store is named: {stderr}");
}

/// A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones refused) and restored:
/// the database going away and coming back, as far as the gate can tell.
struct Relay {
    port: u16,
    up: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(tokio::sync::watch::channel(true).0);
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut down = state.subscribe();
                if !*down.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { port, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn readyz(gate: &Gate) -> u16 {
    client().get(gate.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn wait_for_readyz(gate: &Gate, status: u16) {
    let deadline = tokio::time::Instant::now() + STEP;
    while readyz(gate).await != status {
        assert!(tokio::time::Instant::now() < deadline, "/readyz did not answer {status} in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql").args([url, "-qc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DATABASE_URL and pass --include-ignored (./scripts/test does)"]
async fn readiness_follows_the_database_and_recovers_without_a_restart() {
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL must name a PostgreSQL database");
    let target = url::Url::parse(&admin_url).unwrap();
    let target = format!("{}:{}", target.host_str().unwrap(), target.port().unwrap_or(5432));
    let relay = Relay::start(target).await;
    let schema = format!("portcullis_it_{}", std::process::id());
    psql(&admin_url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"));
    let mut via_relay = url::Url::parse(&admin_url).unwrap();
    via_relay.set_port(Some(relay.port)).unwrap();
    let separator = if via_relay.query().is_some() { '&' } else { '?' };
    let store_url = format!("{via_relay}{separator}options[search_path]={schema}");

    let sample = Sample::start().await;
    let text = crate::gateway::config(&sample.mcp()).replace("sqlite://{dir}/state/portcullis.db", &store_url);
    let gate = Gate::start(&text).await;
    assert_eq!(readyz(&gate).await, 200);

    relay.set(false);
    wait_for_readyz(&gate, 503).await;
    let body = client().get(gate.url("/readyz")).send().await.unwrap().text().await.unwrap();
    assert!(body.contains("store"), "{body}");

    relay.set(true);
    wait_for_readyz(&gate, 200).await;
    // And it works again: a registration is written.
    let r = client()
        .post(gate.url("/register"))
        .json(&serde_json::json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(gate);
    psql(&admin_url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
}

#[tokio::test]
async fn keys_rotated_before_the_first_start_still_leave_a_key_that_signs() {
    let sample = Sample::start().await;
    let port = reserve_port();
    let dir = TempDir::new();
    let path = write_config(&crate::gateway::config(&sample.mcp()), port, &dir);
    let path_text = path.display().to_string();
    let rotated = admin(&["keys", "rotate", "--config", &path_text], "").await;
    assert!(rotated.contains("signs now"), "{rotated}");
    // Rotating again publishes the next key ahead, while the first one signs.
    let next = admin(&["keys", "rotate", "--config", &path_text], "").await;
    assert!(next.contains("signs from"), "{next}");
    let list = admin(&["keys", "list", "--config", &path_text], "").await;
    assert!(list.contains("signing now, until"), "{list}");
    assert!(list.contains("next: published, signs from"), "{list}");
    admin(&["users", "add", "alice", "--config", &path_text], &format!("{}\n", crate::gateway::PASSWORD)).await;

    let gate = Gate::start_at(&path, port, dir, &[]).await;
    assert_eq!(readyz(&gate).await, 200);
    let body = crate::gateway::configured_tokens(&gate).await;
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn a_rotation_without_the_servers_operator_key_writes_nothing() {
    let sample = Sample::start().await;
    let dir = TempDir::new();
    let path = write_config(&crate::gateway::config(&sample.mcp()), reserve_port(), &dir);
    let path_text = path.display().to_string();
    admin(&["keys", "rotate", "--config", &path_text], "").await;
    let before = admin(&["keys", "list", "--config", &path_text], "").await;
    let key_file = dir.path.join("state/operator.key");
    let servers_key = std::fs::read(&key_file).unwrap();
    let rotate = || {
        let mut cmd = tokio::process::Command::new(crate::support::bin());
        cmd.args(["keys", "rotate", "--config", &path_text]).env_remove("PORTCULLIS_OPERATOR_KEY").kill_on_drop(true);
        cmd
    };
    // Run without the key the servers use: none is made up, and the store is untouched.
    std::fs::remove_file(&key_file).unwrap();
    let out = rotate().output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator key"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!key_file.exists(), "no operator key was made up");
    // With another operator key: refused before anything is written.
    let other =
        rotate().env("PORTCULLIS_OPERATOR_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").output().await.unwrap();
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("does not open the stored key"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    std::fs::write(&key_file, servers_key).unwrap();
    assert_eq!(admin(&["keys", "list", "--config", &path_text], "").await, before, "nothing was written");
}

#[tokio::test]
async fn a_gateway_on_a_memory_store_says_it_keeps_nothing() {
    let sample = Sample::start().await;
    let config = crate::gateway::config(&sample.mcp())
        .replace("url = \"sqlite://{dir}/state/portcullis.db\"", "url = \"memory:\"");
    assert!(config.contains("memory:"));
    let (_gate, mut log) = crate::support::Gate::start_logging(&config, &[]).await;
    assert!(log.find("store.url is memory").await.is_some(), "warned at start");
}

#[tokio::test]
async fn keys_list_on_an_empty_store_says_so() {
    let sample = Sample::start().await;
    let dir = TempDir::new();
    let path = write_config(&crate::gateway::config(&sample.mcp()), reserve_port(), &dir);
    let out = admin(&["keys", "list", "--config", &path.display().to_string()], "").await;
    assert!(out.contains("no signing keys yet"), "{out}");
}
