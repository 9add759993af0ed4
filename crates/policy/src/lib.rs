//! Who may call which tool: per-server rules over the verified token's claims and the MCP request,
//! written in CEL (the Common Expression Language) and compiled once, at start-up.
//!
//! A rule names what it governs (tool, resource and prompt globs; a rule naming none governs every
//! request) and how: `deny_if` (denied when true), `allow_if` (denied unless true) and `scopes` (the
//! token must carry them). Every rule that governs a request must let it through; the first rule, in
//! order, whose condition refuses decides. A condition that fails to evaluate (a claim it reads is
//! absent, a value of the wrong type) refuses: the gate fails closed.
//!
//! Conditions see the caller (`subject`, `client_id`, `scopes`, `groups`, `roles`, `email`,
//! `email_domain`, `tenant`, `issuer`, and every claim under `claims`) and the request (`method`, and
//! `tool`, `resource` or `prompt`: the empty string when the request names none). Any other name is
//! refused when the rule is compiled, so a misspelt claim is found by `check-config`, not by a caller.

use std::sync::{Arc, OnceLock};

use cel::common::types::CelString;
use cel::common::value::{CowVal, Val};
use globset::{Glob, GlobSet, GlobSetBuilder};
use portcullis_types::ScopeSet;
use serde_json::{Map, Value};

/// The names a condition may use about the caller.
pub const CALLER_NAMES: [&str; 11] = [
    "subject",
    "client_id",
    "scopes",
    "groups",
    "roles",
    "email",
    "email_domain",
    "tenant",
    "issuer",
    "machine",
    "claims",
];
/// The names a condition may use about the request.
pub const REQUEST_NAMES: [&str; 5] = ["method", "tool", "resource", "prompt", "arguments"];

/// A rule as configured, before compiling.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub name: String,
    /// Globs over tool names (`tools/call`), resource URIs (`resources/read`), prompt names
    /// (`prompts/get`). All empty: the rule governs every request.
    pub tools: Vec<String>,
    pub resources: Vec<String>,
    pub prompts: Vec<String>,
    pub allow_if: Option<String>,
    pub deny_if: Option<String>,
    pub scopes: ScopeSet,
}

/// Where the caller variables that IdPs name differently come from: a claim name, or a JSON pointer
/// (RFC 6901, starting with `/`) into the claims for nested ones (Keycloak's `/realm_access/roles`).
#[derive(Debug, Clone)]
pub struct ClaimNames {
    pub groups: String,
    pub roles: String,
    pub email: String,
    pub tenant: String,
    /// The claim that says the IdP verified the address in `email` (`true`); `email_domain` names a
    /// domain only then. `None`: the IdP puts only addresses it verified in `email`, and says so by no
    /// claim.
    pub email_verified: Option<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            groups: "groups".into(),
            roles: "roles".into(),
            email: "email".into(),
            tenant: "tid".into(),
            email_verified: Some("email_verified".into()),
        }
    }
}

/// A compiled CEL condition.
struct Condition {
    source: String,
    program: cel::Program,
    /// Whether it reads the request (else its value is the same for every request of one caller, and
    /// is computed once per evaluation).
    per_request: bool,
    /// Whether it reads `arguments`, which a list entry has none of.
    reads_arguments: bool,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").field("source", &self.source).finish_non_exhaustive()
    }
}

/// What a rule governs.
#[derive(Debug, Default)]
struct Targets {
    tools: Option<Names>,
    resources: Option<Names>,
    prompts: Option<Names>,
}

/// Globs over names. The common shapes (`*`, `name`, `prefix_*`, `*suffix`) are matched with string
/// operations; the rest by a compiled glob set (a list of 500 tools is judged name by name, so this is
/// on the hot path of a filtered list).
#[derive(Debug)]
struct Names {
    simple: Vec<Simple>,
    globs: Option<GlobSet>,
}

#[derive(Debug)]
enum Simple {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Names {
    fn is_match(&self, name: &str) -> bool {
        self.simple.iter().any(|s| match s {
            Simple::Any => true,
            Simple::Exact(e) => name == e,
            Simple::Prefix(p) => name.starts_with(p.as_str()),
            Simple::Suffix(x) => name.ends_with(x.as_str()),
        }) || self.globs.as_ref().is_some_and(|g| g.is_match(name))
    }
}

/// The string-operation form of `pattern`, when it has one.
fn simple(pattern: &str) -> Option<Simple> {
    let special = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\']);
    if pattern == "*" {
        return Some(Simple::Any);
    }
    if let Some(prefix) = pattern.strip_suffix('*')
        && !special(prefix)
    {
        return Some(Simple::Prefix(prefix.to_owned()));
    }
    if let Some(suffix) = pattern.strip_prefix('*')
        && !special(suffix)
    {
        return Some(Simple::Suffix(suffix.to_owned()));
    }
    (!special(pattern)).then(|| Simple::Exact(pattern.to_owned()))
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    name: String,
    targets: Targets,
    deny_if: Option<Condition>,
    allow_if: Option<Condition>,
    scopes: ScopeSet,
}

/// Why a rule does not compile: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub message: String,
}

impl Rule {
    /// Compiles `spec`: globs, and conditions that parse and use only known names.
    pub fn compile(spec: RuleSpec) -> Result<Self, Vec<RuleError>> {
        let mut errors = Vec::new();
        if spec.name.trim().is_empty() {
            errors.push(RuleError {
                field: "name",
                message: "a rule needs a name (refusals and the audit log cite it)".into(),
            });
        }
        if spec.allow_if.is_none() && spec.deny_if.is_none() && spec.scopes.is_empty() {
            errors.push(RuleError {
                field: "allow_if",
                message: "a rule needs allow_if, deny_if or scopes: this one would let everything through".into(),
            });
        }
        let mut globs = |field: &'static str, patterns: &[String]| -> Option<Names> {
            if patterns.is_empty() {
                return None;
            }
            let mut names = Names { simple: Vec::new(), globs: None };
            let mut set = GlobSetBuilder::new();
            let mut complex = 0;
            for p in patterns {
                match Glob::new(p) {
                    Ok(g) => match simple(p) {
                        Some(s) => names.simple.push(s),
                        None => {
                            set.add(g);
                            complex += 1;
                        }
                    },
                    Err(e) => errors.push(RuleError { field, message: format!("{p:?} is not a valid glob: {e}") }),
                }
            }
            if complex > 0 {
                names.globs = set.build().map_err(|e| errors.push(RuleError { field, message: e.to_string() })).ok();
            }
            Some(names)
        };
        let targets = Targets {
            tools: globs("tools", &spec.tools),
            resources: globs("resources", &spec.resources),
            prompts: globs("prompts", &spec.prompts),
        };
        let mut condition = |field: &'static str, source: Option<String>| {
            let source = source?;
            compile_condition(&source).map_err(|message| errors.push(RuleError { field, message })).ok()
        };
        let deny_if = condition("deny_if", spec.deny_if);
        let allow_if = condition("allow_if", spec.allow_if);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self { name: spec.name, targets, deny_if, allow_if, scopes: spec.scopes })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule governs `action`.
    fn governs(&self, action: &Action<'_>) -> bool {
        let t = &self.targets;
        if t.tools.is_none() && t.resources.is_none() && t.prompts.is_none() {
            return true;
        }
        let (set, name) = match action.target {
            Target::Tool(n) => (&t.tools, n),
            Target::Resource(uri) => {
                // As written (a server that takes the text as it is) and as a URL parser reads it (the
                // TypeScript SDK looks resources up by `new URL(uri)`): `FILE:///a/../secret` is
                // `file:///secret` there, so a rule over either spelling governs.
                let Some(set) = &t.resources else { return false };
                return set.is_match(uri) || canonical_uri(uri).is_some_and(|c| set.is_match(&c));
            }
            Target::Prompt(n) => (&t.prompts, n),
            Target::None => return false,
        };
        set.as_ref().is_some_and(|s| s.is_match(name))
    }
}

/// `uri` as the WHATWG URL Standard serialises it, when that differs from what was written.
fn canonical_uri(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    (parsed.as_str() != uri).then(|| parsed.into())
}

fn compile_condition(source: &str) -> Result<Condition, String> {
    let program = cel::Program::compile(source).map_err(|e| format!("does not parse: {e}"))?;
    let references = program.references();
    let mut bound = Vec::new();
    macro_variables(program.expression(), &mut bound);
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| !CALLER_NAMES.contains(v) && !REQUEST_NAMES.contains(v) && !bound.contains(v))
        .collect();
    unknown.sort_unstable();
    if let Some(first) = unknown.first() {
        return Err(format!(
            "names {first:?}, which is not known: the caller is {}, the request {} (any claim is under claims, e.g. claims.department)",
            CALLER_NAMES.join(", "),
            REQUEST_NAMES.join(", ")
        ));
    }
    let per_request = REQUEST_NAMES.iter().any(|n| references.has_variable(n));
    let reads_arguments = references.has_variable("arguments");
    Ok(Condition { source: source.to_owned(), program, per_request, reads_arguments })
}

/// The names macros bind (`groups.exists(g, …)` binds `g`): variables of the expression, not unknown
/// names.
fn macro_variables<'e>(e: &'e cel::common::ast::IdedExpr, out: &mut Vec<&'e str>) {
    use cel::common::ast::{EntryExpr, Expr};
    match &e.expr {
        Expr::Comprehension(c) => {
            out.push(&c.iter_var);
            out.extend(c.iter_var2.as_deref());
            out.push(&c.accu_var);
            for part in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                macro_variables(part, out);
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                macro_variables(t, out);
            }
            call.args.iter().for_each(|a| macro_variables(a, out));
        }
        Expr::List(list) => list.elements.iter().for_each(|x| macro_variables(x, out)),
        Expr::Select(select) => macro_variables(&select.operand, out),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(m) = &entry.expr {
                    macro_variables(&m.key, out);
                    macro_variables(&m.value, out);
                }
            }
        }
        _ => {}
    }
}

/// A server's rules, in order, and where caller variables come from.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Arc<[Rule]>,
    claims: Arc<ClaimNames>,
}

impl Policy {
    /// The policy of `rules`, with caller variables read from `claims`.
    pub fn new(rules: Vec<Rule>, claims: ClaimNames) -> Self {
        Self { rules: rules.into(), claims: Arc::new(claims) }
    }

    /// Whether there is any rule at all (none: nothing to evaluate).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Where caller variables come from.
    pub fn claim_names(&self) -> &ClaimNames {
        &self.claims
    }

    /// An evaluation for one caller: caller variables are built when first read and kept, as are the
    /// values of conditions that do not read the request.
    pub fn evaluate<'p>(&'p self, caller: Caller<'p>) -> Evaluation<'p> {
        self.evaluation(caller, Cells::Own(Box::default()))
    }

    /// As [`evaluate`](Self::evaluate), with the caller variables kept in `cache` for the caller's next
    /// requests (the cache belongs to one caller, i.e. one verified token, and to this policy).
    pub fn evaluate_cached<'p>(&'p self, caller: Caller<'p>, cache: &'p CallerCache) -> Evaluation<'p> {
        self.evaluation(caller, Cells::Shared(cache))
    }

    fn evaluation<'p>(&'p self, caller: Caller<'p>, cells: Cells<'p>) -> Evaluation<'p> {
        Evaluation {
            policy: self,
            caller: CallerVars { caller, names: &self.claims, cells },
            memo: vec![Memo::Unknown; self.rules.len() * 2],
            many: false,
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub subject: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub scopes: &'a ScopeSet,
    pub claims: &'a Map<String, Value>,
    /// No user took part in issuing the token: a client acting on its own behalf (a client
    /// credentials grant), as the verifier tells from the claims.
    pub machine: bool,
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    None,
    Tool(&'a str),
    Resource(&'a str),
    Prompt(&'a str),
}

/// One JSON-RPC request (or a GET or DELETE, with the empty method).
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub method: &'a str,
    pub target: Target<'a>,
    /// The raw `params.arguments` (JSON), if any: conditions see it as `arguments`, parsed strictly
    /// (a member twice, at any depth, is an error, so the gate and the upstream cannot read two
    /// different values).
    pub arguments: Option<&'a str>,
}

impl<'a> Action<'a> {
    /// The action a message with `method` and `target` (its `params.name` or `params.uri`) performs.
    pub fn of(method: &'a str, target: Option<&'a str>) -> Self {
        let target = match (method, target) {
            ("tools/call", Some(t)) => Target::Tool(t),
            ("resources/read" | "resources/subscribe" | "resources/unsubscribe", Some(t)) => Target::Resource(t),
            ("prompts/get", Some(t)) => Target::Prompt(t),
            _ => Target::None,
        };
        Self { method, target, arguments: None }
    }

    /// The same action with `arguments` (raw JSON).
    pub fn with_arguments(self, arguments: Option<&'a str>) -> Self {
        Self { arguments, ..self }
    }
}

/// What the rules decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'p> {
    Allow,
    /// Refused by the rule named; `error` when its condition could not be evaluated.
    Deny {
        rule: &'p str,
        error: bool,
    },
    /// The caller lacks scopes: `needed` is every scope the governing rules require.
    NeedsScopes {
        rule: &'p str,
        needed: ScopeSet,
    },
}

/// The rules applied to one caller's requests.
pub struct Evaluation<'p> {
    policy: &'p Policy,
    caller: CallerVars<'p>,
    /// Per rule, what is known of its `deny_if` and `allow_if` for this caller.
    memo: Vec<Memo>,
    /// Whether many actions will be decided (a list answer's entries).
    many: bool,
}

/// What is known of a condition within one evaluation.
#[derive(Debug, Clone, Copy)]
enum Memo {
    Unknown,
    /// Its value, the same for every request of this caller.
    Known(Result<bool, ()>),
    /// It depends on the request: evaluated for each.
    PerRequest,
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation").finish_non_exhaustive()
    }
}

impl<'p> Evaluation<'p> {
    /// The verdict on `action`.
    pub fn decide(&mut self, action: &Action<'_>) -> Verdict<'p> {
        let policy = self.policy;
        let mut short: Option<&'p str> = None;
        let mut needed = ScopeSet::new();
        for (i, rule) in policy.rules.iter().enumerate() {
            if !rule.governs(action) {
                continue;
            }
            // A list entry has no arguments: a condition that needs them to decide cannot hide it (the
            // call itself is judged with its arguments).
            let undecided = |c: &Condition, many: bool| many && c.reads_arguments;
            let many = self.many;
            if let Some(c) = &rule.deny_if {
                match self.condition(2 * i, c, action) {
                    Ok(true) => return Verdict::Deny { rule: &rule.name, error: false },
                    Err(()) if !undecided(c, many) => return Verdict::Deny { rule: &rule.name, error: true },
                    _ => {}
                }
            }
            if let Some(c) = &rule.allow_if {
                match self.condition(2 * i + 1, c, action) {
                    Ok(false) => return Verdict::Deny { rule: &rule.name, error: false },
                    Err(()) if !undecided(c, many) => return Verdict::Deny { rule: &rule.name, error: true },
                    _ => {}
                }
            }
            if !rule.scopes.is_empty() {
                needed = needed.union(&rule.scopes);
                if short.is_none() && !self.caller.caller.scopes.contains_all(&rule.scopes) {
                    short = Some(&rule.name);
                }
            }
        }
        match short {
            Some(rule) => Verdict::NeedsScopes { rule, needed },
            None => Verdict::Allow,
        }
    }

    /// Many actions will be decided for this caller (the entries of a list answer): a condition that
    /// reads the request is first evaluated without it, and when its value does not depend on the
    /// request after all (`"contractor" in roles && …` for a caller without that role) it is not
    /// evaluated again per action. CEL's `&&`, `||` and macros absorb the error of an unknown operand
    /// only when the other operands decide the value alone, so such a value holds for every request.
    pub fn expect_many(&mut self) {
        self.many = true;
    }

    fn condition(&mut self, slot: usize, condition: &Condition, action: &Action<'_>) -> Result<bool, ()> {
        match self.memo[slot] {
            Memo::Known(value) => return value,
            Memo::PerRequest => return self.run(condition, Some(action)),
            Memo::Unknown => {}
        }
        if !condition.per_request {
            let value = self.run(condition, Some(action));
            self.memo[slot] = Memo::Known(value);
            return value;
        }
        if self.many {
            if let Ok(b) = self.run(condition, None) {
                self.memo[slot] = Memo::Known(Ok(b));
                return Ok(b);
            }
            self.memo[slot] = Memo::PerRequest;
        }
        self.run(condition, Some(action))
    }

    /// The condition's value; without an action, the request's variables are unknown.
    fn run(&self, condition: &Condition, action: Option<&Action<'_>>) -> Result<bool, ()> {
        let vars = Vars { caller: &self.caller, action, many: self.many };
        let mut context = cel::Context::with_env(Arc::clone(stdlib()));
        context.set_variable_resolver(&vars);
        match condition.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            _ => Err(()),
        }
    }
}

/// CEL's standard functions and macros, built once.
fn stdlib() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

/// A caller's variables as conditions read them, each built when first read: kept with the caller's
/// verified token, they are built once per token, not once per request.
#[derive(Debug, Default)]
pub struct CallerCache {
    vars: [OnceLock<Box<dyn Val>>; CALLER_NAMES.len()],
}

enum Cells<'a> {
    Own(Box<CallerCache>),
    Shared(&'a CallerCache),
}

/// The caller's variables, each built when first read.
struct CallerVars<'a> {
    caller: Caller<'a>,
    names: &'a ClaimNames,
    cells: Cells<'a>,
}

impl<'a> CallerVars<'a> {
    fn claim(&self, name: &str) -> Option<&'a Value> {
        if let Some(pointer) = name.strip_prefix('/') {
            // A JSON pointer into the claims object.
            let mut parts = pointer.split('/').map(|p| p.replace("~1", "/").replace("~0", "~"));
            let first = parts.next()?;
            parts.try_fold(self.caller.claims.get(&first)?, |v, p| match v {
                Value::Object(m) => m.get(&p),
                Value::Array(a) => a.get(p.parse::<usize>().ok()?),
                _ => None,
            })
        } else {
            self.caller.claims.get(name)
        }
    }

    /// A list of strings from a claim: an array (non-strings left out), or one string as one element.
    fn strings(&self, name: &str) -> cel::Value {
        let items: Vec<cel::Value> = match self.claim(name) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(cel::Value::from).collect(),
            Some(Value::String(s)) => vec![cel::Value::from(s.as_str())],
            _ => Vec::new(),
        };
        cel::Value::List(Arc::new(items))
    }

    fn text(&self, name: &str) -> cel::Value {
        cel::Value::from(self.claim(name).and_then(Value::as_str).unwrap_or_default())
    }

    fn build(&self, index: usize) -> cel::Value {
        let c = &self.caller;
        match CALLER_NAMES[index] {
            "subject" => cel::Value::from(c.subject.unwrap_or_default()),
            "client_id" => cel::Value::from(c.client_id.unwrap_or_default()),
            "scopes" => cel::Value::List(Arc::new(c.scopes.iter().map(|s| cel::Value::from(s.as_str())).collect())),
            "groups" => self.strings(&self.names.groups),
            "roles" => self.strings(&self.names.roles),
            "email" => self.text(&self.names.email),
            "email_domain" => {
                // An address the IdP does not say it verified names no domain: a user may have typed it
                // (an Entra ID guest's `email` is whatever their home tenant holds).
                let verified = match &self.names.email_verified {
                    Some(name) => self.claim(name).is_some_and(|v| v == &Value::Bool(true) || v == "true"),
                    None => true,
                };
                if !verified {
                    return cel::Value::from("");
                }
                let email = self.claim(&self.names.email).and_then(Value::as_str).unwrap_or_default();
                cel::Value::from(email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default())
            }
            "tenant" => self.text(&self.names.tenant),
            "issuer" => self.text("iss"),
            "machine" => cel::Value::Bool(c.machine),
            _ => json_to_cel(&Value::Object(c.claims.clone())),
        }
    }

    fn get(&self, name: &str) -> Option<&dyn Val> {
        let index = CALLER_NAMES.iter().position(|n| *n == name)?;
        let cells = match &self.cells {
            Cells::Own(c) => &**c,
            Cells::Shared(c) => *c,
        };
        let built = cells.vars[index].get_or_init(|| {
            Box::<dyn Val>::try_from(self.build(index)).unwrap_or_else(|_| Box::new(CelString::from(String::new())))
        });
        Some(&**built)
    }
}

/// JSON as CEL: numbers as `int` when integral and in range, else `double`.
fn json_to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::from(s.as_str()),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Value::Object(m) => {
            let map: std::collections::HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), json_to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

/// A member name as the most lenient parsers match it: Go's `encoding/json` binds `Amount` and
/// `amount` (and `ſ`/`s`, `K`/`k`) to one field, case-insensitively, taking the last. (The gate's
/// JSON-RPC reader folds the message's own member names the same way.)
pub fn fold_member_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// JSON parsed strictly: a member twice in one object, at any depth, is an error (parsers disagree on
/// which one wins, RFC 8259 §4, so a rule could read one value and the upstream another), and so are
/// two members one name apart only by case (`amount` and `Amount`): a Go server reads them as one.
fn strict_json(raw: &str) -> Result<Value, serde_json::Error> {
    struct Strict(Value);
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Strict;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                    Ok(Strict(Value::Bool(v)))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                    Ok(Strict(Value::from(v)))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                    Ok(Strict(Value::from(v)))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                    Ok(Strict(Value::from(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                    Ok(Strict(Value::String(v.to_owned())))
                }
                fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                    Ok(Strict(Value::String(v)))
                }
                fn visit_unit<E>(self) -> Result<Strict, E> {
                    Ok(Strict(Value::Null))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                    let mut items = Vec::new();
                    while let Some(Strict(v)) = seq.next_element()? {
                        items.push(v);
                    }
                    Ok(Strict(Value::Array(items)))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                    let mut members = Map::new();
                    let mut folded = std::collections::HashMap::new();
                    while let Some((k, Strict(v))) = map.next_entry::<String, Strict>()? {
                        if let Some(other) = folded.insert(fold_member_name(&k), k.clone()) {
                            return Err(serde::de::Error::custom(if other == k {
                                format!("member {k:?} appears twice")
                            } else {
                                format!("members {other:?} and {k:?} are one member to some parsers")
                            }));
                        }
                        members.insert(k, v);
                    }
                    Ok(Strict(Value::Object(members)))
                }
            }
            d.deserialize_any(Visit)
        }
    }
    serde_json::from_str::<Strict>(raw).map(|s| s.0)
}

/// The variables of one condition's evaluation.
struct Vars<'e, 'a> {
    caller: &'e CallerVars<'a>,
    /// `None`: the request's variables are unknown (reading one is an error).
    action: Option<&'e Action<'e>>,
    /// Deciding list entries: `arguments` is unknown.
    many: bool,
}

impl cel::context::VariableResolver for Vars<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let text = |s: &'b str| Some(CowVal::owned(CelString::from(s)));
        let Some(a) = self.action else {
            return if REQUEST_NAMES.contains(&variable) {
                None
            } else {
                self.caller.get(variable).map(CowVal::Borrowed)
            };
        };
        match variable {
            "method" => text(a.method),
            "tool" => text(if let Target::Tool(t) = a.target { t } else { "" }),
            "resource" => text(if let Target::Resource(t) = a.target { t } else { "" }),
            "prompt" => text(if let Target::Prompt(t) = a.target { t } else { "" }),
            "arguments" if self.many => None,
            "arguments" => {
                let value = strict_json(a.arguments.unwrap_or("{}")).ok()?;
                Box::<dyn Val>::try_from(json_to_cel(&value)).ok().map(CowVal::Owned)
            }
            other => self.caller.get(other).map(CowVal::Borrowed),
        }
    }
}

#[cfg(test)]
mod tests;
