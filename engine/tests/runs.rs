//! A run's lease against a real PostgreSQL: the lease heartbeat lives exactly as long as the
//! run. A worker pool torn down by a Redis error drops its in-flight runs mid-step; a heartbeat
//! that outlived them would renew their leases for as long as the process lives, and those
//! missions could neither be taken over nor cancelled.

use async_trait::async_trait;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::{
    Context, Engine, EngineConfig, MissionId, Registry, Step, StepError, Wake, WakeError, WorkerId,
    Workflow, WorkflowResult,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const TTL: Duration = Duration::from_millis(300);

/// The test runs missions itself: wake-ups go nowhere.
struct NoQueue;

#[async_trait]
impl Wake for NoQueue {
    async fn wake(&self, _: MissionId) -> Result<(), WakeError> {
        Ok(())
    }

    async fn depth(&self) -> Result<u64, WakeError> {
        Ok(0)
    }
}

/// One step that never returns; `entered` is notified when it starts.
struct Hangs(Arc<Notify>);

#[async_trait]
impl Workflow for Hangs {
    const NAME: &'static str = "hangs";
    type Input = Value;
    type Output = Value;
    async fn run(&self, ctx: &mut Context, _: Value) -> WorkflowResult<Value> {
        let entered = self.0.clone();
        ctx.step(Step::new("forever"), || async move {
            entered.notify_one();
            std::future::pending::<Result<(), StepError>>().await
        })
        .await?;
        Ok(json!({}))
    }
}

/// Whether another worker can take the mission over now.
async fn claimable(engine: &Engine, id: MissionId) -> bool {
    engine
        .store()
        .claim(id, &WorkerId("another".into()), TTL)
        .await
        .expect("claim")
        .is_some()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_run_dropped_mid_step_stops_renewing_its_lease(pool: PgPool) {
    let entered = Arc::new(Notify::new());
    let engine = Engine::new(
        Arc::new(PgStore::new(pool)),
        Registry::new().register(Hangs(entered.clone())),
        Arc::new(NoQueue),
        EngineConfig {
            lease_ttl: TTL,
            ..EngineConfig::default()
        },
    );
    let id = engine
        .submit("hangs", json!({}), None)
        .await
        .expect("submit")
        .mission
        .id;
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_mission(id).await }
    });
    entered.notified().await;

    // While the run lives, its heartbeat keeps the lease well past its lifetime.
    tokio::time::sleep(TTL * 3).await;
    assert!(
        !claimable(&engine, id).await,
        "a live run keeps its mission"
    );

    // Dropped mid-step (as apalis drops the jobs of a failed pool): nobody renews the lease
    // any more, so it lapses and the mission can be taken over.
    run.abort();
    assert!(run.await.expect_err("aborted").is_cancelled());
    tokio::time::sleep(TTL * 3).await;
    assert!(
        claimable(&engine, id).await,
        "the lease of a dropped run is still being renewed"
    );
}
