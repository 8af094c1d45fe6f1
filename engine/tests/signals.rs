//! Signals against a real PostgreSQL, run by run (the test plays the worker): a wait parks
//! the mission without holding a worker, a signal wakes it with its payload, an early signal is
//! kept for the wait, and a wait that times out fails the mission and runs its compensations.

mod common;

use async_trait::async_trait;
use common::CountWakes;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::SignalStore;
use hypercode_engine::{
    Context, Engine, EngineConfig, EventType, MissionId, MissionStatus, Registry, RetryPolicy,
    Step, StepError, StepStatus, StoreError, Workflow, WorkflowResult,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reserves something (undone by a counted compensation), then waits for `paid`.
struct AwaitsPayment {
    undone: Arc<AtomicUsize>,
}

/// The reservation step's output, as its compensation reads it.
#[derive(Deserialize)]
struct Seat {
    seat: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Patience {
    timeout_ms: u64,
}

#[async_trait]
impl Workflow for AwaitsPayment {
    const NAME: &'static str = "awaits";
    type Input = Patience;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, input: Patience) -> WorkflowResult<Value> {
        let undone = self.undone.clone();
        let reserve = Step::new("reserve").compensate(RetryPolicy::NONE, move |seat: Seat| {
            let undone = undone.clone();
            async move {
                assert_eq!(
                    seat.seat, 7,
                    "the compensation gets the step's typed output"
                );
                undone.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>(json!({}))
            }
        });
        ctx.step(reserve, || async { Ok::<_, StepError>(json!({"seat": 7})) })
            .await?;
        ctx.signal("paid", Duration::from_millis(input.timeout_ms))
            .await
    }
}

struct Setup {
    engine: Engine,
    undone: Arc<AtomicUsize>,
}

fn setup(pool: PgPool) -> Setup {
    let undone = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new().register(AwaitsPayment {
        undone: undone.clone(),
    });
    let engine = Engine::new(
        Arc::new(PgStore::new(pool)),
        registry,
        Arc::new(CountWakes::default()),
        EngineConfig::default(),
    );
    Setup { engine, undone }
}

async fn submit(engine: &Engine, timeout_ms: u64) -> MissionId {
    engine
        .submit("awaits", json!({ "timeout_ms": timeout_ms }), None)
        .await
        .expect("submit")
        .mission
        .id
}

async fn run(engine: &Engine, id: MissionId) -> MissionStatus {
    engine.run_mission(id).await.expect("run");
    status(engine, id).await
}

async fn status(engine: &Engine, id: MissionId) -> MissionStatus {
    engine
        .store()
        .mission(id)
        .await
        .expect("read")
        .expect("exists")
        .status
}

async fn history(engine: &Engine, id: MissionId) -> Vec<(EventType, Value)> {
    engine
        .store()
        .history(id, 0, 1000)
        .await
        .expect("history")
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_signal_wakes_the_waiting_mission_with_its_payload(pool: PgPool) {
    let Setup { engine, .. } = setup(pool);
    let id = submit(&engine, 600_000).await;
    assert_eq!(run(&engine, id).await, MissionStatus::Waiting);
    let waiting = history(&engine, id).await;
    assert!(waiting
        .iter()
        .any(|(kind, _)| *kind == EventType::SignalWaiting));

    engine
        .signal(id, "paid", json!({"amount": 12}))
        .await
        .expect("send");
    assert_eq!(
        status(&engine, id).await,
        MissionStatus::Pending,
        "the signal makes the waiting mission runnable"
    );
    assert_eq!(run(&engine, id).await, MissionStatus::Succeeded);
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.output, Some(json!({"amount": 12})));
    let received: Vec<_> = history(&engine, id)
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == EventType::SignalReceived)
        .collect();
    assert_eq!(
        received,
        [(
            EventType::SignalReceived,
            json!({"payload": {"amount": 12}})
        )]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_signal_sent_before_the_wait_is_kept_and_delivered(pool: PgPool) {
    let Setup { engine, .. } = setup(pool);
    let id = submit(&engine, 600_000).await;
    engine
        .signal(id, "paid", json!("early"))
        .await
        .expect("a signal may come before the wait");
    assert_eq!(run(&engine, id).await, MissionStatus::Succeeded);
    let kinds: Vec<_> = history(&engine, id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!kinds.contains(&EventType::SignalWaiting), "{kinds:?}");
    assert!(kinds.contains(&EventType::SignalReceived), "{kinds:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_second_signal_an_unknown_mission_and_a_finished_one_are_refused(pool: PgPool) {
    let Setup { engine, .. } = setup(pool);
    let id = submit(&engine, 600_000).await;
    engine.signal(id, "paid", json!(1)).await.expect("first");
    assert!(matches!(
        engine.signal(id, "paid", json!(2)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        engine.signal(MissionId::new(), "paid", json!(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(run(&engine, id).await, MissionStatus::Succeeded);
    let mission = engine.store().mission(id).await.unwrap().unwrap();
    assert_eq!(mission.output, Some(json!(1)), "the first signal counts");
    assert!(matches!(
        engine.signal(id, "other", json!(1)).await,
        Err(StoreError::Conflict(_))
    ));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_wait_that_times_out_fails_for_good_and_compensates(pool: PgPool) {
    let Setup { engine, undone } = setup(pool);
    let id = submit(&engine, 200).await;
    assert_eq!(run(&engine, id).await, MissionStatus::Waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run(&engine, id).await, MissionStatus::Failed);
    let journal = engine.store().journal(id).await.expect("journal");
    let paid = journal.iter().find(|s| s.name == "paid").expect("the wait");
    assert_eq!(paid.status, StepStatus::Failed);
    assert_eq!(
        paid.error.as_ref().and_then(|e| e["code"].as_str()),
        Some("signal_timeout")
    );
    assert_eq!(
        paid.error.as_ref().map(|e| &e["retryable"]),
        Some(&json!(false))
    );
    assert_eq!(
        undone.load(Ordering::SeqCst),
        1,
        "the reservation was undone"
    );
    assert!(matches!(
        engine.signal(id, "paid", json!(1)).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A signal committed after the wait checked for it but before the wait parked found no
/// waiting step; the wait looks again after parking, so the mission is not left waiting.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_signal_that_raced_the_wait_is_not_left_unseen(pool: PgPool) {
    let Setup { engine, .. } = setup(pool.clone());
    let id = submit(&engine, 600_000).await;
    assert_eq!(run(&engine, id).await, MissionStatus::Waiting);
    // The signal's row, as a send that saw no waiting step would have left it: kept, no wake.
    sqlx::query("insert into signals (mission_id, name, payload) values ($1, 'paid', '3')")
        .bind(id.0)
        .execute(&pool)
        .await
        .expect("insert the signal");
    assert_eq!(status(&engine, id).await, MissionStatus::Waiting);
    let store = PgStore::new(pool);
    assert!(store.wake_if_signalled(id, "paid").await.expect("wake"));
    assert!(
        !store.wake_if_signalled(id, "paid").await.expect("wake"),
        "once"
    );
    assert_eq!(run(&engine, id).await, MissionStatus::Succeeded);
}
