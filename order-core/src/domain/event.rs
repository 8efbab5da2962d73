//! Order events: what the outbox holds and the relay sends.
//!
//! Every committed change of an order writes one [`OrderEvent`] in the same
//! transaction: what changed (the type, both statuses, the version, the
//! reason, the trace), not the message. What is sent is a CloudEvents 1.0
//! event in structured JSON mode, rendered from those and the order's fixed
//! fields ([`OrderFacts`]) by [`OrderEvent::render`]: the same inputs give
//! the same bytes, so a re-send carries the same bytes and the same `id`
//! (consumers dedupe by it), and the outbox row stays a fraction of the
//! message's size (what a burst's commits write).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use super::{NewOrder, Order, OrderStatus};

/// The CloudEvents `source` of every event this service writes.
pub const EVENT_SOURCE: &str = "/order-service";

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    /// A new order (pending, awaiting payment).
    #[serde(rename = "order.created")]
    Created,
    /// Paid.
    #[serde(rename = "order.completed")]
    Completed,
    /// Cancelled by its buyer or an operator: the unit goes back to stock.
    #[serde(rename = "order.cancelled")]
    Cancelled,
    /// Given up by an operator.
    #[serde(rename = "order.failed")]
    Failed,
    /// Not paid in time and cancelled: the unit goes back to stock.
    #[serde(rename = "order.expired")]
    Expired,
}

/// A name that is not one of the event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type {0:?} (expected order.created, order.completed, order.cancelled, order.failed or order.expired)"
)]
pub struct UnknownEventType(pub String);

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 5] = [
        Self::Created,
        Self::Completed,
        Self::Cancelled,
        Self::Failed,
        Self::Expired,
    ];

    /// The CloudEvents `type`, also the RabbitMQ routing key.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "order.created",
            Self::Completed => "order.completed",
            Self::Cancelled => "order.cancelled",
            Self::Failed => "order.failed",
            Self::Expired => "order.expired",
        }
    }

    /// The event of a change to `to` made by someone (an expiry is
    /// [`EventType::Expired`], written by the expiry itself).
    #[must_use]
    pub fn of_transition(to: OrderStatus) -> Self {
        match to {
            OrderStatus::Pending => Self::Created,
            OrderStatus::Completed => Self::Completed,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Failed => Self::Failed,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Why a change happened and what caused it: the reason carried by
/// cancellations and expiries, and the W3C `traceparent` of the request or
/// message that caused it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    /// Why (cancellations and expiries).
    pub reason: Option<String>,
    /// The trace the change belongs to.
    pub traceparent: Option<String>,
}

impl Cause {
    /// A cause with a reason.
    #[must_use]
    pub fn because(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            traceparent: None,
        }
    }

    /// The same cause within the trace of `traceparent` (see
    /// [`continue_trace`]; anything but a valid W3C `traceparent` is
    /// dropped).
    #[must_use]
    pub fn in_trace(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.and_then(continue_trace);
        self
    }
}

/// `traceparent` if it is a W3C trace context header of version 00
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all
/// zero); `None` otherwise, so no caller can store arbitrary text with an
/// event.
#[must_use]
pub fn valid_traceparent(traceparent: &str) -> Option<&str> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags]
            if *version == "00"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0') =>
        {
            Some(traceparent.trim())
        }
        _ => None,
    }
}

/// The `traceparent` of a span of this service continuing the trace of
/// `incoming` (the request's or message's): the same trace id and flags,
/// a span id of its own, whose parent is the caller's span. `None` when
/// `incoming` is not a valid W3C `traceparent`.
#[must_use]
pub fn continue_trace(incoming: &str) -> Option<String> {
    let valid = valid_traceparent(incoming)?;
    let (trace, flags) = (&valid[3..35], &valid[53..55]);
    let span = loop {
        let id = fastrand::u64(..);
        if id != 0 {
            break id;
        }
    };
    Some(format!("00-{trace}-{span:016x}-{flags}"))
}

/// One event as written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// The CloudEvents `id` (UUID v7), the same in every re-send.
    pub id: Uuid,
    /// The order (the CloudEvents `subject`; the Kafka key).
    pub order_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// When the change was made.
    pub time: DateTime<Utc>,
    /// The trace of the change.
    pub traceparent: Option<String>,
    /// The order's status before the change (`None` when created).
    pub previous_status: Option<OrderStatus>,
    /// Its status after.
    pub status: OrderStatus,
    /// Its version after (0 when created).
    pub version: i32,
    /// Why (cancel and expiry).
    pub reason: Option<String>,
}

/// An order's fields that never change after its creation: the part of an
/// event's `data` its outbox row does not repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    /// The buyer.
    pub user_id: i64,
    /// The product.
    pub product_id: i64,
    /// Units bought.
    pub quantity: i32,
    /// The price of one unit.
    pub unit_price: Decimal,
    /// The order's total.
    pub total_amount: Decimal,
    /// The flash sale.
    pub seckill_id: String,
}

/// The CloudEvents `data` of every order event.
/// Field names as in the order's own JSON.
#[derive(Debug, Clone, Serialize)]
struct EventData<'a> {
    order_id: Uuid,
    user_id: i64,
    product_id: i64,
    quantity: i32,
    unit_price: Decimal,
    total_amount: Decimal,
    seckill_id: &'a str,
    previous_status: Option<OrderStatus>,
    status: OrderStatus,
    /// The order's version after the change (0 when created).
    version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// A CloudEvents 1.0 envelope, structured mode.
#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'static str,
    #[serde(rename = "type")]
    event_type: EventType,
    subject: String,
    time: String,
    datacontenttype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    data: EventData<'a>,
}

impl OrderEvent {
    /// `order.created` for a purchase written at `at`, in the trace the
    /// purchase came with.
    #[must_use]
    pub fn created(order: &NewOrder, at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            order_id: order.order_id,
            event_type: EventType::Created,
            time: at,
            traceparent: order.traceparent.clone(),
            previous_status: None,
            status: OrderStatus::Pending,
            version: 0,
            reason: None,
        }
    }

    /// The event of `before` changing to `after` (the same order, one
    /// version on), as `event_type`.
    #[must_use]
    pub fn changed(
        before: OrderStatus,
        after: &Order,
        event_type: EventType,
        cause: &Cause,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            order_id: after.order_id,
            event_type,
            time: after.updated_at,
            traceparent: cause.traceparent.clone(),
            previous_status: Some(before),
            status: after.status,
            version: after.version,
            reason: cause.reason.clone(),
        }
    }

    /// The CloudEvent sent for this event of the order whose fixed fields
    /// are `facts`: structured JSON, `time` to the microsecond (as stored),
    /// the same bytes at every call.
    #[must_use]
    pub fn render(&self, facts: &OrderFacts) -> String {
        let envelope = Envelope {
            specversion: "1.0",
            id: self.id,
            source: EVENT_SOURCE,
            event_type: self.event_type,
            subject: self.order_id.to_string(),
            time: self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            datacontenttype: "application/json",
            traceparent: self.traceparent.as_deref(),
            data: EventData {
                order_id: self.order_id,
                user_id: facts.user_id,
                product_id: facts.product_id,
                quantity: facts.quantity,
                unit_price: facts.unit_price,
                total_amount: facts.total_amount,
                seckill_id: &facts.seckill_id,
                previous_status: self.previous_status,
                status: self.status,
                version: self.version,
                reason: self.reason.as_deref(),
            },
        };
        serde_json::to_string(&envelope).expect("an event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SeckillMessage;

    /// The fixed fields of `order`.
    fn facts_of(order: &Order) -> OrderFacts {
        OrderFacts {
            user_id: order.user_id,
            product_id: order.product_id,
            quantity: order.quantity,
            unit_price: order.unit_price,
            total_amount: order.total_amount,
            seckill_id: order.seckill_id.clone(),
        }
    }

    /// The fixed fields of the order `order` creates.
    fn facts_of_new(order: &NewOrder) -> OrderFacts {
        let m = &order.message;
        OrderFacts {
            user_id: m.user_id.get(),
            product_id: m.product_id.get(),
            quantity: m.quantity.get(),
            unit_price: m.unit_price.as_decimal(),
            total_amount: m.total_amount().as_decimal(),
            seckill_id: m.seckill_id.as_str().to_owned(),
        }
    }

    fn new_order() -> NewOrder {
        NewOrder::new(
            SeckillMessage::parse(
                br#"{"user_id":7,"product_id":9,"quantity":2,"unit_price":19.99,"seckill_id":"s-1","timestamp":"2026-11-28T10:00:00Z"}"#,
            )
            .unwrap(),
        )
    }

    #[test]
    fn created_is_a_structured_cloudevent() {
        let order = new_order();
        let at = Utc::now();
        let event = OrderEvent::created(&order, at);
        let body = event.render(&facts_of_new(&order));
        assert_eq!(body, event.render(&facts_of_new(&order)), "the same bytes");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], event.id.to_string());
        assert_eq!(event.id.get_version_num(), 7);
        assert_eq!(json["source"], EVENT_SOURCE);
        assert_eq!(json["type"], "order.created");
        assert_eq!(json["subject"], order.order_id.to_string());
        assert_eq!(json["datacontenttype"], "application/json");
        assert!(json.get("traceparent").is_none());
        let data = &json["data"];
        assert_eq!(data["order_id"], order.order_id.to_string());
        assert_eq!(data["user_id"], 7);
        assert_eq!(data["product_id"], 9);
        assert_eq!(data["quantity"], 2);
        assert_eq!(data["unit_price"], "19.99");
        assert_eq!(data["total_amount"], "39.98");
        assert_eq!(data["seckill_id"], "s-1");
        assert_eq!(data["previous_status"], serde_json::Value::Null);
        assert_eq!(data["status"], "pending");
        assert!(data.get("reason").is_none());
        let time = DateTime::parse_from_rfc3339(json["time"].as_str().unwrap()).unwrap();
        assert_eq!(time.timestamp_micros(), at.timestamp_micros());
    }

    #[test]
    fn a_change_carries_both_statuses_the_reason_and_the_trace() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut order = Order {
            id: 1,
            order_id: Uuid::now_v7(),
            user_id: 7,
            product_id: 9,
            quantity: 1,
            unit_price: Decimal::new(500, 2),
            total_amount: Decimal::new(500, 2),
            status: OrderStatus::Pending,
            seckill_id: "s-1".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 0,
            items: Vec::new(),
        };
        order = order.moved_to(OrderStatus::Cancelled, Utc::now());
        let cause = Cause::because("not paid within 30m").in_trace(Some(trace));
        let event = OrderEvent::changed(OrderStatus::Pending, &order, EventType::Expired, &cause);
        let json: serde_json::Value =
            serde_json::from_str(&event.render(&facts_of(&order))).unwrap();
        assert_eq!(json["type"], "order.expired");
        let ours = event.traceparent.clone().unwrap();
        assert_eq!(json["traceparent"], ours);
        assert_eq!(ours[..36], trace[..36], "the same trace");
        assert_ne!(ours, trace, "a span of its own");
        assert_eq!(json["data"]["previous_status"], "pending");
        assert_eq!(json["data"]["status"], "cancelled");
        assert_eq!(json["data"]["version"], 1);
        assert_eq!(json["data"]["reason"], "not paid within 30m");
        assert_eq!(json["data"]["unit_price"], "5.00");
    }

    #[test]
    fn a_continued_trace_keeps_the_trace_id_and_flags_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let a = continue_trace(incoming).unwrap();
        let b = continue_trace(incoming).unwrap();
        for ours in [&a, &b] {
            assert_eq!(valid_traceparent(ours), Some(ours.as_str()));
            assert!(ours.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(ours.ends_with("-01"));
            assert_ne!(&ours[36..52], "00f067aa0ba902b7");
        }
        assert_ne!(a, b, "each change is a span of its own");
        assert_eq!(
            continue_trace(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ").unwrap()
                [53..],
            *"00"
        );
        assert_eq!(continue_trace("garbage"), None);
    }

    #[test]
    fn only_a_well_formed_traceparent_is_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(valid_traceparent(good), Some(good));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "<script>",
        ] {
            assert_eq!(valid_traceparent(bad), None, "{bad:?}");
            assert_eq!(Cause::default().in_trace(Some(bad)).traceparent, None);
        }
    }

    #[test]
    fn event_types_read_back_from_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!("order.paid".parse::<EventType>().is_err());
    }
}
