//! What the gate decided, for the operator: Prometheus metrics (through the `metrics` facade; the binary
//! installs the recorder and serves them on its own listener) and the audit log, one JSON line per
//! decision.
//!
//! Every handler on an MCP route leaves a `Decision` in its response's extensions; the `layer`
//! around the route reads it once the response is ready and records the request: one place, whatever
//! path the request took (refused for its `Origin`, its token, its body or its scopes, or forwarded).
//! Label values are bounded: server paths come from the configuration, MCP methods from a fixed list,
//! reasons from fixed names; never a subject, client id or token.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use portcullis_authz::events::{Event, EventSink};
use portcullis_oauth::VerifiedToken;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::{AppState, ServerRuntime, rpc};

/// Metric names, in one place (documented in docs/observability.md).
pub mod name {
    pub const REQUESTS: &str = "portcullis_requests_total";
    pub const REQUEST_DURATION: &str = "portcullis_request_duration_seconds";
    pub const DECISIONS: &str = "portcullis_decisions_total";
    pub const UPSTREAM_DURATION: &str = "portcullis_upstream_duration_seconds";
    pub const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";
    pub const SSE_STREAMS: &str = "portcullis_sse_streams_active";
    pub const AUDIT_DROPPED: &str = "portcullis_audit_events_dropped_total";
    pub const REGISTRATIONS: &str = "portcullis_gateway_registrations_total";
    pub const SIGN_INS: &str = "portcullis_gateway_sign_ins_total";
    pub const CONSENTS: &str = "portcullis_gateway_consents_total";
    pub const TOKENS: &str = "portcullis_gateway_token_requests_total";
    pub const REFRESH_REUSE: &str = "portcullis_gateway_refresh_reuse_total";
}

/// Describes the metrics recorded here (their HELP lines); called once the recorder is installed.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(name::REQUESTS, Unit::Count, "Requests to MCP endpoints, by server, MCP method and HTTP status.");
    describe_histogram!(
        name::REQUEST_DURATION,
        Unit::Seconds,
        "Time from the request to its response headers, through every check and the upstream."
    );
    describe_counter!(
        name::DECISIONS,
        Unit::Count,
        "Decisions on MCP requests: allow (reason ok) or deny with the reason (missing_token, expired, bad_signature, wrong_audience, insufficient_scope, invalid_message, ...)."
    );
    describe_histogram!(name::UPSTREAM_DURATION, Unit::Seconds, "Time the upstream took to answer with headers.");
    describe_counter!(name::UPSTREAM_ERRORS, Unit::Count, "Upstream failures by kind: connect, timeout, reset, idle.");
    describe_gauge!(name::SSE_STREAMS, Unit::Count, "SSE streams from upstreams open now.");
    describe_counter!(name::AUDIT_DROPPED, Unit::Count, "Audit events dropped because the writer fell behind.");
    describe_gauge!("portcullis_build_info", "Always 1; the version label names the build.");
    portcullis_oauth::jwks::metric::describe();
    describe_counter!(name::REGISTRATIONS, Unit::Count, "Dynamic client registrations: success or the RFC 7591 error.");
    describe_counter!(name::SIGN_INS, Unit::Count, "Sign-ins with local accounts: success, failure or throttled.");
    describe_counter!(name::CONSENTS, Unit::Count, "Answers on the consent page: granted or denied.");
    describe_counter!(name::TOKENS, Unit::Count, "Token requests by grant type: success or the RFC 6749 error.");
    describe_counter!(
        name::REFRESH_REUSE,
        Unit::Count,
        "Rotated refresh tokens presented again; each revoked its family."
    );
}

/// What a handler decided about one request to an MCP endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decision {
    /// `ok` when let through; otherwise why not, from a fixed set of names.
    pub(crate) reason: &'static str,
    /// The `method` label: the body's one MCP method, `batch`, `response`, or `unknown` when the gate
    /// did not read a body it could classify (GET and DELETE are labelled by the layer).
    pub(crate) method: &'static str,
    /// Who called, for the audit log (left empty when there is none): the verified token itself, shared,
    /// so that naming the caller copies nothing.
    pub(crate) token: Option<Arc<VerifiedToken>>,
    /// The messages of the body, when the gate read it: method and target (tool, prompt or resource).
    pub(crate) calls: Vec<Call>,
    /// The trace id of the request's `_meta` trace context (SEP-414), when its headers had none.
    pub(crate) trace_id: Option<String>,
    /// The `[[server.policy]]` rule that refused the request, if one did.
    pub(crate) rule: Option<String>,
}

/// One JSON-RPC message of a request, as the audit log names it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Call {
    /// A method MCP defines is named without a copy.
    pub(crate) method: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
}

impl Decision {
    /// Let through (so far).
    pub(crate) fn allowed() -> Self {
        Self::refused("ok")
    }

    /// A refusal for `reason`, before anything about the caller is known.
    pub(crate) fn refused(reason: &'static str) -> Self {
        Self { reason, method: "unknown", ..Self::default() }
    }

    /// Adds what the body asked for and, for the audit log, who called (from the verified token): only
    /// what is observed is copied.
    pub(crate) fn with(
        mut self,
        observe: &Observe,
        token: Option<&Arc<VerifiedToken>>,
        body: Option<&rpc::Body<'_>>,
    ) -> Self {
        if let Some(b) = body {
            self.method = body_label(b);
        }
        if observe.audit.is_none() {
            return self;
        }
        self.token = token.cloned();
        if let Some(b) = body {
            self.calls = b
                .messages()
                .iter()
                .filter_map(|m| {
                    let method = m.method()?;
                    // A single message's label is already its method, when MCP defines it.
                    let known = match b {
                        rpc::Body::Single(_) if self.method != "other" => Some(self.method),
                        _ => METHODS.iter().find(|known| **known == method).copied(),
                    };
                    let method = match known {
                        Some(known) => std::borrow::Cow::Borrowed(known),
                        None => std::borrow::Cow::Owned(method.to_owned()),
                    };
                    Some(Call { method, name: m.target().map(str::to_owned) })
                })
                .collect();
        }
        self
    }

    /// Leaves the decision in `response` for the observing layer, when anything is observed.
    pub(crate) fn attach(self, observe: &Observe, mut response: Response) -> Response {
        if observe.active() {
            response.extensions_mut().insert(self);
        }
        response
    }
}

/// The MCP methods metrics name; any other method counts as `other`, so a client cannot create series.
const METHODS: [&str; 22] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "tasks/result",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// `allow` for the reason `ok`, `deny` for any refusal.
fn outcome(reason: &str) -> &'static str {
    if reason == "ok" { "allow" } else { "deny" }
}

/// The `method` label of a classified body: its one MCP method (`other` for a method not on the list,
/// so that a client cannot create series), `batch`, or `response` (a client's answer to the server).
fn body_label(body: &rpc::Body<'_>) -> &'static str {
    match body.messages() {
        [one] => match one.method() {
            Some(m) => METHODS.iter().find(|known| **known == m).copied().unwrap_or("other"),
            None => "response",
        },
        _ => "batch",
    }
}

/// The `method` label of a request: GET is a `stream`, DELETE ends a session (`delete_session`), a POST
/// is labelled by its body.
fn method_label(http_method: &axum::http::Method, decision: &Decision) -> &'static str {
    match *http_method {
        axum::http::Method::GET => "stream",
        axum::http::Method::DELETE => "delete_session",
        _ => decision.method,
    }
}

/// Whether metrics are recorded (a recorder is installed only when `[metrics]` is configured; without
/// one, nothing is even computed).
#[derive(Debug, Default)]
pub struct Observe {
    metrics: bool,
    audit: Option<AuditLog>,
}

impl Observe {
    /// Metrics on or off, and the audit log if any.
    pub fn new(metrics: bool, audit: Option<AuditLog>) -> Self {
        Self { metrics, audit }
    }

    pub(crate) fn metrics(&self) -> bool {
        self.metrics
    }

    /// Whether metrics or the audit log want decisions.
    pub fn active(&self) -> bool {
        self.metrics || self.audit.is_some()
    }

    /// Where the authorization server's events go, when anything is observed.
    pub fn gateway_sink(&self) -> Option<Arc<dyn EventSink>> {
        self.active()
            .then(|| Arc::new(GatewaySink { metrics: self.metrics, audit: self.audit.clone() }) as Arc<dyn EventSink>)
    }
}

/// The layer around each MCP route: times the request and records the decision its handler left.
pub(crate) async fn layer(
    State((state, server)): State<(Arc<AppState>, Arc<ServerRuntime>)>,
    req: Request,
    next: Next,
) -> Response {
    let observe = &state.observe;
    if !observe.active() {
        return next.run(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let (request_id, traceparent) = match observe.audit {
        Some(_) => (header_value(&req, &X_REQUEST_ID), header_value(&req, &TRACEPARENT)),
        None => (None, None),
    };
    let mut response = next.run(req).await;
    let decision = response.extensions_mut().remove::<Decision>().unwrap_or_else(|| Decision::refused("unknown"));
    let trace_id =
        traceparent.as_ref().and_then(|t| trace_id_of(t.to_str().ok()?)).or_else(|| decision.trace_id.clone());
    let status = response.status().as_u16();
    let path = server.config.path.as_str();
    if observe.metrics {
        server.metrics.record(method_label(&method, &decision), status, decision.reason, started.elapsed());
    }
    if let Some(audit) = &observe.audit {
        let (method_field, name, calls) = match decision.calls.as_slice() {
            [one] => (Some(&*one.method), one.name.as_deref(), None),
            [] => (None, None, None),
            many => (Some("batch"), None, Some(many)),
        };
        let token = decision.token.as_deref();
        let event = RequestEvent {
            request_id: request_id.as_ref().and_then(|v| v.to_str().ok()),
            trace_id: trace_id.as_deref(),
            server: path,
            http_method: method.as_str(),
            subject: token.and_then(|t| t.subject.as_deref()),
            client_id: token.and_then(|t| t.client_id.as_ref()).map(|c| c.as_str()),
            method: method_field,
            name,
            calls,
            rule: decision.rule.as_deref(),
            decision: outcome(decision.reason),
            reason: decision.reason,
            status,
        };
        audit.send(event.line());
    }
    response
}

/// One server's request metrics, their handles kept so that recording a request costs a few atomic
/// operations and no allocation: the histograms from the start, the counters per label set on first use.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    server: metrics::SharedString,
    request_duration: metrics::Histogram,
    upstream_duration: metrics::Histogram,
    requests: Counters<(&'static str, u16)>,
    decisions: Counters<&'static str>,
}

impl ServerMetrics {
    /// The handles of the server at `path` (no-ops unless a recorder is installed by then).
    pub(crate) fn new(path: &str) -> Self {
        let server = metrics::SharedString::from_shared(Arc::<str>::from(path));
        Self {
            request_duration: metrics::histogram!(name::REQUEST_DURATION, "server" => server.clone()),
            upstream_duration: metrics::histogram!(name::UPSTREAM_DURATION, "server" => server.clone()),
            server,
            requests: Default::default(),
            decisions: Default::default(),
        }
    }

    fn record(&self, method: &'static str, status: u16, reason: &'static str, took: Duration) {
        count(
            &self.requests,
            (method, status),
            || metrics::counter!(name::REQUESTS, "server" => self.server.clone(), "method" => method, "status" => status.to_string()),
        );
        self.request_duration.record(took.as_secs_f64());
        count(
            &self.decisions,
            reason,
            || metrics::counter!(name::DECISIONS, "server" => self.server.clone(), "decision" => outcome(reason), "reason" => reason),
        );
    }

    /// How long the upstream took to answer with headers.
    pub(crate) fn upstream_answered(&self, took: Duration) {
        self.upstream_duration.record(took.as_secs_f64());
    }

    /// An upstream failure, counted by kind: `connect`, `timeout` (no answer in time), `reset` (the
    /// stream broke mid-way), `idle` (the stream fell silent too long).
    pub(crate) fn upstream_error(&self, kind: &'static str) {
        metrics::counter!(name::UPSTREAM_ERRORS, "server" => self.server.clone(), "kind" => kind).increment(1);
    }

    /// Counts an open SSE stream for as long as the returned guard lives.
    pub(crate) fn stream_opened(&self) -> StreamGauge {
        let gauge = metrics::gauge!(name::SSE_STREAMS, "server" => self.server.clone());
        gauge.increment(1.0);
        StreamGauge(gauge)
    }
}

/// Counters by label values, hashed with a fast hasher: the keys are the gate's own fixed strings and
/// numbers, never a client's.
type Counters<K> = std::sync::RwLock<std::collections::HashMap<K, metrics::Counter, foldhash::fast::FixedState>>;

/// Adds one to the counter under `key`, registered by `make` the first time.
fn count<K: std::hash::Hash + Eq + Copy>(map: &Counters<K>, key: K, make: impl FnOnce() -> metrics::Counter) {
    if let Some(c) = map.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        c.increment(1);
        return;
    }
    map.write().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert_with(make).increment(1);
}

/// Counts an open SSE stream for as long as it lives.
#[derive(Debug)]
pub(crate) struct StreamGauge(metrics::Gauge);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A header's value, kept past the request (a reference-counted copy, no allocation).
fn header_value(req: &Request, name: &axum::http::HeaderName) -> Option<axum::http::HeaderValue> {
    req.headers().get(name).cloned()
}

static X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");
static TRACEPARENT: axum::http::HeaderName = axum::http::HeaderName::from_static("traceparent");

/// Whether spans are exported (set once at start when `[traces]` is configured); when not, no trace
/// context is read or written.
static TRACES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns on trace context handling: a client's `traceparent` parents the request's span, and the
/// upstream gets one naming the gate's span.
pub fn enable_traces() {
    TRACES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes the trace context in `headers` (W3C `traceparent`, `tracestate`) the parent of `span`.
pub(crate) fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !TRACES.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// SEP-414: the trace context of a request's `_meta` and its trace id, standing in for a missing or
/// invalid `traceparent` header. Looked for only when traces or the audit log use it.
pub(crate) fn meta_trace(
    observe: &Observe,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Option<(rpc::TraceMeta, String)> {
    if !TRACES.load(std::sync::atomic::Ordering::Relaxed) && observe.audit.is_none() {
        return None;
    }
    if headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(trace_id_of).is_some() {
        return None;
    }
    let meta = rpc::trace_meta(body)?;
    let trace_id = trace_id_of(&meta.traceparent)?;
    Some((meta, trace_id))
}

/// Makes a trace context from a request's `_meta` (SEP-414) the parent of `span`, for requests whose
/// headers carried none.
pub(crate) fn adopt_meta_parent(span: &tracing::Span, meta: &rpc::TraceMeta) {
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [("traceparent", Some(&meta.traceparent)), ("tracestate", meta.tracestate.as_ref())] {
        if let Some(v) = value.and_then(|v| axum::http::HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    adopt_parent(span, &headers);
}

/// Writes the current span's trace context into `headers` (replacing the client's own: the upstream's
/// parent is the gate's span, a child of the client's).
pub(crate) fn inject(headers: &mut axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !TRACES.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeadersMut(headers)));
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut axum::http::HeaderMap);

impl opentelemetry::propagation::Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::from_bytes(key.as_bytes()), axum::http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is malformed or all
/// zeros (W3C Trace Context §3.2.2.3).
pub(crate) fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_owned())
}

/// One audited request to an MCP endpoint. Its line is written by hand rather than by serde: it is
/// written for every request, and a generic serializer escapes every key byte by byte.
#[derive(Debug, Clone, Copy)]
struct RequestEvent<'a> {
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    server: &'a str,
    http_method: &'a str,
    subject: Option<&'a str>,
    client_id: Option<&'a str>,
    /// The MCP method, or `batch` (then `calls` lists each message).
    method: Option<&'a str>,
    /// The tool, prompt or resource the request names.
    name: Option<&'a str>,
    calls: Option<&'a [Call]>,
    /// The policy rule that decided, if one did.
    rule: Option<&'a str>,
    decision: &'static str,
    reason: &'static str,
    status: u16,
}

impl RequestEvent<'_> {
    /// The JSON line, newline included, stamped now.
    fn line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(b"{\"time\":\"");
        timestamp(&mut out);
        out.extend_from_slice(b"\",\"event\":\"mcp.request\",\"request_id\":");
        json_opt(&mut out, self.request_id);
        out.extend_from_slice(b",\"trace_id\":");
        json_opt(&mut out, self.trace_id);
        out.extend_from_slice(b",\"server\":");
        json_str(&mut out, self.server);
        out.extend_from_slice(b",\"http_method\":");
        // An HTTP method is a token (RFC 9110 §9.1): no quote, backslash or control character.
        json_name(&mut out, self.http_method);
        out.extend_from_slice(b",\"subject\":");
        json_opt(&mut out, self.subject);
        out.extend_from_slice(b",\"client_id\":");
        json_opt(&mut out, self.client_id);
        out.extend_from_slice(b",\"method\":");
        json_opt(&mut out, self.method);
        out.extend_from_slice(b",\"name\":");
        json_opt(&mut out, self.name);
        if let Some(calls) = self.calls {
            out.extend_from_slice(b",\"calls\":[");
            for (i, call) in calls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"method\":");
                json_str(&mut out, &call.method);
                if let Some(name) = &call.name {
                    out.extend_from_slice(b",\"name\":");
                    json_str(&mut out, name);
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"rule\":");
        json_opt(&mut out, self.rule);
        out.extend_from_slice(b",\"decision\":");
        json_name(&mut out, self.decision);
        out.extend_from_slice(b",\"reason\":");
        json_name(&mut out, self.reason);
        out.extend_from_slice(b",\"status\":");
        let status = self.status;
        if status >= 1000 {
            out.extend_from_slice(status.to_string().as_bytes());
        } else {
            let digits = [b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8];
            let first = if status >= 100 {
                0
            } else if status >= 10 {
                1
            } else {
                2
            };
            out.extend_from_slice(&digits[first..]);
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

/// `s` as a JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped. A value
/// with nothing to escape (nearly all) is checked by table and copied whole.
fn json_str(out: &mut Vec<u8>, s: &str) {
    /// Bytes that need escaping in a JSON string.
    const ESCAPE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            table[b] = true;
            b += 1;
        }
        table[b'"' as usize] = true;
        table[b'\\' as usize] = true;
        table
    };
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    match bytes.iter().position(|&b| ESCAPE[usize::from(b)]) {
        None => out.extend_from_slice(bytes),
        Some(first) => {
            out.extend_from_slice(&bytes[..first]);
            escape_into(out, &bytes[first..]);
        }
    }
    out.push(b'"');
}

/// A name of the gate's own (a fixed reason, an HTTP method token, an MCP method it knows): never
/// anything to escape.
fn json_name(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.bytes().all(|b| b > 0x20 && b != b'"' && b != b'\\'), "{s:?}");
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The slow path of [`json_str`], byte by byte.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if short.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(short);
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// The audit line of an authorization-server event: the fields that apply to it.
#[derive(Debug, Default, Serialize)]
struct GatewayLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// `success`, `failure`, `throttled`, `granted`, `denied`, or an OAuth error code.
    result: &'a str,
}

/// Authorization-server events into the audit log and the metrics.
#[derive(Debug)]
pub struct GatewaySink {
    metrics: bool,
    audit: Option<AuditLog>,
}

impl EventSink for GatewaySink {
    fn record(&self, event: &Event<'_>) {
        let (kind, line) = match *event {
            Event::ClientRegistered { client_id, client_name } => (
                "gateway.client_registered",
                GatewayLine { client_id: Some(client_id), client_name, result: "success", ..GatewayLine::default() },
            ),
            Event::RegistrationRefused { error } => {
                ("gateway.client_registered", GatewayLine { result: error, ..GatewayLine::default() })
            }
            Event::SignIn { username, client_id, outcome, address } => (
                "gateway.sign_in",
                GatewayLine {
                    username: Some(username),
                    client_id: Some(client_id),
                    address: address.map(|a| a.to_string()),
                    result: outcome.as_str(),
                    ..GatewayLine::default()
                },
            ),
            Event::Consent { subject, client_id, scope, granted } => (
                "gateway.consent",
                GatewayLine {
                    subject: nonempty(subject),
                    client_id: Some(client_id),
                    scope: Some(scope),
                    result: if granted { "granted" } else { "denied" },
                    ..GatewayLine::default()
                },
            ),
            Event::TokenIssued { grant_type, client_id, subject, scope, resource } => (
                "gateway.token_issued",
                GatewayLine {
                    subject: nonempty(subject),
                    client_id: Some(client_id),
                    grant_type: Some(grant_type),
                    scope: Some(scope),
                    resource: Some(resource),
                    result: "success",
                    ..GatewayLine::default()
                },
            ),
            Event::TokenRefused { grant_type, error } => (
                "gateway.token_issued",
                GatewayLine { grant_type: Some(grant_type), result: error, ..GatewayLine::default() },
            ),
            Event::RefreshReuse { client_id, subject } => (
                "gateway.refresh_reuse",
                GatewayLine {
                    subject: nonempty(subject),
                    client_id: Some(client_id),
                    result: "family_revoked",
                    ..GatewayLine::default()
                },
            ),
        };
        if self.metrics {
            gateway_metrics(event, line.result);
        }
        if let Some(audit) = &self.audit {
            audit.write(&AuditLine { time: now_rfc3339(), kind, event: &line });
        }
    }
}

/// `None` for an empty string (a consent given before an upstream sign-in names nobody yet).
fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The gateway's counters; `result` is `success`, a sign-in outcome or an OAuth error code (a fixed set).
fn gateway_metrics(event: &Event<'_>, result: &str) {
    let result = metrics::SharedString::from(result.to_owned());
    match *event {
        Event::ClientRegistered { .. } | Event::RegistrationRefused { .. } => {
            metrics::counter!(name::REGISTRATIONS, "result" => result).increment(1);
        }
        Event::SignIn { .. } => metrics::counter!(name::SIGN_INS, "result" => result).increment(1),
        Event::Consent { .. } => metrics::counter!(name::CONSENTS, "result" => result).increment(1),
        Event::TokenIssued { grant_type, .. } | Event::TokenRefused { grant_type, .. } => {
            metrics::counter!(name::TOKENS, "grant_type" => grant_type, "result" => result).increment(1);
        }
        Event::RefreshReuse { .. } => metrics::counter!(name::REFRESH_REUSE).increment(1),
    }
}

#[derive(Debug, Serialize)]
struct AuditLine<'a, E: Serialize> {
    time: String,
    #[serde(rename = "event")]
    kind: &'a str,
    #[serde(flatten)]
    event: &'a E,
}

/// The audit log: lines are written by one task, in order, so a slow disk never holds a request; a
/// line that cannot be queued (the writer far behind) is counted, never silently lost.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Vec<u8>>,
}

/// Lines queued before new ones are dropped (and counted).
const AUDIT_QUEUE: usize = 65_536;

impl AuditLog {
    /// Starts the writer for `sink`; the file is opened (created, appended to) before this returns, so a
    /// path that cannot be written stops start-up.
    pub async fn start(sink: &portcullis_config::AuditSink) -> std::io::Result<Self> {
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match sink {
            portcullis_config::AuditSink::Stdout => Box::new(tokio::io::stdout()),
            portcullis_config::AuditSink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| std::io::Error::new(e.kind(), format!("the audit log {}: {e}", path.display())))?,
            ),
        };
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(write_lines(out, rx));
        Ok(Self { tx })
    }

    fn write<E: Serialize>(&self, line: &E) {
        let Ok(mut bytes) = serde_json::to_vec(line) else { return };
        bytes.push(b'\n');
        self.send(bytes);
    }

    /// Queues one line, its newline included.
    fn send(&self, bytes: Vec<u8>) {
        if self.tx.try_send(bytes).is_err() {
            metrics::counter!(name::AUDIT_DROPPED).increment(1);
            tracing::error!("the audit log is not keeping up; an event was dropped");
        }
    }
}

/// How long the writer gathers lines after the first of a batch: under load, one write per window
/// instead of one per request (and no wake-up of the writer per line); a quiet line is written within it.
const AUDIT_WINDOW: Duration = Duration::from_millis(20);

/// Writes queued lines in batches, one write and flush per [`AUDIT_WINDOW`] at most.
async fn write_lines(mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(line) = rx.recv().await {
        buf.extend_from_slice(&line);
        // Senders do not wake a writer that sleeps: the lines of the window wait in the queue.
        tokio::time::sleep(AUDIT_WINDOW).await;
        while buf.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        buf.clear();
    }
}

/// Appends one event to the audit log at once, for a short-lived process (the administration commands):
/// `fields` (a JSON object) after `time` and `event`.
pub fn append_audit(
    sink: &portcullis_config::AuditSink,
    kind: &str,
    fields: &serde_json::Value,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(&AuditLine { time: now_rfc3339(), kind, event: fields })?;
    line.push(b'\n');
    match sink {
        portcullis_config::AuditSink::Stdout => std::io::stdout().lock().write_all(&line),
        portcullis_config::AuditSink::File(path) => {
            std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(&line)
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-30T09:40:12.345Z`).
fn now_rfc3339() -> String {
    let mut out = Vec::with_capacity(24);
    timestamp(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends now as RFC 3339 UTC with milliseconds. The date and time to the second are formatted once a
/// second per thread, not once a line.
fn timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND.with(|cell| {
        let (at, text) = cell.get();
        if at == secs {
            return Some(text);
        }
        let t = portcullis_types::Utc::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
        let formatted =
            format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second);
        let text: [u8; 19] = formatted.as_bytes().try_into().ok()?;
        cell.set((secs, text));
        Some(text)
    });
    match cached {
        Some(text) => out.extend_from_slice(&text),
        // A year beyond 9999: not worth a cache.
        None => {
            let t = portcullis_types::Utc::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
            let text = format!("{}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second);
            out.extend_from_slice(text.as_bytes());
        }
    }
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(ok).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(trace_id_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn method_labels_are_bounded() {
        use axum::http::Method;
        let label = |body: &[u8]| body_label(&rpc::classify(body).unwrap());
        assert_eq!(label(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#), "tools/call");
        assert_eq!(label(br#"{"jsonrpc":"2.0","id":1,"method":"made/up/by/a/client"}"#), "other");
        assert_eq!(
            label(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#),
            "batch"
        );
        assert_eq!(label(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), "response");
        assert_eq!(method_label(&Method::POST, &Decision::refused("bad_body")), "unknown");
        assert_eq!(method_label(&Method::GET, &Decision::allowed()), "stream");
    }

    #[test]
    fn request_lines_are_json_whatever_the_values() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h é \u{2028} 😀";
        let calls = [
            Call { method: "tools/call".into(), name: Some(nasty.to_owned()) },
            Call { method: std::borrow::Cow::Owned("x/y".to_owned()), name: None },
        ];
        let event = RequestEvent {
            request_id: Some("r-1"),
            trace_id: None,
            server: "/mcp",
            http_method: "POST",
            subject: Some(nasty),
            client_id: None,
            method: Some("batch"),
            name: None,
            calls: Some(&calls),
            rule: Some("r"),
            decision: "deny",
            reason: "insufficient_scope",
            status: 403,
        };
        let line = event.line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["subject"], nasty);
        assert_eq!(v["calls"][0]["name"], nasty);
        assert_eq!(v["calls"][1], serde_json::json!({"method": "x/y"}));
        assert_eq!(v["client_id"], serde_json::Value::Null);
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["status"], 403);
        assert_eq!(v["event"], "mcp.request");
        assert_eq!(v["time"].as_str().unwrap().len(), 24);
        let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields.len(), 15, "{fields:?}");
        for status in [7, 42, 200, 999, 1000] {
            let line = RequestEvent { status, calls: None, ..event }.line();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["status"], status, "{}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        let year: u32 = t[..4].parse().unwrap();
        assert!(year >= 2024, "{t}");
    }
}
