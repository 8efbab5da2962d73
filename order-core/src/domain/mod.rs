//! Validated value types and domain records.
//!
//! Each value type has a `parse`/`try_from` constructor, so an invalid value
//! cannot exist once it has been built.

mod backoff;
mod event;
mod failure;
mod failure_filter;
mod failure_status;
mod ids;
mod message;
mod money;
mod order;
mod order_status;
mod quantity;
mod seckill_id;
mod stats;

pub use backoff::{Backoff, Jitter, RetryDecision, RetryPolicy};
pub use event::{
    Cause, EVENT_SOURCE, EventType, OrderEvent, OrderFacts, UnknownEventType, continue_trace,
    valid_traceparent,
};
pub use failure::{
    Encoding, Failure, KeptMessage, Lease, NewFailure, ResolutionNote, printable_error,
};
pub use failure_filter::{FailureFilter, REASON_DETAILS, ReasonGroup, SearchText, reason_group};
pub use failure_status::{ByHand, FailureStatus, ResolveRefusal, RetryRefusal, Source};
pub use ids::{ProductId, UserId};
pub use message::{
    MAX_MESSAGE_BYTES, MAX_PRODUCT_NAME_CHARS, MessageError, REQUIRED_FIELDS, SeckillMessage,
};
pub use money::{Money, MoneyError};
pub use order::{NewOrder, Order, OrderItem};
pub use order_status::{OrderStatus, TransitionError, UnknownStatus};
pub use quantity::Quantity;
pub use seckill_id::SeckillId;
pub use stats::{Cell, ROLLUP_SLOTS, StatsDelta, hour_of, random_slot};

/// A field-level validation failure: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's name as it appears on the wire.
    pub field: &'static str,
    /// A human-readable reason.
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
