//! order-api: the REST API of the order service (warp).
//!
//! Layout: [`routes`] (one module per resource, mirroring the URLs),
//! [`error`] (the one error type, rendered as JSON), [`auth`] (who is
//! calling: the operator token or an end user's JWT), [`params`] (path and
//! query parsing), [`server`] (the connection loop and its limits).
//! `order-api migrate` applies the database migrations and exits (what a
//! Kubernetes Job runs); `order-api token` mints an end user's token.

pub mod auth;
pub mod error;
pub mod params;
pub mod routes;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use order_core::cache::OrderCache;
use order_core::service::{Failures, OrderCreator, Orders};
use order_core::storage::Storage;
use order_runtime::config::{AuthMode, Settings};
use order_runtime::output;
use order_runtime::probes::{self, HealthChecks};
use order_runtime::shutdown::CancellationToken;
use order_runtime::startup::{self, AtStart, ConfigArgs};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;

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
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API until SIGTERM or SIGINT (the default)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
    /// Print an end-user token signed with api.auth.jwt_secret (HS256), for demos and tests
    Token {
        /// The user id the token names
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        user: i64,
        /// How long the token is valid (e.g. 15m, 1h, 7d)
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Order statistics maintenance
    Stats {
        /// What to do
        #[command(subcommand)]
        action: StatsCommand,
    },
}

/// `order-api stats` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StatsCommand {
    /// Recompute the statistics rollups from the orders table, one UTC day per
    /// transaction (after a restore, or after running with stats.rollups
    /// false); safe while orders are written. Prints one JSON line per day
    /// and a summary.
    Rebuild {
        /// First day (YYYY-MM-DD, UTC); default: the first day with orders or rollups
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day (YYYY-MM-DD, UTC); default: the last day with orders or rollups
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
    },
}

/// A bound, ready-to-run API.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    checks: HealthChecks,
    max_body_bytes: u64,
    server: order_runtime::config::ServerSettings,
}

impl Application {
    /// Binds `server.host` and `server.port` (0 = any free port) and wires the routes.
    ///
    /// # Errors
    /// When the port cannot be bound, or the Redis or authentication
    /// settings are unusable.
    pub async fn build(settings: &Settings, storage: Storage) -> anyhow::Result<Self> {
        let auth = Authenticator::new(&settings.api)?;
        if settings.api.auth.mode == AuthMode::None {
            tracing::warn!(
                "api.auth.mode is none: ANY CALLER CAN READ AND CANCEL ANY ORDER. \
                 This is for local use only; never run it like this where users can reach it"
            );
        }
        let cache = OrderCache::connect(&settings.redis)?.with_near_cache(&settings.redis)?;
        let creator = OrderCreator::new(storage.clone(), settings.retry_policy());
        let retrier = settings.retrier(creator);
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .await
            .with_context(|| {
                format!(
                    "binding server.host {} and server.port {}",
                    settings.server.host, settings.server.port
                )
            })?;
        match (
            settings.api.admin_token.is_empty(),
            settings.api.readonly_token.is_empty(),
        ) {
            (true, true) => tracing::warn!(
                "api.admin_token is empty: operator endpoints are off and answer 403"
            ),
            (true, false) => tracing::warn!(
                "api.admin_token is empty: operator actions are off and answer 403; \
                 api.readonly_token reads"
            ),
            _ => {}
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
        probes::install_metrics("order-api");
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                orders: Orders::new(storage.clone(), cache),
                storage,
                failures: Failures::new(retrier),
                auth,
                request_timeout: settings.server.write_timeout,
                stats_slots: Semaphore::new(
                    usize::try_from(settings.database.max_connections / 4)
                        .unwrap_or(1)
                        .max(1),
                ),
            }),
            checks,
            max_body_bytes: settings.api.max_body_bytes,
            server: settings.server.clone(),
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

    /// Orders, as the API changes them (to wait for changes in flight after
    /// the server stopped).
    #[must_use]
    pub fn orders(&self) -> Orders {
        self.state.orders.clone()
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Serves until `shutdown` completes, then drains requests in flight
    /// (for at most `server.write_timeout`). At most `server.max_connections`
    /// connections are open at once; a connection is closed when its first
    /// request's headers have not arrived within `server.read_timeout`, or
    /// when no request has been in flight on it for `server.idle_timeout`
    /// (see [`server`]).
    pub async fn run_until_stopped<S>(self, shutdown: S)
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let router = routes::router(self.state, self.checks, self.max_body_bytes);
        let service = hyper_util::service::TowerToHyperService::new(warp::service(router));
        server::serve(self.listener, service, &self.server, shutdown).await;
    }
}

/// `order-api stats rebuild`: every day of the range, or of the days that
/// have orders or rollups.
async fn rebuild_stats(
    settings: &Settings,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.stats.rollups,
        "stats.rollups is false: there are no rollups to rebuild (turn it on in every role first)"
    );
    if let (Some(from), Some(to)) = (from, to) {
        anyhow::ensure!(from <= to, "--to ({to}) is before --from ({from})");
    }
    let storage = Storage::connect(&settings.database)?;
    let result = order_runtime::shutdown::unless_stopped(shutdown, async {
        storage.probe(startup::attempt_timeout(settings)).await?;
        // A missing end is the first or last day with orders or rollups;
        // with neither, the other end.
        let (first, last) = storage.stats_days().await?.unzip();
        let (Some(from), Some(to)) = (from.or(first).or(to), to.or(last).or(from)) else {
            return Ok(Ok((0, 0, 0)));
        };
        if from > to {
            return Ok(Err(format!(
                "nothing to rebuild: {from} is after {to} (the days with orders or rollups end \
                 or start there; give both --from and --to)"
            )));
        }
        let (mut days, mut orders, mut corrected) = (0_u64, 0_i64, 0_u64);
        order_core::service::maintenance::rebuild_stats(&storage, from, to, |r| {
            days += 1;
            orders += r.orders;
            corrected += u64::from(r.corrected);
            let _ = output::json(&serde_json::json!({
                "day": r.day,
                "orders": r.orders,
                "previous": r.previous,
                "corrected": r.corrected,
            }));
        })
        .await?;
        Ok::<_, order_core::storage::StorageError>(Ok((days, orders, corrected)))
    })
    .await;
    storage.close().await;
    let (days, orders, corrected) = result?
        .context("rebuilding the statistics rollups")?
        .map_err(anyhow::Error::msg)?;
    output::json(&serde_json::json!({
        "rebuilt_days": days,
        "orders": orders,
        "corrected_days": corrected,
    }))?;
    Ok(())
}

/// Runs the chosen command.
///
/// # Errors
/// When the database cannot be reached or migrated, or the port is taken.
pub async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let storage = Storage::connect(&settings.database)?;
            let applied = order_runtime::shutdown::unless_stopped(&shutdown, async {
                storage.probe(startup::attempt_timeout(&settings)).await?;
                startup::migrate(&storage).await
            })
            .await?
            .context("migrating the database")?;
            storage.close().await;
            output::json(&serde_json::json!({
                "driver": storage.driver(),
                "applied": applied,
            }))?;
            Ok(())
        }
        Command::Token { user, ttl } => {
            output::line(&auth::mint(&settings.api, user, ttl)?)?;
            Ok(())
        }
        Command::Stats {
            action: StatsCommand::Rebuild { from, to },
        } => rebuild_stats(&settings, from, to, &shutdown).await,
        Command::Serve => {
            // Refuse unusable auth settings before waiting for the database.
            Authenticator::new(&settings.api)?;
            let storage = if settings.api.statement_timeout.is_zero() {
                startup::open_storage(&settings, AtStart::Wait, &shutdown).await
            } else {
                startup::open_limited_storage(
                    &settings,
                    settings.api.statement_timeout,
                    AtStart::Wait,
                    &shutdown,
                )
                .await
            }
            .context("opening the database")?;
            let app = Application::build(&settings, storage.clone()).await?;
            tracing::info!(server.addr = %app.addr(), server.port = app.port(), "order-api started");
            let orders = app.orders();
            app.run_until_stopped(shutdown.cancelled_owned()).await;
            // Changes whose requests were dropped still commit and invalidate.
            orders.close(settings.server.write_timeout).await;
            storage.close().await;
            tracing::info!("order-api stopped");
            Ok(())
        }
    }
}
