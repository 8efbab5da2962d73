//! `order-api` as a process: flags, migrations on both engines, start and stop.

use std::process::Command;
use std::time::Duration;

use order_core::config::Driver;
use order_core::testing::{ENGINES, TestDatabase, process};

const BIN: &str = env!("CARGO_BIN_EXE_order-api");
const SECRET: &str = "cli-test-secret-of-at-least-32-bytes";

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
        &[
            ("ORDER__DATABASE__URL", db.settings.url.expose()),
            ("ORDER__API__AUTH__JWT_SECRET", SECRET),
        ],
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
            ("ORDER__API__AUTH__JWT_SECRET", SECRET),
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
            ("ORDER__API__AUTH__JWT_SECRET", SECRET),
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

#[test]
fn serve_without_an_end_user_key_refuses_to_start_and_names_the_keys() {
    let out = Command::new(BIN)
        .env(
            "ORDER__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for key in [
        "api.auth.jwt_secret",
        "api.auth.jwt_public_key_file",
        "api.auth.mode",
    ] {
        assert!(text.contains(key), "{text}");
    }
}

#[test]
fn token_mints_a_token_the_api_accepts_for_that_user_only() {
    let out = Command::new(BIN)
        .args(["token", "--user", "42", "--ttl", "10m"])
        .env("ORDER__API__AUTH__JWT_SECRET", SECRET)
        .env("ORDER__API__AUTH__AUDIENCE", "orders")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.matches('.').count(), 2, "{token}");
    let mut api = order_core::config::ApiSettings::default();
    api.auth.jwt_secret = order_core::config::Secret::new(SECRET);
    api.auth.audience = "orders".into();
    let auth = order_api::auth::Authenticator::new(&api).unwrap();
    assert_eq!(
        auth.caller(Some(&format!("Bearer {token}"))).unwrap(),
        order_core::service::Caller::User(42)
    );
    for args in [
        &["token", "--user", "0"][..],
        &["token"][..],
        &["token", "--user", "1", "--ttl", "soon"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env("ORDER__API__AUTH__JWT_SECRET", SECRET)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = Command::new(BIN)
        .args(["token", "--user", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.auth.jwt_secret"));
}
