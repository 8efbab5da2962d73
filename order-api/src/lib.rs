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
    read_timeout: std::time::Duration,
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
        let mut checks = HealthChecks::new().with_database(storage.clone());
        if cache.is_enabled() {
            let cache = cache.clone();
            checks = checks.with("redis", false, move || {
                let cache = cache.clone();
                async move { cache.ping().await.is_ok() }
            });
        } else {
            tracing::info!("redis.enabled is false: every order read goes to the database");
        }
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
            read_timeout: settings.server.read_timeout,
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

    /// Serves until `shutdown` completes, then drains requests in flight
    /// (for at most `server.write_timeout`). A client gets
    /// `server.read_timeout` to send its request headers.
    pub async fn run_until_stopped<S>(self, shutdown: S)
    where
        S: Future<Output = ()> + Send + 'static,
    {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use hyper_util::server::conn::auto::Builder;

        let drain_for = self.state.request_timeout;
        let router = routes::router(self.state, self.checks, self.max_body_bytes);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, don't spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service =
                hyper_util::service::TowerToHyperService::new(warp::service(router.clone()));
            let watcher = graceful.watcher();
            let read_timeout = self.read_timeout;
            tokio::spawn(async move {
                let mut builder = Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(read_timeout);
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(drain_for, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after server.write_timeout; closing them");
        }
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
