//! The wake-up queue on Redis (apalis-redis): one small job per "mission X should run now".

use crate::WorkerError;
use apalis::prelude::TaskSink;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use async_trait::async_trait;
use hypercode_engine::{MissionId, Wake, WakeError};
use serde::{Deserialize, Serialize};

/// The job a worker receives: which mission to advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeJob {
    /// The mission to run.
    pub mission: MissionId,
}

/// Where wake-ups live: a Redis URL and a queue name (separate names isolate deployments or
/// test runs sharing one Redis).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `redis://...`
    pub redis_url: String,
    /// The apalis queue name.
    pub queue: String,
}

impl QueueConfig {
    /// The apalis configuration for this queue. Results are not persisted: Postgres keeps them.
    pub fn apalis(&self) -> Config {
        Config::default().queue(&self.queue).persist_results(false)
    }

    /// The pub/sub channel a wake-up is announced on. apalis-redis files every pushed job as
    /// scheduled (due now) and announces nothing, so idle workers would only find it on their
    /// next poll; this announcement lets them fetch at once.
    pub fn signal_channel(&self) -> String {
        format!("hypercode:{}:wake", self.queue)
    }
}

/// Open the queue's storage.
pub async fn storage(config: &QueueConfig) -> Result<RedisStorage<WakeJob>, WorkerError> {
    let conn: ConnectionManager = apalis_redis::connect(config.redis_url.as_str()).await?;
    Ok(RedisStorage::new(conn).with_config(config.apalis()))
}

/// Sends wake-ups through Redis; the engine's [`Wake`] in production.
#[derive(Debug, Clone)]
pub struct RedisWake {
    storage: RedisStorage<WakeJob>,
}

impl RedisWake {
    /// Connect to the queue.
    pub async fn connect(config: &QueueConfig) -> Result<Self, WorkerError> {
        Ok(Self {
            storage: storage(config).await?,
        })
    }
}

#[async_trait]
impl Wake for RedisWake {
    async fn wake(&self, mission: MissionId) -> Result<(), WakeError> {
        let mut storage = self.storage.clone();
        storage
            .push(WakeJob { mission })
            .await
            .map_err(|e| WakeError(e.to_string()))
    }
}
