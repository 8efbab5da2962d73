//! What every order-service binary needs around the rules of order-core:
//! configuration, telemetry, probes, start-up and shutdown.
//!
//! # Layout
//!
//! - [`config`]: the layered configuration (defaults → YAML → `ORDER__…` env → flags).
//! - [`telemetry`]: logging to stderr (pretty or JSON), filter checks.
//! - [`output`]: a command's own output on stdout, one line each.
//! - [`probes`]: the health checks and the Prometheus endpoint.
//! - [`shutdown`]: the one SIGTERM/SIGINT future.
//! - [`startup`]: shared flags, configuration loading, database opening.

pub mod config;
pub mod output;
pub mod probes;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
