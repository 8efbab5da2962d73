//! The invariants: waiting for quiescence, then what the database must
//! hold (nothing lost, nothing doubled, every poison and failing write
//! recorded), each as a check with its figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use order_testkit::TestDatabase;

use crate::broker::BrokerUnderTest;
use crate::mib;
use crate::settings::MAX_RETRIES;
use crate::stack::Stack;
use crate::stream::Expected;

/// One invariant with its figure.
#[derive(Debug)]
pub struct Check {
    pub what: String,
    pub figure: String,
    pub ok: bool,
}

pub fn check(what: impl Into<String>, figure: impl Into<String>, ok: bool) -> Check {
    Check {
        what: what.into(),
        figure: figure.into(),
        ok,
    }
}

/// Waits until the database holds what the stream must give, every failing
/// write is given up and the broker has nothing left for the workers.
pub async fn settle(
    db: &TestDatabase,
    expected: &Expected,
    broker: &BrokerUnderTest,
    ends: &HashMap<i32, i64>,
    limit: Duration,
    stack: &mut Stack,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        stack.reap();
        let orders = db.count("SELECT COUNT(*) FROM orders").await;
        let poison = db
            .count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable")
            .await;
        let open = db
            .count("SELECT COUNT(*) FROM order_failures WHERE status IN ('pending', 'processing')")
            .await;
        let given_up = db
            .count("SELECT COUNT(*) FROM order_failures WHERE retryable AND status = 'failed'")
            .await;
        let figures = format!(
            "{orders}/{} orders, {poison}/{} poison rows, {given_up}/{} failing writes given up, \
             {open} failures open",
            expected.orders, expected.poison, expected.failing
        );
        if orders >= count_i64(expected.orders)
            && poison >= count_i64(expected.poison)
            && given_up >= count_i64(expected.failing)
            && open == 0
            && broker.drained(ends).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after {limit:?}: {figures}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn count_i64(n: usize) -> i64 {
    i64::try_from(n).expect("a count fits i64")
}

/// Poison rows with a reason among the failures of these digests.
async fn poison_rows_with_reason(
    db: &TestDatabase,
    digests: impl IntoIterator<Item = &String>,
) -> i64 {
    let quoted: Vec<String> = digests.into_iter().map(|d| format!("'{d}'")).collect();
    db.count(&format!(
        "SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed' \
         AND error_message <> '' AND message_digest IN ({})",
        quoted.join(",")
    ))
    .await
}

pub async fn database_checks(db: &TestDatabase, expected: &Expected) -> Vec<Check> {
    let mut checks = Vec::new();
    let orders = db.count("SELECT COUNT(*) FROM orders").await;
    checks.push(check(
        "orders = distinct valid (user, product) pairs sent",
        format!("{orders} = {}", expected.orders),
        orders == count_i64(expected.orders),
    ));
    let doubled = db
        .count(
            "SELECT COUNT(*) FROM (SELECT user_id, product_id FROM orders \
             GROUP BY user_id, product_id HAVING COUNT(*) > 1) AS d",
        )
        .await;
    checks.push(check(
        "no (user, product) pair has two orders",
        format!("{doubled} pairs doubled"),
        doubled == 0,
    ));
    let no_record = db
        .count(
            "SELECT COUNT(*) FROM orders o LEFT JOIN idempotency_records r \
             ON r.order_id = o.order_id WHERE r.order_id IS NULL",
        )
        .await;
    let no_item = db
        .count(
            "SELECT COUNT(*) FROM orders o LEFT JOIN order_items i \
             ON i.order_id = o.order_id WHERE i.order_id IS NULL",
        )
        .await;
    let records = db.count("SELECT COUNT(*) FROM idempotency_records").await;
    checks.push(check(
        "every order has its idempotency record and its item",
        format!("{no_record} without a record, {no_item} without an item; {records} records"),
        no_record == 0 && no_item == 0 && records == orders,
    ));
    let poison = db
        .count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed'")
        .await;
    checks.push(check(
        "poison rows = poison sent",
        format!("{poison} = {}", expected.poison),
        poison == count_i64(expected.poison),
    ));
    let recorded = poison_rows_with_reason(db, expected.corpus_poison.iter().map(|(d, _)| d)).await;
    checks.push(check(
        "every malformed message is a poison row with a reason",
        format!("{recorded}/{}", expected.corpus_poison.len()),
        recorded == count_i64(expected.corpus_poison.len()),
    ));
    if !expected.flood_poison.is_empty() {
        let recorded = poison_rows_with_reason(db, &expected.flood_poison).await;
        checks.push(check(
            "every flood message is a poison row with a reason",
            format!(
                "{recorded}/{} ({:.1} MiB sent in one burst)",
                expected.flood_poison.len(),
                mib(expected.flood_bytes)
            ),
            recorded == count_i64(expected.flood_poison.len()),
        ));
    }
    let mut corpus_orders = 0;
    for user in &expected.corpus_order_users {
        corpus_orders += db
            .count(&format!(
                "SELECT COUNT(*) FROM orders WHERE user_id = {user}"
            ))
            .await;
    }
    checks.push(check(
        "a valid message with extra fields is an order",
        format!("{corpus_orders}/{}", expected.corpus_order_users.len()),
        corpus_orders == count_i64(expected.corpus_order_users.len()),
    ));
    let given_up = db
        .count(&format!(
            "SELECT COUNT(*) FROM order_failures WHERE retryable AND status = 'failed' \
             AND retry_count = {MAX_RETRIES}"
        ))
        .await;
    let retryable = db
        .count("SELECT COUNT(*) FROM order_failures WHERE retryable")
        .await;
    checks.push(check(
        "failing writes retried by the compensators, then given up",
        format!(
            "{given_up} given up after {MAX_RETRIES} retries, of {retryable} retryable rows; {} sent",
            expected.failing
        ),
        given_up == count_i64(expected.failing) && retryable == given_up,
    ));
    let open = db
        .count("SELECT COUNT(*) FROM order_failures WHERE status IN ('pending', 'processing')")
        .await;
    checks.push(check(
        "no failure left pending or processing",
        format!("{open} open"),
        open == 0,
    ));
    checks.push(rollup_check(db).await);
    checks
}

/// The statistics rollups, kept by every writer that was killed, cut off
/// and restarted, against a full count of the orders table, day by day.
async fn rollup_check(db: &TestDatabase) -> Check {
    let what = "statistics rollups = a full count of orders, every day and status";
    let Some((first, last)) = db.storage.stats_days().await.unwrap_or(None) else {
        return check(what, "no orders", true);
    };
    let counting = db.storage.clone().without_rollups();
    let (mut days, mut orders, mut wrong) = (0, 0_i64, 0);
    let mut from = first;
    // A series answers at most a year: the days in parts.
    while from <= last {
        let to = (from + chrono::Days::new(365)).min(last);
        let (rolled, counted) = match (
            db.storage.stats_by_day(from, to).await,
            counting.stats_by_day(from, to).await,
        ) {
            (Ok(r), Ok(c)) => (r, c),
            (r, c) => {
                let figure = format!("unreadable: {:?} / {:?}", r.err(), c.err());
                return check(what, figure, false);
            }
        };
        days += counted.len();
        orders += counted.iter().map(|e| e.figures.order_count).sum::<i64>();
        wrong += rolled.iter().zip(&counted).filter(|(a, b)| a != b).count()
            + rolled.len().abs_diff(counted.len());
        from = to + chrono::Days::new(1);
    }
    check(
        what,
        format!("{days} days, {orders} orders, {wrong} days differ"),
        wrong == 0,
    )
}
