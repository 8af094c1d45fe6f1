//! Stripe events: stored as received (by id, once) and applied to the ledger, payments,
//! subscriptions and entitlements, each in one transaction that also marks the event applied,
//! so applying an event twice changes nothing the second time.
//!
//! Only the fields needed are read from an event (never a typed parse of the whole object),
//! so an event of a newer API version, or of a type not handled, is still stored and marked
//! applied with an `ignored: ...` outcome. Events about one subscription (or invoice) that
//! arrive out of order converge to the newest by Stripe's `created`, not the last delivered.

use crate::catalog::{Catalog, Sellable};
use crate::ledger::{ensure_account, insert_entry, EntryKind, NewEntry};
use crate::money::{AccountId, Tokens};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Why an event could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The verified body is not a Stripe event (no `id`, `type` or `created`).
    #[error("the body is not a Stripe event: {0}")]
    NotAnEvent(&'static str),
    /// No event with this id was stored.
    #[error("no Stripe event `{0}` is stored")]
    Unknown(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The envelope of a verified event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_...`
    pub id: String,
    /// `checkout.session.completed`, ...
    pub kind: String,
    /// The API version it was rendered with.
    pub api_version: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// The whole body.
    pub payload: Value,
}

impl Event {
    /// Read the envelope's fields from a verified body.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let payload: Value =
            serde_json::from_slice(body).map_err(|_| EventError::NotAnEvent("it is not JSON"))?;
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .filter(|id| !id.is_empty() && id.len() <= 255)
            .ok_or(EventError::NotAnEvent("no `id` string"))?;
        let kind = text("type").ok_or(EventError::NotAnEvent("no `type` string"))?;
        let created = payload
            .get("created")
            .and_then(Value::as_i64)
            .ok_or(EventError::NotAnEvent("no `created` integer"))?;
        Ok(Self {
            id,
            kind,
            api_version: text("api_version"),
            created,
            payload,
        })
    }

    /// `data.object`.
    fn object(&self) -> &Value {
        &self.payload["data"]["object"]
    }
}

/// The stored events and their effects.
#[derive(Debug, Clone)]
pub struct StripeEvents {
    pool: PgPool,
}

/// A string field of `object`, or the `id` of an expanded object in its place.
fn id_of(object: &Value, key: &str) -> Option<String> {
    match &object[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn text(object: &Value, pointer: &str) -> Option<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl StripeEvents {
    /// The events in the database behind `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Store `event` unless one with its id is stored; whether it was new.
    pub async fn record(&self, event: &Event) -> Result<bool, EventError> {
        let inserted = sqlx::query!(
            r#"insert into stripe_events (id, type, api_version, created, payload)
               values ($1, $2, $3, $4, $5)
               on conflict (id) do nothing"#,
            event.id,
            event.kind,
            event.api_version,
            event.created,
            event.payload
        )
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Apply the stored event `id` with the prices and items of `catalog`, in one
    /// transaction; an event applied before is not applied again. Returns the outcome, in
    /// words.
    pub async fn apply(&self, id: &str, catalog: &Catalog) -> Result<String, EventError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query!(
            r#"select type as kind, api_version, created, payload, outcome
               from stripe_events where id = $1 for update"#,
            id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| EventError::Unknown(id.to_owned()))?;
        if let Some(outcome) = row.outcome {
            tx.commit().await?;
            return Ok(outcome);
        }
        let event = Event {
            id: id.to_owned(),
            kind: row.kind,
            api_version: row.api_version,
            created: row.created,
            payload: row.payload,
        };
        let outcome = match event.kind.as_str() {
            "checkout.session.completed" => checkout_completed(&mut tx, &event, catalog).await?,
            "customer.subscription.updated" | "customer.subscription.deleted" => {
                subscription_changed(&mut tx, &event).await?
            }
            "invoice.paid" | "invoice.payment_failed" => invoice(&mut tx, &event).await?,
            "charge.refunded" => charge_refunded(&mut tx, &event).await?,
            other => format!("ignored: events of type `{other}` are not handled"),
        };
        sqlx::query!(
            "update stripe_events set applied_at = now(), outcome = $2 where id = $1",
            id,
            outcome
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// The account an object names: `metadata.account`, else `client_reference_id`.
fn account_of(object: &Value) -> Option<AccountId> {
    text(object, "/metadata/account")
        .or_else(|| text(object, "/client_reference_id"))
        .and_then(|raw| AccountId::parse(&raw))
}

/// A Checkout Session completed: record the payment; a token pack credits its tokens, a plan
/// starts its subscription and enrols in its course.
async fn checkout_completed(
    conn: &mut PgConnection,
    event: &Event,
    catalog: &Catalog,
) -> Result<String, sqlx::Error> {
    let session = event.object();
    let Some(session_id) = id_of(session, "id") else {
        return Ok("ignored: the session has no id".to_owned());
    };
    let account = account_of(session);
    if let Some(account) = &account {
        ensure_account(conn, account).await?;
    }
    let item = text(session, "/metadata/item");
    let payment_intent = id_of(session, "payment_intent");
    let subscription = id_of(session, "subscription");
    let status = text(session, "/payment_status").unwrap_or_else(|| "paid".to_owned());
    let recorded = sqlx::query_scalar!(
        r#"insert into payments (stripe_id, object, account, item, payment_intent, subscription,
                                 amount, currency, status, created)
           values ($1, 'checkout_session', $2, $3, $4, $5, $6, $7, $8, $9)
           on conflict (stripe_id) do nothing
           returning id"#,
        session_id,
        account.as_ref().map(AccountId::as_str),
        item,
        payment_intent,
        subscription,
        session["amount_total"].as_i64().unwrap_or(0),
        text(session, "/currency"),
        status,
        event.created
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(payment) = recorded else {
        return Ok(format!(
            "ignored: session {session_id} was already recorded"
        ));
    };
    let Some(account) = account else {
        return Ok(format!(
            "recorded session {session_id}; it names no valid account"
        ));
    };
    let sellable = item.as_deref().and_then(|item| catalog.sellable(item));
    match sellable {
        Some(Sellable::Pack(pack)) if status != "unpaid" => {
            let entry = NewEntry {
                account: account.clone(),
                amount: pack.tokens,
                kind: EntryKind::Purchase,
                reason: format!("bought {}", pack.name),
                reference: Some(session_id.clone()),
                idempotency_key: format!("stripe:checkout:{session_id}"),
            };
            insert_entry(conn, &entry).await?;
            sqlx::query!(
                "update payments set tokens = $2 where id = $1",
                payment,
                pack.tokens.get()
            )
            .execute(&mut *conn)
            .await?;
            let credited = format!(
                "credited {} tokens to {account} for session {session_id}",
                pack.tokens
            );
            match &payment_intent {
                Some(payment_intent) => {
                    let refunds = earlier_refunds(conn, payment_intent, &event.id).await?;
                    Ok(refunds.into_iter().fold(credited, |outcome, refund| {
                        format!("{outcome}; then the stored {refund}")
                    }))
                }
                None => Ok(credited),
            }
        }
        Some(Sellable::Pack(_)) => Ok(format!(
            "recorded session {session_id}; it is not paid yet, so nothing was credited"
        )),
        Some(Sellable::Plan(plan)) => {
            let Some(subscription) = subscription else {
                return Ok(format!(
                    "recorded session {session_id}; it has no subscription"
                ));
            };
            upsert_subscription(
                conn,
                &subscription,
                Some(&account),
                Some((&plan.id, &plan.course)),
                "active",
                event.created,
            )
            .await?;
            sqlx::query!(
                r#"insert into entitlements (account, kind, item, source)
                   values ($1, 'course', $2, $3)
                   on conflict (kind, source, item) do nothing"#,
                account.as_str(),
                plan.course,
                subscription
            )
            .execute(&mut *conn)
            .await?;
            Ok(format!(
                "subscribed {account} to {} ({subscription}); enrolled in course {}",
                plan.id, plan.course
            ))
        }
        None => Ok(format!(
            "recorded session {session_id}; its item {item:?} is not in the catalogue"
        )),
    }
}

/// Apply again the stored `charge.refunded` events of `payment_intent` (other than `event_id`),
/// oldest first, now that its purchase is recorded. Stripe does not promise order: a refund
/// can arrive before the completion of the session it refunds, when it found no purchase and
/// took nothing back. Applying a refund is idempotent (it takes back what the refunded share
/// owes beyond what was reversed already), so one that did find the purchase adds nothing.
/// Returns each one's outcome.
async fn earlier_refunds(
    conn: &mut PgConnection,
    payment_intent: &str,
    event_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let stored = sqlx::query!(
        r#"select id, api_version, created, payload from stripe_events
           where type = 'charge.refunded' and id <> $2
             and coalesce(payload #>> '{data,object,payment_intent,id}',
                          payload #>> '{data,object,payment_intent}') = $1
           order by created, id"#,
        payment_intent,
        event_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut outcomes = Vec::with_capacity(stored.len());
    for row in stored {
        let refund = Event {
            id: row.id,
            kind: "charge.refunded".to_owned(),
            api_version: row.api_version,
            created: row.created,
            payload: row.payload,
        };
        outcomes.push(charge_refunded(conn, &refund).await?);
    }
    Ok(outcomes)
}

/// Set a subscription's status as of `created`, creating its row on first sight. An older
/// event than the one that set the current status changes nothing but missing facts (account,
/// plan); at the same second a cancellation wins, since nothing follows it.
async fn upsert_subscription(
    conn: &mut PgConnection,
    id: &str,
    account: Option<&AccountId>,
    plan: Option<(&str, &str)>,
    status: &str,
    created: i64,
) -> Result<(), sqlx::Error> {
    if let Some(account) = account {
        ensure_account(conn, account).await?;
    }
    sqlx::query!(
        r#"insert into subscriptions (id, account, plan, course, status, status_at)
           values ($1, $2, $3, $4, $5, $6)
           on conflict (id) do update set
               account = coalesce(subscriptions.account, excluded.account),
               plan = coalesce(subscriptions.plan, excluded.plan),
               course = coalesce(subscriptions.course, excluded.course),
               status = case when excluded.status_at > subscriptions.status_at
                               or (excluded.status_at = subscriptions.status_at
                                   and excluded.status = 'canceled')
                             then excluded.status else subscriptions.status end,
               status_at = greatest(subscriptions.status_at, excluded.status_at),
               updated_at = now()"#,
        id,
        account.map(AccountId::as_str),
        plan.map(|p| p.0),
        plan.map(|p| p.1),
        status,
        created
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `customer.subscription.updated` / `.deleted`: the subscription's status, in Stripe's words.
async fn subscription_changed(
    conn: &mut PgConnection,
    event: &Event,
) -> Result<String, sqlx::Error> {
    let object = event.object();
    let Some(id) = id_of(object, "id") else {
        return Ok("ignored: the subscription has no id".to_owned());
    };
    let status = text(object, "/status").unwrap_or_else(|| {
        if event.kind == "customer.subscription.deleted" {
            "canceled".to_owned()
        } else {
            "unknown".to_owned()
        }
    });
    upsert_subscription(
        conn,
        &id,
        account_of(object).as_ref(),
        None,
        &status,
        event.created,
    )
    .await?;
    Ok(format!(
        "subscription {id} is {status} as of {}",
        event.created
    ))
}

/// `invoice.paid` / `invoice.payment_failed`: the payment record and its subscription's status
/// (`active` once paid, `past_due` when a payment failed; a canceled one stays canceled).
async fn invoice(conn: &mut PgConnection, event: &Event) -> Result<String, sqlx::Error> {
    let object = event.object();
    let Some(id) = id_of(object, "id") else {
        return Ok("ignored: the invoice has no id".to_owned());
    };
    let paid = event.kind == "invoice.paid";
    // Where the subscription sits depends on the API version: read both places.
    let subscription = id_of(object, "subscription")
        .or_else(|| text(object, "/parent/subscription_details/subscription"));
    let account = account_of(object).or_else(|| {
        text(object, "/parent/subscription_details/metadata/account")
            .and_then(|raw| AccountId::parse(&raw))
    });
    let account = match (account, &subscription) {
        (Some(account), _) => Some(account),
        (None, Some(sub)) => {
            sqlx::query_scalar!("select account from subscriptions where id = $1", sub)
                .fetch_optional(&mut *conn)
                .await?
                .flatten()
                .and_then(|raw| AccountId::parse(&raw))
        }
        (None, None) => None,
    };
    if let Some(account) = &account {
        ensure_account(conn, account).await?;
    }
    let (status, amount) = if paid {
        ("paid", object["amount_paid"].as_i64().unwrap_or(0))
    } else {
        ("payment_failed", object["amount_due"].as_i64().unwrap_or(0))
    };
    sqlx::query!(
        r#"insert into payments (stripe_id, object, account, subscription, payment_intent,
                                 amount, currency, status, created)
           values ($1, 'invoice', $2, $3, $4, $5, $6, $7, $8)
           on conflict (stripe_id) do update set
               status = case when excluded.created >= payments.created
                             then excluded.status else payments.status end,
               amount = case when excluded.created >= payments.created
                             then excluded.amount else payments.amount end,
               created = greatest(payments.created, excluded.created),
               account = coalesce(payments.account, excluded.account)"#,
        id,
        account.as_ref().map(AccountId::as_str),
        subscription,
        id_of(object, "payment_intent"),
        amount,
        text(object, "/currency"),
        status,
        event.created
    )
    .execute(&mut *conn)
    .await?;
    let Some(subscription) = subscription else {
        return Ok(format!(
            "invoice {id} {status}; it belongs to no subscription"
        ));
    };
    let current = sqlx::query_scalar!(
        "select status from subscriptions where id = $1",
        subscription
    )
    .fetch_optional(&mut *conn)
    .await?;
    if current.as_deref() == Some("canceled") {
        return Ok(format!(
            "invoice {id} {status}; subscription {subscription} stays canceled"
        ));
    }
    let status_now = if paid { "active" } else { "past_due" };
    upsert_subscription(
        conn,
        &subscription,
        account.as_ref(),
        None,
        status_now,
        event.created,
    )
    .await?;
    Ok(format!(
        "invoice {id} {status}; subscription {subscription} is {status_now} as of {}",
        event.created
    ))
}

/// `charge.refunded`: take back the tokens of the purchase the charge paid for (matched by
/// `payment_intent`), in proportion to the amount refunded so far. Tokens already spent are
/// not taken below zero: the balance goes to 0 and the rest becomes the account's arrears.
/// Stripe's `amount_refunded` only grows, so the largest one seen is the newest: an older
/// event delivered later neither takes more nor sets the payment's status back. One that
/// finds no purchase yet is applied again when the purchase is (see [`earlier_refunds`]).
async fn charge_refunded(conn: &mut PgConnection, event: &Event) -> Result<String, sqlx::Error> {
    let charge = event.object();
    let charge_id = id_of(charge, "id").unwrap_or_default();
    let Some(payment_intent) = id_of(charge, "payment_intent") else {
        return Ok(format!("ignored: charge {charge_id} has no payment_intent"));
    };
    let purchase = sqlx::query!(
        r#"select id, stripe_id, account, tokens as "tokens: Tokens",
                  reversed_tokens as "reversed: Tokens"
           from payments
           where payment_intent = $1 and object = 'checkout_session'
           order by id limit 1
           for update"#,
        payment_intent
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(purchase) = purchase else {
        return Ok(format!("ignored: no purchase was paid by {payment_intent}"));
    };
    let amount = charge["amount"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(amount);
    let full = refunded >= amount || charge["refunded"].as_bool() == Some(true);
    let status = if full {
        "refunded"
    } else {
        "partially_refunded"
    };
    let target = if full || amount <= 0 {
        purchase.tokens.get()
    } else {
        // Integer arithmetic only: the share of the tokens the refunded share of the money paid
        // for, rounded down (a later refund of the rest takes the remainder).
        i64::try_from(
            i128::from(purchase.tokens.get()) * i128::from(refunded.max(0)) / i128::from(amount),
        )
        .unwrap_or(purchase.tokens.get())
    };
    let owed = target - purchase.reversed.get();
    sqlx::query!(
        r#"update payments
           set status = case when $3 >= reversed_tokens then $2 else status end,
               reversed_tokens = greatest(reversed_tokens, $3)
           where id = $1"#,
        purchase.id,
        status,
        target
    )
    .execute(&mut *conn)
    .await?;
    let Some(account) = purchase.account.as_deref().and_then(AccountId::parse) else {
        return Ok(format!(
            "recorded the refund of {charge_id}; the purchase has no account"
        ));
    };
    if owed <= 0 {
        return Ok(format!("refund of {charge_id}: nothing more to take back"));
    }
    let balance = sqlx::query_scalar!(
        r#"select balance as "balance: Tokens" from accounts where id = $1 for update"#,
        account.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    let taken = owed.min(balance.get());
    let arrears = owed - taken;
    if taken > 0 {
        let entry = NewEntry {
            account: account.clone(),
            amount: Tokens(-taken),
            kind: EntryKind::Reversal,
            reason: format!("payment refunded (charge {charge_id})"),
            reference: Some(purchase.stripe_id.clone()),
            idempotency_key: format!("stripe:reversal:{}:{target}", purchase.stripe_id),
        };
        insert_entry(conn, &entry).await?;
    }
    if arrears > 0 {
        sqlx::query!(
            "update accounts set arrears = arrears + $2 where id = $1",
            account.as_str(),
            arrears
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(format!(
        "refund of {charge_id}: took back {taken} tokens from {account}, {arrears} more recorded as arrears"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_read_field_by_field() {
        let body = json!({"id": "evt_1", "type": "x.y", "created": 5, "api_version": "2099-01-01.future", "data": {"object": {"odd": [1]}}});
        let event = Event::parse(body.to_string().as_bytes()).expect("an event");
        assert_eq!(
            (event.id.as_str(), event.kind.as_str(), event.created),
            ("evt_1", "x.y", 5)
        );
        for bad in [
            json!({"type": "x", "created": 1}),
            json!({"id": "e", "created": 1}),
            json!({"id": "e", "type": "x"}),
            json!([1]),
        ] {
            assert!(Event::parse(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(Event::parse(b"not json").is_err());
        assert_eq!(
            id_of(&json!({"p": {"id": "pi_1"}}), "p").as_deref(),
            Some("pi_1")
        );
        assert_eq!(id_of(&json!({"p": "pi_2"}), "p").as_deref(), Some("pi_2"));
        assert_eq!(id_of(&json!({"p": null}), "p"), None);
    }
}
