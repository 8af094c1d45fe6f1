//! The worker pool: an apalis worker on the Redis queue that advances one mission per job.
//! It is woken by Redis pub/sub the moment a job is pushed, with a slow poll as a safety net,
//! and it is restarted (re-registered) when Redis loses its state or drops its connections
//! under it. While it runs, its [`heartbeat`](crate::heartbeat) reports it to Postgres.
//!
//! The mission runs themselves belong to the worker, not to the pool ([`Runs`]): a pool that
//! fails drops its jobs' futures, and a run dropped mid-step would leave its mission `running`
//! until its lease lapsed. So each job hands its mission to a run spawned outside the pool and
//! waits for it; when the pool is torn down, its runs go on and finish, and a shutdown waits
//! for every one of them to hand its mission back.

use crate::heartbeat::{self, Handled};
use crate::queue::{self, QueueConfig, WakeJob};
use crate::WorkerError;
use apalis::prelude::{BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use futures::{Stream, StreamExt};
use hypercode_engine::{Engine, MissionId, RunOutcome};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often an idle worker polls even without a pub/sub signal (a missed message, a Redis
/// restart): this bounds the delay, the signal makes the common case immediate.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// Pause before restarting a worker that stopped on an error (Redis down or flushed).
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// The mission runs of one worker process, outliving any one apalis pool: at most
/// `concurrency` at once (the permits outlive the pool too, so a restarted pool waits for its
/// predecessor's runs to free their slots), each counted as handled when it ends.
#[derive(Clone)]
struct Runs {
    engine: Engine,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    handled: Handled,
}

impl Runs {
    fn new(engine: Engine, concurrency: usize, handled: Handled) -> Self {
        Self {
            engine,
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(concurrency)),
            handled,
        }
    }

    /// Run the mission in a slot of its own and wait for it. If the caller (a job of a pool
    /// that failed) is dropped meanwhile, the run goes on to its end regardless.
    async fn run(&self, mission: MissionId) {
        // Fails only once the semaphore is closed, and nothing closes it.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let runs = self.clone();
        let run = self.tracker.spawn(async move {
            runs.advance(mission).await;
            drop(slot);
        });
        if let Err(e) = run.await {
            // Its lease heartbeat died with it: the lease lapses and the reconciler hands the
            // mission to a worker again.
            tracing::error!(mission = %mission, error = %e, "run panicked; the lease will expire and the mission resume");
            self.handled.add_one();
        }
    }

    async fn advance(&self, mission: MissionId) {
        // Errors are logged, not returned: apalis would re-run the job on its own schedule,
        // while the mission's lease and the reconciler already guarantee it is resumed.
        match self.engine.run_mission(mission).await {
            Ok(RunOutcome::NotClaimed) => {
                tracing::debug!(mission = %mission, "not runnable now; wake-up dropped")
            }
            Ok(outcome) => tracing::debug!(mission = %mission, ?outcome, "wake-up handled"),
            Err(e) => {
                tracing::error!(mission = %mission, error = %e, "run failed; the lease will expire and the mission resume")
            }
        }
        self.handled.add_one();
    }

    /// Stop taking runs and wait for the ones under way to end.
    async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn handle(job: WakeJob, runs: Data<Runs>) -> Result<(), BoxDynError> {
    runs.run(job.mission).await;
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
/// heartbeat, and return. A pool that stops on an error (Redis restarted, flushed, or its
/// connections dropped) is started again while its runs go on: missions meanwhile wait in
/// Postgres, and the reconciler re-sends their wake-ups.
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
    let runs = Runs::new(engine.clone(), concurrency, handled);
    // Runs stop taking steps as soon as the signal comes, whether a pool is up to pass it on
    // or not (it may be between restarts, with runs of the failed one still going).
    let stopping = async {
        shutdown.cancelled().await;
        tracing::info!("shutting down: finishing in-flight steps, releasing missions");
        engine.shutdown_token().cancel();
    };
    tokio::join!(
        pool(&engine, &config, concurrency, &runs, &shutdown),
        stopping
    );
    runs.drain().await;
    drained.cancel();
    if let Err(e) = heart.await {
        tracing::warn!(error = %e, "the heartbeat task failed");
    }
    Ok(())
}

/// Run (and restart) the apalis pool until `shutdown` fires.
async fn pool(
    engine: &Engine,
    config: &QueueConfig,
    concurrency: usize,
    runs: &Runs,
    shutdown: &CancellationToken,
) {
    for start in 1u64.. {
        // apalis refuses to register a worker name that its Redis saw alive within its
        // heartbeat threshold (a minute by default), so a pool restarted under the name of the
        // one that just failed would not start for that long: each start has a name of its own.
        let name = format!("{}#{start}", engine.worker_id());
        match run_once(&name, config, concurrency, runs.clone(), shutdown.clone()).await {
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
    name: &str,
    config: &QueueConfig,
    concurrency: usize,
    runs: Runs,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let backend = queue::storage(config)
        .await?
        .poll_with_stream(wake_signals(config).await?);
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .concurrency(concurrency)
        .data(runs)
        .build(handle);
    let stop = async move {
        shutdown.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    worker
        .run_until(stop)
        .await
        .map_err(|e| WorkerError::Worker(e.to_string()))
}
