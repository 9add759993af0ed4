//! `[metrics]`, `[traces]` and `[audit]`: what an operator watches. Both are off until configured. Metrics are served
//! on a listener of their own, never on the public one, so scraping needs no route through the gate and
//! the public port exposes nothing about traffic.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::resolve::Errors;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraces {
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) sample_ratio: Option<f64>,
    pub(crate) service_name: Option<String>,
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when an endpoint is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// Where spans are posted, the signal path included (`http://collector:4318/v1/traces`).
    pub otlp_endpoint: url::Url,
    /// The share of traces started here that are recorded (0 to 1); a client's sampling decision in its
    /// `traceparent` is followed.
    pub sample_ratio: f64,
    /// `service.name` of every span.
    pub service_name: String,
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served; `None`: no metrics at all (nothing is recorded).
    pub listen: Option<SocketAddr>,
}

/// Where audit events go: one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output (`path = "-"`), for a collector reading the process's output; the diagnostic log
    /// stays on standard error.
    Stdout,
    /// Appended to a file, created when missing.
    File(PathBuf),
}

pub(crate) fn resolve_metrics(raw: &RawMetrics, public: Option<SocketAddr>, errors: &mut Errors) -> MetricsConfig {
    let Some(text) = raw.listen.as_deref() else { return MetricsConfig::default() };
    let Ok(listen) = text.parse::<SocketAddr>() else {
        errors.push("metrics.listen", format!("{text:?} is not an IP address and port, e.g. \"127.0.0.1:9464\""));
        return MetricsConfig::default();
    };
    if public.is_some_and(|p| p.port() == listen.port() && (p.ip() == listen.ip() || p.ip().is_unspecified())) {
        errors.push("metrics.listen", format!("{listen} is the public listener; metrics need an address of their own"));
    }
    MetricsConfig { listen: Some(listen) }
}

pub(crate) fn resolve_traces(raw: &RawTraces, errors: &mut Errors) -> Option<TracesConfig> {
    let text = raw.otlp_endpoint.as_deref()?;
    let endpoint = match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            errors.push(
                "traces.otlp_endpoint",
                format!("{text:?} is not an http(s) URL, e.g. \"http://127.0.0.1:4318/v1/traces\""),
            );
            return None;
        }
    };
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errors.push("traces.sample_ratio", format!("{sample_ratio} is not between 0 and 1"));
    }
    let service_name = raw.service_name.clone().unwrap_or_else(|| "portcullis".to_owned());
    if service_name.is_empty() {
        errors.push("traces.service_name", "must not be empty");
    }
    Some(TracesConfig { otlp_endpoint: endpoint, sample_ratio, service_name })
}

pub(crate) fn resolve_audit(raw: &RawAudit, errors: &mut Errors) -> Option<AuditSink> {
    match raw.path.as_deref()? {
        "" => {
            errors.push("audit.path", "empty: name a file, or \"-\" for standard output");
            None
        }
        "-" => Some(AuditSink::Stdout),
        path => Some(AuditSink::File(PathBuf::from(path))),
    }
}
