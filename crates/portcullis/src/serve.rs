//! `portcullis serve`: the one place where configuration, state and the listener are wired together.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use portcullis_authz::gateway::{Gateway, Serves};
use portcullis_authz::id_jag::TrustedIdp;
use portcullis_authz::keys::OperatorKey;
use portcullis_authz::upstream::Upstream;
use portcullis_config::{Config, Env, GatewayConfig, MapEnv, ProcessEnv, ServerAuth};
use portcullis_http::AppState;
use portcullis_http::gateway::GatewayHttp;
use portcullis_types::{Clock, SystemClock};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;

/// The variable holding the operator key (base64url, 32 bytes); it wins over the key file.
pub(crate) const OPERATOR_KEY_ENV: &str = "PORTCULLIS_OPERATOR_KEY";
/// `--dev` keeps its state here.
const DEV_DIR: &str = ".portcullis";
/// `--dev`'s account.
const DEV_USER: &str = "dev";

/// A listening socket handed over by the service manager (systemd socket activation: `LISTEN_FDS`, the
/// socket at descriptor 3), taken before any thread starts. With one, `listen` is not bound: the
/// manager owns the address, can restart portcullis without refusing a connection, and tests can hand
/// over a socket they bound to port 0 instead of guessing a free port.
pub(crate) fn activated_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    anyhow::ensure!(fds.len() == 1, "socket activation passed {} sockets; portcullis listens on one", fds.len());
    let listener = fds.take_tcp_listener(0).context("the socket passed by the service manager")?;
    let listener = listener.context("the socket passed by the service manager is not a TCP listener")?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// The configuration, read before the runtime starts (its thread count depends on it): from the file,
/// else from the environment; `None` with `--dev`, whose configuration is made once the runtime runs.
pub(crate) fn configuration(args: &ServeArgs) -> anyhow::Result<Option<Config>> {
    if args.dev {
        return Ok(None);
    }
    let config = if let Some(path) = &args.config {
        Config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?
    } else {
        Config::from_env(&ProcessEnv)
            .map_err(|e| anyhow::anyhow!("no --config given, and the environment is incomplete:\n{e}"))?
    };
    Ok(Some(config))
}

/// The runtime `serve` runs on: `proxy.workers` worker threads, else one per CPU the process may run on.
/// Multi-threaded even with one worker: tokio's single-threaded runtime, tried on one pinned CPU, served
/// 5–6 % fewer proxied requests per second in front of the Rust floor (and 7 % more in front of the
/// sample upstream), so it buys nothing dependable (docs/performance.md).
pub(crate) fn runtime(config: Option<&Config>) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = config
        .and_then(|c| c.proxy.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?)
}

pub(crate) async fn run(
    args: ServeArgs,
    config: Option<Config>,
    activated: anyhow::Result<Option<std::net::TcpListener>>,
) -> anyhow::Result<ExitCode> {
    let activated = activated?;
    // The one place wiring happens (configuration, state, listener, signals), in start-up order.
    let mut background = Vec::new();
    let config = match config {
        Some(config) => config,
        None => {
            let (config, sample) = dev_config(args.dev_listen).await?;
            background.push(sample);
            config
        }
    };
    let tracer = crate::logging::init(&config.log, config.traces.as_ref())?;
    let config = Arc::new(config);
    // The address first: a busy port is reported before anything is set up or announced.
    let listener = match activated {
        Some(l) => {
            let l = TcpListener::from_std(l)?;
            let addr = l.local_addr()?;
            // The loopback-only switches were checked against `listen`; hold the real socket to that too.
            let loopback_only =
                config.dangerous.auto_approve_as.is_some() || config.dangerous.client_metadata_from_loopback;
            anyhow::ensure!(
                !loopback_only || addr.ip().is_loopback(),
                "the socket passed by the service manager ({addr}) is not on loopback, which the [dangerous] settings require"
            );
            tracing::info!(%addr, "listening on the socket passed by the service manager");
            l
        }
        None => TcpListener::bind(config.listen).await.with_context(|| {
            let hint = if args.dev { " (another portcullis? --dev-listen picks another address)" } else { "" };
            format!("cannot listen on {}{hint}", config.listen)
        })?,
    };
    announce(&config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Before anything is fetched, so that the first key set loads are counted too.
    let (observe, metrics_listener) = crate::observe::start(&config).await?;
    background.extend(metrics_listener);

    let gateway = match &config.gateway {
        Some(g) => Some(start_gateway(&config, g, clock.clone(), observe.active() || config.traces.is_some()).await?),
        None => None,
    };
    let dev_sign_in = match (&gateway, args.dev) {
        (Some(gw), true) => Some(dev_account(gw).await?),
        _ => None,
    };

    // Every IdP is discovered and its keys loaded before we listen. An IdP that answers with something
    // wrong stops the start (naming the URL, and what came back); one that cannot be reached now is
    // awaited: its servers answer 503 and `/readyz` says not ready until it answers.
    let verifiers = crate::setup::verifiers(&config, &portcullis_oauth::idp_client(), clock, gateway.as_deref())
        .await
        .map_err(|(path, e)| anyhow::anyhow!("server {path}: {e}"))?;
    let gateway_http = match (&gateway, &config.gateway) {
        (Some(gw), Some(g)) => Some(Arc::new(
            GatewayHttp::new(
                gw.clone(),
                g.templates_dir.as_deref(),
                portcullis_http::gateway::RegistrationLimits {
                    per_address_per_minute: g.registrations_per_minute,
                    per_hour: g.registrations_per_hour,
                },
            )
            .map_err(|e| anyhow::anyhow!("gateway pages: {e}"))?,
        )),
        _ => None,
    };
    if let (Some(gw), Some(sink)) = (&gateway, observe.gateway_sink()) {
        gw.set_events(sink);
    }
    let state = AppState::new(config.clone(), verifiers, gateway_http).context("setting up")?.with_observe(observe);
    let state = Arc::new(match session_key(gateway.as_deref(), &ProcessEnv)? {
        Some(key) => state.with_session_key(&key),
        None => {
            if config.servers.iter().any(|s| !matches!(s.auth, ServerAuth::None)) {
                tracing::warn!(
                    "MCP sessions are bound to their callers under a key of this process: a session opened \
                     before a restart, or through another replica, is not found here (404; the client opens a \
                     new one). Set {OPERATOR_KEY_ENV}, the same on every replica, to keep them"
                );
            }
            state
        }
    });
    if let (Some(gw), Some(g)) = (&gateway, &config.gateway) {
        background.push(spawn_housekeeping(gw.clone(), g.keys_reload));
        background.push(spawn_store_probe(gw.clone(), state.clone()));
    }
    let addr = listener.local_addr()?;
    let app = portcullis_http::router(state.clone());
    let limits = portcullis_http::listener::Limits {
        client_header_timeout: config.proxy.client_header_timeout,
        client_body_timeout: config.proxy.client_body_timeout,
        client_send_timeout: config.proxy.client_send_timeout,
        max_connections: config.proxy.max_connections,
        max_drain_bytes: config.proxy.max_body_bytes,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let per_address = portcullis_http::listener::PerAddress::new(
        config.proxy.max_connections_per_address,
        &config.proxy.trusted_proxies,
    );
    let server = portcullis_http::listener::serve(listener, app, limits, per_address, async {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(server);
    state.set_ready(true);
    tracing::info!(%addr, "listening");
    println!("portcullis listening on http://{addr}");
    for s in &config.servers {
        println!("  MCP server {} -> {}", s.resource, s.upstream);
    }
    if let Some(gw) = &gateway {
        println!("  authorization server {}", gw.issuer);
    }
    if let (Some(sign_in), Some(server)) = (&dev_sign_in, config.servers.first()) {
        dev_banner(server.resource.as_str(), sign_in);
    }

    shutdown_signal().await;
    tracing::info!(grace_ms = config.proxy.shutdown_grace.as_millis() as u64, "shutting down: no new connections");
    state.set_ready(false);
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.proxy.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped"),
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server failed while stopping"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("shutdown grace elapsed; closing the requests still in flight"),
    }
    for task in background {
        task.abort();
    }
    // Spans still queued go to the collector before the process ends.
    if let Some(tracer) = tracer {
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator key: from the environment, or the key file (created on first start).
pub(crate) fn operator_key(key_file: &std::path::Path, env: &dyn Env) -> anyhow::Result<OperatorKey> {
    match env.var(OPERATOR_KEY_ENV) {
        Some(text) => OperatorKey::from_text(&text).map_err(|e| anyhow::anyhow!("{OPERATOR_KEY_ENV}: {e}")),
        None => OperatorKey::load_or_create(key_file).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// The key MCP sessions are bound under, derived from the operator key (the gateway's, or in verify mode
/// `PORTCULLIS_OPERATOR_KEY` when set), so that every replica and every restart agrees who opened a
/// session. `None`: a key of this process's own, said in the log where sessions are bound at all.
fn session_key(gateway: Option<&Gateway>, env: &dyn Env) -> anyhow::Result<Option<[u8; 32]>> {
    let purpose = portcullis_http::SESSION_KEY_PURPOSE;
    Ok(match (gateway, env.var(OPERATOR_KEY_ENV)) {
        (Some(g), _) => Some(g.derive_key(purpose)),
        (None, Some(text)) => {
            Some(OperatorKey::from_text(&text).map_err(|e| anyhow::anyhow!("{OPERATOR_KEY_ENV}: {e}"))?.derive(purpose))
        }
        (None, None) => None,
    })
}

/// The operator key that sealed what is stored already: from the environment, or the key file, never a
/// new one (an administrator in another folder, or without the servers' environment, would otherwise
/// seal keys the servers cannot open).
pub(crate) fn existing_operator_key(key_file: &std::path::Path, env: &dyn Env) -> anyhow::Result<OperatorKey> {
    anyhow::ensure!(
        env.var(OPERATOR_KEY_ENV).is_some() || key_file.exists(),
        "the operator key file {} does not exist; the store holds keys sealed under the servers' operator key: \
         set {OPERATOR_KEY_ENV} or gateway.operator_key_file as they do",
        key_file.display()
    );
    operator_key(key_file, env)
}

async fn start_gateway(
    config: &Config,
    g: &GatewayConfig,
    clock: Arc<dyn Clock>,
    observed: bool,
) -> anyhow::Result<Arc<Gateway>> {
    let mut store = portcullis_store::open_with(&config.store.url, config.store.max_connections)
        .await
        .with_context(|| format!("opening the store {}", redacted_store(&config.store.url)))?;
    if observed {
        store = Arc::new(portcullis_store::Observed::new(store));
    }
    // A store that opens but cannot be written (a read-only file, a full disk) would fail the first
    // registration: refuse to start instead, naming it.
    store.probe(clock.now_unix() as i64).await.with_context(|| {
        format!(
            "the store {} cannot be written (check its permissions and free space)",
            redacted_store(&config.store.url)
        )
    })?;
    let operator = operator_key(&g.operator_key_file, &ProcessEnv)?;
    let mut serves = Serves::from_config(config);
    if let Some(u) = &g.upstream {
        serves.upstream = Some(
            Upstream::start(u, portcullis_oauth::idp_client(), clock.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    for t in &g.trusted_idps {
        let idp = TrustedIdp::start(t, portcullis_oauth::idp_client(), clock.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if idp.keys.awaiting_reason().is_none() {
            tracing::info!(issuer = %idp.issuer, jwks_uri = ?idp.keys.uri().map(|u| u.as_str()), "trusted identity provider ready");
        }
        serves.trusted_idps.push(idp);
    }
    let gateway = Gateway::start(g, serves, store, operator, clock)
        .await
        .map_err(|e| anyhow::anyhow!("starting the authorization server: {e}"))?;
    tracing::info!(issuer = %gateway.issuer, store = %redacted_store(&config.store.url), "authorization server ready");
    Ok(gateway)
}

/// A store URL for the log, without any password: in the authority, or as a query parameter (sqlx
/// reads `?password=` too), the whole query goes. A URL that does not parse (a password with an
/// unencoded `/`, say) is shown as its scheme alone when it could hold a credential at all.
pub(crate) fn redacted_store(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) if url.contains(['@', '?', '#']) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(a URL that does not parse; not shown)"),
            None => "(a URL that does not parse; not shown)".to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// Re-reads the keys every `keys_reload` (a rotation by `portcullis keys rotate` or another replica; a
/// scheduled switch to the next key) and purges expired flow state hourly.
fn spawn_housekeeping(gateway: Arc<Gateway>, keys_reload: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reload = tokio::time::interval(keys_reload);
        let mut purge = tokio::time::interval(Duration::from_secs(3_600));
        purge.tick().await;
        loop {
            tokio::select! {
                _ = reload.tick() => {
                    if let Err(e) = gateway.reload_keys().await {
                        tracing::warn!(error = %e, "reloading signing keys failed; keeping the current ones");
                    }
                }
                _ = purge.tick() => {
                    if let Err(e) = gateway.purge_expired().await {
                        tracing::warn!(error = %e, "purging expired state failed");
                    }
                }
            }
        }
    })
}

/// How often the store is probed for `/readyz`.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Probes the store every [`STORE_PROBE_EVERY`]: `/readyz` answers 503 while the store cannot be written
/// (a database that went away, a full disk), and 200 again once it can, without a restart.
fn spawn_store_probe(gateway: Arc<Gateway>, state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORE_PROBE_EVERY);
        let mut healthy = true;
        loop {
            tick.tick().await;
            let outcome = match tokio::time::timeout(STORE_PROBE_EVERY, gateway.probe_store()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", STORE_PROBE_EVERY.as_millis())),
            };
            match (&outcome, healthy) {
                (Err(e), true) => tracing::error!(error = %e, "the store cannot be written; not ready until it can"),
                (Ok(()), false) => tracing::info!("the store can be written again; ready"),
                _ => {}
            }
            healthy = outcome.is_ok();
            state.set_store_healthy(healthy);
        }
    })
}

/// Logs what is served, and every weakened security setting loudly.
fn announce(config: &Config) {
    for s in &config.servers {
        match &s.auth {
            ServerAuth::None => tracing::warn!(
                path = %s.path,
                "DANGEROUS: this server accepts requests WITHOUT authentication (dangerous.allow_unauthenticated)"
            ),
            ServerAuth::Verify(v) => {
                tracing::info!(path = %s.path, upstream = %s.upstream, issuer = %v.issuer, "verify mode")
            }
            ServerAuth::Gateway => tracing::info!(path = %s.path, upstream = %s.upstream, "gateway mode"),
        }
    }
    if let Some(user) = &config.dangerous.auto_approve_as {
        tracing::warn!(
            user,
            "DANGEROUS: every authorization request is signed in as this account WITHOUT sign-in or consent \
             (dangerous.auto_approve_as); for automated tests on loopback only"
        );
    }
    if config.gateway.is_some() && config.store.url.starts_with("memory:") {
        tracing::warn!(
            "store.url is memory: every registered client, grant and signing key is lost when portcullis stops \
             (for tests only)"
        );
    }
    if config.dangerous.client_metadata_from_loopback {
        tracing::warn!(
            "DANGEROUS: client metadata documents may be fetched from loopback addresses \
             (dangerous.client_metadata_from_loopback); for tests on loopback only"
        );
    }
    if config.origins.any {
        tracing::warn!("DANGEROUS: any Origin may call the MCP endpoints (origins.allowed contains \"*\")");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// `--dev`: gateway mode on loopback with a local account, the bundled sample MCP server, and state in
/// `./.portcullis/`.
async fn dev_config(listen: SocketAddr) -> anyhow::Result<(Config, tokio::task::JoinHandle<()>)> {
    anyhow::ensure!(listen.ip().is_loopback(), "--dev listens on loopback only, not {listen}");
    let sample = TcpListener::bind("127.0.0.1:0").await?;
    let sample_addr = sample.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = portcullis_sample::serve(sample, "/mcp", std::future::pending()).await;
    });
    let text = format!(
        r#"
public_url = "http://{listen}"
listen = "{listen}"
[store]
url = "sqlite://./{DEV_DIR}/portcullis.db"
[gateway]
operator_key_file = "./{DEV_DIR}/operator.key"
[[server]]
path = "/mcp"
upstream = "http://{sample_addr}/mcp"
scopes = ["mcp:tools"]
gateway = true
# The sample server's `whoami` shows who signed in.
[server.identity_headers]
x-user-sub = "sub"
x-user-client = "client_id"
"#
    );
    let config = Config::from_toml(&text, &MapEnv::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((config, task))
}

/// Makes sure the `dev` account exists; its password comes from `PORTCULLIS_DEV_PASSWORD` or is
/// generated (and shown once). Returns how to sign in.
async fn dev_account(gateway: &Gateway) -> anyhow::Result<String> {
    let wanted = ProcessEnv.var("PORTCULLIS_DEV_PASSWORD").filter(|p| !p.is_empty());
    let exists = gateway.user_exists(DEV_USER).await?;
    Ok(match (exists, wanted) {
        (false, wanted) => {
            let password = wanted.clone().unwrap_or_else(|| portcullis_authz::register::random_string(16));
            gateway.create_user(DEV_USER, &password).await?;
            match wanted {
                None => format!("{DEV_USER} / {password}"),
                Some(_) => format!("{DEV_USER} (password from PORTCULLIS_DEV_PASSWORD)"),
            }
        }
        (true, Some(password)) => {
            gateway.set_user_password(DEV_USER, &password).await?;
            format!("{DEV_USER} (password from PORTCULLIS_DEV_PASSWORD)")
        }
        (true, None) => {
            format!("{DEV_USER} (password as shown on first start; set PORTCULLIS_DEV_PASSWORD to change it)")
        }
    })
}

/// How the common MCP clients are pointed at `mcp_url`: a command or the entry for their configuration
/// file (docs/clients.md has the rest).
fn client_snippets(mcp_url: &str) -> [(&'static str, String); 4] {
    let url = serde_json::Value::String(mcp_url.to_owned());
    [
        ("Claude Code", format!("claude mcp add --transport http portcullis {mcp_url}")),
        ("VS Code .vscode/mcp.json", format!(r#"{{"servers": {{"portcullis": {{"type": "http", "url": {url}}}}}}}"#)),
        ("Cursor .cursor/mcp.json", format!(r#"{{"mcpServers": {{"portcullis": {{"url": {url}}}}}}}"#)),
        ("stdio-only clients", format!("npx mcp-remote {mcp_url}")),
    ]
}

/// After the "listening" lines, for a person trying portcullis out: where to point a client, how to
/// sign in, what to try next and how to stop.
fn dev_banner(mcp_url: &str, sign_in: &str) {
    println!();
    println!("  Connect an MCP client to  {mcp_url}");
    println!("  Sign in as                {sign_in}");
    println!("  Check it as a client does portcullis doctor {mcp_url} --login");
    for (client, how) in client_snippets(mcp_url) {
        println!("  {client:<25} {how}");
    }
    println!("  Other clients             docs/clients.md");
    println!("  Stop with                 Ctrl-C");
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_are_logged_without_passwords() {
        use super::redacted_store;
        assert_eq!(redacted_store("postgres://app:s3cret@db:5432/p"), "postgres://app:redacted@db:5432/p");
        assert_eq!(
            redacted_store("postgres://app@db/p?password=s3cret&sslmode=require"),
            "postgres://app@db/p?redacted"
        );
        assert_eq!(
            redacted_store("sqlite://./portcullis-data/portcullis.db"),
            "sqlite://./portcullis-data/portcullis.db"
        );
        // An unencoded `/` in the password ends the authority early, and the URL does not parse.
        for unparsable in
            ["postgres://app:s3/cr3t@db/p", "postgres://app:s3?cr3t@db/p", "postgres://app:s3#cr3t@db:x/p"]
        {
            let shown = redacted_store(unparsable);
            assert!(!shown.contains("s3"), "{unparsable} shown as {shown}");
            assert!(shown.starts_with("postgres://"), "{shown}");
        }
    }

    use portcullis_config::{Config, MapEnv};
    use tokio::runtime::RuntimeFlavor;

    fn with_workers(workers: &str) -> Config {
        let text = format!(
            "public_url = \"http://127.0.0.1:8080\"\n[proxy]\n{workers}\n[dangerous]\nallow_unauthenticated = true\n[[server]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:3001/mcp\"\n"
        );
        Config::from_toml(&text, &MapEnv::default()).unwrap()
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for_else_one_per_cpu() {
        let rt = super::runtime(Some(&with_workers("workers = 1"))).unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 1);
        let rt = super::runtime(Some(&with_workers("workers = 3"))).unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 3);
        // Unset: one per CPU the process may run on.
        let cpus = std::thread::available_parallelism().unwrap().get();
        let rt = super::runtime(Some(&with_workers(""))).unwrap();
        assert_eq!(rt.metrics().num_workers(), cpus);
    }
}
