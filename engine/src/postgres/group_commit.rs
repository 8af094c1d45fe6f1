//! Group commit of journal writes. Every step needs a durable write, and on a small machine the
//! commit, not the statement, is the cost: so transitions from all runs in this process are
//! queued, and a writer takes what is waiting (up to a batch) and applies it as one statement,
//! hence one round trip and one commit.
//!
//! How batches form (written at once when idle, collecting behind a commit in flight, lingering
//! briefly for runs about to return) is [`super::batch`]'s.
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

use super::batch::{Batching, Collector};
use crate::error::{MissionError, StoreError, StoreResult};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::status::MissionStatus;
use crate::store::{
    FirstWrite, Lease, LeaseState, MissionChange, OpenClaim, Outcome, StepRecord, Transition,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
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

/// The queue in front of the writers.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Request>,
    collector: Arc<Collector<Request>>,
    /// Claims held open for their runs' first writes ([`HeldClaim`]).
    held: Arc<AtomicUsize>,
}

impl GroupCommit {
    /// Start the writer tasks on `pool`; they stop when the last handle is dropped.
    pub(super) fn start(pool: PgPool, batching: Batching) -> Self {
        let (queue, collector) = Collector::new(batching);
        for _ in 0..batching.writers {
            tokio::spawn(writer(pool.clone(), collector.clone()));
        }
        Self {
            queue,
            collector,
            held: Arc::default(),
        }
    }

    /// Whether this process is writing: a batch of transitions is being committed, or a claim
    /// is held for its run's first write. A claim is held only when neither holds, so that it
    /// takes a commit off the critical path of a lone mission; with several runs on the go
    /// their writes share commits anyway, and held claims would only hold connections and
    /// commit one by one (measured: two worker processes ran ≈ 25% fewer no-op missions per
    /// second with every claim held; bench/analysis.md, sixth pass).
    pub(super) fn busy(&self) -> bool {
        self.collector.busy() || self.held.load(Ordering::Relaxed) > 0
    }

    /// Keep `tx`, which has just claimed `lease`, open for up to `hold` ([`HeldClaim`]).
    pub(super) fn hold(
        &self,
        tx: Transaction<'static, Postgres>,
        lease: Lease,
        hold: Duration,
    ) -> HeldClaim {
        let (handoff, receiver) = oneshot::channel();
        let held = Held::count(&self.held);
        tokio::spawn(async move {
            hold_open(tx, lease, hold, receiver).await;
            drop(held);
        });
        HeldClaim { handoff }
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

async fn writer(pool: PgPool, collector: Arc<Collector<Request>>) {
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

/// A run's first write, and where to answer it: with the result of writing it in the claim's
/// transaction, or with the write itself when the claim has committed alone.
#[derive(Debug)]
struct Handoff {
    transition: Transition,
    reply: oneshot::Sender<FirstWrite>,
}

/// One claim counted as held until dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn count(held: &Arc<AtomicUsize>) -> Self {
        held.fetch_add(1, Ordering::Relaxed);
        Self(held.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl OpenClaim for HeldClaim {
    async fn commit_with(self: Box<Self>, transition: Transition) -> FirstWrite {
        let (reply, answer) = oneshot::channel();
        if let Err(handoff) = self.handoff.send(Handoff { transition, reply }) {
            return FirstWrite::Returned(handoff.transition);
        }
        answer.await.unwrap_or_else(|_| {
            FirstWrite::Written(Err(StoreError::Corrupt(
                "the claim's transaction ended without an answer".to_owned(),
            )))
        })
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
        () = tokio::time::sleep(hold) => receiver.try_recv().ok(),
    };
    let Some(Handoff { transition, reply }) = handoff else {
        // The run was slow to write, or ended without writing: the claim commits alone. A write
        // arriving meanwhile waits for that commit and only then goes back to its run, to be
        // written the usual way: sent earlier, it would be checked against the mission row as
        // it was before the claim and refused as a lost lease.
        if let Err(e) = tx.commit().await {
            tracing::warn!(mission = %lease.mission, error = %e, "a claim failed to commit; the mission will be redelivered");
        }
        receiver.close();
        if let Ok(Handoff { transition, reply }) = receiver.try_recv() {
            let _ = reply.send(FirstWrite::Returned(transition));
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
    let _ = reply.send(FirstWrite::Written(result));
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
