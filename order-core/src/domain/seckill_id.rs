use serde::{Deserialize, Serialize};

use super::FieldError;

/// The id of the seckill event a purchase belongs to: 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SeckillId(String);

impl SeckillId {
    /// The longest id, in characters.
    pub const MAX_CHARS: usize = 64;

    /// # Errors
    /// A [`FieldError`] on `seckill_id` when empty or longer than 64 characters.
    pub fn parse(value: impl Into<String>) -> Result<Self, FieldError> {
        let value = value.into();
        let chars = value.chars().count();
        if chars == 0 {
            return Err(FieldError::new("seckill_id", "must not be empty"));
        }
        super::message::no_control_characters("seckill_id", &value)?;
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "seckill_id",
                format!(
                    "must be at most {} characters (got {chars})",
                    Self::MAX_CHARS
                ),
            ));
        }
        Ok(Self(value))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SeckillId {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<SeckillId> for String {
    fn from(id: SeckillId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_64_characters_are_accepted() {
        assert!(SeckillId::parse("s").is_ok());
        assert!(
            SeckillId::parse("é".repeat(64)).is_ok(),
            "counts characters, not bytes"
        );
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(SeckillId::parse("a\u{0}").is_err());
        assert!(SeckillId::parse("a\tb").is_err());
    }

    #[test]
    fn empty_and_65_characters_are_refused() {
        assert!(SeckillId::parse("").is_err());
        assert!(SeckillId::parse("x".repeat(65)).is_err());
    }
}
