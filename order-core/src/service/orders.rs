//! Reading and changing orders: who may, and the cache kept right.
//!
//! Every change of an order goes through [`Orders`], which invalidates the
//! cache after the commit in the same task as the change: the change runs
//! detached from its caller, so a dropped request, a timeout or a failed
//! read afterwards cannot skip the invalidation, and [`Orders::close`]
//! waits for changes in flight at shutdown. A change whose outcome is
//! unknown (the connection was lost around the commit) is invalidated as if
//! it had committed. Reads fill the cache with versioned copies that a
//! later change's tombstone refuses (see [`crate::cache`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::cache::{CachedJson, OrderCache};
use crate::domain::{Cause, Order, OrderStatus, TransitionError};
use crate::storage::{Changed, Storage, StorageError};

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator: every order, every action.
    Operator,
    /// An authenticated end user: their own orders only.
    User(i64),
    /// No end-user identity (`api.auth.mode: none`, local use): every
    /// order, but no operator action.
    Anyone,
    /// The operator's read-only token (`api.readonly_token`): reads what
    /// the operator reads, changes nothing.
    Observer,
}

impl Caller {
    /// The caller's role as the API names it: `operator`, `read_only`,
    /// `user` or `anyone`.
    #[must_use]
    pub fn role(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Observer => "read_only",
            Self::User(_) => "user",
            Self::Anyone => "anyone",
        }
    }

    /// True when this caller may read and cancel orders of `user_id`.
    #[must_use]
    pub fn owns(self, user_id: i64) -> bool {
        match self {
            Self::Operator | Self::Anyone | Self::Observer => true,
            Self::User(me) => me == user_id,
        }
    }

    /// Whether this caller may change anything at all.
    ///
    /// # Errors
    /// [`OrderError::Forbidden`] for the read-only token.
    pub fn may_act(self) -> Result<(), OrderError> {
        if self == Self::Observer {
            Err(OrderError::Forbidden(READ_ONLY.into()))
        } else {
            Ok(())
        }
    }

    /// Why an order changed, as its event says: who changed it.
    #[must_use]
    pub fn reason(self, to: OrderStatus) -> String {
        let who = match self {
            Self::Operator => "an operator",
            Self::User(_) => "the buyer",
            Self::Anyone => "an unauthenticated caller",
            Self::Observer => "a read-only caller",
        };
        match to {
            OrderStatus::Cancelled => format!("cancelled by {who}"),
            other => format!("set to {other} by {who}"),
        }
    }

    /// Operator-only actions.
    ///
    /// # Errors
    /// [`OrderError::Forbidden`] for anyone else.
    pub fn operator(self) -> Result<(), OrderError> {
        self.may_act()?;
        if self == Self::Operator {
            Ok(())
        } else {
            Err(OrderError::Forbidden(
                "this endpoint is for operators only".into(),
            ))
        }
    }

    /// Listing the orders of `user_id`.
    ///
    /// # Errors
    /// [`OrderError::Forbidden`] for another user's list.
    pub fn may_list(self, user_id: i64) -> Result<(), OrderError> {
        if self.owns(user_id) {
            Ok(())
        } else {
            Err(OrderError::Forbidden(format!(
                "the orders of user {user_id} are not yours"
            )))
        }
    }
}

/// What the read-only token is told when it tries to act.
pub const READ_ONLY: &str = "this token is read-only: it may look, not act";

/// Why a read or change of an order did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No such order, or not one the caller may see (the same answer, so
    /// that ids cannot be probed).
    #[error("order {0} not found")]
    NotFound(Uuid),
    /// The caller is known but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The status machine refused, or another change came first.
    #[error(transparent)]
    Transition(TransitionError),
    /// The database.
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for OrderError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Transition(t) => Self::Transition(t),
            other => Self::Storage(other),
        }
    }
}

/// Orders: reads through the cache, and changes that invalidate it.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Orders {
    storage: Storage,
    cache: OrderCache,
    changes: TaskTracker,
}

impl Orders {
    /// Orders in `storage`, cached in `cache`.
    #[must_use]
    pub fn new(storage: Storage, cache: OrderCache) -> Self {
        Self {
            storage,
            cache,
            changes: TaskTracker::new(),
        }
    }

    /// The storage.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The cache.
    #[must_use]
    pub fn cache(&self) -> &OrderCache {
        &self.cache
    }

    /// One order's JSON, with its items: from the cache, else from the
    /// database (and then cached). Another user's order is `NotFound`.
    ///
    /// # Errors
    /// [`OrderError::NotFound`], or the database's error.
    pub async fn get_json(&self, caller: Caller, order_id: Uuid) -> Result<String, OrderError> {
        match self.cache.get_json(order_id).await {
            CachedJson::Hit(hit) if caller.owns(hit.user_id) => return Ok(hit.json),
            CachedJson::Hit(_) | CachedJson::Missing => return Err(OrderError::NotFound(order_id)),
            CachedJson::Unknown => {}
        }
        let read_at = Instant::now();
        let Some(order) = self.storage.get_order(order_id).await? else {
            self.cache.put_missing(order_id).await;
            return Err(OrderError::NotFound(order_id));
        };
        let json = serde_json::to_string(&order)
            .map_err(|e| OrderError::Storage(StorageError::Corrupt(e.to_string())))?;
        self.cache.fill(&order, &json, read_at).await;
        if caller.owns(order.user_id) {
            Ok(json)
        } else {
            Err(OrderError::NotFound(order_id))
        }
    }

    /// One order from the database, if the caller may see it.
    async fn visible(&self, caller: Caller, order_id: Uuid) -> Result<Order, OrderError> {
        match self.storage.get_order(order_id).await? {
            Some(order) if caller.owns(order.user_id) => Ok(order),
            _ => Err(OrderError::NotFound(order_id)),
        }
    }

    /// Moves an order to `to` (operator only), if the status machine allows
    /// it; an order already in `to` is a success that changes nothing, so a
    /// retried request gets the answer of the first. The change's event is
    /// written in the trace `traceparent` (when valid).
    ///
    /// # Errors
    /// [`OrderError::Forbidden`], [`OrderError::NotFound`],
    /// [`OrderError::Transition`] (naming the status it really has), or the
    /// database's error.
    pub async fn set_status(
        &self,
        caller: Caller,
        order_id: Uuid,
        to: OrderStatus,
        traceparent: Option<&str>,
    ) -> Result<Order, OrderError> {
        caller.operator()?;
        self.move_to(caller, order_id, to, traceparent).await
    }

    /// Cancels a pending order of the caller's; cancelling a cancelled
    /// order is a success that changes nothing. The `order.cancelled` event
    /// says who cancelled it, in the trace `traceparent` (when valid).
    ///
    /// # Errors
    /// [`OrderError::NotFound`], [`OrderError::Transition`] for a completed
    /// or failed order, or the database's error.
    pub async fn cancel(
        &self,
        caller: Caller,
        order_id: Uuid,
        traceparent: Option<&str>,
    ) -> Result<Order, OrderError> {
        self.move_to(caller, order_id, OrderStatus::Cancelled, traceparent)
            .await
    }

    /// The one way a caller changes an order: to `to` if the machine allows
    /// it; already there (before, or by someone else in between) is the
    /// outcome asked for, answered with the order as it is.
    async fn move_to(
        &self,
        caller: Caller,
        order_id: Uuid,
        to: OrderStatus,
        traceparent: Option<&str>,
    ) -> Result<Order, OrderError> {
        caller.may_act()?;
        let current = self.visible(caller, order_id).await?;
        if current.status == to {
            return Ok(current);
        }
        current
            .status
            .transition_to(to)
            .map_err(OrderError::Transition)?;
        let cause = Cause::because(caller.reason(to)).in_trace(traceparent);
        match self.transition(current, to, cause).await {
            Err(OrderError::Transition(t)) if t.from == to => self.visible(caller, order_id).await,
            other => other,
        }
    }

    /// Writes a transition the machine allows and invalidates the cache,
    /// detached from the caller (see the module documentation).
    async fn transition(
        &self,
        current: Order,
        to: OrderStatus,
        cause: Cause,
    ) -> Result<Order, OrderError> {
        let (storage, cache) = (self.storage.clone(), self.cache.clone());
        let change = Changed {
            order_id: current.order_id,
            version: current.version + 1,
        };
        let task = self.changes.spawn(async move {
            let result = storage.apply_transition(current, to, &cause).await;
            // Committed, or maybe committed (the answer was lost): either
            // way no copy older than the change may be served.
            if !matches!(
                result,
                Err(StorageError::Transition(_) | StorageError::NotFound)
            ) {
                cache.invalidate(&[change]).await;
            }
            result
        });
        match task.await {
            Ok(result) => result.map_err(OrderError::from),
            Err(e) => Err(OrderError::Storage(StorageError::Corrupt(format!(
                "the change task ended abnormally: {e}"
            )))),
        }
    }

    /// Cancels pending orders created before `cutoff`, `batch` per statement
    /// until none is left, each with an `order.expired` event carrying
    /// `cause`, invalidating each batch's cache entries after its commit.
    /// Returns how many were cancelled.
    ///
    /// # Errors
    /// When the database is unreachable (what was cancelled before stays
    /// so, and was invalidated).
    pub async fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
        cause: Cause,
    ) -> Result<u64, StorageError> {
        let (storage, cache) = (self.storage.clone(), self.cache.clone());
        let task = self.changes.spawn(async move {
            let mut total = 0;
            loop {
                let expired = storage.expire_unpaid(cutoff, batch, &cause).await?;
                cache.invalidate(&expired).await;
                total += expired.len() as u64;
                metrics::counter!("orders_expired_total").increment(expired.len() as u64);
                if expired.len() < batch as usize {
                    return Ok(total);
                }
            }
        });
        task.await.unwrap_or_else(|e| {
            Err(StorageError::Corrupt(format!(
                "the expiry task ended abnormally: {e}"
            )))
        })
    }

    /// Waits, at most `grace`, for changes in flight to commit and
    /// invalidate. True when none is left.
    pub async fn close(&self, grace: Duration) -> bool {
        self.changes.close();
        let done = tokio::time::timeout(grace, self.changes.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                changes = self.changes.len(),
                "order changes still in flight at shutdown"
            );
        }
        done
    }
}
