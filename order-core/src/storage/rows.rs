//! Row shapes shared by both engines and their conversion to domain records.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::StorageError;
use crate::domain::{Failure, KeptMessage, Order, OrderItem};

/// The columns of [`OrderRow`], in order.
pub(crate) const ORDER_COLUMNS: &str = "id, order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at, version";

/// The columns of [`ItemRow`], in order.
pub(crate) const ITEM_COLUMNS: &str =
    "id, product_id, product_name, quantity, unit_price, total_price";

/// The columns of [`FailureRow`], in order.
pub(crate) const FAILURE_COLUMNS: &str = "id, message_data, message_size, error_message, retry_count, status, retryable, source, next_retry_at, locked_until, order_id, resolution_note, created_at, updated_at";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: i64,
    order_id: Uuid,
    user_id: i64,
    product_id: i64,
    quantity: i32,
    unit_price: Decimal,
    total_amount: Decimal,
    status: String,
    seckill_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i32,
}

impl OrderRow {
    pub(crate) fn into_order(self, items: Vec<OrderItem>) -> Result<Order, StorageError> {
        Ok(Order {
            id: self.id,
            order_id: self.order_id,
            user_id: self.user_id,
            product_id: self.product_id,
            quantity: self.quantity,
            unit_price: self.unit_price,
            total_amount: self.total_amount,
            status: self
                .status
                .parse()
                .map_err(|e: crate::domain::UnknownStatus| StorageError::Corrupt(e.to_string()))?,
            seckill_id: self.seckill_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            items,
        })
    }
}

pub(crate) fn into_orders(rows: Vec<OrderRow>) -> Result<Vec<Order>, StorageError> {
    rows.into_iter().map(|r| r.into_order(Vec::new())).collect()
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ItemRow {
    id: i64,
    product_id: i64,
    product_name: Option<String>,
    quantity: i32,
    unit_price: Decimal,
    total_price: Decimal,
}

impl From<ItemRow> for OrderItem {
    fn from(r: ItemRow) -> Self {
        OrderItem {
            id: r.id,
            product_id: r.product_id,
            product_name: r.product_name,
            quantity: r.quantity,
            unit_price: r.unit_price,
            total_price: r.total_price,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FailureRow {
    id: i64,
    message_data: Vec<u8>,
    message_size: i64,
    error_message: String,
    retry_count: i32,
    status: String,
    retryable: bool,
    source: String,
    next_retry_at: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
    order_id: Option<Uuid>,
    resolution_note: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<FailureRow> for Failure {
    type Error = StorageError;
    fn try_from(r: FailureRow) -> Result<Self, Self::Error> {
        Ok(Failure {
            id: r.id,
            message: KeptMessage::stored(r.message_data, r.message_size),
            error_message: r.error_message,
            retry_count: r.retry_count,
            status: r.status.parse().map_err(StorageError::Corrupt)?,
            retryable: r.retryable,
            source: r.source.parse().map_err(StorageError::Corrupt)?,
            next_retry_at: r.next_retry_at,
            locked_until: r.locked_until,
            order_id: r.order_id,
            resolution_note: r.resolution_note,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(crate) fn into_failures(rows: Vec<FailureRow>) -> Result<Vec<Failure>, StorageError> {
    rows.into_iter().map(Failure::try_from).collect()
}

/// `columns` with each name prefixed by `alias.`.
pub(crate) fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
