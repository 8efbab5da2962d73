//! What every source does with a batch, and how it waits out an outage.

use std::time::{Duration, Instant};

use order_core::domain::Source;
use order_core::service::{OrderCreator, Settlement};
use order_core::storage::StorageError;
use tokio_util::sync::CancellationToken;

/// Counts a batch taken from a source (once, however often it is retried).
pub fn received(source: Source, messages: usize) {
    let label = source.as_str();
    metrics::counter!("messages_received_total", "source" => label).increment(messages as u64);
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("worker_batch_size", "source" => label).record(messages as f64);
}

/// Settles one batch through the creation path and records how long it took
/// from receipt to commit.
///
/// # Errors
/// When the database is unavailable: acknowledge nothing.
pub async fn settle<P: AsRef<[u8]>>(
    creator: &OrderCreator,
    source: Source,
    payloads: &[P],
    received_at: Instant,
) -> Result<Vec<Settlement>, StorageError> {
    let settled = creator.process_batch(source, payloads).await?;
    metrics::histogram!("message_processing_seconds", "source" => source.as_str())
        .record(received_at.elapsed().as_secs_f64());
    Ok(settled)
}

/// The positions of the messages to dead-letter, with why.
#[must_use]
pub fn dead_letters(settled: &[Settlement]) -> Vec<(usize, String)> {
    settled
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.dead_letter_reason().map(|reason| (i, reason)))
        .collect()
}

/// Counts and logs (once for the batch) messages sent to the dead-letter
/// destination `to`.
pub fn dead_lettered(source: Source, to: &str, dead: &[(usize, String)]) {
    if let Some((_, first)) = dead.first() {
        metrics::counter!("messages_dead_lettered_total", "source" => source.as_str())
            .increment(dead.len() as u64);
        tracing::warn!(
            message.source = source.as_str(),
            dead_letter = to,
            count = dead.len(),
            reason = %first,
            "messages whose failure could not be recorded were dead-lettered"
        );
    }
}

/// Paces a source whose batches fail for a database outage: each retry of
/// the batch waits longer (100 ms doubling up to 10 s, whether or not the
/// database answers a ping meanwhile), and the state is logged once when it
/// changes, not once per attempt.
#[derive(Debug)]
pub struct Outage {
    source: Source,
    backoff: Backoff,
    since: Option<(Instant, u32)>,
}

impl Outage {
    /// No outage yet.
    #[must_use]
    pub fn new(source: Source) -> Self {
        Self {
            source,
            backoff: Backoff::new(),
            since: None,
        }
    }

    /// True while batches keep failing.
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }

    /// A batch of `held` messages failed with `err`: returns how long to
    /// wait before trying it again.
    pub fn failed(&mut self, err: &StorageError, held: usize) -> Duration {
        let delay = self.backoff.next_delay();
        let source = self.source.as_str();
        match &mut self.since {
            None => {
                self.since = Some((Instant::now(), 1));
                metrics::counter!("worker_pauses_total", "source" => source).increment(1);
                tracing::warn!(
                    message.source = source,
                    error = %err,
                    held,
                    "database unavailable: nothing acknowledged, pausing consumption until it answers"
                );
            }
            Some((_, attempts)) => {
                *attempts += 1;
                tracing::debug!(message.source = source, error = %err, attempt = *attempts, retry_in_ms = delay.as_millis(), "the batch failed again");
            }
        }
        delay
    }

    /// A batch committed: the outage, if any, is over.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
        if let Some((since, attempts)) = self.since.take() {
            tracing::info!(
                message.source = self.source.as_str(),
                attempts,
                paused_ms = since.elapsed().as_millis(),
                "database reachable again; consumption resumed"
            );
        }
    }
}

/// Capped exponential backoff: 100 ms, 200 ms, … up to 10 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    /// Starts at the first delay.
    #[must_use]
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay to wait now (with jitter); the following one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits `delay`, then until the database answers a ping (or `stop`);
/// returns false when stopped.
pub async fn wait_for_database(
    creator: &OrderCreator,
    delay: Duration,
    stop: &CancellationToken,
) -> bool {
    if !pause(delay, stop).await {
        return false;
    }
    let mut backoff = Backoff::new();
    loop {
        if creator.storage().ping().await.is_ok() {
            return true;
        }
        if !pause(backoff.next_delay(), stop).await {
            return false;
        }
    }
}

/// Sleeps `delay` unless `stop` comes first; returns false when stopped.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    fn outage() -> StorageError {
        StorageError::Config("database unreachable".into())
    }

    #[test]
    fn an_outage_backs_off_on_every_failure_until_a_batch_commits() {
        let mut o = Outage::new(Source::Kafka);
        assert!(!o.is_failing());
        let delays: Vec<Duration> = (0..8).map(|_| o.failed(&outage(), 10)).collect();
        assert!(o.is_failing());
        // Jitter keeps each in the upper half of 100 ms × 2^n.
        for (n, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(10));
            assert!(*d >= full / 2 && *d <= full, "{n}: {d:?}");
        }
        o.succeeded();
        assert!(!o.is_failing());
        assert!(o.failed(&outage(), 1) <= Duration::from_millis(100));
    }
}
