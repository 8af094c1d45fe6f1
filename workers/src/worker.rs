//! The worker pool: an apalis worker on the Redis queue that advances one mission per job.
//! It is woken by Redis pub/sub the moment a job is pushed, with a slow poll as a safety net,
//! and it is restarted (re-registered) when Redis loses its state under it. While it runs, its
//! [`heartbeat`](crate::heartbeat) reports it to Postgres.

use crate::heartbeat::{self, Handled};
use crate::queue::{self, QueueConfig, WakeJob};
use crate::WorkerError;
use apalis::prelude::{BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use futures::{Stream, StreamExt};
use hypercode_engine::{Engine, RunOutcome};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an idle worker polls even without a pub/sub signal (a missed message, a Redis
/// restart): this bounds the delay, the signal makes the common case immediate.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// Pause before restarting a worker that stopped on an error (Redis down or flushed).
const RESTART_DELAY: Duration = Duration::from_secs(1);

async fn handle(
    job: WakeJob,
    engine: Data<Engine>,
    handled: Data<Handled>,
) -> Result<(), BoxDynError> {
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
    handled.add_one();
    Ok(())
}

/// A stream that yields whenever a wake-up is announced on the queue's channel, and at least
/// every [`FALLBACK_POLL`].
pub async fn wake_signals(
    config: &QueueConfig,
) -> Result<impl Stream<Item = ()> + Unpin + Send, WorkerError> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(config.signal_channel()).await?;
    let announced = pubsub.into_on_message().map(|_| ());
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(FALLBACK_POLL))
        .map(|_| ());
    Ok(Coalesce(futures::stream::select(announced, ticks)))
}

/// Folds every signal already pending into one item, and only returns after its sources are
/// pending again. apalis polls its wake-up stream once per fetch and ignores a ready item; a
/// source left ready would hold no waker and never wake the worker again.
struct Coalesce<S>(S);

impl<S: Stream<Item = ()> + Unpin> Stream for Coalesce<S> {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let mut fired = false;
        loop {
            match self.0.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => fired = true,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    return if fired {
                        Poll::Ready(Some(()))
                    } else {
                        Poll::Pending
                    }
                }
            }
        }
    }
}

/// Run a worker pool with `concurrency` missions in flight until `shutdown` fires; then stop
/// taking jobs, let in-flight runs hand their missions back, mark the worker stopped in its
/// heartbeat, and return. A pool that stops on an error (Redis restarted or flushed, which
/// forgets the worker's registration) is started again: missions meanwhile wait in Postgres,
/// and the reconciler re-sends their wake-ups.
pub async fn run(
    engine: Engine,
    config: QueueConfig,
    concurrency: usize,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let concurrency = concurrency.max(1);
    tracing::info!(worker = %engine.worker_id(), queue = %config.queue, concurrency, "worker started");
    let handled = Handled::default();
    // The heartbeat outlives the pool's drain: the worker is reported alive while it still
    // hands missions back, and stopped only once it holds none.
    let drained = CancellationToken::new();
    let heart = tokio::spawn(heartbeat::run(
        engine.store().clone(),
        heartbeat::beat(&engine, &config.queue, concurrency),
        handled.clone(),
        drained.clone(),
    ));
    pool(engine, &config, concurrency, &handled, &shutdown).await;
    drained.cancel();
    if let Err(e) = heart.await {
        tracing::warn!(error = %e, "the heartbeat task failed");
    }
    Ok(())
}

/// Run (and restart) the apalis pool until `shutdown` fires.
async fn pool(
    engine: Engine,
    config: &QueueConfig,
    concurrency: usize,
    handled: &Handled,
    shutdown: &CancellationToken,
) {
    loop {
        let once = run_once(
            engine.clone(),
            config,
            concurrency,
            handled.clone(),
            shutdown.clone(),
        );
        match once.await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!("worker pool stopped unexpectedly; restarting"),
            Err(e) => tracing::warn!(error = %e, "worker pool failed; restarting"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

async fn run_once(
    engine: Engine,
    config: &QueueConfig,
    concurrency: usize,
    handled: Handled,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let backend = queue::storage(config)
        .await?
        .poll_with_stream(wake_signals(config).await?);
    let runs = engine.shutdown_token();
    let worker = WorkerBuilder::new(engine.worker_id().to_string())
        .backend(backend)
        .concurrency(concurrency)
        .data(engine)
        .data(handled)
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
