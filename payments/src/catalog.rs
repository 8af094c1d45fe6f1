//! The catalogue: what can be bought with money (token packs, plans) and with tokens (shop
//! items), read once at startup from a TOML file (`HYPERCODE_CATALOG`, default `catalog.toml`).
//! Prices come from here and never from a request. Keys this module does not know are allowed,
//! so a catalogue can carry notes for other tools.

use crate::money::{MinorUnits, Tokens};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Why a catalogue was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("reading the catalogue {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the catalogue's layout.
    #[error("the catalogue {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said, with the position.
        message: String,
    },
    /// TOML of the right layout that breaks a rule (a duplicate id, a zero price, ...).
    #[error("the catalogue {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Which rule.
        message: String,
    },
}

/// How much something costs in money: an amount of the catalogue's own, or a Price already
/// defined in Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Price {
    /// `price` (minor units) in `currency`.
    Amount {
        /// The amount, in minor units.
        price: MinorUnits,
        /// A three-letter ISO currency code, lowercase (`usd`).
        currency: String,
    },
    /// `price_id = "price_..."`: a Stripe Price.
    Stripe {
        /// The Price's id.
        price_id: String,
    },
}

/// A one-off payment that credits tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPack {
    /// What checkout requests name it by.
    pub id: String,
    /// What the buyer sees.
    pub name: String,
    /// Tokens credited once the payment completes.
    pub tokens: Tokens,
    /// What it costs.
    pub price: Price,
}

/// A subscription that enrols in a course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What checkout requests name it by.
    pub id: String,
    /// What the buyer sees.
    pub name: String,
    /// What it costs each period (a Stripe Price, or an amount billed monthly).
    pub price: Price,
    /// The course a subscriber is enrolled in.
    pub course: String,
}

/// Something bought with tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShopItem {
    /// What purchases name it by.
    pub id: String,
    /// What the buyer sees.
    pub name: String,
    /// Its price in tokens.
    #[schema(value_type = i64)]
    pub cost: Tokens,
    /// Where the grant is POSTed (with an `Idempotency-Key`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfil_url: Option<String>,
}

/// What a checkout request may name: a token pack or a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sellable<'a> {
    /// A one-off payment.
    Pack(&'a TokenPack),
    /// A subscription.
    Plan(&'a Plan),
}

/// The whole catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// `[[token_pack]]`
    pub token_packs: Vec<TokenPack>,
    /// `[[plan]]`
    pub plans: Vec<Plan>,
    /// `[[shop_item]]`
    pub shop_items: Vec<ShopItem>,
}

/// The file's layout, before the rules are checked.
#[derive(Deserialize)]
struct RawCatalog {
    #[serde(default)]
    token_pack: Vec<RawPriced>,
    #[serde(default)]
    plan: Vec<RawPriced>,
    #[serde(default)]
    shop_item: Vec<RawShopItem>,
}

#[derive(Deserialize)]
struct RawPriced {
    id: String,
    name: String,
    tokens: Option<i64>,
    price: Option<i64>,
    price_id: Option<String>,
    currency: Option<String>,
    course: Option<String>,
}

#[derive(Deserialize)]
struct RawShopItem {
    id: String,
    name: String,
    cost: i64,
    fulfil_url: Option<String>,
}

impl Catalog {
    /// Read and check the catalogue at `path`.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            CatalogError::Syntax { message, .. } => CatalogError::Syntax {
                path: shown,
                message,
            },
            CatalogError::Invalid { message, .. } => CatalogError::Invalid {
                path: shown,
                message,
            },
            read => read,
        })
    }

    /// Parse and check a catalogue's text.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError::Syntax {
            path: String::new(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| CatalogError::Invalid {
            path: String::new(),
            message,
        };
        let mut sellable_ids = HashSet::new();
        let mut token_packs = Vec::new();
        for pack in raw.token_pack {
            let at = format!("token_pack `{}`", pack.id);
            let tokens = match pack.tokens {
                Some(n) if n > 0 => Tokens(n),
                _ => {
                    return Err(invalid(format!(
                        "{at}: `tokens` must be a positive integer"
                    )))
                }
            };
            let price = price(&at, &pack).map_err(invalid)?;
            check_id(&at, &pack.id, &mut sellable_ids).map_err(invalid)?;
            token_packs.push(TokenPack {
                id: pack.id,
                name: pack.name,
                tokens,
                price,
            });
        }
        let mut plans = Vec::new();
        for plan in raw.plan {
            let at = format!("plan `{}`", plan.id);
            let price = price(&at, &plan).map_err(invalid)?;
            let course = plan
                .course
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| invalid(format!("{at}: `course` is required")))?;
            check_id(&at, &plan.id, &mut sellable_ids).map_err(invalid)?;
            plans.push(Plan {
                id: plan.id,
                name: plan.name,
                price,
                course,
            });
        }
        let mut shop_ids = HashSet::new();
        let mut shop_items = Vec::new();
        for item in raw.shop_item {
            let at = format!("shop_item `{}`", item.id);
            if item.cost <= 0 {
                return Err(invalid(format!("{at}: `cost` must be a positive integer")));
            }
            if let Some(url) = &item.fulfil_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(format!(
                        "{at}: `fulfil_url` must be an http(s) URL"
                    )));
                }
            }
            check_id(&at, &item.id, &mut shop_ids).map_err(invalid)?;
            shop_items.push(ShopItem {
                id: item.id,
                name: item.name,
                cost: Tokens(item.cost),
                fulfil_url: item.fulfil_url,
            });
        }
        Ok(Self {
            token_packs,
            plans,
            shop_items,
        })
    }

    /// The token pack or plan called `id`.
    pub fn sellable(&self, id: &str) -> Option<Sellable<'_>> {
        self.token_packs
            .iter()
            .find(|p| p.id == id)
            .map(Sellable::Pack)
            .or_else(|| self.plans.iter().find(|p| p.id == id).map(Sellable::Plan))
    }

    /// The shop item called `id`.
    pub fn shop_item(&self, id: &str) -> Option<&ShopItem> {
        self.shop_items.iter().find(|i| i.id == id)
    }
}

fn check_id(at: &str, id: &str, seen: &mut HashSet<String>) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{at}: `id` must not be empty"));
    }
    if !seen.insert(id.to_owned()) {
        return Err(format!("{at}: the id is used twice"));
    }
    Ok(())
}

/// `price` + `currency`, or `price_id`: exactly one of the two.
fn price(at: &str, raw: &RawPriced) -> Result<Price, String> {
    match (raw.price, &raw.price_id) {
        (Some(_), Some(_)) => Err(format!("{at}: set `price` or `price_id`, not both")),
        (None, None) => Err(format!(
            "{at}: `price` (minor units) or `price_id` is required"
        )),
        (None, Some(id)) if id.is_empty() => Err(format!("{at}: `price_id` must not be empty")),
        (None, Some(id)) => Ok(Price::Stripe {
            price_id: id.clone(),
        }),
        (Some(amount), None) if amount <= 0 => {
            Err(format!("{at}: `price` must be a positive integer"))
        }
        (Some(amount), None) => {
            let currency = raw.currency.clone().unwrap_or_default();
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(format!(
                    "{at}: `currency` must be a three-letter lowercase ISO code (`usd`)"
                ));
            }
            Ok(Price::Amount {
                price: MinorUnits(amount),
                currency,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog.toml");
        let catalog = Catalog::load(&path).expect("catalog.toml");
        assert!(!catalog.token_packs.is_empty() && !catalog.plans.is_empty());
        for (id, cost) in [
            ("prompt-packs", 200),
            ("templates", 150),
            ("bonus-lessons", 100),
        ] {
            assert_eq!(catalog.shop_item(id).map(|i| i.cost), Some(Tokens(cost)));
        }
    }

    #[test]
    fn rules_are_checked() {
        let ok = r#"
            [[token_pack]]
            id = "p"
            name = "P"
            tokens = 5
            price = 100
            currency = "usd"
            note = "extra keys are fine"
            [[plan]]
            id = "pro"
            name = "Pro"
            price_id = "price_1"
            course = "pro"
        "#;
        let catalog = Catalog::parse(ok).expect("valid");
        assert!(matches!(catalog.sellable("p"), Some(Sellable::Pack(_))));
        assert!(matches!(catalog.sellable("pro"), Some(Sellable::Plan(_))));
        assert!(catalog.sellable("x").is_none());
        for bad in [
            "[[token_pack]]\nid='p'\nname='P'\ntokens=5\nprice=100",
            "[[token_pack]]\nid='p'\nname='P'\ntokens=0\nprice_id='x'",
            "[[token_pack]]\nid='p'\nname='P'\ntokens=5\nprice=1.5\ncurrency='usd'",
            "[[token_pack]]\nid='p'\nname='P'\ntokens=5\nprice=1\nprice_id='x'\ncurrency='usd'",
            "[[plan]]\nid='p'\nname='P'\nprice_id='x'",
            "[[shop_item]]\nid='s'\nname='S'\ncost=-1",
            "[[shop_item]]\nid='s'\nname='S'\ncost=1\n[[shop_item]]\nid='s'\nname='T'\ncost=2",
        ] {
            assert!(Catalog::parse(bad).is_err(), "{bad}");
        }
    }
}
