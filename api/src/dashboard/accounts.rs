//! Accounts (`/accounts`): a search box over account ids, and one page per account with its
//! balance, arrears, ledger (newest first), subscriptions and entitlements, read through the
//! same code as `GET /api/v1/accounts/{account}`. The missions that moved its tokens
//! (`stripe_event`, `shop_purchase`) are missions like any other, linked from here.

use super::format::Moment;
use super::session::SignedIn;
use super::{render, Chrome, PageError};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::payments::{account_page, PageParams};
use crate::views::AccountView;
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use hypercode_payments::AccountId;
use serde::Deserialize;

/// How many accounts a search lists.
const SEARCH_LIMIT: i64 = 50;

/// How many ledger entries an account's page shows.
const ENTRIES_SHOWN: &str = "100";

/// `q`: a piece of an account id.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchParams {
    q: Option<String>,
}

/// An account found by a search.
pub(crate) struct Found {
    id: String,
    balance: i64,
    arrears: i64,
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct SearchPage {
    chrome: Chrome,
    q: String,
    found: Vec<Found>,
}

/// One ledger entry as shown.
pub(crate) struct EntryRow {
    amount: i64,
    kind: String,
    reason: String,
    reference: Option<String>,
    balance_after: i64,
    at: Moment,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    q: String,
    v: AccountView,
    entries: Vec<EntryRow>,
}

/// `GET /accounts?q=...`.
pub(crate) async fn search(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let q = params.q.unwrap_or_default().trim().to_owned();
    let found = if q.is_empty() {
        Vec::new()
    } else {
        state
            .payments
            .payments
            .ledger
            .search(&q, SEARCH_LIMIT)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|a| Found {
                id: a.id,
                balance: a.balance.get(),
                arrears: a.arrears.get(),
            })
            .collect()
    };
    render(&SearchPage {
        chrome: Chrome::new(&session, "Accounts", "accounts"),
        q,
        found,
    })
}

/// `GET /accounts/{account}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    let id = AccountId::parse(&account)
        .ok_or_else(|| ApiError::InvalidParameter(format!("`{account}` is not an account id")))?;
    let params = PageParams {
        limit: Some(ENTRIES_SHOWN.to_owned()),
        cursor: None,
    };
    let mut v = account_page(&state, &id, params).await?;
    let now = Utc::now();
    let entries = std::mem::take(&mut v.entries)
        .into_iter()
        .map(|e| EntryRow {
            amount: e.amount,
            kind: serde_json::to_value(e.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default(),
            reason: e.reason,
            reference: e.reference,
            balance_after: e.balance_after,
            at: Moment::new(e.at, now),
        })
        .collect();
    render(&AccountPage {
        chrome: Chrome::new(&session, format!("Account {id}"), "accounts"),
        q: id.to_string(),
        v,
        entries,
    })
}
