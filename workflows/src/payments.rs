//! The internal `stripe_event` workflow: one mission per verified Stripe event, started by the
//! webhook route with the idempotency key `stripe:<event id>`, so a redelivered event finds
//! its mission instead of starting another. Its one step, `apply`, applies the stored event in
//! a single transaction that also marks it applied (see `hypercode_payments::stripe`), so a
//! retry after a crash changes nothing twice.

use crate::Dependencies;
use async_trait::async_trait;
use hypercode_engine::{Context, RetryPolicy, Step, StepError, Workflow, WorkflowResult};
use hypercode_payments::{EventError, Payments, StripeEventOrder, STRIPE_EVENT_WORKFLOW};
use serde::Serialize;

/// The database may be briefly out of reach; the event is stored, so patience is cheap.
const APPLY_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    initial_backoff_ms: 200,
    max_backoff_ms: 10_000,
};

/// What the mission records when it finishes.
#[derive(Debug, Serialize)]
pub struct Applied {
    /// The event.
    pub event_id: String,
    /// What applying it did, in words.
    pub outcome: String,
}

/// The `stripe_event` workflow.
#[derive(Debug, Clone)]
pub struct StripeEventWorkflow {
    payments: Payments,
}

impl StripeEventWorkflow {
    /// Applies events through `deps.payments`.
    pub fn new(deps: &Dependencies) -> Self {
        Self {
            payments: deps.payments.clone(),
        }
    }
}

#[async_trait]
impl Workflow for StripeEventWorkflow {
    const NAME: &'static str = STRIPE_EVENT_WORKFLOW;
    type Input = StripeEventOrder;
    type Output = Applied;

    fn internal(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &mut Context, order: StripeEventOrder) -> WorkflowResult<Applied> {
        let apply = Step::new("apply").input(&order)?.retry(APPLY_RETRY);
        let outcome: String = ctx
            .step(apply, || async {
                self.payments
                    .events
                    .apply(&order.event_id, &self.payments.catalog)
                    .await
                    .map_err(|e| match e {
                        EventError::Database(_) => StepError::retryable(e.to_string()),
                        EventError::Unknown(_) | EventError::NotAnEvent(_) => {
                            StepError::fatal(e.to_string())
                        }
                    })
            })
            .await?;
        Ok(Applied {
            event_id: order.event_id,
            outcome,
        })
    }
}
