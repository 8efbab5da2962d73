use crate::domain::TransitionError;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or is not accepting work (connection
    /// refused or lost, pool timeout, shutting down, out of resources):
    /// worth waiting for, never a reason to drop a message.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A connection to the database could not be opened: names where it was
    /// tried and why it failed (refused, no answer, no such host, refused
    /// login); worth waiting for, like [`StorageError::Unavailable`].
    #[error("cannot reach {target}: {cause}")]
    Unreachable {
        /// The engine and its address, e.g. `PostgreSQL at db:5432`.
        target: String,
        /// The underlying cause, its chain printed once.
        cause: String,
    },
    /// A statement ran past the session's statement timeout and was
    /// cancelled by the server.
    #[error("the statement ran past its time limit: {0}")]
    TimedOut(#[source] sqlx::Error),
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
    /// The request cannot be answered as asked (a range too long).
    #[error("{0}")]
    Invalid(String),
    /// A stored value this version cannot read.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
    /// Some failures of a batch could not be recorded (see
    /// [`super::Storage::record_each`] for the per-message answer).
    #[error("{refused} of the failures could not be recorded: {first}")]
    NotRecorded {
        /// How many were refused.
        refused: usize,
        /// The first refusal's reason.
        first: String,
    },
}

impl StorageError {
    /// True when waiting (and retrying) is the right answer: the database is
    /// out of reach. This is the only error that pauses consumption; every
    /// other one is narrowed to the message(s) that cause it.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Unreachable { .. })
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        if is_statement_timeout(&err) {
            return Self::TimedOut(err);
        }
        match ErrorClass::of(&err) {
            ErrorClass::Unavailable => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// True for a statement the server cancelled for its time: PostgreSQL's
/// `57014` (`statement_timeout`), MySQL's 3024 (`max_execution_time`),
/// MariaDB's 1969 (`max_statement_time`).
fn is_statement_timeout(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        Some(my) => matches!(my.number(), 3024 | 1969),
        None => db.code().as_deref() == Some("57014"),
    }
}

/// How a database error bears on a batch of messages.
///
/// Only [`ErrorClass::Unavailable`] pauses consumption (nothing is
/// acknowledged, the batch is tried again once the database answers). Every
/// other class is narrowed: the batch is split until the message that causes
/// the error stands alone, that message is recorded as a failure, and the
/// rest of the batch commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A row's own data broke a rule (value out of range, bad encoding, too
    /// long, check or constraint violation): narrow to the row.
    Row,
    /// Deadlock, lock wait or serialization failure: run the transaction
    /// again (and narrow if it keeps happening).
    Retry,
    /// The database is out of reach, or refuses us rather than the rows
    /// (authorization, a missing table or privilege): pause.
    Unavailable,
    /// Anything else (a statement the server refuses for its size or
    /// cancels for its time, a trigger's error, …): narrow, as for
    /// [`ErrorClass::Row`].
    Other,
}

impl ErrorClass {
    /// The class of a driver error.
    #[must_use]
    pub fn of(err: &sqlx::Error) -> Self {
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
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(sqlx::mysql::MySqlDatabaseError::number);
                Self::of_code(db.code().as_deref(), number)
            }
            _ => Self::Other,
        }
    }

    /// The class of a server error: its SQLSTATE and, on MySQL and MariaDB,
    /// its error number (which wins where both speak).
    #[must_use]
    pub fn of_code(sqlstate: Option<&str>, mysql_number: Option<u16>) -> Self {
        match mysql_number {
            // Deadlock, lock wait timeout.
            Some(1213 | 1205) => return Self::Retry,
            // Incorrect value, data truncated, bad datetime, CHECK failed,
            // bad string for the character set, data too long, out of range.
            Some(1366 | 1265 | 1292 | 3819 | 4025 | 1300 | 1406 | 1264 | 1690) => {
                return Self::Row;
            }
            // The statement is larger than max_allowed_packet (its SQLSTATE,
            // 08S01, reads like a lost connection; it is the batch's size),
            // or has too many placeholders.
            Some(1153 | 1390) => return Self::Other,
            // Too many connections, server shutting down, gone away, lost,
            // read-only, out of memory, disk full, table full, error writing
            // a file, a storage engine's error (errno 28: no space left).
            Some(
                1040 | 1053 | 2006 | 2013 | 1290 | 1836 | 1037 | 1041 | 1021 | 1114 | 1026 | 1030,
            ) => {
                return Self::Unavailable;
            }
            // The server refuses us rather than the rows: access denied (to
            // the server or the database), unknown database, host blocked or
            // not allowed, the user's connection or resource limits.
            Some(1044 | 1045 | 1049 | 1129 | 1130 | 1203 | 1226) => return Self::Unavailable,
            _ => {}
        }
        let code = sqlstate.unwrap_or_default();
        match &code[..code.len().min(2)] {
            "22" | "23" => Self::Row,
            "40" => Self::Retry,
            // A statement cancelled (statement_timeout, or by an operator):
            // smaller parts of the batch may well go through.
            _ if code == "57014" => Self::Other,
            // Connection exception, invalid authorization (a rotated
            // password), unknown database, insufficient resources, operator
            // intervention (shutdown), system error. And class 42: a
            // permission, table or column the statements need is missing.
            // Every statement is parameterised, so no message's bytes can
            // cause that: the database is unusable for us, not the row.
            "08" | "28" | "3D" | "42" | "53" | "57" | "58" => Self::Unavailable,
            // A read-only transaction (a replica, or a failover in progress).
            _ if code == "25006" => Self::Unavailable,
            _ => Self::Other,
        }
    }

    /// True when this class pauses consumption instead of narrowing the batch.
    #[must_use]
    pub fn pauses(self) -> bool {
        self == Self::Unavailable
    }
}

/// The database's own words for a refused `what` ("order", "failure
/// record"), without the driver's wrapping.
pub(crate) fn describe(err: &sqlx::Error, what: &str) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!(
                "database refused the {what}: {} (SQLSTATE {code})",
                db.message()
            ),
            None => format!("database refused the {what}: {}", db.message()),
        },
        other => format!("database refused the {what}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(kind))
    }

    #[test]
    fn lost_connections_and_an_exhausted_pool_pause() {
        for err in [
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::UnexpectedEof),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("unexpected packet".into()),
        ] {
            assert_eq!(ErrorClass::of(&err), ErrorClass::Unavailable, "{err}");
            assert!(ErrorClass::of(&err).pauses());
            assert!(StorageError::from(err).is_unavailable());
        }
    }

    #[test]
    fn server_states_of_an_outage_pause() {
        for (state, what) in [
            ("08006", "connection failure"),
            ("08001", "cannot connect"),
            ("53300", "too many connections"),
            ("53100", "disk full"),
            ("57P01", "admin shutdown"),
            ("57P03", "cannot connect now (starting up)"),
            ("58030", "I/O error"),
            ("25006", "read-only transaction"),
        ] {
            assert_eq!(
                ErrorClass::of_code(Some(state), None),
                ErrorClass::Unavailable,
                "{what}"
            );
        }
        for (state, what) in [
            ("28P01", "password authentication failed"),
            ("28000", "invalid authorization"),
            ("3D000", "unknown database"),
            (
                "42501",
                "permission denied for the table (revoked privileges)",
            ),
            ("42P01", "the table does not exist"),
            ("42S02", "the table does not exist (MySQL)"),
            ("42000", "command denied (MySQL 1142)"),
        ] {
            assert_eq!(
                ErrorClass::of_code(Some(state), None),
                ErrorClass::Unavailable,
                "{what}"
            );
        }
        for (number, what) in [
            (1045, "access denied"),
            (1044, "access denied to the database"),
            (1049, "unknown database"),
            (1129, "host blocked"),
            (1130, "host not allowed"),
            (1203, "max_user_connections"),
            (1226, "user resource limit"),
            (1114, "table full"),
            (1026, "error writing file"),
            (1030, "storage engine error"),
            (1040, "too many connections"),
            (1053, "server shutdown"),
            (2006, "gone away"),
            (2013, "lost connection"),
            (1290, "read-only"),
            (1836, "read-only mode"),
        ] {
            assert_eq!(
                ErrorClass::of_code(Some("HY000"), Some(number)),
                ErrorClass::Unavailable,
                "{what}"
            );
        }
    }

    #[test]
    fn a_rows_own_data_narrows_to_the_row() {
        for (state, what) in [
            ("22021", "NUL or a bad byte for the encoding (PostgreSQL)"),
            ("22003", "numeric value out of range"),
            ("22001", "string too long"),
            ("23514", "check violation"),
            ("23505", "unique violation"),
        ] {
            let class = ErrorClass::of_code(Some(state), None);
            assert_eq!(class, ErrorClass::Row, "{what}");
            assert!(!class.pauses());
        }
        for number in [1366, 1265, 1292, 3819, 4025, 1300, 1406, 1264, 1690] {
            assert_eq!(
                ErrorClass::of_code(Some("22007"), Some(number)),
                ErrorClass::Row,
                "{number}"
            );
        }
        assert_eq!(
            ErrorClass::of(&sqlx::Error::Encode("bad value".into())),
            ErrorClass::Row
        );
    }

    #[test]
    fn a_statement_too_large_or_with_too_many_placeholders_narrows_instead_of_pausing() {
        // MariaDB reports max_allowed_packet with SQLSTATE 08S01, a
        // connection state: the number must win.
        let packet = ErrorClass::of_code(Some("08S01"), Some(1153));
        assert_eq!(packet, ErrorClass::Other);
        assert!(!packet.pauses());
        assert_eq!(
            ErrorClass::of_code(Some("HY000"), Some(1390)),
            ErrorClass::Other
        );
    }

    #[test]
    fn deadlocks_and_serialization_failures_run_again() {
        assert_eq!(ErrorClass::of_code(Some("40001"), None), ErrorClass::Retry);
        assert_eq!(ErrorClass::of_code(Some("40P01"), None), ErrorClass::Retry);
        assert_eq!(
            ErrorClass::of_code(Some("40001"), Some(1213)),
            ErrorClass::Retry
        );
        assert_eq!(
            ErrorClass::of_code(Some("HY000"), Some(1205)),
            ErrorClass::Retry
        );
        assert!(!ErrorClass::Retry.pauses());
    }

    #[test]
    fn anything_else_narrows() {
        for state in ["P0001", "XX000", "45000", "HY000", "57014", "54000"] {
            let class = ErrorClass::of_code(Some(state), None);
            assert_eq!(class, ErrorClass::Other, "{state}");
            assert!(!class.pauses());
        }
        assert_eq!(ErrorClass::of_code(None, None), ErrorClass::Other);
        assert!(!StorageError::from(sqlx::Error::ColumnNotFound("x".into())).is_unavailable());
    }
}
