//! `/api/v1/agents`: the agent registry (admins register and deregister, readers list) and the
//! agents' heartbeats. A heartbeat comes from a key of role `agent` bound to the agent's name
//! (`hypercode keys create --role agent --agent NAME`), which can beat for that agent only;
//! admins may beat for any; it may also read the missions its agent answered a step of
//! ([`check_own`]). The call secret goes in and never comes out.
//!
//! [`Provisioner`] is what the `deploy_agent` workflow registers its agents and issues their
//! keys through: the registry and the key table, both of which this crate owns.

use crate::auth::{Admin, Heartbeater, Reader};
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path};
use crate::openapi::{JsonBodyProblems, MalformedJson, NotJson, ProblemDoc};
use crate::views::AgentList;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use hypercode_agents::{
    valid_capability, valid_name, AgentError, AgentInfo, AgentProvisioner, AgentRegistry,
    AgentResult, NewAgent,
};
use hypercode_engine::MissionId;
use serde::Deserialize;
use sqlx::PgPool;

/// Largest accepted call secret, in bytes.
const MAX_CALL_SECRET_BYTES: usize = 4096;

/// Most capabilities one agent may have.
const MAX_CAPABILITIES: usize = 64;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agents", get(list).post(register))
        .route("/api/v1/agents/{name}", delete(deregister))
        .route("/api/v1/agents/{name}/heartbeat", post(heartbeat))
}

/// The body of `POST /api/v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentBody {
    /// A letter or digit, then up to 62 letters, digits, `_` or `-`; registering a name again
    /// replaces what was registered.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
    name: String,
    /// The agent's base URL (http or https); missions call `POST <url>/execute`.
    url: String,
    /// What it can do: 1 to 64 capabilities of 1 to 64 letters, digits, `_`, `-` or `.`.
    capabilities: Vec<String>,
    /// What HyperCode presents as `Authorization: Bearer <call_secret>`; stored sealed
    /// (AES-256-GCM), never returned.
    call_secret: String,
}

/// The body of `POST /api/v1/agents/{name}/heartbeat`: `{}` or `{"in_flight": n}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    /// The calls the agent is serving now (routing prefers the agent with the fewest).
    #[serde(default)]
    in_flight: u64,
}

/// Agent keys in `api_keys` and registrations in `registry`, for deployments.
#[derive(Debug, Clone)]
pub struct Provisioner {
    registry: AgentRegistry,
    pool: PgPool,
}

impl Provisioner {
    /// Keys in the `api_keys` table of `pool`, agents in `registry`.
    pub fn new(registry: AgentRegistry, pool: PgPool) -> Self {
        Self { registry, pool }
    }
}

fn key_error(e: crate::keys::KeyError) -> AgentError {
    AgentError::Keys(Box::new(e))
}

#[async_trait::async_trait]
impl AgentProvisioner for Provisioner {
    async fn issue_key(&self, agent: &str, key_name: &str) -> AgentResult<String> {
        let created =
            crate::keys::create_bound(&self.pool, key_name, crate::keys::Role::Agent, Some(agent))
                .await
                .map_err(key_error)?;
        Ok(created.key)
    }

    async fn revoke_keys(&self, agent: &str, key_name: &str) -> AgentResult<u64> {
        crate::keys::revoke_bound(&self.pool, agent, key_name)
            .await
            .map_err(key_error)
    }

    async fn register(&self, agent: &NewAgent) -> AgentResult<()> {
        self.registry.register(agent).await.map(|_| ())
    }

    async fn deregister(&self, name: &str) -> AgentResult<bool> {
        self.registry.deregister(name).await
    }
}

/// The registry, which the binary always configures.
fn registry(state: &AppState) -> Result<&AgentRegistry, ApiError> {
    state
        .agents
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server has no agent registry".to_owned()))
}

/// For an agent key (`agent` is its agent): 404 unless that agent answered a step of mission
/// `id` (a step's output names it), as if the mission did not exist; readers pass.
pub(crate) async fn check_own(
    state: &AppState,
    id: MissionId,
    agent: Option<&str>,
) -> Result<(), ApiError> {
    let Some(agent) = agent else {
        return Ok(());
    };
    let answered = sqlx::query_scalar!(
        r#"select exists (select 1 from steps where mission_id = $1 and output->>'agent' = $2)
           as "answered!""#,
        id.0,
        agent,
    )
    .fetch_one(&state.pool)
    .await?;
    match answered {
        true => Ok(()),
        false => Err(ApiError::NotFound(format!("mission {id} not found"))),
    }
}

/// `name` if it is a valid agent name, else a 422 pointing at it.
fn checked_name(name: String, pointer: &str) -> Result<String, ApiError> {
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::InvalidAgent(vec![FieldError::new(
            pointer,
            "an agent name is a letter or digit, then up to 62 letters, digits, `_` or `-`",
        )]))
    }
}

/// Every problem of a registration, located.
fn problems(body: &AgentBody) -> Vec<FieldError> {
    let mut problems = Vec::new();
    if !valid_name(&body.name) {
        problems.push(FieldError::new(
            "/name",
            "an agent name is a letter or digit, then up to 62 letters, digits, `_` or `-`",
        ));
    }
    match url::Url::parse(&body.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => problems.push(FieldError::new(
            "/url",
            "must be an http or https URL with a host",
        )),
    }
    if body.capabilities.is_empty() || body.capabilities.len() > MAX_CAPABILITIES {
        problems.push(FieldError::new(
            "/capabilities",
            format!("an agent has 1 to {MAX_CAPABILITIES} capabilities"),
        ));
    }
    for (i, capability) in body.capabilities.iter().enumerate() {
        if !valid_capability(capability) {
            problems.push(FieldError::new(
                format!("/capabilities/{i}"),
                "a capability is 1 to 64 letters, digits, `_`, `-` or `.`",
            ));
        }
    }
    if body.call_secret.is_empty() || body.call_secret.len() > MAX_CALL_SECRET_BYTES {
        problems.push(FieldError::new(
            "/call_secret",
            format!("a call secret is 1 to {MAX_CALL_SECRET_BYTES} bytes"),
        ));
    } else if axum::http::HeaderValue::from_str(&format!("Bearer {}", body.call_secret)).is_err() {
        problems.push(FieldError::new(
            "/call_secret",
            "a call secret must be valid in a header: no control characters",
        ));
    }
    problems
}

#[utoipa::path(
    post,
    path = "/api/v1/agents",
    tag = "agents",
    request_body = AgentBody,
    responses(
        (status = 201, description = "The agent was registered (its call secret is not returned)", body = AgentInfo),
        (status = 200, description = "What was registered under this name was replaced", body = AgentInfo),
        JsonBodyProblems,
        (status = 422, description = "A bad name, URL, capability or call secret (`errors` locates each) or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/agents` (admin): register an agent; 201 when created, 200 when replaced.
async fn register(
    Admin(principal): Admin,
    State(state): State<AppState>,
    Json(body): Json<AgentBody>,
) -> Result<(StatusCode, axum::Json<AgentInfo>), ApiError> {
    let problems = problems(&body);
    if !problems.is_empty() {
        return Err(ApiError::InvalidAgent(problems));
    }
    let agent = NewAgent {
        name: body.name,
        url: body.url.trim_end_matches('/').to_owned(),
        capabilities: body.capabilities,
        call_secret: body.call_secret,
    };
    let (info, created) = registry(&state)?.register(&agent).await?;
    tracing::info!(agent = %agent.name, by = %principal.name, created, "agent registered");
    Ok((crate::created_or_ok(created), axum::Json(info)))
}

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    responses(
        (status = 200, description = "Every registered agent with its liveness, by name; never a call secret", body = AgentList),
    ),
)]
/// `GET /api/v1/agents` (viewer and up): the agents and whether each is live.
async fn list(_: Reader, State(state): State<AppState>) -> Result<axum::Json<AgentList>, ApiError> {
    let agents = registry(&state)?.list().await?;
    Ok(axum::Json(AgentList { agents }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/agents/{name}",
    tag = "agents",
    params(("name" = String, Path, description = "The agent's name")),
    responses(
        (status = 204, description = "The agent was deregistered; no mission step is routed to it any more"),
        (status = 404, description = "No agent has this name", content_type = "application/problem+json", body = ProblemDoc),
        (status = 422, description = "Not a valid agent name (`/name`)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `DELETE /api/v1/agents/{name}` (admin).
async fn deregister(
    Admin(principal): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = checked_name(name, "/name")?;
    if !registry(&state)?.deregister(&name).await? {
        return Err(ApiError::NotFound(format!("agent `{name}` not found")));
    }
    tracing::info!(agent = %name, by = %principal.name, "agent deregistered");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/{name}/heartbeat",
    tag = "agents",
    params(("name" = String, Path, description = "The agent's name")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "Recorded: the agent is live for the heartbeat TTL (30 s) from now", body = AgentInfo),
        (status = 404, description = "No agent has this name", content_type = "application/problem+json", body = ProblemDoc),
        MalformedJson,
        NotJson,
        (status = 422, description = "Not a valid agent name (`/name`) or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/agents/{name}/heartbeat`: an agent key bound to `name` (or an admin) says the
/// agent is up, with how many calls it is serving.
async fn heartbeat(
    Heartbeater(principal): Heartbeater,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<HeartbeatBody>,
) -> Result<axum::Json<AgentInfo>, ApiError> {
    if principal.agent.as_deref() != Some(name.as_str())
        && principal.role != crate::keys::Role::Admin
    {
        return Err(ApiError::Forbidden(format!(
            "key `{}` may heartbeat {}, not for agent `{name}`",
            principal.name,
            match &principal.agent {
                Some(own) => format!("for agent `{own}` only"),
                None => "for no agent (create it with --agent NAME)".to_owned(),
            }
        )));
    }
    let name = checked_name(name, "/name")?;
    let info = registry(&state)?
        .heartbeat(&name, body.in_flight)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` not found")))?;
    Ok(axum::Json(info))
}
