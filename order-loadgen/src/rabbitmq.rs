//! Publishing to RabbitMQ: persistent messages, publisher confirms.

use std::collections::VecDeque;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use order_runtime::config::RabbitMqSettings;

use crate::{Message, Pace, progress};

/// Confirms awaited at most at once.
const WINDOW: usize = 2000;

/// Declares `rabbitmq.exchange` (durable topic, as the seckill service
/// does), then publishes every message to it with `rabbitmq.routing_key`,
/// persistent and mandatory, and waits for every confirm.
///
/// # Errors
/// When the broker cannot be reached, refuses a message, or returns one as
/// unroutable (no queue bound yet: start the worker first).
pub async fn publish(
    settings: &RabbitMqSettings,
    messages: &[Message],
    per_second: Option<u32>,
    quiet: bool,
) -> anyhow::Result<()> {
    let connection = Connection::connect(&settings.url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            settings.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let bar = progress(messages.len(), quiet);
    let mut pace = Pace::new(per_second);
    let mut pending = VecDeque::with_capacity(WINDOW);
    for message in messages {
        pace.tick().await;
        let confirm = channel
            .basic_publish(
                settings.exchange.as_str().into(),
                settings.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &crate::stamped(&message.payload),
                properties.clone(),
            )
            .await?;
        pending.push_back(confirm);
        if pending.len() >= WINDOW {
            settle(pending.pop_front().expect("a pending confirm")).await?;
            bar.inc(1);
        }
    }
    while let Some(confirm) = pending.pop_front() {
        settle(confirm).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn settle(confirm: lapin::PublisherConfirm) -> anyhow::Result<()> {
    let confirmation = confirm.await?;
    anyhow::ensure!(
        confirmation.is_ack(),
        "the broker refused a message: {confirmation:?}"
    );
    anyhow::ensure!(
        confirmation.take_message().is_none(),
        "a message was returned as unroutable"
    );
    Ok(())
}

/// Deletes the exchange `name` (a per-test or per-run order events
/// exchange); errors are ignored.
pub async fn delete_exchange(settings: &RabbitMqSettings, name: &str) {
    use lapin::options::ExchangeDeleteOptions;
    let Ok(connection) =
        Connection::connect(&settings.url(), ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Deletes the queue, the dead-letter queue and both exchanges named by
/// `settings` (per-test and per-run names); errors are ignored.
pub async fn delete_topology(settings: &RabbitMqSettings) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(connection) =
        Connection::connect(&settings.url(), ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in [&settings.queue, &settings.dead_letter_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&settings.exchange, &settings.dead_letter_exchange] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
