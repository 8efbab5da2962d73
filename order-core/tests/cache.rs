//! The order cache against a real Redis, cut and healed through a proxy.

use std::time::Duration;

use chrono::Utc;
use order_core::cache::{CachedJson, MAX_FILL_AGE, OrderCache, SKIP_AFTER_FAILURE};
use order_core::domain::{Order, OrderStatus};
use order_core::storage::Changed;
use order_testkit::fixtures::order;
use order_testkit::proxy::{FaultProxy, redis_through_proxy};
use order_testkit::redis_settings;
use serde_json::Value;
use std::time::Instant;
use uuid::Uuid;

/// A cache straight to Redis, and one through a proxy; same key prefix.
async fn caches() -> (OrderCache, OrderCache, FaultProxy) {
    let direct = redis_settings();
    let (proxy, via) = redis_through_proxy(&direct).await;
    (
        OrderCache::connect(&direct).unwrap(),
        OrderCache::connect(&via).unwrap(),
        proxy,
    )
}

/// The JSON of the cached copy, if any.
async fn cached(cache: &OrderCache, id: Uuid) -> Option<Value> {
    match cache.get_json(id).await {
        CachedJson::Hit(hit) => Some(serde_json::from_str(&hit.json).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn a_copy_older_than_an_invalidated_change_is_never_stored() {
    let (cache, _, _proxy) = caches().await;
    let id = Uuid::now_v7();
    let old = order(id, 0, OrderStatus::Pending);
    // A reader fetched version 0; the change to version 1 commits and
    // invalidates; the reader's fill comes last.
    let read_at = Instant::now();
    cache
        .invalidate(&[Changed {
            order_id: id,
            version: 1,
        }])
        .await;
    assert!(
        !cache
            .fill(&old, &serde_json::to_string(&old).unwrap(), read_at)
            .await
    );
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);
    // The new version is stored, and an old one cannot replace it.
    let new = old.clone().moved_to(OrderStatus::Cancelled, Utc::now());
    assert!(cache.put(&new).await);
    assert!(!cache.put(&old).await);
    assert_eq!(cached(&cache, id).await.unwrap()["status"], "cancelled");
    // A late tombstone of a version already stored leaves the copy alone;
    // one of a later change replaces it.
    cache
        .invalidate(&[Changed {
            order_id: id,
            version: 1,
        }])
        .await;
    assert_eq!(cached(&cache, id).await.unwrap()["version"], 1);
    cache
        .invalidate(&[Changed {
            order_id: id,
            version: 2,
        }])
        .await;
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);
}

#[tokio::test]
async fn a_hit_carries_the_buyer_and_a_fill_too_old_is_dropped() {
    let (cache, _, _proxy) = caches().await;
    let id = Uuid::now_v7();
    let o = order(id, 0, OrderStatus::Pending);
    assert!(cache.put(&o).await);
    match cache.get_json(id).await {
        CachedJson::Hit(hit) => {
            assert_eq!((hit.user_id, hit.version), (7, 0));
            // The internal id is not part of the JSON.
            let back: Order = serde_json::from_str(&hit.json).unwrap();
            assert_eq!(Order { id: o.id, ..back }, o);
        }
        other => panic!("{other:?}"),
    }
    let other = Uuid::now_v7();
    let stale_read = Instant::now().checked_sub(MAX_FILL_AGE + Duration::from_secs(1));
    if let Some(read_at) = stale_read {
        let o = order(other, 0, OrderStatus::Pending);
        assert!(!cache.fill(&o, "{}", read_at).await);
        assert_eq!(cache.get_json(other).await, CachedJson::Unknown);
    }
}

#[tokio::test]
async fn after_a_redis_error_reads_skip_redis_for_a_while_then_use_it_again() {
    let (_, cache, proxy) = caches().await;
    let id = Uuid::now_v7();
    cache.put(&order(id, 0, OrderStatus::Pending)).await;
    assert!(cached(&cache, id).await.is_some());

    proxy.cut();
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);
    proxy.heal();
    assert_eq!(
        cache.get_json(id).await,
        CachedJson::Unknown,
        "Redis answers again, but within the skip window it is not asked"
    );

    tokio::time::sleep(SKIP_AFTER_FAILURE + Duration::from_millis(100)).await;
    assert!(cached(&cache, id).await.is_some());
}

#[tokio::test]
async fn an_invalidation_that_fails_is_retried_until_the_stale_entry_is_gone() {
    let (direct, cache, proxy) = caches().await;
    let id = Uuid::now_v7();
    let old = order(id, 0, OrderStatus::Pending);
    cache.put(&old).await;

    proxy.cut();
    cache
        .invalidate(&[Changed {
            order_id: id,
            version: 1,
        }])
        .await;
    proxy.heal();
    assert_eq!(
        cached(&direct, id).await.unwrap()["status"],
        "pending",
        "the invalidation did not reach Redis"
    );
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);

    let mut waited = Duration::ZERO;
    while direct.get_json(id).await != CachedJson::Unknown {
        assert!(
            waited < SKIP_AFTER_FAILURE * 5,
            "the owed invalidation was not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert!(
        !direct.put(&old).await,
        "the owed tombstone refuses the old copy"
    );

    let new = old.moved_to(OrderStatus::Completed, Utc::now());
    cache.put(&new).await;
    assert_eq!(
        cached(&cache, id).await.unwrap()["status"],
        "completed",
        "once the invalidation is done the key is cached again"
    );
}
