//! Storage: PostgreSQL and MySQL behind one [`Storage`] type.
//!
//! # The contract
//!
//! [`Storage`]'s methods are everything the service asks of a database,
//! grouped by table: the pool itself (this file), orders ([`orders`]:
//! creating a batch, reading, transitions, statistics, expiry) and the
//! failure ledger ([`failures`]: recording, claiming, resolving, purging).
//! The rules around the statements (deduplication inside a batch, the
//! deadlock-free lock order, isolating a bad row, retrying a deadlock,
//! classifying errors) are written there once for both engines.
//!
//! # One statement, two engines
//!
//! A statement both engines read alike is written once, with `?`
//! placeholders bound in order, and run through [`on_pool!`], which numbers
//! the placeholders for PostgreSQL (`$1`, `$2`, …). Only what the engines
//! really do differently is written per engine, behind the [`Engine`] trait
//! ([`postgres`]: `UNNEST` arrays, `RETURNING`, `FOR UPDATE SKIP LOCKED`
//! sub-selects; [`mysql`]: multi-row `VALUES` under the placeholder and
//! packet limits, select-then-update): the batch inserts, the claims, the
//! expiry and the purge. A new statement goes into the contract once: shared
//! when the engines agree, an [`Engine`] method when they do not.
//!
//! Queries are built at run time (`sqlx::query`), not checked by macros
//! against one engine; the same test suite runs on both engines instead.

mod batch;
mod engine;
mod error;
pub(crate) mod events;
mod failures;
pub(crate) mod mysql;
mod orders;
mod postgres;
mod rows;
pub(crate) mod stats;
mod types;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use batch::MAX_BATCH_ROWS;
pub use error::{ErrorClass, StorageError};
pub use events::{
    Backlog, ClaimOutcome, EventClaim, EventFilter, EventStatus, EventWakeups, StoredEvent,
};
pub use failures::{PG_BODY_AS_ASCII, SEARCH_COUNT_CAP};
pub use stats::{Figures, Granularity, MAX_STATS_DAYS, MAX_STATS_HOURS, Rebuilt, SeriesEntry};
pub use types::{
    Attempt, Changed, ClaimById, FailureSummary, InsertOutcome, OrderCursor, OrderStats, Page,
    PageRequest, ReasonCount, Recorded, ResolvedByHand,
};

use crate::domain::Lease;
use crate::settings::{DatabaseSettings, Driver};

/// PostgreSQL or MySQL; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub enum Storage {
    /// PostgreSQL.
    Postgres(postgres::PgStore),
    /// MySQL 8 or MariaDB ≥ 10.6.
    Mysql(mysql::MySqlStore),
}

/// Runs `connect` under `within`; a failure becomes
/// [`StorageError::Unreachable`] naming `target` and the cause once.
pub(crate) async fn probe_with(
    target: String,
    within: Duration,
    connect: impl Future<Output = Result<(), sqlx::Error>>,
) -> Result<(), StorageError> {
    match tokio::time::timeout(within, connect).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StorageError::Unreachable {
            target,
            cause: crate::error_chain(&e),
        }),
        Err(_) => Err(StorageError::Unreachable {
            target,
            cause: format!(
                "no answer within {} (a firewall, a wrong host, or an overloaded server)",
                humantime::format_duration(within)
            ),
        }),
    }
}

/// Calls the same [`Engine`] method on whichever engine this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Storage::Postgres(s) => s.$method($($arg),*).await,
            Storage::Mysql(s) => s.$method($($arg),*).await,
        }
    };
}
pub(crate) use dispatch;

/// The engine's connect options (`$options`) from `$settings`: its `url`
/// when set, read by `$parse`, else its host, port, user, password and
/// database name.
macro_rules! connect_options {
    ($options:ty, $settings:expr, |$url:ident| $parse:expr) => {{
        let settings = $settings;
        if settings.url.is_empty() {
            let mut options = <$options>::new()
                .host(&settings.host)
                .port(settings.port)
                .username(&settings.user)
                .database(&settings.dbname);
            if !settings.password.is_empty() {
                options = options.password(settings.password.expose());
            }
            options
        } else {
            let $url = settings.url.expose();
            $parse.map_err(|e| StorageError::Config(format!("database.url: {e}")))?
        }
    }};
}
pub(crate) use connect_options;

/// Runs `$body` on whichever engine `$storage` is, with `$pool` that
/// engine's pool and `$sql` a `fn(&str) -> Cow<str>` that turns a statement
/// written once with `?` placeholders into that engine's text
/// ([`numbered`] for PostgreSQL, [`as_is`] for MySQL). The body is compiled
/// once per engine, so binds and row types are checked for both.
macro_rules! on_pool {
    ($storage:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $storage {
            $crate::storage::Storage::Postgres(s) => {
                let $pool = s.pool();
                let $sql = $crate::storage::numbered;
                $body
            }
            $crate::storage::Storage::Mysql(s) => {
                let $pool = s.pool();
                let $sql = $crate::storage::as_is;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// A statement written with `?` placeholders, numbered as PostgreSQL reads
/// them (`$1`, `$2`, … in order). A `?` inside a quoted literal or
/// identifier is left alone.
pub(crate) fn numbered(text: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut n, mut quote) = (0, None);
    for c in text.chars() {
        match (c, quote) {
            ('?', None) => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            _ => {}
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A statement written with `?` placeholders, as MySQL reads it.
pub(crate) fn as_is(text: &str) -> Cow<'_, str> {
    Cow::Borrowed(text)
}

impl Storage {
    /// Opens a pool. Connections are made lazily, so this succeeds while the
    /// database is down; [`Storage::ping`] tells whether it answers.
    ///
    /// # Errors
    /// [`StorageError::Config`] when the URL or settings cannot be read.
    pub fn connect(settings: &DatabaseSettings) -> Result<Self, StorageError> {
        Self::connect_with(settings, None)
    }

    /// [`Storage::connect`], with every statement of the pool's sessions
    /// limited to `statement_timeout` (PostgreSQL `statement_timeout`,
    /// MariaDB `max_statement_time`, MySQL `max_execution_time`, which
    /// bounds reads only). A statement past it fails with
    /// [`StorageError::TimedOut`].
    ///
    /// # Errors
    /// [`StorageError::Config`] when the URL or settings cannot be read.
    pub fn connect_with(
        settings: &DatabaseSettings,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, StorageError> {
        let timeout = statement_timeout.filter(|t| !t.is_zero());
        Ok(match settings.effective_driver() {
            Driver::Postgres => Self::Postgres(postgres::PgStore::connect(settings, timeout)?),
            Driver::Mysql => Self::Mysql(mysql::MySqlStore::connect(settings, timeout)?),
        })
    }

    /// This pool writing no order events (`events.enabled: false`: a
    /// deployment with no consumer of them). Changes commit as before,
    /// without their outbox rows.
    #[must_use]
    pub fn without_events(mut self) -> Self {
        match &mut self {
            Self::Postgres(s) => s.events = false,
            Self::Mysql(s) => s.events = false,
        }
        self
    }

    /// Whether this pool writes order events with the changes.
    #[must_use]
    pub fn writes_events(&self) -> bool {
        match self {
            Self::Postgres(s) => s.events,
            Self::Mysql(s) => s.events,
        }
    }

    /// The engine.
    #[must_use]
    pub fn driver(&self) -> Driver {
        match self {
            Self::Postgres(_) => Driver::Postgres,
            Self::Mysql(_) => Driver::Mysql,
        }
    }

    /// Applies pending migrations; returns the versions applied (empty when
    /// the schema was current).
    ///
    /// # Errors
    /// When the database is unreachable or a migration fails.
    pub async fn migrate(&self) -> Result<Vec<i64>, StorageError> {
        use sqlx::migrate::Migrate;
        let migrator = match self {
            Self::Postgres(_) => &postgres::MIGRATOR,
            Self::Mysql(_) => &mysql::MIGRATOR,
        };
        on_pool!(self, |pool, _sql| {
            let mut conn = pool.acquire().await?;
            conn.ensure_migrations_table().await?;
            let applied: std::collections::HashSet<i64> = conn
                .list_applied_migrations()
                .await?
                .iter()
                .map(|m| m.version)
                .collect();
            drop(conn);
            migrator.run(pool).await?;
            Ok(migrator
                .iter()
                .map(|m| m.version)
                .filter(|v| !applied.contains(v))
                .collect())
        })
    }

    /// One round trip to the database.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when it does not answer.
    pub async fn ping(&self) -> Result<(), StorageError> {
        // No probe of its own here: readiness checks call this, and a
        // connection outside the pool is the last thing a saturated
        // database needs. Start-up uses [`Storage::probe`] for the cause.
        on_pool!(self, |pool, _sql| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Opens one connection outside the pool (whose timeout hides the
    /// cause) and closes it: tells within `within` whether the database can
    /// be reached, and if not, where it was tried and why (connection
    /// refused, no answer, unknown host, refused login, no such database).
    ///
    /// # Errors
    /// [`StorageError::Unreachable`].
    pub async fn probe(&self, within: Duration) -> Result<(), StorageError> {
        on_pool!(self, |pool, _sql| {
            let options = pool.connect_options();
            probe_with(self.target(), within, async move {
                let conn = sqlx::ConnectOptions::connect(&*options).await?;
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            })
            .await
        })
    }

    /// The engine and its address, e.g. `PostgreSQL at localhost:5432`.
    #[must_use]
    pub fn target(&self) -> String {
        let engine = match self {
            Self::Postgres(_) => "PostgreSQL",
            Self::Mysql(_) => "MySQL",
        };
        on_pool!(self, |pool, _sql| {
            let options = pool.connect_options();
            match options.get_socket() {
                Some(socket) => format!("{engine} at {}", socket.display()),
                None => format!("{engine} at {}:{}", options.get_host(), options.get_port()),
            }
        })
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        on_pool!(self, |pool, _sql| pool.close().await);
    }

    /// `(connections open, of which idle)`.
    #[must_use]
    pub fn pool_usage(&self) -> (u32, usize) {
        on_pool!(self, |pool, _sql| (pool.size(), pool.num_idle()))
    }
}

/// Now, at the microsecond precision both engines store.
pub(crate) fn now() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn new_lease(now: DateTime<Utc>, length: Duration) -> Lease {
    Lease {
        token: Uuid::now_v7(),
        until: truncate_micros(
            now + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_in_order_outside_quotes() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = '?' WHERE c = ? AND d IN ('x', ?)"),
            "UPDATE t SET a = $1, b = '?' WHERE c = $2 AND d IN ('x', $3)"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}
