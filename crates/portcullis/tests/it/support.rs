//! Spawning portcullis and the sample upstream as child processes on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Ports reserved for a gate: bound here, and handed to the gate's process when it starts, so no other
/// process can take the port in between.
static RESERVED: std::sync::Mutex<Vec<std::net::TcpListener>> = std::sync::Mutex::new(Vec::new());

/// A loopback port for a gate to listen on, bound until [`Gate::start_at`] hands it over.
pub fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    RESERVED.lock().unwrap().push(listener);
    port
}

/// The listener for `port`: the reserved one, or (a restart on a port its gate released) bound now.
fn listener_for(port: u16) -> std::net::TcpListener {
    let mut reserved = RESERVED.lock().unwrap();
    match reserved.iter().position(|l| l.local_addr().unwrap().port() == port) {
        Some(i) => reserved.swap_remove(i),
        None => std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
    }
}

/// A loopback port nothing listens on, for "unreachable" cases.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port held without listening, for a server that comes up later on it: connections to it
/// are refused, no other socket is given it meanwhile, and a listener that reuses addresses (tokio's,
/// Node.js's) can bind it while it is held (Linux: sockets with `SO_REUSEADDR` share a port until one
/// listens).
pub struct HeldPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl HeldPort {
    pub fn new() -> HeldPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        HeldPort { _socket: socket, port }
    }
}

/// Starts `cmd`, waits for a stdout line containing `marker`, returns the child and that line.
/// Later stdout lines are drained in the background so the child never blocks on a full pipe.
async fn spawn_until(mut cmd: Command, marker: &str) -> (Child, String) {
    cmd.stderr(child_log());
    let (child, mut lines) = spawn_reading(cmd, marker).await;
    let line = std::mem::take(&mut lines.marker);
    lines.drain();
    (child, line)
}

/// `portcullis serve` with the configuration at `path`, `env`, and the socket for `port` handed over.
fn serve(path: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("serve").arg("--config").arg(path).env("RUST_LOG", "info").envs(env.iter().copied());
    hand_over(&mut cmd, port);
    cmd
}

/// The rest of a child's stdout, after the line that contained the marker (kept in `marker`).
struct Lines {
    inner: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    marker: String,
}

impl Lines {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.inner.next_line().await
    }

    /// Reads the rest in the background, so that the child never blocks on a full pipe.
    fn drain(mut self) {
        tokio::spawn(async move { while let Ok(Some(_)) = self.next_line().await {} });
    }
}

/// Where a child's log goes: nowhere, as it is noise in a passing run; PORTCULLIS_TEST_LOG=1 shows it.
fn child_log() -> Stdio {
    if std::env::var_os("PORTCULLIS_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() }
}

/// What a process logs (its stderr), line by line.
pub struct Log(tokio::io::Lines<BufReader<tokio::process::ChildStderr>>);

impl Log {
    /// The next line that contains `text`, within [`STEP`]; `None` if none comes.
    pub async fn find(&mut self, text: &str) -> Option<String> {
        let found = async {
            while let Ok(Some(line)) = self.0.next_line().await {
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        };
        tokio::time::timeout(STEP, found).await.ok().flatten()
    }
}

/// Starts `cmd` (its stderr as the caller set it) and waits for a stdout line containing `marker`; the
/// rest of stdout is the caller's.
async fn spawn_reading(mut cmd: Command, marker: &str) -> (Child, Lines) {
    cmd.stdout(Stdio::piped()).stdin(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STEP, async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.contains(marker) => return l,
                Some(_) => continue,
                None => panic!("process exited before printing {marker:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {marker:?}"));
    (child, Lines { inner: lines, marker: line })
}

/// The sample MCP server, as its own process.
pub struct Sample {
    pub _child: Child,
    /// e.g. `http://127.0.0.1:1234`
    pub base: String,
}

impl Sample {
    pub async fn start() -> Sample {
        let mut cmd = Command::new(bin());
        cmd.args(["sample-upstream", "--listen", "127.0.0.1:0"]);
        let (child, line) = spawn_until(cmd, "listening on").await;
        let url = line.rsplit(' ').next().unwrap();
        let base = url.trim_end_matches("/mcp").to_owned();
        Sample { _child: child, base }
    }

    /// The sample server on a Unix domain socket in `dir`; the upstream to configure is returned.
    pub async fn start_unix(dir: &TempDir) -> (Child, String) {
        let socket = dir.path.join("sample.sock");
        let mut cmd = Command::new(bin());
        cmd.args(["sample-upstream", "--socket"]).arg(&socket);
        let (child, line) = spawn_until(cmd, "listening on").await;
        let upstream = line.rsplit(' ').next().unwrap().to_owned();
        assert_eq!(upstream, format!("unix:{}:/mcp", socket.display()));
        (child, upstream)
    }

    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub async fn stats(&self) -> serde_json::Value {
        client().get(format!("{}/_sample/stats", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn release(&self, gate: &str) {
        let r = client().post(format!("{}/_sample/release/{gate}", self.base)).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
}

/// A running portcullis.
pub struct Gate {
    pub child: Child,
    /// e.g. `http://127.0.0.1:1234`
    pub base: String,
    pub dir: TempDir,
    /// What it printed after "listening" within a moment of starting (the `--dev` banner).
    pub banner: String,
}

impl Gate {
    /// Starts `portcullis serve` with `config`, in which `{listen}` and `{public_url}` are replaced
    /// by a free loopback address.
    pub async fn start(config: &str) -> Gate {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gate {
        let port = reserve_port();
        let dir = TempDir::new();
        let path = write_config(config, port, &dir);
        Self::start_at(&path, port, dir, env).await
    }

    /// [`Gate::start_with_env`], and what it logs.
    pub async fn start_logging(config: &str, env: &[(&str, &str)]) -> (Gate, Log) {
        let port = reserve_port();
        let dir = TempDir::new();
        let mut cmd = serve(&write_config(config, port, &dir), port, env);
        cmd.stderr(Stdio::piped());
        let (mut child, lines) = spawn_reading(cmd, "portcullis listening on").await;
        lines.drain();
        let log = Log(BufReader::new(child.stderr.take().expect("stderr piped")).lines());
        (Gate { child, base: format!("http://127.0.0.1:{port}"), dir, banner: String::new() }, log)
    }

    /// Starts `portcullis serve` with an already written config for `port`, in `dir`.
    pub async fn start_at(path: &std::path::Path, port: u16, dir: TempDir, env: &[(&str, &str)]) -> Gate {
        let base = format!("http://127.0.0.1:{port}");
        let (child, _) = spawn_until(serve(path, port, env), "portcullis listening on").await;
        Gate { child, base, dir, banner: String::new() }
    }

    /// Starts `portcullis serve` without a file, configured by `env` only; `{public_url}` and
    /// `{listen}` in values are replaced as in [`Gate::start`].
    pub async fn start_env(env: &[(&str, &str)]) -> Gate {
        let port = reserve_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(bin());
        cmd.arg("serve").env_clear().env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v.replace("{listen}", &format!("127.0.0.1:{port}")).replace("{public_url}", &base));
        }
        hand_over(&mut cmd, port);
        let (child, _) = spawn_until(cmd, "portcullis listening on").await;
        Gate { child, base, dir: TempDir::new(), banner: String::new() }
    }

    /// `portcullis serve --dev` in `dir` (its state goes to `dir/.portcullis`) on `port`, handed over.
    pub async fn start_dev(dir: &TempDir, port: u16, env: &[(&str, &str)]) -> Gate {
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--dev", "--dev-listen", &format!("127.0.0.1:{port}")]).current_dir(&dir.path);
        cmd.envs(env.iter().copied());
        cmd.stderr(child_log());
        hand_over(&mut cmd, port);
        let (child, mut lines) = spawn_reading(cmd, "portcullis listening on").await;
        let mut banner = String::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C") {
                break;
            }
        }
        lines.drain();
        Gate { child, base, dir: TempDir::new(), banner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the process at once (a crash, as far as its state is concerned) and hands back its folder.
    pub async fn kill(mut self) -> TempDir {
        self.child.kill().await.unwrap();
        self.dir
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }
}

/// Passes the gate's listening socket to `cmd` by systemd socket activation (descriptor 3).
fn hand_over(cmd: &mut Command, port: u16) {
    use command_fds::{CommandFdExt, FdMapping};
    let fd = std::os::fd::OwnedFd::from(listener_for(port));
    cmd.fd_mappings(vec![FdMapping { parent_fd: fd, child_fd: 3 }]).unwrap();
    cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
}

/// Writes `config` (with `{listen}`, `{public_url}` and `{dir}` filled in) into `dir`.
pub fn write_config(config: &str, port: u16, dir: &TempDir) -> PathBuf {
    let text = config
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{public_url}", &format!("http://127.0.0.1:{port}"))
        .replace("{dir}", &dir.path.display().to_string());
    let path = dir.path.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a `portcullis` admin command with `stdin` as its input; returns stdout.
pub async fn admin(args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(STEP, child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "portcullis-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(STEP).build().unwrap()
}

/// A client without a total timeout, for streams (each read is bounded by the caller).
pub fn stream_client() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(STEP).build().unwrap()
}

/// A JSON-RPC `tools/call` body.
pub fn call(id: u64, tool: &str, args: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
        .to_string()
}

/// The MCP client headers every request carries.
pub fn mcp_post(client: &reqwest::Client, url: &str, body: String) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body)
}

/// Reads SSE events from a streaming response, one `data:` payload at a time.
pub struct Events {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Events {
    pub fn new(resp: reqwest::Response) -> Events {
        Events { stream: Box::pin(resp.bytes_stream()), buf: String::new() }
    }

    /// The next event as `(id, data)`, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<(Option<String>, serde_json::Value)> {
        use futures_util::StreamExt;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((id, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(STEP, self.stream.next()).await.expect("next SSE chunk in time")?;
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

/// The loopback test IdP (`oidc-provider`, see `tests/interop/README.md`).
pub struct Idp {
    pub child: Child,
    pub issuer: String,
}

impl Idp {
    pub async fn start(profile: &str) -> Idp {
        Self::start_with(profile, &[]).await
    }

    /// With environment settings (`IDP_AT_TTL`, the access-token lifetime in seconds, say).
    pub async fn start_with(profile: &str, env: &[(&str, &str)]) -> Idp {
        Self::start_at(profile, 0, env).await
    }

    /// [`Idp::start_with`] on loopback `port` (0: any free one).
    pub async fn start_at(profile: &str, port: u16, env: &[(&str, &str)]) -> Idp {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test IdP's packages are not installed: run ./scripts/test (it runs npm ci in tests/interop)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("idp.mjs")).args(["--profile", profile]).envs(env.iter().copied());
        if port != 0 {
            cmd.args(["--port", &port.to_string()]);
        }
        let (child, line) = spawn_until(cmd, "\"issuer\"").await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Idp { child, issuer: v["issuer"].as_str().unwrap().to_owned() }
    }

    /// A real access token from the IdP's token endpoint (client credentials grant).
    pub async fn token(&self, client_id: &str, secret: &str, resource: &str, scope: &str) -> String {
        let r = client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", resource), ("scope", scope)])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "token request failed: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Replaces the IdP's RSA signing key; the old one stays published only with `keep_old`.
    pub async fn rotate(&self, keep_old: bool) -> String {
        let q = if keep_old { "?keep_old=1" } else { "" };
        let r = client().post(format!("{}/__test/rotate{q}", self.issuer)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["kid"].as_str().unwrap().to_owned()
    }

    /// Forgets every refresh token the IdP issued: later refreshes get `invalid_grant`.
    pub async fn end_sessions(&self) -> u64 {
        let r = client().post(format!("{}/__test/end-sessions", self.issuer)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["ended"].as_u64().unwrap()
    }

    pub async fn jwks_fetches(&self) -> u64 {
        let r = client().get(format!("{}/__test/jwks-fetches", self.issuer)).send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()["count"].as_u64().unwrap()
    }
}

/// Runs `portcullis serve` expecting it to refuse to start; returns its stderr.
pub async fn serve_fails(config: &str, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new();
    let path = write_config(config, closed_port(), &dir);
    let mut cmd = Command::new(bin());
    if !config.is_empty() {
        cmd.arg("serve").arg("--config").arg(&path);
    } else {
        cmd.arg("serve").env_clear();
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output()).await.expect("serve should exit").unwrap();
    assert!(!out.status.success(), "serve started although it should not have");
    String::from_utf8(out.stderr).unwrap()
}

/// The claims of a JWT, unverified (for asserting what the IdP minted).
pub fn claims_of(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A minimal IdP in the test process: RFC 8414 metadata and a JWKS of the test keys on loopback, and
/// tokens minted here with the ES256 test key. For tests about the gate, not about IdPs.
pub struct KeyIdp {
    pub issuer: String,
}

impl KeyIdp {
    pub async fn start() -> KeyIdp {
        Self::start_at(0).await
    }

    /// [`KeyIdp::start`] on loopback `port` (0: any free one).
    pub async fn start_at(port: u16) -> KeyIdp {
        use portcullis_test_support::{TestKey, jwks};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let metadata = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        });
        let keys = jwks(&[TestKey::Es256]);
        let app = axum::Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                axum::routing::get(move || async move { axum::Json(metadata) }),
            )
            .route("/jwks", axum::routing::get(move || async move { axum::Json(keys) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        KeyIdp { issuer }
    }

    /// A token of `user-1` for `resource` with `scope`, valid for ten minutes.
    pub fn token(&self, resource: &str, scope: &str) -> String {
        self.token_for("user-1", resource, scope)
    }

    /// [`Self::token`] for the user `subject`.
    pub fn token_for(&self, subject: &str, resource: &str, scope: &str) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({"iss": self.issuer, "sub": subject, "aud": resource, "scope": scope,
            "client_id": "client-1", "iat": now, "exp": now + 600, "jti": format!("j-{now}")});
        portcullis_test_support::mint(portcullis_test_support::TestKey::Es256, &claims)
    }
}

/// The text of a tool call's answer.
pub fn text_of(v: &serde_json::Value) -> &str {
    v["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text result in {v}"))
}
