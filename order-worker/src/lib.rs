//! order-worker: consumes seckill-success messages and creates orders in batches.
//!
//! At this stage it starts with its configuration checked and the database
//! migrated (when `database.auto_migrate` is on), then waits for SIGTERM.

use anyhow::Context;
use clap::Parser;
use order_core::config::Settings;
use order_core::startup::{self, ConfigArgs};

/// Port of `/health` and `/metrics` when `observability.port` is unset.
pub const DEFAULT_OBSERVABILITY_PORT: u16 = 9091;

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

/// Runs until SIGTERM or SIGINT.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let storage = startup::open_storage(&settings)
        .await
        .context("opening the database")?;
    tracing::info!(
        observability.port = settings
            .observability
            .port
            .unwrap_or(DEFAULT_OBSERVABILITY_PORT),
        "order-worker started"
    );
    order_core::shutdown::shutdown_signal().await;
    storage.close().await;
    tracing::info!("order-worker stopped");
    Ok(())
}
