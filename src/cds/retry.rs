//! Retry timing: exponential backoff with full jitter, bounded in attempts and in total time.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. 1 means no retry.
    pub max_attempts: u32,
    /// Upper bound of the first backoff; it doubles with each attempt.
    pub base_delay: Duration,
    /// No single backoff is longer than this.
    pub max_delay: Duration,
    /// No retry is started if it would begin later than this after the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The ceiling of the backoff after `attempt` failed attempts (1-based): `base · 2^(attempt-1)`,
    /// capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }

    /// "Full jitter": a uniformly random delay in `[0, ceiling]`, so many clients that failed
    /// together do not retry together.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rng.u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(60), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..200).map(|_| p.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= p.ceiling(3)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "full jitter should spread delays");
        assert!(delays.iter().any(|d| *d < p.ceiling(3) / 2));
    }
}
