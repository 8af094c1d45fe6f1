//! Workers and queues (`/workers`): the worker processes alive now (from their heartbeats),
//! their concurrency and the missions they hold, the queue's depth, where missions are, and
//! throughput over the last minutes as a small chart. The page refreshes itself every few
//! seconds.

use super::format::{self, Moment};
use super::session::SignedIn;
use super::{page_or_fragment, Chrome, Fragment, PageError};
use crate::workers::{WorkerState, REMEMBER};
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use hypercode_engine::store::{ThroughputBucket, WorkerRecord};
use hypercode_engine::WORKER_HEARTBEAT;
use std::time::Duration;

/// The chart's window and bar width.
const WINDOW: Duration = Duration::from_secs(15 * 60);
const BUCKET: Duration = Duration::from_secs(60);

/// Chart geometry, in SVG user units.
const CHART_WIDTH: f64 = 600.0;
const CHART_HEIGHT: f64 = 120.0;
const CHART_TOP: f64 = 10.0;
/// Room for the value axis's labels on the left and the time axis's below.
const CHART_LEFT: f64 = 44.0;
const CHART_BOTTOM: f64 = 18.0;

/// A mission a worker holds.
pub(crate) struct Held {
    id: String,
    short_id: String,
    workflow: String,
    step: Option<String>,
    since: Moment,
}

/// One worker process.
pub(crate) struct WorkerRow {
    id: String,
    host: String,
    pid: i32,
    queue: String,
    state: WorkerState,
    concurrency: i32,
    busy: usize,
    handled: i64,
    started: Moment,
    heartbeat: Moment,
    held: Vec<Held>,
}

impl WorkerRow {
    fn new(worker: &WorkerRecord, now: chrono::DateTime<Utc>) -> Self {
        Self {
            id: worker.beat.id.clone(),
            host: worker.beat.host.clone(),
            pid: worker.beat.pid,
            queue: worker.beat.queue.clone(),
            state: WorkerState::of(worker, now),
            concurrency: worker.beat.concurrency,
            busy: worker.running.len(),
            handled: worker.beat.handled,
            started: Moment::new(worker.beat.started_at, now),
            heartbeat: Moment::new(worker.heartbeat_at, now),
            held: worker
                .running
                .iter()
                .map(|m| Held {
                    id: m.id.to_string(),
                    short_id: format::short_id(m.id),
                    workflow: m.workflow.clone(),
                    step: m.step.clone(),
                    since: Moment::new(m.since, now),
                })
                .collect(),
        }
    }
}

/// One bar of the throughput chart.
pub(crate) struct Column {
    x: String,
    width: String,
    /// Steps finished: the bar.
    steps_y: String,
    steps_height: String,
    /// Missions finished: a dot on the line.
    missions_y: String,
    center: String,
    title: String,
}

/// The throughput chart.
pub(crate) struct Chart {
    columns: Vec<Column>,
    /// The missions line, as SVG polyline points.
    line: String,
    /// The scale's top value (steps per minute).
    max: i64,
    width: String,
    height: String,
    baseline: String,
    /// Totals over the window.
    steps: i64,
    missions: i64,
    /// The value axis: (y, label), bottom to top.
    y_ticks: Vec<(String, String)>,
    /// The time axis: (x, label), oldest to now.
    x_ticks: Vec<(String, String)>,
    /// Where the plot starts (right of the value labels).
    left: String,
    /// The time labels' baseline.
    x_label_y: String,
}

impl Chart {
    fn new(buckets: &[ThroughputBucket], now: chrono::DateTime<Utc>) -> Self {
        let max = buckets
            .iter()
            .map(|b| b.steps.max(b.missions))
            .max()
            .unwrap_or(0)
            .max(1);
        let slot = (CHART_WIDTH - CHART_LEFT) / buckets.len().max(1) as f64;
        let y_of = |value: i64| CHART_TOP + CHART_HEIGHT * (1.0 - value as f64 / max as f64);
        let columns: Vec<Column> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let x = CHART_LEFT + i as f64 * slot;
                let top = y_of(b.steps);
                Column {
                    x: num(x + slot * 0.1),
                    width: num(slot * 0.8),
                    steps_y: num(top),
                    steps_height: num(CHART_TOP + CHART_HEIGHT - top),
                    missions_y: num(y_of(b.missions)),
                    center: num(x + slot / 2.0),
                    title: format!(
                        "{}: {} steps, {} missions finished",
                        format::relative(b.start, now),
                        b.steps,
                        b.missions
                    ),
                }
            })
            .collect();
        let line = columns
            .iter()
            .map(|c| format!("{},{}", c.center, c.missions_y))
            .collect::<Vec<_>>()
            .join(" ");
        let y_ticks = [0, max / 2, max]
            .into_iter()
            .filter(|v| *v == 0 || *v == max || (*v > 0 && *v < max))
            .map(|v| (num(y_of(v) + 4.0), format!("{v}/min")))
            .collect();
        // Every fifth minute back from now, labelled by how long ago it was.
        let n = buckets.len();
        let x_ticks = (0..n)
            .filter(|i| (n - 1 - i).is_multiple_of(5))
            .map(|i| {
                let ago = n - 1 - i;
                let label = if ago == 0 {
                    "now".to_owned()
                } else {
                    format!("−{ago} min")
                };
                (num(CHART_LEFT + (i as f64 + 0.5) * slot), label)
            })
            .collect();
        Self {
            line,
            max,
            y_ticks,
            x_ticks,
            left: num(CHART_LEFT),
            x_label_y: num(CHART_TOP + CHART_HEIGHT + CHART_BOTTOM - 4.0),
            width: num(CHART_WIDTH),
            height: num(CHART_TOP + CHART_HEIGHT + CHART_BOTTOM),
            baseline: num(CHART_TOP + CHART_HEIGHT),
            steps: buckets.iter().map(|b| b.steps).sum(),
            missions: buckets.iter().map(|b| b.missions).sum(),
            columns,
        }
    }
}

fn num(value: f64) -> String {
    format!("{value:.1}")
}

/// What the page shows.
pub(crate) struct WorkersView {
    workers: Vec<WorkerRow>,
    alive: usize,
    capacity: i64,
    /// Wake-ups waiting in Redis, or why it could not be read.
    queued: Result<u64, String>,
    pending: i64,
    due: i64,
    running: i64,
    waiting: i64,
    chart: Chart,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage<'a> {
    chrome: Chrome,
    v: &'a WorkersView,
    /// The page refreshes itself at the workers' heartbeat, the pace its data changes at.
    refresh: Duration,
}

#[derive(Template)]
#[template(path = "workers_live.html")]
struct WorkersLive<'a> {
    v: &'a WorkersView,
}

/// `GET /workers`.
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    fragment: Fragment,
) -> Result<Response, PageError> {
    let store = state.engine.store();
    let (workers, buckets, backlog) = tokio::try_join!(
        store.workers(REMEMBER),
        store.throughput(WINDOW, BUCKET),
        store.backlog(),
    )?;
    let queued = state.engine.queue_depth().await.map_err(|e| e.to_string());
    let now = Utc::now();
    let rows: Vec<WorkerRow> = workers.iter().map(|w| WorkerRow::new(w, now)).collect();
    let alive: Vec<&WorkerRow> = rows
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .collect();
    let view = WorkersView {
        alive: alive.len(),
        capacity: alive.iter().map(|w| i64::from(w.concurrency)).sum(),
        workers: rows,
        queued,
        pending: backlog.pending,
        due: backlog.due,
        running: backlog.running,
        waiting: backlog.waiting,
        chart: Chart::new(&buckets, now),
    };
    page_or_fragment(
        fragment,
        &WorkersPage {
            chrome: Chrome::new(&session, "Workers and queues", "workers"),
            v: &view,
            refresh: WORKER_HEARTBEAT,
        },
        &WorkersLive { v: &view },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn the_chart_scales_to_the_busiest_minute() {
        let now = Utc::now();
        let buckets: Vec<ThroughputBucket> = [(0, 0), (30, 10), (60, 20)]
            .into_iter()
            .enumerate()
            .map(|(i, (steps, missions))| ThroughputBucket {
                start: now - TimeDelta::minutes(3 - i as i64),
                steps,
                missions,
            })
            .collect();
        let chart = Chart::new(&buckets, now);
        assert_eq!(chart.max, 60);
        assert_eq!((chart.steps, chart.missions), (90, 30));
        // The busiest bar fills the chart's height; an idle minute has no height.
        assert_eq!(chart.columns[2].steps_height, num(CHART_HEIGHT));
        assert_eq!(chart.columns[0].steps_height, num(0.0));
        assert_eq!(chart.line.split(' ').count(), 3);
    }
}
