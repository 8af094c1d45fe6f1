//! Durability: a flushed Redis, a worker killed mid-step, and a worker stopped gracefully
//! mid-step. Postgres is the truth; each mission must still finish, without re-running a step
//! that had completed.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A Redis logical database of its own, so flushing it cannot disturb tests running in parallel
/// on the shared server (FLUSHDB on it is, for this deployment, what FLUSHALL is).
const FLUSHED_REDIS_DB: u32 = 7;

async fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

async fn flush(url: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn)
        .await
        .expect("FLUSHDB");
}

/// The wake-up of a submitted mission is lost with everything else in Redis before any worker
/// runs; the reconciler re-sends it and the mission succeeds.
#[tokio::test]
async fn redis_flushed_mid_mission() {
    let redis = redis_url_with_db(FLUSHED_REDIS_DB);
    let mut h = Harness::with(Options {
        workers: 0,
        redeliver_after_ms: Some(500),
        redis_url: Some(redis.clone()),
        ..Options::default()
    })
    .await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            http_step(
                "b",
                "GET",
                &h.callee.url("/items/{{steps.a.output.body.id}}")
            ),
        ]))
        .await;
    let id = id_of(&m);

    // The wake-up is in Redis (the queue's keys carry its name), and nobody has run it.
    let pattern = format!("*{}*", h.queue);
    let before = redis_keys(&redis, &pattern).await;
    assert!(
        !before.is_empty(),
        "the submission left no job in Redis under `{pattern}`"
    );
    flush(&redis).await;
    assert!(redis_keys(&redis, &pattern).await.is_empty());
    assert_eq!(h.get(&id).await["status"], "pending");

    h.start_worker().await;
    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;
    assert_eq!(
        step_statuses(&mission),
        [("a", "succeeded"), ("b", "succeeded")].map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert_eq!(h.callee.with_key(&format!("{id}:a")).len(), 1);
    assert_eq!(h.callee.with_key(&format!("{id}:b")).len(), 1);
    let history = h.history(&id).await;
    assert_eq!(events_of(&history, "mission_started").len(), 1);
    assert!(events_of(&history, "mission_resumed").is_empty());
}

/// A worker SIGKILLed while step b is in flight: its lease expires, another worker resumes the
/// mission, b is attempted again with the same Idempotency-Key, and neither a nor c runs twice.
#[tokio::test]
async fn worker_killed_mid_step() {
    let mut h = Harness::with(Options {
        workers: 1,
        lease_ttl_ms: Some(1500),
        ..Options::default()
    })
    .await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            http_step("b", "POST", &h.callee.url("/slow/2000")),
            http_step("c", "POST", &h.callee.url("/ok")),
        ]))
        .await;
    let id = id_of(&m);
    h.callee
        .wait_for("b's request", |r| r.path == "/slow/2000", secs(15))
        .await;
    let victim = h.workers[0].pid();
    h.workers[0].kill().await;
    let killed_at = Instant::now();
    h.start_worker().await;

    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;
    let recovery = killed_at.elapsed();

    assert_eq!(
        h.callee.with_key(&format!("{id}:a")).len(),
        1,
        "{}",
        h.callee.describe()
    );
    assert_eq!(
        h.callee.with_key(&format!("{id}:c")).len(),
        1,
        "{}",
        h.callee.describe()
    );
    let b_calls = h.callee.to_path("/slow/2000");
    assert!((1..=2).contains(&b_calls.len()), "{}", h.callee.describe());
    let b_key = format!("{id}:b");
    assert!(
        b_calls
            .iter()
            .all(|r| r.key.as_deref() == Some(b_key.as_str())),
        "{}",
        h.callee.describe()
    );
    assert_eq!(
        step(&mission, "b")["attempts"],
        2,
        "the cut-short attempt counts: {}",
        pretty(&mission)
    );
    assert_eq!(step(&mission, "a")["attempts"], 1);
    assert_eq!(step(&mission, "c")["attempts"], 1);

    let history = h.history(&id).await;
    let resumed: Vec<_> = events_of(&history, "mission_resumed")
        .into_iter()
        .filter(|e| !e["data"]["lease_expired_from"].is_null())
        .collect();
    assert_eq!(resumed.len(), 1, "{}", describe_history(&history));
    let from = resumed[0]["data"]["lease_expired_from"]
        .as_str()
        .unwrap_or_default();
    assert!(
        from.contains(&format!("-{victim}-")),
        "lease_expired_from `{from}` should name the killed worker (pid {victim})"
    );
    // The resume names the worker that took over, as the start named the one killed.
    let successor = h.workers[1].pid();
    let resumer = resumed[0]["data"]["worker"].as_str().unwrap_or_default();
    assert!(
        resumer.contains(&format!("-{successor}-")),
        "the resume's worker `{resumer}` should name the worker that took over (pid {successor})"
    );
    let started = events_of(&history, "mission_started");
    assert_eq!(started[0]["data"]["worker"].as_str(), Some(from));
    eprintln!("recovered {recovery:?} after the kill");
}

/// SIGTERM while step b is in flight: b finishes, the mission is handed back, the process exits
/// 0 within 10 s, and a second worker completes the mission without re-running a or b.
#[tokio::test]
async fn worker_stops_gracefully_mid_step() {
    let mut h = Harness::with(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            http_step("b", "POST", &h.callee.url("/slow/1500")),
            http_step("c", "POST", &h.callee.url("/ok")),
        ]))
        .await;
    let id = id_of(&m);
    h.callee
        .wait_for("b's request", |r| r.path == "/slow/1500", secs(15))
        .await;
    let first_pid = h.workers[0].pid();
    h.workers[0].terminate();
    let signalled = Instant::now();
    let status = h.workers[0].wait_timeout(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    let Some(status) = status else {
        panic!(
            "the worker did not exit within 10 s of SIGTERM; mission:\n{}\nhistory:\n{}",
            pretty(&h.get(&id).await),
            describe_history(&h.history(&id).await)
        );
    };
    assert!(
        status.success(),
        "the worker exited with {status} after SIGTERM"
    );

    // The in-flight step finished and was recorded by the stopping worker; c did not start.
    let handed_back = h.get(&id).await;
    assert_eq!(
        step(&handed_back, "b")["status"],
        "succeeded",
        "b finished before exit (took {took:?}): {}",
        pretty(&handed_back)
    );
    assert!(
        !step_is(&handed_back, "c", "running") && h.callee.with_key(&format!("{id}:c")).is_empty(),
        "no new step after SIGTERM: {}",
        pretty(&handed_back)
    );
    assert_eq!(
        handed_back["status"],
        "pending",
        "the mission is handed back, runnable: {}",
        pretty(&handed_back)
    );

    h.start_worker().await;
    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            h.callee.with_key(&format!("{id}:{name}")).len(),
            1,
            "step {name}:\n{}",
            h.callee.describe()
        );
        assert_eq!(step(&mission, name)["attempts"], 1, "step {name}");
    }

    let history = h.history(&id).await;
    let order = typed_steps(&history);
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(
        pos("step_succeeded(b)") < pos("mission_released")
            && pos("mission_released") < pos("mission_resumed")
            && pos("mission_resumed") < pos("step_started(c)"),
        "{}",
        describe_history(&history)
    );
    let released = events_of(&history, "mission_released");
    assert_eq!(released.len(), 1);
    let resumed = events_of(&history, "mission_resumed");
    assert_eq!(resumed.len(), 1, "{}", describe_history(&history));
    assert!(
        resumed[0]["data"]["lease_expired_from"].is_null(),
        "a graceful hand-off is not a lease expiry: {}",
        resumed[0]
    );
    let started = events_of(&history, "mission_started");
    assert!(started[0]["data"]["worker"]
        .as_str()
        .unwrap_or_default()
        .contains(&format!("-{first_pid}-")));
    eprintln!("worker exited {took:?} after SIGTERM");
}

/// A worker that sat idle for a while still picks up a new mission promptly: its poll loop must
/// not stall while there is nothing to do.
#[tokio::test]
async fn an_idle_worker_still_picks_up_work() {
    let h = Harness::start().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let m = h
        .submit(json!([http_step("a", "POST", &h.callee.url("/ok"))]))
        .await;
    let id = id_of(&m);
    h.wait_terminal(&id, "succeeded", secs(12)).await;
    assert_eq!(h.callee.with_key(&format!("{id}:a")).len(), 1);
}

/// Redis loses everything while a worker is running and a mission is parked on a timer (a
/// Redis restart without persistence): the worker's registration and every queued wake-up are
/// gone. The mission must still finish once its timer is due.
#[tokio::test]
async fn redis_flushed_under_a_running_worker() {
    let redis = redis_url_with_db(FLUSHED_REDIS_DB + 1);
    let h = Harness::with(Options {
        workers: 1,
        redeliver_after_ms: Some(500),
        redis_url: Some(redis.clone()),
        ..Options::default()
    })
    .await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            { "name": "nap", "sleep": { "ms": 1500 } },
            http_step("b", "POST", &h.callee.url("/items/after")),
        ]))
        .await;
    let id = id_of(&m);
    h.wait_until(
        &id,
        "parked on its timer",
        |m| step_is(m, "nap", "waiting"),
        secs(15),
    )
    .await;
    flush(&redis).await;
    let mut h = h;
    let deadline = Instant::now() + secs(20);
    while !is_terminal(&h.get(&id).await) && Instant::now() < deadline {
        if let Some(status) = h.workers[0].exited() {
            panic!(
                "the worker exited ({status}) after Redis was flushed under it; mission:\n{}\nworker log:\n{}",
                pretty(&h.get(&id).await),
                tail(&h.workers[0].log, 8)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mission = h.wait_terminal(&id, "succeeded", secs(1)).await;
    assert_eq!(step(&mission, "b")["status"], "succeeded");
    assert_eq!(h.callee.with_key(&format!("{id}:a")).len(), 1);
    assert_eq!(h.callee.with_key(&format!("{id}:b")).len(), 1);
}

/// A burst larger than the queue may hold: wake-ups past the depth limit are refused, those
/// missions wait in Postgres, and the reconciler feeds them in as the workers drain the queue.
#[tokio::test]
async fn a_burst_beyond_the_queue_depth_completes() {
    let mut h = Harness::with(Options {
        workers: 0,
        redeliver_after_ms: Some(300),
        env: vec![("HYPERCODE_QUEUE_MAX_DEPTH", "3".to_owned())],
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let m = h.submit(json!([{ "name": "a", "noop": { "i": i } }])).await;
        ids.push(id_of(&m));
    }
    let queue = hypercode_workers::queue::QueueConfig {
        redis_url: h.redis_url.clone(),
        queue: h.queue.clone(),
    };
    let client = redis::Client::open(h.redis_url.as_str()).expect("redis url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let scheduled = queue.apalis().scheduled_jobs_set();
    let depth = || {
        let (mut conn, scheduled) = (conn.clone(), scheduled.clone());
        async move {
            redis::cmd("ZCARD")
                .arg(scheduled)
                .query_async::<u64>(&mut conn)
                .await
                .expect("ZCARD")
        }
    };
    // The queue fills up to its depth...
    let filled = poll(secs(10), || async {
        match depth().await {
            3 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(filled, Ok(()), "the queue holds its depth of wake-ups");
    // ...and no further while the reconciler (every 300 ms) re-sends the missions left out.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(1) {
        assert_eq!(depth().await, 3, "the queue holds no more than its depth");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    h.start_worker().await;
    for id in &ids {
        let mission = h.wait_terminal(id, "succeeded", secs(30)).await;
        assert_eq!(step(&mission, "a")["attempts"], 1);
    }
}
