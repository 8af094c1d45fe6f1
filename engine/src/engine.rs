//! The engine facade: what the API and the workers call. It validates and records submissions
//! and decisions, then sends a wake-up through a [`Wake`] (the queue); Postgres stays the truth,
//! so a lost wake-up only delays a mission until the reconciler re-sends it.

use crate::error::{StoreError, StoreResult};
use crate::ids::{MissionId, WorkerId};
use crate::status::MissionStatus;
use crate::store::{Decision, NewMission, Retried, Store, Submitted};
use crate::workflow::{InputProblem, Registry};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hands a mission's wake-up to whatever carries work to workers (Redis in production).
#[async_trait]
pub trait Wake: Send + Sync + 'static {
    /// Ask some worker to run the mission soon.
    async fn wake(&self, id: MissionId) -> Result<(), WakeError>;
    /// How many wake-ups wait in the queue now, measured afresh.
    async fn depth(&self) -> Result<u64, WakeError>;
}

/// The queue did not take a wake-up; the reconciler re-sends it later, so this delays the
/// mission but loses nothing.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The queue holds as many wake-ups as it should; the mission waits in Postgres until the
    /// workers catch up (backpressure, not a fault).
    #[error("the queue is full ({depth} wake-ups waiting)")]
    Backlogged {
        /// Wake-ups waiting when this one was refused.
        depth: u64,
    },
    /// The queue could not be reached.
    #[error("could not enqueue a wake-up: {0}")]
    Unavailable(String),
}

/// A mission to start, with every option of a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The registered workflow to run.
    pub workflow: String,
    /// Its input.
    pub input: Value,
    /// Submitting again with the same key returns the first mission.
    pub idempotency_key: Option<String>,
    /// Missions sharing a key run one at a time, in submission order (1 to
    /// [`MAX_CONCURRENCY_KEY_CHARS`] characters).
    pub concurrency_key: Option<String>,
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lease lasts without renewal; a dead worker's missions resume after this.
    pub lease_ttl: Duration,
    /// Largest accepted input or output of a mission or step, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// How long a run's claim stays uncommitted waiting for the run's first write, so that the
    /// two commit together ([`crate::store::OpenClaim`]); zero commits every claim alone.
    pub claim_hold: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            max_payload_bytes: 1024 * 1024,
            claim_hold: Duration::from_millis(5),
        }
    }
}

/// How often a worker pool records its heartbeat. Readers (the dashboard's workers page)
/// refresh at this pace and call a worker lost after a few missed beats.
pub const WORKER_HEARTBEAT: Duration = Duration::from_secs(2);

/// Longest accepted idempotency key, in characters. The key sits in a unique B-tree index,
/// whose entries PostgreSQL limits to about 2.7 kB: a longer key would fail the insert.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The largest integer magnitude a JSON number carries exactly through every common parser
/// (2^53 − 1, JavaScript's `Number.MAX_SAFE_INTEGER`; serde_json reads a larger one written
/// with a fraction or exponent, or beyond 64 bits, as a rounded `f64`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The deepest nesting of arrays and objects accepted in a mission's input (`{}` and `[]` are
/// one level; scalars add none). Later stages walk inputs recursively (serialization, for
/// one), so depth is bounded here, well below serde_json's own parsing limit of 128.
pub const MAX_INPUT_DEPTH: usize = 64;

/// Why a string holding U+0000 is refused: PostgreSQL stores no NUL in `text` or `jsonb`, so
/// it is refused up front (a client error) rather than failing the write later.
pub const NUL_MESSAGE: &str = "strings must not contain the NUL character (U+0000)";

/// The length of `value` as compact JSON text, in bytes: what the payload limits are measured
/// in. Counted as it is written, so a long plan's output is not built as text only to be
/// measured.
pub(crate) fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// `value` as a `B` when `A` is `B`, else `value` back: lets a generic JSON path hand a [`Value`]
/// over as it is, where going through serde would copy all of it.
pub(crate) fn same_type<A: 'static, B: 'static>(value: A) -> Result<B, A> {
    let mut value = Some(value);
    if let Some(same) = (&mut value as &mut dyn std::any::Any).downcast_mut::<Option<B>>() {
        return Ok(same.take().expect("the value is there until taken"));
    }
    Err(value.expect("the value is taken only when the types are the same"))
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No workflow is registered under that name.
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    /// A string in the input (a value or a key) holds U+0000 (see [`NUL_MESSAGE`]).
    #[error("the input at `{pointer}`: {}", NUL_MESSAGE)]
    NulInInput {
        /// Where, as an RFC 6901 pointer into the input.
        pointer: String,
    },
    /// The idempotency key holds U+0000 (see [`NUL_MESSAGE`]).
    #[error("the idempotency key: {}", NUL_MESSAGE)]
    NulInIdempotencyKey,
    /// The idempotency key is longer than [`MAX_IDEMPOTENCY_KEY_CHARS`].
    #[error("the idempotency key is {chars} characters long; the limit is {limit}")]
    IdempotencyKeyTooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is larger than the limit.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The workflow is internal: only the engine starts it.
    #[error("workflow `{0}` is internal")]
    Internal(String),
    /// The concurrency key is empty, too long or holds U+0000.
    #[error("the concurrency key {0}")]
    BadConcurrencyKey(&'static str),
    /// The workflow refused the input.
    #[error("invalid input")]
    Invalid(Vec<InputProblem>),
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine: storage, registered workflows, and the queue to wake workers through.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    waker: Arc<dyn Wake>,
    config: EngineConfig,
    worker: WorkerId,
    shutdown: CancellationToken,
}

impl Engine {
    /// Assemble an engine.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        waker: Arc<dyn Wake>,
        config: EngineConfig,
    ) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            waker,
            config,
            worker: WorkerId::for_this_process(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The storage backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registered workflows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tunables.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The name this process claims leases under.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker
    }

    /// Cancelled when the process shuts down: runs stop taking new steps and hand missions back.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Validate and record a mission, then wake a worker for it. Every entry point (the API,
    /// the dashboard) submits through here, so its rules hold for all of them: those of
    /// [`Engine::check_input`], an idempotency key without NUL characters and of at most
    /// [`MAX_IDEMPOTENCY_KEY_CHARS`], and every server-side secret the input references
    /// exists (see [`Workflow::secrets_referenced`](crate::Workflow::secrets_referenced)).
    pub async fn submit(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        self.submit_mission(Submission {
            workflow: workflow.to_owned(),
            input,
            idempotency_key,
            concurrency_key: None,
        })
        .await
    }

    /// [`Engine::submit`] with every option: what callers (the API, the dashboard) use. An
    /// internal workflow is refused before its input is looked at.
    pub async fn submit_mission(&self, submission: Submission) -> Result<Submitted, SubmitError> {
        if self
            .registry
            .get(&submission.workflow)
            .is_some_and(|w| w.is_internal())
        {
            return Err(SubmitError::Internal(submission.workflow));
        }
        self.start(submission).await
    }

    /// Start a mission on the engine's own behalf (a schedule, a webhook, the healer): the
    /// rules of [`Engine::submit`], but an internal workflow may be started.
    pub async fn start(&self, submission: Submission) -> Result<Submitted, SubmitError> {
        let Submission {
            workflow,
            input,
            idempotency_key,
            concurrency_key,
        } = submission;
        let workflow = workflow.as_str();
        self.check_input(workflow, &input)?;
        if let Some(key) = idempotency_key.as_deref() {
            if key.contains('\0') {
                return Err(SubmitError::NulInIdempotencyKey);
            }
            let chars = key.chars().count();
            if chars > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(SubmitError::IdempotencyKeyTooLong {
                    chars,
                    limit: MAX_IDEMPOTENCY_KEY_CHARS,
                });
            }
        }
        if let Some(key) = concurrency_key.as_deref() {
            check_concurrency_key(key)?;
        }
        self.check_secrets(workflow, &input).await?;
        let submitted = self
            .store
            .submit(NewMission {
                id: MissionId::new(),
                workflow: workflow.to_owned(),
                input,
                idempotency_key,
                concurrency_key,
                tick: None,
            })
            .await?;
        if submitted.created {
            tracing::info!(mission = %submitted.mission.id, workflow, "mission submitted");
            crate::metrics::submitted(workflow);
            self.wake(submitted.mission.id).await;
        }
        Ok(submitted)
    }

    /// Whether [`Engine::submit`] would accept this input for this workflow: no string in it
    /// holds U+0000, it nests at most [`MAX_INPUT_DEPTH`] levels deep, the workflow is
    /// registered, the input is within the size limit, its numbers are exact (see
    /// [`unsafe_integers`]) and the workflow's own validation passes. Records nothing.
    pub fn check_input(&self, workflow: &str, input: &Value) -> Result<(), SubmitError> {
        if let Some(pointer) = nul_pointer(input) {
            return Err(SubmitError::NulInInput { pointer });
        }
        let depth = depth(input);
        if depth > MAX_INPUT_DEPTH {
            return Err(SubmitError::Invalid(vec![InputProblem::new(
                "",
                format!("the input is nested {depth} levels deep; the limit is {MAX_INPUT_DEPTH}"),
            )]));
        }
        let definition = self
            .registry
            .get(workflow)
            .ok_or_else(|| SubmitError::UnknownWorkflow(workflow.to_owned()))?;
        let size = json_size(input);
        if size > self.config.max_payload_bytes {
            return Err(SubmitError::TooLarge {
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        let inexact = unsafe_integers(input);
        if !inexact.is_empty() {
            return Err(SubmitError::Invalid(inexact));
        }
        definition.validate(input).map_err(SubmitError::Invalid)
    }

    /// Refuse an input that references a server-side secret that does not exist, at each
    /// string that names it. (One deleted later fails its step when the step runs.)
    pub(crate) async fn check_secrets(
        &self,
        workflow: &str,
        input: &Value,
    ) -> Result<(), SubmitError> {
        let Some(definition) = self.registry.get(workflow) else {
            return Ok(());
        };
        let referenced = definition.secrets_referenced(input);
        if referenced.is_empty() {
            return Ok(());
        }
        let mut names: Vec<String> = referenced.iter().map(|(_, name)| name.clone()).collect();
        names.sort();
        names.dedup();
        let known = self.store.existing_secrets(&names).await?;
        let unknown: Vec<InputProblem> = referenced
            .into_iter()
            .filter(|(_, name)| !known.contains(name))
            .map(|(pointer, name)| {
                InputProblem::new(
                    pointer,
                    format!(
                        "no server-side secret is named `{name}` (see `hypercode secrets list`)"
                    ),
                )
            })
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(SubmitError::Invalid(unknown))
        }
    }

    /// Record a decision on a waiting approval and wake the mission.
    pub async fn decide(&self, id: MissionId, step: &str, decision: Decision) -> StoreResult<()> {
        self.store.decide(id, step, decision).await?;
        self.wake(id).await;
        Ok(())
    }

    /// Ask to cancel a mission; its compensations run on a worker.
    pub async fn cancel(&self, id: MissionId, by: &str) -> StoreResult<MissionStatus> {
        let status = self.store.request_cancel(id, by).await?;
        if status == MissionStatus::Pending {
            self.wake(id).await;
        }
        Ok(status)
    }

    /// Send the signal `name` with `payload` to a mission (kept until a wait of that name takes
    /// it), and wake the mission if it was waiting for it. `NotFound` for an unknown mission,
    /// `Conflict` for a finished one or a signal of that name already received.
    pub async fn signal(&self, id: MissionId, name: &str, payload: Value) -> StoreResult<()> {
        if self.store.send_signal(id, name, payload).await? {
            self.wake(id).await;
        }
        Ok(())
    }

    /// Re-run a failed mission from its first failed step (see [`MissionStore::retry`] for
    /// exactly what is reset), then wake a worker for it.
    ///
    /// [`MissionStore::retry`]: crate::store::MissionStore::retry
    pub async fn retry(&self, id: MissionId, by: &str) -> StoreResult<Retried> {
        let retried = self.store.retry(id, by).await?;
        tracing::info!(mission = %id, by, from_step = ?retried.from_step, "mission retried");
        self.wake(id).await;
        Ok(retried)
    }

    /// How many wake-ups wait in the queue now. Missions past the queue's depth limit wait in
    /// Postgres instead (see [`Backlog`](crate::store::Backlog)), so this is not the backlog.
    pub async fn queue_depth(&self) -> Result<u64, WakeError> {
        self.waker.depth().await
    }

    /// Send a wake-up; a failure is only logged, since the reconciler re-sends lost wake-ups.
    pub async fn wake(&self, id: MissionId) {
        match self.waker.wake(id).await {
            Ok(()) => {}
            Err(e @ WakeError::Backlogged { .. }) => {
                tracing::debug!(mission = %id, error = %e, "wake-up deferred; the reconciler will send it")
            }
            Err(e) => {
                tracing::warn!(mission = %id, error = %e, "wake-up not enqueued; the reconciler will retry")
            }
        }
    }
}

/// At most this many numbers are reported by [`unsafe_integers`].
const MAX_REPORTED_NUMBERS: usize = 20;

/// The numbers in `value` that cannot be kept exact: integers of magnitude beyond
/// [`MAX_SAFE_INTEGER`], whether they arrived as 64-bit integers or as floats (`1e20`, or an
/// integer too long for 64 bits, which serde_json has already rounded). Every float beyond
/// 2^53 is an integer, so this is every number beyond ±(2^53 − 1). Such numbers are refused
/// rather than silently rounded (here, or by the next JSON parser that reads the input);
/// clients send them as strings. Found with an explicit stack, in document order, without
/// recursion; at most [`MAX_REPORTED_NUMBERS`] are reported.
pub fn unsafe_integers(value: &Value) -> Vec<InputProblem> {
    let mut found = Vec::new();
    let mut stack = vec![(value, String::new())];
    while let Some((value, pointer)) = stack.pop() {
        match value {
            Value::Number(number) if !is_exact(number) => {
                found.push(InputProblem::new(
                    pointer,
                    format!(
                        "the number {number} is beyond ±{MAX_SAFE_INTEGER} (2^53 − 1), the largest \
                         integer JSON numbers hold exactly; send large numbers as strings"
                    ),
                ));
                if found.len() == MAX_REPORTED_NUMBERS {
                    break;
                }
            }
            // Pushed in reverse, so they come off the stack in document order.
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, item)| (item, pointer_to(&pointer, &i.to_string()))),
            ),
            Value::Object(fields) => stack.extend(
                fields
                    .iter()
                    .rev()
                    .map(|(key, field)| (field, pointer_to(&pointer, key))),
            ),
            _ => {}
        }
    }
    found
}

/// The pointer to the first string or key (in no particular order) that holds U+0000 in
/// `value`, found with an explicit stack rather than recursion.
pub fn nul_pointer(value: &Value) -> Option<String> {
    let mut stack = vec![(value, String::new())];
    while let Some((value, at)) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Some(at),
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, pointer_to(&at, &i.to_string()))),
            ),
            Value::Object(fields) => {
                for (key, field) in fields {
                    let pointer = pointer_to(&at, key);
                    if key.contains('\0') {
                        return Some(pointer);
                    }
                    stack.push((field, pointer));
                }
            }
            _ => {}
        }
    }
    None
}

/// How deeply arrays and objects nest in `value` (0 for a scalar), found with an explicit stack
/// rather than recursion, so no input can exhaust the thread's stack.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(level);
                stack.extend(items.iter().map(|item| (item, level + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(level);
                stack.extend(fields.values().map(|field| (field, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Whether a JSON number is within ±(2^53 − 1), where integers and floats agree.
fn is_exact(number: &serde_json::Number) -> bool {
    if let Some(i) = number.as_i64() {
        i.unsigned_abs() <= MAX_SAFE_INTEGER
    } else if let Some(u) = number.as_u64() {
        u <= MAX_SAFE_INTEGER
    } else {
        number
            .as_f64()
            .is_some_and(|f| f.abs() <= MAX_SAFE_INTEGER as f64)
    }
}

/// `pointer` extended by one RFC 6901 reference token.
fn pointer_to(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker", &self.worker)
            .field("registry", &self.registry)
            .finish()
    }
}

/// Longest accepted concurrency key, in characters.
pub const MAX_CONCURRENCY_KEY_CHARS: usize = 200;

fn check_concurrency_key(key: &str) -> Result<(), SubmitError> {
    let chars = key.chars().count();
    if chars == 0 {
        return Err(SubmitError::BadConcurrencyKey("must not be empty"));
    }
    if chars > MAX_CONCURRENCY_KEY_CHARS {
        return Err(SubmitError::BadConcurrencyKey(
            "must be at most 200 characters long",
        ));
    }
    if key.contains('\0') {
        return Err(SubmitError::BadConcurrencyKey(
            "must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_type_hands_over_only_a_value_of_the_asked_type() {
        let value = json!({ "steps": { "a": 1 } });
        assert_eq!(same_type::<Value, Value>(value.clone()).ok(), Some(value));
        assert_eq!(same_type::<i64, Value>(7).err(), Some(7));
        assert_eq!(
            same_type::<Value, String>(json!("x")).err(),
            Some(json!("x"))
        );
    }

    fn pointers(input: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(input).unwrap_or(Value::Null);
        let mut found: Vec<String> = unsafe_integers(&value)
            .into_iter()
            .map(|p| p.pointer)
            .collect();
        // Object keys come in map order, which depends on serde_json's features.
        found.sort();
        found
    }

    #[test]
    fn integers_beyond_2_53_are_found_however_they_are_written() {
        assert!(pointers(r#"{"a": 9007199254740991, "b": -9007199254740991}"#).is_empty());
        assert!(pointers(r#"[1.5, 0.1, -2.5e-10, 9007199254740991.0, 1e15]"#).is_empty());
        assert_eq!(pointers("9007199254740992"), [""]);
        assert_eq!(pointers("-9007199254740992"), [""]);
        assert_eq!(
            pointers(
                r#"{"id": 12345678901234567890, "n": [1, 1e20, {"x/y": 123456789012345678901234}],
                   "neg": -9223372036854775808, "big": 1.5e300}"#
            ),
            ["/big", "/id", "/n/1", "/n/2/x~1y", "/neg"]
        );
        let problems = unsafe_integers(&json!({ "id": 9_007_199_254_740_993_u64 }));
        assert!(problems[0].message.contains("as strings"), "{problems:?}");
    }

    #[test]
    fn depth_counts_nested_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!("s")), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!([1, 2])), 1);
        assert_eq!(depth(&json!({ "a": [1, { "b": null }], "c": 2 })), 3);
        // Built by hand: far deeper than serde_json would parse, and no stack overflow.
        let mut deep = json!(0);
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(depth(&deep), 100_000);
        // Dropping a Value recurses; unwind it iteratively.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn nul_characters_are_located() {
        assert_eq!(
            nul_pointer(&json!({ "a": ["x", "y\u{0}"] })).as_deref(),
            Some("/a/1")
        );
        assert_eq!(
            nul_pointer(&json!({ "k\u{0}": 1 })).as_deref(),
            Some("/k\u{0}")
        );
        assert_eq!(
            nul_pointer(&json!({ "a/b": "\u{0}" })).as_deref(),
            Some("/a~1b")
        );
        assert_eq!(nul_pointer(&json!({ "a": "\\u0000" })), None);
    }

    #[test]
    fn reports_are_bounded() {
        let many = Value::Array(vec![json!(1e300); 1000]);
        assert_eq!(unsafe_integers(&many).len(), MAX_REPORTED_NUMBERS);
    }
}
