//! `order-compensator` as a process: flags, start and stop.

use std::process::Command;
use std::time::Duration;

use order_core::config::Driver;
use order_core::testing::{TestDatabase, process};

const BIN: &str = env!("CARGO_BIN_EXE_order-compensator");

#[test]
fn help_and_version_answer() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("order-compensator {}", env!("CARGO_PKG_VERSION"))
    );
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
}

#[tokio::test]
async fn starts_on_mariadb_and_exits_0_on_sigterm() {
    let db = TestDatabase::empty(Driver::Mysql).await;
    let mut child = process::spawn(
        BIN,
        &[],
        &[("ORDER__DATABASE__URL", db.settings.url.expose())],
    );
    child.wait_for("order-compensator started", Duration::from_secs(30));
    let status = child.terminate(Duration::from_secs(10));
    assert!(
        db.table_names().await.len() == 5,
        "database.auto_migrate is on by default"
    );
    assert!(status.success(), "{status:?}: {}", child.output());
}
