//! The processes under test: the three binaries, run the way Kubernetes
//! runs them, each writing its log to a file of its own.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use order_testkit::http;

/// How a process ended.
#[derive(Debug, Clone)]
pub enum End {
    /// SIGKILL by the harness (a crash on purpose).
    Killed,
    /// SIGTERM by the harness, then this status.
    Terminated(ExitStatus),
    /// Exited by itself while it should have been running.
    Died(ExitStatus),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Killed => f.write_str("SIGKILL"),
            Self::Terminated(status) => write!(f, "SIGTERM, then {status}"),
            Self::Died(status) => write!(f, "died by itself: {status}"),
        }
    }
}

impl End {
    /// True for the ends a healthy stack has: killed on purpose or exit 0 on SIGTERM.
    pub fn is_expected(&self) -> bool {
        match self {
            Self::Killed => true,
            Self::Terminated(status) => status.success(),
            Self::Died(_) => false,
        }
    }
}

/// One kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Worker,
    Compensator,
    Api,
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Self::Worker => "order-worker",
            Self::Compensator => "order-compensator",
            Self::Api => "order-api",
        }
    }
}

struct Proc {
    child: Child,
    /// Where `/health/live` and `/health/ready` answer, once logged.
    probe: Option<SocketAddr>,
    /// The process's log, and where its part of it starts.
    log_path: PathBuf,
    logged_before: u64,
    /// What precedes the HTTP address in its log.
    address_key: &'static str,
}

/// The running processes by name, and how the ones that ended ended.
pub struct Stack {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    env: BTreeMap<Role, Vec<(String, String)>>,
    running: BTreeMap<String, Proc>,
    /// `(name, how it ended)`, in order.
    pub ended: Vec<(String, End)>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// A stack of binaries from `bin_dir`, logs in `log_dir`; `env` per role.
    pub fn new(
        bin_dir: &Path,
        log_dir: &Path,
        env: BTreeMap<Role, Vec<(String, String)>>,
    ) -> anyhow::Result<Self> {
        for role in [Role::Worker, Role::Compensator, Role::Api] {
            let binary = bin_dir.join(role.binary());
            anyhow::ensure!(
                binary.is_file(),
                "{} is missing: build with `cargo build --release --workspace --bins`",
                binary.display()
            );
        }
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("create {}", log_dir.display()))?;
        Ok(Self {
            bin_dir: bin_dir.to_owned(),
            log_dir: log_dir.to_owned(),
            env,
            running: BTreeMap::new(),
            ended: Vec::new(),
        })
    }

    /// Starts `name` as a `role` process (its log appends to `<name>.log`)
    /// and waits until it logs the address it serves HTTP on.
    pub async fn start(&mut self, name: &str, role: Role) -> anyhow::Result<()> {
        self.launch(name, role)?;
        self.attach(name, Duration::from_secs(60)).await
    }

    /// Runs a one-off command of a `role` binary (`args`, e.g. `run-once
    /// expire-unpaid`) with the role's environment and `extra`, its output
    /// appended to `<name>.log`; fails unless it exits 0.
    pub async fn run_once(
        &self,
        name: &str,
        role: Role,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let (mut command, log_path, _) = self.command(name, role)?;
        command.args(args);
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command.spawn().with_context(|| format!("start {name}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("{name} did not finish in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        anyhow::ensure!(
            status.success(),
            "{name}: {status} (see {})",
            log_path.display()
        );
        Ok(())
    }

    /// A command running the `role` binary with the role's environment, its
    /// output appended to `<name>.log`; with the log's path and length
    /// before.
    fn command(&self, name: &str, role: Role) -> anyhow::Result<(Command, PathBuf, u64)> {
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let logged_before = log.metadata()?.len();
        let mut command = Command::new(self.bin_dir.join(role.binary()));
        command
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, value) in &self.env[&role] {
            command.env(key, value);
        }
        Ok((command, log_path, logged_before))
    }

    /// Starts `name` as a `role` process without waiting for it. The port is
    /// picked by the process (0): a port picked here could be taken by
    /// another socket before the process binds it.
    pub fn launch(&mut self, name: &str, role: Role) -> anyhow::Result<()> {
        let (mut command, log_path, logged_before) = self.command(name, role)?;
        command.env("ORDER__LOG__FORMAT", "pretty");
        let address_key = match role {
            Role::Api => {
                command.env("ORDER__SERVER__PORT", "0");
                "server.addr="
            }
            Role::Worker | Role::Compensator => {
                command.env("ORDER__OBSERVABILITY__PORT", "0");
                "observability.addr="
            }
        };
        let child = command
            .spawn()
            .with_context(|| format!("start {}", role.binary()))?;
        self.running.insert(
            name.to_owned(),
            Proc {
                child,
                probe: None,
                log_path,
                logged_before,
                address_key,
            },
        );
        Ok(())
    }

    /// Waits until a launched process logs the address it serves HTTP on
    /// (after it has reached its database).
    pub async fn attach(&mut self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let proc = self
                .running
                .get_mut(name)
                .with_context(|| format!("{name} is not running"))?;
            if proc.probe.is_some() {
                return Ok(());
            }
            let text = std::fs::read(&proc.log_path)?;
            let fresh = String::from_utf8_lossy(&text[usize::try_from(proc.logged_before)?..]);
            if let Some(port) = fresh
                .lines()
                .filter_map(|line| line.split_once(proc.address_key))
                .filter_map(|(_, rest)| rest.split_whitespace().next())
                .filter_map(|addr| addr.rsplit_once(':'))
                .find_map(|(_, port)| port.parse::<u16>().ok())
            {
                proc.probe = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                return Ok(());
            }
            if let Some(status) = proc.child.try_wait()? {
                self.running.remove(name);
                self.ended.push((name.to_owned(), End::Died(status)));
                bail!("{name} exited while starting ({status}); see its log");
            }
            if Instant::now() > deadline {
                bail!("{name} logged no {} within {limit:?}", proc.address_key);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address a process answers HTTP on.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.running[name].probe.expect("the process was attached")
    }

    /// Waits until `name` answers 200 on `path` (`/health/live` or `/health/ready`).
    pub async fn wait_healthy(
        &mut self,
        name: &str,
        path: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        self.attach(name, limit).await?;
        let deadline = Instant::now() + limit;
        loop {
            self.reap();
            let Some(probe) = self.running.get(name).and_then(|p| p.probe) else {
                bail!("{name} exited while starting; see its log");
            };
            if let Ok(r) = http::try_request(probe, "GET", path, &[], None).await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer 200 on {path} within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut proc = self
            .running
            .remove(name)
            .with_context(|| format!("{name} is not running"))?;
        signal(&proc.child, "KILL")?;
        let _ = proc.child.wait();
        self.ended.push((name.to_owned(), End::Killed));
        Ok(())
    }

    /// SIGTERM, then waits up to `limit` for the exit (SIGKILL after it).
    pub async fn terminate(&mut self, name: &str, limit: Duration) -> anyhow::Result<ExitStatus> {
        let mut proc = self
            .running
            .remove(name)
            .with_context(|| format!("{name} is not running"))?;
        signal(&proc.child, "TERM")?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = proc.child.try_wait()? {
                self.ended.push((name.to_owned(), End::Terminated(status)));
                return Ok(status);
            }
            if Instant::now() > deadline {
                signal(&proc.child, "KILL")?;
                let status = proc.child.wait()?;
                self.ended.push((name.to_owned(), End::Terminated(status)));
                bail!("{name} did not exit within {limit:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records processes that exited by themselves.
    pub fn reap(&mut self) {
        let gone: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(name, p)| match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => Some(name.clone()),
                Ok(None) => None,
            })
            .collect();
        for name in gone {
            let mut proc = self.running.remove(&name).expect("listed above");
            let status = proc.child.wait().expect("the child has exited");
            self.ended.push((name, End::Died(status)));
        }
    }

    /// SIGTERM to every process still running.
    pub async fn stop_all(&mut self, limit: Duration) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.terminate(&name, limit).await {
                eprintln!("{e:#}");
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for proc in self.running.values_mut() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

fn signal(child: &Child, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {} failed", child.id());
    Ok(())
}
