//! [`WorkerRegistry`] on PostgreSQL: the `workers` heartbeat table, and the fleet's numbers read
//! from the engine's own tables (leases for current work, events for throughput, the live
//! missions for the backlog), so nothing is counted twice.

use super::{seconds, PgStore};
use crate::error::{StoreError, StoreResult};
use crate::event::EventType;
use crate::ids::MissionId;
use crate::store::{
    Backlog, RunningMission, ThroughputBucket, WorkerBeat, WorkerRecord, WorkerRegistry,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

/// Whole milliseconds of `d`, at least one (a bucket must have a length).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[async_trait]
impl WorkerRegistry for PgStore {
    async fn heartbeat(&self, beat: &WorkerBeat) -> StoreResult<()> {
        sqlx::query!(
            r#"
            insert into workers (id, queue, host, pid, concurrency, started_at, heartbeat_at, handled)
            values ($1, $2, $3, $4, $5, $6, now(), $7)
            on conflict (id) do update set
                queue = excluded.queue, host = excluded.host, pid = excluded.pid,
                concurrency = excluded.concurrency, started_at = excluded.started_at,
                heartbeat_at = now(), handled = excluded.handled
            "#,
            beat.id,
            beat.queue,
            beat.host,
            beat.pid,
            beat.concurrency,
            beat.started_at,
            beat.handled,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn worker_stopped(&self, id: &str) -> StoreResult<()> {
        let stopped = sqlx::query!("update workers set stopped_at = now() where id = $1", id)
            .execute(&self.pool)
            .await?;
        if stopped.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("worker {id}")));
        }
        Ok(())
    }

    async fn forget_workers(&self, unseen_for: Duration) -> StoreResult<u64> {
        Ok(sqlx::query!(
            "delete from workers where heartbeat_at < now() - make_interval(secs => $1)",
            seconds(unseen_for),
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn workers(&self, seen_within: Duration) -> StoreResult<Vec<WorkerRecord>> {
        let mut workers: Vec<WorkerRecord> = sqlx::query!(
            r#"
            select id, queue, host, pid, concurrency, started_at, heartbeat_at, stopped_at, handled
            from workers
            where heartbeat_at > now() - make_interval(secs => $1)
            order by started_at, id
            "#,
            seconds(seen_within),
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|w| WorkerRecord {
            beat: WorkerBeat {
                id: w.id,
                queue: w.queue,
                host: w.host,
                pid: w.pid,
                concurrency: w.concurrency,
                started_at: w.started_at,
                handled: w.handled,
            },
            heartbeat_at: w.heartbeat_at,
            stopped_at: w.stopped_at,
            running: Vec::new(),
        })
        .collect();
        if workers.is_empty() {
            return Ok(workers);
        }
        let ids: Vec<String> = workers.iter().map(|w| w.beat.id.clone()).collect();
        // Current work is whatever the worker holds the lease of: the partial `missions_live`
        // index finds the running missions, the steps' primary key (read backwards) the latest
        // entry still in progress.
        let running = sqlx::query!(
            r#"
            select m.lease_owner as "worker!", m.id as "id: MissionId", m.workflow,
                   m.updated_at as since,
                   (select s.name from steps s
                    where s.mission_id = m.id and s.status in ('running', 'pending')
                    order by s.position desc limit 1) as step
            from missions m
            where m.status = 'running' and m.lease_owner = any($1)
            order by m.updated_at, m.id
            "#,
            &ids,
        )
        .fetch_all(&self.pool)
        .await?;
        let index: HashMap<String, usize> = ids.into_iter().zip(0..).collect();
        for mission in running {
            if let Some(&i) = index.get(&mission.worker) {
                workers[i].running.push(RunningMission {
                    id: mission.id,
                    workflow: mission.workflow,
                    since: mission.since,
                    step: mission.step,
                });
            }
        }
        Ok(workers)
    }

    async fn throughput(
        &self,
        window: Duration,
        bucket: Duration,
    ) -> StoreResult<Vec<ThroughputBucket>> {
        let bucket_ms = millis(bucket);
        let count = (millis(window) + bucket_ms - 1) / bucket_ms;
        // Buckets are numbered by whole bucket lengths since the epoch (exact integer maths on
        // milliseconds, so an event and its bucket always agree); the series supplies the empty
        // ones. The window's start is spelled out in the `where` clause, not taken from
        // `current`, so the planner sees its value and plans the scan of the BRIN index on
        // `events.at` from it.
        let rows = sqlx::query!(
            r#"
            with current as (
                select floor(extract(epoch from now()) * 1000 / $1::bigint)::bigint as i
            ), counted as (
                select floor(extract(epoch from at) * 1000 / $1::bigint)::bigint as i,
                       count(*) filter (where type = $3::text) as steps,
                       count(*) filter (where type <> $3::text) as missions
                from events
                where at >= to_timestamp(
                          ((floor(extract(epoch from now()) * 1000 / $1::bigint)::bigint
                            - $2::bigint + 1) * $1::bigint)::float8 / 1000)
                  and type = any($4::text[])
                group by 1
            )
            select to_timestamp((b.i * $1::bigint)::float8 / 1000) as "start!",
                   coalesce(c.steps, 0) as "steps!", coalesce(c.missions, 0) as "missions!"
            from current
            cross join generate_series(current.i - $2::bigint + 1, current.i) as b(i)
            left join counted c on c.i = b.i
            order by b.i
            "#,
            bucket_ms,
            count.max(1),
            EventType::StepSucceeded.as_str(),
            &[
                EventType::StepSucceeded.as_str(),
                EventType::MissionSucceeded.as_str(),
                EventType::MissionFailed.as_str(),
                EventType::MissionCancelled.as_str(),
            ] as &[&str],
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ThroughputBucket {
                start: r.start,
                steps: r.steps,
                missions: r.missions,
            })
            .collect())
    }

    async fn backlog(&self) -> StoreResult<Backlog> {
        // Only live missions: the partial `missions_live` index, however long the history.
        Ok(sqlx::query_as!(
            Backlog,
            r#"
            select count(*) filter (where status = 'pending') as "pending!",
                   count(*) filter (where status = 'running') as "running!",
                   count(*) filter (where status = 'waiting') as "waiting!",
                   count(*) filter (where status in ('pending', 'waiting') and wake_at <= now())
                       as "due!",
                   -- A waiting approval parks its mission: only waiting missions are looked at.
                   (select count(*) from steps s join missions w on w.id = s.mission_id
                    where w.status = 'waiting' and s.kind = 'approval' and s.status = 'waiting')
                       as "approvals!"
            from missions
            where status in ('pending', 'running', 'waiting')
            "#,
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
