use serde_json::json;

use super::*;

fn rule(name: &str, f: impl FnOnce(&mut RuleSpec)) -> Rule {
    let mut spec = RuleSpec { name: name.into(), ..RuleSpec::default() };
    f(&mut spec);
    Rule::compile(spec).unwrap()
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::from_space_separated(s)
}

fn decide(
    policy: &Policy,
    claims: &Map<String, Value>,
    scopes: &ScopeSet,
    method: &str,
    target: Option<&str>,
) -> String {
    decide_as(policy, claims, false, scopes, method, target)
}

/// [`decide`] for a caller the verifier took for a machine or not.
fn decide_as(
    policy: &Policy,
    claims: &Map<String, Value>,
    machine: bool,
    scopes: &ScopeSet,
    method: &str,
    target: Option<&str>,
) -> String {
    let caller = Caller {
        subject: claims.get("sub").and_then(Value::as_str),
        client_id: claims.get("client_id").and_then(Value::as_str),
        scopes,
        claims,
        machine,
    };
    match policy.evaluate(caller).decide(&Action::of(method, target)) {
        Verdict::Allow => "allow".into(),
        Verdict::Deny { rule, error: false } => format!("deny {rule}"),
        Verdict::Deny { rule, error: true } => format!("error {rule}"),
        Verdict::NeedsScopes { rule, needed } => format!("scopes {rule} {needed}"),
    }
}

#[test]
fn group_only_tools_and_client_bans() {
    let policy = Policy::new(
        vec![
            rule("finance-payments", |r| {
                r.tools = vec!["payments_*".into()];
                r.allow_if = Some(r#""finance" in groups"#.into());
            }),
            rule("no-delete-for-ci", |r| {
                r.tools = vec!["delete_*".into()];
                r.deny_if = Some(r#"client_id == "ci-bot""#.into());
            }),
            rule("contractors-read-only", |r| {
                r.tools = vec!["*".into()];
                r.deny_if = Some(r#""contractor" in roles && !tool.startsWith("get_")"#.into());
            }),
        ],
        ClaimNames::default(),
    );
    let s = scopes("mcp:tools");
    let alice = claims(json!({"sub": "alice", "client_id": "app", "groups": ["finance", "staff"]}));
    let bob = claims(json!({"sub": "bob", "client_id": "ci-bot", "groups": "staff"}));
    let carol = claims(json!({"sub": "carol", "client_id": "app", "roles": ["contractor"], "groups": ["finance"]}));

    assert_eq!(decide(&policy, &alice, &s, "tools/call", Some("payments_send")), "allow");
    assert_eq!(decide(&policy, &bob, &s, "tools/call", Some("payments_send")), "deny finance-payments");
    assert_eq!(decide(&policy, &alice, &s, "tools/call", Some("delete_user")), "allow");
    assert_eq!(decide(&policy, &bob, &s, "tools/call", Some("delete_user")), "deny no-delete-for-ci");
    assert_eq!(decide(&policy, &carol, &s, "tools/call", Some("get_balance")), "allow");
    assert_eq!(decide(&policy, &carol, &s, "tools/call", Some("payments_send")), "deny contractors-read-only");
    // Rules with targets do not govern other methods.
    assert_eq!(decide(&policy, &bob, &s, "tools/list", None), "allow");
    assert_eq!(decide(&policy, &bob, &s, "resources/read", Some("payments_x")), "allow");
}

#[test]
fn scope_rules_name_every_scope_needed() {
    let policy = Policy::new(
        vec![
            rule("admin", |r| {
                r.tools = vec!["admin_*".into()];
                r.scopes = scopes("mcp:admin");
            }),
            rule("audit", |r| {
                r.tools = vec!["admin_audit*".into()];
                r.scopes = scopes("mcp:audit");
            }),
        ],
        ClaimNames::default(),
    );
    let c = claims(json!({"sub": "a"}));
    assert_eq!(
        decide(&policy, &c, &scopes("mcp:tools"), "tools/call", Some("admin_audit_log")),
        "scopes admin mcp:admin mcp:audit"
    );
    assert_eq!(
        decide(&policy, &c, &scopes("mcp:admin"), "tools/call", Some("admin_audit_log")),
        "scopes audit mcp:admin mcp:audit"
    );
    assert_eq!(decide(&policy, &c, &scopes("mcp:admin mcp:audit"), "tools/call", Some("admin_audit_log")), "allow");
    assert_eq!(decide(&policy, &c, &scopes(""), "tools/call", Some("echo")), "allow");
}

#[test]
fn rules_without_targets_govern_every_request() {
    let policy = Policy::new(
        vec![rule("employees", |r| r.allow_if = Some(r#"email_domain == "example.com""#.into()))],
        ClaimNames::default(),
    );
    let s = scopes("");
    let staff = claims(json!({"sub": "a", "email": "A@Example.COM", "email_verified": true}));
    let other = claims(json!({"sub": "b", "email": "b@elsewhere.org", "email_verified": true}));
    assert_eq!(decide(&policy, &staff, &s, "initialize", None), "allow");
    assert_eq!(decide(&policy, &other, &s, "initialize", None), "deny employees");
    assert_eq!(decide(&policy, &other, &s, "", None), "deny employees");
}

#[test]
fn an_address_the_idp_does_not_say_it_verified_names_no_domain() {
    let allow = |names: ClaimNames| {
        Policy::new(vec![rule("employees", |r| r.allow_if = Some(r#"email_domain == "example.com""#.into()))], names)
    };
    let s = scopes("");
    let default = allow(ClaimNames::default());
    // Said unverified, or not said at all (a guest's address in a multi-tenant Entra ID app).
    for flag in [json!(false), json!("false"), json!(null), json!(1), json!("yes")] {
        let typed = claims(json!({"sub": "c", "email": "c@example.com", "email_verified": flag}));
        assert_eq!(decide(&default, &typed, &s, "initialize", None), "deny employees", "{flag}");
    }
    let unsaid = claims(json!({"sub": "c", "email": "c@example.com"}));
    assert_eq!(decide(&default, &unsaid, &s, "initialize", None), "deny employees");
    for flag in [json!(true), json!("true")] {
        let verified = claims(json!({"sub": "d", "email": "d@example.com", "email_verified": flag}));
        assert_eq!(decide(&default, &verified, &s, "initialize", None), "allow");
    }
    // Another claim says it (Entra ID's `xms_edov`), and `email_verified` then counts for nothing.
    let entra = allow(ClaimNames { email_verified: Some("xms_edov".into()), ..ClaimNames::default() });
    let owner = claims(json!({"sub": "e", "email": "e@example.com", "xms_edov": true}));
    assert_eq!(decide(&entra, &owner, &s, "initialize", None), "allow");
    let guest = claims(json!({"sub": "f", "email": "f@example.com", "email_verified": true, "xms_edov": false}));
    assert_eq!(decide(&entra, &guest, &s, "initialize", None), "deny employees");
    // An IdP that puts only verified addresses in `email`, configured as such.
    let trusting = allow(ClaimNames { email_verified: None, ..ClaimNames::default() });
    assert_eq!(decide(&trusting, &unsaid, &s, "initialize", None), "allow");
    // `email` itself is the claim whatever the flag says.
    let email_is = Policy::new(
        vec![rule("alice", |r| r.allow_if = Some(r#"email == "c@example.com""#.into()))],
        ClaimNames::default(),
    );
    assert_eq!(decide(&email_is, &unsaid, &s, "initialize", None), "allow");
}

#[test]
fn conditions_that_cannot_be_evaluated_refuse() {
    let policy = Policy::new(
        vec![
            rule("dept", |r| {
                r.tools = vec!["hr_*".into()];
                r.allow_if = Some(r#"claims.department == "hr""#.into());
            }),
            rule("not-bool", |r| {
                r.prompts = vec!["*".into()];
                r.allow_if = Some("subject".into());
            }),
        ],
        ClaimNames::default(),
    );
    let s = scopes("");
    let hr = claims(json!({"sub": "a", "department": "hr"}));
    let none = claims(json!({"sub": "b"}));
    assert_eq!(decide(&policy, &hr, &s, "tools/call", Some("hr_read")), "allow");
    assert_eq!(decide(&policy, &none, &s, "tools/call", Some("hr_read")), "error dept");
    assert_eq!(decide(&policy, &hr, &s, "prompts/get", Some("p")), "error not-bool");
}

#[test]
fn nested_claims_by_json_pointer() {
    let names = ClaimNames {
        roles: "/realm_access/roles".into(),
        groups: "https://example.com/groups".into(),
        ..ClaimNames::default()
    };
    let policy =
        Policy::new(vec![rule("r", |r| r.allow_if = Some(r#""admin" in roles && "ops" in groups"#.into()))], names);
    let yes = claims(json!({"realm_access": {"roles": ["admin"]}, "https://example.com/groups": ["ops"]}));
    let no = claims(json!({"roles": ["admin"], "groups": ["ops"]}));
    assert_eq!(decide(&policy, &yes, &scopes(""), "ping", None), "allow");
    assert_eq!(decide(&policy, &no, &scopes(""), "ping", None), "deny r");
}

#[test]
fn compile_errors_name_the_field() {
    let err = |f: fn(&mut RuleSpec)| {
        let mut spec = RuleSpec { name: "x".into(), ..RuleSpec::default() };
        f(&mut spec);
        Rule::compile(spec).unwrap_err()
    };
    let e = err(|r| r.allow_if = Some("subject ==".into()));
    assert_eq!(e[0].field, "allow_if");
    assert!(e[0].message.contains("does not parse"), "{e:?}");
    let e = err(|r| r.deny_if = Some(r#""x" in group"#.into()));
    assert_eq!(e[0].field, "deny_if");
    assert!(e[0].message.contains("\"group\""), "{e:?}");
    let e = err(|r| {
        r.tools = vec!["a[".into()];
        r.scopes = scopes("s");
    });
    assert_eq!(e[0].field, "tools");
    let e = err(|_| {});
    assert_eq!(e[0].field, "allow_if");
    // Variables bound by macros are not taken for unknown names.
    let mut spec = RuleSpec { name: "m".into(), ..RuleSpec::default() };
    spec.allow_if = Some(r#"groups.exists(g, g.startsWith("fin"))"#.into());
    Rule::compile(spec).unwrap();
}

#[test]
fn simple_and_full_globs_match_alike() {
    let cases = [
        ("*", "anything", true),
        ("echo", "echo", true),
        ("echo", "echo2", false),
        ("payments_*", "payments_send", true),
        ("payments_*", "payment_send", false),
        ("*_admin", "db_admin", true),
        ("*_admin", "db_admins", false),
        ("get_?", "get_x", true),
        ("get_?", "get_xy", false),
        ("{read,list}_*", "list_files", true),
        ("{read,list}_*", "write_files", false),
        ("file:///hr/*", "file:///hr/pay.csv", true),
    ];
    for (pattern, name, expected) in cases {
        let policy = Policy::new(
            vec![rule("r", |r| {
                r.tools = vec![pattern.into()];
                r.deny_if = Some("true".into());
            })],
            ClaimNames::default(),
        );
        let c = claims(json!({"sub": "a"}));
        let denied = decide(&policy, &c, &scopes(""), "tools/call", Some(name)) != "allow";
        assert_eq!(denied, expected, "{pattern} ~ {name}");
        assert_eq!(
            globset::Glob::new(pattern).unwrap().compile_matcher().is_match(name),
            expected,
            "{pattern} ~ {name}"
        );
    }
}

#[test]
fn conditions_that_need_not_read_the_request_are_decided_once_for_many() {
    let policy = Policy::new(
        vec![rule("contractors", |r| {
            r.tools = vec!["*".into()];
            r.deny_if = Some(r#""contractor" in roles && !tool.startsWith("get_")"#.into());
        })],
        ClaimNames::default(),
    );
    let s = scopes("");
    for (roles, expected) in
        [(json!(["employee"]), ["allow", "allow"]), (json!(["contractor"]), ["allow", "deny contractors"])]
    {
        let c = claims(json!({"sub": "a", "roles": roles}));
        let caller = Caller { subject: Some("a"), client_id: None, scopes: &s, claims: &c, machine: false };
        let mut many = policy.evaluate(caller);
        many.expect_many();
        let verdicts: Vec<String> = ["get_x", "set_x"]
            .iter()
            .map(|t| match many.decide(&Action::of("tools/call", Some(t))) {
                Verdict::Allow => "allow".to_owned(),
                Verdict::Deny { rule, .. } => format!("deny {rule}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(verdicts, expected, "{roles}");
        // One at a time gives the same.
        for (t, e) in ["get_x", "set_x"].iter().zip(expected) {
            assert_eq!(decide(&policy, &c, &s, "tools/call", Some(t)), e);
        }
    }
}

#[test]
fn arguments_are_read_strictly_and_never_hide_a_listed_entry() {
    let policy = Policy::new(
        vec![
            rule("big-transfers", |r| {
                r.tools = vec!["transfer".into()];
                r.deny_if = Some("arguments.amount > 1000".into());
            }),
            rule("own-account", |r| {
                r.tools = vec!["close_account".into()];
                r.allow_if = Some("arguments.account == subject".into());
            }),
        ],
        ClaimNames::default(),
    );
    let s = scopes("");
    let c = claims(json!({"sub": "acct-1"}));
    let caller = Caller { subject: Some("acct-1"), client_id: None, scopes: &s, claims: &c, machine: false };
    let verdict = |tool: &str, args: Option<&str>| match policy
        .evaluate(caller)
        .decide(&Action::of("tools/call", Some(tool)).with_arguments(args))
    {
        Verdict::Allow => "allow".to_owned(),
        Verdict::Deny { rule, error } => format!("{} {rule}", if error { "error" } else { "deny" }),
        other => format!("{other:?}"),
    };
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5}"#)), "allow");
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5000}"#)), "deny big-transfers");
    // A member twice: the upstream may read the other one, so the rule cannot be applied: refused.
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5, "amount": 5000}"#)), "error big-transfers");
    assert_eq!(verdict("transfer", Some(r#"{"x": {"a": 1, "a": 2}, "amount": 5}"#)), "error big-transfers");
    // Two members one name apart only by case: Go's encoding/json binds the last to `amount`.
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5, "Amount": 5000}"#)), "error big-transfers");
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5, "x": {"ſ": 1, "S": 2}}"#)), "error big-transfers");
    assert_eq!(verdict("transfer", Some(r#"{"amount": 5, "Note": "a", "notes": "b"}"#)), "allow");
    // No arguments: `arguments.amount` is no such key, an error: refused.
    assert_eq!(verdict("transfer", None), "error big-transfers");
    assert_eq!(verdict("close_account", Some(r#"{"account": "acct-1"}"#)), "allow");
    assert_eq!(verdict("close_account", Some(r#"{"account": "acct-2"}"#)), "deny own-account");
    // Listed entries have no arguments: those rules cannot hide them.
    let mut many = policy.evaluate(caller);
    many.expect_many();
    assert_eq!(many.decide(&Action::of("tools/call", Some("transfer"))), Verdict::Allow);
    assert_eq!(many.decide(&Action::of("tools/call", Some("close_account"))), Verdict::Allow);
}

#[test]
fn machine_callers_are_told_apart_from_users() {
    let policy = Policy::new(
        vec![rule("people-only", |r| {
            r.tools = vec!["approve_*".into()];
            r.deny_if = Some("machine".into());
        })],
        ClaimNames::default(),
    );
    let s = scopes("mcp:tools");
    let c = claims(json!({"sub": "ci-bot", "client_id": "ci-bot"}));
    assert_eq!(decide_as(&policy, &c, true, &s, "tools/call", Some("approve_invoice")), "deny people-only");
    assert_eq!(decide_as(&policy, &c, false, &s, "tools/call", Some("approve_invoice")), "allow");
    assert_eq!(decide_as(&policy, &c, true, &s, "tools/call", Some("list_invoices")), "allow");
}

#[test]
fn a_resource_rule_governs_the_uri_as_a_url_parser_reads_it() {
    let policy = Policy::new(
        vec![rule("secrets", |r| {
            r.resources = vec!["file:///secret/*".into()];
            r.allow_if = Some(r#""admins" in groups"#.into());
        })],
        ClaimNames::default(),
    );
    let s = scopes("mcp:tools");
    let bob = claims(json!({"sub": "bob", "groups": ["staff"]}));
    // Each reads as `file:///secret/x` to a WHATWG URL parser (the TypeScript SDK's `new URL`).
    for uri in [
        "file:///secret/x",
        "FILE:///secret/x",
        "file:///public/../secret/x",
        "file:///public/%2e%2e/secret/x",
        "file://localhost/secret/x",
        "file:///sec\tret/x",
    ] {
        assert_eq!(decide(&policy, &bob, &s, "resources/read", Some(uri)), "deny secrets", "{uri:?}");
    }
    assert_eq!(decide(&policy, &bob, &s, "resources/read", Some("file:///public/x")), "allow");
    // Subscribing to it is governed as reading it.
    assert_eq!(decide(&policy, &bob, &s, "resources/subscribe", Some("FILE:///secret/x")), "deny secrets");
    assert_eq!(decide(&policy, &bob, &s, "resources/read", Some("not a url")), "allow");
}
