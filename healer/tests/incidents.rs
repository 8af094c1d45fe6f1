//! The incident store against a real PostgreSQL: how failures open, continue and escalate
//! incidents, and that a failure seen many times at once counts once.

use hypercode_engine::postgres::MIGRATOR;
use hypercode_engine::StoreError;
use hypercode_healer::{
    Cause, Failure, HealPolicy, Incident, IncidentFilter, IncidentStatus, IncidentStore, Verdict,
};
use sqlx::PgPool;
use std::time::Duration;

fn failure(container: &str, finished_at: &str) -> Failure {
    Failure {
        container_id: format!("{container}0123456789abcdef"),
        container_name: container.to_owned(),
        cause: Cause::Exited,
        finished_at: finished_at.to_owned(),
    }
}

/// The heal a verdict asks for: (incident, attempt, delay, first).
fn heal(verdict: Verdict) -> (Incident, u32, Duration, bool) {
    match verdict {
        Verdict::Heal {
            incident,
            attempt,
            delay,
            first,
        } => (incident, attempt, delay, first),
        other => panic!("expected a heal, got {other:?}"),
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn failures_open_continue_then_escalate_an_incident_until_resolved(pool: PgPool) {
    let store = IncidentStore::new(pool);
    let policy = HealPolicy {
        max_attempts: 3,
        window: Duration::from_secs(600),
    };
    let record = |f: Failure| {
        let (store, policy) = (store.clone(), policy);
        async move { store.record_failure(&f, &policy).await.expect("record") }
    };
    let (first, attempt, delay, new) = heal(record(failure("web", "t1")).await);
    assert_eq!((attempt, delay, new), (1, Duration::ZERO, true));
    assert_eq!(first.status, IncidentStatus::Open);
    assert_eq!(first.attempts, 1);
    // The same failure again (another replica, the sweep): nothing changes.
    let (again, attempt, _, new) = heal(record(failure("web", "t1")).await);
    assert_eq!(
        (again.id, again.attempts, attempt, new),
        (first.id, 1, 1, false)
    );
    assert!(store.mark_healed(first.id).await.expect("heal"));
    // A new failure within the window continues it, back to open, after a backoff.
    let (second, attempt, delay, _) = heal(record(failure("web", "t2")).await);
    assert_eq!((second.id, second.status), (first.id, IncidentStatus::Open));
    assert_eq!((attempt, delay), (2, Duration::from_secs(1)));
    let (_, attempt, delay, _) = heal(record(failure("web", "t3")).await);
    assert_eq!((attempt, delay), (3, Duration::from_secs(2)));
    // The failure after max_attempts heals escalates it, once.
    match record(failure("web", "t4")).await {
        Verdict::Escalated { incident, now } => {
            assert!(now);
            assert_eq!(
                (incident.status, incident.attempts),
                (IncidentStatus::Escalated, 3)
            );
        }
        other => panic!("expected an escalation, got {other:?}"),
    }
    assert!(matches!(
        record(failure("web", "t5")).await,
        Verdict::Escalated { now: false, .. }
    ));
    assert!(
        !store.mark_healed(first.id).await.expect("heal"),
        "escalated stays escalated"
    );
    // Resolved, the container is healed again, under a new incident.
    let resolved = store
        .resolve(first.id, "ops", Some("fixed"))
        .await
        .expect("resolve");
    assert_eq!(resolved.status, IncidentStatus::Resolved);
    assert!(matches!(
        store.resolve(first.id, "ops", None).await,
        Err(StoreError::Conflict(_))
    ));
    let (next, attempt, _, _) = heal(record(failure("web", "t5")).await);
    assert_ne!(next.id, first.id);
    assert_eq!(attempt, 1);
    let unknown = hypercode_healer::IncidentId(uuid::Uuid::now_v7());
    assert!(matches!(
        store.resolve(unknown, "ops", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get(unknown).await.expect("get"), None);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failure_after_a_healed_window_opens_a_new_incident(pool: PgPool) {
    let store = IncidentStore::new(pool);
    let policy = HealPolicy {
        max_attempts: 5,
        window: Duration::from_secs(1),
    };
    let (first, ..) = heal(
        store
            .record_failure(&failure("db", "t1"), &policy)
            .await
            .expect("record"),
    );
    store.mark_healed(first.id).await.expect("heal");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (second, attempt, delay, _) = heal(
        store
            .record_failure(&failure("db", "t2"), &policy)
            .await
            .expect("record"),
    );
    assert_ne!(second.id, first.id);
    assert_eq!((attempt, delay), (1, Duration::ZERO));
    // An incident still being healed is continued, however long ago it failed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (third, attempt, ..) = heal(
        store
            .record_failure(&failure("db", "t3"), &policy)
            .await
            .expect("record"),
    );
    assert_eq!((third.id, attempt), (second.id, 2));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn one_failure_recorded_at_once_by_many_counts_once(pool: PgPool) {
    let store = IncidentStore::new(pool);
    let policy = HealPolicy::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.record_failure(&failure("api", "t1"), &policy).await })
        })
        .collect();
    let mut firsts = 0;
    for task in tasks {
        let (incident, attempt, _, first) = heal(task.await.expect("join").expect("record"));
        assert_eq!((incident.attempts, attempt), (1, 1));
        firsts += usize::from(first);
    }
    assert_eq!(firsts, 1);
    let all = store
        .list(&IncidentFilter {
            limit: 10,
            ..IncidentFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn lists_filter_by_status_and_container_newest_first(pool: PgPool) {
    let store = IncidentStore::new(pool);
    let policy = HealPolicy::default();
    for name in ["a", "b"] {
        store
            .record_failure(&failure(name, "t1"), &policy)
            .await
            .expect("record");
    }
    let filter = |status, container: Option<&str>| IncidentFilter {
        status,
        container: container.map(str::to_owned),
        limit: 10,
    };
    let names = |list: Vec<Incident>| {
        list.into_iter()
            .map(|i| i.container_name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list(&filter(None, None)).await.expect("list")),
        ["b", "a"]
    );
    assert_eq!(
        names(store.list(&filter(None, Some("a"))).await.expect("list")),
        ["a"]
    );
    // By id prefix too.
    assert_eq!(
        names(
            store
                .list(&filter(None, Some("b0123")))
                .await
                .expect("list")
        ),
        ["b"]
    );
    let healed = filter(Some(IncidentStatus::Healed), None);
    assert!(store.list(&healed).await.expect("list").is_empty());
}
