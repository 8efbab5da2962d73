//! order-compensator: the cron-driven jobs of the order service.
//!
//! - `retry-failures` (`compensator.retry_cron`): claims due failures with
//!   `FOR UPDATE SKIP LOCKED` under a lease and retries them through the
//!   order-creation path ([`order_core::service::Retrier`]).
//! - `expire-unpaid` (`compensator.expire_cron`): pending orders older than
//!   `orders.payment_timeout` become cancelled; their cache entries go.
//! - `purge-resolved` (`compensator.purge_cron`): resolved failures older than
//!   `compensator.failure_retention`, and order events published more than
//!   `events.retention` ago, are deleted in small batches.
//! - `compact-stats` (`compensator.compact_cron`): the statistics rollups of
//!   closed days are folded into one row per day and status.
//!
//! Any number of replicas may run: claims never overlap across processes,
//! and a job never overlaps itself within one (a tick that finds the previous
//! run still going is skipped and logged). [`Compensator::run_once`] is the
//! single step the scheduler, the `run-once` command and the tests share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use order_core::cache::OrderCache;
use order_core::service::{OrderCreator, Orders, Retrier, RetryReport, maintenance};
use order_core::storage::Storage;
use order_runtime::config::Settings;
use order_runtime::probes::{self, HealthChecks};
use order_runtime::startup::{self, AtStart, ConfigArgs};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;

/// Port of `/health` and `/metrics` when `observability.port` is unset.
pub const DEFAULT_OBSERVABILITY_PORT: u16 = 8085;

/// Command line of `order-compensator`.
#[derive(Debug, Parser)]
#[command(
    name = "order-compensator",
    version,
    about = "Retries failed order creations and expires unpaid orders on a schedule"
)]
pub struct Cli {
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `order-compensator` subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Run every job on its schedule until SIGTERM or SIGINT (the default)
    Run,
    /// Run one job once, print what it did as JSON, and exit
    RunOnce {
        /// The job.
        job: Job,
    },
}

/// The compensator's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    /// Retry due failures.
    RetryFailures,
    /// Cancel unpaid orders past the payment timeout.
    ExpireUnpaid,
    /// Delete old resolved failures.
    PurgeResolved,
    /// Fold closed days' statistics rollups.
    CompactStats,
}

impl Job {
    /// Every job.
    pub const ALL: [Job; 4] = [
        Job::RetryFailures,
        Job::ExpireUnpaid,
        Job::PurgeResolved,
        Job::CompactStats,
    ];

    /// The job's name in logs, metrics and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Job::RetryFailures => "retry-failures",
            Job::ExpireUnpaid => "expire-unpaid",
            Job::PurgeResolved => "purge-resolved",
            Job::CompactStats => "compact-stats",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one run of a job did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "job", rename_all = "kebab-case")]
pub enum JobReport {
    /// `retry-failures`.
    RetryFailures {
        /// Lapsed claims returned to pending.
        released: u64,
        /// Failures claimed.
        claimed: usize,
        /// Resolved with an order.
        succeeded: usize,
        /// Due again later.
        rescheduled: usize,
        /// Given up.
        failed: usize,
        /// Claims lost to lease expiry meanwhile.
        lost: usize,
        /// Pending failures left (the backlog).
        backlog: i64,
    },
    /// `expire-unpaid`.
    ExpireUnpaid {
        /// Orders cancelled.
        expired: u64,
    },
    /// `purge-resolved`.
    PurgeResolved {
        /// Failures deleted.
        purged: u64,
        /// Published order events deleted.
        purged_events: u64,
    },
    /// `compact-stats`.
    CompactStats {
        /// Rollup rows folded.
        folded: u64,
    },
    /// The previous run of this job was still going: nothing done.
    Skipped {
        /// The job.
        skipped: Job,
    },
}

impl JobReport {
    /// True when the run found nothing to do.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        match *self {
            Self::RetryFailures {
                released, claimed, ..
            } => released == 0 && claimed == 0,
            Self::ExpireUnpaid { expired } => expired == 0,
            Self::PurgeResolved {
                purged,
                purged_events,
            } => purged == 0 && purged_events == 0,
            Self::CompactStats { folded } => folded == 0,
            Self::Skipped { .. } => true,
        }
    }

    /// Logs the report as fields: INFO when the run did something, DEBUG
    /// when it was idle (an idle compensator stays quiet at INFO).
    pub fn log(&self) {
        macro_rules! at_level {
            ($($field:tt)*) => {
                if self.is_idle() {
                    tracing::debug!($($field)*);
                } else {
                    tracing::info!($($field)*);
                }
            };
        }
        match *self {
            Self::RetryFailures {
                released,
                claimed,
                succeeded,
                rescheduled,
                failed,
                lost,
                backlog,
            } => at_level!(
                job = "retry-failures",
                released,
                claimed,
                succeeded,
                rescheduled,
                failed,
                lost,
                backlog,
                "run finished"
            ),
            Self::ExpireUnpaid { expired } => {
                at_level!(job = "expire-unpaid", expired, "run finished");
            }
            Self::PurgeResolved {
                purged,
                purged_events,
            } => {
                at_level!(
                    job = "purge-resolved",
                    purged,
                    purged_events,
                    "run finished"
                );
            }
            Self::CompactStats { folded } => {
                at_level!(job = "compact-stats", folded, "run finished");
            }
            // Logged by the run that found its predecessor still going.
            Self::Skipped { .. } => {}
        }
    }
}

/// The jobs, over one database and cache.
#[derive(Debug)]
pub struct Compensator {
    settings: Settings,
    storage: Storage,
    orders: Orders,
    retrier: Retrier,
    running: [Mutex<()>; 4],
}

impl Compensator {
    /// Wires the jobs.
    ///
    /// # Errors
    /// When the Redis settings cannot make a pool.
    pub fn new(settings: Settings, storage: Storage) -> anyhow::Result<Self> {
        let cache = OrderCache::connect(&settings.redis)?;
        let creator = OrderCreator::new(storage.clone(), settings.retry_policy());
        let retrier = settings.retrier(creator);
        Ok(Self {
            settings,
            orders: Orders::new(storage.clone(), cache),
            storage,
            retrier,
            running: [const { Mutex::const_new(()) }; 4],
        })
    }

    /// The database.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The order cache.
    #[must_use]
    pub fn cache(&self) -> &OrderCache {
        self.orders.cache()
    }

    /// Runs `job` once, unless a run of it is already going in this process.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn run_once(&self, job: Job) -> anyhow::Result<JobReport> {
        let Ok(_running) = self.running[job.index()].try_lock() else {
            tracing::warn!(
                job = job.name(),
                "previous run still in progress; this run is skipped"
            );
            metrics::counter!("compensator_runs_total", "job" => job.name(), "result" => "skipped")
                .increment(1);
            return Ok(JobReport::Skipped { skipped: job });
        };
        let started = Instant::now();
        let result = self.run_job(job).await;
        let took = started.elapsed();
        metrics::histogram!("compensator_run_duration_seconds", "job" => job.name())
            .record(took.as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("compensator_runs_total", "job" => job.name(), "result" => outcome)
            .increment(1);
        if took > self.slow_run_threshold(job) {
            tracing::warn!(job = job.name(), took_ms = took.as_millis(), "slow run");
        }
        result.with_context(|| format!("job {}", job.name()))
    }

    /// A retry run that nears the lease risks its claims lapsing mid-run.
    fn slow_run_threshold(&self, job: Job) -> Duration {
        match job {
            Job::RetryFailures => self.retrier.lease() / 2,
            Job::ExpireUnpaid | Job::PurgeResolved | Job::CompactStats => Duration::from_secs(30),
        }
    }

    async fn run_job(&self, job: Job) -> anyhow::Result<JobReport> {
        let c = &self.settings.compensator;
        Ok(match job {
            Job::RetryFailures => {
                let RetryReport {
                    released,
                    claimed,
                    succeeded,
                    rescheduled,
                    failed,
                    lost,
                } = self.retrier.run_once().await?;
                let backlog = self.storage.count_pending_failures().await?;
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("compensator_backlog").set(backlog as f64);
                JobReport::RetryFailures {
                    released,
                    claimed: claimed.len(),
                    succeeded,
                    rescheduled,
                    failed,
                    lost,
                    backlog,
                }
            }
            Job::ExpireUnpaid => JobReport::ExpireUnpaid {
                expired: maintenance::expire_unpaid(
                    &self.orders,
                    self.settings.orders.payment_timeout,
                    c.batch_size,
                )
                .await?,
            },
            Job::PurgeResolved => JobReport::PurgeResolved {
                purged: maintenance::purge_resolved(
                    &self.storage,
                    c.failure_retention,
                    c.batch_size,
                )
                .await?,
                purged_events: maintenance::purge_published_events(
                    &self.storage,
                    self.settings.events.retention,
                    c.batch_size,
                )
                .await?,
            },
            Job::CompactStats => JobReport::CompactStats {
                folded: maintenance::compact_stats(&self.storage, c.batch_size).await?,
            },
        })
    }

    /// A scheduled tick: runs the job and logs the outcome as fields, at
    /// INFO when it changed something and at DEBUG when it found nothing to
    /// do; never fails.
    async fn tick(&self, job: Job) {
        match self.run_once(job).await {
            Ok(report) => report.log(),
            Err(e) => tracing::error!(
                job = job.name(),
                error = %order_runtime::telemetry::error_chain(e.as_ref()),
                "run failed"
            ),
        }
    }

    /// Runs every job on its schedule until `stop` is cancelled, then waits
    /// (up to `compensator.shutdown_timeout`) for runs in progress to finish.
    /// A run cut short leaves its claims to lease expiry.
    ///
    /// # Errors
    /// When the scheduler cannot start.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let mut scheduler = JobScheduler::new()
            .await
            .context("creating the scheduler")?;
        let c = &self.settings.compensator;
        for (job, cron) in [
            (Job::RetryFailures, &c.retry_cron),
            (Job::ExpireUnpaid, &c.expire_cron),
            (Job::PurgeResolved, &c.purge_cron),
            (Job::CompactStats, &c.compact_cron),
        ] {
            let this = self.clone();
            let cron_job = CronJob::new_async(cron.as_str(), move |_id, _scheduler| {
                let this = this.clone();
                Box::pin(async move { this.tick(job).await })
            })
            .with_context(|| format!("scheduling {} with {cron:?}", job.name()))?;
            scheduler.add(cron_job).await.context("adding a job")?;
            tracing::info!(job = job.name(), cron = %cron, "job scheduled");
        }
        scheduler.start().await.context("starting the scheduler")?;

        stop.cancelled().await;
        scheduler
            .shutdown()
            .await
            .context("stopping the scheduler")?;
        order_runtime::shutdown::drain(
            self.settings.compensator.shutdown_timeout,
            async {
                for running in &self.running {
                    let _ = running.lock().await;
                }
            },
            "runs still in progress at shutdown; their claims return at lease expiry",
        )
        .await;
        Ok(())
    }
}

/// Runs the chosen command.
///
/// # Errors
/// When the database cannot be reached or a job fails.
pub async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A one-off run answers at once; the scheduler waits for the database.
    let at_start = match command {
        Command::RunOnce { .. } => AtStart::Fail,
        Command::Run => AtStart::Wait,
    };
    let storage = startup::open_storage(&settings, at_start, &shutdown)
        .await
        .context("opening the database")?;
    let port = settings
        .observability
        .port
        .unwrap_or(DEFAULT_OBSERVABILITY_PORT);
    let compensator = Arc::new(Compensator::new(settings, storage.clone())?);
    match command {
        Command::RunOnce { job } => {
            let report =
                order_runtime::shutdown::unless_stopped(&shutdown, compensator.run_once(job))
                    .await??;
            order_runtime::output::json(&report)?;
        }
        Command::Run => {
            let stop = shutdown.child_token();
            let checks = HealthChecks::new().with_database(storage.clone());
            probes::install_metrics("order-compensator");
            let host = compensator.settings.observability.host.clone();
            let (_, server) =
                probes::serve(&host, port, checks, Some(storage.clone()), stop.clone())
                    .await
                    .with_context(|| {
                        format!("binding observability.host {host} and observability.port {port}")
                    })?;
            let mut jobs = tokio::spawn(compensator.clone().run(stop.clone()));
            tracing::info!("order-compensator started");
            let finished = tokio::select! {
                () = shutdown.cancelled() => None,
                early = &mut jobs => Some(early),
            };
            stop.cancel();
            match finished {
                // The scheduler ended on its own: that is its error.
                Some(early) => early.context("the scheduler task")??,
                None => jobs.await.context("the scheduler task")??,
            }
            let _ = server.await;
            tracing::info!("order-compensator stopped");
        }
    }
    storage.close().await;
    Ok(())
}
