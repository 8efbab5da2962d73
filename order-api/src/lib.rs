//! order-api: the REST API of the order service (warp).
//!
//! Layout: [`routes`] (one module per resource, mirroring the URLs),
//! [`error`] (the one error type, rendered as JSON), [`auth`] (operator
//! token), [`params`] (path and query parsing). `order-api migrate` applies
//! the database migrations and exits (what a Kubernetes Job runs).

pub mod auth;
pub mod error;
pub mod params;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use order_core::cache::OrderCache;
use order_core::config::Settings;
use order_core::observability::{self, HealthChecks};
use order_core::service::{OrderCreator, Retrier};
use order_core::startup::{self, ConfigArgs};
use order_core::storage::Storage;
use tokio::net::TcpListener;

use crate::routes::AppState;

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
    /// Serve the API until SIGTERM or SIGINT (the default)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
}

/// A bound, ready-to-run API.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    checks: HealthChecks,
    max_body_bytes: u64,
}

impl Application {
    /// Binds `server.port` (0 = any free port) and wires the routes.
    ///
    /// # Errors
    /// When the port cannot be bound or the Redis settings are unusable.
    pub async fn build(settings: &Settings, storage: Storage) -> anyhow::Result<Self> {
        let cache = OrderCache::connect(&settings.redis)?;
        let creator = OrderCreator::new(storage.clone(), settings.compensator.retry_policy());
        let retrier = Retrier::new(creator, &settings.compensator);
        let listener = TcpListener::bind(("0.0.0.0", settings.server.port))
            .await
            .with_context(|| format!("binding server.port {}", settings.server.port))?;
        if settings.api.admin_token.is_empty() {
            tracing::warn!("api.admin_token is empty: operator endpoints are off and answer 403");
        }
        let checks = HealthChecks::new()
            .with_database(storage.clone())
            .with("redis", false, {
                let cache = cache.clone();
                move || {
                    let cache = cache.clone();
                    async move { cache.ping().await.is_ok() }
                }
            });
        observability::metrics_handle();
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                storage,
                cache,
                retrier,
                admin_token: settings.api.admin_token.clone(),
                request_timeout: settings.server.write_timeout,
            }),
            checks,
            max_body_bytes: settings.api.max_body_bytes,
        })
    }

    /// The bound address.
    ///
    /// # Panics
    /// Never in practice: the listener is bound.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Serves until `shutdown` completes, then drains requests in flight.
    pub async fn run_until_stopped<S>(self, shutdown: S)
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let router = routes::router(self.state, self.checks, self.max_body_bytes);
        warp::serve(router)
            .incoming(self.listener)
            .graceful(shutdown)
            .run()
            .await;
    }
}

/// Runs the chosen command.
///
/// # Errors
/// When the database cannot be reached or migrated, or the port is taken.
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
            let app = Application::build(&settings, storage.clone()).await?;
            tracing::info!(server.addr = %app.addr(), server.port = app.port(), "order-api started");
            app.run_until_stopped(order_core::shutdown::shutdown_signal())
                .await;
            storage.close().await;
            tracing::info!("order-api stopped");
            Ok(())
        }
    }
}
