//! Load generator: submits missions to a HyperCode server over HTTP (keep-alive, many requests
//! in flight), either as fast as `--concurrency` allows (closed loop) or at a fixed `--rate`
//! (open loop: a request starts every 1/rate seconds whether or not earlier ones finished).
//! Prints `{"n", "ok", "errors", "secs", "client_ms": {p50, p90, p99, max}}`.

use anyhow::{Context as _, Result};
use clap::Parser;
use hypercode_bench::{ms, summary, Server};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The 3-step no-op mission.
const THREE_NOOPS: &str = r#"{"workflow":"plan","input":{"steps":[{"name":"a","noop":{}},{"name":"b","noop":{}},{"name":"c","noop":{}}]}}"#;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: Server,
    /// Missions to submit.
    #[arg(long)]
    n: usize,
    /// Most requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Submissions per second (open loop); unset = closed loop at `--concurrency`.
    #[arg(long)]
    rate: Option<f64>,
    /// Request body (JSON); default: the 3-step no-op plan.
    #[arg(long)]
    body: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let body: serde_json::Value =
        serde_json::from_str(args.body.as_deref().unwrap_or(THREE_NOOPS)).context("--body")?;
    let body = Arc::new(serde_json::to_vec(&body)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .tcp_nodelay(true)
        .build()?;
    let endpoint = Arc::new(args.server.endpoint("/api/v1/missions"));
    let key = Arc::new(args.server.key);
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tick = args.rate.map(|rate| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.n {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let permit = limit.clone().acquire_owned().await?;
        let (client, endpoint, key, body) =
            (client.clone(), endpoint.clone(), key.clone(), body.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let result = client
                .post(endpoint.as_str())
                .header("X-API-Key", key.as_str())
                .header("Content-Type", "application/json")
                .body(body.as_ref().clone())
                .send()
                .await;
            let ok = match result {
                Ok(resp) => {
                    let status = resp.status();
                    let _ = resp.bytes().await;
                    status.is_success()
                }
                Err(_) => false,
            };
            drop(permit);
            (ok, ms(began.elapsed()))
        });
    }
    let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::with_capacity(args.n));
    while let Some(done) = tasks.join_next().await {
        let (success, latency) = done?;
        if success {
            ok += 1;
            latencies.push(latency);
        } else {
            errors += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "n": args.n, "ok": ok, "errors": errors, "secs": secs,
                            "client_ms": summary(latencies) })
    );
    Ok(())
}
