//! `{{...}}` references in plan strings: `{{steps.NAME.output.PATH}}` reads an earlier step's
//! recorded output (PATH is dot-separated keys or array indexes), `{{mission.id}}` the mission's
//! id. A string that is exactly one reference takes the referenced JSON value as is; references
//! inside a longer string are interpolated as text.

use super::spec::HttpRequest;
use hypercode_engine::{InputProblem, MissionId};
use serde_json::Value;
use std::collections::BTreeMap;

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

/// Check a string's references against the steps in `scope`; returns the string with each
/// reference replaced by a placeholder, so the result can be validated (as a URL, say).
pub fn check(s: &str, scope: &[&str]) -> Result<String, TemplateError> {
    let mut sample = String::with_capacity(s.len());
    for (is_ref, text) in pieces(s)? {
        if !is_ref {
            sample.push_str(text);
            continue;
        }
        if let Reference::Step { name, .. } = parse(text)? {
            if !scope.contains(&name) {
                return Err(TemplateError::NotEarlier(text.to_owned(), name.to_owned()));
            }
        }
        sample.push('x');
    }
    Ok(sample)
}

/// Check every string inside a JSON value, reporting problems with pointers under `at`.
pub fn check_value(value: &Value, scope: &[&str], at: &str, problems: &mut Vec<InputProblem>) {
    match value {
        Value::String(s) => {
            if let Err(e) = check(s, scope) {
                problems.push(InputProblem::new(at, e.to_string()));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, scope, &format!("{at}/{i}"), problems);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_value(
                    item,
                    scope,
                    &format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    problems,
                );
            }
        }
        _ => {}
    }
}

/// The values references resolve against: the mission id and the outputs recorded so far.
#[derive(Debug, Clone)]
pub struct Scope {
    mission: MissionId,
    outputs: BTreeMap<String, Value>,
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
        self.outputs.insert(step.to_owned(), output);
        self
    }

    /// The outputs recorded so far, by step name.
    pub fn outputs(&self) -> &BTreeMap<String, Value> {
        &self.outputs
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
        assert!(matches!(
            check("{{input.x}}", &["a"]),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            check("{{steps.b.output}}", &["a"]),
            Err(TemplateError::NotEarlier(..))
        ));
        assert!(matches!(
            check("{{steps.a.output", &["a"]),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(
            check("http://h/{{steps.a.output.body.id}}/z", &["a"]).unwrap(),
            "http://h/x/z"
        );
    }
}
