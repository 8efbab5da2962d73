//! The outbox relay: claims events, hands them to a [`Publisher`] (a
//! broker), and marks each as the broker answered.
//!
//! - **Confirmed**: marked published (only now: at least once).
//! - **Refused** by the broker (this event's own problem: a nack, a record
//!   too large, no such exchange): tried again after a backoff that grows
//!   with its attempts, counted, and listed as `failing` for operators. The
//!   events after it of the same order wait; other orders go on.
//! - **Unsent** (the broker is out of reach, or did not answer in time):
//!   the event is not at fault and is left as it was. The claim ends, and
//!   the round says so, so that the caller pauses and reconnects: events
//!   accumulate in the outbox meanwhile, and publishing resumes by itself.
//!
//! The transport (RabbitMQ, Kafka) lives in the worker; the rules live
//! here.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::domain::{Backoff, Jitter};
use crate::storage::{ClaimOutcome, Storage, StorageError, StoredEvent};

/// What a broker said of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Confirmed: durable on the broker.
    Confirmed,
    /// Refused for a reason of its own; worth trying later.
    Refused(String),
    /// Not sent or not confirmed, through no fault of the event (the broker
    /// is out of reach or too slow).
    Unsent(String),
}

/// A broker the relay publishes to.
pub trait Publisher: Send + Sync {
    /// The broker's name, for logs and metrics (`rabbitmq`, `kafka`).
    fn name(&self) -> &'static str;

    /// Publishes `events` and answers one [`Delivery`] each, in order. The
    /// events are of distinct orders, so they may go out concurrently.
    fn publish<'a>(
        &'a self,
        events: &'a [StoredEvent],
    ) -> impl Future<Output = Vec<Delivery>> + Send + 'a;
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayRound {
    /// Events claimed.
    pub claimed: usize,
    /// Confirmed and marked published.
    pub published: usize,
    /// Refused by the broker; rescheduled.
    pub refused: usize,
    /// Not sent (broker unreachable); left as they were.
    pub unsent: usize,
    /// The first reason an event was unsent, for the log.
    pub unsent_reason: Option<String>,
}

/// Claims, publishes and marks events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    storage: Storage,
    batch: u32,
    refused: Backoff,
}

impl Relay {
    /// A relay claiming `batch` events a round, retrying a refused event
    /// after `backoff_base` doubling up to `backoff_max`.
    #[must_use]
    pub fn new(
        storage: Storage,
        batch: u32,
        backoff_base: Duration,
        backoff_max: Duration,
    ) -> Self {
        Self {
            storage,
            batch: batch.max(1),
            refused: Backoff::new(backoff_base, backoff_max, Jitter::Equal),
        }
    }

    /// The storage.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Events claimed per round: a round that claimed this many suggests
    /// more are waiting.
    #[must_use]
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// One round: claim, publish through `publisher`, mark, in one
    /// transaction holding the claimed events.
    ///
    /// # Errors
    /// When the database is unreachable (nothing of the round is marked;
    /// its events are published again by the next claim).
    pub async fn run_once<P: Publisher>(&self, publisher: &P) -> Result<RelayRound, StorageError> {
        let claim = self.storage.claim_events(self.batch).await?;
        let events = claim.events();
        let mut round = RelayRound {
            claimed: events.len() + claim.orphans().len(),
            ..RelayRound::default()
        };
        if round.claimed == 0 {
            return Ok(round);
        }
        let sent_at = Instant::now();
        let deliveries = if events.is_empty() {
            Vec::new()
        } else {
            publisher.publish(events).await
        };
        let broker = publisher.name();
        let mut outcome = ClaimOutcome::default();
        let mut confirmed = Vec::with_capacity(events.len());
        // An event whose order was deleted by hand cannot be rendered: the
        // broker is not asked. It waits, listed as failing with the reason,
        // until an operator deletes it (its order's later events wait too).
        for event in claim.orphans() {
            round.refused += 1;
            let reason = format!("its order {} is not in the orders table", event.order_id);
            tracing::warn!(event.id = %event.id, order.id = %event.order_id, %reason, "an order event cannot be rendered; it is not sent");
            outcome
                .refused
                .push((event.seq, reason, self.retry_at(event)));
        }
        for (event, delivery) in events.iter().zip(deliveries) {
            let kind = event.event_type.as_str();
            match delivery {
                Delivery::Confirmed => {
                    outcome.published.push(event.seq);
                    confirmed.push((kind, event.created_at));
                }
                Delivery::Refused(reason) => {
                    round.refused += 1;
                    metrics::counter!("order_events_publish_failures_total", "type" => kind, "broker" => broker)
                        .increment(1);
                    let retry_at = self.retry_at(event);
                    tracing::warn!(event.id = %event.id, order.id = %event.order_id, event.r#type = kind, attempts = event.attempts + 1, %reason, "the broker refused an event; it is tried again later");
                    outcome.refused.push((event.seq, reason, retry_at));
                }
                Delivery::Unsent(reason) => {
                    round.unsent += 1;
                    round.unsent_reason.get_or_insert(reason);
                }
            }
        }
        metrics::histogram!("order_events_publish_round_seconds")
            .record(sent_at.elapsed().as_secs_f64());
        round.published = usize::try_from(claim.finish(&outcome).await?).unwrap_or(usize::MAX);
        let now = Utc::now();
        for (kind, created_at) in confirmed {
            metrics::counter!("order_events_published_total", "type" => kind, "broker" => broker)
                .increment(1);
            // From the change's write (just before its commit) to the
            // broker's confirmation.
            let latency = (now - created_at).to_std().unwrap_or_default();
            metrics::histogram!("order_events_commit_to_confirm_seconds")
                .record(latency.as_secs_f64());
        }
        Ok(round)
    }

    /// When `event`, refused once more, is tried next.
    fn retry_at(&self, event: &StoredEvent) -> chrono::DateTime<Utc> {
        let attempt = u32::try_from(event.attempts).unwrap_or(0);
        Utc::now()
            + chrono::Duration::from_std(self.refused.delay(attempt))
                .unwrap_or(chrono::Duration::MAX)
    }

    /// Exports the outbox backlog: `order_events_unpublished` and
    /// `order_events_oldest_unpublished_age_seconds`.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn export_backlog(&self) -> Result<(), StorageError> {
        let backlog = self.storage.event_backlog().await?;
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("order_events_unpublished").set(backlog.unpublished as f64);
        let age = backlog.oldest.map_or(0.0, |t| {
            (Utc::now() - t).to_std().unwrap_or_default().as_secs_f64()
        });
        metrics::gauge!("order_events_oldest_unpublished_age_seconds").set(age);
        Ok(())
    }
}
