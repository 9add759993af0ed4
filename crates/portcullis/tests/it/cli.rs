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
    let (ok, out) = run(&["users", "add", "alice", "--config", &path], "a long password\n", &[]).await;
    assert!(ok, "{out}");
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
