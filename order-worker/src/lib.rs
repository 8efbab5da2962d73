//! order-worker: turns seckill-success messages into orders.
//!
//! With `events.relay` (the default) it also runs the outbox relay
//! ([`relay`]), which publishes order events; a worker may run it alone.
//!
//! Each enabled source ([`rabbitmq`], [`kafka`]; both may run at once) gathers a batch (up
//! to `worker.batch_size` messages or `worker.batch_linger_ms`), hands it to
//! the core creation path ([`order_core::service::OrderCreator::process_batch`])
//! and acknowledges it only after that committed. When the database is
//! unreachable nothing is acknowledged: the source lets go of what it holds
//! (RabbitMQ requeues it) and pauses until the database answers again.

pub mod batch;
pub mod kafka;
pub mod outage;
pub mod rabbitmq;
pub mod relay;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use order_core::service::OrderCreator;
use order_runtime::config::Settings;
use order_runtime::probes::{self, HealthChecks};
use order_runtime::startup::{self, AtStart, ConfigArgs};
use tokio_util::sync::CancellationToken;

/// Port of `/health` and `/metrics` when `observability.port` is unset.
pub const DEFAULT_OBSERVABILITY_PORT: u16 = 8084;

/// Command line of `order-worker`.
#[derive(Debug, Parser)]
#[command(
    name = "order-worker",
    version,
    about = "Turns seckill-success messages from RabbitMQ and Kafka into orders"
)]
pub struct Cli {
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Whether a source is connected and consuming (readiness).
#[derive(Debug, Default)]
pub struct Connected(AtomicBool);

impl Connected {
    /// Records the state and exports it as `worker_consumer_connected{source}`.
    pub fn set(&self, source: &'static str, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
        metrics::gauge!("worker_consumer_connected", "source" => source).set(if connected {
            1.0
        } else {
            0.0
        });
    }

    /// The state.
    #[must_use]
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the enabled consumers until `shutdown` is cancelled (SIGTERM or
/// SIGINT) or one of them ends, then lets each finish and acknowledge the
/// batch in hand, within `worker.shutdown_timeout`.
///
/// # Errors
/// When the database cannot be reached at start, or no source is enabled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let storage = startup::open_storage(&settings, AtStart::Wait, &shutdown)
        .await
        .context("opening the database")?;
    let creator = OrderCreator::new(storage.clone(), settings.retry_policy())
        .keeping(settings.worker.failure_data_max_bytes);
    // The consumers' own token: a consumer that ends stops the others too.
    let stop = shutdown.child_token();
    let mut checks = HealthChecks::new().with_database(storage.clone());
    let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>> =
        Vec::new();

    // Each enabled source: a readiness check on its connection, and its
    // task. A source's check is critical; the relay's is not (ingest goes
    // on while its broker is away: the worker is degraded, not down).
    let mut readiness = |name: &'static str, critical: bool| {
        let connected = Arc::new(Connected::default());
        let probe = connected.clone();
        checks = std::mem::take(&mut checks)
            .with(name, critical, move || std::future::ready(probe.get()));
        connected
    };
    if settings.rabbitmq.enabled {
        let consumer =
            rabbitmq::RabbitConsumer::new(&settings, creator.clone(), readiness("rabbitmq", true));
        tasks.push(Box::pin(consumer.run(stop.clone())));
    }
    if settings.kafka.enabled {
        let consumer =
            kafka::KafkaConsumer::new(&settings, creator.clone(), readiness("kafka", true));
        tasks.push(Box::pin(consumer.run(stop.clone())));
    }
    if settings.events.enabled && settings.events.relay {
        let relay = settings.relay(storage.clone());
        tasks.push(Box::pin(relay::run(
            settings.clone(),
            relay,
            readiness("relay", false),
            stop.clone(),
        )));
    }
    anyhow::ensure!(
        !tasks.is_empty(),
        "nothing to do: set rabbitmq.enabled or kafka.enabled, or events.relay"
    );

    // Metrics and probes first: what the tasks record from their first
    // moment is kept, and a probe answers as soon as a task says it runs.
    probes::install_metrics("order-worker");
    let port = settings
        .observability
        .port
        .unwrap_or(DEFAULT_OBSERVABILITY_PORT);
    let host = settings.observability.host.as_str();
    let (_, server) = probes::serve(host, port, checks, Some(storage.clone()), stop.clone())
        .await
        .with_context(|| {
            format!("binding observability.host {host} and observability.port {port}")
        })?;
    let mut consumers = tokio::task::JoinSet::new();
    for task in tasks {
        consumers.spawn(task);
    }
    tracing::info!(
        batch_size = settings.worker.batch_size,
        "order-worker started"
    );

    let mut failed = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        Some(ended) = consumers.join_next() => Some(ended),
    };
    if shutdown.is_cancelled() {
        // It ended because the shutdown reached it first: not a failure.
        match failed.take() {
            Some(Ok(Err(e))) => {
                tracing::error!(error = %order_runtime::telemetry::error_chain(e.as_ref()), "consumer ended with an error");
            }
            Some(Err(e)) => tracing::error!(error = %e, "consumer task failed"),
            Some(Ok(Ok(()))) | None => {}
        }
    }
    stop.cancel();
    let drained = order_runtime::shutdown::drain(
        settings.worker.shutdown_timeout,
        async {
            while let Some(ended) = consumers.join_next().await {
                if let Ok(Err(e)) = ended {
                    tracing::error!(error = %order_runtime::telemetry::error_chain(e.as_ref()), "consumer ended with an error");
                }
            }
        },
        "consumers still busy at the shutdown timeout; unacknowledged messages go back to the broker",
    )
    .await;
    if !drained {
        consumers.abort_all();
    }
    let _ = server.await;
    storage.close().await;
    if let Some(ended) = failed {
        ended.context("a consumer task")??;
        anyhow::bail!("a consumer stopped on its own");
    }
    tracing::info!("order-worker stopped");
    Ok(())
}
