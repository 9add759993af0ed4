//! `portcullis doctor URL`: walks the discovery and registration path of any MCP server as a strict
//! client does, and names each fault with the specification it breaks. It reuses portcullis's own
//! discovery code, so what it accepts is exactly what portcullis accepts.
//!
//! One module per stage, each taking what the one before found: `challenge` (the 401 and `Origin`),
//! `resource` (RFC 9728 metadata), `server` (RFC 8414 / OpenID discovery), `extensions` (MCP's
//! client credentials and enterprise-managed authorization, when advertised), then, when asked,
//! `registration` (RFC 7591 and Basic decoding), `tokens` (`--token`, `--id-token`) and `login` (a real
//! sign-in). This module holds the report and prints it.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use crate::cli::DoctorArgs;

mod challenge;
mod extensions;
mod idp;
mod login;
mod registration;
mod resource;
mod server;
mod tokens;

pub use challenge::param;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
struct Check {
    stage: &'static str,
    id: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

#[derive(Debug, Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(
        &mut self,
        stage: &'static str,
        id: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<&str>,
    ) {
        self.0.push(Check { stage, id, status, detail: detail.into(), fix: fix.map(str::to_owned) });
    }
    fn pass(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>) {
        self.add(stage, id, Status::Pass, detail, None);
    }
    fn fail(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>, fix: &str) {
        self.add(stage, id, Status::Fail, detail, Some(fix));
    }
    fn warn(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>, fix: &str) {
        self.add(stage, id, Status::Warn, detail, Some(fix));
    }
    fn failed(&self) -> bool {
        self.0.iter().any(|c| c.status == Status::Fail)
    }
}

/// `--token -` or `--id-token -`: the token is read from standard input (one of them), so that it does
/// not stand in the command line, which other local users can read while the command runs.
fn tokens_from_stdin(args: &mut DoctorArgs) -> anyhow::Result<()> {
    let dashes = [&args.token, &args.id_token].iter().filter(|t| t.as_deref() == Some("-")).count();
    anyhow::ensure!(dashes <= 1, "only one of --token and --id-token can be read from standard input");
    if dashes == 1 {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
        let token = text.trim().to_owned();
        anyhow::ensure!(!token.is_empty(), "standard input held no token");
        let slot = if args.token.as_deref() == Some("-") { &mut args.token } else { &mut args.id_token };
        *slot = Some(token);
    }
    Ok(())
}

pub(crate) async fn run(mut args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let url = Url::parse(&args.url).map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", args.url))?;
    tokens_from_stdin(&mut args)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis-doctor/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut report = Report::default();
    let reached = diagnose(&http, &url, &args, &mut report).await;
    if args.json {
        let checks: Vec<Value> = report
            .0
            .iter()
            .map(|c| json!({"stage": c.stage, "id": c.id, "status": c.status.as_str(), "detail": c.detail, "fix": c.fix}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"url": url.as_str(), "checks": checks}))?);
    } else {
        print_human(&url, &report);
    }
    Ok(match (reached, report.failed()) {
        (false, _) => ExitCode::from(2),
        (true, true) => ExitCode::from(1),
        (true, false) => ExitCode::SUCCESS,
    })
}

fn print_human(url: &Url, report: &Report) {
    let color = std::io::stdout().is_terminal();
    let paint = |s: Status| -> String {
        let (code, text) = match s {
            Status::Pass => ("32", "PASS"),
            Status::Warn => ("33", "WARN"),
            Status::Fail => ("31", "FAIL"),
            Status::Skipped => ("90", "SKIP"),
        };
        if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    };
    println!("portcullis doctor {url}");
    // Each stage once, in the order stages first reported, whatever order their checks came in.
    let mut stages: Vec<&str> = Vec::new();
    for c in &report.0 {
        if !stages.contains(&c.stage) {
            stages.push(c.stage);
        }
    }
    for stage in stages {
        println!("\n{stage}");
        for c in report.0.iter().filter(|c| c.stage == stage) {
            println!("  {} {:<28} {}", paint(c.status), c.id, c.detail);
            if let Some(fix) = &c.fix {
                println!("       fix: {fix}");
            }
        }
    }
    let count = |s: Status| report.0.iter().filter(|c| c.status == s).count();
    println!("\n{} passed, {} warnings, {} failed", count(Status::Pass), count(Status::Warn), count(Status::Fail));
}

/// Runs the stages in order, each on what the one before found; returns whether the server could be
/// reached at all.
async fn diagnose(http: &reqwest::Client, url: &Url, args: &DoctorArgs, r: &mut Report) -> bool {
    let (prm_from_header, challenge_scope) = match challenge::check(http, url, r).await {
        challenge::Outcome::Unreachable => return false,
        challenge::Outcome::Unprotected => return true,
        challenge::Outcome::Challenged { resource_metadata, scope } => (resource_metadata, scope),
    };
    let Some(resource) = resource::check(http, url, prm_from_header, r).await else { return true };
    let Some(meta) = server::check(http, &resource.issuer, r).await else { return true };
    idp::check(&meta, r);
    extensions::check(http, &meta, r).await;
    if args.register {
        registration::check(http, &meta, r).await;
    } else {
        r.add(
            "registration",
            "dcr.status-201",
            Status::Skipped,
            "not tried (pass --register: it creates a client)",
            None,
        );
    }
    for (kind, token) in [(tokens::Kind::Access, &args.token), (tokens::Kind::Id, &args.id_token)] {
        match token {
            Some(t) => tokens::check(http, kind, t, &meta, url, r).await,
            None => tokens::skipped(kind, r),
        }
    }
    if args.login {
        let wait = Duration::from_secs(args.login_timeout);
        let target = login::Target {
            meta: &meta,
            mcp_url: url,
            resource: &resource.resource,
            scope: challenge_scope.as_deref(),
            issuer: &resource.issuer,
        };
        login::login(http, &target, wait, r).await;
    } else {
        r.add(
            "sign-in",
            "login.tools-list",
            Status::Skipped,
            "not tried (pass --login to sign in through a browser)",
            None,
        );
    }
    true
}
