//! The internal `shop_purchase` workflow: buy one shop item with tokens, as a saga.
//!
//! 1. `spend` debits the item's cost (ledger kind `shop`). Too few tokens is recorded as the
//!    step's outcome, and the mission then fails with the code `insufficient_tokens`, having
//!    granted nothing.
//! 2. `grant` POSTs the grant to the item's `fulfil_url` (when it has one) with the
//!    `Idempotency-Key: shop:<purchase key>`, retried while the service answers 5xx or not at
//!    all, then records the entitlement.
//!
//! If `grant` fails for good, the mission fails and the compensation of `spend` refunds the
//! cost (ledger kind `refund`). The refund's ledger idempotency key is derived from the
//! purchase's, so however often the compensation is retried or replayed, the tokens come back
//! exactly once.

use crate::egress::EgressClient;
use crate::Dependencies;
use async_trait::async_trait;
use hypercode_engine::{
    Context, InputProblem, RetryPolicy, Step, StepError, Workflow, WorkflowError, WorkflowResult,
};
use hypercode_payments::{
    EntryKind, LedgerError, NewEntry, Payments, ShopItem, ShopOrder, Tokens, SHOP_PURCHASE_WORKFLOW,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Ledger writes are retried while the database is out of reach.
const LEDGER_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    initial_backoff_ms: 200,
    max_backoff_ms: 10_000,
};

/// A fulfilment service gets a few tries before the purchase is refunded.
const GRANT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff_ms: 200,
    max_backoff_ms: 2_000,
};

/// How long one call of a fulfilment service may take.
const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

/// The stable code of a purchase refused for too few tokens.
pub const INSUFFICIENT_TOKENS: &str = "insufficient_tokens";

/// What `spend` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Spent {
    /// The cost was debited.
    Debited {
        /// The ledger entry.
        entry: i64,
        /// The balance after it.
        balance: Tokens,
    },
    /// The balance was too small; nothing was written.
    Insufficient {
        /// The balance then.
        balance: Tokens,
    },
}

/// What the mission records when it finishes.
#[derive(Debug, Serialize)]
pub struct Purchased {
    /// Who bought.
    pub account: String,
    /// What.
    pub item: String,
    /// For how many tokens.
    pub cost: Tokens,
    /// The balance after the debit.
    pub balance: Tokens,
}

/// The `shop_purchase` workflow.
#[derive(Debug, Clone)]
pub struct ShopPurchaseWorkflow {
    payments: Payments,
    http: EgressClient,
}

impl ShopPurchaseWorkflow {
    /// Buys through `deps.payments`, fulfilling through `deps.http`.
    pub fn new(deps: &Dependencies) -> Self {
        Self {
            payments: deps.payments.clone(),
            http: deps.http.clone(),
        }
    }

    fn item(&self, id: &str) -> Option<ShopItem> {
        self.payments.catalog.shop_item(id).cloned()
    }
}

/// A ledger failure inside a step: a database fault is worth retrying, the rest is not.
fn ledger_failure(e: LedgerError) -> StepError {
    match e {
        LedgerError::Database(_) => StepError::retryable(e.to_string()),
        other => StepError::fatal(other.to_string()),
    }
}

#[async_trait]
impl Workflow for ShopPurchaseWorkflow {
    const NAME: &'static str = SHOP_PURCHASE_WORKFLOW;
    type Input = ShopOrder;
    type Output = Purchased;

    fn internal(&self) -> bool {
        true
    }

    fn check(&self, order: &ShopOrder) -> Result<(), Vec<InputProblem>> {
        let mut problems = Vec::new();
        if self.item(&order.item).is_none() {
            problems.push(InputProblem::new("/item", "no shop item has this id"));
        }
        if order.idempotency_key.is_empty() {
            problems.push(InputProblem::new("/idempotency_key", "must not be empty"));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems),
        }
    }

    async fn run(&self, ctx: &mut Context, order: ShopOrder) -> WorkflowResult<Purchased> {
        let item = self.item(&order.item).ok_or_else(|| {
            WorkflowError::failed(format!(
                "shop item `{}` is no longer in the catalogue",
                order.item
            ))
        })?;
        let key = order.idempotency_key.clone();
        let reference = ctx.mission_id().to_string();
        let (ledger, refund_ledger) = (self.payments.ledger.clone(), self.payments.ledger.clone());
        let (refund_account, refund_key, refund_reference) = (
            order.account.clone(),
            format!("shop:{key}:refund"),
            reference.clone(),
        );
        let cost = item.cost;
        let spend = Step::new("spend")
            .input(&json!({ "account": order.account, "item": item.id, "cost": cost }))?
            .retry(LEDGER_RETRY)
            .compensate(LEDGER_RETRY, move |spent: Spent| {
                let (ledger, account, key, reference) = (
                    refund_ledger.clone(),
                    refund_account.clone(),
                    refund_key.clone(),
                    refund_reference.clone(),
                );
                async move {
                    let Spent::Debited { .. } = spent else {
                        return Ok(json!({ "refunded": 0 }));
                    };
                    let refund = NewEntry {
                        account,
                        amount: cost,
                        kind: EntryKind::Refund,
                        reason: "the shop item could not be granted".to_owned(),
                        reference: Some(reference),
                        idempotency_key: key,
                    };
                    let posted = ledger.post(&refund).await.map_err(ledger_failure)?;
                    Ok(json!({ "refunded": cost, "entry": posted.entry().id }))
                }
            });
        let debit = NewEntry {
            account: order.account.clone(),
            amount: Tokens(-cost.get()),
            kind: EntryKind::Shop,
            reason: format!("bought {}", item.name),
            reference: Some(reference),
            idempotency_key: format!("shop:{key}:spend"),
        };
        let spent: Spent = ctx
            .step(spend, || async {
                match ledger.post(&debit).await {
                    Ok(posted) => Ok(Spent::Debited {
                        entry: posted.entry().id,
                        balance: posted.entry().balance_after,
                    }),
                    Err(LedgerError::Insufficient { balance, .. }) => {
                        Ok(Spent::Insufficient { balance })
                    }
                    Err(e) => Err(ledger_failure(e)),
                }
            })
            .await?;
        let balance = match spent {
            Spent::Debited { balance, .. } => balance,
            Spent::Insufficient { balance } => {
                return Err(WorkflowError::refused(
                    INSUFFICIENT_TOKENS,
                    format!(
                        "{} costs {cost} tokens; account {} has {balance}",
                        item.id, order.account
                    ),
                ))
            }
        };
        let grant = Step::new("grant")
            .input(&json!({ "fulfil_url": item.fulfil_url }))?
            .retry(GRANT_RETRY);
        ctx.step(grant, || async {
            if let Some(url) = &item.fulfil_url {
                let body = json!({
                    "account": order.account,
                    "item": item.id,
                    "purchase": key,
                });
                fulfil(&self.http, url, &format!("shop:{key}"), &body).await?;
            }
            self.payments
                .ledger
                .grant_shop_item(&order.account, &item.id, &key)
                .await
                .map_err(ledger_failure)
        })
        .await?;
        Ok(Purchased {
            account: order.account.to_string(),
            item: item.id,
            cost,
            balance,
        })
    }
}

/// POST the grant; 2xx is done, 4xx is final, anything else is worth another try.
async fn fulfil(http: &EgressClient, url: &str, key: &str, body: &Value) -> Result<(), StepError> {
    let parsed = url::Url::parse(url).map_err(|e| StepError::fatal(format!("{url}: {e}")))?;
    http.policy()
        .check_url(&parsed)
        .map_err(|e| StepError::fatal(e.to_string()))?;
    let response = http
        .http()
        .post(parsed)
        .timeout(GRANT_TIMEOUT)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .map_err(|e| StepError::retryable(format!("POST {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let error = format!("POST {url} answered {status}");
    let details = json!({ "status": status.as_u16(), "body": text });
    if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
        Err(StepError::fatal(error).with_details(details))
    } else {
        Err(StepError::retryable(error).with_details(details))
    }
}
