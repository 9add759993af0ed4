//! `[metrics]` and `[audit]`: what an operator watches. Both are off until configured. Metrics are served
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
