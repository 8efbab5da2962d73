//! Fuzzes the seckill-message codec and the failure-record encoding with the
//! same bytes a broker could deliver.
//!
//! Message codec: `SeckillMessage::parse` never panics; a message it accepts
//! has no control character in a string field and its canonical JSON parses
//! back to an equal message (and the same canonical JSON).
//!
//! Failure record: `NewFailure::poison_kept` with a cap taken from the input
//! keeps exactly the first `cap` bytes and the whole length, a 64-hex-digit
//! digest and a printable, bounded `error_message`; what `KeptMessage::shown`
//! writes decodes back to the kept bytes (or, for text cut by the cap inside
//! a character, to the kept bytes without that character's first bytes), and
//! the record serializes to JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use order_core::domain::{
    Encoding, KeptMessage, MAX_MESSAGE_BYTES, MessageError, NewFailure, SeckillMessage, Source,
};

fuzz_target!(|data: &[u8]| {
    let cap = cap_for(data);
    // The worker records a poison message with its parse error as the reason.
    let reason = check_codec(data);
    check_failure(data, cap, &reason);
    // Any other text as the reason (database errors, operators).
    check_failure(data, cap, &String::from_utf8_lossy(data));
});

/// Parses `data`, checks what came out, and returns the reason a worker would
/// record (the error, or a placeholder for a valid message).
fn check_codec(data: &[u8]) -> String {
    let message = match SeckillMessage::parse(data) {
        Ok(message) => message,
        Err(e) => {
            if data.len() > MAX_MESSAGE_BYTES {
                assert!(
                    matches!(e, MessageError::TooLarge { .. }),
                    "a message over the limit is refused for its size, not for {e:?}"
                );
            }
            return e.to_string();
        }
    };
    assert!(
        data.len() <= MAX_MESSAGE_BYTES,
        "accepted {} bytes",
        data.len()
    );
    assert!(message.user_id.get() > 0);
    assert!(message.product_id.get() > 0);
    assert!((1..=1000).contains(&message.quantity.get()));
    let _ = message.total_amount();

    let strings = [
        Some(message.seckill_id.as_str()),
        message.product_name.as_deref(),
    ];
    for text in strings.into_iter().flatten() {
        assert!(
            !text.chars().any(char::is_control),
            "a control character was accepted in {text:?}"
        );
    }

    let json = message.to_json();
    let again = SeckillMessage::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("canonical JSON {json} does not parse again: {e}"));
    assert_eq!(
        again, message,
        "canonical JSON {json} parses to another message"
    );
    assert_eq!(again.to_json(), json, "canonical JSON is not stable");
    "valid message recorded as poison".to_owned()
}

/// The cap on kept bytes, from the input's last two bytes: sometimes none,
/// sometimes the default, otherwise anywhere from 0 to the input's length.
fn cap_for(data: &[u8]) -> usize {
    let [.., a, b] = data else {
        return data.len();
    };
    let pick = u16::from_le_bytes([*a, *b]);
    match pick % 16 {
        0 => usize::MAX,
        1 => NewFailure::DEFAULT_KEPT_BYTES,
        _ => usize::from(pick) % (data.len() + 1),
    }
}

/// Records `raw` as poison with `reason` and checks the record.
fn check_failure(raw: &[u8], cap: usize, reason: &str) {
    let failure = NewFailure::poison_kept(raw, cap, reason, Source::Kafka, chrono::Utc::now());

    // error_message: printable and bounded.
    if let Some(c) = failure.error_message.chars().find(|c| c.is_control()) {
        panic!(
            "error_message holds control character U+{:04X}: {:?}",
            u32::from(c),
            failure.error_message
        );
    }
    let chars = failure.error_message.chars().count();
    assert!(
        chars <= NewFailure::MAX_ERROR_CHARS + 1,
        "error_message is {chars} characters (reason: {} characters, limit {} + 1)",
        reason.chars().count(),
        NewFailure::MAX_ERROR_CHARS
    );

    // Digest: 64 lowercase hex digits.
    let digest = &failure.message_digest;
    assert_eq!(digest.len(), 64, "digest {digest:?}");
    assert!(
        digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "digest {digest:?}"
    );

    // Kept bytes: exactly the first `cap`, and the whole length.
    let kept = &failure.message;
    let end = raw.len().min(cap);
    assert!(
        kept.bytes == raw[..end],
        "kept bytes are not the first {end} bytes"
    );
    assert_eq!(kept.size, raw.len() as u64);
    assert_eq!(kept.is_truncated(), cap < raw.len());

    check_shown(kept);
}

fn check_shown(kept: &KeptMessage) {
    let (encoding, text) = kept.shown();
    let back = KeptMessage::from_shown(encoding, &text)
        .unwrap_or_else(|e| panic!("shown {encoding:?} text does not decode: {e}"));
    let utf8 = std::str::from_utf8(&kept.bytes);
    match (encoding, utf8) {
        (Encoding::Utf8, Ok(_)) => assert!(back == kept.bytes, "UTF-8 text changed"),
        (Encoding::Utf8, Err(e)) => {
            // Cut by the cap inside a character: shown without that
            // character's first bytes (one to three of them).
            assert!(kept.is_truncated(), "invalid UTF-8 shown as text");
            assert!(e.error_len().is_none(), "invalid UTF-8 shown as text");
            assert!(kept.bytes.starts_with(&back), "shown text is not a prefix");
            let cut = kept.bytes.len() - back.len();
            assert!((1..=3).contains(&cut), "{cut} bytes dropped");
        }
        (Encoding::Base64, Ok(_)) => panic!("UTF-8 text shown as base64"),
        (Encoding::Base64, Err(_)) => assert!(back == kept.bytes, "base64 does not decode back"),
    }

    let json = serde_json::to_string(kept).expect("a kept message serializes");
    let value: serde_json::Value = serde_json::from_str(&json).expect("its JSON parses");
    assert_eq!(value["message_data"].as_str(), Some(text.as_str()));
    assert_eq!(value["message_size"].as_u64(), Some(kept.size));
    assert_eq!(
        value["message_truncated"].as_bool(),
        Some(kept.is_truncated())
    );
    let encoding_name = match encoding {
        Encoding::Utf8 => "utf8",
        Encoding::Base64 => "base64",
    };
    assert_eq!(value["message_encoding"].as_str(), Some(encoding_name));
}
