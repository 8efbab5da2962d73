//! Hostile input through the real write path, on PostgreSQL and on
//! MariaDB/MySQL: no message, whatever its bytes or however many arrive at
//! once, may fail a batch. Only an outage does.

use chrono::Utc;
use order_core::domain::{
    Cause, Encoding, FailureFilter, FailureStatus, NewOrder, SeckillMessage, Source,
};
use order_core::service::{MessageOutcome, OrderCreator, Settlement};
use order_core::storage::PageRequest;
use order_runtime::config::{Driver, Settings};
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;

order_testkit::on_both_engines!(
    a_nul_or_control_character_anywhere_leaves_the_batch_to_commit,
    poison_bytes_are_kept_exactly_and_shown_safely,
    a_batch_of_large_poison_messages_beyond_the_packet_limit_is_recorded,
    ten_thousand_new_purchases_in_one_batch_all_commit,
    the_compensator_claims_and_retries_seven_thousand_failures_in_one_run,
    an_error_that_is_neither_an_outage_nor_the_rows_data_narrows_to_its_message,
    a_message_whose_failure_cannot_be_recorded_is_dead_lettered_and_the_rest_commit,
    a_table_the_statements_need_gone_pauses_instead_of_dead_lettering,
);

fn seckill(user: i64, product: i64) -> Seckill {
    Seckill::new(user, product)
        .seckill_id(&format!("sk_{product}"))
        .timestamp("2024-01-01T12:00:00Z")
        .product_name(&format!("Product {product}"))
}

fn valid(user: i64, product: i64) -> Vec<u8> {
    seckill(user, product).bytes()
}

/// A valid message with `field` set to the JSON text `json`.
fn with(user: i64, field: &str, json: &str) -> Vec<u8> {
    seckill(user, 1).raw(field, json).bytes()
}

fn creator(db: &TestDatabase) -> OrderCreator {
    OrderCreator::new(db.storage.clone(), Settings::default().retry_policy())
}

/// Runs one statement written for each engine.
async fn exec(db: &TestDatabase, postgres: &str, mysql: &str) {
    db.execute(match db.driver() {
        Driver::Postgres => postgres,
        Driver::Mysql => mysql,
    })
    .await;
}

/// Valid purchases interleaved with every way a byte can break a database.
fn nul_and_control_stream() -> (Vec<Vec<u8>>, usize) {
    let mut body_then_nul = valid(90, 1);
    body_then_nul.push(0);
    let mut raw_nul_in_string = valid(91, 1);
    let at = raw_nul_in_string
        .windows(3)
        .position(|w| w == b"sk_")
        .unwrap();
    raw_nul_in_string.insert(at + 1, 0);
    let mut invalid_utf8 = valid(92, 1);
    let at = invalid_utf8.iter().position(|&b| b == b'P').unwrap();
    invalid_utf8[at] = 0xff;
    let hostile = vec![
        body_then_nul,
        raw_nul_in_string,
        invalid_utf8,
        with(93, "seckill_id", r#""sk\u0000""#),
        with(94, "product_name", r#""name\u0000""#),
        with(95, "product_name", r#""\u001b[31mred""#),
        with(96, "timestamp", r#""2024-01-01T12:00:00Z\u0000""#),
        with(97, "unit_price", r#""1.00\u0000""#),
        with(98, "seckill_id", r#""\u0085""#),
        vec![0; 64],
        b"\0{}".to_vec(),
    ];
    let hostile_count = hostile.len();
    let mut stream = Vec::new();
    for (i, bad) in hostile.into_iter().enumerate() {
        stream.push(valid(i64::try_from(i).unwrap() + 1, 1));
        stream.push(bad);
    }
    stream.push(valid(1000, 1));
    (stream, hostile_count)
}

async fn a_nul_or_control_character_anywhere_leaves_the_batch_to_commit(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (stream, hostile) = nul_and_control_stream();
    let valid_count = stream.len() - hostile;

    let settled = creator(&db).process_batch(Source::Rabbitmq, &stream).await;

    assert!(settled.is_ok(), "the batch must settle: {settled:?}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM orders").await,
        i64::try_from(valid_count).unwrap()
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed'")
            .await,
        i64::try_from(hostile).unwrap(),
        "every hostile message is poison, never a retryable failure"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures").await,
        i64::try_from(hostile).unwrap()
    );
}

async fn poison_bytes_are_kept_exactly_and_shown_safely(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (stream, _) = nul_and_control_stream();
    let settled = creator(&db)
        .process_batch(Source::Kafka, &stream)
        .await
        .unwrap();
    let page = PageRequest {
        page: 1,
        page_size: 100,
    };
    let failures = db
        .storage
        .list_failures(&FailureFilter::of_status(FailureStatus::Failed), page)
        .await
        .unwrap()
        .items;
    for (payload, settlement) in stream.iter().zip(&settled) {
        let Settlement::Settled(MessageOutcome::Poison(reason)) = settlement else {
            continue;
        };
        let stored = failures
            .iter()
            .find(|f| f.message.bytes == *payload)
            .unwrap_or_else(|| panic!("{payload:?} is not stored byte for byte"));
        assert_eq!(stored.message.size, payload.len() as u64);
        assert!(!stored.message.is_truncated());
        assert_eq!(&stored.error_message, &reason.replace('\0', "\\u{0000}"));
        let json = serde_json::to_value(stored).unwrap();
        let encoding = match std::str::from_utf8(payload) {
            Ok(_) => Encoding::Utf8,
            Err(_) => Encoding::Base64,
        };
        assert_eq!(
            json["message_encoding"],
            serde_json::to_value(encoding).unwrap()
        );
        let shown = json["message_data"].as_str().unwrap();
        assert_eq!(
            order_core::domain::KeptMessage::from_shown(encoding, shown).unwrap(),
            *payload
        );
    }
    // A field's control character is named in the reason.
    assert!(
        failures.iter().any(|f| f
            .error_message
            .contains("product_name: must not contain control characters (U+001B at character 1)"))
    );
}

async fn a_batch_of_large_poison_messages_beyond_the_packet_limit_is_recorded(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // 400 distinct poison messages of 60 KiB: 24 MiB, beyond MariaDB's
    // default max_allowed_packet (16 MiB) in one statement.
    let mut stream: Vec<Vec<u8>> = (0..400)
        .map(|i| format!("{i:06}{}", "\u{1}".repeat(60 * 1024)).into_bytes())
        .collect();
    stream.extend((1..=20).map(|u| valid(u, 7)));

    let settled = creator(&db).process_batch(Source::Rabbitmq, &stream).await;

    assert!(settled.is_ok(), "{settled:?}");
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 20);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable")
            .await,
        400
    );
}

fn new_orders(count: i64, product: i64) -> Vec<NewOrder> {
    (1..=count)
        .map(|user| NewOrder::new(SeckillMessage::parse(&valid(user, product)).unwrap()))
        .collect()
}

async fn ten_thousand_new_purchases_in_one_batch_all_commit(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // 10 placeholders a row: more than MySQL's 65,535 in one INSERT.
    let orders = new_orders(10_000, 3);

    let outcomes = db.storage.create_orders(&orders).await;

    assert!(outcomes.is_ok(), "{outcomes:?}");
    assert_eq!(outcomes.unwrap().len(), 10_000);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 10_000);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_items").await, 10_000);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_events").await,
        10_000,
        "one order.created each, under both engines' statement limits"
    );
    // Redelivered whole: all duplicates, nothing new.
    let again = db.storage.create_orders(&orders).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 10_000);
}

async fn the_compensator_claims_and_retries_seven_thousand_failures_in_one_run(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let due = Utc::now() - chrono::Duration::seconds(1);
    let failures: Vec<_> = (1..=7000)
        .map(|user| {
            order_core::domain::NewFailure::retryable(
                &valid(user, 5),
                "earlier write failed",
                Source::Rabbitmq,
                due,
            )
        })
        .collect();
    for chunk in failures.chunks(1000) {
        db.storage.record_failures(chunk).await.unwrap();
    }
    let mut settings = Settings::default();
    settings.compensator.batch_size = 7000;
    let retrier = settings.retrier(creator(&db));

    let report = retrier.run_once().await;

    let report = report.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.claimed.len(), 7000);
    assert_eq!(report.succeeded, 7000);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 7000);
    // And they expire in one run just as well.
    db.execute("UPDATE orders SET created_at = created_at - INTERVAL '1' DAY")
        .await;
    let expired = db
        .storage
        .expire_unpaid(
            Utc::now() - chrono::Duration::hours(1),
            7000,
            &Cause::because("not paid within 1h"),
        )
        .await
        .unwrap();
    assert_eq!(expired.len(), 7000);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_events WHERE event_type = 'order.expired'")
            .await,
        7000,
        "one event per expired order, in the same run"
    );
}

async fn an_error_that_is_neither_an_outage_nor_the_rows_data_narrows_to_its_message(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    // A trigger refuses one seckill's orders with an error of its own
    // (SQLSTATE P0001 / 45000): not an outage, not a data rule.
    exec(
        &db,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.seckill_id = 'refused' THEN RAISE EXCEPTION 'refused by policy'; END IF; RETURN NEW; END $$",
        "SELECT 1",
    )
    .await;
    exec(
        &db,
        "CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse()",
        "CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW \
         BEGIN IF NEW.seckill_id = 'refused' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by policy'; END IF; END",
    )
    .await;
    let mut stream: Vec<Vec<u8>> = (1..=30).map(|u| valid(u, 2)).collect();
    stream.insert(17, with(500, "seckill_id", r#""refused""#));

    let settled = creator(&db).process_batch(Source::Kafka, &stream).await;

    assert!(settled.is_ok(), "{settled:?}");
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 30);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failures WHERE retryable AND status = 'pending'")
            .await,
        1,
        "the refused purchase waits for a retry"
    );
}

async fn a_message_whose_failure_cannot_be_recorded_is_dead_lettered_and_the_rest_commit(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    db.refuse_failure_records_containing("unrecordable").await;
    let mut stream: Vec<Vec<u8>> = (1..=10).map(|u| valid(u, 4)).collect();
    stream.insert(3, b"poison, unrecordable".to_vec());
    stream.insert(6, b"poison, recordable".to_vec());

    let settled = creator(&db)
        .process_batch(Source::Rabbitmq, &stream)
        .await
        .unwrap();

    let dead: Vec<usize> = settled
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Settlement::DeadLetter { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(dead, vec![3]);
    let reason = settled[3].dead_letter_reason().unwrap();
    assert!(
        reason.contains("not a valid JSON object") && reason.contains("no room for it"),
        "{reason}"
    );
    assert!(matches!(
        settled[6],
        Settlement::Settled(MessageOutcome::Poison(_))
    ));
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 10);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_failures").await, 1);
}

async fn a_table_the_statements_need_gone_pauses_instead_of_dead_lettering(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    // An operator's mistake (a missing table, a revoked privilege) refuses
    // every row alike: no message causes it, so none may be dead-lettered.
    exec(
        &db,
        "ALTER TABLE order_failures RENAME TO order_failures_away",
        "RENAME TABLE order_failures TO order_failures_away",
    )
    .await;
    let stream = vec![valid(1, 6), b"poison".to_vec()];

    let during = creator(&db).process_batch(Source::Rabbitmq, &stream).await;

    let err = during.expect_err("a missing table pauses the batch");
    assert!(err.is_unavailable(), "{err}");
    exec(
        &db,
        "ALTER TABLE order_failures_away RENAME TO order_failures",
        "RENAME TABLE order_failures_away TO order_failures",
    )
    .await;
    let after = creator(&db)
        .process_batch(Source::Rabbitmq, &stream)
        .await
        .unwrap();
    assert!(
        after.iter().all(|s| matches!(s, Settlement::Settled(_))),
        "{after:?}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_failures").await, 1);
}
