//! The healer's Prometheus counter, `hypercode_heal_actions_total{action, outcome}`: what the
//! watcher and the `heal` workflow did about failed containers. Recorded through the `metrics`
//! facade; the binary installs the exporter (without one, recording does nothing).

/// Heal actions, by action and outcome.
pub const HEAL_ACTIONS: &str = "hypercode_heal_actions_total";

/// What the healer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A heal mission for a failure (`started` by the watcher, `succeeded` once the container
    /// runs again and the incident is marked healed).
    Heal,
    /// A Docker restart of the container (`succeeded`, `failed`, or `skipped` when it already
    /// ran again).
    Restart,
    /// An incident escalated after too many heals: no more restarts until it is resolved.
    Escalate,
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A heal mission was started.
    Started,
    /// It worked.
    Succeeded,
    /// It failed (a restart Docker refused; retried by the workflow).
    Failed,
    /// Nothing to do.
    Skipped,
    /// The incident now waits for a person.
    Escalated,
}

impl Action {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Heal => "heal",
            Self::Restart => "restart",
            Self::Escalate => "escalate",
        }
    }
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Escalated => "escalated",
        }
    }
}

/// Registers the description (the `# HELP` line) with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(HEAL_ACTIONS, "Heal actions, by action and outcome");
}

/// Counts one `action` that ended in `outcome`.
pub fn record(action: Action, outcome: Outcome) {
    metrics::counter!(HEAL_ACTIONS, "action" => action.as_str(), "outcome" => outcome.as_str())
        .increment(1);
}
