//! Metrics end to end: the api's `/metrics` (no key) and a worker's on
//! `HYPERCODE_METRICS_LISTEN` count what a few missions did, in the Prometheus text format.

mod common;

use common::*;
use serde_json::json;
use std::process::Stdio;

/// The value of the series `name` whose labels include every one of `labels` (`key="value"`),
/// summed over the series that match.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|label| rest.contains(label)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape /metrics");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("the metrics text")
}

#[tokio::test]
async fn api_and_worker_count_missions_steps_and_requests() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::env::temp_dir().join(format!("hypercode-metrics-worker-{port}.log"));
    let stderr = std::fs::File::create(&log).expect("create the worker log");
    let _worker = h
        .command(&["worker"])
        .env("HYPERCODE_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn a worker");

    let retry = json!({ "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10 });
    let mut ids = Vec::new();
    for url in [
        h.callee.url("/ok"),
        h.callee.url("/ok"),
        h.callee.url("/flaky/1"),
    ] {
        let mission = h
            .submit(json!([
                { "name": "call", "http": { "method": "POST", "url": url }, "retry": retry },
                { "name": "done", "noop": {} }
            ]))
            .await;
        ids.push(id_of(&mission));
    }
    for id in &ids {
        h.wait_terminal(id, "succeeded", secs(30)).await;
    }

    let api = scrape(&h.url("/metrics")).await;
    let plan = "workflow=\"plan\"";
    assert_eq!(
        value(&api, "hypercode_missions_submitted_total", &[plan]),
        Some(3.0),
        "{api}"
    );
    assert!(
        value(
            &api,
            "hypercode_http_request_duration_seconds_count",
            &[
                "route=\"/api/v1/missions\"",
                "status=\"201\"",
                "method=\"POST\""
            ]
        ) >= Some(3.0),
        "{api}"
    );
    assert_eq!(
        value(&api, "hypercode_workers_alive", &[]),
        Some(1.0),
        "{api}"
    );
    assert_eq!(
        value(&api, "hypercode_queue_depth", &[]),
        Some(0.0),
        "{api}"
    );
    assert_eq!(
        value(&api, "hypercode_missions_live", &["status=\"running\""]),
        Some(0.0),
        "{api}"
    );

    let worker_url = format!("http://127.0.0.1:{port}/metrics");
    let worker = scrape(&worker_url).await;
    let succeeded = ["workflow=\"plan\"", "status=\"succeeded\""];
    assert_eq!(
        value(&worker, "hypercode_missions_finished_total", &succeeded),
        Some(3.0),
        "{worker}"
    );
    let steps = [
        "workflow=\"plan\"",
        "kind=\"task\"",
        "outcome=\"succeeded\"",
    ];
    assert_eq!(
        value(&worker, "hypercode_steps_total", &steps),
        Some(6.0),
        "{worker}"
    );
    assert_eq!(
        value(
            &worker,
            "hypercode_step_duration_seconds_count",
            &["workflow=\"plan\"", "kind=\"task\""]
        ),
        Some(6.0),
        "{worker}"
    );
    assert!(
        value(
            &worker,
            "hypercode_step_duration_seconds_bucket",
            &["le=\"+Inf\""]
        )
        .is_some(),
        "a histogram, not a summary: {worker}"
    );
    assert_eq!(
        value(&worker, "hypercode_step_retries_total", &[plan]),
        Some(1.0),
        "{worker}"
    );
    assert!(
        value(&worker, "hypercode_journal_batch_size_count", &[]) >= Some(1.0),
        "{worker}"
    );
    assert!(
        value(
            &worker,
            "hypercode_journal_batch_duration_seconds_count",
            &[]
        ) >= Some(1.0)
    );
    let _ = std::fs::remove_file(&log);
}
