//! Trace context: a client's W3C `traceparent` (or SEP-414's `_meta` one) continued through the gate
//! to the upstream, when traces are exported.

use super::{Observe, TRACEPARENT};
use crate::rpc;

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
}
