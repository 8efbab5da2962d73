//! The PostgreSQL engine: `UNNEST` array inserts, `ON CONFLICT DO NOTHING`,
//! `UPDATE … RETURNING` with `FOR UPDATE SKIP LOCKED` sub-selects.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::engine::Engine;
use super::events::write_events_pg;
use super::rows::{
    FAILURE_COLUMNS, FailureRow, ORDER_COLUMNS, OrderRow, into_failures, into_orders, qualified,
};
use super::stats::expiry_delta;
use super::stats::write_rollups;
use super::{Changed, InsertOutcome, Recorded, StorageError, numbered};
use crate::domain::{
    Cause, EventType, Failure, FailureStatus, Lease, NewFailure, NewOrder, OrderEvent, OrderStatus,
    StatsDelta,
};
use crate::settings::{DatabaseSettings, Driver};

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// A PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Write order events with the changes (see [`super::Storage::without_events`]).
    pub(crate) events: bool,
    /// Keep the statistics rollups with the changes (see [`super::Storage::without_rollups`]).
    pub(crate) rollups: bool,
}

impl PgStore {
    pub(crate) fn connect(
        settings: &DatabaseSettings,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Self, StorageError> {
        let options = super::connect_options!(PgConnectOptions, settings, |url| {
            PgConnectOptions::from_str(url)
        });
        // READ COMMITTED whatever the database's default: every statement
        // sees what committed before it (a rollup rebuild counts what
        // committed while it waited for the day's rows; claims and expiry
        // skip locked rows instead of failing to serialize), as on MySQL.
        let mut options = options
            .application_name("order-service")
            .options([("default_transaction_isolation", r"read\ committed")]);
        if let Some(limit) = statement_timeout {
            options =
                options.options([("statement_timeout", limit.as_millis().max(1).to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            events: true,
            rollups: true,
        })
    }

    /// The pool, for tests and tools that need raw SQL.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Engine for PgStore {
    fn failure_budget(&self) -> (usize, usize) {
        (super::MAX_BATCH_ROWS, super::batch::DEFAULT_STATEMENT_BYTES)
    }

    async fn insert_orders(&self, batch: &[&NewOrder]) -> Result<Vec<InsertOutcome>, sqlx::Error> {
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
            let events: Vec<OrderEvent> = if self.events {
                new.iter().map(|o| OrderEvent::created(o, now)).collect()
            } else {
                Vec::new()
            };
            write_events_pg(&mut tx, &events).await?;
            if self.rollups {
                write_rollups!(tx, Driver::Postgres, &StatsDelta::created(now, totals)).await?;
            }
            tx.commit().await?;
            super::events::count_written(&events);
        } else {
            tx.commit().await?;
        }

        batch
            .iter()
            .map(|o| {
                if inserted.contains(&o.order_id) {
                    Ok(InsertOutcome::Created(o.order_id))
                } else {
                    existing
                        .get(&o.key())
                        .map(|id| InsertOutcome::Duplicate(*id))
                        // Only if the conflicting batch rolled back in between: run again.
                        .ok_or(sqlx::Error::RowNotFound)
                }
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
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "WITH due AS MATERIALIZED (SELECT id FROM orders WHERE status = 'pending' AND created_at < $1 \
                                       ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE orders o SET status = 'cancelled', updated_at = $3, version = o.version + 1 FROM due \
             WHERE o.id = due.id AND o.status = 'pending' RETURNING {}",
            qualified(ORDER_COLUMNS, "o")
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let expired = into_orders(rows)?;
        let events: Vec<OrderEvent> = expired
            .iter()
            .filter(|_| self.events)
            .map(|o| OrderEvent::changed(OrderStatus::Pending, o, EventType::Expired, cause))
            .collect();
        write_events_pg(&mut tx, &events).await?;
        if self.rollups {
            write_rollups!(tx, Driver::Postgres, &expiry_delta(&expired)).await?;
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

    /// `RETURNING` names the digests this statement wrote.
    async fn insert_failures(
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
        Ok(super::batch::recorded_from(failures, &written))
    }

    /// The ids of the failures with these digests.
    async fn failure_ids(&self, digests: &[&str]) -> Result<HashMap<String, i64>, StorageError> {
        Ok(sqlx::query_as::<_, (String, i64)>(
            "SELECT message_digest, id FROM order_failures WHERE message_digest = ANY($1)",
        )
        .bind(digests)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect())
    }

    async fn claim_failures(
        &self,
        limit: u32,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Failure, Lease)>, StorageError> {
        let returning = qualified(FAILURE_COLUMNS, "f");
        let rows = sqlx::query_as::<_, FailureRow>(&numbered(&format!(
            "WITH due AS MATERIALIZED (SELECT id FROM order_failures WHERE {} \
                                       ORDER BY next_retry_at, id LIMIT ? FOR UPDATE SKIP LOCKED) \
             UPDATE order_failures f SET status = 'processing', locked_until = ?, lease_token = ?, updated_at = ? \
             FROM due WHERE f.id = due.id RETURNING {returning}",
            FailureStatus::CLAIMABLE_WHEN_DUE
        )))
        .bind(now)
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

    async fn purge_resolved_failures(
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

    async fn purge_published_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "WITH old AS MATERIALIZED (SELECT seq FROM order_events \
                                       WHERE published_at < $1 ORDER BY seq LIMIT $2) \
             DELETE FROM order_events e USING old WHERE e.seq = old.seq",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
