//! Mission-list latency over HTTP: for each query string, `--reps` sequential requests on one
//! keep-alive connection (after one warm-up), plus a walk of `--pages` pages by cursor.
//! Prints `{"queries": {QUERY: {p50, p90, p99, max}}, "pages": {...}}` in milliseconds.

use anyhow::{bail, Result};
use clap::Parser;
use hypercode_bench::{ms, summary, Server};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: Server,
    /// Requests per query.
    #[arg(long, default_value_t = 50)]
    reps: usize,
    /// Pages to walk by cursor (newest first, 50 per page).
    #[arg(long, default_value_t = 20)]
    pages: usize,
    /// Query strings to time.
    #[arg(long, num_args = 1.., default_values_t = [
        "limit=50".to_owned(),
        "status=failed&limit=50".to_owned(),
        "workflow=plan&limit=50".to_owned(),
        "status=cancelled&workflow=other&limit=50".to_owned(),
    ])]
    query: Vec<String>,
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> Result<serde_json::Value> {
    let resp = client.get(url).header("X-API-Key", key).send().await?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    Ok(resp.json().await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let base = args.server.endpoint("/api/v1/missions");
    let mut queries = serde_json::Map::new();
    for q in &args.query {
        let url = format!("{base}?{q}");
        let first = get(&client, &url, &args.server.key).await?;
        let count = first["missions"].as_array().map_or(0, Vec::len);
        let mut samples = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let t = Instant::now();
            get(&client, &url, &args.server.key).await?;
            samples.push(ms(t.elapsed()));
        }
        let mut s = summary(samples);
        s["rows"] = count.into();
        queries.insert(q.clone(), s);
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..args.pages {
        let url = match &cursor {
            Some(c) => format!("{base}?limit=50&cursor={c}"),
            None => format!("{base}?limit=50"),
        };
        let t = Instant::now();
        let page = get(&client, &url, &args.server.key).await?;
        pages.push(ms(t.elapsed()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    println!(
        "{}",
        serde_json::json!({ "queries": queries, "pages": summary(pages) })
    );
    Ok(())
}
