//! Publishing to Kafka: keyed by user_id, acknowledged by all in-sync replicas.

use std::collections::HashMap;
use std::time::Duration;

use order_runtime::config::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Message, Pace, progress};

/// Deliveries awaited at most at once.
const WINDOW: usize = 5000;

fn client(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", settings.brokers.join(","));
    config
}

/// Creates `kafka.topic` with `partitions` partitions unless it exists.
///
/// # Errors
/// When the brokers refuse for another reason.
pub async fn ensure_topic(settings: &KafkaSettings, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(settings).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &settings.topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Publishes every message to `kafka.topic`, keyed by its user id, and
/// waits for every delivery. Returns, per partition, the offset after the
/// last message written (what a consumer group has to reach).
///
/// # Errors
/// When a message cannot be delivered.
pub async fn publish(
    settings: &KafkaSettings,
    messages: &[Message],
    per_second: Option<u32>,
    quiet: bool,
) -> anyhow::Result<HashMap<i32, i64>> {
    let producer: FutureProducer = client(settings)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        // Room for the 1 MiB messages of the malformed-input corpus.
        .set("message.max.bytes", "4194304")
        .create()?;
    let bar = progress(messages.len(), quiet);
    let mut pace = Pace::new(per_second);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    let keys: Vec<String> = messages.iter().map(|m| m.user_id.to_string()).collect();
    for (message, key) in messages.iter().zip(&keys) {
        pace.tick().await;
        let payload = crate::stamped(&message.payload);
        let mut record = FutureRecord::to(&settings.topic)
            .key(key)
            .payload(payload.as_ref());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                // The client's queue is full: let deliveries drain, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    match pending.pop_front() {
                        Some(delivery) => {
                            note(&mut ends, delivery.await)?;
                            bar.inc(1);
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => anyhow::bail!("queueing a message: {e}"),
            }
        }
        if pending.len() >= WINDOW {
            note(
                &mut ends,
                pending.pop_front().expect("a pending delivery").await,
            )?;
            bar.inc(1);
        }
    }
    while let Some(delivery) = pending.pop_front() {
        note(&mut ends, delivery.await)?;
        bar.inc(1);
    }
    producer.flush(Duration::from_secs(30))?;
    bar.finish_and_clear();
    Ok(ends)
}

/// Records a delivery report (the error side is the report channel's cancellation).
fn note<E>(
    ends: &mut HashMap<i32, i64>,
    delivery: Result<OwnedDeliveryResult, E>,
) -> anyhow::Result<()> {
    let delivered = delivery
        .map_err(|_| anyhow::anyhow!("the producer went away before a delivery report"))?
        .map_err(|(e, _)| anyhow::anyhow!("a message was not delivered: {e}"))?;
    let end = ends.entry(delivered.partition).or_insert(0);
    *end = (*end).max(delivered.offset + 1);
    Ok(())
}

/// The committed offset of `kafka.group_id` on each of the topic's first
/// `partitions` partitions (0 where it has committed nothing).
///
/// # Errors
/// When the brokers cannot be asked.
pub fn committed(settings: &KafkaSettings, partitions: i32) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = client(settings)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(&settings.topic, p);
    }
    let offsets = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .map(|found| {
            // The list must go before the consumer, or closing the consumer waits forever.
            found
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => (e.partition(), o),
                    _ => (e.partition(), 0),
                })
                .collect()
        });
    drop(consumer);
    Ok(offsets?)
}
