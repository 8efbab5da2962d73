//! `order-worker` as a process: flags, probes, start and stop.

use std::process::Command;
use std::time::Duration;

use order_runtime::config::Driver;
use order_testkit::{TestDatabase, http};

mod common;
use common::{BIN, Names, settings, spawn_process, worker_env};

#[test]
fn help_and_version_answer() {
    order_testkit::assert_help_and_version(BIN, "order-worker", &[]);
}

#[test]
fn a_bad_setting_stops_the_start_naming_the_key() {
    let out = Command::new(BIN)
        .env("ORDER__WORKER__BATCH_LINGER_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker.batch_linger_ms: invalid digit"));
}

#[tokio::test]
async fn starts_on_mariadb_serves_probes_and_exits_0_on_sigterm() {
    let db = TestDatabase::empty(Driver::Mysql).await;
    let names = Names::new();
    let env = worker_env(&settings(&db, &names, 100));
    let (mut worker, port) = spawn_process(&env);
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    assert_eq!(
        db.table_names().await.len(),
        TestDatabase::MIGRATED_TABLES,
        "database.auto_migrate is on by default"
    );
    let addr = ([127, 0, 0, 1], port).into();
    let (status, body) = http::get(addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["checks"]["rabbitmq"], "up");
    assert_eq!(health["checks"]["database"], "up");
    let (_, metrics) = http::get(addr, "/metrics").await;
    assert!(
        metrics.contains("worker_consumer_connected{source=\"rabbitmq\"} 1"),
        "{metrics}"
    );
    let status = worker.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", worker.output());
}

#[tokio::test]
async fn runs_rabbitmq_and_kafka_in_one_process_and_reports_both_ready() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let names = Names::new();
    let id = format!("{:016x}", fastrand::u64(..));
    let brokers = std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let kafka = order_runtime::config::KafkaSettings {
        enabled: true,
        brokers: vec![brokers.clone()],
        topic: format!("ordertest-{id}"),
        group_id: format!("ordertest-{id}"),
        ..Default::default()
    };
    order_loadgen::kafka::ensure_topic(&kafka, 3).await.unwrap();
    let mut env = worker_env(&settings(&db, &names, 100));
    env.extend([
        ("ORDER__KAFKA__ENABLED", "true".to_owned()),
        ("ORDER__KAFKA__BROKERS", brokers),
        ("ORDER__KAFKA__TOPIC", kafka.topic.clone()),
        ("ORDER__KAFKA__GROUP_ID", kafka.group_id.clone()),
    ]);
    let (mut worker, port) = spawn_process(&env);
    worker.wait_for("consuming from Kafka", Duration::from_secs(30));
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    let (status, body) = http::get(([127, 0, 0, 1], port).into(), "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            health["checks"]["kafka"].as_str(),
            health["checks"]["rabbitmq"].as_str()
        ),
        (Some("up"), Some("up"))
    );
    let status = worker.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", worker.output());
}
