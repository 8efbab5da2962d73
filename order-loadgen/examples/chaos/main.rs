//! The fault suite: the whole stack under load and faults.
//!
//! Runs 2 workers, 2 compensators and 1 API as processes against the local
//! services, with TCP proxies it controls in front of the database, the
//! broker and (for the API) Redis. It publishes a stream with duplicates,
//! poison, the malformed-input corpus, a few valid messages whose write
//! always fails and, with `--poison-flood`, a burst of large poison
//! messages, and meanwhile kills workers, cuts the database, the broker
//! and Redis, and replaces a compensator. Then it waits for quiescence,
//! checks the invariants, prints each with its figure and exits 1 if any
//! is broken. `scripts/chaos.sh` builds and runs it; see docs/RELIABILITY.md.
#![allow(clippy::print_stdout, reason = "a command-line report")]

mod api_inputs;
mod stack;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use order_core::config::{Driver, KafkaSettings, RabbitMqSettings};
use order_core::domain::{NewFailure, SeckillMessage};
use order_core::testing::proxy::FaultProxy;
use order_core::testing::{TestDatabase, http};
use order_loadgen::corpus::{self, Expect};
use order_loadgen::{Kind, Message, Plan};
use stack::{End, Role, Stack};

/// Runs the stack under faults and checks that nothing is lost or doubled.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Cli {
    /// The broker the stream goes through
    #[arg(long, value_enum, default_value_t = Broker::Rabbitmq)]
    broker: Broker,
    /// The database engine
    #[arg(long, value_enum, default_value_t = Engine::Postgres)]
    engine: Engine,
    /// A few thousand messages and shorter cuts (CI)
    #[arg(long)]
    quick: bool,
    /// Messages generated (default 50,000; 3,000 with --quick), besides the
    /// corpus and the failing writes
    #[arg(long)]
    messages: Option<usize>,
    /// Random seed of the stream (default: random, printed)
    #[arg(long)]
    seed: Option<u64>,
    /// Extra unique poison messages of about 60 KiB each, published in one
    /// burst right after the corpus (0: none)
    #[arg(long, default_value_t = 0)]
    poison_flood: usize,
    /// Where the release binaries are
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where each process's log goes
    #[arg(long, default_value = "target/chaos")]
    logs: PathBuf,
    /// The Tansu binary, started as a private Kafka broker (required with --broker kafka)
    #[arg(long)]
    tansu: Option<PathBuf>,
    /// RabbitMQ's AMQP address
    #[arg(long, default_value = "127.0.0.1:5672")]
    amqp: SocketAddr,
    /// Redis's address
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Broker {
    Rabbitmq,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    Postgres,
    Mysql,
}

/// How long things last.
#[derive(Debug, Clone, Copy)]
struct Timing {
    rate: u32,
    db_cut: Duration,
    broker_cut: Duration,
    redis_cut: Duration,
    pause: Duration,
    settle: Duration,
}

impl Timing {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rate: 400,
                db_cut: Duration::from_secs(3),
                broker_cut: Duration::from_secs(2),
                redis_cut: Duration::from_secs(3),
                pause: Duration::from_secs(1),
                settle: Duration::from_secs(180),
            }
        } else {
            Self {
                rate: 1000,
                db_cut: Duration::from_secs(10),
                broker_cut: Duration::from_secs(5),
                redis_cut: Duration::from_secs(10),
                pause: Duration::from_secs(2),
                settle: Duration::from_secs(300),
            }
        }
    }
}

/// Retries of a failing write before it is given up (`failed`).
const MAX_RETRIES: u32 = 3;
/// How long a compensator's claim lasts.
const LEASE: Duration = Duration::from_secs(10);
/// How long a process may take to exit after SIGTERM (Kubernetes' grace).
const GRACE: Duration = Duration::from_secs(30);

/// What the stream holds and the database must end with.
#[derive(Debug, Default)]
struct Expected {
    sent: usize,
    orders: usize,
    duplicates: usize,
    poison: usize,
    /// Valid messages whose write always fails (total beyond NUMERIC(12,2)).
    failing: usize,
    /// Digests of the corpus's poison entries, with their names.
    corpus_poison: Vec<(String, String)>,
    /// Users of the corpus's valid entries.
    corpus_order_users: Vec<i64>,
    /// Digests of the flood's messages (`--poison-flood`).
    flood_poison: Vec<String>,
    /// Bytes of the flood.
    flood_bytes: usize,
}

/// One invariant with its figure.
#[derive(Debug)]
struct Check {
    what: String,
    figure: String,
    ok: bool,
}

fn check(what: impl Into<String>, figure: impl Into<String>, ok: bool) -> Check {
    Check {
        what: what.into(),
        figure: figure.into(),
        ok,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn say(text: impl std::fmt::Display) {
    println!("==> {text}");
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let timing = Timing::new(cli.quick);
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(..));
    let count = cli
        .messages
        .unwrap_or(if cli.quick { 3_000 } else { 50_000 });
    let run_id = format!("{:08x}", fastrand::u32(..));
    let log_dir = cli.logs.join(format!(
        "{}-{}",
        match cli.broker {
            Broker::Rabbitmq => "rabbitmq",
            Broker::Kafka => "kafka",
        },
        run_id
    ));
    say(format!(
        "run {run_id}: {count} messages on {:?}, {:?}, seed {seed}, logs in {}",
        cli.broker,
        cli.engine,
        log_dir.display()
    ));

    // ------------------------------------------------------------ stream ---
    let (messages, expected, burst) = stream(count, seed, cli.poison_flood)?;
    say(format!(
        "stream: {} messages = {} distinct pairs + {} duplicates + {} poison \
         ({} of them the malformed corpus{}) + {} failing writes",
        expected.sent,
        expected.orders,
        expected.duplicates,
        expected.poison,
        expected.corpus_poison.len(),
        if expected.flood_poison.is_empty() {
            String::new()
        } else {
            format!(
                ", {} a flood of {:.1} MiB in one burst",
                expected.flood_poison.len(),
                mib(expected.flood_bytes)
            )
        },
        expected.failing
    ));

    // -------------------------------------------------- database, proxies ---
    let db = TestDatabase::new(match cli.engine {
        Engine::Postgres => Driver::Postgres,
        Engine::Mysql => Driver::Mysql,
    })
    .await;
    let db_proxy = FaultProxy::start(db.server_addr()).await;
    let redis_proxy = FaultProxy::start(cli.redis).await;
    std::fs::create_dir_all(&log_dir)?;
    let broker = BrokerUnderTest::start(&cli, &run_id, &log_dir).await?;
    let outcome = scenario(
        &cli,
        &Run {
            id: run_id,
            log_dir,
            seed,
            timing,
            messages,
            burst,
            expected,
        },
        &db,
        &db_proxy,
        &redis_proxy,
        &broker,
    )
    .await;
    broker.stop().await;
    outcome
}

/// One run's settings and stream.
struct Run {
    id: String,
    log_dir: PathBuf,
    seed: u64,
    timing: Timing,
    messages: Vec<Message>,
    /// The messages published at once, unpaced (the poison flood).
    burst: Range<usize>,
    expected: Expected,
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn scenario(
    cli: &Cli,
    run: &Run,
    db: &TestDatabase,
    db_proxy: &FaultProxy,
    redis_proxy: &FaultProxy,
    broker: &BrokerUnderTest,
) -> anyhow::Result<bool> {
    let Run {
        id: run_id,
        log_dir,
        seed,
        timing,
        messages,
        burst,
        expected,
    } = run;
    let (seed, timing) = (*seed, *timing);

    // ------------------------------------------------------------- stack ---
    let token = format!("chaos-{run_id}");
    let auth = Auth::new(&token, run_id);
    let env = environment(
        db.settings_via(db_proxy.addr()).url.expose(),
        broker,
        cli.redis,
        redis_proxy.addr(),
        run_id,
        &auth,
    );
    let mut stack = Stack::new(&cli.bin_dir, log_dir, env)?;
    for (name, role) in [
        ("worker-1", Role::Worker),
        ("worker-2", Role::Worker),
        ("compensator-1", Role::Compensator),
        ("compensator-2", Role::Compensator),
        ("api", Role::Api),
    ] {
        stack.start(name, role).await?;
    }
    for name in [
        "worker-1",
        "worker-2",
        "compensator-1",
        "compensator-2",
        "api",
    ] {
        stack
            .wait_healthy(name, "/health/ready", Duration::from_secs(60))
            .await?;
    }
    say("stack ready: 2 workers, 2 compensators, 1 API");

    // ------------------------------------------------ the stream, faults ---
    let started = Instant::now();
    let publisher =
        tokio::spawn(broker.publish(messages.clone(), timing.rate, burst.clone(), started));
    let pause = timing.pause;

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  SIGKILL worker-1 (1 of 3)",
        secs(started)
    ));
    crash_and_restart(&mut stack, "worker-1", pause / 2).await?;
    stack
        .wait_healthy("worker-1", "/health/live", Duration::from_secs(30))
        .await?;

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  database cut for {:?}",
        secs(started),
        timing.db_cut
    ));
    db_proxy.cut();
    tokio::time::sleep(timing.db_cut / 2).await;
    // A pod rescheduled during the outage: it must wait for the database.
    say(format!(
        "{:>5.1}s  SIGKILL worker-2 (2 of 3), started again during the cut",
        secs(started)
    ));
    stack.kill("worker-2")?;
    stack.launch("worker-2", Role::Worker)?;
    tokio::time::sleep(timing.db_cut / 2).await;
    db_proxy.heal();
    say(format!("{:>5.1}s  database healed", secs(started)));
    stack.attach("worker-2", Duration::from_secs(60)).await?;
    stack
        .wait_healthy("worker-2", "/health/live", Duration::from_secs(30))
        .await?;
    say(format!("{:>5.1}s  worker-2 up", secs(started)));

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  broker cut for {:?}",
        secs(started),
        timing.broker_cut
    ));
    broker.proxy.cut();
    tokio::time::sleep(timing.broker_cut).await;
    broker.proxy.heal();
    say(format!("{:>5.1}s  broker healed", secs(started)));

    tokio::time::sleep(pause).await;
    // After the faults so far (on Kafka each kill costs a rebalance), the
    // first orders may still be on their way.
    let mut sample = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample.len() < 20 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "fewer than 20 orders committed {:.0} s into the run",
            secs(started)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        sample = sample_orders(db, messages).await?;
    }
    let api = stack.addr("api");
    for (id, order) in &sample {
        let bearer = auth.user_bearer(order);
        let r = http::request(
            api,
            "GET",
            &format!("/api/v1/orders/{id}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        anyhow::ensure!(
            r.status == 200,
            "warming the cache: {} {}",
            r.status,
            r.body
        );
    }
    say(format!(
        "{:>5.1}s  Redis cut for the API for {:?}, reading {} orders meanwhile",
        secs(started),
        timing.redis_cut,
        sample.len()
    ));
    redis_proxy.cut();
    let cut_at = Instant::now();
    let reading = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn(read_orders(
        api,
        sample.clone(),
        auth.clone(),
        reading.clone(),
    ));
    tokio::time::sleep(timing.redis_cut / 3).await;
    say(format!(
        "{:>5.1}s  SIGTERM compensator-1, start compensator-3",
        secs(started)
    ));
    let compensator_exit = stack.terminate("compensator-1", GRACE).await;
    stack.start("compensator-3", Role::Compensator).await?;
    tokio::time::sleep(timing.redis_cut.saturating_sub(cut_at.elapsed())).await;
    reading.store(false, Ordering::Relaxed);
    let reads = reader.await.context("the reader")?;
    redis_proxy.heal();
    say(format!("{:>5.1}s  Redis healed", secs(started)));
    if let Err(e) = compensator_exit {
        say(format!("compensator-1: {e:#}"));
    }

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  SIGKILL worker-1 (3 of 3)",
        secs(started)
    ));
    crash_and_restart(&mut stack, "worker-1", pause / 2).await?;

    let ends = publisher
        .await
        .context("the publisher")?
        .context("publishing")?;
    say(format!(
        "{:>5.1}s  all {} messages published",
        secs(started),
        expected.sent
    ));

    // ------------------------------------------------------- quiescence ---
    let quiet = settle(db, expected, broker, &ends, timing.settle, &mut stack).await;
    say(format!(
        "{:>5.1}s  {}",
        secs(started),
        match &quiet {
            Ok(()) => "quiescent".to_owned(),
            Err(e) => format!("not quiescent: {e:#}"),
        }
    ));
    let drained = broker.drained(&ends).await;

    // ------------------------------------------------- hostile requests ---
    let (order_id, user_id) = sample.first().map_or_else(
        || (uuid::Uuid::nil().to_string(), 1),
        |(id, order)| (id.clone(), order["user_id"].as_i64().unwrap_or(1)),
    );
    let hostile = api_inputs::run(api, &auth, &order_id, user_id).await;
    let api_healthy = http::try_request(api, "GET", "/health/ready", &[], None)
        .await
        .is_ok_and(|r| r.status == 200);

    stack.reap();
    stack.stop_all(GRACE).await;

    // ------------------------------------------------------------ checks ---
    let mut checks = database_checks(db, expected).await;
    checks.push(match drained {
        Ok(figure) => check(broker.drained_what(), figure, true),
        Err(e) => check(broker.drained_what(), format!("{e:#}"), false),
    });
    let bad_reads: Vec<&String> = reads.wrong.iter().take(3).collect();
    checks.push(check(
        "every API read during the Redis cut: 200 and the order as stored",
        format!(
            "{}/{} right{}",
            reads.right,
            reads.right + reads.wrong.len(),
            if bad_reads.is_empty() {
                String::new()
            } else {
                format!("; e.g. {bad_reads:?}")
            }
        ),
        reads.wrong.is_empty() && reads.right > 0,
    ));
    let refused: Vec<String> = hostile
        .iter()
        .filter(|o| !o.is_ok())
        .map(|o| format!("{}: {:?}", o.name, o.answer))
        .collect();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &hostile {
        let status = outcome
            .answer
            .as_ref()
            .map_or_else(|_| "no answer".to_owned(), u16::to_string);
        *statuses.entry(status).or_default() += 1;
    }
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(status, n)| format!("{status}×{n}"))
        .collect();
    checks.push(check(
        "hostile API requests answered without a 5xx",
        format!(
            "{}/{} ({}){}",
            hostile.len() - refused.len(),
            hostile.len(),
            statuses.join(", "),
            if refused.is_empty() {
                String::new()
            } else {
                format!("; {refused:?}")
            }
        ),
        refused.is_empty(),
    ));
    checks.push(check(
        "the API is ready after them",
        if api_healthy { "200" } else { "not 200" },
        api_healthy,
    ));
    let unexpected: Vec<String> = stack
        .ended
        .iter()
        .filter(|(_, end)| !end.is_expected())
        .map(|(name, end)| format!("{name}: {end}"))
        .collect();
    let killed = stack
        .ended
        .iter()
        .filter(|(_, end)| matches!(end, End::Killed))
        .count();
    checks.push(check(
        "no process exited non-zero except the killed ones",
        format!(
            "{} ended: {killed} killed, {} exit 0 on SIGTERM{}",
            stack.ended.len(),
            stack.ended.len() - killed - unexpected.len(),
            if unexpected.is_empty() {
                String::new()
            } else {
                format!("; unexpected: {unexpected:?}")
            }
        ),
        unexpected.is_empty() && killed == 3,
    ));
    if let Err(e) = &quiet {
        checks.push(check("quiescence", format!("{e:#}"), false));
    }

    println!();
    let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    for c in &checks {
        println!(
            "{}  {:width$}  {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.what,
            c.figure
        );
    }
    let ok = checks.iter().all(|c| c.ok);
    println!();
    say(format!(
        "{} in {:.0} s ({} messages, seed {seed}, logs in {})",
        if ok {
            "all invariants hold"
        } else {
            "INVARIANTS BROKEN"
        },
        secs(started),
        expected.sent,
        log_dir.display()
    ));
    Ok(ok)
}

/// SIGKILL a worker and start it again after `pause`, as Kubernetes would.
async fn crash_and_restart(stack: &mut Stack, name: &str, pause: Duration) -> anyhow::Result<()> {
    stack.kill(name)?;
    tokio::time::sleep(pause).await;
    stack.start(name, Role::Worker).await
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// The generated stream with the corpus and the failing writes woven in,
/// and `flood` large poison messages in one block right after the corpus
/// (the block's range is returned: it is published unpaced).
fn stream(
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
            payload: format!(
                r#"{{"user_id":{user},"product_id":1,"quantity":2,"unit_price":9999999999.99,"seckill_id":"chaos","timestamp":"2024-01-01T00:00:00Z"}}"#
            )
            .into_bytes(),
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

#[allow(clippy::cast_precision_loss, reason = "a size for a report")]
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The environment of each role.
fn environment(
    database_url: &str,
    broker: &BrokerUnderTest,
    redis: SocketAddr,
    redis_for_api: SocketAddr,
    run_id: &str,
    auth: &Auth,
) -> BTreeMap<Role, Vec<(String, String)>> {
    let common = |redis: SocketAddr| {
        let mut env: Vec<(String, String)> = [
            ("ORDER__DATABASE__URL", database_url.to_owned()),
            ("ORDER__DATABASE__MAX_CONNECTIONS", "10".into()),
            ("ORDER__DATABASE__ACQUIRE_TIMEOUT", "2s".into()),
            ("ORDER__REDIS__HOST", redis.ip().to_string()),
            ("ORDER__REDIS__PORT", redis.port().to_string()),
            (
                "ORDER__REDIS__KEY_PREFIX",
                format!("ordertest:chaos:{run_id}:"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(broker.env());
        env
    };
    let mut worker = common(redis);
    worker.push(("ORDER__WORKER__SHUTDOWN_TIMEOUT".into(), "20s".into()));
    let mut compensator = common(redis);
    compensator.extend(
        [
            ("ORDER__COMPENSATOR__RETRY_CRON", "* * * * * *".to_owned()),
            ("ORDER__COMPENSATOR__EXPIRE_CRON", "*/5 * * * * *".into()),
            ("ORDER__COMPENSATOR__MAX_RETRIES", MAX_RETRIES.to_string()),
            ("ORDER__COMPENSATOR__BACKOFF_BASE", "1s".into()),
            ("ORDER__COMPENSATOR__BACKOFF_MAX", "2s".into()),
            ("ORDER__COMPENSATOR__LEASE", format!("{}s", LEASE.as_secs())),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut api = common(redis_for_api);
    api.push(("ORDER__API__ADMIN_TOKEN".into(), auth.operator.clone()));
    api.push(("ORDER__API__AUTH__JWT_SECRET".into(), auth.secret.clone()));
    BTreeMap::from([
        (Role::Worker, worker),
        (Role::Compensator, compensator),
        (Role::Api, api),
    ])
}

/// The API's credentials: the operator token, and the HS256 secret its
/// end users' tokens are signed with.
#[derive(Debug, Clone)]
pub struct Auth {
    operator: String,
    secret: String,
}

impl Auth {
    fn new(operator: &str, run_id: &str) -> Self {
        Self {
            operator: operator.to_owned(),
            secret: format!(
                "chaos-jwt-secret-{run_id}-{}",
                uuid::Uuid::now_v7().simple()
            ),
        }
    }

    /// `Bearer <operator token>`.
    pub fn operator_bearer(&self) -> String {
        format!("Bearer {}", self.operator)
    }

    /// `Bearer <token of user>`, valid for an hour.
    pub fn bearer_of(&self, user: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + 3600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user.to_string(), "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("an HS256 token signs");
        format!("Bearer {token}")
    }

    /// The bearer of the buyer of `order` (its stored JSON).
    fn user_bearer(&self, order: &serde_json::Value) -> String {
        self.bearer_of(order["user_id"].as_i64().unwrap_or(1))
    }
}

/// Up to 100 committed orders (id and stored JSON) of the stream's first buyers.
async fn sample_orders(
    db: &TestDatabase,
    messages: &[Message],
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let mut sample = Vec::new();
    for message in messages.iter().filter(|m| m.kind == Kind::New).take(300) {
        let found = db
            .storage
            .list_user_orders_after(message.user_id, None, None, 10)
            .await?;
        for order in found {
            let stored = db
                .storage
                .get_order(order.order_id)
                .await?
                .context("an order just listed")?;
            sample.push((order.order_id.to_string(), serde_json::to_value(&stored)?));
        }
        if sample.len() >= 100 {
            break;
        }
    }
    sample.dedup_by(|a, b| a.0 == b.0);
    Ok(sample)
}

/// Reads from the API during the Redis cut.
#[derive(Debug, Default)]
struct Reads {
    right: usize,
    wrong: Vec<String>,
}

async fn read_orders(
    api: SocketAddr,
    sample: Vec<(String, serde_json::Value)>,
    auth: Auth,
    going: Arc<AtomicBool>,
) -> Reads {
    let mut reads = Reads::default();
    let mut i = 0;
    while going.load(Ordering::Relaxed) {
        let (id, stored) = &sample[i % sample.len()];
        i += 1;
        let path = format!("/api/v1/orders/{id}");
        let bearer = auth.user_bearer(stored);
        match http::try_request(api, "GET", &path, &[("Authorization", &bearer)], None).await {
            Ok(r) if r.status == 200 => {
                let served: serde_json::Value =
                    serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
                if same_order(stored, &served) {
                    reads.right += 1;
                } else {
                    reads
                        .wrong
                        .push(format!("{id}: served {served}, stored {stored}"));
                }
            }
            Ok(r) => reads.wrong.push(format!("{id}: {} {}", r.status, r.body)),
            Err(e) => reads.wrong.push(format!("{id}: {e}")),
        }
    }
    reads
}

/// Every field the stored order has, the served one has with the same value.
fn same_order(stored: &serde_json::Value, served: &serde_json::Value) -> bool {
    stored.as_object().is_some_and(|fields| {
        fields
            .iter()
            .all(|(key, value)| served.get(key) == Some(value))
    })
}

/// Waits until the database holds what the stream must give, every failing
/// write is given up and the broker has nothing left for the workers.
async fn settle(
    db: &TestDatabase,
    expected: &Expected,
    broker: &BrokerUnderTest,
    ends: &HashMap<i32, i64>,
    limit: Duration,
    stack: &mut Stack,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        stack.reap();
        let orders = db.count("SELECT COUNT(*) FROM orders").await;
        let poison = db
            .count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable")
            .await;
        let open = db
            .count("SELECT COUNT(*) FROM order_failures WHERE status IN ('pending', 'processing')")
            .await;
        let given_up = db
            .count("SELECT COUNT(*) FROM order_failures WHERE retryable AND status = 'failed'")
            .await;
        let figures = format!(
            "{orders}/{} orders, {poison}/{} poison rows, {given_up}/{} failing writes given up, \
             {open} failures open",
            expected.orders, expected.poison, expected.failing
        );
        if orders >= count_i64(expected.orders)
            && poison >= count_i64(expected.poison)
            && given_up >= count_i64(expected.failing)
            && open == 0
            && broker.drained(ends).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after {limit:?}: {figures}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn count_i64(n: usize) -> i64 {
    i64::try_from(n).expect("a count fits i64")
}

/// Poison rows with a reason among the failures of these digests.
async fn poison_rows_with_reason(
    db: &TestDatabase,
    digests: impl IntoIterator<Item = &String>,
) -> i64 {
    let quoted: Vec<String> = digests.into_iter().map(|d| format!("'{d}'")).collect();
    db.count(&format!(
        "SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed' \
         AND error_message <> '' AND message_digest IN ({})",
        quoted.join(",")
    ))
    .await
}

async fn database_checks(db: &TestDatabase, expected: &Expected) -> Vec<Check> {
    let mut checks = Vec::new();
    let orders = db.count("SELECT COUNT(*) FROM orders").await;
    checks.push(check(
        "orders = distinct valid (user, product) pairs sent",
        format!("{orders} = {}", expected.orders),
        orders == count_i64(expected.orders),
    ));
    let doubled = db
        .count(
            "SELECT COUNT(*) FROM (SELECT user_id, product_id FROM orders \
             GROUP BY user_id, product_id HAVING COUNT(*) > 1) AS d",
        )
        .await;
    checks.push(check(
        "no (user, product) pair has two orders",
        format!("{doubled} pairs doubled"),
        doubled == 0,
    ));
    let no_record = db
        .count(
            "SELECT COUNT(*) FROM orders o LEFT JOIN idempotency_records r \
             ON r.order_id = o.order_id WHERE r.order_id IS NULL",
        )
        .await;
    let no_item = db
        .count(
            "SELECT COUNT(*) FROM orders o LEFT JOIN order_items i \
             ON i.order_id = o.order_id WHERE i.order_id IS NULL",
        )
        .await;
    let records = db.count("SELECT COUNT(*) FROM idempotency_records").await;
    checks.push(check(
        "every order has its idempotency record and its item",
        format!("{no_record} without a record, {no_item} without an item; {records} records"),
        no_record == 0 && no_item == 0 && records == orders,
    ));
    let poison = db
        .count("SELECT COUNT(*) FROM order_failures WHERE NOT retryable AND status = 'failed'")
        .await;
    checks.push(check(
        "poison rows = poison sent",
        format!("{poison} = {}", expected.poison),
        poison == count_i64(expected.poison),
    ));
    let recorded = poison_rows_with_reason(db, expected.corpus_poison.iter().map(|(d, _)| d)).await;
    checks.push(check(
        "every malformed message is a poison row with a reason",
        format!("{recorded}/{}", expected.corpus_poison.len()),
        recorded == count_i64(expected.corpus_poison.len()),
    ));
    if !expected.flood_poison.is_empty() {
        let recorded = poison_rows_with_reason(db, &expected.flood_poison).await;
        checks.push(check(
            "every flood message is a poison row with a reason",
            format!(
                "{recorded}/{} ({:.1} MiB sent in one burst)",
                expected.flood_poison.len(),
                mib(expected.flood_bytes)
            ),
            recorded == count_i64(expected.flood_poison.len()),
        ));
    }
    let mut corpus_orders = 0;
    for user in &expected.corpus_order_users {
        corpus_orders += db
            .count(&format!(
                "SELECT COUNT(*) FROM orders WHERE user_id = {user}"
            ))
            .await;
    }
    checks.push(check(
        "a valid message with extra fields is an order",
        format!("{corpus_orders}/{}", expected.corpus_order_users.len()),
        corpus_orders == count_i64(expected.corpus_order_users.len()),
    ));
    let given_up = db
        .count(&format!(
            "SELECT COUNT(*) FROM order_failures WHERE retryable AND status = 'failed' \
             AND retry_count = {MAX_RETRIES}"
        ))
        .await;
    let retryable = db
        .count("SELECT COUNT(*) FROM order_failures WHERE retryable")
        .await;
    checks.push(check(
        "failing writes retried by the compensators, then given up",
        format!(
            "{given_up} given up after {MAX_RETRIES} retries, of {retryable} retryable rows; {} sent",
            expected.failing
        ),
        given_up == count_i64(expected.failing) && retryable == given_up,
    ));
    let open = db
        .count("SELECT COUNT(*) FROM order_failures WHERE status IN ('pending', 'processing')")
        .await;
    checks.push(check(
        "no failure left pending or processing",
        format!("{open} open"),
        open == 0,
    ));
    checks
}

/// The broker the workers read, behind a proxy the harness controls.
struct BrokerUnderTest {
    proxy: FaultProxy,
    kind: Transport,
}

enum Transport {
    Rabbit {
        /// Names as the workers see them (through the proxy).
        settings: Box<RabbitMqSettings>,
        /// The same broker, directly (the seckill service publishing).
        direct: Box<RabbitMqSettings>,
    },
    Kafka {
        settings: KafkaSettings,
        tansu: std::process::Child,
        dir: PathBuf,
    },
}

impl BrokerUnderTest {
    async fn start(cli: &Cli, run_id: &str, log_dir: &std::path::Path) -> anyhow::Result<Self> {
        match cli.broker {
            Broker::Rabbitmq => {
                let proxy = FaultProxy::start(cli.amqp).await;
                let direct = RabbitMqSettings {
                    host: cli.amqp.ip().to_string(),
                    port: cli.amqp.port(),
                    exchange: format!("ordertest.chaos.{run_id}.seckill"),
                    queue: format!("ordertest.chaos.{run_id}.orders"),
                    dead_letter_exchange: format!("ordertest.chaos.{run_id}.dlx"),
                    dead_letter_queue: format!("ordertest.chaos.{run_id}.dlq"),
                    ..RabbitMqSettings::default()
                };
                let settings = RabbitMqSettings {
                    host: proxy.addr().ip().to_string(),
                    port: proxy.addr().port(),
                    ..direct.clone()
                };
                Ok(Self {
                    proxy,
                    kind: Transport::Rabbit {
                        settings: Box::new(settings),
                        direct: Box::new(direct),
                    },
                })
            }
            Broker::Kafka => {
                let tansu = cli
                    .tansu
                    .as_ref()
                    .context("--broker kafka needs --tansu PATH")?;
                // The broker advertises the proxy, so every client goes through it.
                let listen = order_core::testing::free_port();
                let upstream = SocketAddr::from(([127, 0, 0, 1], listen));
                let proxy = FaultProxy::start(upstream).await;
                let dir = std::env::temp_dir().join(format!("ordertest-chaos-tansu-{run_id}"));
                std::fs::create_dir_all(&dir)?;
                let child = std::process::Command::new(tansu)
                    .current_dir(&dir)
                    .args([
                        "broker",
                        "--listener-url",
                        &format!("tcp://{upstream}"),
                        "--advertised-listener-url",
                        &format!("tcp://{}", proxy.addr()),
                        "--storage-engine",
                        "memory://tansu/",
                    ])
                    .env_remove("LISTENER_URL")
                    .env_remove("ADVERTISED_LISTENER_URL")
                    .env_remove("STORAGE_ENGINE")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::fs::File::create(log_dir.join("tansu.log"))?)
                    .stderr(std::fs::File::create(log_dir.join("tansu.err"))?)
                    .spawn()
                    .with_context(|| format!("start {}", tansu.display()))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while tokio::net::TcpStream::connect(upstream).await.is_err() {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "Tansu does not listen on {upstream}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let settings = KafkaSettings {
                    brokers: vec![proxy.addr().to_string()],
                    topic: format!("ordertest-chaos-{run_id}"),
                    group_id: format!("ordertest-chaos-{run_id}"),
                    session_timeout: Duration::from_secs(6),
                    dead_letter_topic: format!("ordertest-chaos-{run_id}.dlq"),
                    ..KafkaSettings::default()
                };
                order_loadgen::kafka::ensure_topic(&settings, 3).await?;
                Ok(Self {
                    proxy,
                    kind: Transport::Kafka {
                        settings,
                        tansu: child,
                        dir,
                    },
                })
            }
        }
    }

    /// The workers' broker settings.
    fn env(&self) -> Vec<(String, String)> {
        let env: Vec<(&str, String)> = match &self.kind {
            Transport::Rabbit { settings, .. } => order_core::testing::rabbitmq_env(settings),
            Transport::Kafka { settings: k, .. } => vec![
                ("ORDER__RABBITMQ__ENABLED", "false".into()),
                ("ORDER__KAFKA__ENABLED", "true".into()),
                ("ORDER__KAFKA__BROKERS", k.brokers.join(",")),
                ("ORDER__KAFKA__TOPIC", k.topic.clone()),
                ("ORDER__KAFKA__GROUP_ID", k.group_id.clone()),
                (
                    "ORDER__KAFKA__DEAD_LETTER_TOPIC",
                    k.dead_letter_topic.clone(),
                ),
                (
                    "ORDER__KAFKA__SESSION_TIMEOUT",
                    format!("{}s", k.session_timeout.as_secs()),
                ),
            ],
        };
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Publishes the stream at `rate`, except `burst`, published at once;
    /// returns Kafka's end offsets per partition.
    fn publish(
        &self,
        messages: Vec<Message>,
        rate: u32,
        burst: Range<usize>,
        started: Instant,
    ) -> impl Future<Output = anyhow::Result<HashMap<i32, i64>>> + use<> {
        let target = match &self.kind {
            Transport::Rabbit { direct, .. } => Ok(direct.as_ref().clone()),
            Transport::Kafka { settings, .. } => Err(settings.clone()),
        };
        async move {
            let mut parts = vec![(0..messages.len(), Some(rate))];
            if !burst.is_empty() {
                parts = vec![
                    (0..burst.start, Some(rate)),
                    (burst.clone(), None),
                    (burst.end..messages.len(), Some(rate)),
                ];
            }
            let mut ends: HashMap<i32, i64> = HashMap::new();
            for (range, pace) in parts.into_iter().filter(|(r, _)| !r.is_empty()) {
                let unpaced = pace.is_none();
                if unpaced {
                    say(format!(
                        "{:>5.1}s  publishing {} flood messages at once",
                        secs(started),
                        range.len()
                    ));
                }
                let part = &messages[range];
                match &target {
                    Ok(rabbit) => {
                        order_loadgen::rabbitmq::publish(rabbit, part, pace, true).await?;
                    }
                    Err(kafka) => {
                        for (partition, end) in
                            order_loadgen::kafka::publish(kafka, part, pace, true).await?
                        {
                            let seen = ends.entry(partition).or_insert(0);
                            *seen = (*seen).max(end);
                        }
                    }
                }
                if unpaced {
                    say(format!("{:>5.1}s  flood published", secs(started)));
                }
            }
            Ok(ends)
        }
    }

    fn drained_what(&self) -> &'static str {
        match self.kind {
            Transport::Rabbit { .. } => "queue empty and nothing unacknowledged",
            Transport::Kafka { .. } => "the group's lag is 0 on every partition",
        }
    }

    /// Ok with the figure when nothing is left for the workers.
    async fn drained(&self, ends: &HashMap<i32, i64>) -> anyhow::Result<String> {
        match &self.kind {
            Transport::Rabbit { direct, .. } => {
                let (ready, unacked) = queue_depth(&direct.queue)?;
                anyhow::ensure!(
                    ready == 0 && unacked == 0,
                    "{ready} ready, {unacked} unacknowledged"
                );
                Ok(format!("{ready} ready, {unacked} unacknowledged"))
            }
            Transport::Kafka { settings, .. } => {
                let committed = order_loadgen::kafka::committed(settings, 3)?;
                let lag: i64 = ends
                    .iter()
                    .map(|(p, end)| end - committed.get(p).copied().unwrap_or(0))
                    .sum();
                anyhow::ensure!(
                    lag == 0,
                    "lag {lag}: committed {committed:?}, ends {ends:?}"
                );
                Ok(format!("lag 0; committed = ends = {ends:?}"))
            }
        }
    }

    /// Deletes the run's RabbitMQ queues and exchanges.
    async fn stop(&self) {
        if let Transport::Rabbit { direct, .. } = &self.kind {
            order_loadgen::rabbitmq::delete_topology(direct).await;
        }
    }
}

impl Drop for BrokerUnderTest {
    fn drop(&mut self) {
        if let Transport::Kafka { tansu, dir, .. } = &mut self.kind {
            let _ = tansu.kill();
            let _ = tansu.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Ready and unacknowledged messages of `queue`, from `rabbitmqctl`.
fn queue_depth(queue: &str) -> anyhow::Result<(u64, u64)> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .context("run rabbitmqctl list_queues")?;
    anyhow::ensure!(
        output.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, ready, unacked] = fields[..]
            && name == queue
        {
            return Ok((ready.parse()?, unacked.parse()?));
        }
    }
    bail!("queue {queue} not found by rabbitmqctl")
}
