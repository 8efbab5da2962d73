//! Statistics rollups on both engines: always equal to a full count of the
//! orders table, under concurrent writers, rebuilds and compaction; series
//! by day and hour; the migration's fill of orders already there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use order_core::domain::{Cause, NewOrder, OrderStatus, SeckillMessage};
use order_core::storage::{Figures, Storage, StorageError};
use order_runtime::config::Driver;
use order_testkit::TestDatabase;
use order_testkit::fixtures::Seckill;
use uuid::Uuid;

order_testkit::on_both_engines!(
    rollups_equal_a_full_count_after_concurrent_creations_transitions_expiries_rebuilds_and_compactions,
    a_rebuild_corrects_wrong_rollups_and_running_it_twice_or_at_once_changes_nothing,
    compaction_folds_a_closed_days_slots_into_one_row_and_keeps_the_figures,
    series_are_zero_filled_and_bounded,
    a_pool_without_rollups_writes_none_and_counts_the_orders_table,
    migrating_a_database_with_orders_fills_the_rollups_from_them,
    a_status_change_caught_in_a_deadlock_on_the_rollups_runs_again,
);

fn new_order(user: i64, product: i64, price: &str) -> NewOrder {
    let bytes = Seckill::new(user, product)
        .raw("unit_price", format!("\"{price}\""))
        .seckill_id(&format!("sk_{product}"))
        .bytes();
    NewOrder::new(SeckillMessage::parse(&bytes).unwrap())
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Moves the orders of `user` to `at` by hand (what a restore or a bulk
/// load does), bypassing the rollups.
async fn move_user(db: &TestDatabase, user: i64, at: DateTime<Utc>) {
    let at = at.format("%Y-%m-%d %H:%M:%S%.6f");
    db.execute(&match db.driver() {
        Driver::Postgres => {
            format!("UPDATE orders SET created_at = '{at}+00' WHERE user_id = {user}")
        }
        Driver::Mysql => format!("UPDATE orders SET created_at = '{at}' WHERE user_id = {user}"),
    })
    .await;
}

/// The orders of UTC day `d`, as the statistics say.
async fn orders_on(storage: &Storage, d: NaiveDate) -> i64 {
    storage.stats(d, d).await.unwrap().figures.order_count
}

/// Asserts that the rollups equal a full count of the orders table for
/// every day of `days`: each hour's figures (counts by status, total and
/// completed amounts) from the hour series, and each day's from the range
/// and the day series; and that the counting path agrees.
async fn assert_exact(storage: &Storage, days: &[NaiveDate]) {
    let counting = storage.clone().without_rollups();
    for d in days {
        let start = d.and_time(chrono::NaiveTime::MIN).and_utc();
        let last = d.and_hms_micro_opt(23, 59, 59, 999_999).unwrap().and_utc();
        let mut hours: BTreeMap<DateTime<Utc>, Figures> = (0..24)
            .map(|h| (start + TimeDelta::hours(h), Figures::default()))
            .collect();
        let mut day = Figures::default();
        for (hour, status, cell) in storage.count_by_hour(start, last).await.unwrap() {
            hours
                .get_mut(&hour)
                .unwrap()
                .add(status, cell.orders, cell.amount);
            day.add(status, cell.orders, cell.amount);
        }
        let rolled: BTreeMap<DateTime<Utc>, Figures> = storage
            .stats_by_hour(start, start + TimeDelta::hours(23))
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.hour.unwrap(), e.figures))
            .collect();
        assert_eq!(rolled, hours, "{d}: hourly rollups against a full count");
        assert_eq!(
            storage.stats(*d, *d).await.unwrap().figures,
            day,
            "{d}: daily rollups against a full count"
        );
        assert_eq!(
            storage.stats_by_day(*d, *d).await.unwrap()[0].figures,
            day,
            "{d}: the day series"
        );
        assert_eq!(
            counting.stats(*d, *d).await.unwrap().figures,
            day,
            "{d}: the counting path"
        );
    }
}

/// Several writers at once, for a few seconds: batches of new orders (with
/// duplicates), transitions of random orders (many created on earlier days),
/// expiry of old pending orders, and beside them rebuilds of random days and
/// compaction. Then every day touched is compared with a full count.
async fn rollups_equal_a_full_count_after_concurrent_creations_transitions_expiries_rebuilds_and_compactions(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    let now = Utc::now();
    let today = now.date_naive();
    // Orders on the last five days (users 1..=5, one day each, at various
    // hours), moved there by hand and rebuilt.
    let mut days: Vec<NaiveDate> = Vec::new();
    let mut ids: Vec<Uuid> = Vec::new();
    for user in 1..=5_i64 {
        let orders: Vec<NewOrder> = (1..=60)
            .map(|p| new_order(user, p, &format!("{}.{:02}", p % 7 + 1, p % 100)))
            .collect();
        db.storage.create_orders(&orders).await.unwrap();
        let at = now - TimeDelta::days(user) - TimeDelta::minutes(user * 97);
        move_user(&db, user, at).await;
        days.push(at.date_naive());
        ids.extend(orders.iter().map(|o| o.order_id));
    }
    days.extend([today.pred_opt().unwrap(), today]);
    days.sort_unstable();
    days.dedup();
    for d in &days {
        db.storage.rebuild_stats_day(*d).await.unwrap();
    }
    assert_exact(&db.storage, &days).await;

    let ids = Arc::new(tokio::sync::Mutex::new(ids));
    let until = Instant::now() + Duration::from_secs(4);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4_i64 {
        let storage = db.storage.clone();
        let ids = ids.clone();
        writers.spawn(async move {
            let mut round = 0_i64;
            while Instant::now() < until {
                round += 1;
                match fastrand::u8(0..10) {
                    0..=3 => {
                        // Users 100+ overlap across writers: duplicates.
                        let batch: Vec<NewOrder> = (0..fastrand::i64(1..40))
                            .map(|_| {
                                new_order(100 + fastrand::i64(0..50), fastrand::i64(1..200), "3.30")
                            })
                            .collect();
                        let out = storage.create_orders(&batch).await.expect("batch");
                        let mut ids = ids.lock().await;
                        for o in out {
                            if let order_core::storage::InsertOutcome::Created(id) = o {
                                ids.push(id);
                            }
                        }
                    }
                    4..=7 => {
                        let id = {
                            let ids = ids.lock().await;
                            ids[fastrand::usize(0..ids.len())]
                        };
                        let to = [
                            OrderStatus::Completed,
                            OrderStatus::Cancelled,
                            OrderStatus::Failed,
                        ][fastrand::usize(0..3)];
                        match storage.transition_order(id, to).await {
                            Ok(_) | Err(StorageError::Transition(_)) => {}
                            Err(e) => panic!("writer {w} round {round}: transition: {e}"),
                        }
                    }
                    _ => {
                        let cutoff = Utc::now() - TimeDelta::hours(24 + fastrand::i64(0..100));
                        storage
                            .expire_unpaid(cutoff, 7, &Cause::because("test expiry"))
                            .await
                            .expect("expiry");
                    }
                }
            }
            round
        });
    }
    let days_for_rebuild = days.clone();
    let storage = db.storage.clone();
    let maintenance = tokio::spawn(async move {
        let mut runs = 0;
        while Instant::now() < until {
            let d = days_for_rebuild[fastrand::usize(0..days_for_rebuild.len())];
            storage.rebuild_stats_day(d).await.expect("rebuild");
            let due = storage.stats_days_to_compact(today, 10).await.expect("due");
            for d in due {
                storage.compact_stats_day(d).await.expect("compact");
            }
            runs += 1;
        }
        runs
    });
    let mut rounds = 0;
    while let Some(r) = writers.join_next().await {
        rounds += r.unwrap();
    }
    let runs = maintenance.await.unwrap();
    assert!(
        rounds > 40 && runs > 2,
        "{rounds} writer rounds, {runs} rebuilds"
    );
    assert_exact(&db.storage, &days).await;
    // Every status moved somewhere.
    let range = db
        .storage
        .stats(days[0], *days.last().unwrap())
        .await
        .unwrap()
        .figures;
    for status in OrderStatus::ALL {
        assert!(range.by_status[&status] > 0, "{status:?} in {range:?}");
    }
}

async fn a_rebuild_corrects_wrong_rollups_and_running_it_twice_or_at_once_changes_nothing(
    driver: Driver,
) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=30).map(|p| new_order(7, p, "2.50")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    db.storage
        .transition_order(orders[0].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    let today = Utc::now().date_naive();
    let days = [today.pred_opt().unwrap(), today];
    assert_exact(&db.storage, &days).await;

    // Wrong rollups (a restore from before some orders, a hand edit), and a
    // stray row on a day without orders.
    db.execute("UPDATE order_stats_daily SET order_count = order_count + 1000")
        .await;
    db.execute("DELETE FROM order_stats_hourly").await;
    let stray = day(2020, 2, 29);
    db.execute(&format!(
        "INSERT INTO order_stats_daily (day, status, slot, order_count, amount) VALUES ('{stray}', 'pending', 3, 5, 5.00)"
    ))
    .await;
    assert_eq!(orders_on(&db.storage, stray).await, 5);
    assert_ne!(orders_on(&db.storage, today).await, 30);

    let (first, last) = db.storage.stats_days().await.unwrap().unwrap();
    assert_eq!(first, stray);
    assert!(last >= today.pred_opt().unwrap());
    let rebuilt = order_core::service::maintenance::rebuild_stats(&db.storage, first, last, |_| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.iter().map(|r| r.orders).sum::<i64>(), 30);
    assert!(
        rebuilt
            .iter()
            .any(|r| r.day == stray && r.previous == 5 && r.orders == 0)
    );
    assert_exact(&db.storage, &days).await;
    assert_eq!(orders_on(&db.storage, stray).await, 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_stats_daily WHERE day < '2021-01-01'")
            .await,
        0,
        "a day without orders keeps no rows"
    );

    // Twice, and two at once: the same figures.
    let again = db.storage.rebuild_stats_day(today).await.unwrap();
    assert_eq!(again.orders, again.previous);
    let (a, b) = tokio::join!(
        db.storage.rebuild_stats_day(today),
        db.storage.rebuild_stats_day(today)
    );
    assert_eq!(a.unwrap().orders, b.unwrap().orders);
    assert_exact(&db.storage, &days).await;
}

async fn compaction_folds_a_closed_days_slots_into_one_row_and_keeps_the_figures(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=80).map(|p| new_order(9, p, "1.25")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    let yesterday = Utc::now() - TimeDelta::days(1);
    move_user(&db, 9, yesterday).await;
    let today = Utc::now().date_naive();
    let days = [yesterday.date_naive(), today];
    for d in days {
        db.storage.rebuild_stats_day(d).await.unwrap();
    }
    // One transition per transaction: each adds to a random slot.
    for (i, o) in orders.iter().enumerate() {
        let to = if i % 2 == 0 {
            OrderStatus::Completed
        } else {
            OrderStatus::Cancelled
        };
        db.storage.transition_order(o.order_id, to).await.unwrap();
    }
    let rows = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    assert!(
        db.count(&rows("order_stats_daily")).await > 3,
        "spread over slots"
    );
    assert_exact(&db.storage, &days).await;

    assert_eq!(
        db.storage.stats_days_to_compact(today, 100).await.unwrap(),
        vec![yesterday.date_naive()]
    );
    let folded = order_core::service::maintenance::compact_stats(&db.storage, 100)
        .await
        .unwrap();
    assert!(folded > 0);
    // Completed and cancelled: one row each; pending, which every order
    // left, sums to zero and keeps none.
    assert_eq!(db.count(&rows("order_stats_daily")).await, 2);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_stats_hourly WHERE slot <> 0")
            .await,
        0
    );
    assert_exact(&db.storage, &days).await;
    assert_eq!(
        order_core::service::maintenance::compact_stats(&db.storage, 100)
            .await
            .unwrap(),
        0,
        "a second run moves nothing"
    );
    let figures = db.storage.stats(days[0], days[0]).await.unwrap().figures;
    assert_eq!(figures.by_status[&OrderStatus::Completed], 40);
    assert_eq!(figures.completed_amount.to_string(), "50.00");
}

async fn series_are_zero_filled_and_bounded(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let orders: Vec<NewOrder> = (1..=3).map(|p| new_order(4, p, "10")).collect();
    db.storage.create_orders(&orders).await.unwrap();
    let at = DateTime::parse_from_rfc3339("2024-02-29T13:45:00Z")
        .unwrap()
        .with_timezone(&Utc);
    move_user(&db, 4, at).await;
    db.storage.rebuild_stats_day(at.date_naive()).await.unwrap();

    let year = db
        .storage
        .stats_by_day(day(2024, 1, 1), day(2024, 12, 31))
        .await
        .unwrap();
    assert_eq!(year.len(), 366, "a leap year");
    assert_eq!(year[0].date, Some(day(2024, 1, 1)));
    assert_eq!(year[59].date, Some(day(2024, 2, 29)));
    assert_eq!(year[59].figures.order_count, 3);
    assert_eq!(year[59].figures.total_amount.to_string(), "30.00");
    assert_eq!(year.iter().map(|e| e.figures.order_count).sum::<i64>(), 3);
    assert_eq!(year[0].figures.total_amount.to_string(), "0.00");
    let json = serde_json::to_value(&year[59]).unwrap();
    assert_eq!(json["date"], "2024-02-29");
    assert_eq!(json["order_count"], 3);
    assert_eq!(json["by_status"]["pending"], 3);
    assert!(json.get("hour").is_none());

    let r = db
        .storage
        .stats_by_day(day(2024, 1, 1), day(2025, 1, 1))
        .await;
    assert!(matches!(r, Err(StorageError::Invalid(_))), "{r:?}");

    let from = at - TimeDelta::hours(30);
    let hours = db
        .storage
        .stats_by_hour(from, at + TimeDelta::hours(17))
        .await
        .unwrap();
    assert_eq!(hours.len(), 48);
    assert_eq!(hours[0].hour, Some(order_core::domain::hour_of(from)));
    let hit: Vec<_> = hours.iter().filter(|e| e.figures.order_count > 0).collect();
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].hour, Some(order_core::domain::hour_of(at)));
    assert_eq!(
        serde_json::to_value(hit[0]).unwrap()["hour"],
        "2024-02-29T13:00:00Z"
    );
    let r = db
        .storage
        .stats_by_hour(from, from + TimeDelta::hours(72))
        .await;
    assert!(matches!(r, Err(StorageError::Invalid(_))), "{r:?}");
    // The counting path answers the same series.
    let counting = db.storage.clone().without_rollups();
    assert_eq!(
        counting
            .stats_by_day(day(2024, 1, 1), day(2024, 12, 31))
            .await
            .unwrap(),
        year
    );
    assert_eq!(
        counting
            .stats_by_hour(from, at + TimeDelta::hours(17))
            .await
            .unwrap(),
        hours
    );
}

async fn a_pool_without_rollups_writes_none_and_counts_the_orders_table(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let storage = db.storage.clone().without_rollups();
    assert!(!storage.keeps_rollups() && db.storage.keeps_rollups());
    let orders: Vec<NewOrder> = (1..=5).map(|p| new_order(3, p, "4")).collect();
    storage.create_orders(&orders).await.unwrap();
    storage
        .transition_order(orders[0].order_id, OrderStatus::Completed)
        .await
        .unwrap();
    storage
        .expire_unpaid(Utc::now() + TimeDelta::seconds(1), 1, &Cause::default())
        .await
        .unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM order_stats_daily").await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM order_stats_hourly").await, 0);
    let today = Utc::now().date_naive();
    let figures = storage
        .stats(today.pred_opt().unwrap(), today)
        .await
        .unwrap()
        .figures;
    assert_eq!(figures.order_count, 5);
    assert_eq!(figures.by_status[&OrderStatus::Completed], 1);
    assert_eq!(figures.by_status[&OrderStatus::Cancelled], 1);
    // Turned on again: a rebuild catches the rollups up.
    for d in [today.pred_opt().unwrap(), today] {
        db.storage.rebuild_stats_day(d).await.unwrap();
    }
    assert_exact(&db.storage, &[today.pred_opt().unwrap(), today]).await;
}

/// A database migrated before the rollups, with orders in it, gets rollups
/// equal to them when migrated to this version.
async fn migrating_a_database_with_orders_fills_the_rollups_from_them(driver: Driver) {
    let db = TestDatabase::empty(driver).await;
    let dir = std::env::temp_dir().join(format!("order-migrations-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(match driver {
            Driver::Postgres => "postgres",
            Driver::Mysql => "mysql",
        });
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "20261206" {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    let before = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    match &db.storage {
        Storage::Postgres(s) => before.run(s.pool()).await.unwrap(),
        Storage::Mysql(s) => before.run(s.pool()).await.unwrap(),
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Orders written by the version before (no rollups), on three days.
    for (user, at) in [
        (1, "2026-01-01 00:00:00"),
        (2, "2026-01-01 23:59:59.999999"),
        (3, "2026-03-15 07:30:00"),
    ] {
        for (product, status, total) in [(1, "pending", "10.00"), (2, "completed", "2.55")] {
            let id = Uuid::now_v7();
            let id = match driver {
                Driver::Postgres => format!("'{id}'"),
                Driver::Mysql => format!("UNHEX('{}')", id.simple()),
            };
            let tz = if driver == Driver::Postgres {
                "+00"
            } else {
                ""
            };
            db.execute(&format!(
                "INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at) \
                 VALUES ({id}, {user}, {product}, 1, {total}, {total}, '{status}', 's', '{at}{tz}', '{at}{tz}')"
            ))
            .await;
        }
    }
    let applied = db.storage.migrate().await.unwrap();
    assert_eq!(applied.first(), Some(&20_261_206_000_001), "{applied:?}");
    let days = [day(2026, 1, 1), day(2026, 3, 15)];
    assert_exact(&db.storage, &days).await;
    let jan = db.storage.stats(days[0], days[0]).await.unwrap().figures;
    assert_eq!(jan.order_count, 4);
    assert_eq!(jan.completed_amount.to_string(), "5.10");
}

/// A rebuild counts what committed before it took the day's rows: that
/// needs each statement to see the latest commits (READ COMMITTED). A
/// PostgreSQL database whose default is REPEATABLE READ does not change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_read_committed_whatever_the_database_default() {
    let db = TestDatabase::new(Driver::Postgres).await;
    db.execute(&format!(
        "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
        db.name()
    ))
    .await;
    let storage = Storage::connect(&db.settings).unwrap();
    let Storage::Postgres(pg) = &storage else {
        unreachable!()
    };
    let mut tx = pg.pool().begin().await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(level, "read committed");
    tx.rollback().await.unwrap();
    storage.close().await;
}

/// Another writer holds every rollup row of the order's day, then waits for
/// the order's row, which the status change holds while it waits for a
/// rollup row: a deadlock. Whichever transaction the database picks to
/// fail, the status change commits (it runs again), and the figures stay
/// exact.
async fn a_status_change_caught_in_a_deadlock_on_the_rollups_runs_again(driver: Driver) {
    let db = TestDatabase::new(driver).await;
    let order = new_order(8, 1, "5.00");
    db.storage
        .create_orders(std::slice::from_ref(&order))
        .await
        .unwrap();
    let day = db
        .storage
        .get_order(order.order_id)
        .await
        .unwrap()
        .unwrap()
        .created_at
        .date_naive();
    let mut values = Vec::new();
    for status in ["cancelled", "completed", "failed", "pending"] {
        for slot in 0..order_core::domain::ROLLUP_SLOTS {
            values.push(format!("('{day}', '{status}', {slot}, 0, 0)"));
        }
    }
    let lock_rollups = format!(
        "INSERT INTO order_stats_daily (day, status, slot, order_count, amount) VALUES {} {}",
        values.join(", "),
        match driver {
            Driver::Postgres => {
                "ON CONFLICT (day, status, slot) DO UPDATE SET order_count = order_stats_daily.order_count"
            }
            Driver::Mysql => "ON DUPLICATE KEY UPDATE order_count = order_count",
        }
    );
    let lock_order = match driver {
        Driver::Postgres => "SELECT id FROM orders WHERE order_id = $1 FOR UPDATE",
        Driver::Mysql => "SELECT id FROM orders WHERE order_id = ? FOR UPDATE",
    };
    let other = Storage::connect(&db.settings).unwrap();
    macro_rules! deadlock_with {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.unwrap();
            sqlx::query(&lock_rollups).execute(&mut *tx).await.unwrap();
            let storage = db.storage.clone();
            let change = tokio::spawn(async move {
                storage
                    .transition_order(order.order_id, OrderStatus::Completed)
                    .await
            });
            // The change now holds the order's row and waits for a rollup row.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mine = sqlx::query(lock_order)
                .bind(order.order_id)
                .execute(&mut *tx)
                .await;
            match mine {
                Ok(_) => tx.commit().await.unwrap(),
                Err(_) => tx.rollback().await.unwrap(),
            }
            change.await.unwrap()
        }};
    }
    let changed = match &other {
        Storage::Postgres(s) => deadlock_with!(s.pool()),
        Storage::Mysql(s) => deadlock_with!(s.pool()),
    };
    let changed = changed.expect("the status change commits");
    assert_eq!(changed.status, OrderStatus::Completed);
    other.close().await;
    assert_exact(&db.storage, &[day]).await;
}
