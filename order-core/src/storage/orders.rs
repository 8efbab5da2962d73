//! The orders part of the contract: creating a batch, reading, transitions,
//! statistics and expiry.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::batch::narrow;
use super::engine::Engine;
use super::events::write_events;
use super::rows::{ITEM_COLUMNS, ItemRow, ORDER_COLUMNS, OrderRow, into_orders};
use super::stats::write_rollups;
use super::{
    Changed, InsertOutcome, OrderCursor, Page, PageRequest, Storage, StorageError, dispatch, error,
    now, numbered, on_pool,
};
use crate::domain::{
    Cause, EventType, NewOrder, Order, OrderEvent, OrderStatus, StatsDelta, TransitionError,
};

impl Storage {
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
    ) -> Result<Vec<InsertOutcome>, StorageError> {
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
                Self::Postgres(s) => Box::pin(s.insert_orders(part)),
                Self::Mysql(s) => Box::pin(s.insert_orders(part)),
            },
            |order, err| {
                let (user, product) = order.key();
                tracing::debug!(order.user_id = user, order.product_id = product, error = %err, "purchase refused by the database");
                InsertOutcome::Failed(error::describe(err, "order"))
            },
        )
        .await?;
        let mut unique_outcomes = vec![InsertOutcome::Failed(String::new()); unique.len()];
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
                        InsertOutcome::Created(id) | InsertOutcome::Duplicate(id) => {
                            InsertOutcome::Duplicate(*id)
                        }
                        InsertOutcome::Failed(reason) => InsertOutcome::Failed(format!(
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
        let order = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?");
        let items =
            format!("SELECT {ITEM_COLUMNS} FROM order_items WHERE order_id = ? ORDER BY id");
        let (row, items) = on_pool!(self, |pool, sql| {
            let Some(row) = sqlx::query_as::<_, OrderRow>(&sql(&order))
                .bind(order_id)
                .fetch_optional(pool)
                .await?
            else {
                return Ok(None);
            };
            let items = sqlx::query_as::<_, ItemRow>(&sql(&items))
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            (row, items)
        });
        row.into_order(items.into_iter().map(Into::into).collect())
            .map(Some)
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
        let status = status.map(OrderStatus::as_str);
        let count = "SELECT COUNT(*) FROM orders WHERE user_id = ? AND (? IS NULL OR status = ?)";
        let select = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ? AND (? IS NULL OR status = ?) \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        );
        let (total, rows) = on_pool!(self, |pool, sql| {
            let total: i64 = sqlx::query_scalar(&sql(count))
                .bind(user_id)
                .bind(status)
                .bind(status)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as::<_, OrderRow>(&sql(&select))
                .bind(user_id)
                .bind(status)
                .bind(status)
                .bind(i64::from(page.page_size))
                .bind(page.offset())
                .fetch_all(pool)
                .await?;
            (total, rows)
        });
        Ok(Page {
            items: into_orders(rows)?,
            total,
            capped: false,
        })
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
        let status = status.map(OrderStatus::as_str);
        // The one place the engines part: PostgreSQL seeks its
        // (user_id, created_at, id) index with a row comparison, which
        // MySQL does not use as a range; MySQL reads the same rows from the
        // OR of its parts.
        let after = match (cursor, self) {
            (None, _) => "",
            (Some(_), Storage::Postgres(_)) => "AND (created_at, id) < (?, ?) ",
            (Some(_), Storage::Mysql(_)) => "AND (created_at < ? OR (created_at = ? AND id < ?)) ",
        };
        let select = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ? AND (? IS NULL OR status = ?) \
             {after}ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let rows = match self {
            Storage::Postgres(s) => {
                let select = numbered(&select);
                let mut query = sqlx::query_as::<_, OrderRow>(&select)
                    .bind(user_id)
                    .bind(status)
                    .bind(status);
                if let Some(c) = cursor {
                    query = query.bind(c.created_at).bind(c.id);
                }
                query.bind(i64::from(limit)).fetch_all(s.pool()).await?
            }
            Storage::Mysql(s) => {
                let mut query = sqlx::query_as::<_, OrderRow>(&select)
                    .bind(user_id)
                    .bind(status)
                    .bind(status);
                if let Some(c) = cursor {
                    // DATETIME, as the column (a TIMESTAMP parameter ends in 2038).
                    let at = c.created_at.naive_utc();
                    query = query.bind(at).bind(at).bind(c.id);
                }
                query.bind(i64::from(limit)).fetch_all(s.pool()).await?
            }
        };
        into_orders(rows)
    }

    /// Moves an order to `to` if the status machine allows it from its
    /// current status, as a conditional update: of two concurrent
    /// transitions only one wins, and only the winner writes its event.
    /// Returns the order as it is afterwards.
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
        self.apply_transition(current, to, &Cause::default()).await
    }

    /// Writes `current` → `to` (already allowed by the status machine) if
    /// the order is still at `current.version`, with its event (see
    /// [`EventType::of_transition`]) and `cause` in the same transaction.
    /// Returns the order as it is afterwards, without reading it again.
    ///
    /// # Errors
    /// [`StorageError::Transition`] when another change came first (naming
    /// the status it made), [`StorageError::NotFound`], or unavailability.
    pub async fn apply_transition(
        &self,
        current: Order,
        to: OrderStatus,
        cause: &Cause,
    ) -> Result<Order, StorageError> {
        let at = now();
        let (order_id, version, before) = (current.order_id, current.version, current.status);
        let after = current.moved_to(to, at);
        let event = OrderEvent::changed(before, &after, EventType::of_transition(to), cause);
        let mut delta = StatsDelta::default();
        delta.add_move(&after, before, to);
        let driver = self.driver();
        let update = "UPDATE orders SET status = ?, updated_at = ?, version = version + 1 \
                      WHERE order_id = ? AND version = ?";
        // A deadlock (the order's row against another writer's rollup rows,
        // or MySQL's gap locks) runs the transaction again.
        let changed = on_pool!(self, |pool, sql| {
            super::batch::retrying_deadlocks(|| async {
                let mut tx = pool.begin().await?;
                let changed = sqlx::query(&sql(update))
                    .bind(to.as_str())
                    .bind(at)
                    .bind(order_id)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                // A lost update writes no event: the transaction rolls back.
                if changed {
                    if self.writes_events() {
                        write_events!(tx, std::slice::from_ref(&event), usize::MAX).await?;
                    }
                    if self.keeps_rollups() {
                        write_rollups!(tx, driver, &delta).await?;
                    }
                    tx.commit().await?;
                }
                Ok(changed)
            })
            .await?
        });
        if changed {
            if self.writes_events() {
                super::events::count_written(std::slice::from_ref(&event));
            }
            return Ok(after);
        }
        // Somebody else moved it first: report what it is now.
        let now = self
            .get_order(order_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Err(StorageError::Transition(TransitionError {
            from: now.status,
            to,
        }))
    }

    /// Pending orders created before `cutoff` become cancelled, at most
    /// `limit` of them (oldest first), each with an `order.expired` event
    /// carrying `cause`; returns them with their new versions. Rows locked
    /// by another expirer are skipped, and the update is conditional on the
    /// order still being pending.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
        cause: &Cause,
    ) -> Result<Vec<Changed>, StorageError> {
        dispatch!(self.expire_unpaid(cutoff, limit, now(), cause))
    }
}
