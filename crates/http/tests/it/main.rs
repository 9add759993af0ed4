//! The HTTP layer in process: routers built from real configurations, requests sent without sockets.
//! Golden files (what the outside world parses) live in `tests/golden/`; `UPDATE_GOLDEN=1 cargo test -p
//! portcullis-http` rewrites them.

#![allow(clippy::unwrap_used)]

mod gateway;
mod router;
mod support;
