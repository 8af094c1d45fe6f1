//! `{{...}}` references in plan strings: `{{steps.NAME.output.PATH}}` reads an earlier step's
//! recorded output (PATH is dot-separated keys or array indexes), `{{mission.id}}` the mission's
//! id, `{{secrets.NAME}}` a server-side secret. A string that is exactly one reference takes the
//! referenced JSON value as is; references inside a longer string are interpolated as text.
//!
//! Secrets resolve in two ways ([`Secrets`]): kept as their `{{secrets.NAME}}` text for what is
//! recorded, and to their values only for the call itself. Both happen in the same single pass
//! as the other references, so text that a step's output brings in is never read as a reference
//! (a callee cannot make a later step send it a secret by answering `{{secrets.OTHER}}`).

use super::spec::HttpRequest;
use hypercode_engine::redact::REDACTED;
use hypercode_engine::store::valid_secret_name;
use hypercode_engine::{InputProblem, MissionId};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A reference that cannot be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a closing `}}`.
    #[error("unclosed `{{{{` in `{0}`")]
    Unclosed(String),
    /// Not `mission.id`, `steps.NAME.output...` nor `secrets.NAME`.
    #[error(
        "unknown reference `{0}`: use `steps.NAME.output...`, `mission.id` or `secrets.NAME` \
         (NAME: a letter or `_`, then up to 62 letters, digits or `_`)"
    )]
    Unknown(String),
    /// A step that does not run before this point.
    #[error("`{0}` refers to step `{1}`, which does not run before this one")]
    NotEarlier(String, String),
    /// The path does not exist in the recorded output.
    #[error("`{0}` does not exist in the recorded output")]
    Missing(String),
    /// No server-side secret has this name (any more).
    #[error("the server-side secret `{0}` does not exist (was it deleted after the mission was submitted?)")]
    UnknownSecret(String),
}

enum Reference<'a> {
    MissionId,
    Step { name: &'a str, path: Vec<&'a str> },
    Secret(&'a str),
}

fn parse(expr: &str) -> Result<Reference<'_>, TemplateError> {
    if expr == "mission.id" {
        return Ok(Reference::MissionId);
    }
    if let Some(name) = expr.strip_prefix("secrets.") {
        return if valid_secret_name(name) {
            Ok(Reference::Secret(name))
        } else {
            Err(TemplateError::Unknown(expr.to_owned()))
        };
    }
    let mut parts = expr.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("steps"), Some(name), Some("output")) if !name.is_empty() => Ok(Reference::Step {
            name,
            path: parts.collect(),
        }),
        _ => Err(TemplateError::Unknown(expr.to_owned())),
    }
}

/// Split a string into literal text and `{{ expr }}` references.
fn pieces(s: &str) -> Result<Vec<(bool, &str)>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push((false, &rest[..start]));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(s.to_owned()))?;
        out.push((true, after[..end].trim()));
        rest = &after[end + 2..];
    }
    out.push((false, rest));
    Ok(out)
}

/// Check a string's references against the steps `in_scope` says may be referenced; returns the
/// string with each reference replaced by a placeholder, so the result can be validated (as a
/// URL, say).
pub fn check(s: &str, in_scope: &dyn Fn(&str) -> bool) -> Result<String, TemplateError> {
    let mut sample = String::with_capacity(s.len());
    for (is_ref, text) in pieces(s)? {
        if !is_ref {
            sample.push_str(text);
            continue;
        }
        if let Reference::Step { name, .. } = parse(text)? {
            if !in_scope(name) {
                return Err(TemplateError::NotEarlier(text.to_owned(), name.to_owned()));
            }
        }
        sample.push('x');
    }
    Ok(sample)
}

/// Check every string inside a JSON value, reporting problems with pointers under `at`.
pub fn check_value(
    value: &Value,
    in_scope: &dyn Fn(&str) -> bool,
    at: &str,
    problems: &mut Vec<InputProblem>,
) {
    match value {
        Value::String(s) => {
            if let Err(e) = check(s, in_scope) {
                problems.push(InputProblem::new(at, e.to_string()));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, in_scope, &format!("{at}/{i}"), problems);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_value(
                    item,
                    in_scope,
                    &format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    problems,
                );
            }
        }
        _ => {}
    }
}

/// Every string of a request that may hold references (its URL, header values and body
/// strings), each with its pointer under `at`.
fn strings<'a>(request: &'a HttpRequest, at: &str) -> Vec<(String, &'a str)> {
    fn walk<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::String(s) => out.push((at, s)),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out)
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, format!("{at}/{}", escape(k)), out)
                }
            }
            _ => {}
        }
    }
    let mut out = vec![(format!("{at}/url"), request.url.as_str())];
    out.extend(
        request
            .headers
            .iter()
            .map(|(name, value)| (format!("{at}/headers/{}", escape(name)), value.as_str())),
    );
    if let Some(body) = &request.body {
        walk(body, format!("{at}/body"), &mut out);
    }
    out
}

/// One RFC 6901 reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The server-side secrets `request` references, each with the pointer (under `at`) of the
/// string that names it.
pub fn secrets_in(request: &HttpRequest, at: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (pointer, s) in strings(request, at) {
        for (_, expr) in pieces(s).unwrap_or_default().into_iter().filter(|p| p.0) {
            if let Ok(Reference::Secret(name)) = parse(expr) {
                out.push((pointer.clone(), name.to_owned()));
            }
        }
    }
    out
}

/// The names of the secrets `request` references, sorted, each once.
pub fn secret_names(request: &HttpRequest) -> Vec<String> {
    let mut names: Vec<String> = secrets_in(request, "")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What `{{secrets.NAME}}` resolves to.
#[derive(Debug, Clone, Copy)]
pub enum Secrets<'a> {
    /// Its own text, `{{secrets.NAME}}`: for the request a step records.
    Kept,
    /// The secret's value: for the call only, never recorded.
    Values(&'a HashMap<String, String>),
}

/// `text` with every occurrence of a value of `values` replaced by `[redacted]` (longest value
/// first, so one that contains another is hidden whole; empty values hide nothing).
pub fn hide_in_text(text: &str, values: &HashMap<String, String>) -> String {
    let mut sorted: Vec<&str> = values
        .values()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
    sorted
        .into_iter()
        .fold(text.to_owned(), |text, value| text.replace(value, REDACTED))
}

/// [`hide_in_text`] applied to every string and object key in `value`.
pub fn hide_in_value(value: Value, values: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(hide_in_text(&s, values)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| hide_in_value(v, values))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (hide_in_text(&k, values), hide_in_value(v, values)))
                .collect(),
        ),
        other => other,
    }
}

/// The values references resolve against: the mission id and the outputs recorded so far. The
/// outputs are shared, not copied, between a scope and the narrowed scopes taken from it.
#[derive(Debug, Clone)]
pub struct Scope {
    mission: MissionId,
    outputs: BTreeMap<String, Arc<Value>>,
}

impl Scope {
    /// An empty scope for a mission.
    pub fn new(mission: MissionId) -> Self {
        Self {
            mission,
            outputs: BTreeMap::new(),
        }
    }

    /// This scope plus one more step's output.
    pub fn with_output(mut self, step: &str, output: Value) -> Self {
        self.outputs.insert(step.to_owned(), Arc::new(output));
        self
    }

    /// Only the outputs `request` references: what a compensation keeps until it runs. Keeping
    /// the whole scope would make a plan's memory grow with the square of its length.
    pub fn narrowed_to(&self, request: &HttpRequest) -> Scope {
        let mut outputs = BTreeMap::new();
        for (_, s) in strings(request, "") {
            for (_, expr) in pieces(s).unwrap_or_default().into_iter().filter(|p| p.0) {
                if let Ok(Reference::Step { name, .. }) = parse(expr) {
                    if let Some((name, output)) = self.outputs.get_key_value(name) {
                        outputs.insert(name.clone(), output.clone());
                    }
                }
            }
        }
        Scope {
            mission: self.mission,
            outputs,
        }
    }

    /// The outputs recorded so far, by step name.
    pub fn into_outputs(self) -> impl Iterator<Item = (String, Value)> {
        self.outputs
            .into_iter()
            .map(|(name, output)| (name, Arc::unwrap_or_clone(output)))
    }

    /// Resolve every reference in a request, secrets as `secrets` says.
    pub fn resolve_request(
        &self,
        request: &HttpRequest,
        secrets: Secrets<'_>,
    ) -> Result<HttpRequest, TemplateError> {
        let text = |s: &str| self.resolve_str(s, secrets).map(|v| as_text(&v));
        Ok(HttpRequest {
            method: request.method,
            url: text(&request.url)?,
            headers: request
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(v)?)))
                .collect::<Result<_, TemplateError>>()?,
            body: request
                .body
                .as_ref()
                .map(|b| self.resolve_value(b, secrets))
                .transpose()?,
            timeout_ms: request.timeout_ms,
        })
    }

    /// Resolve every reference in `value`; a secret reference stays as its text (secrets are
    /// not handed to agents).
    pub fn resolve(&self, value: &Value) -> Result<Value, TemplateError> {
        self.resolve_value(value, Secrets::Kept)
    }

    fn resolve_value(&self, value: &Value, secrets: Secrets<'_>) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.resolve_str(s, secrets)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve_value(v, secrets))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve_value(v, secrets)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn resolve_str(&self, s: &str, secrets: Secrets<'_>) -> Result<Value, TemplateError> {
        let pieces = pieces(s)?;
        if let [(false, ""), (true, expr), (false, "")] = pieces.as_slice() {
            return self.lookup(expr, secrets);
        }
        let mut out = String::with_capacity(s.len());
        for (is_ref, text) in pieces {
            if is_ref {
                out.push_str(&as_text(&self.lookup(text, secrets)?));
            } else {
                out.push_str(text);
            }
        }
        Ok(Value::String(out))
    }

    fn lookup(&self, expr: &str, secrets: Secrets<'_>) -> Result<Value, TemplateError> {
        match parse(expr)? {
            Reference::MissionId => Ok(Value::String(self.mission.to_string())),
            Reference::Secret(name) => match secrets {
                Secrets::Kept => Ok(Value::String(format!("{{{{secrets.{name}}}}}"))),
                Secrets::Values(values) => values
                    .get(name)
                    .map(|value| Value::String(value.clone()))
                    .ok_or_else(|| TemplateError::UnknownSecret(name.to_owned())),
            },
            Reference::Step { name, path } => {
                let mut at = self
                    .outputs
                    .get(name)
                    .map(Arc::as_ref)
                    .ok_or_else(|| TemplateError::Missing(expr.to_owned()))?;
                for key in path {
                    at = match at {
                        Value::Object(map) => map.get(key),
                        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                        _ => None,
                    }
                    .ok_or_else(|| TemplateError::Missing(expr.to_owned()))?;
                }
                Ok(at.clone())
            }
        }
    }
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope::new(MissionId::new()).with_output(
            "a",
            json!({"status": 201, "body": {"id": 42, "tags": ["x", "y"]}}),
        )
    }

    #[test]
    fn a_whole_string_reference_keeps_its_type() {
        assert_eq!(
            scope()
                .resolve_value(&json!("{{steps.a.output.body.id}}"), Secrets::Kept)
                .unwrap(),
            json!(42)
        );
        assert_eq!(
            scope()
                .resolve_value(
                    &json!({"t": "{{ steps.a.output.body.tags.1 }}"}),
                    Secrets::Kept
                )
                .unwrap(),
            json!({"t": "y"})
        );
    }

    #[test]
    fn references_inside_text_are_interpolated() {
        let v = scope()
            .resolve_value(
                &json!("http://h/items/{{steps.a.output.body.id}}?s={{steps.a.output.status}}"),
                Secrets::Kept,
            )
            .unwrap();
        assert_eq!(v, json!("http://h/items/42?s=201"));
    }

    #[test]
    fn missing_paths_and_unknown_references_are_errors() {
        assert!(matches!(
            scope().resolve_value(&json!("{{steps.a.output.body.nope}}"), Secrets::Kept),
            Err(TemplateError::Missing(_))
        ));
        let only_a = |name: &str| name == "a";
        assert!(matches!(
            check("{{input.x}}", &only_a),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            check("{{steps.b.output}}", &only_a),
            Err(TemplateError::NotEarlier(..))
        ));
        assert!(matches!(
            check("{{steps.a.output", &only_a),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(
            check("http://h/{{steps.a.output.body.id}}/z", &only_a).unwrap(),
            "http://h/x/z"
        );
    }

    #[test]
    fn a_narrowed_scope_keeps_only_the_referenced_outputs() {
        let wide = scope()
            .with_output("b", json!({"body": {"big": "x".repeat(1000)}}))
            .with_output("c", json!(3));
        let request: HttpRequest = serde_json::from_value(json!({
            "url": "http://h/{{steps.a.output.body.id}}",
            "headers": {"X-C": "{{ steps.c.output }}"},
            "body": {"n": ["{{mission.id}}", "{{steps.a.output.status}}"]}
        }))
        .unwrap();
        let narrow = wide.narrowed_to(&request);
        let names: Vec<&String> = narrow.outputs.keys().collect();
        assert_eq!(names, ["a", "c"]);
        assert!(Arc::ptr_eq(&narrow.outputs["a"], &wide.outputs["a"]));
        assert_eq!(
            narrow
                .resolve_request(&request, Secrets::Kept)
                .map(|r| r.url),
            Ok("http://h/42".to_owned())
        );
    }

    #[test]
    fn secrets_are_kept_as_text_or_resolved_in_one_pass() {
        // A callee answered with a reference to another secret: it must stay text.
        let scope = scope().with_output("b", json!("{{secrets.OTHER}}"));
        let request: HttpRequest = serde_json::from_value(json!({
            "url": "http://h/?t={{secrets.TOKEN}}&e={{steps.b.output}}",
            "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
            "body": {"whole": "{{secrets.TOKEN}}"}
        }))
        .unwrap();
        assert_eq!(
            secrets_in(&request, "/x"),
            [
                ("/x/url".to_owned(), "TOKEN".to_owned()),
                ("/x/headers/Authorization".to_owned(), "TOKEN".to_owned()),
                ("/x/body/whole".to_owned(), "TOKEN".to_owned()),
            ]
        );
        assert_eq!(secret_names(&request), ["TOKEN"]);
        let kept = scope.resolve_request(&request, Secrets::Kept).unwrap();
        assert_eq!(
            kept.url,
            "http://h/?t={{secrets.TOKEN}}&e={{secrets.OTHER}}"
        );
        assert_eq!(kept.headers["Authorization"], "Bearer {{secrets.TOKEN}}");
        let values: HashMap<String, String> = [
            ("TOKEN".to_owned(), "s3cr3t".to_owned()),
            ("OTHER".to_owned(), "never".to_owned()),
        ]
        .into();
        let sent = scope
            .resolve_request(&request, Secrets::Values(&values))
            .unwrap();
        assert_eq!(sent.url, "http://h/?t=s3cr3t&e={{secrets.OTHER}}");
        assert_eq!(sent.headers["Authorization"], "Bearer s3cr3t");
        assert_eq!(sent.body, Some(json!({"whole": "s3cr3t"})));
        assert_eq!(
            scope.resolve_request(&request, Secrets::Values(&HashMap::new())),
            Err(TemplateError::UnknownSecret("TOKEN".to_owned()))
        );
        let any = |_: &str| true;
        assert!(check("{{secrets.9bad}}", &any).is_err());
        assert!(check("{{secrets.}}", &any).is_err());
        assert_eq!(check("a{{secrets.OK_1}}", &any).unwrap(), "ax");
    }
}
