//! The CognitiveUplink, `GET /ws/uplink`: a WebSocket on which a client (the dashboard's
//! command panel, or any program) sends commands to the agents and follows them.
//!
//! The handshake is authenticated before the upgrade (`auth::handshake`: a key, or the
//! dashboard's session cookie with this server's `Origin`), so a refused one is a plain 401 or
//! 403. Then, as JSON text frames:
//! - `{"type": "ping"}` → `{"type": "pong"}`;
//! - `{"type": "execute", "payload": {"command", "capability"?}}` submits an `agent_command`
//!   mission (operators and admins) → `{"type": "accepted", "mission": id}`, then
//!   `{"type": "progress", "event": <history event>}` as it advances, then
//!   `{"type": "response", "payload": <its output>}` or `{"type": "error", "data": <message>}`;
//! - `{"type": "follow", "mission": id}` replays a mission's events so far as `progress`
//!   frames, then follows it to its `response` or `error` (a reconnecting client);
//! - anything else → `{"type": "error", "data": <why>}`, and the socket stays open.
//!
//! Several missions may be followed at once on one socket; each has a task of its own that
//! reads the mission's history (the same events `GET /api/v1/missions/{id}/history` shows) and
//! hands frames to the socket's one writer.

use crate::auth::{self, ClientAddress};
use crate::error::ApiError;
use crate::keys::Principal;
use crate::views::EventView;
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use hypercode_engine::{MissionId, MissionStatus, Submission};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a follower looks for new events.
const POLL: Duration = Duration::from_millis(150);

/// Missions one socket may follow at once.
const MAX_FOLLOWED: usize = 64;

/// Largest inbound frame, in bytes.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The route, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/ws/uplink", get(uplink))
}

/// An inbound frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Inbound {
    Ping,
    Execute { payload: Command },
    Follow { mission: String },
}

/// An `execute` frame's payload: the `agent_command` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    command: String,
    capability: Option<String>,
}

/// The upgrade request, when it is one (checked after authentication, so an anonymous caller
/// gets 401 whatever it sends).
struct Upgrade(Result<WebSocketUpgrade, WebSocketUpgradeRejection>);

impl FromRequestParts<AppState> for Upgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state).await,
        ))
    }
}

#[utoipa::path(
    get,
    path = "/ws/uplink",
    tag = "agents",
    description = "The CognitiveUplink, a WebSocket (send `Connection: Upgrade`, `Upgrade: websocket`). Authenticated before the upgrade by an API key (`X-API-Key` or `Authorization: Bearer`) of a role that may read missions, or by the dashboard's session cookie with this server's `Origin`. Inbound JSON text frames: `{\"type\": \"ping\"}`, `{\"type\": \"execute\", \"payload\": {\"command\", \"capability\"?}}` (operators and admins: submits an `agent_command` mission), `{\"type\": \"follow\", \"mission\": id}`. Outbound: `{\"type\": \"pong\"}`, `{\"type\": \"accepted\", \"mission\": id}`, `{\"type\": \"progress\", \"mission\": id, \"event\": <history event>}`, then `{\"type\": \"response\", \"mission\": id, \"payload\": <output>}` or `{\"type\": \"error\", \"mission\": id, \"data\": <message>}`; a malformed frame gets `{\"type\": \"error\", \"data\": ...}` and the socket stays open.",
    responses(
        (status = 101, description = "Switching protocols: the WebSocket is open"),
        (status = 400, description = "Not a WebSocket handshake", content_type = "application/problem+json", body = crate::openapi::ProblemDoc),
    ),
)]
/// `GET /ws/uplink`.
async fn uplink(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: axum::http::HeaderMap,
    Upgrade(upgrade): Upgrade,
) -> Response {
    let principal = match auth::handshake(&state, &headers, client).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let why = format!("not a WebSocket handshake: {}", rejection.body_text());
            return ApiError::InvalidParameter(why).into_response();
        }
    };
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(state, principal, socket))
}

/// Serve one socket until the client closes it or the server shuts down.
async fn serve(state: AppState, principal: Principal, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (frames, mut outbox) = mpsc::channel::<Value>(256);
    let done = state.shutdown.child_token();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut followers = tokio::task::JoinSet::new();
    loop {
        let message = tokio::select! {
            () = done.cancelled() => break,
            Some(_) = followers.join_next(), if !followers.is_empty() => continue,
            message = stream.next() => message,
        };
        let text = match message {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let _ = frames.send(error("frames are JSON text, not binary")).await;
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        let inbound = match serde_json::from_str::<Inbound>(text.as_str()) {
            Ok(inbound) => inbound,
            Err(e) => {
                let why = format!(
                    "malformed frame ({e}); send {{\"type\": \"ping\"}}, {{\"type\": \"execute\", \"payload\": {{\"command\": \"...\"}}}} or {{\"type\": \"follow\", \"mission\": \"<id>\"}}"
                );
                let _ = frames.send(error(why)).await;
                continue;
            }
        };
        let mission = match inbound {
            Inbound::Ping => {
                let _ = frames.send(json!({"type": "pong"})).await;
                continue;
            }
            Inbound::Execute { payload } => execute(&state, &principal, payload).await,
            Inbound::Follow { mission } => existing(&state, &mission).await,
        };
        let mission = match mission {
            Ok(mission) => mission,
            Err(why) => {
                let _ = frames.send(error(why)).await;
                continue;
            }
        };
        if followers.len() >= MAX_FOLLOWED {
            let why = format!("at most {MAX_FOLLOWED} missions are followed at once on one socket");
            let _ = frames.send(error(why)).await;
            continue;
        }
        if let Some(accepted) = mission.1 {
            let _ = frames.send(accepted).await;
        }
        followers.spawn(follow(
            state.clone(),
            mission.0,
            frames.clone(),
            done.clone(),
        ));
    }
    done.cancel();
    followers.shutdown().await;
    drop(frames);
    let _ = writer.await;
}

/// An `error` frame.
fn error(data: impl Into<String>) -> Value {
    json!({"type": "error", "data": data.into()})
}

/// Submit the `agent_command` mission of an `execute` frame; with its `accepted` frame.
async fn execute(
    state: &AppState,
    principal: &Principal,
    payload: Command,
) -> Result<(MissionId, Option<Value>), String> {
    if !auth::may_operate(principal) {
        return Err(format!(
            "executing a command requires the operator or admin role; key `{}` has the {} role",
            principal.name, principal.role
        ));
    }
    let mut input = json!({"command": payload.command});
    if let Some(capability) = payload.capability {
        input["capability"] = Value::String(capability);
    }
    let submitted = state
        .engine
        .submit_mission(Submission {
            workflow: "agent_command".to_owned(),
            input,
            idempotency_key: None,
            concurrency_key: None,
        })
        .await
        .map_err(|e| describe(ApiError::from(e)))?;
    let id = submitted.mission.id;
    tracing::info!(mission = %id, by = %principal.name, "uplink command accepted");
    Ok((id, Some(json!({"type": "accepted", "mission": id}))))
}

/// The mission of a `follow` frame, if it exists.
async fn existing(state: &AppState, id: &str) -> Result<(MissionId, Option<Value>), String> {
    let id: MissionId = id
        .parse()
        .map_err(|_| format!("`{id}` is not a mission id"))?;
    match state.engine.store().mission(id).await {
        Ok(Some(_)) => Ok((id, None)),
        Ok(None) => Err(format!("mission {id} not found")),
        Err(e) => Err(describe(ApiError::from(e))),
    }
}

/// An API error as an `error` frame's text: its detail and the located problems.
fn describe(error: ApiError) -> String {
    error.log();
    let problems = error
        .field_errors()
        .unwrap_or_default()
        .into_iter()
        .map(|p| format!("{}: {}", p.pointer, p.message))
        .collect::<Vec<_>>();
    if problems.is_empty() {
        error.to_string()
    } else {
        format!("{} ({})", error, problems.join("; "))
    }
}

/// Send a mission's events as `progress` frames until it finishes, then its `response` or
/// `error`. The status is read before the events: the events that finish a mission commit
/// with its final status, so once a terminal status is seen the events read after it are all.
async fn follow(
    state: AppState,
    id: MissionId,
    frames: mpsc::Sender<Value>,
    done: CancellationToken,
) {
    let store = state.engine.store().clone();
    let mut after = 0;
    loop {
        let mission = match store.mission(id).await {
            Ok(Some(mission)) => mission,
            Ok(None) => {
                let _ = frames.send(error(format!("mission {id} not found"))).await;
                return;
            }
            Err(e) => {
                tracing::warn!(mission = %id, error = %e, "uplink could not read a mission; retrying");
                tokio::select! {
                    () = done.cancelled() => return,
                    () = tokio::time::sleep(POLL) => continue,
                }
            }
        };
        loop {
            match store.history(id, after, 500).await {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for event in events {
                        after = event.seq;
                        let frame = json!({"type": "progress", "mission": id, "event": EventView::from(event)});
                        if frames.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(mission = %id, error = %e, "uplink could not read a history");
                    break;
                }
            }
        }
        if mission.status.is_terminal() {
            let last = match mission.status {
                MissionStatus::Succeeded => json!({
                    "type": "response",
                    "mission": id,
                    "payload": mission.output.unwrap_or(Value::Null),
                }),
                status => json!({
                    "type": "error",
                    "mission": id,
                    "data": failure(status, mission.error.as_ref()),
                }),
            };
            let _ = frames.send(last).await;
            return;
        }
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The text of a failed or cancelled mission's error.
fn failure(status: MissionStatus, error: Option<&Value>) -> String {
    let message = error.and_then(|e| match e {
        Value::String(text) => Some(text.clone()),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    });
    match (status, message) {
        (MissionStatus::Cancelled, Some(m)) => format!("cancelled: {m}"),
        (MissionStatus::Cancelled, None) => "cancelled".to_owned(),
        (_, Some(m)) => m,
        (_, None) => error.map_or_else(|| "failed".to_owned(), Value::to_string),
    }
}
