//! The RabbitMQ source (lapin): manual acknowledgement, one `multiple` ack
//! per committed batch.
//!
//! Topology, declared on every (re)connection: a durable topic exchange
//! (`rabbitmq.exchange`), a durable queue (`rabbitmq.queue`) bound with
//! `rabbitmq.routing_key` and dead-lettering to `rabbitmq.dead_letter_exchange`,
//! whose queue is `rabbitmq.dead_letter_queue`.
//!
//! - A message whose failure cannot even be recorded: rejected
//!   (`basic.nack`, `requeue=false`), so the broker dead-letters it to
//!   `rabbitmq.dead_letter_exchange`; the rest of the batch is acknowledged.
//! - Database unavailable: the channel is closed, so the broker requeues
//!   every unacknowledged message; consumption resumes when the database
//!   answers, after a wait that grows with each failed attempt. Readiness is
//!   false meanwhile, and the outage is logged when it starts and ends.
//! - Connection lost: reconnect with capped exponential backoff; readiness is
//!   false meanwhile.
//! - Stop: the batch in hand is finished and acknowledged, then the
//!   connection is closed (anything prefetched but unprocessed is requeued).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use order_core::domain::Source;
use order_core::service::{OrderCreator, Traced};
use order_runtime::config::{RabbitMqSettings, Settings};
use tokio_util::sync::CancellationToken;

use crate::Connected;
use order_core::domain::Backoff;

use crate::batch::{self, Gathered};
use crate::outage::{self, Outage};

const SOURCE: &str = "rabbitmq";

/// The `traceparent` header of `delivery`, if it is text.
fn traceparent(delivery: &lapin::message::Delivery) -> Option<&str> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("traceparent")? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// How a consuming session ended.
enum SessionEnd {
    /// Asked to stop; the batch in hand was settled.
    Stopped,
    /// The database went away; what was held has been handed back. Wait
    /// this long before trying again.
    DatabaseDown(Duration),
}

/// Consumes `rabbitmq.queue` into orders.
#[derive(Debug)]
pub struct RabbitConsumer {
    settings: RabbitMqSettings,
    prefetch: u16,
    batch_size: usize,
    linger: Duration,
    creator: OrderCreator,
    connected: Arc<Connected>,
}

/// Declares the exchange, the queue with its dead-letter exchange and queue, and the bindings.
///
/// # Errors
/// When the broker refuses a declaration (e.g. an existing queue with other arguments).
pub async fn declare_topology(channel: &Channel, settings: &RabbitMqSettings) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            settings.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            settings.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            settings.dead_letter_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            settings.dead_letter_queue.as_str().into(),
            settings.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()),
    );
    channel
        .queue_declare(
            settings.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            settings.queue.as_str().into(),
            settings.exchange.as_str().into(),
            settings.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

impl RabbitConsumer {
    /// A consumer with the settings' queue, prefetch and batching.
    #[must_use]
    pub fn new(settings: &Settings, creator: OrderCreator, connected: Arc<Connected>) -> Self {
        Self {
            settings: settings.rabbitmq.clone(),
            prefetch: settings.rabbitmq_prefetch(),
            batch_size: settings.worker.batch_size,
            linger: Duration::from_millis(settings.worker.batch_linger_ms),
            creator,
            connected,
        }
    }

    /// Consumes until `stop`, reconnecting and pausing as needed.
    ///
    /// # Errors
    /// Never in practice: every failure is waited out; the result type lets
    /// the caller treat all sources alike.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::outage();
        let mut outage = Outage::new(Source::Rabbitmq);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            match self.session(&stop, &mut backoff, &mut outage).await {
                Ok(SessionEnd::Stopped) => {
                    self.connected.set(SOURCE, false);
                    return Ok(());
                }
                Ok(SessionEnd::DatabaseDown(delay)) => {
                    self.connected.set(SOURCE, false);
                    if !outage::wait_for_database(&self.creator, delay, &stop).await {
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.connected.set(SOURCE, false);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = %order_runtime::telemetry::error_chain(e.as_ref()),
                        retry_in_ms = delay.as_millis(),
                        "RabbitMQ connection lost or refused; reconnecting"
                    );
                    if !outage::pause(delay, &stop).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        stop: &CancellationToken,
        backoff: &mut Backoff,
        outage: &mut Outage,
    ) -> anyhow::Result<SessionEnd> {
        let connection =
            Connection::connect(&self.settings.url(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        declare_topology(&channel, &self.settings).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("order-worker-{}", uuid_tag());
        let mut consumer = channel
            .basic_consume(
                self.settings.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Ready once consuming, unless the database is still failing our batches.
        self.connected.set(SOURCE, !outage.is_failing());
        backoff.reset();
        if outage.is_failing() {
            // Back for another attempt at the batch that failed: the outage
            // was logged when it began, and its end will be.
            tracing::debug!(queue = %self.settings.queue, "consuming from RabbitMQ again");
        } else {
            tracing::info!(queue = %self.settings.queue, prefetch = self.prefetch, "consuming from RabbitMQ");
        }

        loop {
            let (deliveries, received_at) =
                match batch::next_batch(&mut consumer, self.batch_size, self.linger, stop).await {
                    Gathered::Stopped => {
                        close(&channel, &connection).await;
                        return Ok(SessionEnd::Stopped);
                    }
                    Gathered::Ended => anyhow::bail!(
                        "the broker ended the consumer (queue deleted, or the connection closed)"
                    ),
                    // The channel is gone: what it delivered goes back to the queue.
                    Gathered::Failed(e)
                    | Gathered::Batch {
                        cut_short: Some(e), ..
                    } => return Err(e.into()),
                    Gathered::Batch {
                        items, received_at, ..
                    } => (items, received_at),
                };

            let payloads: Vec<Traced<'_>> = deliveries
                .iter()
                .map(|d| Traced {
                    payload: &d.data,
                    traceparent: traceparent(d),
                })
                .collect();
            batch::received(Source::Rabbitmq, payloads.len());
            match batch::settle(&self.creator, Source::Rabbitmq, &payloads, received_at).await {
                Ok(settled) => {
                    let dead = batch::dead_letters(&settled);
                    for (i, _) in &dead {
                        channel
                            .basic_nack(
                                deliveries[*i].delivery_tag,
                                BasicNackOptions {
                                    multiple: false,
                                    requeue: false,
                                },
                            )
                            .await?;
                    }
                    // One ack for the rest: every tag up to the last one not rejected.
                    let last_kept = (0..deliveries.len())
                        .rev()
                        .find(|i| dead.iter().all(|(d, _)| d != i));
                    if let Some(last) = last_kept {
                        channel
                            .basic_ack(
                                deliveries[last].delivery_tag,
                                BasicAckOptions { multiple: true },
                            )
                            .await?;
                    }
                    batch::dead_lettered(
                        Source::Rabbitmq,
                        &self.settings.dead_letter_exchange,
                        &dead,
                    );
                    if outage.is_failing() {
                        outage.succeeded();
                        self.connected.set(SOURCE, true);
                    }
                }
                Err(e) => {
                    let delay = outage.failed(&e, deliveries.len());
                    self.connected.set(SOURCE, false);
                    close(&channel, &connection).await;
                    return Ok(SessionEnd::DatabaseDown(delay));
                }
            }
        }
    }
}

/// Closing the channel requeues every message it had not acknowledged.
async fn close(channel: &Channel, connection: &Connection) {
    let _ = channel.close(200, "closing".into()).await;
    let _ = connection.close(200, "closing".into()).await;
}

fn uuid_tag() -> String {
    format!("{:016x}", fastrand::u64(..))
}
