//! How a source waits out an outage: paced retries of the batch in hand,
//! then waiting for the database to answer, each wait cut short by a stop.

use std::time::{Duration, Instant};

use order_core::domain::{Backoff, Source};
use order_core::service::OrderCreator;
use order_core::storage::StorageError;
use tokio_util::sync::CancellationToken;

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
            backoff: Backoff::outage(),
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
    let mut backoff = Backoff::outage();
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
