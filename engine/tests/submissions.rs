//! Concurrent submissions share a commit (which missions one transaction inserted is read off
//! their rows' `xmin`), and each is answered as a lone insert would be: its row, the first
//! mission of a repeated idempotency key, or its own error.

use futures::future::join_all;
use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{MissionStore, NewMission};
use hypercode_engine::{MissionId, StoreError};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::HashSet;

fn new_mission(input: Value, idempotency_key: Option<&str>) -> NewMission {
    NewMission {
        id: MissionId(uuid::Uuid::new_v4()),
        workflow: "noop".to_owned(),
        input,
        idempotency_key: idempotency_key.map(str::to_owned),
        concurrency_key: None,
        tick: None,
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_submissions_share_commits(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let submitted = join_all((0..40).map(|i| store.submit(new_mission(json!({ "i": i }), None))))
        .await
        .into_iter()
        .map(|s| s.expect("submitted"))
        .collect::<Vec<_>>();
    assert!(submitted.iter().all(|s| s.created));
    let ids: HashSet<MissionId> = submitted.iter().map(|s| s.mission.id).collect();
    assert_eq!(ids.len(), 40);
    let rows: Vec<(String, String)> =
        sqlx::query_as("select xmin::text, created_at::text from missions where id = any($1)")
            .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 40);
    let commits: HashSet<&str> = rows.iter().map(|(xmin, _)| xmin.as_str()).collect();
    assert!(
        commits.len() < 20,
        "40 concurrent submissions took {} commits",
        commits.len()
    );
    // Missions of one batch are still told apart by creation time (it orders a concurrency key).
    let created: HashSet<&str> = rows.iter().map(|(_, at)| at.as_str()).collect();
    assert_eq!(created.len(), 40);
    let events: i64 = sqlx::query_scalar(
        "select count(*) from events where mission_id = any($1) and type = 'mission_submitted'",
    )
    .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 40, "one mission_submitted each");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_key_repeated_within_one_batch_returns_the_first_mission(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let submitted =
        join_all((0..8).map(|_| store.submit(new_mission(json!({ "same": true }), Some("dup")))))
            .await
            .into_iter()
            .map(|s| s.expect("submitted"))
            .collect::<Vec<_>>();
    assert_eq!(submitted.iter().filter(|s| s.created).count(), 1);
    let ids: HashSet<MissionId> = submitted.iter().map(|s| s.mission.id).collect();
    assert_eq!(ids.len(), 1, "every submission names the one mission");

    // The same key with a different request, in a batch of its own or not, is a conflict.
    let other = store
        .submit(new_mission(json!({ "same": false }), Some("dup")))
        .await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_bad_submission_does_not_fail_its_batch(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    // PostgreSQL stores no NUL in jsonb (the engine refuses it before the store; this goes
    // around it to make one insert fail).
    let mut all = vec![new_mission(json!({ "bad": "a\u{0}b" }), None)];
    all.extend((0..10).map(|i| new_mission(json!({ "i": i }), None)));
    let results = join_all(all.into_iter().map(|new| store.submit(new))).await;
    assert!(
        matches!(results[0], Err(StoreError::Database(_))),
        "{:?}",
        results[0]
    );
    assert!(results[1..]
        .iter()
        .all(|r| r.as_ref().is_ok_and(|s| s.created)));
    let count: i64 = sqlx::query_scalar("select count(*) from missions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 10);
}
