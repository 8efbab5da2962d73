//! The settings of what order-core opens itself: the database pool and the
//! Redis cache, and the secret and duration types every section uses.
//!
//! They are plain data read by serde; the layered loader that fills them
//! (file, environment, flags) and the rules across sections live in the
//! runtime crate's `config`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Writes `d` as text, e.g. `30s`.
    ///
    /// # Errors
    /// As the serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads text such as `30s` or whole seconds.
    ///
    /// # Errors
    /// When the value is neither.
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
    #[serde(deserialize_with = "check::at_least_one")]
    pub max_connections: u32,
    /// Longest wait for a pooled connection before the call fails as unavailable.
    #[serde(with = "check::positive_duration")]
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
    #[serde(deserialize_with = "check::not_empty")]
    pub key_prefix: String,
    /// Order cache TTL, in seconds.
    #[serde(deserialize_with = "check::at_least_one")]
    pub ttl_secs: u64,
    /// order-api's in-process copy of hot orders in front of Redis.
    pub near_cache: NearCacheSettings,
}

/// `redis.near_cache`: each order-api replica keeps the orders it read last
/// in its own memory, invalidated through Redis pub/sub (see
/// [`crate::cache`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearCacheSettings {
    /// Keep copies in order-api's memory (false: every read asks Redis).
    pub enabled: bool,
    /// The memory the copies may take, in MiB (JSON and bookkeeping).
    #[serde(deserialize_with = "check::at_least_one")]
    pub max_mib: u64,
    /// A copy lives at most this long.
    #[serde(with = "check::positive_duration")]
    pub ttl: Duration,
    /// Copies are served only while this replica knows it has received
    /// every invalidation published more than this long ago; otherwise
    /// reads go to Redis. The most a read can lag a change's invalidation.
    #[serde(with = "check::positive_duration")]
    pub max_staleness: Duration,
}

impl Default for NearCacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_mib: 16,
            ttl: Duration::from_secs(60),
            max_staleness: Duration::from_millis(500),
        }
    }
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
            near_cache: NearCacheSettings::default(),
        }
    }
}

/// Field checks for `#[serde(deserialize_with = "…")]`: the value is read as
/// its type, then refused with the rule it breaks. The configuration loader
/// names the key, so an error reads `database.max_connections: must be at
/// least 1`.
pub mod check {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    /// A count of at least 1.
    ///
    /// # Errors
    /// When the value is not such a number.
    pub fn at_least_one<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialOrd + From<u8>,
    {
        let value = T::deserialize(d)?;
        if value >= T::from(1) {
            Ok(value)
        } else {
            Err(D::Error::custom("must be at least 1"))
        }
    }

    /// [`at_least_one`] when set.
    ///
    /// # Errors
    /// When the value is set and not such a number.
    pub fn optional_at_least_one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialOrd + From<u8>,
    {
        match Option::<T>::deserialize(d)? {
            Some(value) if value < T::from(1) => Err(D::Error::custom("must be at least 1")),
            value => Ok(value),
        }
    }

    /// Text that is not empty.
    ///
    /// # Errors
    /// When the value is empty or not text.
    pub fn not_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = String::deserialize(d)?;
        if value.is_empty() {
            Err(D::Error::custom("must not be empty"))
        } else {
            Ok(value)
        }
    }

    /// A duration above zero, written and read as [`super::duration_text`]
    /// (`#[serde(with = "check::positive_duration")]`).
    pub mod positive_duration {
        use std::time::Duration;

        use serde::de::Error as _;
        use serde::{Deserializer, Serializer};

        /// As [`crate::settings::duration_text::serialize`].
        ///
        /// # Errors
        /// As the serializer's.
        pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            crate::settings::duration_text::serialize(d, s)
        }

        /// A duration above zero.
        ///
        /// # Errors
        /// When the value is zero or not a duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            let value = crate::settings::duration_text::deserialize(d)?;
            if value.is_zero() {
                Err(D::Error::custom("must be above 0"))
            } else {
                Ok(value)
            }
        }
    }
}
