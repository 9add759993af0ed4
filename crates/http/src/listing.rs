//! List answers rewritten to what the caller may use: a `tools/list`, `resources/list`,
//! `resources/templates/list` or `prompts/list` answer loses the entries the server's policy would
//! refuse the caller, so that models are not offered tools they cannot call.
//!
//! Only answers to list requests are touched. A JSON answer is read whole (it is one response); an SSE
//! answer is rewritten event by event as each completes, every other event (progress, notifications
//! such as `notifications/tools/list_changed`, answers to other requests) passed on as it came.
//! Pagination cursors are left as they are: a filtered page may be shorter, or empty, and the client
//! follows `nextCursor` as before. An answer that cannot be read is not passed on unfiltered: the
//! stream ends with an error instead (fail closed).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use portcullis_oauth::VerifiedToken;
use std::borrow::Cow;

use portcullis_policy::{Action, Policy, Target, Verdict};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::rpc;

/// The biggest list answer (or SSE event) read to be filtered.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What a list holds: the result's array, the method whose policy decides an entry, and the entry's
/// field naming it.
#[derive(Debug, Clone, Copy)]
struct Kind {
    array: &'static str,
    method: &'static str,
    field: &'static str,
}

fn kind_of(method: &str) -> Option<Kind> {
    Some(match method {
        "tools/list" => Kind { array: "tools", method: "tools/call", field: "name" },
        "prompts/list" => Kind { array: "prompts", method: "prompts/get", field: "name" },
        "resources/list" => Kind { array: "resources", method: "resources/read", field: "uri" },
        "resources/templates/list" => {
            Kind { array: "resourceTemplates", method: "resources/read", field: "uriTemplate" }
        }
        _ => return None,
    })
}

/// The list requests of one body and who asked.
#[derive(Debug)]
pub struct ListFilter {
    policy: Policy,
    token: Option<Arc<VerifiedToken>>,
    requests: Vec<(Value, Kind)>,
}

impl ListFilter {
    /// A filter for the list requests in `body`, or `None` when there are none or no rules.
    pub fn for_body(policy: &Policy, token: Option<&Arc<VerifiedToken>>, body: &rpc::Body<'_>) -> Option<Self> {
        if policy.is_empty() {
            return None;
        }
        let requests: Vec<(Value, Kind)> = body
            .messages()
            .iter()
            .filter_map(|m| match m {
                rpc::Message::Request { id, method, .. } => Some((id.clone(), kind_of(method)?)),
                _ => None,
            })
            .collect();
        (!requests.is_empty()).then(|| Self { policy: policy.clone(), token: token.cloned(), requests })
    }

    /// `response` with its list answers filtered.
    pub fn apply(self, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start()
            .to_ascii_lowercase();
        let sse = content_type.starts_with("text/event-stream");
        let json = content_type.starts_with("application/json");
        if !parts.status.is_success() {
            return Response::from_parts(parts, body);
        }
        if !(sse || json) {
            // A list answer the gate cannot read is not passed on unfiltered (a client may read it still).
            parts.headers.remove(header::CONTENT_LENGTH);
            let refused = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("a list answer neither JSON nor an event stream"))
            });
            return Response::from_parts(parts, Body::from_stream(refused));
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        // Compressed (though not asked to be): unreadable here, so not passed on unfiltered.
        let encoded = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            let refused = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("a compressed list answer, which the gate cannot filter"))
            });
            return Response::from_parts(parts, Body::from_stream(refused));
        }
        let filter = Arc::new(self);
        let body = if json {
            let stream = futures_util::stream::once(async move {
                let bytes = axum::body::to_bytes(body, MAX_ANSWER).await.map_err(std::io::Error::other)?;
                filter.rewrite_json(&bytes).ok_or_else(|| std::io::Error::other("an unreadable list answer"))
            });
            Body::from_stream(stream)
        } else {
            Body::from_stream(SseFilter::new(body, filter).into_stream())
        };
        parts.headers.insert(header::VARY, HeaderValue::from_static("authorization"));
        Response::from_parts(parts, body)
    }

    /// A JSON-RPC message (or batch) with the list answers filtered; `None` when it is not JSON.
    /// (Public for the benchmarks.)
    pub fn rewrite_json(&self, bytes: &[u8]) -> Option<Bytes> {
        let text = std::str::from_utf8(bytes).ok()?;
        match self.rewrite(text) {
            Ok(Some(out)) => Some(Bytes::from(out)),
            Ok(None) => Some(Bytes::copy_from_slice(bytes)),
            Err(()) => None,
        }
    }

    /// `json` (a message or a batch) with its list answers filtered: `Ok(None)` when nothing changed,
    /// `Err` when it is not JSON. Only the envelope and each entry's name are parsed; everything else
    /// is copied as it came.
    fn rewrite(&self, json: &str) -> Result<Option<String>, ()> {
        if json.trim_start().starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(json).map_err(|_| ())?;
            let rewritten =
                items.iter().map(|item| self.rewrite_message(item.get())).collect::<Result<Vec<_>, ()>>()?;
            if rewritten.iter().all(Option::is_none) {
                return Ok(None);
            }
            let members = items.iter().zip(&rewritten).map(|(raw, new)| new.as_deref().unwrap_or(raw.get()));
            return Ok(Some(json_array(members)));
        }
        self.rewrite_message(json)
    }

    /// One message, when it answers a list request and loses entries.
    fn rewrite_message(&self, json: &str) -> Result<Option<String>, ()> {
        let fields: Vec<(Cow<'_, str>, &RawValue)> = object(json)?;
        let Some((_, id)) = fields.iter().find(|(k, _)| k == "id") else { return Ok(None) };
        let Ok(id) = serde_json::from_str::<Value>(id.get()) else { return Ok(None) };
        let Some((_, kind)) = self.requests.iter().find(|(request, _)| same_id(request, &id)) else {
            return Ok(None);
        };
        let Some((_, result)) = fields.iter().find(|(k, _)| k == "result") else { return Ok(None) };
        let result_fields = object(result.get())?;
        let Some((_, entries)) = result_fields.iter().find(|(k, _)| k == kind.array) else { return Ok(None) };
        let entries: Vec<&RawValue> = serde_json::from_str(entries.get()).map_err(|_| ())?;
        let mut evaluation = crate::auth::policy_evaluation(&self.policy, self.token.as_deref());
        evaluation.expect_many();
        let kept: Vec<&RawValue> = entries
            .iter()
            .copied()
            .filter(|entry| {
                // An entry without its name cannot be judged: it is not shown.
                let Ok(named) = serde_json::from_str::<Named<'_>>(entry.get()) else { return false };
                let name = match kind.field {
                    "name" => named.name,
                    "uri" => named.uri,
                    _ => named.uri_template,
                };
                let Some(name) = name else { return false };
                // A template is judged as a read of its URI template.
                let target = match kind.method {
                    "tools/call" => Target::Tool(&name),
                    "prompts/get" => Target::Prompt(&name),
                    _ => Target::Resource(&name),
                };
                evaluation.decide(&Action { method: kind.method, target, arguments: None }) == Verdict::Allow
            })
            .collect();
        if kept.len() == entries.len() {
            return Ok(None);
        }
        let array = json_array(kept.iter().map(|e| e.get()));
        let result = write_object(&result_fields, |k| (k == kind.array).then_some(array.as_str()));
        Ok(Some(write_object(&fields, |k| (k == "result").then_some(result.as_str()))))
    }
}

/// The names an entry can go by; everything else in it is skipped, not built.
#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "uriTemplate")]
    uri_template: Option<Cow<'a, str>>,
}

/// The members of a JSON object, in order, values unparsed.
fn object(json: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, ()> {
    struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v));
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Members<'_>>(json).map(|m| m.0).map_err(|_| ())
}

/// A JSON array of raw JSON members.
fn json_array<'m>(members: impl Iterator<Item = &'m str>) -> String {
    let mut out = String::from("[");
    for (i, m) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m);
    }
    out.push(']');
    out
}

/// An object written again from its members, the member `replace` names given a new value.
fn write_object<'r>(fields: &[(Cow<'_, str>, &RawValue)], replace: impl Fn(&str) -> Option<&'r str>) -> String {
    let mut out = String::with_capacity(fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum());
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.to_string()).to_string());
        out.push(':');
        out.push_str(replace(k).unwrap_or(v.get()));
    }
    out.push('}');
    out
}

/// An SSE body rewritten event by event.
struct SseFilter {
    inner: axum::body::BodyDataStream,
    filter: Arc<ListFilter>,
    pending: Vec<u8>,
    done: bool,
}

impl SseFilter {
    fn new(body: Body, filter: Arc<ListFilter>) -> Self {
        Self { inner: body.into_data_stream(), filter, pending: Vec::new(), done: false }
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(end) = event_end(&s.pending) {
                    let event: Vec<u8> = s.pending.drain(..end).collect();
                    return Some((Ok(s.filter.rewrite_event(event)), s));
                }
                if s.done {
                    // An incomplete last event is dropped, as clients drop it (WHATWG SSE §9.2.6).
                    return None;
                }
                match s.inner.next().await {
                    Some(Ok(chunk)) => {
                        if s.pending.len() + chunk.len() > MAX_ANSWER {
                            s.done = true;
                            s.pending.clear();
                            return Some((Err(std::io::Error::other("an SSE event too large to filter")), s));
                        }
                        s.pending.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => {
                        s.done = true;
                        s.pending.clear();
                        return Some((Err(std::io::Error::other(e)), s));
                    }
                    None => s.done = true,
                }
            }
        })
    }
}

/// Where the first complete event of `buf` ends (after its blank line), if one is complete.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = 0;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' if i + 1 < buf.len() => 1,
            // A lone `\r` at the end may be the first half of `\r\n`: wait for more.
            b'\r' => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            return Some(i + eol);
        }
        i += eol;
        line_start = i;
    }
    None
}

/// Whether an answer's `id` is the request's as some client would match them: equal, or the same number
/// however written (`7`, `7.0`, `"7"`: the TypeScript SDK compares `Number(id)`).
fn same_id(request: &Value, answered: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    request == answered || number(request).is_some_and(|r| number(answered) == Some(r))
}

impl ListFilter {
    /// One complete SSE event, its data rewritten when it answers a list request; other messages, and
    /// events without data (a resumption's priming event), as they came; nothing for an event whose data
    /// is no JSON, which cannot be told not to be an answer to filter.
    fn rewrite_event(&self, event: Vec<u8>) -> Bytes {
        let Ok(text) = std::str::from_utf8(&event) else { return Bytes::new() };
        // An event stream may begin with a byte order mark, which SSE parsers skip.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<&str> = text.split_inclusive('\n').flat_map(|l| l.split_inclusive('\r')).collect();
        let field = |line: &str| line.trim_end_matches(['\r', '\n']).to_owned();
        let mut data = String::new();
        let mut other = Vec::new();
        let mut has_data = false;
        for line in &lines {
            let line = field(line);
            if line.is_empty() {
                continue;
            }
            match line.strip_prefix("data") {
                Some(rest) if rest.is_empty() || rest.starts_with(':') => {
                    let value = rest.strip_prefix(':').unwrap_or(rest);
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                _ => other.push(line),
            }
        }
        if !has_data || data.trim().is_empty() {
            return Bytes::from(event);
        }
        let rewritten = match self.rewrite(&data) {
            Ok(Some(rewritten)) => rewritten,
            Ok(None) => return Bytes::from(event),
            Err(()) => return Bytes::new(),
        };
        let mut out = String::with_capacity(event.len());
        for line in other {
            out.push_str(&line);
            out.push('\n');
        }
        // Line breaks in the JSON are whitespace between its tokens (inside strings they are escaped):
        // spaces keep the data on its one line.
        out.push_str("data: ");
        out.push_str(&rewritten.replace(['\r', '\n'], " "));
        out.push_str("\n\n");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use portcullis_policy::{ClaimNames, Rule, RuleSpec};
    use serde_json::json;

    use super::*;

    fn filter(groups: &[&str], body: &str) -> ListFilter {
        let rule = |name: &str, tools: &[&str], allow_if: &str| {
            Rule::compile(RuleSpec {
                name: name.into(),
                tools: tools.iter().map(|t| (*t).to_owned()).collect(),
                allow_if: Some(allow_if.into()),
                ..RuleSpec::default()
            })
            .unwrap()
        };
        let policy = Policy::new(
            vec![
                rule("fin", &["payments_*"], r#""finance" in groups"#),
                rule("ops", &["restart"], r#""ops" in groups"#),
            ],
            ClaimNames::default(),
        );
        let token = crate::testing::verified(json!({"groups": groups}));
        let body = rpc::classify(body.as_bytes()).unwrap();
        ListFilter::for_body(&policy, Some(&token), &body).unwrap()
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c1"}}"#;

    fn answer(id: i64) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "echo"}, {"name": "payments_send"}, {"name": "restart"}, {"description": "no name"}
        ], "nextCursor": "c2"}})
    }

    fn names(v: &Value) -> Vec<&str> {
        v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect()
    }

    async fn run(f: ListFilter, content_type: &str, chunks: Vec<String>) -> String {
        let stream = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
        let mut response = Response::new(Body::from_stream(stream));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let response = f.apply(response);
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn json_list_answers_keep_what_the_caller_may_use() {
        let out = run(filter(&["finance"], LIST), "application/json", vec![answer(7).to_string()]).await;
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(names(&v), ["echo", "payments_send"]);
        assert_eq!(v["result"]["nextCursor"], "c2", "pagination untouched");
        let out = run(filter(&["ops"], LIST), "application/json", vec![answer(7).to_string()]).await;
        assert_eq!(names(&serde_json::from_str(&out).unwrap()), ["echo", "restart"]);
        // An answer to another id is not a list answer.
        let other = answer(8).to_string();
        assert_eq!(run(filter(&[], LIST), "application/json", vec![other.clone()]).await, other);
    }

    #[tokio::test]
    async fn sse_list_answers_are_filtered_event_by_event() {
        let progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let changed = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\r\n\r\n";
        let list = format!("id: 5\nevent: message\ndata: {}\n\n", answer(7));
        let all = format!("{progress}{changed}{list}");
        // Cut anywhere, even inside the list answer's event.
        let (a, b) = all.split_at(progress.len() + changed.len() + 17);
        let out = run(filter(&[], LIST), "text/event-stream", vec![a.to_owned(), b.to_owned()]).await;
        assert!(out.starts_with(&format!("{progress}{changed}")), "{out}");
        let last = &out[progress.len() + changed.len()..];
        assert!(last.starts_with("id: 5\nevent: message\ndata: "), "{last}");
        let data: Value = serde_json::from_str(last.trim_end().rsplit_once("data: ").unwrap().1).unwrap();
        assert_eq!(names(&data), ["echo"]);
        // A pretty-printed answer over several data lines is rewritten onto one.
        let pretty = serde_json::to_string_pretty(&answer(7)).unwrap().replace('\n', "\ndata: ");
        let out = run(filter(&[], LIST), "text/event-stream", vec![format!("data: {pretty}\r\n\r\n")]).await;
        assert_eq!(out.matches("data:").count(), 1, "{out}");
        assert!(out.ends_with("\n\n") && !out.trim_end().contains('\n'), "{out:?}");
        let data: Value = serde_json::from_str(out.trim_end().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(names(&data), ["echo"]);
        // An incomplete last event is not passed on.
        let out = run(filter(&[], LIST), "text/event-stream", vec![format!("{progress}data: {}", answer(7))]).await;
        assert_eq!(out, progress);
    }

    #[tokio::test]
    async fn a_batch_answer_is_filtered_per_list_request() {
        let batch = r#"[{"jsonrpc":"2.0","id":7,"method":"tools/list"},{"jsonrpc":"2.0","id":8,"method":"ping"}]"#;
        let answers = json!([answer(8), answer(7)]).to_string();
        let out = run(filter(&[], batch), "application/json", vec![answers]).await;
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["result"]["tools"].as_array().unwrap().len(), 4, "the ping's answer (id 8) is left alone");
        assert_eq!(names(&v[1]), ["echo"]);
    }

    #[tokio::test]
    async fn what_cannot_be_read_is_not_passed_on() {
        // An SSE event whose data is no JSON is dropped; one without data (a priming event) passes.
        let priming = "id: p-1\ndata: \n\n";
        let garbled = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\n\n";
        let list = format!("data: {}\n\n", answer(7));
        let out = run(filter(&[], LIST), "text/event-stream", vec![format!("{priming}{garbled}{list}")]).await;
        assert!(out.starts_with(priming) && !out.contains("\"result\n"), "{out}");
        assert_eq!(
            names(&serde_json::from_str(out[priming.len()..].trim_end().strip_prefix("data: ").unwrap()).unwrap()),
            ["echo"]
        );
        // A compressed answer (an upstream that compresses unasked) ends in an error, for JSON and SSE.
        for content_type in ["application/json", "text/event-stream"] {
            let mut response = Response::new(Body::from(answer(7).to_string()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let body = filter(&[], LIST).apply(response).into_body();
            assert!(axum::body::to_bytes(body, usize::MAX).await.is_err(), "{content_type}");
        }
    }

    #[tokio::test]
    async fn answers_a_client_would_match_are_filtered_however_they_are_spelt() {
        // The media type in another case, an id written as another number or as a string, a byte order
        // mark before the stream's first event: a client reads each as the list answer.
        let spelt = |id: Value| {
            let mut a = answer(7);
            a["id"] = id;
            a.to_string()
        };
        for id in [json!(7.0), json!("7")] {
            let out = run(filter(&[], LIST), "Application/JSON", vec![spelt(id.clone())]).await;
            assert_eq!(names(&serde_json::from_str(&out).unwrap()), ["echo"], "{id}");
        }
        let out = run(filter(&[], LIST), "Text/Event-Stream", vec![format!("\u{feff}data: {}\n\n", answer(7))]).await;
        assert_eq!(names(&serde_json::from_str(out.trim_end().strip_prefix("data: ").unwrap()).unwrap()), ["echo"]);
        // Another id is still another answer.
        let other = spelt(json!("8"));
        assert_eq!(run(filter(&[], LIST), "application/json", vec![other.clone()]).await, other);
        // A successful answer of another media type is not passed on.
        let mut response = Response::new(Body::from(answer(7).to_string()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let body = filter(&[], LIST).apply(response).into_body();
        assert!(axum::body::to_bytes(body, usize::MAX).await.is_err());
    }

    #[test]
    fn events_end_at_a_blank_line_whatever_the_line_ending() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: x\r\rrest"), Some(9));
        assert_eq!(event_end(b"data: x\n"), None);
        assert_eq!(event_end(b"data: x\r\n\r"), None);
        assert_eq!(event_end(b"\n"), Some(1));
    }
}
