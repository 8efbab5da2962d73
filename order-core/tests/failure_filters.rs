//! The failure ledger as the console reads it: filters on every field, a
//! text search that treats its input as text (LIKE's `%` and `_`, quotes,
//! backslashes and markup are matched literally), grouping by reason, the
//! counts by status, and each failure's retry history. On PostgreSQL and on
//! MariaDB/MySQL, against a model of the rows written.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use order_core::domain::{
    FailureFilter, FailureStatus, NewFailure, ReasonGroup, SearchText, Source, reason_group,
};
use order_core::storage::{PG_BODY_AS_ASCII, PageRequest, SEARCH_COUNT_CAP, Storage};
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

order_testkit::on_both_engines!(
    every_filter_field_narrows_the_failures_as_the_model_says,
    reasons_group_as_the_rule_says_and_filter_by_group,
    a_retry_leaves_its_history_which_goes_with_its_failure,
    a_bulk_retry_takes_only_what_its_filter_matches,
    a_search_counts_its_matches_up_to_the_cap,
);

/// The text search on PostgreSQL can use the trigram indexes: the query's
/// expressions are the indexed ones (with sequential scans off, the plan
/// takes both indexes).
#[tokio::test]
async fn the_search_on_postgres_uses_the_trigram_indexes() {
    let db = TestDatabase::new(Driver::Postgres).await;
    ledger(&db, 10).await;
    let Storage::Postgres(pg) = &db.storage else {
        unreachable!()
    };
    let mut conn = pg.pool().acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT COUNT(*) FROM order_failures WHERE (error_message ILIKE '%decimal%' \
         ESCAPE '!' OR lower({PG_BODY_AS_ASCII}) LIKE '%decimal%' ESCAPE '!')"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    for index in [
        "order_failures_reason_trgm_idx",
        "order_failures_body_trgm_idx",
    ] {
        assert!(plan.contains(index), "{index} is not used:\n{plan}");
    }
}

/// Reasons as recorded: several share a group once their values go.
const REASONS: &[&str] = &[
    "unit_price: must have at most 2 decimal places (got 1.234)",
    "unit_price: must have at most 2 decimal places (got 9.999)",
    "message is not a valid JSON object: expected value at line 1 column 2",
    "message is not a valid JSON object: expected value at line 3 column 9",
    "timestamp: must be an RFC 3339 date-time (premature end of input): \"2024-\"",
    "write failed: 100% of the pool_size in use",
    "user <b>bold</b> & 'quoted' \\ back\\slash",
    "user_id: is required",
    // Case matters: neither the values' pattern nor the group ignores it.
    "User_id: is required",
    "unit_price: must have at most 2 decimal places (GOT 1.234)",
    "a reason far longer than a group keeps, a reason far longer than a group keeps, a reason far \
     longer than a group keeps, a reason far longer than a group keeps, a reason far longer than a \
     group keeps, and then some (got 1)",
];

/// Bodies as received: text, markup, LIKE's wildcards, and bytes that are
/// not UTF-8 around ASCII.
fn body(i: usize) -> Vec<u8> {
    let mut raw = match i % 5 {
        0 => format!(r#"{{"user_id":{i},"product_id":2,"seckill_id":"Flash_Sale"}}"#).into_bytes(),
        1 => format!("<script>alert({i})</script><img src=x onerror=alert(1)>").into_bytes(),
        2 => format!("100% off_{i} !bang!").into_bytes(),
        3 => {
            let mut b = vec![0xff, 0xfe, 0x00];
            b.extend_from_slice(format!("BINARY{i}\\x").as_bytes());
            b.push(0x80);
            b
        }
        _ => format!("plain text number {i}, café \u{1F389}").into_bytes(),
    };
    raw.extend_from_slice(format!(" #{i}").as_bytes());
    raw
}

/// One failure as written, to filter in memory.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    status: FailureStatus,
    source: Source,
    retryable: bool,
    created_at: DateTime<Utc>,
    reason: String,
    body: Vec<u8>,
}

impl Row {
    fn matches(&self, f: &FailureFilter) -> bool {
        f.status.is_none_or(|s| s == self.status)
            && f.source.is_none_or(|s| s == self.source)
            && f.retryable.is_none_or(|r| r == self.retryable)
            && f.since.is_none_or(|t| self.created_at >= t)
            && f.until.is_none_or(|t| self.created_at < t)
            && f.text.as_ref().is_none_or(|q| self.holds(q.as_str()))
            && f.reason
                .as_ref()
                .is_none_or(|g| reason_group(&self.reason) == g.as_str())
    }

    /// The model of the text search for ASCII searches: case-insensitive,
    /// in the reason or the body's bytes.
    fn holds(&self, q: &str) -> bool {
        let q = q.to_ascii_lowercase();
        self.reason.to_ascii_lowercase().contains(&q)
            || self
                .body
                .to_ascii_lowercase()
                .windows(q.len())
                .any(|w| w == q.as_bytes())
    }
}

const STATUSES: [FailureStatus; 4] = [
    FailureStatus::Pending,
    FailureStatus::Failed,
    FailureStatus::Success,
    FailureStatus::Resolved,
];

/// Writes `n` failures with every combination of field, each created an
/// hour before the one after it, and answers them as the model's rows.
async fn ledger(db: &TestDatabase, n: usize) -> (Vec<Row>, DateTime<Utc>) {
    let base = (Utc::now() - TimeDelta::days(30))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let mut rows = Vec::with_capacity(n);
    let mut new = Vec::with_capacity(n);
    for i in 0..n {
        let source = Source::ALL[i % Source::ALL.len()];
        let retryable = i % 3 != 0;
        let reason = REASONS[i % REASONS.len()];
        let raw = body(i);
        new.push(if retryable {
            NewFailure::retryable(&raw, reason, source, Utc::now())
        } else {
            NewFailure::poison(&raw, reason, source, Utc::now())
        });
        rows.push(Row {
            id: 0,
            status: STATUSES[(i / 2) % STATUSES.len()],
            source,
            retryable,
            created_at: base + TimeDelta::hours(i64::try_from(i).unwrap()),
            reason: reason.to_owned(),
            body: raw,
        });
    }
    let ids = db.storage.record_failures(&new).await.unwrap();
    for (row, id) in rows.iter_mut().zip(ids) {
        row.id = id;
        let at = row.created_at.format("%Y-%m-%d %H:%M:%S");
        // PostgreSQL reads a time without offset in the session's zone.
        let zone = if db.driver() == Driver::Postgres {
            "+00"
        } else {
            ""
        };
        db.execute(&format!(
            "UPDATE order_failures SET status = '{}', created_at = '{at}{zone}' WHERE id = {id}",
            row.status.as_str()
        ))
        .await;
    }
    (rows, base)
}

/// The ids the storage lists for `filter`, newest first, all pages.
async fn listed(db: &TestDatabase, filter: &FailureFilter) -> (Vec<i64>, i64) {
    let page = db
        .storage
        .list_failures(
            filter,
            PageRequest {
                page: 1,
                page_size: 1000,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{filter:?}: {e}"));
    (page.items.iter().map(|f| f.id).collect(), page.total)
}

fn expected(rows: &[Row], filter: &FailureFilter) -> Vec<i64> {
    let mut ids: Vec<i64> = rows
        .iter()
        .filter(|r| r.matches(filter))
        .map(|r| r.id)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

fn search(q: &str) -> FailureFilter {
    FailureFilter {
        text: Some(SearchText::parse("q", q).unwrap()),
        ..FailureFilter::default()
    }
}

async fn every_filter_field_narrows_the_failures_as_the_model_says(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (rows, base) = ledger(&db, 60).await;
    let mut filters = vec![FailureFilter::default()];
    for status in FailureStatus::ALL {
        filters.push(FailureFilter::of_status(*status));
    }
    for source in Source::ALL {
        filters.push(FailureFilter {
            source: Some(*source),
            ..FailureFilter::default()
        });
    }
    for retryable in [true, false] {
        filters.push(FailureFilter {
            retryable: Some(retryable),
            ..FailureFilter::default()
        });
    }
    filters.push(FailureFilter {
        since: Some(base + TimeDelta::hours(10)),
        until: Some(base + TimeDelta::hours(20)),
        ..FailureFilter::default()
    });
    filters.push(FailureFilter {
        since: Some(base + TimeDelta::days(1)),
        ..FailureFilter::default()
    });
    // Literal text: LIKE's wildcards and its escape character, quotes,
    // backslashes, markup, any case.
    for q in [
        "decimal",
        "DECIMAL",
        "100%",
        "%",
        "_",
        "pool_size",
        "off_1",
        "!bang!",
        "!",
        "'quoted'",
        "\\",
        "back\\slash",
        "<script>",
        "onerror=",
        "binary3",
        "flash_sale",
        "nothing-like-it",
        "\"2024-\"",
        "#5",
        "cafe",
        "?",
        "caf?",
    ] {
        filters.push(search(q));
    }
    // Fields together.
    filters.push(FailureFilter {
        status: Some(FailureStatus::Pending),
        source: Some(Source::Rabbitmq),
        retryable: Some(true),
        text: Some(SearchText::parse("q", "unit_price").unwrap()),
        ..FailureFilter::default()
    });
    for filter in &filters {
        let want = expected(&rows, filter);
        let (ids, total) = listed(&db, filter).await;
        assert_eq!(ids, want, "{filter:?}");
        assert_eq!(total, i64::try_from(want.len()).unwrap(), "{filter:?}");
    }
    // Text that is not ASCII: found as written on both engines (in other
    // cases too on MariaDB/MySQL, whose collation ignores case and accents);
    // never an error.
    let cafe = FailureFilter {
        text: Some(SearchText::parse("q", "café").unwrap()),
        ..FailureFilter::default()
    };
    let with_cafe: Vec<i64> = expected(&rows, &FailureFilter::default())
        .into_iter()
        .filter(|id| {
            let row = rows.iter().find(|r| r.id == *id).unwrap();
            String::from_utf8_lossy(&row.body).contains("café")
        })
        .collect();
    assert!(!with_cafe.is_empty());
    assert_eq!(listed(&db, &cafe).await.0, with_cafe);
    // An emoji is itself, not any emoji (a collation may weigh them alike).
    let party: Vec<i64> = with_cafe.clone();
    assert_eq!(listed(&db, &search("\u{1F389}")).await.0, party);
    assert_eq!(listed(&db, &search("\u{1F600}")).await.0, Vec::<i64>::new());
    for q in ["CAFÉ", "ü%_", "\u{FFFD}"] {
        listed(&db, &search(q)).await;
    }
    // Paging: pages of the same filter, newest first, without overlap.
    let filter = FailureFilter {
        retryable: Some(true),
        ..FailureFilter::default()
    };
    let want = expected(&rows, &filter);
    let mut paged = Vec::new();
    for page in 1..=4 {
        let found = db
            .storage
            .list_failures(
                &filter,
                PageRequest {
                    page,
                    page_size: 13,
                },
            )
            .await
            .unwrap();
        paged.extend(found.items.iter().map(|f| f.id));
    }
    assert_eq!(paged, want);
    // By status, every status present.
    let summary = db.storage.failure_summary().await.unwrap();
    assert_eq!(summary.len(), FailureStatus::ALL.len());
    for status in FailureStatus::ALL {
        let n = rows.iter().filter(|r| r.status == *status).count();
        assert_eq!(summary[status], i64::try_from(n).unwrap(), "{status}");
    }
}

async fn reasons_group_as_the_rule_says_and_filter_by_group(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (rows, _) = ledger(&db, 40).await;
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        *want.entry(reason_group(&row.reason)).or_default() += 1;
    }
    let (groups, total) = db
        .storage
        .failure_reasons(&FailureFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(total, 40);
    let got: BTreeMap<String, i64> = groups.iter().map(|g| (g.reason.clone(), g.count)).collect();
    assert_eq!(got, want, "the database groups as reason_group does");
    assert!(
        got["unit_price: must have at most 2 decimal places"] >= 5,
        "{got:?}"
    );
    // Largest first.
    assert!(groups.windows(2).all(|w| w[0].count >= w[1].count));
    // A limit keeps the largest.
    let (top, _) = db
        .storage
        .failure_reasons(&FailureFilter::default(), 2)
        .await
        .unwrap();
    assert_eq!(top, groups[..2]);
    // Each group as a filter lists exactly its failures.
    for group in got.keys() {
        let filter = FailureFilter {
            reason: Some(ReasonGroup::parse("reason", group).unwrap()),
            ..FailureFilter::default()
        };
        let (ids, _) = listed(&db, &filter).await;
        assert_eq!(ids, expected(&rows, &filter), "{group}");
    }
    // Grouping within a filter.
    let filter = FailureFilter {
        source: Some(Source::Kafka),
        ..FailureFilter::default()
    };
    let (groups, total) = db.storage.failure_reasons(&filter, 100).await.unwrap();
    let kafka = rows.iter().filter(|r| r.source == Source::Kafka).count();
    assert_eq!(total, i64::try_from(kafka).unwrap());
    assert_eq!(groups.iter().map(|g| g.count).sum::<i64>(), total);
}

async fn a_retry_leaves_its_history_which_goes_with_its_failure(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let valid = order_testkit::fixtures::Seckill::new(5, 6).bytes();
    let ids = db
        .storage
        .record_failures(&[NewFailure::retryable(
            &valid,
            "write failed",
            Source::Rabbitmq,
            Utc::now(),
        )])
        .await
        .unwrap();
    let id = ids[0];
    assert!(db.storage.failure_attempts(id).await.unwrap().is_empty());
    let lease = |claimed| match claimed {
        order_core::storage::ClaimById::Claimed(_, lease) => lease,
        other => panic!("not claimed: {other:?}"),
    };
    let first = lease(
        db.storage
            .claim_failure(id, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let later = Utc::now() + TimeDelta::minutes(5);
    assert!(
        db.storage
            .reschedule_failure(id, &first, "database unreachable", later)
            .await
            .unwrap()
    );
    // A lost lease ends nothing and writes no history.
    assert!(
        !db.storage
            .mark_failure_failed(id, &first, "too late")
            .await
            .unwrap()
    );
    let second = lease(
        db.storage
            .claim_failure(id, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let order = uuid::Uuid::now_v7();
    assert!(
        db.storage
            .mark_failure_succeeded(id, &second, order)
            .await
            .unwrap()
    );
    let history = db.storage.failure_attempts(id).await.unwrap();
    let seen: Vec<(&str, Option<&str>, Option<uuid::Uuid>)> = history
        .iter()
        .map(|a| (a.outcome.as_str(), a.reason.as_deref(), a.order_id))
        .collect();
    assert_eq!(
        seen,
        [
            ("rescheduled", Some("database unreachable"), None),
            ("created", None, Some(order)),
        ]
    );
    assert!(history[0].at <= history[1].at);
    // Purged with its failure.
    db.execute(&format!(
        "UPDATE order_failures SET updated_at = '2000-01-01 00:00:00' WHERE id = {id}"
    ))
    .await;
    let purged = db
        .storage
        .purge_resolved_failures(Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_failure_attempts")
            .await,
        0
    );
}

async fn a_bulk_retry_takes_only_what_its_filter_matches(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let (rows, _) = ledger(&db, 48).await;
    for status in [FailureStatus::Pending, FailureStatus::Failed] {
        for source in Source::ALL {
            let filter = FailureFilter {
                status: Some(status),
                source: Some(*source),
                ..FailureFilter::default()
            };
            let retryable = FailureFilter {
                retryable: Some(true),
                ..filter.clone()
            };
            let want = expected(&rows, &retryable);
            assert_eq!(
                db.storage.count_retryable_failures(&filter).await.unwrap(),
                i64::try_from(want.len()).unwrap()
            );
            let ids = db
                .storage
                .retryable_failure_ids(&filter, 1000)
                .await
                .unwrap();
            assert_eq!(ids, want, "{filter:?}");
            let first = db.storage.retryable_failure_ids(&filter, 1).await.unwrap();
            assert_eq!(first, want.first().copied().into_iter().collect::<Vec<_>>());
        }
    }
}

/// Any ASCII search, its wildcards and quotes included, lists what the model
/// says on both engines: the input is matched as text, never as a pattern.
#[test]
fn any_ascii_search_matches_literally_on_both_engines() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for driver in [Driver::Postgres, Driver::Mysql] {
        let db = runtime.block_on(TestDatabase::new(driver));
        let (rows, _) = runtime.block_on(ledger(&db, 30));
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let outcome = runner.run(&"[a-cA-C0-3%_!?\\\\'\" <>#.:=(){}-]{1,6}", |q| {
            runtime.block_on(async {
                let filter = search(&q);
                let (ids, _) = listed(&db, &filter).await;
                prop_assert_eq!(ids, expected(&rows, &filter), "{:?} on {:?}", q, driver);
                Ok::<(), TestCaseError>(())
            })
        });
        if let Err(e) = outcome {
            panic!("{driver:?}: {e}");
        }
    }
}

async fn a_search_counts_its_matches_up_to_the_cap(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let cap = usize::try_from(SEARCH_COUNT_CAP).unwrap();
    let new: Vec<NewFailure> = (0..=cap)
        .map(|i| {
            NewFailure::poison(
                format!("needle {i}").as_bytes(),
                "not JSON",
                Source::Kafka,
                Utc::now(),
            )
        })
        .collect();
    db.storage.record_failures(&new).await.unwrap();
    let page = PageRequest {
        page: 1,
        page_size: 10,
    };
    let found = db
        .storage
        .list_failures(&search("needle"), page)
        .await
        .unwrap();
    assert_eq!(
        (found.total, found.capped, found.items.len()),
        (SEARCH_COUNT_CAP, true, 10)
    );
    let found = db
        .storage
        .list_failures(&search("needle 1000"), page)
        .await
        .unwrap();
    assert_eq!((found.total, found.capped), (2, false), "1000 and 10000");
    // Without a search, counted exactly.
    let all = db
        .storage
        .list_failures(&FailureFilter::default(), page)
        .await
        .unwrap();
    assert_eq!((all.total, all.capped), (SEARCH_COUNT_CAP + 1, false));
}
