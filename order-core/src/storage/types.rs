//! What storage answers: the outcomes of batch writes and claims, pages and
//! cursors, statistics.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{Failure, FailureStatus, Lease, Order, ResolveRefusal};

/// What became of one purchase handed to [`super::Storage::create_orders`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new order was committed.
    Created(Uuid),
    /// The (user, product) already had this order; nothing was written.
    Duplicate(Uuid),
    /// This purchase could not be written (its own data broke a database
    /// rule); its neighbours were not affected.
    Failed(String),
}

/// What recording one failure did ([`super::Storage::record_each`]): failures are
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

impl InsertOutcome {
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
    /// Rows matching the filter, on all pages (at most the cap when
    /// `capped`).
    pub total: i64,
    /// True when counting stopped at a cap: more rows match than `total`.
    pub capped: bool,
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
    pub(crate) fn offset(self) -> i64 {
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
    /// The orders created in the range.
    #[serde(flatten)]
    pub figures: super::stats::Figures,
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
pub enum ClaimById {
    /// Claimed: the holder must resolve it with the lease.
    Claimed(Box<Failure>, Lease),
    /// No failure has this id.
    NotFound,
    /// It cannot be claimed now (already succeeded, being processed, not
    /// retryable, or resolved by hand).
    Refused(Box<Failure>),
}

/// The result of resolving one failure by hand
/// ([`super::Storage::resolve_failure_by_hand`]).
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

/// How a claim ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolution<'a> {
    Succeeded(Uuid),
    Reschedule(&'a str, DateTime<Utc>),
    GiveUp(&'a str),
}

impl<'a> Resolution<'a> {
    /// The outcome as the retry history writes it.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::Succeeded(_) => "created",
            Self::Reschedule(..) => "rescheduled",
            Self::GiveUp(_) => "given_up",
        }
    }

    /// `(status, error_message to set (None keeps it), retries to add, next_retry_at, order_id)`.
    pub(crate) fn columns(
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

/// One retry of a failure that ended: its outcome, as the failure's retry
/// history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Attempt {
    /// When it ended.
    #[sqlx(rename = "attempted_at")]
    pub at: DateTime<Utc>,
    /// `created` (the order exists), `rescheduled` or `given_up`.
    pub outcome: String,
    /// Why it failed (`rescheduled`, `given_up`).
    pub reason: Option<String>,
    /// The order (`created`).
    pub order_id: Option<Uuid>,
}

/// Failures whose reasons fall in one group ([`crate::domain::reason_group`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The group.
    pub reason: String,
    /// Failures in it.
    pub count: i64,
}

/// Failures by status, every status present (zero when none).
pub type FailureSummary = std::collections::BTreeMap<FailureStatus, i64>;
