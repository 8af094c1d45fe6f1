//! [`JournalStore`] on PostgreSQL: claiming a mission's lease (with its journal, in the same
//! round trip), renewing it, applying transitions through the group commit, and finding the
//! missions that should be running.

use super::{seconds, PgStore};
use crate::error::{StoreError, StoreResult};
use crate::ids::{LeaseToken, MissionId, WorkerId};
use crate::status::{MissionStatus, StepKind, StepStatus};
use crate::store::{Claim, JournalStore, Lease, LeaseState, MissionRecord, StepRecord, Transition};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgExecutor;
use std::time::Duration;

/// A journal as the claim returns it: one array per [`StepRecord`] field, element `i` of each
/// belonging to entry `i`.
struct JournalColumns {
    position: Vec<i32>,
    name: Vec<String>,
    kind: Vec<StepKind>,
    status: Vec<StepStatus>,
    attempts: Vec<i32>,
    input: Vec<Option<Value>>,
    output: Vec<Option<Value>>,
    error: Vec<Option<Value>>,
    wake_at: Vec<Option<DateTime<Utc>>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
}

/// The entries the columns hold, or `None` when the columns do not all have the same length.
fn zip_journal(c: JournalColumns) -> Option<Vec<StepRecord>> {
    let n = c.position.len();
    let lengths = [
        c.name.len(),
        c.kind.len(),
        c.status.len(),
        c.attempts.len(),
        c.input.len(),
        c.output.len(),
        c.error.len(),
        c.wake_at.len(),
        c.started_at.len(),
        c.finished_at.len(),
    ];
    if lengths.iter().any(|&len| len != n) {
        return None;
    }
    let mut name = c.name.into_iter();
    let mut kind = c.kind.into_iter();
    let mut status = c.status.into_iter();
    let mut attempts = c.attempts.into_iter();
    let mut input = c.input.into_iter();
    let mut output = c.output.into_iter();
    let mut error = c.error.into_iter();
    let mut wake_at = c.wake_at.into_iter();
    let mut started_at = c.started_at.into_iter();
    let mut finished_at = c.finished_at.into_iter();
    c.position
        .into_iter()
        .map(|position| {
            Some(StepRecord {
                position,
                name: name.next()?,
                kind: kind.next()?,
                status: status.next()?,
                attempts: attempts.next()?,
                input: input.next()?,
                output: output.next()?,
                error: error.next()?,
                wake_at: wake_at.next()?,
                started_at: started_at.next()?,
                finished_at: finished_at.next()?,
            })
        })
        .collect()
}

/// A mission's journal, in position order.
pub(super) async fn load_journal(
    db: impl PgExecutor<'_>,
    id: MissionId,
) -> StoreResult<Vec<StepRecord>> {
    Ok(sqlx::query_as!(
        StepRecord,
        r#"
        select position, name, kind as "kind: StepKind", status as "status: StepStatus", attempts,
               input, output, error, wake_at, started_at, finished_at
        from steps where mission_id = $1 order by position
        "#,
        id as MissionId,
    )
    .fetch_all(db)
    .await?)
}

/// Claim mission `id` for `worker` on `db`, loading its journal in the same statement.
async fn claim(
    db: impl PgExecutor<'_>,
    id: MissionId,
    worker: &WorkerId,
    ttl: Duration,
) -> StoreResult<Option<Claim>> {
    let claimed = sqlx::query!(
            r#"
            with prev as (
                select id, status, wake_at, lease_owner, lease_expires_at, cancel_requested,
                       exists (select 1 from missions o
                               where o.concurrency_key = p.concurrency_key
                                 and o.status in ('pending', 'running', 'waiting')
                                 and (o.created_at, o.id) < (p.created_at, p.id)) as blocked
                from missions p where p.id = $1 for update
            ), claimed as (
                update missions m set status = 'running', lease_owner = $2,
                       lease_token = m.lease_token + 1,
                       lease_expires_at = now() + make_interval(secs => $3),
                       last_seq = m.last_seq + 1, updated_at = now()
                from prev
                where m.id = prev.id
                  and (prev.cancel_requested or not prev.blocked)
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
            select id as "id: MissionId", workflow, status as "status: MissionStatus",
                   input as "input: Json<Box<RawValue>>",
                   output, error, idempotency_key, concurrency_key, schedule, fire_at,
                   cancel_requested, wake_at, created_at, updated_at,
                   lease_token, retry_generation,
                   coalesce(j_position, '{}') as "j_position!",
                   coalesce(j_name, '{}') as "j_name!",
                   coalesce(j_kind, '{}') as "j_kind!: Vec<StepKind>",
                   coalesce(j_status, '{}') as "j_status!: Vec<StepStatus>",
                   coalesce(j_attempts, '{}') as "j_attempts!",
                   coalesce(j_input, '{}') as "j_input!: Vec<Option<Value>>",
                   coalesce(j_output, '{}') as "j_output!: Vec<Option<Value>>",
                   coalesce(j_error, '{}') as "j_error!: Vec<Option<Value>>",
                   coalesce(j_wake_at, '{}') as "j_wake_at!: Vec<Option<DateTime<Utc>>>",
                   coalesce(j_started_at, '{}') as "j_started_at!: Vec<Option<DateTime<Utc>>>",
                   coalesce(j_finished_at, '{}') as "j_finished_at!: Vec<Option<DateTime<Utc>>>"
            from claimed
            cross join lateral (
                select array_agg(position) as j_position, array_agg(name) as j_name,
                       array_agg(kind) as j_kind, array_agg(status) as j_status,
                       array_agg(attempts) as j_attempts, array_agg(input) as j_input,
                       array_agg(output) as j_output, array_agg(error) as j_error,
                       array_agg(wake_at) as j_wake_at, array_agg(started_at) as j_started_at,
                       array_agg(finished_at) as j_finished_at
                from (select position, name, kind, status, attempts, input, output, error,
                             wake_at, started_at, finished_at
                      from steps where mission_id = claimed.id order by position) s
            ) j
            "#,
            id as MissionId,
            worker.0,
            seconds(ttl),
        )
        .fetch_optional(db)
        .await?;
    let Some(row) = claimed else { return Ok(None) };
    // The journal comes back in the claim's own round trip as one array per column, in
    // PostgreSQL's binary format: the arrays of one aggregation are filled from the same
    // rows in the same order, so their elements line up. For 10,000 entries this costs
    // PostgreSQL ≈ 6 ms where building one JSON array of them took 40 (and `jsonb_agg`
    // 150-200), and the client reads integers and timestamps as they are instead of parsing
    // 2.3 MB of JSON text. The rows are read in position order from the primary key; the
    // sort below makes that order certain at the cost of one pass over a sorted list.
    let mut journal = zip_journal(JournalColumns {
        position: row.j_position,
        name: row.j_name,
        kind: row.j_kind,
        status: row.j_status,
        attempts: row.j_attempts,
        input: row.j_input,
        output: row.j_output,
        error: row.j_error,
        wake_at: row.j_wake_at,
        started_at: row.j_started_at,
        finished_at: row.j_finished_at,
    })
    .ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the journal columns of mission {id} came back with different lengths"
        ))
    })?;
    journal.sort_by_key(|entry| entry.position);
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
            input: Value::Null,
            output: row.output,
            error: row.error,
            idempotency_key: row.idempotency_key,
            concurrency_key: row.concurrency_key,
            schedule: row.schedule,
            fire_at: row.fire_at,
            cancel_requested: row.cancel_requested,
            wake_at: row.wake_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        },
        input: row.input.0,
        journal,
        retry_generation,
        open: None,
    }))
}

#[async_trait]
impl JournalStore for PgStore {
    async fn claim_held(
        &self,
        id: MissionId,
        worker: &WorkerId,
        ttl: Duration,
        hold: Duration,
    ) -> StoreResult<Option<Claim>> {
        // Held only on an otherwise idle process (see `GroupCommit::busy`).
        if hold.is_zero() || self.writer.busy() {
            return claim(&self.pool, id, worker, ttl).await;
        }
        let mut tx = self.pool.begin().await?;
        // Not claimed: the transaction rolls back as it is dropped, releasing the row.
        let Some(mut claimed) = claim(&mut *tx, id, worker, ttl).await? else {
            return Ok(None);
        };
        claimed.open = Some(Box::new(self.writer.hold(tx, claimed.lease, hold)));
        Ok(Some(claimed))
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
        self.writer.apply(lease, transition).await
    }

    async fn due(&self, limit: i64, redeliver_after: Duration) -> StoreResult<Vec<MissionId>> {
        Ok(sqlx::query_scalar!(
            r#"
            update missions set enqueued_at = now()
            where id in (
                select id from missions m
                where (status = 'pending'
                       and (enqueued_at is null or enqueued_at < now() - make_interval(secs => $2))
                       -- A mission behind an earlier live one of its concurrency key waits for
                       -- it (a trigger makes it due when that one finishes), unless cancelled.
                       and (cancel_requested or concurrency_key is null or not exists (
                           select 1 from missions o
                           where o.concurrency_key = m.concurrency_key
                             and o.status in ('pending', 'running', 'waiting')
                             and (o.created_at, o.id) < (m.created_at, m.id))))
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
