use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{OrderStatus, SeckillMessage};

/// An order as stored, with its items when they were asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Surrogate key; also the tie-breaker of newest-first listings.
    #[serde(skip)]
    pub id: i64,
    /// The public id (UUID v7).
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: i64,
    /// The product.
    pub product_id: i64,
    /// Units bought.
    pub quantity: i32,
    /// Price of one unit (scale 2).
    pub unit_price: Decimal,
    /// `quantity × unit_price` (scale 2).
    pub total_amount: Decimal,
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// The seckill event.
    pub seckill_id: String,
    /// When the order was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
    /// 0 when created, one more with every change.
    #[serde(default)]
    pub version: i32,
    /// The order's lines (one per seckill purchase); empty in listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<OrderItem>,
}

impl Order {
    /// This order as it is after a change to `to` at `now`.
    #[must_use]
    pub fn moved_to(mut self, to: OrderStatus, now: DateTime<Utc>) -> Self {
        self.status = to;
        self.updated_at = now;
        self.version += 1;
        self
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// Surrogate key.
    pub id: i64,
    /// The product.
    pub product_id: i64,
    /// Display name, when the message carried one.
    pub product_name: Option<String>,
    /// Units.
    pub quantity: i32,
    /// Price of one unit.
    pub unit_price: Decimal,
    /// `quantity × unit_price`.
    pub total_price: Decimal,
}

/// An order to insert: a validated message plus the id chosen for it.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The id the order gets if the purchase is new (UUID v7).
    pub order_id: Uuid,
    /// The purchase.
    pub message: SeckillMessage,
    /// The W3C trace context the message came with, if any (stored with
    /// the order's `order.created` event).
    pub traceparent: Option<String>,
}

impl NewOrder {
    /// Gives the purchase a fresh UUID v7.
    #[must_use]
    pub fn new(message: SeckillMessage) -> Self {
        Self {
            order_id: Uuid::now_v7(),
            message,
            traceparent: None,
        }
    }

    /// The same purchase within the trace of `traceparent`, the message's
    /// (see [`super::continue_trace`]; anything but a valid W3C
    /// `traceparent` is dropped).
    #[must_use]
    pub fn in_trace(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.and_then(super::continue_trace);
        self
    }

    /// The idempotency key: one order per (user, product).
    #[must_use]
    pub fn key(&self) -> (i64, i64) {
        (self.message.user_id.get(), self.message.product_id.get())
    }
}
