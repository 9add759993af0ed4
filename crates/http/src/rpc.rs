//! What an MCP POST body is, decided by the gate alone: the JSON-RPC classification that scope checks
//! (and every later policy) are made from.
//!
//! Fail closed: a body the gate cannot read as JSON-RPC 2.0 is refused before the upstream, because an
//! upstream with a laxer parser (a UTF-8 BOM, `NaN`, UTF-16, duplicate keys, a different depth limit)
//! could run something the gate never saw. The parser is strict JSON (RFC 8259); values the gate does not
//! read (`arguments`, `result`, …) are checked for syntax but never built, at any depth; duplicate members among the fields the gate reads (`jsonrpc`, `id`, `method`,
//! `params`, `result`, `error`, and `params.name` / `params.uri` / `params.arguments`) are refused, since JSON parsers
//! disagree on which one wins (RFC 8259 §4).
//!
//! Batches (JSON-RPC 2.0 §6; MCP 2025-03-26 only, removed in 2025-06-18) are classified element by
//! element, so a rule applies to every call in a batch; each element must be an object. The body is
//! scanned in one pass by a reader of the gate's own (`rpc/scan.rs`), never built into a tree: strings
//! are borrowed where they carry no escapes.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::Value;

mod scan;

pub(crate) use scan::STRING_SPECIAL;
use scan::{Member, ScanError, Scanner, Wire};

/// JSON-RPC 2.0 §5.1 and MCP error codes used for refusals.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON, not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// MCP 2026-07-28 Streamable HTTP, "Server Validation": `Mcp-Method` / `Mcp-Name` disagree with the
    /// body (`HeaderMismatch`).
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// One JSON-RPC message of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A request: a `method` and an `id` (a string or a number; MCP forbids `null`); `arguments` is the
    /// raw `params.arguments` of `tools/call` and `prompts/get`; `completes` what a `completion/complete`
    /// completes an argument of (its target the prompt's name or the resource's URI).
    Request {
        id: Value,
        method: Cow<'a, str>,
        target: Option<Cow<'a, str>>,
        arguments: Option<&'a str>,
        completes: Option<Completes>,
    },
    /// A notification: a `method` and no `id`.
    Notification { method: Cow<'a, str> },
    /// A response to a request of the server's: an `id` and exactly one of `result` and `error`.
    Response { id: Value },
}

/// What a `completion/complete` names in `params.ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completes {
    /// `ref/prompt`: an argument of the prompt `ref.name`.
    Prompt,
    /// `ref/resource`: a variable of the resource template `ref.uri`.
    Resource,
}

impl<'a> Message<'a> {
    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Request { method, .. } | Self::Notification { method } => Some(method),
            Self::Response { .. } => None,
        }
    }

    /// What a request acts on: `params.name` of `tools/call` and `prompts/get`, `params.uri` of
    /// `resources/read` (the value MCP 2026-07-28 mirrors into `Mcp-Name`) and of `resources/subscribe`
    /// and `resources/unsubscribe`.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Request { target, .. } => target.as_deref(),
            _ => None,
        }
    }

    /// For a `completion/complete`, whether its target is a prompt or a resource template.
    pub fn completes(&self) -> Option<Completes> {
        match self {
            Self::Request { completes, .. } => *completes,
            _ => None,
        }
    }

    /// The raw `params.arguments` of a `tools/call` or `prompts/get`, if it has any.
    pub fn arguments(&self) -> Option<&'a str> {
        match self {
            Self::Request { arguments, .. } => *arguments,
            _ => None,
        }
    }

    /// The tool a `tools/call` names.
    pub fn tool(&self) -> Option<&str> {
        match self {
            Self::Request { method, target, .. } if method == "tools/call" => target.as_deref(),
            _ => None,
        }
    }
}

/// A classified POST body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    Single(Message<'a>),
    Batch(Vec<Message<'a>>),
}

impl<'a> Body<'a> {
    /// Every message, in order.
    pub fn messages(&self) -> &[Message<'a>] {
        match self {
            Self::Single(m) => std::slice::from_ref(m),
            Self::Batch(ms) => ms,
        }
    }

    /// The `id` an error answer carries: the request's, else `null` (notifications, responses, batches).
    pub fn error_id(&self) -> Value {
        match self {
            Self::Single(Message::Request { id, .. }) => id.clone(),
            _ => Value::Null,
        }
    }
}

/// Why a body was refused; `id` is the request's when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
    pub id: Value,
}

impl Refusal {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), id: Value::Null }
    }
}

/// Classifies a POST body. Syntax errors are `-32700`; JSON that is not a JSON-RPC 2.0 message (or a
/// non-empty batch of them) is `-32600`; a `tools/call`, `prompts/get` or `resources/read` without its
/// string `name` / `uri` is `-32602`.
pub fn classify(body: &[u8]) -> Result<Body<'_>, Refusal> {
    // RFC 8259 §8.1: JSON exchanged between systems is UTF-8. Checked whole, since values the gate skips
    // are not decoded.
    let text = std::str::from_utf8(body)
        .map_err(|e| Refusal::new(code::PARSE_ERROR, format!("the body is not valid UTF-8: {e}")))?;
    let mut scanner = Scanner::new(text);
    if scanner.peek_value() == Some(b'[') {
        let wires = scanner.batch().and_then(|w| scanner.end().map(|()| w)).map_err(scan_refusal)?;
        if wires.is_empty() {
            return Err(Refusal::new(code::INVALID_REQUEST, "an empty batch is not a request (JSON-RPC 2.0 §6)"));
        }
        let messages = wires.into_iter().map(message).collect::<Result<Vec<_>, _>>()?;
        // Answers are matched to requests by id (to filter lists): two requests with one id could be
        // answered in either order.
        // Each id as JSON text (a string keeps its quotes, so `"1"` and `1` differ), in one pass.
        let mut ids = std::collections::HashSet::new();
        for m in &messages {
            if let Message::Request { id, .. } = m
                && !ids.insert(id.to_string())
            {
                return Err(Refusal::new(code::INVALID_REQUEST, format!("two requests of the batch have the id {id}")));
            }
        }
        Ok(Body::Batch(messages))
    } else {
        let wire = scanner.message().and_then(|w| scanner.end().map(|()| w)).map_err(scan_refusal)?;
        Ok(Body::Single(message(wire)?))
    }
}

fn scan_refusal(e: ScanError) -> Refusal {
    match e {
        ScanError::Syntax(e) => Refusal::new(code::PARSE_ERROR, format!("the body is not valid JSON: {e}")),
        ScanError::Shape(e) => Refusal::new(code::INVALID_REQUEST, format!("not a JSON-RPC 2.0 message: {e}")),
    }
}

/// A request's `id` as written: a number or a string (read as serde_json reads it), else what it is, for
/// the checks that refuse it.
fn id_value(raw: &str) -> Result<Value, Refusal> {
    if let Ok(n) = raw.parse::<u64>() {
        return Ok(Value::from(n));
    }
    let id: Value = serde_json::from_str(raw).map_err(|e| scan_refusal(ScanError::Syntax(e.to_string())))?;
    match &id {
        // JSON-RPC 2.0 §4: no fractional parts. `1.0` is `1` to a JavaScript server, which answers with
        // `"id":1`, an id the gate would not match to the request.
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            Err(Refusal::new(code::INVALID_REQUEST, format!("an id number must be an integer, not {raw}")))
        }
        _ => Ok(id),
    }
}

fn message(mut wire: Wire<'_>) -> Result<Message<'_>, Refusal> {
    if wire.jsonrpc.as_deref() != Some("2.0") {
        return Err(Refusal::new(code::INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""));
    }
    let invalid = |message: &str| Refusal::new(code::INVALID_REQUEST, message);
    let id = wire.id.map(id_value).transpose()?;
    match (wire.method.take(), id) {
        (Some(method), id) => {
            if wire.result || wire.error {
                return Err(invalid("a message with a method cannot carry a result or an error"));
            }
            if wire.params.is_some_and(|p| !p.starts_with('{')) {
                // MCP params are always objects; positional params would be read differently by others.
                return Err(invalid("\"params\" must be an object"));
            }
            match id {
                // MCP has no notification outside `notifications/`: a `tools/call` without an `id` would
                // be run by some servers, unchecked, as a request whose answer goes nowhere.
                None if !method.starts_with("notifications/") => {
                    Err(invalid("a notification's method is under \"notifications/\"; a request needs an \"id\""))
                }
                None => Ok(Message::Notification { method }),
                Some(id @ (Value::String(_) | Value::Number(_))) => {
                    let (target, arguments, completes) = target(&method, wire).map_err(|message| Refusal {
                        code: code::INVALID_PARAMS,
                        message,
                        id: id.clone(),
                    })?;
                    Ok(Message::Request { id, method, target, arguments, completes })
                }
                Some(_) => Err(invalid("a request \"id\" must be a string or a number")),
            }
        }
        (None, Some(id)) => {
            if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
                return Err(invalid("a response \"id\" must be a string, a number or null"));
            }
            match (wire.result, wire.error) {
                (true, false) | (false, true) if wire.params.is_none() => Ok(Message::Response { id }),
                _ => Err(invalid("a response carries exactly one of \"result\" and \"error\"")),
            }
        }
        (None, None) => Err(invalid("neither a request, a notification nor a response")),
    }
}

/// The `name` / `uri` of the methods that act on a named thing (required there, a string), and the raw
/// `arguments` of those that take them.
#[allow(clippy::type_complexity)]
fn target<'a>(
    method: &str,
    wire: Wire<'a>,
) -> Result<(Option<Cow<'a, str>>, Option<&'a str>, Option<Completes>), String> {
    let (field, value, arguments, completes) = match method {
        "tools/call" | "prompts/get" => ("name", wire.name, Some(wire.arguments), None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => ("uri", wire.uri, None, None),
        // The prompt or resource template whose argument is completed: governed as it is (the
        // TypeScript SDK runs the prompt's completer).
        "completion/complete" => match &wire.ref_type {
            Member::Text(t) if t == "ref/prompt" => ("ref.name", wire.ref_name, None, Some(Completes::Prompt)),
            Member::Text(t) if t == "ref/resource" => ("ref.uri", wire.ref_uri, None, Some(Completes::Resource)),
            Member::Twice => return Err(format!("{method} params: duplicate field `ref` or `ref.type`")),
            _ => return Err(format!("{method} needs params.ref of type \"ref/prompt\" or \"ref/resource\"")),
        },
        _ => return Ok((None, None, None)),
    };
    let arguments = match arguments {
        Some(Member::Twice) => return Err(format!("{method} params: duplicate field `arguments`")),
        Some(Member::Raw(raw)) => Some(raw),
        Some(Member::Text(_) | Member::Absent | Member::Null) | None => None,
    };
    match value {
        Member::Text(v) => Ok((Some(v), arguments, completes)),
        Member::Twice => Err(format!("{method} params: duplicate field `{field}`")),
        Member::Raw(_) => Err(format!("{method} params: invalid type, expected a string for `{field}`")),
        Member::Absent | Member::Null => Err(format!("{method} needs a string params.{field}")),
    }
}

/// A W3C trace context carried in a request's `params._meta` (SEP-414): `traceparent` and `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMeta {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The trace context of a single request's `params._meta`, if it has one. Read only for traces, never for
/// a decision: anything unreadable is simply no context. The body passes to the upstream untouched.
pub fn trace_meta(body: &[u8]) -> Option<TraceMeta> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        traceparent: Option<Cow<'a, str>>,
        #[serde(borrow)]
        tracestate: Option<Cow<'a, str>>,
    }
    // Most bodies carry none: no second parse for them.
    memchr::memmem::find(body, b"traceparent")?;
    let meta = serde_json::from_slice::<Request<'_>>(body).ok()?.params?.meta?;
    Some(TraceMeta { traceparent: meta.traceparent?.into_owned(), tracestate: meta.tracestate.map(Cow::into_owned) })
}

/// MCP 2026-07-28 (SEP-2243): `Mcp-Method` and `Mcp-Name`, when present, must equal the body's method and
/// target. They are checked, never trusted: authorization is decided from the body alone. `Mcp-Name`
/// may carry the `=?base64?…?=` sentinel form, decoded before comparing.
pub fn check_headers(headers: &HeaderMap, body: &Body<'_>) -> Result<(), Refusal> {
    let mismatch = |message: String| Refusal { code: code::HEADER_MISMATCH, message, id: body.error_id() };
    let single = match body {
        Body::Single(m) => Some(m),
        Body::Batch(_) => None,
    };
    if let Some(header) = one_header(headers, &MCP_METHOD).map_err(mismatch)? {
        let method = single.and_then(Message::method);
        if method != Some(header.as_str()) {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Method header value '{}' does not match body value '{}'",
                printable(&header),
                printable(method.unwrap_or("")),
            )));
        }
    }
    if let Some(header) = one_header(headers, &MCP_NAME).map_err(mismatch)? {
        let decoded = decode_sentinel(&header)
            .ok_or_else(|| mismatch("Header mismatch: Mcp-Name is not valid base64 UTF-8".to_owned()))?;
        let target = single.and_then(Message::target);
        if target != Some(decoded.as_str()) {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Name header value '{}' does not match body value '{}'",
                printable(&decoded),
                printable(target.unwrap_or("")),
            )));
        }
    }
    Ok(())
}

const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// The one value of a header; more than one, or one that is not visible ASCII, is an error. `name` is a
/// constant, so that looking it up parses no name.
fn one_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(format!("Header mismatch: more than one {name} header"));
    }
    value.to_str().map(|v| Some(v.to_owned())).map_err(|_| format!("Header mismatch: {name} is not visible ASCII"))
}

/// `=?base64?…?=` → the UTF-8 it encodes; any other value is taken as it is.
fn decode_sentinel(value: &str) -> Option<String> {
    use base64::Engine;
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

/// A value for an error message: at most 100 characters, control characters replaced.
fn printable(s: &str) -> String {
    s.chars().take(100).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &[u8]) -> i64 {
        classify(body).expect_err("refused").code
    }

    #[test]
    fn requests_notifications_and_responses() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
        let Body::Single(m) = classify(body).unwrap() else { panic!() };
        assert_eq!(m.tool(), Some("echo"));
        assert_eq!(
            m,
            Message::Request {
                id: 7.into(),
                method: "tools/call".into(),
                target: Some("echo".into()),
                arguments: Some("{}"),
                completes: None,
            }
        );
        let m = classify(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m, Body::Single(Message::Notification { method: "notifications/initialized".into() }));
        let m = classify(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#).unwrap();
        assert_eq!(m, Body::Single(Message::Response { id: "s-1".into() }));
        let Body::Single(m) =
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((m.target(), m.tool()), (Some("file:///a"), None));
        // `arguments` as written, whatever its type.
        let Body::Single(m) =
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"arguments":"a\"b","name":"p"}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!((m.target(), m.arguments()), (Some("p"), Some(r#""a\"b""#)));
    }

    #[test]
    fn what_some_servers_read_as_another_call_is_refused() {
        // Go's encoding/json takes `Name` for `name` (the last one winning) and `ID` for `id`.
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"admin_delete"}}"#[..],
            br#"{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"admin_delete"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"admin_delete"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{},"Method":"tools/call","Params":{"name":"admin_delete"}}"#,
            // A call without an `id` is no MCP notification.
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin_delete"}}"#,
            // `1.0` is `1` to a JavaScript server, which answers `"id":1`.
            br#"{"jsonrpc":"2.0","id":1.0,"method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","id":1e0,"method":"tools/list"}"#,
            // Which answer is whose?
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"prompts/list"}]"#,
        ] {
            assert_eq!(refused(body), code::INVALID_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_completion_names_the_prompt_or_resource_it_completes() {
        let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"admin_report"},"argument":{"name":"customer","value":""}}}"#;
        let Body::Single(m) = classify(prompt).unwrap() else { panic!() };
        assert_eq!((m.target(), m.completes()), (Some("admin_report"), Some(Completes::Prompt)));
        let resource = br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"argument":{"name":"id","value":"4"},"ref":{"uri":"file:///secret/{id}","type":"ref/resource"}}}"#;
        let Body::Single(m) = classify(resource).unwrap() else { panic!() };
        assert_eq!((m.target(), m.completes()), (Some("file:///secret/{id}"), Some(Completes::Resource)));
        for (body, code) in [
            (&br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/other","name":"x"}}}"#[..], code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}"#, code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":"ref/prompt"}}"#, code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a"},"ref":{"type":"ref/prompt","name":"b"}}}"#, code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Name":"b"}}}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"Ref":{"type":"ref/prompt","name":"b"}}}"#, code::INVALID_REQUEST),
        ] {
            assert_eq!(refused(body), code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn escaped_names_are_read_as_the_upstream_reads_them() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"admin\u005fdelete"}}"#;
        let Body::Single(m) = classify(body).unwrap() else { panic!() };
        assert_eq!(m.tool(), Some("admin_delete"));
    }

    #[test]
    fn every_element_of_a_batch_is_classified() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
                        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_delete"}}]"#;
        let Body::Batch(ms) = classify(body).unwrap() else { panic!() };
        assert_eq!(ms.iter().filter_map(Message::tool).collect::<Vec<_>>(), ["admin_delete"]);
        assert_eq!(refused(b"[]"), code::INVALID_REQUEST);
        assert_eq!(refused(br#"[{"jsonrpc":"2.0","id":1,"method":"x"}, 5]"#), code::INVALID_REQUEST);
    }

    #[test]
    fn batch_elements_must_be_objects() {
        // A reader of structs would take an array by position (`jsonrpc`, `id`, `method`, `params`) and
        // see a call that no JSON-RPC server reads there.
        assert_eq!(refused(br#"[["2.0",1,"tools/call",{"name":"admin_delete"}]]"#), code::INVALID_REQUEST);
        assert_eq!(refused(br#"[{"jsonrpc":"2.0","method":"x"},["2.0",null,"y"]]"#), code::INVALID_REQUEST);
    }

    /// Mutations of real bodies, against serde_json: what is JSON to it is JSON to the gate (lone
    /// surrogates aside: serde_json lets them pass in values it skips), what is not is refused, and an
    /// accepted body is read as serde_json reads it.
    #[test]
    fn the_reader_agrees_with_serde_json() {
        let seeds = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"t":"h\u00e9\ud83d\ude00","n":[1,-2.5e3,true,false,null]}}}"#,
            r#"[{"jsonrpc":"2.0","id":"x","result":{"a":[]}},{"jsonrpc":"2.0","method":"n","params":{}}]"#,
            r#" {"jsonrpc" : "2.0" , "id" : 0 , "method" : "resources/read" , "params" : { "uri" : "f:///\"a" } } "#,
        ];
        let alphabet = b"{}[]\":,0123456789-+.eE \t\n\\/ubfnrtxa\x01";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..30_000 {
            let mut b = seeds[random(seeds.len())].as_bytes().to_vec();
            for _ in 0..=random(3) {
                let at = random(b.len() + 1);
                let byte = alphabet[random(alphabet.len())];
                match random(3) {
                    0 if at < b.len() => {
                        b.remove(at);
                    }
                    1 if at < b.len() => b[at] = byte,
                    _ => b.insert(at, byte),
                }
            }
            let text = String::from_utf8_lossy(&b);
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(&b).is_ok();
            let gate = classify(&b);
            let not_json = matches!(&gate, Err(r) if r.code == code::PARSE_ERROR);
            let lone = (0xd8..=0xdf).any(|h| text.contains(&format!("\\u{h:x}")));
            assert!(!(json && not_json && !lone), "valid JSON refused: {text} {gate:?}");
            assert!(json || gate.is_err(), "invalid JSON accepted: {text}");
            let Ok(body) = gate else { continue };
            accepted += 1;
            let tree: Value = serde_json::from_slice(&b).unwrap();
            let elements: Vec<&Value> = match &tree {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            assert_eq!(elements.len(), body.messages().len(), "{text}");
            for (m, v) in body.messages().iter().zip(elements) {
                assert_eq!(m.method(), v["method"].as_str(), "{text}");
                let field = if m.method() == Some("resources/read") { "uri" } else { "name" };
                if let Some(target) = m.target() {
                    assert_eq!(Some(target), v["params"][field].as_str(), "{text}");
                }
                if let Some(arguments) = m.arguments() {
                    assert_eq!(serde_json::from_str::<Value>(arguments).unwrap(), v["params"]["arguments"], "{text}");
                }
                if let Message::Request { id, .. } = m {
                    assert_eq!(id, &v["id"], "{text}");
                }
            }
        }
        assert!(accepted > 1_000, "the mutations keep enough bodies valid to compare readings: {accepted}");
    }

    #[test]
    fn what_a_laxer_parser_would_accept_is_refused() {
        let call =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_delete","arguments":ARGS}}"#;
        // A UTF-8 byte order mark.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(call.replace("ARGS", "{}").as_bytes());
        assert_eq!(refused(&bom), code::PARSE_ERROR);
        // UTF-16.
        let utf16: Vec<u8> = call.replace("ARGS", "{}").encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(refused(&utf16), code::PARSE_ERROR);
        // NaN and friends.
        for bad in ["{\"x\":NaN}", "{\"x\":Infinity}", "{\"x\":-Infinity}", "{'x':1}", "{\"x\":1,}"] {
            assert_eq!(refused(call.replace("ARGS", bad).as_bytes()), code::PARSE_ERROR, "{bad}");
        }
        // Arguments nested deeper than a tree parser's limit are skipped, not parsed: the call is still
        // seen for what it is.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep = call.replace("ARGS", &deep);
        let Body::Single(m) = classify(deep.as_bytes()).unwrap() else { panic!() };
        assert_eq!(m.tool(), Some("admin_delete"));
        let unbalanced = format!("{}{}", "[".repeat(200), "]".repeat(199));
        assert_eq!(refused(call.replace("ARGS", &unbalanced).as_bytes()), code::PARSE_ERROR);
        // Trailing content after the message.
        assert_eq!(refused(format!("{} {{}}", call.replace("ARGS", "{}")).as_bytes()), code::PARSE_ERROR);
    }

    #[test]
    fn bytes_and_escapes_a_strict_parser_refuses_are_refused_in_skipped_values_too() {
        let with = |v: &[u8]| {
            let mut b =
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":""#.to_vec();
            b.extend_from_slice(v);
            b.extend_from_slice(br#""}}}"#);
            b
        };
        assert_eq!(refused(&with(b"\xFF")), code::PARSE_ERROR);
        assert_eq!(refused(&with(br"\ud800")), code::PARSE_ERROR);
        assert_eq!(refused(&with(br"\udc00")), code::PARSE_ERROR);
        assert_eq!(refused(&with(br"\ud800\u0041")), code::PARSE_ERROR);
        assert!(classify(&with(br"\ud83d\ude00 \\ud800 \u00e9")).is_ok(), "a pair, an escaped backslash, a BMP escape");
        assert!(classify(&with("é".as_bytes())).is_ok());
    }

    #[test]
    fn duplicate_members_are_refused() {
        let dup_method =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(refused(dup_method), code::INVALID_REQUEST);
        let dup_name =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin_delete"}}"#;
        assert_eq!(refused(dup_name), code::INVALID_PARAMS);
        let dup_params =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"admin"}}"#;
        assert_eq!(refused(dup_params), code::INVALID_REQUEST);
    }

    #[test]
    fn shapes_that_are_not_json_rpc_are_refused() {
        for (body, code) in [
            (&b""[..], code::PARSE_ERROR),
            (b"not json", code::PARSE_ERROR),
            (b"5", code::INVALID_REQUEST),
            (br#""tools/call""#, code::INVALID_REQUEST),
            (br#"{"id":1,"method":"tools/list"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["admin_delete"]}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","result":{}}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#, code::INVALID_PARAMS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#, code::INVALID_PARAMS),
        ] {
            assert_eq!(refused(body), code, "{}", String::from_utf8_lossy(body));
        }
        // The request's id is kept for the error answer when it could be read.
        let e = classify(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{}}"#).unwrap_err();
        assert_eq!(e.id, Value::from(9));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn mcp_method_and_name_headers_must_agree_with_the_body() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_weather"}}"#;
        let b = classify(body).unwrap();
        assert!(check_headers(&headers(&[]), &b).is_ok());
        assert!(check_headers(&headers(&[("mcp-method", "tools/call"), ("mcp-name", "get_weather")]), &b).is_ok());
        // Base64 sentinel form (SEP-2243 "Value Encoding").
        assert!(check_headers(&headers(&[("mcp-name", "=?base64?Z2V0X3dlYXRoZXI=?=")]), &b).is_ok());
        for bad in [
            vec![("mcp-method", "tools/list")],
            vec![("mcp-method", "Tools/Call")],
            vec![("mcp-name", "admin_delete")],
            vec![("mcp-name", "=?base64?YWRtaW4=?=")],
            vec![("mcp-name", "=?base64?!!?=")],
            vec![("mcp-method", "tools/call"), ("mcp-method", "tools/call")],
        ] {
            let e = check_headers(&headers(&bad), &b).unwrap_err();
            assert_eq!((e.code, e.id.clone()), (code::HEADER_MISMATCH, Value::from(3)), "{bad:?}");
        }
        // A method without a target cannot be named.
        let list = classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(check_headers(&headers(&[("mcp-name", "x")]), &list).is_err());
        // A batch has no single method.
        let batch = classify(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#).unwrap();
        assert!(check_headers(&headers(&[("mcp-method", "tools/list")]), &batch).is_err());
    }

    #[test]
    fn trace_context_in_meta() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"{tp}","tracestate":"a=b"}}}}}}"#
        );
        let meta = trace_meta(body.as_bytes()).unwrap();
        assert_eq!((meta.traceparent.as_str(), meta.tracestate.as_deref()), (tp, Some("a=b")));
        // None without one, in an argument (not `_meta`), in a batch, or when `_meta` is not an object.
        for none in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"traceparent":"t"}}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"t"}}}]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":"traceparent"}}"#,
        ] {
            assert_eq!(trace_meta(none.as_bytes()), None, "{none}");
        }
    }
}
