//! Health checks and Prometheus metrics, served by every binary.
//!
//! `/health/live` answers while the process runs; `/health` and
//! `/health/ready` run the checks: 200 `ok` when all pass, 200 `degraded`
//! when only non-critical ones fail (the service still works, e.g. without
//! its cache), 503 `down` when a critical one fails. `/metrics` is the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use order_core::storage::Storage;

/// Longest a single check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A named set of checks.
#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Vec<(&'static str, bool, Probe)>,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.checks
                    .iter()
                    .map(|(name, critical, _)| (name, critical)),
            )
            .finish()
    }
}

/// The answer of a health endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `ok`, `degraded` or `down`.
    pub status: &'static str,
    /// Each check: `up` or `down`.
    pub checks: BTreeMap<&'static str, &'static str>,
}

impl HealthReport {
    /// 503 when down, else 200.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        if self.status == "down" { 503 } else { 200 }
    }
}

impl HealthChecks {
    /// No checks.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check; a failing `critical` check makes the service `down`.
    #[must_use]
    pub fn with<F, Fut>(mut self, name: &'static str, critical: bool, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.checks
            .push((name, critical, Arc::new(move || Box::pin(probe()))));
        self
    }

    /// Adds the critical `database` check.
    #[must_use]
    pub fn with_database(self, storage: Storage) -> Self {
        self.with("database", true, move || {
            let storage = storage.clone();
            async move { storage.ping().await.is_ok() }
        })
    }

    /// Runs every check.
    pub async fn run(&self) -> HealthReport {
        let mut report = HealthReport {
            status: "ok",
            checks: BTreeMap::new(),
        };
        for (name, critical, probe) in &self.checks {
            let up = tokio::time::timeout(CHECK_TIMEOUT, probe())
                .await
                .unwrap_or(false);
            report.checks.insert(name, if up { "up" } else { "down" });
            if !up {
                report.status = if *critical {
                    "down"
                } else if report.status == "ok" {
                    "degraded"
                } else {
                    report.status
                };
            }
        }
        report
    }
}

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// # Panics
/// When another metrics recorder was installed first.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets(&latency)
                .expect("histogram buckets")
                .install_recorder()
                .expect("install the Prometheus recorder");
            describe_metrics();
            // Histogram samples are buffered until folded into their buckets,
            // which a scrape does; without scrapes the buffer grows with every
            // sample (about 19 bytes per cached read, measured). Fold them regularly.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("start the metrics upkeep thread");
            handle
        })
        .clone()
}

/// What a metric is, for its `# HELP` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in buckets.
    Histogram,
}

/// Every metric the service exports, with its `# HELP` text. A metric
/// recorded anywhere in the workspace must be listed here (a test checks).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "order_service_build_info",
        Kind::Gauge,
        "Always 1; the labels name the role and the version running",
    ),
    (
        "log_lines_dropped_total",
        Kind::Counter,
        "Log lines lost because stderr was closed or failing",
    ),
    (
        "http_requests_total",
        Kind::Counter,
        "HTTP requests answered by order-api, by method, route template and status",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request of order-api, by method and route template",
    ),
    (
        "http_connections_open",
        Kind::Gauge,
        "HTTP connections open on order-api",
    ),
    (
        "http_connections_closed_idle_total",
        Kind::Counter,
        "HTTP connections order-api closed for doing nothing, by reason (first_request, headers, idle)",
    ),
    (
        "cache_requests_total",
        Kind::Counter,
        "Order cache lookups, by result (hit, miss)",
    ),
    (
        "cache_errors_total",
        Kind::Counter,
        "Redis calls of the order cache that failed, by operation",
    ),
    (
        "cache_skipped_total",
        Kind::Counter,
        "Order cache calls skipped while Redis is known to be down, by operation",
    ),
    (
        "cache_fills_refused_total",
        Kind::Counter,
        "Cache fills refused because the order changed since it was read",
    ),
    (
        "near_cache_requests_total",
        Kind::Counter,
        "order-api near cache lookups, by result (hit, miss, bypass: copies not served while invalidations may be missing)",
    ),
    (
        "near_cache_invalidations_total",
        Kind::Counter,
        "Orders named by near cache invalidations this replica applied",
    ),
    (
        "near_cache_dropped_total",
        Kind::Counter,
        "Near cache copies dropped because invalidations may have been missed, by reason (subscription_lost, resubscribed)",
    ),
    (
        "near_cache_invalidation_delay_seconds",
        Kind::Histogram,
        "From an invalidation's publish to its receipt by this replica (wall clocks, millisecond resolution)",
    ),
    (
        "db_pool_connections",
        Kind::Gauge,
        "Database pool connections, by state (open, idle)",
    ),
    (
        "messages_received_total",
        Kind::Counter,
        "Seckill messages taken from a broker, by source",
    ),
    (
        "messages_invalid_total",
        Kind::Counter,
        "Messages that can never become an order (poison), by source",
    ),
    (
        "messages_dead_lettered_total",
        Kind::Counter,
        "Messages sent to the dead-letter queue or topic because not even their failure could be recorded, by source",
    ),
    (
        "message_age_seconds",
        Kind::Histogram,
        "Time from a message's own timestamp to the commit of its order",
    ),
    (
        "message_processing_seconds",
        Kind::Histogram,
        "Time from receiving a message to the commit of its order, by source",
    ),
    (
        "worker_batch_size",
        Kind::Histogram,
        "Messages per batch handed to the database, by source",
    ),
    (
        "worker_pauses_total",
        Kind::Counter,
        "Times a consumer paused because the database was unreachable, by source",
    ),
    (
        "worker_consumer_connected",
        Kind::Gauge,
        "1 while the consumer of a source is connected and consuming",
    ),
    (
        "orders_created_total",
        Kind::Counter,
        "Orders created, by source",
    ),
    (
        "orders_duplicate_total",
        Kind::Counter,
        "Messages whose order already existed (idempotent duplicates), by source",
    ),
    (
        "orders_expired_total",
        Kind::Counter,
        "Unpaid orders cancelled at the payment timeout",
    ),
    (
        "order_failures_recorded_total",
        Kind::Counter,
        "Failure records written for messages that could not become orders, by source and kind",
    ),
    (
        "order_failures_already_recorded_total",
        Kind::Counter,
        "Failures met again (a redelivery) whose record already existed, by source and kind: nothing new written",
    ),
    (
        "order_failures_purged_total",
        Kind::Counter,
        "Resolved failure records deleted after compensator.failure_retention",
    ),
    (
        "failures_resolved_by_hand_total",
        Kind::Counter,
        "Failures an operator resolved by hand, by the status they had",
    ),
    (
        "compensator_runs_total",
        Kind::Counter,
        "Compensator job runs, by job and result (ok, error, skipped)",
    ),
    (
        "compensator_run_duration_seconds",
        Kind::Histogram,
        "Time of one compensator job run, by job",
    ),
    (
        "compensator_claimed_total",
        Kind::Counter,
        "Failures claimed for a retry by the compensator",
    ),
    (
        "compensator_retries_total",
        Kind::Counter,
        "Retries of failures, by result (succeeded, rescheduled, failed, lost)",
    ),
    (
        "compensator_backlog",
        Kind::Gauge,
        "Failures pending a retry after the last retry run",
    ),
    (
        "order_events_written_total",
        Kind::Counter,
        "Order events written to the outbox with the change that caused them, by type",
    ),
    (
        "order_events_published_total",
        Kind::Counter,
        "Order events a broker confirmed, by type and broker",
    ),
    (
        "order_events_publish_failures_total",
        Kind::Counter,
        "Order events a broker refused (tried again after a backoff), by type and broker",
    ),
    (
        "order_events_commit_to_confirm_seconds",
        Kind::Histogram,
        "Time from an order event's write to the broker's confirmation",
    ),
    (
        "order_events_publish_round_seconds",
        Kind::Histogram,
        "Time of one relay round's publish, from the first send to the last confirmation",
    ),
    (
        "order_events_unpublished",
        Kind::Gauge,
        "Order events in the outbox not yet published (the backlog)",
    ),
    (
        "order_events_oldest_unpublished_age_seconds",
        Kind::Gauge,
        "Age of the oldest unpublished order event (0 when none)",
    ),
    (
        "order_events_relay_pauses_total",
        Kind::Counter,
        "Times the relay found its broker unreachable and paused publishing",
    ),
    (
        "order_events_purged_total",
        Kind::Counter,
        "Published order events deleted after events.retention",
    ),
    (
        "order_stats_rows_compacted_total",
        Kind::Counter,
        "Statistics rollup rows folded into one per day (or hour) and status by compact-stats",
    ),
];

/// Gives every metric of [`METRICS`] its `# HELP` text.
fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Installs the recorder (see [`metrics_handle`]) and sets
/// `order_service_build_info{role, version}` to 1.
pub fn install_metrics(role: &'static str) -> PrometheusHandle {
    let handle = metrics_handle();
    metrics::gauge!(
        "order_service_build_info",
        "role" => role,
        "version" => env!("CARGO_PKG_VERSION")
    )
    .set(1.0);
    handle
}

/// How often buffered histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets the database pool gauges (`db_pool_connections{state}`).
pub fn record_pool_usage(storage: &Storage) {
    let (open, idle) = storage.pool_usage();
    metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(open));
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
}

/// The `/health…` and `/metrics` routes.
pub fn routes(
    checks: HealthChecks,
    storage: Option<Storage>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    let handle = metrics_handle();
    // Path first, then method: an unknown path is a 404 whatever the method.
    let read = || warp::get().or(warp::head()).unify();
    let live = warp::path!("health" / "live")
        .and(read())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let checked = warp::path!("health")
        .or(warp::path!("health" / "ready"))
        .unify()
        .and(read())
        .and_then(move || {
            let checks = checks.clone();
            async move {
                let report = checks.run().await;
                let status =
                    warp::http::StatusCode::from_u16(report.http_status()).expect("valid status");
                Ok::<_, warp::Rejection>(warp::reply::with_status(
                    warp::reply::json(&report),
                    status,
                ))
            }
        });
    let metrics = warp::path!("metrics").and(read()).map(move || {
        if let Some(storage) = &storage {
            record_pool_usage(storage);
        }
        warp::reply::with_header(handle.render(), "content-type", "text/plain; version=0.0.4")
    });
    live.or(checked).or(metrics)
}

/// The JSON error every server of the service answers with:
/// `{"error":{"code":"…","message":"…"}}`, with `Allow` on a 405.
#[must_use]
pub fn error_response(
    status: warp::http::StatusCode,
    code: &str,
    message: &str,
    allow: &[&str],
) -> warp::reply::Response {
    use warp::Reply as _;
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    if !allow.is_empty() {
        if let Ok(value) = warp::http::HeaderValue::from_str(&allow.join(", ")) {
            response
                .headers_mut()
                .insert(warp::http::header::ALLOW, value);
        }
    }
    response
}

/// The paths of [`routes`], all read-only.
pub const PROBE_PATHS: [&str; 4] = ["/health", "/health/live", "/health/ready", "/metrics"];

/// [`routes`] with warp's rejections answered as JSON: 404 for an unknown
/// path, 405 with `Allow: GET, HEAD` for another method on a known one.
pub fn routes_with_errors(
    checks: HealthChecks,
    storage: Option<Storage>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
+ Clone
+ Send
+ Sync
+ 'static {
    use warp::Reply as _;
    let wrong_method = warp::path::full().and(warp::method()).and_then(
        |path: warp::path::FullPath, method: warp::http::Method| async move {
            if PROBE_PATHS.contains(&path.as_str()) {
                Ok(error_response(
                    warp::http::StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{method} is not allowed on {}; use GET", path.as_str()),
                    &["GET", "HEAD"],
                ))
            } else {
                Err(warp::reject::not_found())
            }
        },
    );
    routes(checks, storage)
        .map(warp::Reply::into_response)
        .or(wrong_method)
        .unify()
        .recover(|_: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(error_response(
                warp::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; this port serves /health, /health/live, /health/ready and /metrics",
                &[],
            ))
        })
        .unify()
        .map(|r: warp::reply::Response| r.into_response())
}

/// Serves [`routes`] on `host:port` (port 0 = any free port) until `stop`
/// is cancelled; returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    host: &str,
    port: u16,
    checks: HealthChecks,
    storage: Option<Storage>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let server = warp::serve(routes_with_errors(checks, storage))
        .incoming(listener)
        .graceful(async move { stop.cancelled().await });
    tracing::info!(observability.addr = %addr, "serving /health, /health/ready and /metrics");
    Ok((addr, tokio::spawn(server.run())))
}

#[cfg(test)]
mod tests;
