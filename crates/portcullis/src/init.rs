//! `portcullis init`: a configuration for one MCP server behind a known IdP, and the settings to make at
//! that IdP. Every answer can be given as a flag (for scripts); on a terminal, the missing ones are asked.
//! The file written is validated exactly as `serve` would load it before it is written.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use portcullis_config::idp::{Facts, Registration};
use portcullis_config::{Config, Idp, MapEnv};

use crate::cli::InitArgs;

/// The environment variable the generated file reads the upstream client secret from.
pub(crate) const SECRET_VAR: &str = "PORTCULLIS_IDP_CLIENT_SECRET";

/// Which mode the operator chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Verify,
    Gateway,
}

/// Everything the file is made from.
#[derive(Debug)]
struct Answers {
    facts: &'static Facts,
    mode: Mode,
    public_url: String,
    upstream: String,
    path: String,
    params: BTreeMap<String, String>,
    clients: Vec<String>,
    client_id: Option<String>,
    audience: Option<String>,
}

pub(crate) fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let interactive = !args.no_input && std::io::stdin().is_terminal();
    let mut ask = Asker { interactive, lines: std::io::stdin().lock() };
    let answers = answers(args, &mut ask)?;
    let text = render(&answers);
    // The same loading as `serve`, with the secret present as it will be at run time.
    let env = MapEnv::from_pairs([(SECRET_VAR, "placeholder")]);
    if let Err(errors) = Config::from_toml(&text, &env) {
        bail!("these answers do not make a valid configuration:\n{errors}");
    }
    match args.output.to_str() {
        Some("-") => print!("{text}"),
        _ => {
            if args.output.exists() && !args.force {
                bail!("{} exists; choose another --output, or --force to replace it", args.output.display());
            }
            std::fs::write(&args.output, &text).with_context(|| format!("writing {}", args.output.display()))?;
            eprintln!("wrote {}", args.output.display());
        }
    }
    let out = &mut std::io::stderr();
    let _ = writeln!(out, "\nAt {}:", answers.facts.title);
    for (i, step) in steps(&answers).iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    let _ =
        writeln!(out, "\nThen: portcullis check-config {0} && portcullis serve --config {0}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Asks on a terminal; without one, a missing answer is an error naming its flag.
struct Asker<R> {
    interactive: bool,
    lines: R,
}

impl<R: BufRead> Asker<R> {
    fn ask(&mut self, flag: &str, question: &str, default: Option<&str>) -> anyhow::Result<String> {
        if !self.interactive {
            return default
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("{flag} is required ({question}); run on a terminal to be asked"));
        }
        loop {
            match default {
                Some(d) => eprint!("{question} [{d}]: "),
                None => eprint!("{question}: "),
            }
            let mut line = String::new();
            if self.lines.read_line(&mut line)? == 0 {
                bail!("{flag} is required ({question})");
            }
            let line = line.trim();
            match (line.is_empty(), default) {
                (false, _) => return Ok(line.to_owned()),
                (true, Some(d)) => return Ok(d.to_owned()),
                (true, None) => eprintln!("  an answer is needed"),
            }
        }
    }
}

fn answers<R: BufRead>(args: &InitArgs, ask: &mut Asker<R>) -> anyhow::Result<Answers> {
    let names = Idp::all().map(|f| f.name).collect::<Vec<_>>().join(", ");
    let name = match &args.idp {
        Some(n) => n.clone(),
        None => ask.ask("--idp", &format!("Which IdP ({names})"), None)?,
    };
    let idp = Idp::from_name(&name).ok_or_else(|| anyhow::anyhow!("{name:?} is not a known IdP (known: {names})"))?;
    let facts = idp.facts();
    let recommended = recommended_mode(facts);
    let mode = match args.mode.as_deref() {
        Some(m) => m.to_owned(),
        None => {
            if ask.interactive {
                eprintln!("{}: {}", facts.title, facts.mode);
            }
            ask.ask("--mode", "Mode (verify or gateway)", Some(recommended))?
        }
    };
    let mode = match mode.as_str() {
        "verify" => Mode::Verify,
        "gateway" => Mode::Gateway,
        other => bail!("--mode {other:?}: use verify or gateway"),
    };
    if mode == Mode::Verify && facts.access_tokens == portcullis_config::idp::AccessTokens::Opaque {
        bail!(
            "{} issues opaque access tokens, which verify mode cannot bind to this server: use --mode gateway",
            facts.title
        );
    }
    let mut params = BTreeMap::new();
    for set in &args.set {
        let (k, v) = set.split_once('=').ok_or_else(|| anyhow::anyhow!("--set {set:?}: use key=value"))?;
        if !facts.params.iter().any(|p| p.key == k) {
            let known = facts.params.iter().map(|p| p.key).collect::<Vec<_>>().join(", ");
            bail!("--set {k}: not a parameter of the {} preset (its parameters: {known})", facts.name);
        }
        params.insert(k.to_owned(), v.to_owned());
    }
    let public_url = match &args.public_url {
        Some(u) => u.clone(),
        None => ask.ask("--public-url", "The public URL clients use (e.g. https://mcp.example.com)", None)?,
    };
    let upstream = match &args.upstream {
        Some(u) => u.clone(),
        None => ask.ask("--upstream", "The MCP server to protect", Some("http://127.0.0.1:3001/mcp"))?,
    };
    for p in facts.params.iter().filter(|p| p.required) {
        if !params.contains_key(p.key) {
            let v = ask.ask(&format!("--set {}=…", p.key), &format!("{} (e.g. {})", p.what, p.example), None)?;
            params.insert(p.key.to_owned(), v);
        }
    }
    let mut clients = args.clients.clone();
    let mut client_id = args.client_id.clone();
    match mode {
        Mode::Verify
            if (facts.registration == Registration::None
                || facts.access_tokens == portcullis_config::idp::AccessTokens::JwtWithoutAudience)
                && clients.is_empty() =>
        {
            let list = ask.ask(
                "--clients",
                &format!("The client ids registered at {} for this server, comma-separated", facts.title),
                None,
            )?;
            clients = list.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        }
        Mode::Gateway if client_id.is_none() => {
            client_id = Some(ask.ask(
                "--client-id",
                &format!("The client id portcullis is registered as at {}", facts.title),
                None,
            )?);
        }
        _ => {}
    }
    Ok(Answers {
        facts,
        mode,
        public_url: public_url.trim_end_matches('/').to_owned(),
        upstream,
        path: args.path.clone(),
        params,
        clients,
        client_id,
        audience: args.audience.clone(),
    })
}

/// Verify mode where MCP clients can register at the IdP and get JWTs naming this server; gateway
/// mode everywhere else.
fn recommended_mode(facts: &Facts) -> &'static str {
    use portcullis_config::idp::{AccessTokens, ResourceParameter};
    if facts.registration == Registration::Open
        && facts.access_tokens == AccessTokens::Jwt
        && facts.resource == ResourceParameter::Honoured
    {
        "verify"
    } else {
        "gateway"
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", "))
}

fn render(a: &Answers) -> String {
    let f = a.facts;
    let mode = if a.mode == Mode::Verify { "verify" } else { "gateway" };
    let mut t = format!(
        "# portcullis in front of one MCP server, users at {} ({mode} mode).\n# {}\npublic_url = {}\n\n\
         [[server]]\npath = {}\nupstream = {}\n",
        f.title,
        f.mode,
        quoted(&a.public_url),
        quoted(&a.path),
        quoted(&a.upstream)
    );
    let preset = |t: &mut String| {
        t.push_str(&format!("idp = {}\n", quoted(f.name)));
        for (k, v) in &a.params {
            if k == "tenants" {
                let items: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
                t.push_str(&format!("tenants = {}\n", list(&items)));
            } else {
                t.push_str(&format!("{k} = {}\n", quoted(v)));
            }
        }
    };
    match a.mode {
        Mode::Verify => {
            t.push_str("\n[server.verify]\n");
            preset(&mut t);
            if !a.clients.is_empty() {
                t.push_str(&format!("clients = {}\n", list(&a.clients)));
            }
            if let Some(aud) = &a.audience {
                t.push_str(&format!("audiences = {}\n", list(std::slice::from_ref(aud))));
            }
        }
        Mode::Gateway => {
            t.push_str("gateway = true\n\n[gateway.upstream]\n");
            preset(&mut t);
            t.push_str(&format!(
                "client_id = {}\nclient_secret = \"${{{SECRET_VAR}}}\"\n",
                quoted(a.client_id.as_deref().unwrap_or_default())
            ));
            if let Some(aud) = &a.audience {
                t.push_str(&format!("audience = {}\n", quoted(aud)));
            }
        }
    }
    t
}

/// What to set up at the IdP, in order.
fn steps(a: &Answers) -> Vec<String> {
    let resource = format!("{}{}", a.public_url, a.path);
    let callback = format!("{}/callback", a.public_url);
    let f = a.facts;
    let mut s = Vec::new();
    match a.mode {
        Mode::Gateway => {
            s.push(match f.idp {
                Idp::Entra => format!(
                    "App registrations → New registration: platform Web, redirect URI {callback}; note the \
                     Application (client) ID"
                ),
                Idp::Google => format!(
                    "Google Auth Platform → Clients → Create client: type Web application, authorized redirect \
                     URI {callback}"
                ),
                Idp::Github => format!(
                    "Settings → Developer settings → OAuth Apps (or GitHub Apps) → New: authorization callback URL \
                     {callback}"
                ),
                Idp::Cognito => format!(
                    "User pool → App integration → App clients → Create: confidential client, allowed callback \
                     URL {callback}, OAuth grant Authorization code, scopes openid email profile"
                ),
                Idp::Keycloak => format!(
                    "Realm → Clients → Create client: OpenID Connect, Client authentication on, Standard flow, \
                     valid redirect URI {callback}"
                ),
                Idp::Okta => format!(
                    "Applications → Create App Integration: OIDC, Web Application, sign-in redirect URI {callback}"
                ),
                Idp::Auth0 => format!(
                    "Applications → Create Application: Regular Web Application, allowed callback URL {callback}"
                ),
                Idp::Authentik => format!(
                    "Applications → Create with provider: OAuth2/OpenID, confidential client, redirect URI \
                     {callback} (strict)"
                ),
                _ => format!(
                    "Register a confidential web client with redirect URI {callback} (authorization code, PKCE)"
                ),
            });
            s.push(format!(
                "Create a client secret for it and give it to portcullis in the environment: {SECRET_VAR}=…"
            ));
            s.push(format!(
                "Its token endpoint authentication: {}",
                match f.token_auth {
                    portcullis_config::TokenAuth::ClientSecretBasic => "client_secret_basic (HTTP Basic)",
                    portcullis_config::TokenAuth::ClientSecretPost => "client_secret_post (in the form)",
                }
            ));
            s.push(format!(
                "MCP clients connect to {resource}; they register with portcullis (dynamic registration or client \
                 ID metadata documents), never at {}",
                f.title
            ));
        }
        Mode::Verify => {
            s.push(match f.idp {
                Idp::Auth0 => format!(
                    "APIs → Create API with identifier {resource}; Settings → Advanced: enable Dynamic Client \
                     Registration and the Resource Parameter Compatibility Profile"
                ),
                Idp::Entra => format!(
                    "App registrations → your API → Expose an API: set the Application ID URI (or use {resource}) \
                     and add a scope; list its URI and Application (client) ID as audiences"
                ),
                Idp::Okta => "Security → API → Authorization Servers: use default (audience api://default) or \
                              create one whose audience is this server's URL"
                    .to_owned(),
                Idp::Keycloak => format!(
                    "Client scopes → create one with an Audience mapper adding {resource} (or your client id) to \
                     access tokens, and assign it to the clients"
                ),
                Idp::Cognito => "App integration → App clients: the clients listed in clients are what binds \
                                 Cognito's access tokens (they carry no aud); allow the scopes this server needs"
                    .to_owned(),
                Idp::Authentik => "Providers → your OAuth2 provider: choose a signing key (without one, tokens are \
                                   signed HS256 with the client secret); its client id is the tokens' aud"
                    .to_owned(),
                Idp::Clerk => "OAuth applications → your application: generate access tokens as JWTs; its client id \
                               is what binds them (they carry no aud)"
                    .to_owned(),
                Idp::Stytch => "Connected Apps → your app: its client id is what binds the tokens (their aud is the \
                                project, not this server)"
                    .to_owned(),
                Idp::Keycard => format!("Zone → Resources: add {resource}"),
                Idp::Workos => format!("Connect → Configuration → MCP Auth: add {resource} as a resource indicator"),
                _ => format!("Make the IdP issue access tokens whose audience is {resource} (RFC 8707 resource)"),
            });
            let bound_by_client = f.access_tokens == portcullis_config::idp::AccessTokens::JwtWithoutAudience;
            if f.registration == Registration::None || bound_by_client {
                s.push(format!(
                    "Register each client yourself ({}) and list its id in clients",
                    if bound_by_client {
                        "only listed clients' tokens can be tied to this server"
                    } else {
                        "MCP clients cannot register there by themselves"
                    }
                ));
            } else if f.registration == Registration::WhenEnabled {
                s.push("Switch dynamic client registration on for the tenant".to_owned());
            }
        }
    }
    s.push(format!("Refresh tokens: {}", f.refresh));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InitArgs {
        use clap::Parser;
        let mut argv = vec!["portcullis", "init", "--no-input", "--output", "-"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Init(a) => a,
            _ => unreachable!(),
        }
    }

    fn made(extra: &[&str]) -> anyhow::Result<(String, Vec<String>)> {
        let a = args(extra);
        let mut ask = Asker { interactive: false, lines: std::io::empty() };
        let answers = answers(&a, &mut ask)?;
        Ok((render(&answers), steps(&answers)))
    }

    fn loads(text: &str) -> Config {
        let env = MapEnv::from_pairs([(SECRET_VAR, "x")]);
        Config::from_toml(text, &env).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_preset_makes_a_valid_configuration_in_its_recommended_mode() {
        for f in Idp::all() {
            let mut extra = vec![
                "--idp",
                f.name,
                "--public-url",
                "https://mcp.example.com",
                "--upstream",
                "http://127.0.0.1:3001/mcp",
                "--client-id",
                "portcullis",
                "--clients",
                "app-1",
            ];
            let sets: Vec<String> =
                f.params.iter().filter(|p| p.required).map(|p| format!("{}={}", p.key, p.example)).collect();
            for s in &sets {
                extra.push("--set");
                extra.push(s);
            }
            let (text, steps) = made(&extra).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            let config = loads(&text);
            let gateway = config.gateway.as_ref().and_then(|g| g.upstream.as_ref()).is_some();
            assert_eq!(gateway, recommended_mode(f) == "gateway", "{}", f.name);
            assert!(!steps.is_empty());
        }
    }

    #[test]
    fn gateway_mode_names_the_callback_and_keeps_the_secret_out_of_the_file() {
        let (text, steps) = made(&[
            "--idp",
            "entra",
            "--mode",
            "gateway",
            "--public-url",
            "https://mcp.example.com/",
            "--upstream",
            "http://127.0.0.1:3001/mcp",
            "--set",
            "tenant=72f988bf-86f1-41af-91ab-2d7cd011db47",
            "--client-id",
            "11111111-2222-3333-4444-555555555555",
        ])
        .unwrap();
        assert!(text.contains("client_secret = \"${PORTCULLIS_IDP_CLIENT_SECRET}\""), "{text}");
        assert!(steps[0].contains("redirect URI https://mcp.example.com/callback"), "{steps:?}");
        let config = loads(&text);
        assert_eq!(config.gateway.unwrap().upstream.unwrap().preset, Some(Idp::Entra));
    }

    #[test]
    fn verify_mode_asks_for_registered_clients_where_clients_cannot_register() {
        let err = made(&[
            "--idp",
            "okta",
            "--mode",
            "verify",
            "--public-url",
            "https://m.example.com",
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--set",
            "domain=example.okta.com",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--clients is required"), "{err}");
        let err = made(&["--idp", "google", "--mode", "verify"]).unwrap_err().to_string();
        assert!(err.contains("opaque access tokens"), "{err}");
        let err = made(&["--idp", "okta", "--set", "realm=x"]).unwrap_err().to_string();
        assert!(err.contains("not a parameter of the okta preset"), "{err}");
        let err = made(&[
            "--idp",
            "auth0",
            "--mode",
            "verify",
            "--public-url",
            "https://m.example.com",
            "--upstream",
            "http://127.0.0.1:1/mcp",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--set domain=… is required"), "{err}");
    }

    #[test]
    fn terminal_answers_fill_what_flags_left_out() {
        let a = args(&[]);
        let input = "cognito\n\nhttps://mcp.example.com\n\neu-west-1\neu-west-1_AbCdEf123\nportcullis-client\n";
        let mut ask = Asker { interactive: true, lines: std::io::Cursor::new(input) };
        let answers = answers(&a, &mut ask).unwrap();
        assert_eq!(answers.mode, Mode::Gateway, "the recommended mode is the default");
        assert_eq!(answers.upstream, "http://127.0.0.1:3001/mcp");
        let config = loads(&render(&answers));
        let up = config.gateway.unwrap().upstream.unwrap();
        assert_eq!(up.client_id, "portcullis-client");
        assert!(matches!(&up.kind, portcullis_config::UpstreamKind::Oidc { issuer, .. }
            if issuer.as_str() == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"));
    }
}
