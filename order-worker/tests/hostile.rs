//! Hostile input through the worker binary, on RabbitMQ and Kafka and on
//! PostgreSQL and MariaDB: valid purchases interleaved with every malformed
//! and database-breaking message of the corpus, and one message whose
//! failure the database refuses to record. Every valid purchase becomes an
//! order, every other message a failure row or a dead letter, the source
//! drains with nothing left unacknowledged, and the worker says little.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use order_loadgen::corpus::{self, Expect};
use order_loadgen::{Kind, Message};
use order_runtime::config::{Driver, KafkaSettings};
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};

mod common;
use common::{Names, kafka_env, kafka_settings, settings, spawn_process, worker_env};

/// A message the test's trigger refuses to record as a failure.
const UNRECORDABLE: &str = "unrecordable";

/// The stream, and what it must become: orders and failure rows.
struct Stream {
    messages: Vec<Message>,
    orders: i64,
    failures: i64,
}

fn stream(tag: u32) -> Stream {
    let mut messages = Vec::new();
    let (mut orders, mut failures) = (0, 0);
    let entries = corpus::malformed(tag);
    for (i, entry) in entries.into_iter().enumerate() {
        let user = 7_000_000_000 + i64::from(tag) * 1000 + i64::try_from(i).unwrap();
        messages.push(Message {
            payload: Seckill::new(user, 3)
                .quantity(2)
                .unit_price("4.50")
                .seckill_id("hostile")
                .bytes(),
            user_id: user,
            kind: Kind::New,
        });
        orders += 1;
        match entry.expect {
            Expect::Order => orders += 1,
            Expect::Poison => failures += 1,
        }
        messages.push(Message {
            payload: entry.payload,
            user_id: user,
            kind: Kind::Poison,
        });
    }
    messages.insert(
        messages.len() / 2,
        Message {
            payload: format!("{UNRECORDABLE} {tag}").into_bytes(),
            user_id: 1,
            kind: Kind::Poison,
        },
    );
    Stream {
        messages,
        orders,
        failures,
    }
}

async fn wait_until_settled(db: &TestDatabase, stream: &Stream) {
    let started = Instant::now();
    loop {
        let orders = db.count("SELECT COUNT(*) FROM orders").await;
        let failures = db.count("SELECT COUNT(*) FROM order_failures").await;
        if orders >= stream.orders && failures >= stream.failures {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{orders} orders and {failures} failure rows; expected {} and {}",
            stream.orders,
            stream.failures
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_settled(db: &TestDatabase, stream: &Stream) {
    assert_eq!(
        db.count("SELECT COUNT(*) FROM orders").await,
        stream.orders,
        "every valid purchase is an order"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed'")
            .await,
        stream.failures,
        "every other message is a poison row"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures").await,
        stream.failures
    );
}

/// The worker's warnings and errors: a few lines, not one per message or attempt.
fn assert_quiet(output: &str) {
    let loud: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.len() <= 6,
        "{} warnings and errors:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(
        !output.contains("database unavailable"),
        "no hostile message reads as an outage:\n{output}"
    );
}

async fn on_rabbitmq(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    db.refuse_failure_records_containing(UNRECORDABLE).await;
    let names = Names::new();
    let settings = settings(&db, &names, 500);
    let (mut worker, _) = spawn_process(&worker_env(&settings));
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    let stream = stream(1);

    order_loadgen::rabbitmq::publish(&names.settings, &stream.messages, None, true)
        .await
        .unwrap();

    wait_until_settled(&db, &stream).await;
    let started = Instant::now();
    while names.dead_lettered().await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    let output = worker.output();
    assert!(status.success(), "{status:?}: {output}");
    assert_settled(&db, &stream).await;
    assert_eq!(
        names.ready().await,
        0,
        "the queue is empty and nothing was left unacknowledged"
    );
    assert_eq!(
        names.take_dead_letters().await,
        vec![format!("{UNRECORDABLE} 1").into_bytes()]
    );
    assert_quiet(&output);
}

/// Every record of `topic` (one partition), with its headers.
fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    want: usize,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("group.id", format!("{}-reader", settings.group_id))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    let started = Instant::now();
    while records.len() < want && started.elapsed() < Duration::from_secs(40) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push((message.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    records
}

async fn on_kafka(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    db.refuse_failure_records_containing(UNRECORDABLE).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 500);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 3)
        .await
        .unwrap();
    let mut env = kafka_env(&settings);
    env.push(("ORDER__RABBITMQ__ENABLED", "false".to_owned()));
    let (mut worker, _) = spawn_process(&env);
    worker.wait_for("consuming from Kafka", Duration::from_secs(30));
    let stream = stream(2);

    let ends = order_loadgen::kafka::publish(&settings.kafka, &stream.messages, None, true)
        .await
        .unwrap();

    wait_until_settled(&db, &stream).await;
    let dead = read_topic(&settings.kafka, &settings.kafka.dead_letter_topic, 1);
    let started = Instant::now();
    while order_loadgen::kafka::committed(&settings.kafka, 3).unwrap() != ends {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the group's offsets never reached the end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    let output = worker.output();
    assert!(status.success(), "{status:?}: {output}");
    assert_settled(&db, &stream).await;
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let (payload, headers) = &dead[0];
    assert_eq!(payload, &format!("{UNRECORDABLE} 2").into_bytes());
    assert!(
        headers["x-dead-letter-reason"].contains("no room for it"),
        "{headers:?}"
    );
    assert_eq!(headers["x-original-topic"], settings.kafka.topic);
    assert_quiet(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_on_rabbitmq_and_postgres() {
    on_rabbitmq(Driver::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_on_rabbitmq_and_mariadb() {
    on_rabbitmq(Driver::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_on_kafka_and_postgres() {
    on_kafka(Driver::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_on_kafka_and_mariadb() {
    on_kafka(Driver::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_new_purchases_in_one_batch_on_mariadb_all_commit() {
    let db = TestDatabase::new(Driver::Mysql).await;
    let names = Names::new();
    let settings = settings(&db, &names, 10_000);
    let mut env = worker_env(&settings);
    env.push(("ORDER__WORKER__BATCH_LINGER_MS", "5000".to_owned()));
    // The queue first, filled while no worker runs: the first batch takes all.
    let (mut worker, _) = spawn_process(&env);
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    assert!(worker.terminate(Duration::from_secs(30)).success());
    let messages: Vec<Message> = (1..=10_000)
        .map(|user| Message {
            payload: Seckill::new(user, 9).seckill_id("big").bytes(),
            user_id: user,
            kind: Kind::New,
        })
        .collect();
    order_loadgen::rabbitmq::publish(&names.settings, &messages, None, true)
        .await
        .unwrap();

    let (mut worker, _) = spawn_process(&env);
    let started = Instant::now();
    while db.count("SELECT COUNT(*) FROM orders").await < 10_000 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not all committed: {}",
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    let output = worker.output();
    assert!(status.success(), "{status:?}: {output}");
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 10_000);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT created_at) FROM orders")
            .await,
        1,
        "one batch, one transaction"
    );
    assert_eq!(names.ready().await, 0);
    assert_quiet(&output);
}

/// The value of the series `name{labels…}` in a Prometheus text page (0
/// when it has not been emitted yet).
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with('{')
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

/// Waits until `messages_received_total` of RabbitMQ reaches `n`; returns
/// the metrics page then.
async fn metrics_after_receiving(port: u16, n: f64) -> String {
    let addr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    loop {
        let (_, page) = order_testkit::http::get(addr, "/metrics").await;
        let received = metric(&page, "messages_received_total", &[("source", "rabbitmq")]);
        if received >= n {
            // The batch is counted as received before it is settled.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return order_testkit::http::get(addr, "/metrics").await.1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{received} messages received, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_failure_is_counted_and_logged_as_recorded_once() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let settings = settings(&db, &names, 500);
    let mut env = worker_env(&settings);
    // Each publish below is one batch.
    env.push(("ORDER__WORKER__BATCH_LINGER_MS", "1000".to_owned()));
    let (mut worker, port) = spawn_process(&env);
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    let poison = Message {
        payload: b"{not json, sent again".to_vec(),
        user_id: 1,
        kind: Kind::Poison,
    };
    // Valid, but its amount overflows the column: a failed write, recorded
    // for retry.
    let failed = Message {
        payload: Seckill::new(1, 2)
            .quantity(5)
            .unit_price("9999999999.99")
            .bytes(),
        user_id: 1,
        kind: Kind::New,
    };

    // The poison message twice in one batch, then each message again in a
    // later batch (a redelivery): one failure row each, nothing more.
    let first = [poison.clone(), poison.clone(), failed.clone()];
    order_loadgen::rabbitmq::publish(&names.settings, &first, None, true)
        .await
        .unwrap();
    metrics_after_receiving(port, 3.0).await;
    order_loadgen::rabbitmq::publish(&names.settings, &[poison, failed], None, true)
        .await
        .unwrap();
    let page = metrics_after_receiving(port, 5.0).await;

    assert_eq!(db.count("SELECT COUNT(*) FROM order_failures").await, 2);
    let recorded = |kind| {
        metric(
            &page,
            "order_failures_recorded_total",
            &[("source", "rabbitmq"), ("kind", kind)],
        )
    };
    let already = |kind| {
        metric(
            &page,
            "order_failures_already_recorded_total",
            &[("source", "rabbitmq"), ("kind", kind)],
        )
    };
    assert_eq!(
        (recorded("poison"), recorded("retryable")),
        (1.0, 1.0),
        "one failure row written of each kind:\n{page}"
    );
    assert_eq!(
        (already("poison"), already("retryable")),
        (2.0, 1.0),
        "the other deliveries found their row already written:\n{page}"
    );
    assert_eq!(
        metric(&page, "messages_invalid_total", &[("source", "rabbitmq")]),
        3.0,
        "every delivery of the poison message was invalid"
    );
    let status = worker.terminate(Duration::from_secs(30));
    let output = worker.output();
    assert!(status.success(), "{status:?}: {output}");
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("recorded as failures"))
        .collect();
    assert!(
        lines.len() == 1 && lines[0].contains("poison=1") && lines[0].contains("failed=1"),
        "one line, saying what was written: {lines:#?}"
    );
    assert_eq!(names.ready().await, 0);
}
