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
mod api_reads;
mod auth;
mod broker;
mod checks;
mod events;
mod scenario;
mod settings;
mod stack;
mod stream;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use order_loadgen::Message;
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use order_testkit::proxy::FaultProxy;

use broker::BrokerUnderTest;
use scenario::scenario;
use settings::Timing;
use stream::{Expected, stream};

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

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

#[allow(clippy::cast_precision_loss, reason = "a size for a report")]
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
