//! `{{...}}` references in plan strings: `{{steps.NAME.output.PATH}}` reads an earlier step's
//! recorded output (PATH is dot-separated keys or array indexes), `{{mission.id}}` the mission's
//! id. A string that is exactly one reference takes the referenced JSON value as is; references
//! inside a longer string are interpolated as text.

use super::spec::HttpRequest;
use hypercode_engine::{InputProblem, MissionId};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A reference that cannot be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a closing `}}`.
    #[error("unclosed `{{{{` in `{0}`")]
    Unclosed(String),
    /// Not `mission.id` nor `steps.NAME.output...`.
    #[error("unknown reference `{0}`: use `steps.NAME.output...` or `mission.id`")]
    Unknown(String),
    /// A step that does not run before this point.
    #[error("`{0}` refers to step `{1}`, which does not run before this one")]
    NotEarlier(String, String),
    /// The path does not exist in the recorded output.
    #[error("`{0}` does not exist in the recorded output")]
    Missing(String),
}

enum Reference<'a> {
    MissionId,
    Step { name: &'a str, path: Vec<&'a str> },
}

fn parse(expr: &str) -> Result<Reference<'_>, TemplateError> {
    if expr == "mission.id" {
        return Ok(Reference::MissionId);
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

/// Every string of a request that may hold references: its URL, header values and body strings.
fn strings(request: &HttpRequest) -> Vec<&str> {
    fn walk<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![request.url.as_str()];
    out.extend(request.headers.values().map(String::as_str));
    if let Some(body) = &request.body {
        walk(body, &mut out);
    }
    out
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
        for s in strings(request) {
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

    /// Resolve every reference in a request.
    pub fn resolve_request(&self, request: &HttpRequest) -> Result<HttpRequest, TemplateError> {
        let text = |s: &str| self.resolve_str(s).map(|v| as_text(&v));
        Ok(HttpRequest {
            method: request.method.clone(),
            url: text(&request.url)?,
            headers: request
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(v)?)))
                .collect::<Result<_, TemplateError>>()?,
            body: request
                .body
                .as_ref()
                .map(|b| self.resolve_value(b))
                .transpose()?,
            timeout_ms: request.timeout_ms,
        })
    }

    fn resolve_value(&self, value: &Value) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.resolve_str(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve_value(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn resolve_str(&self, s: &str) -> Result<Value, TemplateError> {
        let pieces = pieces(s)?;
        if let [(false, ""), (true, expr), (false, "")] = pieces.as_slice() {
            return self.lookup(expr);
        }
        let mut out = String::with_capacity(s.len());
        for (is_ref, text) in pieces {
            if is_ref {
                out.push_str(&as_text(&self.lookup(text)?));
            } else {
                out.push_str(text);
            }
        }
        Ok(Value::String(out))
    }

    fn lookup(&self, expr: &str) -> Result<Value, TemplateError> {
        match parse(expr)? {
            Reference::MissionId => Ok(Value::String(self.mission.to_string())),
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
                .resolve_value(&json!("{{steps.a.output.body.id}}"))
                .unwrap(),
            json!(42)
        );
        assert_eq!(
            scope()
                .resolve_value(&json!({"t": "{{ steps.a.output.body.tags.1 }}"}))
                .unwrap(),
            json!({"t": "y"})
        );
    }

    #[test]
    fn references_inside_text_are_interpolated() {
        let v = scope()
            .resolve_value(&json!(
                "http://h/items/{{steps.a.output.body.id}}?s={{steps.a.output.status}}"
            ))
            .unwrap();
        assert_eq!(v, json!("http://h/items/42?s=201"));
    }

    #[test]
    fn missing_paths_and_unknown_references_are_errors() {
        assert!(matches!(
            scope().resolve_value(&json!("{{steps.a.output.body.nope}}")),
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
            narrow.resolve_request(&request).map(|r| r.url),
            Ok("http://h/42".to_owned())
        );
    }
}
