use deadpool_redis::redis::{self, IntoConnectionInfo};

use super::connection_info;
use crate::settings::{RedisSettings, Secret};

const PASSWORD: &str = "p@ss:w/rd#%20 x";

#[test]
fn the_password_reaches_redis_byte_for_byte() {
    let settings = RedisSettings {
        host: "cache.internal".into(),
        port: 6380,
        password: Secret::new(PASSWORD),
        db: 3,
        ..RedisSettings::default()
    };
    // What the pool hands to the redis client.
    let info: redis::ConnectionInfo = connection_info(&settings).into_connection_info().unwrap();
    assert_eq!(info.redis_settings().password(), Some(PASSWORD));
    assert_eq!(info.redis_settings().username(), None);
    assert_eq!(info.redis_settings().db(), 3);
    assert_eq!(
        info.addr(),
        &redis::ConnectionAddr::Tcp("cache.internal".into(), 6380)
    );

    // The URL the earlier code built loses it (`#` starts a fragment,
    // `%20` is decoded): why no URL is built.
    let url = format!("redis://:{PASSWORD}@cache.internal:6380/3");
    let parsed = url
        .as_str()
        .into_connection_info()
        .ok()
        .and_then(|i| i.redis_settings().password().map(str::to_owned));
    assert_ne!(parsed.as_deref(), Some(PASSWORD));
}

#[test]
fn no_password_sends_none() {
    let info: redis::ConnectionInfo = connection_info(&RedisSettings::default())
        .into_connection_info()
        .unwrap();
    assert_eq!(info.redis_settings().password(), None);
    assert_eq!(info.redis_settings().db(), 0);
}
