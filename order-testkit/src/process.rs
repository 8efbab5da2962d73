//! Runs a workspace binary as a child process, the way Kubernetes would.

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

/// A test that panics before stopping its process must not leave it
/// running: it would hold its ports and its database for the tests after.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
