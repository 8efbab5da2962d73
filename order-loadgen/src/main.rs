//! `order-loadgen`: publish seckill-success messages.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use order_loadgen::Plan;
use order_runtime::startup::ConfigArgs;

/// Publishes N seckill-success messages and prints a JSON summary of the
/// stream sent: its seed, and the distinct pairs and poison messages an
/// empty database ends with. It describes the stream, not what the database
/// holds: purchases a database already has are not created again (check the
/// API's stats for that).
#[derive(Debug, Parser)]
#[command(
    name = "order-loadgen",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Something else than publishing
    #[command(subcommand)]
    command: Option<Command>,
    /// Where to publish (names from rabbitmq.* / kafka.* settings)
    #[arg(long, value_enum, default_value_t = Broker::Rabbitmq)]
    broker: Broker,
    /// Messages in all
    #[arg(long, short = 'n', default_value_t = 1000)]
    count: usize,
    /// Distinct users
    #[arg(long, default_value_t = 1_000_000)]
    users: i64,
    /// Distinct products
    #[arg(long, default_value_t = 1000)]
    products: i64,
    /// Share of exact duplicates of earlier purchases (0..1)
    #[arg(long, default_value_t = 0.0)]
    duplicate_ratio: f64,
    /// Share of poison messages (0..1)
    #[arg(long, default_value_t = 0.0)]
    poison_ratio: f64,
    /// Messages per second (default: as fast as the broker confirms)
    #[arg(long)]
    rate: Option<u32>,
    /// Partitions of the Kafka topic when it has to be created
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Rows per statement with --broker sql (default: worker.batch_size)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of the stream: the same seed sends the same messages again
    /// (default: random, printed at the start and in the summary)
    #[arg(long)]
    seed: Option<u64>,
    /// No progress bar, and nothing on stderr but errors: only the JSON
    /// summary (which holds the seed) on stdout
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Order events
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
}

#[derive(Debug, Subcommand)]
enum EventsAction {
    /// Prints order events as they arrive, one JSON line each (type, id,
    /// order id, key, traceparent and the whole CloudEvent), from the
    /// broker `events.broker` names, until Ctrl-C
    Tail {
        /// RabbitMQ binding: `#` for every event, `order.cancelled` for one type
        #[arg(long, default_value = "#")]
        binding: String,
        /// Kafka: from the topic's start (default: from now on)
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events
        #[arg(long)]
        count: Option<usize>,
    },
}

/// `order-loadgen events tail`.
async fn tail(
    settings: &order_runtime::config::Settings,
    binding: &str,
    from_start: bool,
    count: Option<usize>,
) -> anyhow::Result<()> {
    use order_runtime::config::EventBroker;
    let events = &settings.events;
    let (mut received, from) = match settings.event_broker() {
        EventBroker::Kafka => (
            order_loadgen::events::subscribe_kafka(&settings.kafka, &events.topic, from_start)
                .await?,
            format!("Kafka topic {}", events.topic),
        ),
        _ => (
            order_loadgen::events::subscribe_rabbitmq(
                &settings.rabbitmq,
                &events.exchange,
                binding,
            )
            .await?,
            format!("RabbitMQ exchange {} ({binding})", events.exchange),
        ),
    };
    order_runtime::output::error_line(&format!("order-loadgen: order events from {from}"));
    let mut seen = 0;
    loop {
        let event = tokio::select! {
            event = received.recv() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else {
            anyhow::bail!("the subscription ended");
        };
        let event = event?;
        let _ = order_runtime::output::line(&serde_json::to_string(&event)?);
        seen += 1;
        if count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Broker {
    Rabbitmq,
    Kafka,
    /// No broker: insert the distinct purchases straight into `database.url`
    /// with multi-row INSERT … ON CONFLICT DO NOTHING (the benchmark baseline)
    Sql,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Self::Rabbitmq => "RabbitMQ",
            Self::Kafka => "Kafka",
            Self::Sql => "the database (no broker)",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match order_runtime::startup::settings_and_telemetry(&cli.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(Command::Events {
        action:
            EventsAction::Tail {
                binding,
                from_start,
                count,
            },
    }) = &cli.command
    {
        return match tail(&settings, binding, *from_start, *count).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                order_runtime::output::error_line(&format!(
                    "error: {}",
                    order_runtime::telemetry::error_chain(e.as_ref())
                ));
                ExitCode::FAILURE
            }
        };
    }
    let seed = cli.seed.unwrap_or_else(order_loadgen::random_seed);
    let plan = Plan {
        count: cli.count,
        users: cli.users,
        products: cli.products,
        duplicate_ratio: cli.duplicate_ratio,
        poison_ratio: cli.poison_ratio,
        seed,
    };
    if !cli.quiet {
        order_runtime::output::error_line(&format!(
            "order-loadgen: {} messages to {} with seed {seed}{} (--seed {seed} sends the same stream again)",
            cli.count,
            cli.broker.name(),
            if cli.seed.is_some() { "" } else { ", random" }
        ));
    }
    let result = async {
        let (messages, summary) = order_loadgen::generate(&plan)?;
        let mut seconds: Option<f64> = None;
        match cli.broker {
            Broker::Rabbitmq => {
                order_loadgen::rabbitmq::publish(
                    &settings.rabbitmq,
                    &messages,
                    cli.rate,
                    cli.quiet,
                )
                .await?;
            }
            Broker::Kafka => {
                order_loadgen::kafka::ensure_topic(&settings.kafka, cli.partitions).await?;
                order_loadgen::kafka::publish(&settings.kafka, &messages, cli.rate, cli.quiet)
                    .await?;
            }
            Broker::Sql => {
                let batch = cli.batch_size.unwrap_or(settings.worker.batch_size);
                let took =
                    order_loadgen::sql::insert(settings.database.url.expose(), &messages, batch)
                        .await?;
                seconds = Some(took.as_secs_f64());
            }
        }
        anyhow::Ok((summary, seconds))
    }
    .await;
    match result {
        Ok((summary, seconds)) => {
            let mut report = serde_json::to_value(summary).expect("a summary serializes");
            if let Some(seconds) = seconds {
                report["seconds"] = serde_json::json!(seconds);
            }
            #[allow(clippy::print_stdout)]
            {
                let _ = order_runtime::output::line(&report.to_string());
            }
            if !cli.quiet {
                order_runtime::output::error_line(&format!("order-loadgen: {summary}"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            order_runtime::output::error_line(&format!(
                "error: {} (seed {seed})",
                order_runtime::telemetry::error_chain(e.as_ref())
            ));
            ExitCode::FAILURE
        }
    }
}
