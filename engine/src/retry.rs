//! Retry policy: how many attempts a step gets and how long to wait between them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Exponential backoff with full jitter, capped. Attempt 1 is the first try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(
    rename = "retry",
    description = "Exponential backoff with jitter. 5xx, 408, 429, timeouts and connection errors are retried; other 4xx fail at once."
)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (1 means no retry).
    #[schemars(range(min = 1, max = RetryPolicy::MAX_ATTEMPTS))]
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one. At most
    /// max_backoff_ms.
    pub initial_backoff_ms: u64,
    /// Upper bound of any single backoff.
    #[schemars(range(max = RetryPolicy::MAX_BACKOFF_MS))]
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The most attempts a submitted policy may ask for.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// The longest single backoff a submitted policy may ask for: a day.
    pub const MAX_BACKOFF_MS: u64 = 86_400_000;

    /// One attempt, no retry.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff_ms: 0,
        max_backoff_ms: 0,
    };

    /// Whether a failed `attempt` may be followed by another.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The ceiling of the wait after failed `attempt` (before jitter): initial × 2^(attempt-1), capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let ms = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_backoff_ms);
        Duration::from_millis(ms)
    }

    /// The wait after failed `attempt`: uniformly drawn from [ceiling/2, ceiling] ("equal jitter"),
    /// so retries of many missions spread out but never collapse to zero.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let half = ceiling / 2;
        Duration::from_millis(half + rand::random_range(0..=ceiling - half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        let ceilings: Vec<u64> = (1..=6)
            .map(|a| policy.ceiling(a).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn backoff_stays_within_jitter_bounds() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
        };
        for attempt in 1..=8 {
            let ceiling = policy.ceiling(attempt);
            for _ in 0..200 {
                let wait = policy.backoff(attempt);
                assert!(
                    wait <= ceiling && wait >= ceiling / 2,
                    "{wait:?} outside {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.allows_another(1));
        assert!(policy.allows_another(2));
        assert!(!policy.allows_another(3));
        assert!(!RetryPolicy::NONE.allows_another(1));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff_ms: u64::MAX / 2,
            max_backoff_ms: 5,
        };
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(5));
    }
}
