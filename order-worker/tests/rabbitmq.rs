//! The RabbitMQ source against the real broker and databases: each test has
//! its own exchange, queue and database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_core::service::OrderCreator;
use order_loadgen::{Plan, Summary};
use order_runtime::config::{Driver, Settings};
use order_testkit::proxy::FaultProxy;
use order_testkit::{TestDatabase, process};
use order_worker::Connected;
use order_worker::rabbitmq::RabbitConsumer;
use tokio_util::sync::CancellationToken;

mod common;
use common::{
    Names, assert_orders, plan, settings, spawn_process, wait_for, wait_until_orders, worker_env,
};

/// A consumer running in this process.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    connected: Arc<Connected>,
}

impl Running {
    async fn start(settings: &Settings) -> Self {
        let storage = order_core::storage::Storage::connect(&settings.database).unwrap();
        let creator = OrderCreator::new(storage, settings.retry_policy());
        let connected = Arc::new(Connected::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            RabbitConsumer::new(settings, creator, connected.clone()).run(stop.clone()),
        );
        let started = Instant::now();
        while !connected.get() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the consumer never connected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            stop,
            task,
            connected,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the consumer stops")
            .unwrap()
            .unwrap();
    }
}

async fn publish(names: &Names, plan: &Plan) -> Summary {
    let (messages, summary) = order_loadgen::generate(plan).unwrap();
    order_loadgen::rabbitmq::publish(&names.settings, &messages, None, true)
        .await
        .unwrap();
    summary
}

async fn assert_exact(db: &TestDatabase, names: &Names, summary: &Summary) {
    assert_orders(db, summary).await;
    assert_eq!(
        names.ready().await,
        0,
        "the queue is empty and nothing is left unacknowledged"
    );
}

async fn stream_becomes_exactly_the_distinct_orders(
    driver: Driver,
    count: usize,
    batch_size: usize,
) {
    let db = TestDatabase::new(driver).await;
    let names = Names::new();
    let settings = settings(&db, &names, batch_size);
    let worker = Running::start(&settings).await;
    let summary = publish(&names, &plan(count)).await;
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    worker.stop().await;
    assert_exact(&db, &names, &summary).await;
    assert!(summary.duplicates > 0 && summary.poison > 0, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_messages_on_postgres_become_exactly_the_distinct_orders() {
    stream_becomes_exactly_the_distinct_orders(Driver::Postgres, 20_000, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_messages_on_mariadb_become_exactly_the_distinct_orders() {
    stream_becomes_exactly_the_distinct_orders(Driver::Mysql, 20_000, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_message_path_gives_the_same_result() {
    stream_becomes_exactly_the_distinct_orders(Driver::Postgres, 3_000, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_acknowledges_nothing_and_the_orders_arrive_after_it_heals() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let proxy = FaultProxy::start(db.server_addr()).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, 200);
    settings.database = db.settings_via(proxy.addr());
    settings.database.acquire_timeout = Duration::from_millis(500);
    let worker = Running::start(&settings).await;
    let summary = publish(&names, &plan(10_000)).await;
    // Let some batches commit, then cut the database mid-stream.
    wait_until_orders(&db, 500).await;
    proxy.cut();
    let at_cut = db.count("SELECT COUNT(*) FROM orders").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !worker.task.is_finished(),
        "the worker keeps running through the outage"
    );
    assert!(
        names.ready().await > 0,
        "what the worker held went back to the queue"
    );
    assert!(db.count("SELECT COUNT(*) FROM orders").await >= at_cut);
    proxy.heal();
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    worker.stop().await;
    assert_exact(&db, &names, &summary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_is_reconnected_and_the_rest_drained() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let broker: std::net::SocketAddr = ([127, 0, 0, 1], 5672).into();
    let proxy = FaultProxy::start(broker).await;
    let mut settings = settings(&db, &names, 200);
    settings.rabbitmq.port = proxy.addr().port();
    let worker = Running::start(&settings).await;
    // Publish straight to the broker, not through the proxy.
    let summary = publish(&names, &plan(10_000)).await;
    wait_until_orders(&db, 500).await;
    proxy.cut();
    let started = Instant::now();
    while worker.connected.get() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "readiness never noticed the cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.heal();
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    assert!(worker.connected.get(), "reconnected");
    worker.stop().await;
    assert_exact(&db, &names, &summary).await;
}

fn spawn_worker(settings: &Settings) -> process::Running {
    let (mut worker, _) = spawn_process(&worker_env(settings));
    worker.wait_for("consuming from RabbitMQ", Duration::from_secs(30));
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_accounts_for_every_message_once() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let settings = settings(&db, &names, 200);
    let mut worker = spawn_worker(&settings);
    let summary = publish(&names, &plan(20_000)).await;
    wait_until_orders(&db, 2_000).await;
    worker.kill();
    let mut worker = spawn_worker(&settings);
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    assert!(worker.terminate(Duration::from_secs(30)).success());
    assert_exact(&db, &names, &summary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_leaving_every_message_committed_or_queued() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let settings = settings(&db, &names, 200);
    let mut worker = spawn_worker(&settings);
    let summary = publish(&names, &plan(20_000)).await;
    wait_until_orders(&db, 2_000).await;
    let stopping = Instant::now();
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", worker.output());
    assert!(stopping.elapsed() < settings.worker.shutdown_timeout);
    let committed = db.count("SELECT COUNT(*) FROM orders").await;
    assert!(committed < summary.distinct_pairs as i64 || names.ready().await == 0);
    // What was not committed is still in the queue: a second worker finishes the job exactly.
    let worker = Running::start(&settings).await;
    wait_for(&db, &summary, Duration::from_secs(120)).await;
    worker.stop().await;
    assert_exact(&db, &names, &summary).await;
}
