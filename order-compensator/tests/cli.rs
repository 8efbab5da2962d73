//! `order-compensator` as a process: flags, `run-once`, probes, start and stop.

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use order_core::domain::{NewFailure, Source};
use order_runtime::config::Driver;
use order_testkit::fixtures::Seckill;
use order_testkit::{TestDatabase, free_port, http, process};

const BIN: &str = env!("CARGO_BIN_EXE_order-compensator");

#[test]
fn help_and_version_answer() {
    order_testkit::assert_help_and_version(BIN, "order-compensator", &["run-once"]);
}

#[test]
fn a_bad_setting_stops_the_start_naming_the_key() {
    let out = Command::new(BIN)
        .env("ORDER__COMPENSATOR__LEASE", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compensator.lease: expected a duration")
    );
    let out = Command::new(BIN)
        .env("ORDER__COMPENSATOR__RETRY_CRON", "* * * * *")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("compensator.retry_cron: "));
}

#[tokio::test]
async fn run_once_retries_due_failures_and_prints_what_it_did() {
    let db = TestDatabase::new(Driver::Mysql).await;
    let message = &Seckill::new(1, 2)
        .unit_price_number("3")
        .seckill_id("s")
        .bytes();
    let due = Utc::now() - chrono::Duration::seconds(1);
    db.storage
        .record_failures(&[NewFailure::retryable(message, "x", Source::Kafka, due)])
        .await
        .unwrap();
    let out = Command::new(BIN)
        .args(["run-once", "retry-failures"])
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .env("ORDER__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON report on stdout");
    assert_eq!(report["job"], "retry-failures");
    assert_eq!(report["succeeded"], 1);
    assert_eq!(report["backlog"], 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 1);
}

#[tokio::test]
async fn serves_health_and_metrics_runs_on_schedule_and_exits_0_on_sigterm() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let port = free_port();
    let mut child = process::spawn(
        BIN,
        &[],
        &[
            ("ORDER__DATABASE__URL", db.settings.url.expose()),
            ("ORDER__OBSERVABILITY__PORT", &port.to_string()),
            ("ORDER__COMPENSATOR__RETRY_CRON", "* * * * * *"),
            // An idle run logs at DEBUG only.
            ("ORDER__LOG__LEVEL", "info,order_compensator=debug"),
        ],
    );
    child.wait_for("order-compensator started", Duration::from_secs(30));
    assert_eq!(
        db.table_names().await.len(),
        TestDatabase::MIGRATED_TABLES,
        "database.auto_migrate is on by default"
    );
    let addr = ([127, 0, 0, 1], port).into();

    let (status, body) = http::get(addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["checks"]["database"], "up");
    assert_eq!(http::get(addr, "/health/live").await.0, 200);

    // The every-second retry job runs by itself and reports through /metrics;
    // its report is logged as fields, not as a Rust structure.
    child.wait_for("run finished", Duration::from_secs(5));
    let out = child.output();
    let finished = out.lines().find(|l| l.contains("run finished")).unwrap();
    assert!(
        finished.contains("claimed=0") && finished.contains("backlog=0"),
        "{finished}"
    );
    assert!(!finished.contains("RetryFailures {"), "{finished}");
    let (status, metrics) = http::get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "compensator_runs_total",
        "compensator_run_duration_seconds",
        "compensator_backlog",
        "db_pool_connections",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    let status = child.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", child.output());
}

#[tokio::test]
async fn an_idle_compensator_is_quiet_at_info() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let mut child = process::spawn(
        BIN,
        &[],
        &[
            ("ORDER__DATABASE__URL", db.settings.url.expose()),
            ("ORDER__OBSERVABILITY__PORT", &free_port().to_string()),
            ("ORDER__COMPENSATOR__RETRY_CRON", "* * * * * *"),
            ("ORDER__COMPENSATOR__EXPIRE_CRON", "* * * * * *"),
            ("ORDER__LOG__LEVEL", "info"),
        ],
    );
    child.wait_for("order-compensator started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(2500));
    let status = child.terminate(Duration::from_secs(10));
    let out = child.output();
    assert!(status.success(), "{status:?}: {out}");
    for noise in [
        "run finished",
        "Uninited",
        "Job creator created",
        "already exists, skipping",
    ] {
        assert!(!out.contains(noise), "{noise:?} at INFO:\n{out}");
    }
}

#[tokio::test]
async fn run_once_fails_at_once_when_the_database_is_unreachable() {
    let mut child = Command::new(BIN)
        .args(["run-once", "expire-unpaid"])
        .env(
            "ORDER__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("run-once still waiting for the database after 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("refused"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no report for a run that did not happen"
    );
}

#[tokio::test]
async fn run_once_whose_reader_went_away_still_exits_0() {
    // `order-compensator run-once … | head -c0`: the reader quits first.
    let db = TestDatabase::new(Driver::Postgres).await;
    let mut child = Command::new(BIN)
        .args(["run-once", "purge-resolved"])
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Logs on stderr carry no colour codes when it is not a terminal.
    assert!(!err.contains('\x1b'), "{err:?}");
}
