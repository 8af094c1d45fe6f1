//! `/api/v1/accounts/{account}`: an account's balance, ledger, subscriptions and entitlements
//! (viewers and up), and direct awards and spends of tokens (admins and agents), idempotent by
//! the request's key.

use super::account_param;
use crate::auth::{Reader, Treasurer};
use crate::cursor::trim_page;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Query};
use crate::missions::limit_param;
use crate::openapi::{JsonBodyProblems, ParameterProblems, ProblemDoc};
use crate::views::{AccountView, LedgerEntryView, TokensPosted};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hypercode_engine::MAX_IDEMPOTENCY_KEY_CHARS;
use hypercode_payments::{AccountId, EntryKind, NewEntry, Posted, Tokens, RESERVED_KEY_PREFIXES};
use serde::Deserialize;

/// Entries per page by default, and at most.
const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 500;

/// The longest `reason`, in characters.
const MAX_REASON_CHARS: usize = 500;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/accounts/{account}", get(show))
        .route("/api/v1/accounts/{account}/tokens", post(post_tokens))
}

/// `limit` and `cursor` of the ledger page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageParams {
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{account}",
    tag = "payments",
    params(
        ("account" = String, Path, pattern = "^[A-Za-z0-9_.@-]{1,200}$", description = "The account"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Ledger entries per page (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The account; one never used has a zero balance and nothing else", body = AccountView),
        ParameterProblems,
    ),
)]
/// `GET /api/v1/accounts/{account}`.
async fn show(
    _: Reader,
    State(state): State<AppState>,
    Path(account): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<AccountView>, ApiError> {
    let account = account_param(&account)?;
    Ok(axum::Json(account_page(&state, &account, params).await?))
}

/// The account's view with one page of its ledger (the API and the dashboard read it here).
pub(crate) async fn account_page(
    state: &AppState,
    account: &AccountId,
    params: PageParams,
) -> Result<AccountView, ApiError> {
    let limit = limit_param(params.limit, PAGE_DEFAULT, PAGE_MAX)?;
    let before = match params.cursor.filter(|c| !c.is_empty()) {
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            ApiError::InvalidParameter("`cursor` is not a cursor this API gave out".to_owned())
        })?),
        None => None,
    };
    let ledger = &state.payments.payments.ledger;
    let totals = ledger.totals(account).await?;
    let mut entries = ledger.entries(account, before, limit + 1).await?;
    let next_cursor = trim_page(&mut entries, limit, |e| e.id.to_string());
    Ok(AccountView {
        account: account.to_string(),
        balance: totals.balance.get(),
        arrears: totals.arrears.get(),
        entries: entries.into_iter().map(LedgerEntryView::from).collect(),
        next_cursor,
        subscriptions: ledger
            .subscriptions(account)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
        entitlements: ledger
            .entitlements(account)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    })
}

/// An award (positive) or a spend (negative).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokensBody {
    /// Positive: tokens awarded; negative: tokens spent. Never zero.
    amount: i64,
    /// Why, in words (at most 500 characters).
    reason: String,
    /// The same key again answers as the first time and writes nothing (at most 255
    /// characters, not beginning with `stripe:` or `shop:`).
    idempotency_key: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/accounts/{account}/tokens",
    tag = "payments",
    params(("account" = String, Path, pattern = "^[A-Za-z0-9_.@-]{1,200}$", description = "The account (created on first use)")),
    request_body = TokensBody,
    responses(
        (status = 201, description = "The entry was written", body = TokensPosted),
        (status = 200, description = "The idempotency key was used before for this same entry: the first answer, nothing written", body = TokensPosted),
        (status = 409, description = "A spend larger than the balance (type `.../insufficient-tokens`, nothing written), or the key was used for a different entry", content_type = "application/problem+json", body = ProblemDoc),
        JsonBodyProblems,
        (status = 422, description = "A zero or non-integer amount, an empty key or reason, a key beginning with `stripe:` or `shop:` (the product's own), or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
        ParameterProblems,
    ),
)]
/// `POST /api/v1/accounts/{account}/tokens`.
async fn post_tokens(
    Treasurer(principal): Treasurer,
    State(state): State<AppState>,
    Path(account): Path<String>,
    Json(body): Json<TokensBody>,
) -> Result<(StatusCode, axum::Json<TokensPosted>), ApiError> {
    let account = account_param(&account)?;
    let mut problems = Vec::new();
    if body.amount == 0 {
        problems.push(FieldError::new("/amount", "must not be zero"));
    }
    if body.reason.trim().is_empty() || body.reason.chars().count() > MAX_REASON_CHARS {
        problems.push(FieldError::new(
            "/reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    problems.extend(key_problem(
        &body.idempotency_key,
        MAX_IDEMPOTENCY_KEY_CHARS,
    ));
    if let Some(prefix) = RESERVED_KEY_PREFIXES
        .iter()
        .find(|p| body.idempotency_key.starts_with(**p))
    {
        problems.push(FieldError::new(
            "/idempotency_key",
            format!("must not begin with `{prefix}`: the webhooks and the shop write those keys"),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::InvalidBody(problems));
    }
    let entry = NewEntry {
        account: account.clone(),
        amount: Tokens(body.amount),
        kind: if body.amount > 0 {
            EntryKind::Award
        } else {
            EntryKind::Spend
        },
        reason: body.reason,
        reference: None,
        idempotency_key: body.idempotency_key,
    };
    let posted = state.payments.payments.ledger.post(&entry).await?;
    let status = match &posted {
        Posted::New(entry) => {
            tracing::info!(%account, amount = entry.amount.get(), by = %principal.name, "tokens posted");
            StatusCode::CREATED
        }
        Posted::Replayed(_) => StatusCode::OK,
    };
    let entry = posted.entry().clone();
    Ok((
        status,
        axum::Json(TokensPosted {
            account: account.to_string(),
            balance: entry.balance_after.get(),
            entry: entry.into(),
        }),
    ))
}

/// What is wrong with an idempotency key from a body (at most `max` characters), if anything.
pub(super) fn key_problem(key: &str, max: usize) -> Option<FieldError> {
    if key.trim().is_empty() || key.chars().count() > max || key.contains('\0') {
        Some(FieldError::new(
            "/idempotency_key",
            format!("must be 1 to {max} characters, without NUL"),
        ))
    } else {
        None
    }
}
