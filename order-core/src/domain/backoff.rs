use std::time::Duration;

use chrono::{DateTime, Utc};

/// When to retry a failed creation: capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Retries before a failure is given up.
    pub max_retries: u32,
}

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Out of retries: mark failed.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based): `min(base × 2^attempt, max)`,
    /// with "equal jitter" (uniform in the upper half) so replicas do not retry in step.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2_u32.saturating_pow(attempt.min(31)));
        let capped = exp.min(self.max);
        let half = capped / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Decides after `retries_so_far` retries have failed (the attempt that just
    /// failed included).
    #[must_use]
    pub fn after_failure(&self, retries_so_far: u32, now: DateTime<Utc>) -> RetryDecision {
        if retries_so_far >= self.max_retries {
            RetryDecision::GiveUp
        } else {
            let delay = chrono::Duration::from_std(self.delay(retries_so_far))
                .unwrap_or(chrono::Duration::MAX);
            RetryDecision::RetryAt(
                now.checked_add_signed(delay)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
            max_retries: 5,
        }
    }

    #[test]
    fn delays_double_within_jitter_and_are_capped() {
        let p = policy();
        for attempt in 0..10 {
            let full = Duration::from_secs(10 * 2_u64.pow(attempt)).min(Duration::from_secs(600));
            for _ in 0..50 {
                let d = p.delay(attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        assert!(p.delay(u32::MAX) <= Duration::from_secs(600));
    }

    #[test]
    fn gives_up_at_max_retries() {
        let now = Utc::now();
        assert!(matches!(policy().after_failure(4, now), RetryDecision::RetryAt(t) if t > now));
        assert_eq!(policy().after_failure(5, now), RetryDecision::GiveUp);
    }
}
