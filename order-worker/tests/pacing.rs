//! A batch that keeps failing as an outage while the database still answers
//! pings (the shape of the defect where one message stopped all ingestion):
//! the worker must back off instead of spinning, turn each source unready,
//! log the outage once per source when it starts and once when it ends, and
//! settle everything when the cause goes away.

use std::time::{Duration, Instant};

use order_loadgen::{Kind, Message};
use order_runtime::config::Driver;
use order_testkit::fixtures::Seckill;
use order_testkit::{TestDatabase, http};

mod common;
use common::{Names, kafka_env, kafka_settings, settings, spawn_process};

fn purchases(first_user: i64, count: i64) -> Vec<Message> {
    (first_user..first_user + count)
        .map(|user| Message {
            payload: Seckill::new(user, 4)
                .unit_price("2.00")
                .seckill_id("pace")
                .bytes(),
            user_id: user,
            kind: Kind::New,
        })
        .collect()
}

async fn readiness(port: u16) -> (u16, serde_json::Value) {
    let (status, body) = http::get(([127, 0, 0, 1], port).into(), "/health/ready").await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_as_an_outage_while_the_database_answers_is_retried_at_a_growing_pace() {
    let db = TestDatabase::new(Driver::Postgres).await;
    // Every INSERT into orders fails with "cannot connect now" (SQLSTATE
    // 57P03, an outage) while a ping still succeeds; a sequence counts the
    // attempts (nextval survives the rollback).
    db.execute("CREATE SEQUENCE attempts").await;
    db.execute(
        "CREATE FUNCTION not_now() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM nextval('attempts'); \
         RAISE EXCEPTION 'not now' USING ERRCODE = '57P03'; END $$",
    )
    .await;
    db.execute(
        "CREATE TRIGGER not_now BEFORE INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION not_now()",
    )
    .await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 100);
    settings.kafka = kafka_settings();
    order_loadgen::kafka::ensure_topic(&settings.kafka, 1)
        .await
        .unwrap();
    let env = kafka_env(&settings);
    let (mut worker, port) = spawn_process(&env);
    worker.wait_for("consuming from Kafka", Duration::from_secs(30));
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    worker.wait_for("partitions assigned", Duration::from_secs(30));

    order_loadgen::rabbitmq::publish(&names.settings, &purchases(1, 10), None, true)
        .await
        .unwrap();
    let ends = order_loadgen::kafka::publish(&settings.kafka, &purchases(101, 10), None, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Six seconds of a failing batch per source: a handful of attempts each
    // (100 ms doubling), not hundreds.
    let attempts = db.count("SELECT last_value FROM attempts").await;
    assert!(
        (2..=24).contains(&attempts),
        "{attempts} attempts in 6 s by two sources"
    );
    let (status, health) = readiness(port).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["checks"]["database"], "up", "{health}");
    assert_eq!(health["checks"]["rabbitmq"], "down", "{health}");
    assert_eq!(health["checks"]["kafka"], "down", "{health}");
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 0);

    db.execute("DROP TRIGGER not_now ON orders").await;
    let started = Instant::now();
    while db.count("SELECT COUNT(*) FROM orders").await < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the orders never arrived: {}",
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    while readiness(port).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never ready again: {}",
            readiness(port).await.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    while order_loadgen::kafka::committed(&settings.kafka, 1).unwrap() != ends {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "offsets not committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    let output = worker.output();
    assert!(status.success(), "{status:?}: {output}");
    assert_eq!(names.ready().await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 20);
    // Logged once per source when it began and once when it ended.
    let began = output
        .matches("pausing consumption until it answers")
        .count();
    let ended = output.matches("consumption resumed").count();
    assert_eq!((began, ended), (2, 2), "{output}");
    assert_eq!(
        output.matches("consuming from RabbitMQ").count(),
        1,
        "reconnecting for another attempt is not news: {output}"
    );
}
