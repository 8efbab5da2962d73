//! The order cache against a real Redis, cut and healed through a proxy.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use order_core::cache::{CachedJson, OrderCache, SKIP_AFTER_FAILURE};
use order_core::config::RedisSettings;
use order_core::testing::proxy::FaultProxy;
use order_core::testing::redis_settings;
use uuid::Uuid;

/// A cache straight to Redis, and one through a proxy; same key prefix.
async fn caches() -> (OrderCache, OrderCache, FaultProxy) {
    let direct = redis_settings();
    let redis: SocketAddr = (direct.host.as_str(), direct.port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = FaultProxy::start(redis).await;
    let via = RedisSettings {
        host: proxy.addr().ip().to_string(),
        port: proxy.addr().port(),
        ..direct.clone()
    };
    (
        OrderCache::connect(&direct).unwrap(),
        OrderCache::connect(&via).unwrap(),
        proxy,
    )
}

#[tokio::test]
async fn after_a_redis_error_reads_skip_redis_for_a_while_then_use_it_again() {
    let (_, cache, proxy) = caches().await;
    let id = Uuid::now_v7();
    cache.put_json(id, r#"{"v":1}"#).await;
    assert_eq!(
        cache.get_json(id).await,
        CachedJson::Hit(r#"{"v":1}"#.into())
    );

    proxy.cut();
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);
    proxy.heal();
    assert_eq!(
        cache.get_json(id).await,
        CachedJson::Unknown,
        "Redis answers again, but within the skip window it is not asked"
    );

    tokio::time::sleep(SKIP_AFTER_FAILURE + Duration::from_millis(100)).await;
    assert_eq!(
        cache.get_json(id).await,
        CachedJson::Hit(r#"{"v":1}"#.into())
    );
}

#[tokio::test]
async fn an_invalidation_that_fails_is_retried_until_the_stale_entry_is_gone() {
    let (direct, cache, proxy) = caches().await;
    let id = Uuid::now_v7();
    cache.put_json(id, r#"{"v":"old"}"#).await;

    proxy.cut();
    cache.invalidate(&[id]).await;
    proxy.heal();
    assert_eq!(
        direct.get_json(id).await,
        CachedJson::Hit(r#"{"v":"old"}"#.into()),
        "the delete did not reach Redis"
    );
    assert_eq!(cache.get_json(id).await, CachedJson::Unknown);

    let mut waited = Duration::ZERO;
    while direct.get_json(id).await != CachedJson::Unknown {
        assert!(
            waited < SKIP_AFTER_FAILURE * 5,
            "the owed delete was not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }

    cache.put_json(id, r#"{"v":"new"}"#).await;
    assert_eq!(
        cache.get_json(id).await,
        CachedJson::Hit(r#"{"v":"new"}"#.into()),
        "once the delete is done the key is cached again"
    );
}
