//! Approvals on PostgreSQL: recording a person's decision, the inbox of approvals waiting for
//! one, and asking a rejected approval again when its mission is retried.

use super::{insert_event, lock_mission};
use crate::error::{StoreError, StoreResult};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::status::{MissionStatus, StepStatus};
use crate::store::{
    to_record, ApprovalInput, ApprovalRequested, Decision, DecisionRecord, InboxPosition,
    MissionRecord, StepRecord, WaitingApproval, INBOX_MESSAGE_CHARS,
};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

/// Record a decision on a waiting approval and make its mission runnable.
pub(super) async fn decide(
    pool: &PgPool,
    id: MissionId,
    step: &str,
    decision: Decision,
) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
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
    let record = to_record(&DecisionRecord::of(&decision));
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

/// Approval steps waiting for a decision across live missions, oldest request first.
pub(super) async fn waiting(
    pool: &PgPool,
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
               m.input, m.output, m.error, m.idempotency_key, m.concurrency_key, m.schedule,
               m.fire_at, m.cancel_requested, m.wake_at as mission_wake_at, m.created_at, m.updated_at,
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
    .fetch_all(pool)
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
                concurrency_key: r.concurrency_key,
                schedule: r.schedule,
                fire_at: r.fire_at,
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

/// Ask a rejected approval again, with a fresh deadline, as part of its mission's retry;
/// returns the `approval_requested` event to record.
pub(super) async fn ask_again(
    tx: &mut Transaction<'_, Postgres>,
    id: MissionId,
    step: &StepRecord,
) -> StoreResult<NewEvent> {
    let input = step.input.clone().unwrap_or(Value::Null);
    let input: ApprovalInput = serde_json::from_value(input).map_err(|e| {
        StoreError::Corrupt(format!(
            "input of approval `{}` of mission {id}: {e}",
            step.name
        ))
    })?;
    let timeout_s = input.timeout_s.filter(|t| t.is_finite() && *t > 0.0);
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
    .fetch_one(&mut **tx)
    .await?;
    let asked = ApprovalRequested {
        message: input.message,
        deadline,
    };
    Ok(NewEvent::step(
        EventType::ApprovalRequested,
        &step.name,
        step.attempts + 1,
        to_record(&asked),
    ))
}
