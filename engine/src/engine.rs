//! The engine facade: what the API and the workers call. It validates and records submissions
//! and decisions, then sends a wake-up through a [`Wake`] (the queue); Postgres stays the truth,
//! so a lost wake-up only delays a mission until the reconciler re-sends it.

use crate::error::{StoreError, StoreResult};
use crate::ids::{MissionId, WorkerId};
use crate::status::MissionStatus;
use crate::store::{Decision, NewMission, Retried, Store, Submitted};
use crate::workflow::{InputProblem, Registry};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hands a mission's wake-up to whatever carries work to workers (Redis in production).
#[async_trait]
pub trait Wake: Send + Sync + 'static {
    /// Ask some worker to run the mission soon.
    async fn wake(&self, id: MissionId) -> Result<(), WakeError>;
    /// How many wake-ups wait in the queue now, measured afresh.
    async fn depth(&self) -> Result<u64, WakeError>;
}

/// The queue did not take a wake-up; the reconciler re-sends it later, so this delays the
/// mission but loses nothing.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The queue holds as many wake-ups as it should; the mission waits in Postgres until the
    /// workers catch up (backpressure, not a fault).
    #[error("the queue is full ({depth} wake-ups waiting)")]
    Backlogged {
        /// Wake-ups waiting when this one was refused.
        depth: u64,
    },
    /// The queue could not be reached.
    #[error("could not enqueue a wake-up: {0}")]
    Unavailable(String),
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lease lasts without renewal; a dead worker's missions resume after this.
    pub lease_ttl: Duration,
    /// Largest accepted input or output of a mission or step, in bytes of JSON.
    pub max_payload_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            max_payload_bytes: 1024 * 1024,
        }
    }
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No workflow is registered under that name.
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    /// The input is larger than the limit.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The workflow refused the input.
    #[error("invalid input")]
    Invalid(Vec<InputProblem>),
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine: storage, registered workflows, and the queue to wake workers through.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    waker: Arc<dyn Wake>,
    config: EngineConfig,
    worker: WorkerId,
    shutdown: CancellationToken,
}

impl Engine {
    /// Assemble an engine.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        waker: Arc<dyn Wake>,
        config: EngineConfig,
    ) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            waker,
            config,
            worker: WorkerId::for_this_process(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The storage backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registered workflows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tunables.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The name this process claims leases under.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker
    }

    /// Cancelled when the process shuts down: runs stop taking new steps and hand missions back.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Validate and record a mission, then wake a worker for it.
    pub async fn submit(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let definition = self
            .registry
            .get(workflow)
            .ok_or_else(|| SubmitError::UnknownWorkflow(workflow.to_owned()))?;
        let size = serde_json::to_vec(&input)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.config.max_payload_bytes {
            return Err(SubmitError::TooLarge {
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        definition.validate(&input).map_err(SubmitError::Invalid)?;
        let submitted = self
            .store
            .submit(NewMission {
                id: MissionId::new(),
                workflow: workflow.to_owned(),
                input,
                idempotency_key,
            })
            .await?;
        if submitted.created {
            tracing::info!(mission = %submitted.mission.id, workflow, "mission submitted");
            self.wake(submitted.mission.id).await;
        }
        Ok(submitted)
    }

    /// Record a decision on a waiting approval and wake the mission.
    pub async fn decide(&self, id: MissionId, step: &str, decision: Decision) -> StoreResult<()> {
        self.store.decide(id, step, decision).await?;
        self.wake(id).await;
        Ok(())
    }

    /// Ask to cancel a mission; its compensations run on a worker.
    pub async fn cancel(&self, id: MissionId, by: &str) -> StoreResult<MissionStatus> {
        let status = self.store.request_cancel(id, by).await?;
        if status == MissionStatus::Pending {
            self.wake(id).await;
        }
        Ok(status)
    }

    /// Re-run a failed mission from its first failed step (see [`MissionStore::retry`] for
    /// exactly what is reset), then wake a worker for it.
    ///
    /// [`MissionStore::retry`]: crate::store::MissionStore::retry
    pub async fn retry(&self, id: MissionId, by: &str) -> StoreResult<Retried> {
        let retried = self.store.retry(id, by).await?;
        tracing::info!(mission = %id, by, from_step = ?retried.from_step, "mission retried");
        self.wake(id).await;
        Ok(retried)
    }

    /// How many wake-ups wait in the queue now. Missions past the queue's depth limit wait in
    /// Postgres instead (see [`Backlog`](crate::store::Backlog)), so this is not the backlog.
    pub async fn queue_depth(&self) -> Result<u64, WakeError> {
        self.waker.depth().await
    }

    /// Send a wake-up; a failure is only logged, since the reconciler re-sends lost wake-ups.
    pub async fn wake(&self, id: MissionId) {
        match self.waker.wake(id).await {
            Ok(()) => {}
            Err(e @ WakeError::Backlogged { .. }) => {
                tracing::debug!(mission = %id, error = %e, "wake-up deferred; the reconciler will send it")
            }
            Err(e) => {
                tracing::warn!(mission = %id, error = %e, "wake-up not enqueued; the reconciler will retry")
            }
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker", &self.worker)
            .field("registry", &self.registry)
            .finish()
    }
}
