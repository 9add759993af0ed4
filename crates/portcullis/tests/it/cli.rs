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
