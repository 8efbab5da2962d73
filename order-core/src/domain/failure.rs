use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{FailureStatus, FieldError, Source};

/// An operator's note on a failure resolved by hand: trimmed, not empty, at
/// most [`ResolutionNote::MAX_CHARS`] characters, no control characters but
/// line breaks and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionNote(String);

impl ResolutionNote {
    /// The longest note, in characters (after trimming).
    pub const MAX_CHARS: usize = 1000;

    /// Validates a note given as `field`.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when the note is empty or blank, longer
    /// than [`ResolutionNote::MAX_CHARS`] characters, or holds a control
    /// character other than a line break or a tab.
    pub fn parse(field: &'static str, note: &str) -> Result<Self, FieldError> {
        let note = note.trim();
        if note.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        let chars = note.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                field,
                format!(
                    "must be at most {} characters, got {chars}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if let Some(c) = note
            .chars()
            .find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(FieldError::new(
                field,
                format!(
                    "must not contain control characters, found U+{:04X}",
                    u32::from(c)
                ),
            ));
        }
        Ok(Self(note.to_owned()))
    }

    /// The note as stored.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A failed order creation, kept for retry or for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The failure's id.
    pub id: i64,
    /// The message as received (shown as `message_data`, `message_encoding`,
    /// `message_size` and `message_truncated`).
    #[serde(flatten)]
    pub message: KeptMessage,
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
    /// The operator's note, once resolved by hand.
    pub resolution_note: Option<String>,
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

/// A message's bytes as kept in a failure record: exactly as received,
/// whatever they are (NUL, invalid UTF-8, binary), up to a cap, with the
/// length of the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMessage {
    /// The first bytes of the message, at most the cap.
    pub bytes: Vec<u8>,
    /// The length of the whole message, in bytes.
    pub size: u64,
}

/// How [`KeptMessage::shown`] wrote the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are UTF-8 text, shown as they are (JSON escapes any control
    /// character).
    Utf8,
    /// The bytes are not UTF-8: standard base64 with padding.
    Base64,
}

impl KeptMessage {
    /// The first `cap` bytes of `raw`, and its length.
    #[must_use]
    pub fn capture(raw: &[u8], cap: usize) -> Self {
        Self {
            bytes: raw[..raw.len().min(cap)].to_vec(),
            size: raw.len() as u64,
        }
    }

    /// A record read back from storage.
    #[must_use]
    pub fn stored(bytes: Vec<u8>, size: i64) -> Self {
        let size = u64::try_from(size).unwrap_or(0).max(bytes.len() as u64);
        Self { bytes, size }
    }

    /// True when only the first bytes were kept.
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        (self.bytes.len() as u64) < self.size
    }

    /// The kept bytes as JSON-safe text: UTF-8 when they are (a message cut
    /// by the cap inside a character counts, without that character's
    /// first bytes), base64 otherwise.
    #[must_use]
    pub fn shown(&self) -> (Encoding, String) {
        use base64::Engine as _;
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => (Encoding::Utf8, text.to_owned()),
            Err(e) if self.is_truncated() && e.error_len().is_none() => (
                Encoding::Utf8,
                String::from_utf8_lossy(&self.bytes[..e.valid_up_to()]).into_owned(),
            ),
            Err(_) => (
                Encoding::Base64,
                base64::engine::general_purpose::STANDARD.encode(&self.bytes),
            ),
        }
    }

    /// The bytes back from what [`KeptMessage::shown`] wrote.
    ///
    /// # Errors
    /// When `text` is not valid base64 for [`Encoding::Base64`].
    pub fn from_shown(encoding: Encoding, text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine as _;
        match encoding {
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text),
        }
    }
}

impl Serialize for KeptMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let (encoding, text) = self.shown();
        let mut s = serializer.serialize_struct("KeptMessage", 4)?;
        s.serialize_field("message_data", &text)?;
        s.serialize_field("message_encoding", &encoding)?;
        s.serialize_field("message_size", &self.size)?;
        s.serialize_field("message_truncated", &self.is_truncated())?;
        s.end()
    }
}

/// A failure to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFailure {
    /// The message's bytes (all of them for a retryable failure; poison up
    /// to the cap).
    pub message: KeptMessage,
    /// SHA-256 of the raw bytes, hex: the same message is recorded once.
    pub message_digest: String,
    /// Why it failed (control characters escaped, at most 2,000 characters
    /// and an ellipsis when cut).
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
    /// The default cap on the bytes kept of a poison message.
    pub const DEFAULT_KEPT_BYTES: usize = 64 * 1024;

    /// The longest `error_message`, in characters.
    pub const MAX_ERROR_CHARS: usize = 2000;

    /// A message that can never become an order: recorded as `failed`,
    /// keeping at most [`NewFailure::DEFAULT_KEPT_BYTES`] of it.
    #[must_use]
    pub fn poison(
        raw: &[u8],
        reason: impl Into<String>,
        source: Source,
        now: DateTime<Utc>,
    ) -> Self {
        Self::poison_kept(raw, Self::DEFAULT_KEPT_BYTES, reason, source, now)
    }

    /// A poison message keeping at most `cap` bytes of it.
    #[must_use]
    pub fn poison_kept(
        raw: &[u8],
        cap: usize,
        reason: impl Into<String>,
        source: Source,
        now: DateTime<Utc>,
    ) -> Self {
        Self::build(
            raw,
            cap,
            &reason.into(),
            FailureStatus::Failed,
            false,
            source,
            now,
        )
    }

    /// A valid message whose write failed: recorded as `pending`, due at
    /// `due`, whole (it is a valid message, so at most
    /// [`crate::domain::MAX_MESSAGE_BYTES`]): the retry needs every byte.
    #[must_use]
    pub fn retryable(
        raw: &[u8],
        reason: impl Into<String>,
        source: Source,
        due: DateTime<Utc>,
    ) -> Self {
        Self::build(
            raw,
            usize::MAX,
            &reason.into(),
            FailureStatus::Pending,
            true,
            source,
            due,
        )
    }

    fn build(
        raw: &[u8],
        cap: usize,
        error_message: &str,
        status: FailureStatus,
        retryable: bool,
        source: Source,
        next_retry_at: DateTime<Utc>,
    ) -> Self {
        let digest = Sha256::digest(raw);
        let message_digest = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            message: KeptMessage::capture(raw, cap),
            message_digest,
            error_message: printable(error_message, Self::MAX_ERROR_CHARS),
            status,
            retryable,
            source,
            next_retry_at,
        }
    }

    /// About how many bytes this record takes in a statement.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.message.bytes.len() + self.error_message.len() + 256
    }
}

/// An error message as stored: every control character written as
/// `\u{…}` (no database refuses the result), at most
/// [`NewFailure::MAX_ERROR_CHARS`] characters and, when cut, an ellipsis.
#[must_use]
pub fn printable_error(s: &str) -> String {
    printable(s, NewFailure::MAX_ERROR_CHARS)
}

/// `s` with every control character written as `\u{…}`, cut to at most
/// `max` characters of the result (and an ellipsis when cut).
fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut written = 0;
    for c in s.chars() {
        let escaped = c
            .is_control()
            .then(|| format!("\\u{{{:04x}}}", u32::from(c)));
        let len = escaped.as_ref().map_or(1, |e| e.chars().count());
        if written + len > max {
            out.push('…');
            break;
        }
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
        written += len;
    }
    out
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
    fn a_huge_message_keeps_its_first_bytes_exactly_and_its_whole_length() {
        let mut raw = vec![0xff; 1024 * 1024];
        raw[0] = 0;
        let f = NewFailure::poison(&raw, "too large", Source::Kafka, Utc::now());
        assert_eq!(f.message.bytes, raw[..NewFailure::DEFAULT_KEPT_BYTES]);
        assert_eq!(f.message.size, 1024 * 1024);
        assert!(f.message.is_truncated());
        let f = NewFailure::poison_kept(&raw, 10, "too large", Source::Kafka, Utc::now());
        assert_eq!(f.message.bytes, raw[..10]);
    }

    #[test]
    fn a_retryable_failure_keeps_every_byte() {
        let raw = vec![b'x'; 200_000];
        let f = NewFailure::retryable(&raw, "x", Source::Kafka, Utc::now());
        assert_eq!(f.message.bytes.len(), 200_000);
        assert!(!f.message.is_truncated());
    }

    #[test]
    fn text_is_shown_as_utf8_and_anything_else_as_base64() {
        let text = KeptMessage::capture("{\"a\":\"caf\u{e9}\u{0}\"}".as_bytes(), 1000);
        assert_eq!(
            text.shown(),
            (Encoding::Utf8, "{\"a\":\"caf\u{e9}\u{0}\"}".into())
        );
        let binary = KeptMessage::capture(&[0xc3, 0x28, 0x00, 0xff], 1000);
        assert_eq!(binary.shown(), (Encoding::Base64, "wygA/w==".into()));
        let json = serde_json::to_value(&binary).unwrap();
        assert_eq!(json["message_encoding"], "base64");
        assert_eq!(json["message_size"], 4);
        assert_eq!(json["message_truncated"], false);
    }

    #[test]
    fn text_cut_inside_a_character_by_the_cap_is_still_text() {
        let kept = KeptMessage::capture("ab\u{e9}".as_bytes(), 3);
        assert!(kept.is_truncated());
        assert_eq!(kept.shown(), (Encoding::Utf8, "ab".into()));
        // Not cut by the cap: the same bytes are not UTF-8.
        let whole = KeptMessage::capture(&"ab\u{e9}".as_bytes()[..3], 3);
        assert_eq!(whole.shown().0, Encoding::Base64);
    }

    #[test]
    fn shown_bytes_decode_back_to_the_kept_bytes() {
        for raw in [
            &b"plain"[..],
            &[0xff, 0xfe, 0x00],
            &[],
            "\u{0}\u{1b}[31m".as_bytes(),
        ] {
            let kept = KeptMessage::capture(raw, 1000);
            let (encoding, text) = kept.shown();
            assert_eq!(KeptMessage::from_shown(encoding, &text).unwrap(), raw);
        }
    }

    #[test]
    fn error_messages_are_printable_and_bounded() {
        let f = NewFailure::poison(b"x", "bad \u{0} and \u{1b}", Source::Kafka, Utc::now());
        assert_eq!(f.error_message, "bad \\u{0000} and \\u{001b}");
        let f = NewFailure::poison(b"x", "e".repeat(5000), Source::Kafka, Utc::now());
        assert_eq!(
            f.error_message.chars().count(),
            NewFailure::MAX_ERROR_CHARS + 1
        );
    }

    #[test]
    fn a_resolution_note_is_trimmed_non_empty_bounded_and_printable() {
        assert_eq!(
            ResolutionNote::parse("note", "  refunded by hand\n ")
                .unwrap()
                .as_str(),
            "refunded by hand"
        );
        let longest = "\u{e9}".repeat(ResolutionNote::MAX_CHARS);
        assert_eq!(
            ResolutionNote::parse("note", &longest).unwrap().as_str(),
            longest
        );
        assert!(ResolutionNote::parse("note", "line 1\nline 2\ttab").is_ok());
        for bad in [
            String::new(),
            " \n\t ".into(),
            "x".repeat(ResolutionNote::MAX_CHARS + 1),
            "a\u{0}b".into(),
            "a\u{1b}[31mb".into(),
        ] {
            let err = ResolutionNote::parse("note", &bad).unwrap_err();
            assert_eq!(err.field, "note", "{bad:?}");
        }
    }
}
