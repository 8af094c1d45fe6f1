//! Resume time of a mission with a long history. Seeds (by SQL) a `plan` mission whose input asks
//! for `--steps` + 1 no-op steps, of which the first `--steps` are already recorded as succeeded
//! in the journal (with their two history events each), then times `Engine::run_mission`: the
//! claim, the journal load, the replay of every recorded step, the one new step and the finish.
//! Also times the journal load alone. Prints `{"steps", "runs": [...], "resume_ms": {...}, ...}`.

use anyhow::{ensure, Result};
use async_trait::async_trait;
use clap::Parser;
use hypercode_bench::{ms, summary};
use hypercode_engine::postgres::PgStore;
use hypercode_engine::store::MissionStore;
use hypercode_engine::{Engine, EngineConfig, MissionId, RunOutcome, Wake, WakeError};
use hypercode_workflows::egress::{EgressClient, EgressPolicy};
use hypercode_workflows::Dependencies;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Postgres URL (migrations applied).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Recorded steps.
    #[arg(long, default_value_t = 10_000)]
    steps: i32,
    /// Repetitions (a fresh mission each).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Wake-ups go nowhere: the benchmark runs the mission itself.
struct NoWake;

#[async_trait]
impl Wake for NoWake {
    async fn wake(&self, _id: MissionId) -> Result<(), WakeError> {
        Ok(())
    }

    /// Wake-ups are dropped as they are sent, so none is ever waiting.
    async fn depth(&self) -> Result<u64, WakeError> {
        Ok(0)
    }
}

async fn seed(pool: &sqlx::PgPool, steps: i32) -> Result<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    let plan: Vec<_> = (0..=steps)
        .map(|i| json!({ "name": format!("s{i}"), "noop": {} }))
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into missions (id, workflow, status, input, last_seq, enqueued_at) \
         values ($1, 'plan', 'pending', $2, 1 + 2 * $3::bigint, now())",
    )
    .bind(id)
    .bind(json!({ "steps": plan }))
    .bind(steps)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into steps (mission_id, position, name, kind, status, attempts, output, started_at, finished_at) \
         select $1, i, 's' || i, 'task', 'succeeded', 1, '{}'::jsonb, now(), now() \
         from generate_series(0, $2 - 1) i",
    )
    .bind(id)
    .bind(steps)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into events (mission_id, seq, type, step, attempt) \
         select $1, 1, 'mission_submitted', null, null \
         union all \
         select $1, 2 + 2 * i + k, case k when 0 then 'step_started' else 'step_succeeded' end, 's' || i, 1 \
         from generate_series(0, $2 - 1) i, generate_series(0, 1) k",
    )
    .bind(id)
    .bind(steps)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&args.database_url)
        .await?;
    let store = Arc::new(PgStore::new(pool.clone()));
    let engine = Engine::new(
        store.clone(),
        hypercode_workflows::registry(&Dependencies {
            http: EgressClient::new(reqwest::Client::builder(), EgressPolicy::default())?,
            secrets: store.clone(),
            // Never used: the bench runs plans only.
            healer: hypercode_healer::Toolkit::new(pool.clone(), "redis://127.0.0.1/", "bench")?,
            agents: Arc::new(hypercode_agents::AgentRegistry::new(
                pool.clone(),
                "redis://127.0.0.1/",
                Default::default(),
            )?),
            agent_routing: Default::default(),
            payments: hypercode_payments::Payments::new(
                pool.clone(),
                hypercode_payments::Catalog::default(),
            ),
        }),
        Arc::new(NoWake),
        EngineConfig::default(),
    );
    let (mut resume, mut load, mut seed_ms, mut runs) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.reps {
        let t = Instant::now();
        let id = seed(&pool, args.steps).await?;
        seed_ms.push(ms(t.elapsed()));
        sqlx::query("analyze steps").execute(&pool).await?;
        let mission = MissionId(id);
        let t = Instant::now();
        let journal = store.journal(mission).await?;
        load.push(ms(t.elapsed()));
        ensure!(
            journal.len() == args.steps as usize,
            "seeded journal not found"
        );
        let t = Instant::now();
        let outcome = engine.run_mission(mission).await?;
        let took = ms(t.elapsed());
        ensure!(
            outcome == RunOutcome::Finished,
            "mission did not finish: {outcome:?}"
        );
        let status: String = sqlx::query_scalar("select status::text from missions where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?;
        ensure!(status == "succeeded", "mission ended {status}");
        resume.push(took);
        runs.push(json!({ "mission": id, "resume_ms": took }));
    }
    println!(
        "{}",
        json!({ "steps": args.steps, "runs": runs, "resume_ms": summary(resume),
                "journal_load_ms": summary(load), "seed_ms": summary(seed_ms) })
    );
    Ok(())
}
