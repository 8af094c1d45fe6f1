//! Resume time of a mission with a long history. Seeds (by SQL) a `plan` mission whose input asks
//! for `--steps` + 1 no-op steps, of which the first `--steps` are already recorded as succeeded
//! in the journal (with their two history events each), then times `Engine::run_mission`: the
//! claim, the journal load, the replay of every recorded step, the one new step and the finish.
//! Also times the journal load alone. Then pages through a history of `--events` events (seeded by
//! SQL on a mission of its own) with `MissionStore::history`, `--page-limit` events a page: the
//! first page, one in the middle and the last one, `--page-reps` times each, and one walk over
//! every page. Prints `{"steps", "runs": [...], "resume_ms": {...}, ..., "history_pages": {...}}`.

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
    /// Events in the history that is paged (0: no paging run).
    #[arg(long, default_value_t = 100_000)]
    events: i64,
    /// Events per page (the history route's default).
    #[arg(long, default_value_t = 1000)]
    page_limit: i64,
    /// Reads of each timed page.
    #[arg(long, default_value_t = 20)]
    page_reps: usize,
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

/// A finished mission with `events` history events: a submission, then started/succeeded pairs.
async fn seed_history(pool: &sqlx::PgPool, events: i64) -> Result<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into missions (id, workflow, status, input, last_seq) \
         values ($1, 'plan', 'succeeded', '{\"steps\": []}', $2)",
    )
    .bind(id)
    .bind(events)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into events (mission_id, seq, type, step, attempt) \
         select $1, seq, case when seq = 1 then 'mission_submitted' \
                              when seq % 2 = 0 then 'step_started' else 'step_succeeded' end, \
                case when seq > 1 then 's' || (seq / 2) end, case when seq > 1 then 1 end \
         from generate_series(1, $2) seq",
    )
    .bind(id)
    .bind(events)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("analyze events").execute(pool).await?;
    Ok(id)
}

/// Milliseconds to read the page after `after`, `reps` times (after one untimed read).
async fn time_page(
    store: &PgStore,
    id: MissionId,
    after: i64,
    limit: i64,
    reps: usize,
) -> Result<Vec<f64>> {
    let expected = store.history(id, after, limit).await?.len();
    ensure!(expected > 0, "no events after {after}");
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let page = store.history(id, after, limit).await?;
        samples.push(ms(t.elapsed()));
        ensure!(page.len() == expected, "page after {after} changed");
    }
    Ok(samples)
}

/// First, middle and last page of a seeded history of `events` events, and a walk over all.
async fn page_history(store: &PgStore, args: &Args) -> Result<serde_json::Value> {
    let id = MissionId(seed_history(store.pool(), args.events).await?);
    let limit = args.page_limit;
    let last = (args.events - 1) / limit * limit;
    let middle = args.events / 2 / limit * limit;
    let first = time_page(store, id, 0, limit, args.page_reps).await?;
    let mid = time_page(store, id, middle, limit, args.page_reps).await?;
    let deep = time_page(store, id, last, limit, args.page_reps).await?;
    let (mut walk, mut after, mut seen) = (vec![], 0, 0);
    loop {
        let t = Instant::now();
        let page = store.history(id, after, limit).await?;
        let took = ms(t.elapsed());
        let Some(end) = page.last() else { break };
        walk.push(took);
        after = end.seq;
        seen += page.len() as i64;
    }
    ensure!(
        seen == args.events,
        "walked {seen} of {} events",
        args.events
    );
    Ok(json!({ "events": args.events, "limit": limit,
               "first_ms": summary(first), "middle_after": middle, "middle_ms": summary(mid),
               "last_after": last, "last_ms": summary(deep),
               "walk_pages": walk.len(), "walk_first_ms": walk.first(),
               "walk_last_ms": walk.last(), "walk_ms": summary(walk) }))
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
    let pages = if args.events > 0 {
        page_history(&store, &args).await?
    } else {
        serde_json::Value::Null
    };
    println!(
        "{}",
        json!({ "steps": args.steps, "runs": runs, "resume_ms": summary(resume),
                "journal_load_ms": summary(load), "seed_ms": summary(seed_ms),
                "history_pages": pages })
    );
    Ok(())
}
