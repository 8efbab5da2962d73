//! Failures are kept once per message: recording one whose row is there
//! already (a redelivery, a copy) writes nothing, and says so, so that
//! counters and logs report only the rows really written. On PostgreSQL and
//! on MariaDB/MySQL.

use std::time::Duration;

use chrono::Utc;
use order_core::domain::{NewFailure, RetryPolicy, Source};
use order_core::service::{FailureRecords, OrderCreator, Settlement};
use order_core::storage::Recorded;
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;

order_testkit::on_both_engines!(
    recording_a_failure_again_says_it_was_already_recorded,
    a_redelivered_batch_reports_its_failures_already_recorded_not_recorded_again,
);

fn poison(bytes: &[u8]) -> NewFailure {
    NewFailure::poison(
        bytes,
        "message is not a valid JSON object",
        Source::Rabbitmq,
        Utc::now(),
    )
}

/// Valid, but its amount overflows the column: the write fails, retryably.
fn overflowing(user: i64) -> Vec<u8> {
    Seckill::new(user, 2)
        .quantity(5)
        .unit_price("9999999999.99")
        .bytes()
}

async fn recording_a_failure_again_says_it_was_already_recorded(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let pending = NewFailure::retryable(&overflowing(1), "write failed", Source::Kafka, Utc::now());
    let (a, b) = (poison(b"{a"), poison(b"{b"));

    let first = db
        .storage
        .record_each(&[a.clone(), pending.clone(), a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(
        first,
        [
            Ok(Recorded::New),
            Ok(Recorded::New),
            Ok(Recorded::AlreadyRecorded),
            Ok(Recorded::New)
        ],
        "a copy in the same call is not a second row"
    );

    let again = db
        .storage
        .record_each(&[b, poison(b"{c"), pending, a])
        .await
        .unwrap();
    assert_eq!(
        again,
        [
            Ok(Recorded::AlreadyRecorded),
            Ok(Recorded::New),
            Ok(Recorded::AlreadyRecorded),
            Ok(Recorded::AlreadyRecorded)
        ],
        "a redelivery writes nothing but what is new"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM order_failures").await, 4);
}

async fn a_redelivered_batch_reports_its_failures_already_recorded_not_recorded_again(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    db.refuse_failure_records_containing("unrecordable").await;
    let creator = OrderCreator::new(
        db.storage.clone(),
        RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            max_retries: 3,
        },
    );
    let batch: Vec<Vec<u8>> = vec![
        b"{poison".to_vec(),
        overflowing(1),
        b"{poison".to_vec(),
        b"poison, unrecordable".to_vec(),
    ];

    let first = creator
        .process_batch_report(Source::Rabbitmq, &batch)
        .await
        .unwrap();
    assert_eq!(
        first.failures,
        FailureRecords {
            poison: 1,
            poison_already_recorded: 1,
            retryable: 1,
            retryable_already_recorded: 0,
        },
        "the refused one is neither: it is dead-lettered"
    );
    assert!(matches!(first.settled[3], Settlement::DeadLetter { .. }));

    let redelivered = creator
        .process_batch_report(Source::Rabbitmq, &batch)
        .await
        .unwrap();
    assert_eq!(
        redelivered.failures,
        FailureRecords {
            poison: 0,
            poison_already_recorded: 2,
            retryable: 0,
            retryable_already_recorded: 1,
        }
    );
    assert_eq!(redelivered.failures.recorded(), 0);
    assert_eq!(redelivered.settled[..3], first.settled[..3]);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_failures").await, 2);
}
