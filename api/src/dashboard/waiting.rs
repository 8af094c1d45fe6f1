//! What a waiting mission waits for, in words: "waiting" alone covers an approval, a signal,
//! a timer and a retry's backoff, which call for different things from a person (decide, send,
//! or just wait). Read from the mission's latest journal entry; the list and the mission page
//! both show it, and the script keeps a countdown current (`data-until`).

use super::format::Moment;
use chrono::{DateTime, TimeDelta, Utc};
use hypercode_engine::store::CurrentStep;
use hypercode_engine::{MissionStatus, StepKind, StepStatus};

/// A waiting mission's reason, ready for
/// `<span class="waiting-for" data-waiting="{kind}" data-until="{until.iso}">{text}</span>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WaitingFor {
    /// `approval`, `signal`, `sleep`, `retry` or `queue`: what the script and the styles key on.
    pub(crate) kind: &'static str,
    /// "waiting · approval", "sleeping until 10:42", "retrying in 3 s".
    pub(crate) text: String,
    /// When the wait ends by itself (a timer, a backoff), for the script's countdown.
    pub(crate) until: Option<Moment>,
}

impl WaitingFor {
    /// What a mission in `status` whose latest entry is `step` waits for; `None` unless it is
    /// waiting (or pending behind a retry's backoff).
    pub(crate) fn of(
        status: MissionStatus,
        step: Option<&CurrentStep>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        if !matches!(status, MissionStatus::Waiting | MissionStatus::Pending) {
            return None;
        }
        let Some(step) = step else {
            return (status == MissionStatus::Waiting).then(|| Self::plain("queue", "waiting"));
        };
        let at = |kind, text: String, wake: DateTime<Utc>| Self {
            kind,
            text,
            until: Some(Moment::new(wake, now)),
        };
        match (step.kind, step.status, step.wake_at) {
            (StepKind::Approval, StepStatus::Waiting, _) => {
                Some(Self::plain("approval", "waiting · approval"))
            }
            (StepKind::Signal, StepStatus::Waiting, _) => {
                Some(Self::plain("signal", "waiting · signal"))
            }
            (StepKind::Sleep, StepStatus::Waiting, Some(wake)) => {
                Some(at("sleep", sleeping_until(wake, now), wake))
            }
            (StepKind::Task | StepKind::Compensation, StepStatus::Pending, Some(wake)) => {
                Some(at("retry", retrying_in(wake - now), wake))
            }
            _ if status == MissionStatus::Waiting => Some(Self::plain("queue", "waiting")),
            _ => None,
        }
    }

    fn plain(kind: &'static str, text: &str) -> Self {
        Self {
            kind,
            text: text.to_owned(),
            until: None,
        }
    }
}

/// "sleeping until 10:42" (UTC, as every time on the pages; the script shows the browser's
/// local time), with the day when it is not within the next 20 hours.
fn sleeping_until(wake: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if wake - now < TimeDelta::hours(20) {
        format!("sleeping until {}", wake.format("%H:%M"))
    } else {
        format!("sleeping until {}", wake.format("%b %-d %H:%M"))
    }
}

/// "retrying in 3 s", "retrying in 2 min", "retrying now" once due.
fn retrying_in(left: TimeDelta) -> String {
    let secs = (left.num_milliseconds() + 999) / 1000;
    match secs {
        ..=0 => "retrying now".to_owned(),
        1..60 => format!("retrying in {secs} s"),
        60..3600 => format!("retrying in {} min", secs / 60),
        _ => format!("retrying in {} h", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: StepKind, status: StepStatus, wake_at: Option<DateTime<Utc>>) -> CurrentStep {
        CurrentStep {
            name: "s".to_owned(),
            kind,
            status,
            wake_at,
        }
    }

    fn text(
        status: MissionStatus,
        step: Option<CurrentStep>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        WaitingFor::of(status, step.as_ref(), now).map(|w| w.text)
    }

    #[test]
    fn each_kind_of_wait_reads_differently() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let waiting = MissionStatus::Waiting;
        assert_eq!(
            text(
                waiting,
                Some(step(StepKind::Approval, StepStatus::Waiting, None)),
                now
            )
            .as_deref(),
            Some("waiting · approval")
        );
        assert_eq!(
            text(
                waiting,
                Some(step(StepKind::Signal, StepStatus::Waiting, None)),
                now
            )
            .as_deref(),
            Some("waiting · signal")
        );
        let nap = Some(now + TimeDelta::minutes(42));
        assert_eq!(
            text(
                waiting,
                Some(step(StepKind::Sleep, StepStatus::Waiting, nap)),
                now
            )
            .as_deref(),
            Some("sleeping until 10:42")
        );
        let long = Some(now + TimeDelta::days(2));
        assert_eq!(
            text(
                waiting,
                Some(step(StepKind::Sleep, StepStatus::Waiting, long)),
                now
            )
            .as_deref(),
            Some("sleeping until Dec 3 10:00")
        );
        let backoff = Some(now + TimeDelta::milliseconds(2_400));
        assert_eq!(
            text(
                waiting,
                Some(step(StepKind::Task, StepStatus::Pending, backoff)),
                now
            )
            .as_deref(),
            Some("retrying in 3 s")
        );
        assert_eq!(text(waiting, None, now).as_deref(), Some("waiting"));
        let running = MissionStatus::Running;
        assert_eq!(
            text(
                running,
                Some(step(StepKind::Task, StepStatus::Running, None)),
                now
            ),
            None
        );
        assert_eq!(text(MissionStatus::Pending, None, now), None);
    }

    #[test]
    fn countdowns_pick_a_unit() {
        assert_eq!(retrying_in(TimeDelta::milliseconds(-5)), "retrying now");
        assert_eq!(retrying_in(TimeDelta::seconds(59)), "retrying in 59 s");
        assert_eq!(retrying_in(TimeDelta::seconds(150)), "retrying in 2 min");
        assert_eq!(retrying_in(TimeDelta::hours(3)), "retrying in 3 h");
    }
}
