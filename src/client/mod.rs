//! `hypercode mission ...`, `hypercode workflows`, `hypercode schedule ...` and
//! `hypercode secrets ...`: a command-line client of the HTTP API. It needs only the server's
//! address (`HYPERCODE_URL`) and a key (`HYPERCODE_API_KEY` or `HYPERCODE_API_KEY_FILE`), never
//! the database.
//!
//! Exit codes: 0 success; 1 the server refused the request (4xx, its problem printed on stderr)
//! or a watched mission ended failed or cancelled; 2 a usage error (bad arguments, an unreadable
//! or non-JSON submission file, a misconfigured key); 3 the server could not be reached or
//! answered 5xx.

mod mcp;
mod render;
mod schedules;
mod secrets;

pub use mcp::run as run_mcp;
pub use schedules::{run as run_schedules, ScheduleArgs};
pub use secrets::{run as run_secrets, SecretsArgs};

use clap::{Args, Subcommand};
use futures::StreamExt as _;
use hypercode_api::mcp::{encode_segment, mission_path, SseParser};
use hypercode_engine::{EventType, MissionStatus};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

/// The server used when `HYPERCODE_URL` is not set.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Longest an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server sends a keep-alive comment every 15 s; silence for this long means the stream is
/// dead and is reopened.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// Consecutive failed attempts to reopen a dropped event stream before giving up (exit 3).
const MAX_RECONNECTS: u32 = 10;

/// The exit codes, also in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (for `watch`: the mission succeeded)
  1  the server refused the request (4xx; its problem is printed on stderr), or the watched
     mission ended failed or cancelled
  2  usage error (bad arguments, an unreadable or non-JSON FILE, both HYPERCODE_API_KEY and
     HYPERCODE_API_KEY_FILE set)
  3  the server could not be reached, or answered with a 5xx error

Environment: HYPERCODE_URL (default http://127.0.0.1:8000), HYPERCODE_API_KEY or
HYPERCODE_API_KEY_FILE (a file holding the key).";

/// `hypercode mission`: options shared by every mission subcommand.
#[derive(Debug, Args)]
pub struct MissionArgs {
    /// Print the server's raw JSON response instead of text (for `watch`: one event per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: MissionCommand,
}

/// The mission subcommands.
#[derive(Debug, Subcommand)]
enum MissionCommand {
    /// Submit a mission. FILE (or `-` for stdin) holds {"workflow", "input",
    /// "idempotency_key"?}, or a bare plan {"steps": [...]} for the `plan` workflow; or name
    /// the workflow with --workflow and give only its input with --input.
    Submit {
        /// A JSON file, or `-` to read standard input.
        #[arg(required_unless_present = "workflow", conflicts_with = "workflow")]
        file: Option<String>,
        /// The workflow to start (see `hypercode workflows`); the input comes from --input.
        #[arg(long)]
        workflow: Option<String>,
        /// With --workflow: a JSON file holding the input, or `-` for stdin (default `{}`).
        #[arg(long, requires = "workflow")]
        input: Option<String>,
        /// With --workflow: a repeated key returns the mission it first created.
        #[arg(long, requires = "workflow")]
        idempotency_key: Option<String>,
    },
    /// List missions, newest first.
    List {
        /// Only missions with this status (pending, running, waiting, succeeded, failed,
        /// cancelled...).
        #[arg(long)]
        status: Option<String>,
        /// Only missions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many missions (the server's default is 50).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a mission with its steps.
    Show {
        /// The mission's id.
        id: String,
    },
    /// A mission's history: every event, in order.
    History {
        /// The mission's id.
        id: String,
    },
    /// Approve a step waiting for approval.
    Approve {
        /// The mission's id.
        id: String,
        /// The approval step's name.
        step: String,
        /// A comment recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a step waiting for approval (the mission fails and compensates).
    Reject {
        /// The mission's id.
        id: String,
        /// The approval step's name.
        step: String,
        /// A comment recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Cancel a mission; its compensations run.
    Cancel {
        /// The mission's id.
        id: String,
    },
    /// Run a failed mission again from its first failed step (steps that succeeded keep
    /// their output and do not run again).
    Retry {
        /// The mission's id.
        id: String,
    },
    /// Follow a mission's events live until it ends: exit 0 if it succeeded, 1 if it failed
    /// or was cancelled.
    Watch {
        /// The mission's id.
        id: String,
    },
}

/// Why a command did not succeed; each maps to an exit code.
#[derive(Debug)]
enum Failure {
    /// Exit 1: the server answered 4xx.
    Refused { status: StatusCode, body: String },
    /// Exit 1: the watched mission ended failed or cancelled (already reported).
    MissionDidNotSucceed,
    /// Exit 2: bad local input.
    Usage(String),
    /// Exit 3: the server answered 5xx.
    ServerError { status: StatusCode, body: String },
    /// Exit 3: no answer at all.
    Unreachable(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } | Self::MissionDidNotSucceed => 1,
            Self::Usage(_) => 2,
            Self::ServerError { .. } | Self::Unreachable(_) => 3,
        }
    }

    /// Tell the user on stderr.
    fn report(&self) {
        match self {
            Self::Refused { status, body } | Self::ServerError { status, body } => {
                eprint!("{}", render::problem(*status, body));
            }
            Self::MissionDidNotSucceed => {}
            Self::Usage(message) => eprintln!("error: {message}"),
            Self::Unreachable(message) => eprintln!("error: {message}"),
        }
    }

    /// A non-2xx response.
    fn from_status(status: StatusCode, body: String) -> Self {
        if status.is_server_error() {
            Self::ServerError { status, body }
        } else {
            Self::Refused { status, body }
        }
    }
}

type Outcome<T> = Result<T, Failure>;

/// `hypercode workflows`: options.
#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    /// Print the server's raw JSON response instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `hypercode workflows`: the registered workflows with their input schemas.
pub async fn run_workflows(args: WorkflowsArgs) -> ExitCode {
    with_client(|client| async move {
        let (_, list) = client
            .call(Method::GET, "/api/v1/workflows", &[], None)
            .await?;
        emit(args.json, &list, || render::workflow_list(&list));
        Ok(())
    })
    .await
}

/// Run a mission subcommand; returns the process's exit code.
pub async fn run(args: MissionArgs) -> ExitCode {
    with_client(|client| async move { client.execute(args.command, args.json).await }).await
}

/// Run `command` with a client configured from the environment, report its failure, and turn
/// the outcome into the documented exit code.
async fn with_client<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Outcome<()>>,
{
    let result = match Client::from_env() {
        Ok(client) => command(client).await,
        Err(failure) => Err(failure),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The HTTP client with the server's address and the key.
struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    fn from_env() -> Outcome<Self> {
        let base = std::env::var("HYPERCODE_URL")
            .ok()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let key = crate::config::secret("HYPERCODE_API_KEY")
            .map_err(|e| Failure::Usage(format!("{e:#}")))?
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        let http = reqwest::Client::builder()
            .user_agent(concat!("hypercode-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Failure::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base, key })
    }

    async fn execute(&self, command: MissionCommand, json: bool) -> Outcome<()> {
        match command {
            MissionCommand::Submit {
                file,
                workflow,
                input,
                idempotency_key,
            } => {
                let body = match (file, workflow) {
                    (Some(file), _) => submission(&read_input(&file)?)?,
                    (None, Some(workflow)) => {
                        let input = match input {
                            Some(input) => workflow_input(&read_input(&input)?)?,
                            None => json!({}),
                        };
                        json!({
                            "workflow": workflow,
                            "input": input,
                            "idempotency_key": idempotency_key,
                        })
                    }
                    (None, None) => {
                        return Err(Failure::Usage("give FILE or --workflow NAME".to_owned()))
                    }
                };
                let (status, mission) = self
                    .call(Method::POST, "/api/v1/missions", &[], Some(&body))
                    .await?;
                emit(json, &mission, || {
                    render::submitted(&mission, status == StatusCode::OK)
                });
            }
            MissionCommand::List {
                status,
                workflow,
                limit,
                cursor,
            } => {
                let mut query = Vec::new();
                query.extend(status.map(|s| ("status", s)));
                query.extend(workflow.map(|w| ("workflow", w)));
                query.extend(limit.map(|l| ("limit", l.to_string())));
                query.extend(cursor.map(|c| ("cursor", c)));
                let (_, page) = self
                    .call(Method::GET, "/api/v1/missions", &query, None)
                    .await?;
                emit(json, &page, || render::mission_list(&page));
            }
            MissionCommand::Show { id } => {
                let (_, mission) = self
                    .call(Method::GET, &mission_path(&id, ""), &[], None)
                    .await?;
                emit(json, &mission, || render::mission(&mission));
            }
            MissionCommand::History { id } => {
                let events = self.history(&id).await?;
                let events = Value::Array(events);
                emit(json, &events, || render::history(&events));
            }
            MissionCommand::Approve { id, step, comment } => {
                self.decide(&id, &step, true, comment, json).await?;
            }
            MissionCommand::Reject { id, step, comment } => {
                self.decide(&id, &step, false, comment, json).await?;
            }
            MissionCommand::Cancel { id } => {
                let (_, mission) = self
                    .call(Method::POST, &mission_path(&id, "/cancel"), &[], None)
                    .await?;
                emit(json, &mission, || render::cancelled(&mission));
            }
            MissionCommand::Retry { id } => {
                let (_, mission) = self
                    .call(Method::POST, &mission_path(&id, "/retry"), &[], None)
                    .await?;
                emit(json, &mission, || render::retried(&mission));
            }
            MissionCommand::Watch { id } => self.watch(&id, json).await?,
        }
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.header("X-API-Key", key),
            None => request,
        }
    }

    /// One JSON request; a non-2xx answer or no answer is a [`Failure`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Outcome<(StatusCode, Value)> {
        let mut request = self
            .request(method, path)
            .timeout(REQUEST_TIMEOUT)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(Failure::from_status(status, text));
        }
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| Failure::ServerError {
                status,
                body: format!("the response is not JSON ({e}): {text}"),
            })?
        };
        Ok((status, value))
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        Failure::Unreachable(format!(
            "could not reach the HyperCode server at {} (HYPERCODE_URL): {}",
            self.base,
            error_chain(error)
        ))
    }

    /// Every event of a mission's history, page by page.
    async fn history(&self, id: &str) -> Outcome<Vec<Value>> {
        let path = mission_path(id, "/history");
        let mut events = Vec::new();
        let mut after = 0_i64;
        loop {
            let query = [("after", after.to_string()), ("limit", "1000".to_owned())];
            let (_, page) = self.call(Method::GET, &path, &query, None).await?;
            let batch = page["events"].as_array().cloned().unwrap_or_default();
            match (
                batch.last().and_then(|e| e["seq"].as_i64()),
                page["next_after"].as_i64(),
            ) {
                (Some(last), _) if last > after => {
                    after = last;
                    events.extend(batch);
                }
                _ => return Ok(events),
            }
        }
    }

    async fn decide(
        &self,
        id: &str,
        step: &str,
        approve: bool,
        comment: Option<String>,
        json: bool,
    ) -> Outcome<()> {
        let body = json!({
            "decision": if approve { "approve" } else { "reject" },
            "comment": comment,
        });
        let path = mission_path(id, &format!("/approvals/{}", encode_segment(step)));
        let (_, mission) = self.call(Method::POST, &path, &[], Some(&body)).await?;
        emit(json, &mission, || render::decided(&mission, step, approve));
        Ok(())
    }

    /// Follow `GET /api/v1/events?mission=ID` until a terminal event; reopen a dropped stream
    /// after the last event seen (`Last-Event-ID`).
    async fn watch(&self, id: &str, json: bool) -> Outcome<()> {
        let mut last_id: Option<String> = None;
        let mut failures = 0_u32;
        let mut connected_once = false;
        loop {
            let mut request = self
                .request(Method::GET, "/api/v1/events")
                .query(&[("mission", id)])
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(last) = &last_id {
                request = request.header("Last-Event-ID", last);
            }
            let dropped = match request.send().await {
                Err(e) => self.unreachable(&e),
                Ok(response) if response.status().is_success() => {
                    connected_once = true;
                    match self
                        .follow(response, &mut last_id, &mut failures, json)
                        .await
                    {
                        Some(end) => return end,
                        None => Failure::Unreachable(format!(
                            "the event stream from {} dropped",
                            self.base
                        )),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let failure = Failure::from_status(status, body);
                    if !status.is_server_error() {
                        return Err(failure);
                    }
                    failure
                }
            };
            failures += 1;
            // Never connected: the server is not there (or refuses); say so at once.
            if !connected_once || failures > MAX_RECONNECTS {
                return Err(dropped);
            }
            let backoff = Duration::from_millis(250 * 2_u64.pow(failures.min(5)));
            if !json {
                eprintln!(
                    "(event stream interrupted; reconnecting in {:.1} s)",
                    backoff.as_secs_f64()
                );
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// Read one open stream. `Some(outcome)` when the mission ended, `None` when the stream
    /// dropped (to be reopened).
    async fn follow(
        &self,
        response: reqwest::Response,
        last_id: &mut Option<String>,
        failures: &mut u32,
        json: bool,
    ) -> Option<Outcome<()>> {
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(STREAM_SILENCE, stream.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                // An error, the end of the stream, or silence: reopen it.
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            };
            for message in parser.push(&chunk) {
                if let Some(id) = message.id {
                    *last_id = Some(id);
                }
                // A comment-only message (keep-alive) or one without data.
                let Some(data) = message.data else { continue };
                *failures = 0;
                let event: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                // A type this client does not know (from a newer server) ends nothing.
                let kind = event["type"]
                    .as_str()
                    .or(message.event.as_deref())
                    .and_then(|name| name.parse::<EventType>().ok());
                if json {
                    println!("{event}");
                } else {
                    println!("{}", render::event_line(&event));
                }
                match kind.and_then(EventType::final_status) {
                    Some(MissionStatus::Succeeded) => return Some(Ok(())),
                    Some(status) => {
                        if !json {
                            eprintln!(
                                "mission {} {}",
                                event["mission_id"].as_str().unwrap_or("?"),
                                status.as_str()
                            );
                        }
                        return Some(Err(Failure::MissionDidNotSucceed));
                    }
                    None => {}
                }
            }
        }
    }
}

/// Print the raw JSON, or the human rendering.
fn emit(json: bool, value: &Value, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", human());
    }
}

/// The text of FILE, or of stdin for `-`.
fn read_input(file: &str) -> Outcome<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("reading {file}: {e}")))
    }
}

/// The submission body: the document as is, or a bare plan wrapped for the `plan` workflow.
fn submission(text: &str) -> Outcome<Value> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("the submission is not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(Failure::Usage(
            "the submission must be a JSON object: {\"workflow\", \"input\"} or a plan {\"steps\": [...]}"
                .to_owned(),
        ));
    };
    if object.contains_key("steps") && !object.contains_key("workflow") {
        Ok(json!({ "workflow": "plan", "input": value }))
    } else {
        Ok(value)
    }
}

/// The input of `submit --workflow`: any JSON value (the server checks it against the
/// workflow's schema).
fn workflow_input(text: &str) -> Outcome<Value> {
    serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("the input is not valid JSON: {e}")))
}

/// An error with its sources, for the unreachable message.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_plans_are_wrapped_for_the_plan_workflow() {
        let wrapped = submission(r#"{"steps": []}"#).ok();
        assert_eq!(
            wrapped,
            Some(json!({ "workflow": "plan", "input": { "steps": [] } }))
        );
        let full = r#"{"workflow": "plan", "input": {"steps": []}, "idempotency_key": "k"}"#;
        assert_eq!(
            submission(full).ok(),
            serde_json::from_str::<Value>(full).ok()
        );
        assert!(matches!(submission("[1]"), Err(Failure::Usage(_))));
        assert!(matches!(submission("{"), Err(Failure::Usage(_))));
    }

    #[test]
    fn workflow_inputs_are_any_json() {
        assert_eq!(workflow_input(" 3 ").ok(), Some(json!(3)));
        assert_eq!(workflow_input(r#"{"a": 1}"#).ok(), Some(json!({"a": 1})));
        assert!(matches!(workflow_input("{"), Err(Failure::Usage(_))));
    }
}
