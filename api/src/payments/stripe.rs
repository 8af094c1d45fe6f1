//! `/api/stripe/checkout` and `/api/stripe/webhook`.
//!
//! Checkout prices come from the catalogue, never from the request. The webhook trusts nothing
//! but Stripe's signature (see `hypercode_payments::signature`): an unverified delivery is
//! refused with 400 and nothing is stored; a verified one is stored by its event id, answered
//! 200 at once, and applied by an internal `stripe_event` mission with the idempotency key
//! `stripe:<event id>`, so a redelivery finds the same mission and nothing is applied twice.
//! Every delivery starts (or finds) the mission, so one whose earlier delivery was stored but
//! not yet started (the process died in between) is started by Stripe's retry.

use super::account_param;
use crate::auth::Operator;
use crate::error::{ApiError, FieldError};
use crate::extract::Json;
use crate::openapi::{JsonBodyProblems, ProblemDoc};
use crate::views::{CheckoutSessionView, WebhookReceived};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hypercode_engine::Submission;
use hypercode_payments::checkout::{CheckoutError, CheckoutRequest};
use hypercode_payments::{signature, Event, StripeEventOrder, STRIPE_EVENT_WORKFLOW};
use serde::Deserialize;

/// The largest webhook body accepted (Stripe's events are far smaller).
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// What checkout answers without `STRIPE_SECRET_KEY`.
const NOT_CONFIGURED: &str = "payments are not configured";

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/stripe/checkout", post(checkout))
}

pub(super) fn webhook_routes() -> Router<AppState> {
    Router::new().route("/api/stripe/webhook", post(webhook))
}

/// What to buy, for whom.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutBody {
    /// The buyer's account (`[A-Za-z0-9_.@-]{1,200}`).
    account: String,
    /// A token pack's or a plan's id from the catalogue.
    item: String,
    /// Where Stripe sends the buyer after paying.
    success_url: String,
    /// Where Stripe sends a buyer who gives up.
    cancel_url: String,
}

fn http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[utoipa::path(
    post,
    path = "/api/stripe/checkout",
    tag = "payments",
    params(("Idempotency-Key" = Option<String>, Header, description = "Sent to Stripe as the session's `Idempotency-Key` (a fresh one when absent)")),
    request_body = CheckoutBody,
    responses(
        (status = 201, description = "The Checkout Session was created: `mode=payment` for a token pack, `mode=subscription` for a plan", body = CheckoutSessionView),
        JsonBodyProblems,
        (status = 422, description = "An unknown item (`/item`), an invalid account (`/account`) or URL, or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
        (status = 502, description = "Stripe refused the request or could not be reached; the detail is Stripe's message", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/stripe/checkout`.
async fn checkout(
    Operator(principal): Operator,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CheckoutBody>,
) -> Result<(StatusCode, axum::Json<CheckoutSessionView>), ApiError> {
    let Some(client) = state.payments.checkout.as_ref() else {
        return Err(ApiError::NotConfigured(NOT_CONFIGURED));
    };
    let catalog = &state.payments.payments.catalog;
    let mut problems = Vec::new();
    let account = account_param(&body.account).map_err(|e| {
        problems.push(FieldError::new("/account", e.to_string()));
    });
    let item = catalog.sellable(&body.item);
    if item.is_none() {
        problems.push(FieldError::new(
            "/item",
            format!("no token pack or plan has the id `{}`", body.item),
        ));
    }
    for (pointer, url) in [
        ("/success_url", &body.success_url),
        ("/cancel_url", &body.cancel_url),
    ] {
        if !http_url(url) {
            problems.push(FieldError::new(pointer, "must be an http or https URL"));
        }
    }
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => key.to_owned(),
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "the `Idempotency-Key` header must be 1 to 255 visible ASCII characters".to_owned(),
            ))
        }
        None => format!("checkout:{}", uuid::Uuid::new_v4()),
    };
    let (Ok(account), Some(item), true) = (account, item, problems.is_empty()) else {
        return Err(ApiError::InvalidBody(problems));
    };
    let request = CheckoutRequest {
        account: &account,
        item,
        success_url: &body.success_url,
        cancel_url: &body.cancel_url,
        idempotency_key: &key,
    };
    let session = client.create(&request).await.map_err(|e| match e {
        CheckoutError::Refused { message, .. } => ApiError::Stripe(message),
        CheckoutError::Unreachable(message) => ApiError::Stripe(message),
        CheckoutError::Key | CheckoutError::Config(_) => ApiError::internal(e),
    })?;
    tracing::info!(%account, item = %body.item, session = %session.id, by = %principal.name, "checkout session created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CheckoutSessionView {
            id: session.id,
            url: session.url,
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/stripe/webhook",
    tag = "payments",
    security(()),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">[,v1=...]`")),
    request_body(content = Object, description = "A Stripe event, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "Verified and stored (or stored before); a `stripe_event` mission applies it", body = WebhookReceived),
        (status = 400, description = "The signature is missing, malformed, wrong or older than 300 s, or the body is not an event; nothing was stored", content_type = "application/problem+json", body = ProblemDoc),
        (status = 413, description = "The body is over 1 MiB", content_type = "application/problem+json", body = ProblemDoc),
        (status = 503, description = "No webhook secret is configured (`STRIPE_WEBHOOK_SECRET`), or the database is unavailable", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/stripe/webhook`.
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<WebhookReceived>, ApiError> {
    let Some(secret) = state.payments.webhook_secret.as_deref() else {
        return Err(ApiError::NotConfigured(
            "the Stripe webhook is not configured",
        ));
    };
    if body.len() > WEBHOOK_BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge(format!(
            "a webhook body is at most {WEBHOOK_BODY_LIMIT} bytes"
        )));
    }
    let header = headers
        .get("stripe-signature")
        .map(|v| {
            v.to_str()
                .map_err(|_| signature::SignatureError::Malformed("not ASCII"))
        })
        .transpose()
        .map_err(|e| ApiError::InvalidSignature(e.to_string()))?;
    signature::verify(header, &body, secret, chrono::Utc::now().timestamp())
        .map_err(|e| ApiError::InvalidSignature(e.to_string()))?;
    let event = Event::parse(&body)?;
    let new = state.payments.payments.events.record(&event).await?;
    let order = StripeEventOrder {
        event_id: event.id.clone(),
    };
    let started = state
        .engine
        .start(Submission {
            workflow: STRIPE_EVENT_WORKFLOW.to_owned(),
            input: serde_json::to_value(&order).map_err(ApiError::internal)?,
            idempotency_key: Some(format!("stripe:{}", event.id)),
            concurrency_key: None,
        })
        .await?;
    tracing::info!(event = %event.id, kind = %event.kind, new, mission = %started.mission.id, "stripe event received");
    Ok(axum::Json(WebhookReceived {
        id: event.id,
        new,
        mission: started.mission.id,
    }))
}
