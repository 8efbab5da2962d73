//! What the two engines do differently, and nothing else: every other
//! statement is written once (see [`super::on_pool!`]).

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use super::{Changed, InsertOutcome, Recorded, StorageError};
use crate::domain::{Cause, Failure, Lease, NewFailure, NewOrder};

/// The statements whose form differs by engine: PostgreSQL sends a batch as
/// arrays (`UNNEST`) and updates with `RETURNING`; MySQL sends multi-row
/// `VALUES` under its placeholder and packet limits, and selects the rows it
/// locked before updating them.
pub(crate) trait Engine {
    /// Rows and bytes of one failure insert statement.
    fn failure_budget(&self) -> (usize, usize);

    /// Writes a batch of new purchases in one transaction: idempotency
    /// records with conflict-ignore, then orders and items for the keys that
    /// were new, and an `order.created` event for each order written. Each purchase is answered `Created` or `Duplicate` (the
    /// order its key already has), in the order of `batch`.
    fn insert_orders(
        &self,
        batch: &[&NewOrder],
    ) -> impl Future<Output = Result<Vec<InsertOutcome>, sqlx::Error>> + Send;

    /// Inserts failures, skipping digests already recorded; says of each
    /// whether it wrote its row (every copy of a digest written reads so;
    /// [`super::Storage::record_each`] keeps the first).
    fn insert_failures(
        &self,
        failures: &[NewFailure],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Result<Recorded, String>>, sqlx::Error>> + Send;

    /// The ids of the failures with these digests.
    fn failure_ids(
        &self,
        digests: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, i64>, StorageError>> + Send;

    /// Claims up to `limit` due, retryable, pending failures, oldest due
    /// first, skipping rows another claimer has locked.
    fn claim_failures(
        &self,
        limit: u32,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(Failure, Lease)>, StorageError>> + Send;

    /// Cancels up to `limit` pending orders created before `cutoff`, oldest
    /// first, skipping rows another expirer has locked, and writes an
    /// `order.expired` event for each, with `cause`, in the same
    /// transaction.
    fn expire_unpaid(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> impl Future<Output = Result<Vec<Changed>, StorageError>> + Send;

    /// Deletes up to `limit` ended failures last changed before `cutoff`.
    fn purge_resolved_failures(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// Deletes up to `limit` events published before `cutoff`.
    fn purge_published_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
}
