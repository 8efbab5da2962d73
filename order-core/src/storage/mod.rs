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
mod mysql;
mod postgres;
mod rows;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use error::ErrorClass;
pub use error::StorageError;

use crate::config::{DatabaseSettings, Driver};
use crate::domain::{
    Failure, FailureStatus, Lease, NewFailure, NewOrder, Order, OrderStatus, TransitionError,
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

/// The result of claiming one failure by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOne {
    /// Claimed: the holder must resolve it with the lease.
    Claimed(Box<Failure>, Lease),
    /// No failure has this id.
    NotFound,
    /// It cannot be claimed now (already succeeded, being processed, or not retryable).
    Refused(Box<Failure>),
}

/// How many times a transaction that hit a deadlock or a serialization
/// failure is tried before the error is returned.
const DEADLOCK_ATTEMPTS: u32 = 20;

/// PostgreSQL or MySQL; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub enum Storage {
    /// PostgreSQL.
    Postgres(postgres::PgStore),
    /// MySQL 8 or MariaDB ≥ 10.6.
    Mysql(mysql::MySqlStore),
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
        Ok(match settings.effective_driver() {
            Driver::Postgres => Self::Postgres(postgres::PgStore::connect(settings)?),
            Driver::Mysql => Self::Mysql(mysql::MySqlStore::connect(settings)?),
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
        dispatch!(self.ping())
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
    /// One transaction for the batch, multi-row statements: idempotency
    /// records are inserted with conflict-ignore, then orders and items for
    /// the purchases that are new. Duplicates inside the batch point at the
    /// same order. A purchase whose own data breaks a database rule is
    /// isolated by splitting the batch and comes back `Failed`; every other
    /// purchase still commits. Outcomes are in the order of `orders`.
    ///
    /// # Errors
    /// Only for the batch as a whole (the database is unreachable, or kept
    /// deadlocking): nothing of it may be acknowledged.
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
        let sorted_outcomes = Box::pin(self.create_isolated(&sorted)).await?;
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

    /// Writes `batch` (unique keys, sorted); on a row-level error splits it in
    /// halves until the bad rows stand alone.
    async fn create_isolated(
        &self,
        batch: &[&NewOrder],
    ) -> Result<Vec<CreateOutcome>, StorageError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self {
                Self::Postgres(s) => s.insert_batch(batch).await,
                Self::Mysql(s) => s.insert_batch(batch).await,
            };
            let err = match result {
                Ok(outcomes) => return Ok(outcomes),
                Err(err) => err,
            };
            match ErrorClass::of(&err) {
                ErrorClass::Row if batch.len() == 1 => {
                    tracing::warn!(order.user_id = batch[0].key().0, order.product_id = batch[0].key().1, error = %err, "purchase refused by the database");
                    return Ok(vec![CreateOutcome::Failed(error::describe(&err))]);
                }
                ErrorClass::Row => {
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let mut outcomes = Box::pin(self.create_isolated(left)).await?;
                    outcomes.extend(Box::pin(self.create_isolated(right)).await?);
                    return Ok(outcomes);
                }
                ErrorClass::Retry if attempt < DEADLOCK_ATTEMPTS => {
                    let pause = Duration::from_millis(fastrand::u64(1..=(4_u64 << attempt.min(6))));
                    tracing::debug!(attempt, error = %err, "deadlock or serialization failure, retrying the batch");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(StorageError::from(err)),
            }
        }
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
        let changed: bool = dispatch!(self.set_status(order_id, current.status, to, now()))?;
        let after = self
            .get_order(order_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        if changed {
            Ok(after)
        } else {
            // Somebody else moved it first: report what it is now.
            Err(StorageError::Transition(TransitionError {
                from: after.status,
                to,
            }))
        }
    }

    /// Counts and amounts of orders created on the UTC days `from..=to`.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn stats(&self, from: NaiveDate, to: NaiveDate) -> Result<OrderStats, StorageError> {
        let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = to.succ_opt().map_or(DateTime::<Utc>::MAX_UTC, |d| {
            d.and_time(chrono::NaiveTime::MIN).and_utc()
        });
        let rows: Vec<(String, i64, Decimal)> = dispatch!(self.stats_rows(start, end))?;
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
    /// `limit` of them (oldest first); returns their ids. Rows locked by
    /// another expirer are skipped, and the update is conditional on the
    /// order still being pending.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StorageError> {
        dispatch!(self.expire_unpaid(cutoff, limit, now()))
    }

    /// Records failures in one statement; a message already recorded (same
    /// digest) is not recorded again. Returns each one's failure id, in order.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn record_failures(&self, failures: &[NewFailure]) -> Result<Vec<i64>, StorageError> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.record_failures(failures, now()))
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
        dispatch!(self.resolve(
            id,
            lease,
            Resolution::Reschedule(error, next_retry_at),
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
        dispatch!(self.resolve(id, lease, Resolution::GiveUp(error), now()))
    }

    /// Claims whose lease has lapsed go back to `pending`; returns how many.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn release_expired_leases(&self) -> Result<u64, StorageError> {
        dispatch!(self.release_expired_leases(now()))
    }

    /// Deletes up to `limit` resolved (`success`, `failed`) failures last
    /// changed before `cutoff`; returns how many.
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
