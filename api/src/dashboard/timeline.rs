//! The mission timeline: a Gantt chart with one row per step and one bar per attempt, laid
//! out from the mission's history (the journal only keeps each step's latest attempt).
//!
//! Retries show as a failed attempt, a dashed backoff and the next attempt; approvals and
//! timers as waits; compensations as their own rows below, in the order they ran, which is
//! the reverse of the steps they undo. An attempt cut short (a worker died, or was stopped)
//! ends where the next attempt of the same step begins and is marked `interrupted`. Bars
//! still open end at `now` while the mission is live.

use super::format;
use chrono::{DateTime, TimeDelta, Utc};
use hypercode_engine::{Event, EventType};

/// The geometry of one drawing. Two are drawn: a wide one, and a narrow one that phones show
/// instead, so its text stays legible when the drawing is scaled to a small screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Layout {
    /// Width of the drawing, in SVG user units (the SVG scales to its box).
    width: f64,
    /// The label column.
    label_width: f64,
    /// Labels longer than this are cut (the whole name stays in the tooltip).
    label_chars: usize,
    /// Time axis ticks.
    ticks: usize,
}

impl Layout {
    /// For screens of a laptop and up.
    pub(crate) const WIDE: Self = Self {
        width: 1000.0,
        label_width: 190.0,
        label_chars: 24,
        ticks: 5,
    };
    /// For phones.
    pub(crate) const NARROW: Self = Self {
        width: 400.0,
        label_width: 110.0,
        label_chars: 12,
        ticks: 2,
    };
}

/// Row pitch and bar thickness.
const ROW_HEIGHT: f64 = 30.0;
const BAR_HEIGHT: f64 = 18.0;
/// Room for the time axis above the rows.
const AXIS_HEIGHT: f64 = 24.0;
/// The narrowest bar drawn, so instantaneous steps stay visible.
const MIN_BAR: f64 = 3.0;

/// How an attempt (or a wait) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Running,
    Succeeded,
    Failed,
    Retrying,
    Backoff,
    Interrupted,
    Skipped,
    Waiting,
    Approved,
    Rejected,
    Sleeping,
    Fired,
    Compensating,
    Compensated,
}

impl Outcome {
    /// The CSS class and `data-outcome` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Backoff => "backoff",
            Self::Interrupted => "interrupted",
            Self::Skipped => "skipped",
            Self::Waiting => "waiting",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Sleeping => "sleeping",
            Self::Fired => "fired",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
        }
    }

    /// Still going: drawn up to `now` and styled as live.
    fn is_open(self) -> bool {
        matches!(
            self,
            Self::Running | Self::Backoff | Self::Waiting | Self::Sleeping | Self::Compensating
        )
    }
}

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    Task,
    Approval,
    Sleep,
    Compensation,
}

impl RowKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Approval => "approval",
            Self::Sleep => "sleep",
            Self::Compensation => "compensation",
        }
    }
}

/// One attempt or wait, in time.
#[derive(Debug, Clone, PartialEq)]
struct Span {
    attempt: i32,
    outcome: Outcome,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Track {
    step: String,
    kind: RowKind,
    spans: Vec<Span>,
}

/// A drawn bar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    pub(crate) step: String,
    pub(crate) attempt: i32,
    pub(crate) outcome: &'static str,
    pub(crate) x: String,
    pub(crate) y: String,
    pub(crate) width: String,
    pub(crate) height: String,
    /// The tooltip: "fetch · attempt 2 · failed · 1.2 s".
    pub(crate) title: String,
}

/// A drawn row label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Label {
    pub(crate) text: String,
    /// The whole label, when `text` is cut.
    pub(crate) full: String,
    pub(crate) kind: &'static str,
    pub(crate) y: String,
    /// The row's band (zebra stripes), top edge.
    pub(crate) band_y: String,
}

/// A time axis tick.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tick {
    pub(crate) x: String,
    pub(crate) text: String,
}

/// The laid-out chart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    pub(crate) width: String,
    pub(crate) height: String,
    pub(crate) label_width: String,
    pub(crate) row_height: String,
    pub(crate) labels: Vec<Label>,
    pub(crate) bars: Vec<Bar>,
    pub(crate) ticks: Vec<Tick>,
    /// The axis line's height.
    pub(crate) axis_bottom: String,
    /// From the first event to the last (or to now).
    pub(crate) span: String,
}

impl Timeline {
    /// Lay out `events` (a mission's history in `seq` order). `end` is where open bars stop:
    /// now for a live mission, its last event for a finished one.
    pub(crate) fn new(events: &[Event], end: DateTime<Utc>, layout: Layout) -> Self {
        let tracks = tracks(events);
        let start = events.first().map_or(end, |e| e.at);
        let end = end.max(start);
        lay_out(&tracks, start, end, layout)
    }

    /// Whether there is anything to draw.
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Fold the history into one track per step, in order of first appearance.
fn tracks(events: &[Event]) -> Vec<Track> {
    let mut tracks: Vec<Track> = Vec::new();
    for event in events {
        let Some(step) = &event.step else {
            continue;
        };
        let kind = event.kind;
        let attempt = event.attempt.unwrap_or(1);
        let row_kind = match kind {
            EventType::ApprovalRequested
            | EventType::ApprovalGranted
            | EventType::ApprovalRejected => RowKind::Approval,
            EventType::TimerStarted | EventType::TimerFired => RowKind::Sleep,
            EventType::CompensationStarted
            | EventType::StepCompensated
            | EventType::CompensationFailed => RowKind::Compensation,
            _ => RowKind::Task,
        };
        let index = match tracks.iter().position(|t| &t.step == step) {
            Some(index) => index,
            None => {
                tracks.push(Track {
                    step: step.clone(),
                    kind: row_kind,
                    spans: Vec::new(),
                });
                tracks.len() - 1
            }
        };
        let track = &mut tracks[index];
        let at = event.at;
        match kind {
            EventType::StepStarted | EventType::CompensationStarted => {
                // A backoff ends where the next attempt starts; an attempt still open here
                // was cut short (its worker died or stopped) and is retried by this one.
                close_open(track, at, Outcome::Interrupted);
                let outcome = if kind == EventType::CompensationStarted {
                    Outcome::Compensating
                } else {
                    Outcome::Running
                };
                open(track, attempt, outcome, at);
            }
            EventType::StepSucceeded => close(track, at, Outcome::Succeeded),
            EventType::StepCompensated => close(track, at, Outcome::Compensated),
            EventType::StepFailed | EventType::CompensationFailed => {
                close(track, at, Outcome::Failed)
            }
            EventType::StepRetryScheduled => {
                close(track, at, Outcome::Retrying);
                open(track, attempt, Outcome::Backoff, at);
            }
            EventType::StepSkipped => {
                close_open(track, at, Outcome::Skipped);
                if track.spans.is_empty() {
                    track.spans.push(Span {
                        attempt,
                        outcome: Outcome::Skipped,
                        start: at,
                        end: Some(at),
                    });
                }
            }
            EventType::ApprovalRequested => {
                close_open(track, at, Outcome::Interrupted);
                open(track, attempt, Outcome::Waiting, at);
            }
            EventType::ApprovalGranted => close(track, at, Outcome::Approved),
            EventType::ApprovalRejected => close(track, at, Outcome::Rejected),
            EventType::TimerStarted => open(track, attempt, Outcome::Sleeping, at),
            EventType::TimerFired => close(track, at, Outcome::Fired),
            _ => {}
        }
    }
    tracks
}

fn open(track: &mut Track, attempt: i32, outcome: Outcome, at: DateTime<Utc>) {
    track.spans.push(Span {
        attempt,
        outcome,
        start: at,
        end: None,
    });
}

/// End the open span, if any, with `outcome` (a backoff just ends: it led to this).
fn close_open(track: &mut Track, at: DateTime<Utc>, outcome: Outcome) {
    if let Some(span) = track.spans.last_mut().filter(|s| s.end.is_none()) {
        span.end = Some(at);
        if span.outcome != Outcome::Backoff {
            span.outcome = outcome;
        }
    }
}

/// End the open span with `outcome`; with none open (a history that starts mid-step), record
/// an instant so the outcome still shows.
fn close(track: &mut Track, at: DateTime<Utc>, outcome: Outcome) {
    match track.spans.last_mut().filter(|s| s.end.is_none()) {
        Some(span) => {
            span.end = Some(at);
            span.outcome = outcome;
        }
        None => track.spans.push(Span {
            attempt: 1,
            outcome,
            start: at,
            end: Some(at),
        }),
    }
}

fn lay_out(tracks: &[Track], start: DateTime<Utc>, end: DateTime<Utc>, layout: Layout) -> Timeline {
    let total = (end - start).num_microseconds().unwrap_or(i64::MAX).max(1) as f64;
    let chart = layout.width - layout.label_width - 10.0;
    let x_of = |t: DateTime<Utc>| {
        let offset = (t - start).num_microseconds().unwrap_or(0).max(0) as f64;
        layout.label_width + offset / total * chart
    };
    let mut labels = Vec::new();
    let mut bars = Vec::new();
    for (row, track) in tracks.iter().enumerate() {
        let top = AXIS_HEIGHT + row as f64 * ROW_HEIGHT;
        let full = label(track);
        labels.push(Label {
            text: cut(&full, layout.label_chars),
            full,
            kind: track.kind.as_str(),
            y: num(top + ROW_HEIGHT / 2.0 + 4.0),
            band_y: num(top),
        });
        for span in &track.spans {
            let span_end = span.end.unwrap_or(end);
            let x = x_of(span.start);
            let width = (x_of(span_end) - x).max(MIN_BAR);
            let outcome = span.outcome;
            let state = if span.end.is_none() && outcome.is_open() {
                " (still going)"
            } else {
                ""
            };
            // A wait is drawn as a thin bar and a failed attempt that was retried as a striped
            // one: the two read apart by shape, not only by colour.
            let height = if outcome == Outcome::Waiting {
                BAR_HEIGHT / 3.0
            } else {
                BAR_HEIGHT
            };
            bars.push(Bar {
                step: track.step.clone(),
                attempt: span.attempt,
                outcome: outcome.as_str(),
                x: num(x),
                y: num(top + (ROW_HEIGHT - height) / 2.0),
                width: num(width),
                height: num(height),
                title: format!(
                    "{} · attempt {} · {}{} · {}",
                    track.step,
                    span.attempt,
                    outcome.as_str(),
                    state,
                    format::duration(span_end - span.start)
                ),
            });
        }
    }
    let ticks = (0..=layout.ticks)
        .map(|i| {
            let fraction = i as f64 / layout.ticks as f64;
            let at = start + TimeDelta::microseconds((total * fraction) as i64);
            Tick {
                x: num(x_of(at)),
                text: format!("+{}", format::duration(at - start)),
            }
        })
        .collect();
    let height = AXIS_HEIGHT + tracks.len() as f64 * ROW_HEIGHT + 4.0;
    Timeline {
        width: num(layout.width),
        height: num(height),
        label_width: num(layout.label_width),
        row_height: num(ROW_HEIGHT),
        labels,
        bars,
        ticks,
        axis_bottom: num(height),
        span: format::duration(end - start),
    }
}

/// A row's label: compensation entries (`compensate:<step>`) read as "undo <step>".
fn label(track: &Track) -> String {
    match track.step.strip_prefix("compensate:") {
        Some(step) if track.kind == RowKind::Compensation => format!("undo {step}"),
        _ => track.step.clone(),
    }
}

/// `text` cut to `chars` characters, with an ellipsis when it was longer.
fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(chars.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// SVG coordinates with one decimal: exact enough, and short.
fn num(value: f64) -> String {
    format!("{value:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64, ms: i64, kind: EventType, step: Option<&str>, attempt: i32) -> Event {
        let base = DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        Event {
            seq,
            at: base + TimeDelta::milliseconds(ms),
            kind,
            step: step.map(str::to_owned),
            attempt: step.map(|_| attempt),
            data: json!({}),
        }
    }

    fn outcomes(timeline: &Timeline, step: &str) -> Vec<(i32, &'static str)> {
        timeline
            .bars
            .iter()
            .filter(|b| b.step == step)
            .map(|b| (b.attempt, b.outcome))
            .collect()
    }

    #[test]
    fn retries_waits_and_compensations_each_get_bars() {
        use EventType::*;
        let events = vec![
            event(1, 0, MissionSubmitted, None, 0),
            event(2, 10, StepStarted, Some("reserve"), 1),
            event(3, 100, StepSucceeded, Some("reserve"), 1),
            event(4, 110, StepStarted, Some("charge"), 1),
            event(5, 200, StepRetryScheduled, Some("charge"), 1),
            event(6, 400, StepStarted, Some("charge"), 2),
            event(7, 450, StepSucceeded, Some("charge"), 2),
            event(8, 460, ApprovalRequested, Some("ship"), 1),
            event(9, 900, ApprovalRejected, Some("ship"), 1),
            event(10, 910, CompensationStarted, Some("compensate:charge"), 1),
            event(11, 950, StepCompensated, Some("compensate:charge"), 1),
            event(12, 960, CompensationStarted, Some("compensate:reserve"), 1),
            event(13, 990, StepCompensated, Some("compensate:reserve"), 1),
            event(14, 1000, MissionFailed, None, 0),
        ];
        let timeline = Timeline::new(&events, events[13].at, Layout::WIDE);
        assert_eq!(outcomes(&timeline, "reserve"), [(1, "succeeded")]);
        assert_eq!(
            outcomes(&timeline, "charge"),
            [(1, "retrying"), (1, "backoff"), (2, "succeeded")]
        );
        assert_eq!(outcomes(&timeline, "ship"), [(1, "rejected")]);
        let labels: Vec<_> = timeline.labels.iter().map(|l| l.text.as_str()).collect();
        // Compensations below the steps, in the order they ran: the reverse of the steps.
        assert_eq!(
            labels,
            ["reserve", "charge", "ship", "undo charge", "undo reserve"]
        );
        assert_eq!(timeline.labels[3].kind, "compensation");
        // The whole history spans the chart: the first bar starts just right of the labels,
        // the last compensation ends just short of the right edge.
        let first: f64 = timeline.bars[0].x.parse().unwrap_or_default();
        let labels_end = Layout::WIDE.label_width;
        assert!(first > labels_end && first < labels_end + 10.0, "{first}");
        let last = timeline.bars.last().cloned();
        let right = last
            .map(|b| {
                b.x.parse::<f64>().unwrap_or_default() + b.width.parse::<f64>().unwrap_or_default()
            })
            .unwrap_or_default();
        assert!(right > 970.0 && right <= 990.1, "{right}");
        assert_eq!(timeline.span, "1.0 s");
    }

    #[test]
    fn open_bars_run_to_now_and_cut_attempts_are_interrupted() {
        use EventType::*;
        let events = vec![
            event(1, 0, StepStarted, Some("build"), 1),
            // The worker died; the step ran again on another one.
            event(2, 5000, StepStarted, Some("build"), 2),
            event(3, 5100, ApprovalRequested, Some("deploy"), 1),
        ];
        let now = events[2].at + TimeDelta::seconds(5);
        let timeline = Timeline::new(&events, now, Layout::WIDE);
        assert_eq!(
            outcomes(&timeline, "build"),
            [(1, "interrupted"), (2, "running")]
        );
        assert_eq!(outcomes(&timeline, "deploy"), [(1, "waiting")]);
        let waiting = timeline.bars.iter().find(|b| b.step == "deploy");
        assert!(waiting.is_some_and(|b| b.title.contains("still going")));
    }

    #[test]
    fn the_narrow_drawing_cuts_long_labels_and_spans_its_width() {
        use EventType::*;
        let events = vec![
            event(1, 0, StepStarted, Some("provision-the-database"), 1),
            event(2, 1000, StepSucceeded, Some("provision-the-database"), 1),
        ];
        let timeline = Timeline::new(&events, events[1].at, Layout::NARROW);
        assert_eq!(timeline.width, "400.0");
        assert_eq!(timeline.labels[0].text, "provision-t…");
        assert_eq!(timeline.labels[0].full, "provision-the-database");
        assert_eq!(timeline.ticks.len(), 3);
        let bar = &timeline.bars[0];
        let right =
            bar.x.parse::<f64>().unwrap_or_default() + bar.width.parse::<f64>().unwrap_or_default();
        assert!((right - 390.0).abs() < 0.2, "{right}");
    }

    #[test]
    fn an_empty_history_draws_nothing() {
        let timeline = Timeline::new(&[], Utc::now(), Layout::NARROW);
        assert!(timeline.is_empty());
        assert!(timeline.bars.is_empty());
    }
}
