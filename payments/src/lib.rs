//! HyperCode's token economy: what can be bought, who holds how many tokens, and what Stripe
//! said happened. It owns the payments tables and nothing else; the HTTP routes live in the API
//! crate and the durable missions (`stripe_event`, `shop_purchase`) with the other workflows,
//! both depending on this crate, never the other way round.
//!
//! - [`money`]: the integer newtypes ([`Tokens`], [`MinorUnits`]) and [`AccountId`].
//! - [`catalog`]: the catalogue file (token packs, plans, shop items).
//! - [`checkout`]: Stripe Checkout Sessions through `async-stripe`.
//! - [`ledger`]: accounts and their append-only ledger; the database refuses any overdraft.
//! - [`signature`]: Stripe's webhook signature scheme, verified by hand.
//! - [`stripe`]: verified events, stored by id and applied once each.

pub mod catalog;
pub mod checkout;
pub mod ledger;
pub mod money;
pub mod signature;
pub mod stripe;

pub use catalog::{Catalog, CatalogError, Plan, Price, Sellable, ShopItem, TokenPack};
pub use ledger::{
    Entitlement, Entry, EntryKind, Ledger, LedgerError, NewEntry, Posted, Subscription, Totals,
    RESERVED_KEY_PREFIXES,
};
pub use money::{AccountId, MinorUnits, Tokens, ACCOUNT_RULE};
pub use signature::SignatureError;
pub use stripe::{Event, EventError, StripeEvents};

/// The name of the internal workflow that applies one stored Stripe event.
pub const STRIPE_EVENT_WORKFLOW: &str = "stripe_event";

/// The name of the internal workflow that buys one shop item with tokens.
pub const SHOP_PURCHASE_WORKFLOW: &str = "shop_purchase";

/// What a `stripe_event` mission is started with.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct StripeEventOrder {
    /// The stored event's id (`evt_...`).
    pub event_id: String,
}

/// What a `shop_purchase` mission is started with.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ShopOrder {
    /// Who buys.
    pub account: AccountId,
    /// The shop item's id.
    pub item: String,
    /// The purchase's idempotency key, from the request.
    pub idempotency_key: String,
}

/// The catalogue, the ledger and the stored Stripe events together: what the payments
/// workflows and routes are handed.
#[derive(Debug, Clone)]
pub struct Payments {
    /// Loaded at startup.
    pub catalog: std::sync::Arc<Catalog>,
    /// Accounts and tokens.
    pub ledger: Ledger,
    /// Stripe events.
    pub events: StripeEvents,
}

impl Payments {
    /// Everything on `pool`, selling what `catalog` lists.
    pub fn new(pool: sqlx::PgPool, catalog: Catalog) -> Self {
        Self {
            catalog: std::sync::Arc::new(catalog),
            ledger: Ledger::new(pool.clone()),
            events: StripeEvents::new(pool),
        }
    }
}

#[cfg(test)]
mod tests {
    /// async-stripe's 1.0 release candidates need Rust 1.89: the crate says so, so that an
    /// older toolchain is refused for that reason instead of failing inside a dependency.
    #[test]
    fn the_crate_declares_the_rust_version_async_stripe_needs() {
        let declared = env!("CARGO_PKG_RUST_VERSION");
        let mut parts = declared.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        assert!((major, minor) >= (1, 89), "rust-version is `{declared}`");
    }
}
