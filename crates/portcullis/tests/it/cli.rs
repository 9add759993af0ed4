//! The README's command table and the binary's `--help` say the same: every command in one is in the
//! other, and every flag the table shows is one the command takes.

use std::collections::BTreeSet;

use crate::support::bin;

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(bin()).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:`, without `help`.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The README's command rows: the words after `portcullis`, as written in the table's first column.
fn readme_rows() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme.split("## Commands").nth(1).expect("a Commands section");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `portcullis "))
        .map(|l| l.split('`').next().unwrap().split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_readme_command_table_matches_the_help() {
    let rows = readme_rows();
    let mut documented = BTreeSet::new();
    for row in &rows {
        let command = &row[0];
        // `users` and `keys` have subcommands of their own.
        let path: Vec<&str> = if ["users", "keys"].contains(&command.as_str()) {
            vec![command.as_str(), row[1].as_str()]
        } else {
            vec![command.as_str()]
        };
        documented.insert(path.join(" "));
        let text = help(&path);
        for flag in row.iter().map(|w| w.trim_matches(|c| c == '[' || c == ']')).filter(|w| w.starts_with("--")) {
            assert!(
                text.contains(flag),
                "README shows `portcullis {}` with {flag}, which --help does not list",
                path.join(" ")
            );
        }
    }
    let mut offered = BTreeSet::new();
    for command in subcommands(&help(&[])) {
        let nested = subcommands(&help(&[command.as_str()]));
        if nested.is_empty() {
            offered.insert(command);
        } else {
            offered.extend(nested.into_iter().map(|n| format!("{command} {n}")));
        }
    }
    assert_eq!(documented, offered, "the README's command table and --help list different commands");
}

/// Runs an admin command; its exit status and everything it printed.
async fn run(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args).envs(env.iter().copied());
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.kill_on_drop(true).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(crate::support::STEP, child.wait_with_output()).await.unwrap().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn account_commands_need_only_the_store_and_speak_plainly() {
    let dir = crate::support::TempDir::new();
    // An upstream secret in a variable only `serve` needs: administration works without it.
    let config = crate::gateway::config("http://127.0.0.1:9/mcp")
        .replace("client_secret = \"a+b %c:d\"", "client_secret = \"${UNSET_UPSTREAM_SECRET}\"");
    let path = crate::support::write_config(&config, 1, &dir);
    let path = path.display().to_string();
    let (ok, out) = run(&["users", "list", "--config", &path], "", &[]).await;
    assert!(ok && out.contains("no local accounts yet"), "{out}");
    // The first command made the store, and said where.
    let file = dir.path.join("state/portcullis.db");
    assert!(out.contains(&format!("no store at {}; a new one is made there", file.display())), "{out}");
    let (ok, out) = run(&["users", "add", "alice", "--config", &path], "a long password\n", &[]).await;
    assert!(ok && !out.contains("no store at"), "{out}");
    let (ok, out) = run(&["users", "add", "alice", "--config", &path], "a long password\n", &[]).await;
    assert!(!ok && out.contains("an account named alice already exists"), "{out}");
    assert!(!out.contains("store:"), "{out}");
    let (ok, out) = run(&["users", "passwd", "bob", "--config", &path], "a long password\n", &[]).await;
    assert!(!ok && out.contains("there is no account named bob"), "{out}");
    let (ok, out) = run(&["users", "add", "carol", "--config", &path], "short\n", &[]).await;
    assert!(!ok && out.contains("at least 8 characters"), "{out}");
    // `serve` itself still refuses the unset variable, naming it.
    let (ok, out) = run(&["check-config", &path], "", &[]).await;
    assert!(!ok && out.contains("UNSET_UPSTREAM_SECRET"), "{out}");
}

#[tokio::test]
async fn no_local_accounts_where_users_sign_in_at_an_upstream_idp() {
    let dir = crate::support::TempDir::new();
    let config = format!(
        "{}[gateway.upstream]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"gate\"\n",
        crate::gateway::config("http://127.0.0.1:9/mcp")
    );
    let path = crate::support::write_config(&config, 1, &dir).display().to_string();
    for command in ["add", "passwd"] {
        let (ok, out) = run(&["users", command, "alice", "--config", &path], "a long password\n", &[]).await;
        assert!(!ok && out.contains("sign in at the IdP in [gateway.upstream]"), "{out}");
    }
    assert!(!dir.path.join("state/portcullis.db").exists(), "a refused command made a store");
}

#[tokio::test]
async fn serve_dev_shows_the_way_in_and_the_sample_server_knows_who_signed_in() {
    use crate::gateway::{Via, drive, pkce, token, whoami};
    let dir = crate::support::TempDir::new();
    let port = crate::support::reserve_port();
    let gate = crate::support::Gate::start_dev(&dir, port, &[("PORTCULLIS_DEV_PASSWORD", "a dev password")]).await;
    assert!(gate.banner.contains(&format!("Connect an MCP client to  http://127.0.0.1:{port}/mcp")), "{}", gate.banner);
    assert!(gate.banner.contains("Sign in as                dev"), "{}", gate.banner);
    assert!(gate.banner.contains("--login") && gate.banner.contains("Ctrl-C"), "{}", gate.banner);
    // The configuration snippets for VS Code and Cursor are JSON naming the MCP URL.
    let mcp = format!("http://127.0.0.1:{port}/mcp");
    let snippet = |label: &str| -> serde_json::Value {
        let line =
            gate.banner.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("{label}: {}", gate.banner));
        serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap()
    };
    assert_eq!(snippet("VS Code")["servers"]["portcullis"], serde_json::json!({"type": "http", "url": mcp}));
    assert_eq!(snippet("Cursor")["mcpServers"]["portcullis"]["url"], mcp);
    assert!(gate.banner.contains(&format!("claude mcp add --transport http portcullis {mcp}")), "{}", gate.banner);

    // A second one on the same address says so before announcing anything.
    let (ok, out) = run(&["serve", "--dev", "--dev-listen", &format!("127.0.0.1:{port}")], "", &[]).await;
    assert!(!ok && out.contains("cannot listen") && out.contains("--dev-listen"), "{out}");
    assert!(!out.contains("Sign in as"), "{out}");

    // Signed in as dev, the sample server's whoami names the account.
    let redirect = "http://127.0.0.1:40003/cb";
    let reg: serde_json::Value = crate::support::client()
        .post(gate.url("/register"))
        .json(&serde_json::json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let params =
        [("client_id", client_id), ("redirect_uri", redirect), ("code_challenge", &challenge), ("scope", "mcp:tools")];
    let code = drive(&gate, &params, Via::Account("dev", "a dev password")).await.query["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = token(&gate, None, &form).await;
    assert_eq!(status, 200, "{body}");
    let seen = whoami(&gate, body["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(seen["x-user-sub"], "local:dev");
    assert_eq!(seen["x-user-client"], client_id);
}

#[tokio::test]
async fn on_a_terminal_the_password_is_asked_twice_and_not_shown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = crate::support::TempDir::new();
    let path = crate::support::write_config(&crate::gateway::config("http://127.0.0.1:9/mcp"), 1, &dir);
    // `script` gives the command a terminal of its own; what is typed is echoed unless the program turns
    // echo off.
    let command = format!("{} users add dave --config {}", bin(), path.display());
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1), from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for (prompt, answer) in [("New password for dave:", "a hidden password\n"), ("Once more:", "a hidden password\n")] {
        while !seen.contains(prompt) {
            let mut chunk = [0u8; 256];
            let n = tokio::time::timeout(crate::support::STEP, stdout.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "ended before asking {prompt:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        // The prompt is written just before echo is turned off; a person types after reading it, and
        // so does this test (typed sooner, the terminal would echo it while echo is still on).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stdin.write_all(answer.as_bytes()).await.unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    tokio::time::timeout(crate::support::STEP, stdout.read_to_string(&mut rest)).await.unwrap().unwrap();
    seen.push_str(&rest);
    assert!(seen.contains("added dave"), "{seen}");
    assert!(!seen.contains("a hidden password"), "the password was shown: {seen}");
}
