//! The process's metrics exporter: installs the Prometheus recorder the engine and the API
//! record into (with histogram buckets, so histograms are histograms, not summaries), and
//! serves `/metrics` on `HYPERCODE_METRICS_LISTEN` when that is set: the only way to scrape a
//! worker, which has no HTTP port otherwise (a worker answers `/healthz` there too).

use anyhow::{Context as _, Result};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Buckets of every `*_seconds` histogram: a few milliseconds to a minute.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of the journal batch sizes.
const SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// How often the exporter drops samples that aged out of its summaries.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the recorder; its handle renders what was recorded.
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS)?
        .set_buckets_for_metric(
            Matcher::Full(hypercode_engine::metrics::JOURNAL_BATCH_SIZE.to_owned()),
            &SIZES,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    hypercode_engine::metrics::describe();
    hypercode_api::metrics::describe();
    hypercode_healer::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `HYPERCODE_METRICS_LISTEN`, if set.
pub fn listen_address() -> Option<String> {
    std::env::var("HYPERCODE_METRICS_LISTEN")
        .ok()
        .filter(|a| !a.trim().is_empty())
}

/// Serves `router` (its `/metrics`) on `listen` until `shutdown`.
pub async fn serve(listen: &str, router: Router, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding HYPERCODE_METRICS_LISTEN={listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// `/metrics` of a process without the API: what it recorded, rendered; and `/healthz`, so a
/// worker container's healthcheck (`hypercode healthcheck --listen` this address) has something
/// to ask, as the api's has.
pub fn render_only(handle: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
}
