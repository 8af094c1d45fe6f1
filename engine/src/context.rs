//! The workflow context: what workflow code calls to run steps, wait for approvals and sleep.
//!
//! Every call takes the next position in the mission's journal. When the journal already holds
//! an entry there, the call is a replay: the entry must match (name, kind, input) or the run is
//! stopped with a named nondeterminism error, and a settled entry returns its recorded result
//! without running anything. Only calls past the end of the journal (or an unfinished attempt)
//! execute, and each state change is one write under the mission's lease.

use crate::engine::{json_size, same_type, Engine};
use crate::error::{
    CompensationSummary, FailedCompensation, Retry, StepError, StepFailure, StoreError,
    WorkflowError, WorkflowResult,
};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::metrics;
use crate::redact;
use crate::retry::RetryPolicy;
use crate::status::{StepKind, StepStatus};
use crate::store::{
    to_record, ApprovalInput, ApprovalRequested, DecisionRecord, FirstWrite, Lease, MissionChange,
    MissionRecord, OpenClaim, Outcome, StepRecord, Store, Transition,
};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Undoes a completed step, given that step's recorded output.
pub type Compensation =
    Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync>;

/// Makes a mission's output from its last step's output (see [`Step::finishing`]).
type Finish = Box<dyn FnOnce(&Value) -> Value + Send>;

/// A step's name and options: `Step::new("charge").input(&req)?.retry(policy).compensate(f)`.
pub struct Step {
    name: String,
    input: Option<Value>,
    retry: RetryPolicy,
    local: bool,
    compensation: Option<(Compensation, RetryPolicy)>,
    finish: Option<Finish>,
}

impl Step {
    /// A step with the default retry policy, no recorded input and no compensation.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            input: None,
            retry: RetryPolicy::default(),
            local: false,
            compensation: None,
            finish: None,
        }
    }

    /// Mark the step local: it has no effect outside this process (a computation, a marker),
    /// so neither its start nor its result need be durable before the workflow goes on. Its
    /// entry and its `step_started` and `step_succeeded` events are written together with the
    /// run's next write (the next step's start, a park, or the mission's end), so a mission of
    /// local steps costs one write; a crash before that write re-runs it, which is harmless for
    /// such a step. A failed attempt is written at once.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Mark the step as the workflow's last call: when it succeeds, the mission succeeds in the
    /// same write, with the output `finish` makes of the step's output, and a
    /// `mission_succeeded` event after the step's `step_succeeded`. That is one commit less per
    /// mission than a step's success followed by the mission's end, and the step's result is as
    /// durable as before (it is written the moment the step returns, as any step's). The
    /// workflow must return right after the step; the mission is finished by then, so what it
    /// returns is not written again, and a later call fails. When the output would exceed the
    /// payload limit, the step's success is written alone and the mission's end is left to the
    /// workflow's return, which then fails the mission as it would have.
    pub fn finishing(mut self, finish: impl FnOnce(&Value) -> Value + Send + 'static) -> Self {
        self.finish = Some(Box::new(finish));
        self
    }

    /// Record the step's input: it is shown in history and checked on replay.
    pub fn input(mut self, input: &impl Serialize) -> WorkflowResult<Self> {
        let value = serde_json::to_value(input).map_err(|e| {
            WorkflowError::failed(format!("input of step `{}` is not JSON: {e}", self.name))
        })?;
        self.input = Some(value);
        Ok(self)
    }

    /// Set the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Register an undo that runs (durably, with `retry`) if the mission later fails or is
    /// cancelled after this step succeeded. It receives the step's recorded output decoded as
    /// `O` (`Value` for the JSON as recorded); an output that no longer decodes as `O` fails the
    /// compensation for good rather than guessing.
    pub fn compensate<O, F, Fut>(mut self, retry: RetryPolicy, undo: F) -> Self
    where
        O: DeserializeOwned,
        F: Fn(O) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepError>> + Send + 'static,
    {
        let undo: Compensation = Arc::new(move |output| match serde_json::from_value(output) {
            Ok(output) => Box::pin(undo(output)),
            Err(e) => Box::pin(std::future::ready(Err(StepError::fatal(format!(
                "the step's recorded output does not decode for its compensation: {e}"
            ))))),
        });
        self.compensation = Some((undo, retry));
        self
    }
}

/// An approval gate's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// What the approver is asked: at most [`Approval::MAX_MESSAGE_BYTES`].
    pub message: String,
    /// After this long without a decision the approval counts as rejected.
    pub timeout: Option<Duration>,
}

impl Approval {
    /// The longest message, in bytes of UTF-8: messages are listed in the approvals inbox,
    /// many at a time, so a huge one would bloat every read of it.
    pub const MAX_MESSAGE_BYTES: usize = 4096;
}

/// Flags shared between a run, its lease heartbeat and the worker's shutdown signal.
#[derive(Debug, Default)]
pub struct RunSignals {
    cancel_requested: AtomicBool,
    lease_lost: AtomicBool,
    shutdown: CancellationToken,
}

impl RunSignals {
    /// Signals for a run that starts with `cancel_requested` and stops taking steps on `shutdown`.
    pub fn new(cancel_requested: bool, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            cancel_requested: AtomicBool::new(cancel_requested),
            lease_lost: AtomicBool::new(false),
            shutdown,
        })
    }

    /// Note that someone asked to cancel.
    pub fn set_cancel_requested(&self, value: bool) {
        self.cancel_requested.fetch_or(value, Ordering::Relaxed);
    }

    /// Note that another worker took the lease.
    pub fn set_lease_lost(&self) {
        self.lease_lost.store(true, Ordering::Relaxed);
    }

    fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Relaxed)
    }
}

/// How a task-like entry runs: its retries, whether its start is written before it runs, an
/// extra row written with its success (a compensation marks its original step compensated), and
/// whether its success ends the mission.
struct TaskOptions {
    retry: RetryPolicy,
    local: bool,
    also_on_success: Option<StepRecord>,
    finish: Option<Finish>,
}

struct Registered {
    step: String,
    position: usize,
    undo: Compensation,
    retry: RetryPolicy,
}

/// How a task-like entry's success is recorded: the extra row it settles, its event, whether
/// it waits for the run's next write (a local step), and whether it ends the mission.
struct Success {
    also: Option<StepRecord>,
    event: EventType,
    local: bool,
    finish: Option<Finish>,
}

/// The events that mark a task-like entry's attempts (a compensation's have names of their own).
struct TaskEvents {
    started: EventType,
    succeeded: EventType,
    failed: EventType,
}

impl TaskEvents {
    fn of(kind: StepKind) -> Self {
        match kind {
            StepKind::Compensation => Self {
                started: EventType::CompensationStarted,
                succeeded: EventType::StepCompensated,
                failed: EventType::CompensationFailed,
            },
            _ => Self {
                started: EventType::StepStarted,
                succeeded: EventType::StepSucceeded,
                failed: EventType::StepFailed,
            },
        }
    }
}

/// An attempt under way: its entry (marked running) and the events still to be written with
/// its result.
struct Attempt {
    entry: StepRecord,
    events: Vec<NewEvent>,
}

impl Attempt {
    /// Add an event about this attempt, written with its next write.
    fn note(&mut self, kind: EventType, data: Value) {
        let event = NewEvent::step(kind, &self.entry.name, self.entry.attempts, data);
        self.events.push(event);
    }
}

/// A recorded task-like entry, on replay.
enum Replayed {
    /// Settled: its recorded result.
    Settled(Value),
    /// Its next attempt is due.
    Unfinished(StepRecord),
}

/// Where a call lands in the journal.
enum Slot {
    /// Past the end: nothing recorded yet.
    New(usize),
    /// A recorded entry that matches the call.
    Recorded(StepRecord),
}

/// Local steps' results not written yet: they go out with the run's next write.
#[derive(Default)]
struct Unwritten {
    steps: Vec<StepRecord>,
    events: Vec<NewEvent>,
}

impl Unwritten {
    /// Most entries held back at once: a long run of local steps is written in batches of this
    /// size, so a crash re-runs at most this many.
    const MAX_STEPS: usize = 64;
}

/// The handle workflow code runs through. One per run of one mission.
pub struct Context {
    mission: MissionId,
    /// The mission's workflow, for the metrics of what this run journals.
    workflow: String,
    lease: Lease,
    store: Arc<dyn Store>,
    journal: Vec<StepRecord>,
    cursor: usize,
    names: HashSet<String>,
    compensations: Vec<Registered>,
    signals: Arc<RunSignals>,
    max_payload_bytes: usize,
    parked: bool,
    /// The mission ended with a [`Step::finishing`] step's success.
    finished: bool,
    retry_generation: u32,
    unwritten: Unwritten,
    /// The claim, while it waits to commit with the run's first write.
    open_claim: Option<Box<dyn OpenClaim>>,
}

impl Context {
    pub(crate) fn new(
        engine: &Engine,
        mission: &MissionRecord,
        lease: Lease,
        journal: Vec<StepRecord>,
        signals: Arc<RunSignals>,
        retry_generation: u32,
        open_claim: Option<Box<dyn OpenClaim>>,
    ) -> Self {
        Self {
            retry_generation,
            mission: mission.id,
            workflow: mission.workflow.clone(),
            lease,
            store: engine.store().clone(),
            // Every recorded entry's name goes in on replay: sized for them at once.
            names: HashSet::with_capacity(journal.len() + 1),
            journal,
            cursor: 0,
            compensations: Vec::new(),
            signals,
            max_payload_bytes: engine.config().max_payload_bytes,
            parked: false,
            finished: false,
            unwritten: Unwritten::default(),
            open_claim,
        }
    }

    /// The mission this run advances.
    pub fn mission_id(&self) -> MissionId {
        self.mission
    }

    /// How many times the mission has been retried by hand (`MissionStore::retry`): 0 until
    /// its first manual retry. Constant across the automatic retries and resumptions between
    /// two manual retries, so a workflow can derive idempotency keys from it that stay the
    /// same for one run's attempts and change with each manual retry.
    pub fn retry_generation(&self) -> u32 {
        self.retry_generation
    }

    /// Whether this run already parked the mission (so the runner must not write it again).
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    /// Whether this run already finished the mission (with a [`Step::finishing`] step), so the
    /// runner has nothing left to write.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Run a step once, durably: a recorded result is returned on replay without running `f`.
    /// Retryable errors are retried per the step's policy with durable backoff (the mission is
    /// parked meanwhile, holding no worker).
    pub async fn step<T, F, Fut>(&mut self, step: Step, f: F) -> WorkflowResult<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let Step {
            name,
            input,
            retry,
            local,
            compensation,
            finish,
        } = step;
        let options = TaskOptions {
            retry,
            local,
            also_on_success: None,
            finish,
        };
        let output = self
            .run_task(&name, StepKind::Task, input, options, || async {
                let value = f().await?;
                serde_json::to_value(value)
                    .map_err(|e| StepError::fatal(format!("output is not JSON: {e}")))
            })
            .await?;
        if let Some((undo, retry)) = compensation {
            self.compensations.push(Registered {
                step: name.clone(),
                position: self.cursor - 1,
                undo,
                retry,
            });
        }
        from_json(output).map_err(|e| WorkflowError::Nondeterminism {
            position: self.cursor - 1,
            detail: format!("recorded output of step `{name}` no longer decodes: {e}"),
        })
    }

    /// Wait durably for a human decision. Returns the decision when approved; a rejection (or
    /// the timeout passing) is `WorkflowError::Rejected`.
    pub async fn approval(&mut self, name: &str, approval: Approval) -> WorkflowResult<Value> {
        let input = to_record(&ApprovalInput {
            message: approval.message.clone(),
            timeout_s: approval.timeout.map(|t| t.as_secs_f64()),
        });
        match self.slot(name, StepKind::Approval, Some(&input))? {
            Slot::Recorded(entry) => match entry.status {
                StepStatus::Succeeded => Ok(entry.output.unwrap_or(Value::Null)),
                StepStatus::Rejected => Err(rejected(&entry)),
                StepStatus::Waiting if self.signals.cancel_requested() => self.skip(entry).await,
                StepStatus::Waiting if entry.wake_at.is_some_and(|at| at <= Utc::now()) => {
                    let decision = to_record(&DecisionRecord::timed_out());
                    let settled = StepRecord {
                        status: StepStatus::Rejected,
                        error: Some(decision.clone()),
                        finished_at: Some(Utc::now()),
                        wake_at: None,
                        ..entry
                    };
                    let event = NewEvent::step(
                        EventType::ApprovalRejected,
                        name,
                        settled.attempts,
                        decision,
                    );
                    self.write(MissionChange::Keep, vec![settled.clone()], vec![event])
                        .await?;
                    Err(rejected(&settled))
                }
                StepStatus::Waiting => Err(WorkflowError::Suspended {
                    wake_at: entry.wake_at,
                }),
                other => Err(self.corrupt(name, other)),
            },
            Slot::New(position) => {
                self.refuse_if_cancelled()?;
                // Checked only for a new request, so one recorded before the cap still replays.
                let size = approval.message.len();
                if size > Approval::MAX_MESSAGE_BYTES {
                    return Err(WorkflowError::failed(format!(
                        "approval `{name}`: the approval message of {size} bytes exceeds the limit of {} bytes",
                        Approval::MAX_MESSAGE_BYTES
                    )));
                }
                let deadline = approval.timeout.map(after);
                let entry = StepRecord {
                    status: StepStatus::Waiting,
                    attempts: 1,
                    wake_at: deadline,
                    ..new_entry(position, name, StepKind::Approval, Some(input.clone()))
                };
                let asked = ApprovalRequested {
                    message: approval.message,
                    deadline,
                };
                let event =
                    NewEvent::step(EventType::ApprovalRequested, name, 1, to_record(&asked));
                self.park(entry, vec![event], deadline).await
            }
        }
    }

    /// Sleep durably: the mission is parked and resumes after `duration`, even across restarts.
    pub async fn sleep(&mut self, name: &str, duration: Duration) -> WorkflowResult<()> {
        let input = json!({ "ms": duration.as_millis() as u64 });
        match self.slot(name, StepKind::Sleep, Some(&input))? {
            Slot::Recorded(entry) => match entry.status {
                StepStatus::Succeeded => Ok(()),
                StepStatus::Waiting if self.signals.cancel_requested() => self.skip(entry).await,
                StepStatus::Waiting if entry.wake_at.is_none_or(|at| at <= Utc::now()) => {
                    let settled = StepRecord {
                        status: StepStatus::Succeeded,
                        finished_at: Some(Utc::now()),
                        ..entry
                    };
                    let event =
                        NewEvent::step(EventType::TimerFired, name, settled.attempts, json!({}));
                    self.write(MissionChange::Keep, vec![settled], vec![event])
                        .await?;
                    Ok(())
                }
                StepStatus::Waiting => Err(WorkflowError::Suspended {
                    wake_at: entry.wake_at,
                }),
                other => Err(self.corrupt(name, other)),
            },
            Slot::New(position) => {
                self.refuse_if_cancelled()?;
                let deadline = after(duration);
                let entry = StepRecord {
                    status: StepStatus::Waiting,
                    attempts: 1,
                    wake_at: Some(deadline),
                    ..new_entry(position, name, StepKind::Sleep, Some(input))
                };
                let event = NewEvent::step(
                    EventType::TimerStarted,
                    name,
                    1,
                    json!({ "until": deadline }),
                );
                self.park(entry, vec![event], Some(deadline)).await
            }
        }
    }

    /// Wait durably (no worker held) for the signal `name` sent to this mission
    /// (`POST /api/v1/missions/{id}/signals/{name}`) and return its payload. A signal sent before
    /// the mission gets here is kept and delivered at once. No signal within `timeout` fails the
    /// step for good (code `signal_timeout`), and the mission's compensations run.
    pub async fn signal<T: DeserializeOwned>(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> WorkflowResult<T> {
        let input = json!({ "timeout_s": timeout.as_secs_f64() });
        let payload = match self.slot(name, StepKind::Signal, Some(&input))? {
            Slot::Recorded(entry) => match entry.status {
                StepStatus::Succeeded => entry
                    .output
                    .and_then(|mut output| output.get_mut("payload").map(Value::take))
                    .unwrap_or(Value::Null),
                StepStatus::Failed => {
                    return Err(WorkflowError::StepFailed {
                        step: name.to_owned(),
                        error: self.recorded_failure(&entry)?,
                    })
                }
                StepStatus::Waiting if self.signals.cancel_requested() => {
                    return self.skip(entry).await
                }
                StepStatus::Waiting => match self.store.signal(self.mission, name).await? {
                    Some(payload) => self.deliver_signal(entry, payload).await?,
                    None if entry.wake_at.is_some_and(|at| at <= Utc::now()) => {
                        return self.time_out_signal(entry, timeout).await
                    }
                    None => return self.wait_for_signal(entry, Vec::new()).await,
                },
                other => return Err(self.corrupt(name, other)),
            },
            Slot::New(position) => {
                self.refuse_if_cancelled()?;
                let deadline = after(timeout);
                let entry = StepRecord {
                    status: StepStatus::Waiting,
                    attempts: 1,
                    wake_at: Some(deadline),
                    ..new_entry(position, name, StepKind::Signal, Some(input))
                };
                match self.store.signal(self.mission, name).await? {
                    Some(payload) => self.deliver_signal(entry, payload).await?,
                    None => {
                        let event = NewEvent::step(
                            EventType::SignalWaiting,
                            name,
                            1,
                            json!({ "deadline": deadline }),
                        );
                        return self.wait_for_signal(entry, vec![event]).await;
                    }
                }
            }
        };
        serde_json::from_value(payload).map_err(|e| {
            WorkflowError::failed(format!(
                "the payload of signal `{name}` does not fit what the workflow expects: {e}"
            ))
        })
    }

    /// Record the signal as the wait's output, `{"payload": ...}` (what views and the history
    /// show for every signal wait).
    async fn deliver_signal(&mut self, entry: StepRecord, payload: Value) -> WorkflowResult<Value> {
        let received = json!({ "payload": payload });
        let settled = StepRecord {
            status: StepStatus::Succeeded,
            output: Some(received.clone()),
            wake_at: None,
            finished_at: Some(Utc::now()),
            ..entry
        };
        let event = NewEvent::step(
            EventType::SignalReceived,
            &settled.name,
            settled.attempts,
            received,
        );
        self.write(MissionChange::Keep, vec![settled], vec![event])
            .await?;
        Ok(payload)
    }

    /// Park on the wait, then look once more: a signal sent while the wait was being recorded
    /// found no waiting step to wake.
    async fn wait_for_signal<T>(
        &mut self,
        entry: StepRecord,
        events: Vec<NewEvent>,
    ) -> WorkflowResult<T> {
        let name = entry.name.clone();
        let deadline = entry.wake_at;
        let parked = self.park(entry, events, deadline).await;
        self.store.wake_if_signalled(self.mission, &name).await?;
        parked
    }

    /// Fail the wait for good: no signal came in time.
    async fn time_out_signal<T>(
        &mut self,
        entry: StepRecord,
        timeout: Duration,
    ) -> WorkflowResult<T> {
        let failure = StepFailure {
            code: Some("signal_timeout".to_owned()),
            message: format!(
                "no signal `{}` arrived within {} s",
                entry.name,
                timeout.as_secs_f64()
            ),
            retryable: false,
            details: Some(Value::Null),
            attempts: Some(entry.attempts),
        };
        let settled = StepRecord {
            status: StepStatus::Failed,
            error: Some(failure.to_json()),
            wake_at: None,
            finished_at: Some(Utc::now()),
            ..entry
        };
        let event = NewEvent::step(
            EventType::StepFailed,
            &settled.name,
            settled.attempts,
            failure.to_json(),
        );
        let step = settled.name.clone();
        self.write(MissionChange::Keep, vec![settled], vec![event])
            .await?;
        Err(WorkflowError::StepFailed {
            step,
            error: failure,
        })
    }

    /// Run the registered compensations of completed steps, newest first, each as a durable,
    /// retried journal entry. Returns a summary of what was undone and what could not be.
    pub(crate) async fn compensate(&mut self) -> WorkflowResult<CompensationSummary> {
        let registered = std::mem::take(&mut self.compensations);
        let mut summary = CompensationSummary::default();
        for comp in registered.iter().rev() {
            let original = self.journal[comp.position].clone();
            let output = original.output.clone().unwrap_or(Value::Null);
            let marked = StepRecord {
                status: StepStatus::Compensated,
                ..original
            };
            let undo = comp.undo.clone();
            let name = format!("compensate:{}", comp.step);
            let input = Some(json!({ "step": comp.step }));
            match self
                .run_task(
                    &name,
                    StepKind::Compensation,
                    input,
                    TaskOptions {
                        retry: comp.retry,
                        local: false,
                        also_on_success: Some(marked),
                        finish: None,
                    },
                    || undo(output),
                )
                .await
            {
                Ok(_) => summary.compensated.push(comp.step.clone()),
                Err(WorkflowError::StepFailed { error, .. }) => {
                    summary.compensation_failed.push(FailedCompensation {
                        step: comp.step.clone(),
                        error,
                    })
                }
                Err(other) => return Err(other),
            }
        }
        Ok(summary)
    }

    /// Execute (or replay) one task-like entry: a settled entry returns its recorded result;
    /// otherwise its next attempt starts, runs, and its result is recorded.
    async fn run_task<Fut>(
        &mut self,
        name: &str,
        kind: StepKind,
        input: Option<Value>,
        options: TaskOptions,
        f: impl FnOnce() -> Fut,
    ) -> WorkflowResult<Value>
    where
        Fut: Future<Output = Result<Value, StepError>>,
    {
        let entry = match self.slot(name, kind, input.as_ref())? {
            Slot::Recorded(entry) => match self.replay_task(kind, entry).await? {
                Replayed::Settled(output) => return Ok(output),
                Replayed::Unfinished(entry) => entry,
            },
            Slot::New(position) => new_entry(position, name, kind, input),
        };
        let entry = self.ensure_may_start(kind, entry).await?;
        let events = TaskEvents::of(kind);
        let TaskOptions {
            retry,
            local,
            also_on_success,
            finish,
        } = options;
        let started = self.start_attempt(entry, events.started, local).await?;
        let attempt = started.entry.attempts;
        let span = tracing::info_span!(
            "step",
            step = name,
            attempt,
            kind = kind.as_str(),
            otel.name = format!("step {name}"),
            otel.status_code = tracing::field::Empty,
        );
        let limit = self.max_payload_bytes;
        let result = f()
            .instrument(span.clone())
            .await
            .and_then(|output| within_limit(output, limit));
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        // The step's span ends with its work, before the journal write that records it.
        drop(span);
        match result {
            Ok(output) => {
                let success = Success {
                    also: also_on_success,
                    event: events.succeeded,
                    local,
                    finish,
                };
                self.record_success(started, output, success).await
            }
            Err(err) if err.retry == Retry::Retryable && retry.allows_another(attempt as u32) => {
                let delay = retry.backoff(attempt as u32);
                self.schedule_retry(started, &err, delay).await
            }
            Err(err) => self.record_failure(started, &err, events.failed).await,
        }
    }

    /// What a recorded task-like entry means on replay: its result once settled, or the entry
    /// whose next attempt is due.
    async fn replay_task(&mut self, kind: StepKind, entry: StepRecord) -> WorkflowResult<Replayed> {
        match entry.status {
            StepStatus::Succeeded | StepStatus::Compensated => {
                Ok(Replayed::Settled(entry.output.unwrap_or(Value::Null)))
            }
            StepStatus::Failed => Err(WorkflowError::StepFailed {
                error: self.recorded_failure(&entry)?,
                step: entry.name,
            }),
            StepStatus::Skipped => Err(WorkflowError::Cancelled),
            StepStatus::Pending if entry.wake_at.is_some_and(|at| at > Utc::now()) => {
                if self.stops_for_cancellation(kind) {
                    return self.skip(entry).await;
                }
                Err(WorkflowError::Suspended {
                    wake_at: entry.wake_at,
                })
            }
            // A due retry, or an attempt cut short by a crash: run the next attempt.
            StepStatus::Pending | StepStatus::Running => Ok(Replayed::Unfinished(entry)),
            other => Err(self.corrupt(&entry.name, other)),
        }
    }

    /// Refuse to start an attempt while the mission is being cancelled (an entry already tried
    /// is recorded as skipped) or the worker is shutting down.
    async fn ensure_may_start(
        &mut self,
        kind: StepKind,
        entry: StepRecord,
    ) -> WorkflowResult<StepRecord> {
        if self.stops_for_cancellation(kind) {
            return if entry.attempts == 0 {
                Err(WorkflowError::Cancelled)
            } else {
                self.skip(entry).await
            };
        }
        if self.signals.shutdown.is_cancelled() {
            return Err(WorkflowError::ShuttingDown);
        }
        Ok(entry)
    }

    /// Mark the entry's next attempt running. Its start is written now unless the entry is
    /// local (then its events wait for the attempt's result).
    async fn start_attempt(
        &mut self,
        mut entry: StepRecord,
        started: EventType,
        local: bool,
    ) -> WorkflowResult<Attempt> {
        entry.status = StepStatus::Running;
        entry.attempts += 1;
        entry.wake_at = None;
        entry.started_at.get_or_insert_with(Utc::now);
        let mut attempt = Attempt {
            entry,
            events: Vec::new(),
        };
        attempt.note(started, json!({}));
        if !local {
            let events = std::mem::take(&mut attempt.events);
            self.write(MissionChange::Keep, vec![attempt.entry.clone()], events)
                .await?;
        }
        Ok(attempt)
    }

    /// Record a successful attempt, with the extra row it settles if any; returns its output.
    /// A local step's record waits for the run's next write.
    async fn record_success(
        &mut self,
        mut attempt: Attempt,
        output: Value,
        success: Success,
    ) -> WorkflowResult<Value> {
        attempt.note(success.event, json!({}));
        let Attempt { mut entry, events } = attempt;
        entry.status = StepStatus::Succeeded;
        entry.output = Some(output.clone());
        entry.error = None;
        entry.finished_at = Some(Utc::now());
        let steps: Vec<StepRecord> = std::iter::once(entry).chain(success.also).collect();
        if let Some(mission_output) = success
            .finish
            .and_then(|finish| self.within_limit(finish(&output)))
        {
            let mut events = events;
            events.push(NewEvent::mission(EventType::MissionSucceeded, json!({})));
            let finish = MissionChange::Finish(Outcome::Succeeded(mission_output));
            self.write(finish, steps, events).await?;
            self.finished = true;
        } else if success.local {
            self.hold_back(steps, events).await?;
        } else {
            self.write(MissionChange::Keep, steps, events).await?;
        }
        Ok(output)
    }

    /// A mission output that fits the payload limit (a larger one fails the mission, which the
    /// runner does when the workflow returns it).
    fn within_limit(&self, output: Value) -> Option<Value> {
        let size = json_size(&output);
        (size <= self.max_payload_bytes).then_some(output)
    }

    /// Keep a local step's record for the run's next write (written now once
    /// [`Unwritten::MAX_STEPS`] are waiting). The in-memory journal has it at once.
    async fn hold_back(
        &mut self,
        steps: Vec<StepRecord>,
        events: Vec<NewEvent>,
    ) -> WorkflowResult<()> {
        self.remember(&steps);
        self.unwritten.steps.extend(steps);
        self.unwritten.events.extend(events);
        if self.unwritten.steps.len() >= Unwritten::MAX_STEPS {
            self.write(MissionChange::Keep, Vec::new(), Vec::new())
                .await?;
        }
        Ok(())
    }

    /// Record a failed attempt that runs again after `delay`, and park the mission until then.
    async fn schedule_retry<T>(
        &mut self,
        mut attempt: Attempt,
        err: &StepError,
        delay: Duration,
    ) -> WorkflowResult<T> {
        let at = after(delay);
        let error = err.to_json();
        let entry = &attempt.entry;
        tracing::info!(step = entry.name.as_str(), attempt = entry.attempts, error = %redact::url(&err.message), ?delay, "step failed; retry scheduled");
        attempt.note(
            EventType::StepRetryScheduled,
            json!({ "error": error, "delay_ms": delay.as_millis() as u64, "next_attempt_at": at }),
        );
        let Attempt { mut entry, events } = attempt;
        entry.status = StepStatus::Pending;
        entry.error = Some(error);
        entry.wake_at = Some(at);
        self.park(entry, events, Some(at)).await
    }

    /// Record an attempt that failed for good: the step's error ends the run.
    async fn record_failure<T>(
        &mut self,
        mut attempt: Attempt,
        err: &StepError,
        failed: EventType,
    ) -> WorkflowResult<T> {
        let entry = &attempt.entry;
        tracing::warn!(step = entry.name.as_str(), attempt = entry.attempts, error = %redact::url(&err.message), "step failed");
        let error = err.final_failure(entry.attempts);
        attempt.note(failed, json!({ "error": error }));
        let Attempt { mut entry, events } = attempt;
        entry.status = StepStatus::Failed;
        entry.error = Some(error.to_json());
        entry.finished_at = Some(Utc::now());
        let step = entry.name.clone();
        self.write(MissionChange::Keep, vec![entry], events).await?;
        Err(WorkflowError::StepFailed { step, error })
    }

    /// The error recorded on a step that failed for good.
    fn recorded_failure(&self, entry: &StepRecord) -> WorkflowResult<StepFailure> {
        let error = entry.error.clone().unwrap_or(Value::Null);
        serde_json::from_value(error).map_err(|e| {
            StoreError::Corrupt(format!(
                "error of step `{}` of mission {}: {e}",
                entry.name, self.mission
            ))
            .into()
        })
    }

    /// Whether a cancellation stops an entry of this kind now (compensations are what a
    /// cancellation runs, so they go on).
    fn stops_for_cancellation(&self, kind: StepKind) -> bool {
        kind != StepKind::Compensation && self.signals.cancel_requested()
    }

    /// Take the next journal position for a call and match it against what is recorded there.
    fn slot(&mut self, name: &str, kind: StepKind, input: Option<&Value>) -> WorkflowResult<Slot> {
        let position = self.cursor;
        if !self.names.insert(name.to_owned()) {
            return Err(WorkflowError::failed(format!(
                "step name `{name}` is used twice in one mission"
            )));
        }
        self.cursor += 1;
        let Some(entry) = self.journal.get(position) else {
            return Ok(Slot::New(position));
        };
        // Compensations are journaled after the point where the workflow stopped; meeting one
        // means a cancelled run has reached that point again.
        if entry.kind == StepKind::Compensation
            && kind != StepKind::Compensation
            && self.signals.cancel_requested()
        {
            return Err(WorkflowError::Cancelled);
        }
        if entry.name != name || entry.kind != kind {
            return Err(WorkflowError::Nondeterminism {
                position,
                detail: format!(
                    "the journal recorded {:?} `{}` here but the workflow asked for {kind:?} `{name}`",
                    entry.kind, entry.name
                ),
            });
        }
        if entry.input.as_ref() != input {
            return Err(WorkflowError::Nondeterminism {
                position,
                detail: format!(
                    "step `{name}` was recorded with input {} but is now called with {}",
                    // Quoted inputs are text by now, past the redaction of views: hide their
                    // secrets here.
                    redact::value(entry.input.as_ref().unwrap_or(&Value::Null)),
                    redact::value(input.unwrap_or(&Value::Null))
                ),
            });
        }
        Ok(Slot::Recorded(entry.clone()))
    }

    fn refuse_if_cancelled(&self) -> WorkflowResult<()> {
        if self.signals.cancel_requested() {
            return Err(WorkflowError::Cancelled);
        }
        Ok(())
    }

    /// Abandon an unfinished entry because the mission is being cancelled.
    async fn skip<T>(&mut self, entry: StepRecord) -> WorkflowResult<T> {
        let event = NewEvent::step(
            EventType::StepSkipped,
            &entry.name,
            entry.attempts,
            json!({ "reason": "cancelled" }),
        );
        let skipped = StepRecord {
            status: StepStatus::Skipped,
            wake_at: None,
            finished_at: Some(Utc::now()),
            ..entry
        };
        self.write(MissionChange::Keep, vec![skipped], vec![event])
            .await?;
        Err(WorkflowError::Cancelled)
    }

    /// Record an entry that waits and park the mission in the same write.
    async fn park<T>(
        &mut self,
        entry: StepRecord,
        events: Vec<NewEvent>,
        wake_at: Option<DateTime<Utc>>,
    ) -> WorkflowResult<T> {
        self.write(MissionChange::Suspend { wake_at }, vec![entry], events)
            .await?;
        self.parked = true;
        Err(WorkflowError::Suspended { wake_at })
    }

    /// One atomic write under the lease, carrying the local steps' records held back so far
    /// (before this write's own, in order); keeps the in-memory journal in step with it.
    pub(crate) async fn write(
        &mut self,
        mission: MissionChange,
        steps: Vec<StepRecord>,
        events: Vec<NewEvent>,
    ) -> WorkflowResult<()> {
        if self.signals.lease_lost.load(Ordering::Relaxed) {
            return Err(StoreError::LeaseLost(self.mission).into());
        }
        if self.finished {
            return Err(WorkflowError::failed(
                "the workflow made a call after its finishing step; the mission had already succeeded",
            ));
        }
        let Unwritten {
            steps: mut all_steps,
            events: mut all_events,
        } = std::mem::take(&mut self.unwritten);
        for step in &steps {
            // One row per entry in a write: a later version replaces a held-back one.
            match all_steps.iter_mut().find(|s| s.position == step.position) {
                Some(held) => *held = step.clone(),
                None => all_steps.push(step.clone()),
            }
        }
        all_events.extend(events);
        let noted = metrics::noted(&all_events);
        let written = all_steps.clone();
        let transition = Transition {
            mission,
            steps: all_steps,
            events: all_events,
        };
        let state = match self.open_claim.take() {
            Some(open) => match open.commit_with(transition).await {
                FirstWrite::Written(state) => state?,
                FirstWrite::Returned(transition) => {
                    self.store.apply(&self.lease, transition).await?
                }
            },
            None => self.store.apply(&self.lease, transition).await?,
        };
        metrics::journaled(&self.workflow, &written, &noted);
        self.signals.set_cancel_requested(state.cancel_requested);
        self.remember(&steps);
        Ok(())
    }

    /// Put entries into the in-memory journal.
    fn remember(&mut self, steps: &[StepRecord]) {
        for step in steps {
            let position = step.position as usize;
            if position < self.journal.len() {
                self.journal[position] = step.clone();
            } else {
                self.journal.push(step.clone());
            }
        }
    }

    fn corrupt(&self, name: &str, status: StepStatus) -> WorkflowError {
        StoreError::Corrupt(format!(
            "step `{name}` of mission {} has impossible status {status:?}",
            self.mission
        ))
        .into()
    }
}

fn new_entry(position: usize, name: &str, kind: StepKind, input: Option<Value>) -> StepRecord {
    StepRecord {
        position: position as i32,
        name: name.to_owned(),
        kind,
        status: StepStatus::Pending,
        attempts: 0,
        input,
        output: None,
        error: None,
        wake_at: None,
        started_at: None,
        finished_at: None,
    }
}

fn rejected(entry: &StepRecord) -> WorkflowError {
    WorkflowError::Rejected {
        step: entry.name.clone(),
        decision: entry.error.clone().unwrap_or(Value::Null),
    }
}

fn after(duration: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// A recorded output decoded as `T`. When `T` is [`Value`] (a plan's steps) the output is
/// handed over as it is: decoding a tree into a new one would copy all of it on every replay.
fn from_json<T: DeserializeOwned + 'static>(output: Value) -> serde_json::Result<T> {
    same_type(output).or_else(serde_json::from_value)
}

/// Refuse an output larger than the configured limit, so one step cannot bloat the journal.
fn within_limit(output: Value, limit: usize) -> Result<Value, StepError> {
    let size = json_size(&output);
    if size > limit {
        return Err(StepError::fatal(format!(
            "output of {size} bytes exceeds the limit of {limit} bytes"
        )));
    }
    Ok(output)
}
