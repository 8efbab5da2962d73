//! The order-creation path: validate → store → outcome.
//!
//! The worker, the compensator and the API's retry all go through
//! [`OrderCreator`], so a purchase is judged and written the same way
//! wherever it comes from.

use chrono::Utc;
use uuid::Uuid;

use crate::domain::{NewFailure, NewOrder, RetryPolicy, SeckillMessage, Source};
use crate::storage::{CreateOutcome, Storage, StorageError};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A new order.
    Created(Uuid),
    /// The purchase already had this order.
    Duplicate(Uuid),
    /// The message can never become an order.
    Poison(String),
    /// Valid, but its write failed; worth retrying later.
    Failed(String),
}

impl Attempt {
    /// The order, when one exists for the message.
    #[must_use]
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Self::Created(id) | Self::Duplicate(id) => Some(*id),
            Self::Poison(_) | Self::Failed(_) => None,
        }
    }
}

/// Turns seckill messages into orders.
#[derive(Debug, Clone)]
pub struct OrderCreator {
    storage: Storage,
    retry: RetryPolicy,
}

impl OrderCreator {
    /// A creator writing to `storage`; a failed write is first retried after
    /// `retry.delay(0)`.
    #[must_use]
    pub fn new(storage: Storage, retry: RetryPolicy) -> Self {
        Self { storage, retry }
    }

    /// The storage it writes to.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Validates and writes a batch, without recording failures: the
    /// compensator and the API's retry resolve their own failure rows.
    ///
    /// # Errors
    /// Only when the batch as a whole could not be written (database
    /// unreachable): nothing of it is settled.
    pub async fn attempt<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
    ) -> Result<Vec<Attempt>, StorageError> {
        let mut attempts: Vec<Option<Attempt>> = Vec::with_capacity(payloads.len());
        let mut valid = Vec::with_capacity(payloads.len());
        let mut valid_at = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            match SeckillMessage::parse(payload.as_ref()) {
                Ok(message) => {
                    valid.push(NewOrder::new(message));
                    valid_at.push(i);
                    attempts.push(None);
                }
                Err(e) => attempts.push(Some(Attempt::Poison(e.to_string()))),
            }
        }
        if !valid.is_empty() {
            let outcomes = self.storage.create_orders(&valid).await?;
            let committed = Utc::now();
            for order in &valid {
                let age = (committed - order.message.timestamp)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                #[allow(clippy::cast_precision_loss)]
                metrics::histogram!("message_age_seconds").record(age as f64 / 1e6);
            }
            for (outcome, i) in outcomes.into_iter().zip(valid_at) {
                attempts[i] = Some(match outcome {
                    CreateOutcome::Created(id) => Attempt::Created(id),
                    CreateOutcome::Duplicate(id) => Attempt::Duplicate(id),
                    CreateOutcome::Failed(reason) => Attempt::Failed(reason),
                });
            }
        }
        Ok(attempts
            .into_iter()
            .map(|a| a.expect("every message has an outcome"))
            .collect())
    }

    /// The broker path: validates and writes a batch, then records its poison
    /// messages (not retryable) and its failed writes (pending, due after the
    /// first backoff) in one statement. When this returns `Ok`, every message
    /// of the batch is settled and may be acknowledged.
    ///
    /// # Errors
    /// When the database is unreachable: acknowledge nothing, redeliver later
    /// (orders are idempotent, failures are recorded once per message).
    pub async fn process_batch<P: AsRef<[u8]>>(
        &self,
        source: Source,
        payloads: &[P],
    ) -> Result<Vec<Attempt>, StorageError> {
        let attempts = self.attempt(payloads).await?;
        let now = Utc::now();
        let failures: Vec<NewFailure> = attempts
            .iter()
            .zip(payloads)
            .filter_map(|(attempt, payload)| match attempt {
                Attempt::Poison(reason) => Some(NewFailure::poison(
                    payload.as_ref(),
                    reason.as_str(),
                    source,
                    now,
                )),
                Attempt::Failed(reason) => {
                    let due = now
                        + chrono::Duration::from_std(self.retry.delay(0))
                            .unwrap_or(chrono::Duration::zero());
                    Some(NewFailure::retryable(
                        payload.as_ref(),
                        reason.as_str(),
                        source,
                        due,
                    ))
                }
                Attempt::Created(_) | Attempt::Duplicate(_) => None,
            })
            .collect();
        self.storage.record_failures(&failures).await?;
        record_metrics(source, &attempts);
        Ok(attempts)
    }
}

fn record_metrics(source: Source, attempts: &[Attempt]) {
    let (mut created, mut duplicate, mut poison, mut failed) = (0_u64, 0_u64, 0_u64, 0_u64);
    for attempt in attempts {
        match attempt {
            Attempt::Created(_) => created += 1,
            Attempt::Duplicate(_) => duplicate += 1,
            Attempt::Poison(_) => poison += 1,
            Attempt::Failed(_) => failed += 1,
        }
    }
    let source = source.as_str();
    metrics::counter!("orders_created_total", "source" => source).increment(created);
    metrics::counter!("orders_duplicate_total", "source" => source).increment(duplicate);
    metrics::counter!("messages_invalid_total", "source" => source).increment(poison);
    metrics::counter!("order_failures_recorded_total", "source" => source, "kind" => "poison")
        .increment(poison);
    metrics::counter!("order_failures_recorded_total", "source" => source, "kind" => "retryable")
        .increment(failed);
    if poison > 0 || failed > 0 {
        tracing::warn!(
            message.source = source,
            poison,
            failed,
            "messages recorded as failures"
        );
    }
}
