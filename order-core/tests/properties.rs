//! Properties of the write path, through the real databases: whatever bytes
//! arrive, every message of a batch becomes an order or a failure row, and
//! the batch settles and commits. Nothing errors out of it.
//!
//! Short by default (`scripts/test.sh`); the long form:
//! `PROPTEST_CASES=2000 cargo test -p order-core --test properties`.

use std::collections::HashSet;

use chrono::Utc;
use order_core::domain::{NewFailure, REQUIRED_FIELDS, SeckillMessage, Source};
use order_core::service::{MessageOutcome, OrderCreator, Settlement};
use order_runtime::config::{Driver, Settings};
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Cases per engine unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 24;

/// A valid message; some of them total more than NUMERIC(12,2) holds, which
/// the database refuses (the batch must narrow to them).
fn base(user: i64, product: i64) -> Value {
    let (quantity, price) = match (user + product) % 5 {
        0 => (1000, json!("9999999999.99")),
        1 => (1000, json!(123.45)),
        2 => (2, json!("0.01")),
        _ => (1, json!("9.99")),
    };
    let message = Seckill::new(user, product)
        .quantity(quantity)
        .raw("unit_price", price.to_string())
        .seckill_id(&format!("sk_{product}"))
        .timestamp("2024-01-01T12:00:00Z")
        .product_name("Phone");
    serde_json::from_str(&message.json()).expect("a fixture is JSON")
}

/// A character a database or a log might choke on.
fn hostile_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '\u{0}',
        '\u{1}',
        '\u{8}',
        '\t',
        '\n',
        '\r',
        '\u{1b}',
        '\u{7f}',
        '\u{85}',
        '\u{9f}',
        '\u{200b}',
        '\u{202e}',
        '\u{feff}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10ffff}',
        'é',
        '😀',
        '\'',
        '"',
        '\\',
        '%',
        ';',
    ])
}

/// A string field's value: short or huge, with hostile characters spliced in.
fn hostile_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(hostile_char(), 0..4),
        prop::sample::select(vec![0_usize, 1, 10, 63, 64, 65, 255, 256, 1000, 70_000]),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(chars, len, at)| {
            let mut text: Vec<char> = "x".repeat(len).chars().collect();
            for c in chars {
                let i = if text.is_empty() {
                    0
                } else {
                    at.index(text.len() + 1)
                };
                text.insert(i, c);
            }
            text.into_iter().collect()
        })
}

/// A JSON value at or beyond the bound of some field.
fn bound_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(1000),
        json!(1001),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(i32::MAX),
        json!(1.5),
        json!(1e19),
        json!(9_999_999_999.99),
        json!("9999999999.99"),
        json!("10000000000"),
        json!("0.01"),
        json!("0.001"),
        json!("-0.01"),
        json!("1e2"),
        json!("1E-2"),
        json!("0000-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59Z"),
        json!("2024-02-30T00:00:00Z"),
        json!("2016-12-31T23:59:60Z"),
        json!(""),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
    ])
}

/// Every field of the message contract.
fn fields() -> Vec<&'static str> {
    REQUIRED_FIELDS
        .into_iter()
        .chain(["product_name"])
        .collect()
}

/// One message: valid, a valid one with a field mutated, a valid one with
/// its bytes mutated, or arbitrary bytes.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let ids = (1_i64..50, 1_i64..5);
    prop_oneof![
        3 => ids.clone().prop_map(|(u, p)| serde_json::to_vec(&base(u, p)).unwrap()),
        3 => (ids.clone(), prop::sample::select(fields()), hostile_text()).prop_map(
            |((u, p), field, text)| {
                let mut v = base(u, p);
                v[field] = json!(text);
                serde_json::to_vec(&v).unwrap()
            }
        ),
        3 => (ids.clone(), prop::sample::select(fields()), bound_value()).prop_map(
            |((u, p), field, value)| {
                let mut v = base(u, p);
                v[field] = value;
                serde_json::to_vec(&v).unwrap()
            }
        ),
        2 => (
            ids,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            any::<bool>()
        )
            .prop_map(|((u, p), edits, insert)| {
                let mut bytes = serde_json::to_vec(&base(u, p)).unwrap();
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    if insert {
                        bytes.insert(i, byte);
                    } else {
                        bytes[i] = byte;
                    }
                }
                bytes
            }),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn batch() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(message(), 1..24)
}

fn digest(raw: &[u8]) -> String {
    NewFailure::poison(raw, "", Source::Kafka, Utc::now()).message_digest
}

/// The property on one engine.
fn every_message_becomes_an_order_or_a_failure_row(driver: Driver) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::new(driver));
    let creator = OrderCreator::new(db.storage.clone(), Settings::default().retry_policy());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    });
    let outcome = runner.run(&batch(), |payloads| {
        runtime.block_on(async {
            let settled = creator
                .process_batch(Source::Rabbitmq, &payloads)
                .await
                .map_err(|e| TestCaseError::fail(format!("the batch errored: {e}")))?;
            prop_assert_eq!(settled.len(), payloads.len());
            let mut recorded = HashSet::new();
            for (payload, settlement) in payloads.iter().zip(&settled) {
                let Settlement::Settled(attempt) = settlement else {
                    return Err(TestCaseError::fail(format!(
                        "dead-lettered: {settlement:?} for {payload:?}"
                    )));
                };
                let valid = SeckillMessage::parse(payload).is_ok();
                match attempt {
                    MessageOutcome::Created(id) | MessageOutcome::Duplicate(id) => {
                        prop_assert!(valid);
                        let order = db.storage.get_order(*id).await.unwrap();
                        prop_assert!(order.is_some(), "order {id} is not committed");
                    }
                    MessageOutcome::Poison(reason) | MessageOutcome::Failed(reason) => {
                        prop_assert_eq!(
                            matches!(attempt, MessageOutcome::Poison(_)),
                            !valid,
                            "{}",
                            reason
                        );
                        recorded.insert(digest(payload));
                    }
                }
            }
            for d in &recorded {
                let rows = db
                    .count(&format!(
                        "SELECT COUNT(*) FROM order_failures WHERE message_digest = '{d}'"
                    ))
                    .await;
                prop_assert_eq!(rows, 1, "failure {} is not recorded once", d);
            }
            Ok(())
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn on_postgres_every_message_becomes_an_order_or_a_failure_row() {
    every_message_becomes_an_order_or_a_failure_row(Driver::Postgres);
}

#[test]
fn on_mariadb_every_message_becomes_an_order_or_a_failure_row() {
    every_message_becomes_an_order_or_a_failure_row(Driver::Mysql);
}
