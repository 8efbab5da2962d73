//! Two `order-api` processes behind one Redis and one database: while
//! orders change through either, reads from both never show a status older
//! than the near cache's bound (`redis.near_cache.max_staleness`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use order_core::domain::{NewOrder, SeckillMessage};
use order_runtime::config::{Driver, Secret, Settings};
use order_testkit::http;
use order_testkit::{TestDatabase, free_port, process, redis_settings};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_order-api");
const TOKEN: &str = "replicas-operator-token";
const SECRET: &str = "replicas-test-secret-of-at-least-32-bytes";
/// The bound under test, given to both processes.
const BOUND: Duration = Duration::from_millis(50);
const ORDERS: i64 = 24;

/// One read: which order, when it was sent, what it showed.
struct Read {
    order: usize,
    sent: Instant,
    status: String,
}

async fn seed(db: &TestDatabase) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for user in 1..=ORDERS {
        let message = format!(
            r#"{{"user_id":{user},"product_id":1,"quantity":1,"unit_price":"1.00","seckill_id":"sk_1","timestamp":"2024-01-01T12:00:00Z"}}"#
        );
        let order = NewOrder::new(SeckillMessage::parse(message.as_bytes()).unwrap());
        db.storage
            .create_orders(std::slice::from_ref(&order))
            .await
            .unwrap();
        ids.push(order.order_id);
    }
    ids
}

async fn counter(addr: SocketAddr, series: &str) -> f64 {
    let (_, text) = http::get(addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn two_replicas_never_serve_a_status_older_than_the_bound_while_orders_change() {
    let db = TestDatabase::new(Driver::Postgres).await;
    let ids = seed(&db).await;
    let redis = redis_settings();
    let (port, staleness) = (redis.port.to_string(), format!("{}ms", BOUND.as_millis()));
    let ports = [free_port(), free_port()];
    let mut replicas = Vec::new();
    for p in ports {
        let p = p.to_string();
        let mut api = process::spawn(
            BIN,
            &[],
            &[
                ("ORDER__DATABASE__URL", db.settings.url.expose()),
                ("ORDER__SERVER__PORT", &p),
                ("ORDER__REDIS__HOST", &redis.host),
                ("ORDER__REDIS__PORT", &port),
                ("ORDER__REDIS__KEY_PREFIX", &redis.key_prefix),
                ("ORDER__REDIS__NEAR_CACHE__MAX_STALENESS", &staleness),
                ("ORDER__API__ADMIN_TOKEN", TOKEN),
                ("ORDER__API__AUTH__JWT_SECRET", SECRET),
            ],
        );
        api.wait_for("order-api started", Duration::from_secs(60));
        replicas.push(api);
    }
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
    let mut api = Settings::default().api;
    api.auth.jwt_secret = Secret::new(SECRET);
    // Each order is read by its buyer, with a token of their own.
    let tokens: Arc<Vec<String>> = Arc::new(
        (1..=ORDERS)
            .map(|user| {
                let t = order_api::auth::mint(&api, user, Duration::from_secs(600)).unwrap();
                format!("Bearer {t}")
            })
            .collect(),
    );
    let ids = Arc::new(ids);

    // Readers on both replicas, until the changes are done.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads: Arc<Mutex<Vec<(usize, Read)>>> = Arc::default();
    let mut readers = Vec::new();
    for (replica, addr) in addrs.iter().copied().enumerate() {
        for lane in 0..2 {
            let (ids, tokens, stop, reads) =
                (ids.clone(), tokens.clone(), stop.clone(), reads.clone());
            readers.push(tokio::spawn(async move {
                let mut i = lane;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let order = i % ids.len();
                    i += 1;
                    let sent = Instant::now();
                    let r = http::request(
                        addr,
                        "GET",
                        &format!("/api/v1/orders/{}", ids[order]),
                        &[("Authorization", &tokens[order])],
                        None,
                    )
                    .await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    let status = r.json()["status"].as_str().unwrap().to_owned();
                    reads.lock().unwrap().push((
                        replica,
                        Read {
                            order,
                            sent,
                            status,
                        },
                    ));
                }
            }));
        }
    }
    // Let the readers fill both near caches, then change every order, each
    // through one replica in turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut changed = Vec::new();
    for (order, id) in ids.iter().enumerate() {
        let addr = addrs[order % 2];
        let r = http::request(
            addr,
            "PUT",
            &format!("/api/v1/orders/{id}/status"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            Some(br#"{"status":"completed"}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        changed.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(BOUND * 4).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        r.await.unwrap();
    }

    let reads = std::mem::take(&mut *reads.lock().unwrap());
    let mut stale_windows = Vec::new();
    let mut late = Vec::new();
    for (replica, read) in reads.iter() {
        let done = changed[read.order];
        if read.sent > done && read.status == "pending" {
            let window = read.sent - done;
            stale_windows.push(window);
            if window > BOUND {
                late.push(format!(
                    "replica {replica}: order {} read as pending {window:?} after its change",
                    read.order
                ));
            }
        }
    }
    stale_windows.sort();
    eprintln!(
        "{} reads; {} sent after a change still showed it pending, the latest {:?} after",
        reads.len(),
        stale_windows.len(),
        stale_windows.last()
    );
    assert!(late.is_empty(), "{late:#?}");
    assert!(
        reads.len() > 200,
        "too few reads to say anything: {}",
        reads.len()
    );
    for addr in &addrs {
        assert!(
            counter(*addr, "near_cache_requests_total{result=\"hit\"}").await > 0.0,
            "reads came from the near cache"
        );
        assert!(counter(*addr, "near_cache_invalidations_total").await >= ORDERS as f64);
    }
    for mut r in replicas {
        r.terminate(Duration::from_secs(10));
    }
}
