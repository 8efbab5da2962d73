//! What every binary does first: read its configuration, start logging,
//! open the database and (when `database.auto_migrate` is on) migrate it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigError, Settings, Sources};
use crate::shutdown::CancellationToken;
use order_core::domain::Backoff;
use order_core::storage::{Storage, StorageError};

/// The flags every binary shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file [default: config/config.yaml, used when present]
    #[arg(
        long,
        short = 'c',
        env = "ORDER_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Set one configuration key, e.g. `--set database.port=5433`; repeatable;
    /// wins over the file and ORDER__… environment variables
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub overrides: Vec<String>,
}

impl ConfigArgs {
    /// Loads the settings from defaults, the file, the environment and these flags.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad key.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(&Sources::standard(self.config.as_deref(), &self.overrides))
    }
}

/// Exit code for a configuration error (the process never started).
pub const EXIT_CONFIG: u8 = 2;

/// Loads the settings and starts logging; on a bad setting (a bad
/// `log.level` or `RUST_LOG` included) prints the error, which names the
/// key, to stderr and returns the exit code to leave with.
///
/// # Errors
/// The exit code when the configuration cannot be used.
pub fn settings_and_telemetry(args: &ConfigArgs) -> Result<Settings, ExitCode> {
    let settings = args.load().map_err(|e| e.to_string()).and_then(|settings| {
        crate::telemetry::init(&settings.log)?;
        Ok(settings)
    });
    settings.map_err(|e| {
        crate::output::error_line(&format!("configuration error: {e}"));
        ExitCode::from(EXIT_CONFIG)
    })
}

/// What a process does when the database cannot be reached at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStart {
    /// Wait for it (a role: it comes up when the database does).
    Wait,
    /// Fail at once, naming the address and the cause (a command such as
    /// `migrate` or `run-once`, whose caller wants an answer).
    Fail,
}

/// How long one attempt to reach the database at start may take
/// (`database.acquire_timeout`, between 1 and 10 s).
pub fn attempt_timeout(settings: &Settings) -> Duration {
    settings
        .database
        .acquire_timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Opens the database pool and, when `database.auto_migrate` is on, applies
/// pending migrations.
///
/// With [`AtStart::Wait`], a database that cannot be reached yet is waited
/// for while `auto_migrate` is on: tried again after 1 s, doubling up to
/// 30 s ([`Backoff::start_up`]), each attempt logged with the address and the cause, until it
/// answers or `stop` is cancelled (SIGTERM/SIGINT). A process started during a database
/// outage thus comes up when the database does, instead of exiting into a
/// restart back-off (the Kubernetes manifests give it a startup probe of 5
/// minutes). With [`AtStart::Fail`], one attempt is made, whatever
/// `auto_migrate` says.
///
/// # Errors
/// When the settings cannot be used, a migration fails, the database cannot
/// be reached with [`AtStart::Fail`], or a shutdown signal arrives while it
/// is still unreachable.
pub async fn open_storage(
    settings: &Settings,
    at_start: AtStart,
    stop: &CancellationToken,
) -> Result<Storage, StorageError> {
    let storage = as_configured(settings, Storage::connect(&settings.database)?);
    make_ready(settings, &storage, at_start, stop).await?;
    Ok(storage)
}

/// [`open_storage`], for a pool whose statements are limited to
/// `statement_timeout`; migrations run on a pool of their own without it.
///
/// # Errors
/// As [`open_storage`].
pub async fn open_limited_storage(
    settings: &Settings,
    statement_timeout: Duration,
    at_start: AtStart,
    stop: &CancellationToken,
) -> Result<Storage, StorageError> {
    let unlimited = Storage::connect(&settings.database)?;
    let ready = make_ready(settings, &unlimited, at_start, stop).await;
    unlimited.close().await;
    ready?;
    Ok(as_configured(
        settings,
        Storage::connect_with(&settings.database, Some(statement_timeout))?,
    ))
}

/// `storage`, writing order events unless `events.enabled` is false and
/// keeping the statistics rollups unless `stats.rollups` is false.
fn as_configured(settings: &Settings, storage: Storage) -> Storage {
    let storage = if settings.events.enabled {
        storage
    } else {
        storage.without_events()
    };
    if settings.stats.rollups {
        storage
    } else {
        storage.without_rollups()
    }
}

/// Reaches the database (waiting or not, see [`open_storage`]) and migrates
/// it when `database.auto_migrate` is on.
async fn make_ready(
    settings: &Settings,
    storage: &Storage,
    at_start: AtStart,
    stop: &CancellationToken,
) -> Result<(), StorageError> {
    let migrating = settings.database.auto_migrate;
    if at_start == AtStart::Wait && !migrating {
        // Nothing to do before serving: the pool connects when first used.
        return Ok(());
    }
    let mut backoff = Backoff::start_up();
    loop {
        let attempt = async {
            storage.probe(attempt_timeout(settings)).await?;
            if migrating {
                migrate(storage).await?;
            }
            Ok::<(), StorageError>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_unavailable() && at_start == AtStart::Wait => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %e,
                    retry_in_s = delay.as_secs(),
                    "database unreachable at start; waiting for it"
                );
                tokio::select! {
                    () = stop.cancelled() => return Err(e),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies pending migrations and logs what was done.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn migrate(storage: &Storage) -> Result<Vec<i64>, StorageError> {
    let applied = storage.migrate().await?;
    if applied.is_empty() {
        tracing::info!(db.driver = ?storage.driver(), "database schema is up to date");
    } else {
        tracing::info!(db.driver = ?storage.driver(), migrations = ?applied, "applied migrations");
    }
    Ok(applied)
}

/// The body of every binary's `main`: settings and logging from `args`,
/// then the one shutdown token ([`crate::shutdown::cancel_on_signal`]), then
/// `run` with both; exits 0 when it returns `Ok`, 1 when it fails (logging
/// the error and its causes, each once, and printing them to stderr), 2 on
/// bad configuration.
pub async fn run_main<F, Fut, E>(role: &str, args: &ConfigArgs, run: F) -> ExitCode
where
    F: FnOnce(Settings, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    let settings = match settings_and_telemetry(args) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let stop = crate::shutdown::cancel_on_signal();
    match run(settings, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain = crate::telemetry::error_chain(e.as_ref());
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %chain, "{role} failed");
            } else {
                // A filter that silences errors must not make the exit mute.
                crate::output::error_line(&format!("error: {role} failed: {chain}"));
            }
            ExitCode::FAILURE
        }
    }
}
