//! Workers SIGKILLed over and over while a bench-sized batch of missions runs. Postgres is the
//! truth: every mission still succeeds, every event and journal entry it recorded is there, and
//! no step runs again once its success was recorded (a step cut short by a kill may run again:
//! at-least-once for an unfinished step, each attempt counted).

mod common;

use common::*;
use serde_json::json;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::time::Duration;

/// Missions in the batch: the size of a quick bench run.
const MISSIONS: usize = 300;
/// Kills during the run; each hits a worker with up to 16 missions in flight.
const KILLS: usize = 8;

async fn scalar(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn workers_killed_in_a_loop_lose_no_step_and_rerun_none() {
    let mut h = Harness::with(Options {
        workers: 2,
        worker_concurrency: Some(16),
        lease_ttl_ms: Some(1000),
        tick_ms: Some(100),
        redeliver_after_ms: Some(500),
        ..Options::default()
    })
    .await;
    let db = PgPool::connect(&h.database_url).await.expect("connect");
    // HTTP steps (started durably, then called) around local ones (recorded with the next
    // write); `c` takes a while, so kills land mid-step. Submissions go on while workers run;
    // every `MISSIONS / KILLS` of them a live worker is killed and a new one started.
    let mut ids = Vec::with_capacity(MISSIONS);
    let mut kills = 0;
    for i in 0..MISSIONS {
        let m = h
            .submit(json!([
                http_step("a", "POST", &h.callee.url("/ok")),
                { "name": "b", "noop": { "i": i } },
                http_step("c", "GET", &h.callee.url("/slow/30")),
                { "name": "d", "noop": {} },
            ]))
            .await;
        ids.push(id_of(&m));
        if (i + 1) % (MISSIONS / KILLS) == 0 {
            let live = h
                .workers
                .iter_mut()
                .position(|w| w.exited().is_none())
                .expect("a live worker");
            h.workers[live].kill().await;
            h.start_worker().await;
            kills += 1;
        }
    }
    let pool = &db;
    let finished = poll(Duration::from_secs(180), move || async move {
        let n = scalar(
            pool,
            "select count(*) from missions where status in ('succeeded', 'failed', 'cancelled')",
        )
        .await;
        if n as usize == MISSIONS {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    assert_eq!(finished, Ok(()), "not every mission finished");

    // Every mission succeeded, with all four entries settled.
    assert_eq!(
        scalar(
            &db,
            "select count(*) from missions where status = 'succeeded'"
        )
        .await,
        MISSIONS as i64
    );
    assert_eq!(
        scalar(&db, "select count(*) from steps where status = 'succeeded'").await,
        4 * MISSIONS as i64
    );
    // The kills hit missions in flight: some were taken over after their lease expired.
    let taken_over = scalar(
        &db,
        "select count(*) from events where type = 'mission_resumed' and data ? 'lease_expired_from'",
    )
    .await;
    assert!(taken_over > 0, "no kill interrupted a mission");
    // Each mission's history is whole: seq runs 1..=last_seq without a gap or a double.
    assert_eq!(
        scalar(
            &db,
            "select count(*) from missions m where last_seq <> (
                 select count(distinct seq) from events e where e.mission_id = m.id)
               or last_seq <> (select max(seq) from events e where e.mission_id = m.id)",
        )
        .await,
        0,
        "a mission's history has a gap"
    );
    // Each step succeeded once, and was not started again after its success was recorded.
    assert_eq!(
        scalar(
            &db,
            "select count(*) from (select mission_id, step from events
                 where type = 'step_succeeded' group by 1, 2 having count(*) <> 1) twice",
        )
        .await,
        0,
        "a step succeeded twice"
    );
    assert_eq!(
        scalar(
            &db,
            "select count(*) from events s join events e
                 on e.mission_id = s.mission_id and e.step = s.step and e.seq > s.seq
                and e.type = 'step_started'
              where s.type = 'step_succeeded'",
        )
        .await,
        0,
        "a step ran again after its success was recorded"
    );
    // Every call the callee saw belongs to a recorded attempt of its step (the start of an
    // attempt is written before its call), and every HTTP step called at least once.
    let attempts: HashMap<String, i64> =
        sqlx::query("select mission_id::text || ':' || name as key, attempts::bigint from steps")
            .fetch_all(&db)
            .await
            .expect("read attempts")
            .into_iter()
            .map(|row| (row.get("key"), row.get("attempts")))
            .collect();
    let mut calls: HashMap<String, i64> = HashMap::new();
    for request in h.callee.requests() {
        if let Some(key) = request.key {
            *calls.entry(key).or_default() += 1;
        }
    }
    for id in &ids {
        for step in ["a", "c"] {
            let key = format!("{id}:{step}");
            let (made, recorded) = (calls.get(&key).copied().unwrap_or(0), attempts[&key]);
            assert!(
                (1..=recorded).contains(&made),
                "step {key}: {made} calls for {recorded} recorded attempts"
            );
        }
    }
    eprintln!("{kills} kills, {taken_over} missions taken over after a kill");
}
