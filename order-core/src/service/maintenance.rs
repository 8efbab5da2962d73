//! Housekeeping: cancelling unpaid orders, purging resolved failures and
//! published events, compacting and rebuilding statistics rollups.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Orders;
use crate::domain::Cause;
use crate::storage::{Storage, StorageError};

/// Pending orders older than `payment_timeout` become cancelled, `batch` per
/// statement until none is left, each with an `order.expired` event; their
/// cache entries are deleted. A zero timeout disables expiry. Returns how
/// many were cancelled.
///
/// # Errors
/// When the database is unreachable (what was cancelled before stays so).
pub async fn expire_unpaid(
    orders: &Orders,
    payment_timeout: Duration,
    batch: u32,
) -> Result<u64, StorageError> {
    if payment_timeout.is_zero() {
        return Ok(0);
    }
    let cutoff =
        Utc::now() - chrono::Duration::from_std(payment_timeout).unwrap_or(chrono::Duration::MAX);
    let reason = format!(
        "not paid within {}",
        humantime::format_duration(payment_timeout)
    );
    orders
        .expire_unpaid(cutoff, batch, Cause::because(reason))
        .await
}

/// Folds the statistics rollups of closed days (before today, UTC) into one
/// row per day and status, `batch` days per look-up until none is left.
/// Returns how many rows were folded. Safe beside writers, and beside
/// another compactor.
///
/// # Errors
/// When the database is unreachable.
pub async fn compact_stats(storage: &Storage, batch: u32) -> Result<u64, StorageError> {
    let today = Utc::now().date_naive();
    let mut folded = 0;
    loop {
        let days = storage.stats_days_to_compact(today, batch).await?;
        for day in &days {
            folded += storage.compact_stats_day(*day).await?;
        }
        if days.len() < batch as usize {
            metrics::counter!("order_stats_rows_compacted_total").increment(folded);
            return Ok(folded);
        }
    }
}

/// Recomputes the statistics rollups of the UTC days `from..=to` from the
/// orders table, one day per transaction, oldest first, calling `done`
/// after each day. Safe while orders are written, and when run twice.
///
/// # Errors
/// When the database is unreachable; the days before stay rebuilt.
pub async fn rebuild_stats(
    storage: &Storage,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    mut done: impl FnMut(&crate::storage::Rebuilt),
) -> Result<Vec<crate::storage::Rebuilt>, StorageError> {
    let mut out = Vec::new();
    for day in from.iter_days().take_while(|d| *d <= to) {
        let rebuilt = storage.rebuild_stats_day(day).await?;
        done(&rebuilt);
        out.push(rebuilt);
    }
    Ok(out)
}

/// Deletes resolved failures last changed more than `retention` ago, `batch`
/// per statement until none is left. Returns how many were deleted.
///
/// # Errors
/// When the database is unreachable.
pub async fn purge_resolved(
    storage: &Storage,
    retention: Duration,
    batch: u32,
) -> Result<u64, StorageError> {
    purge_older_than(retention, batch, "order_failures_purged_total", |cutoff| {
        storage.purge_resolved_failures(cutoff, batch)
    })
    .await
}

/// Deletes order events published more than `retention` ago, `batch` per
/// statement until none is left; unpublished events are never deleted.
/// Returns how many were deleted.
///
/// # Errors
/// When the database is unreachable.
pub async fn purge_published_events(
    storage: &Storage,
    retention: Duration,
    batch: u32,
) -> Result<u64, StorageError> {
    purge_older_than(retention, batch, "order_events_purged_total", |cutoff| {
        storage.purge_published_events(cutoff, batch)
    })
    .await
}

/// Runs `purge` (one statement deleting up to `batch` rows older than its
/// cutoff) until a statement deletes fewer than `batch`, counting the rows
/// in `counter`.
async fn purge_older_than<F, Fut>(
    retention: Duration,
    batch: u32,
    counter: &'static str,
    purge: F,
) -> Result<u64, StorageError>
where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: Future<Output = Result<u64, StorageError>>,
{
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let purged = purge(cutoff).await?;
        total += purged;
        metrics::counter!(counter).increment(purged);
        if purged < u64::from(batch) {
            return Ok(total);
        }
    }
}
