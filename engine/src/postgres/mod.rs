//! The PostgreSQL implementation of the storage traits. Every state change is one statement or
//! one explicit transaction; the lease token in each write's `where` clause is the fence.
//!
//! One module per concept: [`missions`] (submitting, reading and cancelling missions),
//! [`approvals`] (decisions and the inbox), [`retry`] (a failed mission's manual retry),
//! [`journal`] (leases and the journal a worker advances), [`group_commit`] (the batched
//! journal writes), [`submissions`] (the batched inserts of new missions), [`schedules`] (cron
//! schedules and the firing of their ticks), [`signals`], [`feed`], [`workers`] and
//! [`secrets`]. This file holds the [`PgStore`] and the transaction helpers they share.

use crate::error::{StoreError, StoreResult};
use crate::event::NewEvent;
use crate::ids::MissionId;
use crate::status::MissionStatus;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

mod approvals;
mod batch;
mod feed;
mod group_commit;
mod journal;
mod missions;
mod retry;
mod schedules;
mod secrets;
mod signals;
mod submissions;
mod workers;
use batch::Batching;
use group_commit::GroupCommit;
use submissions::Submissions;

/// The migrations of the whole product, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Storage on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    writer: GroupCommit,
    submissions: Submissions,
}

impl PgStore {
    /// Wrap a pool (migrations must have been applied: see [`MIGRATOR`]). Starts the
    /// group-commit writers of transitions and of submissions, so it must be called within a
    /// Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        let writer = GroupCommit::start(pool.clone(), Batching::DEFAULT);
        let submissions = Submissions::start(pool.clone(), Batching::DEFAULT);
        Self {
            pool,
            writer,
            submissions,
        }
    }

    /// The pool, for components that keep their own tables next to the engine's.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Lock a mission's row for the rest of the transaction and read its status.
async fn lock_mission(
    tx: &mut Transaction<'_, Postgres>,
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
    tx: &mut Transaction<'_, Postgres>,
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
