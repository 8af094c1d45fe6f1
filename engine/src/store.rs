//! The storage contract. The engine talks to storage only through these traits, so a second
//! backend (an embedded SQLite for a zero-setup mode) can be added without touching workflows.

use crate::error::{MissionError, StoreResult};
use crate::event::{Event, NewEvent};
use crate::ids::{LeaseToken, MissionId, WorkerId};
use crate::schedule::cron::CronExpr;
use crate::schedule::{Catchup, Overlap, ScheduleName, Zone};
use crate::status::{MissionStatus, StepKind, StepStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// A mission to create.
#[derive(Debug, Clone)]
pub struct NewMission {
    /// Its id (chosen by the caller so it can log before the insert).
    pub id: MissionId,
    /// The registered workflow to run.
    pub workflow: String,
    /// The workflow's input.
    pub input: Value,
    /// Deduplicates submissions: the same key returns the first mission.
    pub idempotency_key: Option<String>,
    /// Missions sharing a key run one at a time, in submission order.
    pub concurrency_key: Option<String>,
    /// The schedule tick it is fired for, if a schedule started it.
    pub tick: Option<Tick>,
}

/// The tick of a schedule a mission is fired for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The schedule.
    pub schedule: ScheduleName,
    /// The tick's time (the trigger time of a manual trigger).
    pub fire_at: DateTime<Utc>,
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The mission (the existing one for a repeated idempotency key).
    pub mission: MissionRecord,
    /// False when an earlier submission with the same idempotency key was returned.
    pub created: bool,
}

/// A mission as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissionRecord {
    /// Its id.
    pub id: MissionId,
    /// The workflow it runs.
    pub workflow: String,
    /// Where it is.
    pub status: MissionStatus,
    /// The workflow input.
    pub input: Value,
    /// The output, once succeeded.
    pub output: Option<Value>,
    /// The error, once failed or cancelled.
    pub error: Option<Value>,
    /// The submission's idempotency key.
    pub idempotency_key: Option<String>,
    /// Its concurrency key: it runs only once every earlier live mission of the key finished.
    pub concurrency_key: Option<String>,
    /// The schedule that fired it, if one did.
    pub schedule: Option<String>,
    /// The tick it was fired for (the trigger time of a manual trigger).
    pub fire_at: Option<DateTime<Utc>>,
    /// Whether someone asked to cancel it.
    pub cancel_requested: bool,
    /// When a waiting mission becomes runnable.
    pub wake_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One journal entry: a step, an approval, a timer or a compensation at a fixed position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Position in the journal, from 0; replay matches calls to entries by position.
    pub position: i32,
    /// The step's name, unique within the mission.
    pub name: String,
    /// What the entry records.
    pub kind: StepKind,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: i32,
    /// The input it was called with (checked on replay).
    pub input: Option<Value>,
    /// Its output once succeeded (or an approval's decision).
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<Value>,
    /// A retry's, a timer's or an approval timeout's deadline.
    pub wake_at: Option<DateTime<Utc>>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it settled.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A lease held on a mission: writes carry the token and are refused once it is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The leased mission.
    pub mission: MissionId,
    /// The fencing token.
    pub token: LeaseToken,
}

/// What a successful claim hands the runner.
#[derive(Debug)]
pub struct Claim {
    /// The lease to write under.
    pub lease: Lease,
    /// The mission, as claimed, except its `input`, which is left `Null`: see [`Claim::input`].
    pub mission: MissionRecord,
    /// The mission's input as its JSON text: the workflow decodes it into its own input type
    /// directly, without building a [`Value`] of it first (a long plan's input is large).
    pub input: Box<serde_json::value::RawValue>,
    /// Its journal, in position order.
    pub journal: Vec<StepRecord>,
    /// How many times it has been retried by hand ([`MissionStore::retry`]).
    pub retry_generation: u32,
    /// The claim's transaction, still open for the run's first write when the claim was
    /// taken with [`JournalStore::claim_held`]; `None` once the claim is committed.
    pub open: Option<Box<dyn OpenClaim>>,
}

/// A claim's transaction held open for a moment, so that the run's first write (a first step's
/// start, or the whole of a mission of local steps with its end) commits with the claim: one
/// commit where there were two. Nothing a run does before its first write needs the claim to
/// be durable, since a step's effect outside waits for its start to be written, so a crash in
/// between only leaves the mission unclaimed, to be redelivered. The claim commits alone when
/// the hold runs out or the handle is dropped unused; then the write takes the usual path.
#[async_trait]
pub trait OpenClaim: Send + Sync + std::fmt::Debug {
    /// Apply `transition` in the claim's transaction and commit the two together, unless the
    /// claim has committed alone.
    async fn commit_with(self: Box<Self>, transition: Transition) -> FirstWrite;
}

/// What became of a run's first write handed to its [`OpenClaim`].
#[derive(Debug)]
// One value per run, moved once: boxing the transition would add an allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub enum FirstWrite {
    /// Applied in the claim's transaction: committed with it, or refused or failed with it.
    Written(StoreResult<LeaseState>),
    /// The claim had committed alone: the write comes back, to be applied the usual way.
    Returned(Transition),
}

/// How a transition changes the mission row itself.
#[derive(Debug, Clone, PartialEq)]
// One value per transition, moved straight into the group commit: boxing the large variant
// would add an allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub enum MissionChange {
    /// The mission keeps running under the lease.
    Keep,
    /// Park it; it becomes runnable at `wake_at` (or on an outside event when `None`).
    Suspend {
        /// When to wake it.
        wake_at: Option<DateTime<Utc>>,
    },
    /// Give it back unfinished, runnable at once.
    Release,
    /// Finish it.
    Finish(Outcome),
}

/// How a mission ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With an output.
    Succeeded(Value),
    /// With an error.
    Failed(MissionError),
    /// Cancelled, with a summary of what was undone.
    Cancelled(MissionError),
}

/// One atomic state change under a lease: the mission row, any journal entries and the history
/// events are written in one transaction, or not at all.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The mission row's change.
    pub mission: MissionChange,
    /// Journal entries to insert or replace, whole.
    pub steps: Vec<StepRecord>,
    /// History events to append, in order.
    pub events: Vec<NewEvent>,
}

/// What the store says back to a lease holder after a write or a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// Someone asked to cancel the mission.
    pub cancel_requested: bool,
}

/// A human decision on an approval step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Approve or reject.
    pub approve: bool,
    /// Who decided (an API key's name).
    pub by: String,
    /// Their comment.
    pub comment: Option<String>,
}

/// What an approval entry records as its input (checked on replay like any step's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApprovalInput {
    /// What the approver is asked.
    pub message: String,
    /// Seconds to wait for a decision before it counts as a rejection; `None` waits forever.
    pub timeout_s: Option<f64>,
}

/// A decision as the journal records it: an approval's output when approved, its error when
/// rejected, and the data of the `approval_granted` or `approval_rejected` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DecisionRecord {
    /// Approve or reject.
    pub decision: Verdict,
    /// Who decided (`timeout` when nobody did in time).
    pub by: String,
    /// Their comment.
    pub comment: Option<String>,
    /// Whether the deadline decided.
    pub timed_out: bool,
}

impl DecisionRecord {
    /// A person's decision.
    pub fn of(decision: &Decision) -> Self {
        Self {
            decision: if decision.approve {
                Verdict::Approve
            } else {
                Verdict::Reject
            },
            by: decision.by.clone(),
            comment: decision.comment.clone(),
            timed_out: false,
        }
    }

    /// The rejection recorded when the deadline passes without a decision.
    pub fn timed_out() -> Self {
        Self {
            decision: Verdict::Reject,
            by: "timeout".to_owned(),
            comment: None,
            timed_out: true,
        }
    }
}

/// Which way a decision went, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Go ahead.
    Approve,
    /// Stop.
    Reject,
}

/// The data of an `approval_requested` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApprovalRequested {
    /// What the approver is asked.
    pub message: String,
    /// When the approval times out, if it does.
    pub deadline: Option<DateTime<Utc>>,
}

/// A recorded shape as JSON. These are plain structs with string keys, so serializing them
/// cannot fail.
pub(crate) fn to_record(record: &impl Serialize) -> Value {
    serde_json::to_value(record).expect("a record serializes to JSON")
}

/// A mission's latest journal entry, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentStep {
    /// The step's name.
    pub name: String,
    /// What it is (a waiting approval, a timer, a task in backoff...).
    pub kind: StepKind,
    /// Where it is.
    pub status: StepStatus,
    /// When its retry, timer or approval timeout is due.
    pub wake_at: Option<DateTime<Utc>>,
}

/// A page request for the mission list (newest first, keyset pagination).
#[derive(Debug, Clone, Default)]
pub struct MissionQuery {
    /// Only missions in this status.
    pub status: Option<MissionStatus>,
    /// Only missions of this workflow.
    pub workflow: Option<String>,
    /// Only missions with this concurrency key.
    pub concurrency_key: Option<String>,
    /// Only missions fired by this schedule.
    pub schedule: Option<String>,
    /// Only missions created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only missions created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only missions whose input (as JSON text) or idempotency key contains this string
    /// (case-insensitive; taken literally: `%` and `_` match only themselves).
    pub search: Option<String>,
    /// Start after this (created_at, id) position.
    pub after: Option<(DateTime<Utc>, MissionId)>,
    /// Page size.
    pub limit: i64,
}

/// Characters of an approval's message the inbox carries; the rest is read on the mission.
pub const INBOX_MESSAGE_CHARS: i32 = 500;

/// An approval step waiting for a decision, with its mission (the approvals inbox).
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingApproval {
    /// The mission it belongs to.
    pub mission: MissionRecord,
    /// The approval step's name.
    pub step: String,
    /// The step's position in the mission's journal (with `requested_at` and the mission's
    /// id, the inbox's order).
    pub position: i32,
    /// What the approver is asked: its first [`INBOX_MESSAGE_CHARS`] characters.
    pub message: Option<String>,
    /// Whether `message` was cut short.
    pub message_truncated: bool,
    /// When the decision was (last) requested.
    pub requested_at: DateTime<Utc>,
    /// When the approval times out (counts as a rejection), if it does.
    pub deadline: Option<DateTime<Utc>>,
}

/// A position in the approvals inbox, whose order is (`requested_at`, mission id, step
/// position): the last approval of a page, which the next page starts strictly after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxPosition {
    /// When that approval's decision was requested.
    pub requested_at: DateTime<Utc>,
    /// Its mission.
    pub mission: MissionId,
    /// Its step's position in the journal.
    pub position: i32,
}

impl From<&WaitingApproval> for InboxPosition {
    fn from(approval: &WaitingApproval) -> Self {
        Self {
            requested_at: approval.requested_at,
            mission: approval.mission.id,
            position: approval.position,
        }
    }
}

/// What a retry reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    /// The first failed or rejected step, which runs (or is asked) again; `None` when the
    /// mission failed outside any step (a nondeterminism stop, an invalid input).
    pub from_step: Option<String>,
}

/// Submitting and inspecting missions, and the decisions people make about them.
#[async_trait]
pub trait MissionStore: Send + Sync + 'static {
    /// Create a mission (or return the one with the same idempotency key).
    async fn submit(&self, mission: NewMission) -> StoreResult<Submitted>;
    /// One mission.
    async fn mission(&self, id: MissionId) -> StoreResult<Option<MissionRecord>>;
    /// A mission's journal, in position order.
    async fn journal(&self, id: MissionId) -> StoreResult<Vec<StepRecord>>;
    /// A page of missions.
    async fn list(&self, query: &MissionQuery) -> StoreResult<Vec<MissionRecord>>;
    /// A page of a mission's history: events with `seq > after`, at most `limit`.
    async fn history(&self, id: MissionId, after: i64, limit: i64) -> StoreResult<Vec<Event>>;
    /// Record a decision on a waiting approval; fails with `Conflict` when it is not waiting.
    async fn decide(&self, id: MissionId, step: &str, decision: Decision) -> StoreResult<()>;
    /// Ask to cancel a live mission; returns its status. Terminal missions are a `Conflict`.
    async fn request_cancel(&self, id: MissionId, by: &str) -> StoreResult<MissionStatus>;
    /// Approval steps waiting for a decision across live missions, oldest request first,
    /// starting after `after`; at most `limit`. Messages are cut to [`INBOX_MESSAGE_CHARS`].
    async fn waiting_approvals(
        &self,
        after: Option<InboxPosition>,
        limit: i64,
    ) -> StoreResult<Vec<WaitingApproval>>;
    /// Each mission's latest journal entry (the step it is at, or ended on, and so what a
    /// waiting mission waits for), compensations included; missions that have none are left
    /// out. For listings.
    async fn current_steps(&self, ids: &[MissionId]) -> StoreResult<Vec<(MissionId, CurrentStep)>>;
    /// How many missions are in each status among those the query's filters (but its status,
    /// position and limit) select; statuses with none are left out. For the list's counts.
    async fn status_counts(&self, query: &MissionQuery) -> StoreResult<Vec<(MissionStatus, i64)>>;
    /// Make a failed mission runnable again from its first failed step, in one transaction:
    /// that step is reset (a task to `pending`, a rejected approval to `waiting` with a fresh
    /// deadline), every `compensated` step is reset to `pending` (its effect was undone, so it
    /// runs again), the compensation entries leave the journal (their history events stay), the
    /// mission's error and output are cleared, its retry generation goes up by one and it
    /// becomes `pending`; a `mission_retried` event records `by`. Attempt counts continue. Any
    /// other status is a `Conflict`.
    async fn retry(&self, id: MissionId, by: &str) -> StoreResult<Retried>;
}

/// Leases and the journal: what workers and the reconciler use to advance missions.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Take the lease of a runnable mission and load its journal; `None` when it is not runnable
    /// (finished, parked in the future, or leased by a live worker). The claim is committed
    /// when this returns.
    async fn claim(
        &self,
        id: MissionId,
        worker: &WorkerId,
        ttl: Duration,
    ) -> StoreResult<Option<Claim>> {
        self.claim_held(id, worker, ttl, Duration::ZERO).await
    }
    /// [`JournalStore::claim`], but the claim's transaction may stay open for up to `hold`, in
    /// [`Claim::open`], for the run's first write to commit with it (a store may commit it at
    /// once when that would save nothing, e.g. while its journal writes are being batched).
    /// With a zero `hold` the claim is committed when this returns.
    async fn claim_held(
        &self,
        id: MissionId,
        worker: &WorkerId,
        ttl: Duration,
        hold: Duration,
    ) -> StoreResult<Option<Claim>>;
    /// Extend a lease; fails with `LeaseLost` when it was taken over.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> StoreResult<LeaseState>;
    /// Apply one transition atomically under the lease; fails with `LeaseLost` when fenced out.
    async fn apply(&self, lease: &Lease, transition: Transition) -> StoreResult<LeaseState>;
    /// Missions that should be running but may have no wake-up in the queue: pending ones not
    /// enqueued for `redeliver_after`, waiting ones whose time has come, and running ones whose
    /// lease expired. They are marked enqueued in the same statement.
    async fn due(&self, limit: i64, redeliver_after: Duration) -> StoreResult<Vec<MissionId>>;
}

/// A complete storage backend.
pub trait Store:
    MissionStore + JournalStore + EventFeed + WorkerRegistry + SecretStore + SignalStore + ScheduleStore
{
}
impl<T> Store for T where
    T: MissionStore
        + JournalStore
        + EventFeed
        + WorkerRegistry
        + SecretStore
        + SignalStore
        + ScheduleStore
{
}

/// A secret's name and times; never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// `[A-Za-z_][A-Za-z0-9_]{0,62}`, as plans reference it (`{{secrets.NAME}}`).
    pub name: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When its value was last set.
    pub updated_at: DateTime<Utc>,
}

/// Server-side secrets that plans reference by name. Values leave the store only through
/// [`SecretStore::secret_values`], which workers call when a step makes its call; the API
/// process never reads one.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The values of those of `names` that exist, by name.
    async fn secret_values(&self, names: &[String]) -> StoreResult<HashMap<String, String>>;
    /// Those of `names` that exist (names only: what submission checks).
    async fn existing_secrets(&self, names: &[String]) -> StoreResult<Vec<String>>;
    /// Set a secret; with `true` when it was created, `false` when a value was replaced.
    async fn put_secret(&self, name: &str, value: &str) -> StoreResult<(SecretInfo, bool)>;
    /// Every secret's name and times, by name.
    async fn secrets(&self) -> StoreResult<Vec<SecretInfo>>;
    /// Delete a secret; `false` when there was none of that name.
    async fn delete_secret(&self, name: &str) -> StoreResult<bool>;
}

/// Whether `name` is a valid secret name: a letter or `_`, then up to 62 letters, digits or
/// `_` (the `secrets` table checks the same).
pub fn valid_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The global feed of history events, for live followers (`GET /api/v1/events`). Every event of
/// every mission has a *position* (its `id`): unique, never reused, and the feed delivers events
/// in position order. Positions are drawn when events are inserted, but transactions commit in
/// any order, so a follower must not read past the *horizon*: the position up to which every
/// event is committed (or rolled back) for good. Reading only up to the horizon, a follower that
/// resumes "after position N" can never miss an event that committed late behind its cursor.
///
/// Events are handed out as `(position, mission, event)`.
#[async_trait]
pub trait EventFeed: Send + Sync + 'static {
    /// Start following the feed: a background task (with one database connection of its own)
    /// learns of every commit that appends events, in any process, and publishes the horizon.
    /// The first value is already a valid horizon, and it only grows. Each call starts one such
    /// task, which lives as long as a receiver does: call it once per process and share it.
    async fn follow_feed(&self) -> StoreResult<tokio::sync::watch::Receiver<i64>>;

    /// The last position handed out so far (committed or not): no event has a larger one.
    async fn feed_head(&self) -> StoreResult<i64>;

    /// Events of all missions with `after < position <= upto`, in position order, at most
    /// `limit`.
    async fn feed_page(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, MissionId, Event)>>;

    /// One mission's events after position `after` and after `seq` `after_seq`, in `seq` order
    /// (the mission's own, which its positions follow), stopping before the first one above
    /// `upto`; at most `limit`.
    async fn mission_feed_page(
        &self,
        mission: MissionId,
        after: i64,
        after_seq: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, MissionId, Event)>>;
}

/// What a worker process reports about itself with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The engine's worker id: the name it claims leases under (`missions.lease_owner`).
    pub id: String,
    /// The queue it takes wake-ups from.
    pub queue: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// Missions it runs at once, at most.
    pub concurrency: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Wake-ups it has handled since it started.
    pub handled: i64,
}

/// A worker as last reported: its last heartbeat's report, when that came, and the missions it
/// is running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// What its last heartbeat reported (`handled`: the wake-ups handled by then).
    #[serde(flatten)]
    pub beat: WorkerBeat,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// When it shut down gracefully (a killed worker only stops beating).
    pub stopped_at: Option<DateTime<Utc>>,
    /// The running missions whose lease it holds, longest-running first.
    pub running: Vec<RunningMission>,
}

/// A mission a worker holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningMission {
    /// The mission.
    pub id: MissionId,
    /// Its workflow.
    pub workflow: String,
    /// When it was claimed or last advanced (its last recorded change).
    pub since: DateTime<Utc>,
    /// The latest journal entry still running or pending, if any (a step being executed).
    pub step: Option<String>,
}

/// Work done in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThroughputBucket {
    /// Where the bucket starts (a multiple of the bucket length since the Unix epoch).
    pub start: DateTime<Utc>,
    /// Steps that succeeded (`step_succeeded` events).
    pub steps: i64,
    /// Missions that finished: succeeded, failed or cancelled.
    pub missions: i64,
}

/// Live missions by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Runnable, waiting for a worker.
    pub pending: i64,
    /// Held by a worker.
    pub running: i64,
    /// Parked on a timer, a retry backoff or an approval.
    pub waiting: i64,
    /// Pending or waiting missions whose `wake_at` has passed: timers and backoffs that are due
    /// but not yet picked up.
    pub due: i64,
    /// Approval steps waiting for a person's decision.
    pub approvals: i64,
}

/// Worker heartbeats and the numbers an operator watches the fleet by. What a worker is running
/// is read from the leases (`missions.lease_owner`), not reported by the worker.
#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Record a heartbeat: insert the worker or update its row, with `heartbeat_at` = now.
    async fn heartbeat(&self, beat: &WorkerBeat) -> StoreResult<()>;
    /// Mark a worker as shut down gracefully (`stopped_at` = now).
    async fn worker_stopped(&self, id: &str) -> StoreResult<()>;
    /// Delete the workers not heard from for `unseen_for`; returns how many.
    async fn forget_workers(&self, unseen_for: Duration) -> StoreResult<u64>;
    /// Workers whose last heartbeat is less than `seen_within` old (stopped ones included),
    /// oldest start first, each with the running missions it holds the lease of.
    async fn workers(&self, seen_within: Duration) -> StoreResult<Vec<WorkerRecord>>;
    /// Steps and missions finished per `bucket` over the last `window`: every bucket is present
    /// (zeros included), oldest first; buckets are aligned to multiples of `bucket` since the
    /// Unix epoch, and the last one, the current one, is still filling.
    async fn throughput(
        &self,
        window: Duration,
        bucket: Duration,
    ) -> StoreResult<Vec<ThroughputBucket>>;
    /// Live missions by status, now.
    async fn backlog(&self) -> StoreResult<Backlog>;
}

/// Signals: named JSON payloads sent to a mission, kept until a `ctx.signal(..)` wait of that
/// name consumes them (a signal may arrive before the wait).
#[async_trait]
pub trait SignalStore: Send + Sync + 'static {
    /// Keep `payload` as the mission's signal `name` and, if the mission is parked waiting for
    /// it, make it runnable. Returns whether it did. `NotFound` for an unknown mission,
    /// `Conflict` for a finished one or a name that already received a signal.
    async fn send_signal(
        &self,
        mission: MissionId,
        name: &str,
        payload: Value,
    ) -> StoreResult<bool>;
    /// The payload of the mission's signal `name`, if it was sent.
    async fn signal(&self, mission: MissionId, name: &str) -> StoreResult<Option<Value>>;
    /// Make the mission runnable if it is parked waiting for signal `name` and that signal is
    /// there; returns whether it did. A wait calls this right after parking, so a signal sent
    /// while the wait was being recorded (and found no waiting step) is not left unseen.
    async fn wake_if_signalled(&self, mission: MissionId, name: &str) -> StoreResult<bool>;
}

/// What a schedule is made of: everything a client writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// Its unique name.
    pub name: ScheduleName,
    /// When it fires.
    pub cron: CronExpr,
    /// The zone `cron` is read in.
    pub timezone: Zone,
    /// The workflow each tick starts (an internal one too).
    pub workflow: String,
    /// That workflow's input.
    pub input: Value,
    /// What a tick does while an earlier mission of the schedule is live.
    pub overlap: Overlap,
    /// What happens to ticks missed while no `serve` ran.
    pub catchup: Catchup,
    /// Whether it fires.
    pub enabled: bool,
}

/// A change to a schedule: the fields given are replaced. Its name and workflow stay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleChange {
    /// A new expression.
    pub cron: Option<CronExpr>,
    /// A new zone.
    pub timezone: Option<Zone>,
    /// A new input (checked against the workflow by the engine first).
    pub input: Option<Value>,
    /// A new overlap policy.
    pub overlap: Option<Overlap>,
    /// A new catch-up policy.
    pub catchup: Option<Catchup>,
    /// Pause (`false`) or resume (`true`). A resumed schedule fires from its next tick on:
    /// ticks passed while paused are not caught up.
    pub enabled: Option<bool>,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// What was written.
    pub spec: NewSchedule,
    /// The tick it waits for; `None` while paused or when `cron` never fires again.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The latest tick that started a mission.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// Ticks not fired because an earlier mission was live (`overlap: skip`).
    pub skipped: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A mission a schedule started, as its schedule lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledMission {
    /// The mission.
    pub id: MissionId,
    /// Where it is.
    pub status: MissionStatus,
    /// The tick it was fired for.
    pub fire_at: DateTime<Utc>,
}

/// What one firing pass did: the missions to wake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// How many due schedules the pass handled.
    pub schedules: usize,
    /// Missions started for due ticks.
    pub started: Vec<MissionId>,
    /// Live missions asked to cancel (`overlap: cancel_previous`) that are now runnable.
    pub cancelled: Vec<MissionId>,
}

/// Durable cron schedules and the firing of their ticks.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Store a new schedule waiting for `next_fire_at`. `Conflict` when the name is taken.
    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        next_fire_at: Option<DateTime<Utc>>,
    ) -> StoreResult<ScheduleRecord>;
    /// Every schedule, by name.
    async fn schedules(&self) -> StoreResult<Vec<ScheduleRecord>>;
    /// One schedule.
    async fn schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>>;
    /// Apply a change; a new expression, zone or a resume moves the next tick to the first one
    /// after now. `NotFound` for an unknown name.
    async fn update_schedule(
        &self,
        name: &ScheduleName,
        change: ScheduleChange,
    ) -> StoreResult<ScheduleRecord>;
    /// Remove a schedule (its missions stay). `NotFound` for an unknown name.
    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<()>;
    /// The schedule's newest missions, newest tick first.
    async fn schedule_missions(
        &self,
        name: &ScheduleName,
        limit: i64,
    ) -> StoreResult<Vec<ScheduledMission>>;
    /// Every schedule's newest mission, by schedule name (one query for a whole list).
    async fn latest_scheduled_missions(&self) -> StoreResult<Vec<(String, ScheduledMission)>>;
    /// Start one mission of the schedule now, outside its cron, `enabled` and `overlap`.
    /// `NotFound` for an unknown name.
    async fn trigger_schedule(
        &self,
        name: &ScheduleName,
        id: MissionId,
    ) -> StoreResult<MissionRecord>;
    /// Fire the due ticks of up to `limit` schedules that no other caller is firing: start their
    /// missions, apply `overlap` and `catchup`, and move each schedule to its next tick, in one
    /// transaction.
    async fn fire_schedules(&self, limit: i64) -> StoreResult<Fired>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn approval_records_keep_their_recorded_shapes() {
        let input = ApprovalInput {
            message: "Ship it?".to_owned(),
            timeout_s: Some(1.5),
        };
        assert_eq!(
            to_record(&input).to_string(),
            json!({ "message": "Ship it?", "timeout_s": 1.5 }).to_string()
        );
        let stored = json!({ "message": "Ship it?", "timeout_s": null });
        let read: ApprovalInput = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(to_record(&read), stored);

        let decision = Decision {
            approve: true,
            by: "ops".to_owned(),
            comment: Some("fine".to_owned()),
        };
        assert_eq!(
            to_record(&DecisionRecord::of(&decision)).to_string(),
            json!({ "decision": "approve", "by": "ops", "comment": "fine", "timed_out": false })
                .to_string()
        );
        assert_eq!(
            to_record(&DecisionRecord::timed_out()).to_string(),
            json!({ "decision": "reject", "by": "timeout", "comment": null, "timed_out": true })
                .to_string()
        );
        let asked = ApprovalRequested {
            message: "Ship it?".to_owned(),
            deadline: None,
        };
        assert_eq!(
            to_record(&asked),
            json!({ "message": "Ship it?", "deadline": null })
        );
    }
}
