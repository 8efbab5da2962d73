//! Retrying failed creations: claim, run through the creation path, resolve.
//!
//! The compensator's `retry-failures` job and the API's "retry now" both use
//! [`Retrier`], so a failure is judged the same way wherever it is retried.

use std::time::Duration;

use chrono::Utc;

use super::{MessageOutcome, OrderCreator};
use crate::domain::{Failure, Lease, RetryDecision, RetryPolicy};
use crate::storage::{ClaimById, Storage, StorageError};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Claims whose lease had lapsed, returned to pending first.
    pub released: u64,
    /// Ids of the failures this run claimed.
    pub claimed: Vec<i64>,
    /// Resolved with an order (created now, or found existing).
    pub succeeded: usize,
    /// Failed again; due later.
    pub rescheduled: usize,
    /// Given up (out of retries, or the message can never become an order).
    pub failed: usize,
    /// Claims that were no longer ours when resolving (lease lapsed meanwhile).
    pub lost: usize,
}

/// The outcome of retrying one failure by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandRetry {
    /// Retried; the failure as it is now and what the attempt gave.
    Retried(Box<Failure>, MessageOutcome),
    /// No failure has that id.
    NotFound,
    /// Not retryable now: already succeeded, being processed, or poison.
    Refused(Box<Failure>),
}

/// Claims due failures and retries them.
#[derive(Debug, Clone)]
pub struct Retrier {
    creator: OrderCreator,
    policy: RetryPolicy,
    lease: Duration,
    batch_size: u32,
}

impl Retrier {
    /// A retrier with a retry policy, the lease a claim holds and the
    /// failures claimed per run (the compensator's `retry_policy()`,
    /// `lease` and `batch_size`).
    #[must_use]
    pub fn new(
        creator: OrderCreator,
        policy: RetryPolicy,
        lease: Duration,
        batch_size: u32,
    ) -> Self {
        Self {
            creator,
            policy,
            lease,
            batch_size,
        }
    }

    /// The storage it claims from.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        self.creator.storage()
    }

    /// The lease a claim holds.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// One run: return lapsed claims to pending, claim up to `batch_size`
    /// due failures, retry them in one batch, resolve each claim.
    ///
    /// # Errors
    /// When the database is unreachable. Claims already taken are then left
    /// to their lease: they return to pending when it lapses.
    pub async fn run_once(&self) -> Result<RetryReport, StorageError> {
        let storage = self.creator.storage();
        let released = storage.release_expired_leases().await?;
        let claimed = storage.claim_failures(self.batch_size, self.lease).await?;
        let mut report = self.settle(&claimed).await?;
        report.released = released;
        Ok(report)
    }

    /// Retries one failure now, due or not (an operator's request).
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn retry_one(&self, id: i64) -> Result<HandRetry, StorageError> {
        let storage = self.creator.storage();
        let (failure, lease) = match storage.claim_failure(id, self.lease).await? {
            ClaimById::Claimed(failure, lease) => (failure, lease),
            ClaimById::NotFound => return Ok(HandRetry::NotFound),
            ClaimById::Refused(failure) => return Ok(HandRetry::Refused(failure)),
        };
        let attempt = self
            .creator
            .attempt(&[failure.message.bytes.as_slice()])
            .await?
            .remove(0);
        self.resolve(&failure, &lease, &attempt, &mut RetryReport::default())
            .await?;
        let now = storage
            .get_failure(id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(HandRetry::Retried(Box::new(now), attempt))
    }

    async fn settle(&self, claimed: &[(Failure, Lease)]) -> Result<RetryReport, StorageError> {
        let mut report = RetryReport {
            claimed: claimed.iter().map(|(f, _)| f.id).collect(),
            ..RetryReport::default()
        };
        if claimed.is_empty() {
            return Ok(report);
        }
        let payloads: Vec<&[u8]> = claimed
            .iter()
            .map(|(f, _)| f.message.bytes.as_slice())
            .collect();
        let attempts = self.creator.attempt(&payloads).await?;
        for ((failure, lease), attempt) in claimed.iter().zip(&attempts) {
            self.resolve(failure, lease, attempt, &mut report).await?;
        }
        metrics::counter!("compensator_claimed_total").increment(claimed.len() as u64);
        for (result, n) in [
            ("succeeded", report.succeeded),
            ("rescheduled", report.rescheduled),
            ("failed", report.failed),
            ("lost", report.lost),
        ] {
            metrics::counter!("compensator_retries_total", "result" => result).increment(n as u64);
        }
        Ok(report)
    }

    async fn resolve(
        &self,
        failure: &Failure,
        lease: &Lease,
        attempt: &MessageOutcome,
        report: &mut RetryReport,
    ) -> Result<(), StorageError> {
        let storage = self.creator.storage();
        let (resolved, counter) = match attempt {
            MessageOutcome::Created(order_id) | MessageOutcome::Duplicate(order_id) => (
                storage
                    .mark_failure_succeeded(failure.id, lease, *order_id)
                    .await?,
                &mut report.succeeded,
            ),
            MessageOutcome::Poison(reason) => (
                storage
                    .mark_failure_failed(failure.id, lease, reason)
                    .await?,
                &mut report.failed,
            ),
            MessageOutcome::Failed(reason) => {
                let retries = u32::try_from(failure.retry_count)
                    .unwrap_or(0)
                    .saturating_add(1);
                match self.policy.after_failure(retries, Utc::now()) {
                    RetryDecision::RetryAt(at) => (
                        storage
                            .reschedule_failure(failure.id, lease, reason, at)
                            .await?,
                        &mut report.rescheduled,
                    ),
                    RetryDecision::GiveUp => (
                        storage
                            .mark_failure_failed(
                                failure.id,
                                lease,
                                &format!("gave up after {retries} retries: {reason}"),
                            )
                            .await?,
                        &mut report.failed,
                    ),
                }
            }
        };
        if resolved {
            *counter += 1;
        } else {
            tracing::warn!(
                failure.id = failure.id,
                "lease lapsed before the retry was resolved; left to the next claim"
            );
            report.lost += 1;
        }
        Ok(())
    }
}
