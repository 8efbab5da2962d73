//! The failure ledger's part of the contract: recording failures once per
//! message, claiming them under a lease, resolving claims, resolving by
//! hand, purging.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::batch::{chunks, first_copy_only, ids_by_digest, narrow};
use super::engine::Engine;
use super::rows::{FAILURE_COLUMNS, FailureRow, into_failures};
use super::types::Resolution;
use super::{
    Attempt, ClaimById, FailureSummary, Page, PageRequest, ReasonCount, Recorded, ResolvedByHand,
    Storage, StorageError, dispatch, error, new_lease, now, on_pool,
};
use crate::domain::{
    ByHand, Failure, FailureFilter, FailureStatus, Lease, NewFailure, ResolutionNote,
    ResolveRefusal,
};

/// How many conditional updates [`Storage::resolve_failure_by_hand`] tries,
/// each after reading the failure again, before it answers that the failure
/// is being retried (it kept changing under the update).
const RESOLVE_ATTEMPTS: u32 = 3;

/// How far [`Storage::list_failures`] counts the matches of a text search.
pub const SEARCH_COUNT_CAP: i64 = 10_000;

/// A value bound to a filter's statement.
enum Bound {
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
    Naive(chrono::NaiveDateTime),
    Bytes(Vec<u8>),
}

/// Binds `values` to `query`, in order, as a statement prepared for this
/// one execution. A filter's statements are many and each is run with new
/// values: PostgreSQL then plans each for its values (a cached statement may
/// turn to a generic plan, blind to what a `LIKE` pattern holds), and
/// MariaDB 10.11 keeps its speed (a cached statement that scans
/// `order_failures` runs about 20 times slower once the session has read a
/// message body; each first execution does not).
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query.persistent(false);
        for value in $values {
            query = match value {
                Bound::Text(text) => query.bind(text.as_str()),
                Bound::Bool(flag) => query.bind(*flag),
                Bound::Time(time) => query.bind(*time),
                Bound::Naive(time) => query.bind(*time),
                Bound::Bytes(bytes) => query.bind(bytes.as_slice()),
            };
        }
        query
    }};
}

/// A LIKE pattern (escape character `!`) matching any text that holds
/// `text`.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '!' | '%' | '_') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A message body on PostgreSQL as ASCII text (the migration
/// `20261207000001_failure_console` indexes it, lowered, by exactly this
/// expression): `encode(…, 'escape')` writes
/// a NUL and each byte from 0x80 as a backslash and three octal digits and
/// doubles a real backslash; the doubled ones are put aside (U+E000), each
/// escape becomes U+FFFD, and the real backslashes come back. A search of
/// ASCII text then matches only what the bytes hold.
pub const PG_BODY_AS_ASCII: &str = r"replace(regexp_replace(replace(encode(message_data, 'escape'), '\\', U&'\E000'), '\\[0-7]{3}', U&'\FFFD', 'g'), U&'\E000', '\')";

impl Storage {
    /// Records failures; a message already recorded (same digest) is not
    /// recorded again. Returns each one's failure id, in order.
    ///
    /// # Errors
    /// When the database is unreachable, or refuses any of them
    /// ([`StorageError::NotRecorded`]; [`Storage::record_each`] records the
    /// others and says which).
    pub async fn record_failures(&self, failures: &[NewFailure]) -> Result<Vec<i64>, StorageError> {
        let recorded = self.record_each(failures).await?;
        let refused: Vec<&String> = recorded.iter().filter_map(|r| r.as_ref().err()).collect();
        if let Some(first) = refused.first() {
            return Err(StorageError::NotRecorded {
                refused: refused.len(),
                first: (*first).clone(),
            });
        }
        let digests: Vec<&str> = failures.iter().map(|f| f.message_digest.as_str()).collect();
        let ids = dispatch!(self.failure_ids(&digests))?;
        ids_by_digest(failures, &ids)
    }

    /// Records failures, each on its own merit: multi-row statements split
    /// below the engine's limits, and a failure the database refuses (for
    /// any reason but an outage) is narrowed down and answered `Err` with
    /// the database's words, while the others are recorded. A message
    /// already recorded (same digest) is not recorded again: it is answered
    /// [`Recorded::AlreadyRecorded`], and only a row written now
    /// [`Recorded::New`] (of several copies in one call, the first). Answers
    /// are in the order of `failures`.
    ///
    /// # Errors
    /// Only [`StorageError::Unavailable`].
    pub async fn record_each(
        &self,
        failures: &[NewFailure],
    ) -> Result<Vec<Result<Recorded, String>>, StorageError> {
        let now = now();
        let (rows, bytes) = match self {
            Self::Postgres(s) => s.failure_budget(),
            Self::Mysql(s) => s.failure_budget(),
        };
        // A row the server could not take even alone (it resets the
        // connection, which reads as an outage) keeps fewer bytes; its whole
        // length is still recorded.
        let fitted: Vec<NewFailure>;
        let failures = if failures.iter().any(|f| f.encoded_len() > bytes) {
            fitted = failures
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    let room = bytes.saturating_sub(f.encoded_len() - f.message.bytes.len());
                    if f.message.bytes.len() > room {
                        tracing::warn!(failure.digest = %f.message_digest, kept_bytes = room, "message larger than the database takes in one statement; keeping its first bytes");
                        f.message.bytes.truncate(room);
                    }
                    f
                })
                .collect();
            &fitted[..]
        } else {
            failures
        };
        let mut out = Vec::with_capacity(failures.len());
        for chunk in chunks(failures, rows, bytes, NewFailure::encoded_len) {
            out.extend(
                narrow(
                    chunk,
                    |part| match self {
                        Self::Postgres(s) => Box::pin(s.insert_failures(part, now)),
                        Self::Mysql(s) => Box::pin(s.insert_failures(part, now)),
                    },
                    |failure, err| {
                        tracing::debug!(failure.digest = %failure.message_digest, error = %err, "failure refused by the database");
                        Err(error::describe(err, "failure record"))
                    },
                )
                .await?,
            );
        }
        first_copy_only(failures, &mut out);
        Ok(out)
    }

    /// One failure.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn get_failure(&self, id: i64) -> Result<Option<Failure>, StorageError> {
        let select = format!("SELECT {FAILURE_COLUMNS} FROM order_failures WHERE id = ?");
        on_pool!(self, |pool, sql| {
            sqlx::query_as::<_, FailureRow>(&sql(&select))
                .bind(id)
                .fetch_optional(pool)
                .await?
        })
        .map(Failure::try_from)
        .transpose()
    }

    /// Failures that `filter` matches, newest first, one page of them and
    /// how many there are in all; with a text search, counted up to
    /// [`SEARCH_COUNT_CAP`] (`capped` when more match): a search that
    /// matches much of a big ledger reads every match to count it.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list_failures(
        &self,
        filter: &FailureFilter,
        page: PageRequest,
    ) -> Result<Page<Failure>, StorageError> {
        let (conditions, values) = self.failure_conditions(filter);
        let searched = filter.text.is_some();
        let count = if searched {
            format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM order_failures WHERE {conditions} LIMIT {}) AS counted",
                SEARCH_COUNT_CAP + 1
            )
        } else {
            format!("SELECT COUNT(*) FROM order_failures WHERE {conditions}")
        };
        let select = format!(
            "SELECT {FAILURE_COLUMNS} FROM order_failures WHERE {conditions} \
             ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        let (total, rows) = on_pool!(self, |pool, sql| {
            let (count, select) = (sql(&count), sql(&select));
            let total: i64 = bind_all!(sqlx::query_scalar(&count), &values)
                .fetch_one(pool)
                .await?;
            let rows = bind_all!(sqlx::query_as::<_, FailureRow>(&select), &values)
                .bind(i64::from(page.page_size))
                .bind(page.offset())
                .fetch_all(pool)
                .await?;
            (total, rows)
        });
        Ok(Page {
            items: into_failures(rows)?,
            total: if searched {
                total.min(SEARCH_COUNT_CAP)
            } else {
                total
            },
            capped: searched && total > SEARCH_COUNT_CAP,
        })
    }

    /// The failures that `filter` matches grouped by reason
    /// ([`crate::domain::reason_group`]): the `limit` largest groups, largest
    /// first, and how many failures match in all.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn failure_reasons(
        &self,
        filter: &FailureFilter,
        limit: u32,
    ) -> Result<(Vec<ReasonCount>, i64), StorageError> {
        let (conditions, values) = self.failure_conditions(filter);
        let count = format!("SELECT COUNT(*) FROM order_failures WHERE {conditions}");
        // MySQL's column compares as written (utf8mb4_bin), which sqlx
        // reads as bytes: it is answered as text.
        let group = match self {
            Self::Postgres(_) => "reason_group",
            Self::Mysql(_) => "CONVERT(reason_group USING utf8mb4)",
        };
        let select = format!(
            "SELECT {group} AS reason, COUNT(*) AS failures FROM order_failures WHERE {conditions} \
             GROUP BY reason_group ORDER BY failures DESC, reason_group LIMIT ?"
        );
        let (total, rows) = on_pool!(self, |pool, sql| {
            let (count, select) = (sql(&count), sql(&select));
            let total: i64 = bind_all!(sqlx::query_scalar(&count), &values)
                .fetch_one(pool)
                .await?;
            let rows: Vec<(String, i64)> = bind_all!(sqlx::query_as(&select), &values)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            (total, rows)
        });
        let groups = rows
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect();
        Ok((groups, total))
    }

    /// Failures by status, every status present.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn failure_summary(&self) -> Result<FailureSummary, StorageError> {
        let select = "SELECT status, COUNT(*) FROM order_failures GROUP BY status";
        let rows: Vec<(String, i64)> = on_pool!(self, |pool, sql| {
            // Not cached, as a filter's statements (`bind_all!`).
            sqlx::query_as(&sql(select))
                .persistent(false)
                .fetch_all(pool)
                .await?
        });
        let mut summary: FailureSummary = FailureStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for (status, count) in rows {
            let status = status
                .parse()
                .map_err(|_| StorageError::Corrupt(format!("unknown failure status {status:?}")))?;
            summary.insert(status, count);
        }
        Ok(summary)
    }

    /// How many failures a bulk retry of `filter` could take: the retryable
    /// ones it matches.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn count_retryable_failures(
        &self,
        filter: &FailureFilter,
    ) -> Result<i64, StorageError> {
        if filter.status == Some(FailureStatus::Resolved) {
            return Ok(0);
        }
        let (conditions, values) = self.failure_conditions(filter);
        let count = format!("SELECT COUNT(*) FROM order_failures WHERE retryable AND {conditions}");
        Ok(on_pool!(self, |pool, sql| {
            let count = sql(&count);
            bind_all!(sqlx::query_scalar(&count), &values)
                .fetch_one(pool)
                .await?
        }))
    }

    /// The ids of up to `limit` retryable failures that `filter` matches,
    /// newest first: what a bulk retry takes. Poison (non-retryable) rows
    /// are left out by the query itself, so they never take the place of
    /// retryable ones.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn retryable_failure_ids(
        &self,
        filter: &FailureFilter,
        limit: u32,
    ) -> Result<Vec<i64>, StorageError> {
        if filter.status == Some(FailureStatus::Resolved) {
            // Resolved by hand: never retried again.
            return Ok(Vec::new());
        }
        let (conditions, values) = self.failure_conditions(filter);
        let select = format!(
            "SELECT id FROM order_failures WHERE retryable AND {conditions} ORDER BY id DESC LIMIT ?"
        );
        Ok(on_pool!(self, |pool, sql| {
            let select = sql(&select);
            bind_all!(sqlx::query_scalar(&select), &values)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// A failure's retry history, oldest first.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn failure_attempts(&self, id: i64) -> Result<Vec<Attempt>, StorageError> {
        let select = "SELECT attempted_at, outcome, reason, order_id FROM order_failure_attempts \
                      WHERE failure_id = ? ORDER BY id";
        Ok(on_pool!(self, |pool, sql| {
            sqlx::query_as(&sql(select))
                .bind(id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The conditions `filter` sets, joined by AND (`1 = 1` when none),
    /// with `?` placeholders, and the values to bind in order.
    fn failure_conditions(&self, filter: &FailureFilter) -> (String, Vec<Bound>) {
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut values = Vec::new();
        if let Some(status) = filter.status {
            conditions.push("status = ?".into());
            values.push(Bound::Text(status.as_str().into()));
        }
        if let Some(source) = filter.source {
            conditions.push("source = ?".into());
            values.push(Bound::Text(source.as_str().into()));
        }
        if let Some(retryable) = filter.retryable {
            conditions.push("retryable = ?".into());
            values.push(Bound::Bool(retryable));
        }
        // MySQL compares a time without zone with its DATETIME column (a
        // TIMESTAMP parameter ends in 2038); PostgreSQL takes it with its
        // zone.
        let at = |time: DateTime<Utc>| match self {
            Self::Postgres(_) => Bound::Time(time),
            Self::Mysql(_) => Bound::Naive(time.naive_utc()),
        };
        if let Some(since) = filter.since {
            conditions.push("created_at >= ?".into());
            values.push(at(since));
        }
        if let Some(until) = filter.until {
            conditions.push("created_at < ?".into());
            values.push(at(until));
        }
        if let Some(text) = &filter.text {
            let text = text.as_str();
            let pattern = like_pattern(text);
            match self {
                // Bodies are bytes. An ASCII search reads them as text with
                // every byte that is not ASCII (or is NUL) made U+FFFD, so
                // that letters match in any case; any other search looks
                // for its exact UTF-8 bytes.
                Self::Postgres(_) if text.is_ascii() => {
                    conditions.push(format!(
                        "(error_message ILIKE ? ESCAPE '!' OR lower({PG_BODY_AS_ASCII}) LIKE ? ESCAPE '!')"
                    ));
                    values.push(Bound::Text(pattern));
                    values.push(Bound::Text(like_pattern(&text.to_ascii_lowercase())));
                }
                Self::Postgres(_) => {
                    conditions.push(
                        "(error_message ILIKE ? ESCAPE '!' OR position(? IN message_data) > 0)"
                            .into(),
                    );
                    values.push(Bound::Text(pattern));
                    values.push(Bound::Bytes(text.as_bytes().to_vec()));
                }
                // Compared as bytes, so that the table's collation (which
                // ignores accents and weighs every emoji alike) does not
                // widen the match: an ASCII search lowers both sides, the
                // body read byte for byte as latin1 (every byte a
                // character, none replaced); any other search lowers the
                // reason and looks for its exact bytes in the body.
                Self::Mysql(_) if text.is_ascii() => {
                    conditions.push(
                        "(CAST(LOWER(error_message) AS BINARY) LIKE ? ESCAPE '!' OR \
                         CAST(LOWER(CONVERT(message_data USING latin1)) AS BINARY) LIKE ? ESCAPE '!')"
                            .into(),
                    );
                    let lowered = like_pattern(&text.to_ascii_lowercase());
                    values.push(Bound::Text(lowered.clone()));
                    values.push(Bound::Text(lowered));
                }
                Self::Mysql(_) => {
                    conditions.push(
                        "(CAST(LOWER(error_message) AS BINARY) LIKE CAST(LOWER(?) AS BINARY) ESCAPE '!' \
                         OR LOCATE(CAST(? AS BINARY), message_data) > 0)"
                            .into(),
                    );
                    values.push(Bound::Text(pattern));
                    values.push(Bound::Bytes(text.as_bytes().to_vec()));
                }
            }
        }
        if let Some(reason) = &filter.reason {
            conditions.push("reason_group = ?".into());
            values.push(Bound::Text(reason.as_str().into()));
        }
        (conditions.join(" AND "), values)
    }

    /// Resolves a failure by hand with an operator's note, as the domain
    /// says ([`FailureStatus::resolve_by_hand`]): a `pending` or `failed`
    /// one becomes `resolved` and is never claimed again; a `resolved` one is
    /// answered as it is (its note unchanged); `processing` and `success`
    /// are refused. The change is a conditional update on the status read
    /// (and only ever from `pending` or `failed`), so a failure claimed in
    /// the meantime is not resolved: it is read again and judged again.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn resolve_failure_by_hand(
        &self,
        id: i64,
        note: &ResolutionNote,
    ) -> Result<ResolvedByHand, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(current) = self.get_failure(id).await? else {
                return Ok(ResolvedByHand::NotFound);
            };
            match current.status.resolve_by_hand() {
                ByHand::AlreadyResolved => {
                    return Ok(ResolvedByHand::AlreadyResolved(Box::new(current)));
                }
                ByHand::Refused(why) => return Ok(ResolvedByHand::Refused(Box::new(current), why)),
                // Changed under us each time: retries are running on it.
                ByHand::Resolve if attempt > RESOLVE_ATTEMPTS => {
                    return Ok(ResolvedByHand::Refused(
                        Box::new(current),
                        ResolveRefusal::BeingRetried,
                    ));
                }
                ByHand::Resolve => {}
            }
            let previous = current.status;
            // Only ever from `pending` or `failed`, whatever was read.
            let update = "UPDATE order_failures SET status = 'resolved', resolution_note = ?, \
                          locked_until = NULL, lease_token = NULL, updated_at = ? \
                          WHERE id = ? AND status = ? AND status IN ('pending', 'failed')";
            let resolved = on_pool!(self, |pool, sql| {
                sqlx::query(&sql(update))
                    .bind(note.as_str())
                    .bind(now())
                    .bind(id)
                    .bind(previous.as_str())
                    .execute(pool)
                    .await?
                    .rows_affected()
                    == 1
            });
            if resolved {
                let failure = self.get_failure(id).await?.ok_or(StorageError::NotFound)?;
                return Ok(ResolvedByHand::Resolved {
                    failure: Box::new(failure),
                    previous,
                });
            }
        }
    }

    /// Claims up to `limit` due, retryable, pending failures (oldest due
    /// first) with `FOR UPDATE SKIP LOCKED`: they become `processing` under a
    /// lease of `lease` length. Concurrent claimers get disjoint sets.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn claim_failures(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<(Failure, Lease)>, StorageError> {
        let now = now();
        let lease = new_lease(now, lease);
        dispatch!(self.claim_failures(limit, lease, now))
    }

    /// Claims one failure by id, due or not (an operator's "retry now").
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn claim_failure(&self, id: i64, lease: Duration) -> Result<ClaimById, StorageError> {
        let now = now();
        let lease = new_lease(now, lease);
        let update = format!(
            "UPDATE order_failures SET status = 'processing', locked_until = ?, lease_token = ?, updated_at = ? \
             WHERE id = ? AND {}",
            FailureStatus::CLAIMABLE_BY_HAND
        );
        let claimed = on_pool!(self, |pool, sql| {
            sqlx::query(&sql(&update))
                .bind(lease.until)
                .bind(lease.token)
                .bind(now)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        });
        if claimed {
            let failure = self.get_failure(id).await?.ok_or(StorageError::NotFound)?;
            return Ok(ClaimById::Claimed(Box::new(failure), lease));
        }
        Ok(match self.get_failure(id).await? {
            None => ClaimById::NotFound,
            Some(failure) => ClaimById::Refused(Box::new(failure)),
        })
    }

    /// Resolves a claim: the order exists. False when the lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn mark_failure_succeeded(
        &self,
        id: i64,
        lease: &Lease,
        order_id: Uuid,
    ) -> Result<bool, StorageError> {
        self.resolve(id, lease, Resolution::Succeeded(order_id))
            .await
    }

    /// Resolves a claim: retry at `next_retry_at`, one retry more counted.
    /// False when the lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn reschedule_failure(
        &self,
        id: i64,
        lease: &Lease,
        error: &str,
        next_retry_at: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let error = crate::domain::printable_error(error);
        self.resolve(id, lease, Resolution::Reschedule(&error, next_retry_at))
            .await
    }

    /// Resolves a claim: given up, one retry more counted. False when the
    /// lease was lost.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn mark_failure_failed(
        &self,
        id: i64,
        lease: &Lease,
        error: &str,
    ) -> Result<bool, StorageError> {
        let error = crate::domain::printable_error(error);
        self.resolve(id, lease, Resolution::GiveUp(&error)).await
    }

    /// Claims whose lease has lapsed go back to `pending`; returns how many.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn release_expired_leases(&self) -> Result<u64, StorageError> {
        let now = now();
        let update = "UPDATE order_failures SET status = 'pending', locked_until = NULL, lease_token = NULL, updated_at = ? \
                      WHERE status = 'processing' AND locked_until < ?";
        Ok(on_pool!(self, |pool, sql| {
            sqlx::query(&sql(update))
                .bind(now)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Deletes up to `limit` ended (`success`, `failed`, `resolved`)
    /// failures last changed before `cutoff`; returns how many.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn purge_resolved_failures(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        dispatch!(self.purge_resolved_failures(cutoff, limit))
    }

    /// Pending failures (the retry backlog).
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn count_pending_failures(&self) -> Result<i64, StorageError> {
        let count = "SELECT COUNT(*) FROM order_failures WHERE status = 'pending'";
        Ok(on_pool!(self, |pool, sql| {
            sqlx::query_scalar(&sql(count)).fetch_one(pool).await?
        }))
    }

    /// Ends a claim held with `lease` as `resolution` says; false when the
    /// lease was lost (lapsed and taken by another claimer).
    async fn resolve(
        &self,
        id: i64,
        lease: &Lease,
        resolution: Resolution<'_>,
    ) -> Result<bool, StorageError> {
        let now = now();
        let (status, error, retries, next_retry_at, order_id) = resolution.columns(now);
        let update = "UPDATE order_failures SET status = ?, error_message = COALESCE(?, error_message), \
                      retry_count = retry_count + ?, next_retry_at = ?, order_id = COALESCE(?, order_id), \
                      locked_until = NULL, lease_token = NULL, updated_at = ? \
                      WHERE id = ? AND status = 'processing' AND lease_token = ?";
        let outcome = resolution.outcome();
        let history = "INSERT INTO order_failure_attempts (failure_id, attempted_at, outcome, reason, order_id)";
        // The update's values, in the order of its placeholders.
        macro_rules! update_values {
            ($query:expr) => {
                $query
                    .bind(status.as_str())
                    .bind(error)
                    .bind(retries)
                    .bind(next_retry_at)
                    .bind(order_id)
                    .bind(now)
                    .bind(id)
                    .bind(lease.token)
            };
        }
        match self {
            // One statement: the history row is written by the update's own
            // round trip, only when the update ended the claim.
            Self::Postgres(s) => {
                let statement = format!(
                    "WITH ended AS ({update} RETURNING id) {history} SELECT id, ?, ?, ?, ? FROM ended"
                );
                Ok(update_values!(sqlx::query(&super::numbered(&statement)))
                    .bind(now)
                    .bind(outcome)
                    .bind(error)
                    .bind(order_id)
                    .execute(s.pool())
                    .await?
                    .rows_affected()
                    == 1)
            }
            Self::Mysql(s) => {
                let mut tx = s.pool().begin().await?;
                let ended = update_values!(sqlx::query(update))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if ended {
                    sqlx::query(&format!("{history} VALUES (?, ?, ?, ?, ?)"))
                        .bind(id)
                        .bind(now)
                        .bind(outcome)
                        .bind(error)
                        .bind(order_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(ended)
            }
        }
    }
}
