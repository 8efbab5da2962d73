//! The Redis read-through cache of single orders.
//!
//! One key per order, `{redis.key_prefix}{order_id}`, holding one of:
//! - `v<version>:<user_id>:<json>`: the order at that version, its JSON as
//!   the API answers it (TTL `redis.ttl_secs`);
//! - `!<version>`: a *tombstone*, written after every committed change: the
//!   order changed, and its version is now at least this;
//! - `-`: a short negative entry ("no such order").
//!
//! A hit is one `GET`, and the JSON is the response body as is. A fill is a
//! script that stores the copy only if what the key holds is not newer (a
//! tombstone or copy of a higher version wins), so a reader that fetched the
//! row before a change cannot store it after the change's invalidation,
//! however slow it was. Tombstones live [`TOMBSTONE_TTL`], and a fill that
//! comes later than [`MAX_FILL_AGE`] after its database read is dropped, so
//! a tombstone always outlives the readers it guards against. Redis is an
//! optimisation only: an error is counted (`cache_errors_total`) and the
//! caller goes to the database.
//!
//! In order-api a [`NearCache`] sits in front of Redis (see [`near`]): the
//! same script that writes the tombstones publishes them, so every
//! replica's in-process copies are invalidated too.
//!
//! During an outage the cache does not make things worse: the first error
//! is logged (and the recovery), not every one; for [`SKIP_AFTER_FAILURE`]
//! after an error, reads and fills skip Redis at once (`cache_skipped_total`)
//! instead of each waiting for a connection. Invalidations are always
//! attempted. One that fails is *owed*: this process neither reads nor fills
//! that key until a retry (every second, in the background) has written the
//! tombstone, so it never serves an entry it knows to be stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{AsyncCommands, Script};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use uuid::Uuid;

use crate::domain::Order;
use crate::settings::RedisSettings;
use crate::storage::Changed;

pub mod near;
pub use near::NearCache;

/// How long one Redis call may take before the cache is skipped.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long reads and fills skip Redis after a call failed.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The most owed invalidations remembered; beyond it a failed one leaves
/// the entry to its TTL (logged).
const MAX_OWED: usize = 100_000;

/// How long a tombstone lives: far longer than any fill may take.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(120);

/// A copy read from the database longer ago than this is not stored.
pub const MAX_FILL_AGE: Duration = Duration::from_secs(30);

/// Stores `ARGV[1]` (TTL `ARGV[3]` s) unless the key holds a copy or a
/// tombstone of a version above `ARGV[2]`. 1 when stored.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^[v!](%-?%d+)'))
  if v and v > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1",
    )
});

/// For each key, a tombstone of version `ARGV[i]` (TTL `ARGV[n + 1]`),
/// unless the key already holds that version or a later one; then
/// publishes `ARGV[n + 3]` on the channel `ARGV[n + 2]` (the near caches'
/// invalidation, [`near::message`]).
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = #KEYS
local ttl = ARGV[n + 1]
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  local v = cur and tonumber(string.match(cur, '^[v!](%-?%d+)'))
  if not (v and v >= tonumber(ARGV[i])) then
    redis.call('SET', key, '!' .. ARGV[i], 'EX', ttl)
  end
end
redis.call('PUBLISH', ARGV[n + 2], ARGV[n + 3])
return n",
    )
});

/// TTL of a "this order does not exist" entry.
pub const NEGATIVE_TTL_SECS: u64 = 5;

/// The marker of a negative entry.
const MISSING: &str = "-";

/// A cached copy of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedOrder {
    /// The order's JSON, as the API answers it.
    pub json: String,
    /// Its buyer (for the access check, without parsing the JSON).
    pub user_id: i64,
    /// Its version.
    pub version: i32,
}

impl CachedOrder {
    /// Reads a stored value: `v<version>:<user_id>:<json>`; a tombstone or
    /// anything else is `None`.
    fn parse(text: String) -> Option<Self> {
        let rest = text.strip_prefix('v')?;
        let (version, rest) = rest.split_once(':')?;
        let (user_id, json) = rest.split_once(':')?;
        let (version, user_id) = (version.parse().ok()?, user_id.parse().ok()?);
        let skip = text.len() - json.len();
        let mut json = text;
        json.drain(..skip);
        Some(Self {
            json,
            user_id,
            version,
        })
    }

    fn stored(order: &Order, json: &str) -> String {
        format!("v{}:{}:{json}", order.version, order.user_id)
    }
}

/// What a lookup of the stored text found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedJson {
    /// The order's JSON, as the API answers it.
    Hit(CachedOrder),
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
    near: Option<NearCache>,
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
    /// Orders whose invalidation failed and is still to be done, with the
    /// version of their tombstone.
    owed: Mutex<HashMap<Uuid, i32>>,
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

    fn is_owed(&self, order_id: Uuid) -> bool {
        self.any_owed.load(Ordering::Acquire)
            && self
                .owed
                .lock()
                .expect("owed deletes")
                .contains_key(&order_id)
    }

    /// Remembers tombstones that could not be written (up to [`MAX_OWED`]).
    fn owe(&self, tombstones: &[Changed]) {
        let mut owed = self.owed.lock().expect("owed deletes");
        let mut dropped = 0;
        for c in tombstones {
            if owed.len() >= MAX_OWED && !owed.contains_key(&c.order_id) {
                dropped += 1;
                continue;
            }
            let v = owed.entry(c.order_id).or_insert(c.version);
            *v = (*v).max(c.version);
        }
        if dropped > 0 {
            tracing::error!(
                dropped,
                "too many cache invalidations owed: these entries stay until their TTL"
            );
        }
        self.any_owed.store(!owed.is_empty(), Ordering::Release);
    }

    /// Forgets tombstones that were written; true when none is left.
    fn paid(&self, tombstones: &[Changed]) -> bool {
        let mut owed = self.owed.lock().expect("owed deletes");
        for c in tombstones {
            // A later change owed meanwhile stays owed.
            if owed.get(&c.order_id).is_some_and(|v| *v <= c.version) {
                owed.remove(&c.order_id);
            }
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

/// Where and how to connect, from the settings as they are: no URL is built,
/// so a password (or host) holding `@`, `:`, `/`, `#`, `%` or a space reaches
/// Redis unchanged.
fn connection_info(settings: &RedisSettings) -> deadpool_redis::ConnectionInfo {
    deadpool_redis::ConnectionInfo {
        addr: deadpool_redis::ConnectionAddr::Tcp(settings.host.clone(), settings.port),
        redis: deadpool_redis::RedisConnectionInfo {
            db: i64::from(settings.db),
            username: None,
            password: (!settings.password.is_empty())
                .then(|| settings.password.expose().to_owned()),
            protocol: deadpool_redis::ProtocolVersion::RESP2,
        },
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
                near: None,
            });
        }
        let mut config = Config::from_connection_info(connection_info(settings));
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
            near: None,
        })
    }

    /// Puts a [`NearCache`] in front of Redis when `redis.near_cache` is
    /// enabled (and Redis is), and starts keeping it fresh: order-api's
    /// reads. Needs a Tokio runtime.
    ///
    /// # Errors
    /// [`CacheError::Config`] when the settings cannot make a client.
    pub fn with_near_cache(mut self, settings: &RedisSettings) -> Result<Self, CacheError> {
        if !settings.near_cache.enabled || !self.is_enabled() {
            return Ok(self);
        }
        let client = deadpool_redis::redis::Client::open(connection_info(settings))
            .map_err(|e| CacheError::Config(e.to_string()))?;
        self.near = Some(NearCache::start(&settings.near_cache, client, &self.prefix));
        Ok(self)
    }

    /// The near cache, when there is one.
    #[must_use]
    pub fn near(&self) -> Option<&NearCache> {
        self.near.as_ref()
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

    /// Looks an order's JSON up: in the near cache, else one `GET`.
    pub async fn get_json(&self, order_id: Uuid) -> CachedJson {
        if !self.is_enabled() {
            return CachedJson::Unknown;
        }
        if self.outage.is_owed(order_id) {
            metrics::counter!("cache_requests_total", "result" => "miss").increment(1);
            return CachedJson::Unknown;
        }
        let near = match &self.near {
            Some(near) => match near.get(order_id) {
                near::Lookup::Hit(hit) => return CachedJson::Hit(hit),
                near::Lookup::Miss => Some(near),
                near::Lookup::Bypass => None,
            },
            None => None,
        };
        let key = self.key(order_id);
        let read_at = Instant::now();
        let found = self
            .call("get", async |c| c.get::<_, Option<String>>(&key).await)
            .await;
        let cached = match found {
            Ok(Some(text)) if text == MISSING => CachedJson::Missing,
            Ok(Some(text)) => CachedOrder::parse(text).map_or(CachedJson::Unknown, CachedJson::Hit),
            Ok(None) | Err(_) => CachedJson::Unknown,
        };
        if let (Some(near), CachedJson::Hit(hit)) = (near, &cached) {
            near.offer(order_id, hit.clone(), read_at);
        }
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
            CachedJson::Hit(hit) => match serde_json::from_str::<Order>(&hit.json) {
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

    /// Stores a copy of `order` read from the database at `read_at`, its
    /// JSON being `json`, for `redis.ttl_secs`, unless the key holds a newer
    /// copy or a tombstone of a later change, or the read is older than
    /// [`MAX_FILL_AGE`]. True when stored.
    pub async fn fill(&self, order: &Order, json: &str, read_at: Instant) -> bool {
        let key = self.key(order.order_id);
        if self.outage.is_owed(order.order_id) || read_at.elapsed() > MAX_FILL_AGE {
            return false;
        }
        let (value, version, ttl) = (
            CachedOrder::stored(order, json),
            order.version,
            self.ttl_secs,
        );
        let stored = self
            .call("put", async |c| {
                FILL.key(&key)
                    .arg(&value)
                    .arg(version)
                    .arg(ttl)
                    .invoke_async::<i64>(c)
                    .await
            })
            .await;
        if matches!(stored, Ok(0)) {
            metrics::counter!("cache_fills_refused_total").increment(1);
        }
        if let (Some(near), Ok(1)) = (&self.near, &stored) {
            let copy = CachedOrder {
                json: json.to_owned(),
                user_id: order.user_id,
                version: order.version,
            };
            near.offer(order.order_id, copy, read_at);
        }
        matches!(stored, Ok(1))
    }

    /// Stores a copy of `order` just read from the database (see [`OrderCache::fill`]).
    pub async fn put(&self, order: &Order) -> bool {
        match serde_json::to_string(order) {
            Ok(json) => self.fill(order, &json, Instant::now()).await,
            Err(_) => false,
        }
    }

    /// Remembers for a few seconds that an order does not exist, unless the
    /// key was filled meanwhile (`SET NX`).
    pub async fn put_missing(&self, order_id: Uuid) {
        if self.outage.is_owed(order_id) {
            return;
        }
        let key = self.key(order_id);
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

    /// After committed changes: replaces each order's entry by a tombstone
    /// of its new version, so no copy older than that can be stored for
    /// [`TOMBSTONE_TTL`]. When Redis does not answer, the tombstones are
    /// owed and written by a background retry.
    pub async fn invalidate(&self, changes: &[Changed]) {
        if changes.is_empty() || !self.is_enabled() {
            return;
        }
        if let Some(near) = &self.near {
            near.invalidated(changes);
        }
        for part in changes.chunks(1000) {
            if self.write_tombstones(part).await.is_err() {
                self.outage.owe(part);
                if !self.outage.retrying.swap(true, Ordering::AcqRel) {
                    tokio::spawn(self.clone().settle_owed());
                }
            }
        }
    }

    async fn write_tombstones(&self, tombstones: &[Changed]) -> Result<(), CacheError> {
        let ttl = TOMBSTONE_TTL.as_secs();
        let (channel, message) = (near::channel(&self.prefix), near::message(tombstones));
        self.call("invalidate", async |c| {
            let mut invocation = INVALIDATE.prepare_invoke();
            for t in tombstones {
                invocation.key(self.key(t.order_id));
            }
            for t in tombstones {
                invocation.arg(t.version);
            }
            invocation
                .arg(ttl)
                .arg(&channel)
                .arg(&message)
                .invoke_async::<i64>(c)
                .await
        })
        .await
        .map(drop)
    }

    /// Retries the owed tombstones every second until none is left.
    async fn settle_owed(self) {
        loop {
            tokio::time::sleep(SKIP_AFTER_FAILURE).await;
            let batch: Vec<Changed> = {
                let owed = self.outage.owed.lock().expect("owed deletes");
                owed.iter()
                    .take(1000)
                    .map(|(order_id, version)| Changed {
                        order_id: *order_id,
                        version: *version,
                    })
                    .collect()
            };
            let done = if batch.is_empty() {
                self.outage.paid(&[])
            } else if self.write_tombstones(&batch).await.is_ok() {
                self.outage.paid(&batch)
            } else {
                false
            };
            if done {
                self.outage.retrying.store(false, Ordering::Release);
                // An invalidation may have been owed between the check and the store.
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

#[cfg(test)]
mod password_tests;
