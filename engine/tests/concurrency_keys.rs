//! Concurrency keys against a real PostgreSQL: missions sharing a key are claimable one at a
//! time, in submission order, whichever worker asks; the reconciler wakes only the head, and a
//! finished head hands the key on to the next mission at once.

use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{
    JournalStore, Lease, MissionChange, MissionQuery, MissionStore, NewMission, Outcome, Transition,
};
use hypercode_engine::MissionError;
use hypercode_engine::{MissionId, WorkerId};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
/// Long enough that the reconciler's redelivery never explains a wake-up in these tests.
const REDELIVER: Duration = Duration::from_secs(3600);

async fn submit(store: &PgStore, key: Option<&str>) -> MissionId {
    let id = MissionId::new();
    store
        .submit(NewMission {
            id,
            workflow: "w".to_owned(),
            input: json!({}),
            idempotency_key: None,
            concurrency_key: key.map(str::to_owned),
            tick: None,
        })
        .await
        .expect("submit");
    id
}

async fn claim(store: &PgStore, id: MissionId, worker: &str) -> Option<Lease> {
    store
        .claim(id, &WorkerId(worker.to_owned()), LEASE)
        .await
        .expect("claim")
        .map(|claim| claim.lease)
}

async fn finish(store: &PgStore, lease: &Lease, outcome: Outcome) {
    store
        .apply(
            lease,
            Transition {
                mission: MissionChange::Finish(outcome),
                steps: vec![],
                events: vec![],
            },
        )
        .await
        .expect("finish under the lease");
}

/// Hand every mission a wake-up now, as the API does on submission.
async fn mark_enqueued(pool: &PgPool) {
    sqlx::query("update missions set enqueued_at = now()")
        .execute(pool)
        .await
        .expect("mark enqueued");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn missions_of_one_key_are_claimed_one_at_a_time_in_submission_order(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let first = submit(&store, Some("deploy:web")).await;
    let second = submit(&store, Some("deploy:web")).await;
    let third = submit(&store, Some("deploy:web")).await;
    let other = submit(&store, Some("deploy:db")).await;
    let free = submit(&store, None).await;

    // Later missions of the key are refused to every worker while the first is live.
    assert!(claim(&store, second, "w1").await.is_none());
    assert!(claim(&store, third, "w2").await.is_none());
    let lease = claim(&store, first, "w1")
        .await
        .expect("the head is claimable");
    assert!(claim(&store, second, "w2").await.is_none(), "the head runs");
    // Other keys and unkeyed missions are not held up.
    assert!(claim(&store, other, "w2").await.is_some());
    assert!(claim(&store, free, "w2").await.is_some());

    finish(&store, &lease, Outcome::Failed(MissionError::new("boom"))).await;
    assert!(claim(&store, third, "w2").await.is_none(), "order is kept");
    let lease = claim(&store, second, "w2")
        .await
        .expect("a failed head hands the key on");
    finish(&store, &lease, Outcome::Succeeded(json!({}))).await;
    assert!(claim(&store, third, "w1").await.is_some());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_workers_claiming_at_once_never_run_two_missions_of_a_key(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let ids = [
        submit(&store, Some("k")).await,
        submit(&store, Some("k")).await,
        submit(&store, Some("k")).await,
    ];
    // Every worker asks for every mission at the same moment, many times over.
    for _ in 0..20 {
        let attempts = ids.iter().flat_map(|id| {
            ["a", "b"].map(|worker| {
                let store = store.clone();
                let id = *id;
                async move { claim(&store, id, worker).await.map(|lease| (id, lease)) }
            })
        });
        let claimed: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .collect();
        let running: i64 = sqlx::query_scalar(
            "select count(*) from missions where concurrency_key = 'k' and status = 'running'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert!(
            running <= 1,
            "{running} missions of one key running at once"
        );
        // Whoever got the head finishes it; the next round races for the next one.
        for (_, lease) in claimed {
            finish(&store, &lease, Outcome::Succeeded(json!({}))).await;
        }
    }
    let finished: i64 = sqlx::query_scalar(
        "select count(*) from missions where concurrency_key = 'k' and status = 'succeeded'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(finished, 3);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_reconciler_wakes_the_head_only_and_the_next_as_soon_as_it_finishes(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let first = submit(&store, Some("k")).await;
    let second = submit(&store, Some("k")).await;
    mark_enqueued(&pool).await;
    assert!(store.due(100, REDELIVER).await.expect("due").is_empty());

    // A lost wake-up: the head is re-sent, the blocked mission is not.
    sqlx::query("update missions set enqueued_at = null")
        .execute(&pool)
        .await
        .expect("lose the wake-ups");
    assert_eq!(store.due(100, REDELIVER).await.expect("due"), [first]);

    let lease = claim(&store, first, "w").await.expect("head");
    assert!(store.due(100, REDELIVER).await.expect("due").is_empty());
    finish(&store, &lease, Outcome::Succeeded(json!({}))).await;
    assert_eq!(
        store.due(100, REDELIVER).await.expect("due"),
        [second],
        "the finished head makes its successor due at once"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_blocked_mission_can_be_cancelled(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let first = submit(&store, Some("k")).await;
    let second = submit(&store, Some("k")).await;
    let lease = claim(&store, first, "w").await.expect("head");
    store
        .request_cancel(second, "tester")
        .await
        .expect("cancel a pending mission");
    let cancelled = claim(&store, second, "w")
        .await
        .expect("a cancelled mission is claimed to finish, whatever is ahead of it");
    finish(
        &store,
        &cancelled,
        Outcome::Cancelled(MissionError::new("cancelled")),
    )
    .await;
    let mission = store.mission(first).await.expect("read").expect("exists");
    assert_eq!(mission.status.as_str(), "running", "the head is untouched");
    finish(&store, &lease, Outcome::Succeeded(json!({}))).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn missions_are_listed_by_concurrency_key(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let keyed = submit(&store, Some("tenant:7")).await;
    submit(&store, Some("tenant:8")).await;
    submit(&store, None).await;
    let listed = store
        .list(&MissionQuery {
            concurrency_key: Some("tenant:7".to_owned()),
            limit: 10,
            ..MissionQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, keyed);
    assert_eq!(listed[0].concurrency_key.as_deref(), Some("tenant:7"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_database_refuses_an_empty_or_overlong_key(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    for bad in [String::new(), "k".repeat(201)] {
        let refused = store
            .submit(NewMission {
                id: MissionId::new(),
                workflow: "w".to_owned(),
                input: json!({}),
                idempotency_key: None,
                concurrency_key: Some(bad.clone()),
                tick: None,
            })
            .await;
        assert!(refused.is_err(), "a {}-character key was stored", bad.len());
    }
}
