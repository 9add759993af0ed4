//! `portcullis serve`: the one place where configuration, state and the listener are wired together.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use portcullis_config::{
    Config, Dangerous, LogConfig, LogFormat, OriginPolicy, ProcessEnv, ProxyConfig, ServerAuth, ServerConfig,
};
use portcullis_http::AppState;
use portcullis_types::{Clock, ResourceUrl, ScopeSet, SystemClock};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut background = Vec::new();
    let config = if args.dev {
        let (config, sample) = dev_config(args.dev_listen).await?;
        background.push(sample);
        config
    } else if let Some(path) = &args.config {
        Config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?
    } else {
        Config::from_env(&ProcessEnv)
            .map_err(|e| anyhow::anyhow!("no --config given, and the environment is incomplete:\n{e}"))?
    };
    crate::logging::init(&config.log);
    let config = Arc::new(config);
    announce(&config);

    // Every IdP is discovered and its keys loaded before we listen: a gate that cannot check tokens
    // must not start (and must say which URL failed, and why).
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifiers = portcullis_oauth::setup::verifiers(&config, &portcullis_oauth::setup::idp_client(), clock)
        .await
        .map_err(|(path, e)| anyhow::anyhow!("server {path}: {e}"))?;
    let state = Arc::new(AppState::new(config.clone(), verifiers).context("setting up")?);
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = portcullis_http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Without TCP_NODELAY, a response written as headers then body waits on Nagle and the client's
    // delayed ACK: ~200 µs per request on loopback, measured.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { server.await });
    state.set_ready(true);
    tracing::info!(%addr, "listening");
    println!("portcullis listening on http://{addr}");
    for s in &config.servers {
        println!("  MCP server {} -> {}", s.resource, s.upstream);
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
    Ok(ExitCode::SUCCESS)
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
        }
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

/// `--dev`: the bundled sample MCP server on a loopback port, proxied at `/mcp`.
async fn dev_config(listen: SocketAddr) -> anyhow::Result<(Config, tokio::task::JoinHandle<()>)> {
    anyhow::ensure!(listen.ip().is_loopback(), "--dev listens on loopback only, not {listen}");
    let sample = TcpListener::bind("127.0.0.1:0").await?;
    let sample_addr = sample.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = portcullis_sample::serve(sample, "/mcp", std::future::pending()).await;
    });
    let public_url = url::Url::parse(&format!("http://{listen}"))?;
    let resource = ResourceUrl::for_path(&public_url, "/mcp")?;
    let config = Config {
        public_url,
        extra_public_urls: Vec::new(),
        listen,
        log: LogConfig { format: LogFormat::Text, level: "info".into() },
        proxy: ProxyConfig {
            connect_timeout: std::time::Duration::from_secs(5),
            header_timeout: std::time::Duration::from_secs(120),
            idle_timeout: std::time::Duration::from_secs(300),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: std::time::Duration::from_secs(5),
        },
        origins: OriginPolicy { allowed: Vec::new(), any: false },
        servers: vec![ServerConfig {
            path: "/mcp".into(),
            upstream: url::Url::parse(&format!("http://{sample_addr}/mcp"))?,
            resources: vec![resource.clone()],
            resource,
            scopes: ScopeSet::new(),
            tool_scopes: Vec::new(),
            identity_headers: Vec::new(),
            auth: ServerAuth::None,
        }],
        dangerous: Dangerous { allow_unauthenticated: true },
    };
    Ok((config, task))
}
