//! Stripe Checkout through `async-stripe`: one Checkout Session per request, priced from the
//! catalogue (never from the request), naming the account in `client_reference_id` and in the
//! metadata of the session (and of its subscription, so that subscription events name it
//! too), and sent with an `Idempotency-Key` so a retried request cannot open two sessions.

use crate::catalog::{Price, Sellable};
use crate::money::AccountId;
use std::collections::HashMap;
use std::str::FromStr;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionLineItemsPriceDataRecurring,
    CreateCheckoutSessionLineItemsPriceDataRecurringInterval,
    CreateCheckoutSessionSubscriptionData, ProductData,
};
use stripe_checkout::CheckoutSessionMode;

/// How long one call to Stripe may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The client could not be built (a secret or URL that is not a header value or a URI).
    #[error("the Stripe client is misconfigured: {0}")]
    Config(String),
    /// The idempotency key is empty or longer than 255 characters.
    #[error("the idempotency key must be 1 to 255 characters")]
    Key,
    /// Stripe refused the request; its message.
    #[error("{message}")]
    Refused {
        /// Stripe's status code.
        status: u16,
        /// Stripe's message.
        message: String,
    },
    /// Stripe could not be reached, or answered something that is not a session.
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
}

/// A created session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `cs_...`
    pub id: String,
    /// Where to send the buyer.
    pub url: Option<String>,
}

/// What to sell to whom.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    /// The buyer.
    pub account: &'a AccountId,
    /// The token pack or plan.
    pub item: Sellable<'a>,
    /// Where Stripe sends the buyer after paying.
    pub success_url: &'a str,
    /// Where Stripe sends the buyer who gives up.
    pub cancel_url: &'a str,
    /// Sent as the `Idempotency-Key` header.
    pub idempotency_key: &'a str,
}

/// A Stripe API client.
#[derive(Clone)]
pub struct Checkout {
    client: Client,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout").finish_non_exhaustive()
    }
}

impl Checkout {
    /// A client with `secret_key`, calling `api_base` instead of Stripe's API when given.
    pub fn new(secret_key: &str, api_base: Option<&str>) -> Result<Self, CheckoutError> {
        let mut builder = ClientBuilder::new(secret_key).timeout(TIMEOUT);
        if let Some(base) = api_base {
            // The client appends `v1/...` to the base as it is: it must end in a slash.
            builder = builder.url(format!("{}/", base.trim_end_matches('/')));
        }
        let client = builder
            .build()
            .map_err(|e| CheckoutError::Config(e.to_string()))?;
        Ok(Self { client })
    }

    /// Create the Checkout Session for `request`.
    pub async fn create(&self, request: &CheckoutRequest<'_>) -> Result<Session, CheckoutError> {
        let account = request.account.as_str().to_owned();
        let metadata = |item: &str| {
            HashMap::from([
                ("account".to_owned(), account.clone()),
                ("item".to_owned(), item.to_owned()),
            ])
        };
        let session = CreateCheckoutSession::new()
            .client_reference_id(account.clone())
            .success_url(request.success_url)
            .cancel_url(request.cancel_url);
        let session = match request.item {
            Sellable::Pack(pack) => session
                .mode(CheckoutSessionMode::Payment)
                .metadata(metadata(&pack.id))
                .line_items(vec![line_item(&pack.price, &pack.name, false)]),
            Sellable::Plan(plan) => session
                .mode(CheckoutSessionMode::Subscription)
                .metadata(metadata(&plan.id))
                .subscription_data(CreateCheckoutSessionSubscriptionData {
                    metadata: Some(metadata(&plan.id)),
                    ..Default::default()
                })
                .line_items(vec![line_item(&plan.price, &plan.name, true)]),
        };
        let key = IdempotencyKey::new(request.idempotency_key).map_err(|_| CheckoutError::Key)?;
        let created = session
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(|e| match e {
                StripeError::Stripe(errors, status) => CheckoutError::Refused {
                    status,
                    message: errors
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("Stripe answered {status}")),
                },
                other => CheckoutError::Unreachable(other.to_string()),
            })?;
        Ok(Session {
            id: created.id.to_string(),
            url: created.url,
        })
    }
}

/// One of the item, at its catalogue price: a Stripe Price by id, or an amount with the
/// item's name (billed monthly for a plan).
fn line_item(price: &Price, name: &str, recurring: bool) -> CreateCheckoutSessionLineItems {
    let mut line = CreateCheckoutSessionLineItems {
        quantity: Some(1),
        ..Default::default()
    };
    match price {
        Price::Stripe { price_id } => line.price = Some(price_id.clone()),
        Price::Amount { price, currency } => {
            let currency =
                stripe_types::Currency::from_str(currency).unwrap_or(stripe_types::Currency::USD);
            let mut data = CreateCheckoutSessionLineItemsPriceData::new(currency);
            data.unit_amount = Some(price.0);
            data.product_data = Some(ProductData::new(name));
            if recurring {
                data.recurring = Some(CreateCheckoutSessionLineItemsPriceDataRecurring::new(
                    CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Month,
                ));
            }
            line.price_data = Some(data);
        }
    }
    line
}
