//! The submit page (`/submit`): paste or edit a mission's input (for `plan`, the plan), see
//! what is wrong with it while typing (`/submit/check` asks the workflow itself, so the page
//! and a real submission judge alike), and submit it. `?like=ID` starts from another mission
//! ("start another like this").

use super::format;
use super::session::{SignedForm, SignedIn};
use super::{render, workflow_names, Chrome, PageError};
use crate::missions::{find, mission_id, non_empty};
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use hypercode_engine::NUL_MESSAGE;
use hypercode_engine::{InputProblem, SubmitError};
use serde::Deserialize;
use serde_json::Value;

/// What a new plan starts from: one of each kind of step. Its call is a `HEAD` of this server's
/// `/healthz` (`{base}` is where the workers reach the server), the one request the egress
/// policy lets a plan send the server itself, so the sample runs where no other service does.
const EXAMPLE_PLAN: &str = r#"{
  "steps": [
    {"name": "check", "http": {"method": "HEAD", "url": "{base}/healthz"},
     "retry": {"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 5000}},
    {"name": "sign-off", "approval": {"message": "Ship it?", "timeout_s": 3600}},
    {"name": "cool-down", "sleep": {"ms": 500}},
    {"name": "done", "noop": {"shipped": true}}
  ]
}"#;

/// One problem with the input, located by a JSON pointer into it.
pub(crate) struct Problem {
    pointer: String,
    message: String,
}

impl From<InputProblem> for Problem {
    fn from(p: InputProblem) -> Self {
        Self {
            pointer: p.pointer,
            message: p.message,
        }
    }
}

/// The editor's state.
pub(crate) struct SubmitView {
    workflows: Vec<String>,
    workflow: String,
    input: String,
    idempotency_key: String,
    problems: Vec<Problem>,
    /// Whether the problems come from a check (an empty list then means "valid").
    checked: bool,
}

#[derive(Template)]
#[template(path = "submit.html")]
struct SubmitPage<'a> {
    chrome: Chrome,
    v: &'a SubmitView,
}

#[derive(Template)]
#[template(path = "submit_problems.html")]
struct ProblemList<'a> {
    v: &'a SubmitView,
}

/// The editor's form.
#[derive(Debug, Deserialize)]
pub(crate) struct SubmitForm {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    idempotency_key: String,
}

/// The sample plan, calling the health probe of this server where the workers reach it:
/// `HYPERCODE_INTERNAL_URL` when set (the compose service name), else the address the browser
/// used, which is the server's own when the workers run beside it.
fn example_plan(state: &AppState, headers: &HeaderMap) -> String {
    let base = match &state.internal_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .filter(|host| host.parse::<axum::http::uri::Authority>().is_ok())
                .unwrap_or("127.0.0.1:8000");
            format!("http://{host}")
        }
    };
    EXAMPLE_PLAN.replace("{base}", &base)
}

/// The submit page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    /// "Start another like this": the mission whose workflow and input fill the editor.
    #[serde(default)]
    like: String,
}

/// `GET /submit`, or `GET /submit?like=ID` to start from a mission's workflow and input (as
/// the API shows it: a secret in it reads `[redacted]` and has to be typed again).
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let workflows = workflow_names(&state);
    let (workflow, input) = match non_empty(Some(query.like)) {
        Some(like) => {
            let mission = find(&state, mission_id(&like)?).await?;
            (mission.workflow, format::json(&mission.input))
        }
        None if workflows.iter().any(|w| w == "plan") => {
            ("plan".to_owned(), example_plan(&state, &headers))
        }
        None => (
            workflows.first().cloned().unwrap_or_default(),
            "{}".to_owned(),
        ),
    };
    render(&SubmitPage {
        chrome: Chrome::new(&session, "Submit a mission", "submit"),
        v: &SubmitView {
            workflows,
            workflow,
            input,
            idempotency_key: String::new(),
            problems: Vec::new(),
            checked: false,
        },
    })
}

/// `POST /submit/check`: the problems of the editor's content, as the list the page shows.
pub(crate) async fn check(
    State(state): State<AppState>,
    SignedForm(_, form): SignedForm<SubmitForm>,
) -> Result<Response, PageError> {
    let problems = match parse(&form.input) {
        Ok(input) => match state.engine.check_input(&form.workflow, &input) {
            Ok(()) => Vec::new(),
            Err(error) => editor_problems(error).unwrap_or_else(|other| {
                vec![Problem {
                    pointer: String::new(),
                    message: other.to_string(),
                }]
            }),
        },
        Err(problem) => vec![problem],
    };
    render(&ProblemList {
        v: &view(&state, form, problems),
    })
}

/// `POST /submit`: submit, then show the new mission; a refused input comes back to the
/// editor with its problems (422).
pub(crate) async fn submit(
    State(state): State<AppState>,
    SignedForm(session, form): SignedForm<SubmitForm>,
) -> Result<Response, PageError> {
    session.require_operator()?;
    let input = match parse(&form.input) {
        Ok(input) => input,
        Err(problem) => return refused(&state, &session, form, vec![problem]),
    };
    let key = non_empty(Some(form.idempotency_key.trim().to_owned()));
    match state.engine.submit(&form.workflow, input, key).await {
        Ok(submitted) => {
            let id = submitted.mission.id;
            tracing::info!(mission = %id, by = %session.principal.name, "submission from the dashboard");
            Ok(Redirect::to(&format!("/missions/{id}")).into_response())
        }
        Err(error) => match editor_problems(error) {
            Ok(problems) => refused(&state, &session, form, problems),
            Err(other) => Err(other.into()),
        },
    }
}

/// What the editor shows for a refused input, located in it: the workflow's problems, an
/// unknown workflow, a NUL character. Other refusals (a size limit, the idempotency key,
/// storage) are not about the text being edited and come back as they are.
fn editor_problems(error: SubmitError) -> Result<Vec<Problem>, SubmitError> {
    match error {
        SubmitError::Invalid(problems) => Ok(problems.into_iter().map(Problem::from).collect()),
        SubmitError::UnknownWorkflow(name) => Ok(vec![Problem {
            pointer: String::new(),
            message: format!("no workflow is registered under `{name}`"),
        }]),
        SubmitError::NulInInput { pointer } => Ok(vec![Problem {
            pointer,
            message: NUL_MESSAGE.to_owned(),
        }]),
        other => Err(other),
    }
}

fn refused(
    state: &AppState,
    session: &super::session::Session,
    form: SubmitForm,
    problems: Vec<Problem>,
) -> Result<Response, PageError> {
    let page = render(&SubmitPage {
        chrome: Chrome::new(session, "Submit a mission", "submit"),
        v: &view(state, form, problems),
    })?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

fn view(state: &AppState, form: SubmitForm, problems: Vec<Problem>) -> SubmitView {
    SubmitView {
        workflows: workflow_names(state),
        workflow: form.workflow,
        input: form.input,
        idempotency_key: form.idempotency_key,
        problems,
        checked: true,
    }
}

/// The editor's text as JSON, or where it stops being JSON.
fn parse(text: &str) -> Result<Value, Problem> {
    serde_json::from_str(text).map_err(|e| Problem {
        pointer: String::new(),
        message: format!(
            "not valid JSON at line {}, column {}: {}",
            e.line(),
            e.column(),
            // serde's message ends with its own " at line L column C"; it is said above.
            e.to_string()
                .rsplit_once(" at line ")
                .map_or_else(|| e.to_string(), |(what, _)| what.to_owned())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_say_where() {
        let problem = parse("{\n  \"steps\": [\n    {\"name\": }\n]}").err();
        let message = problem.map(|p| p.message).unwrap_or_default();
        assert!(
            message.starts_with("not valid JSON at line 3, column 14: "),
            "{message}"
        );
        assert!(!message.contains(" at line 3 column"), "{message}");
        assert!(parse(&EXAMPLE_PLAN.replace("{base}", "http://127.0.0.1:8000")).is_ok());
    }
}
