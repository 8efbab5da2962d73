//! The compensator's jobs against real databases and Redis: storage-heavy
//! tests run on PostgreSQL and on MariaDB.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use order_compensator::{Compensator, Job, JobReport};
use order_core::cache::Cached;
use order_core::domain::{
    EventType, FailureFilter, FailureStatus, NewFailure, NewOrder, OrderStatus, SeckillMessage,
    Source,
};
use order_core::storage::{ClaimOutcome, EventFilter, PageRequest, Storage};
use order_runtime::config::{Driver, Settings};
use order_testkit::fixtures::Seckill;
use order_testkit::{TestDatabase, redis_settings};

order_testkit::on_both_engines!(
    three_instances_retry_1000_due_failures_each_exactly_once,
    a_failure_whose_order_exists_succeeds_with_that_order,
    a_failure_that_keeps_failing_backs_off_and_ends_failed_at_max_retries,
    a_claim_left_by_a_killed_process_is_claimed_again_after_its_lease_and_completes,
    unpaid_orders_past_the_timeout_are_cancelled_and_leave_the_cache,
    purge_removes_only_resolved_failures_older_than_the_retention,
    compact_stats_folds_closed_days_and_keeps_their_figures,
);

fn message(user: i64, product: i64, price: &str, quantity: i32) -> Vec<u8> {
    Seckill::new(user, product)
        .quantity(quantity.into())
        .unit_price(price)
        .timestamp("2024-01-01T12:00:00Z")
        .bytes()
}

fn settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings {
        database: db.settings.clone(),
        redis: redis_settings(),
        ..Settings::default()
    };
    settings.compensator.batch_size = 100;
    settings
}

fn compensator(settings: &Settings) -> Compensator {
    // Each instance has its own pool, as separate replicas would.
    let storage = Storage::connect(&settings.database).unwrap();
    Compensator::new(settings.clone(), storage).unwrap()
}

async fn record_due(db: &TestDatabase, payloads: &[Vec<u8>]) -> Vec<i64> {
    let due = Utc::now() - chrono::Duration::seconds(1);
    let failures: Vec<NewFailure> = payloads
        .iter()
        .map(|p| NewFailure::retryable(p, "earlier write failed", Source::Rabbitmq, due))
        .collect();
    let mut ids = Vec::new();
    for chunk in failures.chunks(200) {
        ids.extend(db.storage.record_failures(chunk).await.unwrap());
    }
    ids
}

async fn three_instances_retry_1000_due_failures_each_exactly_once(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let payloads: Vec<Vec<u8>> = (1..=1000)
        .map(|i| message(i / 50 + 1, i % 50 + 1, "9.99", 1))
        .collect();
    let ids = record_due(&db, &payloads).await;
    let settings = settings(&db);

    let instances: Vec<Arc<Compensator>> =
        (0..3).map(|_| Arc::new(compensator(&settings))).collect();
    let runs = instances.iter().map(|c| {
        let c = c.clone();
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            let mut succeeded = 0;
            loop {
                let report = c.run_once(Job::RetryFailures).await.unwrap();
                let JobReport::RetryFailures {
                    claimed: n,
                    succeeded: s,
                    lost,
                    ..
                } = report
                else {
                    panic!("{report:?}")
                };
                assert_eq!(lost, 0);
                if n == 0 {
                    return (claimed, succeeded);
                }
                succeeded += s;
                claimed.push(n);
            }
        })
    });
    let mut total_claimed = 0;
    let mut total_succeeded = 0;
    for run in runs.collect::<Vec<_>>() {
        let (claimed, succeeded) = run.await.unwrap();
        total_claimed += claimed.iter().sum::<usize>();
        total_succeeded += succeeded;
    }
    assert_eq!(
        total_claimed, 1000,
        "every failure claimed exactly once across the three"
    );
    assert_eq!(total_succeeded, 1000);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 1000);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM order_failures WHERE status = 'success' AND order_id IS NOT NULL"
        )
        .await,
        1000
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE retry_count = 0")
            .await,
        1000,
        "success is not a retry"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures f JOIN orders o ON o.order_id = f.order_id")
            .await,
        1000,
        "each failure points at its own order"
    );
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>().len(), 1000);
}

async fn a_failure_whose_order_exists_succeeds_with_that_order(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let payload = message(7, 7, "5.00", 1);
    let ids = record_due(&db, std::slice::from_ref(&payload)).await;
    // Meanwhile the worker created the order from a redelivery.
    let order = NewOrder::new(SeckillMessage::parse(&payload).unwrap());
    db.storage
        .create_orders(std::slice::from_ref(&order))
        .await
        .unwrap();

    let report = compensator(&settings(&db))
        .run_once(Job::RetryFailures)
        .await
        .unwrap();
    assert!(
        matches!(
            report,
            JobReport::RetryFailures {
                succeeded: 1,
                backlog: 0,
                ..
            }
        ),
        "{report:?}"
    );
    let failure = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (failure.status, failure.order_id),
        (FailureStatus::Success, Some(order.order_id))
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM orders").await,
        1,
        "no second order"
    );
}

async fn a_failure_that_keeps_failing_backs_off_and_ends_failed_at_max_retries(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // Valid, but 9,999,999,999.99 × 2 overflows the amount column: it can never be written.
    let ids = record_due(&db, &[message(1, 1, "9999999999.99", 2)]).await;
    let mut settings = settings(&db);
    settings.compensator.max_retries = 3;
    settings.compensator.backoff_base = Duration::from_secs(10);
    settings.compensator.backoff_max = Duration::from_secs(25);
    let compensator = compensator(&settings);
    let make_due = match driver {
        Driver::Postgres => "UPDATE order_failures SET next_retry_at = now() - interval '1 second'",
        Driver::Mysql => {
            "UPDATE order_failures SET next_retry_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND"
        }
    };

    // Retries 1 and 2 reschedule: delays of 20 s then 25 s (capped), each with jitter in the upper half.
    for (retry, full_delay) in [(1, 20.0), (2, 25.0)] {
        let before = Utc::now();
        let report = compensator.run_once(Job::RetryFailures).await.unwrap();
        assert!(
            matches!(report, JobReport::RetryFailures { rescheduled: 1, .. }),
            "{report:?}"
        );
        let failure = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (failure.status, failure.retry_count),
            (FailureStatus::Pending, retry)
        );
        assert!(
            failure.error_message.contains("22003"),
            "{}",
            failure.error_message
        );
        #[allow(clippy::cast_precision_loss)]
        let delay = (failure.next_retry_at - before).num_milliseconds() as f64 / 1000.0;
        assert!(
            delay >= full_delay / 2.0 - 0.5 && delay <= full_delay + 0.5,
            "retry {retry}: due in {delay}s"
        );
        let again = compensator.run_once(Job::RetryFailures).await.unwrap();
        assert!(
            matches!(again, JobReport::RetryFailures { claimed: 0, .. }),
            "not due yet: {again:?}"
        );
        db.execute(make_due).await;
    }
    let report = compensator.run_once(Job::RetryFailures).await.unwrap();
    assert!(
        matches!(
            report,
            JobReport::RetryFailures {
                failed: 1,
                backlog: 0,
                ..
            }
        ),
        "{report:?}"
    );
    let failure = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (failure.status, failure.retry_count),
        (FailureStatus::Failed, 3)
    );
    assert!(
        failure.error_message.starts_with("gave up after 3 retries"),
        "{}",
        failure.error_message
    );
    db.execute(make_due).await;
    let after = compensator.run_once(Job::RetryFailures).await.unwrap();
    assert!(
        matches!(after, JobReport::RetryFailures { claimed: 0, .. }),
        "a failed failure is not retried: {after:?}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 0);
}

async fn a_claim_left_by_a_killed_process_is_claimed_again_after_its_lease_and_completes(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    let ids = record_due(&db, &[message(3, 3, "1.00", 1)]).await;
    // A process claimed it and died before resolving.
    let dead = db
        .storage
        .claim_failures(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let compensator = compensator(&settings(&db));
    let report = compensator.run_once(Job::RetryFailures).await.unwrap();
    assert!(
        matches!(report, JobReport::RetryFailures { claimed: 0, .. }),
        "still leased: {report:?}"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = compensator.run_once(Job::RetryFailures).await.unwrap();
    assert!(
        matches!(
            report,
            JobReport::RetryFailures {
                released: 1,
                claimed: 1,
                succeeded: 1,
                ..
            }
        ),
        "{report:?}"
    );
    let failure = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
    assert_eq!(failure.status, FailureStatus::Success);
    // The dead process's lease can no longer resolve anything.
    assert!(
        !db.storage
            .mark_failure_failed(ids[0], &dead[0].1, "late")
            .await
            .unwrap()
    );
}

async fn unpaid_orders_past_the_timeout_are_cancelled_and_leave_the_cache(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=4)
        .map(|p| NewOrder::new(SeckillMessage::parse(&message(9, p, "2.00", 1)).unwrap()))
        .collect();
    db.storage.create_orders(&orders).await.unwrap();
    db.storage
        .transition_order(orders[2].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    // Products 1-3 are 31 minutes old (3 is paid); 4 is fresh.
    db.execute(match driver {
        Driver::Postgres => "UPDATE orders SET created_at = now() - interval '31 minutes' WHERE product_id <= 3",
        Driver::Mysql => "UPDATE orders SET created_at = UTC_TIMESTAMP(6) - INTERVAL 31 MINUTE WHERE product_id <= 3",
    })
    .await;
    let mut settings = settings(&db);
    settings.compensator.batch_size = 1; // several statements
    let compensator = compensator(&settings);
    for order in &orders {
        let stored = db.storage.get_order(order.order_id).await.unwrap().unwrap();
        compensator.cache().put(&stored).await;
        assert!(
            matches!(
                compensator.cache().get(order.order_id).await,
                Cached::Hit(_)
            ),
            "cache reachable"
        );
    }

    let report = compensator.run_once(Job::ExpireUnpaid).await.unwrap();
    assert_eq!(report, JobReport::ExpireUnpaid { expired: 2 });
    let expired = db
        .storage
        .list_events(EventFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == EventType::Expired)
        .collect::<Vec<_>>();
    assert_eq!(
        expired.iter().map(|e| e.order_id).collect::<HashSet<_>>(),
        HashSet::from([orders[0].order_id, orders[1].order_id])
    );
    for event in &expired {
        let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["data"]["reason"], "not paid within 30m");
    }
    let expected = [
        OrderStatus::Cancelled,
        OrderStatus::Cancelled,
        OrderStatus::Completed,
        OrderStatus::Pending,
    ];
    for (order, status) in orders.iter().zip(expected) {
        assert_eq!(
            db.storage
                .get_order(order.order_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            status
        );
        let cached = compensator.cache().get(order.order_id).await;
        if status == OrderStatus::Cancelled {
            assert_eq!(
                cached,
                Cached::Unknown,
                "an expired order's cache entry is deleted"
            );
        } else {
            assert!(
                matches!(cached, Cached::Hit(_)),
                "untouched orders stay cached"
            );
        }
    }
    assert_eq!(
        compensator.run_once(Job::ExpireUnpaid).await.unwrap(),
        JobReport::ExpireUnpaid { expired: 0 }
    );

    settings.orders.payment_timeout = Duration::ZERO;
    db.execute("UPDATE orders SET created_at = created_at - INTERVAL '1' DAY")
        .await;
    let disabled = self::compensator(&settings);
    assert_eq!(
        disabled.run_once(Job::ExpireUnpaid).await.unwrap(),
        JobReport::ExpireUnpaid { expired: 0 },
        "0 disables expiry"
    );
}

async fn purge_removes_only_resolved_failures_older_than_the_retention(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let mut failures: Vec<NewFailure> = (0..5)
        .map(|i| {
            NewFailure::poison(
                format!("old {i}").as_bytes(),
                "bad",
                Source::Kafka,
                Utc::now(),
            )
        })
        .collect();
    failures.push(NewFailure::poison(
        b"recent",
        "bad",
        Source::Kafka,
        Utc::now(),
    ));
    failures.push(NewFailure::retryable(
        b"old but pending",
        "x",
        Source::Kafka,
        Utc::now(),
    ));
    let ids = db.storage.record_failures(&failures).await.unwrap();
    let old: Vec<String> = ids[..5]
        .iter()
        .chain(&ids[6..])
        .map(ToString::to_string)
        .collect();
    db.execute(&format!(
        "UPDATE order_failures SET updated_at = updated_at - INTERVAL '8' DAY WHERE id IN ({})",
        old.join(", ")
    ))
    .await;
    // Order events: three published (two of them 8 days ago), one not.
    let orders: Vec<NewOrder> = (1..=4)
        .map(|p| NewOrder::new(SeckillMessage::parse(&message(3, p, "1.00", 1)).unwrap()))
        .collect();
    db.storage.create_orders(&orders).await.unwrap();
    let claim = db.storage.claim_events(3).await.unwrap();
    let seqs: Vec<i64> = claim.events().iter().map(|e| e.seq).collect();
    claim
        .finish(&ClaimOutcome {
            published: seqs.clone(),
            ..ClaimOutcome::default()
        })
        .await
        .unwrap();
    db.execute(&format!(
        "UPDATE order_events SET published_at = published_at - INTERVAL '8' DAY WHERE seq IN ({}, {})",
        seqs[0], seqs[1]
    ))
    .await;
    let mut settings = settings(&db);
    settings.compensator.batch_size = 2; // three statements
    let report = compensator(&settings)
        .run_once(Job::PurgeResolved)
        .await
        .unwrap();
    assert_eq!(
        report,
        JobReport::PurgeResolved {
            purged: 5,
            purged_events: 2
        }
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM order_events").await, 2);
    let left = db
        .storage
        .list_failures(
            &FailureFilter::default(),
            PageRequest {
                page: 1,
                page_size: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        left.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![ids[6], ids[5]]
    );
}

#[tokio::test]
async fn a_job_never_overlaps_itself_in_one_process() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let payloads: Vec<Vec<u8>> = (1..=2000).map(|i| message(i, 1, "1.00", 1)).collect();
    record_due(&db, &payloads).await;
    let mut settings = settings(&db);
    settings.compensator.batch_size = 2000;
    let compensator = Arc::new(compensator(&settings));
    let first = tokio::spawn({
        let c = compensator.clone();
        async move { c.run_once(Job::RetryFailures).await.unwrap() }
    });
    // The first run holds its job while it claims, writes and resolves 2,000
    // failures: wait until its claims are visible, then try a second run.
    while db
        .count("SELECT COUNT(*) FROM order_failures WHERE status = 'processing'")
        .await
        == 0
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = compensator.run_once(Job::RetryFailures).await.unwrap();
    assert_eq!(
        second,
        JobReport::Skipped {
            skipped: Job::RetryFailures
        }
    );
    let other_job = compensator.run_once(Job::PurgeResolved).await.unwrap();
    assert_eq!(
        other_job,
        JobReport::PurgeResolved {
            purged: 0,
            purged_events: 0
        },
        "other jobs still run"
    );
    let first = first.await.unwrap();
    assert!(
        matches!(
            first,
            JobReport::RetryFailures {
                succeeded: 2000,
                ..
            }
        ),
        "{first:?}"
    );
}

async fn compact_stats_folds_closed_days_and_keeps_their_figures(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=24)
        .map(|p| NewOrder::new(SeckillMessage::parse(&message(5, p, "3.00", 1)).unwrap()))
        .collect();
    db.storage.create_orders(&orders).await.unwrap();
    let today = Utc::now().date_naive();
    // Yesterday's orders (moved by hand, then rebuilt), each paid in a
    // transaction of its own: their rollups spread over the slots.
    db.execute(match driver {
        Driver::Postgres => "UPDATE orders SET created_at = now() - interval '1 day'",
        Driver::Mysql => "UPDATE orders SET created_at = UTC_TIMESTAMP(6) - INTERVAL 1 DAY",
    })
    .await;
    // The days they may be on, should midnight pass meanwhile.
    let first = today.pred_opt().unwrap().pred_opt().unwrap();
    let tomorrow = today.succ_opt().unwrap();
    for day in first.iter_days().take(4) {
        db.storage.rebuild_stats_day(day).await.unwrap();
    }
    for order in &orders {
        db.storage
            .transition_order(order.order_id, OrderStatus::Completed)
            .await
            .unwrap();
    }
    let before = db.storage.stats(first, tomorrow).await.unwrap();
    assert!(db.count("SELECT COUNT(*) FROM order_stats_daily").await > 2);

    let compensator = compensator(&settings(&db));
    let report = compensator.run_once(Job::CompactStats).await.unwrap();
    assert!(
        matches!(report, JobReport::CompactStats { folded } if folded > 0),
        "{report:?}"
    );
    assert!(!report.is_idle());
    assert_eq!(db.storage.stats(first, tomorrow).await.unwrap(), before);
    assert_eq!(before.figures.by_status[&OrderStatus::Completed], 24);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_stats_daily WHERE slot <> 0")
            .await,
        0
    );
    let again = compensator.run_once(Job::CompactStats).await.unwrap();
    assert_eq!(again, JobReport::CompactStats { folded: 0 });
    assert!(again.is_idle());
}
