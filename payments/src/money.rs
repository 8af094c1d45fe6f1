//! The integer amounts of the token economy and the account id: newtypes so that tokens,
//! money and names cannot be mixed up, and no float ever holds one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares an integer amount: an `i64` newtype that serializes, stores and prints as the bare
/// number, so only the type tells one unit from another.
macro_rules! amount {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Default,
            Serialize,
            Deserialize,
            sqlx::Type,
            schemars::JsonSchema,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The count.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

amount! {
    /// A number of BROski$ tokens: positive for a credit, negative for a debit.
    Tokens
}

impl Tokens {
    /// No tokens.
    pub const ZERO: Tokens = Tokens(0);
}

amount! {
    /// An amount of money in a currency's minor units (cents for `usd`), as Stripe counts it.
    MinorUnits
}

/// The longest account id, in characters.
pub const MAX_ACCOUNT_CHARS: usize = 200;

/// What an account id may be, for error messages.
pub const ACCOUNT_RULE: &str =
    "an account is 1 to 200 characters, each a letter, a digit, `_`, `.`, `@` or `-`";

/// An account: an opaque id (a user id, an e-mail), `[A-Za-z0-9_.@-]{1,200}`, created on first
/// use. Only [`AccountId::parse`] makes one, so every value holds a valid id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    /// `raw` if it is a valid account id.
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = !raw.is_empty()
            && raw.chars().count() <= MAX_ACCOUNT_CHARS
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'));
        valid.then(|| Self(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).ok_or_else(|| serde::de::Error::custom(ACCOUNT_RULE))
    }
}

impl schemars::JsonSchema for AccountId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AccountId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_.@-]{1,200}$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_follow_the_rule() {
        for good in ["u1", "ada@example.com", "a.b-c_d", &"x".repeat(200)] {
            assert!(AccountId::parse(good).is_some(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(201), "a\0"] {
            assert!(AccountId::parse(bad).is_none(), "{bad:?}");
        }
        let parsed: Result<AccountId, _> = serde_json::from_str("\"no way\"");
        assert!(parsed.is_err());
    }
}
