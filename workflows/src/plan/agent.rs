//! The agent action: one attempt of a plan step of kind `agent`, routed to a live agent with
//! the step's capability and classified for the retry policy.
//!
//! Each attempt asks the directory again, so a retry after an agent went down or timed out is
//! routed afresh: to another live agent with the capability when there is one. Agents that
//! failed that way lately go last in this process's choice until their heartbeat key could
//! have expired, so a retry does not pick a dead agent again while its key is still alive.

use hypercode_agents::{AgentDirectory, Endpoint};
use hypercode_engine::StepError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest an agent call may take, in seconds.
pub(crate) const MAX_AGENT_TIMEOUT_S: f64 = 3600.0;

/// How long an agent that failed to answer goes last (the default heartbeat TTL).
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Largest answer kept as a step's output.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Calls a live agent that has `capability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "agent",
    description = "Calls a live agent with the capability (fewest calls in flight, ties taking turns): POST <agent>/execute. Output {\"agent\": name, \"output\": <its answer's output>}. An agent down, timing out or answering 5xx is a retryable failure, and the retry picks again; 4xx fails the step. `command` and `input` may reference earlier outputs."
)]
pub struct AgentSpec {
    /// The capability to route by.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub capability: String,
    /// The command, free text.
    #[serde(default)]
    pub command: String,
    /// Any JSON handed to the agent.
    #[serde(default)]
    pub input: Value,
    /// Seconds one attempt may take.
    #[serde(default = "default_timeout_s")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = MAX_AGENT_TIMEOUT_S))]
    pub timeout_s: f64,
}

fn default_timeout_s() -> f64 {
    60.0
}

/// How a run calls agents: the directory, the HTTP client and the agents that failed lately.
#[derive(Clone)]
pub(crate) struct AgentCaller {
    directory: Arc<dyn AgentDirectory>,
    http: reqwest::Client,
    suspects: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for AgentCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCaller")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl AgentCaller {
    /// Calls through `directory`. Agents are registered by admins, so their addresses are not
    /// subject to the plans' egress policy; redirects are not followed (an agent answers itself).
    pub(crate) fn new(directory: Arc<dyn AgentDirectory>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hypercode/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            directory,
            http,
            suspects: Arc::default(),
        }
    }

    /// Make one attempt of `spec` (resolved) for step `step` of `mission`, with `key` as its
    /// `Idempotency-Key`.
    pub(crate) async fn call(
        &self,
        spec: &AgentSpec,
        mission: &str,
        step: &str,
        key: &str,
    ) -> Result<Value, StepError> {
        let agents = self
            .directory
            .live_with(&spec.capability)
            .await
            .map_err(|e| StepError::retryable(format!("could not read the agent registry: {e}")))?;
        let agent = self.choose(agents).ok_or_else(|| {
            StepError::retryable(format!(
                "no live agent with capability \"{}\"",
                spec.capability
            ))
        })?;
        let body = json!({
            "capability": spec.capability,
            "command": spec.command,
            "input": spec.input,
            "mission": mission,
            "step": step,
        });
        let timeout = Duration::from_secs_f64(spec.timeout_s);
        let sent = self
            .http
            .post(format!("{}/execute", agent.url))
            .timeout(timeout)
            .header("Idempotency-Key", key)
            .bearer_auth(&agent.call_secret)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                self.suspect(&agent.name);
                let kind = if e.is_timeout() {
                    format!("did not answer within {} s", spec.timeout_s)
                } else if e.is_connect() {
                    "could not be reached".to_owned()
                } else {
                    "failed".to_owned()
                };
                return Err(StepError::retryable(format!(
                    "agent `{}` {kind}: {}",
                    agent.name,
                    e.without_url()
                )));
            }
        };
        let status = response.status();
        let bytes = read(response, &agent.name).await.inspect_err(|_| {
            self.suspect(&agent.name);
        })?;
        let answer = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            let Some(output) = answer.get("output") else {
                return Err(StepError::fatal(format!(
                    "agent `{}` answered {status} without an `output` member",
                    agent.name
                ))
                .with_details(json!({ "agent": agent.name, "body": answer })));
            };
            return Ok(json!({ "agent": agent.name, "output": output }));
        }
        let message = format!("agent `{}` answered {status}", agent.name);
        let details = json!({ "agent": agent.name, "status": status.as_u16(), "body": answer });
        if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
            Err(StepError::fatal(message).with_details(details))
        } else {
            self.suspect(&agent.name);
            Err(StepError::retryable(message).with_details(details))
        }
    }

    /// The first of `agents` (already in routing order) that has not failed lately, else the
    /// first.
    fn choose(&self, agents: Vec<Endpoint>) -> Option<Endpoint> {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        suspects.retain(|_, at| at.elapsed() < SUSPECT_FOR);
        let (trusted, suspected): (Vec<_>, Vec<_>) = agents
            .into_iter()
            .partition(|a| !suspects.contains_key(&a.name));
        trusted.into_iter().chain(suspected).next()
    }

    fn suspect(&self, name: &str) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        suspects.insert(name.to_owned(), Instant::now());
    }
}

/// Read an answer of at most [`MAX_ANSWER_BYTES`].
async fn read(mut response: reqwest::Response, agent: &str) -> Result<Vec<u8>, StepError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                bytes.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return Err(StepError::fatal(format!(
                    "agent `{agent}` answered with more than {MAX_ANSWER_BYTES} bytes"
                )))
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(StepError::retryable(format!(
                    "reading agent `{agent}`'s answer failed: {}",
                    e.without_url()
                )))
            }
        }
    }
}
