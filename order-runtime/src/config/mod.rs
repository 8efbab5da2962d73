//! Configuration: one [`Settings`] tree, built in layers (later wins):
//!
//! 1. built-in defaults ([`Settings::default`], the local development values);
//! 2. the YAML file (`--config`, default `config/config.yaml`, optional when not named);
//! 3. environment variables `ORDER__SECTION__KEY` (`ORDER__DATABASE__HOST=db`);
//!    lists as comma-separated text (`ORDER__KAFKA__BROKERS=a:9092,b:9092`);
//! 4. command-line `--set section.key=value` flags, read like environment values.
//!
//! Environment and flag values are plain text; each is read as the type of the
//! key it sets (a password of digits stays text, a port must be a number).
//! Every error names the key and where the bad value came from, and an
//! unknown key is an error, so a typo never passes silently.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "ORDER__";

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/config.yaml";

/// What went wrong while building the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or not a mapping.
    #[error("{path}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that the configuration does not have.
    #[error("{key}: unknown configuration key (from {origin})")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// File, variable or flag that named it.
        origin: String,
    },
    /// A value that does not fit its key.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong, and where the value came from when known.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A secret value: shown as `***` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: use it, never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Durations as text (`30s`, `10m`, `250ms`, `0`) or as whole seconds.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Seconds(u64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Seconds(s) => Ok(Duration::from_secs(s)),
            Text::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                de::Error::custom(format!(
                    "expected a duration such as 30s, 10m or 250ms ({e}): {t:?}"
                ))
            }),
        }
    }
}

/// The database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// PostgreSQL.
    Postgres,
    /// MySQL 8 or MariaDB ≥ 10.6.
    Mysql,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// order-api's HTTP server.
    pub server: ServerSettings,
    /// PostgreSQL or MySQL.
    pub database: DatabaseSettings,
    /// The order cache.
    pub redis: RedisSettings,
    /// The RabbitMQ source.
    pub rabbitmq: RabbitMqSettings,
    /// The Kafka source.
    pub kafka: KafkaSettings,
    /// order-worker's batching and shutdown.
    pub worker: WorkerSettings,
    /// order-compensator's jobs.
    pub compensator: CompensatorSettings,
    /// Order rules.
    pub orders: OrderSettings,
    /// order-api's own settings.
    pub api: ApiSettings,
    /// Probes and metrics of worker and compensator.
    pub observability: ObservabilitySettings,
    /// Logging.
    pub log: LogSettings,
}

/// `server.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The address order-api listens on: `0.0.0.0` (every IPv4 interface,
    /// what a container needs), `::` (every interface), `127.0.0.1` (this
    /// machine only).
    pub host: String,
    /// order-api's port; 0 picks any free port (logged at start).
    pub port: u16,
    /// Longest time to read a request.
    #[serde(with = "duration_text")]
    pub read_timeout: Duration,
    /// Longest time to write a response.
    #[serde(with = "duration_text")]
    pub write_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight
    /// (a new connection's first request must come within `read_timeout`).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Most connections open at once; past it new ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: ALL_INTERFACES.into(),
            port: 8082,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// `database.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres` or `mysql`.
    pub driver: Driver,
    /// A full URL; when set it wins over the parts below, and its scheme
    /// (`postgres://`, `mysql://`) over `driver`.
    pub url: Secret,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Database name.
    pub dbname: String,
    /// Pool size.
    pub max_connections: u32,
    /// Longest wait for a pooled connection before the call fails as unavailable.
    #[serde(with = "duration_text")]
    pub acquire_timeout: Duration,
    /// Apply pending migrations at start.
    pub auto_migrate: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            driver: Driver::Postgres,
            url: Secret::default(),
            host: "localhost".into(),
            port: 5432,
            user: "postgres".into(),
            password: Secret::default(),
            dbname: "order_db".into(),
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
            auto_migrate: true,
        }
    }
}

impl DatabaseSettings {
    /// The engine: the URL's scheme when a URL is set, else `driver`.
    #[must_use]
    pub fn effective_driver(&self) -> Driver {
        let url = self.url.expose();
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Driver::Mysql
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Driver::Postgres
        } else {
            self.driver
        }
    }
}

/// `redis.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Use the order cache at all (false: every read goes to the database).
    pub enabled: bool,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Password (empty: none).
    pub password: Secret,
    /// Database number.
    pub db: u32,
    /// Every key the service writes starts with it.
    pub key_prefix: String,
    /// Order cache TTL, in seconds.
    pub ttl_secs: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "localhost".into(),
            port: 6379,
            password: Secret::default(),
            db: 0,
            key_prefix: "order:".into(),
            ttl_secs: 300,
        }
    }
}

/// `rabbitmq.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMqSettings {
    /// Consume from RabbitMQ.
    pub enabled: bool,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Virtual host.
    pub vhost: String,
    /// The durable topic exchange the seckill service publishes to.
    pub exchange: String,
    /// This service's durable queue.
    pub queue: String,
    /// The binding key.
    pub routing_key: String,
    /// The dead-letter exchange of the queue.
    pub dead_letter_exchange: String,
    /// The queue bound to the dead-letter exchange.
    pub dead_letter_queue: String,
    /// Unacknowledged messages in flight; unset: 2 × `worker.batch_size`.
    pub prefetch: Option<u16>,
}

impl RabbitMqSettings {
    /// The AMQP URL these settings describe (credentials and vhost encoded).
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@{}:{}/{}",
            percent_encode(&self.username),
            percent_encode(self.password.expose()),
            self.host,
            self.port,
            percent_encode(&self.vhost)
        )
    }
}

/// Encodes everything but unreserved URL characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Default for RabbitMqSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "localhost".into(),
            port: 5672,
            username: "guest".into(),
            password: Secret::new("guest"),
            vhost: "/".into(),
            exchange: "seckill".into(),
            queue: "order-service.seckill-success".into(),
            routing_key: "seckill.success".into(),
            dead_letter_exchange: "seckill.dlx".into(),
            dead_letter_queue: "order-service.seckill-success.dlq".into(),
            prefetch: None,
        }
    }
}

/// `kafka.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Consume from Kafka.
    pub enabled: bool,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group_id: String,
    /// How long the group waits for a silent consumer before rebalancing.
    #[serde(with = "duration_text")]
    pub session_timeout: Duration,
    /// Where a message goes whose failure cannot even be recorded.
    pub dead_letter_topic: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            brokers: vec!["localhost:9092".into()],
            topic: "seckill-success".into(),
            group_id: "order-worker".into(),
            session_timeout: Duration::from_secs(10),
            dead_letter_topic: "seckill-success.dlq".into(),
        }
    }
}

/// `worker.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages per batch; 1 is the per-message path.
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    pub batch_linger_ms: u64,
    /// Longest time from SIGTERM to exit.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
    /// Most bytes of a poison message kept in its failure row (the whole
    /// length is recorded too); a retryable failure keeps every byte.
    pub failure_data_max_bytes: usize,
}

/// The largest `worker.failure_data_max_bytes`.
pub const MAX_FAILURE_DATA_BYTES: usize = 1024 * 1024;

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_linger_ms: 5,
            shutdown_timeout: Duration::from_secs(25),
            failure_data_max_bytes: 64 * 1024,
        }
    }
}

/// `compensator.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompensatorSettings {
    /// Schedule of `retry-failures` (6 fields, with seconds).
    pub retry_cron: String,
    /// Schedule of `expire-unpaid`.
    pub expire_cron: String,
    /// Schedule of `purge-resolved`.
    pub purge_cron: String,
    /// Resolved (`success`, `failed`) failures are deleted this long after
    /// their last change.
    #[serde(with = "duration_text")]
    pub failure_retention: Duration,
    /// Failures claimed per run; also the row count of each expiry and purge statement.
    pub batch_size: u32,
    /// Retries before a failure is given up.
    pub max_retries: u32,
    /// First retry delay.
    #[serde(with = "duration_text")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_text")]
    pub backoff_max: Duration,
    /// How long a claim holds before it lapses back to pending.
    #[serde(with = "duration_text")]
    pub lease: Duration,
}

impl Default for CompensatorSettings {
    fn default() -> Self {
        Self {
            retry_cron: "*/10 * * * * *".into(),
            expire_cron: "0 * * * * *".into(),
            purge_cron: "0 0 * * * *".into(),
            failure_retention: Duration::from_secs(7 * 24 * 3600),
            batch_size: 100,
            max_retries: 5,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            lease: Duration::from_secs(60),
        }
    }
}

impl CompensatorSettings {
    /// The retry policy these settings describe.
    #[must_use]
    pub fn retry_policy(&self) -> crate::domain::RetryPolicy {
        crate::domain::RetryPolicy {
            base: self.backoff_base,
            max: self.backoff_max,
            max_retries: self.max_retries,
        }
    }
}

/// `orders.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderSettings {
    /// Pending orders older than this are cancelled; 0 disables expiry.
    #[serde(with = "duration_text")]
    pub payment_timeout: Duration,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// `api.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer token of the operator endpoints; empty turns them off (403).
    pub admin_token: Secret,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Longest time one database statement of the API may run (PostgreSQL
    /// `statement_timeout`, MySQL `max_execution_time`, MariaDB
    /// `max_statement_time`); 0 disables it.
    #[serde(with = "duration_text")]
    pub statement_timeout: Duration,
    /// How end users authenticate.
    pub auth: AuthSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            admin_token: Secret::default(),
            max_body_bytes: 16 * 1024,
            statement_timeout: Duration::from_secs(5),
            auth: AuthSettings::default(),
        }
    }
}

/// `api.auth.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// End users present a bearer JWT.
    #[default]
    Jwt,
    /// No end-user identity: anyone may read and cancel any order (local use only).
    None,
}

/// `api.auth.*`: end-user authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `jwt` (default) or `none` (local use only).
    pub mode: AuthMode,
    /// HS256 shared secret (at least 32 bytes).
    pub jwt_secret: Secret,
    /// A PEM public key (RSA for RS256, EC P-256 for ES256).
    pub jwt_public_key_file: String,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// The claim holding the user id.
    pub user_claim: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Jwt,
            jwt_secret: Secret::default(),
            jwt_public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            user_claim: "sub".into(),
        }
    }
}

/// Shortest HS256 secret accepted (RFC 7518: at least the hash's size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The default listening address of every server: every IPv4 interface.
pub const ALL_INTERFACES: &str = "0.0.0.0";

/// `observability.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilitySettings {
    /// The address the probe and metrics server of worker and compensator
    /// listens on (as `server.host`).
    pub host: String,
    /// Port of `/health`, `/health/ready` and `/metrics` on worker and
    /// compensator; unset: 8084 for the worker, 8085 for the compensator.
    pub port: Option<u16>,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            host: ALL_INTERFACES.into(),
            port: None,
        }
    }
}

/// `log.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Filter directives (`info`, `order_core=debug,info`); `RUST_LOG` wins.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The YAML file; `required` says whether it must exist.
    pub file: Option<(PathBuf, bool)>,
    /// `(name, value)` pairs; those starting with [`ENV_PREFIX`] are read.
    pub env: Vec<(String, String)>,
    /// `key=value` overrides, applied last.
    pub overrides: Vec<String>,
}

impl Sources {
    /// The usual sources: `file` (or the default file, optional), the process
    /// environment and `overrides`.
    #[must_use]
    pub fn standard(file: Option<&Path>, overrides: &[String]) -> Self {
        Self {
            file: Some(match file {
                Some(path) => (path.to_path_buf(), true),
                None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
            }),
            env: std::env::vars().collect(),
            overrides: overrides.to_vec(),
        }
    }
}

impl Settings {
    /// Builds the settings from defaults and the given layers, then validates them.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(Settings::default()).expect("defaults serialize");

        if let Some((path, required)) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let overlay: Value =
                        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Yaml {
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                    match overlay {
                        Value::Null => {}
                        Value::Object(_) => {
                            merge(&mut tree, overlay, "", &path.display().to_string())?
                        }
                        _ => {
                            return Err(ConfigError::Yaml {
                                path: path.clone(),
                                message: "the top level must be a mapping of sections".into(),
                            });
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }

        let mut env: Vec<_> = sources
            .env
            .iter()
            .filter_map(|(name, value)| {
                name.strip_prefix(ENV_PREFIX)
                    .map(|rest| (name, rest, value))
            })
            .collect();
        env.sort();
        for (name, rest, value) in env {
            let key = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            set_text(
                &mut tree,
                &key,
                value,
                &format!("environment variable {name}"),
            )?;
        }

        for item in &sources.overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    item,
                    "a --set flag must read key=value, e.g. --set database.port=5433",
                )
            })?;
            set_text(&mut tree, key.trim(), value, &format!("flag --set {item}"))?;
        }

        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::invalid(&key, e.into_inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the rules that types alone do not.
    ///
    /// # Errors
    /// A [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::invalid(key, message))
            }
        };
        let db = &self.database;
        if !db.url.is_empty() {
            check(
                ["postgres://", "postgresql://", "mysql://", "mariadb://"]
                    .iter()
                    .any(|s| db.url.expose().starts_with(s)),
                "database.url",
                "must start with postgres://, postgresql://, mysql:// or mariadb://",
            )?;
        } else {
            check(!db.host.is_empty(), "database.host", "must not be empty")?;
            check(
                !db.dbname.is_empty(),
                "database.dbname",
                "must not be empty",
            )?;
        }
        check(
            db.max_connections >= 1,
            "database.max_connections",
            "must be at least 1",
        )?;
        check(
            !db.acquire_timeout.is_zero(),
            "database.acquire_timeout",
            "must be above 0",
        )?;
        check(
            !self.redis.key_prefix.is_empty(),
            "redis.key_prefix",
            "must not be empty",
        )?;
        check(
            self.redis.ttl_secs >= 1,
            "redis.ttl_secs",
            "must be at least 1",
        )?;
        check(
            self.rabbitmq.prefetch != Some(0),
            "rabbitmq.prefetch",
            "must be at least 1",
        )?;
        for (key, value) in [
            ("rabbitmq.exchange", &self.rabbitmq.exchange),
            ("rabbitmq.queue", &self.rabbitmq.queue),
            (
                "rabbitmq.dead_letter_exchange",
                &self.rabbitmq.dead_letter_exchange,
            ),
            (
                "rabbitmq.dead_letter_queue",
                &self.rabbitmq.dead_letter_queue,
            ),
            ("kafka.topic", &self.kafka.topic),
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
        ] {
            check(!value.is_empty(), key, "must not be empty")?;
        }
        check(
            !self.kafka.enabled || self.kafka.brokers.iter().any(|b| !b.is_empty()),
            "kafka.brokers",
            "must name at least one broker when kafka.enabled is true",
        )?;
        check(
            self.kafka.dead_letter_topic != self.kafka.topic,
            "kafka.dead_letter_topic",
            "must differ from kafka.topic",
        )?;
        let max_batch = crate::storage::MAX_BATCH_ROWS;
        check(
            (1..=max_batch).contains(&self.worker.batch_size),
            "worker.batch_size",
            &format!("must be between 1 and {max_batch}"),
        )?;
        check(
            self.worker.failure_data_max_bytes <= MAX_FAILURE_DATA_BYTES,
            "worker.failure_data_max_bytes",
            &format!("must be at most {MAX_FAILURE_DATA_BYTES}"),
        )?;
        check(
            self.worker.batch_linger_ms <= 10_000,
            "worker.batch_linger_ms",
            "must be at most 10000",
        )?;
        check(
            !self.worker.shutdown_timeout.is_zero(),
            "worker.shutdown_timeout",
            "must be above 0",
        )?;
        let c = &self.compensator;
        check_cron("compensator.retry_cron", &c.retry_cron)?;
        check_cron("compensator.expire_cron", &c.expire_cron)?;
        check_cron("compensator.purge_cron", &c.purge_cron)?;
        check(
            !c.failure_retention.is_zero(),
            "compensator.failure_retention",
            "must be above 0",
        )?;
        check(
            usize::try_from(c.batch_size).is_ok_and(|n| (1..=max_batch).contains(&n)),
            "compensator.batch_size",
            &format!("must be between 1 and {max_batch}"),
        )?;
        check(
            !c.backoff_base.is_zero(),
            "compensator.backoff_base",
            "must be above 0",
        )?;
        check(
            c.backoff_max >= c.backoff_base,
            "compensator.backoff_max",
            "must be at least compensator.backoff_base",
        )?;
        check(!c.lease.is_zero(), "compensator.lease", "must be above 0")?;
        check(
            self.api.max_body_bytes >= 1,
            "api.max_body_bytes",
            "must be at least 1",
        )?;
        check(
            self.server.max_connections >= 1,
            "server.max_connections",
            "must be at least 1",
        )?;
        check(
            !self.server.read_timeout.is_zero(),
            "server.read_timeout",
            "must be above 0",
        )?;
        check(
            !self.server.write_timeout.is_zero(),
            "server.write_timeout",
            "must be above 0",
        )?;
        check(
            !self.server.idle_timeout.is_zero(),
            "server.idle_timeout",
            "must be above 0",
        )?;
        let auth = &self.api.auth;
        check(
            !auth.user_claim.is_empty(),
            "api.auth.user_claim",
            "must not be empty",
        )?;
        check(
            auth.jwt_secret.is_empty() || auth.jwt_secret.expose().len() >= MIN_JWT_SECRET_BYTES,
            "api.auth.jwt_secret",
            &format!("must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"),
        )?;
        for (key, host) in [
            ("server.host", &self.server.host),
            ("observability.host", &self.observability.host),
        ] {
            check(
                host.parse::<std::net::IpAddr>().is_ok() || host == "localhost",
                key,
                &format!(
                    "expected an IP address of this machine to listen on, e.g. 0.0.0.0 (every interface) or 127.0.0.1 (this machine only), got {host:?}"
                ),
            )?;
        }
        if let Err(e) = crate::telemetry::parse_filter(&self.log.level) {
            return Err(ConfigError::invalid("log.level", e));
        }
        Ok(())
    }

    /// RabbitMQ prefetch: the configured value, or 2 × `worker.batch_size`.
    #[must_use]
    pub fn rabbitmq_prefetch(&self) -> u16 {
        self.rabbitmq.prefetch.unwrap_or_else(|| {
            u16::try_from(self.worker.batch_size.saturating_mul(2)).unwrap_or(u16::MAX)
        })
    }
}

/// Parses a cron expression exactly as the compensator's scheduler does:
/// six fields (seconds first), an optional seventh for the year.
///
/// # Errors
/// A [`ConfigError::Invalid`] naming `key`.
pub fn parse_cron(key: &str, expr: &str) -> Result<croner::Cron, ConfigError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            ConfigError::invalid(
                key,
                format!("expected a cron expression with seconds, e.g. \"*/10 * * * * *\" ({e}): {expr:?}"),
            )
        })
}

fn check_cron(key: &str, expr: &str) -> Result<(), ConfigError> {
    parse_cron(key, expr).map(drop)
}

/// Deep-merges `overlay` into `base`; keys must already exist in `base`.
fn merge(base: &mut Value, overlay: Value, prefix: &str, origin: &str) -> Result<(), ConfigError> {
    let (Value::Object(base_map), Value::Object(overlay_map)) = (base, overlay) else {
        unreachable!("merge is called on objects only");
    };
    for (name, value) in overlay_map {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(slot) = base_map.get_mut(&name) else {
            return Err(ConfigError::UnknownKey {
                key,
                origin: origin.to_owned(),
            });
        };
        match (slot.is_object(), value) {
            (_, Value::Null) => {}
            (true, value @ Value::Object(_)) => merge(slot, value, &key, origin)?,
            (true, _) => {
                return Err(ConfigError::invalid(
                    &key,
                    format!("is a section; set its keys instead (in {origin})"),
                ));
            }
            (false, value) => *slot = value,
        }
    }
    Ok(())
}

/// Sets the dotted `key` from text, read as the type of the value it replaces.
fn set_text(tree: &mut Value, key: &str, text: &str, origin: &str) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: key.to_owned(),
        origin: origin.to_owned(),
    };
    let mut slot = &mut *tree;
    for part in key.split('.') {
        slot = slot
            .as_object_mut()
            .and_then(|m: &mut Map<String, Value>| m.get_mut(part))
            .ok_or_else(unknown)?;
    }
    let bad = |message: String| ConfigError::invalid(key, format!("{message} (from {origin})"));
    let parsed = match &*slot {
        Value::Object(_) => return Err(bad("is a section; set its keys instead".into())),
        Value::Bool(_) => Value::Bool(
            parse_bool(text).ok_or_else(|| bad(format!("expected true or false, got {text:?}")))?,
        ),
        Value::Number(n) if n.is_f64() => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad(format!("expected a number, got {text:?}")))?,
        Value::Number(_) => Value::Number(
            text.trim()
                .parse::<i64>()
                .map(Into::into)
                .map_err(|e| bad(format!("{e}: {text:?}")))?,
        ),
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Value::String(_) => Value::String(text.to_owned()),
        // An optional key that is unset by default: a number if it reads as one.
        Value::Null => text
            .trim()
            .parse::<i64>()
            .map(Into::into)
            .map_err(|e| bad(format!("{e}: {text:?}")))
            .map(Value::Number)?,
    };
    *slot = parsed;
    Ok(())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
                let path = std::env::temp_dir()
                    .join(format!("order-config-{}.yaml", uuid::Uuid::now_v7()));
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
}
