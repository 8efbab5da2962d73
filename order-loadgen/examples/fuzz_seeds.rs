//! Writes the seed corpus of the `seckill_message` fuzz target: the malformed
//! corpus (`order_loadgen::corpus::malformed(0)`) and a few valid messages,
//! each cut to [`MAX_SEED_BYTES`].
//!
//! ```sh
//! cargo run -p order-loadgen --example fuzz_seeds [DIR]   # default fuzz/corpus/seckill_message
//! ```
//!
//! Every `seed-*` file in the directory is replaced; other files are left alone.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use order_core::domain::SeckillMessage;
use order_loadgen::corpus;

/// Seeds are cut to this many bytes: past the 64 KiB message limit, so the
/// size check is still reached, but far from the corpus's 1 MiB entries,
/// which would slow the fuzzer. `scripts/fuzz.sh` runs with this `-max_len`.
const MAX_SEED_BYTES: usize = 70_000;

const VALID: [(&str, &str); 6] = [
    (
        "valid design example",
        r#"{"user_id":123,"product_id":456,"quantity":1,"unit_price":99.99,"seckill_id":"seckill_789","timestamp":"2024-01-01T12:00:00Z"}"#,
    ),
    (
        "valid price as text with a product name",
        r#"{"user_id":1,"product_id":2,"quantity":3,"unit_price":"0.10","seckill_id":"s","timestamp":"2024-02-29T23:59:59.999+08:00","product_name":"Caf\u00e9 \u624b\u673a"}"#,
    ),
    (
        "valid limits",
        r#"{"user_id":9223372036854775807,"product_id":9223372036854775807,"quantity":1000,"unit_price":9999999999.99,"seckill_id":"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl","timestamp":"1970-01-01T00:00:00-00:00"}"#,
    ),
    (
        "valid smallest price and raw UTF-8",
        "{\"unit_price\":0.01,\"timestamp\":\"2024-01-01t12:00:00z\",\"seckill_id\":\"秒杀\",\"product_name\":\"手机 📱\",\"quantity\":1,\"product_id\":1,\"user_id\":1}",
    ),
    (
        "valid with whitespace and unknown fields",
        "{ \"user_id\" : 7 ,\n\t\"product_id\":8, \"quantity\":2, \"unit_price\":\"12.5\",\r\n \"seckill_id\":\"x\", \"timestamp\":\"2024-06-30T10:00:00.123456789Z\", \"extra\":[null,{\"a\":-1e5}], \"product_name\":null }",
    ),
    (
        "valid empty product name",
        r#"{"user_id":5,"product_id":6,"quantity":10,"unit_price":1,"seckill_id":"s-1","timestamp":"2030-12-31T23:59:60Z","product_name":""}"#,
    ),
];

fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).with_file_name("fuzz/corpus/seckill_message"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let is_seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"));
        if is_seed {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }

    for (name, text) in VALID {
        SeckillMessage::parse(text.as_bytes()).with_context(|| format!("seed {name:?}"))?;
    }
    let seeds = corpus::malformed(0)
        .into_iter()
        .map(|e| (e.name, e.payload))
        .chain(
            VALID
                .iter()
                .map(|(name, text)| ((*name).to_owned(), text.as_bytes().to_vec())),
        );
    let mut count = 0;
    let mut bytes = 0;
    for (i, (name, mut payload)) in seeds.enumerate() {
        payload.truncate(MAX_SEED_BYTES);
        let path = dir.join(format!("seed-{i:02}-{}", slug(&name)));
        std::fs::write(&path, &payload).with_context(|| format!("writing {}", path.display()))?;
        count += 1;
        bytes += payload.len();
    }
    eprintln!("{count} seeds ({bytes} bytes) in {}", dir.display());
    Ok(())
}
