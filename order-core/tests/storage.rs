//! The storage suite: every test runs on PostgreSQL and on MariaDB/MySQL,
//! each in a fresh database of its own.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use order_core::domain::{
    Cause, FailureFilter, FailureStatus, NewFailure, NewOrder, OrderStatus, ResolutionNote,
    ResolveRefusal, RetryPolicy, SeckillMessage, Source,
};
use order_core::service::{MessageOutcome, OrderCreator, Settlement};
use order_core::storage::{
    ClaimById, InsertOutcome, OrderCursor, PageRequest, ResolvedByHand, Storage, StorageError,
};
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use order_testkit::proxy::FaultProxy;
use rust_decimal::Decimal;
use uuid::Uuid;

order_testkit::on_both_engines!(
    migrating_an_empty_database_creates_the_tables_and_a_second_run_changes_nothing,
    a_new_purchase_becomes_one_order_with_its_item_and_exact_amounts,
    the_same_purchase_twice_is_one_order_within_and_across_batches,
    eight_concurrent_submitters_of_the_same_2000_purchases_make_exactly_2000_orders,
    a_row_over_a_column_limit_fails_alone_and_its_neighbours_commit,
    every_status_transition_is_allowed_or_refused_as_the_machine_says,
    of_two_concurrent_transitions_exactly_one_wins,
    a_users_orders_are_listed_newest_first_with_total_filter_and_cursor,
    stats_count_and_sum_whole_utc_days,
    failures_are_recorded_once_per_message_and_listed,
    two_concurrent_claimers_get_disjoint_sets_covering_all_500_due_failures,
    a_claim_is_resolved_only_by_its_lease_holder,
    expired_leases_return_to_pending_and_can_be_claimed_again,
    claiming_one_failure_by_id_refuses_succeeded_processing_and_poison,
    purge_removes_only_resolved_failures_older_than_the_cutoff,
    a_failure_resolved_by_hand_is_never_claimed_again_and_is_purged_when_old,
    unpaid_orders_older_than_the_cutoff_are_cancelled_in_batches,
    the_creator_records_poison_and_failed_writes_and_settles_the_batch,
    a_cut_database_fails_the_whole_batch_as_unavailable_and_recovery_needs_no_restart,
    a_bulk_retry_takes_the_newest_retryable_failures_past_newer_poison_ones,
    times_at_and_beyond_the_ends_of_years_1_to_9999,
);

/// `price` is JSON text: a number (`99.99`) or a string (`"99.99"`).
fn message(user: i64, product: i64, price: &str, quantity: i32) -> Vec<u8> {
    Seckill::new(user, product)
        .quantity(quantity.into())
        .raw("unit_price", price)
        .seckill_id(&format!("sk_{product}"))
        .timestamp("2024-01-01T12:00:00Z")
        .product_name(&format!("Product {product}"))
        .bytes()
}

fn new_order(user: i64, product: i64, price: &str, quantity: i32) -> NewOrder {
    NewOrder::new(SeckillMessage::parse(&message(user, product, price, quantity)).unwrap())
}

/// Runs one statement written for each engine.
async fn exec(db: &TestDatabase, postgres: &str, mysql: &str) -> u64 {
    db.execute(match db.driver() {
        Driver::Postgres => postgres,
        Driver::Mysql => mysql,
    })
    .await
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.count(sql).await
}

async fn migrating_an_empty_database_creates_the_tables_and_a_second_run_changes_nothing(
    driver: Driver,
) {
    let db = TestDatabase::empty(driver).await;
    assert!(db.table_names().await.is_empty());

    let applied = db.storage.migrate().await.unwrap();
    assert_eq!(applied.len(), 7);
    let tables = db.table_names().await;
    for table in [
        "_sqlx_migrations",
        "idempotency_records",
        "order_events",
        "order_failure_attempts",
        "order_failures",
        "order_items",
        "order_stats_daily",
        "order_stats_hourly",
        "orders",
    ] {
        assert!(
            tables.contains(&table.to_owned()),
            "{table} missing from {tables:?}"
        );
    }

    assert!(
        db.storage.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    assert_eq!(db.table_names().await, tables);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM _sqlx_migrations").await, 7);
}

async fn a_new_purchase_becomes_one_order_with_its_item_and_exact_amounts(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let order = new_order(7, 42, "0.1", 3);
    let outcomes = db
        .storage
        .create_orders(std::slice::from_ref(&order))
        .await
        .unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created(order.order_id)]);

    let stored = db
        .storage
        .get_order(order.order_id)
        .await
        .unwrap()
        .expect("order stored");
    assert_eq!(
        (stored.user_id, stored.product_id, stored.quantity),
        (7, 42, 3)
    );
    assert_eq!(stored.unit_price.to_string(), "0.10");
    assert_eq!(stored.total_amount.to_string(), "0.30");
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(stored.seckill_id, "sk_42");
    assert_eq!(stored.items.len(), 1);
    let item = &stored.items[0];
    assert_eq!(item.product_name.as_deref(), Some("Product 42"));
    assert_eq!(
        (item.quantity, item.total_price.to_string()),
        (3, "0.30".to_owned())
    );
    assert!(
        db.storage
            .get_order(Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
}

async fn the_same_purchase_twice_is_one_order_within_and_across_batches(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let first = new_order(1, 1, "5", 1);
    let same = new_order(1, 1, "6", 2);
    let other = new_order(1, 2, "5", 1);
    let outcomes = db
        .storage
        .create_orders(&[first.clone(), same, other.clone()])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            InsertOutcome::Created(first.order_id),
            InsertOutcome::Duplicate(first.order_id),
            InsertOutcome::Created(other.order_id),
        ]
    );
    let again = db
        .storage
        .create_orders(&[new_order(1, 2, "5", 1), new_order(1, 1, "5", 1)])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![
            InsertOutcome::Duplicate(other.order_id),
            InsertOutcome::Duplicate(first.order_id)
        ]
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM order_items").await, 2);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM idempotency_records").await,
        2
    );
}

async fn eight_concurrent_submitters_of_the_same_2000_purchases_make_exactly_2000_orders(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    // 2,000 distinct (user, product) pairs, shuffled differently per task.
    let keys: Vec<(i64, i64)> = (0..2000).map(|i| (i / 40 + 1, i % 40 + 1)).collect();
    let storage = db.storage.clone();
    let mut tasks = Vec::new();
    for task in 0..8_u64 {
        let storage = storage.clone();
        let mut keys = keys.clone();
        fastrand::Rng::with_seed(task).shuffle(&mut keys);
        tasks.push(tokio::spawn(async move {
            let mut answers: Vec<((i64, i64), InsertOutcome)> = Vec::new();
            for chunk in keys.chunks(100) {
                let batch: Vec<NewOrder> = chunk
                    .iter()
                    .map(|&(u, p)| new_order(u, p, "19.99", 1))
                    .collect();
                let outcomes = storage.create_orders(&batch).await.expect("batch commits");
                answers.extend(chunk.iter().copied().zip(outcomes));
            }
            answers
        }));
    }
    let mut order_of: HashMap<(i64, i64), Uuid> = HashMap::new();
    let mut created = 0;
    for task in tasks {
        for (key, outcome) in task.await.unwrap() {
            let id = match outcome {
                InsertOutcome::Created(id) => {
                    created += 1;
                    id
                }
                InsertOutcome::Duplicate(id) => id,
                InsertOutcome::Failed(reason) => panic!("{key:?} failed: {reason}"),
            };
            assert_eq!(
                *order_of.entry(key).or_insert(id),
                id,
                "{key:?} answered with two order ids"
            );
        }
    }
    assert_eq!(created, 2000, "each purchase created exactly once");
    assert_eq!(order_of.len(), 2000);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders").await, 2000);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM order_items").await, 2000);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM idempotency_records").await,
        2000
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM idempotency_records r JOIN orders o ON o.order_id = r.order_id"
        )
        .await,
        2000,
        "every record points at its order"
    );
}

async fn a_row_over_a_column_limit_fails_alone_and_its_neighbours_commit(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // A valid message whose total (2 × 9,999,999,999.99) overflows NUMERIC(12,2).
    let mut batch: Vec<NewOrder> = (1..=9).map(|p| new_order(5, p, "10.00", 1)).collect();
    batch.insert(4, new_order(5, 100, "9999999999.99", 2));
    let outcomes = db.storage.create_orders(&batch).await.unwrap();

    for (i, (order, outcome)) in batch.iter().zip(&outcomes).enumerate() {
        if i == 4 {
            let InsertOutcome::Failed(reason) = outcome else {
                panic!("the oversized row should fail, got {outcome:?}")
            };
            assert!(
                reason.contains("22003"),
                "names the database's reason: {reason}"
            );
        } else {
            assert_eq!(outcome, &InsertOutcome::Created(order.order_id));
        }
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders").await, 9);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM idempotency_records").await,
        9,
        "the failed row left no guard behind"
    );
}

async fn every_status_transition_is_allowed_or_refused_as_the_machine_says(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let mut product = 0;
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            product += 1;
            let order = new_order(9, product, "1", 1);
            db.storage
                .create_orders(std::slice::from_ref(&order))
                .await
                .unwrap();
            if from != OrderStatus::Pending {
                db.storage
                    .transition_order(order.order_id, from)
                    .await
                    .unwrap();
            }
            let result = db.storage.transition_order(order.order_id, to).await;
            let stored = db.storage.get_order(order.order_id).await.unwrap().unwrap();
            if from == OrderStatus::Pending && to != OrderStatus::Pending {
                let after = result.unwrap_or_else(|e| panic!("{from} -> {to} refused: {e}"));
                assert_eq!(after.status, to);
                assert_eq!(stored.status, to);
                assert!(stored.updated_at >= stored.created_at);
            } else {
                match result {
                    Err(StorageError::Transition(e)) => assert_eq!((e.from, e.to), (from, to)),
                    other => panic!("{from} -> {to} should be refused, got {other:?}"),
                }
                assert_eq!(stored.status, from, "a refused transition changes nothing");
            }
        }
    }
    assert!(matches!(
        db.storage
            .transition_order(Uuid::now_v7(), OrderStatus::Completed)
            .await,
        Err(StorageError::NotFound)
    ));
}

async fn of_two_concurrent_transitions_exactly_one_wins(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    for product in 1..=10 {
        let order = new_order(3, product, "1", 1);
        db.storage
            .create_orders(std::slice::from_ref(&order))
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            db.storage
                .transition_order(order.order_id, OrderStatus::Completed),
            db.storage
                .transition_order(order.order_id, OrderStatus::Cancelled),
        );
        let winners = [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(winners, 1, "a={a:?} b={b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert!(
            matches!(loser, Err(StorageError::Transition(_))),
            "{loser:?}"
        );
        let stored = db.storage.get_order(order.order_id).await.unwrap().unwrap();
        assert!(matches!(
            stored.status,
            OrderStatus::Completed | OrderStatus::Cancelled
        ));
    }
}

async fn a_users_orders_are_listed_newest_first_with_total_filter_and_cursor(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let mut ids = Vec::new();
    for product in 1..=25 {
        let order = new_order(11, product, "2.50", 1);
        db.storage
            .create_orders(std::slice::from_ref(&order))
            .await
            .unwrap();
        ids.push(order.order_id);
    }
    db.storage
        .create_orders(&[new_order(12, 1, "1", 1)])
        .await
        .unwrap();
    db.storage
        .transition_order(ids[0], OrderStatus::Completed)
        .await
        .unwrap();
    db.storage
        .transition_order(ids[1], OrderStatus::Completed)
        .await
        .unwrap();
    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();

    let page = |page, page_size| PageRequest { page, page_size };
    let first = db
        .storage
        .list_user_orders(11, None, page(1, 10))
        .await
        .unwrap();
    assert_eq!(first.total, 25);
    assert_eq!(
        first.items.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        newest_first[..10]
    );
    let third = db
        .storage
        .list_user_orders(11, None, page(3, 10))
        .await
        .unwrap();
    assert_eq!(
        third.items.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        newest_first[20..]
    );
    assert!(
        db.storage
            .list_user_orders(11, None, page(4, 10))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let completed = db
        .storage
        .list_user_orders(11, Some(OrderStatus::Completed), page(1, 10))
        .await
        .unwrap();
    assert_eq!(completed.total, 2);
    assert_eq!(
        completed
            .items
            .iter()
            .map(|o| o.order_id)
            .collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );

    // Keyset: walk all pages of 7 and meet every order once, in order.
    let mut walked = Vec::new();
    let mut cursor: Option<OrderCursor> = None;
    loop {
        let rows = db
            .storage
            .list_user_orders_after(11, None, cursor, 7)
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        cursor = Some(OrderCursor::after(last));
        walked.extend(rows.iter().map(|o| o.order_id));
    }
    assert_eq!(walked, newest_first);
    let pending = db
        .storage
        .list_user_orders_after(11, Some(OrderStatus::Pending), None, 100)
        .await
        .unwrap();
    assert_eq!(pending.len(), 23);
}

async fn stats_count_and_sum_whole_utc_days(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = vec![
        new_order(1, 1, "10.10", 1),
        new_order(1, 2, "0.1", 3),
        new_order(2, 1, "5", 2),
        new_order(3, 1, "1", 1),
    ];
    db.storage.create_orders(&orders).await.unwrap();
    db.storage
        .transition_order(orders[0].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    db.storage
        .transition_order(orders[2].order_id, OrderStatus::Cancelled)
        .await
        .unwrap();
    // Place them on days: 2024-03-01 (first two, one at the last microsecond), 2024-03-02, 2024-03-03.
    for (user, product, at) in [
        (1, 1, "2024-03-01 00:00:00"),
        (1, 2, "2024-03-01 23:59:59.999999"),
        (2, 1, "2024-03-02 00:00:00"),
        (3, 1, "2024-03-03 12:00:00"),
    ] {
        exec(
            &db,
            &format!("UPDATE orders SET created_at = '{at}+00' WHERE user_id = {user} AND product_id = {product}"),
            &format!("UPDATE orders SET created_at = '{at}' WHERE user_id = {user} AND product_id = {product}"),
        )
        .await;
    }
    let day = |d| NaiveDate::from_ymd_opt(2024, 3, d).unwrap();
    // Moved by hand, as a restore would: the rollups follow once rebuilt.
    rebuild_after_moving(&db, &[day(1), day(2), day(3)]).await;
    for storage in [db.storage.clone(), db.storage.clone().without_rollups()] {
        stats_of_whole_days(&storage, day).await;
    }
}

/// Rebuilds the statistics of `days` and of the days orders were created on
/// by this test (today, and yesterday for a test run at midnight).
async fn rebuild_after_moving(db: &TestDatabase, days: &[NaiveDate]) {
    let today = chrono::Utc::now().date_naive();
    for day in days
        .iter()
        .copied()
        .chain([today.pred_opt().unwrap(), today])
    {
        db.storage.rebuild_stats_day(day).await.unwrap();
    }
}

async fn stats_of_whole_days(storage: &Storage, day: impl Fn(u32) -> NaiveDate) {
    let one = storage.stats(day(1), day(1)).await.unwrap().figures;
    assert_eq!(one.order_count, 2);
    assert_eq!(one.by_status[&OrderStatus::Completed], 1);
    assert_eq!(one.by_status[&OrderStatus::Pending], 1);
    assert_eq!(one.by_status[&OrderStatus::Failed], 0);
    assert_eq!(one.total_amount.to_string(), "10.40");
    assert_eq!(one.completed_amount.to_string(), "10.10");

    let range = storage.stats(day(1), day(2)).await.unwrap().figures;
    assert_eq!(range.order_count, 3);
    assert_eq!(range.by_status[&OrderStatus::Cancelled], 1);
    assert_eq!(range.total_amount.to_string(), "20.40");

    let empty = storage.stats(day(4), day(30)).await.unwrap().figures;
    assert_eq!(
        (empty.order_count, empty.total_amount),
        (0, Decimal::new(0, 2))
    );
    assert_eq!(empty.total_amount.to_string(), "0.00");
}

fn retryable(raw: &[u8], due_in_secs: i64) -> NewFailure {
    NewFailure::retryable(
        raw,
        "write failed",
        Source::Rabbitmq,
        Utc::now() + chrono::Duration::seconds(due_in_secs),
    )
}

async fn failures_are_recorded_once_per_message_and_listed(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let poison = NewFailure::poison(
        b"{not json",
        "message is not a valid JSON object",
        Source::Kafka,
        Utc::now(),
    );
    let pending = retryable(&message(1, 1, "1", 1), 0);
    let ids = db
        .storage
        .record_failures(&[poison.clone(), pending.clone(), poison.clone()])
        .await
        .unwrap();
    assert_eq!(
        ids[0], ids[2],
        "the same message twice in one batch is one row"
    );
    assert_ne!(ids[0], ids[1]);
    let again = db.storage.record_failures(&[pending]).await.unwrap();
    assert_eq!(
        again,
        vec![ids[1]],
        "a redelivered message is not recorded again"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM order_failures").await, 2);

    let stored = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
    assert_eq!(stored.message.bytes, b"{not json");
    assert_eq!(
        (stored.status, stored.retryable, stored.source),
        (FailureStatus::Failed, false, Source::Kafka)
    );
    assert_eq!(stored.retry_count, 0);
    assert!(db.storage.get_failure(-1).await.unwrap().is_none());

    let page = PageRequest {
        page: 1,
        page_size: 10,
    };
    let all = db
        .storage
        .list_failures(&FailureFilter::default(), page)
        .await
        .unwrap();
    assert_eq!((all.total, all.items.len()), (2, 2));
    assert_eq!(all.items[0].id, ids[1], "newest first");
    let failed = db
        .storage
        .list_failures(&FailureFilter::of_status(FailureStatus::Failed), page)
        .await
        .unwrap();
    assert_eq!(
        failed.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    assert_eq!(db.storage.count_pending_failures().await.unwrap(), 1);
}

async fn two_concurrent_claimers_get_disjoint_sets_covering_all_500_due_failures(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let failures: Vec<NewFailure> = (1..=500)
        .map(|p| retryable(&message(1, p, "1", 1), -1))
        .collect();
    let mut ids = Vec::new();
    for chunk in failures.chunks(100) {
        ids.extend(db.storage.record_failures(chunk).await.unwrap());
    }
    // Not due yet, and poison: neither may be claimed.
    db.storage
        .record_failures(&[retryable(b"later", 3600)])
        .await
        .unwrap();
    db.storage
        .record_failures(&[NewFailure::poison(
            b"poison",
            "bad",
            Source::Api,
            Utc::now(),
        )])
        .await
        .unwrap();

    let claimer = |storage: Storage| async move {
        let mut mine = Vec::new();
        loop {
            let claimed = storage
                .claim_failures(25, Duration::from_secs(60))
                .await
                .unwrap();
            if claimed.is_empty() {
                return mine;
            }
            for (failure, lease) in &claimed {
                assert_eq!(failure.status, FailureStatus::Processing);
                assert_eq!(failure.locked_until, Some(lease.until));
            }
            mine.extend(claimed.into_iter().map(|(f, _)| f.id));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claimer(db.storage.clone())),
        tokio::spawn(claimer(db.storage.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let set_a: HashSet<i64> = a.iter().copied().collect();
    let set_b: HashSet<i64> = b.iter().copied().collect();
    assert_eq!(
        set_a.len(),
        a.len(),
        "no failure claimed twice by one claimer"
    );
    assert!(set_a.is_disjoint(&set_b), "a failure was claimed by both");
    let union: HashSet<i64> = set_a.union(&set_b).copied().collect();
    assert_eq!(union, ids.iter().copied().collect::<HashSet<_>>());
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM order_failures WHERE status = 'processing'"
        )
        .await,
        500
    );
}

async fn a_claim_is_resolved_only_by_its_lease_holder(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let ids = db
        .storage
        .record_failures(&[
            retryable(b"a", -1),
            retryable(b"b", -1),
            retryable(b"c", -1),
        ])
        .await
        .unwrap();
    let claimed = db
        .storage
        .claim_failures(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let lease = claimed[0].1;
    let mut stolen = lease;
    stolen.token = Uuid::now_v7();

    let order_id = Uuid::now_v7();
    assert!(
        !db.storage
            .mark_failure_succeeded(ids[0], &stolen, order_id)
            .await
            .unwrap(),
        "wrong token"
    );
    assert!(
        db.storage
            .mark_failure_succeeded(ids[0], &lease, order_id)
            .await
            .unwrap()
    );
    assert!(
        !db.storage
            .mark_failure_succeeded(ids[0], &lease, order_id)
            .await
            .unwrap(),
        "already resolved"
    );
    let done = db.storage.get_failure(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.order_id, done.locked_until),
        (FailureStatus::Success, Some(order_id), None)
    );

    let due = Utc::now() + chrono::Duration::seconds(30);
    assert!(
        db.storage
            .reschedule_failure(ids[1], &lease, "still failing", due)
            .await
            .unwrap()
    );
    let again = db.storage.get_failure(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (again.status, again.retry_count),
        (FailureStatus::Pending, 1)
    );
    assert_eq!(again.error_message, "still failing");
    assert!((again.next_retry_at - due).num_milliseconds().abs() < 1);
    assert!(
        db.storage
            .claim_failures(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );

    assert!(
        db.storage
            .mark_failure_failed(ids[2], &lease, "gave up")
            .await
            .unwrap()
    );
    let failed = db.storage.get_failure(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (
            failed.status,
            failed.retry_count,
            failed.error_message.as_str()
        ),
        (FailureStatus::Failed, 1, "gave up")
    );
}

async fn expired_leases_return_to_pending_and_can_be_claimed_again(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let ids = db
        .storage
        .record_failures(&[retryable(b"x", -1)])
        .await
        .unwrap();
    let first = db
        .storage
        .claim_failures(1, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        db.storage.release_expired_leases().await.unwrap(),
        0,
        "the lease still holds"
    );
    assert!(
        db.storage
            .claim_failures(1, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(db.storage.release_expired_leases().await.unwrap(), 1);
    assert_eq!(
        db.storage
            .get_failure(ids[0])
            .await
            .unwrap()
            .unwrap()
            .status,
        FailureStatus::Pending
    );

    let second = db
        .storage
        .claim_failures(1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert!(
        !db.storage
            .mark_failure_succeeded(ids[0], &first[0].1, Uuid::now_v7())
            .await
            .unwrap(),
        "the old lease is void"
    );
    assert!(
        db.storage
            .mark_failure_succeeded(ids[0], &second[0].1, Uuid::now_v7())
            .await
            .unwrap()
    );
}

async fn claiming_one_failure_by_id_refuses_succeeded_processing_and_poison(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let ids = db
        .storage
        .record_failures(&[
            retryable(b"due later", 3600),
            NewFailure::poison(b"poison", "bad", Source::Rabbitmq, Utc::now()),
        ])
        .await
        .unwrap();
    let lease = match db
        .storage
        .claim_failure(ids[0], Duration::from_secs(60))
        .await
        .unwrap()
    {
        ClaimById::Claimed(f, lease) => {
            assert_eq!(f.status, FailureStatus::Processing);
            lease
        }
        other => panic!("a pending failure is claimable before it is due: {other:?}"),
    };
    assert!(
        matches!(db.storage.claim_failure(ids[0], Duration::from_secs(60)).await.unwrap(), ClaimById::Refused(f) if f.status == FailureStatus::Processing)
    );
    db.storage
        .mark_failure_succeeded(ids[0], &lease, Uuid::now_v7())
        .await
        .unwrap();
    assert!(
        matches!(db.storage.claim_failure(ids[0], Duration::from_secs(60)).await.unwrap(), ClaimById::Refused(f) if f.status == FailureStatus::Success)
    );
    assert!(
        matches!(db.storage.claim_failure(ids[1], Duration::from_secs(60)).await.unwrap(), ClaimById::Refused(f) if !f.retryable)
    );
    assert_eq!(
        db.storage
            .claim_failure(i64::MAX, Duration::from_secs(60))
            .await
            .unwrap(),
        ClaimById::NotFound
    );
}

async fn purge_removes_only_resolved_failures_older_than_the_cutoff(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let ids = db
        .storage
        .record_failures(&[
            NewFailure::poison(b"old poison", "bad", Source::Kafka, Utc::now()),
            NewFailure::poison(b"new poison", "bad", Source::Kafka, Utc::now()),
            retryable(b"old pending", 0),
        ])
        .await
        .unwrap();
    for id in [ids[0], ids[2]] {
        exec(
            &db,
            &format!(
                "UPDATE order_failures SET updated_at = '2020-01-01 00:00:00+00' WHERE id = {id}"
            ),
            &format!(
                "UPDATE order_failures SET updated_at = '2020-01-01 00:00:00' WHERE id = {id}"
            ),
        )
        .await;
    }
    let cutoff = Utc::now() - chrono::Duration::days(7);
    assert_eq!(
        db.storage
            .purge_resolved_failures(cutoff, 100)
            .await
            .unwrap(),
        1
    );
    assert!(db.storage.get_failure(ids[0]).await.unwrap().is_none());
    assert!(
        db.storage.get_failure(ids[1]).await.unwrap().is_some(),
        "recent"
    );
    assert!(
        db.storage.get_failure(ids[2]).await.unwrap().is_some(),
        "unresolved"
    );
    assert_eq!(
        db.storage
            .purge_resolved_failures(cutoff, 100)
            .await
            .unwrap(),
        0
    );
}

async fn a_failure_resolved_by_hand_is_never_claimed_again_and_is_purged_when_old(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // All due now: a claim would take every one of them.
    let ids = db
        .storage
        .record_failures(&[
            retryable(b"resolved while pending", -1),
            retryable(b"claimed", -1),
            NewFailure::poison(b"poison", "bad", Source::Kafka, Utc::now()),
        ])
        .await
        .unwrap();
    let (pending, claimed, poison) = (ids[0], ids[1], ids[2]);
    let note = ResolutionNote::parse("note", "  refunded by hand, OPS-1 ").unwrap();
    match db
        .storage
        .resolve_failure_by_hand(pending, &note)
        .await
        .unwrap()
    {
        ResolvedByHand::Resolved { failure, previous } => {
            assert_eq!(previous, FailureStatus::Pending);
            assert_eq!(failure.status, FailureStatus::Resolved);
            assert_eq!(
                failure.resolution_note.as_deref(),
                Some("refunded by hand, OPS-1")
            );
            assert_eq!(failure.locked_until, None);
        }
        other => panic!("a pending failure is resolved: {other:?}"),
    }
    assert!(matches!(
        db.storage
            .resolve_failure_by_hand(poison, &note)
            .await
            .unwrap(),
        ResolvedByHand::Resolved {
            previous: FailureStatus::Failed,
            ..
        }
    ));

    // Neither the compensator's claim nor a claim by id takes it.
    let taken = db
        .storage
        .claim_failures(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        taken.iter().map(|(f, _)| f.id).collect::<Vec<_>>(),
        vec![claimed]
    );
    assert!(
        matches!(db.storage.claim_failure(pending, Duration::from_secs(60)).await.unwrap(), ClaimById::Refused(f) if f.status == FailureStatus::Resolved)
    );
    for status in [
        FailureStatus::Pending,
        FailureStatus::Failed,
        FailureStatus::Resolved,
    ] {
        assert!(
            db.storage
                .retryable_failure_ids(&FailureFilter::of_status(status), 100)
                .await
                .unwrap()
                .is_empty(),
            "{status}"
        );
    }
    assert_eq!(db.storage.count_pending_failures().await.unwrap(), 0);

    // Being retried, or succeeded: refused, nothing written.
    assert!(matches!(
        db.storage.resolve_failure_by_hand(claimed, &note).await.unwrap(),
        ResolvedByHand::Refused(f, ResolveRefusal::BeingRetried) if f.status == FailureStatus::Processing && f.resolution_note.is_none()
    ));
    assert!(
        db.storage
            .mark_failure_succeeded(claimed, &taken[0].1, Uuid::now_v7())
            .await
            .unwrap(),
        "the claim still holds"
    );
    assert!(matches!(
        db.storage.resolve_failure_by_hand(claimed, &note).await.unwrap(),
        ResolvedByHand::Refused(f, ResolveRefusal::AlreadySucceeded) if f.status == FailureStatus::Success
    ));

    // Again: answered as it is, the first note kept.
    let before = db.storage.get_failure(pending).await.unwrap().unwrap();
    let other = ResolutionNote::parse("note", "another note").unwrap();
    assert_eq!(
        db.storage
            .resolve_failure_by_hand(pending, &other)
            .await
            .unwrap(),
        ResolvedByHand::AlreadyResolved(Box::new(before.clone()))
    );
    assert_eq!(
        db.storage.get_failure(pending).await.unwrap().unwrap(),
        before
    );
    assert_eq!(
        db.storage
            .resolve_failure_by_hand(i64::MAX, &note)
            .await
            .unwrap(),
        ResolvedByHand::NotFound
    );
    let page = PageRequest {
        page: 1,
        page_size: 10,
    };
    let listed = db
        .storage
        .list_failures(&FailureFilter::of_status(FailureStatus::Resolved), page)
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![poison, pending]
    );

    // Ended like success and failed: purged once older than the retention.
    exec(
        &db,
        &format!(
            "UPDATE order_failures SET updated_at = '2020-01-01 00:00:00+00' WHERE id = {pending}"
        ),
        &format!(
            "UPDATE order_failures SET updated_at = '2020-01-01 00:00:00' WHERE id = {pending}"
        ),
    )
    .await;
    let cutoff = Utc::now() - chrono::Duration::days(7);
    assert_eq!(
        db.storage
            .purge_resolved_failures(cutoff, 100)
            .await
            .unwrap(),
        1
    );
    assert!(db.storage.get_failure(pending).await.unwrap().is_none());
    assert!(
        db.storage.get_failure(poison).await.unwrap().is_some(),
        "recent"
    );
}

async fn unpaid_orders_older_than_the_cutoff_are_cancelled_in_batches(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=6).map(|p| new_order(21, p, "1", 1)).collect();
    db.storage.create_orders(&orders).await.unwrap();
    db.storage
        .transition_order(orders[4].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    // Products 1..=5 are an hour old; 6 is fresh.
    exec(
        &db,
        "UPDATE orders SET created_at = created_at - INTERVAL '1 hour' WHERE product_id <= 5",
        "UPDATE orders SET created_at = created_at - INTERVAL 1 HOUR WHERE product_id <= 5",
    )
    .await;
    let cutoff = Utc::now() - chrono::Duration::minutes(30);
    let first = db
        .storage
        .expire_unpaid(cutoff, 3, &Cause::default())
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let second = db
        .storage
        .expire_unpaid(cutoff, 3, &Cause::default())
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert!(
        db.storage
            .expire_unpaid(cutoff, 3, &Cause::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        first.iter().chain(&second).all(|c| c.version == 1),
        "each expired order is at its first change"
    );
    let expired: HashSet<Uuid> = first
        .into_iter()
        .chain(second)
        .map(|c| c.order_id)
        .collect();
    assert_eq!(expired, orders[..4].iter().map(|o| o.order_id).collect());
    for (i, order) in orders.iter().enumerate() {
        let status = db
            .storage
            .get_order(order.order_id)
            .await
            .unwrap()
            .unwrap()
            .status;
        let expected = match i {
            0..=3 => OrderStatus::Cancelled,
            4 => OrderStatus::Completed,
            _ => OrderStatus::Pending,
        };
        assert_eq!(status, expected, "product {}", i + 1);
    }
}

async fn the_creator_records_poison_and_failed_writes_and_settles_the_batch(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let policy = RetryPolicy {
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
        max_retries: 3,
    };
    let creator = OrderCreator::new(db.storage.clone(), policy);
    let payloads: Vec<Vec<u8>> = vec![
        message(1, 1, "1.50", 2),
        b"{\"user_id\":0}".to_vec(),
        message(1, 1, "1.50", 2),
        message(1, 2, "9999999999.99", 5),
        message(1, 3, "1.005", 1),
    ];
    let attempts: Vec<MessageOutcome> = creator
        .process_batch(Source::Rabbitmq, &payloads)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Settlement::Settled(attempt) => attempt,
            dead => panic!("{dead:?}"),
        })
        .collect();
    let MessageOutcome::Created(order_id) = attempts[0] else {
        panic!("{attempts:?}")
    };
    assert!(matches!(&attempts[1], MessageOutcome::Poison(r) if r.contains("user_id")));
    assert_eq!(attempts[2], MessageOutcome::Duplicate(order_id));
    assert!(matches!(&attempts[3], MessageOutcome::Failed(r) if r.contains("22003")));
    assert!(
        matches!(&attempts[4], MessageOutcome::Poison(r) if r.contains("unit_price: must have at most 2 decimal places"))
    );

    let page = PageRequest {
        page: 1,
        page_size: 10,
    };
    let poison = db
        .storage
        .list_failures(&FailureFilter::of_status(FailureStatus::Failed), page)
        .await
        .unwrap();
    assert_eq!(poison.total, 2);
    assert!(
        poison
            .items
            .iter()
            .all(|f| !f.retryable && f.source == Source::Rabbitmq)
    );
    let pending = db
        .storage
        .list_failures(&FailureFilter::of_status(FailureStatus::Pending), page)
        .await
        .unwrap();
    assert_eq!(pending.total, 1);
    let failure = &pending.items[0];
    assert!(failure.retryable);
    assert_eq!(failure.message.bytes, payloads[3]);
    let wait = failure.next_retry_at - failure.created_at;
    assert!(
        wait >= chrono::Duration::seconds(4) && wait <= chrono::Duration::seconds(11),
        "first retry after the base backoff, got {wait}"
    );

    // Redelivery of the whole batch: nothing new is written.
    let again = creator
        .process_batch(Source::Rabbitmq, &payloads)
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Settlement::Settled(MessageOutcome::Duplicate(order_id))
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM order_failures").await, 3);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders").await, 1);
}

async fn a_cut_database_fails_the_whole_batch_as_unavailable_and_recovery_needs_no_restart(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    let proxy = FaultProxy::start(db.server_addr()).await;
    let settings = order_runtime::config::DatabaseSettings {
        acquire_timeout: Duration::from_secs(1),
        ..db.settings_via(proxy.addr())
    };
    let storage = Storage::connect(&settings).unwrap();
    let creator = OrderCreator::new(
        storage.clone(),
        order_runtime::config::Settings::default().retry_policy(),
    );
    let before = vec![message(1, 1, "1", 1)];
    assert!(matches!(
        creator.process_batch(Source::Kafka, &before).await.unwrap()[0],
        Settlement::Settled(MessageOutcome::Created(_))
    ));

    proxy.cut();
    let during = vec![
        message(1, 1, "1", 1),
        message(1, 2, "1", 1),
        b"poison".to_vec(),
    ];
    let err = creator
        .process_batch(Source::Kafka, &during)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(storage.ping().await.unwrap_err().is_unavailable());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM orders").await,
        1,
        "nothing of the cut batch was written"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM order_failures").await,
        0,
        "nor recorded as failed"
    );

    proxy.heal();
    // The redelivered batch goes through on the same pool.
    let after = creator.process_batch(Source::Kafka, &during).await.unwrap();
    assert!(matches!(after[0].attempt(), MessageOutcome::Duplicate(_)));
    assert!(matches!(after[1].attempt(), MessageOutcome::Created(_)));
    assert!(matches!(after[2].attempt(), MessageOutcome::Poison(_)));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM order_failures").await, 1);
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_unavailable() {
    let settings = order_runtime::config::DatabaseSettings {
        url: order_runtime::config::Secret::new("postgres://postgres@127.0.0.1:1/none"),
        acquire_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let storage = Storage::connect(&settings).unwrap();
    let err = storage
        .create_orders(&[new_order(1, 1, "1", 1)])
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(storage.ping().await.unwrap_err().is_unavailable());
}

async fn a_bulk_retry_takes_the_newest_retryable_failures_past_newer_poison_ones(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let record =
        async |failure: NewFailure| db.storage.record_failures(&[failure]).await.unwrap()[0];
    // Three retryable failures given up on (status failed), then five newer
    // poison ones (failed too), then a pending one.
    let mut retryable_failed = Vec::new();
    for p in 1..=3 {
        let mut f = retryable(&message(1, p, "1", 1), 0);
        f.status = FailureStatus::Failed;
        retryable_failed.push(record(f).await);
    }
    for n in 1..=5 {
        record(NewFailure::poison(
            format!("poison {n}").as_bytes(),
            "bad",
            Source::Kafka,
            Utc::now(),
        ))
        .await;
    }
    let pending = record(retryable(&message(1, 9, "1", 1), 0)).await;
    let newest_first: Vec<i64> = retryable_failed.iter().rev().copied().collect();

    assert_eq!(
        db.storage
            .retryable_failure_ids(&FailureFilter::of_status(FailureStatus::Failed), 3)
            .await
            .unwrap(),
        newest_first
    );
    assert_eq!(
        db.storage
            .retryable_failure_ids(&FailureFilter::of_status(FailureStatus::Failed), 2)
            .await
            .unwrap(),
        newest_first[..2]
    );
    assert_eq!(
        db.storage
            .retryable_failure_ids(&FailureFilter::of_status(FailureStatus::Failed), 1000)
            .await
            .unwrap(),
        newest_first
    );
    assert_eq!(
        db.storage
            .retryable_failure_ids(&FailureFilter::of_status(FailureStatus::Pending), 3)
            .await
            .unwrap(),
        vec![pending]
    );
    assert!(
        db.storage
            .retryable_failure_ids(&FailureFilter::of_status(FailureStatus::Success), 3)
            .await
            .unwrap()
            .is_empty()
    );
    // What the bulk retry used to take: the newest three of the status,
    // filtered afterwards: all poison, so nothing was retried.
    let newest = db
        .storage
        .list_failures(
            &FailureFilter::of_status(FailureStatus::Failed),
            PageRequest {
                page: 1,
                page_size: 3,
            },
        )
        .await
        .unwrap();
    assert!(newest.items.iter().all(|f| !f.retryable));
}

/// The API takes dates and cursor times in years 1 to 9999 only. Within
/// them both engines answer right, to the microsecond at either end and past
/// 2038 (MySQL compared with a TIMESTAMP parameter, which ends then); beyond
/// them (year -5000 here) the database refuses the value, and Storage says
/// so with an error, not a panic, and not as an outage.
async fn times_at_and_beyond_the_ends_of_years_1_to_9999(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders = [
        new_order(11, 1, "1", 1),
        new_order(11, 2, "2", 1),
        new_order(11, 3, "3", 1),
    ];
    db.storage.create_orders(&orders).await.unwrap();
    for (product, at) in [
        (1, "0001-01-01 00:00:00"),
        (2, "2100-01-01 00:00:00"),
        (3, "9999-12-31 23:59:59.999999"),
    ] {
        exec(
            &db,
            &format!("UPDATE orders SET created_at = '{at}+00' WHERE product_id = {product}"),
            &format!("UPDATE orders SET created_at = '{at}' WHERE product_id = {product}"),
        )
        .await;
    }
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    rebuild_after_moving(&db, &[day(1, 1, 1), day(2100, 1, 1), day(9999, 12, 31)]).await;
    let midnight = |y, m, d| day(y, m, d).and_time(chrono::NaiveTime::MIN).and_utc();
    let last_micro = day(9999, 12, 31)
        .and_hms_micro_opt(23, 59, 59, 999_999)
        .unwrap()
        .and_utc();
    let newest_first: Vec<Uuid> = orders.iter().rev().map(|o| o.order_id).collect();
    let after = async |created_at| {
        db.storage
            .list_user_orders_after(
                11,
                None,
                Some(OrderCursor {
                    created_at,
                    id: i64::MAX,
                }),
                10,
            )
            .await
            .map(|rows| rows.iter().map(|o| o.order_id).collect::<Vec<_>>())
    };

    let all = db
        .storage
        .list_user_orders_after(11, None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|o| o.created_at).collect::<Vec<_>>(),
        vec![last_micro, midnight(2100, 1, 1), midnight(1, 1, 1)]
    );
    assert_eq!(after(last_micro).await.unwrap(), newest_first);
    assert_eq!(
        after(midnight(2100, 1, 2)).await.unwrap(),
        newest_first[1..]
    );
    assert_eq!(
        after(midnight(2038, 1, 20)).await.unwrap(),
        newest_first[2..]
    );
    assert_eq!(after(midnight(1, 1, 1)).await.unwrap(), newest_first[2..]);

    for (from, to, count) in [
        (day(1, 1, 1), day(1, 1, 1), 1),
        (day(2037, 12, 1), day(2100, 1, 1), 1),
        (day(9999, 12, 31), day(9999, 12, 31), 1),
        (day(9999, 1, 1), day(9999, 12, 30), 0),
    ] {
        for storage in [db.storage.clone(), db.storage.clone().without_rollups()] {
            let stats = storage.stats(from, to).await.unwrap();
            assert_eq!(stats.figures.order_count, count, "{from}..={to}");
        }
    }

    let r = after(midnight(-5000, 1, 1)).await;
    assert!(matches!(r, Err(StorageError::Database(_))), "{r:?}");
    let r = db
        .storage
        .clone()
        .without_rollups()
        .stats(day(-5000, 1, 1), day(-5000, 1, 1))
        .await;
    assert!(matches!(r, Err(StorageError::Database(_))), "{r:?}");
}
