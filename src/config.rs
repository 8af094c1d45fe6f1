//! Configuration from the environment. Every secret may also come from `NAME_FILE` (the Docker
//! secrets convention); setting both is refused, so a stale variable can never win silently.

use anyhow::{bail, Context as _, Result};
use hypercode_api::rate_limit::{RateLimits, DEFAULT_AUTH_FAIL_RATE, DEFAULT_RATE};
use hypercode_engine::EngineConfig;
use hypercode_payments::Catalog;
use hypercode_workflows::agent_command::CommandRouting;
use hypercode_workflows::deploy_agent::{self, DeployConfig};
use hypercode_workflows::egress::{self, Rule};
use std::sync::Arc;
use std::time::Duration;

/// The catalogue read when `HYPERCODE_CATALOG` is not set, relative to the working directory.
const DEFAULT_CATALOG: &str = "catalog.toml";

/// Read a secret from `NAME` or from the file named by `NAME_FILE`.
pub fn secret(name: &str) -> Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (std::env::var(name).ok(), std::env::var(&file_var).ok()) {
        (Some(_), Some(_)) => bail!("both {name} and {file_var} are set; set only one"),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {file_var}={path}"))?;
            Ok(Some(value.trim_end().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// A required secret.
pub fn required_secret(name: &str) -> Result<String> {
    secret(name)?.with_context(|| format!("{name} (or {name}_FILE) must be set"))
}

/// The variable `name` parsed as a `T`, or `None` when it is not set; `what` names the expected
/// form in the error.
fn parsed<T>(name: &str, what: &str) -> Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={value} is not {what}")),
        Err(_) => Ok(None),
    }
}

fn number(name: &str, default: u64) -> Result<u64> {
    Ok(parsed(name, "a whole number")?.unwrap_or(default))
}

/// A number of at most `u32::MAX`, or `None` when the variable is not set.
fn optional_u32(name: &str) -> Result<Option<u32>> {
    parsed(name, "a whole number below 2^32")
}

/// A duration in milliseconds, or `None` when the variable is not set.
fn optional_ms(name: &str) -> Result<Option<Duration>> {
    Ok(parsed(name, "a whole number of milliseconds")?.map(Duration::from_millis))
}

/// `HYPERCODE_RATE_LIMIT` and its per-role overrides (requests per second per key; 0 is no
/// limit), and `HYPERCODE_AUTH_FAIL_LIMIT` (failed authentications per second per client
/// address; 0 is no limit).
fn rate_limits() -> Result<RateLimits> {
    Ok(RateLimits {
        default: optional_u32("HYPERCODE_RATE_LIMIT")?.unwrap_or(DEFAULT_RATE),
        admin: optional_u32("HYPERCODE_RATE_LIMIT_ADMIN")?,
        operator: optional_u32("HYPERCODE_RATE_LIMIT_OPERATOR")?,
        agent: optional_u32("HYPERCODE_RATE_LIMIT_AGENT")?,
        viewer: optional_u32("HYPERCODE_RATE_LIMIT_VIEWER")?,
        auth_fail: optional_u32("HYPERCODE_AUTH_FAIL_LIMIT")?.unwrap_or(DEFAULT_AUTH_FAIL_RATE),
    })
}

/// A comma-separated list of egress entries (empty when the variable is not set).
fn egress_rules(name: &str) -> Result<Vec<Rule>> {
    let list = std::env::var(name).unwrap_or_default();
    egress::parse_rules(&list).with_context(|| format!("{name}={list}"))
}

/// `HYPERCODE_INTERNAL_URL`: an http(s) URL with a host, if set.
fn internal_url() -> Result<Option<url::Url>> {
    let Some(value) = std::env::var("HYPERCODE_INTERNAL_URL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let url = url::Url::parse(&value).with_context(|| format!("HYPERCODE_INTERNAL_URL={value}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        anyhow::bail!("HYPERCODE_INTERNAL_URL={value}: not an http(s) URL with a host");
    }
    Ok(Some(url))
}

/// Everything the processes read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `HYPERCODE_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `HYPERCODE_QUEUE`: the queue name (isolates deployments sharing a Redis).
    pub queue: String,
    /// `HYPERCODE_LEASE_TTL_MS`.
    pub lease_ttl: Duration,
    /// `HYPERCODE_MAX_PAYLOAD_BYTES`.
    pub max_payload_bytes: usize,
    /// `HYPERCODE_CLAIM_HOLD_MS`: how long a claim waits to commit with its run's first write.
    pub claim_hold: Duration,
    /// `HYPERCODE_TICK_MS`: the reconciler's scan interval.
    pub tick: Duration,
    /// `HYPERCODE_SCHEDULE_TICK_MS`: how often `serve` looks for due schedule ticks.
    pub schedule_tick: Duration,
    /// `HYPERCODE_REDELIVER_AFTER_MS`.
    pub redeliver_after: Duration,
    /// `HYPERCODE_DB_POOL`: connections per process.
    pub db_pool: u32,
    /// `HYPERCODE_DB_ACQUIRE_TIMEOUT_MS`: how long to wait for a pooled connection (`None`: the
    /// command's default, see `database`).
    pub db_acquire_timeout: Option<Duration>,
    /// `HYPERCODE_DB_STATEMENT_TIMEOUT_MS`: PostgreSQL's `statement_timeout` for the process's
    /// connections (`None`: the command's default; 0: none).
    pub db_statement_timeout: Option<Duration>,
    /// `HYPERCODE_QUEUE_MAX_DEPTH`: wake-ups kept waiting in Redis before backpressure.
    pub queue_max_depth: u64,
    /// `HYPERCODE_RATE_LIMIT`, `HYPERCODE_RATE_LIMIT_{ADMIN,OPERATOR,AGENT,VIEWER}` and
    /// `HYPERCODE_AUTH_FAIL_LIMIT`.
    pub rate_limits: RateLimits,
    /// `HYPERCODE_EGRESS_ALLOW`: destinations plans may call despite the default denials.
    pub egress_allow: Vec<Rule>,
    /// `HYPERCODE_EGRESS_DENY`: destinations plans may not call, whatever else says.
    pub egress_deny: Vec<Rule>,
    /// `HYPERCODE_INTERNAL_URL`: where this deployment's workers reach its API (`http://api:8000`
    /// under compose). The dashboard's sample plan calls it, and the egress policy counts it as
    /// the server itself.
    pub internal_url: Option<url::Url>,
    /// `HYPERCODE_AGENTS_PREFIX` (the heartbeat keys' prefix, default `agents`),
    /// `HYPERCODE_AGENT_HEARTBEAT_TTL_S` (how long a heartbeat keeps an agent live, 30) and
    /// `HYPERCODE_SECRETS_KEY` (or `_FILE`: the key call secrets are sealed with; without it,
    /// the database's `sealing_key`).
    pub agents: hypercode_agents::RegistryConfig,
    /// `HYPERCODE_AGENT_ROUTES` (`word=capability,...`, default
    /// `deploy=devops,echo=echo,upper=upper`) and `HYPERCODE_AGENT_APPROVAL_PATTERNS`
    /// (default `deploy,delete,drop,payment`): how `agent_command` routes a command.
    pub agent_routing: hypercode_workflows::agent_command::CommandRouting,
    /// Agent X's `deploy_agent`: `HYPERCODE_AGENT_IMAGES` (the allowed images, comma-separated,
    /// default `hypercode-agent:local`), `HYPERCODE_AGENT_NETWORK` (default `hypercode-agents`),
    /// `HYPERCODE_AGENT_API_URL` (the API as the agents reach it, default `http://api:8000`) and
    /// `HYPERCODE_AGENT_HEALTH_TIMEOUT_S` (60).
    pub agent_deploy: DeployConfig,
    /// `STRIPE_SECRET_KEY` (or `_FILE`): without it checkout answers 503.
    pub stripe_secret_key: Option<String>,
    /// `STRIPE_WEBHOOK_SECRET` (or `_FILE`): without it the webhook answers 503.
    pub stripe_webhook_secret: Option<String>,
    /// `HYPERCODE_STRIPE_API_URL`: Stripe's API base instead of `https://api.stripe.com`.
    pub stripe_api_url: Option<String>,
    /// `HYPERCODE_CATALOG`: the catalogue file (`None`: `catalog.toml`, if it exists).
    pub catalog: Option<std::path::PathBuf>,
}

impl Settings {
    /// Read the settings; only `DATABASE_URL` is required here.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            database_url: required_secret("DATABASE_URL")?,
            redis_url: secret("HYPERCODE_REDIS_URL")?,
            queue: std::env::var("HYPERCODE_QUEUE").unwrap_or_else(|_| "hypercode".to_owned()),
            lease_ttl: Duration::from_millis(number("HYPERCODE_LEASE_TTL_MS", 30_000)?.max(300)),
            max_payload_bytes: number("HYPERCODE_MAX_PAYLOAD_BYTES", 1024 * 1024)? as usize,
            claim_hold: Duration::from_millis(number(
                "HYPERCODE_CLAIM_HOLD_MS",
                EngineConfig::default().claim_hold.as_millis() as u64,
            )?),
            tick: Duration::from_millis(number("HYPERCODE_TICK_MS", 100)?.max(5)),
            schedule_tick: Duration::from_millis(
                number(
                    "HYPERCODE_SCHEDULE_TICK_MS",
                    hypercode_engine::TICK_INTERVAL.as_millis() as u64,
                )?
                .max(10),
            ),
            redeliver_after: Duration::from_millis(number("HYPERCODE_REDELIVER_AFTER_MS", 10_000)?),
            db_pool: number("HYPERCODE_DB_POOL", 16)? as u32,
            db_acquire_timeout: optional_ms("HYPERCODE_DB_ACQUIRE_TIMEOUT_MS")?,
            db_statement_timeout: optional_ms("HYPERCODE_DB_STATEMENT_TIMEOUT_MS")?,
            queue_max_depth: number(
                "HYPERCODE_QUEUE_MAX_DEPTH",
                hypercode_workers::queue::MAX_DEPTH,
            )?
            .clamp(1, 7_000),
            rate_limits: rate_limits()?,
            egress_allow: egress_rules("HYPERCODE_EGRESS_ALLOW")?,
            egress_deny: egress_rules("HYPERCODE_EGRESS_DENY")?,
            internal_url: internal_url()?,
            agents: hypercode_agents::RegistryConfig {
                prefix: std::env::var("HYPERCODE_AGENTS_PREFIX")
                    .unwrap_or_else(|_| "agents".to_owned()),
                ttl: Duration::from_secs(number("HYPERCODE_AGENT_HEARTBEAT_TTL_S", 30)?.max(1)),
                secrets_key: secret("HYPERCODE_SECRETS_KEY")?
                    .filter(|key| !key.is_empty())
                    .map(|key| Arc::new(hypercode_agents::SealingKey::configured(&key))),
            },
            agent_routing: agent_routing()?,
            agent_deploy: agent_deploy()?,
            stripe_secret_key: secret("STRIPE_SECRET_KEY")?.filter(|k| !k.is_empty()),
            stripe_webhook_secret: secret("STRIPE_WEBHOOK_SECRET")?.filter(|k| !k.is_empty()),
            stripe_api_url: std::env::var("HYPERCODE_STRIPE_API_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            catalog: std::env::var_os("HYPERCODE_CATALOG")
                .filter(|p| !p.is_empty())
                .map(Into::into),
        })
    }

    /// The catalogue: `HYPERCODE_CATALOG` (which must exist and be valid), else `catalog.toml`
    /// in the working directory when it exists, else an empty one (nothing for sale).
    pub fn catalog(&self) -> Result<Catalog> {
        let default = std::path::Path::new(DEFAULT_CATALOG);
        let path = match &self.catalog {
            Some(path) => path.as_path(),
            None if default.exists() => default,
            None => {
                tracing::warn!(
                    "no HYPERCODE_CATALOG and no {DEFAULT_CATALOG} here: nothing is for sale"
                );
                return Ok(Catalog::default());
            }
        };
        Ok(Catalog::load(path)?)
    }

    /// The Redis URL, required by processes that use the queue.
    pub fn redis_url(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .context("HYPERCODE_REDIS_URL (or HYPERCODE_REDIS_URL_FILE) must be set")
    }
}

/// `HYPERCODE_AGENT_ROUTES` and `HYPERCODE_AGENT_APPROVAL_PATTERNS`, each replacing its default
/// when set.
fn agent_routing() -> Result<CommandRouting> {
    let mut routing = CommandRouting::default();
    if let Ok(list) = std::env::var("HYPERCODE_AGENT_ROUTES") {
        routing.prefixes = CommandRouting::parse_prefixes(&list)
            .map_err(|e| anyhow::anyhow!("HYPERCODE_AGENT_ROUTES: {e}"))?;
    }
    if let Ok(list) = std::env::var("HYPERCODE_AGENT_APPROVAL_PATTERNS") {
        routing.approval_patterns = CommandRouting::parse_patterns(&list);
    }
    Ok(routing)
}

/// Agent X's settings, each replacing its default when set.
fn agent_deploy() -> Result<DeployConfig> {
    let mut config = DeployConfig::default();
    if let Ok(list) = std::env::var("HYPERCODE_AGENT_IMAGES") {
        config.images = deploy_agent::parse_images(&list);
        if config.images.is_empty() {
            bail!("HYPERCODE_AGENT_IMAGES lists no image");
        }
    }
    if let Ok(network) = std::env::var("HYPERCODE_AGENT_NETWORK") {
        config.network = network;
    }
    if let Ok(url) = std::env::var("HYPERCODE_AGENT_API_URL") {
        config.api_url = url.trim_end_matches('/').to_owned();
    }
    let timeout = number(
        "HYPERCODE_AGENT_HEALTH_TIMEOUT_S",
        config.health_timeout.as_secs(),
    )?;
    config.health_timeout = Duration::from_secs(timeout.max(1));
    Ok(config)
}

/// The healer's settings when `HYPERCODE_HEALER=on` (`None` when it is off, the default):
/// `HYPERCODE_HEAL_LABEL` (`key=value`, default `hypercode.heal=true`),
/// `HYPERCODE_HEAL_SWEEP_S` (30), `HYPERCODE_HEAL_MAX_ATTEMPTS` (5) and
/// `HYPERCODE_HEAL_WINDOW_S` (600).
pub fn healer() -> Result<Option<hypercode_healer::HealerConfig>> {
    match std::env::var("HYPERCODE_HEALER").as_deref() {
        Err(_) | Ok("off") | Ok("") => return Ok(None),
        Ok("on") => {}
        Ok(other) => bail!("HYPERCODE_HEALER={other} is neither `on` nor `off`"),
    }
    let label = match std::env::var("HYPERCODE_HEAL_LABEL") {
        Ok(label) => label
            .parse()
            .map_err(|e: String| anyhow::anyhow!("HYPERCODE_HEAL_LABEL: {e}"))?,
        Err(_) => hypercode_healer::LabelFilter::default(),
    };
    Ok(Some(hypercode_healer::HealerConfig {
        label,
        sweep: Duration::from_secs(number("HYPERCODE_HEAL_SWEEP_S", 30)?.max(1)),
        policy: hypercode_healer::HealPolicy {
            max_attempts: optional_u32("HYPERCODE_HEAL_MAX_ATTEMPTS")?
                .unwrap_or(5)
                .max(1),
            window: Duration::from_secs(number("HYPERCODE_HEAL_WINDOW_S", 600)?.max(1)),
        },
    }))
}
