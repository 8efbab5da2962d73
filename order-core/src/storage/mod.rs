//! Storage: PostgreSQL and MySQL behind one [`Storage`] type.
//!
//! Every query the service makes lives here, once per engine
//! ([`postgres`], [`mysql`]); the rules around them (deduplication inside a
//! batch, the deadlock-free lock order, isolating a bad row, retrying a
//! deadlock, classifying errors) live here once for both.
//!
//! Queries are built at run time (`sqlx::query`), not checked by macros
//! against one engine; the same test suite runs on both engines instead.

mod error;
pub(crate) mod mysql;
mod postgres;
mod rows;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

pub use error::{ErrorClass, StorageError};

use crate::config::{DatabaseSettings, Driver};
use crate::domain::{
    ByHand, Failure, FailureStatus, Lease, NewFailure, NewOrder, Order, OrderStatus,
    ResolutionNote, ResolveRefusal, TransitionError,
};

/// What became of one purchase handed to [`Storage::create_orders`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new order was committed.
    Created(Uuid),
    /// The (user, product) already had this order; nothing was written.
    Duplicate(Uuid),
    /// This purchase could not be written (its own data broke a database
    /// rule); its neighbours were not affected.
    Failed(String),
}

/// What recording one failure did ([`Storage::record_each`]): failures are
/// kept once per message (its digest), so a redelivery, or a copy of a
/// message already recorded, writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new failure row was written.
    New,
    /// The message had a failure row already (an earlier delivery, or an
    /// earlier copy in the same call): nothing was written.
    AlreadyRecorded,
}

impl CreateOutcome {
    /// The order, for `Created` and `Duplicate`.
    #[must_use]
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Self::Created(id) | Self::Duplicate(id) => Some(*id),
            Self::Failed(_) => None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows matching the filter, on all pages.
    pub total: i64,
}

/// Page number and size, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: u32,
    /// Rows per page.
    pub page_size: u32,
}

impl PageRequest {
    fn offset(self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
}

/// The position after the last row of a keyset page: the next page starts
/// strictly after it, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCursor {
    /// `created_at` of the last row seen.
    pub created_at: DateTime<Utc>,
    /// `id` of the last row seen.
    pub id: i64,
}

impl OrderCursor {
    /// The cursor that continues after `order`.
    #[must_use]
    pub fn after(order: &Order) -> Self {
        Self {
            created_at: order.created_at,
            id: order.id,
        }
    }
}

/// Order statistics over whole UTC days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderStats {
    /// First day, inclusive.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// Orders created in the range.
    pub order_count: i64,
    /// Orders per status (every status present, zero when none).
    pub by_status: HashMap<OrderStatus, i64>,
    /// Sum of `total_amount` of all orders (scale 2).
    pub total_amount: Decimal,
    /// Sum of `total_amount` of completed orders (scale 2).
    pub completed_amount: Decimal,
}

/// An order a statement changed, and its version after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// The order.
    pub order_id: Uuid,
    /// Its version once the change is committed.
    pub version: i32,
}

/// The result of claiming one failure by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOne {
    /// Claimed: the holder must resolve it with the lease.
    Claimed(Box<Failure>, Lease),
    /// No failure has this id.
    NotFound,
    /// It cannot be claimed now (already succeeded, being processed, not
    /// retryable, or resolved by hand).
    Refused(Box<Failure>),
}

/// The result of resolving one failure by hand
/// ([`Storage::resolve_failure_by_hand`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedByHand {
    /// It is `resolved` now, with the note.
    Resolved {
        /// The failure as it is afterwards.
        failure: Box<Failure>,
        /// Its status before (`pending` or `failed`).
        previous: FailureStatus,
    },
    /// It was already resolved: nothing changed (its note neither).
    AlreadyResolved(Box<Failure>),
    /// It may not be resolved by hand, and why.
    Refused(Box<Failure>, ResolveRefusal),
    /// No failure has this id.
    NotFound,
}

/// How many conditional updates [`Storage::resolve_failure_by_hand`] tries,
/// each after reading the failure again, before it answers that the failure
/// is being retried (it kept changing under the update).
const RESOLVE_ATTEMPTS: u32 = 3;

/// How many times a transaction that hit a deadlock or a serialization
/// failure is tried before the batch is narrowed.
const DEADLOCK_ATTEMPTS: u32 = 20;

/// How long a part of a batch is tried again for deadlocks and lock waits
/// before it is narrowed (a lock wait alone can take 50 s on MySQL): a batch
/// never holds its source for long without progress.
const DEADLOCK_RETRY_FOR: Duration = Duration::from_secs(10);

/// The most rows one batch call takes ([`Storage::create_orders`],
/// [`Storage::record_each`], a claim, an expiry run): the upper bound of
/// `worker.batch_size` and `compensator.batch_size`. Statements are split
/// below it as each engine needs; this bounds memory and transaction size.
pub const MAX_BATCH_ROWS: usize = 10_000;

/// The most placeholders MySQL and MariaDB take in one prepared statement.
pub(crate) const MYSQL_MAX_PLACEHOLDERS: usize = 65_535;

/// The statement size aimed at when no server limit is known (PostgreSQL
/// array parameters), in bytes.
pub(crate) const DEFAULT_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// Splits `items` into runs of at most `max_rows` items whose `size`s add
/// up to at most `max_bytes`; an item larger than `max_bytes` runs alone.
pub(crate) fn chunks<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0_usize);
    for (i, item) in items.iter().enumerate() {
        let len = size(item);
        if i > start && (i - start == max_rows || bytes.saturating_add(len) > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(len);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Rows of `per_row` placeholders that fit one MySQL statement, leaving
/// `extra` placeholders for the rest of it.
pub(crate) fn mysql_rows(per_row: usize, extra: usize) -> usize {
    (MYSQL_MAX_PLACEHOLDERS - extra) / per_row
}

/// The future of one write of part of a batch.
type WriteFuture<'a, O> = Pin<Box<dyn Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'a>>;

/// Writes `batch` with `write`; when that fails for any reason but an
/// outage, splits it in halves until the rows that cause the error stand
/// alone, and answers those with `refused`. A deadlock is run again first.
/// Outcomes are in the order of `batch`.
///
/// # Errors
/// Only [`StorageError::Unavailable`]: the database is out of reach.
async fn narrow<'a, T: Sync, O: Send>(
    batch: &'a [T],
    write: impl Fn(&'a [T]) -> WriteFuture<'a, O>,
    refused: impl Fn(&T, &sqlx::Error) -> O,
) -> Result<Vec<O>, StorageError> {
    let mut out = Vec::with_capacity(batch.len());
    // A stack of parts still to write, the leftmost on top.
    let mut todo = vec![batch];
    while let Some(part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        let (mut attempt, started) = (0, std::time::Instant::now());
        loop {
            attempt += 1;
            let err = match write(part).await {
                Ok(outcomes) => {
                    out.extend(outcomes);
                    break;
                }
                Err(err) => err,
            };
            match ErrorClass::of(&err) {
                ErrorClass::Unavailable => return Err(StorageError::from(err)),
                ErrorClass::Retry
                    if attempt < DEADLOCK_ATTEMPTS && started.elapsed() < DEADLOCK_RETRY_FOR =>
                {
                    let pause = Duration::from_millis(fastrand::u64(1..=(4_u64 << attempt.min(6))));
                    tracing::debug!(attempt, error = %err, "deadlock or serialization failure, retrying the batch");
                    tokio::time::sleep(pause).await;
                }
                _ if part.len() == 1 => {
                    tracing::debug!(error = %err, "one row refused by the database");
                    out.push(refused(&part[0], &err));
                    break;
                }
                _ => {
                    tracing::debug!(rows = part.len(), error = %err, "batch refused by the database, narrowing it");
                    let (left, right) = part.split_at(part.len() / 2);
                    todo.push(right);
                    todo.push(left);
                    break;
                }
            }
        }
    }
    Ok(out)
}

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
            cause: crate::telemetry::error_chain(&e),
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

/// Calls the same method on whichever engine this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Storage::Postgres(s) => s.$method($($arg),*).await,
            Storage::Mysql(s) => s.$method($($arg),*).await,
        }
    };
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
        dispatch!(self.migrate())
    }

    /// One round trip to the database.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when it does not answer.
    pub async fn ping(&self) -> Result<(), StorageError> {
        // No probe of its own here: readiness checks call this, and a
        // connection outside the pool is the last thing a saturated
        // database needs. Start-up uses [`Storage::probe`] for the cause.
        dispatch!(self.ping())
    }

    /// Opens one connection outside the pool and closes it: tells within
    /// `within` whether the database can be reached, and if not, where it
    /// was tried and why (connection refused, no answer, unknown host,
    /// refused login, no such database).
    ///
    /// # Errors
    /// [`StorageError::Unreachable`].
    pub async fn probe(&self, within: Duration) -> Result<(), StorageError> {
        dispatch!(self.probe(within))
    }

    /// The engine and its address, e.g. `PostgreSQL at localhost:5432`.
    #[must_use]
    pub fn target(&self) -> String {
        match self {
            Self::Postgres(s) => s.target(),
            Self::Mysql(s) => s.target(),
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        dispatch!(self.close());
    }

    /// `(connections open, of which idle)`.
    #[must_use]
    pub fn pool_usage(&self) -> (u32, usize) {
        match self {
            Self::Postgres(s) => s.pool_usage(),
            Self::Mysql(s) => s.pool_usage(),
        }
    }

    /// Creates the orders of a batch, at most one per (user, product), ever.
    ///
    /// One transaction for the batch, multi-row statements (split below
    /// each engine's limits): idempotency records are inserted with
    /// conflict-ignore, then orders and items for the purchases that are
    /// new. Duplicates inside the batch point at the same order. A purchase
    /// the database refuses, for whatever reason but an outage, is isolated
    /// by splitting the batch and comes back `Failed`; every other purchase
    /// still commits. Outcomes are in the order of `orders`.
    ///
    /// # Errors
    /// Only [`StorageError::Unavailable`]: nothing of the batch may be
    /// acknowledged.
    pub async fn create_orders(
        &self,
        orders: &[NewOrder],
    ) -> Result<Vec<CreateOutcome>, StorageError> {
        // The first purchase of each key is the one written; the others follow it.
        let mut canonical: HashMap<(i64, i64), usize> = HashMap::with_capacity(orders.len());
        let mut unique: Vec<&NewOrder> = Vec::with_capacity(orders.len());
        for order in orders {
            canonical.entry(order.key()).or_insert_with(|| {
                unique.push(order);
                unique.len() - 1
            });
        }
        // Every transaction locks keys in the same order, so batches that
        // share keys wait for each other instead of deadlocking.
        let mut order_of: Vec<usize> = (0..unique.len()).collect();
        order_of.sort_by_key(|&i| unique[i].key());
        let sorted: Vec<&NewOrder> = order_of.iter().map(|&i| unique[i]).collect();
        let sorted_outcomes = narrow(
            &sorted,
            |part| match self {
                Self::Postgres(s) => Box::pin(s.insert_batch(part)),
                Self::Mysql(s) => Box::pin(s.insert_batch(part)),
            },
            |order, err| {
                let (user, product) = order.key();
                tracing::debug!(order.user_id = user, order.product_id = product, error = %err, "purchase refused by the database");
                CreateOutcome::Failed(error::describe(err, "order"))
            },
        )
        .await?;
        let mut unique_outcomes = vec![CreateOutcome::Failed(String::new()); unique.len()];
        for (outcome, &i) in sorted_outcomes.into_iter().zip(&order_of) {
            unique_outcomes[i] = outcome;
        }

        let mut seen = vec![false; unique.len()];
        Ok(orders
            .iter()
            .map(|order| {
                let i = canonical[&order.key()];
                if std::mem::replace(&mut seen[i], true) {
                    match &unique_outcomes[i] {
                        CreateOutcome::Created(id) | CreateOutcome::Duplicate(id) => {
                            CreateOutcome::Duplicate(*id)
                        }
                        CreateOutcome::Failed(reason) => CreateOutcome::Failed(format!(
                            "same purchase as a message that failed in this batch: {reason}"
                        )),
                    }
                } else {
                    unique_outcomes[i].clone()
                }
            })
            .collect())
    }

    /// One order with its items.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn get_order(&self, order_id: Uuid) -> Result<Option<Order>, StorageError> {
        dispatch!(self.get_order(order_id))
    }

    /// A user's orders, newest first, one page of them and the total.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list_user_orders(
        &self,
        user_id: i64,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> Result<Page<Order>, StorageError> {
        dispatch!(self.list_user_orders(user_id, status, page))
    }

    /// A user's orders, newest first, strictly after `cursor` (keyset paging:
    /// stable while orders are added, no deep OFFSET scans).
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list_user_orders_after(
        &self,
        user_id: i64,
        status: Option<OrderStatus>,
        cursor: Option<OrderCursor>,
        limit: u32,
    ) -> Result<Vec<Order>, StorageError> {
        dispatch!(self.list_user_orders_after(user_id, status, cursor, limit))
    }

    /// Moves an order to `to` if the status machine allows it from its
    /// current status, as a conditional update: of two concurrent
    /// transitions only one wins. Returns the order as it is afterwards.
    /// (The API and the jobs change orders through
    /// [`crate::service::Orders`], which also keeps the cache right.)
    ///
    /// # Errors
    /// [`StorageError::NotFound`], [`StorageError::Transition`] (naming the
    /// status it really had), or unavailability.
    pub async fn transition_order(
        &self,
        order_id: Uuid,
        to: OrderStatus,
    ) -> Result<Order, StorageError> {
        let current = self
            .get_order(order_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        current.status.transition_to(to)?;
        self.apply_transition(current, to).await
    }

    /// Writes `current` → `to` (already allowed by the status machine) if
    /// the order is still at `current.version`. Returns the order as it is
    /// afterwards, without reading it again.
    ///
    /// # Errors
    /// [`StorageError::Transition`] when another change came first (naming
    /// the status it made), [`StorageError::NotFound`], or unavailability.
    pub async fn apply_transition(
        &self,
        current: Order,
        to: OrderStatus,
    ) -> Result<Order, StorageError> {
        let at = now();
        let changed: bool = dispatch!(self.set_status(current.order_id, current.version, to, at))?;
        if changed {
            return Ok(current.moved_to(to, at));
        }
        // Somebody else moved it first: report what it is now.
        let after = self
            .get_order(current.order_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Err(StorageError::Transition(TransitionError {
            from: after.status,
            to,
        }))
    }

    /// Counts and amounts of orders created on the UTC days `from..=to`.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn stats(&self, from: NaiveDate, to: NaiveDate) -> Result<OrderStats, StorageError> {
        let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
        // The last microsecond of `to`, inclusive: the next midnight of
        // 9999-12-31 is beyond what MySQL's DATETIME compares with.
        let last = to
            .and_hms_micro_opt(23, 59, 59, 999_999)
            .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc());
        let rows: Vec<(String, i64, Decimal)> = dispatch!(self.stats_rows(start, last))?;
        let mut stats = OrderStats {
            from,
            to,
            order_count: 0,
            by_status: OrderStatus::ALL.iter().map(|s| (*s, 0)).collect(),
            total_amount: crate::domain::Money::ZERO.as_decimal(),
            completed_amount: crate::domain::Money::ZERO.as_decimal(),
        };
        for (status, count, amount) in rows {
            let status: OrderStatus = status
                .parse()
                .map_err(|e: crate::domain::UnknownStatus| StorageError::Corrupt(e.to_string()))?;
            stats.by_status.insert(status, count);
            stats.order_count += count;
            stats.total_amount += amount;
            if status == OrderStatus::Completed {
                stats.completed_amount += amount;
            }
        }
        stats.total_amount.rescale(2);
        stats.completed_amount.rescale(2);
        Ok(stats)
    }

    /// Pending orders created before `cutoff` become cancelled, at most
    /// `limit` of them (oldest first); returns them with their new
    /// versions. Rows locked by
    /// another expirer are skipped, and the update is conditional on the
    /// order still being pending.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Changed>, StorageError> {
        dispatch!(self.expire_unpaid(cutoff, limit, now()))
    }

    /// Records failures; a message already recorded (same digest) is not
    /// recorded again. Returns each one's failure id, in order.
    ///
    /// # Errors
    /// When the database is unreachable, or refuses any of them
    /// ([`StorageError::NotRecorded`]; [`Storage::record_each`] records the
    /// others and says which).
    pub async fn record_failures(&self, failures: &[NewFailure]) -> Result<Vec<i64>, StorageError> {
        let recorded = self.record_each(failures).await?;
        let refused: Vec<&String> = recorded.iter().filter_map(|r| r.as_ref().err()).collect();
        if let Some(first) = refused.first() {
            return Err(StorageError::NotRecorded {
                refused: refused.len(),
                first: (*first).clone(),
            });
        }
        let digests: Vec<&str> = failures.iter().map(|f| f.message_digest.as_str()).collect();
        let ids: HashMap<String, i64> = dispatch!(self.failure_ids(&digests))?;
        ids_by_digest(failures, &ids)
    }

    /// Records failures, each on its own merit: multi-row statements split
    /// below the engine's limits, and a failure the database refuses (for
    /// any reason but an outage) is narrowed down and answered `Err` with
    /// the database's words, while the others are recorded. A message
    /// already recorded (same digest) is not recorded again: it is answered
    /// [`Recorded::AlreadyRecorded`], and only a row written now
    /// [`Recorded::New`] (of several copies in one call, the first). Answers
    /// are in the order of `failures`.
    ///
    /// # Errors
    /// Only [`StorageError::Unavailable`].
    pub async fn record_each(
        &self,
        failures: &[NewFailure],
    ) -> Result<Vec<Result<Recorded, String>>, StorageError> {
        let now = now();
        let (rows, bytes) = match self {
            Self::Postgres(_) => (MAX_BATCH_ROWS, DEFAULT_STATEMENT_BYTES),
            Self::Mysql(s) => (mysql::FAILURE_ROWS, s.statement_bytes()),
        };
        // A row the server could not take even alone (it resets the
        // connection, which reads as an outage) keeps fewer bytes; its whole
        // length is still recorded.
        let fitted: Vec<NewFailure>;
        let failures = if failures.iter().any(|f| f.encoded_len() > bytes) {
            fitted = failures
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    let room = bytes.saturating_sub(f.encoded_len() - f.message.bytes.len());
                    if f.message.bytes.len() > room {
                        tracing::warn!(failure.digest = %f.message_digest, kept_bytes = room, "message larger than the database takes in one statement; keeping its first bytes");
                        f.message.bytes.truncate(room);
                    }
                    f
                })
                .collect();
            &fitted[..]
        } else {
            failures
        };
        let mut out = Vec::with_capacity(failures.len());
        for chunk in chunks(failures, rows, bytes, NewFailure::encoded_len) {
            out.extend(
                narrow(
                    chunk,
                    |part| match self {
                        Self::Postgres(s) => Box::pin(s.insert_failures(part, now)),
                        Self::Mysql(s) => Box::pin(s.insert_failures(part, now)),
                    },
                    |failure, err| {
                        tracing::debug!(failure.digest = %failure.message_digest, error = %err, "failure refused by the database");
                        Err(error::describe(err, "failure record"))
                    },
                )
                .await?,
            );
        }
        first_copy_only(failures, &mut out);
        Ok(out)
    }

    /// One failure.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn get_failure(&self, id: i64) -> Result<Option<Failure>, StorageError> {
        dispatch!(self.get_failure(id))
    }

    /// Failures, newest first, optionally of one status.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list_failures(
        &self,
        status: Option<FailureStatus>,
        page: PageRequest,
    ) -> Result<Page<Failure>, StorageError> {
        dispatch!(self.list_failures(status, page))
    }

    /// The ids of up to `limit` retryable failures of `status`, newest
    /// first: what a bulk retry takes. Poison (non-retryable) rows are left
    /// out by the query itself, so they never take the place of retryable ones.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn retryable_failure_ids(
        &self,
        status: FailureStatus,
        limit: u32,
    ) -> Result<Vec<i64>, StorageError> {
        if status == FailureStatus::Resolved {
            // Resolved by hand: never retried again.
            return Ok(Vec::new());
        }
        dispatch!(self.retryable_failure_ids(status, limit))
    }

    /// Resolves a failure by hand with an operator's note, as the domain
    /// says ([`FailureStatus::resolve_by_hand`]): a `pending` or `failed`
    /// one becomes `resolved` and is never claimed again; a `resolved` one is
    /// answered as it is (its note unchanged); `processing` and `success`
    /// are refused. The change is a conditional update on the status read
    /// (and only ever from `pending` or `failed`), so a failure claimed in
    /// the meantime is not resolved: it is read again and judged again.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn resolve_failure_by_hand(
        &self,
        id: i64,
        note: &ResolutionNote,
    ) -> Result<ResolvedByHand, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(current) = self.get_failure(id).await? else {
                return Ok(ResolvedByHand::NotFound);
            };
            match current.status.resolve_by_hand() {
                ByHand::AlreadyResolved => {
                    return Ok(ResolvedByHand::AlreadyResolved(Box::new(current)));
                }
                ByHand::Refused(why) => return Ok(ResolvedByHand::Refused(Box::new(current), why)),
                // Changed under us each time: retries are running on it.
                ByHand::Resolve if attempt > RESOLVE_ATTEMPTS => {
                    return Ok(ResolvedByHand::Refused(
                        Box::new(current),
                        ResolveRefusal::BeingRetried,
                    ));
                }
                ByHand::Resolve => {}
            }
            let previous = current.status;
            if dispatch!(self.resolve_by_hand(id, previous, note.as_str(), now()))? {
                let failure = self.get_failure(id).await?.ok_or(StorageError::NotFound)?;
                return Ok(ResolvedByHand::Resolved {
                    failure: Box::new(failure),
                    previous,
                });
            }
        }
    }

    /// Claims up to `limit` due, retryable, pending failures (oldest due
    /// first) with `FOR UPDATE SKIP LOCKED`: they become `processing` under a
    /// lease of `lease` length. Concurrent claimers get disjoint sets.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn claim_failures(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<(Failure, Lease)>, StorageError> {
        let now = now();
        let lease = new_lease(now, lease);
        dispatch!(self.claim_failures(limit, lease, now))
    }

    /// Claims one failure by id, due or not (an operator's "retry now").
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn claim_failure(&self, id: i64, lease: Duration) -> Result<ClaimOne, StorageError> {
        let now = now();
        let lease = new_lease(now, lease);
        if dispatch!(self.claim_one(id, lease, now))? {
            let failure = self.get_failure(id).await?.ok_or(StorageError::NotFound)?;
            return Ok(ClaimOne::Claimed(Box::new(failure), lease));
        }
        Ok(match self.get_failure(id).await? {
            None => ClaimOne::NotFound,
            Some(failure) => ClaimOne::Refused(Box::new(failure)),
        })
    }

    /// Resolves a claim: the order exists. False when the lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn mark_failure_succeeded(
        &self,
        id: i64,
        lease: &Lease,
        order_id: Uuid,
    ) -> Result<bool, StorageError> {
        dispatch!(self.resolve(id, lease, Resolution::Succeeded(order_id), now()))
    }

    /// Resolves a claim: retry at `next_retry_at`, one retry more counted.
    /// False when the lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn reschedule_failure(
        &self,
        id: i64,
        lease: &Lease,
        error: &str,
        next_retry_at: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let error = crate::domain::printable_error(error);
        dispatch!(self.resolve(
            id,
            lease,
            Resolution::Reschedule(&error, next_retry_at),
            now()
        ))
    }

    /// Resolves a claim: given up, one retry more counted. False when the
    /// lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn mark_failure_failed(
        &self,
        id: i64,
        lease: &Lease,
        error: &str,
    ) -> Result<bool, StorageError> {
        let error = crate::domain::printable_error(error);
        dispatch!(self.resolve(id, lease, Resolution::GiveUp(&error), now()))
    }

    /// Claims whose lease has lapsed go back to `pending`; returns how many.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn release_expired_leases(&self) -> Result<u64, StorageError> {
        dispatch!(self.release_expired_leases(now()))
    }

    /// Deletes up to `limit` ended (`success`, `failed`, `resolved`)
    /// failures last changed before `cutoff`; returns how many.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn purge_resolved_failures(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        dispatch!(self.purge_resolved_failures(cutoff, limit))
    }

    /// Pending failures (the retry backlog).
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn count_pending_failures(&self) -> Result<i64, StorageError> {
        dispatch!(self.count_pending_failures())
    }
}

/// How a claim ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolution<'a> {
    Succeeded(Uuid),
    Reschedule(&'a str, DateTime<Utc>),
    GiveUp(&'a str),
}

impl<'a> Resolution<'a> {
    /// `(status, error_message to set (None keeps it), retries to add, next_retry_at, order_id)`.
    fn columns(
        self,
        now: DateTime<Utc>,
    ) -> (
        FailureStatus,
        Option<&'a str>,
        i32,
        DateTime<Utc>,
        Option<Uuid>,
    ) {
        match self {
            Self::Succeeded(order_id) => (FailureStatus::Success, None, 0, now, Some(order_id)),
            Self::Reschedule(error, at) => (FailureStatus::Pending, Some(error), 1, at, None),
            Self::GiveUp(error) => (FailureStatus::Failed, Some(error), 1, now, None),
        }
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

/// Each failure's answer from the digests an engine's statement wrote: a
/// written digest is new, any other was recorded before. Copies of a digest
/// all read new here; [`first_copy_only`] keeps the first.
fn recorded_from(
    failures: &[NewFailure],
    written: &std::collections::HashSet<String>,
) -> Vec<Result<Recorded, String>> {
    failures
        .iter()
        .map(|f| {
            Ok(if written.contains(&f.message_digest) {
                Recorded::New
            } else {
                Recorded::AlreadyRecorded
            })
        })
        .collect()
}

/// A digest written by one [`Storage::record_each`] call is new once: its
/// other copies (in a later chunk, or on an engine that cannot tell copies
/// apart within a statement) found it written.
fn first_copy_only(failures: &[NewFailure], answers: &mut [Result<Recorded, String>]) {
    let mut written = std::collections::HashSet::new();
    for (failure, answer) in failures.iter().zip(answers) {
        if *answer == Ok(Recorded::New) && !written.insert(failure.message_digest.as_str()) {
            *answer = Ok(Recorded::AlreadyRecorded);
        }
    }
}

/// Maps each recorded failure to its row id by digest.
fn ids_by_digest(
    failures: &[NewFailure],
    ids: &HashMap<String, i64>,
) -> Result<Vec<i64>, StorageError> {
    failures
        .iter()
        .map(|f| {
            ids.get(&f.message_digest).copied().ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "failure {} not found after insert",
                    f.message_digest
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_the_row_and_the_byte_budget() {
        let items: Vec<usize> = vec![10; 25];
        let parts = chunks(&items, 10, 1000, |n| *n);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let parts = chunks(&items, 100, 35, |n| *n);
        assert!(parts.iter().all(|p| p.iter().sum::<usize>() <= 35));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 25);
        // An item above the budget runs alone; nothing is lost or reordered.
        let items = vec![1, 500, 1, 1];
        let parts = chunks(&items, 100, 10, |n| *n);
        assert_eq!(parts, vec![&[1][..], &[500], &[1, 1]]);
        assert!(chunks::<usize>(&[], 10, 10, |n| *n).is_empty());
    }

    #[test]
    fn mysql_statements_stay_under_the_placeholder_limit() {
        for per_row in [1, 2, 4, 6, 10] {
            assert!(mysql_rows(per_row, 1) * per_row < MYSQL_MAX_PLACEHOLDERS);
        }
        const { assert!(mysql::FAILURE_ROWS * 10 <= MYSQL_MAX_PLACEHOLDERS) };
    }

    #[test]
    fn of_copies_written_by_one_call_only_the_first_is_new() {
        let failure = |bytes: &[u8]| {
            NewFailure::poison(bytes, "not JSON", crate::domain::Source::Kafka, Utc::now())
        };
        let failures = [failure(b"a"), failure(b"b"), failure(b"a"), failure(b"a")];
        // What two chunks answer when "a" is in both (the engine sees the
        // second chunk's copy as written: its row has this call's time).
        let mut answers = vec![
            Ok(Recorded::New),
            Ok(Recorded::New),
            Ok(Recorded::New),
            Err("refused".to_owned()),
        ];
        first_copy_only(&failures, &mut answers);
        assert_eq!(
            answers,
            [
                Ok(Recorded::New),
                Ok(Recorded::New),
                Ok(Recorded::AlreadyRecorded),
                Err("refused".to_owned()),
            ]
        );
    }
}
