//! The HTTP server loop: accepts connections (at most `server.max_connections`
//! at once), serves each with HTTP/1 or HTTP/2, and closes the ones that do
//! nothing.
//!
//! Every connection has a watchdog that closes it (drops the connection
//! future, which closes the socket) when, with no request in flight:
//!
//! - no complete first request (its headers) arrived within
//!   `server.read_timeout` of the connection opening, whatever was sent
//!   (nothing, a partial request line, the HTTP/2 preface, SETTINGS...);
//! - HTTP/1 only: a later request started arriving but its headers are not
//!   complete `server.read_timeout` after its first byte;
//! - no request was in flight for `server.idle_timeout` (HTTP/1 keep-alive
//!   and HTTP/2 alike; HTTP/2 pings do not count as activity).
//!
//! A request is in flight from its headers being parsed until the handler
//! has produced the response (handlers are bounded by `server.write_timeout`
//! in [`crate::routes`]); a connection is never cut while one is. Writing a
//! response to a client that does not read it is not "in flight", so such a
//! client is cut at `server.idle_timeout` too.
//!
//! hyper's own HTTP/1 `header_read_timeout` is turned off: in hyper 1.x it
//! starts as soon as a keep-alive connection goes idle, so it would close
//! idle connections after `server.read_timeout` instead of
//! `server.idle_timeout`. The watchdog applies `server.read_timeout` to the
//! headers of later HTTP/1 requests instead, counted from their first byte.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use order_runtime::config::ServerSettings;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use warp::http::{Request, Response, Version};

/// The time limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the first request's headers, from the connection opening; and for
    /// a later HTTP/1 request's headers, from its first byte.
    pub read_timeout: Duration,
    /// Longest time with no request in flight.
    pub idle_timeout: Duration,
}

impl From<&ServerSettings> for Limits {
    fn from(server: &ServerSettings) -> Self {
        Self {
            read_timeout: server.read_timeout,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// Why the watchdog closed a connection (the `reason` label of
/// `http_connections_closed_idle_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleReason {
    /// No complete first request within `server.read_timeout`.
    FirstRequest,
    /// A later HTTP/1 request's headers not complete within `server.read_timeout`.
    Headers,
    /// No request in flight for `server.idle_timeout`.
    Idle,
}

impl IdleReason {
    /// The metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstRequest => "first_request",
            Self::Headers => "headers",
            Self::Idle => "idle",
        }
    }
}

/// What the watchdog should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A request is in flight: no deadline.
    Busy,
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// Close the connection.
    Close(IdleReason),
}

/// "Not set" for the instants kept as nanoseconds since `origin`.
const UNSET: u64 = u64::MAX;

/// What a connection is doing, shared by its service (requests), its socket
/// (bytes read) and its watchdog. Instants are nanoseconds since `origin`.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// A request (its headers) has been received.
    started: AtomicBool,
    /// The requests are HTTP/2.
    http2: AtomicBool,
    /// When the last request in flight finished.
    idle_since: AtomicU64,
    /// When the first byte arrived with no request in flight ([`UNSET`]
    /// until then and again once a request starts).
    pending_since: AtomicU64,
}

impl Activity {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            pending_since: AtomicU64::new(UNSET),
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(UNSET - 1)
    }

    fn instant(&self, offset: u64) -> Instant {
        self.origin + Duration::from_nanos(offset)
    }

    /// Bytes arrived on the socket.
    fn bytes_read(&self, now: Instant) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let _ = self.pending_since.compare_exchange(
                UNSET,
                self.offset(now),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// A request's headers arrived; it is in flight until the guard drops.
    fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::SeqCst);
        }
        self.pending_since.store(UNSET, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn request_finished(&self, now: Instant) {
        // The idle instant first, so a watchdog that sees no request in
        // flight sees when the last one finished.
        self.idle_since
            .fetch_max(self.offset(now), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn verdict(&self, now: Instant, limits: Limits) -> Verdict {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Verdict::Busy;
        }
        let (deadline, reason) = if !self.started.load(Ordering::SeqCst) {
            (self.origin + limits.read_timeout, IdleReason::FirstRequest)
        } else {
            let pending = self.pending_since.load(Ordering::SeqCst);
            if pending != UNSET && !self.http2.load(Ordering::SeqCst) {
                (
                    self.instant(pending) + limits.read_timeout,
                    IdleReason::Headers,
                )
            } else {
                let idle_since = self.instant(self.idle_since.load(Ordering::SeqCst));
                (idle_since + limits.idle_timeout, IdleReason::Idle)
            }
        };
        if deadline <= now {
            Verdict::Close(reason)
        } else {
            Verdict::WaitUntil(deadline)
        }
    }
}

/// A request in flight; dropping it (response ready, or request abandoned)
/// ends it.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// Resolves when the connection should be closed. It re-reads the
/// connection's [`Activity`] every time it is polled, so it must be polled
/// after the connection future in the same task (`biased` select): what that
/// poll changed is then seen at once. Changes made elsewhere (HTTP/2 requests
/// finishing in their own tasks) only move deadlines later, and while a
/// request is in flight the watchdog wakes every `min(read, idle)` anyway.
async fn watchdog(activity: &Activity, limits: Limits) -> IdleReason {
    let recheck = limits.read_timeout.min(limits.idle_timeout);
    let mut sleep = pin!(tokio::time::sleep(recheck));
    std::future::poll_fn(|cx| {
        loop {
            let now = Instant::now();
            let deadline = match activity.verdict(now, limits) {
                Verdict::Close(reason) => return Poll::Ready(reason),
                Verdict::WaitUntil(deadline) => deadline,
                Verdict::Busy if sleep.deadline() <= now => now + recheck,
                Verdict::Busy => sleep.deadline(),
            };
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            ready!(sleep.as_mut().poll(cx));
        }
    })
    .await
}

/// The service of one connection: the app's, counting requests in flight.
#[derive(Debug, Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started(request.version());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// The socket of one connection, noting when bytes arrive.
#[derive(Debug)]
struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts an open connection in `http_connections_open` while it lives.
#[derive(Debug)]
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!("http_connections_open").increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

/// Serves `listener` with `service` until `shutdown` completes, then stops
/// accepting and waits up to `server.write_timeout` for requests in flight.
/// At `server.max_connections` open connections it stops accepting (new ones
/// wait in the listen backlog) until one closes.
pub async fn serve<S, B, F>(listener: TcpListener, service: S, server: &ServerSettings, shutdown: F)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    F: Future<Output = ()>,
{
    let limits = Limits::from(server);
    let slots = Arc::new(Semaphore::new(
        server.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut warned_full: Option<Instant> = None;
    'accept: loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        server.max_connections = server.max_connections,
                        "server.max_connections connections open: new ones wait until one closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the connection semaphore is never closed")
                    }
                    () = &mut shutdown => break 'accept,
                }
            }
        };
        let stream = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => break stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, don't spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break 'accept,
            }
        };
        tokio::spawn(serve_connection(
            stream,
            service.clone(),
            limits,
            graceful.watcher(),
            slot,
        ));
    }
    drop(listener);
    if tokio::time::timeout(server.write_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after server.write_timeout; closing them");
    }
}

/// Serves one connection until it ends, the watchdog closes it, or graceful
/// shutdown has finished it. Holds its connection slot until then.
async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    limits: Limits,
    watcher: Watcher,
    _slot: OwnedSemaphorePermit,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let _open = OpenConnection::new();
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(TrackedIo {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = Tracked {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let mut builder = Builder::new(TokioExecutor::new());
    // Off: see the module documentation; the watchdog does this job.
    builder.http1().header_read_timeout(None);
    // Pings notice a dead HTTP/2 peer even while a request is in flight.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.read_timeout);
    let connection = watcher.watch(builder.serve_connection_with_upgrades(io, service));
    tokio::select! {
        biased;
        ended = connection => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        reason = watchdog(&activity, limits) => {
            metrics::counter!("http_connections_closed_idle_total", "reason" => reason.as_str())
                .increment(1);
            tracing::debug!(reason = reason.as_str(), "closing a connection that does nothing");
        }
    }
}

#[cfg(test)]
mod tests;
