//! The alert log: JSON entries pushed onto the Redis list `<queue>:logs` (`hypercode:logs` with
//! the default queue name), kept to the newest [`MAX_ENTRIES`], and published on the channel of
//! the same name for live readers. The healer writes an entry for every action; any component
//! may write there too.

use crate::incidents::IncidentId;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The list keeps this many entries, the newest.
pub const MAX_ENTRIES: isize = 1000;

/// How long one Redis call may take: an unreachable Redis must not hold up a heal.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed read or write of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// Redis could not be reached or refused the command.
    #[error("the log in Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// How much an entry matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Something happened as it should.
    Info,
    /// Something needs watching.
    Warn,
    /// Something needs a human.
    Error,
}

impl LogLevel {
    /// The level as entries spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// When (RFC 3339).
    pub at: DateTime<Utc>,
    /// How much it matters.
    pub level: LogLevel,
    /// Which component wrote it (`healer`).
    pub source: String,
    /// What happened, in words.
    pub message: String,
    /// The container's name, for container matters.
    pub container: Option<String>,
    /// The incident it belongs to, if any.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub incident: Option<IncidentId>,
}

impl LogEntry {
    /// An entry from the healer about `container` and `incident`, timed now.
    pub fn healer(
        level: LogLevel,
        message: impl Into<String>,
        container: &str,
        incident: Option<IncidentId>,
    ) -> Self {
        Self {
            at: Utc::now(),
            level,
            source: "healer".to_owned(),
            message: message.into(),
            container: Some(container.to_owned()),
            incident,
        }
    }
}

/// The log's list and channel in Redis, connected on first use (and reconnected as needed).
#[derive(Clone)]
pub struct LogSink {
    client: redis::Client,
    connection: ConnectionManager,
    key: String,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").field("key", &self.key).finish()
    }
}

impl LogSink {
    /// The log of queue `queue` (`<queue>:logs`) on the Redis at `url`.
    pub fn new(url: &str, queue: &str) -> Result<Self, LogsError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            connection,
            key: format!("{queue}:logs"),
        })
    }

    /// The list's and the channel's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Append an entry to the list (trimmed to [`MAX_ENTRIES`]) and publish it, atomically.
    pub async fn push(&self, entry: &LogEntry) -> Result<(), LogsError> {
        // Serializing strings, numbers and times cannot fail.
        let json = serde_json::to_string(entry).unwrap_or_default();
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .lpush(&self.key, &json)
            .ignore()
            .ltrim(&self.key, 0, MAX_ENTRIES - 1)
            .ignore()
            .publish(&self.key, &json)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// [`LogSink::push`], logging a failure instead of returning it: an alert that cannot be
    /// written must not stop a heal.
    pub async fn alert(&self, entry: LogEntry) {
        match entry.level {
            LogLevel::Error => {
                tracing::error!(container = ?entry.container, incident = ?entry.incident, "{}", entry.message)
            }
            LogLevel::Warn => {
                tracing::warn!(container = ?entry.container, incident = ?entry.incident, "{}", entry.message)
            }
            LogLevel::Info => {
                tracing::info!(container = ?entry.container, incident = ?entry.incident, "{}", entry.message)
            }
        }
        if let Err(e) = self.push(&entry).await {
            tracing::warn!(error = %e, "alert not written to the log");
        }
    }

    /// Entries as they are published on the channel, from now on (entries that are not JSON of
    /// this shape are skipped). The stream ends when the subscription's connection does.
    pub async fn follow(&self) -> Result<impl Stream<Item = LogEntry> + Send + 'static, LogsError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.key).await?;
        Ok(pubsub.into_on_message().filter_map(|message| {
            let entry = message
                .get_payload::<String>()
                .ok()
                .and_then(|json| serde_json::from_str(&json).ok());
            std::future::ready(entry)
        }))
    }

    /// The newest `limit` entries, newest first, of `source` if given. Entries that are not
    /// JSON of this shape (written by something else) are skipped.
    pub async fn read(
        &self,
        limit: usize,
        source: Option<&str>,
    ) -> Result<Vec<LogEntry>, LogsError> {
        let mut connection = self.connection.clone();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(&self.key)
            .arg(0)
            .arg(MAX_ENTRIES - 1)
            .query_async(&mut connection)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str::<LogEntry>(json).ok())
            .filter(|entry| source.is_none_or(|s| entry.source == s))
            .take(limit)
            .collect())
    }
}
