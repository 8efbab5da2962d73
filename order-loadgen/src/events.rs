//! Subscribing to order events, as a consumer such as the seckill service
//! does: `order-loadgen events tail`, the fault suite and the benchmark.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use order_runtime::config::{KafkaSettings, RabbitMqSettings};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One event as received.
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedEvent {
    /// The CloudEvents `id`.
    pub id: Uuid,
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order (`subject`).
    pub order_id: Uuid,
    /// The routing key (RabbitMQ) or record key (Kafka).
    pub key: String,
    /// The `traceparent` header.
    pub traceparent: Option<String>,
    /// How it was sent: its content type, message id and (RabbitMQ)
    /// persistence.
    pub sent_as: SentAs,
    /// The whole CloudEvent.
    pub event: serde_json::Value,
}

/// What the transport said of an event besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SentAs {
    /// The AMQP `content-type` property or the Kafka `content-type` header.
    pub content_type: Option<String>,
    /// The AMQP `message-id` property or the Kafka `ce_id` header.
    pub message_id: Option<String>,
    /// Whether the AMQP message is persistent (delivery mode 2); `None` on
    /// Kafka.
    pub persistent: Option<bool>,
}

impl ReceivedEvent {
    fn parse(
        body: &[u8],
        key: String,
        traceparent: Option<String>,
        sent_as: SentAs,
    ) -> anyhow::Result<Self> {
        let event: serde_json::Value = serde_json::from_slice(body)?;
        let text = |name: &str| {
            event[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("the event has no {name}: {event}"))
        };
        Ok(Self {
            id: text("id")?.parse()?,
            event_type: text("type")?,
            order_id: text("subject")?.parse()?,
            key,
            traceparent,
            sent_as,
            event,
        })
    }
}

/// Binds a new exclusive queue to `exchange` (a durable topic exchange,
/// declared unless it exists) with `binding` (`#` for every event, e.g.
/// `order.cancelled`), and sends every event that arrives from now on.
/// Returns once the queue is bound.
///
/// # Errors
/// When the broker cannot be reached.
pub async fn subscribe_rabbitmq(
    settings: &RabbitMqSettings,
    exchange: &str,
    binding: &str,
) -> anyhow::Result<mpsc::UnboundedReceiver<anyhow::Result<ReceivedEvent>>> {
    let connection = Connection::connect(&settings.url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "order-loadgen-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _connection = (connection, channel);
        while let Some(delivery) = consumer.next().await {
            let received = delivery.map_err(anyhow::Error::from).and_then(|d| {
                let traceparent = d
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("traceparent").cloned())
                    .and_then(|v| match v {
                        AMQPValue::LongString(s) => Some(s.to_string()),
                        _ => None,
                    });
                let props = &d.properties;
                let sent_as = SentAs {
                    content_type: props.content_type().as_ref().map(ToString::to_string),
                    message_id: props.message_id().as_ref().map(ToString::to_string),
                    persistent: Some(*props.delivery_mode() == Some(2)),
                };
                ReceivedEvent::parse(&d.data, d.routing_key.to_string(), traceparent, sent_as)
            });
            if tx.send(received).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Reads the events topic `topic` of `settings.brokers` (created unless it
/// exists) with a group of its own, from its start or from now on, and
/// sends every event.
///
/// # Errors
/// When the consumer cannot be made.
pub async fn subscribe_kafka(
    settings: &KafkaSettings,
    topic: &str,
    from_start: bool,
) -> anyhow::Result<mpsc::UnboundedReceiver<anyhow::Result<ReceivedEvent>>> {
    let topic_settings = KafkaSettings {
        topic: topic.to_owned(),
        ..settings.clone()
    };
    crate::kafka::ensure_topic(&topic_settings, 3).await?;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", settings.brokers.join(","))
        .set(
            "group.id",
            format!("order-loadgen-events-{}", Uuid::now_v7()),
        )
        .set(
            "auto.offset.reset",
            if from_start { "earliest" } else { "latest" },
        )
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let received = match consumer.recv().await {
                Ok(message) => {
                    let key = message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    let header = |name: &str| {
                        message.headers().and_then(|h| {
                            h.iter()
                                .find(|header| header.key == name)
                                .and_then(|header| header.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                    };
                    let sent_as = SentAs {
                        content_type: header("content-type"),
                        message_id: header("ce_id"),
                        persistent: None,
                    };
                    ReceivedEvent::parse(
                        message.payload().unwrap_or_default(),
                        key,
                        header("traceparent"),
                        sent_as,
                    )
                }
                Err(e) => {
                    // The client reconnects by itself; say so and go on.
                    tracing::debug!(error = %e, "reading the events topic");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.send(received).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
