//! The `events.type` column and [`EventType`] agree: the database accepts exactly the engine's
//! event names (the `events_type_known` constraint), and the store reads every stored name back
//! as its variant, turning a name it does not know into a typed error.

use hypercode_engine::postgres::{PgStore, MIGRATOR};
use hypercode_engine::store::{EventFeed, MissionStore, NewMission};
use hypercode_engine::{EventType, MissionId, StoreError};
use serde_json::json;
use sqlx::PgPool;
use std::collections::BTreeSet;

/// A mission with its first event (`mission_submitted`, seq 1) recorded.
async fn submitted(store: &PgStore) -> MissionId {
    let id = MissionId::new();
    store
        .submit(NewMission {
            id,
            workflow: "event-types".into(),
            input: json!({}),
            idempotency_key: None,
            concurrency_key: None,
            tick: None,
        })
        .await
        .unwrap();
    id
}

/// Append an event of type `name` the way no engine code would: by hand, with any name.
async fn append(pool: &PgPool, mission: MissionId, seq: i64, name: &str) -> sqlx::Result<()> {
    sqlx::query("insert into events (mission_id, seq, type) values ($1, $2, $3)")
        .bind(mission.0)
        .bind(seq)
        .bind(name)
        .execute(pool)
        .await
        .map(drop)
}

/// The constraint's list, as PostgreSQL reports it, is exactly `EventType::ALL`: adding a
/// variant without a migration, or a name to the migration without a variant, fails here.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_constraint_lists_exactly_the_event_types(pool: PgPool) {
    let definition: String = sqlx::query_scalar(
        "select pg_get_constraintdef(oid) from pg_constraint \
         where conrelid = 'events'::regclass and conname = 'events_type_known'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // `CHECK ((type = ANY (ARRAY['mission_submitted'::text, ...])))`: the quoted parts.
    let listed: BTreeSet<&str> = definition.split('\'').skip(1).step_by(2).collect();
    let known: BTreeSet<&str> = EventType::ALL.into_iter().map(EventType::as_str).collect();
    assert_eq!(listed, known, "{definition}");
}

/// Every event type is stored and read back as itself, by the history and by both feeds; any
/// other name is refused by the constraint.
#[sqlx::test(migrator = "MIGRATOR")]
async fn every_event_type_is_stored_and_read_back_and_no_other_name(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let id = submitted(&store).await;
    for (seq, kind) in (2..).zip(EventType::ALL) {
        append(&pool, id, seq, kind.as_str()).await.unwrap();
    }
    let mut expected = vec![EventType::MissionSubmitted];
    expected.extend(EventType::ALL);

    let history = store.history(id, 0, 100).await.unwrap();
    assert_eq!(history.iter().map(|e| e.kind).collect::<Vec<_>>(), expected);
    let head = store.feed_head().await.unwrap();
    let feed = store.feed_page(0, head, 100).await.unwrap();
    assert_eq!(feed.iter().map(|e| e.2.kind).collect::<Vec<_>>(), expected);
    let own = store.mission_feed_page(id, 0, 0, head, 100).await.unwrap();
    assert_eq!(own.iter().map(|e| e.2.kind).collect::<Vec<_>>(), expected);

    for name in ["step_exploded", "Step_Started", "step_started ", ""] {
        let refused = append(&pool, id, 100, name).await.unwrap_err();
        let constraint = refused.as_database_error().and_then(|e| e.constraint());
        assert_eq!(constraint, Some("events_type_known"), "{name:?}: {refused}");
    }
}

/// A name the engine does not know (as a newer version's rows would be, were the constraint
/// relaxed) is a `Corrupt` error from every read, never a panic or a silently dropped event.
#[sqlx::test(migrator = "MIGRATOR")]
async fn an_unknown_stored_name_is_a_corrupt_store_error(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let id = submitted(&store).await;
    sqlx::query("alter table events drop constraint events_type_known")
        .execute(&pool)
        .await
        .unwrap();
    append(&pool, id, 2, "step_exploded").await.unwrap();

    let corrupt = |result: Result<_, StoreError>| match result {
        Err(StoreError::Corrupt(message)) => message,
        other => panic!("expected a corrupt value error, got {other:?}"),
    };
    let history = corrupt(store.history(id, 0, 100).await.map(drop));
    assert!(history.contains("step_exploded"), "{history}");
    let head = store.feed_head().await.unwrap();
    corrupt(store.feed_page(0, head, 100).await.map(drop));
    corrupt(store.mission_feed_page(id, 0, 0, head, 100).await.map(drop));
    // The events before it still read.
    let first = store.history(id, 0, 1).await.unwrap();
    assert_eq!(first[0].kind, EventType::MissionSubmitted);
}
