//! The agent registry. Agents are external HTTP services (the contract: `POST /execute`,
//! `GET /health`) that missions call; this crate owns which agents exist and which are live.
//!
//! - [`AgentDirectory`]: what a running mission needs, the live agents with a capability in the
//!   order to try them. The workflows see only this trait, so they never depend on the API or on
//!   a database driver's types.
//! - [`registry::AgentRegistry`]: the implementation, the `agents` table in PostgreSQL (what
//!   admins registered, the call secrets sealed by [`sealing`], the last heartbeat) and one
//!   expiring Redis key per live agent (`agents:heartbeat:<name>`, 30 s), which is what "live" means.
//! - [`AgentProvisioner`]: what a deployment (the `deploy_agent` workflow) needs besides
//!   Docker: an agent key bound to the new agent, and its registration. The API crate, which
//!   owns the keys, implements it over this registry.

pub mod registry;
pub mod sealing;

pub use registry::{AgentRegistry, RegistryConfig};
pub use sealing::SealingKey;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// PostgreSQL failed.
    #[error("the agent registry in PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed.
    #[error("the agent heartbeats in Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A call secret could not be sealed or opened.
    #[error("the agent's call secret: {0}")]
    Sealed(#[from] sealing::SealError),
    /// The API keys of a deployed agent could not be issued or revoked.
    #[error("the agent's API key: {0}")]
    Keys(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The registry's result.
pub type AgentResult<T> = Result<T, AgentError>;

// The API answers with this record as it is (`AgentView` in the OpenAPI document), so its
// doc comments are the document's descriptions.
/// A registered agent, without its call secret (no route returns it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AgentView)]
pub struct AgentInfo {
    /// Its unique name.
    pub name: String,
    /// Its base URL: missions call `POST <url>/execute`.
    pub url: String,
    /// The capabilities plan steps of kind `agent` are routed by.
    pub capabilities: Vec<String>,
    /// Whether its heartbeat key exists now (it beat within the heartbeat TTL, 30 s).
    pub live: bool,
    /// When it last sent a heartbeat; null if it never did.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The calls in flight it reported with its last heartbeat; 0 when not live.
    pub in_flight: u64,
}

/// What an admin registers.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// A valid [`valid_name`].
    pub name: String,
    /// An http(s) base URL.
    pub url: String,
    /// Valid [`valid_capability`]s, at least one.
    pub capabilities: Vec<String>,
    /// What HyperCode presents to the agent.
    pub call_secret: String,
}

/// A live agent as a mission calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name, recorded in the step's output.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// The bearer token it expects.
    pub call_secret: String,
    /// The calls in flight it last reported.
    pub in_flight: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// Where a mission finds the agents to call.
#[async_trait]
pub trait AgentDirectory: Send + Sync + std::fmt::Debug + 'static {
    /// The live agents with `capability`, in the order to try them: fewest calls in flight
    /// first, agents tied on that taking turns from one call to the next.
    async fn live_with(&self, capability: &str) -> AgentResult<Vec<Endpoint>>;
}

/// What a deployment of an agent does outside Docker: issue the agent its key, register it,
/// and undo both.
#[async_trait]
pub trait AgentProvisioner: Send + Sync + std::fmt::Debug + 'static {
    /// A new API key of role `agent` bound to agent `agent`, named `key_name`; its secret.
    async fn issue_key(&self, agent: &str, key_name: &str) -> AgentResult<String>;
    /// Revoke every live key named `key_name` bound to agent `agent`; how many were.
    async fn revoke_keys(&self, agent: &str, key_name: &str) -> AgentResult<u64>;
    /// Register (or re-register) an agent.
    async fn register(&self, agent: &NewAgent) -> AgentResult<()>;
    /// Deregister an agent; `false` when none had this name.
    async fn deregister(&self, name: &str) -> AgentResult<bool>;
}

/// Whether `name` is a valid agent name: a letter or digit, then up to 62 letters, digits, `_`
/// or `-` (it names a container, `hc-agent-<name>`, and a Redis key).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `capability` is a valid capability: 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn valid_capability(capability: &str) -> bool {
    (1..=64).contains(&capability.len())
        && capability
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Order `agents` (all live, all with one capability) for a call: fewest in flight first; among
/// those tied for fewest, rotated by `turn`, so successive calls take turns.
pub fn order(mut agents: Vec<Endpoint>, turn: usize) -> Vec<Endpoint> {
    agents.sort_by(|a, b| a.in_flight.cmp(&b.in_flight).then(a.name.cmp(&b.name)));
    let Some(least) = agents.first().map(|a| a.in_flight) else {
        return agents;
    };
    let tied = agents.iter().take_while(|a| a.in_flight == least).count();
    agents[..tied].rotate_left(turn % tied);
    agents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, in_flight: u64) -> Endpoint {
        Endpoint {
            name: name.to_owned(),
            url: format!("http://{name}"),
            call_secret: String::new(),
            in_flight,
        }
    }

    fn names(agents: &[Endpoint]) -> Vec<&str> {
        agents.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn least_in_flight_first_and_ties_take_turns() {
        let agents = vec![agent("c", 0), agent("a", 2), agent("b", 0)];
        assert_eq!(names(&order(agents.clone(), 0)), ["b", "c", "a"]);
        assert_eq!(names(&order(agents.clone(), 1)), ["c", "b", "a"]);
        assert_eq!(names(&order(agents, 2)), ["b", "c", "a"]);
        assert!(order(Vec::new(), 3).is_empty());
    }

    #[test]
    fn names_and_capabilities_are_checked() {
        assert!(valid_name("echo-1") && valid_name("A_b"));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("a b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(valid_capability("upper") && valid_capability("dev.ops"));
        assert!(!valid_capability("") && !valid_capability("a/b"));
    }
}
