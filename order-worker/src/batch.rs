//! What every source does with a batch, and how it waits out an outage.

use std::time::{Duration, Instant};

use order_core::domain::Source;
use order_core::service::{Attempt, OrderCreator};
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
) -> Result<Vec<Attempt>, StorageError> {
    let attempts = creator.process_batch(source, payloads).await?;
    metrics::histogram!("message_processing_seconds", "source" => source.as_str())
        .record(received_at.elapsed().as_secs_f64());
    Ok(attempts)
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

/// Waits until the database answers again (or `stop`); returns false when stopped.
pub async fn wait_for_database(creator: &OrderCreator, stop: &CancellationToken) -> bool {
    let mut backoff = Backoff::new();
    loop {
        if creator.storage().ping().await.is_ok() {
            tracing::info!("database reachable again; resuming consumption");
            return true;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
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
}
