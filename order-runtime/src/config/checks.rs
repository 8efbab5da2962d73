//! Field checks of the runtime's sections, for
//! `#[serde(deserialize_with = "…")]` (the ones core's sections use too are
//! in [`order_core::settings::check`]). Each reads the value as its type and
//! refuses it with the rule it breaks; the loader names the key.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{MAX_FAILURE_DATA_BYTES, MIN_JWT_SECRET_BYTES, Secret};

/// Rows of one batch: 1 to [`order_core::storage::MAX_BATCH_ROWS`].
///
/// # Errors
/// When the value is outside that range or not a number.
pub fn batch_rows<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + TryInto<usize>,
{
    let value = T::deserialize(d)?;
    let max = order_core::storage::MAX_BATCH_ROWS;
    match value.try_into() {
        Ok(rows) if (1..=max).contains(&rows) => Ok(value),
        _ => Err(D::Error::custom(format!("must be between 1 and {max}"))),
    }
}

/// `worker.batch_linger_ms`: at most 10,000.
///
/// # Errors
/// When the value is larger or not a number.
pub fn linger_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value <= 10_000 {
        Ok(value)
    } else {
        Err(D::Error::custom("must be at most 10000"))
    }
}

/// `worker.failure_data_max_bytes`: at most [`MAX_FAILURE_DATA_BYTES`].
///
/// # Errors
/// When the value is larger or not a number.
pub fn failure_data_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value <= MAX_FAILURE_DATA_BYTES {
        Ok(value)
    } else {
        Err(D::Error::custom(format!(
            "must be at most {MAX_FAILURE_DATA_BYTES}"
        )))
    }
}

/// A cron expression the compensator's scheduler reads
/// ([`super::parse_cron`]).
///
/// # Errors
/// When the scheduler would refuse it.
pub fn cron<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    super::parse_cron(&value).map_err(D::Error::custom)?;
    Ok(value)
}

/// An HS256 secret: empty (unset) or at least [`MIN_JWT_SECRET_BYTES`] bytes.
///
/// # Errors
/// When it is set and shorter.
pub fn jwt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let value = Secret::deserialize(d)?;
    if value.is_empty() || value.expose().len() >= MIN_JWT_SECRET_BYTES {
        Ok(value)
    } else {
        Err(D::Error::custom(format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )))
    }
}

/// An address of this machine to listen on: an IP address or `localhost`.
///
/// # Errors
/// When it is neither.
pub fn listen_host<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let host = String::deserialize(d)?;
    if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        Ok(host)
    } else {
        Err(D::Error::custom(format!(
            "expected an IP address of this machine to listen on, e.g. 0.0.0.0 (every interface) or 127.0.0.1 (this machine only), got {host:?}"
        )))
    }
}

/// Log filter directives, as [`crate::telemetry::parse_filter`] reads them.
///
/// # Errors
/// When they cannot be read.
pub fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    crate::telemetry::parse_filter(&value).map_err(D::Error::custom)?;
    Ok(value)
}
