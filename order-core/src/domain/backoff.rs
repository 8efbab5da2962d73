//! When to try again: one [`Backoff`] type (capped exponential, with a
//! jitter of its choosing) and its named presets, and the [`RetryPolicy`] of
//! failed creations built on it.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How a delay is spread so that replicas do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The delay as computed (a log line can say when the next try is).
    None,
    /// Uniform in the upper half of the delay ("equal jitter").
    Equal,
    /// Uniform from zero to the delay ("full jitter"), for contenders that
    /// must fall out of step at once, such as deadlock victims.
    Full,
}

/// Capped exponential backoff: `first`, doubling up to `max`, spread by
/// `jitter`. It counts its own attempts ([`Backoff::next_delay`],
/// [`Backoff::reset`]), or gives the delay of any attempt number
/// ([`Backoff::delay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: Jitter,
    attempt: u32,
}

impl Backoff {
    /// `first` doubling up to `max`, with `jitter`.
    #[must_use]
    pub const fn new(first: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            first,
            max,
            jitter,
            attempt: 0,
        }
    }

    /// A source whose batches fail for a database outage, or whose broker
    /// connection is lost: 100 ms doubling up to 10 s, equal jitter.
    #[must_use]
    pub const fn outage() -> Self {
        Self::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Jitter::Equal,
        )
    }

    /// A process waiting for its database at start: 1 s doubling up to 30 s,
    /// as logged.
    #[must_use]
    pub const fn start_up() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Jitter::None,
        )
    }

    /// A transaction that lost a deadlock or a serialization check: 4 ms
    /// doubling up to 256 ms, full jitter.
    #[must_use]
    pub const fn deadlock() -> Self {
        Self::new(
            Duration::from_millis(4),
            Duration::from_millis(256),
            Jitter::Full,
        )
    }

    /// The delay before attempt number `attempt` (0-based):
    /// `min(first × 2^attempt, max)`, spread by the jitter.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let capped = self
            .first
            .saturating_mul(2_u32.saturating_pow(attempt.min(31)))
            .min(self.max);
        match self.jitter {
            Jitter::None => capped,
            Jitter::Equal => {
                let half = capped / 2;
                half + half.mul_f64(fastrand::f64())
            }
            Jitter::Full => capped.mul_f64(fastrand::f64()),
        }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

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
    /// with equal jitter so replicas do not retry in step.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        Backoff::new(self.base, self.max, Jitter::Equal).delay(attempt)
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
    fn presets_double_up_to_their_cap_and_reset() {
        let mut b = Backoff::outage();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));

        let mut start = Backoff::start_up();
        let delays: Vec<u64> = (0..7).map(|_| start.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);

        let deadlock = Backoff::deadlock();
        for attempt in 0..40 {
            let full = Duration::from_millis(4 << attempt.min(6));
            assert!(deadlock.delay(attempt) <= full);
        }
    }

    #[test]
    fn gives_up_at_max_retries() {
        let now = Utc::now();
        assert!(matches!(policy().after_failure(4, now), RetryDecision::RetryAt(t) if t > now));
        assert_eq!(policy().after_failure(5, now), RetryDecision::GiveUp);
    }
}
