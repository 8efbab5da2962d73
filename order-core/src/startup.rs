//! What every binary does first: read its configuration, start logging,
//! open the database and (when `database.auto_migrate` is on) migrate it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigError, Settings, Sources};
use crate::storage::{Storage, StorageError};

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

/// Loads the settings and starts logging; on a bad setting prints the error
/// (which names the key) to stderr and returns the exit code to leave with.
///
/// # Errors
/// The exit code when the configuration cannot be used.
pub fn settings_and_telemetry(args: &ConfigArgs) -> Result<Settings, ExitCode> {
    match args.load() {
        Ok(settings) => {
            crate::telemetry::init(&settings.log);
            Ok(settings)
        }
        Err(e) => {
            eprintln!("configuration error: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Opens the database pool and, when `database.auto_migrate` is on, applies
/// pending migrations.
///
/// A database that cannot be reached yet is waited for: retried with a
/// backoff from 1 s up to every 30 s, each attempt logged, until it answers
/// or SIGTERM/SIGINT arrives. A process started during a database outage
/// thus comes up when the database does, instead of exiting into a restart
/// back-off (the Kubernetes manifests give it a startup probe of 5 minutes).
///
/// # Errors
/// When the settings cannot be used, a migration fails, or a shutdown
/// signal arrives while the database is still unreachable.
pub async fn open_storage(settings: &Settings) -> Result<Storage, StorageError> {
    let storage = Storage::connect(&settings.database)?;
    auto_migrate(settings, &storage).await?;
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
) -> Result<Storage, StorageError> {
    if settings.database.auto_migrate {
        let unlimited = Storage::connect(&settings.database)?;
        let migrated = auto_migrate(settings, &unlimited).await;
        unlimited.close().await;
        migrated?;
    }
    Storage::connect_with(&settings.database, Some(statement_timeout))
}

async fn auto_migrate(settings: &Settings, storage: &Storage) -> Result<(), StorageError> {
    if settings.database.auto_migrate {
        let mut delay = Duration::from_secs(1);
        loop {
            match migrate(storage).await {
                Ok(_) => break,
                Err(StorageError::Unavailable(e)) => {
                    tracing::warn!(
                        error = %e,
                        retry_in_s = delay.as_secs(),
                        "database unreachable at start; waiting for it"
                    );
                    tokio::select! {
                        () = crate::shutdown::shutdown_signal() => {
                            return Err(StorageError::Unavailable(e));
                        }
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_START_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The longest wait between two attempts to reach the database at start.
const MAX_START_RETRY: Duration = Duration::from_secs(30);

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

/// The body of every binary's `main`: settings and logging from `args`, then
/// `run`; exits 0 when it returns `Ok`, 1 (logging the error chain) when it
/// fails, 2 on bad configuration.
pub async fn run_main<F, Fut, E>(role: &str, args: &ConfigArgs, run: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let settings = match settings_and_telemetry(args) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{role} failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
