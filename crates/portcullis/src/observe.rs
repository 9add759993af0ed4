//! `[metrics]` and `[audit]` at start-up: the Prometheus recorder and its listener, the audit writer.

use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use portcullis_config::Config;
use portcullis_http::observe::{AuditLog, Observe};
use tokio::net::TcpListener;

/// Histogram buckets for durations, in seconds: from a cached token check (tens of microseconds) to an
/// upstream that takes its time.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Sets up what `config` asks for; returns the state's `Observe` and the metrics listener's task.
pub(crate) async fn start(config: &Config) -> anyhow::Result<(Observe, Option<tokio::task::JoinHandle<()>>)> {
    let audit = match &config.audit {
        Some(sink) => Some(AuditLog::start(sink).await?),
        None => None,
    };
    let Some(addr) = config.metrics.listen else { return Ok((Observe::new(false, audit), None)) };
    let listener = TcpListener::bind(addr).await.with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
        .context("metrics buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    portcullis_http::observe::describe();
    portcullis_store::observed::metric::describe();
    metrics::gauge!("portcullis_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let task = tokio::spawn(serve(listener, handle));
    tracing::info!(addr = %addr, "metrics at /metrics");
    Ok((Observe::new(true, audit), Some(task)))
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()) }
        }),
    );
    let app = app.fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "metrics are at /metrics").into_response() });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}
