//! The CognitiveUplink (`GET /ws/uplink`) end to end, with a tokio-tungstenite client and
//! reference agents as processes: ping/pong, execute → accepted/progress/response, an approval
//! inside a command, malformed frames, refused handshakes, two commands in flight, and following
//! a mission again by id.

mod common;

use common::agents::*;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The uplink's URL on `h`.
fn uplink_url(h: &Harness) -> String {
    format!("{}/ws/uplink", h.base.replacen("http://", "ws://", 1))
}

/// Open the uplink with `headers`; the handshake's error when it is refused.
async fn open_with(h: &Harness, headers: &[(&str, &str)]) -> Result<Socket, WsError> {
    let mut request = uplink_url(h)
        .into_client_request()
        .expect("a WebSocket request");
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// Open the uplink with the admin key.
async fn open(h: &Harness) -> Socket {
    open_with(h, &[("x-api-key", h.key.as_str())])
        .await
        .expect("the uplink opens with a key")
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .expect("send a frame");
}

/// The next JSON text frame (pings and pongs skipped).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a frame within 30 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("a JSON frame");
        }
    }
}

/// Frames until the `response` or `error` of `mission` (other missions' frames included).
async fn until_end(socket: &mut Socket, mission: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        let last = matches!(frame["type"].as_str(), Some("response" | "error"))
            && frame["mission"] == mission;
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

/// The event types of `mission`'s progress frames.
fn progress_of(frames: &[Value], mission: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "progress" && f["mission"] == mission)
        .map(|f| f["event"]["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn accepted(socket: &mut Socket) -> String {
    let frame = next(socket).await;
    assert_eq!(frame["type"], "accepted", "{frame}");
    frame["mission"].as_str().expect("a mission id").to_owned()
}

#[tokio::test]
async fn commands_run_on_agents_over_the_uplink() {
    let (h, _) = deployment(&[]).await;
    let _upper = start_agent(&h, "shouty", &["upper"]).await;
    let _echo = start_agent(&h, "parrot", &["echo", "devops"]).await;
    wait_live(&h, &["shouty", "parrot"]).await;
    let mut socket = open(&h).await;

    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await, json!({"type": "pong"}));

    // A malformed frame is answered, and the socket stays open.
    socket.send(Message::text("{not json")).await.expect("send");
    let error = next(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["data"]
            .as_str()
            .is_some_and(|d| d.contains("malformed")),
        "{error}"
    );
    send(&mut socket, json!({"type": "launch"})).await;
    assert_eq!(next(&mut socket).await["type"], "error");
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await, json!({"type": "pong"}));

    // Execute: accepted, progress, response; the prefix table routes `upper ...`.
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "upper the volume"}}),
    )
    .await;
    let id = accepted(&mut socket).await;
    let frames = until_end(&mut socket, &id).await;
    let last = frames.last().expect("a last frame");
    assert_eq!(last["type"], "response", "{frames:#?}");
    assert_eq!(
        last["payload"],
        json!({"capability": "upper", "agent": "shouty", "output": "UPPER THE VOLUME"})
    );
    let progress = progress_of(&frames, &id);
    assert_eq!(
        progress.first().map(String::as_str),
        Some("mission_submitted"),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|t| t == "step_succeeded"),
        "{progress:?}"
    );
    assert_eq!(
        progress.last().map(String::as_str),
        Some("mission_succeeded"),
        "{progress:?}"
    );

    // Two in flight on one socket: each gets its own accepted and response.
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "whisper", "capability": "upper"}}),
    )
    .await;
    let first = accepted(&mut socket).await;
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "echo hi", "capability": "echo"}}),
    )
    .await;
    let mut frames = Vec::new();
    let second = loop {
        let frame = next(&mut socket).await;
        if frame["type"] == "accepted" {
            break frame["mission"].as_str().expect("id").to_owned();
        }
        frames.push(frame);
    };
    assert_ne!(first, second);
    let mut ends = std::collections::HashMap::new();
    while ends.len() < 2 {
        let frame = next(&mut socket).await;
        if frame["type"] == "response" || frame["type"] == "error" {
            ends.insert(
                frame["mission"].as_str().unwrap_or_default().to_owned(),
                frame,
            );
        }
    }
    assert_eq!(ends[&first]["payload"]["output"], "WHISPER", "{ends:#?}");
    assert_eq!(ends[&second]["payload"]["agent"], "parrot", "{ends:#?}");

    // A command nothing routes ends in an error frame.
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "dance now"}}),
    )
    .await;
    let lost = accepted(&mut socket).await;
    let frames = until_end(&mut socket, &lost).await;
    let last = frames.last().expect("a last frame");
    assert_eq!(last["type"], "error", "{frames:#?}");
    assert!(
        last["data"]
            .as_str()
            .is_some_and(|d| d.contains("no capability handles")),
        "{last}"
    );

    // A client that reconnects follows a mission again by id.
    drop(socket);
    let mut again = open(&h).await;
    send(&mut again, json!({"type": "follow", "mission": id})).await;
    let replay = until_end(&mut again, &id).await;
    assert_eq!(progress_of(&replay, &id), progress);
    assert_eq!(
        replay.last().expect("last")["payload"]["output"],
        "UPPER THE VOLUME"
    );
    send(&mut again, json!({"type": "follow", "mission": "nope"})).await;
    assert_eq!(next(&mut again).await["type"], "error");
}

#[tokio::test]
async fn a_dangerous_command_waits_for_its_approval_inside_the_uplink() {
    let (h, _) = deployment(&[]).await;
    let _ops = start_agent(&h, "ops", &["devops"]).await;
    wait_live(&h, &["ops"]).await;
    let mut socket = open(&h).await;
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "deploy web to prod"}}),
    )
    .await;
    let id = accepted(&mut socket).await;
    loop {
        let frame = next(&mut socket).await;
        if frame["type"] == "progress" && frame["event"]["type"] == "approval_requested" {
            assert_eq!(frame["event"]["step"], "approve", "{frame}");
            break;
        }
        assert_ne!(
            frame["type"], "response",
            "ran without its approval: {frame}"
        );
    }
    let decided = h.decide(&id, "approve", "approve", "ship it").await;
    assert!(decided.status < 300, "{decided:?}");
    let frames = until_end(&mut socket, &id).await;
    let last = frames.last().expect("a last frame");
    assert_eq!(last["type"], "response", "{frames:#?}");
    assert_eq!(last["payload"]["agent"], "ops");
    assert_eq!(last["payload"]["output"]["command"], "deploy web to prod");
    assert!(progress_of(&frames, &id).contains(&"approval_granted".to_owned()));

    // A rejection ends in an error frame.
    send(&mut socket, json!({"type": "execute", "payload": {"command": "drop the database", "capability": "devops"}})).await;
    let id = accepted(&mut socket).await;
    h.wait_until(
        &id,
        "waiting for its approval",
        |m| step_is(m, "approve", "waiting"),
        Duration::from_secs(20),
    )
    .await;
    h.decide(&id, "approve", "reject", "no").await;
    let frames = until_end(&mut socket, &id).await;
    assert_eq!(frames.last().expect("last")["type"], "error", "{frames:#?}");
}

#[tokio::test]
async fn handshakes_without_a_good_credential_are_refused_before_the_upgrade() {
    let (h, _) = deployment(&[]).await;
    let status = |e: WsError| match e {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("not an HTTP refusal: {other}"),
    };
    let anonymous = open_with(&h, &[]).await.expect_err("refused");
    assert_eq!(status(anonymous), 401);
    let wrong = open_with(&h, &[("authorization", "Bearer hc_nope")])
        .await
        .expect_err("refused");
    assert_eq!(status(wrong), 401);
    let agent = agent_key(&h, "someone").await;
    let forbidden = open_with(&h, &[("x-api-key", agent.as_str())])
        .await
        .expect_err("refused");
    assert_eq!(status(forbidden), 403);

    // A viewer may open it and ping, but not execute.
    let viewer = h.create_key("eyes", "viewer").await;
    let bearer = format!("Bearer {viewer}");
    let mut socket = open_with(&h, &[("authorization", bearer.as_str())])
        .await
        .expect("a viewer opens the uplink");
    send(
        &mut socket,
        json!({"type": "execute", "payload": {"command": "upper x"}}),
    )
    .await;
    let refused = next(&mut socket).await;
    assert_eq!(refused["type"], "error");
    assert!(
        refused["data"]
            .as_str()
            .is_some_and(|d| d.contains("operator")),
        "{refused}"
    );

    // The dashboard's session cookie works with this server's Origin only.
    let browser = h.signed_in(&h.key).await;
    let cookie = browser.cookie_header();
    let host = h.base.trim_start_matches("http://").to_owned();
    let own = format!("http://{host}");
    let mut socket = open_with(&h, &[("cookie", cookie.as_str()), ("origin", own.as_str())])
        .await
        .expect("the session opens the uplink from its own origin");
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await["type"], "pong");
    let evil = open_with(
        &h,
        &[
            ("cookie", cookie.as_str()),
            ("origin", "http://evil.example"),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(status(evil), 403);
    let no_origin = open_with(&h, &[("cookie", cookie.as_str())])
        .await
        .expect_err("refused");
    assert_eq!(status(no_origin), 403);
}
