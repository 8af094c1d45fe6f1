//! Accounts and their append-only token ledger in PostgreSQL.
//!
//! Every balance change is one row of `ledger_entries`; the database moves the account's
//! balance in the same statement and refuses any that would take it below zero (see the
//! migration), so an overdraft cannot be written, whoever writes and however many writers race.
//! An entry's idempotency key is unique: posting the same key again returns the entry it
//! wrote the first time, and writes nothing.

use crate::money::{AccountId, Tokens};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// The name of the constraint that keeps balances non-negative.
const NON_NEGATIVE: &str = "accounts_balance_non_negative";

/// The idempotency keys the product writes itself begin with one of these (`stripe:checkout:`,
/// `stripe:reversal:`, `shop:<purchase>:spend`, ...). A client's key may not, or it could take
/// a key a webhook or a purchase will need and so silently keep that credit, debit or refund
/// from being written.
pub const RESERVED_KEY_PREFIXES: [&str; 2] = ["stripe:", "shop:"];

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The debit is larger than the balance; nothing was written.
    #[error("the account has {balance} tokens; this needs {needed}")]
    Insufficient {
        /// The balance when the debit was refused.
        balance: Tokens,
        /// The debit's size.
        needed: Tokens,
    },
    /// The balance would pass the largest number of tokens an account can hold
    /// (`i64::MAX`); nothing was written.
    #[error("the balance would exceed {} tokens", i64::MAX)]
    Overflow,
    /// The idempotency key already belongs to a different entry (another account, amount or
    /// kind).
    #[error("the idempotency key `{0}` was already used for a different entry")]
    KeyReused(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "ledger_kind", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Tokens given (positive).
    Award,
    /// Tokens used (negative).
    Spend,
    /// Tokens bought with a token pack.
    Purchase,
    /// Tokens given back for a shop purchase that could not be fulfilled.
    Refund,
    /// A purchase's tokens taken back because its payment was refunded.
    Reversal,
    /// Tokens paid for a shop item.
    Shop,
}

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its position in the ledger (increasing).
    pub id: i64,
    /// The account.
    pub account: String,
    /// Positive: a credit; negative: a debit.
    pub amount: Tokens,
    /// What it was.
    pub kind: EntryKind,
    /// Why, in words.
    pub reason: String,
    /// What it refers to (a Checkout Session, a purchase).
    pub reference: Option<String>,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// The account's balance right after it.
    pub balance_after: Tokens,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The account (created on first use).
    pub account: AccountId,
    /// Non-zero.
    pub amount: Tokens,
    /// What it is.
    pub kind: EntryKind,
    /// Why.
    pub reason: String,
    /// What it refers to.
    pub reference: Option<String>,
    /// Unique over the whole ledger.
    pub idempotency_key: String,
}

/// What [`Ledger::post`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The entry was written now.
    New(Entry),
    /// The key had been used for this same entry before: that entry, nothing written.
    Replayed(Entry),
}

impl Posted {
    /// The entry, new or replayed.
    pub fn entry(&self) -> &Entry {
        match self {
            Self::New(entry) | Self::Replayed(entry) => entry,
        }
    }
}

/// An account's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Tokens it holds (never negative).
    pub balance: Tokens,
    /// Tokens refunds took back after they had been spent.
    pub arrears: Tokens,
}

/// A subscription as the webhooks left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Stripe's id (`sub_...`).
    pub id: String,
    /// The catalogue plan.
    pub plan: Option<String>,
    /// The course it enrols in.
    pub course: Option<String>,
    /// In Stripe's words: `active`, `past_due`, `canceled`, ...
    pub status: String,
    /// When it last changed here.
    pub updated_at: DateTime<Utc>,
}

/// Something an account was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    /// `course` or `shop`.
    pub kind: String,
    /// The course, or the shop item's id.
    pub item: String,
    /// The subscription, or the shop purchase's idempotency key.
    pub source: String,
    /// When.
    pub granted_at: DateTime<Utc>,
}

/// An account as a search lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Its id.
    pub id: String,
    /// Its balance.
    pub balance: Tokens,
    /// Its arrears.
    pub arrears: Tokens,
}

/// The ledger over a pool.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
}

impl Ledger {
    /// The ledger in the database behind `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Write `entry` in one transaction (creating the account on first use), or return the
    /// entry its idempotency key already wrote. A debit larger than the balance writes nothing
    /// and is [`LedgerError::Insufficient`].
    pub async fn post(&self, entry: &NewEntry) -> Result<Posted, LedgerError> {
        let mut tx = self.pool.begin().await?;
        ensure_account(&mut tx, &entry.account).await?;
        match insert_entry(&mut tx, entry).await {
            Ok(Some(written)) => {
                tx.commit().await?;
                Ok(Posted::New(written))
            }
            Ok(None) => {
                let first = entry_by_key(&mut tx, &entry.idempotency_key).await?;
                tx.commit().await?;
                let same = first.account == entry.account.as_str()
                    && first.amount == entry.amount
                    && first.kind == entry.kind;
                if same {
                    Ok(Posted::Replayed(first))
                } else {
                    Err(LedgerError::KeyReused(entry.idempotency_key.clone()))
                }
            }
            Err(e) if is_overdraft(&e) => {
                tx.rollback().await?;
                let balance = self.totals(&entry.account).await?.balance;
                Err(LedgerError::Insufficient {
                    balance,
                    // `i64::MIN` has no positive counterpart.
                    needed: Tokens(entry.amount.get().saturating_neg()),
                })
            }
            Err(e) if is_out_of_range(&e) => {
                tx.rollback().await?;
                Err(LedgerError::Overflow)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The account's balance and arrears (zero for an account never used).
    pub async fn totals(&self, account: &AccountId) -> Result<Totals, LedgerError> {
        let row = sqlx::query!(
            r#"select balance as "balance: Tokens", arrears as "arrears: Tokens"
               from accounts where id = $1"#,
            account.as_str()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(
            Totals {
                balance: Tokens::ZERO,
                arrears: Tokens::ZERO,
            },
            |r| Totals {
                balance: r.balance,
                arrears: r.arrears,
            },
        ))
    }

    /// Up to `limit` entries of the account, newest first, older than entry `before`.
    pub async fn entries(
        &self,
        account: &AccountId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Entry>, LedgerError> {
        Ok(sqlx::query_as!(
            Entry,
            r#"select id, account, amount as "amount: Tokens", kind as "kind: EntryKind",
                      reason, reference, idempotency_key,
                      balance_after as "balance_after: Tokens", at
               from ledger_entries
               where account = $1 and id < coalesce($2, 9223372036854775807)
               order by id desc
               limit $3"#,
            account.as_str(),
            before,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The account's subscriptions, newest change first.
    pub async fn subscriptions(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Subscription>, LedgerError> {
        Ok(sqlx::query_as!(
            Subscription,
            r#"select id, plan, course, status, updated_at from subscriptions
               where account = $1 order by updated_at desc, id"#,
            account.as_str()
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// What the account was granted, newest first. A course counts while its subscription is
    /// `active`, `trialing` or `past_due` (Stripe still retries a past-due payment).
    pub async fn entitlements(&self, account: &AccountId) -> Result<Vec<Entitlement>, LedgerError> {
        Ok(sqlx::query_as!(
            Entitlement,
            r#"select e.kind, e.item, e.source, e.granted_at
               from entitlements e
               left join subscriptions s on e.kind = 'course' and s.id = e.source
               where e.account = $1
                 and (e.kind <> 'course' or s.status in ('active', 'trialing', 'past_due'))
               order by e.id desc"#,
            account.as_str()
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Up to `limit` accounts whose id contains `search` (case-insensitive), by id.
    pub async fn search(&self, search: &str, limit: i64) -> Result<Vec<AccountRow>, LedgerError> {
        let pattern = format!(
            "%{}%",
            search
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        Ok(sqlx::query_as!(
            AccountRow,
            r#"select id, balance as "balance: Tokens", arrears as "arrears: Tokens"
               from accounts where id ilike $1 order by id limit $2"#,
            pattern,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record that `account` was granted shop item `item` by the purchase `source` (once).
    pub async fn grant_shop_item(
        &self,
        account: &AccountId,
        item: &str,
        source: &str,
    ) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await?;
        ensure_account(&mut tx, account).await?;
        sqlx::query!(
            r#"insert into entitlements (account, kind, item, source) values ($1, 'shop', $2, $3)
               on conflict (kind, source, item) do nothing"#,
            account.as_str(),
            item,
            source
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Create the account if it does not exist yet.
pub(crate) async fn ensure_account(
    conn: &mut PgConnection,
    account: &AccountId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into accounts (id) values ($1) on conflict (id) do nothing",
        account.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Insert `entry` unless its key exists (`None` then). An overdraft is the database's check
/// violation (see [`is_overdraft`]), which aborts the caller's transaction.
pub(crate) async fn insert_entry(
    conn: &mut PgConnection,
    entry: &NewEntry,
) -> Result<Option<Entry>, sqlx::Error> {
    sqlx::query_as!(
        Entry,
        r#"insert into ledger_entries (account, amount, kind, reason, reference, idempotency_key)
           values ($1, $2, $3, $4, $5, $6)
           on conflict (idempotency_key) do nothing
           returning id, account, amount as "amount: Tokens", kind as "kind: EntryKind",
                     reason, reference, idempotency_key,
                     balance_after as "balance_after: Tokens", at"#,
        entry.account.as_str(),
        entry.amount.get(),
        entry.kind as EntryKind,
        entry.reason,
        entry.reference,
        entry.idempotency_key
    )
    .fetch_optional(conn)
    .await
}

async fn entry_by_key(conn: &mut PgConnection, key: &str) -> Result<Entry, sqlx::Error> {
    sqlx::query_as!(
        Entry,
        r#"select id, account, amount as "amount: Tokens", kind as "kind: EntryKind",
                  reason, reference, idempotency_key,
                  balance_after as "balance_after: Tokens", at
           from ledger_entries where idempotency_key = $1"#,
        key
    )
    .fetch_one(conn)
    .await
}

/// Whether the database refused a write because a sum left `bigint` (SQLSTATE 22003,
/// `numeric_value_out_of_range`): the trigger's `balance + amount`.
fn is_out_of_range(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("22003"))
}

/// Whether the database refused a write because a balance would go below zero.
fn is_overdraft(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.constraint() == Some(NON_NEGATIVE))
}
