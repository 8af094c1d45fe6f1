//! Approves waiting approval steps over HTTP at a fixed rate: waits until `--n` missions have
//! step `--step` waiting (read from Postgres), then sends one `approve` decision every 1/rate s.
//! Prints `{"approved", "errors", "secs"}`; the latencies come from the events table.

use anyhow::Result;
use clap::Parser;
use hypercode_bench::Server;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: Server,
    /// Postgres URL (to find the waiting missions).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// How many approvals to send.
    #[arg(long)]
    n: i64,
    /// Decisions per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// The approval step's name.
    #[arg(long, default_value = "gate")]
    step: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pool = sqlx::PgPool::connect(&args.database_url).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids: Vec<uuid::Uuid> = loop {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "select s.mission_id from steps s join missions m on m.id = s.mission_id \
             where s.name = $1 and s.status = 'waiting' and m.status = 'waiting' \
             order by m.created_at limit $2",
        )
        .bind(&args.step)
        .bind(args.n)
        .fetch_all(&pool)
        .await?;
        if ids.len() as i64 >= args.n || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        tick.tick().await;
        let (client, url, key) = (
            client.clone(),
            args.server
                .endpoint(&format!("/api/v1/missions/{id}/approvals/{}", args.step)),
            args.server.key.clone(),
        );
        tasks.spawn(async move {
            client
                .post(url)
                .header("X-API-Key", key)
                .json(&serde_json::json!({ "decision": "approve" }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        });
    }
    let (mut approved, mut errors) = (0, 0);
    while let Some(ok) = tasks.join_next().await {
        if ok? {
            approved += 1;
        } else {
            errors += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({ "approved": approved, "errors": errors, "secs": start.elapsed().as_secs_f64() })
    );
    Ok(())
}
