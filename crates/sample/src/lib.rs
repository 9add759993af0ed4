//! A small MCP server speaking Streamable HTTP (2025-03-26 through 2026-07-28): the sample upstream for
//! the quickstart, the integration tests and the benchmarks.
//!
//! Tools:
//! - `echo {text}`: returns `text`.
//! - `whoami`: returns the request headers it received, so that callers can see which identity
//!   headers reached the upstream (and that no token or cookie did).
//! - `progress {steps, interval_ms, gate}`: answers with an SSE stream carrying one
//!   `notifications/progress` per step, then the result. With `gate`, it pauses after the first event
//!   until `POST /_sample/release/{gate}`, which lets tests prove a proxy does not buffer.
//! - `sleep {ms}`: answers after `ms` milliseconds; a request dropped before then counts as cancelled.
//!
//! Also: `GET` on the MCP path opens a server-to-client SSE stream honouring `Last-Event-ID`, `DELETE`
//! ends a session, and `GET /_sample/stats` reports counters the tests assert on.
//!
//! # Layout
//! - `rpc`: JSON-RPC dispatch and the tools.
//! - `stream`: the SSE answers (POST progress, GET stream).

#![forbid(unsafe_code)]

mod rpc;
mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

/// Protocol revisions this server speaks (`MCP-Protocol-Version`).
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// Shared state of one sample server.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    sessions: Mutex<HashSet<String>>,
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    /// POST bodies received, whatever they held.
    received: AtomicU64,
    /// Requests whose handling was dropped before it finished (client went away).
    cancelled: AtomicU64,
    /// Requests finished normally.
    completed: AtomicU64,
    /// SSE streams currently open.
    open_streams: AtomicU64,
}

impl Sample {
    fn gate(&self, name: &str) -> Arc<Notify> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(name.to_owned()).or_default().clone()
    }
}

/// Counts a request as completed when finished, or as cancelled when dropped before that.
#[derive(Debug)]
pub(crate) struct Outcome {
    sample: Arc<Sample>,
    done: bool,
}

impl Outcome {
    fn new(sample: &Arc<Sample>) -> Self {
        Self { sample: sample.clone(), done: false }
    }

    fn finish(mut self) {
        self.done = true;
        self.sample.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            self.sample.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The sample server's routes, with the MCP endpoint at `path` (e.g. `/mcp`).
pub fn router(path: &str) -> Router {
    let state = Arc::new(Sample::default());
    Router::new()
        .route(path, post(rpc::post).get(stream::get).delete(delete))
        .route("/_sample/release/{gate}", post(release))
        .route("/_sample/stats", get(stats))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the future `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    path: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(path)).with_graceful_shutdown(shutdown).await
}

/// Serves the sample MCP server at `path` on a Unix domain socket until `shutdown` completes.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(path)).with_graceful_shutdown(shutdown).await
}

async fn delete(State(sample): State<Arc<Sample>>, headers: HeaderMap) -> Response {
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "Mcp-Session-Id header required").into_response();
    };
    let removed = sample.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    if removed { StatusCode::NO_CONTENT.into_response() } else { StatusCode::NOT_FOUND.into_response() }
}

async fn release(State(sample): State<Arc<Sample>>, Path(gate): Path<String>) -> StatusCode {
    sample.gate(&gate).notify_one();
    StatusCode::NO_CONTENT
}

async fn stats(State(sample): State<Arc<Sample>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "received": sample.received.load(Ordering::SeqCst),
        "cancelled": sample.cancelled.load(Ordering::SeqCst),
        "completed": sample.completed.load(Ordering::SeqCst),
        "open_streams": sample.open_streams.load(Ordering::SeqCst),
        "sessions": sample.sessions.lock().unwrap_or_else(|p| p.into_inner()).len(),
    }))
}
