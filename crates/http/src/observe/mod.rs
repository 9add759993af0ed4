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
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use portcullis_authz::events::{Event, EventSink};
use portcullis_oauth::VerifiedToken;
use serde::Serialize;

use crate::{AppState, ServerRuntime, rpc};

mod audit;
mod trace;

use audit::{AuditLine, RequestEvent, now_rfc3339};
pub use audit::{AuditLog, append_audit};
pub(crate) use trace::{
    Decided, adopt_meta_parent, adopt_parent, decided_for, inject, meta_trace, request_decision, sampled_flag,
    trace_id_of,
};
pub use trace::{draw, enable_traces, sampled_here};

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
    pub const CLIENTS_DELETED: &str = "portcullis_gateway_clients_deleted_total";
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
    portcullis_oauth::discovery::describe();
    describe_counter!(name::REGISTRATIONS, Unit::Count, "Dynamic client registrations: success or the RFC 7591 error.");
    describe_counter!(
        name::CLIENTS_DELETED,
        Unit::Count,
        "Registered clients deleted as no longer in use, by reason: never_used or idle."
    );
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

/// An MCP request under observation: its start and what the audit line needs of it; [`Observed::finish`]
/// records the decision its answer carries.
pub(crate) struct Observed {
    started: Instant,
    method: axum::http::Method,
    request_id: Option<axum::http::HeaderValue>,
    traceparent: Option<axum::http::HeaderValue>,
}

impl Observed {
    /// What is kept of a request for its observation, when anything is observed.
    pub(crate) fn start(observe: &Observe, req: &Request) -> Option<Self> {
        if !observe.active() {
            return None;
        }
        let (request_id, traceparent) = match observe.audit {
            Some(_) => (header_value(req, &X_REQUEST_ID), header_value(req, &TRACEPARENT)),
            None => (None, None),
        };
        Some(Self { started: Instant::now(), method: req.method().clone(), request_id, traceparent })
    }

    /// Records the decision the answer carries, in the metrics and the audit log.
    pub(crate) fn finish(self, state: &AppState, server: &ServerRuntime, mut response: Response) -> Response {
        let Self { started, method, request_id, traceparent } = self;
        let observe = &state.observe;
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
                caller: token.map(|t| if t.machine { "machine" } else { "user" }),
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
            Event::ClientPurged { client_id, never_used } => (
                "gateway.client_deleted",
                GatewayLine {
                    client_id: Some(client_id),
                    result: if never_used { "never_used" } else { "idle" },
                    ..GatewayLine::default()
                },
            ),
            Event::SignIn { username, client_id, outcome, address } => (
                "gateway.sign_in",
                GatewayLine {
                    username,
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
        Event::ClientPurged { .. } => metrics::counter!(name::CLIENTS_DELETED, "reason" => result).increment(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_purged_registration_is_an_audit_line_naming_the_client_and_why() {
        let path = std::env::temp_dir().join(format!("portcullis-audit-purged-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let audit = AuditLog::start(&portcullis_config::AuditSink::File(path.clone())).await.unwrap();
        let sink = GatewaySink { metrics: false, audit: Some(audit) };
        sink.record(&Event::ClientPurged { client_id: "c-never", never_used: true });
        sink.record(&Event::ClientPurged { client_id: "c-idle", never_used: false });
        let mut lines = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            lines = std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_owned).collect();
            if lines.len() == 2 {
                break;
            }
        }
        std::fs::remove_file(&path).unwrap();
        let read: Vec<(String, String, String)> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                (field("event"), field("client_id"), field("result"))
            })
            .collect();
        let line =
            |client: &str, result: &str| ("gateway.client_deleted".to_owned(), client.to_owned(), result.to_owned());
        assert_eq!(read, [line("c-never", "never_used"), line("c-idle", "idle")]);
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
}
