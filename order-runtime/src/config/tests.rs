//! The loader's layers, error messages and rules.

use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Sources {
    Sources {
        env: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Sources::default()
    }
}

fn yaml(text: &str) -> (tempfile_path::TempPath, Sources) {
    let path = tempfile_path::TempPath::new(text);
    let sources = Sources {
        file: Some((path.0.clone(), true)),
        ..Sources::default()
    };
    (path, sources)
}

/// A file removed on drop, without a dependency for it.
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("order-config-{}.yaml", uuid::Uuid::now_v7()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn defaults_match_the_design_key_table() {
    let s = Settings::load(&Sources::default()).unwrap();
    assert_eq!(s.server.port, 8082);
    assert_eq!(s.server.host, "0.0.0.0");
    assert_eq!(s.observability.host, "0.0.0.0");
    assert_eq!(s.database.driver, Driver::Postgres);
    assert_eq!(
        (s.database.host.as_str(), s.database.port),
        ("localhost", 5432)
    );
    assert_eq!(s.database.dbname, "order_db");
    assert_eq!(s.database.max_connections, 20);
    assert_eq!(s.redis.key_prefix, "order:");
    assert_eq!(s.redis.ttl_secs, 300);
    assert_eq!(s.rabbitmq.queue, "order-service.seckill-success");
    assert_eq!(s.rabbitmq_prefetch(), 1000);
    assert!(!s.kafka.enabled);
    assert_eq!(s.kafka.brokers, vec!["localhost:9092"]);
    assert_eq!(s.worker.batch_size, 500);
    assert_eq!(s.worker.shutdown_timeout, Duration::from_secs(25));
    assert_eq!(s.compensator.retry_cron, "*/10 * * * * *");
    assert_eq!(s.compensator.backoff_max, Duration::from_secs(600));
    assert_eq!(
        s.compensator.failure_retention,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(s.orders.payment_timeout, Duration::from_secs(1800));
    assert_eq!(s.api.max_body_bytes, 16384);
    assert_eq!(s.observability.port, None);
    assert_eq!(s.log.format, LogFormat::Pretty);
}

#[test]
fn the_shipped_config_file_loads_and_equals_the_defaults_but_listens_on_loopback() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/config.yaml");
    let sources = Sources {
        file: Some((path, true)),
        ..Sources::default()
    };
    let mut expected = Settings::default();
    // A developer's machine: reachable from itself only. The image sets
    // every interface back (Dockerfile ENV).
    expected.server.host = "127.0.0.1".into();
    expected.observability.host = "127.0.0.1".into();
    assert_eq!(Settings::load(&sources).unwrap(), expected);
}

#[test]
fn later_layers_win() {
    let (_file, mut sources) =
        yaml("database:\n  host: from-file\n  port: 6000\nworker:\n  batch_size: 7\n");
    sources.env = vec![("ORDER__DATABASE__PORT".into(), "6001".into())];
    sources.overrides = vec!["worker.batch_size=9".into()];
    let s = Settings::load(&sources).unwrap();
    assert_eq!(s.database.host, "from-file");
    assert_eq!(s.database.port, 6001);
    assert_eq!(s.worker.batch_size, 9);
}

#[test]
fn env_values_take_the_type_of_their_key() {
    let s = Settings::load(&env(&[
        ("ORDER__DATABASE__PASSWORD", "12345"),
        ("ORDER__KAFKA__BROKERS", "a:9092, b:9092"),
        ("ORDER__KAFKA__ENABLED", "true"),
        ("ORDER__WORKER__SHUTDOWN_TIMEOUT", "10s"),
        ("ORDER__ORDERS__PAYMENT_TIMEOUT", "0"),
        ("ORDER__RABBITMQ__PREFETCH", "64"),
        ("ORDER__LOG__FORMAT", "json"),
        ("UNRELATED", "x"),
    ]))
    .unwrap();
    assert_eq!(s.database.password.expose(), "12345");
    assert_eq!(s.kafka.brokers, vec!["a:9092", "b:9092"]);
    assert!(s.kafka.enabled);
    assert_eq!(s.worker.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(s.orders.payment_timeout, Duration::ZERO);
    assert_eq!(s.rabbitmq_prefetch(), 64);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn a_bad_env_value_names_the_key_and_the_variable() {
    let err = Settings::load(&env(&[("ORDER__DATABASE__PORT", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("database.port: invalid digit"), "{err}");
    assert!(err.contains("ORDER__DATABASE__PORT"), "{err}");
}

#[test]
fn an_out_of_range_value_names_the_key() {
    let err = Settings::load(&env(&[("ORDER__DATABASE__PORT", "70000")]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("database.port: "), "{err}");
}

#[test]
fn a_bad_yaml_value_names_the_key() {
    let (_file, sources) = yaml("worker:\n  shutdown_timeout: soon\n");
    let err = Settings::load(&sources).unwrap_err().to_string();
    assert!(
        err.starts_with("worker.shutdown_timeout: expected a duration"),
        "{err}"
    );
    let (_file, sources) = yaml("database:\n  driver: oracle\n");
    assert!(
        Settings::load(&sources)
            .unwrap_err()
            .to_string()
            .starts_with("database.driver: ")
    );
}

#[test]
fn unknown_keys_are_refused_wherever_they_come_from() {
    let (_file, sources) = yaml("database:\n  hots: x\n");
    let err = Settings::load(&sources).unwrap_err().to_string();
    assert!(
        err.starts_with("database.hots: unknown configuration key"),
        "{err}"
    );
    let err = Settings::load(&env(&[("ORDER__DATABSE__HOST", "x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("databse.host: unknown configuration key (from environment variable ORDER__DATABSE__HOST)"), "{err}");
    let sources = Sources {
        overrides: vec!["nope=1".into()],
        ..Sources::default()
    };
    assert!(matches!(
        Settings::load(&sources),
        Err(ConfigError::UnknownKey { .. })
    ));
}

#[test]
fn rules_beyond_types_name_the_key() {
    for (var, value, key) in [
        ("ORDER__WORKER__BATCH_SIZE", "0", "worker.batch_size"),
        ("ORDER__WORKER__BATCH_SIZE", "10001", "worker.batch_size"),
        (
            "ORDER__COMPENSATOR__BATCH_SIZE",
            "10001",
            "compensator.batch_size",
        ),
        (
            "ORDER__WORKER__FAILURE_DATA_MAX_BYTES",
            "1048577",
            "worker.failure_data_max_bytes",
        ),
        (
            "ORDER__KAFKA__DEAD_LETTER_TOPIC",
            "seckill-success",
            "kafka.dead_letter_topic",
        ),
        (
            "ORDER__COMPENSATOR__RETRY_CRON",
            "every minute",
            "compensator.retry_cron",
        ),
        (
            "ORDER__COMPENSATOR__BACKOFF_MAX",
            "1s",
            "compensator.backoff_max",
        ),
        ("ORDER__EVENTS__BACKOFF_MAX", "10ms", "events.backoff_max"),
        (
            "ORDER__EVENTS__PUBLISH_TIMEOUT",
            "0s",
            "events.publish_timeout",
        ),
        ("ORDER__EVENTS__BATCH_SIZE", "0", "events.batch_size"),
        ("ORDER__EVENTS__BROKER", "nats", "events.broker"),
        ("ORDER__EVENTS__EXCHANGE", "", "events.exchange"),
        ("ORDER__EVENTS__POLL_INTERVAL", "0s", "events.poll_interval"),
        ("ORDER__DATABASE__URL", "sqlite://x", "database.url"),
        ("ORDER__REDIS__KEY_PREFIX", "", "redis.key_prefix"),
        ("ORDER__LOG__LEVEL", "info,[", "log.level"),
        ("ORDER__LOG__LEVEL", "verbose", "log.level"),
        ("ORDER__LOG__LEVEL", "info,order_core=loud", "log.level"),
        ("ORDER__SERVER__HOST", "", "server.host"),
        ("ORDER__SERVER__HOST", "my laptop", "server.host"),
        (
            "ORDER__OBSERVABILITY__HOST",
            "0.0.0.0:80",
            "observability.host",
        ),
    ] {
        let err = Settings::load(&env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{key}: ")), "{var}={value}: {err}");
    }
}

#[test]
fn each_keys_own_rule_is_checked_as_it_is_read_with_the_same_words() {
    for (var, value, error) in [
        (
            "ORDER__DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections: must be at least 1",
        ),
        (
            "ORDER__DATABASE__ACQUIRE_TIMEOUT",
            "0",
            "database.acquire_timeout: must be above 0",
        ),
        (
            "ORDER__REDIS__TTL_SECS",
            "0",
            "redis.ttl_secs: must be at least 1",
        ),
        (
            "ORDER__RABBITMQ__PREFETCH",
            "0",
            "rabbitmq.prefetch: must be at least 1",
        ),
        (
            "ORDER__RABBITMQ__QUEUE",
            "",
            "rabbitmq.queue: must not be empty",
        ),
        (
            "ORDER__KAFKA__GROUP_ID",
            "",
            "kafka.group_id: must not be empty",
        ),
        (
            "ORDER__WORKER__BATCH_SIZE",
            "0",
            "worker.batch_size: must be between 1 and 10000",
        ),
        (
            "ORDER__WORKER__BATCH_LINGER_MS",
            "10001",
            "worker.batch_linger_ms: must be at most 10000",
        ),
        (
            "ORDER__WORKER__SHUTDOWN_TIMEOUT",
            "0s",
            "worker.shutdown_timeout: must be above 0",
        ),
        (
            "ORDER__COMPENSATOR__BATCH_SIZE",
            "0",
            "compensator.batch_size: must be between 1 and 10000",
        ),
        (
            "ORDER__COMPENSATOR__LEASE",
            "0",
            "compensator.lease: must be above 0",
        ),
        (
            "ORDER__COMPENSATOR__SHUTDOWN_TIMEOUT",
            "0",
            "compensator.shutdown_timeout: must be above 0",
        ),
        (
            "ORDER__API__MAX_BODY_BYTES",
            "0",
            "api.max_body_bytes: must be at least 1",
        ),
        (
            "ORDER__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections: must be at least 1",
        ),
        (
            "ORDER__SERVER__IDLE_TIMEOUT",
            "0",
            "server.idle_timeout: must be above 0",
        ),
        (
            "ORDER__API__AUTH__USER_CLAIM",
            "",
            "api.auth.user_claim: must not be empty",
        ),
        (
            "ORDER__API__AUTH__JWT_SECRET",
            "short",
            "api.auth.jwt_secret: must be at least 32 bytes (e.g. `openssl rand -hex 32`)",
        ),
    ] {
        let err = Settings::load(&env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, error, "{var}={value}");
    }
    // A rule across keys is checked once all are read.
    let err = Settings::load(&env(&[
        ("ORDER__DATABASE__URL", ""),
        ("ORDER__DATABASE__HOST", ""),
    ]))
    .unwrap_err()
    .to_string();
    assert_eq!(err, "database.host: must not be empty");
}

#[test]
fn a_missing_named_file_is_an_error_but_the_default_file_is_optional() {
    let missing = PathBuf::from("/nonexistent/order.yaml");
    let required = Sources {
        file: Some((missing.clone(), true)),
        ..Sources::default()
    };
    assert!(matches!(
        Settings::load(&required),
        Err(ConfigError::Read { .. })
    ));
    let optional = Sources {
        file: Some((missing, false)),
        ..Sources::default()
    };
    assert!(Settings::load(&optional).is_ok());
}

#[test]
fn the_amqp_url_encodes_credentials_and_vhost() {
    let mut r = RabbitMqSettings::default();
    assert_eq!(r.url(), "amqp://guest:guest@localhost:5672/%2F");
    r.password = Secret::new("p@ss/word");
    r.vhost = "prod".into();
    assert_eq!(r.url(), "amqp://guest:p%40ss%2Fword@localhost:5672/prod");
}

#[test]
fn the_url_scheme_decides_the_driver() {
    let s = Settings::load(&env(&[(
        "ORDER__DATABASE__URL",
        "mysql://root@127.0.0.1/x",
    )]))
    .unwrap();
    assert_eq!(s.database.effective_driver(), Driver::Mysql);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = Settings::load(&env(&[
        ("ORDER__DATABASE__PASSWORD", "hunter2"),
        ("ORDER__API__ADMIN_TOKEN", "tok-secret"),
        ("ORDER__DATABASE__URL", "postgres://u:pw-in-url@h/db"),
    ]))
    .unwrap();
    let shown = format!("{s:?}");
    for secret in ["hunter2", "tok-secret", "pw-in-url"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert!(shown.contains("***"));
}

#[test]
fn the_events_broker_follows_the_enabled_source_unless_named() {
    let mut s = Settings::default();
    assert_eq!(s.event_broker(), EventBroker::Rabbitmq);
    s.rabbitmq.enabled = false;
    s.kafka.enabled = true;
    assert_eq!(s.event_broker(), EventBroker::Kafka);
    s.rabbitmq.enabled = true;
    assert_eq!(s.event_broker(), EventBroker::Rabbitmq, "both: RabbitMQ");
    s.events.broker = EventBroker::Kafka;
    assert_eq!(s.event_broker(), EventBroker::Kafka);
    s.kafka.enabled = false;
    s.rabbitmq.enabled = false;
    s.events.broker = EventBroker::Auto;
    assert_eq!(
        s.event_broker(),
        EventBroker::Rabbitmq,
        "a relay-only worker"
    );
}

#[test]
fn a_read_only_token_equal_to_the_operator_token_is_refused() {
    let err = Settings::load(&env(&[
        ("ORDER__API__ADMIN_TOKEN", "same-token"),
        ("ORDER__API__READONLY_TOKEN", "same-token"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("api.readonly_token: must differ from api.admin_token"),
        "{err}"
    );
    let ok = Settings::load(&env(&[
        ("ORDER__API__ADMIN_TOKEN", "op-token"),
        ("ORDER__API__READONLY_TOKEN", "look-token"),
    ]))
    .unwrap();
    assert_eq!(ok.api.readonly_token.expose(), "look-token");
    assert!(!format!("{:?}", ok.api).contains("look-token"), "a secret");
}
