//! [`ScheduleStore`] on PostgreSQL: schedules, their missions, and firing due ticks.
//!
//! Firing is safe with any number of `serve` replicas: a pass locks the due schedule rows with
//! `for update skip locked`, so each schedule is fired by one replica at a time, and it starts
//! the ticks' missions and moves `next_fire_at` on in the same transaction. A crash before the
//! commit fires nothing; the next pass fires the same ticks, and their idempotency keys
//! ([`tick_key`]) make a tick fired twice one mission. The clock is the database's, so replicas
//! with skewed clocks agree on what is due.

use super::missions::{insert, request_cancel};
use super::PgStore;
use crate::error::{StoreError, StoreResult};
use crate::ids::MissionId;
use crate::schedule::cron::CronExpr;
use crate::schedule::{self, tick_key, Catchup, Overlap, ScheduleName, Zone};
use crate::status::MissionStatus;
use crate::store::{
    Fired, MissionRecord, NewMission, NewSchedule, ScheduleChange, ScheduleRecord, ScheduleStore,
    ScheduledMission, Tick,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Postgres, Transaction};

/// A schedule row as read, before its text columns are parsed.
struct Row {
    name: String,
    cron: String,
    timezone: String,
    workflow: String,
    input: Value,
    overlap: Overlap,
    catchup: Catchup,
    enabled: bool,
    next_fire_at: Option<DateTime<Utc>>,
    last_fire_at: Option<DateTime<Utc>>,
    skipped: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for ScheduleRecord {
    type Error = StoreError;

    fn try_from(row: Row) -> StoreResult<Self> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("{what} of schedule `{}`: {e}", row.name))
        };
        Ok(Self {
            spec: NewSchedule {
                name: row.name.parse().map_err(|e| corrupt("the name", &e))?,
                cron: row.cron.parse().map_err(|e| corrupt("the cron", &e))?,
                timezone: row.timezone.parse().map_err(|e| corrupt("the zone", &e))?,
                workflow: row.workflow,
                input: row.input,
                overlap: row.overlap,
                catchup: row.catchup,
                enabled: row.enabled,
            },
            next_fire_at: row.next_fire_at,
            last_fire_at: row.last_fire_at,
            skipped: row.skipped,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The schedule named `name`, or every schedule when `None`.
async fn read(
    db: impl PgExecutor<'_>,
    name: Option<&ScheduleName>,
) -> StoreResult<Vec<ScheduleRecord>> {
    sqlx::query_as!(
        Row,
        r#"
        select name, cron, timezone, workflow, input, overlap as "overlap: Overlap",
               catchup as "catchup: Catchup", enabled, next_fire_at, last_fire_at, skipped,
               created_at, updated_at
        from schedules where $1::text is null or name = $1
        order by name
        "#,
        name.map(ScheduleName::as_str),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(ScheduleRecord::try_from)
    .collect()
}

/// The database's clock: every replica reads the same one.
async fn clock(db: impl PgExecutor<'_>) -> StoreResult<DateTime<Utc>> {
    Ok(sqlx::query_scalar!(r#"select clock_timestamp() as "now!""#)
        .fetch_one(db)
        .await?)
}

/// The first tick of `cron` in `zone` after `now`, or `None` when paused.
fn next_tick(
    cron: &CronExpr,
    zone: Zone,
    enabled: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    enabled.then(|| cron.next_after(zone.0, now)).flatten()
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(
        &self,
        s: NewSchedule,
        next_fire_at: Option<DateTime<Utc>>,
    ) -> StoreResult<ScheduleRecord> {
        let created = sqlx::query_as!(
            Row,
            r#"
            insert into schedules (name, cron, timezone, workflow, input, overlap, catchup,
                                   enabled, next_fire_at)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            on conflict (name) do nothing
            returning name, cron, timezone, workflow, input, overlap as "overlap: Overlap",
                      catchup as "catchup: Catchup", enabled, next_fire_at, last_fire_at,
                      skipped, created_at, updated_at
            "#,
            s.name.as_str(),
            s.cron.as_str(),
            s.timezone.to_string(),
            s.workflow,
            s.input,
            s.overlap as Overlap,
            s.catchup as Catchup,
            s.enabled,
            next_fire_at,
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("a schedule named `{}` exists", s.name)))?;
        created.try_into()
    }

    async fn schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        read(&self.pool, None).await
    }

    async fn schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>> {
        Ok(read(&self.pool, Some(name)).await?.pop())
    }

    async fn update_schedule(
        &self,
        name: &ScheduleName,
        change: ScheduleChange,
    ) -> StoreResult<ScheduleRecord> {
        let mut tx = self.pool.begin().await?;
        let now = clock(&mut *tx).await?;
        // Waits for a firing pass that holds the row, so a change never races a tick.
        let mut record: ScheduleRecord = sqlx::query_as!(
            Row,
            r#"
            select name, cron, timezone, workflow, input, overlap as "overlap: Overlap",
                   catchup as "catchup: Catchup", enabled, next_fire_at, last_fire_at, skipped,
                   created_at, updated_at
            from schedules where name = $1 for update
            "#,
            name.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))?
        .try_into()?;
        let retime = change.cron.is_some()
            || change.timezone.is_some()
            || change.enabled.is_some_and(|on| on != record.spec.enabled);
        let spec = &mut record.spec;
        spec.cron = change.cron.unwrap_or_else(|| spec.cron.clone());
        spec.timezone = change.timezone.unwrap_or(spec.timezone);
        spec.input = change.input.unwrap_or_else(|| spec.input.clone());
        spec.overlap = change.overlap.unwrap_or(spec.overlap);
        spec.catchup = change.catchup.unwrap_or(spec.catchup);
        spec.enabled = change.enabled.unwrap_or(spec.enabled);
        let next_fire_at = match retime {
            true => next_tick(&spec.cron, spec.timezone, spec.enabled, now),
            false => record.next_fire_at,
        };
        let updated = sqlx::query_as!(
            Row,
            r#"
            update schedules set cron = $2, timezone = $3, input = $4, overlap = $5, catchup = $6,
                   enabled = $7, next_fire_at = $8, updated_at = now()
            where name = $1
            returning name, cron, timezone, workflow, input, overlap as "overlap: Overlap",
                      catchup as "catchup: Catchup", enabled, next_fire_at, last_fire_at,
                      skipped, created_at, updated_at
            "#,
            name.as_str(),
            spec.cron.as_str(),
            spec.timezone.to_string(),
            spec.input,
            spec.overlap as Overlap,
            spec.catchup as Catchup,
            spec.enabled,
            next_fire_at,
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        updated.try_into()
    }

    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<()> {
        let deleted = sqlx::query!("delete from schedules where name = $1", name.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        match deleted {
            0 => Err(StoreError::NotFound(format!("schedule `{name}`"))),
            _ => Ok(()),
        }
    }

    async fn schedule_missions(
        &self,
        name: &ScheduleName,
        limit: i64,
    ) -> StoreResult<Vec<ScheduledMission>> {
        Ok(sqlx::query_as!(
            ScheduledMission,
            r#"
            select id as "id: MissionId", status as "status: MissionStatus",
                   fire_at as "fire_at!"
            from missions where schedule = $1
            order by fire_at desc, id desc
            limit $2
            "#,
            name.as_str(),
            limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn latest_scheduled_missions(&self) -> StoreResult<Vec<(String, ScheduledMission)>> {
        let rows = sqlx::query!(
            r#"
            select distinct on (schedule) schedule as "schedule!", id as "id: MissionId",
                   status as "status: MissionStatus", fire_at as "fire_at!"
            from missions where schedule is not null
            order by schedule, fire_at desc, id desc
            "#,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mission = ScheduledMission {
                    id: r.id,
                    status: r.status,
                    fire_at: r.fire_at,
                };
                (r.schedule, mission)
            })
            .collect())
    }

    async fn trigger_schedule(
        &self,
        name: &ScheduleName,
        id: MissionId,
    ) -> StoreResult<MissionRecord> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query!(
            r#"select workflow, input, clock_timestamp() as "now!" from schedules where name = $1"#,
            name.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))?;
        let mission = NewMission {
            id,
            workflow: row.workflow,
            input: row.input,
            idempotency_key: Some(format!("schedule:{name}:manual:{}", id.0)),
            concurrency_key: None,
            tick: Some(Tick {
                schedule: name.clone(),
                fire_at: row.now,
            }),
        };
        let started = insert(&mut *tx, &mission)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("mission {id} exists")))?;
        tx.commit().await?;
        Ok(started)
    }

    async fn fire_schedules(&self, limit: i64) -> StoreResult<Fired> {
        let mut tx = self.pool.begin().await?;
        let now = clock(&mut *tx).await?;
        let due = sqlx::query_as!(
            Row,
            r#"
            select name, cron, timezone, workflow, input, overlap as "overlap: Overlap",
                   catchup as "catchup: Catchup", enabled, next_fire_at, last_fire_at, skipped,
                   created_at, updated_at
            from schedules
            where enabled and next_fire_at <= $1
            order by next_fire_at
            limit $2
            for update skip locked
            "#,
            now,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = Fired {
            schedules: due.len(),
            ..Fired::default()
        };
        for row in due {
            fire(&mut tx, &row.try_into()?, now, &mut fired).await?;
        }
        tx.commit().await?;
        Ok(fired)
    }
}

/// Fire one locked, due schedule's ticks at `now` and move it to its next tick.
async fn fire(
    tx: &mut Transaction<'_, Postgres>,
    schedule: &ScheduleRecord,
    now: DateTime<Utc>,
    fired: &mut Fired,
) -> StoreResult<()> {
    let spec = &schedule.spec;
    let Some(waiting_for) = schedule.next_fire_at else {
        return Ok(());
    };
    let due = schedule::due(&spec.cron, spec.timezone, spec.catchup, waiting_for, now);
    let by = format!("schedule:{}", spec.name);
    let (mut last_fired, mut skipped) = (None, 0_i64);
    for fire_at in due.fire {
        let live = live_missions(&mut **tx, &spec.name).await?;
        match spec.overlap {
            Overlap::Skip if !live.is_empty() => {
                skipped += 1;
                continue;
            }
            Overlap::CancelPrevious => {
                for id in live {
                    if request_cancel(tx, id, &by).await? == MissionStatus::Pending {
                        fired.cancelled.push(id);
                    }
                }
            }
            Overlap::Skip | Overlap::Allow => {}
        }
        let mission = NewMission {
            id: MissionId::new(),
            workflow: spec.workflow.clone(),
            input: spec.input.clone(),
            idempotency_key: Some(tick_key(&spec.name, fire_at)),
            concurrency_key: None,
            tick: Some(Tick {
                schedule: spec.name.clone(),
                fire_at,
            }),
        };
        if let Some(started) = insert(&mut **tx, &mission).await? {
            fired.started.push(started.id);
        }
        last_fired = Some(fire_at);
    }
    sqlx::query!(
        r#"
        update schedules set next_fire_at = $2, last_fire_at = coalesce($3, last_fire_at),
               skipped = skipped + $4
        where name = $1
        "#,
        spec.name.as_str(),
        due.next,
        last_fired,
        skipped,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The schedule's missions that have not finished.
async fn live_missions(
    db: impl PgExecutor<'_>,
    name: &ScheduleName,
) -> StoreResult<Vec<MissionId>> {
    Ok(sqlx::query_scalar!(
        r#"
        select id as "id: MissionId" from missions
        where schedule = $1 and status in ('pending', 'running', 'waiting')
        "#,
        name.as_str(),
    )
    .fetch_all(db)
    .await?)
}
