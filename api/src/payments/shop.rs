//! `/api/v1/shop`: the items tokens buy (any key), and purchases (operators, admins and
//! agents), each an internal `shop_purchase` mission whose idempotency key is
//! `shop:<the request's key>`, so a repeated request finds the first purchase.

use super::account_param;
use super::accounts::key_problem;
use crate::auth::{AnyRole, Signaller};
use crate::error::{ApiError, FieldError};
use crate::extract::Json;
use crate::openapi::{JsonBodyProblems, ProblemDoc};
use crate::views::{PurchaseStarted, ShopItemView, ShopList};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hypercode_engine::{Submission, MAX_IDEMPOTENCY_KEY_CHARS};
use hypercode_payments::{ShopOrder, SHOP_PURCHASE_WORKFLOW};
use serde::Deserialize;

/// The mission's key is the request's behind this prefix.
const KEY_PREFIX: &str = "shop:";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/shop", get(list))
        .route("/api/v1/shop/purchases", post(purchase))
}

#[utoipa::path(
    get,
    path = "/api/v1/shop",
    tag = "payments",
    responses((status = 200, description = "The shop's items, in catalogue order", body = ShopList)),
)]
/// `GET /api/v1/shop`.
async fn list(_: AnyRole, State(state): State<AppState>) -> axum::Json<ShopList> {
    let items = state
        .payments
        .payments
        .catalog
        .shop_items
        .iter()
        .map(|item| ShopItemView {
            id: item.id.clone(),
            name: item.name.clone(),
            cost: item.cost.get(),
        })
        .collect();
    axum::Json(ShopList { items })
}

/// A purchase.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseBody {
    /// The buyer's account.
    account: String,
    /// The shop item's id.
    item: String,
    /// The same key again answers with the first purchase's mission (at most 250 characters).
    idempotency_key: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/shop/purchases",
    tag = "payments",
    request_body = PurchaseBody,
    responses(
        (status = 201, description = "The `shop_purchase` mission was started; it fails with the code `insufficient_tokens` when the balance is too small", body = PurchaseStarted),
        (status = 200, description = "The idempotency key was used before: that purchase's mission", body = PurchaseStarted),
        JsonBodyProblems,
        (status = 422, description = "An unknown item (`/item`), an invalid account or key, or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/shop/purchases`.
async fn purchase(
    Signaller(principal): Signaller,
    State(state): State<AppState>,
    Json(body): Json<PurchaseBody>,
) -> Result<(StatusCode, axum::Json<PurchaseStarted>), ApiError> {
    let mut problems = Vec::new();
    let account = account_param(&body.account)
        .map_err(|e| problems.push(FieldError::new("/account", e.to_string())));
    if state
        .payments
        .payments
        .catalog
        .shop_item(&body.item)
        .is_none()
    {
        problems.push(FieldError::new(
            "/item",
            format!("no shop item has the id `{}`", body.item),
        ));
    }
    problems.extend(key_problem(
        &body.idempotency_key,
        MAX_IDEMPOTENCY_KEY_CHARS - KEY_PREFIX.len(),
    ));
    let (Ok(account), true) = (account, problems.is_empty()) else {
        return Err(ApiError::InvalidBody(problems));
    };
    let order = ShopOrder {
        account,
        item: body.item,
        idempotency_key: body.idempotency_key,
    };
    let started = state
        .engine
        .start(Submission {
            workflow: SHOP_PURCHASE_WORKFLOW.to_owned(),
            input: serde_json::to_value(&order).map_err(ApiError::internal)?,
            idempotency_key: Some(format!("{KEY_PREFIX}{}", order.idempotency_key)),
            concurrency_key: None,
        })
        .await?;
    if started.created {
        tracing::info!(account = %order.account, item = %order.item, mission = %started.mission.id, by = %principal.name, "shop purchase started");
    }
    Ok((
        crate::created_or_ok(started.created),
        axum::Json(PurchaseStarted {
            id: started.mission.id,
        }),
    ))
}
