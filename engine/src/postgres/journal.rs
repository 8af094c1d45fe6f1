//! [`JournalStore`] on PostgreSQL: claiming a mission's lease (with its journal, in the same
//! round trip), renewing it, applying transitions through the group commit, and finding the
//! missions that should be running.

use super::{seconds, PgStore};
use crate::error::{StoreError, StoreResult};
use crate::ids::{LeaseToken, MissionId, WorkerId};
use crate::status::{MissionStatus, StepKind, StepStatus};
use crate::store::{Claim, JournalStore, Lease, LeaseState, MissionRecord, StepRecord, Transition};
use async_trait::async_trait;
use sqlx::types::Json;
use sqlx::PgExecutor;
use std::time::Duration;

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
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, concurrency_key, schedule, fire_at,
                   cancel_requested, wake_at, created_at, updated_at,
                   lease_token, retry_generation,
                   (select coalesce(json_agg(s), '[]')
                    from (select position, name, kind, status, attempts, input, output, error,
                                 wake_at, started_at, finished_at
                          from steps where mission_id = claimed.id order by position) s)
                       as "journal!: Json<Vec<StepRecord>>"
            from claimed
            "#,
            id as MissionId,
            worker.0,
            seconds(ttl),
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        // The journal comes back in the claim's own round trip, as one JSON array: `json`, not
        // `jsonb` (for 10,000 entries `jsonb_agg` took PostgreSQL 150-200 ms, its sort spilling to
        // disk, where `json_agg` takes 40), of the columns a
        // [`StepRecord`] has, decoded straight into the records without a `Value` tree in
        // between. The rows are read in position order from the primary key; the sort below
        // makes that order certain at the cost of one pass over an already sorted list.
        let Json(mut journal) = row.journal;
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
                input: row.input,
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
