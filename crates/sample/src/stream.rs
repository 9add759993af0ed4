//! Server-Sent Events answers: a POST answered with a progress stream, and the GET stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::rpc::{ok, text_result};
use crate::{Outcome, Sample};

/// Keeps `open_streams` accurate however a stream ends.
struct OpenStream(Arc<Sample>);

impl OpenStream {
    fn new(sample: &Arc<Sample>) -> Self {
        sample.open_streams.fetch_add(1, Ordering::SeqCst);
        Self(sample.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event(id: Option<u64>, data: &Value) -> Bytes {
    match id {
        Some(id) => Bytes::from(format!("id: {id}\nevent: message\ndata: {data}\n\n")),
        None => Bytes::from(format!("event: message\ndata: {data}\n\n")),
    }
}

fn sse(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) fn progress(sample: Arc<Sample>, outcome: Outcome, id: Value, params: &Value, args: &Value) -> Response {
    let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(3).clamp(1, 100);
    let interval = Duration::from_millis(args.get("interval_ms").and_then(Value::as_u64).unwrap_or(50).min(60_000));
    let gate = args.get("gate").and_then(Value::as_str).map(|g| sample.gate(g));
    let token = params.pointer("/_meta/progressToken").cloned().unwrap_or(json!("progress"));
    let open = OpenStream::new(&sample);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let _open = open;
        for step in 1..=steps {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": step, "total": steps}});
            if tx.send(Ok(event(Some(step), &note))).await.is_err() {
                return; // the client went away: `outcome` counts it as cancelled
            }
            if step == 1
                && let Some(gate) = &gate
            {
                tokio::select! {
                    () = gate.notified() => {}
                    () = tx.closed() => return,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = tx.closed() => return,
            }
        }
        let result = ok(id, text_result(&format!("completed {steps} steps")));
        if tx.send(Ok(event(Some(steps + 1), &result))).await.is_ok() {
            outcome.finish();
        }
    });
    sse(Body::from_stream(tokio_stream(rx)))
}

/// The GET stream: numbered `notifications/message` events, one per second, resuming after
/// `Last-Event-ID` (the client's reconnection point, per the SSE and Streamable HTTP specs).
pub(crate) async fn get(State(sample): State<Arc<Sample>>, headers: HeaderMap) -> Response {
    let accepts =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    if !accepts {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET needs Accept: text/event-stream").into_response();
    }
    let after =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let open = OpenStream::new(&sample);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let _open = open;
        let mut n = after;
        loop {
            n += 1;
            let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": format!("tick {n}")}});
            if tx.send(Ok(event(Some(n), &note))).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
        }
    });
    sse(Body::from_stream(tokio_stream(rx)))
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
