//! Reading path and query parameters, with a 400 that names the parameter.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate};
use order_core::storage::{OrderCursor, PageRequest};
use uuid::Uuid;

use crate::error::ApiError;

/// Largest `pageSize`.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Longest stats range, in days.
pub const MAX_STATS_DAYS: i64 = 366;

/// Raw query parameters.
pub type Query = HashMap<String, String>;

/// An order id from the path.
pub fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("orderId: not a UUID: {raw:?}")))
}

/// A positive integer id from the path.
pub fn positive_id(name: &str, raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ApiError::BadRequest(format!(
            "{name}: must be a positive integer, got {raw:?}"
        ))),
    }
}

/// Only the named parameters are accepted.
pub fn only(query: &Query, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?} (accepted: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn number(query: &Query, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => match raw.parse::<u32>() {
            Ok(v) if (1..=max).contains(&v) => Ok(v),
            _ => Err(ApiError::BadRequest(format!(
                "{name}: must be an integer from 1 to {max}, got {raw:?}"
            ))),
        },
    }
}

/// `page` (from 1, default 1) and `pageSize` (1..=100, default 10).
pub fn page(query: &Query) -> Result<PageRequest, ApiError> {
    Ok(PageRequest {
        page: number(query, "page", 1, 1_000_000)?,
        page_size: number(query, "pageSize", 10, MAX_PAGE_SIZE)?,
    })
}

/// `pageSize` alone (keyset paging).
pub fn page_size(query: &Query) -> Result<u32, ApiError> {
    number(query, "pageSize", 10, MAX_PAGE_SIZE)
}

/// An optional enum-like parameter parsed with `FromStr`; empty means absent.
pub fn optional<T: std::str::FromStr>(query: &Query, name: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("{name}: {e}"))),
    }
}

/// A keyset cursor as sent to clients: `<created_at µs>_<id>`.
#[must_use]
pub fn encode_cursor(cursor: OrderCursor) -> String {
    format!("{}_{}", cursor.created_at.timestamp_micros(), cursor.id)
}

/// Reads a cursor; empty means "from the newest".
pub fn cursor(raw: &str) -> Result<Option<OrderCursor>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::BadRequest(format!(
            "cursor: not a cursor returned by this API: {raw:?}"
        ))
    };
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let created_at =
        DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    let id = id.parse().map_err(|_| bad())?;
    Ok(Some(OrderCursor { created_at, id }))
}

fn date(name: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::BadRequest(format!("{name}: expected a date YYYY-MM-DD, got {raw:?}"))
    })
}

/// `date`, or `from` and `to`: inclusive UTC days, at most 366 of them.
pub fn day_range(query: &Query) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (from, to) = match (query.get("date"), query.get("from"), query.get("to")) {
        (Some(d), None, None) => {
            let d = date("date", d)?;
            (d, d)
        }
        (None, Some(f), Some(t)) => (date("from", f)?, date("to", t)?),
        _ => {
            return Err(ApiError::BadRequest(
                "give either date=YYYY-MM-DD or both from=YYYY-MM-DD and to=YYYY-MM-DD".into(),
            ));
        }
    };
    if to < from {
        return Err(ApiError::BadRequest(format!(
            "to ({to}) is before from ({from})"
        )));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_STATS_DAYS {
        return Err(ApiError::BadRequest(format!(
            "a range is at most {MAX_STATS_DAYS} days, got {days}"
        )));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            page(&q(&[])).unwrap(),
            PageRequest {
                page: 1,
                page_size: 10
            }
        );
        assert_eq!(
            page(&q(&[("page", "3"), ("pageSize", "100")])).unwrap(),
            PageRequest {
                page: 3,
                page_size: 100
            }
        );
        for (k, v) in [
            ("page", "0"),
            ("pageSize", "0"),
            ("pageSize", "101"),
            ("page", "-1"),
            ("page", "x"),
            ("pageSize", ""),
        ] {
            assert!(page(&q(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = OrderCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: 42,
        };
        assert_eq!(cursor(&encode_cursor(c)).unwrap(), Some(c));
        assert_eq!(cursor("").unwrap(), None);
        for bad in ["x", "1_", "_1", "1_x", "99999999999999999999_1"] {
            assert!(cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn day_ranges() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            day_range(&q(&[("date", "2024-02-29")])).unwrap(),
            (d("2024-02-29"), d("2024-02-29"))
        );
        assert_eq!(
            day_range(&q(&[("from", "2024-01-01"), ("to", "2024-12-31")])).unwrap(),
            (d("2024-01-01"), d("2024-12-31")),
            "366 days in a leap year"
        );
        for bad in [
            q(&[]),
            q(&[("date", "2024-13-01")]),
            q(&[("date", "2024-01-01"), ("from", "2024-01-01")]),
            q(&[("from", "2024-01-01")]),
            q(&[("from", "2024-01-02"), ("to", "2024-01-01")]),
            q(&[("from", "2023-01-01"), ("to", "2024-01-02")]),
        ] {
            assert!(day_range(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(order_id("not-a-uuid").is_err());
        assert!(order_id("../../etc/passwd").is_err());
        assert_eq!(positive_id("userId", "5").unwrap(), 5);
        for bad in ["0", "-1", "1; DROP TABLE orders", "99999999999999999999"] {
            assert!(positive_id("userId", bad).is_err());
        }
    }
}
