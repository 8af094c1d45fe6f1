//! The token economy's routes, thin translations to `hypercode_payments`:
//! - `accounts`: `GET /api/v1/accounts/{account}` and `POST /api/v1/accounts/{account}/tokens`.
//! - `stripe`: `POST /api/stripe/checkout` (Checkout Sessions) and `POST /api/stripe/webhook`
//!   (signed events, stored and applied by `stripe_event` missions).
//! - `shop`: `GET /api/v1/shop` and `POST /api/v1/shop/purchases` (`shop_purchase` missions).
//!
//! The webhook authenticates by its signature, not a key: [`webhook_routes`] are mounted
//! outside the key middleware and its per-key rate limit.

pub(crate) mod accounts;
pub(crate) mod shop;
pub(crate) mod stripe;

pub(crate) use accounts::{account_page, PageParams};

use crate::AppState;
use axum::Router;
use hypercode_payments::checkout::Checkout;
use hypercode_payments::{AccountId, Payments, ACCOUNT_RULE};

/// What the payment routes need, beside the engine.
#[derive(Debug, Clone)]
pub struct PaymentsState {
    /// The catalogue, the ledger and the stored events.
    pub payments: Payments,
    /// The Stripe client (`STRIPE_SECRET_KEY`); none: checkout answers 503.
    pub checkout: Option<Checkout>,
    /// `STRIPE_WEBHOOK_SECRET`; none: the webhook answers 503.
    pub webhook_secret: Option<String>,
}

/// The routes that need an API key.
pub(crate) fn routes() -> Router<AppState> {
    accounts::routes()
        .merge(shop::routes())
        .merge(stripe::routes())
}

/// The routes that authenticate otherwise (the webhook's signature).
pub(crate) fn webhook_routes() -> Router<AppState> {
    stripe::webhook_routes()
}

/// The account named in a path, or a 400 saying what an account id is.
fn account_param(raw: &str) -> Result<AccountId, crate::error::ApiError> {
    AccountId::parse(raw).ok_or_else(|| {
        crate::error::ApiError::InvalidParameter(format!("`account`: {ACCOUNT_RULE}"))
    })
}
