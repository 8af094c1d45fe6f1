//! A run's claim commits with the run's first write when that write comes within the hold
//! (`EngineConfig::claim_hold`), and alone otherwise. Which writes shared a commit is read off
//! the events themselves: rows written by one transaction carry the same `xmin`.

mod common;

use async_trait::async_trait;
use common::CountWakes;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{MissionChange, Transition};
use hypercode_engine::{
    Context, Engine, EngineConfig, MissionId, MissionStatus, Registry, RunOutcome, Step, StepError,
    WorkerId, Workflow, WorkflowResult,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// A local step, then a step with an effect outside; with `pause_ms`, it first spends that
/// long outside any step (a slow replay, say) before its first write.
struct LocalThenCall;

#[async_trait]
impl Workflow for LocalThenCall {
    const NAME: &'static str = "local_then_call";
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, input: Value) -> WorkflowResult<Value> {
        if let Some(ms) = input["pause_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let a: u32 = ctx
            .step(Step::new("a").local(), || async { Ok::<_, StepError>(1) })
            .await?;
        let b: u32 = ctx
            .step(Step::new("b"), || async { Ok::<_, StepError>(2) })
            .await?;
        Ok(json!(a + b))
    }
}

fn engine(pool: PgPool, claim_hold: Duration) -> Engine {
    Engine::new(
        Arc::new(PgStore::new(pool)),
        Registry::new().register(LocalThenCall),
        Arc::new(CountWakes::default()),
        EngineConfig {
            claim_hold,
            ..EngineConfig::default()
        },
    )
}

/// An event as (type, step).
type Ev = (String, Option<String>);

/// Each event of the mission, grouped by the transaction that wrote it, in history order.
async fn commits(pool: &PgPool, id: MissionId) -> Vec<Vec<Ev>> {
    let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "select type, step, xmin::text from events where mission_id = $1 order by seq",
    )
    .bind(id.0)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut groups: Vec<(String, Vec<Ev>)> = Vec::new();
    for (kind, step, xmin) in rows {
        match groups.last_mut() {
            Some((last, group)) if *last == xmin => group.push((kind, step)),
            _ => groups.push((xmin, vec![(kind, step)])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

fn ev(kind: &str, step: Option<&str>) -> Ev {
    (kind.to_owned(), step.map(str::to_owned))
}

async fn run_once(engine: &Engine, input: Value) -> MissionId {
    let id = engine
        .submit("local_then_call", input, None)
        .await
        .expect("submit")
        .mission
        .id;
    assert_eq!(engine.run_mission(id).await.unwrap(), RunOutcome::Finished);
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.status, MissionStatus::Succeeded);
    assert_eq!(mission.output, Some(json!(3)));
    id
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_commits_with_the_runs_first_write(pool: PgPool) {
    let engine = engine(pool.clone(), Duration::from_secs(5));
    let id = run_once(&engine, json!({})).await;
    assert_eq!(
        commits(&pool, id).await,
        vec![
            vec![ev("mission_submitted", None)],
            // The claim, the local step held back, and the next step's start: one commit.
            vec![
                ev("mission_started", None),
                ev("step_started", Some("a")),
                ev("step_succeeded", Some("a")),
                ev("step_started", Some("b")),
            ],
            vec![ev("step_succeeded", Some("b"))],
            vec![ev("mission_succeeded", None)],
        ]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_commits_alone_when_the_hold_is_zero_or_runs_out(pool: PgPool) {
    let alone = vec![
        vec![ev("mission_submitted", None)],
        vec![ev("mission_started", None)],
        vec![
            ev("step_started", Some("a")),
            ev("step_succeeded", Some("a")),
            ev("step_started", Some("b")),
        ],
        vec![ev("step_succeeded", Some("b"))],
        vec![ev("mission_succeeded", None)],
    ];
    let off = engine(pool.clone(), Duration::ZERO);
    let id = run_once(&off, json!({})).await;
    assert_eq!(commits(&pool, id).await, alone);

    // The run's first write comes after the hold: the claim has committed by then, and the
    // write goes through the group commit as usual.
    let short = engine(pool.clone(), Duration::from_millis(5));
    let id = run_once(&short, json!({ "pause_ms": 300 })).await;
    assert_eq!(commits(&pool, id).await, alone);
}

/// A first write sent while the claim commits alone (the hold ran out) must wait for that
/// commit: written before it, it would find the mission row as it was before the claim and be
/// refused as a lost lease. A deferred trigger makes the claim's commit take 300 ms, and the
/// run sends its first write 50 ms in.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_first_write_sent_while_the_claim_commits_alone_waits_for_it(pool: PgPool) {
    sqlx::raw_sql(
        "create function slow_commit() returns trigger language plpgsql as $$
         begin perform pg_sleep(0.3); return null; end $$;
         create constraint trigger slow_claim_commit after update on missions
         deferrable initially deferred for each row
         when (old.status = 'pending' and new.status = 'running')
         execute function slow_commit();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let engine = engine(pool.clone(), Duration::from_millis(1));
    let id = run_once(&engine, json!({ "pause_ms": 50 })).await;
    assert_eq!(
        commits(&pool, id).await.len(),
        5,
        "the claim committed alone"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_held_claim_dropped_unused_commits_at_once(pool: PgPool) {
    let engine = engine(pool.clone(), Duration::from_secs(5));
    let id = engine
        .submit("local_then_call", json!({}), None)
        .await
        .unwrap()
        .mission
        .id;
    let worker = WorkerId("w".to_owned());
    let store = engine.store();
    let claim = store
        .claim_held(
            id,
            &worker,
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .expect("claimed");
    assert!(claim.open.is_some());
    // Uncommitted while held: another reader still sees the mission pending.
    let status = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("select status::text from missions where id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(status(pool.clone()).await, "pending");
    drop(claim);
    let mut seen = String::new();
    for _ in 0..200 {
        seen = status(pool.clone()).await;
        if seen == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen, "running",
        "the claim committed long before its hold ran out"
    );
    // The lease is this worker's: another worker cannot claim it.
    let other = WorkerId("other".to_owned());
    assert!(store
        .claim(id, &other, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
}

/// While the journal's writer is committing (here: stuck behind a row lock), a claim is
/// committed at once: the run's first write would share a commit with other runs' anyway.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_is_not_held_while_journal_writes_are_being_committed(pool: PgPool) {
    let engine = engine(pool.clone(), Duration::from_secs(5));
    let store = engine.store();
    let submit = || async {
        engine
            .submit("local_then_call", json!({}), None)
            .await
            .unwrap()
            .mission
            .id
    };
    let (first, second) = (submit().await, submit().await);
    let worker = WorkerId("w".to_owned());
    let claim = store
        .claim(first, &worker, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimed");
    assert!(claim.open.is_none(), "a plain claim is committed");

    let mut lock = pool.begin().await.unwrap();
    sqlx::query("select 1 from missions where id = $1 for update")
        .bind(first.0)
        .execute(&mut *lock)
        .await
        .unwrap();
    let writing = tokio::spawn({
        let store = store.clone();
        async move {
            let transition = Transition {
                mission: MissionChange::Keep,
                steps: Vec::new(),
                events: Vec::new(),
            };
            store.apply(&claim.lease, transition).await
        }
    });
    // The write is in flight once the writer's statement waits on the lock.
    let mut waiting = false;
    for _ in 0..200 {
        waiting = sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_stat_activity
                            where wait_event_type = 'Lock' and query like '%jsonb_to_recordset%')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "the journal write waits on the row lock");

    let claimed = store
        .claim_held(
            second,
            &worker,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .expect("claimed");
    assert!(claimed.open.is_none(), "committed at once, not held");
    lock.commit().await.unwrap();
    writing
        .await
        .unwrap()
        .expect("the write went through once the lock was gone");
}

/// One claim held at a time: with a run already waiting to write, the worker is not idle, and a
/// second claim commits at once.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_is_not_held_while_another_is(pool: PgPool) {
    let engine = engine(pool.clone(), Duration::from_secs(5));
    let store = engine.store();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let submitted = engine
            .submit("local_then_call", json!({}), None)
            .await
            .unwrap();
        ids.push(submitted.mission.id);
    }
    let worker = WorkerId("w".to_owned());
    let claim = |id| {
        store.claim_held(
            id,
            &worker,
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    };
    let first = claim(ids[0]).await.unwrap().expect("claimed");
    assert!(first.open.is_some(), "an idle worker holds its claim");
    let second = claim(ids[1]).await.unwrap().expect("claimed");
    assert!(second.open.is_none(), "committed at once, not held");
    drop(first);
}
