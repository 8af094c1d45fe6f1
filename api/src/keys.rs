//! API keys: creation, listing, revocation and authentication.
//!
//! A key is shown once, at creation; the database keeps only its SHA-256 hash, so a leaked
//! table (or backup) does not leak usable credentials. Keys carry 240 bits of randomness, which
//! is why a plain, unsalted hash is enough: there is nothing to brute-force or look up.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every key starts with this, so a leaked key is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "hc_";

/// Random bytes per key: 30 bytes are exactly 40 base64url characters (no padding).
const KEY_RANDOM_BYTES: usize = 30;

/// Length of a whole key, prefix included.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_BYTES * 4 / 3;

/// What a key may do; see [`crate::auth`] for which routes each role reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "api_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads, and submitting, deciding and cancelling missions.
    Operator,
    /// An automated caller: the agent endpoints and heartbeats only, none of the mission
    /// routes (not even reads).
    Agent,
    /// Reads only.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Self::Admin, Self::Operator, Self::Agent, Self::Viewer];

    /// The wire and database name (`"admin"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Agent => "agent",
            Self::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected admin, operator, agent or viewer)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A freshly created key. `key` is the only copy of the secret: show it once, then drop it.
/// (Its `Debug` leaves the secret out, so it cannot reach a log by accident.)
#[derive(Clone)]
pub struct CreatedKey {
    /// The key's id (for revocation).
    pub id: Uuid,
    /// Its human-readable name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The secret itself (`hc_` and 40 base64url characters).
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who made a request: an authenticated, unrevoked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: Uuid,
    /// The key's name, recorded as the author of decisions and cancellations.
    pub name: String,
    /// The key's role.
    pub role: Role,
    /// The agent an `agent` key is bound to: it heartbeats for that agent only.
    pub agent: Option<String>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key needs a non-blank name: it is how people tell keys apart and how decisions are signed.
    #[error("a key's name must not be blank")]
    BlankName,
    /// Only a key of role `agent` can be bound to an agent.
    #[error("only a key of role `agent` can be bound to an agent (--agent)")]
    AgentNeedsAgentRole,
    /// Not a valid agent name.
    #[error("`{0}` is not a valid agent name (a letter or digit, then up to 62 letters, digits, `_` or `-`)")]
    BadAgentName(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Create a key with a fresh secret.
pub async fn create(pool: &PgPool, name: &str, role: Role) -> Result<CreatedKey, KeyError> {
    create_bound(pool, name, role, None).await
}

/// Create a key with a fresh secret, of role `agent` bound to the agent named `agent` when one
/// is given (the agent need not be registered yet).
pub async fn create_bound(
    pool: &PgPool,
    name: &str,
    role: Role,
    agent: Option<&str>,
) -> Result<CreatedKey, KeyError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(KeyError::BlankName);
    }
    if let Some(agent) = agent {
        if role != Role::Agent {
            return Err(KeyError::AgentNeedsAgentRole);
        }
        if !hypercode_agents::valid_name(agent) {
            return Err(KeyError::BadAgentName(agent.to_owned()));
        }
    }
    let id = Uuid::now_v7();
    let key = generate();
    sqlx::query!(
        "insert into api_keys (id, name, role, key_hash, agent) values ($1, $2, $3, $4, $5)",
        id,
        name,
        role as Role,
        &hash(&key)[..],
        agent,
    )
    .execute(pool)
    .await?;
    tracing::info!(key_id = %id, name, role = %role, agent, "API key created");
    Ok(CreatedKey {
        id,
        name: name.to_owned(),
        role,
        key,
    })
}

/// Every key, oldest first, revoked ones included (they show `revoked_at`).
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, KeyError> {
    Ok(sqlx::query_as!(
        KeyInfo,
        r#"
        select id, name, role as "role: Role", created_at, revoked_at
        from api_keys order by created_at, id
        "#
    )
    .fetch_all(pool)
    .await?)
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The key was live and is revoked now; this is its name.
    Revoked(String),
    /// The key was revoked already, at this time (which is kept).
    AlreadyRevoked(DateTime<Utc>),
    /// No key has this id.
    Unknown,
}

/// Revoke a key; it never authenticates again, from the next request on (authentication reads
/// the table on every request; nothing is cached).
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<Revocation, KeyError> {
    let revoked = sqlx::query_scalar!(
        "update api_keys set revoked_at = now() where id = $1 and revoked_at is null returning name",
        id,
    )
    .fetch_optional(pool)
    .await?;
    if let Some(name) = revoked {
        tracing::info!(key_id = %id, name, "API key revoked");
        return Ok(Revocation::Revoked(name));
    }
    let earlier = sqlx::query_scalar!("select revoked_at from api_keys where id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(match earlier {
        Some(Some(at)) => Revocation::AlreadyRevoked(at),
        // Live a moment ago but not now cannot happen (revocation is final); report it as
        // unknown rather than guess.
        Some(None) | None => Revocation::Unknown,
    })
}

/// Revoke every live key named `name` bound to agent `agent` (what a deployment of that agent
/// issued); how many were revoked.
pub async fn revoke_bound(pool: &PgPool, agent: &str, name: &str) -> Result<u64, KeyError> {
    let revoked = sqlx::query!(
        "update api_keys set revoked_at = now() where agent = $1 and name = $2 and revoked_at is null",
        agent,
        name,
    )
    .execute(pool)
    .await?
    .rows_affected();
    if revoked > 0 {
        tracing::info!(agent, name, revoked, "agent keys revoked");
    }
    Ok(revoked)
}

/// `keys list`'s human table: id, name, role, creation time and whether revoked. Never the
/// secrets, which are not stored.
pub fn table(keys: &[KeyInfo]) -> String {
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.name.clone(),
                k.role.to_string(),
                k.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                match k.revoked_at {
                    Some(at) => format!("yes ({})", at.format("%Y-%m-%dT%H:%M:%SZ")),
                    None => "no".to_owned(),
                },
            ]
        })
        .collect();
    let header = ["ID", "NAME", "ROLE", "CREATED_AT", "REVOKED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `keys list --json`: an array of `{"id", "name", "role", "created_at", "revoked",
/// "revoked_at"}`.
pub fn to_json(keys: &[KeyInfo]) -> String {
    let listing: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id,
                "name": k.name,
                "role": k.role,
                "created_at": k.created_at,
                "revoked": k.revoked_at.is_some(),
                "revoked_at": k.revoked_at,
            })
        })
        .collect();
    serde_json::Value::Array(listing).to_string()
}

/// The live key matching `presented`, or `None` (unknown, malformed or revoked).
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<Principal>, KeyError> {
    // A string that cannot be a key is refused without a database round trip; the format is
    // public, so this reveals nothing.
    if !is_well_formed(presented) {
        return Ok(None);
    }
    let digest = hash(presented);
    let row = sqlx::query!(
        r#"
        select id, name, role as "role: Role", key_hash, agent
        from api_keys where key_hash = $1 and revoked_at is null
        "#,
        &digest[..],
    )
    .fetch_optional(pool)
    .await?;
    // The index lookup already matched the hash; comparing again in constant time keeps the
    // check sound even if the lookup changes (a prefix index, a cache) and costs nothing.
    Ok(row
        .filter(|row| bool::from(row.key_hash.ct_eq(&digest[..])))
        .map(|row| Principal {
            key_id: row.id,
            name: row.name,
            role: row.role,
            agent: row.agent,
        }))
}

/// A new key.
fn generate() -> String {
    format!("{KEY_PREFIX}{}", random_secret::<KEY_RANDOM_BYTES>())
}

/// `N` bytes from the thread-local CSPRNG (ChaCha, seeded and reseeded from the OS), as
/// base64url without padding: safe in headers, cookies and URLs as is.
pub(crate) fn random_secret<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a secret (keys, session cookies).
pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn is_well_formed(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_format() {
        for _ in 0..200 {
            let key = generate();
            assert_eq!(key.len(), 43, "{key}");
            assert_eq!(KEY_LEN, 43);
            assert!(key.starts_with("hc_"), "{key}");
            assert!(
                key[3..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{key}"
            );
            assert!(is_well_formed(&key));
        }
    }

    #[test]
    fn keys_are_distinct() {
        let keys: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn malformed_keys_are_refused_before_lookup() {
        let good = generate();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&good[..42]));
        assert!(!is_well_formed(&format!("{good}A")));
        assert!(!is_well_formed(&format!("xx_{}", &good[3..])));
        assert!(!is_well_formed(&format!("{}+", &good[..42])));
        assert!(!is_well_formed(&format!("{}é", &good[..41])));
    }

    #[test]
    fn hashes_are_sha256() {
        let digest = hash("hc_test");
        assert_eq!(digest.len(), 32);
        assert_eq!(digest, hash("hc_test"));
        assert_ne!(digest, hash("hc_tesu"));
    }

    #[test]
    fn created_keys_do_not_debug_print_their_secret() {
        let created = CreatedKey {
            id: Uuid::now_v7(),
            name: "n".to_owned(),
            role: Role::Admin,
            key: generate(),
        };
        let printed = format!("{created:?} {created:#?}");
        assert!(!printed.contains(&created.key), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn listings_have_every_column() {
        let at = Utc::now();
        let keys = [
            KeyInfo {
                id: Uuid::now_v7(),
                name: "ops".to_owned(),
                role: Role::Operator,
                created_at: at,
                revoked_at: None,
            },
            KeyInfo {
                id: Uuid::now_v7(),
                name: "old viewer".to_owned(),
                role: Role::Viewer,
                created_at: at,
                revoked_at: Some(at),
            },
        ];
        let table = table(&keys);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID") && lines[0].ends_with("REVOKED"));
        assert!(
            lines[1].contains("operator") && lines[1].ends_with("no"),
            "{table}"
        );
        assert!(lines[2].contains(" yes ("), "{table}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&keys)).unwrap_or_default();
        assert_eq!(json[0]["role"], "operator");
        assert_eq!(json[0]["revoked"], false);
        assert_eq!(json[1]["revoked"], true);
        assert_eq!(json[1]["id"], keys[1].id.to_string());
        assert!(json[0]["created_at"].is_string());
        assert!(json[0]["revoked_at"].is_null());
    }

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::json!(role.as_str()))
            );
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }
}
