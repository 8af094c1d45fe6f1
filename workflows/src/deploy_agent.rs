//! The `deploy_agent` workflow, Agent X: runs a new agent as a container on the Docker engine
//! and registers it, after a human approved the container's spec.
//!
//! Steps: `validate` (Docker reachable, the image present; the spec recorded) → `approve` (the
//! approval shows the spec) → `create` (the agents network if missing, an agent key bound to
//! the agent, the container `hc-agent-<name>`: non-root, all capabilities dropped, read-only
//! root filesystem, `no-new-privileges`, memory and pid limits, labels `hypercode.agent=<name>`
//! and `hypercode.heal=true`) → `start` → `health` (`GET /health` answers within
//! [`DeployConfig::health_timeout`]) → `register`. A failure after `create` runs the
//! compensations, newest first: `register`'s deregisters, `create`'s stops and removes the
//! container and revokes the key. A rejected approval creates nothing.
//!
//! The container's name is deterministic and it carries the deploying mission's id as a label,
//! so a `create` retried after a crash adopts the container the first attempt made, and a
//! second deployment of a name that is taken fails instead of taking over someone else's
//! container. The call secret is made up in `create` and handed to the container only; the
//! `register` step reads it back from the container's configuration, so no secret is ever in
//! a step's recorded output.

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use hypercode_agents::{valid_capability, valid_name, AgentProvisioner, NewAgent};
use hypercode_engine::{
    Approval, Context, InputProblem, MissionId, ResultExt, RetryPolicy, Step, StepError, Workflow,
    WorkflowResult,
};
use hypercode_healer::docker::DockerHandle;
use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The workflow's name.
pub const DEPLOY_AGENT_WORKFLOW: &str = "deploy_agent";

/// The reference agent's image, built by `scripts/images`: the default allowlist.
pub const DEFAULT_IMAGE: &str = "hypercode-agent:local";

/// The port a deployed agent listens on inside its network.
pub const AGENT_PORT: u16 = 9000;

/// The unprivileged user the container runs as, whatever its image says.
const AGENT_USER: &str = "10001:10001";

/// The container's memory limit.
const MEMORY_BYTES: i64 = 256 * 1024 * 1024;

/// The container's limit on processes and threads.
const PIDS_LIMIT: i64 = 256;

/// Most variables a deployment may add to the container's environment.
const MAX_ENV: usize = 64;

/// Longest variable value, in bytes.
const MAX_ENV_VALUE_BYTES: usize = 4096;

/// Variables the workflow sets itself: the agent's identity and credentials.
const RESERVED_ENV: &[&str] = &[
    "HYPERCODE_AGENT_NAME",
    "HYPERCODE_AGENT_CAPABILITIES",
    "HYPERCODE_AGENT_CALL_SECRET",
    "HYPERCODE_AGENT_CALL_SECRET_FILE",
    "HYPERCODE_AGENT_API_URL",
    "HYPERCODE_API_KEY",
    "HYPERCODE_API_KEY_FILE",
];

/// How often `health` looks.
const POLL: Duration = Duration::from_millis(250);

/// Docker calls are retried a few times, quickly: the engine may be briefly busy.
const DOCKER_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff_ms: 500,
    max_backoff_ms: 5_000,
};

/// Where and how agents are deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    /// The images a deployment may run (`HYPERCODE_AGENT_IMAGES`, comma-separated; default
    /// [`DEFAULT_IMAGE`]).
    pub images: Vec<String>,
    /// The Docker network agents are attached to, created when missing
    /// (`HYPERCODE_AGENT_NETWORK`, default `hypercode-agents`). HyperCode's workers must reach
    /// it: they call `/health` and the registered URL, the container's address on it.
    pub network: String,
    /// The API's address as seen from that network, which agents heartbeat to
    /// (`HYPERCODE_AGENT_API_URL`, default `http://api:8000`, the compose service).
    pub api_url: String,
    /// How long `health` waits for `GET /health` (`HYPERCODE_AGENT_HEALTH_TIMEOUT_S`, 60).
    pub health_timeout: Duration,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            images: vec![DEFAULT_IMAGE.to_owned()],
            network: "hypercode-agents".to_owned(),
            api_url: "http://api:8000".to_owned(),
            health_timeout: Duration::from_secs(60),
        }
    }
}

/// The input of a `deploy_agent` mission.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "deploy_agent",
    description = "Agent X: run an agent container (image from the server's allowlist) named hc-agent-<name> on the agents network, after an approval showing its spec; it is registered with the capabilities once GET /health answers. Failures after the container was created remove it again."
)]
pub struct DeployInput {
    /// The agent's name (the container is `hc-agent-<name>`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"))]
    pub name: String,
    /// The image, one of the server's allowlist (`HYPERCODE_AGENT_IMAGES`).
    pub image: String,
    /// What the agent can do; it is registered with these.
    #[schemars(length(min = 1, max = 64))]
    pub capabilities: Vec<String>,
    /// More environment variables for the container (not the ones the deployment sets:
    /// the agent's name, capabilities, call secret, key and API URL).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The container a deployment runs, as recorded by `validate` and shown to the approver.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerSpec {
    container: String,
    image: String,
    network: String,
    user: String,
    cap_drop: Vec<String>,
    read_only_rootfs: bool,
    security_opt: Vec<String>,
    memory_bytes: i64,
    pids_limit: i64,
    labels: BTreeMap<String, String>,
    /// Every variable's name and value, but for the secrets the deployment adds (shown as
    /// `<generated>`).
    env: BTreeMap<String, String>,
    api_url: String,
    port: u16,
}

/// What `create` made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Created {
    /// The container's id.
    id: String,
    /// The name of the agent key it was given (revoked by the compensation).
    key_name: String,
}

/// What `health` saw.
#[derive(Debug, Serialize, Deserialize)]
struct Healthy {
    /// The agent's base URL on the agents network.
    url: String,
    /// How long it took, in milliseconds.
    after_ms: u64,
}

/// What a deployment records when it finishes.
#[derive(Debug, Serialize)]
pub struct Deployed {
    /// The agent's name.
    pub name: String,
    /// The container's name.
    pub container: String,
    /// The container's id.
    pub container_id: String,
    /// The URL it was registered with.
    pub url: String,
    /// Its capabilities.
    pub capabilities: Vec<String>,
}

/// The `deploy_agent` workflow.
#[derive(Debug, Clone)]
pub struct DeployAgentWorkflow {
    docker: DockerHandle,
    provisioner: Arc<dyn AgentProvisioner>,
    config: DeployConfig,
    http: reqwest::Client,
}

impl DeployAgentWorkflow {
    /// Deploys on `docker` (the healer's connection: `DOCKER_HOST`), issuing keys and
    /// registering through `provisioner`.
    pub fn new(
        docker: DockerHandle,
        provisioner: Arc<dyn AgentProvisioner>,
        config: DeployConfig,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            docker,
            provisioner,
            config,
            http,
        }
    }

    /// The Docker connection; out of reach is permanent for the first step (a deployment on
    /// a server without Docker must say so at once), retryable later.
    async fn client(&self, fatal: bool) -> Result<&Docker, StepError> {
        self.docker.client().await.map_err(|e| {
            let message = format!(
                "Docker is out of reach ({e}): deploy_agent needs the Docker engine's socket \
                 (DOCKER_HOST, the healer's setting)"
            );
            match fatal {
                true => StepError::fatal(message),
                false => StepError::retryable(message),
            }
        })
    }

    /// `validate`: Docker answers and has the image.
    async fn validate(&self, spec: &ContainerSpec) -> Result<(), StepError> {
        let docker = self.client(true).await?;
        docker.ping().await.map_err(|e| {
            StepError::fatal(format!(
                "Docker does not answer ({e}): deploy_agent needs the Docker engine's socket \
                 (DOCKER_HOST, the healer's setting)"
            ))
        })?;
        match docker.inspect_image(&spec.image).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(StepError::fatal(format!(
                "the image `{}` is not on the Docker engine (scripts/images builds {DEFAULT_IMAGE})",
                spec.image
            ))),
            Err(e) => Err(docker_error(e)),
        }
    }

    /// `create`: the network, the key and the container, or the container an earlier attempt
    /// of this mission created.
    async fn create(
        &self,
        spec: &ContainerSpec,
        agent: &str,
        mission: MissionId,
    ) -> Result<Created, StepError> {
        let docker = self.client(false).await?;
        let key_name = key_name(mission);
        if let Some(id) = adoptable(docker, spec, mission).await? {
            return Ok(Created { id, key_name });
        }
        ensure_network(docker, &spec.network).await?;
        let key = self
            .provisioner
            .issue_key(agent, &key_name)
            .await
            .retryable()?;
        let env = spec
            .env
            .iter()
            .map(|(name, value)| match name.as_str() {
                "HYPERCODE_API_KEY" => format!("{name}={key}"),
                "HYPERCODE_AGENT_CALL_SECRET" => format!("{name}={}", call_secret()),
                _ => format!("{name}={value}"),
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(spec.user.clone()),
            env: Some(env),
            labels: Some(spec.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            host_config: Some(HostConfig {
                cap_drop: Some(spec.cap_drop.clone()),
                readonly_rootfs: Some(spec.read_only_rootfs),
                security_opt: Some(spec.security_opt.clone()),
                memory: Some(spec.memory_bytes),
                pids_limit: Some(spec.pids_limit),
                network_mode: Some(spec.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.container.clone()),
            ..Default::default()
        };
        match docker.create_container(Some(options), body).await {
            Ok(created) => {
                tracing::info!(agent, container = %spec.container, "agent container created");
                Ok(Created {
                    id: created.id,
                    key_name,
                })
            }
            Err(e) => {
                // No container holds a key of this mission (none existed a moment ago): the
                // one just issued must not outlive the failure.
                if let Err(revoke) = self.provisioner.revoke_keys(agent, &key_name).await {
                    tracing::warn!(agent, error = %revoke, "revoking an unused agent key failed");
                }
                Err(docker_error(e))
            }
        }
    }

    /// `health`: poll `GET <agent>/health` until it answers 2xx; the container stopping or the
    /// time running out fails the deployment for good.
    async fn health(&self, container: &str) -> Result<Healthy, StepError> {
        let docker = self.client(false).await?;
        let started = tokio::time::Instant::now();
        loop {
            let inspected = docker
                .inspect_container(container, None::<InspectContainerOptions>)
                .await
                .map_err(docker_error)?;
            let state = inspected.state.unwrap_or_default();
            if state.running != Some(true) {
                return Err(StepError::fatal(format!(
                    "the agent container {container} stopped before answering GET /health \
                     (exit code {})",
                    state.exit_code.unwrap_or_default()
                )));
            }
            let address = inspected
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.get(&self.config.network).cloned())
                .and_then(|e| e.ip_address)
                .filter(|ip| !ip.is_empty());
            if let Some(ip) = address {
                let url = format!("http://{ip}:{AGENT_PORT}");
                let answer = self.http.get(format!("{url}/health")).send().await;
                if answer.is_ok_and(|a| a.status().is_success()) {
                    let after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
                    return Ok(Healthy { url, after_ms });
                }
            }
            if started.elapsed() >= self.config.health_timeout {
                return Err(StepError::fatal(format!(
                    "the agent container {container} did not answer GET /health on port \
                     {AGENT_PORT} within {} s",
                    self.config.health_timeout.as_secs_f64()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `register`: the agent with its URL and the call secret the container was given.
    async fn register(
        &self,
        input: &DeployInput,
        container: &str,
        url: &str,
    ) -> Result<(), StepError> {
        let docker = self.client(false).await?;
        let inspected = docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(docker_error)?;
        let call_secret = inspected
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| {
                v.strip_prefix("HYPERCODE_AGENT_CALL_SECRET=")
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                StepError::fatal(format!("the container {container} has no call secret"))
            })?;
        let agent = NewAgent {
            name: input.name.clone(),
            url: url.to_owned(),
            capabilities: input.capabilities.clone(),
            call_secret,
        };
        self.provisioner.register(&agent).await.retryable()
    }
}

/// The spec of the container deploying `input` in mission `mission`.
fn spec(config: &DeployConfig, input: &DeployInput, mission: MissionId) -> ContainerSpec {
    let mut env = input.env.clone();
    env.insert("HYPERCODE_AGENT_NAME".to_owned(), input.name.clone());
    env.insert(
        "HYPERCODE_AGENT_CAPABILITIES".to_owned(),
        input.capabilities.join(","),
    );
    env.entry("HYPERCODE_AGENT_LISTEN".to_owned())
        .or_insert_with(|| format!("0.0.0.0:{AGENT_PORT}"));
    env.insert("HYPERCODE_AGENT_API_URL".to_owned(), config.api_url.clone());
    for secret in ["HYPERCODE_AGENT_CALL_SECRET", "HYPERCODE_API_KEY"] {
        env.insert(secret.to_owned(), GENERATED.to_owned());
    }
    let labels = BTreeMap::from([
        ("hypercode.agent".to_owned(), input.name.clone()),
        ("hypercode.heal".to_owned(), "true".to_owned()),
        ("hypercode.mission".to_owned(), mission.to_string()),
    ]);
    ContainerSpec {
        container: container_name(&input.name),
        image: input.image.clone(),
        network: config.network.clone(),
        user: AGENT_USER.to_owned(),
        cap_drop: vec!["ALL".to_owned()],
        read_only_rootfs: true,
        security_opt: vec!["no-new-privileges".to_owned()],
        memory_bytes: MEMORY_BYTES,
        pids_limit: PIDS_LIMIT,
        labels,
        env,
        api_url: config.api_url.clone(),
        port: AGENT_PORT,
    }
}

/// How the spec shows a secret the deployment makes up.
const GENERATED: &str = "<generated>";

/// The container of agent `name`.
pub fn container_name(name: &str) -> String {
    format!("hc-agent-{name}")
}

/// The name of the agent key mission `mission` issues.
fn key_name(mission: MissionId) -> String {
    format!("deploy_agent {mission}")
}

/// A fresh call secret: 32 random bytes, hex.
fn call_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HTTP status of a Docker error answered by the engine.
fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A Docker error as a step error: the engine refusing the request (4xx) is permanent,
/// anything else (5xx, the connection) retryable.
fn docker_error(e: bollard::errors::Error) -> StepError {
    match status(&e) {
        Some(400..=499) => StepError::fatal(format!("Docker: {e}")),
        _ => StepError::retryable(format!("Docker: {e}")),
    }
}

/// The id of the container `spec` names when an earlier attempt of `mission` created it;
/// `None` when there is none; a container of that name made by anyone else fails the step.
async fn adoptable(
    docker: &Docker,
    spec: &ContainerSpec,
    mission: MissionId,
) -> Result<Option<String>, StepError> {
    let inspected = match docker
        .inspect_container(&spec.container, None::<InspectContainerOptions>)
        .await
    {
        Ok(inspected) => inspected,
        Err(e) if status(&e) == Some(404) => return Ok(None),
        Err(e) => return Err(docker_error(e)),
    };
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    match labels.get("hypercode.mission") {
        Some(owner) if *owner == mission.to_string() => Ok(inspected.id),
        owner => Err(StepError::fatal(format!(
            "a container named {} already exists ({}): remove it, or deploy under another name",
            spec.container,
            match owner {
                Some(owner) => format!("deployed by mission {owner}"),
                None => "not deployed by HyperCode".to_owned(),
            }
        ))),
    }
}

/// Create the network `name` unless it exists.
async fn ensure_network(docker: &Docker, name: &str) -> Result<(), StepError> {
    match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => return Err(docker_error(e)),
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(HashMap::from([(
            "hypercode.agents".to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {
            tracing::info!(network = name, "agents network created");
            Ok(())
        }
        // Created meanwhile by another deployment.
        Err(e) if status(&e) == Some(409) => Ok(()),
        Err(e) => Err(docker_error(e)),
    }
}

/// Stop and remove a container; one already gone is fine.
async fn remove_container(docker: &DockerHandle, id: &str) -> Result<(), StepError> {
    let docker = docker.client().await.retryable()?;
    let stop = StopContainerOptions {
        t: Some(5),
        ..Default::default()
    };
    match docker.stop_container(id, Some(stop)).await {
        Ok(()) => {}
        Err(e) if matches!(status(&e), Some(304 | 404)) => {}
        Err(e) => return Err(docker_error(e)),
    }
    let remove = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(remove)).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        Err(e) => Err(docker_error(e)),
    }
}

#[async_trait]
impl Workflow for DeployAgentWorkflow {
    const NAME: &'static str = DEPLOY_AGENT_WORKFLOW;
    type Input = DeployInput;
    type Output = Deployed;

    fn check(&self, input: &DeployInput) -> Result<(), Vec<InputProblem>> {
        let problems = problems(&self.config, input);
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems),
        }
    }

    async fn run(&self, ctx: &mut Context, input: DeployInput) -> WorkflowResult<Deployed> {
        let mission = ctx.mission_id();
        let validate = Step::new("validate")
            .input(&input)?
            .retry(RetryPolicy::NONE);
        let spec: ContainerSpec = ctx
            .step(validate, || async {
                let spec = spec(&self.config, &input, mission);
                self.validate(&spec).await?;
                Ok::<_, StepError>(spec)
            })
            .await?;
        let shown = serde_json::to_string_pretty(&spec).unwrap_or_default();
        let message = format!(
            "Deploy agent `{}` with capabilities {} as this container?\n{shown}",
            input.name,
            input.capabilities.join(", ")
        );
        ctx.approval(
            "approve",
            Approval {
                message: crate::agent_command::truncated(message, Approval::MAX_MESSAGE_BYTES),
                timeout: None,
            },
        )
        .await?;

        let (docker, provisioner, agent) = (
            self.docker.clone(),
            self.provisioner.clone(),
            input.name.clone(),
        );
        let create = Step::new("create").retry(DOCKER_RETRY).compensate(
            DOCKER_RETRY,
            move |created: Created| {
                let (docker, provisioner, agent) =
                    (docker.clone(), provisioner.clone(), agent.clone());
                async move {
                    remove_container(&docker, &created.id).await?;
                    let revoked = provisioner
                        .revoke_keys(&agent, &created.key_name)
                        .await
                        .retryable()?;
                    Ok(json!({"removed": created.id, "keys_revoked": revoked}))
                }
            },
        );
        let created: Created = ctx
            .step(create, || self.create(&spec, &input.name, mission))
            .await?;

        let start = Step::new("start").retry(DOCKER_RETRY);
        ctx.step(start, || async {
            let docker = self.client(false).await?;
            match docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await
            {
                Ok(()) => Ok(()),
                // Already started by an earlier attempt.
                Err(e) if status(&e) == Some(304) => Ok(()),
                Err(e) => Err(docker_error(e)),
            }
        })
        .await?;

        let health = Step::new("health").retry(RetryPolicy::NONE);
        let healthy: Healthy = ctx.step(health, || self.health(&created.id)).await?;

        let provisioner = self.provisioner.clone();
        let register = Step::new("register")
            .input(&json!({"url": healthy.url}))?
            .retry(DOCKER_RETRY)
            .compensate(DOCKER_RETRY, move |registered: Value| {
                let provisioner = provisioner.clone();
                async move {
                    let name = registered["name"].as_str().unwrap_or_default().to_owned();
                    let deregistered = provisioner.deregister(&name).await.retryable()?;
                    Ok(json!({"deregistered": deregistered}))
                }
            });
        ctx.step(register, || async {
            self.register(&input, &created.id, &healthy.url).await?;
            Ok::<_, StepError>(json!({"name": input.name}))
        })
        .await?;
        Ok(Deployed {
            container: spec.container,
            container_id: created.id,
            url: healthy.url,
            name: input.name,
            capabilities: input.capabilities,
        })
    }
}

/// Every problem of `input` under `config`, located.
fn problems(config: &DeployConfig, input: &DeployInput) -> Vec<InputProblem> {
    let mut problems = Vec::new();
    if !valid_name(&input.name) {
        problems.push(InputProblem::new(
            "/name",
            "an agent name is a letter or digit, then up to 62 letters, digits, `_` or `-`",
        ));
    }
    if !config.images.contains(&input.image) {
        problems.push(InputProblem::new(
            "/image",
            format!(
                "not an allowed agent image (HYPERCODE_AGENT_IMAGES: {})",
                config.images.join(", ")
            ),
        ));
    }
    if input.capabilities.is_empty() || input.capabilities.len() > 64 {
        problems.push(InputProblem::new(
            "/capabilities",
            "an agent has 1 to 64 capabilities",
        ));
    }
    for (i, capability) in input.capabilities.iter().enumerate() {
        if !valid_capability(capability) {
            problems.push(InputProblem::new(
                format!("/capabilities/{i}"),
                "a capability is 1 to 64 letters, digits, `_`, `-` or `.`",
            ));
        }
    }
    if input.env.len() > MAX_ENV {
        problems.push(InputProblem::new(
            "/env",
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (name, value) in &input.env {
        let pointer = format!("/env/{}", name.replace('~', "~0").replace('/', "~1"));
        let well_formed = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed {
            problems.push(InputProblem::new(
                pointer,
                "a variable name is letters, digits and `_`, not starting with a digit",
            ));
        } else if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(InputProblem::new(
                pointer,
                "set by the deployment itself (the agent's name, capabilities, secrets and API URL)",
            ));
        } else if value.len() > MAX_ENV_VALUE_BYTES || value.contains('\0') {
            problems.push(InputProblem::new(
                pointer,
                format!("a value is at most {MAX_ENV_VALUE_BYTES} bytes, without NUL"),
            ));
        }
    }
    problems
}

/// Parse `HYPERCODE_AGENT_IMAGES`: comma-separated image references, blanks ignored.
pub fn parse_images(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|image| !image.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(env: &[(&str, &str)]) -> DeployInput {
        DeployInput {
            name: "ops-1".to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            capabilities: vec!["devops".to_owned()],
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn parses_the_allowlist() {
        assert_eq!(parse_images(" a:1 ,, b "), ["a:1", "b"]);
        assert!(parse_images("").is_empty());
    }

    #[test]
    fn the_spec_locks_the_container_down_and_hides_the_secrets() {
        let config = DeployConfig::default();
        let mission = MissionId::new();
        let spec = spec(&config, &input(&[("LOG", "debug")]), mission);
        assert_eq!(spec.container, "hc-agent-ops-1");
        assert_eq!(spec.user, AGENT_USER);
        assert_eq!(spec.cap_drop, ["ALL"]);
        assert!(spec.read_only_rootfs);
        assert_eq!(spec.security_opt, ["no-new-privileges"]);
        assert_eq!(spec.labels["hypercode.agent"], "ops-1");
        assert_eq!(spec.labels["hypercode.heal"], "true");
        assert_eq!(spec.labels["hypercode.mission"], mission.to_string());
        assert_eq!(spec.env["LOG"], "debug");
        assert_eq!(spec.env["HYPERCODE_AGENT_LISTEN"], "0.0.0.0:9000");
        assert_eq!(spec.env["HYPERCODE_AGENT_API_URL"], config.api_url);
        assert_eq!(spec.env["HYPERCODE_AGENT_CALL_SECRET"], GENERATED);
        assert_eq!(spec.env["HYPERCODE_API_KEY"], GENERATED);
        // A listen address of the caller's is kept (the health check still uses the port).
        let own = spec_of(&[("HYPERCODE_AGENT_LISTEN", "127.0.0.1:9000")]);
        assert_eq!(own.env["HYPERCODE_AGENT_LISTEN"], "127.0.0.1:9000");
        let secret = call_secret();
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, call_secret());
    }

    fn spec_of(env: &[(&str, &str)]) -> ContainerSpec {
        spec(&DeployConfig::default(), &input(env), MissionId::new())
    }

    #[test]
    fn inputs_are_checked_against_the_allowlist_and_the_reserved_variables() {
        let config = DeployConfig::default();
        assert!(problems(&config, &input(&[("LOG", "1")])).is_empty());
        let mut bad = input(&[("HYPERCODE_API_KEY", "x"), ("1X", "y"), ("OK", "a\0b")]);
        bad.name = "-bad".to_owned();
        bad.image = "busybox".to_owned();
        bad.capabilities = vec!["a/b".to_owned()];
        let pointers: Vec<String> = problems(&config, &bad)
            .into_iter()
            .map(|p| p.pointer)
            .collect();
        assert_eq!(
            pointers,
            [
                "/name",
                "/image",
                "/capabilities/0",
                "/env/1X",
                "/env/HYPERCODE_API_KEY",
                "/env/OK"
            ]
        );
    }
}
