//! `hypercode mission ...`: the command-line client against a real server. Each command runs
//! the binary with only `HYPERCODE_URL` and `HYPERCODE_API_KEY` (no `DATABASE_URL`), and its
//! exit code, stdout and stderr are checked.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// What a client command printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Assert the exit code; returns self for chaining.
    fn expect(self, code: i32, args: &[&str]) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "`hypercode {}` exited {:?}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The binary with the client environment of this harness and nothing server-side.
fn client(h: &Harness, base: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = h.command(args);
    command
        .env_remove("DATABASE_URL")
        .env_remove("HYPERCODE_REDIS_URL")
        .env_remove("HYPERCODE_API_KEY_FILE")
        .env("HYPERCODE_URL", base)
        .env("HYPERCODE_API_KEY", &h.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Run a client command to completion (at most 60 s).
async fn run(h: &Harness, args: &[&str]) -> Run {
    run_with(client(h, &h.base, args), None).await
}

async fn run_with(mut command: tokio::process::Command, stdin: Option<&str>) -> Run {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("spawn the client");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client finished within 60 s")
        .expect("run the client");
    Run::from(output)
}

/// A client command running in the background, its stdout read line by line as it prints.
struct Live {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    printed: Vec<String>,
}

impl Live {
    fn spawn(mut command: tokio::process::Command) -> Live {
        let mut child = command.spawn().expect("spawn the client");
        let stdout = child.stdout.take().expect("the client's stdout");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Live {
            child,
            lines,
            printed: Vec::new(),
        }
    }

    /// The next line it prints; panics unless one comes within `timeout`.
    async fn next_line(&mut self, timeout: Duration) -> String {
        let line = tokio::time::timeout(timeout, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing printed within {timeout:?}: {:?}", self.printed))
            .unwrap_or_else(|| panic!("stdout closed; it printed {:?}", self.printed));
        self.printed.push(line.clone());
        line
    }

    /// Wait for it to exit, at most `timeout`, with everything it printed.
    async fn finish(self, timeout: Duration) -> Run {
        let Live {
            child,
            mut lines,
            mut printed,
        } = self;
        let rest = async move {
            while let Some(line) = lines.recv().await {
                printed.push(line);
            }
            let output = child.wait_with_output().await.expect("run the client");
            (output, printed)
        };
        let (output, printed) = tokio::time::timeout(timeout, rest)
            .await
            .unwrap_or_else(|_| panic!("the client did not exit within {timeout:?}"));
        let mut run = Run::from(output);
        run.stdout = printed.iter().map(|l| format!("{l}\n")).collect();
        run
    }
}

/// `mission {id} submitted ...` → the id.
fn submitted_id(run: &Run) -> String {
    let words: Vec<&str> = run.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"mission"), "{}", run.stdout);
    words[1].to_owned()
}

/// A plan whose step `gate` waits for approval.
fn gated_plan(h: &Harness) -> Value {
    json!({ "steps": [
        { "name": "a", "http": { "method": "POST", "url": h.callee.url("/ok") } },
        { "name": "gate", "approval": { "message": "ship it?" } },
        { "name": "c", "noop": true }
    ] })
}

async fn submit_waiting(h: &Harness) -> String {
    let run = run_with(
        client(h, &h.base, &["mission", "submit", "-"]),
        Some(&gated_plan(h).to_string()),
    )
    .await
    .expect(0, &["mission", "submit", "-"]);
    let id = submitted_id(&run);
    h.wait_until(
        &id,
        "waiting on approval gate",
        |m| m["status"] == "waiting" && step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    id
}

#[tokio::test]
async fn submit_list_show_history_and_watch_to_success() {
    let h = Harness::start().await;

    // From a file: the full submission body, with an idempotency key.
    let file = h.dir.join("mission.json");
    let body = json!({
        "workflow": "plan",
        "idempotency_key": "cli-1",
        "input": { "steps": [
            { "name": "a", "http": { "method": "POST", "url": h.callee.url("/ok") } },
            { "name": "b", "sleep": { "ms": 200 } }
        ] }
    });
    std::fs::write(&file, body.to_string()).unwrap();
    let path = file.to_string_lossy().into_owned();
    let args = ["mission", "submit", path.as_str()];
    let first = run(&h, &args).await.expect(0, &args);
    assert!(first.stdout.contains("submitted"), "{}", first.stdout);
    let id = submitted_id(&first);
    assert_eq!(h.get(&id).await["idempotency_key"], "cli-1");

    // Watch it to success: a line per event, exit 0.
    let args = ["mission", "watch", id.as_str()];
    let watched = run(&h, &args).await.expect(0, &args);
    let lines: Vec<&str> = watched.stdout.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("mission_submitted")),
        "{}",
        watched.stdout
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("mission_succeeded")),
        "{}",
        watched.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("step_succeeded") && l.contains("step=a")),
        "{}",
        watched.stdout
    );

    // From stdin: a bare plan, with --json.
    let args = ["mission", "submit", "-", "--json"];
    let plan = json!({ "steps": [ { "name": "only", "noop": { "x": 1 } } ] });
    let second = run_with(client(&h, &h.base, &args), Some(&plan.to_string()))
        .await
        .expect(0, &args);
    let second = second.json();
    assert_eq!(second["workflow"], "plan");
    let second_id = id_of(&second);
    h.wait_terminal(&second_id, "succeeded", secs(15)).await;

    // The same file again: the same mission (a repeated idempotency key), exit 0.
    let args = ["mission", "submit", path.as_str()];
    let again = run(&h, &args).await.expect(0, &args);
    assert_eq!(submitted_id(&again), id);
    assert!(
        again.stdout.contains("already submitted"),
        "{}",
        again.stdout
    );

    // list: both, newest first; filters; --limit with a cursor to the next page.
    let list = run(&h, &["mission", "list"]).await.expect(0, &["list"]);
    let (at_first, at_second) = (list.stdout.find(&id), list.stdout.find(&second_id));
    assert!(
        at_first.is_some() && at_second.is_some() && at_second < at_first,
        "{}",
        list.stdout
    );
    assert!(list.stdout.starts_with("ID"), "{}", list.stdout);
    let args = ["mission", "list", "--limit", "1", "--json"];
    let page = run(&h, &args).await.expect(0, &args).json();
    assert_eq!(page["missions"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["missions"][0]["id"], second_id.as_str());
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let args = [
        "mission",
        "list",
        "--limit",
        "1",
        "--cursor",
        cursor.as_str(),
    ];
    let next = run(&h, &args).await.expect(0, &args);
    assert!(
        next.stdout.contains(&id) && !next.stdout.contains(&second_id),
        "{}",
        next.stdout
    );
    let args = [
        "mission",
        "list",
        "--status",
        "failed",
        "--workflow",
        "plan",
    ];
    let none = run(&h, &args).await.expect(0, &args);
    assert!(none.stdout.contains("no missions"), "{}", none.stdout);

    // show: the mission and its steps.
    let args = ["mission", "show", id.as_str()];
    let shown = run(&h, &args).await.expect(0, &args);
    for needle in [id.as_str(), "succeeded", "cli-1", "STEP", "sleep"] {
        assert!(
            shown.stdout.contains(needle),
            "no `{needle}`:\n{}",
            shown.stdout
        );
    }
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("task") && l.contains("succeeded")),
        "{}",
        shown.stdout
    );
    let args = ["mission", "show", id.as_str(), "--json"];
    let shown = run(&h, &args).await.expect(0, &args).json();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["steps"].as_array().map(Vec::len), Some(2));

    // history: one line per event, in order.
    let args = ["mission", "history", id.as_str()];
    let history = run(&h, &args).await.expect(0, &args);
    let events = h.history(&id).await;
    let lines: Vec<&str> = history.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), events.len(), "{}", history.stdout);
    for (line, event) in lines.iter().zip(&events) {
        assert!(
            line.contains(event["type"].as_str().unwrap_or("?")),
            "{line} vs {event}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("step_started") && l.contains(" a ")),
        "{}",
        history.stdout
    );
    let args = ["mission", "history", id.as_str(), "--json"];
    let json_history = run(&h, &args).await.expect(0, &args).json();
    assert_eq!(json_history.as_array().map(Vec::len), Some(events.len()));
    assert_eq!(json_history[0]["type"], "mission_submitted");
}

#[tokio::test]
async fn approve_reject_and_watch_a_failure() {
    let h = Harness::start().await;

    // Approve with a comment: the mission continues to success.
    let id = submit_waiting(&h).await;
    let args = [
        "mission",
        "approve",
        id.as_str(),
        "gate",
        "--comment",
        "lgtm",
    ];
    let approved = run(&h, &args).await.expect(0, &args);
    assert!(approved.stdout.contains("approved"), "{}", approved.stdout);
    h.wait_terminal(&id, "succeeded", secs(15)).await;
    let history = h.history(&id).await;
    let granted = events_of(&history, "approval_granted");
    assert_eq!(granted.len(), 1, "{}", describe_history(&history));
    assert_eq!(granted[0]["data"]["comment"], "lgtm");

    // Deciding again is a conflict: exit 1 with the problem on stderr.
    let again = run(&h, &args).await.expect(1, &args);
    assert!(again.stderr.contains("Conflict (409)"), "{}", again.stderr);

    // Reject while a watcher follows: the mission fails, the watcher exits 1.
    let id = submit_waiting(&h).await;
    let watch_args = ["mission", "watch", id.as_str()];
    let mut watcher = Live::spawn(client(&h, &h.base, &watch_args));
    // The watcher prints what it reads from the event stream: once it printed a line, it is
    // connected, so the rejection below happens while it watches and must reach it live.
    watcher.next_line(secs(15)).await;
    let args = [
        "mission",
        "reject",
        id.as_str(),
        "gate",
        "--comment",
        "no",
        "--json",
    ];
    let rejected = run(&h, &args).await.expect(0, &args).json();
    assert_eq!(rejected["id"], id.as_str());
    let watched = watcher.finish(secs(15)).await.expect(1, &watch_args);
    assert!(
        watched
            .stdout
            .lines()
            .any(|l| l.contains("approval_rejected") && l.contains("step=gate")),
        "{}",
        watched.stdout
    );
    assert!(
        watched
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains("mission_failed")),
        "{}",
        watched.stdout
    );
    h.wait_terminal(&id, "failed", secs(15)).await;

    // --json watch of the finished mission: one JSON event per line, exit 1.
    let args = ["mission", "watch", id.as_str(), "--json"];
    let events = run(&h, &args).await.expect(1, &args);
    let parsed: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect();
    assert_eq!(
        parsed.first().map(|e| e["type"].clone()),
        Some(json!("mission_submitted"))
    );
    assert_eq!(
        parsed.last().map(|e| e["type"].clone()),
        Some(json!("mission_failed"))
    );
}

#[tokio::test]
async fn cancel_a_waiting_mission() {
    let h = Harness::start().await;
    let id = submit_waiting(&h).await;
    let args = ["mission", "cancel", id.as_str()];
    let cancelled = run(&h, &args).await.expect(0, &args);
    assert!(
        cancelled.stdout.contains("cancellation requested"),
        "{}",
        cancelled.stdout
    );
    h.wait_terminal(&id, "cancelled", secs(15)).await;
    let args = ["mission", "watch", id.as_str()];
    let watched = run(&h, &args).await.expect(1, &args);
    assert!(
        watched
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains("mission_cancelled")),
        "{}",
        watched.stdout
    );
    // Cancelling a finished mission is refused.
    let args = ["mission", "cancel", id.as_str()];
    run(&h, &args).await.expect(1, &args);
}

#[tokio::test]
async fn refusals_usage_errors_and_an_unreachable_server() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;

    // A plan the workflow refuses: 422, exit 1, the detail and the located errors on stderr.
    let args = ["mission", "submit", "-"];
    let bad = run_with(
        client(&h, &h.base, &args),
        Some(r#"{"steps": [{"name": "a"}]}"#),
    )
    .await
    .expect(1, &args);
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
    assert!(
        bad.stderr.contains("the workflow refused the input")
            && bad.stderr.contains("/input/steps/0"),
        "{}",
        bad.stderr
    );

    // Unknown mission: 404, exit 1.
    let unknown = uuid::Uuid::new_v4().to_string();
    let args = ["mission", "show", unknown.as_str()];
    let missing = run(&h, &args).await.expect(1, &args);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    // A wrong key: 401, exit 1.
    let mut command = client(&h, &h.base, &["mission", "list"]);
    command.env("HYPERCODE_API_KEY", "hc_wrong");
    let unauthorized = run_with(command, None)
        .await
        .expect(1, &["mission", "list"]);
    assert!(
        unauthorized.stderr.contains("401"),
        "{}",
        unauthorized.stderr
    );

    // The key from a file works.
    let key_file = h.dir.join("api.key");
    std::fs::write(&key_file, format!("{}\n", h.key)).unwrap();
    let mut command = client(&h, &h.base, &["mission", "list"]);
    command
        .env_remove("HYPERCODE_API_KEY")
        .env("HYPERCODE_API_KEY_FILE", &key_file);
    run_with(command, None)
        .await
        .expect(0, &["mission", "list"]);

    // Usage errors: exit 2.
    run(&h, &["mission"]).await.expect(2, &["mission"]);
    let args = ["mission", "submit", "/nonexistent/mission.json"];
    run(&h, &args).await.expect(2, &args);
    let args = ["mission", "submit", "-"];
    run_with(client(&h, &h.base, &args), Some("not json"))
        .await
        .expect(2, &args);

    // Nothing listens there: exit 3.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for args in [
        &["mission", "list"][..],
        &["mission", "watch", unknown.as_str()][..],
    ] {
        let down = run_with(client(&h, &closed, args), None)
            .await
            .expect(3, args);
        assert!(down.stderr.contains("could not reach"), "{}", down.stderr);
    }

    // --help documents the exit codes.
    let help = run(&h, &["mission", "--help"]).await.expect(0, &["--help"]);
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);
}

/// A stream that drops after the first event is reopened with `Last-Event-ID`, and the watch
/// goes on to the end. The server is a stand-in that serves one event per connection.
#[tokio::test]
async fn watch_reconnects_with_last_event_id() {
    use axum::http::{header, HeaderMap};
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/events",
        axum::routing::get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let last = headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                record.lock().unwrap().push(last.clone());
                let (id, kind) = match last.as_deref() {
                    None => (1, "mission_submitted"),
                    Some(_) => (2, "mission_succeeded"),
                };
                let data = json!({ "id": id, "seq": id, "type": kind, "at": "2025-11-24T16:00:00Z",
                    "step": null, "attempt": null, "data": {} });
                // The body ends after one event: the connection drops.
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    format!(": hello\n\nid: {id}\nevent: {kind}\ndata: {data}\n\n"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let args = ["mission", "watch", "0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f"];
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("HYPERCODE_URL", &base)
        .env("HYPERCODE_API_KEY", "hc_test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watched = run_with(command, None).await.expect(0, &args);
    let lines: Vec<&str> = watched.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", watched.stdout);
    assert!(lines[0].contains("mission_submitted"), "{}", watched.stdout);
    assert!(lines[1].contains("mission_succeeded"), "{}", watched.stdout);
    assert_eq!(*seen.lock().unwrap(), [None, Some("1".to_owned())]);
    server.abort();
}

#[tokio::test]
async fn workflows_submit_by_workflow_name_and_retry() {
    let h = Harness::start().await;

    // `workflows`: every registered workflow with its input schema.
    let args = ["workflows"];
    let listed = run(&h, &args).await.expect(0, &args);
    assert!(
        listed.stdout.lines().any(|l| l == "plan"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("\"steps\""), "{}", listed.stdout);
    let args = ["workflows", "--json"];
    let json_list = run(&h, &args).await.expect(0, &args).json();
    let plan = json_list["workflows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "plan"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(plan["input_schema"]["type"], "object", "{json_list}");

    // `submit --workflow NAME --input -`: the input alone, from stdin, with a key.
    let args = [
        "mission",
        "submit",
        "--workflow",
        "plan",
        "--input",
        "-",
        "--idempotency-key",
        "by-name-1",
    ];
    let submitted = run_with(
        client(&h, &h.base, &args),
        Some(&gated_plan(&h).to_string()),
    )
    .await
    .expect(0, &args);
    let id = submitted_id(&submitted);
    let mission = h.get(&id).await;
    assert_eq!(mission["workflow"], "plan");
    assert_eq!(mission["idempotency_key"], "by-name-1");
    assert_eq!(mission["input"], gated_plan(&h));
    // An input that is not JSON is a usage error; FILE and --workflow together too.
    run_with(client(&h, &h.base, &args), Some("{"))
        .await
        .expect(2, &args);
    let both = ["mission", "submit", "x.json", "--workflow", "plan"];
    run(&h, &both).await.expect(2, &both);

    // `retry`: a rejected approval fails the mission; retried, it is asked again.
    h.wait_until(
        &id,
        "waiting on approval gate",
        |m| m["status"] == "waiting" && step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    let args = ["mission", "reject", id.as_str(), "gate"];
    run(&h, &args).await.expect(0, &args);
    h.wait_terminal(&id, "failed", secs(15)).await;
    let args = ["mission", "retry", id.as_str()];
    let retried = run(&h, &args).await.expect(0, &args);
    assert!(
        retried.stdout.contains("will run again"),
        "{}",
        retried.stdout
    );
    h.wait_until(
        &id,
        "waiting on approval gate again",
        |m| m["status"] == "waiting" && step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    assert_eq!(events_of(&h.history(&id).await, "mission_retried").len(), 1);
    // Retrying a mission that is not failed is the server's 409: exit 1.
    let again = run(&h, &args).await.expect(1, &args);
    assert!(again.stderr.contains("409"), "{}", again.stderr);
}
