//! How queued writes form batches, for the writers that apply each batch as one statement and
//! one commit (journal transitions in [`super::group_commit`], submissions in
//! [`super::submissions`]). On a small machine the commit, not the statement, is the cost.
//!
//! When a request arrives with nothing being committed and no run about to send another, it
//! goes at once (no added latency). Otherwise its batch keeps collecting:
//! - while another batch commits: that commit's callers mostly come straight back with their
//!   next request, which then rides along instead of waiting for a commit of its own. A batch
//!   that grows to [`Batching::overlap`] is written alongside, and a commit that takes longer
//!   than [`Batching::stall`] (a row lock held elsewhere) holds nothing back;
//! - for at most [`Batching::linger`] while a run whose transition just committed with its lease
//!   kept has not sent its next one, and only until every such run has ([`Returning`]).
//!
//! So commits follow each other rather than overlap, and under load each one carries what
//! arrived during the one before. With two concurrent writers instead (the previous scheme), an
//! idle writer took each transition the moment it arrived, and batches stayed near 1–3 even at
//! 64 missions in flight on a CPU-bound machine.

use crate::ids::MissionId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Mutex};

/// How the writers of one queue form batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batching {
    /// Writer tasks per process: how many batches can commit at once.
    pub writers: usize,
    /// Most requests in one statement.
    pub max_batch: usize,
    /// A batch this large is written even while another batch commits.
    pub overlap: usize,
    /// Longest a batch waits behind a commit in flight.
    pub stall: Duration,
    /// Longest a batch waits for runs whose last transition has just committed (a queue whose
    /// writers never call [`Returning::answered`] never waits for any).
    pub linger: Duration,
}

impl Batching {
    /// Measured with 500 three-step missions per kind at 64 in flight (`bench/run --only
    /// cost`, debug build, a loaded 2-core machine), two writers throughout: batches written
    /// the moment a writer was free gave 2.0–2.4 statements per HTTP mission and 1.32–1.44 WAL
    /// fsyncs per step; waiting behind the commit in flight 1.19–1.36 and 1.07–1.12; with the
    /// 1 ms linger too 1.09–1.56 and 1.04–1.17 (in the same half hour as the previous row,
    /// 1.09–1.14 and 1.04: a small gain, near the noise).
    pub(super) const DEFAULT: Self = Self {
        writers: 2,
        max_batch: 256,
        overlap: 32,
        stall: Duration::from_millis(50),
        linger: Duration::from_millis(1),
    };
}

/// What the writers share: the queue's receiving end, taken by one writer at a time, and what
/// decides when its batch is complete.
#[derive(Debug)]
pub(super) struct Collector<R> {
    receiver: Mutex<mpsc::Receiver<R>>,
    /// Batches being committed.
    committing: watch::Sender<usize>,
    pub(super) returning: Returning,
    pub(super) batching: Batching,
}

impl<R> Collector<R> {
    pub(super) fn new(batching: Batching) -> (mpsc::Sender<R>, Arc<Self>) {
        let (queue, receiver) = mpsc::channel(batching.max_batch * batching.writers * 4);
        let collector = Self {
            receiver: Mutex::new(receiver),
            committing: watch::channel(0).0,
            returning: Returning::default(),
            batching,
        };
        (queue, Arc::new(collector))
    }

    /// Whether a batch is being committed now.
    pub(super) fn busy(&self) -> bool {
        *self.committing.borrow() > 0
    }

    /// The next batch, counted as committing until the returned guard is dropped; `None` once
    /// every handle is gone.
    pub(super) async fn collect(&self) -> Option<(Vec<R>, Committing<'_>)> {
        let Batching {
            max_batch,
            overlap,
            stall,
            linger,
            ..
        } = self.batching;
        let mut receiver = self.receiver.lock().await;
        let mut batch = vec![receiver.recv().await?];
        take_queued(&mut receiver, &mut batch, max_batch);
        let stalled = tokio::time::sleep(stall);
        tokio::pin!(stalled);
        let mut committing = self.committing.subscribe();
        while batch.len() < overlap.min(max_batch) && *committing.borrow_and_update() > 0 {
            tokio::select! {
                request = receiver.recv() => match request {
                    Some(request) => {
                        batch.push(request);
                        take_queued(&mut receiver, &mut batch, max_batch);
                    }
                    None => break,
                },
                // The sender lives in `self`: this only returns on a change.
                _ = committing.changed() => {}
                () = &mut stalled => break,
            }
        }
        let lingered = Instant::now() + linger;
        while batch.len() < max_batch {
            let Some(due) = self.returning.due(linger) else {
                break;
            };
            match tokio::time::timeout_at(due.min(lingered).into(), receiver.recv()).await {
                Ok(Some(request)) => {
                    batch.push(request);
                    take_queued(&mut receiver, &mut batch, max_batch);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Counted before the next writer may collect, so that it sees this commit.
        self.committing.send_modify(|n| *n += 1);
        Some((batch, Committing(&self.committing)))
    }
}

/// Move what is already queued into `batch`, up to `max_batch`.
fn take_queued<R>(receiver: &mut mpsc::Receiver<R>, batch: &mut Vec<R>, max_batch: usize) {
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// A batch being committed; dropping it (after its transitions are answered, so that their runs
/// are already on their way back) lets a batch waiting behind it go.
pub(super) struct Committing<'a>(&'a watch::Sender<usize>);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Runs whose last transition committed with the lease kept, and when: they usually send their
/// next transition within moments (a step's end right after its start, the next step's start
/// right after an end), unless the step waits on I/O.
#[derive(Debug, Default)]
pub(super) struct Returning {
    since: std::sync::Mutex<HashMap<MissionId, Instant>>,
}

impl Returning {
    pub(super) fn answered(&self, missions: impl IntoIterator<Item = MissionId>, linger: Duration) {
        let now = Instant::now();
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        // A run that did not come back within the linger is in a step's I/O, or gone.
        since.retain(|_, at| now.duration_since(*at) < linger);
        since.extend(missions.into_iter().map(|mission| (mission, now)));
    }

    pub(super) fn back(&self, mission: MissionId) {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mission);
    }

    /// Until when a batch may wait for the runs not back yet: `linger` after the latest was
    /// answered; `None` if every run answered within the last `linger` is back.
    fn due(&self, linger: Duration) -> Option<Instant> {
        let now = Instant::now();
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.retain(|_, at| now.duration_since(*at) < linger);
        since.values().max().map(|at| *at + linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batching(linger: Duration, stall: Duration) -> Batching {
        Batching {
            writers: 1,
            max_batch: 8,
            overlap: 3,
            stall,
            linger,
        }
    }

    fn request(mission: MissionId) -> MissionId {
        mission
    }

    fn mission() -> MissionId {
        MissionId(uuid::Uuid::new_v4())
    }

    const LONG: Duration = Duration::from_secs(30);
    const PROMPT: Duration = Duration::from_secs(5);

    /// Collect a batch in a task of its own; the task ends with the batch's size.
    fn collecting(collector: &Arc<Collector<MissionId>>) -> tokio::task::JoinHandle<usize> {
        let collector = collector.clone();
        tokio::spawn(async move { collector.collect().await.expect("queue open").0.len() })
    }

    /// The size of the batch a collection in progress ends with, which it must do promptly.
    async fn collected(collecting: tokio::task::JoinHandle<usize>, why: &str) -> usize {
        tokio::time::timeout(PROMPT, collecting)
            .await
            .expect(why)
            .expect("the collection ran")
    }

    #[tokio::test]
    async fn an_idle_transition_is_collected_at_once() {
        let (queue, collector) = Collector::new(batching(LONG, LONG));
        // A run answered earlier and now back: nothing to wait for.
        let m = mission();
        collector.returning.answered([m], LONG);
        collector.returning.back(m);
        queue.send(request(m)).await.unwrap();
        let size = collected(collecting(&collector), "no waiting when idle").await;
        assert_eq!(size, 1);
    }

    #[tokio::test]
    async fn a_batch_behind_a_commit_collects_until_that_commit_ends() {
        let (queue, collector) = Collector::new(batching(Duration::ZERO, LONG));
        collector.committing.send_modify(|n| *n += 1);
        queue.send(request(mission())).await.unwrap();
        let batch = collecting(&collector);
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.send(request(mission())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!batch.is_finished(), "it waits for the commit in flight");
        collector.committing.send_modify(|n| *n -= 1);
        assert_eq!(collected(batch, "it goes when the commit ends").await, 2);
    }

    #[tokio::test]
    async fn a_batch_behind_a_commit_goes_once_large_enough_or_stalled() {
        let (queue, collector) = Collector::new(batching(Duration::ZERO, LONG));
        collector.committing.send_modify(|n| *n += 1);
        for _ in 0..3 {
            queue.send(request(mission())).await.unwrap();
        }
        let size = collected(collecting(&collector), "a large enough batch goes").await;
        assert_eq!(size, 3);

        let (queue, collector) =
            Collector::new(batching(Duration::ZERO, Duration::from_millis(100)));
        collector.committing.send_modify(|n| *n += 1);
        queue.send(request(mission())).await.unwrap();
        let size = collected(
            collecting(&collector),
            "a stalled commit holds nothing back",
        )
        .await;
        assert_eq!(size, 1);
    }

    #[tokio::test]
    async fn a_batch_lingers_for_a_returning_run_until_it_is_back() {
        let (queue, collector) = Collector::new(batching(LONG, LONG));
        let returning = mission();
        collector.returning.answered([returning], LONG);
        queue.send(request(mission())).await.unwrap();
        let batch = collecting(&collector);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!batch.is_finished(), "it waits for the returning run");
        collector.returning.back(returning);
        queue.send(request(returning)).await.unwrap();
        assert_eq!(collected(batch, "it goes when the run is back").await, 2);

        // A run that does not come back is waited for no longer than the linger.
        let linger = Duration::from_millis(100);
        let (queue, collector) = Collector::new(batching(linger, LONG));
        collector.returning.answered([mission()], linger);
        queue.send(request(mission())).await.unwrap();
        let size = collected(collecting(&collector), "it lingers no longer").await;
        assert_eq!(size, 1);
    }
}
