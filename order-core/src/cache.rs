//! The Redis read-through cache of single orders.
//!
//! One key per order, `{redis.key_prefix}{order_id}`: the order's JSON as
//! the API answers it (TTL `redis.ttl_secs`), or `-` for a short negative
//! entry ("no such order"). A hit is one `GET` and the stored text is the
//! response body as is. Every committed change deletes the key. Redis is an
//! optimisation only: an error is counted (`cache_errors_total`) and the
//! caller goes to the database.
//!
//! During an outage the cache does not make things worse: the first error
//! is logged (and the recovery), not every one; for [`SKIP_AFTER_FAILURE`]
//! after an error, reads and fills skip Redis at once (`cache_skipped_total`)
//! instead of each waiting for a connection. Deletes are always attempted. A
//! delete that fails is *owed*: this process neither reads nor fills that
//! key until a retry (every second, in the background) has deleted it, so
//! it never serves an entry it knows to be stale.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::domain::Order;

/// How long one Redis call may take before the cache is skipped.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long reads and fills skip Redis after a call failed.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The most owed deletes remembered; beyond it a failed delete leaves the
/// entry to its TTL (logged).
const MAX_OWED: usize = 100_000;

/// When the second delete of an invalidation runs.
const REDELETE_AFTER: Duration = Duration::from_secs(1);

/// TTL of a "this order does not exist" entry.
pub const NEGATIVE_TTL_SECS: u64 = 5;

/// The marker of a negative entry.
const MISSING: &str = "-";

/// What a lookup of the stored text found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedJson {
    /// The order's JSON, as the API answers it.
    Hit(String),
    /// Known not to exist (negative entry).
    Missing,
    /// Not cached, or Redis did not answer: ask the database.
    Unknown,
}

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The order, as last stored (its internal `id` is not cached: 0).
    Hit(Box<Order>),
    /// Known not to exist (negative entry).
    Missing,
    /// Not cached, or Redis did not answer: ask the database.
    Unknown,
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The settings do not describe a usable Redis.
    #[error("redis settings: {0}")]
    Config(String),
    /// No connection, or no answer in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
}

/// The order cache; cheap to clone. Without a pool (`redis.enabled: false`)
/// every call is a no-op and every lookup a miss.
#[derive(Clone)]
pub struct OrderCache {
    pool: Option<Pool>,
    prefix: String,
    ttl_secs: u64,
    outage: Arc<Outage>,
}

/// What this process knows of Redis's recent failures. The checks on every
/// call are atomic loads; locks are taken only during an outage.
#[derive(Debug)]
struct Outage {
    /// The origin of `skip_until_ms`.
    epoch: Instant,
    /// Reads and fills skip Redis until this many ms after `epoch` (0: never).
    skip_until_ms: AtomicU64,
    /// Set by the first error of an outage, cleared by the next success.
    down: AtomicBool,
    /// True while `owed` is not empty.
    any_owed: AtomicBool,
    /// Keys whose delete failed and is still to be done.
    owed: Mutex<HashSet<String>>,
    /// True while a task retries the owed deletes.
    retrying: AtomicBool,
}

impl Default for Outage {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            any_owed: AtomicBool::new(false),
            owed: Mutex::default(),
            retrying: AtomicBool::new(false),
        }
    }
}

impl Outage {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn skipping(&self) -> bool {
        let until = self.skip_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// Records a failure; true when it starts an outage.
    fn failed(&self) -> bool {
        let skip = u64::try_from(SKIP_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX);
        self.skip_until_ms
            .store(self.now_ms().saturating_add(skip).max(1), Ordering::Release);
        !self.down.swap(true, Ordering::AcqRel)
    }

    /// Records a success; true when it ends an outage.
    fn succeeded(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return false;
        }
        self.skip_until_ms.store(0, Ordering::Release);
        self.down.swap(false, Ordering::AcqRel)
    }

    fn is_owed(&self, key: &str) -> bool {
        self.any_owed.load(Ordering::Acquire)
            && self.owed.lock().expect("owed deletes").contains(key)
    }

    /// Remembers keys whose delete failed (up to [`MAX_OWED`]).
    fn owe(&self, keys: &[String]) {
        let mut owed = self.owed.lock().expect("owed deletes");
        let room = MAX_OWED.saturating_sub(owed.len());
        if room < keys.len() {
            tracing::error!(
                dropped = keys.len() - room,
                "too many cache deletes owed: these entries stay until their TTL"
            );
        }
        owed.extend(keys.iter().take(room).cloned());
        self.any_owed.store(!owed.is_empty(), Ordering::Release);
    }

    /// Forgets keys whose delete succeeded; true when none is left.
    fn paid(&self, keys: &[String]) -> bool {
        let mut owed = self.owed.lock().expect("owed deletes");
        for key in keys {
            owed.remove(key);
        }
        self.any_owed.store(!owed.is_empty(), Ordering::Release);
        owed.is_empty()
    }
}

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl OrderCache {
    /// A lazy pool: nothing is connected until the first call.
    ///
    /// # Errors
    /// [`CacheError::Config`] when the settings cannot make a pool.
    pub fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        if !settings.enabled {
            return Ok(Self {
                pool: None,
                prefix: settings.key_prefix.clone(),
                ttl_secs: settings.ttl_secs,
                outage: Arc::default(),
            });
        }
        let auth = if settings.password.is_empty() {
            String::new()
        } else {
            format!(":{}@", settings.password.expose())
        };
        let url = format!(
            "redis://{auth}{}:{}/{}",
            settings.host, settings.port, settings.db
        );
        let mut config = Config::from_url(url);
        let mut pool = PoolConfig::new(32);
        pool.timeouts = Timeouts {
            wait: Some(CALL_TIMEOUT),
            create: Some(CALL_TIMEOUT),
            recycle: Some(CALL_TIMEOUT),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheError::Config(e.to_string()))?;
        Ok(Self {
            pool: Some(pool),
            prefix: settings.key_prefix.clone(),
            ttl_secs: settings.ttl_secs,
            outage: Arc::default(),
        })
    }

    /// The key of an order.
    #[must_use]
    pub fn key(&self, order_id: Uuid) -> String {
        format!("{}{order_id}", self.prefix)
    }

    /// True unless `redis.enabled` is false.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.pool.is_some()
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, CacheError> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| CacheError::Unavailable("the cache is disabled".into()))?;
        pool.get()
            .await
            .map_err(|e| CacheError::Unavailable(e.to_string()))
    }

    /// Runs one Redis call with the time limit; an error is counted, and
    /// logged when it starts an outage. Reads and fills (`get`, `put`) are
    /// skipped for [`SKIP_AFTER_FAILURE`] after an error.
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, CacheError>
    where
        F: AsyncFnOnce(
            &mut deadpool_redis::Connection,
        ) -> Result<T, deadpool_redis::redis::RedisError>,
    {
        if !self.is_enabled() {
            return Err(CacheError::Unavailable("the cache is disabled".into()));
        }
        if matches!(op, "get" | "put") && self.outage.skipping() {
            metrics::counter!("cache_skipped_total", "op" => op).increment(1);
            return Err(CacheError::Unavailable(format!(
                "skipped: redis failed less than {SKIP_AFTER_FAILURE:?} ago"
            )));
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut conn = self.conn().await?;
            f(&mut conn)
                .await
                .map_err(|e| CacheError::Unavailable(e.to_string()))
        })
        .await
        .unwrap_or_else(|_| {
            Err(CacheError::Unavailable(format!(
                "no answer within {CALL_TIMEOUT:?}"
            )))
        });
        match &result {
            Err(e) => {
                metrics::counter!("cache_errors_total", "op" => op).increment(1);
                if self.outage.failed() {
                    tracing::warn!(
                        cache.op = op,
                        error = %e,
                        "redis unavailable: reads go to the database, redis is tried again every {SKIP_AFTER_FAILURE:?}"
                    );
                } else {
                    tracing::debug!(cache.op = op, error = %e, "redis call failed");
                }
            }
            Ok(_) => {
                if self.outage.succeeded() {
                    tracing::info!("redis answers again: the cache is in use");
                }
            }
        }
        result
    }

    /// Looks an order's JSON up: one `GET`.
    pub async fn get_json(&self, order_id: Uuid) -> CachedJson {
        if !self.is_enabled() {
            return CachedJson::Unknown;
        }
        let key = self.key(order_id);
        if self.outage.is_owed(&key) {
            metrics::counter!("cache_requests_total", "result" => "miss").increment(1);
            return CachedJson::Unknown;
        }
        let found = self
            .call("get", async |c| c.get::<_, Option<String>>(&key).await)
            .await;
        let cached = match found {
            Ok(Some(text)) if text == MISSING => CachedJson::Missing,
            Ok(Some(json)) => CachedJson::Hit(json),
            Ok(None) | Err(_) => CachedJson::Unknown,
        };
        let outcome = if cached == CachedJson::Unknown {
            "miss"
        } else {
            "hit"
        };
        metrics::counter!("cache_requests_total", "result" => outcome).increment(1);
        cached
    }

    /// Looks an order up.
    pub async fn get(&self, order_id: Uuid) -> Cached {
        match self.get_json(order_id).await {
            CachedJson::Hit(json) => match serde_json::from_str::<Order>(&json) {
                Ok(order) => Cached::Hit(Box::new(order)),
                Err(e) => {
                    tracing::warn!(order.id = %order_id, error = %e, "unreadable cache entry ignored");
                    Cached::Unknown
                }
            },
            CachedJson::Missing => Cached::Missing,
            CachedJson::Unknown => Cached::Unknown,
        }
    }

    /// Stores an order's JSON (as [`OrderCache::get_json`] returns it) for `redis.ttl_secs`.
    pub async fn put_json(&self, order_id: Uuid, json: &str) {
        let (key, ttl) = (self.key(order_id), self.ttl_secs);
        if self.outage.is_owed(&key) {
            return;
        }
        let _ = self
            .call("put", async |c| c.set_ex::<_, _, ()>(&key, json, ttl).await)
            .await;
    }

    /// Stores an order for `redis.ttl_secs`.
    pub async fn put(&self, order: &Order) {
        if let Ok(json) = serde_json::to_string(order) {
            self.put_json(order.order_id, &json).await;
        }
    }

    /// Remembers for a few seconds that an order does not exist, unless the
    /// key was filled meanwhile (`SET NX`).
    pub async fn put_missing(&self, order_id: Uuid) {
        let key = self.key(order_id);
        if self.outage.is_owed(&key) {
            return;
        }
        let _ = self
            .call("put", async |c| {
                deadpool_redis::redis::cmd("SET")
                    .arg(&key)
                    .arg(MISSING)
                    .arg("EX")
                    .arg(NEGATIVE_TTL_SECS)
                    .arg("NX")
                    .query_async::<Option<String>>(c)
                    .await
            })
            .await;
    }

    /// Deletes the entries of these orders (after a committed change), and
    /// once more a second later: a reader that fetched the old row before the
    /// change and stored it after the first delete is overwritten by then.
    pub async fn invalidate(&self, order_ids: &[Uuid]) {
        if order_ids.is_empty() || !self.is_enabled() {
            return;
        }
        let keys: Vec<String> = order_ids.iter().map(|id| self.key(*id)).collect();
        self.delete(&keys).await;
        let cache = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REDELETE_AFTER).await;
            cache.delete(&keys).await;
        });
    }

    /// Deletes `keys`; on failure they are owed and retried in the background.
    async fn delete(&self, keys: &[String]) {
        if self
            .call("delete", async |c| c.del::<_, ()>(keys).await)
            .await
            .is_ok()
        {
            return;
        }
        self.outage.owe(keys);
        if !self.outage.retrying.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().settle_owed());
        }
    }

    /// Retries the owed deletes every second until none is left.
    async fn settle_owed(self) {
        loop {
            tokio::time::sleep(SKIP_AFTER_FAILURE).await;
            let batch: Vec<String> = {
                let owed = self.outage.owed.lock().expect("owed deletes");
                owed.iter().take(1000).cloned().collect()
            };
            let done = if batch.is_empty() {
                self.outage.paid(&[])
            } else if self
                .call("delete", async |c| c.del::<_, ()>(&batch).await)
                .await
                .is_ok()
            {
                self.outage.paid(&batch)
            } else {
                false
            };
            if done {
                self.outage.retrying.store(false, Ordering::Release);
                // A delete may have been owed between the check and the store.
                if !self.outage.any_owed.load(Ordering::Acquire)
                    || self.outage.retrying.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        }
    }

    /// One round trip, for health checks.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis does not answer.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.call("ping", async |c| {
            deadpool_redis::redis::cmd("PING")
                .query_async::<String>(c)
                .await
        })
        .await
        .map(drop)
    }
}
