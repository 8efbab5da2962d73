use crate::domain::TransitionError;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or is not accepting work (connection
    /// refused or lost, pool timeout, shutting down, out of resources):
    /// worth waiting for, never a reason to drop a message.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The connection settings cannot be used.
    #[error("database settings: {0}")]
    Config(String),
    /// No row with that id.
    #[error("not found")]
    NotFound,
    /// The status machine refused a transition.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A stored value this version cannot read.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// True when waiting (and retrying) is the right answer.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        match ErrorClass::of(&err) {
            ErrorClass::Unavailable => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// How a database error bears on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// A row's own data broke a rule (value out of range, too long, check or
    /// constraint violation): isolate the row.
    Row,
    /// Deadlock or serialization failure: run the transaction again.
    Retry,
    /// The database is out of reach.
    Unavailable,
    /// Anything else.
    Other,
}

impl ErrorClass {
    pub(crate) fn of(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable,
            sqlx::Error::Encode(_) => Self::Row,
            // Batch inserts report a key whose guard row vanished under them
            // (the concurrent writer rolled back) this way: run the batch again.
            sqlx::Error::RowNotFound => Self::Retry,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(sqlx::mysql::MySqlDatabaseError::number);
                match number {
                    // MySQL / MariaDB: deadlock, lock wait timeout.
                    Some(1213 | 1205) => Self::Retry,
                    // Incorrect value, data truncated, bad datetime, CHECK failed (MySQL, MariaDB).
                    Some(1366 | 1265 | 1292 | 3819 | 4025) => Self::Row,
                    // Too many connections, server shutting down, gone away, lost, read-only.
                    Some(1040 | 1053 | 2006 | 2013 | 1290 | 1836) => Self::Unavailable,
                    _ => match &code[..code.len().min(2)] {
                        "22" | "23" => Self::Row,
                        "40" => Self::Retry,
                        // Connection exception, insufficient resources, operator
                        // intervention (shutdown), system error, read-only transaction.
                        "08" | "53" | "57" | "58" => Self::Unavailable,
                        _ if code == "25006" => Self::Unavailable,
                        _ => Self::Other,
                    },
                }
            }
            _ => Self::Other,
        }
    }
}

/// The database's own words for a refused row, without the driver's wrapping.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!(
                "database refused the order: {} (SQLSTATE {code})",
                db.message()
            ),
            None => format!("database refused the order: {}", db.message()),
        },
        other => format!("database refused the order: {other}"),
    }
}
