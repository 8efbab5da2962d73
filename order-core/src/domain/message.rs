//! The seckill-success message: codec and validation.
//!
//! ```json
//! {"user_id":123,"product_id":456,"quantity":1,"unit_price":99.99,
//!  "seckill_id":"seckill_789","timestamp":"2024-01-01T12:00:00Z"}
//! ```
//! `product_name` is optional, unknown fields are ignored. A message that
//! breaks any rule is *poison*: it can never become an order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{FieldError, Money, ProductId, Quantity, SeckillId, UserId};

/// The largest message accepted, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The fields every message must carry (`product_name` is optional).
pub const REQUIRED_FIELDS: [&str; 6] = [
    "user_id",
    "product_id",
    "quantity",
    "unit_price",
    "seckill_id",
    "timestamp",
];

/// The longest `product_name`, in characters (the column's width).
pub const MAX_PRODUCT_NAME_CHARS: usize = 255;

/// A valid seckill-success message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeckillMessage {
    /// The buyer.
    pub user_id: UserId,
    /// The product bought.
    pub product_id: ProductId,
    /// Units bought, 1 to 1,000.
    pub quantity: Quantity,
    /// Price of one unit, exact.
    pub unit_price: Money,
    /// The seckill event.
    pub seckill_id: SeckillId,
    /// When the seckill service accepted the purchase.
    pub timestamp: DateTime<Utc>,
    /// Optional display name of the product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
}

/// Why a message is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8 text.
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// Not a JSON object.
    #[error("message is not a valid JSON object: {0}")]
    Json(String),
    /// A required field is absent or null.
    #[error("{0}: is required")]
    Missing(&'static str),
    /// A field breaks its rule.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// The wire shape: every field kept raw so that each is checked on its own
/// and money is read from its literal text.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    product_id: Option<&'a RawValue>,
    #[serde(borrow)]
    quantity: Option<&'a RawValue>,
    #[serde(borrow)]
    unit_price: Option<&'a RawValue>,
    #[serde(borrow)]
    seckill_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    product_name: Option<&'a RawValue>,
}

impl SeckillMessage {
    /// Decodes and validates one message.
    ///
    /// # Errors
    /// A [`MessageError`] naming the first rule the message breaks.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge {
                size: bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| MessageError::NotUtf8)?;
        let wire: Wire<'_> =
            serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;

        let user_id = UserId::parse(integer("user_id", required("user_id", wire.user_id)?)?)?;
        let product_id = ProductId::parse(integer(
            "product_id",
            required("product_id", wire.product_id)?,
        )?)?;
        let quantity = Quantity::parse(integer("quantity", required("quantity", wire.quantity)?)?)?;
        let unit_price = price(required("unit_price", wire.unit_price)?)?;
        let seckill_id = SeckillId::parse(string(
            "seckill_id",
            required("seckill_id", wire.seckill_id)?,
        )?)?;
        let timestamp = timestamp(required("timestamp", wire.timestamp)?)?;
        let product_name = wire
            .product_name
            .map(|raw| string("product_name", raw))
            .transpose()?;
        if let Some(name) = &product_name {
            let chars = name.chars().count();
            if chars > MAX_PRODUCT_NAME_CHARS {
                return Err(FieldError::new(
                    "product_name",
                    format!("must be at most {MAX_PRODUCT_NAME_CHARS} characters (got {chars})"),
                )
                .into());
            }
        }
        Ok(Self {
            user_id,
            product_id,
            quantity,
            unit_price,
            seckill_id,
            timestamp,
            product_name,
        })
    }

    /// `quantity × unit_price`, exactly.
    #[must_use]
    pub fn total_amount(&self) -> Money {
        self.unit_price.times(self.quantity)
    }

    /// The message's canonical JSON (price as a string).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a validated message always serializes")
    }
}

fn required<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<&'a RawValue, MessageError> {
    raw.ok_or(MessageError::Missing(field))
}

fn type_error(field: &'static str, expected: &str, raw: &RawValue) -> FieldError {
    let got = raw.get();
    let shown: String = got.chars().take(40).collect();
    let ellipsis = if got.chars().count() > 40 { "…" } else { "" };
    FieldError::new(field, format!("must be {expected} (got {shown}{ellipsis})"))
}

fn integer(field: &'static str, raw: &RawValue) -> Result<i64, FieldError> {
    serde_json::from_str::<i64>(raw.get()).map_err(|_| type_error(field, "an integer", raw))
}

/// A string field: JSON text with no control character (U+0000 to U+001F,
/// U+007F to U+009F). NUL cannot be stored in a PostgreSQL `text` column, and
/// no seckill field has a use for the others.
fn string(field: &'static str, raw: &RawValue) -> Result<String, FieldError> {
    let text = serde_json::from_str::<String>(raw.get())
        .map_err(|_| type_error(field, "a string", raw))?;
    no_control_characters(field, &text)?;
    Ok(text)
}

/// Refuses a control character in `text`, naming the field, the character
/// and where it is.
pub(crate) fn no_control_characters(field: &'static str, text: &str) -> Result<(), FieldError> {
    match text.chars().enumerate().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(FieldError::new(
            field,
            format!(
                "must not contain control characters (U+{:04X} at character {})",
                u32::from(c),
                at + 1
            ),
        )),
    }
}

fn price(raw: &RawValue) -> Result<Money, FieldError> {
    let text = raw.get();
    let literal = if text.starts_with('"') {
        string("unit_price", raw)?
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.to_owned()
    } else {
        return Err(type_error(
            "unit_price",
            "a number or a decimal string",
            raw,
        ));
    };
    Money::parse_price(&literal).map_err(|e| FieldError::new("unit_price", e.to_string()))
}

fn timestamp(raw: &RawValue) -> Result<DateTime<Utc>, FieldError> {
    let text = string("timestamp", raw)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            FieldError::new(
                "timestamp",
                format!("must be an RFC 3339 date-time ({e}): {text:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn valid() -> Value {
        json!({
            "user_id": 123,
            "product_id": 456,
            "quantity": 1,
            "unit_price": 99.99,
            "seckill_id": "seckill_789",
            "timestamp": "2024-01-01T12:00:00Z"
        })
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v = valid();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&v).unwrap()
    }

    fn field_of(bytes: &[u8]) -> &'static str {
        match SeckillMessage::parse(bytes) {
            Err(MessageError::Field(e)) => e.field,
            Err(MessageError::Missing(f)) => f,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn the_design_example_is_valid() {
        let m = SeckillMessage::parse(&serde_json::to_vec(&valid()).unwrap()).unwrap();
        assert_eq!(m.user_id.get(), 123);
        assert_eq!(m.product_id.get(), 456);
        assert_eq!(m.quantity.get(), 1);
        assert_eq!(m.unit_price.to_string(), "99.99");
        assert_eq!(m.seckill_id.as_str(), "seckill_789");
        assert_eq!(m.timestamp.to_rfc3339(), "2024-01-01T12:00:00+00:00");
        assert_eq!(m.product_name, None);
    }

    #[test]
    fn number_and_string_prices_are_accepted_and_equal() {
        let a = SeckillMessage::parse(&with("unit_price", json!(99.99))).unwrap();
        let b = SeckillMessage::parse(&with("unit_price", json!("99.99"))).unwrap();
        assert_eq!(a.unit_price, b.unit_price);
        assert_eq!(a, b);
    }

    #[test]
    fn prices_are_read_from_the_literal_not_a_float() {
        // 0.1 has no exact f64; three of them must still be 0.30.
        let raw = br#"{"user_id":1,"product_id":2,"quantity":3,"unit_price":0.1,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
        let m = SeckillMessage::parse(raw).unwrap();
        assert_eq!(m.total_amount().to_string(), "0.30");
        // A literal a float would round (2^53 + 1) is refused for its size, not mangled.
        let raw = br#"{"user_id":1,"product_id":2,"quantity":1,"unit_price":9999999999.99,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
        assert_eq!(
            SeckillMessage::parse(raw).unwrap().unit_price.to_string(),
            "9999999999.99"
        );
    }

    #[test]
    fn three_decimal_places_are_refused() {
        let raw = br#"{"user_id":1,"product_id":2,"quantity":1,"unit_price":1.005,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
        let err = SeckillMessage::parse(raw).unwrap_err();
        assert!(
            err.to_string()
                .contains("unit_price: must have at most 2 decimal places"),
            "{err}"
        );
        assert_eq!(field_of(&with("unit_price", json!("1.005"))), "unit_price");
    }

    #[test]
    fn zero_negative_and_huge_prices_are_refused() {
        for bad in [
            json!(0),
            json!(-1),
            json!("0"),
            json!("-1"),
            json!(1e10),
            json!("1e10"),
            json!(10_000_000_000_u64),
        ] {
            assert_eq!(
                field_of(&with("unit_price", bad.clone())),
                "unit_price",
                "{bad}"
            );
        }
        let raw = br#"{"user_id":1,"product_id":2,"quantity":1,"unit_price":1e10,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
        assert!(
            SeckillMessage::parse(raw)
                .unwrap_err()
                .to_string()
                .contains("below 10000000000")
        );
    }

    #[test]
    fn prices_of_other_types_are_refused() {
        for bad in [
            json!(true),
            json!([1]),
            json!({"a": 1}),
            json!("abc"),
            json!(" 1"),
        ] {
            assert_eq!(
                field_of(&with("unit_price", bad.clone())),
                "unit_price",
                "{bad}"
            );
        }
    }

    #[test]
    fn quantity_outside_1_to_1000_is_refused() {
        assert_eq!(field_of(&with("quantity", json!(0))), "quantity");
        assert_eq!(field_of(&with("quantity", json!(1001))), "quantity");
        assert!(SeckillMessage::parse(&with("quantity", json!(1000))).is_ok());
        assert_eq!(field_of(&with("quantity", json!(1.5))), "quantity");
    }

    #[test]
    fn ids_must_be_positive_integers() {
        assert_eq!(field_of(&with("user_id", json!(0))), "user_id");
        assert_eq!(field_of(&with("user_id", json!(-3))), "user_id");
        assert_eq!(field_of(&with("user_id", json!("123"))), "user_id");
        assert_eq!(field_of(&with("product_id", json!(1.0))), "product_id");
        assert_eq!(
            field_of(&with("product_id", json!(18_446_744_073_709_551_615_u64))),
            "product_id"
        );
    }

    #[test]
    fn every_missing_or_null_field_is_named() {
        for field in REQUIRED_FIELDS {
            assert!(
                matches!(SeckillMessage::parse(&without(field)), Err(MessageError::Missing(f)) if f == field),
                "{field}"
            );
            assert!(
                matches!(SeckillMessage::parse(&with(field, Value::Null)), Err(MessageError::Missing(f)) if f == field)
            );
        }
    }

    #[test]
    fn wrong_types_are_refused_with_the_field() {
        assert_eq!(field_of(&with("seckill_id", json!(789))), "seckill_id");
        assert_eq!(
            field_of(&with("timestamp", json!(1_704_110_400))),
            "timestamp"
        );
        assert_eq!(field_of(&with("product_name", json!(5))), "product_name");
    }

    #[test]
    fn seckill_id_length_is_checked() {
        assert_eq!(field_of(&with("seckill_id", json!(""))), "seckill_id");
        assert_eq!(
            field_of(&with("seckill_id", json!("x".repeat(65)))),
            "seckill_id"
        );
        assert!(SeckillMessage::parse(&with("seckill_id", json!("x".repeat(64)))).is_ok());
    }

    #[test]
    fn timestamps_must_be_rfc3339() {
        assert_eq!(
            field_of(&with("timestamp", json!("2024-01-01"))),
            "timestamp"
        );
        assert_eq!(
            field_of(&with("timestamp", json!("yesterday"))),
            "timestamp"
        );
        let m =
            SeckillMessage::parse(&with("timestamp", json!("2024-01-01T14:00:00+02:00"))).unwrap();
        assert_eq!(
            m.timestamp.to_rfc3339(),
            "2024-01-01T12:00:00+00:00",
            "converted to UTC"
        );
    }

    #[test]
    fn product_name_is_optional_and_bounded() {
        let m = SeckillMessage::parse(&with("product_name", json!("Phone"))).unwrap();
        assert_eq!(m.product_name.as_deref(), Some("Phone"));
        assert!(
            SeckillMessage::parse(&with("product_name", Value::Null))
                .unwrap()
                .product_name
                .is_none()
        );
        assert_eq!(
            field_of(&with("product_name", json!("n".repeat(256)))),
            "product_name"
        );
    }

    #[test]
    fn a_control_character_in_any_string_field_is_refused_naming_the_field() {
        for field in ["seckill_id", "product_name", "timestamp", "unit_price"] {
            for c in [
                '\u{0}', '\u{1}', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
            ] {
                let mut v = valid();
                let text = match field {
                    "timestamp" => format!("2024-01-01T12:00:00Z{c}"),
                    "unit_price" => format!("1.00{c}"),
                    _ => format!("ab{c}cd"),
                };
                v[field] = json!(text);
                let bytes = serde_json::to_vec(&v).unwrap();
                let err = SeckillMessage::parse(&bytes).unwrap_err();
                assert_eq!(field_of(&bytes), field, "{c:?} in {field}: {err}");
                assert!(err.to_string().contains("control characters"), "{err}");
            }
        }
        let err = SeckillMessage::parse(&with("seckill_id", json!("ab\u{0}"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seckill_id: must not contain control characters (U+0000 at character 3)"
        );
    }

    #[test]
    fn text_beyond_ascii_is_still_accepted() {
        let m = SeckillMessage::parse(&with("product_name", json!("caf\u{e9} \u{1f600} \u{200b}")))
            .unwrap();
        assert_eq!(
            m.product_name.as_deref(),
            Some("caf\u{e9} \u{1f600} \u{200b}")
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(SeckillMessage::parse(&with("coupon", json!({"nested": [1, 2]}))).is_ok());
    }

    #[test]
    fn non_json_and_non_objects_are_refused() {
        for bad in [
            &b"not json"[..],
            b"",
            b"[1,2]",
            b"42",
            b"{\"user_id\":1",
            b"{\"unit_price\":NaN}",
        ] {
            assert!(
                matches!(SeckillMessage::parse(bad), Err(MessageError::Json(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let raw = br#"{"user_id":1,"user_id":2,"product_id":2,"quantity":1,"unit_price":1,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
        assert!(matches!(
            SeckillMessage::parse(raw),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(
            SeckillMessage::parse(b"{\"a\":\"\xff\"}"),
            Err(MessageError::NotUtf8)
        );
    }

    #[test]
    fn a_65_kib_body_is_refused_before_parsing() {
        let mut v = valid();
        v["padding"] = json!("p".repeat(65 * 1024));
        let err = SeckillMessage::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                MessageError::TooLarge {
                    limit: MAX_MESSAGE_BYTES,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn canonical_json_round_trips() {
        let m = SeckillMessage::parse(&with("product_name", json!("Phone"))).unwrap();
        let again = SeckillMessage::parse(m.to_json().as_bytes()).unwrap();
        assert_eq!(m, again);
        assert!(m.to_json().contains("\"unit_price\":\"99.99\""));
    }
}
