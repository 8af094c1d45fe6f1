//! The worker's heartbeat: every [`HEARTBEAT`] a worker pool writes who it is (host, pid,
//! queue, concurrency) and how many wake-ups it has handled to Postgres, so operators can see
//! the live fleet; what each worker runs right now is read from the mission leases, not
//! reported here. A graceful shutdown marks the worker stopped; a killed one just stops beating.
//! Each worker also deletes the rows of workers unheard of for [`FORGET_AFTER`].
//!
//! Heartbeats are for people, not for correctness (leases decide who runs what), so a failed
//! write is logged and tried again at the next tick, never fatal.

use chrono::Utc;
use hypercode_engine::host_name;
use hypercode_engine::store::{Store, WorkerBeat};
use hypercode_engine::Engine;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a worker reports. A reader should treat a worker unheard of for a few intervals
/// as gone (or paused: its leases tell whether its missions were taken over).
pub const HEARTBEAT: Duration = hypercode_engine::WORKER_HEARTBEAT;

/// Workers unheard of this long are deleted: long enough to read what happened overnight.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How often each worker deletes the forgotten ones (also once when it starts).
const FORGET_EVERY: Duration = Duration::from_secs(60 * 60);

/// Wake-ups a worker pool has handled since it started: the job handler counts, the heartbeat
/// reports. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Handled(Arc<AtomicU64>);

impl Handled {
    /// Count one more handled wake-up.
    pub fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The heartbeat of a worker pool that starts now, under the engine's worker id.
pub fn beat(engine: &Engine, queue: &str, concurrency: usize) -> WorkerBeat {
    WorkerBeat {
        id: engine.worker_id().to_string(),
        queue: queue.to_owned(),
        // The same name as the host part of the worker id, so the two agree.
        host: host_name(),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        concurrency: i32::try_from(concurrency).unwrap_or(i32::MAX),
        started_at: Utc::now(),
        handled: 0,
    }
}

/// Report `beat` (with the `handled` count of the moment) every [`HEARTBEAT`] until `stop`
/// fires; then report once more and mark the worker stopped. Fire `stop` once the pool has
/// drained, so the worker shows as alive for as long as it still holds missions.
pub async fn run(
    store: Arc<dyn Store>,
    mut beat: WorkerBeat,
    handled: Handled,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(FORGET_EVERY);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => report(store.as_ref(), &mut beat, &handled).await,
            _ = housekeeping.tick() => match store.forget_workers(FORGET_AFTER).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(forgotten = n, "deleted workers unheard of for a day"),
                Err(e) => tracing::warn!(error = %e, "could not delete old workers; retrying later"),
            },
        }
    }
    report(store.as_ref(), &mut beat, &handled).await;
    match store.worker_stopped(&beat.id).await {
        Ok(()) => tracing::info!(worker = %beat.id, handled = beat.handled, "worker stopped"),
        Err(e) => {
            tracing::warn!(worker = %beat.id, error = %e, "could not mark the worker stopped")
        }
    }
}

async fn report(store: &dyn Store, beat: &mut WorkerBeat, handled: &Handled) {
    beat.handled = i64::try_from(handled.get()).unwrap_or(i64::MAX);
    if let Err(e) = store.heartbeat(beat).await {
        tracing::warn!(error = %e, "heartbeat not recorded; retrying next tick");
    }
}
