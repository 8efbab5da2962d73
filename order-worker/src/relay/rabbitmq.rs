//! Order events to RabbitMQ: a durable topic exchange (`events.exchange`),
//! routing key = the event type, persistent messages, publisher confirms.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use order_core::service::{Delivery, Publisher};
use order_core::storage::StoredEvent;
use order_runtime::config::Settings;

/// The CloudEvents structured-mode content type.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// A confirming channel on the events exchange.
#[derive(Debug)]
pub struct RabbitPublisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
    timeout: Duration,
}

impl RabbitPublisher {
    /// Connects to `rabbitmq.*`'s broker, turns on publisher confirms and
    /// declares `events.exchange`.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the declaration.
    pub async fn connect(settings: &Settings) -> lapin::Result<Self> {
        let connection =
            Connection::connect(&settings.rabbitmq.url(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .exchange_declare(
                settings.events.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            channel,
            exchange: settings.events.exchange.clone(),
            timeout: settings.events.publish_timeout,
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "relay stopping".into()).await;
    }
}

/// The AMQP properties of `event`: persistent, its id and type, and the
/// trace context as a `traceparent` header.
fn properties(event: &StoredEvent) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(traceparent) = &event.traceparent {
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(traceparent.as_str().into()),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(event.id.to_string().into())
        .with_type(event.event_type.as_str().into())
        .with_app_id("order-service".into())
        .with_timestamp(u64::try_from(event.created_at.timestamp()).unwrap_or(0))
        .with_headers(headers)
}

impl Publisher for RabbitPublisher {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, events: &[StoredEvent]) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let sent = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    event.body.as_bytes(),
                    properties(event),
                )
                .await;
            pending.push(sent);
        }
        let mut out = Vec::with_capacity(events.len());
        for sent in pending {
            out.push(match sent {
                Err(e) => Delivery::Unsent(format!("publishing: {e}")),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(Confirmation::Ack(_))) => Delivery::Confirmed,
                    // Confirms were asked for: without one nothing is known.
                    Ok(Ok(Confirmation::NotRequested)) => {
                        Delivery::Unsent("the broker sent no confirm".into())
                    }
                    Ok(Ok(Confirmation::Nack(_))) => {
                        Delivery::Refused("the broker nacked the event".into())
                    }
                    Ok(Err(e)) => Delivery::Unsent(format!("waiting for the confirm: {e}")),
                    Err(_) => Delivery::Unsent(format!(
                        "not confirmed within events.publish_timeout ({})",
                        humantime::format_duration(self.timeout)
                    )),
                },
            });
        }
        out
    }
}
