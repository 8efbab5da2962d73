//! Test support of the order service, a dev-dependency of every crate's
//! tests:
//!
//! - [`TestDatabase`]: a fresh, migrated database per test on PostgreSQL or
//!   MariaDB/MySQL, dropped when the test ends; [`on_both_engines!`] runs a
//!   test on each;
//! - [`proxy`]: a TCP proxy that cuts a dependency and heals it again;
//! - [`process`]: a workspace binary run as a child process;
//! - [`http`]: a minimal HTTP/1.1 client for the binaries' endpoints;
//! - [`fixtures`]: seckill messages as a publisher writes them.

mod db;
pub mod fixtures;
pub mod http;
pub mod process;
pub mod proxy;

pub use db::{ENGINES, TEST_DB_PREFIX, TestDatabase, server_url};
pub use order_core::settings::Driver;

/// Runs each named `async fn(Driver)` as two tests, `postgres::name` and
/// `mysql::name`, each on a multi-threaded runtime.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Driver::Postgres).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Driver::Mysql).await;
                }
            )*
        }
    };
}

/// Asserts that `binary --help` succeeds mentioning `expected` words, and
/// that `binary --version` prints `name version`.
///
/// # Panics
/// When either does not.
pub fn assert_help_and_version(binary: &str, name: &str, expected: &[&str]) {
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in expected.iter().chain(&["--config", "--set"]) {
        assert!(text.contains(word), "--help of {name} lacks {word}: {text}");
    }
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .expect("run --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The `ORDER__RABBITMQ__…` variables that point a spawned binary at the
/// broker and the names of `settings`.
#[must_use]
pub fn rabbitmq_env(
    settings: &order_runtime::config::RabbitMqSettings,
) -> Vec<(&'static str, String)> {
    vec![
        ("ORDER__RABBITMQ__HOST", settings.host.clone()),
        ("ORDER__RABBITMQ__PORT", settings.port.to_string()),
        ("ORDER__RABBITMQ__EXCHANGE", settings.exchange.clone()),
        ("ORDER__RABBITMQ__QUEUE", settings.queue.clone()),
        (
            "ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE",
            settings.dead_letter_exchange.clone(),
        ),
        (
            "ORDER__RABBITMQ__DEAD_LETTER_QUEUE",
            settings.dead_letter_queue.clone(),
        ),
    ]
}

/// Redis settings with a key prefix of the test's own (`ordertest:<uuid>:`).
#[must_use]
pub fn redis_settings() -> order_runtime::config::RedisSettings {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let host_port = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
    order_runtime::config::RedisSettings {
        host: host.to_owned(),
        port: port.parse().expect("TEST_REDIS_URL port"),
        key_prefix: format!("ordertest:{}:", uuid::Uuid::now_v7().simple()),
        ..order_runtime::config::RedisSettings::default()
    }
}

/// A loopback port that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
