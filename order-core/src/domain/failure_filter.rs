//! Which failures an operator means: the filter of the failure ledger's
//! listing, its grouping by reason and its bulk retry, and the rule that
//! groups reasons.

use chrono::{DateTime, Utc};

use super::{FailureStatus, FieldError, Source};

/// A text to look for in failures' reasons and message bodies: 1 to
/// [`SearchText::MAX_CHARS`] characters, no control character. Matched as a
/// substring, literally (no collation widens it to other accents or other
/// emoji): in a reason without case; in a message body, which is bytes, its
/// ASCII letters in any case and any other character as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    /// The longest search, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Validates a search given as `field`.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when it is empty, too long or holds a
    /// control character (a NUL, which no database text holds, included).
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FieldError> {
        Ok(Self(bounded_text(field, text, Self::MAX_CHARS)?))
    }

    /// The text as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reason group as [`reason_group`] writes it, to filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonGroup(String);

impl ReasonGroup {
    /// The longest group, in characters: a group is at most this long
    /// ([`reason_group`]).
    pub const MAX_CHARS: usize = 200;

    /// Validates a group given as `field`.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when it is empty, too long or holds a
    /// control character.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FieldError> {
        Ok(Self(bounded_text(field, text, Self::MAX_CHARS)?))
    }

    /// The group as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn bounded_text(field: &'static str, text: &str, max: usize) -> Result<String, FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain control characters, found U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(text.to_owned())
}

/// Which failures: each field set narrows the set; none set means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureFilter {
    /// Of this status.
    pub status: Option<FailureStatus>,
    /// Recorded by this source.
    pub source: Option<Source>,
    /// Retryable, or poison.
    pub retryable: Option<bool>,
    /// Recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub until: Option<DateTime<Utc>>,
    /// Holding this text in the reason or the message body.
    pub text: Option<SearchText>,
    /// Whose reason falls in this group ([`reason_group`]).
    pub reason: Option<ReasonGroup>,
}

impl FailureFilter {
    /// Every failure of `status`.
    #[must_use]
    pub fn of_status(status: FailureStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Checks that the time range is not empty by construction.
    ///
    /// # Errors
    /// [`FieldError`] on `to` when the range ends at or before it starts.
    pub fn checked(self) -> Result<Self, FieldError> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Err(FieldError::new(
                "to",
                format!("must be after from ({since} is not before {until})"),
            ));
        }
        Ok(self)
    }
}

/// The parts of a reason that vary from message to message: a trailing
/// ` (got …)`, a JSON error's position ` at line N column M`, and a quoted
/// value at the end. As a regular expression that PostgreSQL's
/// `regexp_replace(…, 'g')` and MariaDB's `REGEXP_REPLACE` read alike: the
/// column `order_failures.reason_group` is computed by the database with
/// this expression (migration `20261207000001_failure_console`), so the
/// database groups and filters by the same rule as [`reason_group`].
pub const REASON_DETAILS: &str = r#" \(got .*\)$| at line [0-9]+ column [0-9]+|: ".*"$"#;

/// A reason's group: the reason without the parts that vary from message
/// to message ([`REASON_DETAILS`]), so that "unit_price: must have at most
/// 2 decimal places (got 1.234)" and "… (got 9.999)" are one group; its
/// first [`ReasonGroup::MAX_CHARS`] characters.
#[must_use]
pub fn reason_group(reason: &str) -> String {
    static DETAILS: std::sync::LazyLock<regex_lite::Regex> = std::sync::LazyLock::new(|| {
        regex_lite::Regex::new(REASON_DETAILS).expect("REASON_DETAILS is a valid expression")
    });
    DETAILS
        .replace_all(reason, "")
        .chars()
        .take(ReasonGroup::MAX_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_without_their_values() {
        for (reason, group) in [
            (
                "unit_price: must have at most 2 decimal places (got 1.234)",
                "unit_price: must have at most 2 decimal places",
            ),
            (
                "message is not a valid JSON object: expected value at line 1 column 7",
                "message is not a valid JSON object: expected value",
            ),
            (
                "timestamp: must be an RFC 3339 date-time (premature end of input): \"2024-\"",
                "timestamp: must be an RFC 3339 date-time (premature end of input)",
            ),
            ("user_id: is required", "user_id: is required"),
            ("", ""),
        ] {
            assert_eq!(reason_group(reason), group, "{reason}");
        }
    }

    #[test]
    fn searches_and_groups_are_bounded_printable_text() {
        assert!(SearchText::parse("q", "decimal").is_ok());
        assert!(SearchText::parse("q", "<script>").is_ok());
        for bad in ["", "a\0b", "a\nb", &"x".repeat(201)] {
            let e = SearchText::parse("q", bad).unwrap_err().to_string();
            assert!(e.starts_with("q: "), "{e}");
        }
        assert!(ReasonGroup::parse("reason", "x").is_ok());
        assert!(ReasonGroup::parse("reason", "\u{7f}").is_err());
    }

    #[test]
    fn an_empty_time_range_is_refused() {
        let t = Utc::now();
        let f = FailureFilter {
            since: Some(t),
            until: Some(t),
            ..FailureFilter::default()
        };
        assert!(f.checked().unwrap_err().to_string().starts_with("to: "));
    }
}
