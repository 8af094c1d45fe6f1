//! Typed identifiers, so a mission id is never mistaken for a lease token or a worker name.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The identity of one mission (a workflow run). Time-ordered (UUIDv7) so ids sort by creation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct MissionId(pub Uuid);

impl MissionId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MissionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for MissionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The fencing token of a lease: it grows with every claim, and a write that carries an older
/// token than the mission's current one is rejected, so a stale worker can never overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseToken(pub i64);

/// The name a worker process claims leases under (host, pid and a random suffix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub String);

impl WorkerId {
    /// A name unique to this process: host name, pid and a random suffix.
    pub fn for_this_process() -> Self {
        let suffix: u32 = rand::random();
        Self(format!(
            "{}-{}-{suffix:08x}",
            host_name(),
            std::process::id()
        ))
    }
}

/// This machine's name: `HOSTNAME`, else the kernel's (what `gethostname(2)` answers), else
/// `local`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
