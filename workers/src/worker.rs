//! The worker pool: an apalis worker on the Redis queue that advances one mission per job.
//! It is woken by Redis pub/sub the moment a job is pushed, with a slow poll as a safety net.

use crate::queue::{self, QueueConfig, WakeJob};
use crate::WorkerError;
use apalis::prelude::{BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use futures::StreamExt;
use hypercode_engine::{Engine, RunOutcome};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an idle worker polls even without a pub/sub signal (a missed message, a Redis
/// restart): this bounds the delay, the signal makes the common case immediate.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

async fn handle(job: WakeJob, engine: Data<Engine>) -> Result<(), BoxDynError> {
    // Errors are logged, not returned: apalis would re-run the job on its own schedule, while
    // the mission's lease and the reconciler already guarantee it is resumed.
    match engine.run_mission(job.mission).await {
        Ok(RunOutcome::NotClaimed) => {
            tracing::debug!(mission = %job.mission, "not runnable now; wake-up dropped")
        }
        Ok(outcome) => tracing::debug!(mission = %job.mission, ?outcome, "wake-up handled"),
        Err(e) => {
            tracing::error!(mission = %job.mission, error = %e, "run failed; the lease will expire and the mission resume")
        }
    }
    Ok(())
}

/// A stream that yields whenever a job is announced on the queue's channel, and at least every
/// [`FALLBACK_POLL`].
async fn wake_signals(
    config: &QueueConfig,
) -> Result<impl futures::Stream<Item = ()> + Unpin + Send, WorkerError> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(config.available_channel()).await?;
    let announced = pubsub.into_on_message().map(|_| ());
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(FALLBACK_POLL))
        .map(|_| ());
    Ok(futures::stream::select(announced, ticks))
}

/// Run a worker pool with `concurrency` missions in flight until `shutdown` fires; then stop
/// taking jobs, let in-flight runs hand their missions back, and return.
pub async fn run(
    engine: Engine,
    config: QueueConfig,
    concurrency: usize,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let backend = queue::storage(&config)
        .await?
        .poll_with_stream(wake_signals(&config).await?);
    let name = engine.worker_id().to_string();
    tracing::info!(worker = %name, queue = %config.queue, concurrency, "worker started");
    let runs = engine.shutdown_token();
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .concurrency(concurrency.max(1))
        .data(engine)
        .build(handle);
    let stop = async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: finishing in-flight steps, releasing missions");
        runs.cancel();
        Ok::<(), std::io::Error>(())
    };
    worker
        .run_until(stop)
        .await
        .map_err(|e| WorkerError::Worker(e.to_string()))
}
