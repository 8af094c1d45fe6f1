//! The engine's schedule operations: creating and changing schedules with their input checked
//! as a submission's would be, triggering one now, and the ticker `serve` runs to fire due
//! ticks. Timing rules are in [`crate::schedule`]; storage in
//! [`ScheduleStore`](crate::store::ScheduleStore).

use crate::engine::{Engine, SubmitError};
use crate::error::StoreError;
use crate::error::StoreResult;
use crate::ids::MissionId;
use crate::schedule::ScheduleName;
use crate::store::{Fired, MissionRecord, NewSchedule, ScheduleChange, ScheduleRecord};
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the ticker looks for due ticks: a tick fires at most this late (plus one pass),
/// well inside [`ON_TIME`](crate::schedule::ON_TIME).
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// Most schedules one firing pass takes; a pass that took this many runs again at once.
const FIRE_BATCH: i64 = 100;

impl Engine {
    /// Store a new schedule after checking its workflow (an internal one is allowed: the
    /// engine starts its missions) and its input by the rules of a submission. Its first tick
    /// is the first after now.
    pub async fn create_schedule(
        &self,
        schedule: NewSchedule,
    ) -> Result<ScheduleRecord, SubmitError> {
        self.check_input(&schedule.workflow, &schedule.input)?;
        self.check_secrets(&schedule.workflow, &schedule.input)
            .await?;
        let next = schedule
            .enabled
            .then(|| schedule.cron.next_after(schedule.timezone.0, Utc::now()))
            .flatten();
        let created = self.store().create_schedule(schedule, next).await?;
        tracing::info!(schedule = %created.spec.name, next = ?created.next_fire_at, "schedule created");
        Ok(created)
    }

    /// Change a schedule; a new input is checked against its workflow first.
    pub async fn update_schedule(
        &self,
        name: &ScheduleName,
        change: ScheduleChange,
    ) -> Result<ScheduleRecord, SubmitError> {
        if let Some(input) = &change.input {
            let current = self
                .store()
                .schedule(name)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))?;
            self.check_input(&current.spec.workflow, input)?;
            self.check_secrets(&current.spec.workflow, input).await?;
        }
        Ok(self.store().update_schedule(name, change).await?)
    }

    /// Start one mission of the schedule now, whatever its cron, `enabled` and `overlap`.
    pub async fn trigger_schedule(&self, name: &ScheduleName) -> StoreResult<MissionRecord> {
        let mission = self
            .store()
            .trigger_schedule(name, MissionId::new())
            .await?;
        tracing::info!(schedule = %name, mission = %mission.id, "schedule triggered");
        self.wake(mission.id).await;
        Ok(mission)
    }

    /// One firing pass: start the missions of every due tick and wake them.
    pub async fn fire_schedules(&self) -> StoreResult<Fired> {
        let mut all = Fired::default();
        loop {
            let fired = self.store().fire_schedules(FIRE_BATCH).await?;
            let full = fired.schedules == FIRE_BATCH as usize;
            for id in fired.started.iter().chain(&fired.cancelled) {
                self.wake(*id).await;
            }
            all.started.extend(fired.started);
            all.cancelled.extend(fired.cancelled);
            all.schedules += fired.schedules;
            if !full {
                return Ok(all);
            }
        }
    }

    /// Fire due ticks every `every` until `stop`. Any number of replicas may run this.
    pub async fn run_schedules(&self, every: Duration, stop: CancellationToken) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.fire_schedules().await {
                Ok(fired) if !fired.started.is_empty() => {
                    tracing::info!(started = fired.started.len(), "schedule ticks fired")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "firing schedules failed; retrying next tick"),
            }
        }
    }
}
