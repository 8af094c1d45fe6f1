//! Plain jobs through the apalis-redis worker path HyperCode's workers use: pushes `--n` no-op
//! [`WakeJob`]s (push_bulk, in chunks) onto a fresh queue, then drains them with an apalis
//! worker built as in `hypercode worker` (wake-ups announced on `QueueConfig::signal_channel`, plus a 500 ms fallback poll)
//! whose handler does nothing. Prints push and drain rates; the drain is timed from the first
//! handler call to the last.

use anyhow::Result;
use apalis::prelude::{BackendExt, BoxDynError, Data, TaskSink, WorkerBuilder, WorkerBuilderExt};
use clap::Parser;
use hypercode_engine::MissionId;
use hypercode_workers::queue::{storage, QueueConfig, WakeJob};
use hypercode_workers::worker::wake_signals;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Redis URL.
    #[arg(long, env = "HYPERCODE_REDIS_URL")]
    redis_url: String,
    /// Jobs.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Worker concurrency (as `hypercode worker --concurrency`).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Counts handled jobs and notes when the first and the last ran.
struct Tally {
    n: usize,
    done: AtomicUsize,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    finished: CancellationToken,
}

async fn noop(_job: WakeJob, tally: Data<Arc<Tally>>) -> Result<(), BoxDynError> {
    let now = Instant::now();
    tally
        .first
        .lock()
        .map(|mut f| {
            f.get_or_insert(now);
        })
        .ok();
    if tally.done.fetch_add(1, Ordering::Relaxed) + 1 == tally.n {
        if let Ok(mut last) = tally.last.lock() {
            *last = Some(now);
        }
        tally.finished.cancel();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = QueueConfig {
        redis_url: args.redis_url.clone(),
        queue: format!("bench-jobs-{}", uuid::Uuid::new_v4().simple()),
    };
    let mut sink = storage(&config).await?;
    let push_start = Instant::now();
    let jobs: Vec<WakeJob> = (0..args.n)
        .map(|_| WakeJob {
            mission: MissionId(uuid::Uuid::now_v7()),
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        sink.push_bulk(chunk.to_vec()).await?;
    }
    let push_secs = push_start.elapsed().as_secs_f64();

    let client = redis::Client::open(config.redis_url.as_str())?;
    let backend = storage(&config)
        .await?
        .poll_with_stream(wake_signals(&config).await?);
    let tally = Arc::new(Tally {
        n: args.n,
        done: AtomicUsize::new(0),
        first: Mutex::new(None),
        last: Mutex::new(None),
        finished: CancellationToken::new(),
    });
    let finished = tally.finished.clone();
    let worker = WorkerBuilder::new("bench-jobs")
        .backend(backend)
        .concurrency(args.concurrency.max(1))
        .data(tally.clone())
        .build(noop);
    let started = Instant::now();
    // Announce the backlog the way a wake-up is announced.
    let mut announce = client.get_multiplexed_async_connection().await?;
    let announcer = {
        let channel = config.signal_channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg("bench")
                .query_async(&mut announce)
                .await;
        })
    };
    let stop = async move {
        tokio::select! {
            _ = finished.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
        Ok::<(), std::io::Error>(())
    };
    worker
        .run_until(stop)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    announcer.abort();
    let done = tally.done.load(Ordering::Relaxed);
    let first = tally.first.lock().ok().and_then(|f| *f).unwrap_or(started);
    let last = tally
        .last
        .lock()
        .ok()
        .and_then(|l| *l)
        .unwrap_or_else(Instant::now);
    let drain_secs = last.duration_since(first).as_secs_f64();
    // Leave nothing behind in Redis.
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", config.queue))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
    }
    println!(
        "{}",
        json!({ "n": args.n, "done": done, "concurrency": args.concurrency,
                "push_secs": push_secs, "push_per_s": args.n as f64 / push_secs,
                "drain_secs": drain_secs, "jobs_per_s": done as f64 / drain_secs.max(1e-9),
                "startup_to_first_ms": first.duration_since(started).as_secs_f64() * 1000.0 })
    );
    Ok(())
}
