//! [`SignalStore`] on PostgreSQL: the `signals` table, one row per (mission, name), and the
//! hand-off that makes a mission parked on a signal runnable when its signal is there.

use super::PgStore;
use crate::error::{StoreError, StoreResult};
use crate::ids::MissionId;
use crate::status::MissionStatus;
use crate::store::SignalStore;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgExecutor;

#[async_trait]
impl SignalStore for PgStore {
    async fn send_signal(
        &self,
        mission: MissionId,
        name: &str,
        payload: Value,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The row lock orders this against the wait that parks the mission: whichever commits
        // second sees the other's row.
        let status = sqlx::query_scalar!(
            r#"select status as "status: MissionStatus" from missions where id = $1 for update"#,
            mission as MissionId,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("mission {mission}")))?;
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "mission {mission} is already {}",
                status.as_str()
            )));
        }
        let kept = sqlx::query!(
            r#"
            insert into signals (mission_id, name, payload) values ($1, $2, $3)
            on conflict (mission_id, name) do nothing
            "#,
            mission as MissionId,
            name,
            payload,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if kept == 0 {
            return Err(StoreError::Conflict(format!(
                "mission {mission} already received signal `{name}`"
            )));
        }
        let woken = wake_if_signalled(&mut *tx, mission, name).await?;
        tx.commit().await?;
        Ok(woken)
    }

    async fn signal(&self, mission: MissionId, name: &str) -> StoreResult<Option<Value>> {
        Ok(sqlx::query_scalar!(
            "select payload from signals where mission_id = $1 and name = $2",
            mission as MissionId,
            name,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn wake_if_signalled(&self, mission: MissionId, name: &str) -> StoreResult<bool> {
        wake_if_signalled(&self.pool, mission, name).await
    }
}

/// A mission parked on a wait for signal `name` becomes pending, with no wake-up on record, so
/// the reconciler's next scan hands it to a worker.
async fn wake_if_signalled(
    db: impl PgExecutor<'_>,
    mission: MissionId,
    name: &str,
) -> StoreResult<bool> {
    let woken = sqlx::query!(
        r#"
        update missions set status = 'pending', wake_at = null, enqueued_at = null,
               updated_at = now()
        where id = $1 and status = 'waiting'
          and exists (select 1 from steps
                      where mission_id = $1 and name = $2 and kind = 'signal'
                        and status = 'waiting')
          and exists (select 1 from signals where mission_id = $1 and name = $2)
        "#,
        mission as MissionId,
        name,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(woken > 0)
}
