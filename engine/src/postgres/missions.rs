//! [`MissionStore`] on PostgreSQL: submitting, reading, listing and cancelling missions. The
//! decisions and the approvals inbox are in [`super::approvals`], the manual retry in
//! [`super::retry`].

use super::journal::load_journal;
use super::{approvals, feed, insert_event, retry, PgStore};
use crate::error::{StoreError, StoreResult};
use crate::event::{Event, EventType, NewEvent};
use crate::ids::MissionId;
use crate::status::{MissionStatus, StepKind, StepStatus};
use crate::store::{
    CurrentStep, Decision, InboxPosition, MissionQuery, MissionRecord, MissionStore, NewMission,
    Retried, StepRecord, Submitted, WaitingApproval,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use std::sync::Arc;

/// `sqlx::$macro!` over the missions a [`MissionQuery`]'s filters select, all of them but its
/// status and page: `list` and `status_counts` share them, so the counts are always of what the
/// list can show. The filters are `$1` to `$6`, bound from `$query`; `$select` (up to `from`) and
/// `$rest` (further conditions from `and`, then grouping or order) number theirs from `$7`.
///
/// The free-text search scans the input's JSON text of every mission the other filters leave: no
/// index serves it yet (a trigram index on `input::text` would, at a write cost on every
/// submission). Fine while the list is an operator's tool, not a hot path.
macro_rules! filtered {
    ($macro:ident!($($record:path)?), $query:ident, $select:tt, $rest:tt $(, $($arg:tt)*)?) => {
        sqlx::$macro!(
            $($record,)?
            $select
                + r#"
            where ($1::text is null or workflow = $1)
              and ($2::timestamptz is null or created_at >= $2)
              and ($3::timestamptz is null or created_at < $3)
              and ($4::text is null or input::text ilike '%' || $4 || '%' escape '\'
                   or idempotency_key ilike '%' || $4 || '%' escape '\')
              and ($5::text is null or concurrency_key = $5)
              and ($6::text is null or schedule = $6)
            "#
                + $rest,
            $query.workflow,
            $query.created_after,
            $query.created_before,
            $query.search.as_deref().map(like_literal),
            $query.concurrency_key,
            $query.schedule,
            $($($arg)*)?
        )
    };
}

#[async_trait]
impl MissionStore for PgStore {
    async fn submit(&self, new: NewMission) -> StoreResult<Submitted> {
        let new = Arc::new(new);
        let inserted = self.submissions.insert(new.clone()).await?;
        if let Some(mission) = inserted {
            return Ok(Submitted {
                mission,
                created: true,
            });
        }
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        let existing = find(&self.pool, None, Some(key)).await?.ok_or_else(|| {
            StoreError::NotFound(format!("the mission of idempotency key `{key}`"))
        })?;
        if existing.workflow != new.workflow
            || existing.input != new.input
            || existing.concurrency_key != new.concurrency_key
        {
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
        find(&self.pool, Some(id), None).await
    }

    async fn journal(&self, id: MissionId) -> StoreResult<Vec<StepRecord>> {
        load_journal(&self.pool, id).await
    }

    async fn list(&self, query: &MissionQuery) -> StoreResult<Vec<MissionRecord>> {
        let (after_at, after_id) = match query.after {
            Some((at, id)) => (Some(at), Some(id.0)),
            None => (None, None),
        };
        Ok(filtered!(
            query_as!(MissionRecord),
            query,
            r#"
            select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
                   output, error, idempotency_key, concurrency_key, schedule, fire_at,
                   cancel_requested, wake_at, created_at, updated_at
            from missions
            "#,
            r#"
              and ($7::mission_status is null or status = $7)
              and ($8::timestamptz is null or (created_at, id) < ($8, $9::uuid))
            order by created_at desc, id desc
            limit $10
            "#,
            query.status as Option<MissionStatus>,
            after_at,
            after_id,
            query.limit,
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
        approvals::decide(&self.pool, id, step, decision).await
    }

    async fn request_cancel(&self, id: MissionId, by: &str) -> StoreResult<MissionStatus> {
        let mut tx = self.pool.begin().await?;
        let status = request_cancel(&mut tx, id, by).await?;
        tx.commit().await?;
        Ok(status)
    }

    async fn current_steps(&self, ids: &[MissionId]) -> StoreResult<Vec<(MissionId, CurrentStep)>> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        // One primary-key range per mission, read backwards from its last position.
        let rows = sqlx::query!(
            r#"
            select m.id as "id!: MissionId", s.name as "name!", s.kind as "kind!: StepKind",
                   s.status as "status!: StepStatus", s.wake_at
            from unnest($1::uuid[]) as m(id)
            cross join lateral (
                select name, kind, status, wake_at from steps where mission_id = m.id
                order by position desc limit 1
            ) s
            "#,
            &ids,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let step = CurrentStep {
                    name: r.name,
                    kind: r.kind,
                    status: r.status,
                    wake_at: r.wake_at,
                };
                (r.id, step)
            })
            .collect())
    }

    async fn status_counts(&self, query: &MissionQuery) -> StoreResult<Vec<(MissionStatus, i64)>> {
        let rows = filtered!(
            query!(),
            query,
            r#"select status as "status!: MissionStatus", count(*) as "count!" from missions"#,
            "group by status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
    }

    async fn waiting_approvals(
        &self,
        after: Option<InboxPosition>,
        limit: i64,
    ) -> StoreResult<Vec<WaitingApproval>> {
        approvals::waiting(&self.pool, after, limit).await
    }

    async fn retry(&self, id: MissionId, by: &str) -> StoreResult<Retried> {
        retry::retry(&self.pool, id, by).await
    }
}

/// Ask a live mission to cancel within `tx`; its status after the request (`pending` when a
/// parked mission was made runnable to compensate: wake it after the commit). `Conflict` for
/// a finished mission.
pub(super) async fn request_cancel(
    tx: &mut Transaction<'_, Postgres>,
    id: MissionId,
    by: &str,
) -> StoreResult<MissionStatus> {
    let (status, already) = sqlx::query!(
        r#"select status as "status: MissionStatus", cancel_requested from missions where id = $1 for update"#,
        id as MissionId,
    )
    .fetch_optional(&mut **tx)
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
    .fetch_one(&mut **tx)
    .await?;
    let event = NewEvent::mission(EventType::MissionCancelRequested, json!({ "by": by }));
    insert_event(tx, id, row.last_seq, &event).await?;
    Ok(row.status)
}

/// Insert a mission and its `mission_submitted` event; `None` when its idempotency key is taken.
pub(super) async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewMission,
) -> StoreResult<Option<MissionRecord>> {
    Ok(insert_all(db, [new]).await?.pop())
}

/// A mission's columns as a row of [`insert_all`]'s statement.
#[derive(Serialize)]
struct MissionRow<'a> {
    id: MissionId,
    workflow: &'a str,
    input: &'a Value,
    idempotency_key: Option<&'a str>,
    concurrency_key: Option<&'a str>,
    schedule: Option<&'a str>,
    fire_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a NewMission> for MissionRow<'a> {
    fn from(new: &'a NewMission) -> Self {
        Self {
            id: new.id,
            workflow: &new.workflow,
            input: &new.input,
            idempotency_key: new.idempotency_key.as_deref(),
            concurrency_key: new.concurrency_key.as_deref(),
            schedule: new.tick.as_ref().map(|tick| tick.schedule.as_str()),
            fire_at: new.tick.as_ref().map(|tick| tick.fire_at),
        }
    }
}

/// Insert missions, each with its `mission_submitted` event, in one statement; returns those
/// inserted (a mission whose idempotency key is taken, by an earlier mission or an earlier one
/// of `new`, is not). Their `created_at` follows the order of `new`, which orders missions of
/// one concurrency key.
pub(super) async fn insert_all<'a>(
    db: impl PgExecutor<'_>,
    new: impl IntoIterator<Item = &'a NewMission>,
) -> StoreResult<Vec<MissionRecord>> {
    let rows: Vec<MissionRow<'_>> = new.into_iter().map(MissionRow::from).collect();
    Ok(sqlx::query_as!(
        MissionRecord,
        r#"
        with ins as (
            insert into missions (id, workflow, input, idempotency_key, concurrency_key, schedule,
                                  fire_at, last_seq, enqueued_at, created_at)
            select n.id, n.workflow, n.input, n.idempotency_key, n.concurrency_key, n.schedule,
                   n.fire_at, 1, now(), clock_timestamp()
            from rows from (jsonb_to_recordset($1::jsonb) as (
                     id uuid, workflow text, input jsonb, idempotency_key text,
                     concurrency_key text, schedule text, fire_at timestamptz))
                 with ordinality as n(id, workflow, input, idempotency_key, concurrency_key,
                                      schedule, fire_at, ord)
            order by n.ord
            on conflict (idempotency_key) where idempotency_key is not null do nothing
            returning *
        ), ev as (
            insert into events (mission_id, seq, type, data)
            select id, 1, 'mission_submitted',
                   jsonb_strip_nulls(jsonb_build_object('workflow', workflow, 'schedule', schedule,
                                                        'fire_at', fire_at))
            from ins
        )
        select id as "id: MissionId", workflow, status as "status: MissionStatus", input,
               output, error, idempotency_key, concurrency_key, schedule, fire_at,
               cancel_requested, wake_at, created_at, updated_at
        from ins
        "#,
        Json(rows) as _,
    )
    .fetch_all(db)
    .await?)
}

/// The mission with this id or this idempotency key (pass one): one statement, so the column
/// list of a [`MissionRecord`] is written once for both lookups.
async fn find(
    db: impl PgExecutor<'_>,
    id: Option<MissionId>,
    idempotency_key: Option<&str>,
) -> StoreResult<Option<MissionRecord>> {
    Ok(sqlx::query_as!(
        MissionRecord,
        r#"
        select id as "id: MissionId", workflow, status as "status: MissionStatus", input, output,
               error, idempotency_key, concurrency_key, schedule, fire_at, cancel_requested,
               wake_at, created_at, updated_at
        from missions where id = $1 or idempotency_key = $2
        "#,
        id as Option<MissionId>,
        idempotency_key,
    )
    .fetch_optional(db)
    .await?)
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
