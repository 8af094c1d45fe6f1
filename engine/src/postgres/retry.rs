//! The manual retry of a failed mission on PostgreSQL ([`MissionStore::retry`]), as one
//! transaction of named steps.
//!
//! [`MissionStore::retry`]: crate::store::MissionStore::retry

use super::journal::load_journal;
use super::{approvals, insert_event, lock_mission};
use crate::error::{StoreError, StoreResult};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::status::{MissionStatus, StepKind, StepStatus};
use crate::store::{Retried, StepRecord};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

type Tx<'c> = Transaction<'c, Postgres>;

/// Make a failed mission runnable again from its first failed step.
pub(super) async fn retry(pool: &PgPool, id: MissionId, by: &str) -> StoreResult<Retried> {
    let mut tx = pool.begin().await?;
    ensure_failed(&mut tx, id).await?;
    let journal = load_journal(&mut *tx, id).await?;
    ensure_compensations_last(id, &journal)?;
    let from = first_failed_step(&journal);
    let mut events = vec![NewEvent::mission(
        EventType::MissionRetried,
        json!({ "by": by, "from_step": from.map(|s| s.name.clone()) }),
    )];
    drop_compensations(&mut tx, id).await?;
    reset_compensated_steps(&mut tx, id).await?;
    match from {
        Some(step) if step.status == StepStatus::Rejected => {
            events.push(approvals::ask_again(&mut tx, id, step).await?);
        }
        Some(step) if step.status == StepStatus::Failed => {
            reset_failed_step(&mut tx, id, step).await?;
        }
        _ => {}
    }
    reopen_mission(&mut tx, id, &events).await?;
    tx.commit().await?;
    Ok(Retried {
        from_step: from.map(|s| s.name.clone()),
    })
}

/// Lock the mission; only a failed one can be retried.
async fn ensure_failed(tx: &mut Tx<'_>, id: MissionId) -> StoreResult<()> {
    let status = lock_mission(tx, id).await?;
    if status != MissionStatus::Failed {
        return Err(StoreError::Conflict(format!(
            "mission {id} is {}; only a failed mission can be retried",
            status.as_str()
        )));
    }
    Ok(())
}

/// Compensations are journaled after the point where the workflow stopped, so removing them
/// leaves the positions contiguous; anything journaled after them would break replay.
fn ensure_compensations_last(id: MissionId, journal: &[StepRecord]) -> StoreResult<()> {
    let first = journal
        .iter()
        .position(|s| s.kind == StepKind::Compensation);
    if let Some(first) = first {
        if journal[first..]
            .iter()
            .any(|s| s.kind != StepKind::Compensation)
        {
            return Err(StoreError::Conflict(format!(
                "mission {id} has steps journaled after its compensations; it cannot be retried"
            )));
        }
    }
    Ok(())
}

/// The step the retry starts from: the first failed or rejected one, else the first unsettled
/// one; `None` when the mission failed outside any step.
fn first_failed_step(journal: &[StepRecord]) -> Option<&StepRecord> {
    let steps = || journal.iter().filter(|s| s.kind != StepKind::Compensation);
    steps()
        .find(|s| matches!(s.status, StepStatus::Failed | StepStatus::Rejected))
        .or_else(|| steps().find(|s| !s.status.is_settled()))
}

/// Remove the compensation entries from the journal (their history events stay).
async fn drop_compensations(tx: &mut Tx<'_>, id: MissionId) -> StoreResult<()> {
    sqlx::query!(
        "delete from steps where mission_id = $1 and kind = 'compensation'",
        id as MissionId,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Undone steps run again: their recorded output described an effect that is gone.
async fn reset_compensated_steps(tx: &mut Tx<'_>, id: MissionId) -> StoreResult<()> {
    sqlx::query!(
        r#"
        update steps set status = 'pending', output = null, wake_at = null,
               finished_at = null, updated_at = now()
        where mission_id = $1 and kind <> 'compensation' and status = 'compensated'
        "#,
        id as MissionId,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A failed step's next attempt runs at once; its last error stays on the row and in history.
async fn reset_failed_step(tx: &mut Tx<'_>, id: MissionId, step: &StepRecord) -> StoreResult<()> {
    sqlx::query!(
        r#"
        update steps set status = 'pending', wake_at = null, finished_at = null,
               updated_at = now()
        where mission_id = $1 and position = $2
        "#,
        id as MissionId,
        step.position,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Make the mission pending with its error and output cleared and its retry generation up by
/// one, and append `events` to its history. Bumping the token fences out anything that still
/// holds an old lease.
async fn reopen_mission(tx: &mut Tx<'_>, id: MissionId, events: &[NewEvent]) -> StoreResult<()> {
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
    .fetch_one(&mut **tx)
    .await?;
    let first_seq = last_seq - events.len() as i64 + 1;
    for (seq, event) in (first_seq..).zip(events) {
        insert_event(tx, id, seq, event).await?;
    }
    Ok(())
}
