//! Group commit of journal writes. Every step needs a durable write, and on a small machine the
//! commit, not the statement, is the cost: so transitions from all runs in this process are
//! queued, and a writer takes what is waiting (up to a batch) and applies it as one statement,
//! hence one round trip and one commit.
//!
//! When a transition arrives with nothing being committed and no run about to send another, it
//! is written at once (no added latency). Otherwise its batch keeps collecting:
//! - while another batch commits: that commit's runs mostly come straight back with their next
//!   transition, which then rides along instead of waiting for a commit of its own. A batch that
//!   grows to [`Batching::overlap`] is written alongside, and a commit that takes longer than
//!   [`Batching::stall`] (a row lock held elsewhere) holds nothing back;
//! - for at most [`Batching::linger`] while a run whose transition just committed with its lease
//!   kept has not sent its next one, and only until every such run has.
//!
//! So commits follow each other rather than overlap, and under load each one carries what
//! arrived during the one before. With two concurrent writers instead (the previous scheme), an
//! idle writer took each transition the moment it arrived, and batches stayed near 1–3 even at
//! 64 missions in flight on a CPU-bound machine.
//!
//! Each transition stays individually fenced: the statement updates only the missions whose
//! lease token still matches, and a transition whose mission row was not updated writes no
//! journal rows or events and is answered `LeaseLost`. A batch that fails as a whole is retried
//! one transition at a time, so one bad transition cannot fail its neighbours.
//!
//! Journal entries already in the table are updated and new ones inserted, by two plain
//! statements rather than one `insert … on conflict do update`: an upsert writes a speculative
//! insertion's confirmation, or a row lock before its update, to the WAL for every entry. Which
//! entries exist is read from the statement's snapshot, which is exact here: only the lease
//! holder writes a mission's entries, one transition at a time, and the holder's row lock on the
//! mission (taken by the statement's first step) orders it after any earlier holder's write.
//!
//! This module is the one place that knows the columns of a transition's row: [`TransitionRow`]
//! serializes them, and the statement in [`write`] reads them back with the same names.

use crate::error::{MissionError, StoreError, StoreResult};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::status::MissionStatus;
use crate::store::{Lease, LeaseState, MissionChange, OpenClaim, Outcome, StepRecord, Transition};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

struct Request {
    mission: MissionId,
    row: TransitionRow,
    reply: oneshot::Sender<StoreResult<LeaseState>>,
}

/// One transition as a row of the group-commit statement: the fenced mission change, the
/// journal entries (whole, in [`StepRecord`]'s form, which names the `steps` table's columns)
/// and the events.
#[derive(Debug, Serialize)]
struct TransitionRow {
    mission_id: MissionId,
    token: i64,
    #[serde(flatten)]
    mission: MissionColumns,
    steps: Vec<StepRecord>,
    events: Vec<EventRow>,
}

impl TransitionRow {
    fn new(lease: &Lease, transition: Transition) -> Self {
        Self {
            mission_id: lease.mission,
            token: lease.token.0,
            mission: MissionColumns::from(transition.mission),
            steps: transition.steps,
            events: transition.events.into_iter().map(EventRow::from).collect(),
        }
    }
}

/// Which of the mission row's columns a transition sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// The mission stays with its lease holder: only its history position and time move.
    Keep,
    /// The mission leaves its lease holder: status, wake-up time, lease and queue time are set.
    Park,
}

/// The mission row's new values under a transition.
#[derive(Debug, Serialize)]
struct MissionColumns {
    mode: Mode,
    status: Option<MissionStatus>,
    wake_at: Option<DateTime<Utc>>,
    output: Option<Value>,
    error: Option<MissionError>,
}

impl MissionColumns {
    /// The mission leaves its lease holder in `status`.
    fn park(status: MissionStatus) -> Self {
        Self {
            mode: Mode::Park,
            status: Some(status),
            wake_at: None,
            output: None,
            error: None,
        }
    }
}

impl From<MissionChange> for MissionColumns {
    fn from(change: MissionChange) -> Self {
        match change {
            MissionChange::Keep => Self {
                mode: Mode::Keep,
                status: None,
                wake_at: None,
                output: None,
                error: None,
            },
            MissionChange::Suspend { wake_at } => Self {
                wake_at,
                ..Self::park(MissionStatus::Waiting)
            },
            MissionChange::Release => Self::park(MissionStatus::Pending),
            MissionChange::Finish(Outcome::Succeeded(output)) => Self {
                output: Some(output),
                ..Self::park(MissionStatus::Succeeded)
            },
            MissionChange::Finish(Outcome::Failed(error)) => Self {
                error: Some(error),
                ..Self::park(MissionStatus::Failed)
            },
            MissionChange::Finish(Outcome::Cancelled(error)) => Self {
                error: Some(error),
                ..Self::park(MissionStatus::Cancelled)
            },
        }
    }
}

/// A history event as a row of the statement's `events` array.
#[derive(Debug, Serialize)]
struct EventRow {
    #[serde(rename = "type")]
    kind: EventType,
    step: Option<String>,
    attempt: Option<i32>,
    data: Value,
}

impl From<NewEvent> for EventRow {
    fn from(event: NewEvent) -> Self {
        Self {
            kind: event.kind,
            step: event.step,
            attempt: event.attempt,
            data: event.data,
        }
    }
}

/// A transition row tagged with its place in the batch. Verdicts go by place, not by mission:
/// a stale worker's transition and the current holder's may share a batch, and only the one
/// whose token matches joins the mission row.
#[derive(Serialize)]
struct Numbered<'a> {
    i: i32,
    #[serde(flatten)]
    row: &'a TransitionRow,
}

fn numbered(batch: &[Request]) -> Vec<Numbered<'_>> {
    (0..)
        .zip(batch)
        .map(|(i, request)| Numbered {
            i,
            row: &request.row,
        })
        .collect()
}

/// How the writers form batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batching {
    /// Writer tasks per process: how many batches can commit at once.
    pub writers: usize,
    /// Most transitions in one statement.
    pub max_batch: usize,
    /// A batch this large is written even while another batch commits.
    pub overlap: usize,
    /// Longest a batch waits behind a commit in flight.
    pub stall: Duration,
    /// Longest a batch waits for runs whose last transition has just committed.
    pub linger: Duration,
}

impl Batching {
    /// Measured with 500 three-step missions per kind at 64 in flight (`bench/run --only
    /// cost`, debug build, a loaded 2-core machine), two writers throughout: batches written
    /// the moment a writer was free gave 2.0–2.4 statements per HTTP mission and 1.32–1.44 WAL
    /// fsyncs per step; waiting behind the commit in flight 1.19–1.36 and 1.07–1.12; with the
    /// 1 ms linger too 1.09–1.56 and 1.04–1.17 (in the same half hour as the previous row,
    /// 1.09–1.14 and 1.04: a small gain, near the noise).
    pub(super) const DEFAULT: Self = Self {
        writers: 2,
        max_batch: 256,
        overlap: 32,
        stall: Duration::from_millis(50),
        linger: Duration::from_millis(1),
    };
}

/// The queue in front of the writers.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Request>,
    collector: Arc<Collector>,
}

impl GroupCommit {
    /// Start the writer tasks on `pool`; they stop when the last handle is dropped.
    pub(super) fn start(pool: PgPool, batching: Batching) -> Self {
        let (queue, collector) = Collector::new(batching);
        for _ in 0..batching.writers {
            tokio::spawn(writer(pool.clone(), collector.clone()));
        }
        Self { queue, collector }
    }

    /// Queue one transition under `lease` and wait for its commit.
    pub(super) async fn apply(
        &self,
        lease: &Lease,
        transition: Transition,
    ) -> StoreResult<LeaseState> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Corrupt("the journal writer has stopped".to_owned());
        self.collector.returning.back(lease.mission);
        self.queue
            .send(Request {
                mission: lease.mission,
                row: TransitionRow::new(lease, transition),
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// What the writers share: the queue's receiving end, taken by one writer at a time, and what
/// decides when its batch is complete.
#[derive(Debug)]
struct Collector {
    receiver: Mutex<mpsc::Receiver<Request>>,
    /// Batches being committed.
    committing: watch::Sender<usize>,
    returning: Returning,
    batching: Batching,
}

impl Collector {
    fn new(batching: Batching) -> (mpsc::Sender<Request>, Arc<Self>) {
        let (queue, receiver) = mpsc::channel(batching.max_batch * batching.writers * 4);
        let collector = Self {
            receiver: Mutex::new(receiver),
            committing: watch::channel(0).0,
            returning: Returning::default(),
            batching,
        };
        (queue, Arc::new(collector))
    }

    /// The next batch, counted as committing until the returned guard is dropped; `None` once
    /// every handle is gone.
    async fn collect(&self) -> Option<(Vec<Request>, Committing<'_>)> {
        let Batching {
            max_batch,
            overlap,
            stall,
            linger,
            ..
        } = self.batching;
        let mut receiver = self.receiver.lock().await;
        let mut batch = vec![receiver.recv().await?];
        take_queued(&mut receiver, &mut batch, max_batch);
        let stalled = tokio::time::sleep(stall);
        tokio::pin!(stalled);
        let mut committing = self.committing.subscribe();
        while batch.len() < overlap.min(max_batch) && *committing.borrow_and_update() > 0 {
            tokio::select! {
                request = receiver.recv() => match request {
                    Some(request) => {
                        batch.push(request);
                        take_queued(&mut receiver, &mut batch, max_batch);
                    }
                    None => break,
                },
                // The sender lives in `self`: this only returns on a change.
                _ = committing.changed() => {}
                () = &mut stalled => break,
            }
        }
        let lingered = Instant::now() + linger;
        while batch.len() < max_batch {
            let Some(due) = self.returning.due(linger) else {
                break;
            };
            match tokio::time::timeout_at(due.min(lingered).into(), receiver.recv()).await {
                Ok(Some(request)) => {
                    batch.push(request);
                    take_queued(&mut receiver, &mut batch, max_batch);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Counted before the next writer may collect, so that it sees this commit.
        self.committing.send_modify(|n| *n += 1);
        Some((batch, Committing(&self.committing)))
    }
}

/// Move what is already queued into `batch`, up to `max_batch`.
fn take_queued(receiver: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_batch: usize) {
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// A batch being committed; dropping it (after its transitions are answered, so that their runs
/// are already on their way back) lets a batch waiting behind it go.
struct Committing<'a>(&'a watch::Sender<usize>);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Runs whose last transition committed with the lease kept, and when: they usually send their
/// next transition within moments (a step's end right after its start, the next step's start
/// right after an end), unless the step waits on I/O.
#[derive(Debug, Default)]
struct Returning {
    since: std::sync::Mutex<HashMap<MissionId, Instant>>,
}

impl Returning {
    fn answered(&self, missions: impl IntoIterator<Item = MissionId>, linger: Duration) {
        let now = Instant::now();
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        // A run that did not come back within the linger is in a step's I/O, or gone.
        since.retain(|_, at| now.duration_since(*at) < linger);
        since.extend(missions.into_iter().map(|mission| (mission, now)));
    }

    fn back(&self, mission: MissionId) {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mission);
    }

    /// Until when a batch may wait for the runs not back yet: `linger` after the latest was
    /// answered; `None` if every run answered within the last `linger` is back.
    fn due(&self, linger: Duration) -> Option<Instant> {
        let now = Instant::now();
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.retain(|_, at| now.duration_since(*at) < linger);
        since.values().max().map(|at| *at + linger)
    }
}

async fn writer(pool: PgPool, collector: Arc<Collector>) {
    while let Some((batch, committing)) = collector.collect().await {
        let began = Instant::now();
        match write(&pool, &numbered(&batch)).await {
            Ok(applied) => {
                crate::metrics::journal_batch(batch.len(), began.elapsed());
                let kept = batch.iter().enumerate().filter(|(index, request)| {
                    request.row.mission.mode == Mode::Keep && applied.contains_key(&(*index as i32))
                });
                collector.returning.answered(
                    kept.map(|(_, request)| request.mission),
                    collector.batching.linger,
                );
                answer(batch, &applied)
            }
            Err(e) if batch.len() == 1 => {
                let request = batch.into_iter().next().expect("one request");
                let _ = request.reply.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "batch write failed; writing its transitions one by one");
                for request in batch {
                    let alone = [Numbered {
                        i: 0,
                        row: &request.row,
                    }];
                    let result = match write(&pool, &alone).await {
                        Ok(applied) => verdict(0, request.mission, &applied),
                        Err(e) => Err(e),
                    };
                    let _ = request.reply.send(result);
                }
            }
        }
        drop(committing);
    }
}

/// A claim's transaction waiting for its run's first write ([`OpenClaim`]), on a task of its
/// own so that the claim commits when the hold runs out whatever the run is doing.
#[derive(Debug)]
pub(super) struct HeldClaim {
    handoff: oneshot::Sender<Handoff>,
}

#[derive(Debug)]
struct Handoff {
    transition: Transition,
    reply: oneshot::Sender<StoreResult<LeaseState>>,
}

impl HeldClaim {
    /// Keep `tx`, which has just claimed `lease`, open for up to `hold`.
    pub(super) fn start(tx: Transaction<'static, Postgres>, lease: Lease, hold: Duration) -> Self {
        let (handoff, receiver) = oneshot::channel();
        tokio::spawn(hold_open(tx, lease, hold, receiver));
        Self { handoff }
    }
}

#[async_trait]
impl OpenClaim for HeldClaim {
    async fn commit_with(
        self: Box<Self>,
        transition: Transition,
    ) -> Result<StoreResult<LeaseState>, Transition> {
        let (reply, answer) = oneshot::channel();
        self.handoff
            .send(Handoff { transition, reply })
            .map_err(|handoff| handoff.transition)?;
        Ok(answer.await.unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the claim's transaction ended without an answer".to_owned(),
            ))
        }))
    }
}

async fn hold_open(
    mut tx: Transaction<'static, Postgres>,
    lease: Lease,
    hold: Duration,
    mut receiver: oneshot::Receiver<Handoff>,
) {
    let handoff = tokio::select! {
        handoff = &mut receiver => handoff.ok(),
        () = tokio::time::sleep(hold) => {
            // Closed before looking, so that a write sent from now on goes back to its run,
            // while one sent just before is still taken.
            receiver.close();
            receiver.try_recv().ok()
        }
    };
    let Some(Handoff { transition, reply }) = handoff else {
        if let Err(e) = tx.commit().await {
            tracing::warn!(mission = %lease.mission, error = %e, "a claim failed to commit; the mission will be redelivered");
        }
        return;
    };
    let began = Instant::now();
    let row = TransitionRow::new(&lease, transition);
    let result = async {
        let applied = write(&mut *tx, &[Numbered { i: 0, row: &row }]).await?;
        tx.commit().await?;
        crate::metrics::journal_batch(1, began.elapsed());
        verdict(0, lease.mission, &applied)
    }
    .await;
    let _ = reply.send(result);
}

fn answer(batch: Vec<Request>, applied: &HashMap<i32, bool>) {
    for (index, request) in batch.into_iter().enumerate() {
        // A run that gave up waiting (its task was aborted) has dropped its receiver.
        let _ = request.reply.send(verdict(index, request.mission, applied));
    }
}

fn verdict(
    index: usize,
    mission: MissionId,
    applied: &HashMap<i32, bool>,
) -> StoreResult<LeaseState> {
    applied
        .get(&(index as i32))
        .map(|&cancel_requested| LeaseState { cancel_requested })
        .ok_or(StoreError::LeaseLost(mission))
}

/// Apply transitions in one statement; returns, for each transition (by batch index) whose
/// lease still held, whether cancellation was requested.
async fn write(db: impl PgExecutor<'_>, rows: &[Numbered<'_>]) -> StoreResult<HashMap<i32, bool>> {
    let applied = sqlx::query!(
        r#"
        with t as (
            select *, t.mode = 'keep' as keeps from jsonb_to_recordset($1::jsonb) as t(
                i int, mission_id uuid, token bigint, mode text, status mission_status,
                wake_at timestamptz, output jsonb, error jsonb, steps jsonb, events jsonb)
        ), m as (
            update missions set
                last_seq = missions.last_seq + jsonb_array_length(t.events),
                updated_at = now(),
                -- A cancellation requested while the mission ran finds it running and leaves
                -- it to notice; if the run parks instead (an approval, a signal, a sleep), the
                -- park becomes pending with no wake-up sent, so the reconciler hands it to a
                -- worker at once to compensate rather than leave it waiting.
                status = case when t.status = 'waiting' and missions.cancel_requested
                              then 'pending' else coalesce(t.status, missions.status) end,
                wake_at = case when t.keeps then missions.wake_at
                               when t.status = 'waiting' and missions.cancel_requested then null
                               else t.wake_at end,
                output = coalesce(t.output, missions.output),
                error = coalesce(t.error, missions.error),
                lease_owner = case when t.keeps then missions.lease_owner end,
                lease_expires_at = case when t.keeps then missions.lease_expires_at end,
                enqueued_at = case when t.keeps then missions.enqueued_at
                                   when t.status = 'pending' then now() end
            from t
            where missions.id = t.mission_id and missions.lease_token = t.token
              and missions.status = 'running'
            returning t.i, missions.id, missions.last_seq, missions.cancel_requested, t.steps, t.events
        ), u as (
            update steps set
                status = r.status, attempts = r.attempts, input = r.input, output = r.output,
                error = r.error, wake_at = r.wake_at, started_at = r.started_at,
                finished_at = r.finished_at, updated_at = now()
            from m, jsonb_to_recordset(m.steps) as r(
                position int, status step_status, attempts int, input jsonb, output jsonb,
                error jsonb, wake_at timestamptz, started_at timestamptz, finished_at timestamptz)
            where steps.mission_id = m.id and steps.position = r.position
        ), s as (
            insert into steps (mission_id, position, name, kind, status, attempts, input, output,
                               error, wake_at, started_at, finished_at)
            select m.id, r.position, r.name, r.kind, r.status, r.attempts, r.input, r.output,
                   r.error, r.wake_at, r.started_at, r.finished_at
            from m, jsonb_to_recordset(m.steps) as r(
                position int, name text, kind step_kind, status step_status, attempts int,
                input jsonb, output jsonb, error jsonb, wake_at timestamptz,
                started_at timestamptz, finished_at timestamptz)
            where not exists (select 1 from steps x
                              where x.mission_id = m.id and x.position = r.position)
        ), e as (
            insert into events (mission_id, seq, type, step, attempt, data)
            select m.id, m.last_seq - jsonb_array_length(m.events) + r.ord, r.type, r.step,
                   r.attempt, coalesce(r.data, '{}')
            from m, rows from (jsonb_to_recordset(m.events)
                as (type text, step text, attempt int, data jsonb)) with ordinality
                as r(type, step, attempt, data, ord)
        )
        select i as "i!", cancel_requested as "cancel_requested!" from m
        "#,
        Json(rows) as _,
    )
    .fetch_all(db)
    .await?;
    Ok(applied
        .into_iter()
        .map(|row| (row.i, row.cancel_requested))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LeaseToken;
    use serde_json::json;

    fn row(change: MissionChange) -> Value {
        let lease = Lease {
            mission: MissionId(uuid::Uuid::nil()),
            token: LeaseToken(7),
        };
        let step: StepRecord = serde_json::from_value(step_json()).unwrap();
        let event = NewEvent::step(EventType::StepStarted, "a", 1, json!({}));
        let transition = Transition {
            mission: change,
            steps: vec![step],
            events: vec![event],
        };
        let row = TransitionRow::new(&lease, transition);
        serde_json::to_value(Numbered { i: 2, row: &row }).unwrap()
    }

    /// A journal entry with the `steps` table's columns.
    fn step_json() -> Value {
        json!({ "position": 0, "name": "a", "kind": "task", "status": "running", "attempts": 1,
                "input": null, "output": null, "error": null, "wake_at": null,
                "started_at": null, "finished_at": null })
    }

    fn batching(linger: Duration, stall: Duration) -> Batching {
        Batching {
            writers: 1,
            max_batch: 8,
            overlap: 3,
            stall,
            linger,
        }
    }

    fn request(mission: MissionId) -> Request {
        let lease = Lease {
            mission,
            token: LeaseToken(1),
        };
        let transition = Transition {
            mission: MissionChange::Keep,
            steps: vec![],
            events: vec![],
        };
        Request {
            mission,
            row: TransitionRow::new(&lease, transition),
            reply: oneshot::channel().0,
        }
    }

    fn mission() -> MissionId {
        MissionId(uuid::Uuid::new_v4())
    }

    const LONG: Duration = Duration::from_secs(30);
    const PROMPT: Duration = Duration::from_secs(5);

    /// Collect a batch in a task of its own; the task ends with the batch's size.
    fn collecting(collector: &Arc<Collector>) -> tokio::task::JoinHandle<usize> {
        let collector = collector.clone();
        tokio::spawn(async move { collector.collect().await.expect("queue open").0.len() })
    }

    /// The size of the batch a collection in progress ends with, which it must do promptly.
    async fn collected(collecting: tokio::task::JoinHandle<usize>, why: &str) -> usize {
        tokio::time::timeout(PROMPT, collecting)
            .await
            .expect(why)
            .expect("the collection ran")
    }

    #[tokio::test]
    async fn an_idle_transition_is_collected_at_once() {
        let (queue, collector) = Collector::new(batching(LONG, LONG));
        // A run answered earlier and now back: nothing to wait for.
        let m = mission();
        collector.returning.answered([m], LONG);
        collector.returning.back(m);
        queue.send(request(m)).await.unwrap();
        let size = collected(collecting(&collector), "no waiting when idle").await;
        assert_eq!(size, 1);
    }

    #[tokio::test]
    async fn a_batch_behind_a_commit_collects_until_that_commit_ends() {
        let (queue, collector) = Collector::new(batching(Duration::ZERO, LONG));
        collector.committing.send_modify(|n| *n += 1);
        queue.send(request(mission())).await.unwrap();
        let batch = collecting(&collector);
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.send(request(mission())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!batch.is_finished(), "it waits for the commit in flight");
        collector.committing.send_modify(|n| *n -= 1);
        assert_eq!(collected(batch, "it goes when the commit ends").await, 2);
    }

    #[tokio::test]
    async fn a_batch_behind_a_commit_goes_once_large_enough_or_stalled() {
        let (queue, collector) = Collector::new(batching(Duration::ZERO, LONG));
        collector.committing.send_modify(|n| *n += 1);
        for _ in 0..3 {
            queue.send(request(mission())).await.unwrap();
        }
        let size = collected(collecting(&collector), "a large enough batch goes").await;
        assert_eq!(size, 3);

        let (queue, collector) =
            Collector::new(batching(Duration::ZERO, Duration::from_millis(100)));
        collector.committing.send_modify(|n| *n += 1);
        queue.send(request(mission())).await.unwrap();
        let size = collected(
            collecting(&collector),
            "a stalled commit holds nothing back",
        )
        .await;
        assert_eq!(size, 1);
    }

    #[tokio::test]
    async fn a_batch_lingers_for_a_returning_run_until_it_is_back() {
        let (queue, collector) = Collector::new(batching(LONG, LONG));
        let returning = mission();
        collector.returning.answered([returning], LONG);
        queue.send(request(mission())).await.unwrap();
        let batch = collecting(&collector);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!batch.is_finished(), "it waits for the returning run");
        collector.returning.back(returning);
        queue.send(request(returning)).await.unwrap();
        assert_eq!(collected(batch, "it goes when the run is back").await, 2);

        // A run that does not come back is waited for no longer than the linger.
        let linger = Duration::from_millis(100);
        let (queue, collector) = Collector::new(batching(linger, LONG));
        collector.returning.answered([mission()], linger);
        queue.send(request(mission())).await.unwrap();
        let size = collected(collecting(&collector), "it lingers no longer").await;
        assert_eq!(size, 1);
    }

    /// The columns the statement reads, with the names and values it compares.
    #[test]
    fn a_transition_row_has_the_columns_the_statement_reads() {
        let step = step_json();
        let event = json!({ "type": "step_started", "step": "a", "attempt": 1, "data": {} });
        let expected = |mode: &str, status: Value, error: Value| {
            json!({ "i": 2, "mission_id": uuid::Uuid::nil(), "token": 7, "mode": mode,
                    "status": status, "wake_at": null, "output": null, "error": error,
                    "steps": [step], "events": [event] })
        };
        assert_eq!(
            row(MissionChange::Keep),
            expected("keep", Value::Null, Value::Null)
        );
        assert_eq!(
            row(MissionChange::Release),
            expected("park", json!("pending"), Value::Null)
        );
        assert_eq!(
            row(MissionChange::Finish(Outcome::Failed(MissionError::new(
                "x"
            )))),
            expected("park", json!("failed"), json!({ "message": "x" }))
        );
    }
}
