//! The worker registry against a real PostgreSQL: heartbeats and their filtering by age, the
//! missions a worker holds the lease of, throughput buckets and the live backlog.

use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{
    Backlog, JournalStore, Lease, MissionChange, MissionStore, NewMission, Outcome, StepRecord,
    ThroughputBucket, Transition, WorkerBeat, WorkerRecord, WorkerRegistry,
};
use hypercode_engine::{MissionId, StepKind, StepStatus, StoreError, WorkerId};
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn beat(id: &str, concurrency: i32, handled: i64) -> WorkerBeat {
    WorkerBeat {
        id: id.to_owned(),
        queue: "q".to_owned(),
        host: "box-1".to_owned(),
        pid: 4242,
        concurrency,
        // Whole microseconds, as Postgres stores them, so a round trip compares equal.
        started_at: Utc::now()
            .duration_trunc(Span::microseconds(1))
            .expect("truncate"),
        handled,
    }
}

/// Pretend `worker` was last heard of `ago`.
async fn last_heard(pool: &PgPool, worker: &str, ago: Duration) {
    sqlx::query(
        "update workers set heartbeat_at = now() - make_interval(secs => $2) where id = $1",
    )
    .bind(worker)
    .bind(ago.as_secs_f64())
    .execute(pool)
    .await
    .expect("backdate a heartbeat");
}

async fn submitted(store: &PgStore, workflow: &str) -> MissionId {
    let id = MissionId::new();
    store
        .submit(NewMission {
            id,
            workflow: workflow.to_owned(),
            input: json!({}),
            idempotency_key: None,
            concurrency_key: None,
            tick: None,
        })
        .await
        .expect("submit");
    id
}

async fn claimed(store: &PgStore, workflow: &str, worker: &str) -> (MissionId, Lease) {
    let id = submitted(store, workflow).await;
    let claim = store
        .claim(id, &WorkerId(worker.to_owned()), LEASE)
        .await
        .expect("claim")
        .expect("a fresh mission is claimable");
    (id, claim.lease)
}

async fn apply(store: &PgStore, lease: &Lease, mission: MissionChange, steps: Vec<StepRecord>) {
    store
        .apply(
            lease,
            Transition {
                mission,
                steps,
                events: vec![],
            },
        )
        .await
        .expect("apply under the lease");
}

fn task(position: i32, name: &str, status: StepStatus) -> StepRecord {
    StepRecord {
        position,
        name: name.to_owned(),
        kind: StepKind::Task,
        status,
        attempts: 1,
        input: None,
        output: None,
        error: None,
        wake_at: None,
        started_at: Some(Utc::now()),
        finished_at: None,
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_heartbeat_inserts_then_updates_its_worker(pool: PgPool) {
    let store = PgStore::new(pool);
    let first = beat("w-1", 4, 0);
    store.heartbeat(&first).await.unwrap();
    let second = beat("w-2", 16, 0);
    store.heartbeat(&second).await.unwrap();

    let listed = store.workers(Duration::from_secs(60)).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|w| w.beat.id.as_str()).collect();
    assert_eq!(ids, ["w-1", "w-2"], "oldest start first");
    let w1 = &listed[0];
    assert_eq!(w1.beat, first, "the record holds the beat as reported");
    assert_eq!(
        (w1.beat.queue.as_str(), w1.beat.host.as_str(), w1.beat.pid),
        ("q", "box-1", 4242)
    );
    assert_eq!(w1.stopped_at, None);
    assert!(w1.running.is_empty());

    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .heartbeat(&WorkerBeat {
            handled: 7,
            ..first.clone()
        })
        .await
        .unwrap();
    let listed = store.workers(Duration::from_secs(60)).await.unwrap();
    assert_eq!(listed.len(), 2, "the same worker again is an update");
    assert_eq!(listed[0].beat.handled, 7);
    assert!(listed[0].heartbeat_at > w1.heartbeat_at);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_stopped_worker_stays_listed_while_recently_seen(pool: PgPool) {
    let store = PgStore::new(pool);
    store.heartbeat(&beat("w-1", 4, 3)).await.unwrap();
    store.worker_stopped("w-1").await.unwrap();
    let listed = store.workers(Duration::from_secs(60)).await.unwrap();
    assert_eq!(listed.len(), 1);
    let stopped_at = listed[0].stopped_at.expect("stopped_at set");
    assert!(stopped_at >= listed[0].heartbeat_at);
    assert_eq!(listed[0].beat.handled, 3);

    assert!(matches!(
        store.worker_stopped("never-seen").await,
        Err(StoreError::NotFound(_))
    ));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn only_workers_seen_within_the_window_are_listed_and_old_ones_are_forgotten(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    for id in ["fresh", "quiet", "gone"] {
        store.heartbeat(&beat(id, 1, 0)).await.unwrap();
    }
    last_heard(&pool, "quiet", Duration::from_secs(90)).await;
    last_heard(&pool, "gone", Duration::from_secs(2 * 24 * 3600)).await;

    let ids =
        |workers: Vec<WorkerRecord>| workers.into_iter().map(|w| w.beat.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.workers(Duration::from_secs(60)).await.unwrap()),
        ["fresh"]
    );
    assert_eq!(
        ids(store.workers(Duration::from_secs(120)).await.unwrap()),
        ["fresh", "quiet"]
    );

    let day = Duration::from_secs(24 * 3600);
    assert_eq!(store.forget_workers(day).await.unwrap(), 1);
    assert_eq!(store.forget_workers(day).await.unwrap(), 0);
    assert_eq!(
        ids(store
            .workers(Duration::from_secs(3 * 24 * 3600))
            .await
            .unwrap()),
        ["fresh", "quiet"]
    );
}

/// `(mission, workflow, step)` of what worker `id` runs, as listed.
fn running_of<'a>(
    workers: &'a [WorkerRecord],
    id: &str,
) -> Vec<(MissionId, &'a str, Option<&'a str>)> {
    let worker = workers
        .iter()
        .find(|w| w.beat.id == id)
        .expect("worker listed");
    worker
        .running
        .iter()
        .map(|m| (m.id, m.workflow.as_str(), m.step.as_deref()))
        .collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_worker_lists_the_running_missions_it_holds_the_lease_of(pool: PgPool) {
    let store = PgStore::new(pool);
    store.heartbeat(&beat("w-1", 4, 0)).await.unwrap();
    store.heartbeat(&beat("w-2", 4, 0)).await.unwrap();

    let (busy, busy_lease) = claimed(&store, "deploy", "w-1").await;
    // One step done, the next one executing: the latest unsettled entry is the current step.
    apply(
        &store,
        &busy_lease,
        MissionChange::Keep,
        vec![
            task(0, "build", StepStatus::Succeeded),
            task(1, "ship", StepStatus::Running),
        ],
    )
    .await;
    let (fresh, _) = claimed(&store, "report", "w-1").await;
    // Held by a worker that does not beat: listed nowhere.
    claimed(&store, "deploy", "elsewhere").await;
    // Not claimed, and claimed then parked: no worker runs them.
    submitted(&store, "deploy").await;
    let (_, parked) = claimed(&store, "deploy", "w-2").await;
    apply(
        &store,
        &parked,
        MissionChange::Suspend { wake_at: None },
        vec![],
    )
    .await;

    let workers = store.workers(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        running_of(&workers, "w-1"),
        [(busy, "deploy", Some("ship")), (fresh, "report", None)],
        "least recently advanced first"
    );
    assert_eq!(running_of(&workers, "w-2"), []);
    let mission = store.mission(busy).await.unwrap().unwrap();
    assert_eq!(workers[0].running[0].since, mission.updated_at);

    apply(
        &store,
        &busy_lease,
        MissionChange::Finish(Outcome::Succeeded(json!({}))),
        vec![task(1, "ship", StepStatus::Succeeded)],
    )
    .await;
    let workers = store.workers(Duration::from_secs(60)).await.unwrap();
    let ids: Vec<MissionId> = workers[0].running.iter().map(|m| m.id).collect();
    assert_eq!(ids, [fresh], "a finished mission is no one's work");
}

async fn event_at(pool: &PgPool, mission: MissionId, seq: i64, at: DateTime<Utc>, kind: &str) {
    sqlx::query("insert into events (mission_id, seq, at, type) values ($1, $2, $3, $4)")
        .bind(mission.0)
        .bind(seq)
        .bind(at)
        .bind(kind)
        .execute(pool)
        .await
        .expect("insert an event");
}

fn assert_aligned(buckets: &[ThroughputBucket], count: usize, length: Span) {
    assert_eq!(buckets.len(), count, "{buckets:?}");
    for b in buckets {
        assert_eq!(
            b.start.timestamp_millis() % length.num_milliseconds(),
            0,
            "aligned to the bucket length: {b:?}"
        );
    }
    for pair in buckets.windows(2) {
        assert_eq!(
            pair[1].start - pair[0].start,
            length,
            "oldest first, none missing"
        );
    }
    let last = buckets.last().expect("a bucket");
    let now = Utc::now();
    assert!(last.start <= now && now - last.start < length + Span::seconds(1));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn throughput_has_every_bucket_of_the_window_with_zeros(pool: PgPool) {
    let store = PgStore::new(pool);
    let ten = Duration::from_secs(10);
    let empty = store
        .throughput(Duration::from_secs(60), ten)
        .await
        .unwrap();
    assert_aligned(&empty, 6, Span::seconds(10));
    assert!(empty.iter().all(|b| b.steps == 0 && b.missions == 0));
    // A window that is not a whole number of buckets is rounded up to one.
    let odd = store
        .throughput(Duration::from_secs(25), ten)
        .await
        .unwrap();
    assert_aligned(&odd, 3, Span::seconds(10));
    let minute = store
        .throughput(Duration::from_secs(300), Duration::from_secs(60))
        .await
        .unwrap();
    assert_aligned(&minute, 5, Span::seconds(60));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn throughput_counts_succeeded_steps_and_finished_missions_per_bucket(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let (window, bucket) = (Duration::from_secs(60), Duration::from_secs(10));
    let before = store.throughput(window, bucket).await.unwrap();
    let mission = submitted(&store, "deploy").await;
    let second = Span::seconds(1);
    let counted = [
        // In the window's second bucket: two steps and one mission.
        (before[1].start + second, "step_succeeded"),
        (before[1].start + second * 2, "step_succeeded"),
        (before[1].start + second * 3, "mission_succeeded"),
        // In its fourth, at the very end: two missions.
        (
            before[3].start + Span::milliseconds(9_999),
            "mission_failed",
        ),
        (before[3].start, "mission_cancelled"),
    ];
    let ignored = [
        // Not finished work.
        (before[3].start + second, "step_started"),
        (before[3].start + second, "step_failed"),
        (before[3].start + second, "mission_started"),
        // Before the window.
        (before[0].start - second, "step_succeeded"),
        (before[0].start - second, "mission_succeeded"),
    ];
    // seq 1 is the submission's own event (now, and not finished work either).
    for (seq, (at, kind)) in (2..).zip(counted.iter().chain(&ignored)) {
        event_at(&pool, mission, seq, *at, kind).await;
    }

    let buckets = store.throughput(window, bucket).await.unwrap();
    assert_aligned(&buckets, 6, Span::seconds(10));
    // The window may have moved on by a bucket since `before`: compare by start.
    let expected: HashMap<DateTime<Utc>, (i64, i64)> =
        HashMap::from([(before[1].start, (2, 1)), (before[3].start, (0, 2))]);
    for b in &buckets {
        let (steps, missions) = expected.get(&b.start).copied().unwrap_or((0, 0));
        assert_eq!(
            (b.steps, b.missions),
            (steps, missions),
            "{b:?} in {buckets:?}"
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_backlog_counts_live_missions_by_status(pool: PgPool) {
    let store = PgStore::new(pool);
    let zero = Backlog {
        pending: 0,
        running: 0,
        waiting: 0,
        due: 0,
        approvals: 0,
    };
    assert_eq!(store.backlog().await.unwrap(), zero);

    submitted(&store, "deploy").await;
    submitted(&store, "deploy").await;
    claimed(&store, "deploy", "w-1").await;
    let park = |wake_at| MissionChange::Suspend { wake_at };
    let (_, timer_due) = claimed(&store, "deploy", "w-1").await;
    apply(
        &store,
        &timer_due,
        park(Some(Utc::now() - Span::seconds(1))),
        vec![],
    )
    .await;
    let (_, timer_later) = claimed(&store, "deploy", "w-1").await;
    apply(
        &store,
        &timer_later,
        park(Some(Utc::now() + Span::hours(1))),
        vec![],
    )
    .await;
    let (_, approval) = claimed(&store, "deploy", "w-1").await;
    apply(&store, &approval, park(None), vec![]).await;
    let (_, done) = claimed(&store, "deploy", "w-1").await;
    apply(
        &store,
        &done,
        MissionChange::Finish(Outcome::Succeeded(json!({}))),
        vec![],
    )
    .await;

    assert_eq!(
        store.backlog().await.unwrap(),
        Backlog {
            pending: 2,
            running: 1,
            waiting: 3,
            due: 1,
            approvals: 0,
        }
    );
}
