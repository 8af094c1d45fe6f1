//! The plan's JSON shape and its validation. Parsing reports every problem with a JSON pointer
//! into the input, so a client can show each one next to the field it concerns.

use super::template;
use hypercode_engine::{Approval, InputProblem, RetryPolicy};
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub(crate) const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
pub(crate) const MAX_TIMEOUT_MS: u64 = 300_000;
pub(crate) const MAX_WAIT_S: f64 = 366.0 * 24.0 * 3600.0;
pub(crate) const MAX_ATTEMPTS: u32 = 100;

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
    /// Its retry policy (HTTP steps).
    pub retry: Option<RetryPolicy>,
    /// Its undo (HTTP steps).
    pub compensate: Option<Compensate>,
}

/// A step's one action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Call a URL; 2xx succeeds.
    Http(HttpRequest),
    /// Wait for a human decision.
    Approval {
        /// What the approver is asked.
        message: String,
        /// Seconds after which no decision counts as a rejection.
        timeout_s: Option<f64>,
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

/// An HTTP call, before or after its templates are resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    #[serde(default = "default_method")]
    pub method: String,
    /// An http(s) URL.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// An HTTP step's undo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compensate {
    /// The call that undoes the step; it may reference the step's own output.
    pub http: HttpRequest,
    /// Its retry policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default)]
    http: Option<HttpRequest>,
    #[serde(default)]
    approval: Option<RawApproval>,
    #[serde(default)]
    sleep: Option<RawSleep>,
    #[serde(default)]
    noop: Option<Value>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    compensate: Option<Compensate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    #[serde(default)]
    message: String,
    #[serde(default)]
    timeout_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSleep {
    ms: u64,
}

/// Turn a serde path (`steps[0].http.url`) into a JSON pointer (`/steps/0/http/url`).
pub(crate) fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .fold(String::new(), |acc, part| format!("{acc}/{part}"))
}

impl Plan {
    /// Parse and validate a plan, collecting every problem found.
    pub fn parse(input: &Value) -> Result<Plan, Vec<InputProblem>> {
        let raw: RawPlan = serde_path_to_error::deserialize(input)
            .map_err(|e| vec![InputProblem::new(pointer(e.path()), e.inner().to_string())])?;
        let mut problems = Vec::new();
        if raw.steps.is_empty() {
            problems.push(InputProblem::new(
                "/steps",
                "a plan needs at least one step",
            ));
        }
        // Each name's first position: what a reference is checked against (a list of the earlier
        // names per step would make parsing quadratic in the plan's length).
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (index, step) in raw.steps.iter().enumerate() {
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
            if let Some(action) = check_step(step, &at, &scopes, &mut problems) {
                steps.push(PlanStep {
                    name: step.name.clone(),
                    action,
                    retry: step.retry,
                    compensate: step.compensate.clone(),
                });
            }
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
    step: &RawStep,
    at: &str,
    scopes: &Scopes<'_>,
    problems: &mut Vec<InputProblem>,
) -> Option<Action> {
    let actions = [
        step.http.is_some(),
        step.approval.is_some(),
        step.sleep.is_some(),
        step.noop.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        problems.push(InputProblem::new(
            at,
            "a step needs exactly one action: `http`, `approval`, `sleep` or `noop`",
        ));
        return None;
    }
    if let Some(retry) = &step.retry {
        check_retry(retry, &format!("{at}/retry"), problems);
    }
    if let Some(undo) = &step.compensate {
        if step.http.is_none() {
            problems.push(InputProblem::new(
                format!("{at}/compensate"),
                "only an `http` step can have a compensation",
            ));
        }
        check_http(
            &undo.http,
            &format!("{at}/compensate/http"),
            scopes.compensation,
            problems,
        );
        if let Some(retry) = &undo.retry {
            check_retry(retry, &format!("{at}/compensate/retry"), problems);
        }
    }
    if let Some(request) = &step.http {
        check_http(request, &format!("{at}/http"), scopes.request, problems);
        return Some(Action::Http(request.clone()));
    }
    if step.retry.is_some() {
        problems.push(InputProblem::new(
            format!("{at}/retry"),
            "only an `http` step can have a retry policy",
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
        return Some(Action::Approval {
            message: approval.message.clone(),
            timeout_s: approval.timeout_s,
        });
    }
    if let Some(value) = &step.noop {
        return Some(Action::Noop(value.clone()));
    }
    let sleep = step.sleep.as_ref()?;
    if sleep.ms as f64 > MAX_WAIT_S * 1000.0 {
        problems.push(InputProblem::new(
            format!("{at}/sleep/ms"),
            "must be at most a year",
        ));
    }
    Some(Action::Sleep { ms: sleep.ms })
}

fn check_retry(retry: &RetryPolicy, at: &str, problems: &mut Vec<InputProblem>) {
    if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
        problems.push(InputProblem::new(
            format!("{at}/max_attempts"),
            format!("must be 1 to {MAX_ATTEMPTS}"),
        ));
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        problems.push(InputProblem::new(
            format!("{at}/initial_backoff_ms"),
            "must not exceed max_backoff_ms",
        ));
    }
    if retry.max_backoff_ms > 86_400_000 {
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
    request: &HttpRequest,
    at: &str,
    in_scope: &dyn Fn(&str) -> bool,
    problems: &mut Vec<InputProblem>,
) {
    if !METHODS.contains(&request.method.as_str()) {
        problems.push(InputProblem::new(
            format!("{at}/method"),
            format!("must be one of {}", METHODS.join(", ")),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(input: Value) -> Vec<InputProblem> {
        Plan::parse(&input).expect_err("plan should be invalid")
    }

    #[test]
    fn accepts_a_full_plan() {
        let plan = Plan::parse(&json!({"steps": [
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
            method: "GET".into(),
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
        assert!(Plan::parse(&plan("\u{e9}".repeat(2048))).is_ok());
        assert_eq!(
            problems(plan("\u{e9}".repeat(2049)))[0].pointer,
            "/steps/0/approval/message"
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
}
