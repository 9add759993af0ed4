//! What every in-process test needs: sending a request through a router, reading the answer, golden files.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// An answer, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub(crate) fn challenge(&self) -> &str {
        self.headers.get("www-authenticate").map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// Status, challenge and body: what a client parses.
    pub(crate) fn transcript(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap();
        format!(
            "{}\nWWW-Authenticate: {}\n{}\n",
            self.status.as_u16(),
            self.challenge(),
            serde_json::to_string_pretty(&body).unwrap()
        )
    }
}

pub(crate) async fn send(app: &portcullis_http::Front, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer { status, headers, body }
}

/// Compares `actual` with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file instead.
pub(crate) fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(actual, expected, "differs from {}", path.display());
}
