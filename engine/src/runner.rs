//! The runner: takes one wake-up of one mission, claims its lease, replays the workflow through
//! a [`Context`], and settles the result (finish, compensate, park or release). The lease is
//! renewed by a heartbeat for as long as the run lasts, and not a moment longer: the heartbeat
//! dies with its run however the run ends, even when whoever polls the run drops it mid-step.

use crate::context::{Context, RunSignals};
use crate::engine::{json_size, Engine};
use crate::error::{FailureCause, MissionError, StoreError, StoreResult, WorkflowError};
use crate::event::{EventType, NewEvent};
use crate::ids::MissionId;
use crate::store::{Claim, JournalStore, Lease, MissionChange, Outcome};
use futures::FutureExt;
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// What one wake-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The mission was not runnable (finished, parked, or leased by a live worker).
    NotClaimed,
    /// The mission parked itself on a timer, backoff or approval.
    Parked,
    /// The mission was handed back because this worker is shutting down.
    Released,
    /// The mission finished (succeeded, failed or cancelled).
    Finished,
    /// Another worker took the lease; this run's late writes were refused.
    LeaseLost,
}

impl Engine {
    /// Advance one mission as far as it can go now. Storage errors other than a lost lease are
    /// returned; the lease then expires and the reconciler hands the mission to another worker.
    pub async fn run_mission(&self, id: MissionId) -> StoreResult<RunOutcome> {
        let config = self.config();
        let Some(claim) = self
            .store()
            .claim_held(id, self.worker_id(), config.lease_ttl, config.claim_hold)
            .await?
        else {
            return Ok(RunOutcome::NotClaimed);
        };
        // A trace of its own per run: the steps are its children, and the worker that ran it is
        // named (the history's `mission_started`/`mission_resumed` events name it too).
        let span = tracing::info_span!(
            "mission",
            mission = %id,
            workflow = %claim.mission.workflow,
            lease = claim.lease.token.0,
            worker = self.worker_id().0.as_str(),
            otel.name = format!("mission {}", claim.mission.workflow),
        );
        self.run_claimed(claim).instrument(span).await
    }

    async fn run_claimed(&self, claim: Claim) -> StoreResult<RunOutcome> {
        let Claim {
            lease,
            mission,
            input,
            journal,
            retry_generation,
            open,
        } = claim;
        let signals = RunSignals::new(mission.cancel_requested, self.shutdown_token());
        // Aborted when this future ends or is dropped (a panic, or a caller giving up on the
        // run): a detached heartbeat would renew the lease of a mission nobody runs any more,
        // so it could neither be taken over nor cancelled.
        let heartbeat = AbortOnDropHandle::new(tokio::spawn(
            heartbeat(
                self.store().clone(),
                lease,
                self.config().lease_ttl,
                signals.clone(),
            )
            .in_current_span(),
        ));
        let mut ctx = Context::new(
            self,
            &mission,
            lease,
            journal,
            signals,
            retry_generation,
            open,
        );
        let result = match self.registry().get(&mission.workflow) {
            Some(workflow) => AssertUnwindSafe(workflow.run(&mut ctx, &input))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(WorkflowError::failed(format!(
                        "workflow panicked: {}",
                        panic_message(&panic)
                    )))
                }),
            None => Err(WorkflowError::failed(format!(
                "workflow `{}` is not registered in this worker",
                mission.workflow
            ))),
        };
        let outcome = self.settle(&mut ctx, result).await;
        drop(heartbeat);
        match outcome {
            Err(WorkflowError::Store(StoreError::LeaseLost(_))) => {
                tracing::warn!("lease lost to another worker; abandoning this run");
                Ok(RunOutcome::LeaseLost)
            }
            Err(WorkflowError::Store(e)) => Err(e),
            Err(other) => Err(StoreError::Corrupt(format!(
                "unsettled workflow result: {other}"
            ))),
            Ok(outcome) => {
                if outcome == RunOutcome::Released {
                    self.wake(mission.id).await;
                }
                Ok(outcome)
            }
        }
    }

    /// Turn a workflow result into the mission's next state.
    async fn settle(
        &self,
        ctx: &mut Context,
        result: Result<Value, WorkflowError>,
    ) -> Result<RunOutcome, WorkflowError> {
        // Its finishing step's write ended the mission: whatever the workflow did after, there
        // is nothing left to write.
        if ctx.finished() {
            return Ok(RunOutcome::Finished);
        }
        let finish = |outcome: Outcome, kind: EventType, data: Value| {
            (
                MissionChange::Finish(outcome),
                vec![NewEvent::mission(kind, data)],
            )
        };
        let failed = |error: MissionError| {
            let data = json!({ "error": error });
            finish(Outcome::Failed(error), EventType::MissionFailed, data)
        };
        let (change, events) = match result {
            Ok(output) => match json_size(&output) {
                size if size > self.config().max_payload_bytes => {
                    failed(MissionError::new(format!(
                        "mission output of {size} bytes exceeds the limit of {} bytes",
                        self.config().max_payload_bytes
                    )))
                }
                _ => finish(
                    Outcome::Succeeded(output),
                    EventType::MissionSucceeded,
                    json!({}),
                ),
            },
            Err(WorkflowError::Suspended { wake_at }) => {
                if ctx.parked() {
                    return Ok(RunOutcome::Parked);
                }
                (
                    MissionChange::Suspend { wake_at },
                    vec![NewEvent::mission(
                        EventType::MissionSuspended,
                        json!({ "until": wake_at }),
                    )],
                )
            }
            Err(WorkflowError::ShuttingDown) => (
                MissionChange::Release,
                vec![NewEvent::mission(
                    EventType::MissionReleased,
                    json!({ "reason": "worker shutting down" }),
                )],
            ),
            Err(WorkflowError::Cancelled) => {
                let summary = match ctx.compensate().await {
                    Ok(summary) => summary,
                    Err(interrupt) => return Box::pin(self.settle(ctx, Err(interrupt))).await,
                };
                let error = MissionError {
                    compensation: Some(summary),
                    ..MissionError::new("mission was cancelled")
                };
                let data = error.to_json();
                finish(Outcome::Cancelled(error), EventType::MissionCancelled, data)
            }
            Err(nondeterminism @ WorkflowError::Nondeterminism { .. }) => {
                // The code no longer matches the journal: undoing steps with that code could do
                // more harm, so the mission stops here for a person to look at.
                tracing::error!(error = %nondeterminism, "replay diverged from the journal");
                failed(MissionError {
                    code: Some("HC001".to_owned()),
                    ..MissionError::new(nondeterminism.to_string())
                })
            }
            Err(WorkflowError::Store(e)) => return Err(WorkflowError::Store(e)),
            Err(failure) => {
                let code = failure.code().map(str::to_owned);
                let cause = FailureCause::from(&failure);
                let summary = match ctx.compensate().await {
                    Ok(summary) => summary,
                    Err(interrupt) => return Box::pin(self.settle(ctx, Err(interrupt))).await,
                };
                failed(MissionError {
                    code,
                    cause: Some(cause),
                    compensation: Some(summary),
                    ..MissionError::new(failure.to_string())
                })
            }
        };
        let released = matches!(change, MissionChange::Release);
        let parked = matches!(change, MissionChange::Suspend { .. });
        ctx.write(change, Vec::new(), events).await?;
        Ok(if released {
            RunOutcome::Released
        } else if parked {
            RunOutcome::Parked
        } else {
            RunOutcome::Finished
        })
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Renew the lease every third of its lifetime; relay cancellation requests and a lost lease.
async fn heartbeat(
    store: Arc<dyn crate::store::Store>,
    lease: Lease,
    ttl: std::time::Duration,
    signals: Arc<RunSignals>,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match JournalStore::renew(store.as_ref(), &lease, ttl).await {
            Ok(state) => signals.set_cancel_requested(state.cancel_requested),
            Err(StoreError::LeaseLost(_)) => {
                signals.set_lease_lost();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; will retry"),
        }
    }
}
