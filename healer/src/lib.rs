//! The healer: keeps labelled Docker containers running by turning each failure into an
//! incident and a durable `heal` mission on the engine.
//!
//! How the parts stack (this crate depends on the engine, never the other way round):
//! - [`docker`]: the connection to the Docker engine (as the `docker` CLI finds it, with the
//!   API version negotiated) and the few facts about a container the healer reads.
//! - [`policy`]: the crash-loop rules: the backoff before each restart and when to escalate.
//! - [`incidents`]: the incident store in PostgreSQL; recording a failure is one transaction
//!   that decides, under a per-container lock, whether to heal, continue or escalate.
//! - [`logs`]: the alert log, the Redis list and channel `<queue>:logs` (`hypercode:logs`).
//! - [`metrics`]: `hypercode_heal_actions_total`, what the watcher and the heal missions did.
//! - [`watcher`]: the two detection paths (the event stream and the periodic sweep), which
//!   record failures and start heal missions with per-failure idempotency keys.
//!
//! The `heal` workflow itself lives with the other workflows and uses [`Toolkit`].

pub mod docker;
pub mod incidents;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod watcher;

pub use docker::{ContainerFacts, DockerError, DockerHandle};
pub use incidents::{
    Cause, Failure, Incident, IncidentFilter, IncidentId, IncidentStatus, IncidentStore, Verdict,
};
pub use logs::{LogEntry, LogLevel, LogSink, LogsError};
pub use policy::HealPolicy;
pub use watcher::{Healer, HealerConfig, LabelFilter};

use serde::{Deserialize, Serialize};

/// What a heal mission is started with: which failure of which container to heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealOrder {
    /// The incident the failure belongs to.
    #[schemars(with = "String")]
    pub incident: IncidentId,
    /// The full container id.
    pub container_id: String,
    /// Its name, without the leading slash.
    pub container_name: String,
    /// What went wrong.
    #[schemars(with = "String")]
    pub cause: Cause,
    /// Which heal of the incident this is (1-based).
    pub attempt: u32,
    /// The crash-loop backoff to wait before restarting, in milliseconds.
    pub delay_ms: u64,
}

/// The name of the internal workflow that heals one container failure.
pub const HEAL_WORKFLOW: &str = "heal";

/// What the heal workflow calls outside the engine: Docker, the incident store and the log.
#[derive(Debug, Clone)]
pub struct Toolkit {
    /// The Docker engine, connected on first use.
    pub docker: DockerHandle,
    /// Where incidents are kept.
    pub incidents: IncidentStore,
    /// Where alerts go.
    pub logs: LogSink,
}

impl Toolkit {
    /// Docker as `DOCKER_HOST` says (connected on first use), incidents on `pool`, and the log
    /// of `queue` on the Redis at `redis_url` (connected on first use).
    pub fn new(pool: sqlx::PgPool, redis_url: &str, queue: &str) -> Result<Self, LogsError> {
        Ok(Self {
            docker: DockerHandle::new(),
            incidents: IncidentStore::new(pool),
            logs: LogSink::new(redis_url, queue)?,
        })
    }
}
