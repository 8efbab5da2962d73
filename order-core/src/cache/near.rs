//! The near cache: order-api's in-process copy of the orders it read last,
//! in front of Redis, so that a hot read touches neither Redis nor the
//! database.
//!
//! **Invalidation.** Every invalidation of the Redis cache (one script: the
//! tombstones and a `PUBLISH` on `{redis.key_prefix}invalidations`, so one
//! is never written without the other) names the orders and their new
//! versions. Each replica subscribes and drops its copies older than that;
//! its own changes are applied at once, before the message comes back.
//!
//! **Staleness is bounded, not hoped for.** Each replica publishes a
//! heartbeat every quarter of `max_staleness` on a channel of its own,
//! received on the same connection as the invalidations. Redis delivers one
//! connection's messages in the order it executed them, so once the
//! heartbeat sent at `t` is back, every invalidation executed before `t`
//! has been applied. A copy is served only while the last heartbeat back
//! was sent less than `max_staleness` ago; otherwise (Redis slow or down,
//! the subscription stalled or lost) reads go to Redis
//! (`near_cache_requests_total{result="bypass"}`). When the subscription is
//! lost, and again when it is made, every copy is dropped
//! (`near_cache_dropped_total{reason}`): invalidations may have been missed
//! in between, and no copy read before is served again.
//!
//! **A read that races a change.** A copy is stored only if it was read
//! less than [`FILL_WINDOW`] ago, and after storing it the reader looks at
//! the invalidations received in the last [`FILL_WINDOW`]: one of a later
//! version drops the copy again. The subscriber records an invalidation
//! before it drops copies, so whichever comes second sees the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use moka::sync::Cache;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CachedOrder;
use crate::settings::NearCacheSettings;
use crate::storage::Changed;

/// A copy read longer ago than this is not stored; an invalidation is
/// remembered at least this long.
pub const FILL_WINDOW: Duration = Duration::from_secs(2);

/// Bookkeeping per copy counted against `max_mib`, beside its JSON.
const ENTRY_OVERHEAD: usize = 160;

/// How long to wait before subscribing again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

/// The longest wait for a connection and a subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The channel of a key prefix.
#[must_use]
pub fn channel(prefix: &str) -> String {
    format!("{prefix}invalidations")
}

/// The message of an invalidation: `i <unix ms> <id>:<version> …`.
#[must_use]
pub fn message(changes: &[Changed]) -> String {
    let mut text = format!("i {}", chrono::Utc::now().timestamp_millis());
    for c in changes {
        text.push(' ');
        text.push_str(&c.order_id.to_string());
        text.push(':');
        text.push_str(&c.version.to_string());
    }
    text
}

/// A copy, and when the data in it was read.
#[derive(Debug)]
struct Entry {
    order: CachedOrder,
    read_ns: u64,
}

/// What a lookup in the near cache found.
#[derive(Debug)]
pub enum Lookup {
    /// A copy that may be served.
    Hit(CachedOrder),
    /// No copy: read it elsewhere, and offer what was read.
    Miss,
    /// Copies may not be served now (invalidations may be missing): read
    /// elsewhere, and do not offer it.
    Bypass,
}

/// Invalidations received lately, by order: the highest version each.
#[derive(Debug, Default)]
struct Recent {
    current: HashMap<Uuid, i32>,
    previous: HashMap<Uuid, i32>,
    rotated_ns: u64,
}

impl Recent {
    /// Keeps what was recorded in the last [`FILL_WINDOW`] at least.
    fn rotate(&mut self, now_ns: u64) {
        let window = nanos(FILL_WINDOW);
        let age = now_ns.saturating_sub(self.rotated_ns);
        if age >= 2 * window {
            // New maps, not cleared ones: a burst's capacity is given back.
            self.current = HashMap::new();
            self.previous = HashMap::new();
            self.rotated_ns = now_ns;
        } else if age >= window {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_ns = now_ns;
        }
    }

    fn record(&mut self, now_ns: u64, order_id: Uuid, version: i32) {
        self.rotate(now_ns);
        let v = self.current.entry(order_id).or_insert(version);
        *v = (*v).max(version);
    }

    fn newest(&mut self, now_ns: u64, order_id: Uuid) -> Option<i32> {
        self.rotate(now_ns);
        let a = self.current.get(&order_id).copied();
        let b = self.previous.get(&order_id).copied();
        a.max(b)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The copies of one replica and what it knows of their freshness; cheap
/// to clone. The tasks that keep it fresh stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct NearCache {
    shared: Arc<Shared>,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

struct Shared {
    entries: Cache<Uuid, Arc<Entry>>,
    /// The origin of every `_ns` below.
    clock: Instant,
    /// When the last heartbeat that came back was sent (0: none yet).
    confirmed_ns: AtomicU64,
    /// When the copies were last all dropped: a copy read before is void.
    reset_ns: AtomicU64,
    max_staleness_ns: u64,
    recent: Mutex<Recent>,
    /// This replica's heartbeats carry it.
    instance: u64,
    channel: String,
    /// This replica's own heartbeat channel.
    heartbeat_channel: String,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("channel", &self.shared.channel)
            .field("entries", &self.shared.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl NearCache {
    /// A near cache of `settings`, kept fresh through `client` on the
    /// channel of `prefix`. Starts the subscriber and the heartbeat, each
    /// on a connection of its own, apart from the cache's pool (needs a
    /// Tokio runtime).
    pub(super) fn start(
        settings: &NearCacheSettings,
        client: deadpool_redis::redis::Client,
        prefix: &str,
    ) -> Self {
        let shared = Arc::new(Shared::new(settings, prefix));
        let stop = CancellationToken::new();
        tokio::spawn(subscribe(shared.clone(), client.clone(), stop.clone()));
        tokio::spawn(heartbeat(shared.clone(), client, stop.clone()));
        Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// True while copies may be served: this replica's last heartbeat
    /// back was sent less than `max_staleness` ago.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.shared.fresh()
    }

    /// Looks an order up.
    #[must_use]
    pub fn get(&self, order_id: Uuid) -> Lookup {
        let s = &self.shared;
        if !s.fresh() {
            metrics::counter!("near_cache_requests_total", "result" => "bypass").increment(1);
            return Lookup::Bypass;
        }
        match s.entries.get(&order_id) {
            Some(e) if e.read_ns >= s.reset_ns.load(Ordering::Acquire) => {
                metrics::counter!("near_cache_requests_total", "result" => "hit").increment(1);
                Lookup::Hit(e.order.clone())
            }
            _ => {
                metrics::counter!("near_cache_requests_total", "result" => "miss").increment(1);
                Lookup::Miss
            }
        }
    }

    /// Stores a copy whose read started at `read_at`, unless that is too
    /// long ago or a later version was invalidated meanwhile.
    pub fn offer(&self, order_id: Uuid, order: CachedOrder, read_at: Instant) {
        let s = &self.shared;
        let read_ns = nanos(read_at.saturating_duration_since(s.clock));
        let fresh_enough = |now: u64| now.saturating_sub(read_ns) < nanos(FILL_WINDOW);
        if !fresh_enough(s.now_ns()) {
            return;
        }
        // Under the lock invalidations are applied with: a copy is never
        // visible, even for a moment, once a later version's invalidation
        // has arrived.
        let mut recent = s.recent.lock().expect("recent invalidations");
        let now = s.now_ns();
        let newer = recent
            .newest(now, order_id)
            .is_some_and(|v| v > order.version);
        if !newer && fresh_enough(now) {
            s.entries
                .insert(order_id, Arc::new(Entry { order, read_ns }));
        }
    }

    /// Applies invalidations: this replica's own at once, and those the
    /// subscription brings.
    pub fn invalidated(&self, changes: &[Changed]) {
        self.shared
            .invalidated(changes.iter().map(|c| (c.order_id, c.version)));
    }
}

impl Shared {
    fn new(settings: &NearCacheSettings, prefix: &str) -> Self {
        let max_bytes = settings.max_mib.saturating_mul(1024 * 1024);
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, e: &Arc<Entry>| {
                u32::try_from(e.order.json.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .time_to_live(settings.ttl)
            .build();
        let instance = fastrand::u64(..);
        Self {
            entries,
            clock: Instant::now(),
            confirmed_ns: AtomicU64::new(0),
            reset_ns: AtomicU64::new(0),
            max_staleness_ns: nanos(settings.max_staleness),
            recent: Mutex::default(),
            instance,
            channel: channel(prefix),
            heartbeat_channel: format!("{}.heartbeat.{instance}", channel(prefix)),
        }
    }

    fn now_ns(&self) -> u64 {
        nanos(self.clock.elapsed())
    }

    /// No heartbeat back for this long means the subscription is dead.
    fn silence_limit(&self) -> Duration {
        Duration::from_nanos(self.max_staleness_ns.saturating_mul(8)).max(Duration::from_secs(2))
    }

    fn silent(&self) -> bool {
        let confirmed = self.confirmed_ns.load(Ordering::Acquire);
        let since = if confirmed == 0 {
            self.reset_ns.load(Ordering::Acquire)
        } else {
            confirmed
        };
        self.now_ns().saturating_sub(since) > nanos(self.silence_limit())
    }

    fn fresh(&self) -> bool {
        let confirmed = self.confirmed_ns.load(Ordering::Acquire);
        confirmed != 0 && self.now_ns().saturating_sub(confirmed) <= self.max_staleness_ns
    }

    fn invalidated(&self, changes: impl Iterator<Item = (Uuid, i32)>) {
        let now = self.now_ns();
        let mut recent = self.recent.lock().expect("recent invalidations");
        for (order_id, version) in changes {
            recent.record(now, order_id, version);
            metrics::counter!("near_cache_invalidations_total").increment(1);
            if self
                .entries
                .get(&order_id)
                .is_some_and(|e| e.order.version < version)
            {
                self.entries.invalidate(&order_id);
            }
        }
    }

    /// Drops every copy: none read before now is served again.
    fn reset(&self, reason: &'static str) {
        // Nothing is served until a heartbeat is back on the new subscription.
        self.confirmed_ns.store(0, Ordering::Release);
        self.reset_ns.store(self.now_ns().max(1), Ordering::Release);
        let dropped = self.entries.entry_count();
        self.entries.invalidate_all();
        if dropped > 0 {
            metrics::counter!("near_cache_dropped_total", "reason" => reason).increment(dropped);
        }
    }

    /// Reads one message of the channel.
    fn receive(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut words = text.split(' ');
        match words.next() {
            Some("i") => {
                if let Some(sent_ms) = words.next().and_then(|w| w.parse::<i64>().ok()) {
                    let delay = chrono::Utc::now()
                        .timestamp_millis()
                        .saturating_sub(sent_ms);
                    #[allow(clippy::cast_precision_loss)]
                    metrics::histogram!("near_cache_invalidation_delay_seconds")
                        .record(delay.max(0) as f64 / 1000.0);
                }
                let changes = words.filter_map(|w| {
                    let (id, version) = w.split_once(':')?;
                    Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
                });
                self.invalidated(changes);
            }
            Some("h") => {
                let mine = words.next().and_then(|w| w.parse::<u64>().ok()) == Some(self.instance);
                let sent = words.next().and_then(|w| w.parse::<u64>().ok());
                // One from the future was not sent by this replica.
                if let (true, Some(sent)) = (mine, sent.filter(|t| *t <= self.now_ns())) {
                    self.confirmed_ns.fetch_max(sent, Ordering::AcqRel);
                }
            }
            _ => {}
        }
    }
}

/// Keeps a subscription to the channel, made again when it is lost, until
/// `stop`. Every copy is dropped when it is lost and when it is made.
async fn subscribe(
    shared: Arc<Shared>,
    client: deadpool_redis::redis::Client,
    stop: CancellationToken,
) {
    let mut lost_logged = false;
    loop {
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub
                .subscribe(&[&shared.channel, &shared.heartbeat_channel])
                .await?;
            Ok::<_, deadpool_redis::redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                shared.reset("resubscribed");
                if lost_logged {
                    tracing::info!(channel = %shared.channel, "near cache: subscribed again; copies are served from the next heartbeat back");
                }
                let mut messages = pubsub.into_on_message();
                let mut check = tokio::time::interval(shared.silence_limit());
                check.reset();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(m) => shared.receive(m.get_payload_bytes()),
                            None => break,
                        },
                        // A connection can die without closing (a host or a
                        // NAT gone): no heartbeat back for this long, and it
                        // is made again.
                        _ = check.tick() => if shared.silent() { break },
                    }
                }
                shared.reset("subscription_lost");
                tracing::warn!(channel = %shared.channel, "near cache: the invalidation subscription was lost; reads go to Redis until it is back");
                lost_logged = true;
            }
            Ok(Err(e)) if !lost_logged => {
                tracing::warn!(channel = %shared.channel, error = %e, "near cache: cannot subscribe to invalidations; reads go to Redis");
                lost_logged = true;
            }
            Err(_) if !lost_logged => {
                tracing::warn!(channel = %shared.channel, "near cache: no subscription within {CONNECT_TIMEOUT:?}; reads go to Redis");
                lost_logged = true;
            }
            _ => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
        }
    }
}

/// Publishes this replica's heartbeat every quarter of `max_staleness`,
/// until `stop`, on a connection of its own: a busy pool must not delay it
/// (that would turn the near cache off under load), and its failures are
/// not the cache's.
async fn heartbeat(
    shared: Arc<Shared>,
    client: deadpool_redis::redis::Client,
    stop: CancellationToken,
) {
    let every = Duration::from_nanos(shared.max_staleness_ns / 4).max(Duration::from_millis(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<deadpool_redis::redis::aio::MultiplexedConnection> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(client.get_multiplexed_async_connection().await?),
            };
            let text = format!("h {} {}", shared.instance, shared.now_ns().max(1));
            deadpool_redis::redis::cmd("PUBLISH")
                .arg(&shared.heartbeat_channel)
                .arg(text)
                .query_async::<i64>(c)
                .await
        })
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            // Connected again at the next tick.
            conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A near cache with no task keeping it fresh: the tests play the
    /// subscription.
    fn detached() -> NearCache {
        NearCache {
            shared: Arc::new(Shared::new(&NearCacheSettings::default(), "t:")),
            _stop: Arc::new(CancellationToken::new().drop_guard()),
        }
    }

    /// What the subscription does when this replica's heartbeat is back.
    fn heartbeat_back(near: &NearCache) {
        let s = &near.shared;
        s.receive(format!("h {} {}", s.instance, s.now_ns().max(1)).as_bytes());
    }

    fn copy(version: i32) -> CachedOrder {
        CachedOrder {
            json: format!("{{\"version\":{version}}}"),
            user_id: 7,
            version,
        }
    }

    fn hit_version(near: &NearCache, id: Uuid) -> Option<i32> {
        match near.get(id) {
            Lookup::Hit(hit) => Some(hit.version),
            _ => None,
        }
    }

    #[test]
    fn nothing_is_served_before_the_first_heartbeat_is_back() {
        let near = detached();
        let id = Uuid::now_v7();
        near.offer(id, copy(0), Instant::now());
        assert!(matches!(near.get(id), Lookup::Bypass));
        heartbeat_back(&near);
        assert_eq!(hit_version(&near, id), Some(0));
        // Another replica's heartbeat says nothing about this one.
        let other = format!("h {} {}", near.shared.instance ^ 1, u64::MAX);
        near.shared.confirmed_ns.store(0, Ordering::Release);
        near.shared.receive(other.as_bytes());
        assert!(matches!(near.get(id), Lookup::Bypass));
    }

    #[test]
    fn a_heartbeat_from_the_future_or_from_before_a_reset_serves_nothing() {
        let near = detached();
        let s = &near.shared;
        s.receive(format!("h {} {}", s.instance, u64::MAX).as_bytes());
        assert!(!near.is_serving(), "no replica sent that");
        heartbeat_back(&near);
        assert!(near.is_serving());
        s.reset("resubscribed");
        assert!(
            !near.is_serving(),
            "a new subscription waits for a heartbeat of its own"
        );
    }

    #[test]
    fn an_invalidation_drops_older_copies_only_and_applies_at_once() {
        let near = detached();
        heartbeat_back(&near);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        near.offer(a, copy(1), Instant::now());
        near.offer(b, copy(4), Instant::now());
        near.invalidated(&[
            Changed {
                order_id: a,
                version: 2,
            },
            Changed {
                order_id: b,
                version: 4,
            },
        ]);
        assert!(matches!(near.get(a), Lookup::Miss));
        assert_eq!(
            hit_version(&near, b),
            Some(4),
            "version 4 is the change's own"
        );
    }

    #[test]
    fn a_message_from_the_channel_drops_the_copies_it_names() {
        let near = detached();
        heartbeat_back(&near);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        near.offer(a, copy(0), Instant::now());
        near.offer(b, copy(0), Instant::now());
        let text = message(&[Changed {
            order_id: a,
            version: 1,
        }]);
        near.shared.receive(text.as_bytes());
        assert!(matches!(near.get(a), Lookup::Miss));
        assert_eq!(hit_version(&near, b), Some(0));
        // Garbage is ignored.
        for junk in ["", "i", "i x y:z", "h", "\u{0}", "i 1 not-a-uuid:1"] {
            near.shared.receive(junk.as_bytes());
        }
        near.shared.receive(&[0xff, 0xfe]);
        assert_eq!(hit_version(&near, b), Some(0));
    }

    #[test]
    fn a_reset_voids_every_copy_read_before_it() {
        let near = detached();
        heartbeat_back(&near);
        let id = Uuid::now_v7();
        let read_before = Instant::now();
        near.offer(id, copy(0), read_before);
        near.shared.reset("resubscribed");
        heartbeat_back(&near);
        assert!(matches!(near.get(id), Lookup::Miss));
        // Even one stored after the reset, if it was read before.
        near.offer(id, copy(0), read_before);
        assert!(matches!(near.get(id), Lookup::Miss));
        near.offer(id, copy(0), Instant::now());
        assert_eq!(hit_version(&near, id), Some(0));
    }

    #[test]
    fn an_invalidation_is_remembered_for_the_fill_window_at_least() {
        let mut recent = Recent::default();
        let id = Uuid::now_v7();
        let w = nanos(FILL_WINDOW);
        // Recorded at every phase of the rotation, it is found a whole
        // window later, and gone after two.
        for start in [0, w / 3, w - 1, w, 5 * w + 7] {
            let mut r = Recent {
                rotated_ns: start.saturating_sub(w / 2),
                ..Recent::default()
            };
            r.record(start, id, 3);
            for later in [start, start + w / 2, start + w - 1] {
                assert_eq!(r.newest(later, id), Some(3), "start {start}, at {later}");
            }
            assert_eq!(r.newest(start + 3 * w, id), None);
        }
        recent.record(10, id, 2);
        recent.record(11, id, 5);
        recent.record(12, id, 4);
        assert_eq!(recent.newest(13, id), Some(5));
        assert_eq!(recent.newest(13, Uuid::now_v7()), None);
    }

    #[test]
    fn messages_name_each_order_and_version() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let text = message(&[
            Changed {
                order_id: a,
                version: 2,
            },
            Changed {
                order_id: b,
                version: 7,
            },
        ]);
        let words: Vec<&str> = text.split(' ').collect();
        assert_eq!(words[0], "i");
        assert!(words[1].parse::<i64>().is_ok());
        assert_eq!(words[2..], [format!("{a}:2"), format!("{b}:7")]);
    }
}
