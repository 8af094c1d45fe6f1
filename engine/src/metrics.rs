//! The engine's Prometheus metrics: their names, labels and descriptions, and the one place
//! they are recorded from what the engine writes (a submission, the events of a journal write,
//! a journal batch). It records through the `metrics` facade only: the binary installs the
//! exporter, and without one every call here does nothing.

use crate::event::{EventType, NewEvent};
use crate::store::StepRecord;
use std::time::Duration;

/// Missions accepted, by workflow.
pub const MISSIONS_SUBMITTED: &str = "hypercode_missions_submitted_total";
/// Missions finished, by workflow and status (`succeeded`, `failed`, `cancelled`).
pub const MISSIONS_FINISHED: &str = "hypercode_missions_finished_total";
/// Steps ended, by workflow, kind and outcome (`succeeded`, `failed`, `rejected`).
pub const STEPS: &str = "hypercode_steps_total";
/// Seconds from a step's first attempt to its end, by workflow and kind.
pub const STEP_DURATION: &str = "hypercode_step_duration_seconds";
/// Retries scheduled after a retryable failure, by workflow and kind.
pub const STEP_RETRIES: &str = "hypercode_step_retries_total";
/// Compensations ended, by workflow and outcome (`succeeded`, `failed`).
pub const COMPENSATIONS: &str = "hypercode_compensations_total";
/// Journal transitions written per batch (group commit).
pub const JOURNAL_BATCH_SIZE: &str = "hypercode_journal_batch_size";
/// Seconds one journal batch took to write.
pub const JOURNAL_BATCH_SECONDS: &str = "hypercode_journal_batch_duration_seconds";

/// Registers the descriptions (the `# HELP` lines) with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(MISSIONS_SUBMITTED, "Missions accepted, by workflow");
    describe_counter!(
        MISSIONS_FINISHED,
        "Missions finished, by workflow and status"
    );
    describe_counter!(STEPS, "Steps ended, by workflow, kind and outcome");
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Time from a step's first attempt to its end, by workflow and kind"
    );
    describe_counter!(STEP_RETRIES, "Step retries scheduled, by workflow and kind");
    describe_counter!(
        COMPENSATIONS,
        "Compensations ended, by workflow and outcome"
    );
    describe_histogram!(JOURNAL_BATCH_SIZE, "Journal transitions written per batch");
    describe_histogram!(
        JOURNAL_BATCH_SECONDS,
        Unit::Seconds,
        "Time to write one journal batch"
    );
}

/// A mission of `workflow` was accepted.
pub(crate) fn submitted(workflow: &str) {
    metrics::counter!(MISSIONS_SUBMITTED, "workflow" => workflow.to_owned()).increment(1);
}

/// A journal batch of `size` transitions was written in `took`.
pub(crate) fn journal_batch(size: usize, took: Duration) {
    metrics::histogram!(JOURNAL_BATCH_SIZE).record(size as f64);
    metrics::histogram!(JOURNAL_BATCH_SECONDS).record(took.as_secs_f64());
}

/// An event of a journal write, as much as the metrics need: its type and step.
pub(crate) type Noted = (EventType, Option<String>);

/// The type and step of each of `events` (no payloads copied).
pub(crate) fn noted(events: &[NewEvent]) -> Vec<Noted> {
    events.iter().map(|e| (e.kind, e.step.clone())).collect()
}

/// What a committed journal write of a `workflow` mission did: its events, about the journal
/// entries `steps` it wrote.
pub(crate) fn journaled(workflow: &str, steps: &[StepRecord], events: &[Noted]) {
    for (kind, step) in events {
        let entry = || {
            let name = step.as_deref()?;
            steps.iter().find(|s| s.name == name)
        };
        let step_outcome = match *kind {
            EventType::MissionSucceeded
            | EventType::MissionFailed
            | EventType::MissionCancelled => {
                let status = match kind {
                    EventType::MissionSucceeded => "succeeded",
                    EventType::MissionFailed => "failed",
                    _ => "cancelled",
                };
                metrics::counter!(MISSIONS_FINISHED, "workflow" => workflow.to_owned(), "status" => status)
                    .increment(1);
                None
            }
            EventType::StepSucceeded
            | EventType::TimerFired
            | EventType::ApprovalGranted
            | EventType::SignalReceived => Some("succeeded"),
            EventType::StepFailed => Some("failed"),
            EventType::ApprovalRejected => Some("rejected"),
            EventType::StepRetryScheduled => {
                if let Some(step) = entry() {
                    metrics::counter!(STEP_RETRIES, "workflow" => workflow.to_owned(), "kind" => step.kind.as_str())
                        .increment(1);
                }
                None
            }
            EventType::StepCompensated | EventType::CompensationFailed => {
                let outcome = if *kind == EventType::StepCompensated {
                    "succeeded"
                } else {
                    "failed"
                };
                metrics::counter!(COMPENSATIONS, "workflow" => workflow.to_owned(), "outcome" => outcome)
                    .increment(1);
                None
            }
            _ => None,
        };
        let (Some(outcome), Some(step)) = (step_outcome, entry()) else {
            continue;
        };
        let kind = step.kind.as_str();
        metrics::counter!(STEPS, "workflow" => workflow.to_owned(), "kind" => kind, "outcome" => outcome)
            .increment(1);
        if let (Some(start), Some(end)) = (step.started_at, step.finished_at) {
            let seconds = (end - start).to_std().unwrap_or_default().as_secs_f64();
            metrics::histogram!(STEP_DURATION, "workflow" => workflow.to_owned(), "kind" => kind)
                .record(seconds);
        }
    }
}
