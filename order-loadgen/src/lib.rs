//! Seckill-success messages for tests, demos and benchmarks, and the
//! publishers that send them.
//!
//! [`generate`] makes a reproducible stream (from a seed) of new purchases,
//! exact duplicates of earlier ones and poison messages, and counts what it
//! holds: one order per distinct (user, product) pair, one failure row per
//! poison message (each poison message is unique), when an empty database
//! takes it. The seed picks the pairs and tags the poison messages, so two
//! streams of different seeds rarely share a purchase (never a poison
//! message); the same seed gives the same stream byte for byte, which a
//! database that took it once turns into duplicates only.

pub mod corpus;
pub mod events;
pub mod kafka;
pub mod rabbitmq;
pub mod sql;

use std::time::Duration;

use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Messages in all.
    pub count: usize,
    /// Distinct users to draw from.
    pub users: i64,
    /// Distinct products to draw from.
    pub products: i64,
    /// Share of messages that repeat an earlier purchase byte for byte.
    pub duplicate_ratio: f64,
    /// Share of messages that can never become an order.
    pub poison_ratio: f64,
    /// Seed of the random choices: which pairs, prices, duplicates and
    /// poison messages. The same seed makes the same stream.
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            count: 1000,
            users: 1_000_000,
            products: 1000,
            duplicate_ratio: 0.0,
            poison_ratio: 0.0,
            seed: 1,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A purchase not sent before.
    New,
    /// An earlier purchase again.
    Duplicate,
    /// Invalid: becomes a failure row, never an order.
    Poison,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// The bytes.
    pub payload: Vec<u8>,
    /// The partition key (the buyer), for Kafka.
    pub user_id: i64,
    /// What it is.
    pub kind: Kind,
}

/// What a stream contains: a description of what was sent, not of what a
/// database holds (a database that took messages of this stream before
/// holds their orders already, and gains nothing from them again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The seed it was generated from (`--seed` repeats it).
    pub seed: u64,
    /// Messages in all.
    pub sent: usize,
    /// Distinct (user, product) pairs among the valid messages: the orders
    /// an empty database ends with.
    pub distinct_pairs: usize,
    /// Exact repeats of earlier purchases of the stream.
    pub duplicates: usize,
    /// Poison messages: the failure rows an empty database ends with.
    pub poison: usize,
}

impl std::fmt::Display for Summary {
    /// One line for people: what was sent, and that it says nothing of what
    /// the database holds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} messages ({} distinct purchases, {} duplicates, {} poison) with seed {} \
             — this describes the stream, not what the database holds (purchases it already \
             had are not created again); check the API (/api/v1/stats/orders, \
             /api/v1/failures) for that; --seed {} sends the same stream again",
            self.sent, self.distinct_pairs, self.duplicates, self.poison, self.seed, self.seed
        )
    }
}

/// A seed for a run given none: random, so that two runs send different
/// purchases (print it, so that a run can be repeated); below 2³², short
/// enough to type again.
#[must_use]
pub fn random_seed() -> u64 {
    u64::from(fastrand::u32(..))
}

/// Generates the stream of `plan`.
///
/// # Errors
/// When the plan asks for more distinct pairs than users × products, or
/// ratios outside 0..=1.
pub fn generate(plan: &Plan) -> anyhow::Result<(Vec<Message>, Summary)> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&plan.duplicate_ratio)
            && (0.0..=1.0).contains(&plan.poison_ratio)
            && plan.duplicate_ratio + plan.poison_ratio <= 1.0,
        "duplicate and poison ratios must be within 0..1 and add up to at most 1"
    );
    anyhow::ensure!(
        plan.users >= 1 && plan.products >= 1,
        "users and products must be at least 1"
    );
    let space = u64::try_from(plan.users.saturating_mul(plan.products)).unwrap_or(u64::MAX);
    anyhow::ensure!(
        plan.count as u64 <= space,
        "{} messages may need {} distinct pairs, but users × products is {space}",
        plan.count,
        plan.count
    );
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    // A stride coprime with the pair space visits every pair once, spread
    // out, from a starting pair the seed picks: another seed, other pairs.
    let stride = coprime_stride(space);
    let start = rng.u64(..space);
    let mut messages = Vec::with_capacity(plan.count);
    let mut valid: Vec<usize> = Vec::new();
    let mut summary = Summary {
        seed: plan.seed,
        ..Summary::default()
    };
    for i in 0..plan.count {
        let roll = rng.f64();
        let message = if roll < plan.poison_ratio {
            summary.poison += 1;
            poison(i, plan.seed, &mut rng)
        } else if roll < plan.poison_ratio + plan.duplicate_ratio && !valid.is_empty() {
            summary.duplicates += 1;
            let earlier = &messages[valid[rng.usize(..valid.len())]];
            Message {
                kind: Kind::Duplicate,
                ..Clone::clone(earlier)
            }
        } else {
            let pair =
                ((summary.distinct_pairs as u64).wrapping_mul(stride) % space + start) % space;
            summary.distinct_pairs += 1;
            #[allow(clippy::cast_possible_wrap)]
            let (user, product) = (
                (pair / plan.products as u64) as i64 + 1,
                (pair % plan.products as u64) as i64 + 1,
            );
            valid.push(i);
            purchase(user, product, STAMP, &mut rng)
        };
        messages.push(message);
    }
    summary.sent = messages.len();
    Ok((messages, summary))
}

fn coprime_stride(space: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    [7_919_u64, 104_729, 1_299_709, 15_485_863, 1]
        .into_iter()
        .find(|p| gcd(*p, space) == 1)
        .unwrap_or(1)
}

fn purchase(user: i64, product: i64, timestamp: &str, rng: &mut fastrand::Rng) -> Message {
    let cents = rng.u32(100..100_000);
    let name = if rng.bool() {
        format!(r#","product_name":"Product {product}""#)
    } else {
        String::new()
    };
    let payload = format!(
        r#"{{"user_id":{user},"product_id":{product},"quantity":{},"unit_price":{}.{:02},"seckill_id":"seckill_{}","timestamp":"{timestamp}"{name}}}"#,
        rng.u32(1..=3),
        cents / 100,
        cents % 100,
        product % 97,
    );
    Message {
        payload: payload.into_bytes(),
        user_id: user,
        kind: Kind::New,
    }
}

/// A message that breaks one rule; the index makes each one unique within
/// the stream, the seed across streams.
fn poison(i: usize, seed: u64, rng: &mut fastrand::Rng) -> Message {
    let user = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
    let payload = match rng.u8(0..5) {
        0 => format!("not json #{i} of seed {seed}"),
        1 => format!(
            r#"{{"user_id":{user},"product_id":1,"quantity":1,"unit_price":1.005,"seckill_id":"poison_{seed:016x}","timestamp":"2024-01-01T00:00:00Z"}}"#
        ),
        2 => format!(
            r#"{{"user_id":{user},"product_id":1,"quantity":0,"unit_price":1,"seckill_id":"poison_{seed:016x}","timestamp":"2024-01-01T00:00:00Z"}}"#
        ),
        3 => format!(
            r#"{{"user_id":{user},"product_id":1,"quantity":1,"seckill_id":"poison_{seed:016x}","timestamp":"2024-01-01T00:00:00Z"}}"#
        ),
        _ => format!(
            r#"{{"user_id":-{user},"product_id":1,"quantity":1,"unit_price":1,"seckill_id":"poison_{seed:016x}","timestamp":"2024-01-01T00:00:00Z"}}"#
        ),
    };
    Message {
        payload: payload.into_bytes(),
        user_id: user,
        kind: Kind::Poison,
    }
}

/// The timestamp every generated purchase carries until it is published:
/// publishers replace it with the moment of publishing ([`stamped`]), so the
/// worker's `message_age_seconds` measures publish → commit.
pub const STAMP: &str = "2000-01-01T00:00:00.000Z";

/// `payload` with [`STAMP`] replaced by now (same width); other payloads as they are.
#[must_use]
pub fn stamped(payload: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let stamp = STAMP.as_bytes();
    match payload.windows(stamp.len()).position(|w| w == stamp) {
        None => std::borrow::Cow::Borrowed(payload),
        Some(at) => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut owned = payload.to_vec();
            owned.splice(at..at + stamp.len(), now.bytes());
            std::borrow::Cow::Owned(owned)
        }
    }
}

/// Spaces sends to at most `per_second` (none: as fast as possible).
#[derive(Debug)]
pub struct Pace {
    interval: Option<tokio::time::Interval>,
}

impl Pace {
    /// A pace of `per_second` messages, sent in ticks of up to 100 per ms-scale tick.
    #[must_use]
    pub fn new(per_second: Option<u32>) -> Self {
        Self {
            interval: per_second.filter(|r| *r > 0).map(|r| {
                let mut i = tokio::time::interval(Duration::from_secs(1) / r);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            }),
        }
    }

    /// Waits for the next slot.
    pub async fn tick(&mut self) {
        if let Some(interval) = &mut self.interval {
            interval.tick().await;
        }
    }
}

/// A progress bar on a terminal; hidden otherwise or when `quiet`.
#[must_use]
pub fn progress(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} messages {per_sec} eta {eta}",
        )
        .expect("a valid progress template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use order_core::domain::SeckillMessage;

    use super::*;

    #[test]
    fn the_summary_matches_the_stream() {
        let plan = Plan {
            count: 5000,
            users: 100,
            products: 100,
            duplicate_ratio: 0.3,
            poison_ratio: 0.01,
            seed: 7,
        };
        let (messages, summary) = generate(&plan).unwrap();
        assert_eq!(summary.sent, 5000);
        let mut pairs = HashSet::new();
        let mut poison = HashSet::new();
        for m in &messages {
            match (m.kind, SeckillMessage::parse(&m.payload)) {
                (Kind::Poison, Err(_)) => assert!(
                    poison.insert(m.payload.clone()),
                    "poison messages are unique"
                ),
                (Kind::New, Ok(p)) => {
                    assert!(pairs.insert((p.user_id, p.product_id)), "a new pair is new")
                }
                (Kind::Duplicate, Ok(p)) => assert!(pairs.contains(&(p.user_id, p.product_id))),
                (kind, parsed) => panic!("{kind:?} parsed as {parsed:?}"),
            }
        }
        assert_eq!(pairs.len(), summary.distinct_pairs);
        assert_eq!(poison.len(), summary.poison);
        assert_eq!(
            summary.distinct_pairs + summary.duplicates + summary.poison,
            5000
        );
        assert!((1200..1800).contains(&summary.duplicates), "{summary:?}");
    }

    fn payloads(plan: &Plan) -> (Vec<Vec<u8>>, Summary) {
        let (messages, summary) = generate(plan).unwrap();
        (messages.into_iter().map(|m| m.payload).collect(), summary)
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let plan = Plan {
            duplicate_ratio: 0.2,
            poison_ratio: 0.05,
            seed: 42,
            ..Plan::default()
        };
        let (a, summary_a) = payloads(&plan);
        let (b, summary_b) = payloads(&plan);
        assert_eq!(a, b, "byte for byte");
        assert_eq!(summary_a, summary_b);
        assert_eq!(summary_a.seed, 42);
    }

    #[test]
    fn another_seed_sends_other_purchases_and_other_poison() {
        let plan = |seed| Plan {
            duplicate_ratio: 0.2,
            poison_ratio: 0.05,
            seed,
            ..Plan::default()
        };
        let pairs_and_poison = |seed| {
            let (messages, _) = generate(&plan(seed)).unwrap();
            let mut pairs = HashSet::new();
            let mut poison = HashSet::new();
            for m in messages {
                match SeckillMessage::parse(&m.payload) {
                    Ok(p) => {
                        pairs.insert((p.user_id, p.product_id));
                    }
                    Err(_) => {
                        poison.insert(m.payload);
                    }
                }
            }
            (pairs, poison)
        };
        let (pairs_1, poison_1) = pairs_and_poison(1);
        let (pairs_2, poison_2) = pairs_and_poison(2);
        assert!(pairs_1.len() > 700 && poison_1.len() > 20);
        // A database that took the first stream creates orders for the second.
        assert!(
            pairs_1.is_disjoint(&pairs_2),
            "{} shared purchases",
            pairs_1.intersection(&pairs_2).count()
        );
        assert!(
            poison_1.is_disjoint(&poison_2),
            "poison messages are unique per seed"
        );
    }

    #[test]
    fn the_summary_line_names_the_seed_and_says_it_describes_the_stream() {
        let (_, summary) = payloads(&Plan {
            seed: 1234,
            ..Plan::default()
        });
        let line = summary.to_string();
        assert!(line.starts_with("sent 1000 messages ("), "{line}");
        assert!(line.contains("seed 1234"), "{line}");
        assert!(line.contains("--seed 1234"), "{line}");
        assert!(
            line.contains("describes the stream, not what the database holds"),
            "{line}"
        );
    }

    #[test]
    fn random_seeds_differ() {
        let seeds: HashSet<u64> = (0..100).map(|_| random_seed()).collect();
        assert_eq!(seeds.len(), 100);
    }

    #[test]
    fn publishing_stamps_purchases_with_the_current_time() {
        let (messages, _) = generate(&Plan::default()).unwrap();
        let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
        let fresh = SeckillMessage::parse(&stamped(&messages[0].payload)).unwrap();
        assert!(fresh.timestamp >= before, "{}", fresh.timestamp);
        assert_eq!(stamped(b"not json #1").as_ref(), b"not json #1");
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(
            generate(&Plan {
                count: 11,
                users: 2,
                products: 5,
                ..Plan::default()
            })
            .is_err()
        );
        assert!(
            generate(&Plan {
                duplicate_ratio: 0.8,
                poison_ratio: 0.3,
                ..Plan::default()
            })
            .is_err()
        );
    }
}
