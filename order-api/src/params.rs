//! Reading path and query parameters, with a 400 that names the parameter.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use order_core::domain::{FailureFilter, ReasonGroup, SearchText};
use order_core::storage::{OrderCursor, PageRequest};
use uuid::Uuid;

use crate::error::ApiError;

/// Largest `pageSize`.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Longest stats range, in days.
pub const MAX_STATS_DAYS: i64 = order_core::storage::MAX_STATS_DAYS;

/// Years a date or a cursor may name: four digits, from 1 (year 0 and
/// before, and five-digit years, are out of what the databases store:
/// MySQL's `DATETIME(6)` ends at 9999-12-31, PostgreSQL's `timestamptz`
/// starts at 4713 BC).
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Largest `page`: with [`MAX_PAGE_SIZE`] an offset of at most 10^8 rows
/// (far inside both engines' `OFFSET`; keyset paging is the way deeper).
pub const MAX_PAGE: u32 = 1_000_000;

/// Raw query parameters, each given once.
pub type Query = HashMap<String, String>;

/// A query parameter given more than once (`page=1&page=2`): which one the
/// caller meant cannot be known, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {0:?} is given more than once; give it once")]
pub struct RepeatedParameter(pub String);

impl warp::reject::Reject for RepeatedParameter {}

/// The query's pairs as a map, refusing a name given twice.
///
/// # Errors
/// [`RepeatedParameter`] naming it.
pub fn unique(pairs: Vec<(String, String)>) -> Result<Query, RepeatedParameter> {
    let mut query = Query::with_capacity(pairs.len());
    for (name, value) in pairs {
        if query.contains_key(&name) {
            return Err(RepeatedParameter(name));
        }
        query.insert(name, value);
    }
    Ok(query)
}

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

/// A positive integer parameter, `default` when absent, at most `max`.
pub fn number(query: &Query, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
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
        page: number(query, "page", 1, MAX_PAGE)?,
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

/// The parameters of a failure filter ([`failure_filter`]).
pub const FAILURE_FILTER: &[&str] = &["status", "source", "retryable", "from", "to", "q", "reason"];

/// A failure filter: `status`, `source`, `retryable`, `from` and `to`
/// (recorded from, and up to: a day YYYY-MM-DD, whole UTC days included, or
/// an RFC 3339 time, included), `q` (text in the reason or the body) and
/// `reason` (a reason group). An empty value is no filter.
///
/// # Errors
/// A 400 naming the parameter.
pub fn failure_filter(query: &Query) -> Result<FailureFilter, ApiError> {
    let text = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let bad = |e: order_core::domain::FieldError| ApiError::BadRequest(e.to_string());
    let since = text("from")
        .map(|raw| instant("from", raw, false))
        .transpose()?;
    let until = match text("to") {
        None => None,
        Some(raw) if raw.len() <= 10 => {
            Some(start_of(date("to", raw)?) + chrono::TimeDelta::days(1))
        }
        Some(raw) => Some(instant("to", raw, false)? + chrono::TimeDelta::microseconds(1)),
    }
    // Up to the end of year 9999 is up to the end of time: no database
    // stores a later moment (MySQL's DATETIME ends there).
    .filter(|until| until.year() <= *YEARS.end());
    FailureFilter {
        status: optional(query, "status")?,
        source: optional(query, "source")?,
        retryable: optional(query, "retryable")?,
        since,
        until,
        text: text("q")
            .map(|raw| SearchText::parse("q", raw))
            .transpose()
            .map_err(bad)?,
        reason: text("reason")
            .map(|raw| ReasonGroup::parse("reason", raw))
            .transpose()
            .map_err(bad)?,
    }
    .checked()
    .map_err(bad)
}

/// A keyset cursor as sent to clients: `<created_at µs>_<id>`.
#[must_use]
pub fn encode_cursor(cursor: OrderCursor) -> String {
    format!("{}_{}", cursor.created_at.timestamp_micros(), cursor.id)
}

/// Reads a cursor; empty means "from the newest". Only what a row can hold
/// is accepted: a time in [`YEARS`] and a positive id.
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
    let created_at: DateTime<Utc> =
        DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    if !YEARS.contains(&created_at.year()) {
        return Err(bad());
    }
    let id = match id.parse::<i64>() {
        Ok(id) if id > 0 => id,
        _ => return Err(bad()),
    };
    Ok(Some(OrderCursor { created_at, id }))
}

fn date(name: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::BadRequest(format!("{name}: expected a date YYYY-MM-DD, got {raw:?}"))
    })?;
    if !YEARS.contains(&date.year()) {
        return Err(ApiError::BadRequest(format!(
            "{name}: the year must be from {} to {}, got {raw:?}",
            YEARS.start(),
            YEARS.end()
        )));
    }
    Ok(date)
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

/// How `/api/v1/stats/orders` is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsQuery {
    /// One figure for the days `from..=to`.
    Range(NaiveDate, NaiveDate),
    /// One entry per day.
    Days(NaiveDate, NaiveDate),
    /// One entry per hour, from the hour of the first to the hour of the
    /// second, both included.
    Hours(DateTime<Utc>, DateTime<Utc>),
}

/// Hours an hour series answers when no range is given.
pub const DEFAULT_STATS_HOURS: i64 = 48;

/// The stats query: `date`, or `from` and `to` (days), with
/// `granularity=day` for a series; `granularity=hour` takes `from` and `to`
/// as days or as RFC 3339 times (the hours they fall in), at most
/// [`order_core::storage::MAX_STATS_HOURS`] hours, or the last
/// [`DEFAULT_STATS_HOURS`] hours up to now's when neither is given.
///
/// # Errors
/// A 400 naming what is wrong.
pub fn stats_query(query: &Query, now: DateTime<Utc>) -> Result<StatsQuery, ApiError> {
    match query.get("granularity").map(String::as_str) {
        None => {
            let (from, to) = day_range(query)?;
            Ok(StatsQuery::Range(from, to))
        }
        Some("day") => {
            if query.contains_key("date") {
                return Err(ApiError::BadRequest(
                    "granularity=day takes from=YYYY-MM-DD and to=YYYY-MM-DD, not date".into(),
                ));
            }
            let (from, to) = day_range(query)?;
            Ok(StatsQuery::Days(from, to))
        }
        Some("hour") => hour_range(query, now),
        Some(other) => Err(ApiError::BadRequest(format!(
            "granularity: expected day or hour, got {other:?}"
        ))),
    }
}

fn hour_range(query: &Query, now: DateTime<Utc>) -> Result<StatsQuery, ApiError> {
    use order_core::domain::hour_of;
    use order_core::storage::MAX_STATS_HOURS;
    let (from, to) = match (query.get("date"), query.get("from"), query.get("to")) {
        (None, None, None) => {
            let last = hour_of(now);
            (
                last - chrono::TimeDelta::hours(DEFAULT_STATS_HOURS - 1),
                last,
            )
        }
        (Some(d), None, None) => {
            let d = date("date", d)?;
            (start_of(d), start_of(d) + chrono::TimeDelta::hours(23))
        }
        (None, Some(f), Some(t)) => (instant("from", f, false)?, instant("to", t, true)?),
        _ => {
            return Err(ApiError::BadRequest(
                "granularity=hour takes no range (the last 48 hours), date=YYYY-MM-DD, or both \
                 from and to (YYYY-MM-DD or RFC 3339 times)"
                    .into(),
            ));
        }
    };
    let (from, to) = (hour_of(from), hour_of(to));
    if to < from {
        return Err(ApiError::BadRequest(format!(
            "to ({to}) is before from ({from})"
        )));
    }
    let hours = (to - from).num_hours() + 1;
    if hours > MAX_STATS_HOURS {
        return Err(ApiError::BadRequest(format!(
            "an hour series is at most {MAX_STATS_HOURS} hours, got {hours}"
        )));
    }
    Ok(StatsQuery::Hours(from, to))
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// A day (its first hour, or with `last` its last hour) or an RFC 3339 time.
fn instant(name: &str, raw: &str, last: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        let t = t.with_timezone(&Utc);
        if !YEARS.contains(&t.year()) {
            return Err(ApiError::BadRequest(format!(
                "{name}: the year must be from {} to {}, got {raw:?}",
                YEARS.start(),
                YEARS.end()
            )));
        }
        return Ok(t);
    }
    if raw.len() > 10 {
        return Err(ApiError::BadRequest(format!(
            "{name}: expected a date YYYY-MM-DD or an RFC 3339 time, got {raw:?}"
        )));
    }
    let day = start_of(date(name, raw)?);
    Ok(if last {
        day + chrono::TimeDelta::hours(23)
    } else {
        day
    })
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
    fn a_failure_filters_days_include_the_whole_last_day_and_times_the_instant() {
        let t = |raw: &str| {
            DateTime::parse_from_rfc3339(raw)
                .unwrap()
                .with_timezone(&Utc)
        };
        let f = failure_filter(&q(&[("from", "2026-12-01"), ("to", "2026-12-01")])).unwrap();
        assert_eq!(f.since, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(f.until, Some(t("2026-12-02T00:00:00Z")));
        let f = failure_filter(&q(&[
            ("from", "2026-12-01T10:00:00+02:00"),
            ("to", "2026-12-01T10:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(f.since, Some(t("2026-12-01T08:00:00Z")));
        assert_eq!(f.until, Some(t("2026-12-01T10:00:00.000001Z")), "included");
        // Up to the end of year 9999: no bound at all, which every database
        // can read.
        for end in ["9999-12-31", "9999-12-31T23:59:59.999999Z"] {
            assert_eq!(failure_filter(&q(&[("to", end)])).unwrap().until, None);
        }
        let empty = q(&[("status", ""), ("q", ""), ("reason", ""), ("from", "")]);
        assert_eq!(failure_filter(&empty).unwrap(), FailureFilter::default());
        for bad in [
            &[("from", "2026-12-02"), ("to", "2026-12-01")][..],
            &[("to", "2026-13-01")],
            &[("from", "10000-01-01T00:00:00Z")],
            &[("q", "a\u{0}")],
            &[("retryable", "yes")],
        ] {
            assert!(failure_filter(&q(bad)).is_err(), "{bad:?}");
        }
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
    fn stats_queries_by_granularity() {
        let now: DateTime<Utc> = "2026-12-05T13:45:10Z".parse().unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            stats_query(&q(&[("date", "2024-02-29")]), now).unwrap(),
            StatsQuery::Range(d("2024-02-29"), d("2024-02-29"))
        );
        assert_eq!(
            stats_query(
                &q(&[
                    ("granularity", "day"),
                    ("from", "2024-01-01"),
                    ("to", "2024-12-31")
                ]),
                now
            )
            .unwrap(),
            StatsQuery::Days(d("2024-01-01"), d("2024-12-31"))
        );
        assert_eq!(
            stats_query(&q(&[("granularity", "hour")]), now).unwrap(),
            StatsQuery::Hours(t("2026-12-03T14:00:00Z"), t("2026-12-05T13:00:00Z")),
            "the last 48 hours, the current one last"
        );
        assert_eq!(
            stats_query(&q(&[("granularity", "hour"), ("date", "2024-02-29")]), now).unwrap(),
            StatsQuery::Hours(t("2024-02-29T00:00:00Z"), t("2024-02-29T23:00:00Z"))
        );
        assert_eq!(
            stats_query(
                &q(&[
                    ("granularity", "hour"),
                    ("from", "2024-02-29T10:59:59+02:00"),
                    ("to", "2024-03-01")
                ]),
                now
            )
            .unwrap(),
            StatsQuery::Hours(t("2024-02-29T08:00:00Z"), t("2024-03-01T23:00:00Z"))
        );
    }

    proptest::proptest! {
        /// Whatever the parameters, the answer is a 400 or a query inside the
        /// bounds: at most 366 days or 72 hours, from before to, years 1 to 9999.
        #[test]
        fn any_stats_query_is_refused_or_bounded(
            granularity in proptest::option::of(proptest::sample::select(vec!["day", "hour", "week", ""])),
            date in proptest::option::of("[0-9T:Z+-]{0,25}|[0-9]{4}-[0-9]{2}-[0-9]{2}"),
            from in proptest::option::of("[0-9T:Z+-]{0,25}|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2}))?"),
            to in proptest::option::of("[0-9T:Z+-]{0,25}|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2}))?"),
        ) {
            let mut query = Query::new();
            for (k, v) in [("granularity", granularity.map(str::to_owned)), ("date", date), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    query.insert(k.to_owned(), v);
                }
            }
            let now: DateTime<Utc> = "2026-12-05T13:45:10Z".parse().unwrap();
            match stats_query(&query, now) {
                Err(ApiError::BadRequest(_)) => {}
                Err(other) => proptest::prop_assert!(false, "{other:?}"),
                Ok(StatsQuery::Range(f, t) | StatsQuery::Days(f, t)) => {
                    proptest::prop_assert!(f <= t && (t - f).num_days() < MAX_STATS_DAYS);
                    proptest::prop_assert!(YEARS.contains(&f.year()) && YEARS.contains(&t.year()));
                }
                Ok(StatsQuery::Hours(f, t)) => {
                    proptest::prop_assert!(f <= t && (t - f).num_hours() < order_core::storage::MAX_STATS_HOURS);
                    proptest::prop_assert!(YEARS.contains(&f.year()) && YEARS.contains(&t.year()));
                    proptest::prop_assert_eq!(f, order_core::domain::hour_of(f));
                }
            }
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

    /// The 400 names `name` first.
    fn refused_naming(result: Result<impl std::fmt::Debug, ApiError>, name: &str) {
        match result {
            Err(ApiError::BadRequest(m)) => {
                assert!(m.starts_with(&format!("{name}:")), "{m:?} names {name}");
            }
            other => panic!("{name}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn dates_outside_years_1_to_9999_are_refused_naming_the_parameter() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            day_range(&q(&[("date", "0001-01-01")])).unwrap(),
            (d("0001-01-01"), d("0001-01-01"))
        );
        assert_eq!(
            day_range(&q(&[("from", "9999-01-01"), ("to", "9999-12-31")])).unwrap(),
            (d("9999-01-01"), d("9999-12-31"))
        );
        for raw in [
            "-5000-01-01",
            "-0001-12-31",
            "0000-12-31",
            "10000-01-01",
            "+10000-01-01",
            "262143-12-31",
        ] {
            refused_naming(day_range(&q(&[("date", raw)])), "date");
            refused_naming(
                day_range(&q(&[("from", raw), ("to", "2024-01-01")])),
                "from",
            );
            refused_naming(day_range(&q(&[("from", "2024-01-01"), ("to", raw)])), "to");
        }
    }

    #[test]
    fn cursors_outside_what_a_row_holds_are_refused() {
        // Microseconds at the start of a day.
        let at = |y, m, d| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros()
        };
        let first = at(1, 1, 1);
        let after_last = at(10_000, 1, 1);
        for ok in [
            format!("{first}_1"),
            format!("{}_{}", after_last - 1, i64::MAX),
            "0_1".to_owned(),
            "-1_1".to_owned(),
        ] {
            assert!(cursor(&ok).unwrap().is_some(), "{ok}");
        }
        for bad in [
            format!("{}_1", first - 1),
            format!("{after_last}_1"),
            format!("{}_1", at(-5000, 1, 1)),
            format!("{}_1", i64::MIN),
            format!("{}_1", i64::MAX),
            "1700000000000000_0".to_owned(),
            "1700000000000000_-1".to_owned(),
            format!("1700000000000000_{}", i64::MIN),
        ] {
            refused_naming(cursor(&bad), "cursor");
        }
    }

    #[test]
    fn the_deepest_page_stays_in_range() {
        let deepest = page(&q(&[
            ("page", &MAX_PAGE.to_string()),
            ("pageSize", &MAX_PAGE_SIZE.to_string()),
        ]))
        .unwrap();
        // The offset the storage computes (i64, as both engines take it).
        let offset = i64::from(deepest.page - 1) * i64::from(deepest.page_size);
        assert_eq!(offset, 99_999_900);
        refused_naming(page(&q(&[("page", &(MAX_PAGE + 1).to_string())])), "page");
        refused_naming(page(&q(&[("page", &u32::MAX.to_string())])), "page");
        refused_naming(page(&q(&[("page", "4294967296")])), "page");
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
