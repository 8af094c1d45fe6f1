//! The Workflows page (`/workflows`): every registered workflow with the JSON Schema of its
//! input and a form generated from that schema, which starts a mission
//! (`POST /workflows/{name}/start`). One field per top-level property of the input: a text box
//! for a string, a number box for a number, a checkbox for a boolean, a menu for an enum, and a
//! JSON box for anything else (an array of steps, a nested object). The form's values are
//! assembled into the input by the same types, and the workflow judges it as it judges any
//! submission: problems come back beside their fields, located by JSON pointer.

use super::session::{Session, SignedForm, SignedIn};
use super::{render, Chrome, PageError};
use crate::error::ApiError;
use crate::missions::non_empty;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hypercode_engine::SubmitError;
use serde_json::{Map, Value};

/// How a property is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Text,
    Integer,
    Number,
    Checkbox,
    Choice,
    Json,
}

impl Control {
    /// The control for a property's schema (a `$ref` into the schema's definitions is
    /// followed once).
    fn of(schema: &Value, root: &Value) -> Self {
        let schema = resolve(schema, root);
        if schema.get("enum").is_some_and(Value::is_array) {
            return Self::Choice;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        // `["string", "null"]` (an optional value) is still a text box.
        let concrete: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
        match concrete.as_slice() {
            ["string"] => Self::Text,
            ["integer"] => Self::Integer,
            ["number"] => Self::Number,
            ["boolean"] => Self::Checkbox,
            _ => Self::Json,
        }
    }

    /// The name templates switch on.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Checkbox => "checkbox",
            Self::Choice => "choice",
            Self::Json => "json",
        }
    }
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
        .unwrap_or(schema)
}

/// One field of a workflow's form.
pub(crate) struct Field {
    /// The property's name (the form field is `input.<name>`).
    name: String,
    control: &'static str,
    required: bool,
    description: Option<String>,
    /// An enum's choices.
    choices: Vec<String>,
    /// What the field holds (what was typed, after a refusal).
    value: String,
    /// The problems located at or under this property.
    problems: Vec<String>,
}

/// A workflow as the page shows it.
pub(crate) struct WorkflowCard {
    name: String,
    internal: bool,
    schema: String,
    fields: Vec<Field>,
    /// Problems not located at a field (the input as a whole, the idempotency key).
    problems: Vec<String>,
    idempotency_key: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct WorkflowsPage {
    chrome: Chrome,
    workflows: Vec<WorkflowCard>,
}

/// A workflow's form as posted: `input.<property>` fields, `idempotency_key`, `csrf`.
type StartForm = Vec<(String, String)>;

/// `GET /workflows`.
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Response, PageError> {
    render(&page_of(&state, &session, None))
}

/// `POST /workflows/{name}/start`: start a mission from the form; a refused input comes back
/// to the page with its problems beside their fields (422).
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    SignedForm(session, form): SignedForm<StartForm>,
) -> Result<Response, PageError> {
    let field = |key: &str| {
        form.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    session.require_operator()?;
    let registry = state.engine.registry();
    let workflow = registry
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no workflow is registered under `{name}`")))?;
    let schema = workflow.input_schema();
    let (input, mut problems) = assemble(&schema, &form);
    let key = non_empty(Some(field("idempotency_key").trim().to_owned()));
    if problems.is_empty() {
        match state.engine.submit(&name, Value::Object(input), key).await {
            Ok(submitted) => {
                let id = submitted.mission.id;
                tracing::info!(mission = %id, workflow = %name, by = %session.principal.name, "mission started from the workflows page");
                return Ok(Redirect::to(&format!("/missions/{id}")).into_response());
            }
            Err(SubmitError::Invalid(found)) => {
                problems = found.into_iter().map(|p| (p.pointer, p.message)).collect();
            }
            Err(other) => return Err(other.into()),
        }
    }
    let refused = Refused {
        workflow: name,
        form,
        problems,
    };
    let page = render(&page_of(&state, &session, Some(&refused)))?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// A refused start: what was typed and what is wrong with it.
struct Refused {
    workflow: String,
    form: StartForm,
    /// (JSON pointer into the input, message).
    problems: Vec<(String, String)>,
}

fn page_of(state: &AppState, session: &Session, refused: Option<&Refused>) -> WorkflowsPage {
    let registry = state.engine.registry();
    let workflows = registry
        .names()
        .filter_map(|name| registry.get(name))
        .map(|workflow| {
            let refused = refused.filter(|r| r.workflow == workflow.name());
            card(
                workflow.name(),
                workflow.is_internal(),
                &workflow.input_schema(),
                refused,
            )
        })
        .collect();
    WorkflowsPage {
        chrome: Chrome::new(session, "Workflows", "workflows"),
        workflows,
    }
}

fn card(name: &str, internal: bool, schema: &Value, refused: Option<&Refused>) -> WorkflowCard {
    let typed = |key: &str| {
        refused.and_then(|r| {
            r.form
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let problems = refused.map(|r| r.problems.as_slice()).unwrap_or_default();
    let mut placed = vec![false; problems.len()];
    let fields = properties(schema)
        .map(|(property, spec)| {
            let spec_resolved = resolve(spec, schema);
            let control = Control::of(spec, schema);
            let prefix = pointer_to(property);
            let mine = problems
                .iter()
                .enumerate()
                .filter(|(_, (pointer, _))| {
                    *pointer == prefix || pointer.starts_with(&format!("{prefix}/"))
                })
                .map(|(i, (pointer, message))| {
                    placed[i] = true;
                    if *pointer == prefix {
                        message.clone()
                    } else {
                        format!("{pointer}: {message}")
                    }
                })
                .collect();
            Field {
                name: property.clone(),
                control: control.as_str(),
                required: required.contains(&property.as_str()),
                description: spec_resolved["description"]
                    .as_str()
                    .or(spec["description"].as_str())
                    .map(str::to_owned),
                choices: spec_resolved["enum"]
                    .as_array()
                    .map(|e| e.iter().map(plain).collect())
                    .unwrap_or_default(),
                value: typed(&format!("input.{property}"))
                    .unwrap_or_else(|| default_value(spec_resolved, control)),
                problems: mine,
            }
        })
        .collect();
    let loose = problems
        .iter()
        .zip(placed)
        .filter(|(_, placed)| !placed)
        .map(|((pointer, message), _)| {
            if pointer.is_empty() {
                message.clone()
            } else {
                format!("{pointer}: {message}")
            }
        })
        .collect();
    WorkflowCard {
        name: name.to_owned(),
        internal,
        schema: serde_json::to_string_pretty(schema).unwrap_or_default(),
        fields,
        problems: loose,
        idempotency_key: typed("idempotency_key").unwrap_or_default(),
    }
}

/// The JSON pointer of a top-level property (RFC 6901 escapes `~` and `/`).
fn pointer_to(property: &str) -> String {
    format!("/{}", property.replace('~', "~0").replace('/', "~1"))
}

fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema["properties"]
        .as_object()
        .into_iter()
        .flat_map(Map::iter)
}

/// A value as a form shows it: a string without its quotes, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a field holds before anything is typed: the schema's default, if any.
fn default_value(spec: &Value, control: Control) -> String {
    match (spec.get("default"), control) {
        (Some(Value::Null) | None, _) => String::new(),
        (Some(value), Control::Json) => serde_json::to_string_pretty(value).unwrap_or_default(),
        (Some(value), _) => plain(value),
    }
}

/// The input the form's fields make, and the problems of fields that cannot be read (a JSON
/// box that is not JSON, a number box that is not a number). Empty fields are left out, so an
/// optional property stays absent and a missing required one is the workflow's to report.
fn assemble(schema: &Value, form: &StartForm) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut input = Map::new();
    let mut problems = Vec::new();
    for (property, spec) in properties(schema) {
        let raw = form
            .iter()
            .find(|(k, _)| *k == format!("input.{property}"))
            .map(|(_, v)| v.trim());
        let pointer = pointer_to(property);
        let control = Control::of(spec, schema);
        let value = match (control, raw) {
            (Control::Checkbox, raw) => Some(Ok(Value::Bool(raw.is_some()))),
            (_, None | Some("")) => None,
            (Control::Text | Control::Choice, Some(text)) => {
                // An enum of numbers takes the number back.
                let is_string_enum = resolve(spec, schema)["enum"]
                    .as_array()
                    .is_none_or(|e| e.iter().any(|v| v.as_str() == Some(text)));
                if is_string_enum {
                    Some(Ok(Value::String(text.to_owned())))
                } else {
                    Some(serde_json::from_str(text).map_err(|_| "choose one of the values"))
                }
            }
            (Control::Integer, Some(text)) => Some(
                text.parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| "must be a whole number"),
            ),
            (Control::Number, Some(text)) => Some(
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or("must be a number"),
            ),
            (Control::Json, Some(text)) => {
                Some(serde_json::from_str(text).map_err(|_| "must be JSON"))
            }
        };
        match value {
            Some(Ok(value)) => {
                input.insert(property.clone(), value);
            }
            Some(Err(message)) => problems.push((pointer, message.to_owned())),
            None => {}
        }
    }
    (input, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["steps", "name"],
            "properties": {
                "name": { "type": "string" },
                "count": { "type": ["integer", "null"] },
                "ratio": { "type": "number" },
                "dry_run": { "type": "boolean" },
                "mode": { "$ref": "#/$defs/Mode" },
                "steps": { "type": "array", "items": {} },
            },
            "$defs": { "Mode": { "type": "string", "enum": ["fast", "safe"] } },
        })
    }

    fn form(pairs: &[(&str, &str)]) -> StartForm {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn each_property_gets_the_control_of_its_type() {
        let schema = schema();
        let controls: Vec<(String, &str)> = properties(&schema)
            .map(|(name, spec)| (name.clone(), Control::of(spec, &schema).as_str()))
            .collect();
        for (name, control) in [
            ("name", "text"),
            ("count", "integer"),
            ("ratio", "number"),
            ("dry_run", "checkbox"),
            ("mode", "choice"),
            ("steps", "json"),
        ] {
            assert!(
                controls.contains(&(name.to_owned(), control)),
                "{name}: {controls:?}"
            );
        }
    }

    #[test]
    fn the_form_becomes_the_input_by_type() {
        let (input, problems) = assemble(
            &schema(),
            &form(&[
                ("input.name", " n "),
                ("input.count", "3"),
                ("input.ratio", ""),
                ("input.mode", "safe"),
                ("input.steps", r#"[{"name": "a"}]"#),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            Value::Object(input),
            json!({ "name": "n", "count": 3, "dry_run": false, "mode": "safe",
                    "steps": [{ "name": "a" }] })
        );
        let (_, problems) = assemble(
            &schema(),
            &form(&[("input.count", "three"), ("input.steps", "[")]),
        );
        let pointers: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pointers.len(), 2);
        assert!(pointers.contains(&"/count") && pointers.contains(&"/steps"));
    }
}
