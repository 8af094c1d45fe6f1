//! The reference agent's HTTP side: the agent contract.
//!
//! `POST /execute` takes `{"capability", "command", "input", "mission", "step"}` with
//! `Authorization: Bearer <call secret>` (401 without the right one) and answers
//! `{"output": ...}`: `echo` gives the input back, `upper` the command upper-cased, and any other
//! capability the agent was started with `{"agent", "capability", "command", "input"}`. A
//! capability it does not have is a permanent failure (422). A repeated `Idempotency-Key` gets
//! the first answer again, without running the command twice. `GET /health` answers 200.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Answers remembered per `Idempotency-Key`, the newest.
const REMEMBERED: usize = 10_000;

/// One agent's state.
pub struct Agent {
    name: String,
    capabilities: Vec<String>,
    secret: String,
    in_flight: AtomicU64,
    answers: Mutex<Answers>,
}

/// Answers by idempotency key, oldest first for eviction.
#[derive(Default)]
struct Answers {
    by_key: HashMap<String, (StatusCode, Value)>,
    order: VecDeque<String>,
}

impl Agent {
    /// An agent named `name` serving `capabilities` to callers presenting `secret`.
    pub fn new(name: String, capabilities: Vec<String>, secret: String) -> Self {
        Self {
            name,
            capabilities,
            secret,
            in_flight: AtomicU64::new(0),
            answers: Mutex::default(),
        }
    }

    /// Calls being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn remembered(&self, key: &str) -> Option<(StatusCode, Value)> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.by_key.get(key).cloned()
    }

    fn remember(&self, key: String, answer: (StatusCode, Value)) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.by_key.insert(key.clone(), answer).is_none() {
            answers.order.push_back(key);
        }
        while answers.order.len() > REMEMBERED {
            if let Some(old) = answers.order.pop_front() {
                answers.by_key.remove(&old);
            }
        }
    }

    /// Whether `headers` carry the call secret (compared in constant time).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes())
            .unwrap_or_default();
        let expected = self.secret.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// What the agent answers to a call.
    fn answer(&self, call: &Call) -> (StatusCode, Value) {
        if !self.capabilities.contains(&call.capability) {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": format!(
                    "agent `{}` has no capability `{}` (it has {})",
                    self.name, call.capability, self.capabilities.join(", ")
                )}),
            );
        }
        let output = match call.capability.as_str() {
            "echo" => call.input.clone(),
            "upper" => Value::String(call.command.to_uppercase()),
            other => json!({
                "agent": self.name,
                "capability": other,
                "command": call.command,
                "input": call.input,
            }),
        };
        (StatusCode::OK, json!({ "output": output }))
    }
}

/// The body of `POST /execute`.
#[derive(Debug, Deserialize)]
struct Call {
    capability: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    input: Value,
    /// Part of the contract; the reference agent logs it only.
    #[serde(default)]
    mission: Option<String>,
    /// Likewise.
    #[serde(default)]
    step: Option<String>,
}

/// The agent's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/health", get(health))
        .with_state(agent)
}

async fn health(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(json!({"status": "ok", "agent": agent.name, "capabilities": agent.capabilities}))
}

async fn execute(State(agent): State<Arc<Agent>>, headers: HeaderMap, body: String) -> Response {
    if !agent.authorized(&headers) {
        let error = json!({"error": "missing or wrong call secret (Authorization: Bearer ...)"});
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    }
    let call: Call = match serde_json::from_str(&body) {
        Ok(call) => call,
        Err(e) => {
            let error = json!({"error": format!("the body is not an execute call: {e}")});
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some((status, answer)) = key.as_deref().and_then(|k| agent.remembered(k)) {
        return (status, Json(answer)).into_response();
    }
    agent.in_flight.fetch_add(1, Ordering::Relaxed);
    let answer = agent.answer(&call);
    agent.in_flight.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(
        agent = %agent.name,
        capability = %call.capability,
        mission = ?call.mission,
        step = ?call.step,
        status = %answer.0,
        "executed"
    );
    if let Some(key) = key {
        agent.remember(key, answer.clone());
    }
    (answer.0, Json(answer.1)).into_response()
}
