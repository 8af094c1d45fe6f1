//! The global event feed on PostgreSQL: positions, notifications and the horizon.
//!
//! # Positions
//!
//! `events.id` (an identity column) is every event's global position; followers resume "after
//! position N". A statement-level trigger notifies channel `hypercode_events` when a statement
//! appends events; the notification is delivered at commit, to every listening process, so API
//! replicas learn of each other's (and the workers') commits at once. Notifying commits are
//! serialized by Postgres (a cluster-wide lock held through the commit's WAL flush), so each
//! session notifies at most once per [`POLL`], and the follower also runs a round every [`POLL`],
//! which bounds the delay of a commit that did not notify.
//!
//! # The gap problem, and the horizon
//!
//! Positions are drawn when rows are inserted, but transactions commit in any order: a reader
//! can see position 7 committed while position 6 belongs to a transaction still running. A
//! follower that delivered 7 and moved its cursor there would never see 6. So followers read only
//! up to the *horizon*, a position at or below which every event is committed or rolled back for
//! good.
//!
//! Comparing each row's writer xid with the oldest running xid (`txid < pg_snapshot_xmin`) is
//! not enough, because xid order is not position order either: transaction A takes xid 99, B
//! takes xid 100 and inserts position 6, A inserts position 7 and commits while B still runs.
//! Position 7 passes the xid test (99 < 100, the oldest running xid), 6 commits afterwards, and
//! a follower at 7 has skipped it. The horizon is therefore computed the other way round, from
//! the sequence:
//!
//! 1. *Every writer owns its xid before it draws a position.* A `before insert ... for each
//!    statement` trigger calls `pg_current_xact_id()` before any row (hence any id default) of
//!    the statement is formed. The identity has `cache 1`, so an id is drawn from the shared
//!    sequence at the moment it is used.
//! 2. *A candidate:* `events_feed_mark` reads the sequence's last value `L`, then takes an xid
//!    `M` (the marker). Any transaction holding a position `<= L` drew it before `L` was read,
//!    after owning its xid, so that xid is below `M`.
//! 3. *Settling:* a later call reports the oldest running xid `X` (from a fresh snapshot). Once
//!    `X > M`, no transaction with an xid below `M` is running (the marker itself has committed,
//!    so every older xid still running would be listed in the snapshot and bound `X`). Then
//!    every position `<= L` is final and `L` becomes the horizon.
//!
//! One task per process ([`EventFeed::follow_feed`]) runs this protocol and publishes the horizon
//! on a `watch` channel; each follower reads its own pages from the table (`feed_page`) up to the
//! horizon, by its own cursor. So there is one extra connection per process, not per follower; a
//! slow follower only falls behind on its own cursor; and nothing is buffered per follower beyond
//! one page. Rounds run on notifications (at most one per [`MIN_ROUND_INTERVAL`]), every
//! [`POLL`] otherwise, and sooner while a candidate is unsettled (an unrelated transaction, in
//! any database of the cluster, may hold the oldest xid; its end is announced by nothing). A
//! marker costs an xid and a commit record (without a flush wait), and only when positions were
//! handed out since the last one; a round without one is a read-only query.
//!
//! The price of the scheme: a transaction that keeps an xid open for long (anywhere in the
//! cluster) holds the horizon back for as long, delaying followers (never writers), as it
//! delays vacuum. Transactions here are short.

use super::PgStore;
use crate::error::{StoreError, StoreResult};
use crate::event::{Event, EventType};
use crate::ids::MissionId;
use crate::store::EventFeed;
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The notification channel of the `events_feed_notify` trigger.
const CHANNEL: &str = "hypercode_events";

/// The shortest time between two horizon rounds (notifications in between are coalesced). It
/// bounds how often the horizon moves, hence how often each follower reads a page: at most
/// 50 times a second, for a delivery latency of a few tens of milliseconds.
const MIN_ROUND_INTERVAL: Duration = Duration::from_millis(20);

/// The first re-check of an unsettled candidate; it doubles up to [`POLL`].
const FIRST_RECHECK: Duration = Duration::from_millis(10);

/// A round at least this often, even without notifications: the trigger notifies at most once
/// per session in this period (`events_feed_notify`), and a round that finds nothing new costs
/// one read-only query.
const POLL: Duration = Duration::from_millis(50);

/// The wait after a failed round or a broken listener.
const RETRY: Duration = Duration::from_secs(1);

/// How long `follow_feed` waits for its first horizon to settle.
const FIRST_HORIZON_TIMEOUT: Duration = Duration::from_secs(20);

/// Unsettled candidates kept at once; past this, rounds only settle (and take no xid).
const MAX_PENDING: usize = 32;

/// The horizon protocol's state: the settled horizon and the candidates waiting to settle.
#[derive(Debug, Default)]
struct Horizon {
    /// Every position at or below is final; `None` until the first candidate settles.
    settled: Option<i64>,
    /// `(last position, marker xid)`, both increasing.
    pending: VecDeque<(i64, i64)>,
}

impl Horizon {
    /// The `known` argument of the next `events_feed_mark`: a marker is only worth an xid when
    /// positions were handed out beyond the last candidate.
    fn known(&self) -> i64 {
        if self.pending.len() >= MAX_PENDING {
            return i64::MAX;
        }
        self.pending
            .back()
            .map(|&(last, _)| last)
            .or(self.settled)
            .unwrap_or(-1)
    }

    /// Apply one round's reading; returns whether a candidate was added.
    fn observe(&mut self, oldest_xid: i64, last_id: i64, marker: Option<i64>) -> bool {
        while let Some(&(last, candidate)) = self.pending.front() {
            if oldest_xid <= candidate {
                break;
            }
            self.settled = Some(self.settled.map_or(last, |s| s.max(last)));
            self.pending.pop_front();
        }
        match marker {
            Some(marker) if last_id > self.known() => {
                self.pending.push_back((last_id, marker));
                true
            }
            _ => false,
        }
    }

    fn unsettled(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// One round: settle what can be settled, and maybe add a candidate.
async fn round(listener: &mut PgListener, horizon: &mut Horizon) -> StoreResult<bool> {
    let known = horizon.known();
    let row = sqlx::query!(
        r#"select oldest_xid as "oldest_xid!", last_id as "last_id!", marker from events_feed_mark($1)"#,
        known,
    )
    .fetch_one(&mut *listener)
    .await?;
    Ok(horizon.observe(row.oldest_xid, row.last_id, row.marker))
}

/// The follower task: wait for a commit (or a timer), run a round, publish the horizon.
async fn follow(mut listener: PgListener, mut horizon: Horizon, publish: watch::Sender<i64>) {
    let mut recheck = FIRST_RECHECK;
    let mut last_round = Instant::now();
    loop {
        let wait = if horizon.unsettled() { recheck } else { POLL };
        tokio::select! {
            () = publish.closed() => return,
            received = listener.try_recv() => match received {
                Ok(Some(_)) => {}
                // The connection was lost and re-established: notifications may have been
                // missed, and the round below catches up on whatever they announced.
                Ok(None) => tracing::warn!("the event feed's listener reconnected"),
                Err(e) => {
                    tracing::warn!(error = %e, "the event feed's listener failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            },
            () = tokio::time::sleep(wait) => recheck = (recheck * 2).min(POLL),
        }
        tokio::time::sleep_until(last_round + MIN_ROUND_INTERVAL).await;
        // Everything announced so far is covered by the round about to run.
        while listener.next_buffered().is_some() {}
        last_round = Instant::now();
        match round(&mut listener, &mut horizon).await {
            Ok(added) => {
                if added {
                    recheck = FIRST_RECHECK;
                }
                if let Some(settled) = horizon.settled {
                    publish.send_if_modified(|current| {
                        let advanced = settled > *current;
                        if advanced {
                            *current = settled;
                        }
                        advanced
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the event feed's horizon round failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// An `events` row as an [`Event`]. The type is stored as text, which the `events_type_known`
/// constraint limits to [`EventType`]'s names; every read of the history and the feed parses it
/// here, and a name the constraint let through (written by newer code, say) is a
/// [`StoreError::Corrupt`], not a panic.
pub(super) fn to_event(
    seq: i64,
    at: chrono::DateTime<chrono::Utc>,
    kind: String,
    step: Option<String>,
    attempt: Option<i32>,
    data: serde_json::Value,
) -> StoreResult<Event> {
    let kind = kind
        .parse::<EventType>()
        .map_err(|e| StoreError::Corrupt(format!("history event {seq}: {e}")))?;
    Ok(Event {
        seq,
        at,
        kind,
        step,
        attempt,
        data,
    })
}

#[async_trait]
impl EventFeed for PgStore {
    async fn follow_feed(&self) -> StoreResult<watch::Receiver<i64>> {
        // A pool of one, for the listener alone: it reconnects through it, and it never takes a
        // connection from the store's pool.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with((*self.pool().connect_options()).clone())
            .await?;
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        // Listening first: every commit from here on is announced, and the rounds cover the
        // ones before.
        let mut horizon = Horizon::default();
        let deadline = Instant::now() + FIRST_HORIZON_TIMEOUT;
        let mut recheck = FIRST_RECHECK;
        let first = loop {
            round(&mut listener, &mut horizon).await?;
            if let Some(settled) = horizon.settled {
                break settled;
            }
            if Instant::now() > deadline {
                return Err(StoreError::from(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the event feed's horizon did not settle: a transaction has held an xid for too long",
                ))));
            }
            tokio::time::sleep(recheck).await;
            recheck = (recheck * 2).min(Duration::from_millis(200));
        };
        let (publish, receiver) = watch::channel(first);
        tokio::spawn(follow(listener, horizon, publish));
        Ok(receiver)
    }

    async fn feed_head(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"select coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0) as "head!""#
        )
        .fetch_one(self.pool())
        .await?)
    }

    async fn feed_page(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, MissionId, Event)>> {
        let rows = sqlx::query!(
            r#"
            select id, mission_id as "mission_id: MissionId", seq, at, type as "kind", step,
                   attempt, data
            from events where id > $1 and id <= $2
            order by id limit $3
            "#,
            after,
            upto,
            limit,
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let event = to_event(r.seq, r.at, r.kind, r.step, r.attempt, r.data)?;
                Ok((r.id, r.mission_id, event))
            })
            .collect()
    }

    async fn mission_feed_page(
        &self,
        mission: MissionId,
        after: i64,
        after_seq: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, MissionId, Event)>> {
        // The primary key (mission_id, seq) serves this: a mission's events are appended under
        // its row lock, one transaction after the other, so its positions rise with `seq`.
        let rows = sqlx::query!(
            r#"
            select id, seq, at, type as "kind", step, attempt, data
            from events where mission_id = $1 and seq > $2 and id > $3
            order by seq limit $4
            "#,
            mission as MissionId,
            after_seq,
            after,
            limit,
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .take_while(|r| r.id <= upto)
            .map(|r| {
                let event = to_event(r.seq, r.at, r.kind, r.step, r.attempt, r.data)?;
                Ok((r.id, mission, event))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MissionStore, NewMission};
    use sqlx::PgPool;

    #[test]
    fn a_candidate_settles_once_every_older_xid_is_gone() {
        let mut h = Horizon::default();
        assert_eq!(h.known(), -1);
        // Round 1: positions up to 10 handed out, marker xid 100.
        assert!(h.observe(90, 10, Some(100)));
        assert_eq!(h.settled, None);
        assert_eq!(h.known(), 10);
        // Round 2: xid 95 still runs (it may hold a position <= 10); positions up to 12.
        assert!(h.observe(95, 12, Some(105)));
        assert_eq!(h.settled, None);
        // Round 3: the oldest running xid is 101: candidate 1 settles, candidate 2 does not.
        assert!(!h.observe(101, 12, None));
        assert_eq!(h.settled, Some(10));
        assert_eq!(h.known(), 12);
        // Round 4: everything older than 105 is done.
        assert!(!h.observe(200, 12, None));
        assert_eq!(h.settled, Some(12));
        assert!(!h.unsettled());
    }

    #[test]
    fn no_marker_is_kept_without_new_positions_and_pending_is_bounded() {
        let mut h = Horizon::default();
        assert!(h.observe(1, 0, Some(5)));
        assert!(
            !h.observe(2, 0, Some(6)),
            "nothing new since the last candidate"
        );
        for i in 1..100 {
            h.observe(3, i, Some(10 + i));
        }
        assert_eq!(h.pending.len(), MAX_PENDING);
        assert_eq!(
            h.known(),
            i64::MAX,
            "no xid is taken while the queue is full"
        );
        assert_eq!(h.settled, None);
        h.observe(i64::MAX, 200, None);
        assert_eq!(h.settled, Some(i64::try_from(MAX_PENDING).unwrap_or(0) - 1));
    }

    async fn mission(store: &PgStore) -> MissionId {
        let id = MissionId::new();
        store
            .submit(NewMission {
                id,
                workflow: "feed".to_owned(),
                input: serde_json::json!({}),
                idempotency_key: None,
                concurrency_key: None,
                tick: None,
            })
            .await
            .expect("submit");
        id
    }

    async fn append(conn: &mut sqlx::PgConnection, mission: MissionId, seq: i64) -> i64 {
        sqlx::query_scalar::<_, i64>(
            "insert into events (mission_id, seq, type) values ($1, $2, 'step_started') returning id",
        )
        .bind(mission.0)
        .bind(seq)
        .fetch_one(conn)
        .await
        .expect("append an event")
    }

    async fn wait_for(horizon: &mut watch::Receiver<i64>, at_least: i64) -> i64 {
        tokio::time::timeout(
            Duration::from_secs(20),
            horizon.wait_for(|h| *h >= at_least),
        )
        .await
        .expect("the horizon advances")
        .map(|h| *h)
        .expect("the follower is alive")
    }

    /// The classic hole: an older transaction commits a newer position while a younger one
    /// still holds an older position. The horizon must stay below the held position until it
    /// commits, and then the feed delivers both, in position order.
    #[sqlx::test(migrator = "crate::postgres::MIGRATOR")]
    async fn a_position_held_by_a_running_transaction_holds_the_horizon(pool: PgPool) {
        let store = PgStore::new(pool.clone());
        let (a, b) = (mission(&store).await, mission(&store).await);
        let mut horizon = store.follow_feed().await.expect("follow");
        assert_eq!(wait_for(&mut horizon, 2).await, 2);

        // `old` takes its xid first; `young` then draws position 3 and keeps running; `old`
        // draws position 4 and commits.
        let mut old = pool.begin().await.expect("begin");
        let old_xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::bigint")
            .fetch_one(&mut *old)
            .await
            .expect("xid");
        let mut young = pool.begin().await.expect("begin");
        assert_eq!(append(&mut young, a, 2).await, 3);
        let young_xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::bigint")
            .fetch_one(&mut *young)
            .await
            .expect("xid");
        assert_eq!(append(&mut old, b, 2).await, 4);
        old.commit().await.expect("commit");

        // Position 4 is committed and its writer's xid is older than the one holding 3: once
        // nothing older than `young` runs, a `txid < xmin` filter alone would deliver 4 and skip
        // 3 forever.
        assert!(old_xid < young_xid);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = *horizon.borrow();
        assert_eq!(held, 2, "the horizon passed a position still being written");
        let page = store.feed_page(0, held, 10).await.expect("page");
        assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);

        young.commit().await.expect("commit");
        let now = wait_for(&mut horizon, 4).await;
        let page = store.feed_page(2, now, 10).await.expect("page");
        let got: Vec<(i64, MissionId, i64)> = page.iter().map(|e| (e.0, e.1, e.2.seq)).collect();
        assert_eq!(got, [(3, a, 2), (4, b, 2)]);
        assert_eq!(store.feed_head().await.expect("head"), 4);

        // A mission's own page, in seq order, resumable by position.
        let page = store
            .mission_feed_page(a, 0, 0, now, 10)
            .await
            .expect("page");
        assert_eq!(
            page.iter().map(|e| (e.0, e.2.seq)).collect::<Vec<_>>(),
            [(1, 1), (3, 2)]
        );
        let page = store
            .mission_feed_page(a, 1, 0, now, 10)
            .await
            .expect("page");
        assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), [3]);
        let page = store.mission_feed_page(a, 0, 0, 2, 10).await.expect("page");
        assert_eq!(
            page.iter().map(|e| e.0).collect::<Vec<_>>(),
            [1],
            "stops at the horizon"
        );

        drop(horizon);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// A commit that appends events notifies the channel (the first one of a session at once).
    #[sqlx::test(migrator = "crate::postgres::MIGRATOR")]
    async fn appending_events_notifies_listeners(pool: PgPool) {
        let store = PgStore::new(pool.clone());
        let mut listener = PgListener::connect_with(&pool).await.expect("listener");
        listener.listen(CHANNEL).await.expect("listen");
        mission(&store).await;
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification")
            .expect("the listener works");
        assert_eq!(notification.channel(), CHANNEL);
    }

    /// A rolled-back position leaves a hole that is skipped, not waited for.
    #[sqlx::test(migrator = "crate::postgres::MIGRATOR")]
    async fn a_rolled_back_position_does_not_stall_the_feed(pool: PgPool) {
        let store = PgStore::new(pool.clone());
        let a = mission(&store).await;
        let mut horizon = store.follow_feed().await.expect("follow");
        wait_for(&mut horizon, 1).await;
        let mut doomed = pool.begin().await.expect("begin");
        assert_eq!(append(&mut doomed, a, 2).await, 2);
        doomed.rollback().await.expect("rollback");
        let mut conn = pool.acquire().await.expect("connection");
        assert_eq!(append(&mut conn, a, 2).await, 3);
        let now = wait_for(&mut horizon, 3).await;
        let page = store.feed_page(1, now, 10).await.expect("page");
        assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), [3]);
        drop(horizon);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
