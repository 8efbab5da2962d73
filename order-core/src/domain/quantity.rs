use serde::{Deserialize, Serialize};

use super::FieldError;

/// How many units one purchase buys: 1 to 1,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct Quantity(i32);

impl Quantity {
    /// The largest quantity one message may carry.
    pub const MAX: i32 = 1000;

    /// # Errors
    /// A [`FieldError`] on `quantity` outside `1..=1000`.
    pub fn parse(value: i64) -> Result<Self, FieldError> {
        match i32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(FieldError::new(
                "quantity",
                format!("must be between 1 and {} (got {value})", Self::MAX),
            )),
        }
    }

    /// The raw value.
    #[must_use]
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = FieldError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Quantity> for i32 {
    fn from(q: Quantity) -> i32 {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(1000).unwrap().get(), 1000);
    }

    #[test]
    fn zero_and_1001_are_refused() {
        assert_eq!(Quantity::parse(0).unwrap_err().field, "quantity");
        assert!(Quantity::parse(1001).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert!(Quantity::parse(-1).is_err());
    }
}
