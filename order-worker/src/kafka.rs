//! The Kafka source (rdkafka): consumer group `kafka.group_id`, auto-commit
//! off, offsets committed synchronously after the batch's database commit,
//! and committed again for revoked partitions when the group rebalances.
//!
//! - Database unavailable: the batch in hand is kept, the assigned
//!   partitions are paused (the consumer still polls, so it stays in the
//!   group), and the batch is retried when the database answers; nothing is
//!   committed meanwhile.
//! - Brokers unreachable: librdkafka reconnects by itself; readiness is false
//!   from "all brokers down" until a message or a partition assignment arrives.
//! - Stop: the batch in hand is finished and committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use order_core::config::{KafkaSettings, Settings};
use order_core::domain::Source;
use order_core::service::OrderCreator;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::Connected;
use crate::batch::{self, Backoff};

const SOURCE: &str = "kafka";

/// One consumed message, detached from the consumer.
struct Consumed {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
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
        // librdkafka prefetches up to 64 MiB per consumer by default; a few
        // batches ahead are enough and keep the worker's memory small.
        .set("queued.max.messages.kbytes", "8192");
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
        let mut backoff = Backoff::new();

        'consume: loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => break 'consume,
                next = consumer.recv() => next,
            };
            let first = match first {
                Ok(message) => detach(&message),
                Err(e) => {
                    self.connected.set(SOURCE, false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "kafka receive failed");
                    if !batch::pause(delay, &stop).await {
                        break 'consume;
                    }
                    continue;
                }
            };
            self.connected.set(SOURCE, true);
            backoff.reset();
            let received_at = Instant::now();
            let mut held = vec![first];
            let deadline = tokio::time::Instant::now() + self.linger;
            while held.len() < self.batch_size {
                tokio::select! {
                    biased;
                    next = consumer.recv() => match next {
                        Ok(message) => held.push(detach(&message)),
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka receive failed mid-batch");
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = stop.cancelled() => break,
                }
            }

            batch::received(Source::Kafka, held.len());
            // Settle the batch; while the database is away, keep it, pause, and keep polling.
            loop {
                let payloads: Vec<&[u8]> = held.iter().map(|m| m.payload.as_slice()).collect();
                match batch::settle(&self.creator, Source::Kafka, &payloads, received_at).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, held = held.len(), "database unavailable: pausing Kafka consumption");
                        if !self.wait_out_outage(&consumer, &stop, &mut held).await {
                            break 'consume;
                        }
                    }
                }
            }
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

    /// Pauses the assignment and polls (so the group keeps us) until the
    /// database answers; messages of partitions assigned meanwhile join the
    /// batch in hand. Returns false when stopped.
    async fn wait_out_outage(
        &self,
        consumer: &StreamConsumer<Context>,
        stop: &CancellationToken,
        held: &mut Vec<Consumed>,
    ) -> bool {
        let mut backoff = Backoff::new();
        loop {
            // Again on every round: a rebalance may have assigned new partitions.
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            if self.creator.storage().ping().await.is_ok() {
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.resume(&assignment);
                }
                tracing::info!("database reachable again; resuming Kafka consumption");
                return true;
            }
            let wait = backoff.next_delay();
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
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
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}
