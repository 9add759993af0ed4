//! JSON-RPC over POST: dispatch, sessions and the tools.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Outcome, PROTOCOL_VERSIONS, Sample, stream};

pub(crate) async fn post(State(sample): State<Arc<Sample>>, headers: HeaderMap, body: Bytes) -> Response {
    // Long by design: the sample server's whole dispatch in one match, so its behaviour reads at a glance.
    sample.received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Some(v) = headers.get("mcp-protocol-version")
        && !PROTOCOL_VERSIONS.iter().any(|p| v.as_bytes() == p.as_bytes())
    {
        return (StatusCode::BAD_REQUEST, Json(error(Value::Null, -32600, "unsupported MCP-Protocol-Version")))
            .into_response();
    }
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    if let Some(id) = session
        && !sample.sessions.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    {
        return (StatusCode::NOT_FOUND, Json(error(Value::Null, -32001, "session not found"))).into_response();
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(error(Value::Null, -32700, &format!("parse error: {e}"))))
                .into_response();
        }
    };
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A response or something else without a method: accepted, nothing to answer.
        return StatusCode::ACCEPTED.into_response();
    };
    let Some(id) = msg.get("id").cloned() else {
        // Notifications get 202 with no body (Streamable HTTP).
        return StatusCode::ACCEPTED.into_response();
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let wants_sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    let outcome = Outcome::new(&sample);
    match method {
        "initialize" => {
            let session_id = uuid::Uuid::new_v4().to_string();
            sample.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id.clone());
            let requested = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(PROTOCOL_VERSIONS[2]);
            let version = if PROTOCOL_VERSIONS.contains(&requested) { requested } else { PROTOCOL_VERSIONS[2] };
            let result = json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "portcullis-sample", "version": env!("CARGO_PKG_VERSION")},
            });
            outcome.finish();
            let mut resp = Json(ok(id, result)).into_response();
            if let Ok(v) = HeaderValue::from_str(&session_id) {
                resp.headers_mut().insert("mcp-session-id", v);
            }
            resp
        }
        "ping" => {
            outcome.finish();
            Json(ok(id, json!({}))).into_response()
        }
        "tools/list" => {
            outcome.finish();
            Json(ok(id, json!({"tools": tools()}))).into_response()
        }
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            match name {
                "echo" => {
                    let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
                    outcome.finish();
                    Json(ok(id, text_result(text))).into_response()
                }
                "whoami" => {
                    let mut seen = serde_json::Map::new();
                    for (k, v) in &headers {
                        seen.insert(
                            k.as_str().to_owned(),
                            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                        );
                    }
                    outcome.finish();
                    let body = Value::Object(seen).to_string();
                    Json(ok(id, text_result(&body))).into_response()
                }
                "sleep" => {
                    let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1_000).min(600_000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    outcome.finish();
                    Json(ok(id, text_result(&format!("slept {ms} ms")))).into_response()
                }
                "progress" if wants_sse => stream::progress(sample, outcome, id, &params, &args),
                "progress" => {
                    outcome.finish();
                    Json(error(id, -32602, "progress streams over SSE: send Accept: text/event-stream")).into_response()
                }
                other => {
                    outcome.finish();
                    Json(error(id, -32602, &format!("unknown tool {other:?}"))).into_response()
                }
            }
        }
        other => {
            outcome.finish();
            Json(error(id, -32601, &format!("method not found: {other}"))).into_response()
        }
    }
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Returns the text it is given.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "whoami", "description": "Returns the request headers this server received.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "progress", "description": "Streams progress notifications over SSE, then returns.",
         "inputSchema": {"type": "object", "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 100},
            "interval_ms": {"type": "integer", "minimum": 0},
            "gate": {"type": "string"}}}},
        {"name": "sleep", "description": "Returns after the given number of milliseconds.",
         "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}}},
    ])
}

pub(crate) fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

pub(crate) fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub(crate) fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}
