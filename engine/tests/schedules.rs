//! Schedules against a real PostgreSQL: concurrent firing passes start exactly one mission per
//! tick, `overlap` and `catchup` decide what a tick does, pausing stops the ticks, a manual
//! trigger fires outside the cron, and a schedule's input is checked like a submission's.

mod common;

use async_trait::async_trait;
use common::CountWakes;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::schedule::{Catchup, Overlap, ScheduleName};
use hypercode_engine::store::{NewSchedule, ScheduleChange};
use hypercode_engine::{
    Context, Engine, EngineConfig, MissionId, Registry, StoreError, SubmitError, Workflow,
    WorkflowResult,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Never run here: the tests play the ticker, not the worker, so its missions stay live.
struct Report;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportInput {
    #[allow(dead_code)]
    team: String,
}

#[async_trait]
impl Workflow for Report {
    const NAME: &'static str = "report";
    type Input = ReportInput;
    type Output = Value;
    async fn run(&self, _: &mut Context, _: ReportInput) -> WorkflowResult<Value> {
        Ok(json!({}))
    }
}

fn engine(pool: PgPool) -> Engine {
    Engine::new(
        Arc::new(PgStore::new(pool)),
        Registry::new().register(Report),
        Arc::new(CountWakes::default()),
        EngineConfig::default(),
    )
}

fn name(text: &str) -> ScheduleName {
    text.parse().expect("a valid schedule name")
}

fn every_second(schedule: &str, overlap: Overlap, catchup: Catchup) -> NewSchedule {
    NewSchedule {
        name: name(schedule),
        cron: "* * * * * *".parse().expect("valid cron"),
        timezone: Default::default(),
        workflow: "report".to_owned(),
        input: json!({ "team": "ops" }),
        overlap,
        catchup,
        enabled: true,
    }
}

/// Call the firing pass from `passes` concurrent tasks until `run_for` has passed.
async fn fire_concurrently(engine: &Engine, passes: usize, run_for: Duration) {
    let until = Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..passes {
        let engine = engine.clone();
        tasks.spawn(async move {
            while Instant::now() < until {
                engine.fire_schedules().await.expect("firing pass");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a firing task");
    }
}

/// The schedule's missions as (idempotency key, fire time), oldest tick first.
async fn fired(pool: &PgPool, schedule: &str) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as(
        "select idempotency_key, fire_at from missions where schedule = $1 order by fire_at",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .expect("read missions")
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_passes_start_exactly_one_mission_per_tick(pool: PgPool) {
    let engine = engine(pool.clone());
    engine
        .create_schedule(every_second("tick", Overlap::Allow, Catchup::Once))
        .await
        .expect("create");
    fire_concurrently(&engine, 4, Duration::from_millis(3_500)).await;

    let missions = fired(&pool, "tick").await;
    assert!(
        (3..=4).contains(&missions.len()),
        "one mission per second over 3.5 s, got {missions:?}"
    );
    for pair in missions.windows(2) {
        assert_eq!(
            pair[1].1 - pair[0].1,
            chrono::Duration::seconds(1),
            "consecutive ticks, none missing and none twice: {missions:?}"
        );
    }
    for (key, at) in &missions {
        assert_eq!(
            key,
            &format!(
                "schedule:tick:{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        );
    }
    let record = engine
        .store()
        .schedule(&name("tick"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.last_fire_at, missions.last().map(|m| m.1));
    assert!(record.next_fire_at > record.last_fire_at);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn overlap_skip_fires_nothing_while_a_mission_is_live_and_counts_it(pool: PgPool) {
    let engine = engine(pool.clone());
    engine
        .create_schedule(every_second("one-at-a-time", Overlap::Skip, Catchup::Once))
        .await
        .expect("create");
    fire_concurrently(&engine, 2, Duration::from_millis(3_200)).await;

    assert_eq!(
        fired(&pool, "one-at-a-time").await.len(),
        1,
        "one live mission"
    );
    let record = engine
        .store()
        .schedule(&name("one-at-a-time"))
        .await
        .expect("read")
        .expect("exists");
    assert!(
        record.skipped >= 2,
        "skipped ticks counted: {}",
        record.skipped
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn overlap_cancel_previous_cancels_the_live_mission_then_fires(pool: PgPool) {
    let engine = engine(pool.clone());
    engine
        .create_schedule(every_second(
            "latest",
            Overlap::CancelPrevious,
            Catchup::Once,
        ))
        .await
        .expect("create");
    fire_concurrently(&engine, 1, Duration::from_millis(2_300)).await;

    let missions: Vec<(MissionId, bool)> = sqlx::query_as(
        "select id, cancel_requested from missions where schedule = 'latest' order by fire_at",
    )
    .fetch_all(&pool)
    .await
    .expect("read");
    assert!(missions.len() >= 2, "{missions:?}");
    let (last, earlier) = missions.split_last().expect("missions");
    assert!(!last.1, "the newest mission runs");
    assert!(
        earlier.iter().all(|m| m.1),
        "every earlier one was asked to cancel"
    );
}

/// Pretend no server ran for the last `seconds`: the schedule still waits for a tick that long ago.
async fn simulate_outage(pool: &PgPool, schedule: &str, seconds: i32) {
    sqlx::query(
        "update schedules set next_fire_at = date_trunc('second', now()) - make_interval(secs => $2)
         where name = $1",
    )
    .bind(schedule)
    .bind(f64::from(seconds))
    .execute(pool)
    .await
    .expect("rewind the schedule");
}

/// One firing pass after an outage: (ticks fired that were missed, ticks fired on time). A
/// tick is missed when it fired more than a second late; the firing transaction's start (the
/// missions' `created_at`) is the moment the engine judged it by.
async fn catch_up(pool: PgPool, catchup: Catchup) -> (i64, i64) {
    let engine = engine(pool.clone());
    engine
        .create_schedule(every_second("after-outage", Overlap::Allow, catchup))
        .await
        .expect("create");
    simulate_outage(&pool, "after-outage", 10).await;
    engine.fire_schedules().await.expect("firing pass");
    sqlx::query_as(
        "select count(*) filter (where created_at - fire_at > interval '1 second'),
                count(*) filter (where created_at - fire_at <= interval '1 second')
         from missions where schedule = 'after-outage'",
    )
    .fetch_one(&pool)
    .await
    .expect("count missions")
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn catchup_once_fires_one_mission_for_the_missed_ticks(pool: PgPool) {
    let (missed, on_time) = catch_up(pool, Catchup::Once).await;
    assert_eq!(missed, 1);
    assert!(on_time <= 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn catchup_skip_fires_none_of_the_missed_ticks(pool: PgPool) {
    let (missed, on_time) = catch_up(pool, Catchup::Skip).await;
    assert_eq!(missed, 0);
    assert!(on_time <= 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn catchup_all_fires_every_missed_tick(pool: PgPool) {
    let (missed, _) = catch_up(pool, Catchup::All).await;
    assert!((8..=10).contains(&missed), "{missed} of 10 missed ticks");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_paused_schedule_does_not_fire_and_resumes_from_its_next_tick(pool: PgPool) {
    let engine = engine(pool.clone());
    engine
        .create_schedule(every_second("pausable", Overlap::Allow, Catchup::All))
        .await
        .expect("create");
    let paused = engine
        .update_schedule(
            &name("pausable"),
            ScheduleChange {
                enabled: Some(false),
                ..ScheduleChange::default()
            },
        )
        .await
        .expect("pause");
    assert!(!paused.spec.enabled);
    assert_eq!(paused.next_fire_at, None);
    fire_concurrently(&engine, 1, Duration::from_millis(1_500)).await;
    assert!(
        fired(&pool, "pausable").await.is_empty(),
        "no tick while paused"
    );

    let resumed = engine
        .update_schedule(
            &name("pausable"),
            ScheduleChange {
                enabled: Some(true),
                ..ScheduleChange::default()
            },
        )
        .await
        .expect("resume");
    assert!(resumed.next_fire_at > Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    engine.fire_schedules().await.expect("firing pass");
    assert!(
        fired(&pool, "pausable").await.len() <= 1,
        "the paused ticks are not caught up"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_trigger_fires_now_whatever_the_schedule_says(pool: PgPool) {
    let engine = engine(pool.clone());
    let mut paused = every_second("manual", Overlap::Skip, Catchup::Once);
    paused.enabled = false;
    engine.create_schedule(paused).await.expect("create");
    let first = engine
        .trigger_schedule(&name("manual"))
        .await
        .expect("trigger");
    let second = engine
        .trigger_schedule(&name("manual"))
        .await
        .expect("trigger");

    for mission in [&first, &second] {
        assert_eq!(mission.schedule.as_deref(), Some("manual"));
        let key = mission.idempotency_key.as_deref().unwrap_or_default();
        assert_eq!(key, format!("schedule:manual:manual:{}", mission.id));
    }
    let listed = engine
        .store()
        .schedule_missions(&name("manual"), 10)
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [second.id, first.id],
        "newest first, despite `enabled: false` and `overlap: skip`"
    );
    let history = engine
        .store()
        .history(first.id, 0, 10)
        .await
        .expect("history");
    assert_eq!(history[0].data["schedule"], "manual");
    assert!(matches!(
        engine.trigger_schedule(&name("nothing")).await,
        Err(StoreError::NotFound(_))
    ));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn schedules_are_checked_like_submissions(pool: PgPool) {
    let engine = engine(pool.clone());
    let mut bad_input = every_second("checked", Overlap::Skip, Catchup::Once);
    bad_input.input = json!({ "team": 7 });
    assert!(matches!(
        engine.create_schedule(bad_input).await,
        Err(SubmitError::Invalid(problems)) if problems[0].pointer == "/team"
    ));
    let mut unknown = every_second("checked", Overlap::Skip, Catchup::Once);
    unknown.workflow = "nope".to_owned();
    assert!(matches!(
        engine.create_schedule(unknown).await,
        Err(SubmitError::UnknownWorkflow(_))
    ));
    engine
        .create_schedule(every_second("checked", Overlap::Skip, Catchup::Once))
        .await
        .expect("create");
    assert!(matches!(
        engine
            .create_schedule(every_second("checked", Overlap::Skip, Catchup::Once))
            .await,
        Err(SubmitError::Store(StoreError::Conflict(_)))
    ));
    assert!(matches!(
        engine
            .update_schedule(
                &name("checked"),
                ScheduleChange {
                    input: Some(json!({})),
                    ..ScheduleChange::default()
                },
            )
            .await,
        Err(SubmitError::Invalid(_))
    ));
    engine
        .store()
        .delete_schedule(&name("checked"))
        .await
        .expect("delete");
    assert!(matches!(
        engine.store().delete_schedule(&name("checked")).await,
        Err(StoreError::NotFound(_))
    ));
}
