//! The audit log: one JSON line per decision and per authorization-server event, written by a task of
//! its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Call, name};

/// One audited request to an MCP endpoint. Its line is written by hand rather than by serde: it is
/// written for every request, and a generic serializer escapes every key byte by byte.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestEvent<'a> {
    pub(super) request_id: Option<&'a str>,
    pub(super) trace_id: Option<&'a str>,
    pub(super) server: &'a str,
    pub(super) http_method: &'a str,
    pub(super) subject: Option<&'a str>,
    pub(super) client_id: Option<&'a str>,
    /// `user`, or `machine` when no user took part in issuing the token (client credentials); `None`
    /// without a token.
    pub(super) caller: Option<&'static str>,
    /// The MCP method, or `batch` (then `calls` lists each message).
    pub(super) method: Option<&'a str>,
    /// The tool, prompt or resource the request names.
    pub(super) name: Option<&'a str>,
    pub(super) calls: Option<&'a [Call]>,
    /// The policy rule that decided, if one did.
    pub(super) rule: Option<&'a str>,
    pub(super) decision: &'static str,
    pub(super) reason: &'static str,
    pub(super) status: u16,
}

impl RequestEvent<'_> {
    /// The JSON line, newline included, stamped now.
    pub(super) fn line(&self) -> Vec<u8> {
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
        out.extend_from_slice(b",\"caller\":");
        json_opt(&mut out, self.caller);
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
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    match bytes.iter().position(|&b| crate::rpc::STRING_SPECIAL[usize::from(b)]) {
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

#[derive(Debug, Serialize)]
pub(super) struct AuditLine<'a, E: Serialize> {
    pub(super) time: String,
    #[serde(rename = "event")]
    pub(super) kind: &'a str,
    #[serde(flatten)]
    pub(super) event: &'a E,
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

    pub(super) fn write<E: Serialize>(&self, line: &E) {
        let Ok(mut bytes) = serde_json::to_vec(line) else { return };
        bytes.push(b'\n');
        self.send(bytes);
    }

    /// Queues one line, its newline included.
    pub(super) fn send(&self, bytes: Vec<u8>) {
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
pub(super) fn now_rfc3339() -> String {
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
            caller: None,
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
        assert_eq!(fields.len(), 16, "{fields:?}");
        assert_eq!(v["caller"], serde_json::Value::Null);
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
