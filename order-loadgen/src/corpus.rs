//! Malformed seckill messages: the bad input a broker can carry.
//!
//! Every entry but the ones marked [`Expect::Order`] is poison: the worker
//! must record it as a failure row with its reason and acknowledge it, never
//! crash or stall on it. Unknown fields are ignored by the message contract,
//! so an otherwise valid message with extra fields is an order, not poison.
//!
//! `tag` makes every payload unique (failure rows are unique by the
//! message's digest) and keeps the valid entries' (user, product) pairs
//! apart from other streams: their user is `CORPUS_USER_BASE + tag`.

/// What a corpus message must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A poison failure row with a reason.
    Poison,
    /// An order (the entry is valid despite how it looks).
    Order,
}

/// One malformed (or odd-looking) message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What is wrong with it, for reports.
    pub name: String,
    /// The bytes.
    pub payload: Vec<u8>,
    /// What it must become.
    pub expect: Expect,
}

/// Users of the corpus's valid entries start above this, far from generated users.
pub const CORPUS_USER_BASE: i64 = 9_000_000_000;

use order_core::domain::REQUIRED_FIELDS;

const MIB: usize = 1024 * 1024;

/// The corpus; `tag` is woven into every payload.
#[must_use]
pub fn malformed(tag: u32) -> Vec<Entry> {
    let user = CORPUS_USER_BASE + i64::from(tag);
    let valid = |price: &str, extra: &str| {
        format!(
            r#"{{"user_id":{user},"product_id":1,"quantity":1,"unit_price":{price},"seckill_id":"corpus_{tag}","timestamp":"2024-01-01T00:00:00Z"{extra}}}"#
        )
    };
    // The valid template with one piece replaced.
    let swap = |from: &str, to: &str| valid("1.00", "").replace(from, to);
    let poison = |name: &str, text: String| Entry {
        name: name.to_owned(),
        payload: text.into_bytes(),
        expect: Expect::Poison,
    };
    let mut entries = vec![
        poison("empty body", " ".repeat(tag as usize)),
        poison(
            "truncated JSON",
            valid("1.00", "")[..60].to_owned() + &format!("#{tag}"),
        ),
        poison("JSON null", format!("null{}", " ".repeat(tag as usize))),
        poison("a JSON array", format!("[{user},1,1]")),
        poison("a JSON string", format!("\"{user}\"")),
        poison(
            "trailing garbage",
            valid("1.00", "") + &format!(" trailing {tag}"),
        ),
        poison(
            "user_id as a word",
            swap(
                &format!("\"user_id\":{user}"),
                &format!("\"user_id\":\"u{tag}\""),
            ),
        ),
        poison(
            "user_id as an object",
            swap(
                &format!("\"user_id\":{user}"),
                &format!("\"user_id\":{{\"id\":{tag}}}"),
            ),
        ),
        poison(
            "product_id as a boolean",
            swap("\"product_id\":1", "\"product_id\":true"),
        ),
        poison(
            "quantity as a word",
            swap("\"quantity\":1", "\"quantity\":\"many\""),
        ),
        poison(
            "quantity with a fraction",
            swap("\"quantity\":1", "\"quantity\":1.5"),
        ),
        poison("unit_price as an array", valid("[1,2]", "")),
        poison(
            "seckill_id as a number",
            swap(
                &format!("\"seckill_id\":\"corpus_{tag}\""),
                "\"seckill_id\":7",
            ),
        ),
        poison(
            "user_id beyond 64 bits",
            swap(
                &format!("\"user_id\":{user}"),
                &format!("\"user_id\":123456789012345678901234567890{tag}"),
            ),
        ),
        poison(
            "quantity beyond 64 bits",
            swap("\"quantity\":1", "\"quantity\":99999999999999999999999"),
        ),
        poison(
            "quantity above the limit",
            swap("\"quantity\":1", "\"quantity\":1001"),
        ),
        poison("unit_price of 10^10", valid("10000000000", "")),
        poison("unit_price 1e400", valid("1e400", "")),
        poison("unit_price NaN", valid("NaN", "")),
        poison("unit_price \"NaN\"", valid("\"NaN\"", "")),
        poison("unit_price Infinity", valid("Infinity", "")),
        poison("unit_price -Infinity", valid("-Infinity", "")),
        poison("unit_price \"Infinity\"", valid("\"Infinity\"", "")),
        poison("negative unit_price", valid("-1.00", "")),
        poison("zero unit_price", valid("0", "")),
        poison("zero unit_price with decimals", valid("0.00", "")),
        poison("negative zero unit_price", valid("-0", "")),
        poison("3-decimal unit_price", valid("1.005", "")),
        poison("3-decimal unit_price as text", valid("\"12.345\"", "")),
        poison("unit_price as an empty string", valid("\"\"", "")),
        poison(
            "user_id zero",
            swap(&format!("\"user_id\":{user}"), "\"user_id\":0"),
        ),
        poison(
            "negative product_id",
            swap("\"product_id\":1", "\"product_id\":-1"),
        ),
        poison("empty seckill_id", swap(&format!("corpus_{tag}"), "")),
        poison(
            "seckill_id of 65 characters",
            swap(&format!("corpus_{tag}"), &format!("{tag:x<65}")),
        ),
        poison(
            "timestamp not RFC 3339",
            swap("2024-01-01T00:00:00Z", "yesterday"),
        ),
        poison(
            "null user_id",
            swap(&format!("\"user_id\":{user}"), "\"user_id\":null"),
        ),
        poison(
            "duplicate key",
            swap("\"product_id\":1", "\"product_id\":1,\"product_id\":2"),
        ),
        poison(
            "product_name of 256 characters",
            valid(
                "1.00",
                &format!(",\"product_name\":\"{}\"", "n".repeat(256)),
            ),
        ),
        poison(
            "1 MiB body",
            valid(
                "1.00",
                &format!(",\"product_name\":\"{}\"", "x".repeat(MIB)),
            ),
        ),
        poison("1 MiB of garbage", format!("{tag}{}", "\u{7}".repeat(MIB))),
    ];
    // Bytes that break a database rather than the parser: NUL, which a
    // PostgreSQL text column refuses, and other control characters, in and
    // around every string field.
    let mut nul_after_body = valid("1.00", "").into_bytes();
    nul_after_body.push(0);
    entries.push(Entry {
        name: "NUL after the body".into(),
        payload: nul_after_body,
        expect: Expect::Poison,
    });
    let mut raw_nul = swap(&format!("corpus_{tag}"), &format!("corpus_{tag}#")).into_bytes();
    let hash = raw_nul
        .iter()
        .position(|&b| b == b'#')
        .expect("the marker is there");
    raw_nul[hash] = 0;
    entries.push(Entry {
        name: "raw NUL inside seckill_id".into(),
        payload: raw_nul,
        expect: Expect::Poison,
    });
    entries.push(Entry {
        name: "NUL bytes only".into(),
        payload: [vec![0; 16], format!("{tag}").into_bytes()].concat(),
        expect: Expect::Poison,
    });
    entries.extend([
        poison(
            "NUL escaped in seckill_id",
            swap(&format!("corpus_{tag}"), &format!("corpus_{tag}\\u0000")),
        ),
        poison(
            "NUL escaped in product_name",
            valid("1.00", ",\"product_name\":\"Phone\\u0000\""),
        ),
        poison(
            "terminal escape in product_name",
            valid("1.00", ",\"product_name\":\"\\u001b[31mred\\u001b[0m\""),
        ),
        poison(
            "C1 control in seckill_id",
            swap(&format!("corpus_{tag}"), &format!("corpus_{tag}\\u0085")),
        ),
        poison(
            "newline in seckill_id",
            swap(&format!("corpus_{tag}"), &format!("corpus_{tag}\\n")),
        ),
        poison(
            "NUL escaped in timestamp",
            swap("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z\\u0000"),
        ),
        poison(
            "NUL escaped in unit_price text",
            valid("\"1.00\\u0000\"", ""),
        ),
        poison(
            "lone surrogate in product_name",
            valid("1.00", ",\"product_name\":\"\\ud800\""),
        ),
        poison(
            "60 KiB of control characters",
            format!("{tag}{}", "\u{1}".repeat(60 * 1024)),
        ),
    ]);
    let template: serde_json::Value =
        serde_json::from_str(&valid("1.00", "")).expect("the valid template is JSON");
    for field in REQUIRED_FIELDS {
        let mut object = template.as_object().expect("an object").clone();
        object.remove(field);
        entries.push(Entry {
            name: format!("missing {field}"),
            payload: serde_json::to_vec(&object).expect("JSON"),
            expect: Expect::Poison,
        });
    }
    let mut invalid_utf8 = valid("1.00", ",\"product_name\":\"caf\u{e9}\"").into_bytes();
    let e_acute = invalid_utf8
        .windows(2)
        .position(|w| w == [0xc3, 0xa9])
        .expect("the é is there");
    invalid_utf8[e_acute] = 0xff;
    entries.push(Entry {
        name: "invalid UTF-8".into(),
        payload: invalid_utf8,
        expect: Expect::Poison,
    });
    entries.push(Entry {
        name: "invalid UTF-8 outside JSON".into(),
        payload: [format!("{tag}").as_bytes(), &[0xc3, 0x28, 0xa0, 0xa1]].concat(),
        expect: Expect::Poison,
    });
    entries.push(Entry {
        name: "extra fields (ignored by the contract: an order)".into(),
        payload: valid(
            "1.00",
            r#","coupon":"FREE","admin":true,"nested":{"a":[1,2]}"#,
        )
        .into_bytes(),
        expect: Expect::Order,
    });
    entries
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use order_core::domain::SeckillMessage;

    use super::*;

    #[test]
    fn every_entry_is_what_it_claims() {
        for entry in malformed(3) {
            let parsed = SeckillMessage::parse(&entry.payload);
            if entry.expect == Expect::Poison && entry.name.contains("NUL") {
                assert!(
                    entry.payload.contains(&0) || entry.payload.windows(6).any(|w| w == b"\\u0000"),
                    "{} carries a NUL",
                    entry.name
                );
            }
            match entry.expect {
                Expect::Poison => assert!(parsed.is_err(), "{} parsed as {parsed:?}", entry.name),
                Expect::Order => {
                    let message = parsed.unwrap_or_else(|e| panic!("{}: {e}", entry.name));
                    assert_eq!(message.user_id.get(), CORPUS_USER_BASE + 3);
                }
            }
        }
    }

    #[test]
    fn payloads_are_unique_within_and_across_tags() {
        let mut seen = HashSet::new();
        for tag in 0..3 {
            for entry in malformed(tag) {
                assert!(seen.insert(entry.payload), "{} repeats", entry.name);
            }
        }
    }
}
