//! Helpers shared by the worker's tests.
#![allow(dead_code)]

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use order_loadgen::{Plan, Summary};
use order_runtime::config::Settings;
use order_testkit::{TestDatabase, redis_settings};
use std::time::Instant;

/// Per-test broker names, deleted when the test ends.
pub struct Names {
    pub settings: order_runtime::config::RabbitMqSettings,
}

impl Names {
    pub fn new() -> Self {
        let id = format!("{:016x}", fastrand::u64(..));
        let settings = order_runtime::config::RabbitMqSettings {
            host: "127.0.0.1".into(),
            exchange: format!("ordertest.{id}.seckill"),
            queue: format!("ordertest.{id}.orders"),
            dead_letter_exchange: format!("ordertest.{id}.dlx"),
            dead_letter_queue: format!("ordertest.{id}.dlq"),
            ..Default::default()
        };
        Self { settings }
    }

    /// Messages ready in the queue (with no consumer, unacknowledged ones are back in it).
    pub async fn ready(&self) -> u32 {
        self.message_count(&self.settings.queue).await
    }

    /// Messages in the dead-letter queue.
    pub async fn dead_lettered(&self) -> u32 {
        self.message_count(&self.settings.dead_letter_queue).await
    }

    /// Takes every message of the dead-letter queue; returns their bodies.
    pub async fn take_dead_letters(&self) -> Vec<Vec<u8>> {
        let connection = Connection::connect(&self.settings.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = self.settings.dead_letter_queue.as_str();
        let mut bodies = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            bodies.push(message.delivery.data.clone());
        }
        let _ = connection.close(200, "".into()).await;
        bodies
    }

    async fn message_count(&self, queue: &str) -> u32 {
        let connection = Connection::connect(&self.settings.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "".into()).await;
        queue.message_count()
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    order_loadgen::rabbitmq::delete_topology(&settings).await;
                    let events = format!("{}.events", settings.exchange);
                    order_loadgen::rabbitmq::delete_exchange(&settings, &events).await;
                });
        })
        .join();
    }
}

pub fn settings(db: &TestDatabase, names: &Names, batch_size: usize) -> Settings {
    let mut settings = Settings {
        database: db.settings.clone(),
        redis: redis_settings(),
        rabbitmq: names.settings.clone(),
        ..Settings::default()
    };
    settings.worker.batch_size = batch_size;
    settings.database.acquire_timeout = Duration::from_secs(1);
    settings
}

pub const BIN: &str = env!("CARGO_BIN_EXE_order-worker");

/// Per-test Kafka names (topic, group, dead-letter topic) on the test broker.
pub fn kafka_settings() -> order_runtime::config::KafkaSettings {
    let id = format!("{:016x}", fastrand::u64(..));
    let brokers = std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    order_runtime::config::KafkaSettings {
        enabled: true,
        brokers: brokers.split(',').map(str::to_owned).collect(),
        topic: format!("ordertest-{id}"),
        group_id: format!("ordertest-{id}"),
        session_timeout: Duration::from_secs(6),
        dead_letter_topic: format!("ordertest-{id}.dlq"),
    }
}

/// [`worker_env`] with the Kafka source of `settings.kafka` enabled too.
pub fn kafka_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut env = worker_env(settings);
    let k = &settings.kafka;
    env.extend([
        ("ORDER__KAFKA__ENABLED", "true".to_owned()),
        ("ORDER__KAFKA__BROKERS", k.brokers.join(",")),
        ("ORDER__KAFKA__TOPIC", k.topic.clone()),
        ("ORDER__EVENTS__TOPIC", format!("{}-events", k.topic)),
        ("ORDER__KAFKA__GROUP_ID", k.group_id.clone()),
        (
            "ORDER__KAFKA__SESSION_TIMEOUT",
            format!("{}ms", k.session_timeout.as_millis()),
        ),
        (
            "ORDER__KAFKA__DEAD_LETTER_TOPIC",
            k.dead_letter_topic.clone(),
        ),
    ]);
    env
}

pub fn worker_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut env = vec![(
        "ORDER__DATABASE__URL",
        settings.database.url.expose().to_owned(),
    )];
    env.extend(order_testkit::rabbitmq_env(&settings.rabbitmq));
    env.extend([
        // The relay's events go to the test's own exchange.
        (
            "ORDER__EVENTS__EXCHANGE",
            format!("{}.events", settings.rabbitmq.exchange),
        ),
        (
            "ORDER__WORKER__BATCH_SIZE",
            settings.worker.batch_size.to_string(),
        ),
        (
            "ORDER__OBSERVABILITY__PORT",
            order_testkit::free_port().to_string(),
        ),
    ]);
    env
}

/// Waits until the database holds what `summary` says, or panics after `limit`.
pub async fn wait_for(db: &TestDatabase, summary: &Summary, limit: Duration) {
    let started = Instant::now();
    loop {
        let orders = db.count("SELECT COUNT(*) FROM orders").await;
        let poison = db
            .count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable")
            .await;
        if orders >= summary.distinct_pairs as i64 && poison >= summary.poison as i64 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?}: {orders} orders, {poison} poison rows; expected {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database holds exactly what `summary` says it must.
pub async fn assert_orders(db: &TestDatabase, summary: &Summary) {
    assert_eq!(
        db.count("SELECT COUNT(*) FROM orders").await,
        summary.distinct_pairs as i64,
        "one order per distinct pair"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_items").await,
        summary.distinct_pairs as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotency_records").await,
        summary.distinct_pairs as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed'")
            .await,
        summary.poison as i64,
        "one poison row per poison message"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE retryable")
            .await,
        0,
        "no valid message failed"
    );
}

/// A stream with 30 % duplicates and 1 % poison.
pub fn plan(count: usize) -> Plan {
    Plan {
        count,
        users: 5000,
        products: 50,
        duplicate_ratio: 0.3,
        poison_ratio: 0.01,
        seed: fastrand::u64(..),
    }
}

/// Waits until at least `n` orders are committed (mid-stream fault injection).
pub async fn wait_until_orders(db: &TestDatabase, n: i64) {
    let started = Instant::now();
    while db.count("SELECT COUNT(*) FROM orders").await < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "fewer than {n} orders after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the worker binary with `env` (from [`worker_env`], perhaps
/// extended); returns it and its observability port.
pub fn spawn_process(env: &[(&'static str, String)]) -> (order_testkit::process::Running, u16) {
    let port = env
        .iter()
        .find(|(k, _)| *k == "ORDER__OBSERVABILITY__PORT")
        .and_then(|(_, v)| v.parse().ok())
        .expect("worker_env sets ORDER__OBSERVABILITY__PORT");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (order_testkit::process::spawn(BIN, &[], &env), port)
}
