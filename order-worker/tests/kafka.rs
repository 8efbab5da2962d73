//! The Kafka source against a real Kafka-protocol broker (Tansu, started by
//! scripts/kafka.sh): each test has its own topic and consumer group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use order_core::service::OrderCreator;
use order_core::storage::Storage;
use order_runtime::config::{Driver, KafkaSettings, Settings};
use order_testkit::TestDatabase;
use order_worker::Connected;
use order_worker::kafka::KafkaConsumer;
use order_worker::rabbitmq::RabbitConsumer;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Names, assert_orders, kafka_settings, plan, settings, wait_for, wait_until_orders};

struct Workers {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Workers {
    fn kafka(settings: &Settings, instances: usize) -> Self {
        let stop = CancellationToken::new();
        let tasks = (0..instances)
            .map(|_| {
                // Each instance its own pool, as separate processes would have.
                let creator = OrderCreator::new(
                    Storage::connect(&settings.database).unwrap(),
                    settings.retry_policy(),
                );
                tokio::spawn(
                    KafkaConsumer::new(settings, creator, Arc::new(Connected::default()))
                        .run(stop.clone()),
                )
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a consumer stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// The group's committed offset per partition.
fn committed(settings: &KafkaSettings, partitions: i32) -> HashMap<i32, i64> {
    order_loadgen::kafka::committed(settings, partitions).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_messages_on_three_partitions_with_two_workers_in_one_group_become_exactly_the_orders()
 {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 500);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 3)
        .await
        .unwrap();
    let workers = Workers::kafka(&settings, 2);
    let (messages, summary) = order_loadgen::generate(&plan(20_000)).unwrap();
    let ends = order_loadgen::kafka::publish(&settings.kafka, &messages, None, true)
        .await
        .unwrap();
    assert_eq!(ends.len(), 3, "keyed messages reach every partition");
    wait_for(&db, &summary, Duration::from_secs(180)).await;
    workers.stop().await;
    assert_orders(&db, &summary).await;
    assert_eq!(
        committed(&settings.kafka, 3),
        ends,
        "the group's lag is 0 on every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_message_path_on_kafka_gives_the_same_result() {
    let db = TestDatabase::new(Driver::Mysql).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 1);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 3)
        .await
        .unwrap();
    let workers = Workers::kafka(&settings, 1);
    let (messages, summary) = order_loadgen::generate(&plan(1_500)).unwrap();
    let ends = order_loadgen::kafka::publish(&settings.kafka, &messages, None, true)
        .await
        .unwrap();
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    workers.stop().await;
    assert_orders(&db, &summary).await;
    assert_eq!(committed(&settings.kafka, 3), ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_purchases_on_rabbitmq_and_kafka_make_one_order_each() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 200);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 3)
        .await
        .unwrap();
    let kafka = Workers::kafka(&settings, 1);
    let rabbit_stop = CancellationToken::new();
    let connected = Arc::new(Connected::default());
    let creator = OrderCreator::new(
        Storage::connect(&settings.database).unwrap(),
        settings.retry_policy(),
    );
    let rabbit = tokio::spawn(
        RabbitConsumer::new(&settings, creator, connected.clone()).run(rabbit_stop.clone()),
    );
    while !connected.get() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (messages, summary) = order_loadgen::generate(&order_loadgen::Plan {
        seed: 11,
        ..plan(4_000)
    })
    .unwrap();
    let (to_kafka, to_rabbit) = tokio::join!(
        order_loadgen::kafka::publish(&settings.kafka, &messages, None, true),
        order_loadgen::rabbitmq::publish(&names.settings, &messages, None, true),
    );
    to_kafka.unwrap();
    to_rabbit.unwrap();
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    // Both consumers have seen everything: wait for the queue to empty, then stop.
    while names.ready().await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    kafka.stop().await;
    rabbit_stop.cancel();
    rabbit.await.unwrap().unwrap();
    assert_orders(&db, &summary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_on_kafka_commits_nothing_and_the_orders_arrive_after_it_heals() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let proxy = order_testkit::proxy::FaultProxy::start(db.server_addr()).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 200);
    settings.database = db.settings_via(proxy.addr());
    settings.database.acquire_timeout = Duration::from_millis(500);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 3)
        .await
        .unwrap();
    let workers = Workers::kafka(&settings, 1);
    let (messages, summary) = order_loadgen::generate(&plan(8_000)).unwrap();
    let ends = order_loadgen::kafka::publish(&settings.kafka, &messages, None, true)
        .await
        .unwrap();
    wait_until_orders(&db, 300).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = committed(&settings.kafka, 3);
    assert_ne!(
        during, ends,
        "offsets stop short of the end while the database is away"
    );
    assert!(
        workers.tasks.iter().all(|t| !t.is_finished()),
        "the consumer keeps running through the outage"
    );
    proxy.heal();
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    workers.stop().await;
    assert_orders(&db, &summary).await;
    assert_eq!(
        committed(&settings.kafka, 3),
        ends,
        "the group's lag is 0 after the outage"
    );
}
