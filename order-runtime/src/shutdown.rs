//! The one shutdown signal, SIGTERM (what Kubernetes sends) or SIGINT
//! (Ctrl-C), and the one way a role waits for its work to end.
//!
//! Each binary's `main` makes one [`CancellationToken`] with
//! [`cancel_on_signal`] before anything else runs (see
//! [`crate::startup::run_main`]) and passes it down: to start-up, which
//! stops waiting for the database, and to the role, whose tasks take child
//! tokens of it.

use std::future::Future;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
///
/// The handlers are installed before this returns, so a signal that arrives
/// at any later moment cancels the token instead of killing the process.
///
/// # Panics
/// If the signal handlers cannot be installed (no tokio runtime with signals).
#[must_use]
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let signalled = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            }
            signalled.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "SIGINT", "shutdown requested");
            signalled.cancel();
        }
    });
    token
}

/// A one-off command (a migration, a single job run) stopped by SIGTERM or
/// SIGINT before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by a shutdown signal before it finished")]
pub struct Interrupted;

/// Runs `work`, a one-off command with nothing to drain, unless `stop` comes
/// first: a signal ends it at once, as it would without handlers.
///
/// # Errors
/// [`Interrupted`] when `stop` came first.
pub async fn unless_stopped<F: Future>(
    stop: &CancellationToken,
    work: F,
) -> Result<F::Output, Interrupted> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(Interrupted),
        done = work => Ok(done),
    }
}

/// Waits at most `grace` for `work` (what is still running after a stop)
/// to end; true when it did. Past the grace, `work` is dropped and
/// `left_behind` (what that leaves undone, and what becomes of it) is
/// logged as a warning.
pub async fn drain(grace: Duration, work: impl Future<Output = ()>, left_behind: &str) -> bool {
    let drained = tokio::time::timeout(grace, work).await.is_ok();
    if !drained {
        tracing::warn!(grace_ms = grace.as_millis(), "{left_behind}");
    }
    drained
}
