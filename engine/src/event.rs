//! The history: every state change of a mission appends one or more events in the same
//! transaction, so the history is a complete, ordered account of what happened.

use crate::status::MissionStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened. The wire names are a public contract: never rename one.
///
/// The same names are the only values the `events.type` column accepts (the
/// `events_type_known` constraint): a new variant needs a migration that replaces that
/// constraint, and `engine/tests/event_types.rs` fails until it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The mission was accepted.
    MissionSubmitted,
    /// A worker claimed the mission for the first time.
    MissionStarted,
    /// A worker claimed the mission again (after a wait, a release or a lost lease).
    MissionResumed,
    /// A worker gave the mission back unfinished (graceful shutdown).
    MissionReleased,
    /// The mission parked itself on a timer, a backoff or an approval.
    MissionSuspended,
    /// A user asked for cancellation; compensations follow.
    MissionCancelRequested,
    /// The mission finished with an output.
    MissionSucceeded,
    /// The mission finished with an error.
    MissionFailed,
    /// The mission was cancelled.
    MissionCancelled,
    /// An attempt of a step began.
    StepStarted,
    /// A step finished with an output.
    StepSucceeded,
    /// A step failed for good.
    StepFailed,
    /// An attempt failed with a retryable error; the next one is scheduled.
    StepRetryScheduled,
    /// A step was abandoned because the mission was cancelled.
    StepSkipped,
    /// A durable timer started.
    TimerStarted,
    /// A durable timer fired.
    TimerFired,
    /// An approval gate is waiting for a decision.
    ApprovalRequested,
    /// A human approved.
    ApprovalGranted,
    /// A human rejected, or the approval timed out.
    ApprovalRejected,
    /// The mission started waiting for a signal.
    SignalWaiting,
    /// A signal was delivered to the step waiting for it (its payload in `data`).
    SignalReceived,
    /// A compensation attempt began.
    CompensationStarted,
    /// A completed step was undone by its compensation.
    StepCompensated,
    /// A compensation failed for good.
    CompensationFailed,
    /// An operator re-ran a failed mission from its first failed step.
    MissionRetried,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 25] = [
        Self::MissionSubmitted,
        Self::MissionStarted,
        Self::MissionResumed,
        Self::MissionReleased,
        Self::MissionSuspended,
        Self::MissionCancelRequested,
        Self::MissionSucceeded,
        Self::MissionFailed,
        Self::MissionCancelled,
        Self::StepStarted,
        Self::StepSucceeded,
        Self::StepFailed,
        Self::StepRetryScheduled,
        Self::StepSkipped,
        Self::TimerStarted,
        Self::TimerFired,
        Self::ApprovalRequested,
        Self::ApprovalGranted,
        Self::ApprovalRejected,
        Self::SignalWaiting,
        Self::SignalReceived,
        Self::CompensationStarted,
        Self::StepCompensated,
        Self::CompensationFailed,
        Self::MissionRetried,
    ];

    /// The wire and storage name, e.g. `"step_succeeded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissionSubmitted => "mission_submitted",
            Self::MissionStarted => "mission_started",
            Self::MissionResumed => "mission_resumed",
            Self::MissionReleased => "mission_released",
            Self::MissionSuspended => "mission_suspended",
            Self::MissionCancelRequested => "mission_cancel_requested",
            Self::MissionSucceeded => "mission_succeeded",
            Self::MissionFailed => "mission_failed",
            Self::MissionCancelled => "mission_cancelled",
            Self::StepStarted => "step_started",
            Self::StepSucceeded => "step_succeeded",
            Self::StepFailed => "step_failed",
            Self::StepRetryScheduled => "step_retry_scheduled",
            Self::StepSkipped => "step_skipped",
            Self::TimerStarted => "timer_started",
            Self::TimerFired => "timer_fired",
            Self::ApprovalRequested => "approval_requested",
            Self::ApprovalGranted => "approval_granted",
            Self::ApprovalRejected => "approval_rejected",
            Self::SignalWaiting => "signal_waiting",
            Self::SignalReceived => "signal_received",
            Self::CompensationStarted => "compensation_started",
            Self::StepCompensated => "step_compensated",
            Self::CompensationFailed => "compensation_failed",
            Self::MissionRetried => "mission_retried",
        }
    }

    /// The status a mission ends with when this event is recorded, for the events that end
    /// one (`mission_succeeded`, `mission_failed`, `mission_cancelled`).
    pub fn final_status(self) -> Option<MissionStatus> {
        match self {
            Self::MissionSucceeded => Some(MissionStatus::Succeeded),
            Self::MissionFailed => Some(MissionStatus::Failed),
            Self::MissionCancelled => Some(MissionStatus::Cancelled),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an event type's wire name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl std::str::FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventType,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// The attempt number it concerns, if any.
    pub attempt: Option<i32>,
    /// Details (errors, outputs, decisions, deadlines).
    pub data: Value,
}

impl NewEvent {
    /// A mission-level event.
    pub fn mission(kind: EventType, data: Value) -> Self {
        Self {
            kind,
            step: None,
            attempt: None,
            data,
        }
    }

    /// An event about one attempt of one step.
    pub fn step(kind: EventType, step: &str, attempt: i32, data: Value) -> Self {
        Self {
            kind,
            step: Some(step.to_owned()),
            attempt: Some(attempt),
            data,
        }
    }
}

/// An event as recorded: `seq` orders the events of one mission without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the mission's history, from 1.
    pub seq: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What happened (on the wire, its name: `"type": "step_succeeded"`).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The step it concerns.
    pub step: Option<String>,
    /// The attempt it concerns.
    pub attempt: Option<i32>,
    /// Details.
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for kind in EventType::ALL {
            assert_eq!(kind.as_str().parse::<EventType>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(Value::String(kind.as_str().to_owned()))
            );
        }
        assert!("step_exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn an_event_carries_its_type_under_the_wire_name() {
        let event = Event {
            seq: 2,
            at: DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            kind: EventType::StepRetryScheduled,
            step: Some("a".to_owned()),
            attempt: Some(1),
            data: serde_json::json!({}),
        };
        let wire = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(wire["type"], "step_retry_scheduled");
        assert_eq!(serde_json::from_value::<Event>(wire).ok(), Some(event));
    }

    #[test]
    fn exactly_the_mission_outcomes_end_a_mission() {
        let ending: Vec<_> = EventType::ALL
            .into_iter()
            .filter_map(|kind| kind.final_status().map(|status| (kind, status)))
            .collect();
        assert_eq!(
            ending,
            [
                (EventType::MissionSucceeded, MissionStatus::Succeeded),
                (EventType::MissionFailed, MissionStatus::Failed),
                (EventType::MissionCancelled, MissionStatus::Cancelled),
            ]
        );
        for (kind, status) in ending {
            assert!(status.is_terminal());
            assert_eq!(kind.as_str(), format!("mission_{}", status.as_str()));
        }
    }
}
