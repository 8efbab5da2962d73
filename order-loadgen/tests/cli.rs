//! `order-loadgen` as a process: the seed is random unless given, printed at
//! the start and in the summary, and `--seed` repeats a stream exactly.

use std::process::{Command, Output};

use order_runtime::config::Driver;
use order_testkit::TestDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_order-loadgen");

#[test]
fn help_and_version_answer() {
    order_testkit::assert_help_and_version(BIN, "order-loadgen", &["--seed", "--quiet"]);
}

/// A run of the SQL baseline (no broker) into `db`: its stdout as JSON,
/// and its stderr.
fn run(db: &TestDatabase, args: &[&str]) -> (serde_json::Value, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(["--broker", "sql", "--count", "300"])
        .args(["--poison-ratio", "0.02", "--duplicate-ratio", "0.2"])
        .args(args)
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .output()
        .unwrap();
    let stderr = String::from_utf8(stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    let summary = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&stdout)));
    (summary, stderr)
}

/// The summary without the time the insert took.
fn stream(summary: &serde_json::Value) -> serde_json::Value {
    let mut summary = summary.clone();
    summary.as_object_mut().unwrap().remove("seconds");
    summary
}

#[tokio::test]
async fn runs_without_seed_differ_print_theirs_and_seed_repeats_a_run() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let purchases = || db.count("SELECT COUNT(*) FROM idempotency_records");

    let (first, err_first) = run(&db, &[]);
    let seed = first["seed"].as_u64().expect("the summary holds the seed");
    let lines: Vec<&str> = err_first.lines().collect();
    assert_eq!(lines.len(), 2, "{err_first}");
    assert!(
        lines[0].contains(&format!("with seed {seed}, random")),
        "the seed at the start: {err_first}"
    );
    assert!(
        lines[1].contains(&format!("seed {seed}"))
            && lines[1].contains("describes the stream, not what the database holds"),
        "the seed in the summary: {err_first}"
    );
    let pairs = first["distinct_pairs"].as_i64().unwrap();
    assert_eq!(purchases().await, pairs);

    // A second run without a seed sends other purchases: the database gains them.
    let (second, _) = run(&db, &[]);
    let other = second["seed"].as_u64().unwrap();
    assert_ne!(other, seed, "each run draws its own seed");
    assert_eq!(
        purchases().await,
        pairs + second["distinct_pairs"].as_i64().unwrap()
    );

    // The first seed again: the same stream, so nothing new in the database,
    // while the summary (of the stream) reads as before.
    let (again, err_again) = run(&db, &["--seed", &seed.to_string()]);
    assert_eq!(stream(&again), stream(&first));
    assert!(
        err_again
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!("with seed {seed} ("))),
        "a given seed is not called random: {err_again}"
    );
    assert_eq!(
        purchases().await,
        pairs + second["distinct_pairs"].as_i64().unwrap()
    );

    // --quiet: nothing on stderr; the summary still holds the seed.
    let (quiet, err_quiet) = run(&db, &["--quiet", "--seed", "5"]);
    assert_eq!(err_quiet, "");
    assert_eq!(quiet["seed"], 5);
}
