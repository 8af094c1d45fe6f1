//! The connection to the Docker engine and the few facts about a container the healer reads.
//!
//! It connects the way the `docker` CLI does (`DOCKER_HOST`: `unix://…` or `tcp://…`, default
//! the local socket) and negotiates the API version down to what the engine speaks (bollard
//! asks for a newer one than e.g. Docker 20.10's 1.41). The connection is made on first use and
//! kept; a failed attempt is not kept, so the next use tries again.

use bollard::models::{ContainerStateStatusEnum, EventMessage, HealthStatusEnum};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, RestartContainerOptions,
};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A failed call to the Docker engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine could not be reached or refused the call.
    #[error("Docker: {0}")]
    Api(#[from] bollard::errors::Error),
    /// The event stream ended (the engine restarted or the connection was cut).
    #[error("Docker's event stream ended")]
    StreamEnded,
}

/// Where a container is in its life, as far as healing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its process runs.
    Running,
    /// Its process ended (`exited` or `dead`).
    Exited,
    /// Created, paused, restarting, being removed: nothing to heal now.
    Other,
}

/// A container's health, when it has a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not judged yet.
    Starting,
    /// Its last checks passed.
    Healthy,
    /// Its checks failed.
    Unhealthy,
}

/// What the healer reads from `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    /// The full container id.
    pub id: String,
    /// Its name, without the leading slash.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Running, exited or something else.
    pub state: RunState,
    /// The exit code of its last run.
    pub exit_code: i64,
    /// Whether the kernel's OOM killer ended its last run.
    pub oom_killed: bool,
    /// When its last run ended, exactly as Docker reports it (part of the idempotency key).
    pub finished_at: String,
    /// Its health, `None` without a healthcheck.
    pub health: Option<Health>,
}

impl ContainerFacts {
    /// When its last run ended, parsed (`None` if it never ended).
    pub fn finished(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.finished_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| t.timestamp() > 0)
    }
}

/// A Docker connection made on first use and shared by clones.
#[derive(Debug, Clone, Default)]
pub struct DockerHandle {
    client: Arc<OnceCell<Docker>>,
}

impl DockerHandle {
    /// A handle that connects when first used.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection, made (and the version negotiated) now if it was not yet.
    pub async fn client(&self) -> Result<&Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
                tracing::info!(api_version = %docker.client_version(), "connected to Docker");
                Ok(docker)
            })
            .await
    }

    /// Inspect a container; `None` when it no longer exists.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerFacts>, DockerError> {
        let docker = self.client().await?;
        let inspected = match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let state = inspected.state.unwrap_or_default();
        let config = inspected.config.unwrap_or_default();
        let has_healthcheck = config
            .healthcheck
            .and_then(|h| h.test)
            .is_some_and(|test| test.first().is_some_and(|t| t != "NONE"));
        let health = state.health.and_then(|h| h.status).and_then(|s| match s {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
            HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
        });
        Ok(Some(ContainerFacts {
            id: inspected.id.unwrap_or_else(|| id.to_owned()),
            name: inspected
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: config.labels.unwrap_or_default(),
            state: match state.status {
                Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                    RunState::Exited
                }
                _ => RunState::Other,
            },
            exit_code: state.exit_code.unwrap_or_default(),
            oom_killed: state.oom_killed.unwrap_or_default(),
            finished_at: state.finished_at.unwrap_or_default(),
            health: has_healthcheck.then(|| health.unwrap_or(Health::Starting)),
        }))
    }

    /// Restart a container (start it if it has exited), giving a running one 10 s to stop.
    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        let options = RestartContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        Ok(self
            .client()
            .await?
            .restart_container(id, Some(options))
            .await?)
    }

    /// The ids of every container (running or not) carrying `label` (`key=value`).
    pub async fn labelled(&self, label: &str) -> Result<Vec<String>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![label.to_owned()],
            )])),
            ..Default::default()
        };
        let containers = self.client().await?.list_containers(Some(options)).await?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }

    /// The live stream of lifecycle events of containers carrying `label`.
    pub async fn events(
        &self,
        label: &str,
    ) -> Result<impl Stream<Item = Result<EventMessage, DockerError>> + 'static, DockerError> {
        let options = EventsOptions {
            filters: Some(event_filters(Some(label), None)),
            ..Default::default()
        };
        Ok(self
            .client()
            .await?
            .events(Some(options))
            .map(|event| event.map_err(DockerError::from)))
    }

    /// The lifecycle events Docker still remembers for one container between `since` and now
    /// (the engine keeps the last few hundred), oldest first.
    pub async fn history(
        &self,
        id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<EventMessage>, DockerError> {
        let options = EventsOptions {
            since: Some(since.timestamp().to_string()),
            until: Some(Utc::now().timestamp().saturating_add(1).to_string()),
            filters: Some(event_filters(None, Some(id))),
        };
        let events = self.client().await?.events(Some(options));
        Ok(events
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?)
    }
}

/// Container events of the actions the healer acts on, for a label or one container.
fn event_filters(label: Option<&str>, container: Option<&str>) -> HashMap<String, Vec<String>> {
    let actions = [
        "die",
        "oom",
        "health_status",
        "kill",
        "stop",
        "start",
        "destroy",
    ];
    let mut filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            actions.iter().map(|a| (*a).to_owned()).collect(),
        ),
    ]);
    if let Some(label) = label {
        filters.insert("label".to_owned(), vec![label.to_owned()]);
    }
    if let Some(container) = container {
        filters.insert("container".to_owned(), vec![container.to_owned()]);
    }
    filters
}
