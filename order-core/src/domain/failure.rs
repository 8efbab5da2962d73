use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
string_enum!(FailureStatus, "failure status", Pending => "pending", Processing => "processing", Success => "success", Failed => "failed");

/// A failed order creation, kept for retry or for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The failure's id.
    pub id: i64,
    /// The raw message (lossy UTF-8, at most 64 KiB of it).
    pub message_data: String,
    /// Why the last attempt failed.
    pub error_message: String,
    /// Retries made so far.
    pub retry_count: i32,
    /// Where the record is in its life.
    pub status: FailureStatus,
    /// False for a message that can never become an order.
    pub retryable: bool,
    /// Who recorded it.
    pub source: Source,
    /// When the next retry is due.
    pub next_retry_at: DateTime<Utc>,
    /// End of the current lease while `processing`.
    pub locked_until: Option<DateTime<Utc>>,
    /// The order, once the retry succeeded.
    pub order_id: Option<Uuid>,
    /// When it was first recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The proof of a claim: only its holder may resolve the claimed failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Random token written with the claim.
    pub token: Uuid,
    /// When the claim lapses and the failure returns to `pending`.
    pub until: DateTime<Utc>,
}

/// A failure to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFailure {
    /// The raw message as text (lossy UTF-8, truncated to 64 KiB).
    pub message_data: String,
    /// SHA-256 of the raw bytes, hex: the same message is recorded once.
    pub message_digest: String,
    /// Why it failed.
    pub error_message: String,
    /// `pending` for a retryable failure, `failed` for poison.
    pub status: FailureStatus,
    /// False for poison.
    pub retryable: bool,
    /// Who saw it fail.
    pub source: Source,
    /// When the first retry is due.
    pub next_retry_at: DateTime<Utc>,
}

impl NewFailure {
    /// The longest `message_data` kept, in bytes.
    pub const MAX_DATA_BYTES: usize = 64 * 1024;

    /// A message that can never become an order: recorded as `failed`.
    #[must_use]
    pub fn poison(
        raw: &[u8],
        reason: impl Into<String>,
        source: Source,
        now: DateTime<Utc>,
    ) -> Self {
        Self::build(
            raw,
            reason.into(),
            FailureStatus::Failed,
            false,
            source,
            now,
        )
    }

    /// A valid message whose write failed: recorded as `pending`, due at `due`.
    #[must_use]
    pub fn retryable(
        raw: &[u8],
        reason: impl Into<String>,
        source: Source,
        due: DateTime<Utc>,
    ) -> Self {
        Self::build(
            raw,
            reason.into(),
            FailureStatus::Pending,
            true,
            source,
            due,
        )
    }

    fn build(
        raw: &[u8],
        error_message: String,
        status: FailureStatus,
        retryable: bool,
        source: Source,
        next_retry_at: DateTime<Utc>,
    ) -> Self {
        let digest = Sha256::digest(raw);
        let message_digest = digest.iter().map(|b| format!("{b:02x}")).collect();
        let kept = &raw[..raw.len().min(Self::MAX_DATA_BYTES)];
        let mut message_data = String::from_utf8_lossy(kept).into_owned();
        if kept.len() < raw.len() {
            message_data.push_str(&format!("…[truncated, {} bytes in all]", raw.len()));
        }
        Self {
            message_data,
            message_digest,
            error_message: truncate_chars(&error_message, 2000),
            status,
            retryable,
            source,
            next_retry_at,
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_have_the_same_digest() {
        let now = Utc::now();
        let a = NewFailure::poison(b"abc", "x", Source::Kafka, now);
        let b = NewFailure::retryable(b"abc", "y", Source::Rabbitmq, now);
        assert_eq!(a.message_digest, b.message_digest);
        assert_eq!(a.message_digest.len(), 64);
        assert_ne!(
            a.message_digest,
            NewFailure::poison(b"abd", "x", Source::Kafka, now).message_digest
        );
    }

    #[test]
    fn poison_is_final_and_not_retryable() {
        let f = NewFailure::poison(b"{", "bad", Source::Rabbitmq, Utc::now());
        assert_eq!((f.status, f.retryable), (FailureStatus::Failed, false));
    }

    #[test]
    fn huge_and_non_utf8_messages_are_kept_as_bounded_text() {
        let raw = vec![0xff; 1024 * 1024];
        let f = NewFailure::poison(&raw, "too large", Source::Kafka, Utc::now());
        assert!(f.message_data.len() < NewFailure::MAX_DATA_BYTES * 4);
        assert!(
            f.message_data
                .ends_with("[truncated, 1048576 bytes in all]")
        );
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
}
