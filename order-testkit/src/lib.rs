//! Test support: a fresh, migrated database per test on PostgreSQL or
//! MariaDB/MySQL, dropped when the test ends.
//!
//! Server addresses come from `TEST_POSTGRES_URL` and `TEST_MYSQL_URL`
//! (defaults: the local services of the development machine).

use sqlx::Connection;

use crate::config::{DatabaseSettings, Driver, Secret};
use crate::storage::Storage;

/// Runs each named `async fn(Driver)` as two tests, `postgres::name` and
/// `mysql::name`, each on a multi-threaded runtime.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::config::Driver::Postgres).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::config::Driver::Mysql).await;
                }
            )*
        }
    };
}

/// Asserts that `binary --help` succeeds mentioning `expected` words, and
/// that `binary --version` prints `name version`.
///
/// # Panics
/// When either does not.
pub fn assert_help_and_version(binary: &str, name: &str, expected: &[&str]) {
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in expected.iter().chain(&["--config", "--set"]) {
        assert!(text.contains(word), "--help of {name} lacks {word}: {text}");
    }
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .expect("run --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );
}

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
        crate::telemetry::init_for_tests();
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

/// Runs a workspace binary as a child process, the way Kubernetes would.
pub mod process {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A running binary whose stdout lines are collected.
    #[derive(Debug)]
    pub struct Running {
        child: Child,
        lines: mpsc::Receiver<String>,
        seen: Vec<String>,
    }

    /// Starts `binary` with `args` and extra `env`; logs are plain text.
    ///
    /// # Panics
    /// When the binary cannot be started.
    #[must_use]
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env("ORDER__LOG__FORMAT", "pretty")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    impl Running {
        /// Waits until an output line (printed before or after this call) contains `text`.
        ///
        /// # Panics
        /// After `timeout`, showing what was printed.
        pub fn wait_for(&mut self, text: &str, timeout: Duration) {
            if self.seen.iter().any(|line| line.contains(text)) {
                return;
            }
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
            }
            let _ = self.child.kill();
            panic!(
                "no line containing {text:?} within {timeout:?}; output:\n{}",
                self.seen.join("\n")
            );
        }

        /// Sends SIGTERM and waits for the exit.
        ///
        /// # Panics
        /// When the process does not exit within `timeout`.
        pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
            let pid = self.child.id().to_string();
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("run kill");
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = self.child.try_wait().expect("wait for the child") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "no exit within {timeout:?} of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Kills the process with SIGKILL, as a crash or the OOM killer would.
        ///
        /// # Panics
        /// When the process cannot be signalled.
        pub fn kill(&mut self) {
            let pid = self.child.id().to_string();
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("run kill");
            let _ = self.child.wait();
        }

        /// Everything printed so far.
        #[must_use]
        pub fn output(&mut self) -> String {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            self.seen.join("\n")
        }
    }
}

/// A TCP proxy the test controls, to cut a dependency and heal it again.
pub mod proxy {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    /// Forwards `127.0.0.1:<port>` to a target until cut; can hold back
    /// the target's answers.
    #[derive(Debug)]
    pub struct FaultProxy {
        addr: SocketAddr,
        state: Arc<Mutex<State>>,
        stop: CancellationToken,
        /// Milliseconds each chunk from the target is held before it is passed on.
        delay_ms: Arc<AtomicU64>,
        /// Told when the target sends a chunk containing these bytes.
        watch: Watch,
    }

    /// A pending [`FaultProxy::watch_answers`].
    type Watch = Arc<Mutex<Option<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>>>;

    /// What a relay does with the chunks it passes on.
    #[derive(Clone, Default)]
    struct Relay {
        delay_ms: Arc<AtomicU64>,
        watch: Watch,
    }

    /// Copies `from` to `to`, telling the watcher of a chunk it waits for,
    /// and holding each chunk `delay_ms` before passing it on.
    async fn relay(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        Relay { delay_ms, watch }: Relay,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            {
                let mut watch = watch.lock().expect("proxy watch");
                let seen = watch.as_ref().is_some_and(|(needle, _)| {
                    buf[..n]
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                });
                if seen && let Some((_, tell)) = watch.take() {
                    let _ = tell.send(());
                }
            }
            let delay = delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    #[derive(Debug)]
    struct State {
        cut: bool,
        /// Cancelled on every cut: ends the connections open at that time.
        generation: CancellationToken,
    }

    impl FaultProxy {
        /// Starts forwarding to `target` on a free loopback port.
        ///
        /// # Panics
        /// When no port can be bound.
        pub async fn start(target: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the proxy");
            let addr = listener.local_addr().expect("proxy address");
            let state = Arc::new(Mutex::new(State {
                cut: false,
                generation: CancellationToken::new(),
            }));
            let stop = CancellationToken::new();
            let answers = Relay::default();
            let (accept_state, accept_stop) = (state.clone(), stop.clone());
            let accept_answers = answers.clone();
            tokio::spawn(async move {
                loop {
                    let (inbound, _) = tokio::select! {
                        () = accept_stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(_) => continue,
                        },
                    };
                    let (cut, generation) = {
                        let s = accept_state.lock().expect("proxy state");
                        (s.cut, s.generation.clone())
                    };
                    if cut {
                        drop(inbound); // refused: closed at once
                        continue;
                    }
                    let answers = accept_answers.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::select! {
                            () = generation.cancelled() => {}
                            () = relay(in_read, out_write, Relay::default()) => {}
                            () = relay(out_read, in_write, answers) => {}
                        }
                    });
                }
            });
            Self {
                addr,
                state,
                stop,
                delay_ms: answers.delay_ms,
                watch: answers.watch,
            }
        }

        /// Resolves when the target next sends a chunk containing `needle`
        /// (seen as it arrives, before any delay).
        pub fn watch_answers(&self, needle: &[u8]) -> tokio::sync::oneshot::Receiver<()> {
            let (tell, told) = tokio::sync::oneshot::channel();
            *self.watch.lock().expect("proxy watch") = Some((needle.to_vec(), tell));
            told
        }

        /// From now on, every chunk the target sends is held `delay` before
        /// it reaches the client (zero: passed on at once).
        pub fn delay_answers(&self, delay: Duration) {
            self.delay_ms.store(
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }

        /// The address clients should connect to.
        #[must_use]
        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// Drops every open connection and refuses new ones until [`FaultProxy::heal`].
        pub fn cut(&self) {
            let mut s = self.state.lock().expect("proxy state");
            s.cut = true;
            s.generation.cancel();
            s.generation = CancellationToken::new();
        }

        /// Forwards again.
        pub fn heal(&self) {
            self.state.lock().expect("proxy state").cut = false;
        }
    }

    impl Drop for FaultProxy {
        fn drop(&mut self) {
            self.stop.cancel();
            self.cut();
        }
    }
}

/// A minimal HTTP/1.1 client for the binaries' endpoints.
pub mod http {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response: status, lower-cased headers, body.
    #[derive(Debug, Clone)]
    pub struct Response {
        /// The status code.
        pub status: u16,
        /// `(name, value)` pairs, names lower-cased.
        pub headers: Vec<(String, String)>,
        /// The body as text.
        pub body: String,
    }

    impl Response {
        /// The body as JSON.
        ///
        /// # Panics
        /// When the body is not JSON.
        #[must_use]
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }

        /// A header's value.
        #[must_use]
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends one request (`Connection: close`) and reads the whole response.
    ///
    /// # Panics
    /// When the server cannot be reached or the response has no status line.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        try_request(addr, method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
    }

    /// [`request`] that reports a refused connection, a connection closed
    /// without an answer or a response without a status line as an error.
    ///
    /// # Errors
    /// As above.
    pub async fn try_request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        // A server may answer (say 413 or 431) and close before reading it all.
        let mut sent = stream.write_all(head.as_bytes()).await;
        if let (Ok(()), Some(body)) = (&sent, body) {
            sent = stream.write_all(body).await;
        }
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw).await;
        if raw.is_empty() {
            sent?;
            read?;
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no status line in {head:?}"),
                )
            })?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn dechunk(mut rest: &str) -> String {
        let mut out = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    }

    /// `GET path`; returns the status code and the body.
    pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let r = request(addr, "GET", path, &[], None).await;
        (r.status, r.body)
    }
}

/// The `ORDER__RABBITMQ__…` variables that point a spawned binary at the
/// broker and the names of `settings`.
#[must_use]
pub fn rabbitmq_env(settings: &crate::config::RabbitMqSettings) -> Vec<(&'static str, String)> {
    vec![
        ("ORDER__RABBITMQ__HOST", settings.host.clone()),
        ("ORDER__RABBITMQ__PORT", settings.port.to_string()),
        ("ORDER__RABBITMQ__EXCHANGE", settings.exchange.clone()),
        ("ORDER__RABBITMQ__QUEUE", settings.queue.clone()),
        (
            "ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE",
            settings.dead_letter_exchange.clone(),
        ),
        (
            "ORDER__RABBITMQ__DEAD_LETTER_QUEUE",
            settings.dead_letter_queue.clone(),
        ),
    ]
}

/// Redis settings with a key prefix of the test's own (`ordertest:<uuid>:`).
#[must_use]
pub fn redis_settings() -> crate::config::RedisSettings {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let host_port = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
    crate::config::RedisSettings {
        host: host.to_owned(),
        port: port.parse().expect("TEST_REDIS_URL port"),
        key_prefix: format!("ordertest:{}:", uuid::Uuid::now_v7().simple()),
        ..crate::config::RedisSettings::default()
    }
}

/// A loopback port that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
