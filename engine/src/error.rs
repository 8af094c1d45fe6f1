//! Errors of the engine, one enum per concern: what a step reports, what storage reports, and
//! what interrupts a workflow run; and the recorded forms of errors, one struct per JSON shape
//! ([`StepFailure`] on a step, [`MissionError`] on a mission), which the journal stores and the
//! API serves as they are.

use crate::ids::MissionId;
use crate::store::to_record;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

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

    /// The form recorded while the step may still be retried: no attempt count, and `details`
    /// only when there are some.
    pub fn failure(&self) -> StepFailure {
        StepFailure {
            code: None,
            message: self.message.clone(),
            retryable: self.retry == Retry::Retryable,
            details: (!self.details.is_null()).then(|| self.details.clone()),
            attempts: None,
        }
    }

    /// The form recorded when the step fails for good after `attempts` attempts: `details` is
    /// always there, `null` included.
    pub fn final_failure(&self, attempts: i32) -> StepFailure {
        StepFailure {
            details: Some(self.details.clone()),
            attempts: Some(attempts),
            ..self.failure()
        }
    }

    /// [`StepError::failure`] as JSON.
    pub fn to_json(&self) -> Value {
        self.failure().to_json()
    }
}

/// A step's error as the journal records it (on the step's row, in its events, and quoted by the
/// mission's error) and the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// A stable code for a failure the engine itself decides (`signal_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A human-readable account.
    pub message: String,
    /// Whether another attempt could have helped.
    pub retryable: bool,
    /// Structured details. `None` is left out, while `Some(Value::Null)` is written as `null`:
    /// a step that failed for good has always recorded the key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub details: Option<Value>,
    /// Attempts made, once the step failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
}

impl StepFailure {
    /// The recorded JSON.
    pub fn to_json(&self) -> Value {
        to_record(self)
    }
}

/// A key that is present decodes to `Some`, even when its value is `null` (serde's default
/// would make that `None`, and the key would vanish when the record is written again).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The error recorded on a mission that failed or was cancelled (its `error` column), which the
/// API serves as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissionError {
    /// A stable code for a stop that needs a person (`HC001`: the replay diverged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What happened.
    pub message: String,
    /// What made the workflow fail, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
    /// What the compensations undid, when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationSummary>,
}

impl MissionError {
    /// An error that is only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
            message: message.into(),
            cause: None,
            compensation: None,
        }
    }

    /// The recorded JSON.
    pub fn to_json(&self) -> Value {
        to_record(self)
    }
}

/// What made a workflow fail, as its mission's error records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FailureCause {
    /// A step failed for good.
    Step {
        /// The step's name.
        step: String,
        /// Its recorded error.
        error: StepFailure,
    },
    /// An approval was rejected.
    Rejected {
        /// The approval step's name.
        step: String,
        /// The recorded decision.
        rejected: Value,
    },
    /// The workflow stopped for another reason.
    Other {
        /// Why.
        message: String,
    },
}

impl From<&WorkflowError> for FailureCause {
    fn from(failure: &WorkflowError) -> Self {
        match failure {
            WorkflowError::StepFailed { step, error } => Self::Step {
                step: step.clone(),
                error: error.clone(),
            },
            WorkflowError::Rejected { step, decision } => Self::Rejected {
                step: step.clone(),
                rejected: decision.clone(),
            },
            other => Self::Other {
                message: other.to_string(),
            },
        }
    }
}

/// What the compensations of a failed or cancelled mission did, newest step first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensationSummary {
    /// The steps whose effect was undone.
    pub compensated: Vec<String>,
    /// The steps whose undo failed for good.
    pub compensation_failed: Vec<FailedCompensation>,
}

/// A compensation that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedCompensation {
    /// The step it was to undo.
    pub step: String,
    /// The compensation's recorded error.
    pub error: StepFailure,
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
    #[error("step `{step}` failed: {}", crate::redact::value(&error.to_json()))]
    StepFailed {
        /// The step's name.
        step: String,
        /// The recorded error.
        error: StepFailure,
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
    /// The workflow refused to go on for a reason callers act on by its stable `code`
    /// (`insufficient_tokens`), which the mission's error carries.
    #[error("{message}")]
    Refused {
        /// Stable, machine-readable (snake_case).
        code: String,
        /// What happened, in words.
        message: String,
    },
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

    /// Fail the mission with a stable `code` (see [`WorkflowError::Refused`]).
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Refused {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The stable code the mission's error carries, if this failure has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Nondeterminism { .. } => Some("HC001"),
            _ => None,
        }
    }
}

/// Result alias for workflow code.
pub type WorkflowResult<T> = Result<T, WorkflowError>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Both as values and as text: the recorded bytes are what the API serves.
    fn same(record: Value, expected: Value) {
        assert_eq!(record, expected);
        assert_eq!(record.to_string(), expected.to_string());
    }

    #[test]
    fn a_step_error_records_details_only_while_retries_remain_and_null_ones_when_final() {
        let bare = StepError::retryable("timed out");
        same(
            bare.to_json(),
            json!({ "message": "timed out", "retryable": true }),
        );
        same(
            bare.final_failure(3).to_json(),
            json!({ "message": "timed out", "retryable": true, "details": null, "attempts": 3 }),
        );
        let detailed = StepError::fatal("bad request").with_details(json!({ "status": 400 }));
        same(
            detailed.to_json(),
            json!({ "message": "bad request", "retryable": false, "details": { "status": 400 } }),
        );
    }

    #[test]
    fn a_recorded_step_failure_reads_back_and_writes_the_same_json() {
        for recorded in [
            json!({ "message": "m", "retryable": false, "details": null, "attempts": 1 }),
            json!({ "message": "m", "retryable": true }),
            json!({ "message": "m", "retryable": true, "details": [1], "attempts": 2 }),
        ] {
            let failure: StepFailure = serde_json::from_value(recorded.clone()).unwrap();
            same(failure.to_json(), recorded);
        }
    }

    #[test]
    fn mission_errors_keep_their_recorded_shapes() {
        let step_error =
            json!({ "message": "no", "retryable": false, "details": null, "attempts": 1 });
        let summary = CompensationSummary {
            compensated: vec!["a".to_owned()],
            compensation_failed: vec![FailedCompensation {
                step: "b".to_owned(),
                error: serde_json::from_value(step_error.clone()).unwrap(),
            }],
        };
        let summary_json = json!({ "compensated": ["a"], "compensation_failed": [{ "step": "b", "error": step_error }] });
        let failed = MissionError {
            cause: Some(FailureCause::Step {
                step: "c".to_owned(),
                error: serde_json::from_value(step_error.clone()).unwrap(),
            }),
            compensation: Some(summary.clone()),
            ..MissionError::new("step `c` failed")
        };
        same(
            failed.to_json(),
            json!({ "message": "step `c` failed", "cause": { "step": "c", "error": step_error },
                    "compensation": summary_json }),
        );
        let rejected = MissionError {
            cause: Some(FailureCause::Rejected {
                step: "ok?".to_owned(),
                rejected: json!({ "decision": "reject" }),
            }),
            compensation: Some(CompensationSummary::default()),
            ..MissionError::new("approval `ok?` was rejected")
        };
        same(
            rejected.to_json(),
            json!({ "message": "approval `ok?` was rejected",
                    "cause": { "step": "ok?", "rejected": { "decision": "reject" } },
                    "compensation": { "compensated": [], "compensation_failed": [] } }),
        );
        let cancelled = MissionError {
            compensation: Some(summary),
            ..MissionError::new("mission was cancelled")
        };
        same(
            cancelled.to_json(),
            json!({ "message": "mission was cancelled", "compensation": summary_json }),
        );
        let diverged = MissionError {
            code: Some("HC001".to_owned()),
            ..MissionError::new("[HC001] nondeterministic replay")
        };
        same(
            diverged.to_json(),
            json!({ "code": "HC001", "message": "[HC001] nondeterministic replay" }),
        );
        for recorded in [
            failed.to_json(),
            rejected.to_json(),
            diverged.to_json(),
            json!({ "message": "x", "cause": { "message": "invalid input" } }),
        ] {
            let error: MissionError = serde_json::from_value(recorded.clone()).unwrap();
            same(error.to_json(), recorded);
        }
    }
}
