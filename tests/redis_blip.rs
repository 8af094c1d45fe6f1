//! Redis connections dropped under load (issue 9, item 1). A worker's apalis pool fails when
//! Redis drops its connections and is started again; the missions it was running must go on
//! (or be handed back at once), never sit `running` under a lease their worker keeps renewing
//! without running them. Each test owns a private `redis-server` (a child process on a free
//! port, no persistence) so it can drop its clients or kill it without touching the shared one.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Missions submitted at once, each of slow HTTP steps.
const MISSIONS: usize = 150;
/// `--concurrency` of the one worker.
const CONCURRENCY: usize = 32;
/// How long the callee takes to answer each step.
const STEP_MS: u64 = 400;
/// The steps of a mission of the load.
const STEPS: [&str; 3] = ["a", "b", "c"];
/// The steps of a mission long enough to outlast a pool failure by several steps: the pool only
/// notices a dropped connection at its next fetch, when a shorter mission frees a slot.
const LONG_STEPS: [&str; 20] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t",
];
/// `HYPERCODE_LEASE_TTL_MS`: a run its worker lost track of would resume after this.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How many times Redis is dropped while missions are in flight.
const BLIPS: usize = 3;

/// A `redis-server` of this test's own, killed on drop.
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    /// Start one on a free port and wait until it answers.
    async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        PrivateRedis {
            port,
            child: Self::spawn(port).await,
        }
    }

    async fn spawn(port: u16) -> Child {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        let url = format!("redis://127.0.0.1:{port}/");
        let deadline = Instant::now() + secs(10);
        loop {
            let pong: Result<String, _> = async {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async(&mut conn).await
            }
            .await;
            if pong.is_ok() {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "the private redis-server on port {port} did not answer: {pong:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `CLIENT KILL TYPE normal`: drop every ordinary connection (not this one); returns how
    /// many were dropped.
    async fn kill_clients(&self) -> i64 {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis");
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL")
    }

    /// SIGKILL the server (it keeps nothing), leave it down for `down`, start it again on the
    /// same port.
    async fn crash_and_restart(&mut self, down: Duration) {
        self.child.kill().await.expect("kill redis-server");
        tokio::time::sleep(down).await;
        self.child = Self::spawn(self.port).await;
    }
}

/// One worker at [`CONCURRENCY`] on the private Redis, with a short lease.
async fn deployment(redis: &PrivateRedis) -> Harness {
    Harness::with(Options {
        workers: 1,
        worker_concurrency: Some(CONCURRENCY),
        lease_ttl_ms: Some(LEASE_TTL.as_millis() as u64),
        redeliver_after_ms: Some(500),
        redis_url: Some(redis.url()),
        // The test polls hard; the rate limit is not under test.
        env: vec![("HYPERCODE_RATE_LIMIT", "0".to_owned())],
        ..Options::default()
    })
    .await
}

/// Submit `count` missions of slow steps named `steps`, several at a time so that most are still
/// waiting for a slot when Redis goes; returns their ids.
async fn submit_load(h: &Harness, steps: &[&str], count: usize) -> Vec<String> {
    let slow = h.callee.url(&format!("/slow/{STEP_MS}"));
    let plan = Value::Array(
        steps
            .iter()
            .map(|name| http_step(name, "POST", &slow))
            .collect(),
    );
    futures::stream::iter(0..count)
        .map(|_| h.submit(plan.clone()))
        .buffered(16)
        .map(|m| id_of(&m))
        .collect()
        .await
}

/// Wait until the worker is busy: at least a pool's worth of step requests have arrived.
async fn until_busy(h: &Harness, requests: usize) {
    wait_for(
        "the worker to get busy",
        secs(60),
        || async { h.callee.requests().len() >= requests },
        || tail(&h.workers[0].log, 40),
    )
    .await;
}

/// A connection to the test's database, to read the missions' leases.
async fn database(h: &Harness) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&h.database_url)
        .await
        .expect("connect to the test database")
}

/// The missions not finished yet, each described with its lease.
async fn unfinished(db: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select format('%s %s last_seq=%s lease_owner=%s lease_expires_in=%s',
                       id, status, last_seq, lease_owner, lease_expires_at - now())
           from missions
          where status not in ('succeeded', 'failed', 'cancelled')
          order by id",
    )
    .fetch_all(db)
    .await
    .expect("list unfinished missions")
}

/// Every mission must finish within the time the whole load needs (twice over, for a loaded
/// machine) plus one lease lifetime plus a few seconds, counted from the last drop; then every
/// mission succeeded and no step was sent after its recorded success.
async fn all_finish_promptly(h: &Harness, ids: &[String], last_drop: Instant) {
    let work = Duration::from_millis(STEP_MS * 3 * MISSIONS as u64 / CONCURRENCY as u64);
    let deadline = last_drop + work * 2 + LEASE_TTL + secs(10);
    let db = database(h).await;
    loop {
        let left = unfinished(&db).await;
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{} of {MISSIONS} missions still unfinished {:?} after the last Redis drop \
                 (allowed: {:?}); a `running` one whose lease keeps moving is renewed by a worker \
                 that no longer runs it, `pending` ones are not being fetched:\n{}\nworker log:\n{}",
                left.len(),
                last_drop.elapsed(),
                deadline - last_drop,
                left.join("\n"),
                h.workers.last().map(|w| tail(&w.log, 30)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "all {MISSIONS} missions finished {:?} after the last Redis drop",
        last_drop.elapsed()
    );

    for id in ids {
        let mission = h.wait_terminal(id, "succeeded", secs(1)).await;
        for name in STEPS {
            // Every request is an attempt the journal recorded before sending it: a request
            // beyond the recorded attempts would be a step re-sent after its success.
            let sent = h.callee.with_key(&format!("{id}:{name}")).len();
            let attempts = step(&mission, name)["attempts"].as_u64().unwrap_or(0) as usize;
            assert!(
                (1..=attempts).contains(&sent),
                "step {name} of {id}: {sent} requests for {attempts} recorded attempts\n{}",
                pretty(&mission)
            );
        }
    }
}

/// Whether the worker has logged that its pool broke and is being started again.
fn pool_restarted(h: &Harness, worker: usize) -> bool {
    let log = std::fs::read_to_string(&h.workers[worker].log).unwrap_or_default();
    log.contains("worker pool failed; restarting")
        || log.contains("worker pool stopped unexpectedly; restarting")
}

/// Wait until the first worker's pool has broken.
async fn until_pool_restarted(h: &Harness) {
    wait_for(
        "the drop to break the worker's pool",
        secs(10),
        || async { pool_restarted(h, 0) },
        || tail(&h.workers[0].log, 30),
    )
    .await;
}

/// The worker is alive and its pool did break (or the test would have tested nothing).
fn assert_pool_restarted(h: &mut Harness, worker: usize) {
    assert!(
        h.workers[worker].exited().is_none(),
        "the worker died:\n{}",
        tail(&h.workers[worker].log, 30)
    );
    assert!(
        pool_restarted(h, worker),
        "the drops never broke the worker's pool, so this test tested nothing:\n{}",
        tail(&h.workers[worker].log, 30)
    );
}

/// `CLIENT KILL TYPE normal` a few times while the worker is running missions: the pool fails
/// with a broken pipe and restarts; every mission still finishes promptly, none stranded.
#[tokio::test]
async fn dropped_redis_connections_strand_no_mission() {
    let redis = PrivateRedis::start().await;
    let mut h = deployment(&redis).await;
    let ids = submit_load(&h, &STEPS, MISSIONS).await;
    until_busy(&h, CONCURRENCY).await;
    let mut last_drop = Instant::now();
    for _ in 0..BLIPS {
        let dropped = redis.kill_clients().await;
        last_drop = Instant::now();
        eprintln!(
            "dropped {dropped} Redis connections with {} step requests sent",
            h.callee.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    all_finish_promptly(&h, &ids, last_drop).await;
    assert_pool_restarted(&mut h, 0);
}

/// The private redis-server is SIGKILLed and started again (empty) a few times while the
/// worker is running missions: queued wake-ups are lost with it (the reconciler re-sends them),
/// and every mission still finishes promptly, none stranded.
#[tokio::test]
async fn a_redis_restart_strands_no_mission() {
    let mut redis = PrivateRedis::start().await;
    let mut h = deployment(&redis).await;
    let ids = submit_load(&h, &STEPS, MISSIONS).await;
    until_busy(&h, CONCURRENCY).await;
    let mut last_drop = Instant::now();
    for _ in 0..BLIPS - 1 {
        redis.crash_and_restart(Duration::from_millis(1000)).await;
        last_drop = Instant::now();
        eprintln!(
            "restarted Redis with {} step requests sent",
            h.callee.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    all_finish_promptly(&h, &ids, last_drop).await;
    assert_pool_restarted(&mut h, 0);
}

/// SIGTERM just after Redis dropped the worker's connections, while the runs the failed pool
/// started are mid-step: the worker still waits for every run to hand its mission back (none is
/// left `running` under a lease nobody renews), exits 0, and a new worker finishes them all.
#[tokio::test]
async fn a_shutdown_after_a_drop_hands_every_mission_back() {
    let redis = PrivateRedis::start().await;
    let mut h = deployment(&redis).await;
    let ids = submit_load(&h, &STEPS, MISSIONS).await;
    until_busy(&h, CONCURRENCY).await;
    redis.kill_clients().await;
    until_pool_restarted(&h).await;
    h.workers[0].terminate();
    let status = h.workers[0].wait_timeout(secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker did not exit 0 within 20 s of SIGTERM ({status:?}):\n{}",
        tail(&h.workers[0].log, 30)
    );

    let db = database(&h).await;
    let held: Vec<String> = unfinished(&db)
        .await
        .into_iter()
        .filter(|m| !m.contains(" pending "))
        .collect();
    assert!(
        held.is_empty(),
        "missions still held after the worker exited:\n{}\nworker log:\n{}",
        held.join("\n"),
        tail(&h.workers[0].log, 30)
    );

    h.start_worker().await;
    all_finish_promptly(&h, &ids, Instant::now()).await;
}

/// A cancel reaches the missions that the pool Redis broke was running: long missions hold half
/// the slots while short ones pass through the rest (so the pool fetches, finds its connection
/// gone and restarts while the long ones are mid-run); each long mission is then cancelled and
/// must end `cancelled` within a lease lifetime and a few seconds, not stay `running` under a
/// lease renewed for a run that is gone.
#[tokio::test]
async fn a_cancel_reaches_the_missions_of_a_broken_pool() {
    let redis = PrivateRedis::start().await;
    let mut h = deployment(&redis).await;
    let long = submit_load(&h, &LONG_STEPS, CONCURRENCY / 2).await;
    submit_load(&h, &STEPS, MISSIONS).await;
    until_busy(&h, CONCURRENCY).await;
    redis.kill_clients().await;
    until_pool_restarted(&h).await;
    for id in &long {
        let reply = h.cancel(id).await;
        assert_eq!(reply.status, 202, "cancel {id}: {reply:?}");
    }
    for id in &long {
        let mission = h
            .wait_until(id, "finished", is_terminal, LEASE_TTL + secs(10))
            .await;
        assert_eq!(
            mission["status"],
            "cancelled",
            "mission {id}:\n{}",
            pretty(&mission)
        );
    }
    assert_pool_restarted(&mut h, 0);
}
