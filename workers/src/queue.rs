//! The wake-up queue on Redis (apalis-redis): one small job per "mission X should run now".

use crate::WorkerError;
use apalis::prelude::TaskSink;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use async_trait::async_trait;
use hypercode_engine::{MissionId, Wake, WakeError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Default for the most wake-ups kept waiting in Redis. apalis-redis files every job in its scheduled set and a
/// worker's fetch promotes all due ones in one Lua call, which fails past Lua's stack limit
/// (about 8 000 values) and then fails on every poll. So the queue is a bounded buffer in front
/// of Postgres: past this depth, wake-ups are refused and the reconciler sends them as the
/// workers catch up.
pub const MAX_DEPTH: u64 = 4_000;

/// How long a measured queue depth is trusted before it is measured again.
const DEPTH_TTL: Duration = Duration::from_millis(100);

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
    conn: ConnectionManager,
    channel: String,
    scheduled_key: String,
    active_key: String,
    max_depth: u64,
    depth: Arc<Mutex<Option<(Instant, u64)>>>,
}

impl RedisWake {
    /// Connect to the queue; at most `max_depth` wake-ups are kept waiting (see [`MAX_DEPTH`]).
    pub async fn connect(config: &QueueConfig, max_depth: u64) -> Result<Self, WorkerError> {
        let apalis = config.apalis();
        Ok(Self {
            storage: storage(config).await?,
            conn: apalis_redis::connect(config.redis_url.as_str()).await?,
            channel: config.signal_channel(),
            scheduled_key: apalis.scheduled_jobs_set(),
            active_key: apalis.active_jobs_list(),
            max_depth,
            depth: Arc::new(Mutex::new(None)),
        })
    }

    /// Wake-ups waiting in Redis now: apalis-redis files them in its scheduled set, and moves
    /// due ones to its active list until a worker fetches them.
    async fn measure(&self) -> Result<u64, WakeError> {
        let (scheduled, active): (u64, u64) = redis::pipe()
            .zcard(&self.scheduled_key)
            .llen(&self.active_key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| WakeError::Unavailable(e.to_string()))?;
        Ok(scheduled + active)
    }

    /// Count one more wake-up against the queue's depth. The depth is measured at most every
    /// [`DEPTH_TTL`]; in between, each accepted wake-up adds one to the estimate.
    async fn reserve(&self) -> Result<(), WakeError> {
        let mut depth = self.depth.lock().await;
        let (measured_at, current) = match *depth {
            Some((at, n)) if at.elapsed() < DEPTH_TTL => (at, n),
            _ => (Instant::now(), self.measure().await?),
        };
        if current >= self.max_depth {
            *depth = Some((measured_at, current));
            return Err(WakeError::Backlogged { depth: current });
        }
        *depth = Some((measured_at, current + 1));
        Ok(())
    }
}

#[async_trait]
impl Wake for RedisWake {
    async fn wake(&self, mission: MissionId) -> Result<(), WakeError> {
        self.reserve().await?;
        let mut storage = self.storage.clone();
        storage
            .push(WakeJob { mission })
            .await
            .map_err(|e| WakeError::Unavailable(e.to_string()))?;
        // The job is safe in Redis now; a lost announcement only costs a poll interval.
        let announced: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(mission.to_string())
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = announced {
            tracing::debug!(error = %e, "wake-up announcement failed; workers will poll");
        }
        Ok(())
    }

    /// Measured in Redis on every call: the estimate [`RedisWake`] bounds the queue with runs
    /// ahead between measurements, and counts only this process's wake-ups.
    async fn depth(&self) -> Result<u64, WakeError> {
        self.measure().await
    }
}
