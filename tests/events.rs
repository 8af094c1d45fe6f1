//! `GET /api/v1/events`: the live, resumable SSE stream of history events, end to end: one
//! mission's stream in order, the stream of all missions from "now", events written by a worker
//! reaching a second API replica, resumption with `Last-Event-ID` (and `?after=`) without gaps
//! or repeats, and the errors.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn plan() -> Value {
    json!([
        { "name": "a", "noop": { "n": 1 } },
        { "name": "nap", "sleep": { "ms": 200 } },
        { "name": "b", "noop": { "n": 2 } }
    ])
}

fn succeeded(id: &str) -> impl Fn(&SseMessage) -> bool + '_ {
    move |m| m.event == "mission_succeeded" && m.data["mission_id"] == id
}

/// `(seq, type, step)` of history events (REST) and of messages, for comparing the two.
fn history_keys(history: &[Value]) -> Vec<(i64, String, Value)> {
    history
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap_or(-1),
                e["type"].as_str().unwrap_or("").to_owned(),
                e["step"].clone(),
            )
        })
        .collect()
}

fn message_keys(messages: &[&SseMessage]) -> Vec<(i64, String, Value)> {
    messages
        .iter()
        .map(|m| {
            (
                m.data["seq"].as_i64().unwrap_or(-1),
                m.event.clone(),
                m.data["step"].clone(),
            )
        })
        .collect()
}

/// Every message is well formed: `id` and `event` repeat `data.id` and `data.type`, and the
/// data has exactly the documented fields.
fn assert_well_formed(messages: &[SseMessage]) {
    for m in messages {
        assert_eq!(m.data["id"].as_i64(), Some(m.position()), "{m:?}");
        assert_eq!(m.data["type"].as_str(), Some(m.event.as_str()), "{m:?}");
        let mut keys: Vec<&str> = m
            .data
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "attempt",
                "data",
                "id",
                "mission_id",
                "seq",
                "step",
                "type"
            ],
            "{m:?}"
        );
    }
}

fn assert_increasing(messages: &[SseMessage]) {
    let positions: Vec<i64> = messages.iter().map(SseMessage::position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions are not increasing: {positions:?}"
    );
}

/// `?mission=ID` without a position: the mission's whole history, in seq order, then live,
/// ending with `mission_succeeded`; the same events as its REST history.
#[tokio::test]
async fn a_missions_stream_delivers_its_history_in_order() {
    let h = Harness::start().await;
    let id = id_of(&h.submit(plan()).await);
    let mut stream =
        EventStream::open(&h, &h.base, &format!("/api/v1/events?mission={id}"), None).await;
    let messages = stream.until(succeeded(&id)).await;
    assert_well_formed(&messages);
    assert_increasing(&messages);
    assert!(messages.iter().all(|m| m.data["mission_id"] == id.as_str()));
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m.data["seq"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        seqs,
        (1..=messages.len() as i64).collect::<Vec<_>>(),
        "{messages:#?}"
    );
    assert_eq!(messages[0].event, "mission_submitted");
    let history = h.history(&id).await;
    assert_eq!(
        message_keys(&messages.iter().collect::<Vec<_>>()),
        history_keys(&history)
    );
    for name in ["a", "b"] {
        assert!(
            messages
                .iter()
                .any(|m| m.event == "step_succeeded" && m.data["step"] == name),
            "no step_succeeded({name}): {messages:#?}"
        );
    }
    // The stream stays open after the end; nothing more comes for a finished mission.
    assert!(stream.quiet_for(Duration::from_millis(300)).await.is_none());
}

/// The stream of all missions starts at "now": an earlier mission's events are not replayed,
/// and two missions running at once arrive interleaved, each in its own seq order.
#[tokio::test]
async fn the_stream_of_all_missions_starts_now() {
    let h = Harness::start().await;
    let earlier = id_of(&h.submit(json!([{ "name": "a", "noop": 1 }])).await);
    h.wait_terminal(&earlier, "succeeded", secs(20)).await;

    let mut stream = EventStream::open(&h, &h.base, "/api/v1/events", None).await;
    let first = id_of(&h.submit(plan()).await);
    let second = id_of(&h.submit(plan()).await);
    let mut messages = Vec::new();
    let mut done = 0;
    while done < 2 {
        let m = stream.next(secs(30)).await;
        if m.event == "mission_succeeded" {
            done += 1;
        }
        messages.push(m);
    }
    assert_well_formed(&messages);
    assert_increasing(&messages);
    assert!(
        messages
            .iter()
            .all(|m| m.data["mission_id"] != earlier.as_str()),
        "an earlier mission was replayed: {messages:#?}"
    );
    for id in [&first, &second] {
        let mine: Vec<&SseMessage> = messages
            .iter()
            .filter(|m| m.data["mission_id"] == id.as_str())
            .collect();
        assert_eq!(
            message_keys(&mine),
            history_keys(&h.history(id).await),
            "mission {id}"
        );
    }
}

/// A second API process, which writes nothing, streams the events that serve #1 (the
/// submission) and the worker (everything else) commit: Postgres LISTEN/NOTIFY fans out.
#[tokio::test]
async fn events_reach_another_api_replica() {
    let mut h = Harness::start().await;
    let second = h.start_another_serve().await;
    let mut stream = EventStream::open(&h, &second, "/api/v1/events", None).await;
    let id = id_of(&h.submit(plan()).await);
    let messages = stream.until(succeeded(&id)).await;
    assert_well_formed(&messages);
    let history = h.history(&id).await;
    assert_eq!(
        message_keys(&messages.iter().collect::<Vec<_>>()),
        history_keys(&history)
    );
    // And a mission's stream on #2 resumes where #1's left off.
    let mut on_first =
        EventStream::open(&h, &h.base, &format!("/api/v1/events?mission={id}"), None).await;
    let head = on_first.until(|m| m.data["seq"] == 2).await;
    drop(on_first);
    let last = head.last().map(|m| m.id.clone()).unwrap_or_default();
    let mut on_second = EventStream::open(
        &h,
        &second,
        &format!("/api/v1/events?mission={id}"),
        Some(&last),
    )
    .await;
    let rest = on_second.until(succeeded(&id)).await;
    let all: Vec<&SseMessage> = head.iter().chain(rest.iter()).collect();
    assert_eq!(message_keys(&all), history_keys(&history));
}

/// Read some events, hang up, reconnect with `Last-Event-ID`: exactly the following events,
/// no gap, no repeat; `?after=` does the same, and the header wins over a stale `?after=`.
#[tokio::test]
async fn a_stream_resumes_after_the_last_event_id() {
    let h = Harness::start().await;
    let mut stream = EventStream::open(&h, &h.base, "/api/v1/events", None).await;
    let id = id_of(&h.submit(plan()).await);
    let mut head = Vec::new();
    for _ in 0..3 {
        head.push(stream.next(secs(30)).await);
    }
    drop(stream);
    h.wait_terminal(&id, "succeeded", secs(20)).await;
    let history = h.history(&id).await;
    assert!(history.len() > 4, "{}", describe_history(&history));
    let last = head[2].id.clone();

    let mut resumed = EventStream::open(&h, &h.base, "/api/v1/events", Some(&last)).await;
    let rest = resumed.until(succeeded(&id)).await;
    assert_eq!(rest[0].data["seq"], 4, "{rest:#?}");
    let all: Vec<SseMessage> = head.iter().chain(rest.iter()).cloned().collect();
    assert_well_formed(&all);
    assert_increasing(&all);
    assert_eq!(
        message_keys(&all.iter().collect::<Vec<_>>()),
        history_keys(&history)
    );
    assert!(resumed
        .quiet_for(Duration::from_millis(300))
        .await
        .is_none());

    // `?after=` for clients that cannot set headers.
    let mut by_query =
        EventStream::open(&h, &h.base, &format!("/api/v1/events?after={last}"), None).await;
    let again = by_query.until(succeeded(&id)).await;
    assert_eq!(
        again.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        rest.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
    );

    // A reconnecting EventSource keeps its URL: the header is the newer position.
    let mut both = EventStream::open(&h, &h.base, "/api/v1/events?after=0", Some(&last)).await;
    assert_eq!(both.next(secs(10)).await.id, rest[0].id);

    // From the very beginning, filtered to the mission.
    let mut replay = EventStream::open(
        &h,
        &h.base,
        &format!("/api/v1/events?mission={id}&after=0"),
        None,
    )
    .await;
    let replayed = replay.until(succeeded(&id)).await;
    assert_eq!(
        message_keys(&replayed.iter().collect::<Vec<_>>()),
        history_keys(&history)
    );
    // Resuming a mission's stream in the middle.
    let mut middle = EventStream::open(
        &h,
        &h.base,
        &format!("/api/v1/events?mission={id}"),
        Some(&last),
    )
    .await;
    assert_eq!(middle.next(secs(10)).await.id, rest[0].id);
}

/// Many missions at once on two workers (so events commit in concurrent, batched transactions
/// from three processes), followed on two streams: every event arrives exactly once, in
/// position order, each mission's in seq order; a third stream resumed in the middle gets
/// exactly the rest.
#[tokio::test]
async fn concurrent_missions_arrive_complete_on_every_stream() {
    let mut h = Harness::with(Options {
        workers: 2,
        worker_concurrency: Some(8),
        ..Options::default()
    })
    .await;
    let second = h.start_another_serve().await;
    let mut on_first = EventStream::open(&h, &h.base, "/api/v1/events", None).await;
    let mut on_second = EventStream::open(&h, &second, "/api/v1/events", None).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        let steps = json!([
            { "name": "a", "noop": i },
            { "name": "b", "sleep": { "ms": 50 } },
            { "name": "c", "noop": i }
        ]);
        ids.push(id_of(&h.submit(steps).await));
    }
    let mut histories = Vec::new();
    for id in &ids {
        h.wait_terminal(id, "succeeded", secs(60)).await;
        histories.push(h.history(id).await);
    }
    let total: usize = histories.iter().map(Vec::len).sum();
    for stream in [&mut on_first, &mut on_second] {
        let mut messages = Vec::new();
        while messages.len() < total {
            messages.push(stream.next(secs(30)).await);
        }
        assert_well_formed(&messages);
        assert_increasing(&messages);
        for (id, history) in ids.iter().zip(&histories) {
            let mine: Vec<&SseMessage> = messages
                .iter()
                .filter(|m| m.data["mission_id"] == id.as_str())
                .collect();
            assert_eq!(message_keys(&mine), history_keys(history), "mission {id}");
        }
        assert!(stream.quiet_for(Duration::from_millis(300)).await.is_none());
    }
    // Resume the whole feed from its middle.
    let mut all = EventStream::open(&h, &h.base, "/api/v1/events?after=0", None).await;
    let mut everything = Vec::new();
    while everything.len() < total {
        everything.push(all.next(secs(30)).await);
    }
    let middle = everything[total / 2].clone();
    let mut resumed = EventStream::open(&h, &second, "/api/v1/events", Some(&middle.id)).await;
    let mut rest = Vec::new();
    while rest.len() < total - total / 2 - 1 {
        rest.push(resumed.next(secs(30)).await);
    }
    assert_eq!(
        rest.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        everything[total / 2 + 1..]
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>()
    );
    assert!(resumed
        .quiet_for(Duration::from_millis(300))
        .await
        .is_none());
}

/// Bad parameters are 400 problems, an unknown mission 404, no key 401; a viewer may follow.
#[tokio::test]
async fn bad_requests_are_refused() {
    let h = Harness::start().await;
    let id = id_of(&h.submit(json!([{ "name": "a", "noop": 1 }])).await);
    h.wait_terminal(&id, "succeeded", secs(20)).await;
    let get = |path: &str| h.request(reqwest::Method::GET, path);

    for path in [
        "/api/v1/events?mission=nope",
        "/api/v1/events?mission=123",
        "/api/v1/events?after=x",
        "/api/v1/events?after=-1",
        "/api/v1/events?after=1.5",
        "/api/v1/events?after=999999999",
    ] {
        let reply = h.send(get(path)).await;
        reply.problem(400);
    }
    for last_event_id in ["abc", "-3", "1e3", "999999999"] {
        let reply = h
            .send(get("/api/v1/events").header("Last-Event-ID", last_event_id))
            .await;
        let body = reply.problem(400);
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("Last-Event-ID"),
            "{body}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    h.send(get(&format!("/api/v1/events?mission={unknown}")))
        .await
        .problem(404);

    let anonymous = h.send(h.http.get(h.url("/api/v1/events"))).await;
    anonymous.problem(401);
    let wrong = h
        .send(
            h.http
                .get(h.url("/api/v1/events"))
                .header("X-API-Key", "hc_nope"),
        )
        .await;
    wrong.problem(401);

    let viewer = h.create_key("watcher", "viewer").await;
    let mut stream = EventStream::open_as(
        &viewer,
        &h.base,
        &format!("/api/v1/events?mission={id}"),
        None,
    )
    .await;
    assert_eq!(stream.next(secs(10)).await.event, "mission_submitted");
}
