//! The outbox relay against the real brokers, on both engines: every event
//! arrives, each order's in write order, published by two relays at once
//! and never by both; a broker cut loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use order_core::domain::{Cause, NewOrder, OrderStatus, SeckillMessage};
use order_core::storage::{EventFilter, StoredEvent};
use order_loadgen::events::ReceivedEvent;
use order_runtime::config::{Driver, EventBroker, Settings};
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use order_testkit::proxy::FaultProxy;
use order_worker::Connected;
use rdkafka::config::ClientConfig;
use tokio::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod common;
use common::{Names, kafka_settings};

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A consumer of the events (order-loadgen's, as the fault suite's),
/// collecting what arrives.
struct Subscriber {
    received: Arc<Mutex<Vec<Result<ReceivedEvent, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    fn collect(mut events: UnboundedReceiver<anyhow::Result<ReceivedEvent>>) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                sink.lock().await.push(event.map_err(|e| format!("{e:#}")));
            }
        });
        Self { received, task }
    }

    /// A queue bound to the events exchange with `#`, declared before any
    /// event is published.
    async fn rabbitmq(settings: &Settings) -> Self {
        let events = order_loadgen::events::subscribe_rabbitmq(
            &settings.rabbitmq,
            &settings.events.exchange,
            "#",
        )
        .await
        .unwrap();
        Self::collect(events)
    }

    /// A consumer of the events topic from its start.
    async fn kafka(settings: &Settings) -> Self {
        let events =
            order_loadgen::events::subscribe_kafka(&settings.kafka, &settings.events.topic, true)
                .await
                .unwrap();
        Self::collect(events)
    }

    /// Waits until `n` events arrived (panics after `limit`); each is a
    /// CloudEvent in structured mode, its message id its `id`, persistent
    /// on RabbitMQ.
    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<ReceivedEvent> {
        let started = Instant::now();
        while self.received.lock().await.len() < n {
            assert!(
                started.elapsed() < limit,
                "{} of {n} events after {limit:?}",
                self.received.lock().await.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A moment more, to catch any event sent twice.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received = self.received.lock().await.clone();
        received
            .into_iter()
            .map(|event| {
                let event = event.expect("a well-formed event");
                assert_eq!(event.event["specversion"], "1.0");
                let sent_as = &event.sent_as;
                assert_eq!(
                    sent_as.content_type.as_deref(),
                    Some("application/cloudevents+json")
                );
                assert_eq!(sent_as.message_id, Some(event.id.to_string()));
                assert_ne!(sent_as.persistent, Some(false), "persistent");
                event
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings of a test: its own database, exchange and topic.
fn settings(db: &TestDatabase, names: &Names, broker: EventBroker) -> Settings {
    let mut settings = common::settings(db, names, 100);
    settings.kafka = kafka_settings();
    settings.events.broker = broker;
    settings.events.exchange = format!("{}.events", names.settings.exchange);
    settings.events.topic = format!("{}-events", settings.kafka.topic);
    settings.events.batch_size = 25;
    settings.events.poll_interval = Duration::from_millis(20);
    settings.events.publish_timeout = Duration::from_secs(2);
    settings
}

/// Relays running in this process.
struct Relays {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Relays {
    fn start(settings: &Settings, db: &TestDatabase, n: usize) -> Self {
        let stop = CancellationToken::new();
        let tasks = (0..n)
            .map(|_| {
                tokio::spawn(order_worker::relay::run(
                    settings.clone(),
                    settings.relay(db.storage.clone()),
                    Arc::new(Connected::default()),
                    stop.clone(),
                ))
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("a relay stops within its publish timeout")
                .unwrap()
                .unwrap();
        }
    }
}

fn new_order(user: i64, product: i64) -> NewOrder {
    let bytes = Seckill::new(user, product)
        .raw("unit_price", "3.00")
        .bytes();
    NewOrder::new(SeckillMessage::parse(&bytes).unwrap())
}

/// Creates `n` orders and changes some: a third cancelled (with a trace),
/// a sixth completed, the rest of the first half expired.
async fn changes(db: &TestDatabase, user: i64, n: i64) {
    let orders: Vec<NewOrder> = (1..=n).map(|p| new_order(user, p)).collect();
    db.storage.create_orders(&orders).await.unwrap();
    for (i, order) in orders.iter().enumerate() {
        let current = db.storage.get_order(order.order_id).await.unwrap().unwrap();
        let to = match i % 6 {
            0 | 3 => OrderStatus::Cancelled,
            1 => OrderStatus::Completed,
            _ => continue,
        };
        let cause = Cause::because("test").in_trace(Some(TRACE));
        db.storage
            .apply_transition(current, to, &cause)
            .await
            .unwrap();
    }
    db.execute(&format!(
        "UPDATE orders SET created_at = created_at - INTERVAL '1' DAY WHERE user_id = {user} AND status = 'pending' AND product_id <= {}",
        n / 2
    ))
    .await;
    db.storage
        .expire_unpaid(
            Utc::now() - chrono::Duration::hours(1),
            1000,
            &Cause::because("not paid within 30m"),
        )
        .await
        .unwrap();
}

async fn outbox(db: &TestDatabase) -> Vec<StoredEvent> {
    db.storage
        .list_events(EventFilter::default(), 100_000)
        .await
        .unwrap()
}

/// Every event of the outbox arrived exactly once (no faults here), each
/// order's in write order, keyed as the broker's binding says.
fn assert_delivered(events: &[StoredEvent], received: &[ReceivedEvent], broker: EventBroker) {
    let ids: HashSet<Uuid> = received.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), received.len(), "no event published twice");
    let want: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, want, "every event, and nothing else");
    let mut sent: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for r in received {
        sent.entry(r.order_id).or_default().push(r.id);
        match broker {
            EventBroker::Kafka => assert_eq!(r.key, r.order_id.to_string()),
            _ => assert_eq!(r.key, r.event_type),
        }
    }
    let mut written: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for e in events {
        written.entry(e.order_id).or_default().push(e.id);
        let r = received.iter().find(|r| r.id == e.id).unwrap();
        assert_eq!(r.event_type, e.event_type.as_str());
        assert_eq!(r.traceparent, e.traceparent, "the trace travels with it");
    }
    assert_eq!(sent, written, "per order, in the order written");
}

async fn every_event_arrives_once_in_order_from_two_relays(driver: Driver, broker: EventBroker) {
    let db = TestDatabase::new(driver).await;
    let names = Names::new();
    let settings = settings(&db, &names, broker);
    let subscriber = match broker {
        EventBroker::Kafka => Subscriber::kafka(&settings).await,
        _ => Subscriber::rabbitmq(&settings).await,
    };
    // Some events wait before the relays start, more come while they run.
    changes(&db, 1, 60).await;
    let relays = Relays::start(&settings, &db, 2);
    changes(&db, 2, 60).await;
    let events = outbox(&db).await;
    assert!(events.len() > 200, "{} events", events.len());
    assert!(events.iter().any(|e| e.traceparent.is_some()));
    let received = subscriber
        .wait_for(events.len(), Duration::from_secs(60))
        .await;
    relays.stop().await;
    assert_delivered(&events, &received, broker);
    assert_eq!(db.storage.event_backlog().await.unwrap().unpublished, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_from_two_relays_postgres_rabbitmq() {
    every_event_arrives_once_in_order_from_two_relays(Driver::Postgres, EventBroker::Rabbitmq)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_from_two_relays_mysql_rabbitmq() {
    every_event_arrives_once_in_order_from_two_relays(Driver::Mysql, EventBroker::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_from_two_relays_postgres_kafka() {
    every_event_arrives_once_in_order_from_two_relays(Driver::Postgres, EventBroker::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_from_two_relays_mysql_kafka() {
    every_event_arrives_once_in_order_from_two_relays(Driver::Mysql, EventBroker::Kafka).await;
}

/// PostgreSQL wakes the relay at the commit: an event is confirmed well
/// before the (here, long) poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_commit_wakes_the_relay_at_once() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, EventBroker::Rabbitmq);
    settings.events.poll_interval = Duration::from_secs(30);
    let subscriber = Subscriber::rabbitmq(&settings).await;
    let relays = Relays::start(&settings, &db, 1);
    // Let it claim nothing and go to sleep on its wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    db.storage.create_orders(&[new_order(3, 1)]).await.unwrap();
    subscriber.wait_for(1, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the commit, not the 30 s poll: {:?}",
        started.elapsed()
    );
    relays.stop().await;
}

/// The broker connection is cut while changes go on: nothing is marked
/// published that the broker did not confirm, the events wait in the
/// outbox, and publishing resumes by itself once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_loses_no_event_and_publishing_resumes_by_itself() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, EventBroker::Rabbitmq);
    let subscriber = Subscriber::rabbitmq(&settings).await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], settings.rabbitmq.port).into()).await;
    settings.rabbitmq.port = proxy.addr().port();
    let relays = Relays::start(&settings, &db, 1);
    changes(&db, 1, 30).await;
    let before = outbox(&db).await.len();
    subscriber.wait_for(before, Duration::from_secs(30)).await;

    proxy.cut();
    changes(&db, 2, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backlog = db.storage.event_backlog().await.unwrap();
    assert!(
        backlog.unpublished > 0,
        "nothing can be confirmed while the broker is cut"
    );
    proxy.heal();
    let events = outbox(&db).await;
    let received = subscriber
        .wait_for(events.len(), Duration::from_secs(60))
        .await;
    relays.stop().await;
    let ids: HashSet<Uuid> = received.iter().map(|r| r.id).collect();
    let want: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, want, "every event arrived (at least once)");
    assert_eq!(db.storage.event_backlog().await.unwrap().unpublished, 0);
}

/// A seckill message's `traceparent` header (AMQP or Kafka) continues into
/// its order's `order.created` event: the same trace, a span of the
/// worker's own; a malformed header is dropped, and a message without one
/// makes an event without one.
async fn a_messages_trace_continues_into_its_order_created_event(broker: EventBroker) {
    use order_core::service::OrderCreator;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let db = TestDatabase::new(Driver::Postgres).await;
    let names = Names::new();
    let mut settings = settings(&db, &names, broker);
    settings.kafka.enabled = broker == EventBroker::Kafka;
    let bodies: Vec<(Vec<u8>, Option<&str>)> = vec![
        (Seckill::new(1, 1).bytes(), Some(TRACE)),
        (Seckill::new(1, 2).bytes(), Some("00-not-a-trace")),
        (Seckill::new(1, 3).bytes(), None),
    ];
    let stop = CancellationToken::new();
    let creator = OrderCreator::new(db.storage.clone(), settings.retry_policy());
    let connected = Arc::new(Connected::default());
    let consumer = if broker == EventBroker::Kafka {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", settings.kafka.brokers.join(","));
        order_worker::kafka::create_topic(&config, &settings.kafka.topic)
            .await
            .unwrap();
        let producer: FutureProducer = config.create().unwrap();
        for (body, trace) in &bodies {
            let mut record = FutureRecord::to(&settings.kafka.topic)
                .key("1")
                .payload(body.as_slice());
            if let Some(trace) = trace {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(*trace),
                }));
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
        tokio::spawn(
            order_worker::kafka::KafkaConsumer::new(&settings, creator, connected)
                .run(stop.clone()),
        )
    } else {
        let connection =
            Connection::connect(&settings.rabbitmq.url(), ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        order_worker::rabbitmq::declare_topology(&channel, &settings.rabbitmq)
            .await
            .unwrap();
        for (body, trace) in &bodies {
            let mut headers = FieldTable::default();
            if let Some(trace) = trace {
                headers.insert("traceparent".into(), AMQPValue::LongString((*trace).into()));
            }
            channel
                .basic_publish(
                    settings.rabbitmq.exchange.as_str().into(),
                    settings.rabbitmq.routing_key.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    body,
                    lapin::BasicProperties::default().with_headers(headers),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let _ = connection.close(200, "".into()).await;
        tokio::spawn(
            order_worker::rabbitmq::RabbitConsumer::new(&settings, creator, connected)
                .run(stop.clone()),
        )
    };
    let started = Instant::now();
    while db.count("SELECT COUNT(*) FROM orders").await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "orders missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    consumer.await.unwrap().unwrap();

    let mut by_product = HashMap::new();
    for event in outbox(&db).await {
        let order = db.storage.get_order(event.order_id).await.unwrap().unwrap();
        by_product.insert(order.product_id, event.traceparent);
    }
    let continued = by_product[&1].clone().expect("the trace continues");
    assert_eq!(continued[..36], TRACE[..36], "the message's trace");
    assert_ne!(continued, TRACE, "a span of the worker's own");
    assert_eq!(by_product[&2], None, "a malformed header is dropped");
    assert_eq!(by_product[&3], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_trace_continues_into_its_order_created_event_rabbitmq() {
    a_messages_trace_continues_into_its_order_created_event(EventBroker::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_trace_continues_into_its_order_created_event_kafka() {
    a_messages_trace_continues_into_its_order_created_event(EventBroker::Kafka).await;
}
