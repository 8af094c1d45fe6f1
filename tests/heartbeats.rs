//! Worker heartbeats end to end: real `worker` and `serve --worker` processes report themselves
//! to Postgres (pid, concurrency, the mission they are running, wake-ups handled) and mark
//! themselves stopped on SIGTERM; the queue depth counts the wake-ups waiting in Redis. Read
//! through the engine's store, as the dashboard reads them.

mod common;

use common::*;
use hypercode_engine::postgres::PgStore;
use hypercode_engine::store::{WorkerRecord, WorkerRegistry};
use hypercode_engine::Wake;
use hypercode_workers::queue::{QueueConfig, RedisWake, MAX_DEPTH};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The age within which a worker counts as seen (a few heartbeats).
const SEEN_WITHIN: Duration = Duration::from_secs(10);

async fn store(h: &Harness) -> PgStore {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&h.database_url)
        .await
        .expect("connect to the test database");
    PgStore::new(pool)
}

/// Poll the workers until one satisfies `pred`; panics after `timeout` with what was listed.
async fn wait_for_worker(
    store: &PgStore,
    what: &str,
    pred: impl Fn(&WorkerRecord) -> bool,
    timeout: Duration,
) -> WorkerRecord {
    let pred = &pred;
    let polled = poll(timeout, move || async move {
        let workers = store.workers(SEEN_WITHIN).await.expect("list workers");
        workers.iter().find(|w| pred(w)).cloned().ok_or(workers)
    })
    .await;
    polled.unwrap_or_else(|workers| {
        panic!("timed out after {timeout:?} waiting for {what}; workers: {workers:#?}")
    })
}

#[tokio::test]
async fn a_worker_reports_itself_its_work_and_its_shutdown() {
    let mut h = Harness::with(Options {
        worker_concurrency: Some(3),
        ..Options::default()
    })
    .await;
    let store = store(&h).await;
    let pid = h.workers[0].pid() as i32;
    let worker = wait_for_worker(&store, "the worker", |w| w.beat.pid == pid, secs(5)).await;
    assert_eq!(worker.beat.concurrency, 3);
    assert_eq!(worker.beat.queue, h.queue);
    assert!(!worker.beat.host.is_empty());
    assert_eq!((worker.beat.handled, worker.stopped_at), (0, None));
    assert!(worker.running.is_empty());

    let mission = h
        .submit(json!([
            { "name": "nap", "http": { "method": "GET", "url": h.callee.url("/slow/3000") } },
            { "name": "done", "noop": {} }
        ]))
        .await;
    let id = id_of(&mission);
    let busy = wait_for_worker(
        &store,
        "the worker running the mission's slow step",
        |w| {
            w.beat.id == worker.beat.id
                && w.running.iter().any(|m| {
                    m.id.to_string() == id
                        && m.workflow == "plan"
                        && m.step.as_deref() == Some("nap")
                })
        },
        secs(10),
    )
    .await;
    assert_eq!(busy.running.len(), 1, "{busy:#?}");

    h.wait_terminal(&id, "succeeded", secs(20)).await;
    wait_for_worker(
        &store,
        "the handled wake-up reported, and no work left",
        |w| w.beat.id == worker.beat.id && w.beat.handled >= 1 && w.running.is_empty(),
        secs(5),
    )
    .await;

    h.workers[0].terminate();
    h.workers[0]
        .wait_timeout(secs(15))
        .await
        .expect("the worker exits on SIGTERM");
    let stopped = wait_for_worker(
        &store,
        "the stopped worker",
        |w| w.beat.id == worker.beat.id,
        secs(1),
    )
    .await;
    let stopped_at = stopped.stopped_at.expect("stopped_at set on SIGTERM");
    assert!(stopped_at >= worker.beat.started_at);
    assert!(stopped.beat.handled >= 1);
}

#[tokio::test]
async fn serve_with_a_worker_reports_that_worker() {
    let h = Harness::with(Options {
        workers: 0,
        serve_with_worker: true,
        ..Options::default()
    })
    .await;
    let store = store(&h).await;
    let pid = h.serve.as_ref().expect("serve runs").pid() as i32;
    let worker = wait_for_worker(
        &store,
        "the serve process's worker",
        |w| w.beat.pid == pid,
        secs(5),
    )
    .await;
    assert_eq!(worker.beat.concurrency, 16, "the default --concurrency");
    assert_eq!(store.workers(SEEN_WITHIN).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_queue_depth_counts_wake_ups_waiting_in_redis() {
    let mut h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let queue = RedisWake::connect(
        &QueueConfig {
            redis_url: h.redis_url.clone(),
            queue: h.queue.clone(),
        },
        MAX_DEPTH,
    )
    .await
    .expect("connect to the queue");
    assert_eq!(queue.depth().await.unwrap(), 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(id_of(
            &h.submit(json!([{ "name": "a", "noop": { "i": i } }])).await,
        ));
    }
    assert_eq!(
        queue.depth().await.unwrap(),
        3,
        "one wake-up per submission"
    );

    h.start_worker().await;
    for id in &ids {
        h.wait_terminal(id, "succeeded", secs(20)).await;
    }
    assert_eq!(queue.depth().await.unwrap(), 0, "the worker took them all");
}
