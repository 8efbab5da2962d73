//! Seckill messages as the seckill service publishes them, built in one
//! place: a valid message by default, and any field changed, given as raw
//! JSON, or left out for hostile cases.
//!
//! ```
//! use order_testkit::fixtures::Seckill;
//!
//! let valid = Seckill::new(1, 2).quantity(3).unit_price("4.50").json();
//! assert!(valid.starts_with(r#"{"user_id":1,"product_id":2,"quantity":3,"unit_price":"4.50""#));
//! let poison = Seckill::new(1, 2).without("unit_price").bytes();
//! assert!(!String::from_utf8(poison).unwrap().contains("unit_price"));
//! ```

/// A seckill-success message under construction; fields keep the order in
/// which the seckill service writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seckill {
    fields: Vec<(String, String)>,
}

/// JSON text of `text` as a string.
fn string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

impl Seckill {
    /// A valid message: `quantity` 1, `unit_price` `"1.00"`, `seckill_id`
    /// `"sk"`, `timestamp` `2024-01-01T00:00:00Z`.
    #[must_use]
    pub fn new(user_id: i64, product_id: i64) -> Self {
        Self {
            fields: vec![
                ("user_id".into(), user_id.to_string()),
                ("product_id".into(), product_id.to_string()),
                ("quantity".into(), "1".into()),
                ("unit_price".into(), string("1.00")),
                ("seckill_id".into(), string("sk")),
                ("timestamp".into(), string("2024-01-01T00:00:00Z")),
            ],
        }
    }

    /// Sets `key` to `json`, raw JSON text (`"-1"`, `"null"`, `"{}"`);
    /// a key not present yet is appended.
    #[must_use]
    pub fn raw(mut self, key: &str, json: impl Into<String>) -> Self {
        let json = json.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, value)) => *value = json,
            None => self.fields.push((key.to_owned(), json)),
        }
        self
    }

    /// Leaves `key` out.
    #[must_use]
    pub fn without(mut self, key: &str) -> Self {
        self.fields.retain(|(k, _)| k != key);
        self
    }

    /// The quantity.
    #[must_use]
    pub fn quantity(self, quantity: i64) -> Self {
        self.raw("quantity", quantity.to_string())
    }

    /// The unit price as a JSON string (`"4.50"`), as exact decimal text.
    #[must_use]
    pub fn unit_price(self, price: &str) -> Self {
        self.raw("unit_price", string(price))
    }

    /// The unit price as a JSON number (`99.99`, `1.005`, `1e10`).
    #[must_use]
    pub fn unit_price_number(self, number: &str) -> Self {
        self.raw("unit_price", number)
    }

    /// The seckill id.
    #[must_use]
    pub fn seckill_id(self, id: &str) -> Self {
        self.raw("seckill_id", string(id))
    }

    /// The timestamp, RFC 3339 text.
    #[must_use]
    pub fn timestamp(self, at: &str) -> Self {
        self.raw("timestamp", string(at))
    }

    /// The optional product name.
    #[must_use]
    pub fn product_name(self, name: &str) -> Self {
        self.raw("product_name", string(name))
    }

    /// The message as JSON text, compact, fields in order.
    #[must_use]
    pub fn json(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(key, value)| format!("{}:{value}", string(key)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    /// The message as the bytes a broker carries.
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        self.json().into_bytes()
    }
}

/// An order of `version` in `status`, as the database would hand it out:
/// user 7, product 9, one at 1.00, no items (for cache tests).
#[must_use]
pub fn order(
    id: uuid::Uuid,
    version: i32,
    status: order_core::domain::OrderStatus,
) -> order_core::domain::Order {
    let now = chrono::Utc::now();
    order_core::domain::Order {
        id: 1,
        order_id: id,
        user_id: 7,
        product_id: 9,
        quantity: 1,
        unit_price: rust_decimal::Decimal::new(100, 2),
        total_amount: rust_decimal::Decimal::new(100, 2),
        status,
        seckill_id: "sk".into(),
        created_at: now,
        updated_at: now,
        version,
        items: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::Seckill;

    #[test]
    fn a_default_message_is_the_publishers_compact_json() {
        assert_eq!(
            Seckill::new(1, 2).json(),
            r#"{"user_id":1,"product_id":2,"quantity":1,"unit_price":"1.00","seckill_id":"sk","timestamp":"2024-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            Seckill::new(7, 8)
                .unit_price_number("99.99")
                .product_name("Caf\u{e9} \"x\"")
                .raw("user_id", "-7")
                .without("timestamp")
                .json(),
            r#"{"user_id":-7,"product_id":8,"quantity":1,"unit_price":99.99,"seckill_id":"sk","product_name":"Café \"x\""}"#
        );
    }
}
