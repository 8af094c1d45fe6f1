//! The crash-loop rules: how long a heal waits before restarting, and when the healer stops
//! restarting a container and escalates to a human instead.

use std::time::Duration;

/// The healer's crash-loop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealPolicy {
    /// Heals within one incident before it is escalated (`HYPERCODE_HEAL_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// A failure within this long of the previous one continues its incident; a container that
    /// stayed up longer was healed for good (`HYPERCODE_HEAL_WINDOW_S`).
    pub window: Duration,
}

impl Default for HealPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// The longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl HealPolicy {
    /// The wait before the restart of heal number `attempt` (1-based) of one incident: none for
    /// the first, then 1 s, 2 s, 4 s, … capped at [`MAX_BACKOFF`].
    pub fn backoff(attempt: u32) -> Duration {
        match attempt {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 2).min(16)).min(MAX_BACKOFF),
        }
    }

    /// Whether an incident that has had `attempts` heals is escalated at its next failure.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_is_capped() {
        let waits: Vec<u64> = (1..=6).map(|n| HealPolicy::backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16]);
        assert_eq!(HealPolicy::backoff(10), Duration::from_secs(256));
        assert_eq!(HealPolicy::backoff(11), MAX_BACKOFF);
        assert_eq!(HealPolicy::backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_next_failure_after_max_attempts_heals_escalates() {
        let policy = HealPolicy::default();
        assert!(!policy.exhausted(4));
        assert!(policy.exhausted(5));
    }
}
