//! The engine against a real PostgreSQL: replay, fencing, limits and failure handling, driven
//! run by run (the test plays the worker, so each run's effect can be checked in between).

mod common;

use async_trait::async_trait;
use common::CountWakes;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{JournalStore, MissionChange, MissionStore, Transition};
use hypercode_engine::{
    Context, Engine, EngineConfig, MissionId, MissionStatus, Registry, RunOutcome, Step, StepError,
    StepKind, StepStatus, StoreError, WorkerId, Workflow, WorkflowResult,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Step `first` (counted), a short sleep, then step `second`; `renamed` makes a later replay ask
/// for a different first step, as a careless deploy would.
#[derive(Default)]
struct Probe {
    first_runs: AtomicUsize,
    renamed: AtomicBool,
    huge_output: AtomicBool,
}

struct Counting(Arc<Probe>);

#[async_trait]
impl Workflow for Counting {
    const NAME: &'static str = "counting";
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, _input: Value) -> WorkflowResult<Value> {
        let first = if self.0.renamed.load(Ordering::SeqCst) {
            "first-renamed"
        } else {
            "first"
        };
        let n: usize = ctx
            .step(Step::new(first), || async {
                Ok::<_, StepError>(self.0.first_runs.fetch_add(1, Ordering::SeqCst) + 1)
            })
            .await?;
        ctx.sleep("nap", Duration::from_millis(50)).await?;
        let big = self.0.huge_output.load(Ordering::SeqCst);
        let second: String = ctx
            .step(Step::new("second"), || async move {
                Ok::<_, StepError>(if big { "x".repeat(4096) } else { "done".into() })
            })
            .await?;
        Ok(json!({ "first": n, "second": second.len() }))
    }
}

struct Panics;

#[async_trait]
impl Workflow for Panics {
    const NAME: &'static str = "panics";
    type Input = Value;
    type Output = Value;
    async fn run(&self, _: &mut Context, _: Value) -> WorkflowResult<Value> {
        panic!("boom")
    }
}

/// Asks for an approval whose message is `text` repeated `times` (the input stays small).
struct Asks;

/// What `asks` is submitted with.
#[derive(Deserialize, JsonSchema)]
struct Question {
    text: String,
    times: usize,
}

#[async_trait]
impl Workflow for Asks {
    const NAME: &'static str = "asks";
    type Input = Question;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, input: Question) -> WorkflowResult<Value> {
        let message = input.text.repeat(input.times);
        let approval = hypercode_engine::Approval {
            message,
            timeout: None,
        };
        ctx.approval("ask", approval).await
    }
}

/// Its one step fails for good until the mission has been retried twice by hand.
struct Generations;

#[async_trait]
impl Workflow for Generations {
    const NAME: &'static str = "generations";
    type Input = Value;
    type Output = u32;
    async fn run(&self, ctx: &mut Context, _: Value) -> WorkflowResult<u32> {
        let generation = ctx.retry_generation();
        ctx.step(Step::new("check"), || async move {
            if generation < 2 {
                return Err(StepError::fatal(format!("generation {generation}")));
            }
            Ok(generation)
        })
        .await
    }
}

/// One step whose success ends the mission ([`Step::finishing`]), with an output of the size
/// the input's `size` asks for.
struct Finishes;

#[async_trait]
impl Workflow for Finishes {
    const NAME: &'static str = "finishes";
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, input: Value) -> WorkflowResult<Value> {
        let size = input["size"].as_u64().unwrap_or(1) as usize;
        let step = Step::new("call").finishing(|output| json!({ "call": output }));
        let output: String = ctx
            .step(step, || async move { Ok::<_, StepError>("x".repeat(size)) })
            .await?;
        Ok(json!({ "call": output }))
    }
}

fn engine(pool: PgPool, probe: Arc<Probe>) -> Engine {
    let registry = Registry::new()
        .register(Finishes)
        .register(Counting(probe))
        .register(Panics)
        .register(Asks)
        .register(Generations);
    let config = EngineConfig {
        lease_ttl: Duration::from_secs(5),
        max_payload_bytes: 1024,
        ..EngineConfig::default()
    };
    Engine::new(
        Arc::new(PgStore::new(pool)),
        registry,
        Arc::new(CountWakes::default()),
        config,
    )
}

/// A fresh mission of the `counting` workflow, stored directly (no engine, no wake-up).
async fn submitted(store: &PgStore) -> MissionId {
    let id = MissionId::new();
    let mission = hypercode_engine::store::NewMission {
        id,
        workflow: "counting".into(),
        input: json!({}),
        idempotency_key: None,
        concurrency_key: None,
        tick: None,
    };
    store.submit(mission).await.unwrap();
    id
}

/// A mission of [`submitted`], claimed by worker `w` for 30 s.
async fn claimed(store: &PgStore) -> (MissionId, WorkerId, hypercode_engine::store::Claim) {
    let id = submitted(store).await;
    let worker = WorkerId("w".into());
    let claim = store
        .claim(id, &worker, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimed");
    (id, worker, claim)
}

/// Submit a mission of `workflow` with an empty input.
async fn start(engine: &Engine, workflow: &str) -> MissionId {
    engine
        .submit(workflow, json!({}), None)
        .await
        .unwrap()
        .mission
        .id
}

/// The error a finished mission recorded.
async fn mission_error(engine: &Engine, id: MissionId) -> Value {
    engine
        .store()
        .mission(id)
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap()
}

async fn run_until_settled(engine: &Engine, id: MissionId) -> MissionStatus {
    for _ in 0..100 {
        engine.run_mission(id).await.expect("run");
        let mission = engine.store().mission(id).await.unwrap().unwrap();
        if mission.status.is_terminal()
            || mission.status == MissionStatus::Waiting && mission.wake_at.is_none()
        {
            return mission.status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("mission {id} did not settle");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn recorded_steps_are_not_run_again_on_resume(pool: PgPool) {
    let counting = Arc::new(Probe::default());
    let engine = engine(pool, counting.clone());
    let id = start(&engine, "counting").await;

    assert_eq!(
        engine.run_mission(id).await.unwrap(),
        RunOutcome::Parked,
        "parks on the sleep"
    );
    assert_eq!(
        run_until_settled(&engine, id).await,
        MissionStatus::Succeeded
    );

    assert_eq!(
        counting.first_runs.load(Ordering::SeqCst),
        1,
        "`first` ran once across two runs"
    );
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.output, Some(json!({ "first": 1, "second": 4 })));
    let journal = engine.store().journal(id).await.unwrap();
    let names: Vec<_> = journal
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        names,
        [
            ("first", StepStatus::Succeeded),
            ("nap", StepStatus::Succeeded),
            ("second", StepStatus::Succeeded)
        ]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_diverging_replay_fails_with_a_named_error(pool: PgPool) {
    let counting = Arc::new(Probe::default());
    let engine = engine(pool, counting.clone());
    let id = start(&engine, "counting").await;
    assert_eq!(engine.run_mission(id).await.unwrap(), RunOutcome::Parked);

    counting.renamed.store(true, Ordering::SeqCst);
    assert_eq!(run_until_settled(&engine, id).await, MissionStatus::Failed);
    let error = mission_error(&engine, id).await;
    assert_eq!(error["code"], "HC001");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`first`") && message.contains("`first-renamed`"),
        "{message}"
    );
    assert_eq!(
        counting.first_runs.load(Ordering::SeqCst),
        1,
        "the renamed step never ran"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_nondeterminism_stop_is_retried_against_the_fixed_code(pool: PgPool) {
    let counting = Arc::new(Probe::default());
    let engine = engine(pool, counting.clone());
    let id = start(&engine, "counting").await;
    assert_eq!(engine.run_mission(id).await.unwrap(), RunOutcome::Parked);
    // Only a failed mission can be retried.
    assert!(matches!(
        engine.retry(id, "ops").await,
        Err(StoreError::Conflict(_))
    ));
    counting.renamed.store(true, Ordering::SeqCst);
    assert_eq!(run_until_settled(&engine, id).await, MissionStatus::Failed);

    // The fix is deployed: the code matches the journal again.
    counting.renamed.store(false, Ordering::SeqCst);
    let retried = engine.retry(id, "ops").await.unwrap();
    assert_eq!(
        retried.from_step.as_deref(),
        Some("nap"),
        "the first unsettled entry"
    );
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.status, MissionStatus::Pending);
    assert_eq!(mission.error, None);
    assert_eq!(
        run_until_settled(&engine, id).await,
        MissionStatus::Succeeded
    );
    assert_eq!(
        counting.first_runs.load(Ordering::SeqCst),
        1,
        "the recorded step did not run again"
    );
    let history = engine.store().history(id, 0, 1000).await.unwrap();
    let retried: Vec<_> = history
        .iter()
        .filter(|e| e.kind == hypercode_engine::EventType::MissionRetried)
        .collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].data, json!({ "by": "ops", "from_step": "nap" }));
    assert!(matches!(
        engine.retry(id, "ops").await,
        Err(StoreError::Conflict(_))
    ));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_stale_lease_cannot_write(pool: PgPool) {
    let store = PgStore::new(pool);
    let id = submitted(&store).await;
    let (old, new) = (WorkerId("old".into()), WorkerId("new".into()));
    let first = store
        .claim(id, &old, Duration::from_millis(100))
        .await
        .unwrap()
        .expect("claimable");
    assert!(
        store
            .claim(id, &new, Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "a live lease is exclusive"
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = store
        .claim(id, &new, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert!(second.lease.token > first.lease.token);

    let write = |lease| {
        let store = store.clone();
        async move {
            store
                .apply(
                    &lease,
                    Transition {
                        mission: MissionChange::Keep,
                        steps: vec![],
                        events: vec![],
                    },
                )
                .await
        }
    };
    assert!(
        matches!(write(first.lease).await, Err(StoreError::LeaseLost(_))),
        "the old holder is fenced out"
    );
    assert!(matches!(
        store.renew(&first.lease, Duration::from_secs(5)).await,
        Err(StoreError::LeaseLost(_))
    ));
    write(second.lease).await.expect("the new holder writes");

    let history = store.history(id, 0, 100).await.unwrap();
    let resumed = history
        .iter()
        .find(|e| e.kind == hypercode_engine::EventType::MissionResumed)
        .expect("resume recorded");
    assert_eq!(resumed.data["lease_expired_from"], "old");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn oversized_outputs_and_panics_fail_the_mission_clearly(pool: PgPool) {
    let counting = Arc::new(Probe {
        huge_output: AtomicBool::new(true),
        ..Probe::default()
    });
    let engine = engine(pool, counting);
    let id = start(&engine, "counting").await;
    assert_eq!(run_until_settled(&engine, id).await, MissionStatus::Failed);
    let second = engine
        .store()
        .journal(id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "second")
        .unwrap();
    assert_eq!(second.status, StepStatus::Failed);
    assert!(second.error.unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the limit of 1024 bytes"));

    let big = engine
        .submit("counting", json!({ "pad": "y".repeat(2048) }), None)
        .await;
    assert!(matches!(
        big,
        Err(hypercode_engine::SubmitError::TooLarge { limit: 1024, .. })
    ));

    let id = start(&engine, "panics").await;
    assert_eq!(run_until_settled(&engine, id).await, MissionStatus::Failed);
    let error = mission_error(&engine, id).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("workflow panicked: boom"),
        "{error}"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_history_of_100_000_events_reads_in_pages(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let id = submitted(&store).await;
    sqlx::query("insert into events (mission_id, seq, type, data) select $1, s, 'step_succeeded', '{}' from generate_series(2, 100000) s")
        .bind(id.0)
        .execute(&pool)
        .await
        .unwrap();
    let (mut after, mut seen) = (0, 0);
    loop {
        let page = store.history(id, after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(
            page.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "pages are ordered without gaps"
        );
        assert_eq!(page[0].seq, after + 1);
        seen += page.len();
        after = last.seq;
    }
    assert_eq!(seen, 100_000);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn events_are_append_only(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let id = submitted(&store).await;
    let update = sqlx::query("update events set type = 'forged' where mission_id = $1")
        .bind(id.0)
        .execute(&pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("delete from events where mission_id = $1")
        .bind(id.0)
        .execute(&pool)
        .await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_writes_commit_together_and_stay_fenced_one_by_one(pool: PgPool) {
    use hypercode_engine::{EventType, NewEvent};
    let store = PgStore::new(pool);
    let worker = WorkerId("w".into());
    let mut leases = Vec::new();
    for _ in 0..40 {
        let id = submitted(&store).await;
        leases.push(
            store
                .claim(id, &worker, Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap()
                .lease,
        );
    }
    let mut stale = leases[7];
    stale.token = hypercode_engine::LeaseToken(stale.token.0 - 1);
    let transition = || Transition {
        mission: MissionChange::Keep,
        steps: vec![],
        events: vec![NewEvent::mission(
            EventType::MissionSuspended,
            json!({ "probe": true }),
        )],
    };
    let writes = leases.iter().chain(std::iter::once(&stale)).map(|lease| {
        let store = store.clone();
        let lease = *lease;
        async move { store.apply(&lease, transition()).await }
    });
    let results = futures::future::join_all(writes).await;
    assert!(
        results[..40].iter().all(|r| r.is_ok()),
        "every current lease writes"
    );
    assert!(
        matches!(results[40], Err(StoreError::LeaseLost(_))),
        "the stale one alone is refused"
    );
    for lease in &leases {
        let history = store.history(lease.mission, 0, 10).await.unwrap();
        let probes = history.iter().filter(|e| e.data["probe"] == true).count();
        assert_eq!(
            probes, 1,
            "mission {} got exactly its own event",
            lease.mission
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn current_steps_name_each_missions_latest_entry(pool: PgPool) {
    let engine = engine(pool.clone(), Arc::new(Probe::default()));
    let done = start(&engine, "counting").await;
    assert_eq!(
        run_until_settled(&engine, done).await,
        MissionStatus::Succeeded
    );
    let parked = start(&engine, "counting").await;
    // One run: `first` is recorded, then the mission parks on the `nap` timer.
    engine.run_mission(parked).await.expect("run");
    let fresh = start(&engine, "counting").await;
    let current = engine
        .store()
        .current_steps(&[done, parked, fresh])
        .await
        .unwrap();
    // What the parked mission waits for: its timer, with the time it is due.
    let nap = current.iter().find(|(id, _)| *id == parked).map(|(_, s)| s);
    assert!(
        nap.is_some_and(|s| s.kind == StepKind::Sleep
            && s.status == StepStatus::Waiting
            && s.wake_at.is_some()),
        "{nap:?}"
    );
    let mut steps: Vec<_> = current
        .into_iter()
        .map(|(id, step)| (id, step.name))
        .collect();
    steps.sort();
    let mut expected = vec![(done, "second".to_owned()), (parked, "nap".to_owned())];
    expected.sort();
    assert_eq!(steps, expected, "a mission without entries is left out");
    assert!(engine.store().current_steps(&[]).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_approval_message_over_4096_bytes_fails_the_mission(pool: PgPool) {
    let engine = engine(pool, Arc::default());
    let ask = |text: &str, times: u64| {
        engine.submit("asks", json!({ "text": text, "times": times }), None)
    };
    let fits = ask("x", 4096).await.unwrap().mission.id;
    assert_eq!(
        run_until_settled(&engine, fits).await,
        MissionStatus::Waiting
    );
    let over = ask("\u{e9}", 2049).await.unwrap().mission.id;
    assert_eq!(
        run_until_settled(&engine, over).await,
        MissionStatus::Failed
    );
    let error = mission_error(&engine, over).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("approval message of 4098 bytes exceeds the limit of 4096 bytes"),
        "{error}"
    );
    assert!(engine.store().journal(over).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_retry_generation_counts_manual_retries(pool: PgPool) {
    let engine = engine(pool, Arc::default());
    let id = start(&engine, "generations").await;
    for generation in 0..2 {
        assert_eq!(run_until_settled(&engine, id).await, MissionStatus::Failed);
        let error = mission_error(&engine, id).await;
        assert_eq!(
            error["cause"]["error"]["message"],
            format!("generation {generation}"),
            "{error}"
        );
        engine.retry(id, "ops").await.unwrap();
    }
    assert_eq!(
        run_until_settled(&engine, id).await,
        MissionStatus::Succeeded
    );
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.output, Some(json!(2)));
}

/// A cancellation that arrives while a run is under way, and a run that then parks (at an
/// approval, a signal or a sleep) instead of finishing: the park must not strand the request.
/// The mission becomes runnable with no wake-up sent, so the reconciler hands it on at once.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_cancel_requested_during_a_run_that_then_parks_is_not_lost(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let (id, _, claim) = claimed(&store).await;
    assert_eq!(
        store.request_cancel(id, "ops").await.unwrap(),
        MissionStatus::Running,
        "a running mission learns of the request later"
    );
    store
        .apply(
            &claim.lease,
            Transition {
                mission: MissionChange::Suspend { wake_at: None },
                steps: vec![],
                events: vec![],
            },
        )
        .await
        .unwrap();

    let mission = store.mission(id).await.unwrap().expect("exists");
    assert_eq!(mission.status, MissionStatus::Pending);
    assert!(mission.cancel_requested);
    assert_eq!(
        store.due(10, Duration::from_secs(3600)).await.unwrap(),
        [id],
        "the reconciler wakes it now"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_finishing_step_ends_the_mission_in_its_own_write(pool: PgPool) {
    let engine = engine(pool.clone(), Arc::default());
    let events_of = |id: MissionId| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "select type, xmin::text from events where mission_id = $1 order by seq",
            )
            .bind(id.0)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };

    let id = engine
        .submit("finishes", json!({}), None)
        .await
        .unwrap()
        .mission
        .id;
    assert_eq!(engine.run_mission(id).await.unwrap(), RunOutcome::Finished);
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.status, MissionStatus::Succeeded);
    assert_eq!(mission.output, Some(json!({ "call": "x" })));
    let events = events_of(id).await;
    let types: Vec<_> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        types,
        [
            "mission_submitted",
            "mission_started",
            "step_started",
            "step_succeeded",
            "mission_succeeded"
        ]
    );
    assert_eq!(
        events[3].1, events[4].1,
        "the step's success and the mission's end are one transaction"
    );
    assert_ne!(
        events[2].1, events[3].1,
        "the step's start was written before it ran"
    );

    // An output over the payload limit (1,024 bytes here) is not folded in: the step's success
    // is written alone and the mission fails on the workflow's return, as without `finishing`.
    let id = engine
        .submit("finishes", json!({ "size": 1020 }), None)
        .await
        .unwrap()
        .mission
        .id;
    // The step's output (1,022 bytes as JSON) fits, the mission's (1,031) does not.
    assert_eq!(engine.run_mission(id).await.unwrap(), RunOutcome::Finished);
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.status, MissionStatus::Failed);
    let journal = engine.store().journal(id).await.unwrap();
    assert_eq!(journal[0].status, StepStatus::Succeeded);
    let types: Vec<_> = events_of(id)
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(types.last().map(String::as_str), Some("mission_failed"));
}

/// The claim returns the journal in one array per column; a journal with every column both set
/// and null, entries of several kinds and statuses, and times with microseconds, must come back
/// from it exactly as written and as the row-by-row read returns it, in position order.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_returns_the_journal_exactly_as_written(pool: PgPool) {
    use chrono::{DateTime, Utc};
    use hypercode_engine::store::StepRecord;
    let store = PgStore::new(pool.clone());
    let (id, worker, first) = claimed(&store).await;
    assert!(first.journal.is_empty(), "a new mission has no journal");
    let at = |micros: i64| DateTime::<Utc>::from_timestamp_micros(1_765_000_000_123_456 + micros);
    let entry = |position: i32, name: &str, kind: StepKind, status: StepStatus| StepRecord {
        position,
        name: name.to_owned(),
        kind,
        status,
        attempts: position + 1,
        input: None,
        output: None,
        error: None,
        wake_at: None,
        started_at: None,
        finished_at: None,
    };
    let written = vec![
        StepRecord {
            input: Some(json!({ "url": "https://example.test/é", "n": [1, 2.5, null] })),
            output: Some(json!("done")),
            started_at: at(0),
            finished_at: at(7),
            ..entry(0, "fetch", StepKind::Task, StepStatus::Succeeded)
        },
        StepRecord {
            error: Some(json!({ "message": "503", "retry": true })),
            wake_at: at(-5),
            started_at: at(1),
            ..entry(1, "charge", StepKind::Task, StepStatus::Failed)
        },
        StepRecord {
            input: Some(json!({ "ms": 10 })),
            output: Some(json!([])),
            wake_at: at(99),
            ..entry(2, "nap", StepKind::Sleep, StepStatus::Succeeded)
        },
        entry(3, "undo-fetch", StepKind::Compensation, StepStatus::Pending),
    ];
    // Written out of order: the claim must still hand them back by position.
    let mut shuffled = written.clone();
    shuffled.reverse();
    store
        .apply(
            &first.lease,
            Transition {
                mission: MissionChange::Suspend { wake_at: at(0) },
                steps: shuffled,
                events: vec![],
            },
        )
        .await
        .unwrap();

    let second = store
        .claim(id, &worker, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimed again: its wake-up time has passed");
    assert_eq!(second.journal, written);
    assert_eq!(store.journal(id).await.unwrap(), written);
}
