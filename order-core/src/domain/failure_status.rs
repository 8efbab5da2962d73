//! The failure ledger's states and their machine: where a failure came
//! from, what state it is in, and which moves each state allows (resolving
//! by hand, being claimed for a retry), decided here once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a failed creation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The RabbitMQ consumer.
    Rabbitmq,
    /// The Kafka consumer.
    Kafka,
    /// An operator through the REST API.
    Api,
    /// The compensator's retry job.
    Compensator,
}

/// The state of a failure record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureStatus {
    /// Waiting for its next retry.
    Pending,
    /// Claimed by a retrier under a lease.
    Processing,
    /// The order exists (`order_id` is set).
    Success,
    /// Given up: poison, or out of retries.
    Failed,
    /// Resolved by hand by an operator, with a note: never retried again,
    /// kept for the record.
    Resolved,
}

macro_rules! string_enum {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name stored in the database and shown in JSON.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " {:?} (expected {})"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(Source, "source", Rabbitmq => "rabbitmq", Kafka => "kafka", Api => "api", Compensator => "compensator");
string_enum!(FailureStatus, "failure status", Pending => "pending", Processing => "processing", Success => "success", Failed => "failed", Resolved => "resolved");

/// What resolving a failure by hand does, by its status
/// ([`FailureStatus::resolve_by_hand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByHand {
    /// `pending` or `failed`: it becomes `resolved`, with the note.
    Resolve,
    /// Already `resolved`: nothing changes (its note stays as it is), so a
    /// repeated request answers the record as it is.
    AlreadyResolved,
    /// It may not be resolved by hand.
    Refused(ResolveRefusal),
}

/// Why a failure may not be resolved by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveRefusal {
    /// `processing`: a retry holds it right now.
    #[error("it is being retried right now; resolve it once the retry has ended")]
    BeingRetried,
    /// `success`: its order exists.
    #[error("it already succeeded: its order exists")]
    AlreadySucceeded,
}

impl FailureStatus {
    /// The statuses an operator may resolve by hand: waiting for a retry, or
    /// given up. The storage's conditional update names the same ones.
    pub const RESOLVABLE_BY_HAND: &'static [FailureStatus] =
        &[FailureStatus::Pending, FailureStatus::Failed];

    /// What resolving a failure in this status by hand does.
    #[must_use]
    pub fn resolve_by_hand(self) -> ByHand {
        match self {
            Self::Pending | Self::Failed => ByHand::Resolve,
            Self::Resolved => ByHand::AlreadyResolved,
            Self::Processing => ByHand::Refused(ResolveRefusal::BeingRetried),
            Self::Success => ByHand::Refused(ResolveRefusal::AlreadySucceeded),
        }
    }

    /// True for the statuses a failure never leaves by itself (`success`,
    /// `failed`, `resolved`): what the purge deletes once old enough.
    #[must_use]
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Resolved)
    }
}

/// Why a failure cannot be retried now ([`FailureStatus::retry_by_hand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefusal {
    /// `resolved`: an operator closed it by hand.
    #[error("was resolved by hand and is not retried again")]
    ResolvedByHand,
    /// `success`: its order exists.
    #[error("already succeeded")]
    AlreadySucceeded,
    /// `processing` under a lease that has not lapsed.
    #[error("is being retried right now")]
    BeingRetried,
    /// The message can never become an order (poison).
    #[error("is not retryable")]
    NotRetryable,
}

impl FailureStatus {
    /// The claim of the compensator's retry job, as SQL over
    /// `order_failures` with one placeholder, now: due, retryable,
    /// `pending` failures. Both engines' claims use it.
    pub const CLAIMABLE_WHEN_DUE: &'static str =
        "status = 'pending' AND retryable AND next_retry_at <= ?";

    /// The claim of an operator's "retry now" ([`FailureStatus::retry_by_hand`]),
    /// as SQL over `order_failures` with one placeholder, now: retryable,
    /// and `pending`, `failed`, or `processing` under a lapsed lease.
    pub const CLAIMABLE_BY_HAND: &'static str = "retryable \
         AND (status IN ('pending', 'failed') OR (status = 'processing' AND locked_until < ?))";

    /// Whether an operator may retry a failure in this status now, the rule
    /// [`FailureStatus::CLAIMABLE_BY_HAND`] writes in SQL: a retryable one
    /// that is `pending`, `failed`, or `processing` under a lapsed lease.
    ///
    /// # Errors
    /// Why not.
    pub fn retry_by_hand(self, retryable: bool, lease_lapsed: bool) -> Result<(), RetryRefusal> {
        match self {
            Self::Resolved => Err(RetryRefusal::ResolvedByHand),
            Self::Success => Err(RetryRefusal::AlreadySucceeded),
            Self::Processing if !lease_lapsed => Err(RetryRefusal::BeingRetried),
            _ if !retryable => Err(RetryRefusal::NotRetryable),
            Self::Pending | Self::Failed | Self::Processing => Ok(()),
        }
    }

    /// The statuses a bulk retry takes failures from.
    pub const BULK_RETRYABLE: &'static [FailureStatus] =
        &[FailureStatus::Pending, FailureStatus::Failed];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_and_failed_failures_may_be_resolved_by_hand() {
        for status in FailureStatus::ALL {
            let expected = match status {
                FailureStatus::Pending | FailureStatus::Failed => ByHand::Resolve,
                FailureStatus::Resolved => ByHand::AlreadyResolved,
                FailureStatus::Processing => ByHand::Refused(ResolveRefusal::BeingRetried),
                FailureStatus::Success => ByHand::Refused(ResolveRefusal::AlreadySucceeded),
            };
            assert_eq!(status.resolve_by_hand(), expected, "{status}");
            assert_eq!(
                FailureStatus::RESOLVABLE_BY_HAND.contains(status),
                expected == ByHand::Resolve,
                "{status}"
            );
        }
        assert!(FailureStatus::Resolved.is_ended());
        assert!(!FailureStatus::Pending.is_ended() && !FailureStatus::Processing.is_ended());
    }

    #[test]
    fn names_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), *s);
        }
        for s in FailureStatus::ALL {
            assert_eq!(s.as_str().parse::<FailureStatus>().unwrap(), *s);
        }
        assert!(
            "nope"
                .parse::<Source>()
                .unwrap_err()
                .contains("expected rabbitmq, kafka, api, compensator")
        );
    }

    #[test]
    fn an_operator_retries_what_is_retryable_and_not_held_or_ended() {
        use FailureStatus::{Failed, Pending, Processing, Resolved, Success};
        for status in FailureStatus::ALL {
            for retryable in [true, false] {
                for lapsed in [true, false] {
                    let verdict = status.retry_by_hand(retryable, lapsed);
                    let allowed = retryable
                        && (matches!(status, Pending | Failed)
                            || (*status == Processing && lapsed));
                    assert_eq!(verdict.is_ok(), allowed, "{status} {retryable} {lapsed}");
                }
            }
        }
        assert_eq!(
            Resolved.retry_by_hand(true, true),
            Err(RetryRefusal::ResolvedByHand)
        );
        assert_eq!(
            Success.retry_by_hand(false, true),
            Err(RetryRefusal::AlreadySucceeded)
        );
        assert_eq!(
            Processing.retry_by_hand(true, false),
            Err(RetryRefusal::BeingRetried)
        );
        assert_eq!(
            Pending.retry_by_hand(false, false),
            Err(RetryRefusal::NotRetryable)
        );
    }
}
