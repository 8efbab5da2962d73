//! The outbox on both engines: one event per committed change, none for a
//! change that does not happen, claims in per-order write order, held claims,
//! listing and retention.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use std::sync::Mutex;

use order_core::domain::{Cause, EventType, NewOrder, OrderStatus, SeckillMessage};
use order_core::service::{Delivery, Publisher, Relay};
use order_core::storage::{
    ClaimOutcome, EventClaim, EventFilter, EventStatus, InsertOutcome, StorageError, StoredEvent,
};
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use uuid::Uuid;

order_testkit::on_both_engines!(
    every_committed_change_writes_exactly_one_event_with_the_order_in_it,
    a_refused_or_lost_change_and_a_rolled_back_row_write_no_event,
    expiry_writes_one_expired_event_per_order_with_the_reason,
    an_orders_later_event_waits_until_the_earlier_one_is_published,
    two_concurrent_relays_claim_disjoint_events_covering_all_of_them,
    a_claim_dropped_unfinished_leaves_its_events_to_the_next_claim,
    events_are_listed_by_status_and_order_and_purged_when_published_and_old,
    the_relay_marks_confirmed_reschedules_refused_and_releases_unsent_events,
    a_pool_without_events_commits_changes_and_writes_no_event,
    an_event_whose_order_was_deleted_is_refused_and_holds_back_nothing_else,
    a_claim_needs_no_second_connection,
);

fn new_order(user: i64, product: i64, price: &str) -> NewOrder {
    let bytes = Seckill::new(user, product)
        .raw("unit_price", price)
        .seckill_id(&format!("sk_{product}"))
        .bytes();
    NewOrder::new(SeckillMessage::parse(&bytes).unwrap())
}

async fn all_events(db: &TestDatabase) -> Vec<StoredEvent> {
    db.storage
        .list_events(EventFilter::default(), 100_000)
        .await
        .unwrap()
}

fn body(event: &StoredEvent) -> serde_json::Value {
    serde_json::from_str(&event.body).unwrap()
}

async fn every_committed_change_writes_exactly_one_event_with_the_order_in_it(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let a = new_order(1, 10, "19.99");
    let b = new_order(2, 20, "5");
    // The same purchase as `a` in the batch, and again in a second batch.
    let batch = vec![a.clone(), b.clone(), new_order(1, 10, "19.99")];
    db.storage.create_orders(&batch).await.unwrap();
    db.storage
        .create_orders(&[new_order(1, 10, "19.99")])
        .await
        .unwrap();
    let created = all_events(&db).await;
    assert_eq!(created.len(), 2, "one event per order, none for duplicates");
    for (event, order) in created.iter().zip([&a, &b]) {
        assert_eq!(event.event_type, EventType::Created);
        assert_eq!(event.order_id, order.order_id);
        assert_eq!(event.status, EventStatus::Pending);
        let json = body(event);
        assert_eq!(json["id"], event.id.to_string());
        assert_eq!(json["subject"], order.order_id.to_string());
        assert_eq!(json["data"]["user_id"], order.message.user_id.get());
        assert_eq!(json["data"]["status"], "pending");
    }
    assert_eq!(body(&created[0])["data"]["unit_price"], "19.99");

    db.storage
        .transition_order(a.order_id, OrderStatus::Completed)
        .await
        .unwrap();
    let current = db.storage.get_order(b.order_id).await.unwrap().unwrap();
    let cause = Cause::because("cancelled by the buyer").in_trace(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    db.storage
        .apply_transition(current, OrderStatus::Cancelled, &cause)
        .await
        .unwrap();

    let events = all_events(&db).await;
    assert_eq!(events.len(), 4);
    let completed = &events[2];
    assert_eq!(completed.event_type, EventType::Completed);
    assert_eq!(completed.order_id, a.order_id);
    assert_eq!(body(completed)["data"]["previous_status"], "pending");
    assert_eq!(body(completed)["data"]["status"], "completed");
    assert_eq!(body(completed)["data"]["version"], 1);
    let cancelled = &events[3];
    assert_eq!(cancelled.event_type, EventType::Cancelled);
    let json = body(cancelled);
    assert_eq!(json["data"]["reason"], "cancelled by the buyer");
    assert_eq!(json["data"]["product_id"], 20);
    assert_eq!(json["data"]["quantity"], 1);
    assert_eq!(json["data"]["seckill_id"], "sk_20");
    let trace = cancelled.traceparent.clone().unwrap();
    assert!(
        trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && trace.ends_with("-01"),
        "the caller's trace, continued: {trace}"
    );
    assert_eq!(json["traceparent"], trace);
    let ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4, "distinct ids");
}

async fn a_refused_or_lost_change_and_a_rolled_back_row_write_no_event(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // A row the database refuses (its total overflows NUMERIC(12,2)) is
    // narrowed out after the whole batch rolled back: its neighbours'
    // events are written once, its own never.
    let mut batch: Vec<NewOrder> = (1..=5).map(|p| new_order(3, p, "10.00")).collect();
    let overflow = NewOrder::new(
        SeckillMessage::parse(
            &Seckill::new(3, 100)
                .quantity(2)
                .raw("unit_price", "9999999999.99")
                .bytes(),
        )
        .unwrap(),
    );
    batch.insert(2, overflow.clone());
    let outcomes = db.storage.create_orders(&batch).await.unwrap();
    assert!(matches!(outcomes[2], InsertOutcome::Failed(_)));
    let events = all_events(&db).await;
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.order_id != overflow.order_id));

    // Refused by the status machine.
    let first = batch[0].order_id;
    db.storage
        .transition_order(first, OrderStatus::Completed)
        .await
        .unwrap();
    let refused = db
        .storage
        .transition_order(first, OrderStatus::Cancelled)
        .await;
    assert!(matches!(refused, Err(StorageError::Transition(_))));
    // Lost: written against a version that another change moved past.
    let second = batch[1].order_id;
    let stale = db.storage.get_order(second).await.unwrap().unwrap();
    db.storage
        .transition_order(second, OrderStatus::Cancelled)
        .await
        .unwrap();
    let lost = db
        .storage
        .apply_transition(stale, OrderStatus::Completed, &Cause::default())
        .await;
    assert!(matches!(lost, Err(StorageError::Transition(_))));

    let events = all_events(&db).await;
    let types: Vec<EventType> = events.iter().skip(5).map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::Completed, EventType::Cancelled]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_events").await,
        7,
        "nothing else was written"
    );
}

async fn expiry_writes_one_expired_event_per_order_with_the_reason(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=4).map(|p| new_order(4, p, "2.50")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    db.storage
        .transition_order(orders[0].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    db.execute(match driver {
        Driver::Postgres => "UPDATE orders SET created_at = created_at - INTERVAL '1 hour'",
        Driver::Mysql => "UPDATE orders SET created_at = created_at - INTERVAL 1 HOUR",
    })
    .await;
    let cause = Cause::because("not paid within 30m");
    let cutoff = Utc::now() - chrono::Duration::minutes(30);
    let expired = db.storage.expire_unpaid(cutoff, 2, &cause).await.unwrap();
    let more = db.storage.expire_unpaid(cutoff, 2, &cause).await.unwrap();
    assert_eq!(expired.len() + more.len(), 3);
    assert!(
        db.storage
            .expire_unpaid(cutoff, 2, &cause)
            .await
            .unwrap()
            .is_empty()
    );

    let events: Vec<StoredEvent> = all_events(&db)
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::Expired)
        .collect();
    let ids: HashSet<Uuid> = events.iter().map(|e| e.order_id).collect();
    let want: HashSet<Uuid> = orders[1..].iter().map(|o| o.order_id).collect();
    assert_eq!(ids, want);
    assert_eq!(events.len(), 3);
    for event in &events {
        let json = body(event);
        assert_eq!(json["type"], "order.expired");
        assert_eq!(json["data"]["reason"], "not paid within 30m");
        assert_eq!(json["data"]["previous_status"], "pending");
        assert_eq!(json["data"]["status"], "cancelled");
        assert_eq!(json["data"]["user_id"], 4);
        assert_eq!(json["data"]["quantity"], 1);
        assert_eq!(json["data"]["total_amount"], "2.50");
    }
}

/// Publishes every event of `claim`, and finishes it.
async fn publish_all(claim: EventClaim) -> u64 {
    let published = claim.events().iter().map(|e| e.seq).collect();
    claim
        .finish(&ClaimOutcome {
            published,
            ..ClaimOutcome::default()
        })
        .await
        .unwrap()
}

async fn an_orders_later_event_waits_until_the_earlier_one_is_published(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (a, b) = (new_order(5, 1, "1"), new_order(5, 2, "1"));
    db.storage
        .create_orders(&[a.clone(), b.clone()])
        .await
        .unwrap();
    db.storage
        .transition_order(a.order_id, OrderStatus::Cancelled)
        .await
        .unwrap();

    // a: created, cancelled; b: created. Only the first of each order.
    let first = db.storage.claim_events(100).await.unwrap();
    let claimed = first.events().to_vec();
    let types: Vec<(Uuid, EventType)> =
        claimed.iter().map(|e| (e.order_id, e.event_type)).collect();
    assert_eq!(
        types,
        [
            (a.order_id, EventType::Created),
            (b.order_id, EventType::Created)
        ]
    );
    assert!(
        db.storage
            .claim_events(100)
            .await
            .unwrap()
            .events()
            .is_empty(),
        "claimed events are not claimed twice, and a's cancel waits"
    );

    // a's created is refused by the broker: a's cancel still waits, b goes on.
    let retry_at = Utc::now() + chrono::Duration::hours(1);
    let published = first
        .finish(&ClaimOutcome {
            published: vec![claimed[1].seq],
            refused: vec![(claimed[0].seq, "NOT_FOUND - no exchange".into(), retry_at)],
        })
        .await
        .unwrap();
    assert_eq!(published, 1);
    assert!(
        db.storage
            .claim_events(100)
            .await
            .unwrap()
            .events()
            .is_empty()
    );
    let failing = db
        .storage
        .list_events(
            EventFilter {
                status: Some(EventStatus::Failing),
                ..EventFilter::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].attempts, 1);
    assert_eq!(
        failing[0].last_error.as_deref(),
        Some("NOT_FOUND - no exchange")
    );

    // Once due again and published, the cancel follows.
    db.execute("UPDATE order_events SET next_attempt_at = created_at")
        .await;
    let again = db.storage.claim_events(100).await.unwrap();
    assert_eq!(again.events().len(), 1);
    assert_eq!(again.events()[0].event_type, EventType::Created);
    publish_all(again).await;
    let last = db.storage.claim_events(100).await.unwrap();
    assert_eq!(last.events().len(), 1);
    assert_eq!(
        (last.events()[0].order_id, last.events()[0].event_type),
        (a.order_id, EventType::Cancelled)
    );
}

async fn two_concurrent_relays_claim_disjoint_events_covering_all_of_them(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=300).map(|p| new_order(6, p, "1")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    let relay = |storage: order_core::storage::Storage| async move {
        let mut mine = Vec::new();
        loop {
            let claim = storage.claim_events(17).await.unwrap();
            if claim.events().is_empty() {
                return mine;
            }
            let seqs: Vec<i64> = claim.events().iter().map(|e| e.seq).collect();
            // The claim is held while "publishing".
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(publish_all(claim).await, seqs.len() as u64);
            mine.extend(seqs);
        }
    };
    let (one, two) = tokio::join!(
        tokio::spawn(relay(db.storage.clone())),
        tokio::spawn(relay(db.storage.clone()))
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    let a: HashSet<i64> = one.iter().copied().collect();
    let b: HashSet<i64> = two.iter().copied().collect();
    assert!(a.is_disjoint(&b), "no event claimed by both");
    assert!(!a.is_empty() && !b.is_empty(), "both relays took a share");
    assert_eq!(a.len() + b.len(), 300);
    assert_eq!(one.len() + two.len(), 300, "none claimed twice by one");
    assert_eq!(db.storage.event_backlog().await.unwrap().unpublished, 0);
}

async fn a_claim_dropped_unfinished_leaves_its_events_to_the_next_claim(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let order = new_order(7, 1, "1");
    db.storage
        .create_orders(std::slice::from_ref(&order))
        .await
        .unwrap();
    let first = db.storage.claim_events(10).await.unwrap();
    assert_eq!(first.events().len(), 1);
    let id = first.events()[0].id;
    let sent = first.events()[0].body.clone();
    assert!(
        db.storage
            .claim_events(10)
            .await
            .unwrap()
            .events()
            .is_empty(),
        "held while the first relay publishes"
    );
    // The relay that held it died: its transaction is rolled back (by the
    // pool, an instant after the drop).
    drop(first);
    let started = std::time::Instant::now();
    let second = loop {
        let claim = db.storage.claim_events(10).await.unwrap();
        if !claim.events().is_empty() || started.elapsed() > Duration::from_secs(10) {
            break claim;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(second.events().len(), 1);
    assert_eq!(second.events()[0].id, id, "the same event, the same id");
    assert_eq!(second.events()[0].body, sent, "the same bytes");
    assert_eq!(second.events()[0].attempts, 0, "a dead relay is no attempt");
    assert_eq!(publish_all(second).await, 1);
    let backlog = db.storage.event_backlog().await.unwrap();
    assert_eq!((backlog.unpublished, backlog.oldest), (0, None));
}

async fn events_are_listed_by_status_and_order_and_purged_when_published_and_old(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=4).map(|p| new_order(8, p, "1")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    let claim = db.storage.claim_events(2).await.unwrap();
    let seqs: Vec<i64> = claim.events().iter().map(|e| e.seq).collect();
    publish_all(claim).await;

    let backlog = db.storage.event_backlog().await.unwrap();
    assert_eq!(backlog.unpublished, 2);
    assert!(backlog.oldest.is_some());
    let list = |status, order_id, after| {
        let storage = db.storage.clone();
        async move {
            storage
                .list_events(
                    EventFilter {
                        status,
                        order_id,
                        after,
                    },
                    10,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        list(Some(EventStatus::Published), None, None).await.len(),
        2
    );
    assert_eq!(list(Some(EventStatus::Pending), None, None).await.len(), 2);
    assert!(
        list(Some(EventStatus::Failing), None, None)
            .await
            .is_empty()
    );
    let one = list(None, Some(orders[3].order_id), None).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].order_id, orders[3].order_id);
    let after = list(None, None, Some(seqs[1])).await;
    assert_eq!(after.len(), 2, "paging after a seq");

    // Published an hour ago: purged; unpublished ones never are.
    db.execute(match driver {
        Driver::Postgres => "UPDATE order_events SET published_at = published_at - INTERVAL '1 hour' WHERE published_at IS NOT NULL",
        Driver::Mysql => "UPDATE order_events SET published_at = published_at - INTERVAL 1 HOUR WHERE published_at IS NOT NULL",
    })
    .await;
    let cutoff = Utc::now() - chrono::Duration::minutes(30);
    assert_eq!(
        db.storage.purge_published_events(cutoff, 1).await.unwrap(),
        1
    );
    assert_eq!(
        db.storage.purge_published_events(cutoff, 10).await.unwrap(),
        1
    );
    assert_eq!(
        db.storage
            .purge_published_events(Utc::now(), 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM order_events").await, 2);
}

/// A broker that refuses the events of one order, is unreachable while
/// `down`, and confirms everything else, remembering what it confirmed.
struct FakeBroker {
    refuse: Uuid,
    down: std::sync::atomic::AtomicBool,
    confirmed: Mutex<Vec<(Uuid, EventType)>>,
}

impl FakeBroker {
    fn new(refuse: Uuid, down: bool) -> Self {
        Self {
            refuse,
            down: down.into(),
            confirmed: Mutex::new(Vec::new()),
        }
    }
}

/// A relay whose refused events wait an hour: a test sees them stay.
fn relay_waiting_an_hour(db: &TestDatabase) -> Relay {
    Relay::new(
        db.storage.clone(),
        100,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    )
}

impl Publisher for FakeBroker {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn publish(&self, events: &[StoredEvent]) -> Vec<Delivery> {
        let orders: HashSet<Uuid> = events.iter().map(|e| e.order_id).collect();
        assert_eq!(orders.len(), events.len(), "one event per order per round");
        events
            .iter()
            .map(|e| {
                if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                    Delivery::Unsent("connection refused".into())
                } else if e.order_id == self.refuse {
                    Delivery::Refused("the broker nacked the event".into())
                } else {
                    self.confirmed
                        .lock()
                        .unwrap()
                        .push((e.order_id, e.event_type));
                    Delivery::Confirmed
                }
            })
            .collect()
    }
}

async fn the_relay_marks_confirmed_reschedules_refused_and_releases_unsent_events(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=3).map(|p| new_order(9, p, "1")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    for order in &orders {
        db.storage
            .transition_order(order.order_id, OrderStatus::Cancelled)
            .await
            .unwrap();
    }
    let broker = FakeBroker::new(orders[0].order_id, true);
    let relay = relay_waiting_an_hour(&db);

    // Unreachable: nothing is marked, nothing counts as an attempt, and the
    // events can be claimed again at once.
    let round = relay.run_once(&broker).await.unwrap();
    assert_eq!((round.claimed, round.unsent, round.published), (3, 3, 0));
    assert_eq!(round.unsent_reason.as_deref(), Some("connection refused"));
    assert!(
        all_events(&db)
            .await
            .iter()
            .all(|e| e.status == EventStatus::Pending)
    );

    broker
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let round = relay.run_once(&broker).await.unwrap();
    assert_eq!((round.claimed, round.published, round.refused), (3, 2, 1));
    let round = relay.run_once(&broker).await.unwrap();
    assert_eq!(
        (round.claimed, round.published),
        (2, 2),
        "the cancels of the confirmed orders follow; the refused order's waits"
    );
    assert_eq!(relay.run_once(&broker).await.unwrap().claimed, 0);

    let confirmed = broker.confirmed.lock().unwrap().clone();
    for order in &orders[1..] {
        let mine: Vec<EventType> = confirmed
            .iter()
            .filter(|(id, _)| *id == order.order_id)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(mine, [EventType::Created, EventType::Cancelled], "in order");
    }
    let stuck = all_events(&db).await;
    let stuck: Vec<&StoredEvent> = stuck
        .iter()
        .filter(|e| e.order_id == orders[0].order_id)
        .collect();
    assert_eq!(stuck[0].status, EventStatus::Failing);
    assert_eq!(stuck[0].attempts, 1);
    assert!(stuck[0].next_attempt_at > Utc::now() + chrono::Duration::minutes(20));
    assert_eq!(stuck[1].status, EventStatus::Pending);
    let backlog = db.storage.event_backlog().await.unwrap();
    assert_eq!(backlog.unpublished, 2);
}

async fn a_pool_without_events_commits_changes_and_writes_no_event(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let storage = db.storage.clone().without_events();
    assert!(!storage.writes_events() && db.storage.writes_events());
    let orders: Vec<NewOrder> = (1..=3).map(|p| new_order(10, p, "1")).collect();
    storage.create_orders(&orders).await.unwrap();
    storage
        .transition_order(orders[0].order_id, OrderStatus::Cancelled)
        .await
        .unwrap();
    db.execute(match driver {
        Driver::Postgres => "UPDATE orders SET created_at = created_at - INTERVAL '1 hour'",
        Driver::Mysql => "UPDATE orders SET created_at = created_at - INTERVAL 1 HOUR",
    })
    .await;
    let expired = storage
        .expire_unpaid(Utc::now(), 10, &Cause::default())
        .await
        .unwrap();
    assert_eq!(expired.len(), 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 3);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_events").await, 0);
}

/// An order deleted by hand leaves events that cannot be rendered: the
/// relay does not send them, marks them refused with the reason (visible
/// to operators, tried again later), and the other orders' events go on.
async fn an_event_whose_order_was_deleted_is_refused_and_holds_back_nothing_else(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (gone, kept) = (new_order(10, 1, "1"), new_order(10, 2, "1"));
    db.storage
        .create_orders(&[gone.clone(), kept.clone()])
        .await
        .unwrap();
    db.execute(
        "DELETE FROM order_items WHERE order_id IN (SELECT order_id FROM orders WHERE product_id = 1 AND user_id = 10)",
    )
    .await;
    db.execute("DELETE FROM orders WHERE product_id = 1 AND user_id = 10")
        .await;
    let broker = FakeBroker::new(Uuid::nil(), false);
    let relay = relay_waiting_an_hour(&db);
    let round = relay.run_once(&broker).await.unwrap();
    assert_eq!((round.claimed, round.published, round.refused), (2, 1, 1));
    assert_eq!(
        broker.confirmed.lock().unwrap().clone(),
        [(kept.order_id, EventType::Created)],
        "the broker never saw the unrenderable event"
    );
    let events = all_events(&db).await;
    let orphan = events.iter().find(|e| e.order_id == gone.order_id).unwrap();
    assert_eq!(orphan.status, EventStatus::Failing);
    assert_eq!(orphan.body, "null");
    assert_eq!(
        orphan.last_error,
        Some(format!(
            "its order {} is not in the orders table",
            gone.order_id
        ))
    );
    assert_eq!(relay.run_once(&broker).await.unwrap().claimed, 0);
}

/// A claim reads its events' orders on its own connection: with a pool of
/// one (`database.max_connections: 1`), it neither waits for a second
/// connection nor fails.
async fn a_claim_needs_no_second_connection(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let storage = order_core::storage::Storage::connect(&order_runtime::config::DatabaseSettings {
        max_connections: 1,
        ..db.settings.clone()
    })
    .unwrap();
    storage
        .create_orders(&[new_order(11, 1, "1"), new_order(11, 2, "1")])
        .await
        .unwrap();
    let claim = tokio::time::timeout(Duration::from_secs(5), storage.claim_events(10))
        .await
        .expect("a claim on a pool of one does not wait for a second connection")
        .unwrap();
    assert_eq!(claim.events().len(), 2);
    assert!(claim.orphans().is_empty());
    assert_eq!(publish_all(claim).await, 2);
    let listed = storage
        .list_events(EventFilter::default(), 10)
        .await
        .unwrap();
    assert!(listed.iter().all(|e| e.status == EventStatus::Published));
}
