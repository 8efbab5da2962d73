//! A fresh, migrated database per test on PostgreSQL or MariaDB/MySQL,
//! dropped when the test ends.
//!
//! Server addresses come from `TEST_POSTGRES_URL` and `TEST_MYSQL_URL`
//! (defaults: the local services of the development machine).

use sqlx::Connection;

use order_core::settings::{DatabaseSettings, Driver, Secret};
use order_core::storage::Storage;

/// The engines the storage suite runs on.
pub const ENGINES: [Driver; 2] = [Driver::Postgres, Driver::Mysql];

/// Databases made by tests start with this, so leftovers can be found.
pub const TEST_DB_PREFIX: &str = "ordertest_";

/// The administrative URL of the test server for `driver`.
#[must_use]
pub fn server_url(driver: Driver) -> String {
    match driver {
        Driver::Postgres => std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Driver::Mysql => std::env::var("TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
    }
}

/// `url` with its database name replaced by `dbname`.
fn with_database(url: &str, dbname: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{dbname}?{q}"),
        None => format!("{host_part}/{dbname}"),
    }
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The storage over it.
    pub storage: Storage,
    /// Settings that reach it (for spawning a binary or a second pool).
    pub settings: DatabaseSettings,
    name: String,
    driver: Driver,
}

impl TestDatabase {
    /// A new database with every migration applied.
    ///
    /// # Panics
    /// When the test server cannot be reached: the test cannot run.
    pub async fn new(driver: Driver) -> Self {
        let db = Self::empty(driver).await;
        db.storage
            .migrate()
            .await
            .expect("migrate the test database");
        db
    }

    /// A new database with no tables.
    ///
    /// # Panics
    /// When the test server cannot be reached.
    pub async fn empty(driver: Driver) -> Self {
        order_runtime::telemetry::init_for_tests();
        let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
        admin_execute(driver, &format!("CREATE DATABASE {}", quote(driver, &name))).await;
        let settings = DatabaseSettings {
            driver,
            url: Secret::new(with_database(&server_url(driver), &name)),
            max_connections: 16,
            ..DatabaseSettings::default()
        };
        let storage = Storage::connect(&settings).expect("connect to the test database");
        Self {
            storage,
            settings,
            name,
            driver,
        }
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine.
    #[must_use]
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Settings that reach this database through `via` (a [`proxy::FaultProxy`]
    /// address) instead of directly.
    #[must_use]
    pub fn settings_via(&self, via: std::net::SocketAddr) -> DatabaseSettings {
        let url = self.settings.url.expose();
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let host_start = rest.find('@').map_or(0, |i| i + 1);
        let host_end = rest.find('/').unwrap_or(rest.len());
        let rerouted = format!(
            "{}{}{via}{}",
            &url[..scheme_end],
            &rest[..host_start],
            &rest[host_end..]
        );
        DatabaseSettings {
            url: Secret::new(rerouted),
            ..self.settings.clone()
        }
    }

    /// The address of the database server.
    ///
    /// # Panics
    /// When the server URL names no resolvable host and port.
    #[must_use]
    pub fn server_addr(&self) -> std::net::SocketAddr {
        use std::net::ToSocketAddrs;
        let url = server_url(self.driver);
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        let rest = &rest[rest.find('@').map_or(0, |i| i + 1)..];
        let host_port = &rest[..rest.find('/').unwrap_or(rest.len())];
        let default_port = match self.driver {
            Driver::Postgres => 5432,
            Driver::Mysql => 3306,
        };
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        host_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("no address for {host_port}"))
    }

    /// Runs one statement; returns the rows it affected.
    ///
    /// # Panics
    /// When the statement fails.
    pub async fn execute(&self, sql: &str) -> u64 {
        let done = match &self.storage {
            Storage::Postgres(s) => sqlx::query(sql)
                .execute(s.pool())
                .await
                .map(|r| r.rows_affected()),
            Storage::Mysql(s) => sqlx::query(sql)
                .execute(s.pool())
                .await
                .map(|r| r.rows_affected()),
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Makes the database refuse to record the failure of any message whose
    /// bytes contain `marker` (ASCII), with an error of its own (a trigger:
    /// SQLSTATE P0001 or 45000, neither an outage nor a data rule), as a
    /// database can refuse a row for reasons no message controls.
    ///
    /// # Panics
    /// When the trigger cannot be created.
    pub async fn refuse_failure_records_containing(&self, marker: &str) {
        assert!(
            marker
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a plain marker"
        );
        match self.driver {
            Driver::Postgres => {
                self.execute(&format!(
                    "CREATE FUNCTION refuse_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN IF position('{marker}'::bytea in NEW.message_data) > 0 \
                     THEN RAISE EXCEPTION 'no room for it'; END IF; RETURN NEW; END $$"
                ))
                .await;
                self.execute(
                    "CREATE TRIGGER refuse_failure BEFORE INSERT ON order_failures \
                     FOR EACH ROW EXECUTE FUNCTION refuse_failure()",
                )
                .await;
            }
            Driver::Mysql => {
                self.execute(&format!(
                    "CREATE TRIGGER refuse_failure BEFORE INSERT ON order_failures FOR EACH ROW \
                     BEGIN IF LOCATE('{marker}', NEW.message_data) > 0 \
                     THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no room for it'; END IF; END"
                ))
                .await;
            }
        }
    }

    /// Runs a query returning one integer (`SELECT COUNT(*) …`).
    ///
    /// # Panics
    /// When the query fails.
    pub async fn count(&self, sql: &str) -> i64 {
        let value = match &self.storage {
            Storage::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
            Storage::Mysql(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
        };
        value.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The tables a migrated database has, the migrations' own included.
    pub const MIGRATED_TABLES: usize = 9;

    /// The names of the database's tables, sorted.
    ///
    /// # Panics
    /// When the catalog cannot be read.
    pub async fn table_names(&self) -> Vec<String> {
        let names: Result<Vec<String>, _> = match &self.storage {
            Storage::Postgres(s) => {
                sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                    .fetch_all(s.pool())
                    .await
            }
            Storage::Mysql(s) => {
                sqlx::query_scalar(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1",
                )
                .fetch_all(s.pool())
                .await
            }
        };
        names.expect("read the table names")
    }
}

fn quote(driver: Driver, name: &str) -> String {
    match driver {
        Driver::Postgres => format!("\"{name}\""),
        Driver::Mysql => format!("`{name}`"),
    }
}

async fn admin_execute(driver: Driver, sql: &str) {
    let url = server_url(driver);
    match driver {
        Driver::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        }
        Driver::Mysql => {
            let mut conn = sqlx::MySqlConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (driver, name) = (self.driver, self.name.clone());
        let sql = match driver {
            Driver::Postgres => format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(driver, &name)
            ),
            Driver::Mysql => format!("DROP DATABASE IF EXISTS {}", quote(driver, &name)),
        };
        // Drop runs inside the test's runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database")
                .block_on(admin_execute(driver, &sql));
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test database {name}; scripts/test.sh drops leftovers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_options_kept() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            with_database("mysql://root@h/mysql?ssl-mode=disabled", "x"),
            "mysql://root@h/x?ssl-mode=disabled"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}
