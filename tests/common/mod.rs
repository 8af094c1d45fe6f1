//! The end-to-end harness: a fresh database per test, the real `hypercode` binary as child
//! processes (`serve` and any number of `worker`s), an HTTP client holding an API key, and a
//! local "callee" HTTP server that plans call and that records every request it receives.
//!
//! Every test owns its database (`hc_<random>`), its Redis queue name and its callee, so tests
//! run in parallel (nextest runs each in its own process) without seeing each other's work.
//! Child processes are killed (SIGKILL) when the harness is dropped; when a test panics, the tail
//! of every child's log is printed and the logs and the database are kept for a post-mortem.

#![allow(dead_code)]

pub mod agents;
mod shared;

pub use shared::*;

use axum::extract::{Path as AxumPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, delete, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_hypercode");

/// How often [`poll`] checks.
const POLL: Duration = Duration::from_millis(50);

/// The one wait of the suite: run `check` every [`POLL`] until it answers `Ok`, and return
/// that; after `timeout`, return its last `Err` (what it saw, for the caller's message).
/// Tests wait on a condition with this, never on a fixed sleep that hopes the condition holds.
pub async fn poll<T, L, F, Fut>(timeout: Duration, mut check: F) -> Result<T, L>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, L>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(found) => return Ok(found),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`poll`] a condition that has nothing to report; panics after `timeout`, saying `what` was
/// awaited and what `describe` says then.
pub async fn wait_for<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    describe: impl Fn() -> String,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = poll(timeout, || {
        let done = check();
        async move {
            if done.await {
                Ok(())
            } else {
                Err(())
            }
        }
    })
    .await;
    if polled.is_err() {
        panic!(
            "timed out after {timeout:?} waiting for {what}:\n{}",
            describe()
        );
    }
}

/// The admin URL used to create and drop per-test databases.
pub fn admin_database_url() -> String {
    std::env::var("HYPERCODE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".to_owned())
}

/// The same Redis server, logical database `db` (for a test that flushes its database).
pub fn redis_url_with_db(db: u32) -> String {
    let base = redis_url();
    let (scheme, rest) = base.split_once("://").unwrap_or(("redis", base.as_str()));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{db}")
}

/// `url` with its database name (the path) replaced by `name`.
fn database_url_for(admin: &str, name: &str) -> String {
    let (without_query, query) = match admin.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (admin, None),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let base = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

// ------------------------------------------------------------------------------------------
// The callee: the HTTP service that plans call.
// ------------------------------------------------------------------------------------------

/// One request the callee received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, e.g. `/items/3`.
    pub path: String,
    /// The `Idempotency-Key` header, if any.
    pub key: Option<String>,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// The body parsed as JSON (`Null` when empty, a string when not JSON).
    pub body: Value,
    /// When it arrived, relative to the callee's start.
    pub at: Duration,
}

#[derive(Default)]
struct CalleeState {
    requests: Mutex<Vec<Recorded>>,
    counter: Mutex<u64>,
    flaky: Mutex<HashMap<String, u32>>,
    answered: Mutex<HashMap<String, (StatusCode, Value)>>,
    started: Option<Instant>,
}

type Shared = Arc<CalleeState>;

/// A local HTTP server that plans call; it records every request in arrival order.
pub struct Callee {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Callee {
    /// Bind 127.0.0.1:0 and serve the routes:
    /// `POST /ok` → 201 `{"id": n}`; `GET|POST /items/{id}` → 200 echo; `/flaky/{n}` → 503 for the
    /// first `n` requests with the same Idempotency-Key, then 200; `/fail` → 400
    /// `{"error":"nope"}`; `/slow/{ms}` → 200 after `ms`; `DELETE /undo/{name}` → 200;
    /// `/broken/{n}` → 400 (not retryable) for the first `n` requests, then 200; like Stripe, it
    /// answers a repeated Idempotency-Key with the answer that key got first.
    pub async fn start() -> Callee {
        let state: Shared = Arc::new(CalleeState {
            started: Some(Instant::now()),
            ..Default::default()
        });
        let app = Router::new()
            .route("/ok", post(ok))
            .route("/items/{id}", any(items))
            .route("/flaky/{n}", any(flaky))
            .route("/fail", any(fail))
            .route("/broken/{n}", any(broken))
            .route("/slow/{ms}", any(slow))
            .route("/undo/{name}", delete(undo))
            .fallback(unknown)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the callee");
        let base = format!("http://{}", listener.local_addr().expect("callee address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("callee server");
        });
        Callee { base, state, task }
    }

    /// An absolute URL on the callee.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("callee lock").clone()
    }

    /// Requests that carried this Idempotency-Key.
    pub fn with_key(&self, key: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .collect()
    }

    /// Requests to this path (any method).
    pub fn to_path(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Wait until a request matching `pred` has arrived; panics after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Recorded {
        let pred = &pred;
        let found = poll(timeout, move || async move {
            self.requests().into_iter().find(|r| pred(r)).ok_or(())
        })
        .await;
        found.unwrap_or_else(|()| {
            panic!(
                "timed out after {timeout:?} waiting for the callee to receive {what}; it received:\n{}",
                self.describe()
            )
        })
    }

    /// A readable list of the requests received.
    pub fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "  {:>8.3}s {} {} key={:?} body={}",
                    r.at.as_secs_f64(),
                    r.method,
                    r.path,
                    r.key,
                    r.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(state: &Shared, method: &Method, path: String, headers: &HeaderMap, body: &[u8]) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (key, traceparent) = (header("idempotency-key"), header("traceparent"));
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    let at = state.started.map(|s| s.elapsed()).unwrap_or_default();
    state.requests.lock().expect("callee lock").push(Recorded {
        method: method.to_string(),
        path,
        key,
        traceparent,
        body,
        at,
    });
}

async fn ok(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, "/ok".to_owned(), &headers, &body);
    let id = {
        let mut counter = state.counter.lock().expect("callee lock");
        *counter += 1;
        *counter
    };
    (StatusCode::CREATED, axum::Json(json!({ "id": id })))
}

async fn items(
    State(state): State<Shared>,
    AxumPath(id): AxumPath<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, format!("/items/{id}"), &headers, &body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (
        StatusCode::OK,
        axum::Json(json!({ "id": id, "method": method.as_str(), "body": body })),
    )
}

/// Answers `failure` to the first `n` requests carrying the same Idempotency-Key, then 200.
fn fail_first(
    state: &Shared,
    counter: &str,
    n: u32,
    failure: (StatusCode, &str),
    headers: &HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let seen = {
        let mut counts = state.flaky.lock().expect("callee lock");
        let seen = counts.entry(format!("{counter}|{n}|{key}")).or_insert(0);
        *seen += 1;
        *seen
    };
    if seen <= n {
        (
            failure.0,
            axum::Json(json!({ "error": failure.1, "attempt": seen })),
        )
    } else {
        (
            StatusCode::OK,
            axum::Json(json!({ "ok": true, "attempt": seen })),
        )
    }
}

async fn flaky(
    State(state): State<Shared>,
    AxumPath(n): AxumPath<u32>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, format!("/flaky/{n}"), &headers, &body);
    fail_first(
        &state,
        "flaky",
        n,
        (StatusCode::SERVICE_UNAVAILABLE, "try again"),
        &headers,
    )
}

async fn fail(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, "/fail".to_owned(), &headers, &body);
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "nope" })),
    )
}

async fn broken(
    State(state): State<Shared>,
    AxumPath(n): AxumPath<u32>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, format!("/broken/{n}"), &headers, &body);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut answered = state.answered.lock().expect("callee lock");
    let (status, body) = answered
        .entry(format!("broken|{n}|{key}"))
        .or_insert_with(|| {
            // Counted per path: `fail_first` sees every request under one (empty) key.
            let (status, axum::Json(body)) = fail_first(
                &state,
                "broken",
                n,
                (StatusCode::BAD_REQUEST, "broken"),
                &HeaderMap::new(),
            );
            (status, body)
        })
        .clone();
    (status, axum::Json(body))
}

async fn slow(
    State(state): State<Shared>,
    AxumPath(ms): AxumPath<u64>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, format!("/slow/{ms}"), &headers, &body);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (StatusCode::OK, axum::Json(json!({ "slept_ms": ms })))
}

async fn undo(
    State(state): State<Shared>,
    AxumPath(name): AxumPath<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, format!("/undo/{name}"), &headers, &body);
    (StatusCode::OK, axum::Json(json!({ "undone": name })))
}

async fn unknown(
    State(state): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    record(&state, &method, uri.path().to_owned(), &headers, &body);
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "no route" })),
    )
}

// ------------------------------------------------------------------------------------------
// Processes.
// ------------------------------------------------------------------------------------------

/// A child process of the binary, killed (SIGKILL) on drop; its stderr goes to `log`.
pub struct Proc {
    /// What it is (`serve`, `worker-1`, ...).
    pub name: String,
    /// Its stderr (and, for workers, stdout).
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// A child spawned by a test itself (e.g. `hypercode agent serve`), killed on drop.
    pub fn from_child(name: String, log: PathBuf, child: Child) -> Proc {
        Proc { name, log, child }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is still running")
    }

    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Wait for it to exit, at most `timeout`; `None` if it is still running then.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for the child"))
    }

    /// Whether it has exited already (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Knobs of one test's deployment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers spawned at start.
    pub workers: usize,
    /// `--concurrency` of each worker (the binary's default when `None`).
    pub worker_concurrency: Option<usize>,
    /// Run `serve --worker` instead of a bare `serve`.
    pub serve_with_worker: bool,
    /// `HYPERCODE_LEASE_TTL_MS`.
    pub lease_ttl_ms: Option<u64>,
    /// `HYPERCODE_TICK_MS`.
    pub tick_ms: Option<u64>,
    /// `HYPERCODE_REDELIVER_AFTER_MS`.
    pub redeliver_after_ms: Option<u64>,
    /// Use this Redis URL instead of the shared one.
    pub redis_url: Option<String>,
    /// Further environment variables for every child process.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            worker_concurrency: None,
            serve_with_worker: false,
            lease_ttl_ms: None,
            tick_ms: None,
            redeliver_after_ms: None,
            redis_url: None,
            env: Vec::new(),
        }
    }
}

/// One test's deployment: database, queue, API server, workers, client and callee.
pub struct Harness {
    /// The callee plans call.
    pub callee: Callee,
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    /// The admin key the client sends.
    pub key: String,
    /// The name of that key.
    pub key_name: String,
    /// The HTTP client (no default auth header: helpers add the key).
    pub http: reqwest::Client,
    /// The per-test database URL.
    pub database_url: String,
    /// The Redis URL the processes use.
    pub redis_url: String,
    /// The per-test queue name.
    pub queue: String,
    /// Logs of the children.
    pub dir: PathBuf,
    /// The API server.
    pub serve: Option<Proc>,
    /// The workers, in start order.
    pub workers: Vec<Proc>,
    /// Further API servers on the same database and Redis ([`Harness::start_another_serve`]).
    pub other_serves: Vec<Proc>,
    options: Options,
    database: String,
    spawned: usize,
    started: Instant,
}

impl Harness {
    /// A deployment with one worker and default settings.
    pub async fn start() -> Harness {
        Self::with(Options::default()).await
    }

    /// A deployment with these options.
    pub async fn with(options: Options) -> Harness {
        let started = Instant::now();
        let suffix = random_suffix();
        let database = format!("hc_{suffix}");
        let admin = admin_database_url();
        create_database(&admin, &database).await;
        let database_url = database_url_for(&admin, &database);
        let dir = std::env::temp_dir().join(format!("hypercode-e2e-{database}"));
        std::fs::create_dir_all(&dir).expect("create the log directory");
        let callee = Callee::start().await;
        let mut harness = Harness {
            callee,
            base: String::new(),
            key: String::new(),
            key_name: "e2e-admin".to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            database_url,
            redis_url: options.redis_url.clone().unwrap_or_else(redis_url),
            queue: format!("hc-test-{suffix}"),
            dir,
            serve: None,
            workers: Vec::new(),
            other_serves: Vec::new(),
            options: options.clone(),
            database,
            spawned: 0,
            started,
        };
        harness.cli(&["migrate"]).await;
        harness.key = harness.create_key("e2e-admin", "admin").await;
        harness.start_serve().await;
        for _ in 0..options.workers {
            harness.start_worker().await;
        }
        harness
    }

    /// A command for the binary with this test's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("DATABASE_URL_FILE")
            .env_remove("HYPERCODE_REDIS_URL_FILE")
            .env("DATABASE_URL", &self.database_url)
            .env("HYPERCODE_REDIS_URL", &self.redis_url)
            .env("HYPERCODE_QUEUE", &self.queue)
            .env("HYPERCODE_LISTEN", "127.0.0.1:0")
            .env("HYPERCODE_DB_POOL", "8")
            .env(
                "HYPERCODE_LOG",
                std::env::var("HYPERCODE_TEST_LOG")
                    .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".to_owned()),
            )
            .env_remove("HYPERCODE_LOG_FORMAT")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in [
            ("HYPERCODE_LEASE_TTL_MS", self.options.lease_ttl_ms),
            ("HYPERCODE_TICK_MS", self.options.tick_ms),
            (
                "HYPERCODE_REDELIVER_AFTER_MS",
                self.options.redeliver_after_ms,
            ),
        ] {
            match value {
                Some(value) => cmd.env(name, value.to_string()),
                None => cmd.env_remove(name),
            };
        }
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Run a CLI subcommand to completion; panics (with its output) unless it succeeds.
    /// Returns its stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run the binary");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`hypercode {}` failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The binary as an API client of this deployment (`HYPERCODE_URL`, the admin key, no
    /// database), its output captured.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut command = self.command(args);
        command
            .env_remove("DATABASE_URL")
            .env_remove("HYPERCODE_REDIS_URL")
            .env_remove("HYPERCODE_API_KEY_FILE")
            .env("HYPERCODE_URL", &self.base)
            .env("HYPERCODE_API_KEY", &self.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Create an API key and return it (the last line of the command's stdout).
    pub async fn create_key(&self, name: &str, role: &str) -> String {
        let stdout = self
            .cli(&["keys", "create", "--name", name, "--role", role])
            .await;
        let key = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(!key.is_empty(), "no key printed by `keys create`: {stdout}");
        key
    }

    fn log_path(&mut self, name: &str) -> PathBuf {
        self.spawned += 1;
        self.dir.join(format!("{:02}-{name}.log", self.spawned))
    }

    /// Start the API server (`serve`, with `--worker` if the options say so) and wait until it
    /// prints its address.
    pub async fn start_serve(&mut self) {
        let (address, proc) = self.spawn_serve("serve").await;
        self.base = address;
        self.serve = Some(proc);
    }

    /// Start one more API server (a replica sharing the database and Redis); returns its base
    /// URL. `base` and `serve` stay the first one's.
    pub async fn start_another_serve(&mut self) -> String {
        let name = format!("serve-{}", self.other_serves.len() + 2);
        let (address, proc) = self.spawn_serve(&name).await;
        self.other_serves.push(proc);
        address
    }

    /// Spawn `serve` and wait until it prints its address.
    async fn spawn_serve(&mut self, name: &str) -> (String, Proc) {
        let log = self.log_path(name);
        let stderr = std::fs::File::create(&log).expect("create the serve log");
        let mut args = vec!["serve"];
        if self.options.serve_with_worker {
            args.push("--worker");
        }
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("serve stdout");
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = line.trim().strip_prefix("listening on ") {
                    return Some(address.to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(address)) = found else {
            let status = child.try_wait().ok().flatten();
            panic!(
                "`hypercode serve` did not print its address (exit status {status:?}); its log:\n{}",
                tail(&log, 60)
            );
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let proc = Proc {
            name: name.to_owned(),
            log,
            child,
        };
        (address.trim_end_matches('/').to_owned(), proc)
    }

    /// Start one more `worker` process; returns its index in `workers`.
    pub async fn start_worker(&mut self) -> usize {
        let index = self.workers.len();
        let name = format!("worker-{}", index + 1);
        let log = self.log_path(&name);
        let stderr = std::fs::File::create(&log).expect("create the worker log");
        let stdout = stderr.try_clone().expect("clone the log file");
        let concurrency = self.options.worker_concurrency.map(|c| c.to_string());
        let mut args = vec!["worker"];
        if let Some(concurrency) = &concurrency {
            args.push("--concurrency");
            args.push(concurrency);
        }
        let child = self
            .command(&args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn a worker");
        self.workers.push(Proc { name, log, child });
        index
    }

    // --------------------------------------------------------------------------------------
    // HTTP helpers.
    // --------------------------------------------------------------------------------------

    /// An absolute URL on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the admin key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(method, path, &self.key)
    }

    /// A request carrying `key`.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-API-Key", key)
    }

    /// Send and return the status, the content type and the body as JSON (`Null` if empty).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the API answered");
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let bytes = response.bytes().await.expect("read the API's body");
        Reply::new(status, &content_type, &bytes)
    }

    /// POST a submission body as is.
    pub async fn submit_body(&self, body: &Value) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, "/api/v1/missions")
                .json(body),
        )
        .await
    }

    /// Submit a `plan` mission; asserts 201 and returns the mission.
    pub async fn submit(&self, steps: Value) -> Value {
        let reply = self
            .submit_body(&json!({ "workflow": "plan", "input": { "steps": steps } }))
            .await;
        assert_eq!(reply.status, 201, "submission refused: {reply:?}");
        reply.body
    }

    /// GET a mission; asserts 200.
    pub async fn get(&self, id: &str) -> Value {
        let reply = self
            .send(self.request(reqwest::Method::GET, &format!("/api/v1/missions/{id}")))
            .await;
        assert_eq!(reply.status, 200, "GET mission {id}: {reply:?}");
        reply.body
    }

    /// The whole history of a mission (every page).
    pub async fn history(&self, id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let reply = self
                .send(self.request(
                    reqwest::Method::GET,
                    &format!("/api/v1/missions/{id}/history?after={after}&limit=500"),
                ))
                .await;
            assert_eq!(reply.status, 200, "GET history of {id}: {reply:?}");
            let page = reply.body["events"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return events;
            }
            after = page.last().and_then(|e| e["seq"].as_i64()).expect("seq");
            events.extend(page);
        }
    }

    /// POST an approval decision with the admin key.
    pub async fn decide(&self, id: &str, step: &str, decision: &str, comment: &str) -> Reply {
        self.decide_as(&self.key, id, step, decision, comment).await
    }

    /// POST an approval decision with `key`.
    pub async fn decide_as(
        &self,
        key: &str,
        id: &str,
        step: &str,
        decision: &str,
        comment: &str,
    ) -> Reply {
        self.send(
            self.http
                .post(self.url(&format!("/api/v1/missions/{id}/approvals/{step}")))
                .header("X-API-Key", key)
                .json(&json!({ "decision": decision, "comment": comment })),
        )
        .await
    }

    /// POST a cancellation.
    pub async fn cancel(&self, id: &str) -> Reply {
        self.send(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/missions/{id}/cancel"),
        ))
        .await
    }

    /// Poll the mission until `pred` holds; panics after `timeout` with the last mission JSON,
    /// its history and the callee's requests.
    pub async fn wait_until(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let pred = &pred;
        let polled = poll(timeout, move || async move {
            let mission = self.get(id).await;
            if pred(&mission) {
                Ok(mission)
            } else {
                Err(mission)
            }
        })
        .await;
        match polled {
            Ok(mission) => mission,
            Err(mission) => {
                let history = self.history(id).await;
                panic!(
                    "timed out after {timeout:?} waiting for mission {id} to be {what}\n\
                     last mission JSON:\n{}\nhistory:\n{}\ncallee requests:\n{}",
                    pretty(&mission),
                    describe_history(&history),
                    self.callee.describe()
                );
            }
        }
    }

    /// Wait until the mission has this status.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_until(
            id,
            &format!("status `{status}`"),
            |m| m["status"] == status,
            timeout,
        )
        .await
    }

    /// Wait until the mission is terminal, then assert it has `status`.
    pub async fn wait_terminal(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let mission = self.wait_until(id, "terminal", is_terminal, timeout).await;
        if mission["status"] != status {
            let history = self.history(id).await;
            panic!(
                "mission {id} ended `{}`, expected `{status}`\nmission JSON:\n{}\nhistory:\n{}\ncallee requests:\n{}",
                mission["status"],
                pretty(&mission),
                describe_history(&history),
                self.callee.describe()
            );
        }
        mission
    }

    /// Elapsed time since the harness started (for timing notes in failure messages).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let mut procs: Vec<&mut Proc> = self.serve.iter_mut().collect();
        procs.extend(self.other_serves.iter_mut());
        procs.extend(self.workers.iter_mut());
        if failed {
            eprintln!(
                "\n===== test failed after {:.1}s; logs kept in {} (database {} kept) =====",
                self.started.elapsed().as_secs_f64(),
                self.dir.display(),
                self.database
            );
            for proc in &procs {
                eprintln!(
                    "----- {} ({}): last lines -----\n{}",
                    proc.name,
                    proc.log.display(),
                    tail(&proc.log, 40)
                );
            }
        }
        for proc in procs {
            let _ = proc.child.start_kill();
        }
        if !failed {
            let (admin, database) = (admin_database_url(), self.database.clone());
            let (redis, queue) = (self.redis_url.clone(), self.queue.clone());
            on_own_runtime(async move {
                drop_database(&admin, &database).await;
                delete_queue_keys(redis, queue).await;
            });
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn create_database(admin: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connect to HYPERCODE_TEST_DATABASE_URL ({admin}): {e}"));
    sqlx::query(&format!("create database \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let _ = conn.close().await;
}

async fn drop_database(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

// ------------------------------------------------------------------------------------------
// The dashboard over plain HTTP.
// ------------------------------------------------------------------------------------------

/// One response of the dashboard, read.
#[derive(Debug, Clone)]
pub struct Page {
    /// The status code.
    pub status: u16,
    /// The `Location` header.
    pub location: Option<String>,
    /// The `Set-Cookie` headers, whole.
    pub set_cookies: Vec<String>,
    /// Every header.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Page {
    /// The page's CSRF token (from `<meta name="csrf-token">`; empty if it has none).
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf-token\" content=\"";
        let start = self.body.find(marker).map(|i| i + marker.len());
        let token = start.and_then(|s| self.body[s..].split('"').next());
        token.unwrap_or_default().to_owned()
    }
}

/// The one cookie-keeping client of the suite: it sends the cookies it was given back, and
/// does not follow redirects, so each hop can be checked.
#[derive(Clone)]
pub struct Browser {
    /// Its HTTP client (for requests [`Browser::send`] should carry cookies on).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    /// The cookies it holds, by name.
    pub cookies: BTreeMap<String, String>,
    /// The `Set-Cookie` headers of the last response, whole.
    pub set_cookies: Vec<String>,
}

impl Browser {
    /// A browser without cookies on the API at `base`.
    pub fn new(base: &str) -> Browser {
        Browser::with_client(
            base,
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        )
    }

    /// A browser without cookies that sends through `http` (which must not follow
    /// redirects).
    pub fn with_client(base: &str, http: reqwest::Client) -> Browser {
        Browser {
            http,
            base: base.to_owned(),
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    /// The `Cookie` header it sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The last response's `Set-Cookie` header for cookie `name`; panics if there is none.
    pub fn set_cookie(&self, name: &str) -> &str {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", self.set_cookies))
    }

    /// Send `request` with the cookies, keep those the answer sets (and drop those it
    /// expires), and read the answer.
    pub async fn send(&mut self, mut request: reqwest::RequestBuilder) -> Page {
        if !self.cookies.is_empty() {
            request = request.header("Cookie", self.cookie_header());
        }
        let response = request.send().await.expect("the dashboard answered");
        let status = response.status().as_u16();
        let header = |name: &str| -> Vec<String> {
            response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect()
        };
        self.set_cookies = header("set-cookie");
        let location = header("location").into_iter().next();
        for cookie in &self.set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let expired = cookie.to_ascii_lowercase().contains("max-age=0");
                if value.is_empty() || expired {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
        Page {
            status,
            location,
            set_cookies: self.set_cookies.clone(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// POST a form to `path`.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_form(path, form, &[]).await
    }

    /// POST a form to `path` with further headers.
    pub async fn post_form(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Open the login page and post its form with `key` and `next`; returns the answer.
    pub async fn try_sign_in(&mut self, key: &str, next: &str) -> Page {
        let login = self.get("/").await;
        assert_eq!(login.status, 200, "{login:?}");
        assert!(login.body.contains("id=\"login\""), "{}", login.body);
        let csrf = login.csrf();
        self.post("/login", &[("key", key), ("csrf", &csrf), ("next", next)])
            .await
    }

    /// Sign in with `key` through the login form; panics unless it works.
    pub async fn sign_in(&mut self, key: &str) {
        let signed = self.try_sign_in(key, "/").await;
        assert_eq!(signed.status, 303, "sign-in: {signed:?}");
        assert!(
            self.cookies.contains_key("hc_session"),
            "{:?}",
            self.set_cookies
        );
    }
}

impl Harness {
    /// A browser without cookies on this API.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// A browser signed in with `key`.
    pub async fn signed_in(&self, key: &str) -> Browser {
        let mut browser = self.browser();
        browser.sign_in(key).await;
        browser
    }
}

// ------------------------------------------------------------------------------------------
// The event stream (SSE).
// ------------------------------------------------------------------------------------------

/// One message of the event stream.
#[derive(Debug, Clone)]
pub struct SseMessage {
    /// Its `id:` (the event's position).
    pub id: String,
    /// Its `event:` (the event type).
    pub event: String,
    /// Its `data:`, parsed.
    pub data: Value,
    /// The message as it came over the wire (for checks on the raw text).
    pub raw: String,
}

impl SseMessage {
    /// The `id` as a number.
    pub fn position(&self) -> i64 {
        self.id
            .parse()
            .unwrap_or_else(|_| panic!("id is not a number: {self:?}"))
    }
}

/// The one client of `/api/v1/events` in the suite, parsing `text/event-stream` by hand from
/// the body's chunks.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Open `path` on `base` with the admin key (and `Last-Event-ID` if given); asserts 200.
    pub async fn open(
        h: &Harness,
        base: &str,
        path: &str,
        last_event_id: Option<&str>,
    ) -> EventStream {
        Self::open_as(&h.key, base, path, last_event_id).await
    }

    /// The same with `key`.
    pub async fn open_as(
        key: &str,
        base: &str,
        path: &str,
        last_event_id: Option<&str>,
    ) -> EventStream {
        // Not the harness' client: its 30 s timeout covers the whole body.
        let mut request = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("X-API-Key", key)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("the API answered");
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            panic!("GET {path}: {status} {body}");
        }
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next message (comments skipped); panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> SseMessage {
        tokio::time::timeout(timeout, self.read())
            .await
            .unwrap_or_else(|_| panic!("no event within {timeout:?}"))
    }

    async fn read(&mut self) -> SseMessage {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = parse_sse(&block) {
                    return message;
                }
                continue;
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("read the stream")
                .expect("the stream ended");
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// Messages until one satisfies `last` (included).
    pub async fn until(&mut self, last: impl Fn(&SseMessage) -> bool) -> Vec<SseMessage> {
        let mut messages = Vec::new();
        loop {
            let message = self.next(secs(30)).await;
            let done = last(&message);
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// Whether a message arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<SseMessage> {
        tokio::time::timeout(wait, self.read()).await.ok()
    }
}

/// One message from its lines; `None` for a comment-only block (a keep-alive).
fn parse_sse(block: &str) -> Option<SseMessage> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    if id.is_none() && event.is_none() && data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    Some(SseMessage {
        id: id.unwrap_or_else(|| panic!("a message without id: {block:?}")),
        event: event.unwrap_or_else(|| panic!("a message without event: {block:?}")),
        data: serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}")),
        raw: block.to_owned(),
    })
}

// ------------------------------------------------------------------------------------------
// Mission JSON helpers.
// ------------------------------------------------------------------------------------------

/// Whether a mission is succeeded, failed or cancelled.
pub fn is_terminal(mission: &Value) -> bool {
    matches!(
        mission["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// A mission's step by name; panics with the mission if absent.
pub fn step<'a>(mission: &'a Value, name: &str) -> &'a Value {
    mission["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("mission has no step `{name}`:\n{}", pretty(mission)))
}

/// Whether the mission has a step `name` with status `status`.
pub fn step_is(mission: &Value, name: &str, status: &str) -> bool {
    mission["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .is_some_and(|s| s["status"] == status)
}

/// `{name: status}` of every step, in order.
pub fn step_statuses(mission: &Value) -> Vec<(String, String)> {
    mission["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_owned(),
                        s["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The event types of a history, in order.
pub fn types(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Events of one type.
pub fn events_of<'a>(history: &'a [Value], kind: &str) -> Vec<&'a Value> {
    history.iter().filter(|e| e["type"] == kind).collect()
}

/// `type(step)` per event, for compact assertions on order.
pub fn typed_steps(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| match e["step"].as_str() {
            Some(step) => format!("{}({step})", e["type"].as_str().unwrap_or_default()),
            None => e["type"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A readable history.
pub fn describe_history(history: &[Value]) -> String {
    history
        .iter()
        .map(|e| {
            format!(
                "  #{} {} step={} attempt={} data={}",
                e["seq"], e["type"], e["step"], e["attempt"], e["data"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pretty JSON.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The id of a mission JSON.
pub fn id_of(mission: &Value) -> String {
    mission["id"]
        .as_str()
        .unwrap_or_else(|| panic!("mission without id: {mission}"))
        .to_owned()
}

/// An HTTP step of a plan.
pub fn http_step(name: &str, method: &str, url: &str) -> Value {
    json!({ "name": name, "http": { "method": method, "url": url } })
}

/// An HTTP step with a DELETE /undo/{name} compensation on the callee.
pub fn compensable_step(callee: &Callee, name: &str, method: &str, path: &str) -> Value {
    json!({
        "name": name,
        "http": { "method": method, "url": callee.url(path) },
        "compensate": { "http": { "method": "DELETE", "url": callee.url(&format!("/undo/{name}")) } }
    })
}

/// In a Prometheus text exposition, the value of the series `name` whose labels include every one of `labels` (`key="value"`),
/// summed over the series that match.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|label| rest.contains(label)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Seconds, for timeouts.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
