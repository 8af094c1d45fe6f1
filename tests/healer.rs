//! The healer end to end, on the real Docker engine: `hypercode serve` with
//! `HYPERCODE_HEALER=on` watching containers of the test image (see `docker_lab`), each test
//! with its own heal label, database and Redis queue.

mod common;
mod docker_lab;

use common::{metric_value, poll, Harness, Options};
use docker_lab::{Container, Lab};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// A process that runs until killed.
const SLEEPER: &[&str] = &["sleep", "1000000"];

/// A deployment whose `serve` (with its own worker pool) heals `lab`'s containers.
async fn healer(lab: &Lab, sweep_s: u64, extra: &[(&'static str, &str)]) -> Harness {
    let mut env = lab.healer_env(sweep_s);
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Harness::with(Options {
        workers: 0,
        serve_with_worker: true,
        env,
        ..Options::default()
    })
    .await
}

/// GET `path` (asserting 200) and return the array under `field`.
async fn list(h: &Harness, path: &str, field: &str) -> Vec<Value> {
    let reply = h.send(h.request(Method::GET, path)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body[field].as_array().cloned().unwrap_or_default()
}

/// `GET /api/v1/incidents?container=<name>`.
async fn incidents(h: &Harness, container: &Container) -> Vec<Value> {
    let path = format!("/api/v1/incidents?container={}", container.name);
    list(h, &path, "incidents").await
}

/// Wait until the container's newest incident satisfies `pred`; returns it.
async fn wait_incident(
    h: &Harness,
    container: &Container,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let pred = &pred;
    poll(timeout, || async move {
        let found = incidents(h, container).await;
        match found.first() {
            Some(incident) if pred(incident) => Ok(incident.clone()),
            _ => Err(found),
        }
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "no incident of {} is {what}; incidents: {last:#?}",
            container.name
        )
    })
}

/// The log entries about `container`, newest first.
async fn log_of(h: &Harness, container: &Container) -> Vec<Value> {
    let entries = list(h, "/api/v1/logs?limit=1000&source=healer", "entries").await;
    entries
        .into_iter()
        .filter(|e| e["container"] == container.name.as_str())
        .collect()
}

/// `hypercode_heal_actions_total{action, outcome}` on the server's `/metrics` (0 when absent).
async fn heal_actions(h: &Harness, action: &str, outcome: &str) -> f64 {
    let text = reqwest::get(h.url("/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("the metrics text");
    let labels = [
        format!("action=\"{action}\""),
        format!("outcome=\"{outcome}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    metric_value(&text, "hypercode_heal_actions_total", &labels).unwrap_or(0.0)
}

/// Every heal mission of the deployment.
async fn heal_missions(h: &Harness) -> Vec<Value> {
    list(h, "/api/v1/missions?workflow=heal&limit=500", "missions").await
}

#[tokio::test]
async fn a_container_killed_from_the_host_is_restarted_through_events_and_healed() {
    let lab = Lab::new();
    // A sweep far away: only the event stream can heal it in time.
    let h = healer(&lab, 3600, &[]).await;
    let web = lab.run("web", true, &[], SLEEPER);
    web.wait_status("running", Duration::from_secs(10)).await;
    // Give the healer a moment to have its event stream open.
    wait_for_log(&h, "the healer watches containers").await;
    let before = web.started_at();
    web.kill_from_host();
    let took = web.wait_restarted(&before, Duration::from_secs(5)).await;
    println!("restarted after {took:?}");
    let incident = wait_incident(&h, &web, "healed", Duration::from_secs(20), |i| {
        i["status"] == "healed"
    })
    .await;
    assert_eq!(incident["cause"], "exited");
    assert_eq!(incident["attempts"], 1);
    assert_eq!(incident["container_id"], web.id.as_str());
    assert_eq!(incident["container_name"], web.name.as_str());
    let missions = incident["missions"].as_array().cloned().unwrap_or_default();
    assert_eq!(missions.len(), 1, "{incident:#}");
    let id = missions[0].as_str().unwrap_or_default();
    let mission = h
        .wait_terminal(id, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(mission["workflow"], "heal");
    assert_eq!(mission["concurrency_key"], format!("container:{}", web.id));
    let steps: Vec<&str> = mission["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(steps, ["inspect", "restart", "wait", "record"]);
    let key = mission["idempotency_key"].as_str().unwrap_or_default();
    assert!(key.starts_with(&format!("heal:{}:", web.id)), "{key}");
    // Counted: one heal started and succeeded, through one Docker restart.
    for (action, outcome, count) in [
        ("heal", "started", 1.0),
        ("restart", "succeeded", 1.0),
        ("heal", "succeeded", 1.0),
        ("restart", "failed", 0.0),
    ] {
        assert_eq!(
            heal_actions(&h, action, outcome).await,
            count,
            "{action} {outcome}"
        );
    }
    // The single incident is readable by id, and the log tells the story, newest first.
    let shown = h
        .send(h.request(
            Method::GET,
            &format!(
                "/api/v1/incidents/{}",
                incident["id"].as_str().unwrap_or_default()
            ),
        ))
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["id"], incident["id"]);
    let log = log_of(&h, &web).await;
    let messages: Vec<&str> = log.iter().filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(messages.len(), 3, "{log:#?}");
    assert!(messages[0].contains("healed"), "{messages:?}");
    assert!(messages[1].contains("restarted"), "{messages:?}");
    assert!(messages[2].contains("failed (exited)"), "{messages:?}");
    for entry in &log {
        assert_eq!(entry["source"], "healer");
        assert_eq!(entry["incident"], incident["id"]);
        assert!(
            chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap_or_default()).is_ok()
        );
        assert!(["info", "warn", "error"].contains(&entry["level"].as_str().unwrap_or_default()));
    }
}

/// Wait until the first `serve`'s log says `text`.
async fn wait_for_log(h: &Harness, text: &str) {
    let log = h.serve.as_ref().map(|s| s.log.clone()).unwrap_or_default();
    common::wait_for(
        &format!("`{text}` in the serve log"),
        Duration::from_secs(20),
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(text)
            }
        },
        || common::tail(&log, 40),
    )
    .await;
}

#[tokio::test]
async fn a_failure_the_healer_missed_is_healed_by_the_sweep_through_a_tcp_socket() {
    let lab = Lab::new();
    let api = lab.run("api", true, &[], SLEEPER);
    let stopped = lab.run("stopped", true, &[], SLEEPER);
    api.wait_status("running", Duration::from_secs(10)).await;
    stopped
        .wait_status("running", Duration::from_secs(10))
        .await;
    let before = api.started_at();
    // One dies, one is stopped through the API, while no healer watches.
    api.kill_from_host();
    docker_lab::must(&["stop", "-t", "1", &stopped.id]);
    api.wait_status("exited", Duration::from_secs(10)).await;
    // Docker over TCP, as through a socket proxy.
    let proxy = unix_socket_proxy().await;
    let host = format!("tcp://{proxy}");
    let h = healer(&lab, 1, &[("DOCKER_HOST", host.as_str())]).await;
    api.wait_restarted(&before, Duration::from_secs(15)).await;
    let incident = wait_incident(&h, &api, "healed", Duration::from_secs(20), |i| {
        i["status"] == "healed"
    })
    .await;
    assert_eq!(incident["attempts"], 1);
    assert_eq!(heal_missions(&h).await.len(), 1);
    // Docker's event history shows the other one was stopped on purpose: left alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stopped.status(), "exited");
    assert!(incidents(&h, &stopped).await.is_empty());
}

/// A TCP listener on 127.0.0.1 that forwards each connection to the Docker unix socket.
async fn unix_socket_proxy() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let address = listener.local_addr().expect("the proxy's address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn unlabelled_and_deliberately_stopped_containers_are_left_alone() {
    let lab = Lab::new();
    let h = healer(&lab, 1, &[]).await;
    let stranger = lab.run("stranger", false, &[], SLEEPER);
    let stopped = lab.run("stopped", true, &[], SLEEPER);
    let killed = lab.run("killed", true, &[], SLEEPER);
    for c in [&stranger, &stopped, &killed] {
        c.wait_status("running", Duration::from_secs(10)).await;
    }
    wait_for_log(&h, "the healer watches containers").await;
    stranger.kill_from_host();
    docker_lab::must(&["stop", "-t", "1", &stopped.id]);
    docker_lab::must(&["kill", &killed.id]);
    for c in [&stranger, &stopped, &killed] {
        c.wait_status("exited", Duration::from_secs(10)).await;
    }
    // Several sweeps and any event have had their chance.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for c in [&stranger, &stopped, &killed] {
        assert_eq!(c.status(), "exited", "{} was touched", c.name);
        assert!(
            incidents(&h, c).await.is_empty(),
            "{} has an incident",
            c.name
        );
    }
    assert!(heal_missions(&h).await.is_empty());
}

#[tokio::test]
async fn a_crash_loop_backs_off_then_escalates_until_resolved() {
    let lab = Lab::new();
    let h = healer(&lab, 2, &[("HYPERCODE_HEAL_WINDOW_S", "120")]).await;
    let flaky = lab.run("flaky", true, &[], &["sh", "-c", "sleep 1; exit 3"]);
    let incident = wait_incident(&h, &flaky, "escalated", Duration::from_secs(90), |i| {
        i["status"] == "escalated"
    })
    .await;
    assert_eq!(incident["attempts"], 5, "{incident:#}");
    assert_eq!(incident["cause"], "exited");
    let missions = incident["missions"].as_array().cloned().unwrap_or_default();
    assert_eq!(missions.len(), 5, "{incident:#}");
    // Heal n waits 2^(n-2) s before restarting, from the second on.
    for (n, id) in missions.iter().enumerate() {
        let mission = h.get(id.as_str().unwrap_or_default()).await;
        let backoff = mission["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "backoff").cloned());
        match n {
            0 => assert!(backoff.is_none(), "{mission:#}"),
            _ => assert_eq!(
                backoff.map(|b| b["input"]["ms"].clone()),
                Some(json!(1000u64 << (n - 1))),
                "{mission:#}"
            ),
        }
    }
    // Escalated: no more restarts.
    flaky.wait_status("exited", Duration::from_secs(10)).await;
    let before = flaky.started_at();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(flaky.started_at(), before, "restarted while escalated");
    assert_eq!(heal_missions(&h).await.len(), 5);
    assert_eq!(heal_actions(&h, "escalate", "escalated").await, 1.0);
    assert_eq!(heal_actions(&h, "heal", "started").await, 5.0);
    let escalations = log_of(&h, &flaky).await;
    assert_eq!(escalations[0]["level"], "error", "{escalations:#?}");
    assert!(escalations[0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("escalated"));
    // A viewer may read but not resolve; an operator resolves, and the healer acts again.
    let id = incident["id"].as_str().unwrap_or_default();
    let viewer = h.create_key("viewer", "viewer").await;
    let refused = h
        .send(h.request_as(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            &viewer,
        ))
        .await;
    refused.problem(403);
    let operator = h.create_key("operator", "operator").await;
    let resolved = h
        .send(
            h.request_as(
                Method::POST,
                &format!("/api/v1/incidents/{id}/resolve"),
                &operator,
            )
            .json(&json!({"comment": "fixed the config"})),
        )
        .await;
    assert_eq!(resolved.status, 200, "{resolved:?}");
    assert_eq!(resolved.body["status"], "resolved");
    let again = h
        .send(h.request_as(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            &operator,
        ))
        .await;
    again.problem(409);
    flaky.wait_restarted(&before, Duration::from_secs(15)).await;
    let next = wait_incident(&h, &flaky, "a new one", Duration::from_secs(15), |i| {
        i["id"] != incident["id"]
    })
    .await;
    assert!(
        ["open", "healed"].contains(&next["status"].as_str().unwrap_or_default()),
        "{next:#}"
    );
}

#[tokio::test]
async fn an_unhealthy_container_is_restarted() {
    let lab = Lab::new();
    let h = healer(&lab, 3600, &[]).await;
    // Healthy, then unhealthy 2 s after its first start; healthy for good after a restart.
    let script = "if [ -f /ran ]; then touch /healthy; else touch /ran /healthy; (sleep 2; rm /healthy) & fi; exec sleep 1000000";
    let sick = lab.run(
        "sick",
        true,
        &[
            "--health-cmd",
            "test -f /healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-timeout",
            "1s",
        ],
        &["sh", "-c", script],
    );
    sick.wait_status("running", Duration::from_secs(10)).await;
    let before = sick.started_at();
    sick.wait_restarted(&before, Duration::from_secs(20)).await;
    let incident = wait_incident(&h, &sick, "healed", Duration::from_secs(30), |i| {
        i["status"] == "healed"
    })
    .await;
    assert_eq!(incident["cause"], "unhealthy");
    assert_eq!(sick.health(), "healthy");
}

#[tokio::test]
async fn two_replicas_start_exactly_one_heal_mission_per_failure() {
    let lab = Lab::new();
    let mut h = healer(&lab, 1, &[]).await;
    h.start_another_serve().await;
    let db = lab.run("db", true, &[], SLEEPER);
    db.wait_status("running", Duration::from_secs(10)).await;
    wait_for_log(&h, "the healer watches containers").await;
    for failure in 1..=2 {
        let before = db.started_at();
        db.kill_from_host();
        db.wait_restarted(&before, Duration::from_secs(10)).await;
        let incident = wait_incident(&h, &db, "healed", Duration::from_secs(20), |i| {
            i["status"] == "healed" && i["attempts"] == failure
        })
        .await;
        assert_eq!(
            incident["missions"].as_array().map(Vec::len),
            Some(failure as usize)
        );
        // Both replicas' events and sweeps have seen it by now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(heal_missions(&h).await.len(), failure as usize);
    }
    assert_eq!(incidents(&h, &db).await.len(), 1);
}

#[tokio::test]
async fn docker_out_of_reach_does_not_stop_the_server() {
    let h = Harness::with(Options {
        workers: 0,
        env: vec![
            ("HYPERCODE_HEALER", "on".to_owned()),
            ("DOCKER_HOST", "tcp://127.0.0.1:1".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    wait_for_log(&h, "the healer cannot reach Docker").await;
    let reply = h.send(h.request(Method::GET, "/api/v1/incidents")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({"incidents": []}));
}

#[tokio::test]
async fn incident_routes_refuse_bad_input_with_problems() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let bad_status = h
        .send(h.request(Method::GET, "/api/v1/incidents?status=sick"))
        .await;
    assert!(bad_status.problem(400)["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("status"));
    let bad_limit = h.send(h.request(Method::GET, "/api/v1/logs?limit=0")).await;
    bad_limit.problem(400);
    h.send(h.request(Method::GET, "/api/v1/incidents/nope"))
        .await
        .problem(400);
    let unknown = "0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f";
    h.send(h.request(Method::GET, &format!("/api/v1/incidents/{unknown}")))
        .await
        .problem(404);
    h.send(h.request(
        Method::POST,
        &format!("/api/v1/incidents/{unknown}/resolve"),
    ))
    .await
    .problem(404);
    let wrong_shape = h
        .send(
            h.request(
                Method::POST,
                &format!("/api/v1/incidents/{unknown}/resolve"),
            )
            .json(&json!({"comment": 7})),
        )
        .await;
    assert_eq!(wrong_shape.problem(422)["errors"][0]["pointer"], "/comment");
    // Only the healer starts heal missions.
    let submitted = h
        .submit_body(&json!({"workflow": "heal", "input": {}}))
        .await;
    assert_eq!(submitted.problem(422)["errors"][0]["pointer"], "/workflow");
    let workflows = h.send(h.request(Method::GET, "/api/v1/workflows")).await;
    let heal = workflows.body["workflows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "heal").cloned())
        .unwrap_or_default();
    assert_eq!(heal["internal"], true, "{:#}", workflows.body);
}

#[tokio::test]
async fn the_log_keeps_the_newest_1000_entries_each_valid_json() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let sink = hypercode_healer::LogSink::new(&h.redis_url, &h.queue).expect("the log");
    for n in 0..1050 {
        let entry = hypercode_healer::LogEntry::healer(
            hypercode_healer::LogLevel::Info,
            format!("entry {n}"),
            "c",
            None,
        );
        sink.push(&entry).await.expect("push");
    }
    let client = redis::Client::open(h.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let key = format!("{}:logs", h.queue);
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(raw.len(), 1000);
    for json in &raw {
        let entry: Value = serde_json::from_str(json).expect("every entry is JSON");
        let mut keys: Vec<&str> = entry
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            ["at", "container", "incident", "level", "message", "source"]
        );
    }
    let reply = h.send(h.request(Method::GET, "/api/v1/logs?limit=2")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["entries"][0]["message"], "entry 1049");
    assert_eq!(reply.body["entries"][1]["message"], "entry 1048");
    let none = h
        .send(h.request(Method::GET, "/api/v1/logs?source=other"))
        .await;
    assert_eq!(none.body, json!({"entries": []}));
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("del");
}

#[tokio::test]
async fn the_dashboard_lists_incidents_urgent_first_operators_resolve_and_the_log_is_live() {
    use hypercode_healer::{Cause, Failure, HealPolicy, IncidentStore, Verdict};
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    let store = IncidentStore::new(pool);
    let policy = HealPolicy {
        max_attempts: 1,
        window: Duration::from_secs(600),
    };
    let failure = |name: &str, at: &str| Failure {
        container_id: format!("{name}-id"),
        container_name: name.to_owned(),
        cause: Cause::Exited,
        finished_at: at.to_owned(),
    };
    // "stuck" escalates at its second failure; "fine" is healed, and newer.
    store
        .record_failure(&failure("stuck", "t1"), &policy)
        .await
        .expect("record");
    let escalated = match store.record_failure(&failure("stuck", "t2"), &policy).await {
        Ok(Verdict::Escalated { incident, .. }) => incident,
        other => panic!("expected an escalation: {other:?}"),
    };
    if let Ok(Verdict::Heal { incident, .. }) =
        store.record_failure(&failure("fine", "t1"), &policy).await
    {
        store.mark_healed(incident.id).await.expect("heal");
    }
    let mut log = reqwest::Client::new()
        .get(h.url("/api/v1/logs/stream"))
        .header("X-API-Key", &h.key)
        .send()
        .await
        .expect("the log stream answered");
    assert_eq!(log.status(), 200);

    let viewer = h.create_key("viewer", "viewer").await;
    let page = h.signed_in(&viewer).await.get("/incidents").await;
    assert_eq!(page.status, 200, "{page:?}");
    let (stuck, fine) = (page.body.find(">stuck<"), page.body.find(">fine<"));
    assert!(
        stuck.is_some() && fine.is_some() && stuck < fine,
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("form class=\"resolve\""),
        "a viewer sees no resolve button"
    );
    assert!(
        page.body.contains("href=\"/incidents\""),
        "the navigation links the page"
    );

    let operator = h.create_key("operator", "operator").await;
    let mut browser = h.signed_in(&operator).await;
    let page = browser.get("/incidents").await;
    assert!(
        page.body.contains("form class=\"resolve\""),
        "{}",
        page.body
    );
    let path = format!("/incidents/{}/resolve", escalated.id);
    let resolved = browser
        .post(
            &path,
            &[("csrf", &page.csrf()), ("comment", "restarted by hand")],
        )
        .await;
    assert_eq!(resolved.status, 303, "{resolved:?}");
    assert_eq!(resolved.location.as_deref(), Some("/incidents"));
    let shown = h
        .send(h.request(Method::GET, &format!("/api/v1/incidents/{}", escalated.id)))
        .await;
    assert_eq!(shown.body["status"], "resolved");
    // Without the session's token, nothing happens.
    let forged = browser.post(&path, &[("csrf", "nope")]).await;
    assert_eq!(forged.status, 403, "{forged:?}");

    // The resolution arrives on the stream as one `log` event.
    let mut text = String::new();
    // (Keep-alive comments may come first.)
    while !text
        .find("event: log")
        .is_some_and(|at| text[at..].contains("\n\n"))
    {
        let chunk = tokio::time::timeout(Duration::from_secs(10), log.chunk())
            .await
            .expect("an event within 10 s")
            .expect("read the stream")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let event = text
        .split("\n\n")
        .find(|e| e.contains("event: log"))
        .unwrap_or_default();
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_default();
    let entry: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(entry["source"], "healer");
    assert_eq!(entry["container"], "stuck");
    assert_eq!(entry["incident"], escalated.id.to_string());
    assert!(entry["message"]
        .as_str()
        .unwrap_or_default()
        .contains("restarted by hand"));
}
