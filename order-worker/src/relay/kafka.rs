//! Order events to Kafka: topic `events.topic` (created unless it exists),
//! key = the order id (one order's events stay in one partition, in
//! order), `acks=all` with an idempotent producer.

use std::time::Duration;

use futures_util::future::join_all;
use order_core::service::{Delivery, Publisher};
use order_core::storage::StoredEvent;
use order_runtime::config::Settings;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::rabbitmq::CONTENT_TYPE;

/// A producer on the events topic.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A producer on `kafka.brokers`, the topic created unless it exists.
    /// It connects lazily: a broker that is down shows as events unsent
    /// after `events.publish_timeout`.
    ///
    /// # Errors
    /// When the producer cannot be made (bad settings).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let timeout = settings.events.publish_timeout;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", settings.kafka.brokers.join(","))
            .set("client.id", "order-worker-relay")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string());
        let topic = settings.events.topic.clone();
        if let Err(error) = crate::kafka::create_topic(&config, &topic).await {
            tracing::debug!(topic = %topic, error, "could not create the events topic; producing to it anyway");
        }
        Ok(Self {
            producer: config.create()?,
            topic,
            timeout,
        })
    }
}

/// Whether a produce error is the broker being out of reach or slow (the
/// event is not at fault) rather than a refusal of this event.
fn is_unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::NotEnoughReplicas
                | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::NetworkException
        )
    )
}

impl Publisher for KafkaPublisher {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, events: &[StoredEvent]) -> Vec<Delivery> {
        let sends = events.iter().map(|event| async move {
            let id = event.id.to_string();
            let key = event.order_id.to_string();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "content-type",
                    value: Some(CONTENT_TYPE),
                })
                .insert(Header {
                    key: "ce_id",
                    value: Some(id.as_str()),
                })
                .insert(Header {
                    key: "ce_type",
                    value: Some(event.event_type.as_str()),
                });
            if let Some(traceparent) = &event.traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent.as_str()),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(key.as_str())
                .payload(event.body.as_str())
                .headers(headers);
            match self.producer.send(record, self.timeout).await {
                Ok(_) => Delivery::Confirmed,
                Err((e, _)) if is_unreachable(&e) => Delivery::Unsent(e.to_string()),
                Err((e, _)) => Delivery::Refused(e.to_string()),
            }
        });
        join_all(sends).await
    }
}
