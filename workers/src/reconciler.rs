//! The reconciler: Postgres says which missions should be running (pending, timers due, leases
//! expired); this loop sends each a wake-up. It is what makes timers fire, retries resume,
//! dead workers' missions move on, and a flushed Redis recover.

use hypercode_engine::{store::JournalStore, Engine};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the reconciler paces itself.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Pause between scans (the resolution of timers).
    pub tick: Duration,
    /// A pending mission not claimed this long after its wake-up is assumed lost and re-sent.
    pub redeliver_after: Duration,
    /// Most wake-ups sent per scan.
    pub batch: i64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            redeliver_after: Duration::from_secs(10),
            batch: 500,
        }
    }
}

/// Scan and wake until `shutdown` fires. Several replicas may run: each scan locks the rows it
/// marks (`skip locked`), so they share the work.
pub async fn run(engine: Engine, config: ReconcilerConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match JournalStore::due(
            engine.store().as_ref(),
            config.batch,
            config.redeliver_after,
        )
        .await
        {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::debug!(count = ids.len(), "waking due missions");
                }
                for id in ids {
                    engine.wake(id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler scan failed; retrying next tick"),
        }
    }
}
