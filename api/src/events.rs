//! `GET /api/v1/events`: history events as Server-Sent Events, so dashboards and scripts follow
//! missions live without polling.
//!
//! Each message is `id: <position>`, `event: <type>` (`step_succeeded`, ...) and `data:` the
//! event as JSON (`id`, `mission_id`, `seq`, `at`, `type`, `step`, `attempt`, `data`). The
//! position is global and resumable: a client that reconnects with `Last-Event-ID: N` (browsers'
//! `EventSource` does so by itself), or `?after=N` if it cannot set headers, gets exactly the
//! events after N, with no gap and no repeat. Without a position the stream of all missions
//! starts at "now" (only new events), and the stream of one mission (`?mission=ID`) starts at
//! the beginning of that mission's history: it is bounded, and a client learns a mission's id
//! only once it was submitted, by which time events have been recorded.
//!
//! How it scales: events are read from the table, never kept in memory. One `follow_feed` task
//! per process listens for commits (Postgres `LISTEN`, so events written by workers and other
//! API replicas arrive too) and publishes the *horizon* (see the engine's `postgres::feed`) on
//! a `watch` channel; each client, woken by it, reads its next page by its own cursor. A slow
//! client holds back no one: the channel never blocks its sender, the socket applies
//! backpressure to the page being sent, and a client that falls behind simply reads further
//! back in the table. The process holds one extra database connection, however many clients.
//!
//! Streams end when the process's shutdown token ([`AppState::shutdown`], which the binary
//! cancels on SIGTERM or SIGINT) is cancelled, so graceful shutdown is not held up by clients
//! that would otherwise never hang up; they reconnect elsewhere with `Last-Event-ID`.
//!
//! The `event:` field of a message is its type's wire name, one of [`EventType::ALL`];
//! [`type_names`] gives the dashboard's script that list, to listen to each.

use crate::auth::Reader;
use crate::error::ApiError;
use crate::extract::Query;
use crate::openapi::ProblemDoc;
use crate::views::EventView;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hypercode_engine::store::Store;
use hypercode_engine::{Event, EventType, MissionId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;

/// Events read from the table at a time, per client.
const PAGE: i64 = 500;

/// A comment is sent when nothing else was for this long, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The first wait after a failed read; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// The header browsers send when an `EventSource` reconnects.
const LAST_EVENT_ID: &str = "last-event-id";

/// The route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

/// Every event type's wire name, space-separated: the `event:` fields a stream may carry.
pub(crate) fn type_names() -> String {
    EventType::ALL.map(EventType::as_str).join(" ")
}

/// The feed's horizon, which every stream of this process shares, followed from the first
/// client on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hub(Arc<OnceCell<watch::Receiver<i64>>>);

impl Hub {
    /// Every event at or below the horizon's position is final.
    async fn horizon(&self, store: &Arc<dyn Store>) -> Result<watch::Receiver<i64>, ApiError> {
        self.0
            .get_or_try_init(|| store.follow_feed())
            .await
            .cloned()
            .map_err(ApiError::from)
    }
}

/// The query string; values are parsed by hand so errors name the parameter.
#[derive(Debug, Deserialize)]
struct EventsParams {
    mission: Option<String>,
    after: Option<String>,
}

/// One message's `data`.
#[derive(Debug, Serialize)]
struct FeedEventView {
    /// The global position, also the message's `id`.
    id: i64,
    /// The mission it belongs to.
    mission_id: MissionId,
    /// `seq`, `at`, `type`, `step`, `attempt`, `data`, as in a mission's history.
    #[serde(flatten)]
    event: EventView,
}

/// `GET /api/v1/events?mission=&after=`, with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        ("mission" = Option<uuid::Uuid>, Query, description = "Only this mission's events, from the start of its history unless resumed"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Resume after this event id (for clients that cannot set `Last-Event-ID`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id; wins over `after`"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `id` is the event's global position, `event` its type, `data` the event as JSON (`id`, `mission_id`, `seq`, `at`, `type`, `step`, `attempt`, `data`). The stream stays open.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A parameter is invalid, or the position is past the end of the stream", content_type = "application/problem+json", body = ProblemDoc),
        (status = 404, description = "No such mission", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn events(
    _: Reader,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<EventsParams>,
) -> Result<impl IntoResponse, ApiError> {
    let mission = non_empty(params.mission)
        .map(|raw| {
            raw.parse::<MissionId>().map_err(|e| {
                ApiError::InvalidParameter(format!("`mission` must be a mission id (a UUID): {e}"))
            })
        })
        .transpose()?;
    let resume = resume_position(&headers, params.after)?;
    let store = state.engine.store().clone();
    if let Some((after, from)) = resume {
        let head = store.feed_head().await?;
        if after > head {
            return Err(ApiError::InvalidParameter(format!(
                "{from} {after} is not an event id of this stream: the last one so far is {head}"
            )));
        }
    }
    if let Some(id) = mission {
        if store.mission(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("mission {id} not found")));
        }
    }
    let horizon = state.events.horizon(&store).await?;
    let after = match (resume, mission) {
        (Some((after, _)), _) => after,
        (None, Some(_)) => 0,
        (None, None) => *horizon.borrow(),
    };
    tracing::debug!(?mission, after, "event stream opened");
    let follower = Follower {
        store,
        horizon,
        shutdown: state.shutdown,
        mission,
        after,
        after_seq: 0,
        read_upto: after,
        page: VecDeque::new(),
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok((
        // Reverse proxies (nginx) would otherwise buffer the stream.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

/// The position to resume after: `Last-Event-ID` (sent by a reconnecting `EventSource`, so it
/// wins over a stale `?after=` in the URL), else `?after=`; with the name of its source.
fn resume_position(
    headers: &HeaderMap,
    after: Option<String>,
) -> Result<Option<(i64, &'static str)>, ApiError> {
    let parse = |raw: &str, from: &'static str| {
        raw.parse::<i64>()
            .ok()
            .filter(|position| *position >= 0)
            .map(|position| (position, from))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "{from} must be an event id from this stream (a non-negative integer); got `{raw}`"
                ))
            })
    };
    if let Some(value) = headers.get(LAST_EVENT_ID) {
        let raw = value.to_str().map_err(|_| {
            ApiError::InvalidParameter(
                "`Last-Event-ID` must be an event id from this stream (a non-negative integer)"
                    .to_owned(),
            )
        })?;
        // An empty value means "no event yet" (what EventSource sends before its first id).
        if !raw.trim().is_empty() {
            return parse(raw.trim(), "`Last-Event-ID`").map(Some);
        }
    }
    non_empty(after)
        .map(|raw| parse(&raw, "`after`"))
        .transpose()
}

/// Empty query values (`?after=`) mean "not given", as HTML forms send them.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// One client's stream: its cursor, and the page it is sending.
struct Follower {
    store: Arc<dyn Store>,
    horizon: watch::Receiver<i64>,
    /// Ends the stream when the process stops.
    shutdown: CancellationToken,
    /// Only this mission's events.
    mission: Option<MissionId>,
    /// The position of the last event sent (or the starting point).
    after: i64,
    /// The `seq` of the last event sent, for a mission's stream.
    after_seq: i64,
    /// Every event at or below this position has been read (into `page` or sent).
    read_upto: i64,
    /// Read, not yet sent.
    page: VecDeque<(i64, MissionId, Event)>,
}

impl Follower {
    /// The next message, waiting as long as it takes; `None` when the process is stopping.
    async fn next(&mut self) -> Option<sse::Event> {
        let mut retry = FIRST_RETRY;
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            if let Some((position, mission, event)) = self.page.pop_front() {
                self.after = position;
                self.after_seq = event.seq;
                return Some(message(position, mission, event));
            }
            let upto = *self.horizon.borrow_and_update();
            if upto > self.read_upto {
                match self.read(upto).await {
                    Ok(page) => {
                        // A short page means everything up to the horizon has been read.
                        if (page.len() as i64) < PAGE {
                            self.read_upto = upto;
                        }
                        self.page = page.into();
                        retry = FIRST_RETRY;
                        continue;
                    }
                    Err(e) => {
                        // The stream has started: there is no status left to answer with, so
                        // the read is retried (keep-alives go on meanwhile).
                        tracing::warn!(error = %e, "event stream read failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(retry) => {}
                            () = self.shutdown.cancelled() => return None,
                        }
                        retry = (retry * 2).min(MAX_RETRY);
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = self.horizon.changed() => {
                    if changed.is_err() {
                        // The feed's follower is gone; end, and the client reconnects.
                        return None;
                    }
                }
                () = self.shutdown.cancelled() => return None,
            }
        }
    }

    async fn read(
        &self,
        upto: i64,
    ) -> Result<Vec<(i64, MissionId, Event)>, hypercode_engine::StoreError> {
        match self.mission {
            None => self.store.feed_page(self.after, upto, PAGE).await,
            Some(mission) => {
                self.store
                    .mission_feed_page(mission, self.after, self.after_seq, upto, PAGE)
                    .await
            }
        }
    }
}

/// The SSE message of one event: `id`, `event`, `data`.
fn message(position: i64, mission: MissionId, event: Event) -> sse::Event {
    let message = sse::Event::default()
        .id(position.to_string())
        .event(event.kind.as_str());
    let data = FeedEventView {
        id: position,
        mission_id: mission,
        event: event.into(),
    };
    // Serializing strings, numbers and JSON values cannot fail.
    message.data(serde_json::to_string(&data).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(last_event_id: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = last_event_id {
            if let Ok(value) = value.parse() {
                headers.insert(LAST_EVENT_ID, value);
            }
        }
        headers
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let position = |h: Option<&str>, q: Option<&str>| {
            resume_position(&headers(h), q.map(str::to_owned))
                .map(|p| p.map(|(position, _)| position))
                .map_err(|e| e.to_string())
        };
        assert_eq!(position(None, None), Ok(None));
        assert_eq!(position(Some("7"), None), Ok(Some(7)));
        assert_eq!(position(Some(" 7 "), Some("3")), Ok(Some(7)));
        assert_eq!(position(None, Some("3")), Ok(Some(3)));
        assert_eq!(position(Some(""), Some("3")), Ok(Some(3)));
        assert_eq!(position(None, Some("")), Ok(None));
        assert_eq!(position(Some("0"), None), Ok(Some(0)));
        for bad in ["-1", "x", "1.5", "99999999999999999999"] {
            let header = position(Some(bad), None);
            assert!(
                header.as_ref().is_err_and(|e| e.contains("Last-Event-ID")),
                "{bad}: {header:?}"
            );
            let query = position(None, Some(bad));
            assert!(
                query.as_ref().is_err_and(|e| e.contains("`after`")),
                "{bad}: {query:?}"
            );
        }
    }

    #[test]
    fn a_message_carries_the_position_the_type_and_the_event() {
        let mission = MissionId::new();
        let event = Event {
            seq: 3,
            at: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            kind: EventType::StepSucceeded,
            step: Some("a".to_owned()),
            attempt: Some(1),
            data: serde_json::json!({ "output": 1 }),
        };
        let data = serde_json::to_value(FeedEventView {
            id: 42,
            mission_id: mission,
            event: event.clone().into(),
        })
        .unwrap_or_default();
        assert_eq!(
            data,
            serde_json::json!({
                "id": 42, "mission_id": mission.to_string(), "seq": 3,
                "at": "2025-11-24T16:00:00Z", "type": "step_succeeded", "step": "a",
                "attempt": 1, "data": { "output": 1 }
            })
        );
        // The wire form, as axum renders it.
        let _ = message(42, mission, event);
    }

    /// A stream waiting for new events ends once the process's shutdown token is cancelled,
    /// so the server's graceful shutdown is not held up by it.
    #[tokio::test]
    async fn a_waiting_stream_ends_on_shutdown() {
        // The store is never read: the horizon does not move past the stream's cursor.
        let unused = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/never")
            .expect("a lazy pool connects to nothing");
        let (_publish, horizon) = watch::channel(5);
        let shutdown = CancellationToken::new();
        let mut follower = Follower {
            store: Arc::new(hypercode_engine::postgres::PgStore::new(unused)),
            horizon,
            shutdown: shutdown.clone(),
            mission: None,
            after: 5,
            after_seq: 0,
            read_upto: 5,
            page: VecDeque::new(),
        };
        let stream = tokio::spawn(async move { follower.next().await.is_none() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !stream.is_finished(),
            "with nothing to send, the stream waits"
        );
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), stream).await;
        assert!(
            matches!(ended, Ok(Ok(true))),
            "the stream ended on shutdown: {ended:?}"
        );
    }
}
