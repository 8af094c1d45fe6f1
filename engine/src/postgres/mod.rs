//! The PostgreSQL implementation of the storage traits. Every state change is one statement or
//! one explicit transaction; the lease token in each write's `where` clause is the fence.

use crate::error::{StoreError, StoreResult};
use crate::event::{Event, EventType, NewEvent};
use crate::ids::{LeaseToken, MissionId, WorkerId};
use crate::status::{MissionStatus, StepKind, StepStatus};
use crate::store::{
    Claim, Decision, InboxPosition, JournalStore, Lease, LeaseState, MissionChange, MissionQuery,
    MissionRecord, MissionStore, NewMission, Outcome, Retried, StepRecord, Submitted, Transition,
    WaitingApproval, INBOX_MESSAGE_CHARS,
};
use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;

mod feed;
mod group_commit;
mod secrets;
mod workers;
use group_commit::GroupCommit;

/// The migrations of the whole product, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Storage on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    writer: GroupCommit,
}

impl PgStore {
    /// Wrap a pool (migrations must have been applied: see [`MIGRATOR`]). Starts the
    /// group-commit writers, so it must be called within a Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        let writer = GroupCommit::start(pool.clone(), GroupCommit::WRITERS, GroupCommit::MAX_BATCH);
        Self { pool, writer }
    }

    /// The pool, for components that keep their own tables next to the engine's.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The JSON rows that `jsonb_to_recordset` turns back into journal entries.
fn steps_json(steps: &[StepRecord]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({
                    "position": s.position, "name": s.name, "kind": s.kind, "status": s.status,
                    "attempts": s.attempts, "input": s.input, "output": s.output, "error": s.error,
                    "wake_at": s.wake_at, "started_at": s.started_at, "finished_at": s.finished_at,
                })
            })
            .collect(),
    )
}

fn events_json(events: &[NewEvent]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| json!({ "type": e.kind.as_str(), "step": e.step, "attempt": e.attempt, "data": e.data }))
            .collect(),
    )
}

/// One transition as a row of the group-commit statement: the fenced mission change, the
/// journal rows and the events. `mode` says which mission columns it sets.
fn transition_json(lease: &Lease, transition: Transition) -> Value {
    let (mode, status, wake_at, output, error) = match transition.mission {
        MissionChange::Keep => ("keep", None, None, None, None),
        MissionChange::Suspend { wake_at } => {
            ("park", Some(MissionStatus::Waiting), wake_at, None, None)
        }
        MissionChange::Release => ("park", Some(MissionStatus::Pending), None, None, None),
        MissionChange::Finish(Outcome::Succeeded(output)) => (
            "park",
            Some(MissionStatus::Succeeded),
            None,
            Some(output),
            None,
        ),
        MissionChange::Finish(Outcome::Failed(error)) => {
            ("park", Some(MissionStatus::Failed), None, None, Some(error))
        }
        MissionChange::Finish(Outcome::Cancelled(error)) => (
            "park",
            Some(MissionStatus::Cancelled),
            None,
            None,
            Some(error),
        ),
    };
    json!({
        "mission_id": lease.mission, "token": lease.token.0, "mode": mode, "status": status,
        "wake_at": wake_at, "output": output, "error": error,
        "steps": steps_json(&transition.steps), "events": events_json(&transition.events),
    })
}

#[async_trait]
impl MissionStore for PgStore {
    async fn submit(&self, new: NewMission) -> StoreResult<Submitted> {
        let inserted = sqlx::query_as!(
            MissionRecord,
            r#"
            with ins as (
                insert into missions (id, workflow, input, idempotency_key, last_seq, enqueued_at)
                values ($1, $2, $3, $4, 1, now())
                on conflict (idempotency_key) do nothing
                returning *
            ), ev as (
                insert into events (mission_id, seq, type, data)
                select id, 1, 'mission_submitted', jsonb_build_object('workflow', workflow) from ins
            )
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, cancel_requested, wake_at, created_at, updated_at
            from ins
            "#,
            new.id as MissionId,
            new.workflow,
            new.input,
            new.idempotency_key,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(mission) = inserted {
            return Ok(Submitted {
                mission,
                created: true,
            });
        }
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        let existing = sqlx::query_as!(
            MissionRecord,
            r#"
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, cancel_requested, wake_at, created_at, updated_at
            from missions where idempotency_key = $1
            "#,
            key,
        )
        .fetch_one(&self.pool)
        .await?;
        if existing.workflow != new.workflow || existing.input != new.input {
            return Err(StoreError::Conflict(format!(
                "idempotency key `{key}` was already used by mission {} with a different request",
                existing.id
            )));
        }
        Ok(Submitted {
            mission: existing,
            created: false,
        })
    }

    async fn mission(&self, id: MissionId) -> StoreResult<Option<MissionRecord>> {
        Ok(sqlx::query_as!(
            MissionRecord,
            r#"
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, cancel_requested, wake_at, created_at, updated_at
            from missions where id = $1
            "#,
            id as MissionId,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn journal(&self, id: MissionId) -> StoreResult<Vec<StepRecord>> {
        load_journal(&self.pool, id).await
    }

    async fn list(&self, query: &MissionQuery) -> StoreResult<Vec<MissionRecord>> {
        let (after_at, after_id) = match query.after {
            Some((at, id)) => (Some(at), Some(id.0)),
            None => (None, None),
        };
        let search = query.search.as_deref().map(like_literal);
        // The free-text search scans the input's JSON text of every mission the other filters
        // leave: no index serves it yet (a trigram index on `input::text` would, at a write cost
        // on every submission). Fine while the list is an operator's tool, not a hot path.
        Ok(sqlx::query_as!(
            MissionRecord,
            r#"
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, cancel_requested, wake_at, created_at, updated_at
            from missions
            where ($1::mission_status is null or status = $1)
              and ($2::text is null or workflow = $2)
              and ($3::timestamptz is null or (created_at, id) < ($3, $4::uuid))
              and ($6::timestamptz is null or created_at >= $6)
              and ($7::timestamptz is null or created_at < $7)
              and ($8::text is null or input::text ilike '%' || $8 || '%' escape '\')
            order by created_at desc, id desc
            limit $5
            "#,
            query.status as Option<MissionStatus>,
            query.workflow,
            after_at,
            after_id,
            query.limit,
            query.created_after,
            query.created_before,
            search,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn history(&self, id: MissionId, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        sqlx::query!(
            r#"
            select seq, at, type as "kind", step, attempt, data
            from events where mission_id = $1 and seq > $2
            order by seq limit $3
            "#,
            id as MissionId,
            after,
            limit,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| feed::to_event(r.seq, r.at, r.kind, r.step, r.attempt, r.data))
        .collect()
    }

    async fn decide(&self, id: MissionId, step: &str, decision: Decision) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let status = lock_mission(&mut tx, id).await?;
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "mission {id} is {}",
                status.as_str()
            )));
        }
        let (new_status, kind) = if decision.approve {
            (StepStatus::Succeeded, EventType::ApprovalGranted)
        } else {
            (StepStatus::Rejected, EventType::ApprovalRejected)
        };
        let record = json!({ "decision": if decision.approve { "approve" } else { "reject" },
                             "by": decision.by, "comment": decision.comment, "timed_out": false });
        let attempts = sqlx::query_scalar!(
            r#"
            update steps set status = $3, output = case when $4 then $5::jsonb end,
                   error = case when $4 then null else $5::jsonb end,
                   wake_at = null, finished_at = now(), updated_at = now()
            where mission_id = $1 and name = $2 and kind = 'approval' and status = 'waiting'
            returning attempts
            "#,
            id as MissionId,
            step,
            new_status as StepStatus,
            decision.approve,
            record,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "step `{step}` of mission {id} is not waiting for a decision"
            ))
        })?;
        // The decision makes the mission runnable. Bumping the token fences out a worker that
        // claimed it at the same instant (say, for the approval's timeout): its writes now fail.
        let seq = sqlx::query_scalar!(
            r#"
            update missions set status = 'pending', wake_at = null, lease_owner = null,
                   lease_expires_at = null, lease_token = lease_token + 1, enqueued_at = now(),
                   last_seq = last_seq + 1, updated_at = now()
            where id = $1 returning last_seq
            "#,
            id as MissionId,
        )
        .fetch_one(&mut *tx)
        .await?;
        insert_event(
            &mut tx,
            id,
            seq,
            &NewEvent::step(kind, step, attempts, record),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_cancel(&self, id: MissionId, by: &str) -> StoreResult<MissionStatus> {
        let mut tx = self.pool.begin().await?;
        let (status, already) = sqlx::query!(
            r#"select status as "status: MissionStatus", cancel_requested from missions where id = $1 for update"#,
            id as MissionId,
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| (r.status, r.cancel_requested))
        .ok_or_else(|| StoreError::NotFound(format!("mission {id}")))?;
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "mission {id} is already {}",
                status.as_str()
            )));
        }
        if already {
            return Ok(status);
        }
        // A parked mission is made runnable so a worker can run its compensations now; a running
        // one learns of the request from its next write or lease renewal.
        let row = sqlx::query!(
            r#"
            update missions set cancel_requested = true,
                   status = case when status = 'waiting' then 'pending' else status end,
                   wake_at = case when status = 'waiting' then null else wake_at end,
                   enqueued_at = case when status = 'waiting' then now() else enqueued_at end,
                   last_seq = last_seq + 1, updated_at = now()
            where id = $1 returning status as "status: MissionStatus", last_seq
            "#,
            id as MissionId,
        )
        .fetch_one(&mut *tx)
        .await?;
        let event = NewEvent::mission(EventType::MissionCancelRequested, json!({ "by": by }));
        insert_event(&mut tx, id, row.last_seq, &event).await?;
        tx.commit().await?;
        Ok(row.status)
    }

    async fn current_steps(&self, ids: &[MissionId]) -> StoreResult<Vec<(MissionId, String)>> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        // One primary-key range per mission, read backwards from its last position.
        let rows = sqlx::query!(
            r#"
            select m.id as "id!: MissionId", s.name as "name!"
            from unnest($1::uuid[]) as m(id)
            cross join lateral (
                select name from steps where mission_id = m.id order by position desc limit 1
            ) s
            "#,
            &ids,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.name)).collect())
    }

    async fn waiting_approvals(
        &self,
        after: Option<InboxPosition>,
        limit: i64,
    ) -> StoreResult<Vec<WaitingApproval>> {
        // Driven by the live missions (the small `missions_live` index), then each one's steps
        // by primary key; a waiting approval's row is not written again until it is decided, so
        // its `updated_at` is when the decision was requested, and a page's last position stays
        // valid for the next. (A partial index on waiting approval steps would defeat the HOT
        // updates the steps table relies on.) Messages are cut here, so a huge one is never
        // sent to this process at all.
        let rows = sqlx::query!(
            r#"
            select m.id as "id: MissionId", m.workflow, m.status as "status: MissionStatus",
                   m.input, m.output, m.error, m.idempotency_key, m.cancel_requested,
                   m.wake_at as mission_wake_at, m.created_at, m.updated_at,
                   s.name as step, s.position,
                   left(s.input ->> 'message', $2) as message,
                   coalesce(length(s.input ->> 'message') > $2, false) as "message_truncated!",
                   s.updated_at as requested_at, s.wake_at as deadline
            from missions m
            join steps s on s.mission_id = m.id
            where m.status in ('pending', 'running', 'waiting')
              and s.kind = 'approval' and s.status = 'waiting'
              and ($3::timestamptz is null
                   or (s.updated_at, m.id, s.position) > ($3, $4::uuid, $5::integer))
            order by s.updated_at, m.id, s.position
            limit $1
            "#,
            limit,
            INBOX_MESSAGE_CHARS,
            after.map(|a| a.requested_at),
            after.map(|a| a.mission.0),
            after.map(|a| a.position),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| WaitingApproval {
                mission: MissionRecord {
                    id: r.id,
                    workflow: r.workflow,
                    status: r.status,
                    input: r.input,
                    output: r.output,
                    error: r.error,
                    idempotency_key: r.idempotency_key,
                    cancel_requested: r.cancel_requested,
                    wake_at: r.mission_wake_at,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                },
                step: r.step,
                position: r.position,
                message: r.message,
                message_truncated: r.message_truncated,
                requested_at: r.requested_at,
                deadline: r.deadline,
            })
            .collect())
    }

    async fn retry(&self, id: MissionId, by: &str) -> StoreResult<Retried> {
        let mut tx = self.pool.begin().await?;
        let status = lock_mission(&mut tx, id).await?;
        if status != MissionStatus::Failed {
            return Err(StoreError::Conflict(format!(
                "mission {id} is {}; only a failed mission can be retried",
                status.as_str()
            )));
        }
        let journal = sqlx::query_as!(
            StepRecord,
            r#"
            select position, name, kind as "kind: StepKind", status as "status: StepStatus",
                   attempts, input, output, error, wake_at, started_at, finished_at
            from steps where mission_id = $1 order by position
            "#,
            id as MissionId,
        )
        .fetch_all(&mut *tx)
        .await?;
        // Compensations are journaled after the point where the workflow stopped, so removing
        // them leaves the positions contiguous; anything else would break replay.
        if let Some(first) = journal
            .iter()
            .position(|s| s.kind == StepKind::Compensation)
        {
            if journal[first..]
                .iter()
                .any(|s| s.kind != StepKind::Compensation)
            {
                return Err(StoreError::Conflict(format!(
                    "mission {id} has steps journaled after its compensations; it cannot be retried"
                )));
            }
        }
        let steps = || journal.iter().filter(|s| s.kind != StepKind::Compensation);
        let failed = steps()
            .find(|s| matches!(s.status, StepStatus::Failed | StepStatus::Rejected))
            .or_else(|| steps().find(|s| !s.status.is_settled()));
        let mut events = vec![NewEvent::mission(
            EventType::MissionRetried,
            json!({ "by": by, "from_step": failed.map(|s| s.name.clone()) }),
        )];
        sqlx::query!(
            "delete from steps where mission_id = $1 and kind = 'compensation'",
            id as MissionId,
        )
        .execute(&mut *tx)
        .await?;
        // Undone steps run again (their recorded output described an effect that is gone).
        sqlx::query!(
            r#"
            update steps set status = 'pending', output = null, wake_at = null,
                   finished_at = null, updated_at = now()
            where mission_id = $1 and kind <> 'compensation' and status = 'compensated'
            "#,
            id as MissionId,
        )
        .execute(&mut *tx)
        .await?;
        match failed {
            Some(step) if step.status == StepStatus::Rejected => {
                // A rejected approval is asked again, with a fresh deadline.
                let timeout_s = step
                    .input
                    .as_ref()
                    .and_then(|i| i["timeout_s"].as_f64())
                    .filter(|t| t.is_finite() && *t > 0.0);
                let deadline = sqlx::query_scalar!(
                    r#"
                    update steps set status = 'waiting', attempts = attempts + 1, output = null,
                           wake_at = now() + make_interval(secs => $3::float8),
                           finished_at = null, updated_at = now()
                    where mission_id = $1 and position = $2
                    returning wake_at
                    "#,
                    id as MissionId,
                    step.position,
                    timeout_s,
                )
                .fetch_one(&mut *tx)
                .await?;
                let message = step.input.as_ref().map(|i| i["message"].clone());
                events.push(NewEvent::step(
                    EventType::ApprovalRequested,
                    &step.name,
                    step.attempts + 1,
                    json!({ "message": message, "deadline": deadline }),
                ));
            }
            Some(step) if step.status == StepStatus::Failed => {
                // The next attempt runs at once; the last error stays on the row and in history.
                sqlx::query!(
                    r#"
                    update steps set status = 'pending', wake_at = null, finished_at = null,
                           updated_at = now()
                    where mission_id = $1 and position = $2
                    "#,
                    id as MissionId,
                    step.position,
                )
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
        // Bumping the token fences out anything that still holds an old lease.
        let last_seq = sqlx::query_scalar!(
            r#"
            update missions set status = 'pending', output = null, error = null, wake_at = null,
                   cancel_requested = false, lease_owner = null, lease_expires_at = null,
                   lease_token = lease_token + 1, enqueued_at = now(),
                   retry_generation = retry_generation + 1,
                   last_seq = last_seq + $2, updated_at = now()
            where id = $1 returning last_seq
            "#,
            id as MissionId,
            events.len() as i64,
        )
        .fetch_one(&mut *tx)
        .await?;
        let first_seq = last_seq - events.len() as i64 + 1;
        for (seq, event) in (first_seq..).zip(&events) {
            insert_event(&mut tx, id, seq, event).await?;
        }
        tx.commit().await?;
        Ok(Retried {
            from_step: failed.map(|s| s.name.clone()),
        })
    }
}

/// `text` as a LIKE pattern that matches it literally (with the `\` escape character).
fn like_literal(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Lock a mission's row for the rest of the transaction and read its status.
async fn lock_mission(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: MissionId,
) -> StoreResult<MissionStatus> {
    sqlx::query_scalar!(
        r#"select status as "status: MissionStatus" from missions where id = $1 for update"#,
        id as MissionId,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("mission {id}")))
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: MissionId,
    seq: i64,
    event: &NewEvent,
) -> StoreResult<()> {
    sqlx::query!(
        "insert into events (mission_id, seq, type, step, attempt, data) values ($1, $2, $3, $4, $5, $6)",
        id as MissionId,
        seq,
        event.kind.as_str(),
        event.step,
        event.attempt,
        event.data,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load_journal(pool: &PgPool, id: MissionId) -> StoreResult<Vec<StepRecord>> {
    Ok(sqlx::query_as!(
        StepRecord,
        r#"
        select position, name, kind as "kind: StepKind", status as "status: StepStatus", attempts,
               input, output, error, wake_at, started_at, finished_at
        from steps where mission_id = $1 order by position
        "#,
        id as MissionId,
    )
    .fetch_all(pool)
    .await?)
}

#[async_trait]
impl JournalStore for PgStore {
    async fn claim(
        &self,
        id: MissionId,
        worker: &WorkerId,
        ttl: Duration,
    ) -> StoreResult<Option<Claim>> {
        let claimed = sqlx::query!(
            r#"
            with prev as (
                select id, status, wake_at, lease_owner, lease_expires_at from missions where id = $1 for update
            ), claimed as (
                update missions m set status = 'running', lease_owner = $2,
                       lease_token = m.lease_token + 1,
                       lease_expires_at = now() + make_interval(secs => $3),
                       last_seq = m.last_seq + 1, updated_at = now()
                from prev
                where m.id = prev.id
                  and (prev.status = 'pending'
                       or (prev.status = 'waiting' and prev.wake_at <= now())
                       or (prev.status = 'running' and prev.lease_expires_at < now()))
                returning m.*, prev.status as prev_status, prev.lease_owner as prev_owner
            ), ev as (
                insert into events (mission_id, seq, type, data)
                select id, last_seq,
                       case when lease_token = 1 then 'mission_started' else 'mission_resumed' end,
                       jsonb_strip_nulls(jsonb_build_object(
                           'worker', lease_owner, 'lease', lease_token,
                           'lease_expired_from', case when prev_status = 'running' then prev_owner end))
                from claimed
            )
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, cancel_requested, wake_at, created_at, updated_at,
                   lease_token, retry_generation,
                   (select coalesce(jsonb_agg(to_jsonb(s) order by s.position), '[]')
                    from steps s where s.mission_id = claimed.id) as "journal!"
            from claimed
            "#,
            id as MissionId,
            worker.0,
            seconds(ttl),
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        // The journal comes back in the claim's own round trip, as one JSON array.
        let journal: Vec<StepRecord> = serde_json::from_value(row.journal)
            .map_err(|e| StoreError::Corrupt(format!("journal of mission {id}: {e}")))?;
        let retry_generation = u32::try_from(row.retry_generation).map_err(|_| {
            StoreError::Corrupt(format!(
                "retry generation {} of mission {id}",
                row.retry_generation
            ))
        })?;
        Ok(Some(Claim {
            lease: Lease {
                mission: id,
                token: LeaseToken(row.lease_token),
            },
            mission: MissionRecord {
                id: row.id,
                workflow: row.workflow,
                status: row.status,
                input: row.input,
                output: row.output,
                error: row.error,
                idempotency_key: row.idempotency_key,
                cancel_requested: row.cancel_requested,
                wake_at: row.wake_at,
                created_at: row.created_at,
                updated_at: row.updated_at,
            },
            journal,
            retry_generation,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> StoreResult<LeaseState> {
        sqlx::query_scalar!(
            r#"
            update missions set lease_expires_at = now() + make_interval(secs => $3)
            where id = $1 and lease_token = $2 and status = 'running'
            returning cancel_requested
            "#,
            lease.mission as MissionId,
            lease.token.0,
            seconds(ttl),
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|cancel_requested| LeaseState { cancel_requested })
        .ok_or(StoreError::LeaseLost(lease.mission))
    }

    async fn apply(&self, lease: &Lease, transition: Transition) -> StoreResult<LeaseState> {
        self.writer
            .apply(lease.mission, transition_json(lease, transition))
            .await
    }

    async fn due(&self, limit: i64, redeliver_after: Duration) -> StoreResult<Vec<MissionId>> {
        Ok(sqlx::query_scalar!(
            r#"
            update missions set enqueued_at = now()
            where id in (
                select id from missions
                where (status = 'pending'
                       and (enqueued_at is null or enqueued_at < now() - make_interval(secs => $2)))
                   or (status = 'waiting' and wake_at <= now()
                       and (enqueued_at is null or enqueued_at < wake_at
                            or enqueued_at < now() - make_interval(secs => $2)))
                   or (status = 'running' and lease_expires_at < now()
                       and (enqueued_at is null or enqueued_at < lease_expires_at
                            or enqueued_at < now() - make_interval(secs => $2)))
                order by updated_at
                limit $1
                for update skip locked
            )
            returning id as "id: MissionId"
            "#,
            limit,
            seconds(redeliver_after),
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
