//! The healer's watch over labelled containers: two detection paths, one outcome.
//!
//! - The event stream (fast path): `die` with a non-zero exit code, `oom`, and
//!   `health_status: unhealthy`. It also follows `kill`/`stop`/`start`, to tell a container
//!   stopped through the Docker API (a `kill` or `stop` just before its `die`: `docker stop`,
//!   `docker kill`, a compose scale-down) from one whose process died on its own.
//! - The sweep (safety net), at startup and every [`HealerConfig::sweep`]: every labelled
//!   container that has exited with a non-zero code (and was not stopped on purpose, as far as
//!   Docker's recent event history says) or is unhealthy.
//!
//! Either path inspects the container and, if it has failed, records the failure
//! ([`IncidentStore::record_failure`]) and starts the internal `heal` mission with the
//! container as concurrency key and the failure as idempotency key, so each failure gets one
//! heal mission whichever replica or path saw it first. When Docker cannot be reached the
//! healer logs it and tries again with backoff; the process it runs in keeps serving.

use crate::docker::{ContainerFacts, DockerError, Health, RunState};
use crate::incidents::{Cause, Failure, IncidentStore, Verdict};
use crate::logs::{LogEntry, LogLevel};
use crate::metrics::{self, Action, Outcome};
use crate::policy::HealPolicy;
use crate::{HealOrder, Toolkit, HEAL_WORKFLOW};
use bollard::models::EventMessage;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use hypercode_engine::{Engine, StoreError, Submission, SubmitError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The label a container must carry to be healed, `key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    key: String,
    value: String,
}

impl Default for LabelFilter {
    fn default() -> Self {
        Self {
            key: "hypercode.heal".to_owned(),
            value: "true".to_owned(),
        }
    }
}

impl std::str::FromStr for LabelFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("`{s}` is not a label of the form key=value")),
        }
    }
}

impl std::fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl LabelFilter {
    /// Whether a container with these labels is to be healed.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(&self.key) == Some(&self.value)
    }
}

/// How the healer watches.
#[derive(Debug, Clone, Default)]
pub struct HealerConfig {
    /// Only containers with this label are healed (`HYPERCODE_HEAL_LABEL`).
    pub label: LabelFilter,
    /// Time between sweeps (`HYPERCODE_HEAL_SWEEP_S`, default 30 s).
    pub sweep: Duration,
    /// The crash-loop policy.
    pub policy: HealPolicy,
}

/// A `kill`/`stop` (stopping on purpose) or a `start` of a container, from the event stream.
#[derive(Debug, Clone, Copy)]
struct Lifecycle {
    at: DateTime<Utc>,
    stopping: bool,
}

/// A failure older than this after its stop request was not caused by it.
const STOP_GRACE: TimeDelta = TimeDelta::minutes(5);

/// The longest wait between two attempts to reach Docker.
const MAX_RECONNECT: Duration = Duration::from_secs(60);

/// The healer of one process.
pub struct Healer {
    engine: Engine,
    toolkit: Toolkit,
    config: HealerConfig,
    lifecycle: Mutex<HashMap<String, Lifecycle>>,
}

impl std::fmt::Debug for Healer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Healer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a failure could not be acted on (logged; the sweep tries again).
#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("starting the heal mission: {0}")]
    Submit(#[from] SubmitError),
}

impl Healer {
    /// A healer that starts missions on `engine`.
    pub fn new(engine: Engine, toolkit: Toolkit, config: HealerConfig) -> Self {
        Self {
            engine,
            toolkit,
            config,
            lifecycle: Mutex::new(HashMap::new()),
        }
    }

    /// Watch until `shutdown`, reconnecting to Docker with backoff whenever it is lost.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let lost = tokio::select! {
                () = shutdown.cancelled() => return,
                lost = self.watch(&mut backoff) => lost,
            };
            tracing::error!(
                error = %lost,
                retry_in_s = backoff.as_secs(),
                "the healer cannot reach Docker (DOCKER_HOST); it keeps trying, and the server keeps serving"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_RECONNECT);
        }
    }

    /// Follow the event stream and sweep on a timer until Docker is lost (the error).
    async fn watch(&self, backoff: &mut Duration) -> DockerError {
        let label = self.config.label.to_string();
        let mut events = match self.toolkit.docker.events(&label).await {
            Ok(events) => Box::pin(events),
            Err(e) => return e,
        };
        *backoff = Duration::from_secs(1);
        tracing::info!(%label, sweep_s = self.config.sweep.as_secs(), "the healer watches containers");
        let mut sweep = tokio::time::interval(self.config.sweep.max(Duration::from_millis(100)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The first tick is immediate: failures missed while the healer was away.
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        return e;
                    }
                }
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_event(event).await,
                    Some(Err(e)) => return e,
                    None => return DockerError::StreamEnded,
                },
            }
        }
    }

    /// Heal every labelled container that has failed.
    async fn sweep(&self) -> Result<(), DockerError> {
        for id in self
            .toolkit
            .docker
            .labelled(&self.config.label.to_string())
            .await?
        {
            self.consider(&id).await;
        }
        Ok(())
    }

    async fn on_event(&self, event: EventMessage) {
        let Some(actor) = event.actor else { return };
        let Some(id) = actor.id else { return };
        let action = event.action.unwrap_or_default();
        let at = event
            .time_nano
            .map(DateTime::from_timestamp_nanos)
            .unwrap_or_else(Utc::now);
        let lifecycle = |stopping| {
            if let Ok(mut lifecycle) = self.lifecycle.lock() {
                lifecycle.insert(id.clone(), Lifecycle { at, stopping });
            }
        };
        match action.as_str() {
            "kill" | "stop" => lifecycle(true),
            "start" => lifecycle(false),
            "destroy" => {
                if let Ok(mut lifecycle) = self.lifecycle.lock() {
                    lifecycle.remove(&id);
                }
            }
            "die" => {
                let code = actor.attributes.as_ref().and_then(|a| a.get("exitCode"));
                if code.is_some_and(|c| c != "0") {
                    self.consider(&id).await;
                }
            }
            "oom" => self.consider(&id).await,
            action if action.starts_with("health_status") && action.ends_with("unhealthy") => {
                self.consider(&id).await
            }
            _ => {}
        }
    }

    /// Look at a container and heal it if it has failed; problems are logged.
    async fn consider(&self, id: &str) {
        if let Err(e) = self.act(id).await {
            tracing::warn!(container = id, error = %e, "could not act on a container failure; the sweep will try again");
        }
    }

    async fn act(&self, id: &str) -> Result<(), ActError> {
        let Some(facts) = self.toolkit.docker.inspect(id).await? else {
            return Ok(());
        };
        if !self.config.label.matches(&facts.labels) {
            return Ok(());
        }
        let Some(cause) = failure_of(&facts) else {
            return Ok(());
        };
        if cause != Cause::Unhealthy && self.stopped_on_purpose(&facts).await? {
            tracing::debug!(container = %facts.name, "stopped through the Docker API; not healed");
            return Ok(());
        }
        let failure = Failure {
            container_id: facts.id.clone(),
            container_name: facts.name.clone(),
            cause,
            finished_at: facts.finished_at.clone(),
        };
        let incidents: &IncidentStore = &self.toolkit.incidents;
        match incidents
            .record_failure(&failure, &self.config.policy)
            .await?
        {
            Verdict::Heal {
                incident,
                attempt,
                delay,
                first,
            } => {
                if first {
                    let message = format!(
                        "container {} failed ({}): heal {attempt}, restarting in {} s",
                        facts.name,
                        cause.as_str(),
                        delay.as_secs()
                    );
                    let entry =
                        LogEntry::healer(LogLevel::Warn, message, &facts.name, Some(incident.id));
                    self.toolkit.logs.alert(entry).await;
                }
                let order = HealOrder {
                    incident: incident.id,
                    container_id: facts.id.clone(),
                    container_name: facts.name.clone(),
                    cause,
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                };
                let submitted = self
                    .engine
                    .start(Submission {
                        workflow: HEAL_WORKFLOW.to_owned(),
                        // Serializing ids, strings and numbers cannot fail.
                        input: serde_json::to_value(&order).unwrap_or_default(),
                        idempotency_key: Some(failure.key()),
                        concurrency_key: Some(format!("container:{}", facts.id)),
                    })
                    .await?;
                incidents
                    .attach_mission(&failure.key(), submitted.mission.id)
                    .await?;
                if submitted.created {
                    metrics::record(Action::Heal, Outcome::Started);
                }
            }
            Verdict::Escalated { incident, now } => {
                if now {
                    metrics::record(Action::Escalate, Outcome::Escalated);
                    let message = format!(
                        "container {} keeps failing ({}) after {} heals: escalated; no more restarts until the incident is resolved",
                        facts.name,
                        cause.as_str(),
                        incident.attempts
                    );
                    let entry =
                        LogEntry::healer(LogLevel::Error, message, &facts.name, Some(incident.id));
                    self.toolkit.logs.alert(entry).await;
                }
            }
        }
        Ok(())
    }

    /// Whether the container's last run was ended through the Docker API: a `kill` or `stop`
    /// was its last lifecycle event before it finished. The event stream is asked first; a
    /// container it has not seen (the healer was away) is looked up in Docker's event history.
    async fn stopped_on_purpose(&self, facts: &ContainerFacts) -> Result<bool, DockerError> {
        let Some(finished) = facts.finished() else {
            return Ok(false);
        };
        let limit = finished + TimeDelta::seconds(1);
        let seen = self
            .lifecycle
            .lock()
            .ok()
            .and_then(|lifecycle| lifecycle.get(&facts.id).copied());
        if let Some(seen) = seen.filter(|seen| seen.at <= limit) {
            return Ok(seen.stopping && finished - seen.at <= STOP_GRACE);
        }
        let history = self
            .toolkit
            .docker
            .history(&facts.id, finished - STOP_GRACE)
            .await?;
        // The history comes oldest first: the last lifecycle event before the finish decides.
        let last = history
            .iter()
            .rev()
            .filter(|e| {
                e.time_nano
                    .map(DateTime::from_timestamp_nanos)
                    .is_some_and(|at| at <= limit)
            })
            .filter_map(|e| e.action.as_deref())
            .find(|action| matches!(*action, "kill" | "stop" | "start"));
        Ok(last.is_some_and(|action| action != "start"))
    }
}

/// What has gone wrong with a container, if anything.
fn failure_of(facts: &ContainerFacts) -> Option<Cause> {
    match facts.state {
        RunState::Exited if facts.oom_killed => Some(Cause::Oom),
        RunState::Exited if facts.exit_code != 0 => Some(Cause::Exited),
        RunState::Running if facts.health == Some(Health::Unhealthy) => Some(Cause::Unhealthy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        state: RunState,
        exit_code: i64,
        oom_killed: bool,
        health: Option<Health>,
    ) -> ContainerFacts {
        ContainerFacts {
            id: "c".into(),
            name: "n".into(),
            labels: HashMap::new(),
            state,
            exit_code,
            oom_killed,
            finished_at: String::new(),
            health,
        }
    }

    #[test]
    fn failures_are_non_zero_exits_ooms_and_unhealthy_runs() {
        assert_eq!(
            failure_of(&facts(RunState::Exited, 3, false, None)),
            Some(Cause::Exited)
        );
        assert_eq!(
            failure_of(&facts(RunState::Exited, 137, true, None)),
            Some(Cause::Oom)
        );
        assert_eq!(failure_of(&facts(RunState::Exited, 0, false, None)), None);
        assert_eq!(
            failure_of(&facts(RunState::Running, 0, false, Some(Health::Unhealthy))),
            Some(Cause::Unhealthy)
        );
        assert_eq!(
            failure_of(&facts(RunState::Running, 0, false, Some(Health::Healthy))),
            None
        );
        assert_eq!(failure_of(&facts(RunState::Other, 1, false, None)), None);
    }

    #[test]
    fn labels_are_key_value_pairs() {
        let label: LabelFilter = "team=ops".parse().unwrap_or_default();
        assert_eq!(label.to_string(), "team=ops");
        assert!(label.matches(&HashMap::from([("team".into(), "ops".into())])));
        assert!(!label.matches(&HashMap::from([("team".into(), "dev".into())])));
        assert!("team".parse::<LabelFilter>().is_err());
        assert!("=x".parse::<LabelFilter>().is_err());
        assert_eq!(LabelFilter::default().to_string(), "hypercode.heal=true");
    }
}
