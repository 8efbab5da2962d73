use serde::{Deserialize, Serialize};

use super::FieldError;

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            /// Accepts strictly positive values.
            ///
            /// # Errors
            /// A [`FieldError`] naming the field when `value <= 0`.
            pub fn parse(value: i64) -> Result<Self, FieldError> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(FieldError::new($field, format!("must be positive (got {value})")))
                }
            }

            /// The raw value.
            #[must_use]
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = FieldError;
            fn try_from(value: i64) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A buyer's id: a positive integer.
    UserId,
    "user_id"
);
positive_id!(
    /// A product's id: a positive integer.
    ProductId,
    "product_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_ids_are_accepted() {
        assert_eq!(UserId::parse(1).unwrap().get(), 1);
        assert_eq!(ProductId::parse(i64::MAX).unwrap().get(), i64::MAX);
    }

    #[test]
    fn zero_and_negative_ids_are_refused_naming_the_field() {
        let err = UserId::parse(0).unwrap_err();
        assert_eq!(err.field, "user_id");
        assert_eq!(ProductId::parse(-5).unwrap_err().field, "product_id");
    }
}
