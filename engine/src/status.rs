//! The lifecycle states of missions and steps, mirrored by Postgres enums.

use serde::{Deserialize, Serialize};

/// Gives a state enum `ALL` (every variant, in declaration order, which is lifecycle order)
/// and `as_str` (its wire name, the same as serde's and the Postgres enum's; a test checks
/// they agree) from one list of variants and names.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: [$ty; [$($name),+].len()] = [$(Self::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }
    };
}

/// Where a mission is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "mission_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum MissionStatus {
    /// Runnable: waiting for a worker to claim it.
    Pending,
    /// Leased by a worker that is advancing it.
    Running,
    /// Parked on a timer, a retry backoff or an approval; no worker holds it.
    Waiting,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error (after its compensations ran).
    Failed,
    /// Cancelled by a user (after its compensations ran).
    Cancelled,
}

wire_names!(MissionStatus {
    Pending => "pending",
    Running => "running",
    Waiting => "waiting",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl MissionStatus {
    /// A terminal mission never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl std::str::FromStr for MissionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown mission status `{s}`"))
    }
}

/// Where one journaled step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "step_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Recorded but not running: a retry is scheduled for `wake_at`.
    Pending,
    /// An attempt started and has not been recorded as finished.
    Running,
    /// Waiting for a timer or a human decision.
    Waiting,
    /// Finished with an output; replays return it without running again.
    Succeeded,
    /// Failed for good (a fatal error or retries exhausted).
    Failed,
    /// An approval that was rejected (by a human or by its timeout).
    Rejected,
    /// Succeeded earlier, then undone by its compensation.
    Compensated,
    /// Abandoned because the mission was cancelled before it finished.
    Skipped,
}

wire_names!(StepStatus {
    Pending => "pending",
    Running => "running",
    Waiting => "waiting",
    Succeeded => "succeeded",
    Failed => "failed",
    Rejected => "rejected",
    Compensated => "compensated",
    Skipped => "skipped",
});

impl StepStatus {
    /// A settled step is never executed again.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Compensated | Self::Skipped
        )
    }
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "step_kind", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A side effect run by a closure (an HTTP call, a container restart...).
    Task,
    /// A wait for a human decision.
    Approval,
    /// A durable timer.
    Sleep,
    /// A wait for a named signal sent to the mission.
    Signal,
    /// The undo of an earlier task, run when the mission fails or is cancelled.
    Compensation,
}

wire_names!(StepKind {
    Task => "task",
    Approval => "approval",
    Sleep => "sleep",
    Signal => "signal",
    Compensation => "compensation",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        let serde_name = |v: serde_json::Value| v.as_str().map(str::to_owned);
        for status in MissionStatus::ALL {
            assert_eq!(
                serde_name(serde_json::json!(status)).as_deref(),
                Some(status.as_str())
            );
        }
        for status in StepStatus::ALL {
            assert_eq!(
                serde_name(serde_json::json!(status)).as_deref(),
                Some(status.as_str())
            );
        }
        for kind in StepKind::ALL {
            assert_eq!(
                serde_name(serde_json::json!(kind)).as_deref(),
                Some(kind.as_str())
            );
        }
    }
}
