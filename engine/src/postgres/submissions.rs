//! Group commit of submissions. Under load, missions arrive from many API requests at once, and
//! a commit each would cost as much as a mission's steps: so submissions are queued, and a writer
//! inserts what is waiting as one statement, hence one round trip and one commit ([`super::batch`]
//! decides when a batch is complete; an idle submission is written at once).
//!
//! Each submission is answered only after its batch commits: with its row, or with nothing when
//! its idempotency key was taken (by an earlier mission, or an earlier submission of the same
//! batch), as a lone insert would be. A batch that fails as a whole is inserted again one
//! submission at a time, so one bad submission cannot fail its neighbours.

use super::batch::{Batching, Collector};
use super::missions::insert_all;
use crate::error::{StoreError, StoreResult};
use crate::ids::MissionId;
use crate::store::{MissionRecord, NewMission};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
struct Submission {
    new: Arc<NewMission>,
    reply: oneshot::Sender<StoreResult<Option<MissionRecord>>>,
}

/// The queue in front of the submission writers.
#[derive(Debug, Clone)]
pub(super) struct Submissions {
    queue: mpsc::Sender<Submission>,
}

impl Submissions {
    /// Start the writer tasks on `pool`; they stop when the last handle is dropped.
    pub(super) fn start(pool: PgPool, batching: Batching) -> Self {
        let (queue, collector) = Collector::new(batching);
        for _ in 0..batching.writers {
            tokio::spawn(writer(pool.clone(), collector.clone()));
        }
        Self { queue }
    }

    /// Insert `new` with its `mission_submitted` event once its batch commits; `None` when its
    /// idempotency key is taken.
    pub(super) async fn insert(&self, new: Arc<NewMission>) -> StoreResult<Option<MissionRecord>> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Corrupt("the submission writer has stopped".to_owned());
        self.queue
            .send(Submission { new, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn writer(pool: PgPool, collector: Arc<Collector<Submission>>) {
    while let Some((batch, committing)) = collector.collect().await {
        match insert_all(&pool, batch.iter().map(|s| s.new.as_ref())).await {
            Ok(inserted) => {
                let mut inserted: HashMap<MissionId, MissionRecord> =
                    inserted.into_iter().map(|m| (m.id, m)).collect();
                for submission in batch {
                    let _ = submission
                        .reply
                        .send(Ok(inserted.remove(&submission.new.id)));
                }
            }
            Err(e) if batch.len() == 1 => {
                let submission = batch.into_iter().next().expect("one submission");
                let _ = submission.reply.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "batch insert failed; inserting its submissions one by one");
                for submission in batch {
                    let result = insert_all(&pool, [submission.new.as_ref()]).await;
                    let _ = submission.reply.send(result.map(|mut one| one.pop()));
                }
            }
        }
        drop(committing);
    }
}
