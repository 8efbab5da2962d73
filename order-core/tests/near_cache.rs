//! The near cache: two replicas' in-process copies against a real Redis,
//! one of them through a proxy that cuts or stalls its connections.

use std::time::{Duration, Instant};

use chrono::Utc;
use deadpool_redis::redis::AsyncCommands;
use order_core::cache::near::{FILL_WINDOW, Lookup};
use order_core::cache::{CachedJson, CachedOrder, OrderCache};
use order_core::domain::OrderStatus;
use order_core::storage::Changed;
use order_runtime::config::RedisSettings;
use order_testkit::fixtures::order;
use order_testkit::proxy::{FaultProxy, redis_through_proxy};
use order_testkit::redis_settings;
use uuid::Uuid;

const MAX_STALENESS: Duration = Duration::from_millis(200);

fn with_near(mut settings: RedisSettings) -> RedisSettings {
    settings.near_cache.max_staleness = MAX_STALENESS;
    settings
}

/// Replica `a` straight to Redis, replica `b` through a proxy; same keys.
async fn replicas() -> (OrderCache, OrderCache, FaultProxy, RedisSettings) {
    let direct = with_near(redis_settings());
    let (proxy, via) = redis_through_proxy(&direct).await;
    let a = OrderCache::connect(&direct)
        .unwrap()
        .with_near_cache(&direct)
        .unwrap();
    let b = OrderCache::connect(&via)
        .unwrap()
        .with_near_cache(&via)
        .unwrap();
    serving(&a).await;
    serving(&b).await;
    (a, b, proxy, direct)
}

/// Waits until the replica's copies may be served.
async fn serving(cache: &OrderCache) {
    let near = cache.near().expect("a near cache");
    let start = Instant::now();
    while !near.is_serving() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the near cache never got its heartbeat back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version_of(found: &CachedJson) -> Option<i32> {
    match found {
        CachedJson::Hit(hit) => Some(hit.version),
        _ => None,
    }
}

/// Removes the order's Redis key behind the caches' back: what is still
/// served then comes from memory.
async fn forget_in_redis(settings: &RedisSettings, id: Uuid) {
    let client = deadpool_redis::redis::Client::open(format!(
        "redis://{}:{}/",
        settings.host, settings.port
    ))
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = conn
        .del(format!("{}{id}", settings.key_prefix))
        .await
        .unwrap();
}

fn change(id: Uuid, version: i32) -> [Changed; 1] {
    [Changed {
        order_id: id,
        version,
    }]
}

#[tokio::test]
async fn a_copy_is_served_from_memory_and_every_replica_drops_it_when_the_order_changes() {
    let (a, b, _proxy, settings) = replicas().await;
    let id = Uuid::now_v7();
    assert!(a.put(&order(id, 0, OrderStatus::Pending)).await);
    assert_eq!(version_of(&b.get_json(id).await), Some(0), "b reads Redis");
    forget_in_redis(&settings, id).await;
    assert_eq!(version_of(&a.get_json(id).await), Some(0), "a's own copy");
    assert_eq!(version_of(&b.get_json(id).await), Some(0), "b's copy");

    let changed = Instant::now();
    a.invalidate(&change(id, 1)).await;
    assert_eq!(
        a.get_json(id).await,
        CachedJson::Unknown,
        "the changing replica drops its copy at once"
    );
    let mut delay = None;
    while changed.elapsed() < MAX_STALENESS * 2 {
        if b.get_json(id).await == CachedJson::Unknown {
            delay = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delay = delay.expect("the other replica still serves the old copy");
    assert!(delay <= MAX_STALENESS, "{delay:?}");

    // The new version is stored and served again.
    assert!(b.put(&order(id, 1, OrderStatus::Completed)).await);
    assert_eq!(version_of(&b.get_json(id).await), Some(1));
}

#[tokio::test]
async fn a_copy_read_before_a_change_that_arrived_meanwhile_is_not_stored() {
    let (a, b, _proxy, _) = replicas().await;
    let near = b.near().unwrap();
    let id = Uuid::now_v7();
    let copy = |version| CachedOrder {
        json: "{}".into(),
        user_id: 7,
        version,
    };
    let read_at = Instant::now();
    a.invalidate(&change(id, 3)).await;
    // Once b has had its heartbeat back, it has applied the invalidation.
    tokio::time::sleep(MAX_STALENESS).await;
    serving(&b).await;

    near.offer(id, copy(2), read_at);
    assert!(
        matches!(near.get(id), Lookup::Miss),
        "the copy of version 2 was read before version 3's invalidation arrived"
    );
    near.offer(id, copy(3), read_at);
    assert!(matches!(near.get(id), Lookup::Hit(hit) if hit.version == 3));

    let other = Uuid::now_v7();
    if let Some(long_ago) = Instant::now().checked_sub(FILL_WINDOW) {
        near.offer(other, copy(0), long_ago);
        assert!(
            matches!(near.get(other), Lookup::Miss),
            "a read older than the fill window is not stored"
        );
    }
}

#[tokio::test]
async fn with_its_subscription_stalled_a_replica_stops_serving_copies_within_max_staleness() {
    let (a, b, proxy, settings) = replicas().await;
    let id = Uuid::now_v7();
    assert!(b.put(&order(id, 0, OrderStatus::Pending)).await);
    assert_eq!(version_of(&b.get_json(id).await), Some(0));

    // Nothing b's connections receive arrives now: not the invalidation,
    // not its heartbeats. The connections look alive.
    proxy.delay_answers(Duration::from_secs(30));
    let changed = Instant::now();
    a.invalidate(&change(id, 1)).await;
    forget_in_redis(&settings, id).await;
    tokio::time::sleep(MAX_STALENESS + Duration::from_millis(50)).await;
    assert!(!b.near().unwrap().is_serving());
    assert!(
        matches!(b.near().unwrap().get(id), Lookup::Bypass),
        "copies are bypassed {:?} after the change",
        changed.elapsed()
    );
    proxy.delay_answers(Duration::ZERO);
}

#[tokio::test]
async fn copies_from_before_a_lost_subscription_are_never_served_after_it_is_back() {
    let (a, b, proxy, _) = replicas().await;
    let id = Uuid::now_v7();
    assert!(b.put(&order(id, 0, OrderStatus::Pending)).await);
    assert_eq!(version_of(&b.get_json(id).await), Some(0));

    // b misses the invalidation while cut off.
    proxy.cut();
    a.invalidate(&change(id, 1)).await;
    tokio::time::sleep(MAX_STALENESS + Duration::from_millis(50)).await;
    assert!(matches!(b.near().unwrap().get(id), Lookup::Bypass));
    proxy.heal();
    serving(&b).await;
    assert!(
        matches!(b.near().unwrap().get(id), Lookup::Miss),
        "the copy read before the cut is gone"
    );
}

#[tokio::test]
async fn without_the_setting_there_is_no_near_cache() {
    let mut settings = redis_settings();
    settings.near_cache.enabled = false;
    let cache = OrderCache::connect(&settings)
        .unwrap()
        .with_near_cache(&settings)
        .unwrap();
    assert!(cache.near().is_none());
    let id = Uuid::now_v7();
    assert!(cache.put(&order(id, 0, OrderStatus::Pending)).await);
    forget_in_redis(&settings, id).await;
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);
}

/// Expiry, as the compensator runs it (`Orders::expire_unpaid`, in a process
/// with no near cache of its own), drops an API replica's copies too.
#[tokio::test]
async fn an_expiry_elsewhere_drops_the_replicas_copies() {
    use order_core::domain::{Cause, NewOrder, SeckillMessage};
    use order_core::service::Orders;
    use order_runtime::config::Driver;
    use order_testkit::TestDatabase;

    let db = TestDatabase::new(Driver::Postgres).await;
    let message = br#"{"user_id":7,"product_id":9,"quantity":1,"unit_price":"1.00","seckill_id":"sk","timestamp":"2024-01-01T12:00:00Z"}"#;
    let new = NewOrder::new(SeckillMessage::parse(message).unwrap());
    db.storage
        .create_orders(std::slice::from_ref(&new))
        .await
        .unwrap();
    let settings = with_near(redis_settings());
    let replica = OrderCache::connect(&settings)
        .unwrap()
        .with_near_cache(&settings)
        .unwrap();
    serving(&replica).await;
    let api = Orders::new(db.storage.clone(), replica.clone());
    let caller = order_core::service::Caller::Operator;
    let json = api.get_json(caller, new.order_id).await.unwrap();
    assert!(json.contains("pending"), "{json}");
    forget_in_redis(&settings, new.order_id).await;
    assert_eq!(
        version_of(&replica.get_json(new.order_id).await),
        Some(0),
        "served from the replica's memory"
    );

    let compensator = Orders::new(db.storage.clone(), OrderCache::connect(&settings).unwrap());
    let expired = compensator
        .expire_unpaid(
            Utc::now() + chrono::Duration::seconds(1),
            10,
            Cause::default(),
        )
        .await
        .unwrap();
    assert_eq!(expired, 1);
    tokio::time::sleep(MAX_STALENESS).await;
    let json = api.get_json(caller, new.order_id).await.unwrap();
    assert!(json.contains("cancelled"), "{json}");
}
