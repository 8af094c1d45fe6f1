//! The internal `heal` workflow: one mission per container failure, started by the healer
//! (never by a client). Its steps show in the dashboard like any other mission's: `inspect` the
//! container, sleep the crash-loop `backoff` (from the second heal of an incident on),
//! `restart` it, `wait` until it runs (and is healthy, when it has a healthcheck; at most 60 s),
//! and `record` the incident healed.

use crate::Dependencies;
use async_trait::async_trait;
use hypercode_engine::{
    Context, InputProblem, ResultExt, RetryPolicy, Step, StepError, Workflow, WorkflowResult,
};
use hypercode_healer::docker::{ContainerFacts, DockerHandle, Health, RunState};
use hypercode_healer::metrics::{self, Action, Outcome};
use hypercode_healer::{HealOrder, LogEntry, LogLevel, Toolkit, HEAL_WORKFLOW};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long `wait` gives a restarted container to run (and turn healthy).
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How often `wait` looks.
const POLL: Duration = Duration::from_millis(250);

/// Docker calls are retried a few times, quickly: a heal is worth little late.
const DOCKER_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff_ms: 500,
    max_backoff_ms: 5_000,
};

/// What `inspect` saw.
#[derive(Debug, Serialize, Deserialize)]
struct Inspected {
    /// Its process runs now (and is not unhealthy): someone else already restarted it.
    up: bool,
}

/// What `wait` saw.
#[derive(Debug, Serialize, Deserialize)]
struct Running {
    /// Whether a healthcheck reported it healthy (`None`: it has none).
    healthy: Option<bool>,
    /// How long it took, in milliseconds.
    after_ms: u64,
}

/// What the mission records when it finishes.
#[derive(Debug, Serialize)]
pub struct Healed {
    /// The container.
    pub container: String,
    /// Whether this mission marked the incident healed (false: it was escalated or resolved
    /// meanwhile).
    pub incident_healed: bool,
}

/// The `heal` workflow.
#[derive(Debug, Clone)]
pub struct HealWorkflow {
    toolkit: Toolkit,
}

impl HealWorkflow {
    /// A healer of containers through `deps.healer`.
    pub fn new(deps: &Dependencies) -> Self {
        Self {
            toolkit: deps.healer.clone(),
        }
    }

    /// Log what this heal did.
    async fn alert(&self, order: &HealOrder, message: String) {
        let entry = LogEntry::healer(
            LogLevel::Info,
            message,
            &order.container_name,
            Some(order.incident),
        );
        self.toolkit.logs.alert(entry).await;
    }
}

#[async_trait]
impl Workflow for HealWorkflow {
    const NAME: &'static str = HEAL_WORKFLOW;
    type Input = HealOrder;
    type Output = Healed;

    fn internal(&self) -> bool {
        true
    }

    fn check(&self, order: &HealOrder) -> Result<(), Vec<InputProblem>> {
        match order.container_id.is_empty() {
            true => Err(vec![InputProblem::new(
                "/container_id",
                "must not be empty",
            )]),
            false => Ok(()),
        }
    }

    async fn run(&self, ctx: &mut Context, order: HealOrder) -> WorkflowResult<Healed> {
        let docker = &self.toolkit.docker;
        let id = order.container_id.as_str();
        let inspect = Step::new("inspect").input(&order)?.retry(DOCKER_RETRY);
        let inspected: Inspected = ctx
            .step(inspect, || async {
                let facts = existing(docker, id).await?;
                let up =
                    facts.state == RunState::Running && facts.health != Some(Health::Unhealthy);
                if up {
                    // Counted where it is seen, not on every replay of the recorded answer.
                    metrics::record(Action::Restart, Outcome::Skipped);
                }
                Ok::<_, StepError>(Inspected { up })
            })
            .await?;
        if !inspected.up {
            if order.delay_ms > 0 {
                ctx.sleep("backoff", Duration::from_millis(order.delay_ms))
                    .await?;
            }
            let restart = Step::new("restart").retry(DOCKER_RETRY);
            ctx.step(restart, || async {
                let restarted = docker.restart(id).await;
                let outcome = match restarted {
                    Ok(()) => Outcome::Succeeded,
                    Err(_) => Outcome::Failed,
                };
                metrics::record(Action::Restart, outcome);
                restarted.retryable()?;
                let message = format!(
                    "restarted container {} (heal {})",
                    order.container_name, order.attempt
                );
                self.alert(&order, message).await;
                Ok::<_, StepError>(())
            })
            .await?;
        }
        let running: Running = ctx
            .step(Step::new("wait").retry(DOCKER_RETRY), || {
                wait_until_running(&self.toolkit, id)
            })
            .await?;
        let record = Step::new("record").input(&running)?.retry(DOCKER_RETRY);
        let incident_healed = ctx
            .step(record, || async {
                let healed = self
                    .toolkit
                    .incidents
                    .mark_healed(order.incident)
                    .await
                    .retryable()?;
                if healed {
                    metrics::record(Action::Heal, Outcome::Succeeded);
                    let message = format!(
                        "container {} is running again: healed",
                        order.container_name
                    );
                    self.alert(&order, message).await;
                }
                Ok::<_, StepError>(healed)
            })
            .await?;
        Ok(Healed {
            container: order.container_name,
            incident_healed,
        })
    }
}

/// Inspect a container; one that no longer exists fails the heal for good, Docker out of
/// reach is retried.
async fn existing(docker: &DockerHandle, id: &str) -> Result<ContainerFacts, StepError> {
    docker
        .inspect(id)
        .await
        .retryable()?
        .ok_or_else(|| StepError::fatal(format!("container {id} no longer exists")))
}

/// Poll until the container runs (and is healthy, with a healthcheck), for at most
/// [`WAIT_LIMIT`]; a container that does not is a fatal failure of the heal.
async fn wait_until_running(toolkit: &Toolkit, id: &str) -> Result<Running, StepError> {
    let started = tokio::time::Instant::now();
    loop {
        let facts = existing(&toolkit.docker, id).await?;
        let after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if facts.state == RunState::Running {
            match facts.health {
                None => {
                    return Ok(Running {
                        healthy: None,
                        after_ms,
                    })
                }
                Some(Health::Healthy) => {
                    return Ok(Running {
                        healthy: Some(true),
                        after_ms,
                    })
                }
                Some(Health::Starting | Health::Unhealthy) => {}
            }
        }
        if started.elapsed() >= WAIT_LIMIT {
            return Err(StepError::fatal(format!(
                "container {id} was not running{} {} s after its restart",
                if facts.health.is_some() {
                    " and healthy"
                } else {
                    ""
                },
                WAIT_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
