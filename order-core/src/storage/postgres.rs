//! The PostgreSQL engine: `UNNEST` array inserts, `ON CONFLICT DO NOTHING`,
//! `UPDATE … RETURNING` with `FOR UPDATE SKIP LOCKED` sub-selects.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::rows::{
    FAILURE_COLUMNS, FailureRow, ITEM_COLUMNS, ItemRow, ORDER_COLUMNS, OrderRow, into_failures,
    into_orders, qualified,
};
use super::{
    Changed, CreateOutcome, OrderCursor, Page, PageRequest, Recorded, Resolution, StorageError,
};
use crate::config::DatabaseSettings;
use crate::domain::{Failure, FailureStatus, Lease, NewFailure, NewOrder, Order, OrderStatus};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// A PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(crate) fn connect(
        settings: &DatabaseSettings,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Self, StorageError> {
        let options = if settings.url.is_empty() {
            let mut o = PgConnectOptions::new()
                .host(&settings.host)
                .port(settings.port)
                .username(&settings.user)
                .database(&settings.dbname);
            if !settings.password.is_empty() {
                o = o.password(settings.password.expose());
            }
            o
        } else {
            PgConnectOptions::from_str(settings.url.expose())
                .map_err(|e| StorageError::Config(format!("database.url: {e}")))?
        };
        let mut options = options.application_name("order-service");
        if let Some(limit) = statement_timeout {
            options =
                options.options([("statement_timeout", limit.as_millis().max(1).to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for tests and tools that need raw SQL.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    pub(crate) async fn migrate(&self) -> Result<Vec<i64>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        conn.ensure_migrations_table().await?;
        let applied: HashSet<i64> = conn
            .list_applied_migrations()
            .await?
            .iter()
            .map(|m| m.version)
            .collect();
        drop(conn);
        MIGRATOR.run(&self.pool).await?;
        Ok(MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    pub(crate) async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The engine and where it is, for messages.
    pub(crate) fn target(&self) -> String {
        let options = self.pool.connect_options();
        match options.get_socket() {
            Some(socket) => format!("PostgreSQL at {}", socket.display()),
            None => format!(
                "PostgreSQL at {}:{}",
                options.get_host(),
                options.get_port()
            ),
        }
    }

    /// Opens one connection outside the pool (whose timeout hides the
    /// cause) and closes it.
    pub(crate) async fn probe(&self, within: std::time::Duration) -> Result<(), StorageError> {
        let options = self.pool.connect_options();
        super::probe_with(self.target(), within, async move {
            let conn = sqlx::ConnectOptions::connect(&*options).await?;
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        })
        .await
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn insert_batch(
        &self,
        batch: &[&NewOrder],
    ) -> Result<Vec<CreateOutcome>, sqlx::Error> {
        let now = super::now();
        let users: Vec<i64> = batch.iter().map(|o| o.key().0).collect();
        let products: Vec<i64> = batch.iter().map(|o| o.key().1).collect();
        let ids: Vec<Uuid> = batch.iter().map(|o| o.order_id).collect();

        let mut tx = self.pool.begin().await?;
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO idempotency_records (user_id, product_id, order_id, created_at) \
             SELECT u, p, o, $4 FROM UNNEST($1::int8[], $2::int8[], $3::uuid[]) AS t(u, p, o) \
             ON CONFLICT (user_id, product_id) DO NOTHING RETURNING order_id",
        )
        .bind(&users)
        .bind(&products)
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        let mut existing: HashMap<(i64, i64), Uuid> = HashMap::new();
        if inserted.len() < batch.len() {
            let (dup_users, dup_products): (Vec<i64>, Vec<i64>) = batch
                .iter()
                .filter(|o| !inserted.contains(&o.order_id))
                .map(|o| o.key())
                .unzip();
            let rows: Vec<(i64, i64, Uuid)> = sqlx::query_as(
                "SELECT r.user_id, r.product_id, r.order_id FROM idempotency_records r \
                 JOIN UNNEST($1::int8[], $2::int8[]) AS k(u, p) ON r.user_id = k.u AND r.product_id = k.p",
            )
            .bind(&dup_users)
            .bind(&dup_products)
            .fetch_all(&mut *tx)
            .await?;
            existing = rows.into_iter().map(|(u, p, o)| ((u, p), o)).collect();
        }

        let new: Vec<&NewOrder> = batch
            .iter()
            .copied()
            .filter(|o| inserted.contains(&o.order_id))
            .collect();
        if !new.is_empty() {
            let ids: Vec<Uuid> = new.iter().map(|o| o.order_id).collect();
            let users: Vec<i64> = new.iter().map(|o| o.key().0).collect();
            let products: Vec<i64> = new.iter().map(|o| o.key().1).collect();
            let quantities: Vec<i32> = new.iter().map(|o| o.message.quantity.get()).collect();
            let prices: Vec<Decimal> = new
                .iter()
                .map(|o| o.message.unit_price.as_decimal())
                .collect();
            let totals: Vec<Decimal> = new
                .iter()
                .map(|o| o.message.total_amount().as_decimal())
                .collect();
            let seckills: Vec<&str> = new.iter().map(|o| o.message.seckill_id.as_str()).collect();
            let names: Vec<Option<&str>> = new
                .iter()
                .map(|o| o.message.product_name.as_deref())
                .collect();
            sqlx::query(
                "INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at) \
                 SELECT o, u, p, q, up, ta, 'pending', s, $8, $8 \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int4[], $5::numeric[], $6::numeric[], $7::text[]) AS t(o, u, p, q, up, ta, s)",
            )
            .bind(&ids)
            .bind(&users)
            .bind(&products)
            .bind(&quantities)
            .bind(&prices)
            .bind(&totals)
            .bind(&seckills)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_price, total_price) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::numeric[], $6::numeric[])",
            )
            .bind(&ids)
            .bind(&products)
            .bind(&names)
            .bind(&quantities)
            .bind(&prices)
            .bind(&totals)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        batch
            .iter()
            .map(|o| {
                if inserted.contains(&o.order_id) {
                    Ok(CreateOutcome::Created(o.order_id))
                } else {
                    existing
                        .get(&o.key())
                        .map(|id| CreateOutcome::Duplicate(*id))
                        // Only if the conflicting batch rolled back in between: run again.
                        .ok_or(sqlx::Error::RowNotFound)
                }
            })
            .collect()
    }

    pub(crate) async fn get_order(&self, order_id: Uuid) -> Result<Option<Order>, StorageError> {
        let Some(row) = sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let items = sqlx::query_as::<_, ItemRow>(&format!(
            "SELECT {ITEM_COLUMNS} FROM order_items WHERE order_id = $1 ORDER BY id"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        row.into_order(items.into_iter().map(Into::into).collect())
            .map(Some)
    }

    pub(crate) async fn list_user_orders(
        &self,
        user_id: i64,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> Result<Page<Order>, StorageError> {
        let status = status.map(OrderStatus::as_str);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = $1 AND ($2::varchar IS NULL OR status = $2)")
            .bind(user_id)
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::varchar IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(user_id)
        .bind(status)
        .bind(i64::from(page.page_size))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Page {
            items: into_orders(rows)?,
            total,
        })
    }

    pub(crate) async fn list_user_orders_after(
        &self,
        user_id: i64,
        status: Option<OrderStatus>,
        cursor: Option<OrderCursor>,
        limit: u32,
    ) -> Result<Vec<Order>, StorageError> {
        let rows = sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::varchar IS NULL OR status = $2) \
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(user_id)
        .bind(status.map(OrderStatus::as_str))
        .bind(cursor.map(|c| c.created_at))
        .bind(cursor.map_or(0, |c| c.id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        into_orders(rows)
    }

    pub(crate) async fn set_status(
        &self,
        order_id: Uuid,
        version: i32,
        to: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE orders SET status = $3, updated_at = $4, version = version + 1 \
             WHERE order_id = $1 AND version = $2",
        )
        .bind(order_id)
        .bind(version)
        .bind(to.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn stats_rows(
        &self,
        start: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Result<Vec<(String, i64, Decimal)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*), COALESCE(SUM(total_amount), 0) FROM orders \
             WHERE created_at >= $1 AND created_at <= $2 GROUP BY status",
        )
        .bind(start)
        .bind(last)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Changed>, StorageError> {
        let rows: Vec<(Uuid, i32)> = sqlx::query_as(
            "WITH due AS MATERIALIZED (SELECT id FROM orders WHERE status = 'pending' AND created_at < $1 \
                                       ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE orders o SET status = 'cancelled', updated_at = $3, version = o.version + 1 FROM due \
             WHERE o.id = due.id AND o.status = 'pending' RETURNING o.order_id, o.version",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(order_id, version)| Changed { order_id, version })
            .collect())
    }

    /// Inserts failures in one statement, skipping digests already recorded;
    /// says of each whether it wrote its row or found it there (every copy
    /// of a digest written reads so; [`super::Storage::record_each`] keeps
    /// the first).
    pub(crate) async fn insert_failures(
        &self,
        failures: &[NewFailure],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Recorded, String>>, sqlx::Error> {
        let written: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO order_failures (message_data, message_size, message_digest, error_message, status, retryable, source, next_retry_at, created_at, updated_at) \
             SELECT d, z, g, e, s, r, src, n, $9, $9 \
             FROM UNNEST($1::bytea[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::timestamptz[]) AS t(d, z, g, e, s, r, src, n) \
             ON CONFLICT (message_digest) DO NOTHING \
             RETURNING message_digest",
        )
        .bind(failures.iter().map(|f| f.message.bytes.as_slice()).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| i64::try_from(f.message.size).unwrap_or(i64::MAX)).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.message_digest.as_str()).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.error_message.as_str()).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.retryable).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.source.as_str()).collect::<Vec<_>>())
        .bind(failures.iter().map(|f| f.next_retry_at).collect::<Vec<_>>())
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        Ok(super::recorded_from(failures, &written))
    }

    /// The ids of the failures with these digests.
    pub(crate) async fn failure_ids(
        &self,
        digests: &[&str],
    ) -> Result<HashMap<String, i64>, StorageError> {
        Ok(sqlx::query_as::<_, (String, i64)>(
            "SELECT message_digest, id FROM order_failures WHERE message_digest = ANY($1)",
        )
        .bind(digests)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect())
    }

    pub(crate) async fn get_failure(&self, id: i64) -> Result<Option<Failure>, StorageError> {
        sqlx::query_as::<_, FailureRow>(&format!(
            "SELECT {FAILURE_COLUMNS} FROM order_failures WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(Failure::try_from)
        .transpose()
    }

    pub(crate) async fn list_failures(
        &self,
        status: Option<FailureStatus>,
        page: PageRequest,
    ) -> Result<Page<Failure>, StorageError> {
        let status = status.map(FailureStatus::as_str);
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM order_failures WHERE ($1::varchar IS NULL OR status = $1)",
        )
        .bind(status)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query_as::<_, FailureRow>(&format!(
            "SELECT {FAILURE_COLUMNS} FROM order_failures WHERE ($1::varchar IS NULL OR status = $1) \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(status)
        .bind(i64::from(page.page_size))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Page {
            items: into_failures(rows)?,
            total,
        })
    }

    pub(crate) async fn retryable_failure_ids(
        &self,
        status: FailureStatus,
        limit: u32,
    ) -> Result<Vec<i64>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM order_failures WHERE status = $1 AND retryable ORDER BY id DESC LIMIT $2",
        )
        .bind(status.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn claim_failures(
        &self,
        limit: u32,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Failure, Lease)>, StorageError> {
        let returning = qualified(FAILURE_COLUMNS, "f");
        let rows = sqlx::query_as::<_, FailureRow>(&format!(
            "WITH due AS MATERIALIZED (SELECT id FROM order_failures \
                                       WHERE status = 'pending' AND retryable AND next_retry_at <= $4 \
                                       ORDER BY next_retry_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE order_failures f SET status = 'processing', locked_until = $2, lease_token = $3, updated_at = $4 \
             FROM due WHERE f.id = due.id RETURNING {returning}"
        ))
        .bind(i64::from(limit))
        .bind(lease.until)
        .bind(lease.token)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(into_failures(rows)?
            .into_iter()
            .map(|f| (f, lease))
            .collect())
    }

    pub(crate) async fn claim_one(
        &self,
        id: i64,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE order_failures SET status = 'processing', locked_until = $2, lease_token = $3, updated_at = $4 \
             WHERE id = $1 AND retryable \
             AND (status IN ('pending', 'failed') OR (status = 'processing' AND locked_until < $4))",
        )
        .bind(id)
        .bind(lease.until)
        .bind(lease.token)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `expected` → `resolved` with the note, only from `pending` or
    /// `failed` whatever `expected` is. False when the status was no longer
    /// `expected`.
    pub(crate) async fn resolve_by_hand(
        &self,
        id: i64,
        expected: FailureStatus,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE order_failures SET status = 'resolved', resolution_note = $3, \
             locked_until = NULL, lease_token = NULL, updated_at = $4 \
             WHERE id = $1 AND status = $2 AND status IN ('pending', 'failed')",
        )
        .bind(id)
        .bind(expected.as_str())
        .bind(note)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn resolve(
        &self,
        id: i64,
        lease: &Lease,
        resolution: Resolution<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let (status, error, retries, next_retry_at, order_id) = resolution.columns(now);
        let done = sqlx::query(
            "UPDATE order_failures SET status = $3, error_message = COALESCE($4, error_message), \
             retry_count = retry_count + $5, next_retry_at = $6, order_id = COALESCE($7, order_id), \
             locked_until = NULL, lease_token = NULL, updated_at = $8 \
             WHERE id = $1 AND status = 'processing' AND lease_token = $2",
        )
        .bind(id)
        .bind(lease.token)
        .bind(status.as_str())
        .bind(error)
        .bind(retries)
        .bind(next_retry_at)
        .bind(order_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release_expired_leases(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "UPDATE order_failures SET status = 'pending', locked_until = NULL, lease_token = NULL, updated_at = $1 \
             WHERE status = 'processing' AND locked_until < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn purge_resolved_failures(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "WITH old AS MATERIALIZED (SELECT id FROM order_failures \
                                       WHERE status IN ('success', 'failed', 'resolved') AND updated_at < $1 ORDER BY id LIMIT $2) \
             DELETE FROM order_failures f USING old WHERE f.id = old.id",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn count_pending_failures(&self) -> Result<i64, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM order_failures WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
