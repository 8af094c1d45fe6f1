//! [`AgentRegistry`]: registered agents in the `agents` table, their liveness in Redis.
//!
//! A heartbeat writes the agent's `last_heartbeat` to PostgreSQL and sets the key
//! `<prefix>:heartbeat:<name>` (`agents:heartbeat:<name>` by default) to `{"at", "in_flight"}`
//! with a time to live ([`RegistryConfig::ttl`], 30 s): an agent is live exactly while its key
//! exists, so an agent that stops beating is dead one TTL later without anyone sweeping.
//!
//! Call secrets are stored sealed ([`crate::sealing`]): with `HYPERCODE_SECRETS_KEY` when it is
//! configured ([`RegistryConfig::secrets_key`]), else with the database's `sealing_key`.

use crate::sealing::{kind_of, Kind, SealError, SealingKey};
use crate::{order, AgentDirectory, AgentInfo, AgentResult, Endpoint, NewAgent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one Redis call may take: a mission waiting for an agent must not hang on Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where heartbeats live and how long they last.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The Redis key prefix (`HYPERCODE_AGENTS_PREFIX`, default `agents`).
    pub prefix: String,
    /// How long a heartbeat keeps an agent live (`HYPERCODE_AGENT_HEARTBEAT_TTL_S`, 30 s).
    pub ttl: Duration,
    /// The key call secrets are sealed with (`HYPERCODE_SECRETS_KEY`); `None`: the database's.
    pub secrets_key: Option<Arc<SealingKey>>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            prefix: "agents".to_owned(),
            ttl: Duration::from_secs(30),
            secrets_key: None,
        }
    }
}

/// What a heartbeat key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    at: DateTime<Utc>,
    in_flight: u64,
}

/// The registry on PostgreSQL and Redis. Clones share the connection and the turn counter.
#[derive(Clone)]
pub struct AgentRegistry {
    pool: PgPool,
    redis: ConnectionManager,
    config: RegistryConfig,
    /// Which of the agents tied for fewest calls in flight goes first next (per process).
    turn: Arc<AtomicUsize>,
    /// The `sealing_key` table's key, read on first use.
    database_key: Arc<tokio::sync::OnceCell<SealingKey>>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A row of `agents`.
struct Row {
    name: String,
    url: String,
    capabilities: Vec<String>,
    /// A secret stored before secrets were sealed (`None` once sealed).
    call_secret: Option<String>,
    call_secret_sealed: Option<Vec<u8>>,
    last_heartbeat: Option<DateTime<Utc>>,
}

impl AgentRegistry {
    /// The registry on `pool` and the Redis at `redis_url` (connected on first use).
    pub fn new(pool: PgPool, redis_url: &str, config: RegistryConfig) -> AgentResult<Self> {
        let connection = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let client = redis::Client::open(redis_url)?;
        Ok(Self {
            pool,
            redis: ConnectionManager::new_lazy_with_config(client, connection)?,
            config,
            turn: Arc::default(),
            database_key: Arc::default(),
        })
    }

    /// The key of the `sealing_key` table.
    async fn database_key(&self) -> AgentResult<&SealingKey> {
        self.database_key
            .get_or_try_init(|| async {
                let key = sqlx::query_scalar!("select key from sealing_key where id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(SealingKey::database(&key))
            })
            .await
    }

    /// Seal agent `name`'s call secret with the configured key, else the database's.
    async fn seal(&self, name: &str, secret: &str) -> AgentResult<Vec<u8>> {
        let key = match &self.config.secrets_key {
            Some(key) => key.as_ref(),
            None => self.database_key().await?,
        };
        Ok(key.seal(name, secret)?)
    }

    /// The call secret of a row: opened with the key that sealed it, or as stored before
    /// secrets were sealed.
    async fn call_secret(&self, row: &Row) -> AgentResult<String> {
        let Some(sealed) = &row.call_secret_sealed else {
            return Ok(row.call_secret.clone().unwrap_or_default());
        };
        let key = match kind_of(sealed) {
            Some(Kind::Configured) => self
                .config
                .secrets_key
                .as_deref()
                .ok_or(SealError::NoConfiguredKey)?,
            _ => self.database_key().await?,
        };
        Ok(key.open(&row.name, sealed)?)
    }

    /// Seal the call secrets stored in plain text before secrets were sealed; how many. The
    /// server runs it at startup; reading handles plain ones meanwhile.
    pub async fn seal_plain_secrets(&self) -> AgentResult<u64> {
        let plain = sqlx::query!(
            r#"select name, call_secret as "call_secret!" from agents
               where call_secret is not null and call_secret_sealed is null"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut sealed = 0;
        for row in plain {
            let sealed_secret = self.seal(&row.name, &row.call_secret).await?;
            // Only if still the same plain secret: a registration meanwhile sealed its own.
            sealed += sqlx::query!(
                "update agents set call_secret = null, call_secret_sealed = $2
                 where name = $1 and call_secret = $3",
                row.name,
                sealed_secret,
                row.call_secret,
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if sealed > 0 {
            tracing::info!(sealed, "sealed the call secrets stored in plain text");
        }
        Ok(sealed)
    }

    /// The heartbeat key of agent `name`.
    pub fn heartbeat_key(&self, name: &str) -> String {
        format!("{}:heartbeat:{name}", self.config.prefix)
    }

    /// Register an agent, or replace what was registered under its name (its heartbeat state
    /// is kept); `true` when it was created.
    pub async fn register(&self, agent: &NewAgent) -> AgentResult<(AgentInfo, bool)> {
        let sealed = self.seal(&agent.name, &agent.call_secret).await?;
        // `xmax = 0` only for a freshly inserted row: tells a create from a replace.
        let created = sqlx::query_scalar!(
            r#"
            insert into agents (name, url, capabilities, call_secret_sealed)
            values ($1, $2, $3, $4)
            on conflict (name) do update set url = excluded.url,
                capabilities = excluded.capabilities, call_secret = null,
                call_secret_sealed = excluded.call_secret_sealed, updated_at = now()
            returning (xmax = 0) as "created!"
            "#,
            agent.name,
            agent.url,
            &agent.capabilities,
            sealed,
        )
        .fetch_one(&self.pool)
        .await?;
        tracing::info!(agent = %agent.name, url = %agent.url, created, "agent registered");
        let info = self.get(&agent.name).await?;
        Ok((info.unwrap_or_else(|| unreachable_info(agent)), created))
    }

    /// One agent, if registered.
    pub async fn get(&self, name: &str) -> AgentResult<Option<AgentInfo>> {
        let rows = self.rows(Some(name), None).await?;
        Ok(self.infos(rows).await?.pop())
    }

    /// Every registered agent, by name.
    pub async fn list(&self) -> AgentResult<Vec<AgentInfo>> {
        let rows = self.rows(None, None).await?;
        self.infos(rows).await
    }

    /// Deregister an agent and forget its heartbeat; `false` when none had this name.
    pub async fn deregister(&self, name: &str) -> AgentResult<bool> {
        let deleted = sqlx::query!("delete from agents where name = $1", name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let mut redis = self.redis.clone();
        redis::cmd("DEL")
            .arg(self.heartbeat_key(name))
            .query_async::<()>(&mut redis)
            .await?;
        if deleted > 0 {
            tracing::info!(agent = %name, "agent deregistered");
        }
        Ok(deleted > 0)
    }

    /// Record a heartbeat of agent `name` with `in_flight` calls under way: live for one TTL
    /// from now. `None` when no agent has this name.
    pub async fn heartbeat(&self, name: &str, in_flight: u64) -> AgentResult<Option<AgentInfo>> {
        let at = sqlx::query_scalar!(
            r#"update agents set last_heartbeat = now() where name = $1
               returning last_heartbeat as "at!""#,
            name
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(at) = at else {
            return Ok(None);
        };
        let beat = serde_json::to_string(&Beat { at, in_flight }).unwrap_or_default();
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(self.heartbeat_key(name))
            .arg(beat)
            .arg("PX")
            .arg(u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async::<()>(&mut redis)
            .await?;
        self.get(name).await
    }

    /// Rows of `agents`: one by name, those with a capability, or all; by name.
    async fn rows(&self, name: Option<&str>, capability: Option<&str>) -> AgentResult<Vec<Row>> {
        Ok(sqlx::query_as!(
            Row,
            r#"
            select name, url, capabilities, call_secret, call_secret_sealed, last_heartbeat
            from agents
            where ($1::text is null or name = $1) and ($2::text is null or $2 = any(capabilities))
            order by name
            "#,
            name,
            capability,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The current heartbeat of each of `names` that is live.
    async fn beats(&self, names: &[&str]) -> AgentResult<HashMap<String, Beat>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = names.iter().map(|n| self.heartbeat_key(n)).collect();
        let mut redis = self.redis.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await?;
        Ok(names
            .iter()
            .zip(values)
            .filter_map(|(name, value)| {
                // A key holding something else (written by hand) still means live.
                let beat = value.map(|v| {
                    serde_json::from_str(&v).unwrap_or(Beat {
                        at: Utc::now(),
                        in_flight: 0,
                    })
                })?;
                Some(((*name).to_owned(), beat))
            })
            .collect())
    }

    async fn infos(&self, rows: Vec<Row>) -> AgentResult<Vec<AgentInfo>> {
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let beats = self.beats(&names).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let beat = beats.get(&row.name);
                AgentInfo {
                    live: beat.is_some(),
                    in_flight: beat.map_or(0, |b| b.in_flight),
                    last_heartbeat: row.last_heartbeat,
                    name: row.name,
                    url: row.url,
                    capabilities: row.capabilities,
                }
            })
            .collect())
    }
}

/// What a just-registered agent looks like should it be deleted before it is read back.
fn unreachable_info(agent: &NewAgent) -> AgentInfo {
    AgentInfo {
        name: agent.name.clone(),
        url: agent.url.clone(),
        capabilities: agent.capabilities.clone(),
        live: false,
        last_heartbeat: None,
        in_flight: 0,
    }
}

#[async_trait]
impl AgentDirectory for AgentRegistry {
    async fn live_with(&self, capability: &str) -> AgentResult<Vec<Endpoint>> {
        let rows = self.rows(None, Some(capability)).await?;
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let beats = self.beats(&names).await?;
        let mut live = Vec::new();
        for row in rows {
            let Some(beat) = beats.get(&row.name) else {
                continue;
            };
            // One secret that does not open (a damaged row) must not stop the others'.
            let call_secret = match self.call_secret(&row).await {
                Ok(secret) => secret,
                Err(e) => {
                    tracing::error!(agent = %row.name, error = %e, "agent skipped");
                    continue;
                }
            };
            live.push(Endpoint {
                in_flight: beat.in_flight,
                call_secret,
                name: row.name,
                url: row.url,
            });
        }
        Ok(order(live, self.turn.fetch_add(1, Ordering::Relaxed)))
    }
}
