//! The Kafka source (rdkafka): consumer group `kafka.group_id`, auto-commit
//! off, offsets committed synchronously after the batch's database commit,
//! and committed again for revoked partitions when the group rebalances.
//!
//! - A message whose failure cannot even be recorded: produced to
//!   `kafka.dead_letter_topic` (same key and bytes, headers saying why and
//!   where it came from) before the batch's offsets are committed.
//! - Database unavailable: the batch in hand is kept, the assigned
//!   partitions are paused (the consumer still polls, so it stays in the
//!   group), and the batch is retried after a wait that grows with each
//!   failed attempt, once the database answers; nothing is committed
//!   meanwhile. Readiness is false meanwhile, and the outage is logged when
//!   it starts and ends.
//! - Brokers unreachable: librdkafka reconnects by itself; readiness is false
//!   from "all brokers down" until a message or a partition assignment arrives.
//! - Stop: the batch in hand is finished and committed; one held for an
//!   outage (or an unreachable dead-letter topic) is left uncommitted, to be
//!   redelivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use order_core::domain::Source;
use order_core::service::{OrderCreator, Traced};
use order_runtime::config::{KafkaSettings, Settings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::Connected;
use order_core::domain::Backoff;

use crate::batch::{self, Gathered};
use crate::outage::{self, Outage};

const SOURCE: &str = "kafka";

/// One consumed message, detached from the consumer.
struct Consumed {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// The `traceparent` record header, if any.
    traceparent: Option<String>,
}

/// The consumer's context: commits processed offsets of revoked partitions,
/// and tracks broker reachability for readiness.
struct Context {
    topic: String,
    /// Next offset to commit per partition (last processed + 1), not yet committed.
    processed: Mutex<HashMap<i32, i64>>,
    connected: Arc<Connected>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.connected.set(SOURCE, false);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut processed = self.processed.lock().expect("offsets lock");
            let mut commit = TopicPartitionList::new();
            for element in revoked.elements() {
                if let Some(next) = processed.remove(&element.partition()) {
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        element.partition(),
                        Offset::Offset(next),
                    );
                }
            }
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    tracing::warn!(error = %e, "committing offsets of revoked partitions failed; they will be redelivered");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.connected.set(SOURCE, true);
            let partitions: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
        }
    }
}

/// The client settings of a consumer of these settings.
#[must_use]
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout.as_millis() / 3)
                .max(100)
                .to_string(),
        )
        .set("client.id", "order-worker")
        // librdkafka prefetches up to 64 MiB per consumer by default. A few
        // batches ahead are enough and keep the worker's memory small: 4 MiB
        // ingested as fast as 8 MiB here (2 MiB was slower), with 48 MiB of
        // peak RSS against 65. A fetch is bounded by it too (librdkafka sets
        // fetch.max.bytes to it when unset); a larger message still comes.
        .set("queued.max.messages.kbytes", "4096");
    config
}

/// Consumes `kafka.topic` into orders.
#[derive(Debug)]
pub struct KafkaConsumer {
    settings: KafkaSettings,
    batch_size: usize,
    linger: Duration,
    creator: OrderCreator,
    connected: Arc<Connected>,
}

impl KafkaConsumer {
    /// A consumer with the settings' group, topic and batching.
    #[must_use]
    pub fn new(settings: &Settings, creator: OrderCreator, connected: Arc<Connected>) -> Self {
        Self {
            settings: settings.kafka.clone(),
            batch_size: settings.worker.batch_size,
            linger: Duration::from_millis(settings.worker.batch_linger_ms),
            creator,
            connected,
        }
    }

    /// Consumes until `stop`.
    ///
    /// # Errors
    /// When the consumer cannot be created or subscribed (bad settings).
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let context = Context {
            topic: self.settings.topic.clone(),
            processed: Mutex::new(HashMap::new()),
            connected: self.connected.clone(),
        };
        let consumer: StreamConsumer<Context> =
            consumer_config(&self.settings).create_with_context(context)?;
        consumer.subscribe(&[&self.settings.topic])?;
        // Ready once subscribed; all brokers down makes it unready until a
        // message or a partition assignment arrives again.
        self.connected.set(SOURCE, true);
        tracing::info!(topic = %self.settings.topic, group = %self.settings.group_id, "consuming from Kafka");
        let mut backoff = Backoff::outage();
        let mut outage = Outage::new(Source::Kafka);
        let mut dead_letters = DeadLetterTopic::new(&self.settings);

        'consume: loop {
            let gathered = {
                let mut messages =
                    std::pin::pin!(consumer.stream().map(|next| next.map(|m| detach(&m))));
                batch::next_batch(&mut messages, self.batch_size, self.linger, &stop).await
            };
            let (mut held, received_at) = match gathered {
                Gathered::Stopped | Gathered::Ended => break 'consume,
                Gathered::Failed(e) => {
                    self.connected.set(SOURCE, false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "kafka receive failed");
                    if !outage::pause(delay, &stop).await {
                        break 'consume;
                    }
                    continue;
                }
                Gathered::Batch {
                    items,
                    received_at,
                    cut_short,
                } => {
                    if let Some(e) = cut_short {
                        tracing::warn!(error = %e, "kafka receive failed mid-batch");
                    }
                    (items, received_at)
                }
            };
            self.connected.set(SOURCE, true);
            backoff.reset();

            batch::received(Source::Kafka, held.len());
            // Settle the batch and send its dead letters; while the database
            // or the dead-letter topic is away, keep the batch, pause, keep
            // polling, and settle it again (messages that arrived meanwhile
            // included: nothing in `held` is committed unsettled).
            let mut dead_letter_retry = (Backoff::outage(), false);
            loop {
                let payloads: Vec<Traced<'_>> = held
                    .iter()
                    .map(|m| Traced {
                        payload: &m.payload,
                        traceparent: m.traceparent.as_deref(),
                    })
                    .collect();
                let (delay, for_database) = match batch::settle(
                    &self.creator,
                    Source::Kafka,
                    &payloads,
                    received_at,
                )
                .await
                {
                    Err(e) => {
                        self.connected.set(SOURCE, false);
                        (outage.failed(&e, held.len()), true)
                    }
                    Ok(settled) => {
                        if outage.is_failing() {
                            outage.succeeded();
                        }
                        let dead = batch::dead_letters(&settled);
                        if dead.is_empty() {
                            break;
                        }
                        match dead_letters.send(&held, &dead).await {
                            Ok(()) => {
                                batch::dead_lettered(
                                    Source::Kafka,
                                    &self.settings.dead_letter_topic,
                                    &dead,
                                );
                                break;
                            }
                            Err(e) => {
                                self.connected.set(SOURCE, false);
                                let (retry, warned) = &mut dead_letter_retry;
                                let delay = retry.next_delay();
                                if std::mem::replace(warned, true) {
                                    tracing::debug!(
                                        error = %order_runtime::telemetry::error_chain(e.as_ref()),
                                        retry_in_ms = delay.as_millis(),
                                        "dead-letter topic still unreachable"
                                    );
                                } else {
                                    tracing::warn!(
                                        error = %order_runtime::telemetry::error_chain(e.as_ref()),
                                        "dead-letter topic unreachable; the batch is held until it takes the message"
                                    );
                                }
                                (delay, false)
                            }
                        }
                    }
                };
                if !self
                    .wait_out(&consumer, delay, &stop, &mut held, for_database)
                    .await
                {
                    break 'consume;
                }
            }
            self.connected.set(SOURCE, true);
            self.commit(&consumer, &held);
        }
        self.connected.set(SOURCE, false);
        // Leave the group now rather than at the session timeout. (Every
        // partition list taken from the consumer is dropped by now: one kept
        // alive makes librdkafka's close wait forever.)
        consumer.unsubscribe();
        let closing = tokio::task::spawn_blocking(move || drop(consumer));
        if tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!(
                "the Kafka consumer did not close within 10 s; leaving it to the session timeout"
            );
        }
        Ok(())
    }

    /// Pauses the assignment and keeps polling (so the group keeps us) for
    /// `delay`, then, when `for_database`, until the database answers;
    /// messages of partitions assigned meanwhile join the batch in hand.
    /// Returns false when stopped.
    async fn wait_out(
        &self,
        consumer: &StreamConsumer<Context>,
        delay: Duration,
        stop: &CancellationToken,
        held: &mut Vec<Consumed>,
        for_database: bool,
    ) -> bool {
        let mut backoff = Backoff::outage();
        let mut until = tokio::time::Instant::now() + delay;
        loop {
            // Again on every round: a rebalance may have assigned new partitions.
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep_until(until) => {
                    if !for_database || self.creator.storage().ping().await.is_ok() {
                        if let Ok(assignment) = consumer.assignment() {
                            let _ = consumer.resume(&assignment);
                        }
                        return true;
                    }
                    until = tokio::time::Instant::now() + backoff.next_delay();
                }
                next = consumer.recv() => {
                    if let Ok(message) = next {
                        held.push(detach(&message));
                    }
                }
            }
        }
    }

    /// Commits the next offset of every partition in the batch.
    fn commit(&self, consumer: &StreamConsumer<Context>, batch: &[Consumed]) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for m in batch {
            let entry = next.entry(m.partition).or_insert(m.offset + 1);
            *entry = (*entry).max(m.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        {
            let mut processed = consumer.context().processed.lock().expect("offsets lock");
            for (partition, offset) in &next {
                processed.insert(*partition, *offset);
                let _ = list.add_partition_offset(
                    &self.settings.topic,
                    *partition,
                    Offset::Offset(*offset),
                );
            }
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                let mut processed = consumer.context().processed.lock().expect("offsets lock");
                for (partition, offset) in next {
                    if processed.get(&partition) == Some(&offset) {
                        processed.remove(&partition);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered (orders are idempotent)")
            }
        }
    }
}

fn detach<M: Message>(message: &M) -> Consumed {
    Consumed {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        traceparent: message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case("traceparent"))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        }),
    }
}

/// Creates `topic` unless it exists, with the broker's own defaults
/// (partitions, and replication so that `acks=all` meets its
/// `min.insync.replicas`); a broker older than Kafka 2.4 wants them
/// spelled out, so one partition and one replica are tried next.
///
/// # Errors
/// The broker's reason, when neither worked.
pub async fn create_topic(config: &ClientConfig, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let mut outcome = Ok(());
    for (partitions, replication) in [(-1, -1), (1, 1)] {
        let created = admin
            .create_topics(
                &[NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(replication),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await;
        outcome = match created.map(|r| r.into_iter().next()) {
            Ok(Some(Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None) => Ok(()),
            Ok(Some(Err((_, code)))) => Err(code.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if outcome.is_ok() {
            break;
        }
    }
    outcome
}

/// The dead-letter topic: created on first use unless it exists, written
/// with `acks=all`.
struct DeadLetterTopic {
    settings: KafkaSettings,
    producer: Option<FutureProducer>,
}

impl DeadLetterTopic {
    /// A message larger than the topic takes is sent with its first bytes only.
    const TRUNCATED_BYTES: usize = 64 * 1024;

    fn new(settings: &KafkaSettings) -> Self {
        Self {
            settings: settings.clone(),
            producer: None,
        }
    }

    /// The producer, made (and the topic created unless it exists) on first use.
    async fn producer(&mut self) -> anyhow::Result<&FutureProducer> {
        if self.producer.is_none() {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", self.settings.brokers.join(","))
                .set("acks", "all")
                .set("message.timeout.ms", "10000")
                .set("message.max.bytes", "16777216");
            let topic = &self.settings.dead_letter_topic;
            if let Err(error) = create_topic(&config, topic).await {
                tracing::warn!(topic = %topic, error, "could not create the dead-letter topic; producing to it anyway");
            }
            self.producer = Some(config.create()?);
        }
        Ok(self.producer.as_ref().expect("made above"))
    }

    /// Produces each `dead` message of `held` and waits for the broker. A
    /// message the topic refuses for its size goes with its first bytes and
    /// a header giving its whole length.
    async fn send(&mut self, held: &[Consumed], dead: &[(usize, String)]) -> anyhow::Result<()> {
        let topic = self.settings.dead_letter_topic.clone();
        let original_topic = self.settings.topic.clone();
        let producer = self.producer().await?;
        for (i, reason) in dead {
            let message = &held[*i];
            let partition = message.partition.to_string();
            let offset = message.offset.to_string();
            let size = message.payload.len().to_string();
            let mut payload = message.payload.as_slice();
            loop {
                let mut headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "x-dead-letter-reason",
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "x-original-topic",
                        value: Some(original_topic.as_str()),
                    })
                    .insert(Header {
                        key: "x-original-partition",
                        value: Some(partition.as_str()),
                    })
                    .insert(Header {
                        key: "x-original-offset",
                        value: Some(offset.as_str()),
                    });
                if payload.len() < message.payload.len() {
                    headers = headers.insert(Header {
                        key: "x-truncated-from-bytes",
                        value: Some(size.as_str()),
                    });
                }
                let mut record = FutureRecord::to(&topic).payload(payload).headers(headers);
                if let Some(key) = &message.key {
                    record = record.key(key.as_slice());
                }
                match producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => break,
                    Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                        _,
                    )) if payload.len() > Self::TRUNCATED_BYTES => {
                        payload = &payload[..Self::TRUNCATED_BYTES];
                    }
                    Err((e, _)) => anyhow::bail!("producing to {topic}: {e}"),
                }
            }
        }
        Ok(())
    }
}
