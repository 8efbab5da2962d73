//! `order-api` as a process: flags, migrations on both engines, start and stop.

use std::process::Command;
use std::time::Duration;

use order_core::config::Driver;
use order_core::testing::{ENGINES, TestDatabase, process};

const BIN: &str = env!("CARGO_BIN_EXE_order-api");

fn migrate(db: &TestDatabase) -> std::process::Output {
    Command::new(BIN)
        .arg("migrate")
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .env("NO_COLOR", "1")
        .output()
        .expect("run order-api migrate")
}

async fn tables(db: &TestDatabase) -> usize {
    db.table_names().await.len()
}

#[tokio::test]
async fn migrate_creates_the_tables_on_an_empty_database_and_a_second_run_changes_nothing() {
    for driver in ENGINES {
        let db = TestDatabase::empty(driver).await;
        assert_eq!(tables(&db).await, 0);

        let first = migrate(&db);
        let out = String::from_utf8_lossy(&first.stdout);
        assert!(
            first.status.success(),
            "{driver:?}: {out}{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(out.contains("applied migrations"), "{driver:?}: {out}");
        assert_eq!(
            tables(&db).await,
            5,
            "{driver:?}: four tables and the migrations table"
        );

        let second = migrate(&db);
        let out = String::from_utf8_lossy(&second.stdout);
        assert!(second.status.success(), "{driver:?}: {out}");
        assert!(out.contains("up to date"), "{driver:?}: {out}");
        assert_eq!(tables(&db).await, 5);
    }
}

#[test]
fn help_and_version_answer() {
    order_core::testing::assert_help_and_version(BIN, "order-api", &["migrate", "serve"]);
}

#[test]
fn a_bad_setting_stops_the_start_naming_the_key() {
    let out = Command::new(BIN)
        .arg("migrate")
        .env("ORDER__DATABASE__PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database.port: invalid digit"), "{err}");
    let out = Command::new(BIN)
        .args(["migrate", "--set", "worker.batch_size=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("worker.batch_size: must be between 1 and 10000")
    );
}

#[test]
fn an_unreachable_database_fails_migrate_with_a_clear_error() {
    let out = Command::new(BIN)
        .arg("migrate")
        .env(
            "ORDER__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("ORDER__DATABASE__ACQUIRE_TIMEOUT", "1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("migrating the database") && err.contains("unavailable"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_migrates_on_start_and_exits_0_on_sigterm() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let mut api = process::spawn(
        BIN,
        &[],
        &[("ORDER__DATABASE__URL", db.settings.url.expose())],
    );
    api.wait_for("order-api started", Duration::from_secs(30));
    assert_eq!(
        tables(&db).await,
        5,
        "database.auto_migrate is on by default"
    );
    let status = api.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

// Multi-threaded: the proxy's tasks run while the test blocks reading output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_while_the_database_is_down_waits_for_it_then_starts() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let proxy = order_core::testing::proxy::FaultProxy::start(db.server_addr()).await;
    proxy.cut();
    let url = db.settings_via(proxy.addr()).url.expose().to_owned();
    let mut api = process::spawn(
        BIN,
        &[],
        &[
            ("ORDER__DATABASE__URL", url.as_str()),
            ("ORDER__DATABASE__ACQUIRE_TIMEOUT", "1s"),
            ("ORDER__SERVER__PORT", "0"),
        ],
    );
    api.wait_for(
        "database unreachable at start; waiting for it",
        Duration::from_secs(30),
    );
    assert_eq!(tables(&db).await, 0, "nothing could be migrated yet");
    proxy.heal();
    api.wait_for("order-api started", Duration::from_secs(30));
    assert_eq!(tables(&db).await, 5);
    let status = api.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_while_waiting_for_the_database_at_start_ends_the_process() {
    let mut api = process::spawn(
        BIN,
        &[],
        &[
            (
                "ORDER__DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/none",
            ),
            ("ORDER__DATABASE__ACQUIRE_TIMEOUT", "1s"),
            ("ORDER__SERVER__PORT", "0"),
        ],
    );
    api.wait_for(
        "database unreachable at start; waiting for it",
        Duration::from_secs(30),
    );
    let status = api.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", api.output());
    assert!(
        api.output().contains("opening the database"),
        "{}",
        api.output()
    );
}
