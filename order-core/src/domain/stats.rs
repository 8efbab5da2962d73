//! Statistics rollups: what a committed change adds to the per-day and
//! per-hour figures of the orders, by the day and hour each order was
//! created and by its status.
//!
//! Every transaction that creates orders, changes an order's status or
//! expires orders adds its [`StatsDelta`] to the rollup rows in the same
//! transaction, so the rollups always equal a full count of the orders
//! table. Each (bucket, status) has [`ROLLUP_SLOTS`] rows; a transaction
//! adds to one of them, so the writers of a busy hour seldom wait for each
//! other's row lock.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;

use super::{Order, OrderStatus};

/// Rows per (day or hour, status) that writers spread their additions over.
pub const ROLLUP_SLOTS: i16 = 8;

/// A slot for one transaction's additions, at random.
#[must_use]
pub fn random_slot() -> i16 {
    fastrand::i16(0..ROLLUP_SLOTS)
}

/// The start of the UTC hour `t` falls in.
#[must_use]
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(t)
}

/// Orders and their amount in one rollup cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cell {
    /// Orders (negative for orders that left this status).
    pub orders: i64,
    /// Their `total_amount` (negative likewise).
    pub amount: Decimal,
}

impl Cell {
    fn add(&mut self, other: Self) {
        self.orders += other.orders;
        self.amount += other.amount;
    }
}

/// What one change adds to the rollups: per (creation hour, status), orders
/// and amount. Cells come out sorted (day or hour, then status name), the
/// order in which every writer takes the rows' locks, so two writers never
/// deadlock on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    hourly: BTreeMap<(DateTime<Utc>, &'static str), (OrderStatus, Cell)>,
}

impl StatsDelta {
    /// Orders created at `at` (all pending) with these totals.
    #[must_use]
    pub fn created(at: DateTime<Utc>, totals: impl IntoIterator<Item = Decimal>) -> Self {
        let mut delta = Self::default();
        for total in totals {
            delta.add(at, OrderStatus::Pending, 1, total);
        }
        delta
    }

    /// `order` (as it was created) moving from `from` to `to`.
    pub fn add_move(&mut self, order: &Order, from: OrderStatus, to: OrderStatus) {
        if from != to {
            self.add(order.created_at, from, -1, -order.total_amount);
            self.add(order.created_at, to, 1, order.total_amount);
        }
    }

    /// `orders` orders of `amount` in all, created at `created_at`, in
    /// `status`.
    pub fn add(
        &mut self,
        created_at: DateTime<Utc>,
        status: OrderStatus,
        orders: i64,
        amount: Decimal,
    ) {
        let (_, cell) = self
            .hourly
            .entry((hour_of(created_at), status.as_str()))
            .or_insert((status, Cell::default()));
        cell.add(Cell { orders, amount });
    }

    /// Whether it adds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hourly.is_empty()
    }

    /// Per (hour, status), sorted.
    pub fn hourly(&self) -> impl Iterator<Item = (DateTime<Utc>, OrderStatus, Cell)> + '_ {
        self.hourly
            .iter()
            .map(|(&(hour, _), &(status, cell))| (hour, status, cell))
    }

    /// Per (day, status), sorted: the sums of [`Self::hourly`]. A day has a
    /// cell whenever one of its hours has one (even if it sums to zero), so
    /// a writer touching a day's hours always takes a lock of that day first.
    #[must_use]
    pub fn daily(&self) -> Vec<(NaiveDate, OrderStatus, Cell)> {
        let mut days: BTreeMap<(NaiveDate, &'static str), (OrderStatus, Cell)> = BTreeMap::new();
        for (&(hour, name), &(status, cell)) in &self.hourly {
            days.entry((hour.date_naive(), name))
                .or_insert((status, Cell::default()))
                .1
                .add(cell);
        }
        days.into_iter()
            .map(|((day, _), (status, cell))| (day, status, cell))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn order(created_at: DateTime<Utc>, total: Decimal) -> Order {
        Order {
            id: 1,
            order_id: uuid::Uuid::now_v7(),
            user_id: 7,
            product_id: 9,
            quantity: 1,
            unit_price: total,
            total_amount: total,
            status: OrderStatus::Pending,
            seckill_id: "s-1".into(),
            created_at,
            updated_at: created_at,
            version: 0,
            items: Vec::new(),
        }
    }

    #[test]
    fn hours_are_cut_at_the_hour() {
        assert_eq!(
            hour_of(at("2026-12-05T13:59:59.999999Z")),
            at("2026-12-05T13:00:00Z")
        );
        assert_eq!(
            hour_of(at("2026-12-05T00:00:00Z")),
            at("2026-12-05T00:00:00Z")
        );
    }

    #[test]
    fn a_move_takes_from_one_status_and_gives_to_another_on_the_creation_day() {
        let created = at("2026-12-04T23:30:00Z");
        let mut delta = StatsDelta::created(created, [dec("10.50"), dec("2")]);
        let order = order(created, dec("10.50"));
        delta.add_move(&order, OrderStatus::Pending, OrderStatus::Cancelled);
        let daily = delta.daily();
        assert_eq!(
            daily,
            vec![
                (
                    NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
                    OrderStatus::Cancelled,
                    Cell {
                        orders: 1,
                        amount: dec("10.50")
                    }
                ),
                (
                    NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
                    OrderStatus::Pending,
                    Cell {
                        orders: 1,
                        amount: dec("2")
                    }
                ),
            ]
        );
        assert_eq!(delta.hourly().count(), 2);
    }

    #[test]
    fn a_day_keeps_a_cell_that_sums_to_zero_when_its_hours_do_not() {
        let mut delta = StatsDelta::default();
        delta.add(
            at("2026-12-04T01:00:00Z"),
            OrderStatus::Pending,
            1,
            dec("1"),
        );
        delta.add(
            at("2026-12-04T02:00:00Z"),
            OrderStatus::Pending,
            -1,
            dec("-1"),
        );
        assert_eq!(delta.hourly().count(), 2);
        assert_eq!(delta.daily().len(), 1);
        assert_eq!(delta.daily()[0].2, Cell::default());
    }

    #[test]
    fn cells_are_sorted_by_bucket_then_status_name() {
        let mut delta = StatsDelta::default();
        delta.add(
            at("2026-12-05T01:00:00Z"),
            OrderStatus::Pending,
            1,
            dec("1"),
        );
        delta.add(
            at("2026-12-04T01:00:00Z"),
            OrderStatus::Pending,
            1,
            dec("1"),
        );
        delta.add(
            at("2026-12-04T01:00:00Z"),
            OrderStatus::Completed,
            1,
            dec("1"),
        );
        let keys: Vec<_> = delta.hourly().map(|(h, s, _)| (h, s.as_str())).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(keys[0].1, "completed");
    }
}
