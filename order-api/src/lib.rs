//! order-api: the REST API of the order service.
//!
//! At this stage it runs database migrations (`order-api migrate`, the job a
//! Kubernetes migration Job runs) and starts with its configuration checked;
//! the HTTP routes come with the API work.

use anyhow::Context;
use clap::{Parser, Subcommand};
use order_core::config::Settings;
use order_core::startup::{self, ConfigArgs};
use order_core::storage::Storage;

/// Command line of `order-api`.
#[derive(Debug, Parser)]
#[command(name = "order-api", version, about = "REST API of the order service")]
pub struct Cli {
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `order-api` subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Run the API until SIGTERM or SIGINT (the default)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
}

/// Runs the chosen command.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let storage = Storage::connect(&settings.database)?;
            startup::migrate(&storage)
                .await
                .context("migrating the database")?;
            storage.close().await;
            Ok(())
        }
        Command::Serve => {
            let storage = startup::open_storage(&settings)
                .await
                .context("opening the database")?;
            tracing::info!(
                server.port = settings.server.port,
                "order-api started; HTTP routes are not served yet"
            );
            order_core::shutdown::shutdown_signal().await;
            storage.close().await;
            tracing::info!("order-api stopped");
            Ok(())
        }
    }
}
