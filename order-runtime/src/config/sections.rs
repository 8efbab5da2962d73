//! The sections of [`Settings`](super::Settings), one struct each, with
//! their defaults (the local development values).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use order_core::settings::check;

use super::{DatabaseSettings, RedisSettings, Secret, checks, duration_text};

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
    /// Order events: the outbox relay and retention.
    pub events: EventSettings,
    /// Order statistics.
    pub stats: StatsSettings,
    /// order-api's own settings.
    pub api: ApiSettings,
    /// Probes and metrics of worker and compensator.
    pub observability: ObservabilitySettings,
    /// Logging.
    pub log: LogSettings,
}

impl Settings {
    /// The failure ledger's retry policy (`compensator.max_retries`,
    /// `backoff_base`, `backoff_max`). It is one policy for every role that
    /// writes failures: the worker and the API date a new failure's first
    /// retry with it, the compensator and an operator's retry reschedule with
    /// it, so it is read from here rather than from one role's section.
    #[must_use]
    pub fn retry_policy(&self) -> order_core::domain::RetryPolicy {
        let c = &self.compensator;
        order_core::domain::RetryPolicy {
            base: c.backoff_base,
            max: c.backoff_max,
            max_retries: c.max_retries,
        }
    }

    /// A [`Retrier`](order_core::service::Retrier) with the retry policy and
    /// the compensator's lease and batch size.
    #[must_use]
    pub fn retrier(
        &self,
        creator: order_core::service::OrderCreator,
    ) -> order_core::service::Retrier {
        let c = &self.compensator;
        order_core::service::Retrier::new(creator, self.retry_policy(), c.lease, c.batch_size)
    }
}

/// `server.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The address order-api listens on: `0.0.0.0` (every IPv4 interface,
    /// what a container needs), `::` (every interface), `127.0.0.1` (this
    /// machine only).
    #[serde(deserialize_with = "checks::listen_host")]
    pub host: String,
    /// order-api's port; 0 picks any free port (logged at start).
    pub port: u16,
    /// Longest time to read a request.
    #[serde(with = "check::positive_duration")]
    pub read_timeout: Duration,
    /// Longest time to write a response.
    #[serde(with = "check::positive_duration")]
    pub write_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight
    /// (a new connection's first request must come within `read_timeout`).
    #[serde(with = "check::positive_duration")]
    pub idle_timeout: Duration,
    /// Most connections open at once; past it new ones wait in the listen
    /// backlog until one closes.
    #[serde(deserialize_with = "check::at_least_one")]
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
    #[serde(deserialize_with = "check::not_empty")]
    pub exchange: String,
    /// This service's durable queue.
    #[serde(deserialize_with = "check::not_empty")]
    pub queue: String,
    /// The binding key.
    pub routing_key: String,
    /// The dead-letter exchange of the queue.
    #[serde(deserialize_with = "check::not_empty")]
    pub dead_letter_exchange: String,
    /// The queue bound to the dead-letter exchange.
    #[serde(deserialize_with = "check::not_empty")]
    pub dead_letter_queue: String,
    /// Unacknowledged messages in flight; unset: 2 × `worker.batch_size`.
    #[serde(deserialize_with = "check::optional_at_least_one")]
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
    #[serde(deserialize_with = "check::not_empty")]
    pub topic: String,
    /// The consumer group.
    #[serde(deserialize_with = "check::not_empty")]
    pub group_id: String,
    /// How long the group waits for a silent consumer before rebalancing.
    #[serde(with = "duration_text")]
    pub session_timeout: Duration,
    /// Where a message goes whose failure cannot even be recorded.
    #[serde(deserialize_with = "check::not_empty")]
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
    #[serde(deserialize_with = "checks::batch_rows")]
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[serde(deserialize_with = "checks::linger_ms")]
    pub batch_linger_ms: u64,
    /// Longest time from SIGTERM to exit.
    #[serde(with = "check::positive_duration")]
    pub shutdown_timeout: Duration,
    /// Most bytes of a poison message kept in its failure row (the whole
    /// length is recorded too); a retryable failure keeps every byte.
    #[serde(deserialize_with = "checks::failure_data_bytes")]
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
    #[serde(deserialize_with = "checks::cron")]
    pub retry_cron: String,
    /// Schedule of `expire-unpaid`.
    #[serde(deserialize_with = "checks::cron")]
    pub expire_cron: String,
    /// Schedule of `purge-resolved`.
    #[serde(deserialize_with = "checks::cron")]
    pub purge_cron: String,
    /// Schedule of `compact-stats`: closed days' statistics rollups are
    /// folded into one row per day and status.
    #[serde(deserialize_with = "checks::cron")]
    pub compact_cron: String,
    /// Resolved (`success`, `failed`) failures are deleted this long after
    /// their last change.
    #[serde(with = "check::positive_duration")]
    pub failure_retention: Duration,
    /// Failures claimed per run; also the row count of each expiry and purge statement.
    #[serde(deserialize_with = "checks::batch_rows")]
    pub batch_size: u32,
    /// Retries before a failure is given up.
    pub max_retries: u32,
    /// First retry delay.
    #[serde(with = "check::positive_duration")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_text")]
    pub backoff_max: Duration,
    /// How long a claim holds before it lapses back to pending.
    #[serde(with = "check::positive_duration")]
    pub lease: Duration,
    /// Longest time from SIGTERM to exit: runs in progress get this long to
    /// finish (a claim cut short returns to pending at its lease's end).
    #[serde(with = "check::positive_duration")]
    pub shutdown_timeout: Duration,
}

impl Default for CompensatorSettings {
    fn default() -> Self {
        Self {
            retry_cron: "*/10 * * * * *".into(),
            expire_cron: "0 * * * * *".into(),
            purge_cron: "0 0 * * * *".into(),
            compact_cron: "0 10 * * * *".into(),
            failure_retention: Duration::from_secs(7 * 24 * 3600),
            batch_size: 100,
            max_retries: 5,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(25),
        }
    }
}

/// `stats.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsSettings {
    /// Keep the per-day and per-hour rollups in the transaction of every
    /// change (the statistics endpoint reads them). False: statistics are
    /// counted from the orders table at each request, which takes the time
    /// of the range's orders; turning it on again needs `order-api stats
    /// rebuild` over every day. Every role must agree.
    pub rollups: bool,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self { rollups: true }
    }
}

/// Where the relay publishes order events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventBroker {
    /// RabbitMQ when `rabbitmq.enabled`, else Kafka.
    Auto,
    /// The `events.exchange` topic exchange on `rabbitmq.*`'s broker.
    Rabbitmq,
    /// The `events.topic` topic on `kafka.brokers`.
    Kafka,
}

/// `events.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Write order events with the changes. False (a deployment with no
    /// consumer of them) writes none and runs no relay: the changes made
    /// meanwhile never get events.
    pub enabled: bool,
    /// Run the outbox relay in this worker (a worker may also run it alone:
    /// `rabbitmq.enabled` and `kafka.enabled` false).
    pub relay: bool,
    /// Published events are deleted this long after publishing (by the
    /// compensator's purge job).
    #[serde(with = "check::positive_duration")]
    pub retention: Duration,
    /// Where events go.
    pub broker: EventBroker,
    /// RabbitMQ: the durable topic exchange (routing key = event type).
    #[serde(deserialize_with = "check::not_empty")]
    pub exchange: String,
    /// Kafka: the topic (key = order id).
    #[serde(deserialize_with = "check::not_empty")]
    pub topic: String,
    /// Events claimed per round.
    #[serde(deserialize_with = "checks::batch_rows")]
    pub batch_size: u32,
    /// How often the relay looks for events without being woken (MySQL
    /// always; PostgreSQL wakes at each commit and looks this often too).
    #[serde(with = "check::positive_duration")]
    pub poll_interval: Duration,
    /// How long a broker has to confirm a round; past it the events count
    /// as unsent and are tried again (the round's claim is held meanwhile).
    #[serde(with = "check::positive_duration")]
    pub publish_timeout: Duration,
    /// First delay before an event the broker refused is tried again.
    #[serde(with = "check::positive_duration")]
    pub backoff_base: Duration,
    /// Longest such delay.
    #[serde(with = "duration_text")]
    pub backoff_max: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            relay: true,
            retention: Duration::from_secs(7 * 24 * 3600),
            broker: EventBroker::Auto,
            exchange: "order.events".into(),
            topic: "order-events".into(),
            batch_size: 500,
            poll_interval: Duration::from_millis(50),
            publish_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl Settings {
    /// The broker the relay publishes to.
    #[must_use]
    pub fn event_broker(&self) -> EventBroker {
        match self.events.broker {
            EventBroker::Auto if self.rabbitmq.enabled || !self.kafka.enabled => {
                EventBroker::Rabbitmq
            }
            EventBroker::Auto => EventBroker::Kafka,
            chosen => chosen,
        }
    }

    /// The outbox relay these settings describe.
    #[must_use]
    pub fn relay(&self, storage: order_core::storage::Storage) -> order_core::service::Relay {
        let e = &self.events;
        order_core::service::Relay::new(storage, e.batch_size, e.backoff_base, e.backoff_max)
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
    /// Bearer token that reads what the operator reads (orders, failures,
    /// events, statistics) and may change nothing (403); empty: none.
    pub readonly_token: Secret,
    /// Largest request body, in bytes.
    #[serde(deserialize_with = "check::at_least_one")]
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
            readonly_token: Secret::default(),
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
    #[serde(deserialize_with = "checks::jwt_secret")]
    pub jwt_secret: Secret,
    /// A PEM public key (RSA for RS256, EC P-256 for ES256).
    pub jwt_public_key_file: String,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// The claim holding the user id.
    #[serde(deserialize_with = "check::not_empty")]
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
    #[serde(deserialize_with = "checks::listen_host")]
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
    #[serde(deserialize_with = "checks::log_filter")]
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
