//! The stream published in a run: the generated messages with the
//! malformed-input corpus and the failing writes woven in, the optional
//! poison flood, and what the database must end with.

use std::ops::Range;

use order_core::domain::{NewFailure, SeckillMessage};
use order_loadgen::corpus::{self, Expect};
use order_loadgen::{Kind, Message, Plan};
use order_testkit::fixtures::Seckill;

/// What the stream holds and the database must end with.
#[derive(Debug, Default)]
pub struct Expected {
    pub sent: usize,
    pub orders: usize,
    pub duplicates: usize,
    pub poison: usize,
    /// Valid messages whose write always fails (total beyond NUMERIC(12,2)).
    pub failing: usize,
    /// Digests of the corpus's poison entries, with their names.
    pub corpus_poison: Vec<(String, String)>,
    /// Users of the corpus's valid entries.
    pub corpus_order_users: Vec<i64>,
    /// Digests of the flood's messages (`--poison-flood`).
    pub flood_poison: Vec<String>,
    /// Bytes of the flood.
    pub flood_bytes: usize,
}

/// The generated stream with the corpus and the failing writes woven in,
/// and `flood` large poison messages in one block right after the corpus
/// (the block's range is returned: it is published unpaced).
pub fn stream(
    count: usize,
    seed: u64,
    flood: usize,
) -> anyhow::Result<(Vec<Message>, Expected, Range<usize>)> {
    let (mut messages, summary) = order_loadgen::generate(&Plan {
        count,
        users: 20_000,
        products: 50,
        duplicate_ratio: 0.3,
        poison_ratio: 0.01,
        seed,
    })?;
    let tag = u32::try_from(seed % 1_000_000).expect("below a million");
    let corpus = corpus::malformed(tag);
    let last_corpus = corpus.last().map(|entry| entry.payload.clone());
    let failing = (count / 500).max(5);
    let mut expected = Expected {
        sent: 0,
        orders: summary.distinct_pairs,
        duplicates: summary.duplicates,
        poison: summary.poison,
        failing,
        ..Expected::default()
    };
    let mut extra = Vec::new();
    for entry in corpus {
        match entry.expect {
            Expect::Poison => {
                expected.poison += 1;
                expected.corpus_poison.push((
                    NewFailure::poison(
                        &entry.payload,
                        "",
                        order_core::domain::Source::Rabbitmq,
                        chrono::Utc::now(),
                    )
                    .message_digest,
                    entry.name,
                ));
            }
            Expect::Order => {
                expected.orders += 1;
                expected
                    .corpus_order_users
                    .push(corpus::CORPUS_USER_BASE + i64::from(tag));
            }
        }
        extra.push(Message {
            payload: entry.payload,
            user_id: 1,
            kind: match entry.expect {
                Expect::Poison => Kind::Poison,
                Expect::Order => Kind::New,
            },
        });
    }
    // Valid, but quantity × unit_price does not fit NUMERIC(12,2): every
    // write fails, so the compensators retry them until they give up.
    for i in 0..failing {
        let user = 8_000_000_000 + i64::try_from(i).expect("small");
        extra.push(Message {
            payload: Seckill::new(user, 1)
                .quantity(2)
                .unit_price_number("9999999999.99")
                .seckill_id("chaos")
                .bytes(),
            user_id: user,
            kind: Kind::New,
        });
    }
    // Spread them over the first 80 % of the stream.
    let step = (messages.len() * 4 / 5 / extra.len().max(1)).max(1);
    for (i, message) in extra.into_iter().enumerate().rev() {
        messages.insert((i * step).min(messages.len()), message);
    }
    let at = last_corpus
        .and_then(|last| messages.iter().position(|m| m.payload == last))
        .map_or(0, |i| i + 1);
    let burst = poison_flood(tag, flood, &mut expected)?;
    let range = at..at + burst.len();
    messages.splice(at..at, burst);
    expected.sent = messages.len();
    Ok((messages, expected, range))
}

/// Bytes of control characters in each flood message, after its unique prefix.
const FLOOD_FILL: usize = 60 * 1024;

/// `n` unique poison messages of about 60 KiB: a prefix, then control
/// characters. Each one is a poison row: its digest goes into `expected`.
fn poison_flood(tag: u32, n: usize, expected: &mut Expected) -> anyhow::Result<Vec<Message>> {
    let fill = "\u{2}".repeat(FLOOD_FILL);
    let mut flood = Vec::with_capacity(n);
    for i in 0..n {
        let payload = format!("flood {tag} {i} {fill}").into_bytes();
        anyhow::ensure!(
            SeckillMessage::parse(&payload).is_err(),
            "flood message {i} parses as a purchase"
        );
        expected.poison += 1;
        expected.flood_bytes += payload.len();
        expected.flood_poison.push(
            NewFailure::poison(
                &payload,
                "",
                order_core::domain::Source::Rabbitmq,
                chrono::Utc::now(),
            )
            .message_digest,
        );
        flood.push(Message {
            payload,
            // The Kafka key: spread over the partitions.
            user_id: i64::try_from(i).expect("a count fits i64"),
            kind: Kind::Poison,
        });
    }
    Ok(flood)
}
