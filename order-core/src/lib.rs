//! The rules of the order service: domain types, the seckill message codec,
//! storage on PostgreSQL and MySQL behind one contract, the order cache, and
//! the services the binaries call.
//!
//! Every rule lives here once; the binaries (`order-api`, `order-worker`,
//! `order-compensator`) wire these pieces to a transport, and the runtime
//! crate (`order-runtime`) holds what every binary needs around them:
//! configuration, telemetry, probes, start-up and shutdown.
//!
//! # Layout
//!
//! - [`domain`]: validated value types, the seckill message codec, order and
//!   failure records, the status machines and the retry policy.
//! - [`storage`]: PostgreSQL and MySQL behind one [`storage::Storage`] type,
//!   migrations included.
//! - [`cache`]: the Redis read-through cache of single orders.
//! - [`service`]: order creation, retries and maintenance, shared by the
//!   worker, the compensator and the API.
//! - [`settings`]: the settings of the database pool and the cache.

pub mod cache;
pub mod domain;
pub mod service;
pub mod settings;
pub mod storage;

/// An error and its causes on one line, each text once: a cause whose text
/// the line already holds (many errors repeat their source's message in
/// their own) is left out.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
