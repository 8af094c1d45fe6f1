//! Metrics end to end: the api's `/metrics` (no key) and a worker's on
//! `HYPERCODE_METRICS_LISTEN` count what a few missions did, in the Prometheus text format, and
//! a real Prometheus (the Debian package's `prometheus`) scraping both reads every family the
//! operators' dashboards use with the expected values.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

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

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Prometheus server scraping the given jobs every second, killed on drop.
struct Prometheus {
    base: String,
    dir: PathBuf,
    _child: Child,
}

impl Prometheus {
    /// Starts it with one job per `(name, host:port)` and waits until it is ready.
    async fn start(jobs: &[(&str, String)]) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hypercode-prometheus-{port}"));
        std::fs::create_dir_all(&dir).expect("create the Prometheus directory");
        let scrapes: String = jobs
            .iter()
            .map(|(job, target)| {
                format!(
                    "  - job_name: {job}\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
                )
            })
            .collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrapes}"
            ),
        )
        .expect("write the Prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("the Prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("run prometheus (Debian package `prometheus`)");
        let base = format!("http://127.0.0.1:{port}");
        let ready = format!("{base}/-/ready");
        let up = poll(secs(30), || async {
            match reqwest::get(&ready).await {
                Ok(r) if r.status().is_success() => Ok(()),
                _ => Err(()),
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "Prometheus did not become ready; see {}",
            dir.display()
        );
        Prometheus {
            base,
            dir,
            _child: child,
        }
    }

    /// The instant value of `expr` (a single-series expression), if it has one.
    async fn query(&self, expr: &str) -> Option<f64> {
        let reply: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
        reply["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Waits (a few scrapes at most) until `expr` satisfies `ok`; panics with its last value.
    async fn expect(&self, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let ok = &ok;
        let mut last = None;
        for _ in 0..40 {
            last = self.query(expr).await;
            if let Some(v) = last.filter(|v| ok(*v)) {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("Prometheus: `{expr}` is {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn api_and_worker_count_missions_steps_and_requests() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let port = free_port();
    let log = std::env::temp_dir().join(format!("hypercode-metrics-worker-{port}.log"));
    let stderr = std::fs::File::create(&log).expect("create the worker log");
    let _worker = h
        .command(&["worker"])
        .env("HYPERCODE_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn a worker");
    let api_target = h.base.trim_start_matches("http://").to_owned();
    let prometheus =
        Prometheus::start(&[("api", api_target), ("worker", format!("127.0.0.1:{port}"))]).await;

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
        metric_value(&api, "hypercode_missions_submitted_total", &[plan]),
        Some(3.0),
        "{api}"
    );
    assert!(
        metric_value(
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
        metric_value(&api, "hypercode_workers_alive", &[]),
        Some(1.0),
        "{api}"
    );
    assert_eq!(
        metric_value(&api, "hypercode_queue_depth", &[]),
        Some(0.0),
        "{api}"
    );
    assert_eq!(
        metric_value(&api, "hypercode_missions_live", &["status=\"running\""]),
        Some(0.0),
        "{api}"
    );

    let worker_url = format!("http://127.0.0.1:{port}/metrics");
    let worker = scrape(&worker_url).await;
    let succeeded = ["workflow=\"plan\"", "status=\"succeeded\""];
    assert_eq!(
        metric_value(&worker, "hypercode_missions_finished_total", &succeeded),
        Some(3.0),
        "{worker}"
    );
    let steps = [
        "workflow=\"plan\"",
        "kind=\"task\"",
        "outcome=\"succeeded\"",
    ];
    assert_eq!(
        metric_value(&worker, "hypercode_steps_total", &steps),
        Some(6.0),
        "{worker}"
    );
    assert_eq!(
        metric_value(
            &worker,
            "hypercode_step_duration_seconds_count",
            &["workflow=\"plan\"", "kind=\"task\""]
        ),
        Some(6.0),
        "{worker}"
    );
    assert!(
        metric_value(
            &worker,
            "hypercode_step_duration_seconds_bucket",
            &["le=\"+Inf\""]
        )
        .is_some(),
        "a histogram, not a summary: {worker}"
    );
    assert_eq!(
        metric_value(&worker, "hypercode_step_retries_total", &[plan]),
        Some(1.0),
        "{worker}"
    );
    assert!(
        metric_value(&worker, "hypercode_journal_batch_size_count", &[]) >= Some(1.0),
        "{worker}"
    );
    assert!(
        metric_value(
            &worker,
            "hypercode_journal_batch_duration_seconds_count",
            &[]
        ) >= Some(1.0)
    );

    // Two more: one whose failure compensates a step, one parked on an approval.
    let compensated = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            { "name": "c", "http": { "method": "POST", "url": h.callee.url("/fail") } }
        ]))
        .await;
    h.wait_terminal(&id_of(&compensated), "failed", secs(30))
        .await;
    let gated = h
        .submit(json!([{ "name": "gate", "approval": { "message": "hold" } }]))
        .await;
    h.wait_status(&id_of(&gated), "waiting", secs(30)).await;

    // What Prometheus scraped from both, family by family.
    for job in ["api", "worker"] {
        prometheus
            .expect(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0)
            .await;
    }
    let exactly = [
        ("sum(hypercode_missions_submitted_total{workflow=\"plan\"})", 5.0),
        ("sum(hypercode_missions_finished_total{workflow=\"plan\",status=\"succeeded\"})", 3.0),
        ("sum(hypercode_missions_finished_total{workflow=\"plan\",status=\"failed\"})", 1.0),
        ("sum(hypercode_steps_total{workflow=\"plan\",kind=\"task\",outcome=\"succeeded\"})", 7.0),
        ("sum(hypercode_steps_total{workflow=\"plan\",kind=\"task\",outcome=\"failed\"})", 1.0),
        ("sum(hypercode_step_duration_seconds_count{workflow=\"plan\",kind=\"task\"})", 8.0),
        ("sum(hypercode_step_retries_total{workflow=\"plan\",kind=\"task\"})", 1.0),
        ("sum(hypercode_compensations_total{workflow=\"plan\",outcome=\"succeeded\"})", 1.0),
        ("hypercode_approvals_waiting", 1.0),
        ("hypercode_missions_live{status=\"waiting\"}", 1.0),
        ("hypercode_queue_depth", 0.0),
        ("hypercode_workers_alive", 1.0),
        (
            "sum(hypercode_http_request_duration_seconds_count{route=\"/api/v1/missions\",method=\"POST\",status=\"201\"})",
            5.0,
        ),
    ];
    for (expr, expected) in exactly {
        prometheus.expect(expr, |v| v == expected).await;
    }
    let at_least_one = [
        "sum(hypercode_journal_batch_size_count)",
        "sum(hypercode_journal_batch_duration_seconds_count)",
        "sum(hypercode_step_duration_seconds_bucket{le=\"+Inf\"})",
    ];
    for expr in at_least_one {
        prometheus.expect(expr, |v| v >= 1.0).await;
    }
    // The histograms are histograms: a quantile over the steps' buckets is a duration.
    prometheus
        .expect(
            "histogram_quantile(0.99, sum by (le) (hypercode_step_duration_seconds_bucket))",
            |v| v > 0.0 && v <= 300.0,
        )
        .await;
    let _ = std::fs::remove_file(&log);
}
