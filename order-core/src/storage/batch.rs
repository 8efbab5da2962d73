//! Batches: how a batch is cut below each engine's limits, and how a write
//! that the database refuses is narrowed down to the rows that cause it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::error::ErrorClass;
use super::{Recorded, StorageError};
use crate::domain::{Backoff, NewFailure};

/// How many times a transaction that hit a deadlock or a serialization
/// failure is tried before the batch is narrowed.
const DEADLOCK_ATTEMPTS: u32 = 20;

/// How long a part of a batch is tried again for deadlocks and lock waits
/// before it is narrowed (a lock wait alone can take 50 s on MySQL): a batch
/// never holds its source for long without progress.
const DEADLOCK_RETRY_FOR: Duration = Duration::from_secs(10);

/// The most rows one batch call takes ([`super::Storage::create_orders`],
/// [`super::Storage::record_each`], a claim, an expiry run): the upper bound of
/// `worker.batch_size` and `compensator.batch_size`. Statements are split
/// below it as each engine needs; this bounds memory and transaction size.
pub const MAX_BATCH_ROWS: usize = 10_000;

/// The most placeholders MySQL and MariaDB take in one prepared statement.
pub(crate) const MYSQL_MAX_PLACEHOLDERS: usize = 65_535;

/// The statement size aimed at when no server limit is known (PostgreSQL
/// array parameters), in bytes.
pub(crate) const DEFAULT_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// Splits `items` into runs of at most `max_rows` items whose `size`s add
/// up to at most `max_bytes`; an item larger than `max_bytes` runs alone.
pub(crate) fn chunks<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0_usize);
    for (i, item) in items.iter().enumerate() {
        let len = size(item);
        if i > start && (i - start == max_rows || bytes.saturating_add(len) > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(len);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Rows of `per_row` placeholders that fit one MySQL statement, leaving
/// `extra` placeholders for the rest of it.
pub(crate) fn mysql_rows(per_row: usize, extra: usize) -> usize {
    (MYSQL_MAX_PLACEHOLDERS - extra) / per_row
}

/// The future of one write of part of a batch.
pub(crate) type WriteFuture<'a, O> =
    Pin<Box<dyn Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'a>>;

/// Writes `batch` with `write`; when that fails for any reason but an
/// outage, splits it in halves until the rows that cause the error stand
/// alone, and answers those with `refused`. A deadlock is run again first.
/// Outcomes are in the order of `batch`.
///
/// # Errors
/// Only [`StorageError::Unavailable`]: the database is out of reach.
pub(crate) async fn narrow<'a, T: Sync, O: Send>(
    batch: &'a [T],
    write: impl Fn(&'a [T]) -> WriteFuture<'a, O>,
    refused: impl Fn(&T, &sqlx::Error) -> O,
) -> Result<Vec<O>, StorageError> {
    let mut out = Vec::with_capacity(batch.len());
    // A stack of parts still to write, the leftmost on top.
    let mut todo = vec![batch];
    while let Some(part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        let err = match retrying_deadlocks(|| write(part)).await {
            Ok(outcomes) => {
                out.extend(outcomes);
                continue;
            }
            Err(err) => err,
        };
        match ErrorClass::of(&err) {
            ErrorClass::Unavailable => return Err(StorageError::from(err)),
            _ if part.len() == 1 => {
                tracing::debug!(error = %err, "one row refused by the database");
                out.push(refused(&part[0], &err));
            }
            _ => {
                tracing::debug!(rows = part.len(), error = %err, "batch refused by the database, narrowing it");
                let (left, right) = part.split_at(part.len() / 2);
                todo.push(right);
                todo.push(left);
            }
        }
    }
    Ok(out)
}

/// Runs `transaction` (one whole transaction) until it ends in anything
/// but a deadlock or a serialization failure, up to [`DEADLOCK_ATTEMPTS`]
/// times within [`DEADLOCK_RETRY_FOR`], pausing as [`Backoff::deadlock`]
/// says; answers its last outcome.
pub(crate) async fn retrying_deadlocks<T, F, Fut>(mut transaction: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let (mut attempt, started) = (0, std::time::Instant::now());
    loop {
        attempt += 1;
        match transaction().await {
            Err(err)
                if ErrorClass::of(&err) == ErrorClass::Retry
                    && attempt < DEADLOCK_ATTEMPTS
                    && started.elapsed() < DEADLOCK_RETRY_FOR =>
            {
                tracing::debug!(attempt, error = %err, "deadlock or serialization failure, running the transaction again");
                tokio::time::sleep(Backoff::deadlock().delay(attempt)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Each failure's answer from the digests an engine's statement wrote: a
/// written digest is new, any other was recorded before. Copies of a digest
/// all read new here; [`first_copy_only`] keeps the first.
pub(crate) fn recorded_from(
    failures: &[NewFailure],
    written: &HashSet<String>,
) -> Vec<Result<Recorded, String>> {
    failures
        .iter()
        .map(|f| {
            Ok(if written.contains(&f.message_digest) {
                Recorded::New
            } else {
                Recorded::AlreadyRecorded
            })
        })
        .collect()
}

/// A digest written by one [`super::Storage::record_each`] call is new once: its
/// other copies (in a later chunk, or on an engine that cannot tell copies
/// apart within a statement) found it written.
pub(crate) fn first_copy_only(failures: &[NewFailure], answers: &mut [Result<Recorded, String>]) {
    let mut written = HashSet::new();
    for (failure, answer) in failures.iter().zip(answers) {
        if *answer == Ok(Recorded::New) && !written.insert(failure.message_digest.as_str()) {
            *answer = Ok(Recorded::AlreadyRecorded);
        }
    }
}

/// Maps each recorded failure to its row id by digest.
pub(crate) fn ids_by_digest(
    failures: &[NewFailure],
    ids: &HashMap<String, i64>,
) -> Result<Vec<i64>, StorageError> {
    failures
        .iter()
        .map(|f| {
            ids.get(&f.message_digest).copied().ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "failure {} not found after insert",
                    f.message_digest
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_the_row_and_the_byte_budget() {
        let items: Vec<usize> = vec![10; 25];
        let parts = chunks(&items, 10, 1000, |n| *n);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let parts = chunks(&items, 100, 35, |n| *n);
        assert!(parts.iter().all(|p| p.iter().sum::<usize>() <= 35));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 25);
        // An item above the budget runs alone; nothing is lost or reordered.
        let items = vec![1, 500, 1, 1];
        let parts = chunks(&items, 100, 10, |n| *n);
        assert_eq!(parts, vec![&[1][..], &[500], &[1, 1]]);
        assert!(chunks::<usize>(&[], 10, 10, |n| *n).is_empty());
    }

    #[test]
    fn mysql_statements_stay_under_the_placeholder_limit() {
        for per_row in [1, 2, 4, 6, 10] {
            assert!(mysql_rows(per_row, 1) * per_row < MYSQL_MAX_PLACEHOLDERS);
        }
        const { assert!(super::super::mysql::FAILURE_ROWS * 10 <= MYSQL_MAX_PLACEHOLDERS) };
    }

    #[test]
    fn of_copies_written_by_one_call_only_the_first_is_new() {
        let failure = |bytes: &[u8]| {
            NewFailure::poison(
                bytes,
                "not JSON",
                crate::domain::Source::Kafka,
                chrono::Utc::now(),
            )
        };
        let failures = [failure(b"a"), failure(b"b"), failure(b"a"), failure(b"a")];
        // What two chunks answer when "a" is in both (the engine sees the
        // second chunk's copy as written: its row has this call's time).
        let mut answers = vec![
            Ok(Recorded::New),
            Ok(Recorded::New),
            Ok(Recorded::New),
            Err("refused".to_owned()),
        ];
        first_copy_only(&failures, &mut answers);
        assert_eq!(
            answers,
            [
                Ok(Recorded::New),
                Ok(Recorded::New),
                Ok(Recorded::AlreadyRecorded),
                Err("refused".to_owned()),
            ]
        );
    }
}
