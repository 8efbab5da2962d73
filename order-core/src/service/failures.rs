//! The failure ledger as operators see it: list and read failures, retry one
//! or many now, resolve one by hand. The API's routes only translate HTTP to
//! these calls and their answers back.

use super::{HandRetry, MessageOutcome, Retrier};
use crate::domain::{Failure, FailureFilter, FailureStatus, ResolutionNote, RetryRefusal};
use crate::storage::{
    Attempt, FailureSummary, Page, PageRequest, ReasonCount, ResolvedByHand, Storage, StorageError,
};

/// What an operator's request on failures can meet besides success.
#[derive(Debug, thiserror::Error)]
pub enum FailureError {
    /// No failure has this id.
    #[error("failure {0} not found")]
    NotFound(i64),
    /// The failure's state does not allow the request (a conflict).
    #[error("{0}")]
    Refused(String),
    /// The request itself is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A bulk retry: the retryable failures a filter matches, of one status
/// (`pending` or `failed`), newest first, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRetry {
    filter: FailureFilter,
    limit: u32,
}

impl BulkRetry {
    /// The most failures one bulk retry takes.
    pub const MAX_LIMIT: u32 = 1000;
    /// How many it takes when the request does not say.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// A bulk retry of the failures `filter` matches: its status must be
    /// `pending` (the default when it has none) or `failed`, and it cannot
    /// ask for poison failures only (they are never retried); `limit` is 1
    /// to [`BulkRetry::MAX_LIMIT`], default [`BulkRetry::DEFAULT_LIMIT`].
    ///
    /// # Errors
    /// [`FailureError::Invalid`] naming the field.
    pub fn new(mut filter: FailureFilter, limit: Option<u32>) -> Result<Self, FailureError> {
        let status = filter.status.unwrap_or(FailureStatus::Pending);
        if !FailureStatus::BULK_RETRYABLE.contains(&status) {
            return Err(FailureError::Invalid(format!(
                "status: must be pending or failed, got {:?}",
                status.as_str()
            )));
        }
        filter.status = Some(status);
        if filter.retryable == Some(false) {
            return Err(FailureError::Invalid(
                "retryable: a bulk retry takes retryable failures only; poison failures are \
                 never retried (resolve them by hand)"
                    .into(),
            ));
        }
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(FailureError::Invalid(format!(
                "limit: must be from 1 to {}, got {limit}",
                Self::MAX_LIMIT
            )));
        }
        Ok(Self { filter, limit })
    }

    /// The most failures it takes.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// A failure and its retry history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureRecord {
    /// The failure.
    #[serde(flatten)]
    pub failure: Failure,
    /// Each retry that ended.
    pub attempts: Vec<Attempt>,
}

/// What a bulk retry did to one failure.
#[derive(Debug)]
pub enum BulkRetried {
    /// Retried: the failure as it is now, and what the attempt gave.
    Retried(Box<Failure>, MessageOutcome),
    /// Refused when claimed (taken or changed meanwhile), and why.
    Refused(String),
}

/// Operators' requests on the failure ledger.
#[derive(Debug, Clone)]
pub struct Failures {
    retrier: Retrier,
}

impl Failures {
    /// Over the retrier's storage.
    #[must_use]
    pub fn new(retrier: Retrier) -> Self {
        Self { retrier }
    }

    fn storage(&self) -> &Storage {
        self.retrier.storage()
    }

    /// One page of the failures `filter` matches, newest first.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list(
        &self,
        filter: &FailureFilter,
        page: PageRequest,
    ) -> Result<Page<Failure>, StorageError> {
        self.storage().list_failures(filter, page).await
    }

    /// The failures `filter` matches grouped by reason, the `limit` largest
    /// groups first, and how many match in all.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn reasons(
        &self,
        filter: &FailureFilter,
        limit: u32,
    ) -> Result<(Vec<ReasonCount>, i64), StorageError> {
        self.storage().failure_reasons(filter, limit).await
    }

    /// Failures by status.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn summary(&self) -> Result<FailureSummary, StorageError> {
        self.storage().failure_summary().await
    }

    /// One failure and its retry history.
    ///
    /// # Errors
    /// [`FailureError::NotFound`], or the database's error.
    pub async fn get(&self, id: i64) -> Result<FailureRecord, FailureError> {
        let failure = self
            .storage()
            .get_failure(id)
            .await?
            .ok_or(FailureError::NotFound(id))?;
        let attempts = self.storage().failure_attempts(id).await?;
        Ok(FailureRecord { failure, attempts })
    }

    /// How many failures `request`'s filter matches that a bulk retry
    /// takes (the retryable ones; it retries at most its limit of them).
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn dry_run(&self, request: &BulkRetry) -> Result<i64, StorageError> {
        self.storage()
            .count_retryable_failures(&request.filter)
            .await
    }

    /// Retries one failure now, through the creation path.
    ///
    /// # Errors
    /// [`FailureError::NotFound`], [`FailureError::Refused`] saying why
    /// ([`refusal`]), or the database's error.
    pub async fn retry(&self, id: i64) -> Result<(Box<Failure>, MessageOutcome), FailureError> {
        match self.retrier.retry_one(id).await? {
            HandRetry::Retried(failure, attempt) => Ok((failure, attempt)),
            HandRetry::NotFound => Err(FailureError::NotFound(id)),
            HandRetry::Refused(failure) => Err(FailureError::Refused(refusal(&failure))),
        }
    }

    /// Retries the failures `request` names, one after the other. Retryable
    /// ones only, chosen by the query: poison rows never take the place of
    /// retryable ones within the limit.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn retry_many(
        &self,
        request: BulkRetry,
    ) -> Result<Vec<(i64, BulkRetried)>, StorageError> {
        let candidates = self
            .storage()
            .retryable_failure_ids(&request.filter, request.limit)
            .await?;
        let mut done = Vec::with_capacity(candidates.len());
        for id in candidates {
            match self.retrier.retry_one(id).await? {
                HandRetry::Retried(failure, attempt) => {
                    done.push((id, BulkRetried::Retried(failure, attempt)));
                }
                // Deleted meanwhile (purged): nothing to say of it.
                HandRetry::NotFound => {}
                HandRetry::Refused(failure) => {
                    done.push((id, BulkRetried::Refused(refusal(&failure))));
                }
            }
        }
        Ok(done)
    }

    /// Resolves a `pending` or `failed` failure by hand with `note`: it is
    /// never retried again. A resolved one is answered as it is (its note
    /// unchanged).
    ///
    /// # Errors
    /// [`FailureError::NotFound`], [`FailureError::Refused`] (`processing`,
    /// `success`), or the database's error.
    pub async fn resolve_by_hand(
        &self,
        id: i64,
        note: &ResolutionNote,
    ) -> Result<Failure, FailureError> {
        match self.storage().resolve_failure_by_hand(id, note).await? {
            ResolvedByHand::Resolved { failure, previous } => {
                tracing::info!(
                    failure.id = id,
                    failure.previous_status = %previous,
                    "failure resolved by hand"
                );
                metrics::counter!("failures_resolved_by_hand_total", "previous_status" => previous.as_str())
                    .increment(1);
                Ok(*failure)
            }
            ResolvedByHand::AlreadyResolved(failure) => Ok(*failure),
            ResolvedByHand::Refused(_, why) => Err(FailureError::Refused(format!(
                "failure {id} cannot be resolved by hand: {why}"
            ))),
            ResolvedByHand::NotFound => Err(FailureError::NotFound(id)),
        }
    }
}

/// Why `failure` (as read after its claim was refused) is not retried now,
/// by the rule of [`FailureStatus::retry_by_hand`]. The claim was refused,
/// so a `processing` one's lease had not lapsed by the database's clock.
#[must_use]
pub fn refusal(failure: &Failure) -> String {
    let id = failure.id;
    match failure.status.retry_by_hand(failure.retryable, false) {
        Err(RetryRefusal::AlreadySucceeded) => format!(
            "failure {id} already succeeded{}",
            failure
                .order_id
                .map(|o| format!(" (order {o})"))
                .unwrap_or_default()
        ),
        Err(RetryRefusal::NotRetryable) => {
            format!("failure {id} is not retryable: {}", failure.error_message)
        }
        Err(why) => format!("failure {id} {why}"),
        // Allowed by the rule, yet the claim lost a race: it changed meanwhile.
        Ok(()) => format!("failure {id} cannot be retried now"),
    }
}
