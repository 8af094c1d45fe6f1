//! Call secrets sealed at rest: AES-256-GCM (ring), bound to the agent's name.
//!
//! The key is `HYPERCODE_SECRETS_KEY` (or `_FILE`) when set: any string, hashed with SHA-256
//! to 32 bytes (so a passphrase, a hex or a base64 key all do). Without it, the key is the one
//! the migration generated in the `sealing_key` table: that keeps a copy of the `agents` table
//! (a log, an export of one table) from revealing the secrets, but not a dump of the whole
//! database, which is what setting `HYPERCODE_SECRETS_KEY` adds.
//!
//! A sealed secret is `kind ‖ nonce (12 bytes) ‖ ciphertext and tag`, where `kind` says which
//! key sealed it ([`Kind`]), so secrets sealed before a key was configured still open. The
//! agent's name is the additional authenticated data: a sealed value copied to another agent's
//! row does not open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Which key sealed a value: its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The key of the `sealing_key` table.
    Database = b'd',
    /// `HYPERCODE_SECRETS_KEY`.
    Configured = b'c',
}

/// An AES-256-GCM key; its Debug shows nothing of it.
pub struct SealingKey {
    key: LessSafeKey,
    kind: Kind,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why a sealed secret did not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed with `HYPERCODE_SECRETS_KEY`, which is not set now.
    #[error("the call secret was sealed with HYPERCODE_SECRETS_KEY, which is not set")]
    NoConfiguredKey,
    /// Not sealed with this key (another key, another agent's row, or damaged).
    #[error("the call secret does not open with the {0} key (was HYPERCODE_SECRETS_KEY changed?)")]
    Open(&'static str),
    /// The random generator failed.
    #[error("no randomness for a nonce")]
    Random,
}

impl SealingKey {
    /// The key of `HYPERCODE_SECRETS_KEY`'s value: its SHA-256.
    pub fn configured(material: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, material.as_bytes());
        Self::new(digest.as_ref(), Kind::Configured)
    }

    /// The key of the database's `sealing_key` row: its SHA-256, like a configured key's.
    pub fn database(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self::new(digest.as_ref(), Kind::Database)
    }

    fn new(bytes: &[u8], kind: Kind) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM keys are 32 bytes, and these are"));
        Self {
            key: LessSafeKey::new(unbound),
            kind,
        }
    }

    /// Seal `secret` for agent `name`.
    pub fn seal(&self, name: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Open what [`SealingKey::seal`] sealed for agent `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<String, SealError> {
        let what = match self.kind {
            Kind::Database => "database's",
            Kind::Configured => "HYPERCODE_SECRETS_KEY",
        };
        let (head, rest) = sealed
            .split_at_checked(1 + NONCE_LEN)
            .ok_or(SealError::Open(what))?;
        let nonce =
            Nonce::try_assume_unique_for_key(&head[1..]).map_err(|_| SealError::Open(what))?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Open(what))?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open(what))
    }
}

/// The kind of key that sealed `sealed`, if it names one.
pub fn kind_of(sealed: &[u8]) -> Option<Kind> {
    match sealed.first() {
        Some(b'd') => Some(Kind::Database),
        Some(b'c') => Some(Kind::Configured),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_for_the_same_agent_only() {
        let key = SealingKey::configured("a passphrase");
        let sealed = key.seal("ops-1", "s3cret").expect("seal");
        assert_eq!(kind_of(&sealed), Some(Kind::Configured));
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_ne!(sealed, key.seal("ops-1", "s3cret").expect("seal"));
        assert_eq!(key.open("ops-1", &sealed).expect("open"), "s3cret");
        assert!(key.open("ops-2", &sealed).is_err());
        assert!(SealingKey::configured("another")
            .open("ops-1", &sealed)
            .is_err());
        assert!(key.open("ops-1", &sealed[..5]).is_err());
        let database = SealingKey::database(&[7u8; 32]);
        let sealed = database.seal("ops-1", "x").expect("seal");
        assert_eq!(kind_of(&sealed), Some(Kind::Database));
        assert_eq!(database.open("ops-1", &sealed).expect("open"), "x");
    }
}
