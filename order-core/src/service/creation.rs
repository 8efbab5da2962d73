//! The order-creation path: validate → store → outcome.
//!
//! The worker, the compensator and the API's retry all go through
//! [`OrderCreator`], so a purchase is judged and written the same way
//! wherever it comes from.

use chrono::Utc;
use uuid::Uuid;

use crate::domain::{NewFailure, NewOrder, RetryPolicy, SeckillMessage, Source};
use crate::storage::{InsertOutcome, Recorded, Storage, StorageError};

/// One message handed to the creation path: its bytes and, when its
/// transport carried one, the W3C trace context it came with (an AMQP or
/// Kafka `traceparent` header). Bytes alone (`Vec<u8>`, `&[u8]`) have none.
pub trait Incoming {
    /// The message's bytes.
    fn payload(&self) -> &[u8];

    /// Its `traceparent`, if it came with one.
    fn traceparent(&self) -> Option<&str> {
        None
    }
}

impl<T: AsRef<[u8]>> Incoming for T {
    fn payload(&self) -> &[u8] {
        self.as_ref()
    }
}

/// A message with the trace context it came with.
#[derive(Debug, Clone, Copy)]
pub struct Traced<'a> {
    /// The message's bytes.
    pub payload: &'a [u8],
    /// Its `traceparent` header, as received (checked before use).
    pub traceparent: Option<&'a str>,
}

impl Incoming for Traced<'_> {
    fn payload(&self) -> &[u8] {
        self.payload
    }

    fn traceparent(&self) -> Option<&str> {
        self.traceparent
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// A new order.
    Created(Uuid),
    /// The purchase already had this order.
    Duplicate(Uuid),
    /// The message can never become an order.
    Poison(String),
    /// Valid, but its write failed; worth retrying later.
    Failed(String),
}

impl MessageOutcome {
    /// The order, when one exists for the message.
    #[must_use]
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Self::Created(id) | Self::Duplicate(id) => Some(*id),
            Self::Poison(_) | Self::Failed(_) => None,
        }
    }
}

/// What became of one message of a broker batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Its outcome is committed (an order, or a failure row): acknowledge it.
    Settled(MessageOutcome),
    /// Not even its failure could be recorded (the database refused the
    /// record itself): send it to the dead-letter destination, with why.
    DeadLetter {
        /// What the attempt gave.
        attempt: MessageOutcome,
        /// Why the failure record was refused.
        reason: String,
    },
}

impl Settlement {
    /// What the attempt gave.
    #[must_use]
    pub fn attempt(&self) -> &MessageOutcome {
        match self {
            Self::Settled(attempt) | Self::DeadLetter { attempt, .. } => attempt,
        }
    }

    /// Why it must be dead-lettered, if it must.
    #[must_use]
    pub fn dead_letter_reason(&self) -> Option<String> {
        match self {
            Self::Settled(_) => None,
            Self::DeadLetter { attempt, reason } => Some(match attempt {
                MessageOutcome::Poison(why) | MessageOutcome::Failed(why) => {
                    format!("{why}; the failure record was refused: {reason}")
                }
                MessageOutcome::Created(_) | MessageOutcome::Duplicate(_) => reason.clone(),
            }),
        }
    }
}

/// The failure rows a broker batch wrote, by kind, and the messages that
/// found theirs written already: failures are kept once per message (its
/// digest), so a redelivery, a copy of a message already recorded, or a
/// batch settled again writes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureRecords {
    /// Poison messages recorded now (new rows).
    pub poison: u64,
    /// Poison messages whose row was there already: nothing written.
    pub poison_already_recorded: u64,
    /// Failed writes recorded now for retry (new pending rows).
    pub retryable: u64,
    /// Failed writes whose row was there already: nothing written.
    pub retryable_already_recorded: u64,
}

impl FailureRecords {
    /// New failure rows, of both kinds.
    #[must_use]
    pub fn recorded(&self) -> u64 {
        self.poison + self.retryable
    }

    /// Messages whose failure row was there already, of both kinds.
    #[must_use]
    pub fn already_recorded(&self) -> u64 {
        self.poison_already_recorded + self.retryable_already_recorded
    }
}

/// What one broker batch became ([`OrderCreator::process_batch_report`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// What became of each message, in the order of the batch.
    pub settled: Vec<Settlement>,
    /// The failure rows written, and those found written already.
    pub failures: FailureRecords,
}

/// Turns seckill messages into orders.
#[derive(Debug, Clone)]
pub struct OrderCreator {
    storage: Storage,
    retry: RetryPolicy,
    kept_bytes: usize,
}

impl OrderCreator {
    /// A creator writing to `storage`; a failed write is first retried after
    /// `retry.delay(0)`. Poison messages are kept up to
    /// [`NewFailure::DEFAULT_KEPT_BYTES`] (see [`OrderCreator::keeping`]).
    #[must_use]
    pub fn new(storage: Storage, retry: RetryPolicy) -> Self {
        Self {
            storage,
            retry,
            kept_bytes: NewFailure::DEFAULT_KEPT_BYTES,
        }
    }

    /// The same creator keeping at most `bytes` of each poison message
    /// (`worker.failure_data_max_bytes`).
    #[must_use]
    pub fn keeping(mut self, bytes: usize) -> Self {
        self.kept_bytes = bytes;
        self
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
    /// Only when the database is unreachable: nothing of it is settled.
    pub async fn attempt<P: Incoming>(
        &self,
        payloads: &[P],
    ) -> Result<Vec<MessageOutcome>, StorageError> {
        let mut attempts: Vec<Option<MessageOutcome>> = Vec::with_capacity(payloads.len());
        let mut valid = Vec::with_capacity(payloads.len());
        let mut valid_at = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            match SeckillMessage::parse(payload.payload()) {
                Ok(message) => {
                    valid.push(NewOrder::new(message).in_trace(payload.traceparent()));
                    valid_at.push(i);
                    attempts.push(None);
                }
                Err(e) => attempts.push(Some(MessageOutcome::Poison(e.to_string()))),
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
                    InsertOutcome::Created(id) => MessageOutcome::Created(id),
                    InsertOutcome::Duplicate(id) => MessageOutcome::Duplicate(id),
                    InsertOutcome::Failed(reason) => MessageOutcome::Failed(reason),
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
    /// first backoff). When this returns `Ok`, every message of the batch is
    /// settled: acknowledge each [`Settlement::Settled`] one, and dead-letter
    /// each [`Settlement::DeadLetter`] one (its failure record was refused).
    ///
    /// No message, whatever its bytes, makes this fail: any database error
    /// but an outage is narrowed to the messages that cause it.
    ///
    /// # Errors
    /// Only when the database is unreachable ([`StorageError::Unavailable`]):
    /// acknowledge nothing, redeliver later (orders are idempotent, failures
    /// are recorded once per message).
    pub async fn process_batch<P: Incoming>(
        &self,
        source: Source,
        payloads: &[P],
    ) -> Result<Vec<Settlement>, StorageError> {
        Ok(self.process_batch_report(source, payloads).await?.settled)
    }

    /// [`OrderCreator::process_batch`], saying also how many failure rows
    /// the batch wrote and how many of its failed messages found theirs
    /// written already (a redelivery): the metrics and the log count only
    /// the rows written.
    ///
    /// # Errors
    /// As [`OrderCreator::process_batch`].
    pub async fn process_batch_report<P: Incoming>(
        &self,
        source: Source,
        payloads: &[P],
    ) -> Result<BatchReport, StorageError> {
        let attempts = self.attempt(payloads).await?;
        let now = Utc::now();
        let mut failed_at = Vec::new();
        let failures: Vec<NewFailure> = attempts
            .iter()
            .zip(payloads)
            .enumerate()
            .filter_map(|(i, (attempt, payload))| {
                let failure = match attempt {
                    MessageOutcome::Poison(reason) => NewFailure::poison_kept(
                        payload.payload(),
                        self.kept_bytes,
                        reason.as_str(),
                        source,
                        now,
                    ),
                    MessageOutcome::Failed(reason) => {
                        let due = now
                            + chrono::Duration::from_std(self.retry.delay(0))
                                .unwrap_or(chrono::Duration::zero());
                        NewFailure::retryable(payload.payload(), reason.as_str(), source, due)
                    }
                    MessageOutcome::Created(_) | MessageOutcome::Duplicate(_) => return None,
                };
                failed_at.push(i);
                Some(failure)
            })
            .collect();
        let recorded = self.storage.record_each(&failures).await?;
        let mut refused = vec![None; attempts.len()];
        let mut records = FailureRecords::default();
        for (i, result) in failed_at.into_iter().zip(recorded) {
            let poison = matches!(attempts[i], MessageOutcome::Poison(_));
            match result {
                Ok(Recorded::New) if poison => records.poison += 1,
                Ok(Recorded::New) => records.retryable += 1,
                Ok(Recorded::AlreadyRecorded) if poison => records.poison_already_recorded += 1,
                Ok(Recorded::AlreadyRecorded) => records.retryable_already_recorded += 1,
                Err(reason) => refused[i] = Some(reason),
            }
        }
        let settled: Vec<Settlement> = attempts
            .into_iter()
            .zip(refused)
            .map(|(attempt, refused)| match refused {
                None => Settlement::Settled(attempt),
                Some(reason) => Settlement::DeadLetter { attempt, reason },
            })
            .collect();
        record_metrics(source, &settled, &records);
        Ok(BatchReport {
            settled,
            failures: records,
        })
    }
}

/// Counts what became of a batch's messages: failure rows only when written
/// now (a message whose row was there already is counted apart, and logged
/// at DEBUG); a dead letter is invalid or failed, but not recorded: the
/// worker counts it when it sends it.
fn record_metrics(source: Source, settled: &[Settlement], records: &FailureRecords) {
    let (mut created, mut duplicate, mut invalid) = (0_u64, 0_u64, 0_u64);
    for settlement in settled {
        match settlement.attempt() {
            MessageOutcome::Created(_) => created += 1,
            MessageOutcome::Duplicate(_) => duplicate += 1,
            MessageOutcome::Poison(_) => invalid += 1,
            MessageOutcome::Failed(_) => {}
        }
    }
    let source = source.as_str();
    metrics::counter!("orders_created_total", "source" => source).increment(created);
    metrics::counter!("orders_duplicate_total", "source" => source).increment(duplicate);
    metrics::counter!("messages_invalid_total", "source" => source).increment(invalid);
    metrics::counter!("order_failures_recorded_total", "source" => source, "kind" => "poison")
        .increment(records.poison);
    metrics::counter!("order_failures_recorded_total", "source" => source, "kind" => "retryable")
        .increment(records.retryable);
    metrics::counter!("order_failures_already_recorded_total", "source" => source, "kind" => "poison")
        .increment(records.poison_already_recorded);
    metrics::counter!("order_failures_already_recorded_total", "source" => source, "kind" => "retryable")
        .increment(records.retryable_already_recorded);
    if records.recorded() > 0 {
        quiet_warning(source, records.poison, records.retryable);
    }
    if records.already_recorded() > 0 {
        tracing::debug!(
            message.source = source,
            poison = records.poison_already_recorded,
            failed = records.retryable_already_recorded,
            "failed messages already on record (a redelivery or a copy): nothing written"
        );
    }
}

/// How often at most the warning about recorded failures is logged per source.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs failure rows written at most once per [`WARN_EVERY`] and source,
/// with the counts since the last line: a stream of poison is one line every
/// few seconds, not one per batch (the metrics count every row).
fn quiet_warning(source: &'static str, poison: u64, failed: u64) {
    use std::collections::HashMap;
    use std::sync::{Mutex, PoisonError};
    use std::time::Instant;

    /// When the last line was logged, and the poison and failed counts since.
    type Since = (Option<Instant>, u64, u64);
    /// Per source.
    static SINCE: Mutex<Option<HashMap<&'static str, Since>>> = Mutex::new(None);
    let mut guard = SINCE.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = guard
        .get_or_insert_with(HashMap::new)
        .entry(source)
        .or_insert((None, 0, 0));
    entry.1 += poison;
    entry.2 += failed;
    if entry.0.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
        let (_, poison, failed) = std::mem::replace(entry, (Some(Instant::now()), 0, 0));
        drop(guard);
        tracing::warn!(
            message.source = source,
            poison,
            failed,
            "messages recorded as failures (new rows only: a redelivered one is not counted again; at most one such line every 10 s; order_failures and order_failures_recorded_total have each one)"
        );
    }
}
