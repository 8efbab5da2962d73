use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::Quantity;

/// An exact amount of money with two decimal places.
///
/// Built from text only, never from a float, so `0.1 × 3` is `0.30`.
/// Serialized as a JSON string (`"99.99"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(Decimal);

/// Why a price was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a plain decimal number.
    #[error("not a decimal number: {0:?}")]
    NotADecimal(String),
    /// Zero or negative.
    #[error("must be greater than 0 (got {0})")]
    NotPositive(Decimal),
    /// More than two decimal places.
    #[error("must have at most 2 decimal places (got {0})")]
    TooPrecise(Decimal),
    /// 10^10 or more.
    #[error("must be below 10000000000 (got {0})")]
    TooLarge(Decimal),
}

impl Money {
    /// Decimal places every amount carries.
    pub const SCALE: u32 = 2;

    /// Zero, with two decimal places.
    pub const ZERO: Money = Money(Decimal::from_parts(0, 0, 0, false, Self::SCALE));

    /// Parses a unit price: a decimal literal (`99.99`, `1e2`, `"5"`) that is
    /// greater than 0, has at most two decimal places and is below 10^10.
    ///
    /// The literal is parsed exactly; it never passes through a float.
    ///
    /// # Errors
    /// A [`MoneyError`] saying which rule the value breaks.
    pub fn parse_price(literal: &str) -> Result<Self, MoneyError> {
        let value = parse_exact(literal)?;
        if value <= Decimal::ZERO {
            return Err(MoneyError::NotPositive(value));
        }
        let normalized = value.normalize();
        if normalized.scale() > Self::SCALE {
            return Err(MoneyError::TooPrecise(value));
        }
        if normalized >= Decimal::from(10_000_000_000_i64) {
            return Err(MoneyError::TooLarge(value));
        }
        Ok(Self::from_decimal(normalized))
    }

    /// Wraps a decimal read from storage, rescaled to two places.
    #[must_use]
    pub fn from_decimal(mut value: Decimal) -> Self {
        value.rescale(Self::SCALE);
        Self(value)
    }

    /// `self × quantity`, exactly.
    #[must_use]
    pub fn times(self, quantity: Quantity) -> Money {
        Self::from_decimal(self.0 * Decimal::from(quantity.get()))
    }

    /// The underlying decimal (scale 2).
    #[must_use]
    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Money> for Decimal {
    fn from(m: Money) -> Decimal {
        m.0
    }
}

/// Parses a JSON-number-shaped literal exactly: `-?digits(.digits)?([eE][+-]?digits)?`.
fn parse_exact(literal: &str) -> Result<Decimal, MoneyError> {
    let invalid = || MoneyError::NotADecimal(literal.to_owned());
    let bytes = literal.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == int_start {
        return Err(invalid());
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return Err(invalid());
        }
    }
    let mantissa_end = i;
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return Err(invalid());
        }
    }
    if i != bytes.len() {
        return Err(invalid());
    }
    if mantissa_end == bytes.len() {
        Decimal::from_str_exact(literal).map_err(|_| invalid())
    } else {
        Decimal::from_scientific(literal).map_err(|_| invalid())
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_price(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(s: &str) -> Money {
        Money::parse_price(s).unwrap()
    }

    #[test]
    fn prices_keep_two_decimal_places() {
        assert_eq!(price("99.99").to_string(), "99.99");
        assert_eq!(price("5").to_string(), "5.00");
        assert_eq!(price("1.5").to_string(), "1.50");
        assert_eq!(price("1e2").to_string(), "100.00");
        assert_eq!(price("9999999999.99").to_string(), "9999999999.99");
    }

    #[test]
    fn trailing_zeros_beyond_two_places_do_not_count_as_precision() {
        assert_eq!(price("1.100"), price("1.1"));
    }

    #[test]
    fn point_one_times_three_is_exactly_point_three() {
        let total = price("0.1").times(Quantity::parse(3).unwrap());
        assert_eq!(total.to_string(), "0.30");
        assert_eq!(total, price("0.3"));
    }

    #[test]
    fn three_decimal_places_are_refused() {
        assert!(matches!(
            Money::parse_price("1.005"),
            Err(MoneyError::TooPrecise(_))
        ));
    }

    #[test]
    fn zero_and_negative_are_refused() {
        assert!(matches!(
            Money::parse_price("0"),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Money::parse_price("0.00"),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Money::parse_price("-1"),
            Err(MoneyError::NotPositive(_))
        ));
    }

    #[test]
    fn ten_to_the_tenth_is_refused() {
        assert!(matches!(
            Money::parse_price("1e10"),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            Money::parse_price("10000000000"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn non_decimal_text_is_refused() {
        for bad in [
            "", "abc", "1.", ".5", "1_000", "+1", " 1", "1 ", "0x10", "NaN", "1e", "1e+", "1.2.3",
        ] {
            assert!(
                matches!(Money::parse_price(bad), Err(MoneyError::NotADecimal(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn absurd_magnitudes_are_refused_not_panicking() {
        assert!(Money::parse_price("1e400").is_err());
        assert!(Money::parse_price(&"9".repeat(60)).is_err());
        assert!(Money::parse_price("1e-400").is_err());
    }

    #[test]
    fn serializes_as_a_string() {
        assert_eq!(serde_json::to_string(&price("99.99")).unwrap(), "\"99.99\"");
    }
}
