//! Metrics end to end: the api's `/metrics` (no key) and a worker's on
//! `HYPERCODE_METRICS_LISTEN` count what a few missions did, in the Prometheus text format, and
//! a real Prometheus (the Debian package's `prometheus`) scraping both reads every family the
//! operators' dashboards use with the expected values. `hypercode healthcheck`, the containers'
//! healthcheck, asks the api and a worker's metrics listener.

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
    let retry = json!({ "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10 });
    let plan_calling = |url: String| {
        json!([
            { "name": "call", "http": { "method": "POST", "url": url }, "retry": retry },
            { "name": "done", "noop": {} }
        ])
    };
    // Before any worker runs: the first mission's wake-up waits in Redis, the mission pending.
    let first = h.submit(plan_calling(h.callee.url("/ok"))).await;
    let mut ids = vec![id_of(&first)];
    let api = scrape(&h.url("/metrics")).await;
    for (name, labels, expected) in [
        ("hypercode_queue_depth", &[][..], 1.0),
        ("hypercode_workers_alive", &[][..], 0.0),
        ("hypercode_missions_live", &["status=\"pending\""][..], 1.0),
    ] {
        assert_eq!(
            metric_value(&api, name, labels),
            Some(expected),
            "{name}: {api}"
        );
    }

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

    // `hypercode healthcheck`, the containers' healthcheck: the api's /healthz and /readyz, a
    // worker's /healthz on its HYPERCODE_METRICS_LISTEN (compose's worker healthcheck), and
    // failure where nothing answers. HYPERCODE_LISTEN is read as the image sets it, a
    // wildcard address checked on loopback.
    let api_port = api_target
        .rsplit_once(':')
        .map_or("", |(_, p)| p)
        .to_owned();
    let healthcheck = |args: &[&str], listen: String| {
        let mut all = vec!["healthcheck"];
        all.extend_from_slice(args);
        let mut command = h.command(&all);
        command
            .env("HYPERCODE_LISTEN", listen)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        async move {
            let out = command.output().await.expect("run hypercode healthcheck");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    for args in [&[][..], &["--ready"]] {
        let (ok, stderr) = healthcheck(args, format!("0.0.0.0:{api_port}")).await;
        assert!(ok, "healthcheck {args:?} of the api: {stderr}");
    }
    let worker_listen = format!("127.0.0.1:{port}");
    let worker_healthy = poll(secs(20), || async {
        match healthcheck(&["--listen", &worker_listen], String::new()).await {
            (true, _) => Ok(()),
            (false, stderr) => Err(stderr),
        }
    })
    .await;
    assert!(
        worker_healthy.is_ok(),
        "healthcheck of the worker's metrics listener: {worker_healthy:?}"
    );
    let (ok, stderr) = healthcheck(&[], format!("127.0.0.1:{}", free_port())).await;
    assert!(!ok && stderr.contains("healthcheck:"), "{stderr}");

    let prometheus =
        Prometheus::start(&[("api", api_target), ("worker", format!("127.0.0.1:{port}"))]).await;

    for url in [h.callee.url("/ok"), h.callee.url("/flaky/1")] {
        let mission = h.submit(plan_calling(url)).await;
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

/// `serve` with `HYPERCODE_METRICS_LISTEN`: `/metrics` moves to that address (the api's
/// gauges and counters, without a key) and is gone from the API's port.
#[tokio::test]
async fn serve_moves_metrics_to_its_own_listener() {
    let port = free_port();
    let h = Harness::with(Options {
        workers: 0,
        env: vec![("HYPERCODE_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
        ..Options::default()
    })
    .await;
    let mission = h.submit(json!([{ "name": "done", "noop": {} }])).await;
    id_of(&mission);

    let on_api = reqwest::get(h.url("/metrics")).await.expect("GET /metrics");
    assert_eq!(on_api.status().as_u16(), 404);

    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = poll(secs(10), || async {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        metric_value(
            &text,
            "hypercode_missions_submitted_total",
            &["workflow=\"plan\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "hypercode_queue_depth", &[]),
        Some(1.0),
        "{text}"
    );
    // In the Prometheus text format's content type.
    assert!(scrape(&url)
        .await
        .contains("# TYPE hypercode_queue_depth gauge"));
}
