//! The statistics part of the contract: rollups written with each change
//! (see [`crate::domain::StatsDelta`]), read as one range or a series of days
//! or hours, rebuilt from the orders table, and compacted.
//!
//! # Why the rollups stay exact
//!
//! - A change adds its delta in its own transaction, after every other
//!   write of it: committed or rolled back together.
//! - Rows are locked in one order by everybody: all daily rows first, sorted
//!   by (day, status, slot), then hourly rows sorted by (hour, status, slot).
//!   A writer uses one slot per transaction.
//! - Whoever touches a day's hourly rows holds one of that day's daily rows.
//!   A rebuild of a day first takes every daily row of the day (creating
//!   missing ones), so no writer of that day is between its delta and its
//!   commit while the rebuild counts: writers that committed are in the
//!   count, writers still to come wait and add to the rebuilt rows (see
//!   `rewrite_stats_day`).
//! - Compaction rewrites a day from the rollups' own sums the same way,
//!   holding every daily row of the day: a second compactor finds nothing
//!   left to fold.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{Storage, StorageError, on_pool};
use crate::domain::{Cell, OrderStatus, ROLLUP_SLOTS, StatsDelta, hour_of};
use crate::settings::Driver;

/// The most days a series or a range answers.
pub const MAX_STATS_DAYS: i64 = 366;

/// The most hours an hourly series answers.
pub const MAX_STATS_HOURS: i64 = 72;

/// The `ON CONFLICT` / `ON DUPLICATE KEY` tail that adds a row's figures to
/// the row already there, for `table` keyed by `bucket`.
pub(crate) fn upsert_tail(driver: Driver, table: &str, bucket: &str) -> String {
    match driver {
        Driver::Postgres => format!(
            " ON CONFLICT ({bucket}, status, slot) DO UPDATE SET \
             order_count = {table}.order_count + EXCLUDED.order_count, \
             amount = {table}.amount + EXCLUDED.amount"
        ),
        Driver::Mysql => {
            " ON DUPLICATE KEY UPDATE order_count = order_count + VALUES(order_count), \
                          amount = amount + VALUES(amount)"
                .to_owned()
        }
    }
}

/// Adds `$rows` (a slice of `(bucket, status name, slot, orders, amount)`,
/// sorted; an hour as a `NaiveDateTime` in UTC, which MySQL's `DATETIME`
/// takes past 2038) to `$table`'s rows keyed by `$bucket` on `$conn`, with
/// multi-row statements under both engines' placeholder limit; evaluates to
/// `Result<(), sqlx::Error>`.
macro_rules! add_rollup_rows {
    ($conn:expr, $driver:expr, $table:literal, $bucket:literal, $rows:expr) => {
        async {
            let tail = $crate::storage::stats::upsert_tail($driver, $table, $bucket);
            for part in $rows.chunks($crate::storage::batch::mysql_rows(5, 0)) {
                let mut qb = sqlx::QueryBuilder::new(concat!(
                    "INSERT INTO ",
                    $table,
                    " (",
                    $bucket,
                    ", status, slot, order_count, amount) "
                ));
                qb.push_values(part, |mut row, r| {
                    row.push_bind(r.0)
                        .push_bind(r.1)
                        .push_bind(r.2)
                        .push_bind(r.3)
                        .push_bind(r.4);
                });
                qb.push(&tail);
                qb.build().execute(&mut *$conn).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}
pub(crate) use add_rollup_rows;

/// Adds `$delta` (`&StatsDelta`) to the rollups on `$conn` (a transaction
/// of the change it counts), in one slot chosen at random: the daily rows,
/// then the hourly rows. Evaluates to `Result<(), sqlx::Error>`.
macro_rules! write_rollups {
    ($conn:expr, $driver:expr, $delta:expr) => {
        async {
            let delta: &$crate::domain::StatsDelta = $delta;
            if !delta.is_empty() {
                let slot = $crate::domain::random_slot();
                let daily: Vec<_> = delta
                    .daily()
                    .into_iter()
                    .map(|(day, status, c)| (day, status.as_str(), slot, c.orders, c.amount))
                    .collect();
                $crate::storage::stats::add_rollup_rows!(
                    $conn,
                    $driver,
                    "order_stats_daily",
                    "day",
                    daily
                )
                .await?;
                let hourly: Vec<_> = delta
                    .hourly()
                    .map(|(hour, status, c)| {
                        (hour.naive_utc(), status.as_str(), slot, c.orders, c.amount)
                    })
                    .collect();
                $crate::storage::stats::add_rollup_rows!(
                    $conn,
                    $driver,
                    "order_stats_hourly",
                    "hour",
                    hourly
                )
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}
pub(crate) use write_rollups;

/// What an expiry adds to the rollups: `expired` (as they are now,
/// cancelled) left pending.
pub(crate) fn expiry_delta(expired: &[crate::domain::Order]) -> StatsDelta {
    let mut delta = StatsDelta::default();
    for order in expired {
        delta.add_move(order, OrderStatus::Pending, OrderStatus::Cancelled);
    }
    delta
}

/// Counts and amounts of some orders, by status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Figures {
    /// Orders.
    pub order_count: i64,
    /// Orders per status (every status present, zero when none).
    pub by_status: HashMap<OrderStatus, i64>,
    /// Sum of `total_amount` of all of them (scale 2).
    pub total_amount: Decimal,
    /// Sum of `total_amount` of the completed ones (scale 2).
    pub completed_amount: Decimal,
}

impl Default for Figures {
    fn default() -> Self {
        let mut zero = Decimal::ZERO;
        zero.rescale(2);
        Self {
            order_count: 0,
            by_status: OrderStatus::ALL.iter().map(|s| (*s, 0)).collect(),
            total_amount: zero,
            completed_amount: zero,
        }
    }
}

impl Figures {
    /// Adds `orders` orders in `status` worth `amount`.
    pub fn add(&mut self, status: OrderStatus, orders: i64, amount: Decimal) {
        *self.by_status.entry(status).or_insert(0) += orders;
        self.order_count += orders;
        self.total_amount += amount;
        if status == OrderStatus::Completed {
            self.completed_amount += amount;
        }
        self.total_amount.rescale(2);
        self.completed_amount.rescale(2);
    }
}

/// Series granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One entry per UTC day.
    Day,
    /// One entry per UTC hour.
    Hour,
}

/// One entry of a series: a day or an hour, and its figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeriesEntry {
    /// The day (day series).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// The hour's start (hour series).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<DateTime<Utc>>,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// Where a day's rewritten rollups come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A full count of the orders table (a rebuild).
    Orders,
    /// The rollups' own sums (a compaction).
    Rollups,
}

/// What a rewrite of one day did.
struct Rewritten {
    /// The day's orders after it.
    orders: i64,
    /// The day's orders as the rollups said before it.
    previous: i64,
    /// Whether any cell's figures differ from before (per day or hour and
    /// status, counts or amounts).
    changed: bool,
    /// Rollup rows of the day before it, daily and hourly.
    rows_before: i64,
    /// And after it.
    rows_after: i64,
}

/// What a rebuild of one day found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The day.
    pub day: NaiveDate,
    /// Its orders, as counted from the orders table.
    pub orders: i64,
    /// The orders the rollups said before.
    pub previous: i64,
    /// Whether the rollups were wrong: a count or an amount of some hour,
    /// day or status differed (a move between statuses keeps the total).
    pub corrected: bool,
}

/// The engine's expression for the start of the UTC hour of `created_at`.
fn hour_expr(driver: Driver) -> &'static str {
    match driver {
        Driver::Postgres => "date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        Driver::Mysql => "TIMESTAMP(DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00'))",
    }
}

/// The first and the last microsecond of UTC day `day` (inclusive bounds:
/// the midnight after 9999-12-31 is beyond what MySQL's `DATETIME` holds).
fn day_bounds(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let last = day
        .and_hms_micro_opt(23, 59, 59, 999_999)
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc());
    (start, last)
}

/// The cells of a day with something in them (amounts compare by value,
/// whatever their scale).
fn nonzero_daily(cells: &[(OrderStatus, Cell)]) -> BTreeMap<OrderStatus, Cell> {
    cells
        .iter()
        .filter(|(_, c)| *c != Cell::default())
        .map(|(s, c)| (*s, *c))
        .collect()
}

/// The cells of a day's hours with something in them.
fn nonzero_hourly(
    cells: &[(DateTime<Utc>, OrderStatus, Cell)],
) -> BTreeMap<(DateTime<Utc>, OrderStatus), Cell> {
    cells
        .iter()
        .filter(|(_, _, c)| *c != Cell::default())
        .map(|(h, s, c)| ((*h, *s), *c))
        .collect()
}

/// The rollups' sums per hour and status between two hours (inclusive).
const HOURLY_SUMS: &str = "SELECT hour, status, SUM(order_count), SUM(amount) FROM order_stats_hourly \
                           WHERE hour >= ? AND hour <= ? GROUP BY hour, status";

/// The full count of the orders created between two bound times, by
/// creation hour and status (binds: the first and the last microsecond).
fn count_orders_sql(driver: Driver) -> String {
    format!(
        "SELECT {hour} AS h, status, CAST(COUNT(*) AS DECIMAL(20,0)), SUM(total_amount) FROM orders \
         WHERE created_at >= ? AND created_at <= ? GROUP BY h, status ORDER BY h, status",
        hour = hour_expr(driver)
    )
}

/// Rows of (hour, status, orders, amount) as cells.
fn hour_cells(
    rows: Vec<(DateTime<Utc>, String, Decimal, Decimal)>,
) -> Result<Vec<(DateTime<Utc>, OrderStatus, Cell)>, StorageError> {
    rows.into_iter()
        .map(|(hour, status, orders, amount)| {
            Ok((
                hour,
                status_of(&status)?,
                Cell {
                    orders: count_of(orders)?,
                    amount,
                },
            ))
        })
        .collect()
}

fn status_of(name: &str) -> Result<OrderStatus, StorageError> {
    name.parse()
        .map_err(|e: crate::domain::UnknownStatus| StorageError::Corrupt(e.to_string()))
}

fn count_of(sum: Decimal) -> Result<i64, StorageError> {
    sum.to_i64()
        .ok_or_else(|| StorageError::Corrupt(format!("an order count of {sum}")))
}

impl Storage {
    /// Whether this pool keeps the rollups with each change
    /// (`stats.rollups`).
    #[must_use]
    pub fn keeps_rollups(&self) -> bool {
        match self {
            Self::Postgres(s) => s.rollups,
            Self::Mysql(s) => s.rollups,
        }
    }

    /// This pool keeping no rollups (`stats.rollups: false`): changes
    /// commit without them, and statistics are counted from the orders
    /// table at each request. Turning them on again needs a
    /// [`Storage::rebuild_stats_day`] of every day (a change counts on its
    /// order's creation day, which may be any earlier day).
    #[must_use]
    pub fn without_rollups(mut self) -> Self {
        match &mut self {
            Self::Postgres(s) => s.rollups = false,
            Self::Mysql(s) => s.rollups = false,
        }
        self
    }

    /// Counts and amounts of orders created on the UTC days `from..=to`,
    /// from the rollups (or the orders table, see [`Self::without_rollups`]).
    ///
    /// # Errors
    /// When the database is unreachable or a statement times out.
    pub async fn stats(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<super::OrderStats, StorageError> {
        let rows: Vec<(String, Decimal, Decimal)> = if self.keeps_rollups() {
            let select = "SELECT status, SUM(order_count), SUM(amount) FROM order_stats_daily \
                          WHERE day >= ? AND day <= ? GROUP BY status";
            on_pool!(self, |pool, sql| {
                sqlx::query_as(&sql(select))
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await?
            })
        } else {
            let (start, _) = day_bounds(from);
            let (_, last) = day_bounds(to);
            let select = "SELECT status, CAST(COUNT(*) AS DECIMAL(20,0)), COALESCE(SUM(total_amount), 0) \
                          FROM orders WHERE created_at >= ? AND created_at <= ? GROUP BY status";
            on_pool!(self, |pool, sql| {
                // Times without zone: MySQL compares them with its DATETIME
                // column past 2038, and PostgreSQL sessions run in UTC.
                sqlx::query_as(&sql(select))
                    .bind(start.naive_utc())
                    .bind(last.naive_utc())
                    .fetch_all(pool)
                    .await?
            })
        };
        let mut figures = Figures::default();
        for (status, count, amount) in rows {
            figures.add(status_of(&status)?, count_of(count)?, amount);
        }
        Ok(super::OrderStats { from, to, figures })
    }

    /// One entry per UTC day `from..=to` (at most [`MAX_STATS_DAYS`]), from
    /// the rollups (or the orders table, see [`Self::without_rollups`]).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] for a longer range; unavailability or a
    /// statement timeout.
    pub async fn stats_by_day(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<SeriesEntry>, StorageError> {
        let days = (to - from).num_days() + 1;
        if !(1..=MAX_STATS_DAYS).contains(&days) {
            return Err(StorageError::Invalid(format!(
                "a day series is 1 to {MAX_STATS_DAYS} days, not {days}"
            )));
        }
        let mut by_day: BTreeMap<NaiveDate, Figures> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| (d, Figures::default()))
            .collect();
        if self.keeps_rollups() {
            let select = "SELECT day, status, SUM(order_count), SUM(amount) FROM order_stats_daily \
                          WHERE day >= ? AND day <= ? GROUP BY day, status";
            let rows: Vec<(NaiveDate, String, Decimal, Decimal)> = on_pool!(self, |pool, sql| {
                sqlx::query_as(&sql(select))
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await?
            });
            for (day, status, count, amount) in rows {
                if let Some(f) = by_day.get_mut(&day) {
                    f.add(status_of(&status)?, count_of(count)?, amount);
                }
            }
        } else {
            let (start, _) = day_bounds(from);
            let (_, last) = day_bounds(to);
            for (hour, status, cell) in self.count_by_hour(start, last).await? {
                if let Some(f) = by_day.get_mut(&hour.date_naive()) {
                    f.add(status, cell.orders, cell.amount);
                }
            }
        }
        Ok(by_day
            .into_iter()
            .map(|(date, figures)| SeriesEntry {
                date: Some(date),
                hour: None,
                figures,
            })
            .collect())
    }

    /// One entry per UTC hour from the hour of `from` to the hour of `to`,
    /// both included (at most [`MAX_STATS_HOURS`]).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] for a longer range; unavailability or a
    /// statement timeout.
    pub async fn stats_by_hour(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SeriesEntry>, StorageError> {
        let (first, last) = (hour_of(from), hour_of(to));
        let hours = (last - first).num_hours() + 1;
        if !(1..=MAX_STATS_HOURS).contains(&hours) {
            return Err(StorageError::Invalid(format!(
                "an hour series is 1 to {MAX_STATS_HOURS} hours, not {hours}"
            )));
        }
        let mut by_hour: BTreeMap<DateTime<Utc>, Figures> = (0..hours)
            .map(|h| (first + TimeDelta::hours(h), Figures::default()))
            .collect();
        let end = last + TimeDelta::hours(1) - TimeDelta::microseconds(1);
        let cells: Vec<(DateTime<Utc>, OrderStatus, Cell)> = if self.keeps_rollups() {
            let select = HOURLY_SUMS;
            let rows: Vec<(DateTime<Utc>, String, Decimal, Decimal)> =
                on_pool!(self, |pool, sql| {
                    sqlx::query_as(&sql(select))
                        .bind(first.naive_utc())
                        .bind(end.naive_utc())
                        .fetch_all(pool)
                        .await?
                });
            hour_cells(rows)?
        } else {
            self.count_by_hour(first, end).await?
        };
        for (hour, status, cell) in cells {
            if let Some(f) = by_hour.get_mut(&hour) {
                f.add(status, cell.orders, cell.amount);
            }
        }
        Ok(by_hour
            .into_iter()
            .map(|(hour, figures)| SeriesEntry {
                date: None,
                hour: Some(hour),
                figures,
            })
            .collect())
    }

    /// A full count of the orders created in `start..=last`, by creation
    /// hour and status, from the orders table (what the rollups must equal).
    ///
    /// # Errors
    /// When the database is unreachable or a statement times out.
    pub async fn count_by_hour(
        &self,
        start: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, OrderStatus, Cell)>, StorageError> {
        let select = count_orders_sql(self.driver());
        let rows: Vec<(DateTime<Utc>, String, Decimal, Decimal)> = on_pool!(self, |pool, sql| {
            sqlx::query_as(&sql(&select))
                .bind(start.naive_utc())
                .bind(last.naive_utc())
                .fetch_all(pool)
                .await?
        });
        hour_cells(rows)
    }

    /// The first and last UTC day that has orders or rollup rows (what a
    /// rebuild with no range covers); `None` when there are neither.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn stats_days(&self) -> Result<Option<(NaiveDate, NaiveDate)>, StorageError> {
        let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            on_pool!(self, |pool, _sql| {
                sqlx::query_as("SELECT MIN(created_at), MAX(created_at) FROM orders")
                    .fetch_one(pool)
                    .await?
            });
        let (low, high): (Option<NaiveDate>, Option<NaiveDate>) = on_pool!(self, |pool, _sql| {
            sqlx::query_as("SELECT MIN(day), MAX(day) FROM order_stats_daily")
                .fetch_one(pool)
                .await?
        });
        let days = [
            first.map(|t| t.date_naive()),
            last.map(|t| t.date_naive()),
            low,
            high,
        ];
        let known: Vec<NaiveDate> = days.into_iter().flatten().collect();
        Ok(known
            .iter()
            .min()
            .zip(known.iter().max())
            .map(|(a, b)| (*a, *b)))
    }

    /// Recomputes the rollups of UTC day `day` from the orders table (see
    /// [`Self::rewrite_stats_day`]): safe while orders are written, and when
    /// run twice or by two operators at once.
    ///
    /// # Errors
    /// When the database is unreachable or a statement times out.
    pub async fn rebuild_stats_day(&self, day: NaiveDate) -> Result<Rebuilt, StorageError> {
        let done = self.rewrite_stats_day(day, Source::Orders).await?;
        Ok(Rebuilt {
            day,
            orders: done.orders,
            previous: done.previous,
            corrected: done.changed,
        })
    }

    /// Closed days (before `before`) whose rollups are spread over more than
    /// one slot, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn stats_days_to_compact(
        &self,
        before: NaiveDate,
        limit: u32,
    ) -> Result<Vec<NaiveDate>, StorageError> {
        let select = "SELECT DISTINCT day FROM order_stats_daily WHERE slot <> 0 AND day < ? \
                      ORDER BY day LIMIT ?";
        Ok(on_pool!(self, |pool, sql| {
            sqlx::query_scalar(&sql(select))
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Folds UTC day `day`'s rollups into one slot-0 row per day (and per
    /// hour) and status (see [`Self::rewrite_stats_day`]), so that a read sums
    /// fewer rows; returns how many rows fewer the day has. The figures do
    /// not change; a second run, or a concurrent one, finds nothing to fold.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn compact_stats_day(&self, day: NaiveDate) -> Result<u64, StorageError> {
        let done = self.rewrite_stats_day(day, Source::Rollups).await?;
        Ok(u64::try_from(done.rows_before - done.rows_after).unwrap_or(0))
    }

    /// Rewrites UTC day `day`'s rollups as one slot-0 row per day (and per
    /// hour) and status, with the figures of `source`, in one transaction.
    ///
    /// The transaction first takes every daily row of the day, all
    /// statuses and slots, creating the missing ones, in the lock order every
    /// writer follows. Every writer of that day takes one of those rows
    /// before it touches the day's hourly rows, so while the transaction
    /// holds them no writer of the day is between its addition and its
    /// commit: the ones that committed are in the figures read next, the
    /// ones still to come wait and add to the rewritten rows. Other days are
    /// not held.
    async fn rewrite_stats_day(
        &self,
        day: NaiveDate,
        source: Source,
    ) -> Result<Rewritten, StorageError> {
        let driver = self.driver();
        let (start, last) = day_bounds(day);
        let count_orders = count_orders_sql(driver);
        let mut names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        let locks: Vec<(NaiveDate, &str, i16, i64, Decimal)> = names
            .iter()
            .flat_map(|name| {
                (0..ROLLUP_SLOTS).map(move |slot| (day, *name, slot, 0, Decimal::ZERO))
            })
            .collect();
        let count_rows = "SELECT CAST((SELECT COUNT(*) FROM order_stats_daily WHERE day = ?) \
                          + (SELECT COUNT(*) FROM order_stats_hourly WHERE hour >= ? AND hour <= ?) \
                          AS DECIMAL(20,0))";
        on_pool!(self, |pool, sql| {
            let mut tx = pool.begin().await?;
            // Before the lock (which adds zero rows): how many rows there were.
            let rows_before: Decimal = sqlx::query_scalar(&sql(count_rows))
                .bind(day)
                .bind(start.naive_utc())
                .bind(last.naive_utc())
                .fetch_one(&mut *tx)
                .await?;
            add_rollup_rows!(tx, driver, "order_stats_daily", "day", locks).await?;
            let daily_now: Vec<(String, Decimal, Decimal)> = sqlx::query_as(&sql(
                "SELECT status, SUM(order_count), SUM(amount) FROM order_stats_daily \
                 WHERE day = ? GROUP BY status",
            ))
            .bind(day)
            .fetch_all(&mut *tx)
            .await?;
            let mut previous = 0;
            let mut daily: Vec<(OrderStatus, Cell)> = Vec::new();
            for (status, count, amount) in daily_now {
                let orders = count_of(count)?;
                previous += orders;
                daily.push((status_of(&status)?, Cell { orders, amount }));
            }
            let hourly_now: Vec<(DateTime<Utc>, String, Decimal, Decimal)> =
                sqlx::query_as(&sql(HOURLY_SUMS))
                    .bind(start.naive_utc())
                    .bind(last.naive_utc())
                    .fetch_all(&mut *tx)
                    .await?;
            let hourly_now = hour_cells(hourly_now)?;
            let before = (nonzero_daily(&daily), nonzero_hourly(&hourly_now));
            let hourly: Vec<(DateTime<Utc>, OrderStatus, Cell)> = match source {
                Source::Orders => {
                    let rows: Vec<(DateTime<Utc>, String, Decimal, Decimal)> =
                        sqlx::query_as(&sql(&count_orders))
                            .bind(start.naive_utc())
                            .bind(last.naive_utc())
                            .fetch_all(&mut *tx)
                            .await?;
                    let mut delta = StatsDelta::default();
                    for (hour, status, cell) in hour_cells(rows)? {
                        delta.add(hour, status, cell.orders, cell.amount);
                    }
                    daily = delta.daily().into_iter().map(|(_, s, c)| (s, c)).collect();
                    delta.hourly().collect()
                }
                Source::Rollups => hourly_now,
            };
            let changed = before != (nonzero_daily(&daily), nonzero_hourly(&hourly));
            sqlx::query(&sql("DELETE FROM order_stats_daily WHERE day = ?"))
                .bind(day)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&sql(
                "DELETE FROM order_stats_hourly WHERE hour >= ? AND hour <= ?",
            ))
            .bind(start.naive_utc())
            .bind(last.naive_utc())
            .execute(&mut *tx)
            .await?;
            // Only cells with something in them (a status every order left
            // sums to zero, and keeps no row).
            let daily: Vec<_> = daily
                .iter()
                .filter(|(_, c)| *c != Cell::default())
                .map(|(s, c)| (day, s.as_str(), 0_i16, c.orders, c.amount))
                .collect();
            let hourly: Vec<_> = hourly
                .iter()
                .filter(|(_, _, c)| *c != Cell::default())
                .map(|(h, s, c)| (h.naive_utc(), s.as_str(), 0_i16, c.orders, c.amount))
                .collect();
            add_rollup_rows!(tx, driver, "order_stats_daily", "day", daily).await?;
            add_rollup_rows!(tx, driver, "order_stats_hourly", "hour", hourly).await?;
            tx.commit().await?;
            Ok(Rewritten {
                orders: daily.iter().map(|r| r.3).sum(),
                previous,
                changed,
                rows_before: count_of(rows_before)?,
                rows_after: i64::try_from(daily.len() + hourly.len()).unwrap_or(i64::MAX),
            })
        })
    }
}
