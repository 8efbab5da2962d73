//! The shared core of the order service.
//!
//! Every rule lives here once; the binaries (`order-api`, `order-worker`,
//! `order-compensator`) only wire these pieces to a transport.
//!
//! # Layout
//!
//! - [`cache`]: the Redis read-through cache of single orders.
//! - [`config`]: the layered configuration (defaults → YAML → `ORDER__…` env → flags).
//! - [`telemetry`]: logging to stderr (pretty or JSON), filter checks.
//! - [`output`]: a command's own output on stdout, one line each.
//! - [`domain`]: validated value types, the seckill message codec, order and
//!   failure records, the status machine and the retry policy.
//! - [`observability`]: health checks and the Prometheus endpoint.
//! - [`storage`]: PostgreSQL and MySQL behind one [`storage::Storage`] type,
//!   migrations included.
//! - [`service`]: the order-creation path shared by the worker, the
//!   compensator and the API.
//! - [`shutdown`]: the one SIGTERM/SIGINT future.
//! - [`startup`]: shared flags, configuration loading, database opening.
//! - `testing` (feature `test-util`): per-test databases and a TCP fault proxy.

pub mod cache;
pub mod config;
pub mod domain;
pub mod observability;
pub mod output;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod storage;
pub mod telemetry;

#[cfg(feature = "test-util")]
pub mod testing;
