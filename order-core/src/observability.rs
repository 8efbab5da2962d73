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

use crate::storage::Storage;

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
    let live = warp::path!("health" / "live")
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let checked = warp::path!("health")
        .or(warp::path!("health" / "ready"))
        .unify()
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
    let metrics = warp::path!("metrics").map(move || {
        if let Some(storage) = &storage {
            record_pool_usage(storage);
        }
        warp::reply::with_header(handle.render(), "content-type", "text/plain; version=0.0.4")
    });
    warp::get().and(live.or(checked).or(metrics))
}

/// Serves [`routes`] on `port` (0 = any free port) until `stop` is
/// cancelled; returns the bound address.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(
    port: u16,
    checks: HealthChecks,
    storage: Option<Storage>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let addr = listener.local_addr()?;
    let server = warp::serve(routes(checks, storage))
        .incoming(listener)
        .graceful(async move { stop.cancelled().await });
    tracing::info!(observability.addr = %addr, "serving /health, /health/ready and /metrics");
    Ok((addr, tokio::spawn(server.run())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_checks_up_is_ok() {
        let report = HealthChecks::new()
            .with("a", true, || async { true })
            .with("b", false, || async { true })
            .run()
            .await;
        assert_eq!((report.status, report.http_status()), ("ok", 200));
        assert_eq!(report.checks["a"], "up");
    }

    #[tokio::test]
    async fn a_failing_optional_check_is_degraded_but_200() {
        let report = HealthChecks::new()
            .with("db", true, || async { true })
            .with("redis", false, || async { false })
            .run()
            .await;
        assert_eq!((report.status, report.http_status()), ("degraded", 200));
        assert_eq!(report.checks["redis"], "down");
    }

    #[tokio::test]
    async fn a_failing_critical_check_is_down_and_503() {
        let report = HealthChecks::new()
            .with("redis", false, || async { false })
            .with("db", true, || async { false })
            .run()
            .await;
        assert_eq!((report.status, report.http_status()), ("down", 503));
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_counts_as_down() {
        let report = HealthChecks::new()
            .with("db", true, std::future::pending::<bool>)
            .run()
            .await;
        assert_eq!(report.status, "down");
    }
}
