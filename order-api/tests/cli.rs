//! `order-api` as a process: flags, migrations on both engines, start and stop.

use std::process::Command;
use std::time::Duration;

use order_runtime::config::Driver;
use order_testkit::{ENGINES, TestDatabase, process};

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
        let log = String::from_utf8_lossy(&first.stderr);
        assert!(first.status.success(), "{driver:?}: {out}{log}");
        // stdout: the summary, one JSON line; stderr: the log.
        let summary: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            summary["applied"].as_array().is_some_and(|a| !a.is_empty()),
            "{summary}"
        );
        assert!(log.contains("applied migrations"), "{driver:?}: {log}");
        assert_eq!(
            tables(&db).await,
            TestDatabase::MIGRATED_TABLES,
            "{driver:?}: every table and the migrations table"
        );

        let second = migrate(&db);
        let out = String::from_utf8_lossy(&second.stdout);
        let log = String::from_utf8_lossy(&second.stderr);
        assert!(second.status.success(), "{driver:?}: {out}{log}");
        let summary: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(summary["applied"], serde_json::json!([]), "{summary}");
        assert!(log.contains("up to date"), "{driver:?}: {log}");
        // sqlx's notices about its own table stay out of an INFO log.
        assert!(!log.contains("already exists, skipping"), "{log}");
        assert_eq!(tables(&db).await, TestDatabase::MIGRATED_TABLES);
    }
}

#[test]
fn help_and_version_answer() {
    order_testkit::assert_help_and_version(BIN, "order-api", &["migrate", "serve"]);
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
    // Where it was tried and why it failed, each said once.
    assert!(
        err.contains("migrating the database")
            && err.contains("127.0.0.1:1")
            && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    assert!(out.stdout.is_empty(), "no summary for a failed run");
}

#[test]
fn an_invalid_log_level_is_refused_naming_it() {
    for (name, value, key) in [
        ("ORDER__LOG__LEVEL", "verbose", "log.level"),
        ("ORDER__LOG__LEVEL", "info,order_core=loud", "log.level"),
        ("RUST_LOG", "verbose", "RUST_LOG"),
    ] {
        let out = Command::new(BIN)
            .arg("migrate")
            .env_remove("RUST_LOG")
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains("is not a level"), "{err}");
    }
    let out = Command::new(BIN)
        .args(["migrate", "--set", "log.level=verbose"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn an_unreachable_database_is_named_at_once_with_its_address_and_cause() {
    // The default acquire timeout (5 s) must not delay the first word.
    let started = std::time::Instant::now();
    let mut api = process::spawn(
        BIN,
        &[],
        &[
            (
                "ORDER__DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/none",
            ),
            ("ORDER__SERVER__PORT", "0"),
            ("ORDER__API__AUTH__JWT_SECRET", SECRET),
        ],
    );
    api.wait_for(
        "database unreachable at start; waiting for it",
        Duration::from_secs(3),
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let status = api.terminate(Duration::from_secs(10));
    let out = api.output();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("PostgreSQL at 127.0.0.1:1") && out.contains("refused"),
        "{out}"
    );
    assert!(!out.contains("pool timed out"), "{out}");
}

#[tokio::test]
async fn a_closed_stdout_and_stderr_never_make_a_role_panic() {
    use std::io::{BufRead, BufReader};
    let db = TestDatabase::empty(Driver::Postgres).await;
    let mut child = Command::new(BIN)
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .env("ORDER__SERVER__PORT", "0")
        .env("ORDER__API__AUTH__JWT_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log is on stderr, plain text (stderr is a pipe, not a terminal).
    // The reader stops at the start line and closes its end of the pipe.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (started, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains('\x1b') {
                let _ = started.send(Err(format!("ANSI codes in a log pipe: {line:?}")));
                return;
            }
            if line.contains("order-api started") {
                let _ = started.send(Ok(()));
                return;
            }
        }
        let _ = started.send(Err("stderr ended before order-api started".into()));
    });
    let outcome = seen.recv_timeout(Duration::from_secs(30));
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = child.kill();
        panic!("no plain `order-api started` log line on stderr: {outcome:?}");
    }
    // The reader of both goes away (a log prefixer killed by Ctrl-C, a log
    // pipe gone); the role must still stop cleanly, logging into the void.
    drop(child.stdout.take());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "101 would be a panic");
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
        TestDatabase::MIGRATED_TABLES,
        "database.auto_migrate is on by default"
    );
    let status = api.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

// Multi-threaded: the proxy's tasks run while the test blocks reading output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_while_the_database_is_down_waits_for_it_then_starts() {
    let db = TestDatabase::empty(Driver::Postgres).await;
    let proxy = order_testkit::proxy::FaultProxy::start(db.server_addr()).await;
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
    assert_eq!(tables(&db).await, TestDatabase::MIGRATED_TABLES);
    let status = api.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_during_migrate_interrupts_it_at_once() {
    // A database that accepts the connection and never answers: the probe
    // would wait its whole timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/none", silent.local_addr().unwrap());
    let mut migrate = process::spawn(
        BIN,
        &["migrate"],
        &[
            ("ORDER__DATABASE__URL", url.as_str()),
            ("ORDER__DATABASE__ACQUIRE_TIMEOUT", "10s"),
            ("ORDER__LOG__LEVEL", "debug"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let asked = std::time::Instant::now();
    let status = migrate.terminate(Duration::from_secs(5));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{}",
        migrate.output()
    );
    assert_eq!(status.code(), Some(1), "{}", migrate.output());
    assert!(
        migrate
            .output()
            .contains("interrupted by a shutdown signal"),
        "{}",
        migrate.output()
    );
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
    let mut api = order_runtime::config::ApiSettings::default();
    api.auth.jwt_secret = order_runtime::config::Secret::new(SECRET);
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

fn rebuild(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["stats", "rebuild"])
        .args(args)
        .env("ORDER__DATABASE__URL", db.settings.url.expose())
        .env("NO_COLOR", "1")
        .output()
        .expect("run order-api stats rebuild")
}

/// `order-api stats rebuild` puts wrong rollups right, a day per line, on
/// both engines; with no range it covers every day with orders or rollups.
#[tokio::test]
async fn stats_rebuild_recomputes_the_rollups_from_the_orders() {
    for driver in ENGINES {
        let db = TestDatabase::new(driver).await;
        let messages: Vec<_> = (1..=4)
            .map(|p| {
                order_core::domain::NewOrder::new(
                    order_core::domain::SeckillMessage::parse(
                        &order_testkit::fixtures::Seckill::new(5, p).bytes(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        db.storage.create_orders(&messages).await.unwrap();
        let today = chrono::Utc::now().date_naive();
        db.execute("UPDATE order_stats_daily SET order_count = order_count + 100")
            .await;
        db.execute(
            "INSERT INTO order_stats_daily (day, status, slot, order_count, amount) \
             VALUES ('2026-01-02', 'failed', 1, 7, 1.00)",
        )
        .await;
        let wrong = db.storage.stats(today, today).await.unwrap().figures;
        assert!(wrong.order_count > 100);

        let out = rebuild(&db, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{driver:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        let summary = lines.last().unwrap();
        assert_eq!(summary["orders"], 4, "{stdout}");
        assert!(summary["rebuilt_days"].as_u64().unwrap() >= 2, "{stdout}");
        assert!(summary["corrected_days"].as_u64().unwrap() >= 2, "{stdout}");
        assert_eq!(lines[0]["day"], "2026-01-02", "{stdout}");
        assert_eq!(lines[0]["corrected"], true, "{stdout}");
        assert_eq!(
            (lines[0]["previous"].as_i64(), lines[0]["orders"].as_i64()),
            (Some(7), Some(0))
        );
        let right = db.storage.stats(today, today).await.unwrap().figures;
        assert_eq!(right.order_count, 4);

        // A range, run again: nothing to correct.
        let day = today.to_string();
        let out = rebuild(&db, &["--from", &day, "--to", &day]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            (
                summary["rebuilt_days"].as_u64(),
                summary["corrected_days"].as_u64()
            ),
            (Some(1), Some(0)),
            "{stdout}"
        );

        // Counts moved between statuses, the total kept: still corrected.
        db.execute("UPDATE order_stats_hourly SET status = 'failed' WHERE status = 'pending'")
            .await;
        let out = rebuild(&db, &["--from", &day, "--to", &day]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(line["orders"], line["previous"], "{stdout}");
        assert_eq!(line["corrected"], true, "{stdout}");

        let out = rebuild(&db, &["--from", "2999-01-01"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nothing to rebuild: 2999-01-01 is after"),
            "{err}"
        );

        let out = rebuild(&db, &["--from", "2026-02-02", "--to", "2026-02-01"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--to (2026-02-01) is before --from (2026-02-02)"),
            "{err}"
        );
    }
}
