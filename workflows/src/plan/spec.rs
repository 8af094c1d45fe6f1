//! The plan's JSON shape and its validation. The shape is a set of serde types whose JSON Schema
//! is derived from them (their doc comments are what clients read); [`Plan::checked`] adds the
//! rules a schema cannot say well (unique names, templates referencing earlier steps) and
//! reports every problem with a JSON pointer into the input, so a client can show each one next
//! to the field it concerns.

use super::agent::{AgentSpec, MAX_AGENT_TIMEOUT_S};
use super::template;
use hypercode_engine::{Approval, InputProblem, RetryPolicy};
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub(crate) const MAX_TIMEOUT_MS: u64 = 300_000;
pub(crate) const MAX_WAIT_S: f64 = 366.0 * 24.0 * 3600.0;
const MAX_WAIT_MS: u64 = MAX_WAIT_S as u64 * 1000;

/// A `plan` mission's input, as submitted: checked by [`Plan::checked`]. Its JSON Schema is
/// derived from these types: the doc comments below are what clients read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "plan",
    description = "A declarative mission: steps run in order, each with exactly one action (http, agent, approval, signal, sleep or noop).",
    extend("$id" = "https://hypercode.dev/schemas/workflows/plan/input.json")
)]
pub struct PlanSpec {
    /// The steps, in execution order.
    #[schemars(length(min = 1))]
    pub steps: Vec<StepSpec>,
}

/// One step as submitted: its action is whichever one of `http`, `agent`, `approval`, `signal`,
/// `sleep` and `noop` is present.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "step",
    extend(
        "oneOf" = [
            { "required": ["http"] },
            { "required": ["agent"] },
            { "required": ["approval"] },
            { "required": ["signal"] },
            { "required": ["sleep"] },
            { "required": ["noop"] }
        ],
        "dependentSchemas" = {
            "retry": { "oneOf": [{ "required": ["http"] }, { "required": ["agent"] }] },
            "compensate": { "required": ["http"] }
        }
    )
)]
pub struct StepSpec {
    /// Unique within the plan.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,100}$"))]
    pub name: String,
    /// An HTTP call.
    pub http: Option<HttpRequest<SubmittedMethod>>,
    /// A call to a live agent with a capability.
    pub agent: Option<AgentSpec>,
    /// Waits for a human decision; a timeout counts as a rejection.
    pub approval: Option<ApprovalSpec>,
    /// Waits for the signal named after the step; its output is `{"payload": <the signal>}`.
    pub signal: Option<SignalSpec>,
    /// A durable sleep.
    pub sleep: Option<SleepSpec>,
    /// Any JSON but null: recorded as the step's output.
    #[schemars(extend("not" = { "type": "null" }))]
    pub noop: Option<Value>,
    /// The HTTP or agent call's retry policy.
    pub retry: Option<RetryPolicy>,
    /// Undoes the step if the mission later fails or is cancelled; may reference the step's
    /// own output.
    pub compensate: Option<Compensate<SubmittedMethod>>,
}

/// Waits for a human decision; a timeout counts as a rejection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "approval")]
pub struct ApprovalSpec {
    /// What the approver is asked, in at most maxLength bytes of UTF-8 (a JSON Schema counts
    /// maxLength in characters: the byte limit is the one enforced).
    #[serde(default)]
    #[schemars(length(max = Approval::MAX_MESSAGE_BYTES))]
    pub message: String,
    /// Seconds after which no decision counts as a rejection; at most a year.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = MAX_WAIT_S))]
    pub timeout_s: Option<f64>,
}

/// Waits for the signal named after the step (`POST /api/v1/missions/{id}/signals/{name}`); a
/// signal sent earlier is kept and delivered on arrival.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "signal")]
pub struct SignalSpec {
    /// Seconds to wait; none arriving fails the step (`signal_timeout`). At most a year.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = MAX_WAIT_S))]
    pub timeout_s: f64,
}

/// A durable sleep.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "sleep")]
pub struct SleepSpec {
    /// How long, in milliseconds; at most a year.
    #[schemars(range(max = MAX_WAIT_MS))]
    pub ms: u64,
}

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its steps, in execution order.
    pub steps: Vec<PlanStep>,
}

/// One validated step.
#[derive(Debug, Clone)]
pub struct PlanStep {
    /// Unique within the plan; `[A-Za-z0-9_-]{1,100}`.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Its retry policy (HTTP and agent steps).
    pub retry: Option<RetryPolicy>,
    /// Its undo (HTTP steps).
    pub compensate: Option<Compensate>,
}

/// A step's one action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Call a URL; 2xx succeeds.
    Http(HttpRequest),
    /// Call a live agent with a capability.
    Agent(AgentSpec),
    /// Wait for a human decision.
    Approval {
        /// What the approver is asked.
        message: String,
        /// Seconds after which no decision counts as a rejection.
        timeout_s: Option<f64>,
    },
    /// Wait for the signal named after the step.
    Signal {
        /// Seconds to wait before the step fails.
        timeout_s: f64,
    },
    /// Wait durably.
    Sleep {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// Do nothing but record the given value as the step's output (a marker, or a step whose
    /// cost is only the engine's own: what benchmarks measure).
    Noop(Value),
}

/// The HTTP methods a plan may use; on the wire, their upper-case names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl Method {
    /// Every method, in the order error messages list them.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    /// Its wire name (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    /// The method named `name` exactly (upper case), if a plan may use it.
    fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl From<Method> for reqwest::Method {
    fn from(method: Method) -> Self {
        match method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
            Method::Options => reqwest::Method::OPTIONS,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method as submitted, any string: [`Plan::checked`] turns it into a [`Method`], so an
/// unknown one is reported beside the plan's other problems instead of ending the parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(inline)]
pub struct SubmittedMethod(#[schemars(with = "Method")] String);

impl Default for SubmittedMethod {
    fn default() -> Self {
        Self(Method::default().as_str().to_owned())
    }
}

/// An HTTP call, before or after its templates are resolved; its method is `M`: a
/// [`SubmittedMethod`] as submitted, a [`Method`] once checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "M: Deserialize<'de> + Default")
)]
#[schemars(
    bound = "M: JsonSchema + Default + Serialize",
    rename = "http",
    description = "An HTTP call; 2xx succeeds with output {\"status\", \"body\"}. Strings in url, headers and body may reference earlier outputs: {{steps.NAME.output.PATH}} and {{mission.id}}."
)]
pub struct HttpRequest<M = Method> {
    /// GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    #[serde(default)]
    pub method: M,
    /// An http or https URL with a host.
    pub url: String,
    /// Extra request headers. Names are HTTP tokens; values have no control characters but
    /// tab (no CR, LF or NUL), also once their templates are resolved: a resolved value that
    /// does fails the step for good.
    #[serde(default)]
    #[schemars(extend(
        "propertyNames" = { "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" },
        "additionalProperties" = { "type": "string", "pattern": "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$" }
    ))]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Per-attempt timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub timeout_ms: u64,
}

/// An HTTP step's undo; its method is `M`, as in [`HttpRequest`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, bound = "M: Deserialize<'de> + Default")]
#[schemars(rename = "compensate", bound = "M: JsonSchema + Default + Serialize")]
#[schemars(
    description = "Undoes the step if the mission later fails or is cancelled; \
    may reference the step's own output."
)]
pub struct Compensate<M = Method> {
    /// The call that undoes the step; it may reference the step's own output.
    pub http: HttpRequest<M>,
    /// Its retry policy.
    pub retry: Option<RetryPolicy>,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl Plan {
    /// Check a submitted plan and build the validated one, collecting every problem found.
    pub fn checked(spec: &PlanSpec) -> Result<Plan, Vec<InputProblem>> {
        let mut problems = Vec::new();
        if spec.steps.is_empty() {
            problems.push(InputProblem::new(
                "/steps",
                "a plan needs at least one step",
            ));
        }
        // Each name's first position: what a reference is checked against (a list of the earlier
        // names per step would make parsing quadratic in the plan's length).
        let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(spec.steps.len());
        let mut steps = Vec::with_capacity(spec.steps.len());
        for (index, step) in spec.steps.iter().enumerate() {
            let at = format!("/steps/{index}");
            let first = *first_at.entry(step.name.as_str()).or_insert(index);
            if !valid_name(&step.name) {
                problems.push(InputProblem::new(
                    format!("{at}/name"),
                    "a step name is 1 to 100 of A-Z a-z 0-9 _ -",
                ));
            } else if first != index {
                problems.push(InputProblem::new(
                    format!("{at}/name"),
                    format!("duplicate step name `{}` (also step {first})", step.name),
                ));
            }
            let runs_before = |limit: usize| {
                let first_at = &first_at;
                move |name: &str| first_at.get(name).is_some_and(|&i| i < limit)
            };
            let scopes = Scopes {
                request: &runs_before(index),
                compensation: &runs_before(index + 1),
            };
            steps.extend(check_step(step, &at, &scopes, &mut problems));
        }
        if problems.is_empty() {
            Ok(Plan { steps })
        } else {
            Err(problems)
        }
    }
}

/// The steps a step's templates may reference: those before it, and for its compensation also
/// the step itself.
struct Scopes<'a> {
    request: &'a dyn Fn(&str) -> bool,
    compensation: &'a dyn Fn(&str) -> bool,
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_step(
    step: &StepSpec,
    at: &str,
    scopes: &Scopes<'_>,
    problems: &mut Vec<InputProblem>,
) -> Option<PlanStep> {
    let actions = [
        step.http.is_some(),
        step.agent.is_some(),
        step.approval.is_some(),
        step.signal.is_some(),
        step.sleep.is_some(),
        step.noop.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        problems.push(InputProblem::new(
            at,
            "a step needs exactly one action: `http`, `agent`, `approval`, `signal`, `sleep` or `noop`",
        ));
        return None;
    }
    if let Some(retry) = &step.retry {
        check_retry(retry, &format!("{at}/retry"), problems);
    }
    // `None`: no undo; `Some(None)`: an undo with a problem (reported).
    let compensate = step.compensate.as_ref().map(|undo| {
        if step.http.is_none() {
            problems.push(InputProblem::new(
                format!("{at}/compensate"),
                "only an `http` step can have a compensation",
            ));
        }
        let http = check_http(
            &undo.http,
            &format!("{at}/compensate/http"),
            scopes.compensation,
            problems,
        );
        if let Some(retry) = &undo.retry {
            check_retry(retry, &format!("{at}/compensate/retry"), problems);
        }
        http.map(|http| Compensate {
            http,
            retry: undo.retry,
        })
    });
    let checked = |action| PlanStep {
        name: step.name.clone(),
        action,
        retry: None,
        compensate: None,
    };
    if let Some(request) = &step.http {
        let request = check_http(request, &format!("{at}/http"), scopes.request, problems);
        let compensate = match compensate {
            Some(undo) => Some(undo?),
            None => None,
        };
        return Some(PlanStep {
            retry: step.retry,
            compensate,
            ..checked(Action::Http(request?))
        });
    }
    if let Some(agent) = &step.agent {
        check_agent(agent, &format!("{at}/agent"), scopes.request, problems);
        return Some(PlanStep {
            retry: step.retry,
            ..checked(Action::Agent(agent.clone()))
        });
    }
    if step.retry.is_some() {
        problems.push(InputProblem::new(
            format!("{at}/retry"),
            "only an `http` or `agent` step can have a retry policy",
        ));
    }
    if let Some(approval) = &step.approval {
        if approval.message.len() > Approval::MAX_MESSAGE_BYTES {
            problems.push(InputProblem::new(
                format!("{at}/approval/message"),
                format!(
                    "must be at most {} bytes (UTF-8); this one is {}",
                    Approval::MAX_MESSAGE_BYTES,
                    approval.message.len()
                ),
            ));
        }
        if let Some(t) = approval.timeout_s {
            if !(t > 0.0 && t <= MAX_WAIT_S) {
                problems.push(InputProblem::new(
                    format!("{at}/approval/timeout_s"),
                    "must be above 0 and at most a year",
                ));
            }
        }
        return Some(checked(Action::Approval {
            message: approval.message.clone(),
            timeout_s: approval.timeout_s,
        }));
    }
    if let Some(signal) = &step.signal {
        if !(signal.timeout_s > 0.0 && signal.timeout_s <= MAX_WAIT_S) {
            problems.push(InputProblem::new(
                format!("{at}/signal/timeout_s"),
                "must be above 0 and at most a year",
            ));
        }
        return Some(checked(Action::Signal {
            timeout_s: signal.timeout_s,
        }));
    }
    if let Some(value) = &step.noop {
        return Some(checked(Action::Noop(value.clone())));
    }
    let sleep = step.sleep.as_ref()?;
    if sleep.ms > MAX_WAIT_MS {
        problems.push(InputProblem::new(
            format!("{at}/sleep/ms"),
            "must be at most a year",
        ));
    }
    Some(checked(Action::Sleep { ms: sleep.ms }))
}

fn check_agent(
    agent: &AgentSpec,
    at: &str,
    in_scope: &dyn Fn(&str) -> bool,
    problems: &mut Vec<InputProblem>,
) {
    if !hypercode_agents::valid_capability(&agent.capability) {
        problems.push(InputProblem::new(
            format!("{at}/capability"),
            "a capability is 1 to 64 letters, digits, `_`, `-` or `.`",
        ));
    }
    if let Err(e) = template::check(&agent.command, in_scope) {
        problems.push(InputProblem::new(format!("{at}/command"), e.to_string()));
    }
    template::check_value(&agent.input, in_scope, &format!("{at}/input"), problems);
    if !(agent.timeout_s > 0.0 && agent.timeout_s <= MAX_AGENT_TIMEOUT_S) {
        problems.push(InputProblem::new(
            format!("{at}/timeout_s"),
            format!("must be above 0 and at most {MAX_AGENT_TIMEOUT_S}"),
        ));
    }
}

fn check_retry(retry: &RetryPolicy, at: &str, problems: &mut Vec<InputProblem>) {
    if !(1..=RetryPolicy::MAX_ATTEMPTS).contains(&retry.max_attempts) {
        problems.push(InputProblem::new(
            format!("{at}/max_attempts"),
            format!("must be 1 to {}", RetryPolicy::MAX_ATTEMPTS),
        ));
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        problems.push(InputProblem::new(
            format!("{at}/initial_backoff_ms"),
            "must not exceed max_backoff_ms",
        ));
    }
    if retry.max_backoff_ms > RetryPolicy::MAX_BACKOFF_MS {
        problems.push(InputProblem::new(
            format!("{at}/max_backoff_ms"),
            "must be at most a day",
        ));
    }
}

/// Check a URL (after its templates are resolved, or with placeholders in their place).
fn check_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err("must be an http or https URL with a host".to_owned()),
        Err(e) => Err(format!("not a valid URL: {e}")),
    }
}

/// Check a header value (after its templates are resolved, or with placeholders in their
/// place): visible ASCII, spaces, tabs and non-ASCII bytes; no CR, LF, NUL or other controls.
fn check_header_value(value: &str) -> Result<(), &'static str> {
    HeaderValue::from_bytes(value.as_bytes())
        .map(drop)
        .map_err(|_| {
            "not a valid header value: control characters (CR, LF, NUL, ...) are not allowed"
        })
}

impl HttpRequest {
    /// Check a request whose templates are resolved, as `Plan::parse` checked its literal text:
    /// a reference may still bring in a line break or make the URL invalid. The message names
    /// the field but does not repeat its value, which may be a secret.
    pub(crate) fn check_resolved(&self) -> Result<(), String> {
        check_url(&self.url).map_err(|e| format!("the resolved url: {e}"))?;
        for (name, value) in &self.headers {
            check_header_value(value).map_err(|e| format!("the resolved header `{name}`: {e}"))?;
        }
        Ok(())
    }
}

fn check_http(
    request: &HttpRequest<SubmittedMethod>,
    at: &str,
    in_scope: &dyn Fn(&str) -> bool,
    problems: &mut Vec<InputProblem>,
) -> Option<HttpRequest> {
    let method = Method::parse(&request.method.0);
    if method.is_none() {
        let all: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        problems.push(InputProblem::new(
            format!("{at}/method"),
            format!("must be one of {}", all.join(", ")),
        ));
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&request.timeout_ms) {
        problems.push(InputProblem::new(
            format!("{at}/timeout_ms"),
            format!("must be 1 to {MAX_TIMEOUT_MS}"),
        ));
    }
    if let Err(e) = template::check(&request.url, in_scope)
        .map_err(|e| e.to_string())
        .and_then(|sample| check_url(&sample))
    {
        problems.push(InputProblem::new(format!("{at}/url"), e));
    }
    for (name, value) in &request.headers {
        let here = format!(
            "{at}/headers/{}",
            name.replace('~', "~0").replace('/', "~1")
        );
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(InputProblem::new(
                here.clone(),
                "not a valid header name (an HTTP token)",
            ));
        }
        match template::check(value, in_scope) {
            Err(e) => problems.push(InputProblem::new(here, e.to_string())),
            Ok(sample) => {
                if let Err(e) = check_header_value(&sample) {
                    problems.push(InputProblem::new(here, e));
                }
            }
        }
    }
    if let Some(body) = &request.body {
        template::check_value(body, in_scope, &format!("{at}/body"), problems);
    }
    Some(HttpRequest {
        method: method?,
        url: request.url.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        timeout_ms: request.timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parse as a submission is: deserialize (problems located by the engine), then check.
    fn parse(input: &Value) -> Result<Plan, Vec<InputProblem>> {
        hypercode_engine::parse_input::<PlanSpec>(input).and_then(|spec| Plan::checked(&spec))
    }

    fn problems(input: Value) -> Vec<InputProblem> {
        parse(&input).expect_err("plan should be invalid")
    }

    #[test]
    fn accepts_a_full_plan() {
        let plan = parse(&json!({"steps": [
            {"name": "a", "http": {"method": "POST", "url": "http://127.0.0.1:1/x", "body": {"n": 1}},
             "retry": {"max_attempts": 5}, "compensate": {"http": {"method": "DELETE", "url": "http://127.0.0.1:1/x/{{steps.a.output.body.id}}"}}},
            {"name": "b", "approval": {"message": "ok?", "timeout_s": 60}},
            {"name": "c", "sleep": {"ms": 10}},
            {"name": "d", "http": {"url": "http://127.0.0.1:1/{{steps.a.output.body.id}}"}},
            {"name": "e", "noop": {"k": 1}}
        ]}))
        .expect("valid plan");
        assert_eq!(plan.steps.len(), 5);
        assert!(matches!(&plan.steps[4].action, Action::Noop(v) if v["k"] == 1));
        assert!(matches!(plan.steps[2].action, Action::Sleep { ms: 10 }));
    }

    #[test]
    fn reports_duplicate_and_missing_names_and_actions() {
        let found = problems(json!({"steps": [
            {"name": "a", "sleep": {"ms": 1}},
            {"name": "a", "sleep": {"ms": 1}},
            {"name": "b"},
            {"name": "c", "sleep": {"ms": 1}, "approval": {}}
        ]}));
        let pointers: Vec<&str> = found.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/steps/1/name", "/steps/2", "/steps/3"]);
        assert!(found[0].message.contains("duplicate"));
    }

    #[test]
    fn points_at_unknown_fields_and_wrong_types() {
        let unknown =
            problems(json!({"steps": [{"name": "a", "sleep": {"ms": 1}, "colour": "red"}]}));
        assert_eq!(unknown[0].pointer, "/steps/0/colour");
        let wrong = problems(json!({"steps": [{"name": "a", "sleep": {"ms": "soon"}}]}));
        assert_eq!(wrong[0].pointer, "/steps/0/sleep/ms");
        let missing = problems(json!({"steps": [{"sleep": {"ms": 1}}]}));
        assert_eq!(missing[0].pointer, "/steps/0");
        assert!(missing[0].message.contains("name"));
    }

    #[test]
    fn rejects_bad_urls_methods_and_forward_references() {
        let found = problems(json!({"steps": [
            {"name": "a", "http": {"url": "ftp://example.com/"}},
            {"name": "b", "http": {"url": "not a url"}},
            {"name": "c", "http": {"method": "BREW", "url": "http://h/{{steps.d.output.body}}"}},
            {"name": "d", "http": {"url": "http://h/", "body": {"x": "{{steps.zz.output}}"}}}
        ]}));
        let pointers: Vec<&str> = found.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/steps/0/http/url",
                "/steps/1/http/url",
                "/steps/2/http/method",
                "/steps/2/http/url",
                "/steps/3/http/body/x"
            ]
        );
    }

    #[test]
    fn checks_header_values_before_and_after_templating() {
        let found = problems(json!({"steps": [
            {"name": "a", "http": {"url": "http://h/", "headers": {"X-A": "a\r\nb", "X-B": "ok\tcaf\u{e9}"}}},
            {"name": "b", "http": {"url": "http://h/", "headers": {"X-C": "{{steps.a.output}}\u{0}"}}}
        ]}));
        let pointers: Vec<&str> = found.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/steps/0/http/headers/X-A", "/steps/1/http/headers/X-C"]
        );

        let request = |header: &str, url: &str| HttpRequest {
            method: Method::Get,
            url: url.into(),
            headers: [("X-A".to_owned(), header.to_owned())].into(),
            body: None,
            timeout_ms: 1,
        };
        assert_eq!(request("fine", "http://h/").check_resolved(), Ok(()));
        let bad_header = request("a\nb", "http://h/").check_resolved().unwrap_err();
        assert!(
            bad_header.contains("`X-A`") && !bad_header.contains("a\nb"),
            "{bad_header}"
        );
        let bad_url = request("fine", "file:///etc/passwd").check_resolved();
        assert!(bad_url.is_err_and(|e| e.contains("url")));
    }

    #[test]
    fn caps_approval_messages_in_bytes() {
        let plan =
            |message: String| json!({"steps": [{"name": "a", "approval": {"message": message}}]});
        assert!(parse(&plan("\u{e9}".repeat(2048))).is_ok());
        assert_eq!(
            problems(plan("\u{e9}".repeat(2049)))[0].pointer,
            "/steps/0/approval/message"
        );
    }

    #[test]
    fn the_schema_describes_steps_with_exactly_one_action() {
        let schema = schemars::schema_for!(PlanSpec).to_value();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["title"], "plan");
        assert_eq!(schema["required"], json!(["steps"]));
        let step = &schema["$defs"]["step"];
        let actions: Vec<&str> = step["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|one| one["required"][0].as_str())
            .collect();
        assert_eq!(
            actions,
            ["http", "agent", "approval", "signal", "sleep", "noop"]
        );
        for key in [
            "name",
            "http",
            "agent",
            "approval",
            "signal",
            "sleep",
            "noop",
            "retry",
            "compensate",
        ] {
            assert!(step["properties"].get(key).is_some(), "{key}");
        }
        let methods = &schema["$defs"]["Method"]["enum"];
        assert_eq!(
            *methods,
            json!(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        );
        assert_eq!(
            schema["$defs"]["retry"]["properties"]["max_attempts"]["maximum"],
            100
        );
    }

    #[test]
    fn rejects_an_empty_plan_and_bad_retry() {
        assert_eq!(problems(json!({"steps": []}))[0].pointer, "/steps");
        let retry = problems(
            json!({"steps": [{"name": "a", "http": {"url": "http://h/"}, "retry": {"max_attempts": 0}}]}),
        );
        assert_eq!(retry[0].pointer, "/steps/0/retry/max_attempts");
    }

    #[test]
    fn checks_agent_steps() {
        let plan = parse(&json!({"steps": [
            {"name": "a", "noop": {"word": "hi"}},
            {"name": "b", "agent": {"capability": "upper", "command": "{{steps.a.output.word}}"},
             "retry": {"max_attempts": 5}}
        ]}))
        .expect("valid plan");
        let Action::Agent(agent) = &plan.steps[1].action else {
            panic!("an agent step: {:?}", plan.steps[1].action);
        };
        assert_eq!(agent.timeout_s, 60.0);
        assert_eq!(plan.steps[1].retry.map(|r| r.max_attempts), Some(5));
        let found = problems(json!({"steps": [
            {"name": "a", "agent": {"capability": "no/pe", "command": "{{steps.z.output}}",
             "input": {"x": "{{steps.z.output}}"}, "timeout_s": 0}}
        ]}));
        let pointers: Vec<&str> = found.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/steps/0/agent/capability",
                "/steps/0/agent/command",
                "/steps/0/agent/input/x",
                "/steps/0/agent/timeout_s"
            ]
        );
    }
}
