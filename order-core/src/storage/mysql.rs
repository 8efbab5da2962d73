//! The MySQL / MariaDB engine: multi-row `VALUES`, `ON DUPLICATE KEY UPDATE`
//! as conflict-ignore, `SELECT … FOR UPDATE SKIP LOCKED` then `UPDATE` in one
//! transaction (no `RETURNING` on MySQL 8).
//!
//! Sessions run `READ COMMITTED` (a statement sees rows committed before it,
//! as on PostgreSQL) with strict SQL mode (an out-of-range value is an error,
//! never a silent truncation).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, QueryBuilder};
use uuid::Uuid;

use super::engine::Engine;
use super::events::write_events;
use super::rows::{
    FAILURE_COLUMNS, FailureRow, ORDER_COLUMNS, OrderRow, into_failures, into_orders,
};
use super::stats::expiry_delta;
use super::stats::write_rollups;
use super::{Changed, InsertOutcome, Recorded, StorageError};
use crate::domain::{
    Cause, EventType, Failure, FailureStatus, Lease, NewFailure, NewOrder, OrderEvent, OrderStatus,
    StatsDelta,
};
use crate::settings::{DatabaseSettings, Driver};

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/mysql");

/// A MySQL / MariaDB pool.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    /// The byte budget of one statement: half the smallest
    /// `max_allowed_packet` any connection has read (0 until one has).
    statement_bytes: Arc<AtomicUsize>,
    /// Write order events with the changes (see [`super::Storage::without_events`]).
    pub(crate) events: bool,
    /// Keep the statistics rollups with the changes (see [`super::Storage::without_rollups`]).
    pub(crate) rollups: bool,
}

/// Rows of one failure INSERT (10 placeholders a row).
pub(crate) const FAILURE_ROWS: usize = super::batch::MYSQL_MAX_PLACEHOLDERS / 10;

/// Keys looked up in one `OR` list: MySQL's range optimizer gives up on
/// longer ones (a full scan), MariaDB turns them into a derived table.
const KEY_LOOKUP_ROWS: usize = 1000;

/// The statement budget until a connection has read the server's limit:
/// half of the smallest `max_allowed_packet` a supported server ships with.
const INITIAL_STATEMENT_BYTES: usize = 2 * 1024 * 1024;

/// About how many bytes one order row takes in a statement.
fn order_len(o: &&NewOrder) -> usize {
    o.message.seckill_id.as_str().len()
        + o.message.product_name.as_ref().map_or(0, String::len)
        + 160
}

/// About how many bytes one key takes in a statement.
fn key_len<T>(_: &T) -> usize {
    32
}

/// Appends `(user_id = ? AND product_id = ?) OR …` for each key.
///
/// An OR of equalities rather than a row-constructor `IN` list, which MariaDB
/// rewrites into a derived table once it is long.
fn push_keys(qb: &mut QueryBuilder<'_, MySql>, keys: impl IntoIterator<Item = (i64, i64)>) {
    for (i, (user, product)) in keys.into_iter().enumerate() {
        qb.push(if i == 0 {
            "(user_id = "
        } else {
            " OR (user_id = "
        });
        qb.push_bind(user)
            .push(" AND product_id = ")
            .push_bind(product)
            .push(")");
    }
}

/// Appends `a, b, c…` binding each value.
fn push_list<'a, T>(qb: &mut QueryBuilder<'a, MySql>, values: impl IntoIterator<Item = T>)
where
    T: 'a + sqlx::Encode<'a, MySql> + sqlx::Type<MySql> + Send,
{
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
}

/// Limits every statement of this session: MariaDB's `max_statement_time`
/// (seconds, any statement) or MySQL's `max_execution_time` (ms, reads).
async fn set_statement_timeout(
    conn: &mut sqlx::MySqlConnection,
    limit: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut *conn)
        .await?;
    if version.contains("MariaDB") {
        sqlx::query("SET SESSION max_statement_time = ?")
            .bind(limit.as_secs_f64().max(0.001))
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("SET SESSION max_execution_time = ?")
            .bind(u64::try_from(limit.as_millis().max(1)).unwrap_or(u64::MAX))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl MySqlStore {
    pub(crate) fn connect(
        settings: &DatabaseSettings,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Self, StorageError> {
        let options = super::connect_options!(MySqlConnectOptions, settings, |url| {
            let url = url
                .strip_prefix("mariadb://")
                .map_or_else(|| url.to_owned(), |rest| format!("mysql://{rest}"));
            MySqlConnectOptions::from_str(&url)
        });
        let options = options.charset("utf8mb4").timezone(Some("+00:00".into()));
        let statement_bytes = Arc::new(AtomicUsize::new(0));
        let budget = statement_bytes.clone();
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let budget = budget.clone();
                Box::pin(async move {
                    conn.execute(
                        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                         SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO')",
                    )
                    .await?;
                    if let Some(limit) = statement_timeout {
                        set_statement_timeout(&mut *conn, limit).await?;
                    }
                    let packet: u64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS UNSIGNED)")
                        .fetch_one(&mut *conn)
                        .await?;
                    let half = usize::try_from(packet / 2)
                        .unwrap_or(usize::MAX)
                        .clamp(16 * 1024, 64 * 1024 * 1024);
                    // The smallest seen: a connection opened before the
                    // server's limit was lowered keeps the old one.
                    let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                        Some(if now == 0 { half } else { now.min(half) })
                    });
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            statement_bytes,
            events: true,
            rollups: true,
        })
    }

    /// The byte budget of one statement (half the server's `max_allowed_packet`).
    pub(crate) fn statement_bytes(&self) -> usize {
        match self.statement_bytes.load(Ordering::Relaxed) {
            0 => INITIAL_STATEMENT_BYTES,
            known => known,
        }
    }

    /// The pool, for tests and tools that need raw SQL.
    #[must_use]
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The owners of those `keys` that already have an order, by a plain
    /// (non-locking) read; `lock` makes it a locking read inside `tx`. Long
    /// key lists are looked up in parts.
    async fn owners(
        conn: &mut sqlx::MySqlConnection,
        keys: &[(i64, i64)],
        lock: bool,
    ) -> Result<HashMap<(i64, i64), Uuid>, sqlx::Error> {
        let mut owners = HashMap::with_capacity(keys.len());
        for part in keys.chunks(KEY_LOOKUP_ROWS) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT user_id, product_id, order_id FROM idempotency_records WHERE ",
            );
            push_keys(&mut qb, part.iter().copied());
            if lock {
                qb.push(" FOR UPDATE");
            }
            owners.extend(
                qb.build_query_as::<(i64, i64, Uuid)>()
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(|(u, p, o)| ((u, p), o)),
            );
        }
        Ok(owners)
    }
}

impl Engine for MySqlStore {
    fn failure_budget(&self) -> (usize, usize) {
        (FAILURE_ROWS, self.statement_bytes())
    }

    async fn insert_orders(&self, batch: &[&NewOrder]) -> Result<Vec<InsertOutcome>, sqlx::Error> {
        let now = super::now();
        let budget = self.statement_bytes();
        // Purchases that already have an order are answered without taking a
        // lock: InnoDB's duplicate checks take gap locks, and under a storm of
        // duplicates those make concurrent batches deadlock.
        let mut conn = self.pool.acquire().await?;
        let keys: Vec<(i64, i64)> = batch.iter().map(|o| o.key()).collect();
        let mut owners = Self::owners(&mut conn, &keys, false).await?;
        let fresh: Vec<&NewOrder> = batch
            .iter()
            .copied()
            .filter(|o| !owners.contains_key(&o.key()))
            .collect();

        if !fresh.is_empty() {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            for part in
                super::batch::chunks(&fresh, super::batch::mysql_rows(4, 0), budget, key_len)
            {
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO idempotency_records (user_id, product_id, order_id, created_at) ",
                );
                qb.push_values(part, |mut row, o| {
                    row.push_bind(o.key().0)
                        .push_bind(o.key().1)
                        .push_bind(o.order_id)
                        .push_bind(now);
                });
                qb.push(" ON DUPLICATE KEY UPDATE id = id");
                qb.build().execute(&mut *tx).await?;
            }
            // A locking read: it returns the latest committed row of a key that
            // a concurrent batch inserted (the upsert already holds these locks).
            let fresh_keys: Vec<(i64, i64)> = fresh.iter().map(|o| o.key()).collect();
            let fresh_owners = Self::owners(&mut tx, &fresh_keys, true).await?;

            let new: Vec<&NewOrder> = fresh
                .iter()
                .copied()
                .filter(|o| fresh_owners.get(&o.key()) == Some(&o.order_id))
                .collect();
            for part in
                super::batch::chunks(&new, super::batch::mysql_rows(10, 0), budget, order_len)
            {
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at) ",
                );
                qb.push_values(part, |mut row, o| {
                    row.push_bind(o.order_id)
                        .push_bind(o.key().0)
                        .push_bind(o.key().1)
                        .push_bind(o.message.quantity.get())
                        .push_bind(o.message.unit_price.as_decimal())
                        .push_bind(o.message.total_amount().as_decimal())
                        .push_bind(OrderStatus::Pending.as_str())
                        .push_bind(o.message.seckill_id.as_str())
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            for part in
                super::batch::chunks(&new, super::batch::mysql_rows(6, 0), budget, order_len)
            {
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_price, total_price) ",
                );
                qb.push_values(part, |mut row, o| {
                    row.push_bind(o.order_id)
                        .push_bind(o.key().1)
                        .push_bind(o.message.product_name.as_deref())
                        .push_bind(o.message.quantity.get())
                        .push_bind(o.message.unit_price.as_decimal())
                        .push_bind(o.message.total_amount().as_decimal());
                });
                qb.build().execute(&mut *tx).await?;
            }
            let events: Vec<OrderEvent> = if self.events {
                new.iter().map(|o| OrderEvent::created(o, now)).collect()
            } else {
                Vec::new()
            };
            write_events!(tx, &events, budget).await?;
            if self.rollups {
                let delta = StatsDelta::created(
                    now,
                    new.iter().map(|o| o.message.total_amount().as_decimal()),
                );
                write_rollups!(tx, Driver::Mysql, &delta).await?;
            }
            tx.commit().await?;
            super::events::count_written(&events);
            owners.extend(fresh_owners);
        }

        batch
            .iter()
            .map(|o| match owners.get(&o.key()) {
                Some(id) if *id == o.order_id => Ok(InsertOutcome::Created(o.order_id)),
                Some(id) => Ok(InsertOutcome::Duplicate(*id)),
                // The upsert waited on a concurrent batch that then rolled back
                // (a deadlock victim): run this batch again.
                None => Err(sqlx::Error::RowNotFound),
            })
            .collect()
    }

    async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<Changed>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'pending' AND created_at < ? \
             ORDER BY created_at LIMIT ? FOR UPDATE SKIP LOCKED"
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let due = into_orders(due)?;
        for part in due.chunks(super::batch::mysql_rows(1, 1)) {
            let mut qb = QueryBuilder::<MySql>::new(
                "UPDATE orders SET status = 'cancelled', version = version + 1, updated_at = ",
            );
            qb.push_bind(now)
                .push(" WHERE status = 'pending' AND id IN (");
            push_list(&mut qb, part.iter().map(|o| o.id));
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        // The rows are locked and pending: each moved exactly once.
        let expired: Vec<_> = due
            .into_iter()
            .map(|o| o.moved_to(OrderStatus::Cancelled, now))
            .collect();
        let events: Vec<OrderEvent> = expired
            .iter()
            .filter(|_| self.events)
            .map(|o| OrderEvent::changed(OrderStatus::Pending, o, EventType::Expired, cause))
            .collect();
        write_events!(tx, &events, self.statement_bytes()).await?;
        if self.rollups {
            write_rollups!(tx, Driver::Mysql, &expiry_delta(&expired)).await?;
        }
        tx.commit().await?;
        super::events::count_written(&events);
        Ok(expired
            .into_iter()
            .map(|o| Changed {
                order_id: o.order_id,
                version: o.version,
            })
            .collect())
    }

    /// MySQL returns no rows from an INSERT, and its affected-row count
    /// cannot tell (sqlx sets `CLIENT_FOUND_ROWS`, so a row found counts as
    /// one written): the rows are looked up after, and those created at
    /// `now` — this call's own time, to the microsecond — are the ones it
    /// wrote (every copy of a digest reads so; [`super::Storage::record_each`]
    /// keeps the first).
    async fn insert_failures(
        &self,
        failures: &[NewFailure],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Recorded, String>>, sqlx::Error> {
        let mut qb = QueryBuilder::<MySql>::new(
            "INSERT INTO order_failures (message_data, message_size, message_digest, error_message, status, retryable, source, next_retry_at, created_at, updated_at) ",
        );
        qb.push_values(failures, |mut row, f| {
            row.push_bind(f.message.bytes.as_slice())
                .push_bind(i64::try_from(f.message.size).unwrap_or(i64::MAX))
                .push_bind(f.message_digest.as_str())
                .push_bind(f.error_message.as_str())
                .push_bind(f.status.as_str())
                .push_bind(f.retryable)
                .push_bind(f.source.as_str())
                .push_bind(f.next_retry_at)
                .push_bind(now)
                .push_bind(now);
        });
        qb.push(" ON DUPLICATE KEY UPDATE id = id");
        qb.build().execute(&self.pool).await?;
        let digests: Vec<&str> = failures
            .iter()
            .map(|f| f.message_digest.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut written = HashSet::with_capacity(digests.len());
        for part in digests.chunks(KEY_LOOKUP_ROWS) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT message_digest, created_at FROM order_failures WHERE message_digest IN (",
            );
            push_list(&mut qb, part.iter().copied());
            qb.push(")");
            written.extend(
                qb.build_query_as::<(String, DateTime<Utc>)>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .filter(|(_, created_at)| *created_at == now)
                    .map(|(digest, _)| digest),
            );
        }
        Ok(super::batch::recorded_from(failures, &written))
    }

    /// The ids of the failures with these digests.
    async fn failure_ids(&self, digests: &[&str]) -> Result<HashMap<String, i64>, StorageError> {
        let mut ids = HashMap::with_capacity(digests.len());
        for part in digests.chunks(KEY_LOOKUP_ROWS) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT message_digest, id FROM order_failures WHERE message_digest IN (",
            );
            push_list(&mut qb, part.iter().copied());
            qb.push(")");
            ids.extend(
                qb.build_query_as::<(String, i64)>()
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(ids)
    }

    async fn claim_failures(
        &self,
        limit: u32,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Failure, Lease)>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM order_failures WHERE {} \
             ORDER BY next_retry_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
            FailureStatus::CLAIMABLE_WHEN_DUE
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(ids.len());
        for part in ids.chunks(KEY_LOOKUP_ROWS) {
            let mut qb = QueryBuilder::<MySql>::new(
                "UPDATE order_failures SET status = 'processing', locked_until = ",
            );
            qb.push_bind(lease.until)
                .push(", lease_token = ")
                .push_bind(lease.token)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE id IN (");
            push_list(&mut qb, part.iter().copied());
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
            let mut qb = QueryBuilder::<MySql>::new(format!(
                "SELECT {FAILURE_COLUMNS} FROM order_failures WHERE id IN ("
            ));
            push_list(&mut qb, part.iter().copied());
            qb.push(")");
            rows.extend(
                qb.build_query_as::<FailureRow>()
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        tx.commit().await?;
        Ok(into_failures(rows)?
            .into_iter()
            .map(|f| (f, lease))
            .collect())
    }

    async fn purge_resolved_failures(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM order_failures WHERE status IN ('success', 'failed', 'resolved') AND updated_at < ? ORDER BY id LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_published_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM order_events WHERE published_at < ? ORDER BY published_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
