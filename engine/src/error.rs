//! Errors of the engine, one enum per concern: what a step reports, what storage reports, and
//! what interrupts a workflow run.

use crate::ids::MissionId;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// How a step failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient (timeout, 5xx, 429, connection refused): try again per the retry policy.
    Retryable,
    /// Permanent (4xx, invalid data): fail the step now.
    Fatal,
}

/// A failure reported by a step's closure, classified where it happens.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// Whether another attempt may help.
    pub retry: Retry,
    /// A human-readable account.
    pub message: String,
    /// Structured details (an HTTP status and body, say), recorded in the journal.
    pub details: Value,
}

impl StepError {
    /// A transient failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Retryable,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// A permanent failure.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Fatal,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// Attach structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The form recorded in the journal and shown by the API.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "message": self.message, "retryable": self.retry == Retry::Retryable });
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        v
    }
}

/// Classify any error at the point it happens: `call().await.retryable()?`.
pub trait ResultExt<T> {
    /// Treat the error as transient.
    fn retryable(self) -> Result<T, StepError>;
    /// Treat the error as permanent.
    fn fatal(self) -> Result<T, StepError>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, StepError> {
        self.map_err(|e| StepError::retryable(e.to_string()))
    }
    fn fatal(self) -> Result<T, StepError> {
        self.map_err(|e| StepError::fatal(e.to_string()))
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused a statement.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
    /// [HC002] Another worker holds the mission now; this worker's write was refused (fencing).
    #[error("[HC002] lease on mission {0} was lost: another worker owns it now")]
    LeaseLost(MissionId),
    /// No such mission (or step).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the mission's current state.
    #[error("{0}")]
    Conflict(String),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// A database driver's failure, opaque so that the driver's types stay out of the engine's
/// public errors; callers ask it what they need to decide ([`DatabaseError::is_unavailable`]).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatabaseError(sqlx::Error);

impl DatabaseError {
    /// Whether it says the database cannot serve right now rather than that a request or the
    /// code is wrong: it cannot be reached (I/O, TLS, or a protocol error, which is how sqlx
    /// reports a connection closed during its handshake), it has no connection to spare (the
    /// pool timed out or closed, SQLSTATE class 53, e.g. `too_many_connections`), the
    /// connection broke (class 08), the server is shutting down or starting (57P01 to 57P04),
    /// or the statement hit `statement_timeout` (57014).
    pub fn is_unavailable(&self) -> bool {
        match &self.0 {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "57014"
            }),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        Self(error)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(DatabaseError(error))
    }
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What ends a workflow run early. Workflow code propagates these with `?`; the runner decides.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The mission must wait (timer, backoff, approval); it is parked, not failed.
    #[error("mission suspended until {wake_at:?}")]
    Suspended {
        /// When it becomes runnable again; `None` waits for an outside event (a decision).
        wake_at: Option<DateTime<Utc>>,
    },
    /// A step failed for good. Its text quotes the recorded error, which is why that is
    /// redacted here: once in a message, its secrets could no longer be told apart.
    #[error("step `{step}` failed: {}", crate::redact::value(error))]
    StepFailed {
        /// The step's name.
        step: String,
        /// The recorded error.
        error: Value,
    },
    /// An approval was rejected (by a person or by its timeout).
    #[error("approval `{step}` was rejected")]
    Rejected {
        /// The approval step's name.
        step: String,
        /// The recorded decision.
        decision: Value,
    },
    /// The mission was cancelled.
    #[error("mission was cancelled")]
    Cancelled,
    /// The workflow gave up by itself (invalid input, a business rule).
    #[error("{0}")]
    Failed(String),
    /// [HC001] The code asked for a different step than the journal recorded at this position.
    #[error("[HC001] nondeterministic replay at journal position {position}: {detail}")]
    Nondeterminism {
        /// Journal position (0-based) where the run diverged.
        position: usize,
        /// What differed.
        detail: String,
    },
    /// The worker is shutting down; the mission is handed back unfinished.
    #[error("worker is shutting down")]
    ShuttingDown,
    /// Storage failed (this includes a lost lease).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkflowError {
    /// Fail the mission with a message of the workflow's own.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// Result alias for workflow code.
pub type WorkflowResult<T> = Result<T, WorkflowError>;
