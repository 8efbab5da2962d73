//! The outbox's part of the contract: writing events with the change that
//! causes them, claiming them for a relay, marking them published or
//! failed, listing and purging them.
//!
//! # Per-order order
//!
//! An event is claimable only when no earlier event of its order is still
//! unpublished ([`CLAIMABLE`]): a later event waits until the earlier one is
//! confirmed, and one order's stuck event holds back that order alone.
//!
//! # Claims
//!
//! A claim is a transaction holding the claimed rows' locks
//! (`SELECT … FOR UPDATE SKIP LOCKED`) while the relay publishes them: no
//! other relay takes them meanwhile, and the claim writes nothing of its
//! own (one row write per event saved, against a lease). It ends with the
//! marks of what the broker said, in the same transaction
//! ([`EventClaim::finish`]). A relay that dies mid-publish drops its
//! connection, the database rolls the claim back, and the events are sent
//! again (at least once; consumers dedupe by `id`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::engine::Engine;
use super::{Storage, StorageError, dispatch, now, on_pool};
use crate::domain::{EventType, OrderEvent, OrderFacts, OrderStatus};

/// The columns an event is written with (see [`write_events!`]).
pub(crate) const EVENT_INSERT: &str = "INSERT INTO order_events (event_id, order_id, event_type, previous_status, status, version, reason, traceparent, created_at, next_attempt_at) ";

/// The columns of [`EventRow`], in order.
pub(crate) const EVENT_COLUMNS: &str = "seq, event_id, order_id, event_type, previous_status, status, version, reason, traceparent, created_at, published_at, attempts, next_attempt_at, last_error";

/// Which unpublished events (`e`) a relay may claim at `?` (now): due, and
/// the oldest unpublished event of their order. (Rows another relay holds
/// are skipped by the claim's `SKIP LOCKED`.)
///
/// An `order.created` event is always its order's first, so only the
/// others look for an earlier one. The look is a scalar subquery (the
/// order's oldest unpublished event, by `order_events_order_idx`), run for
/// each candidate row only: the claim costs what it returns, whatever the
/// planner believes of a queue table's ever-changing size. (A `NOT EXISTS`
/// anti-join, planned while the table was small, rescanned every
/// unpublished event for each candidate: a relay under a burst spent more
/// of the database than the burst's own writes.)
pub(crate) const CLAIMABLE: &str = "e.published_at IS NULL AND e.next_attempt_at <= ? \
     AND (e.event_type = 'order.created' \
          OR e.seq = (SELECT p.seq FROM order_events p \
                      WHERE p.order_id = e.order_id AND p.published_at IS NULL \
                      ORDER BY p.seq LIMIT 1))";

/// Writes `$events` (`&[OrderEvent]`) on `$conn` (a connection or
/// transaction of either engine) with multi-row statements under both
/// engines' placeholder limit and `$max_bytes` each; evaluates to
/// `Result<(), sqlx::Error>`.
macro_rules! write_events {
    ($conn:expr, $events:expr, $max_bytes:expr) => {
        async {
            for part in $crate::storage::batch::chunks(
                $events,
                $crate::storage::batch::mysql_rows(10, 0),
                $max_bytes,
                |e: &$crate::domain::OrderEvent| e.reason.as_ref().map_or(0, String::len) + 200,
            ) {
                let mut qb = sqlx::QueryBuilder::new($crate::storage::events::EVENT_INSERT);
                qb.push_values(part, |mut row, e| {
                    row.push_bind(e.id)
                        .push_bind(e.order_id)
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.previous_status.map(|s| s.as_str()))
                        .push_bind(e.status.as_str())
                        .push_bind(e.version)
                        .push_bind(e.reason.as_deref())
                        .push_bind(e.traceparent.as_deref())
                        .push_bind(e.time)
                        .push_bind(e.time);
                });
                qb.build().execute(&mut *$conn).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}
pub(crate) use write_events;

/// Writes `events` on a PostgreSQL connection (a transaction) with one
/// statement of arrays (`UNNEST`): its text is the same whatever the number
/// of rows, so it is parsed and planned once per connection, where
/// [`write_events!`]'s multi-row `VALUES` (ten placeholders a row) is a new
/// text, parsed and planned anew, for every batch size.
pub(crate) async fn write_events_pg(
    conn: &mut sqlx::PgConnection,
    events: &[crate::domain::OrderEvent],
) -> Result<(), sqlx::Error> {
    for part in super::batch::chunks(
        events,
        super::MAX_BATCH_ROWS,
        super::batch::DEFAULT_STATEMENT_BYTES,
        |e| e.reason.as_ref().map_or(0, String::len) + 200,
    ) {
        sqlx::query(
            "INSERT INTO order_events (event_id, order_id, event_type, previous_status, status, version, reason, traceparent, created_at, next_attempt_at) \
             SELECT i, o, ty, ps, s, v, r, tp, c, c \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::text[], $8::text[], $9::timestamptz[]) \
             AS t(i, o, ty, ps, s, v, r, tp, c)",
        )
        .bind(part.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.order_id).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.previous_status.map(|s| s.as_str())).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.version).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.reason.as_deref()).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.traceparent.as_deref()).collect::<Vec<_>>())
        .bind(part.iter().map(|e| e.time).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Counts events written by a committed transaction
/// (`order_events_written_total{type}`).
pub(crate) fn count_written(events: &[crate::domain::OrderEvent]) {
    for kind in EventType::ALL {
        let n = events.iter().filter(|e| e.event_type == kind).count() as u64;
        if n > 0 {
            metrics::counter!("order_events_written_total", "type" => kind.as_str()).increment(n);
        }
    }
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Not published yet, and no attempt has failed.
    Pending,
    /// Not published yet: at least one attempt failed; tried again later.
    Failing,
    /// A broker confirmed it.
    Published,
}

impl EventStatus {
    /// The name used in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failing => "failing",
            Self::Published => "published",
        }
    }

    /// The condition on `order_events` that selects this status.
    fn condition(self) -> &'static str {
        match self {
            Self::Pending => "published_at IS NULL AND attempts = 0",
            Self::Failing => "published_at IS NULL AND attempts > 0",
            Self::Published => "published_at IS NOT NULL",
        }
    }
}

impl std::str::FromStr for EventStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "failing" => Ok(Self::Failing),
            "published" => Ok(Self::Published),
            other => Err(format!(
                "unknown event status {other:?} (expected pending, failing or published)"
            )),
        }
    }
}

/// An event as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredEvent {
    /// Write order.
    pub seq: i64,
    /// The CloudEvents id.
    pub id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// Where it is.
    pub status: EventStatus,
    /// The CloudEvent, structured JSON, as sent (rendered from the row and
    /// the order's fixed fields; `null` when the order is not there).
    #[serde(skip)]
    pub body: String,
    /// The trace of the change.
    pub traceparent: Option<String>,
    /// When the change was written.
    pub created_at: DateTime<Utc>,
    /// When a broker confirmed it.
    pub published_at: Option<DateTime<Utc>>,
    /// Failed publishing attempts.
    pub attempts: i32,
    /// When it is tried next (unpublished events).
    pub next_attempt_at: DateTime<Utc>,
    /// The last publishing error.
    pub last_error: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    event_id: Uuid,
    order_id: Uuid,
    event_type: String,
    previous_status: Option<String>,
    status: String,
    version: i32,
    reason: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    published_at: Option<DateTime<Utc>>,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
}

/// The columns of [`OrderFacts`] in `orders`, keyed by `order_id`.
type FactsRow = (Uuid, i64, i64, i32, Decimal, Decimal, String);

impl EventRow {
    /// The event, its CloudEvent rendered with `facts` (its order's fixed
    /// fields; `None` when the order is not there: the body is `null`).
    fn into_event(self, facts: Option<&OrderFacts>) -> Result<StoredEvent, StorageError> {
        let corrupt = |e: String| StorageError::Corrupt(e);
        let status = match (self.published_at, self.attempts) {
            (Some(_), _) => EventStatus::Published,
            (None, 0) => EventStatus::Pending,
            (None, _) => EventStatus::Failing,
        };
        let event = OrderEvent {
            id: self.event_id,
            order_id: self.order_id,
            event_type: self
                .event_type
                .parse()
                .map_err(|e: crate::domain::UnknownEventType| corrupt(e.to_string()))?,
            time: self.created_at,
            traceparent: self.traceparent,
            previous_status: self
                .previous_status
                .map(|s| s.parse::<OrderStatus>())
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            status: self
                .status
                .parse()
                .map_err(|e: crate::domain::UnknownStatus| corrupt(e.to_string()))?,
            version: self.version,
            reason: self.reason,
        };
        Ok(StoredEvent {
            seq: self.seq,
            body: facts.map_or_else(|| "null".to_owned(), |f| event.render(f)),
            id: event.id,
            order_id: event.order_id,
            event_type: event.event_type,
            status,
            traceparent: event.traceparent,
            created_at: self.created_at,
            published_at: self.published_at,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
        })
    }
}

/// A connection of either engine: a claim's own (its transaction) or one
/// taken from the pool.
enum Conn<'c> {
    Postgres(&'c mut sqlx::PgConnection),
    Mysql(&'c mut sqlx::MySqlConnection),
}

impl Conn<'_> {
    /// The fixed fields of the orders of `rows`.
    async fn order_facts(
        &mut self,
        rows: &[EventRow],
    ) -> Result<HashMap<Uuid, OrderFacts>, StorageError> {
        let ids: Vec<Uuid> = rows
            .iter()
            .map(|r| r.order_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut facts = HashMap::with_capacity(ids.len());
        let columns = "user_id, product_id, quantity, unit_price, total_amount, seckill_id";
        for part in ids.chunks(1000) {
            // One index probe per order whatever the planner believes of the
            // table's size (an IN list over a table it takes for small is
            // planned as a scan of all of it): a lateral lookup on
            // PostgreSQL; MySQL reads an IN list on a unique key as lookups.
            let found = match self {
                Self::Postgres(c) => {
                    let select = format!(
                        "SELECT u.order_id, o.{} FROM UNNEST($1::uuid[]) AS u(order_id) \
                         CROSS JOIN LATERAL (SELECT {columns} FROM orders \
                         WHERE orders.order_id = u.order_id LIMIT 1) o",
                        columns.replace(", ", ", o.")
                    );
                    sqlx::query_as::<_, FactsRow>(&select)
                        .bind(part)
                        .persistent(false)
                        .fetch_all(&mut **c)
                        .await?
                }
                Self::Mysql(c) => {
                    let select = format!(
                        "SELECT order_id, {columns} FROM orders WHERE order_id IN ({})",
                        vec!["?"; part.len()].join(", ")
                    );
                    let mut query = sqlx::query_as::<_, FactsRow>(&select);
                    for id in part {
                        query = query.bind(*id);
                    }
                    query.persistent(false).fetch_all(&mut **c).await?
                }
            };
            for (order_id, user_id, product_id, quantity, unit_price, total_amount, seckill_id) in
                found
            {
                facts.insert(
                    order_id,
                    OrderFacts {
                        user_id,
                        product_id,
                        quantity,
                        unit_price,
                        total_amount,
                        seckill_id,
                    },
                );
            }
        }
        Ok(facts)
    }

    /// `rows` as events, their CloudEvents rendered; with whether each
    /// found its order.
    async fn render(
        &mut self,
        rows: Vec<EventRow>,
    ) -> Result<Vec<(StoredEvent, bool)>, StorageError> {
        let facts = self.order_facts(&rows).await?;
        rows.into_iter()
            .map(|row| {
                let found = facts.get(&row.order_id);
                Ok((row.into_event(found)?, found.is_some()))
            })
            .collect()
    }
}

/// What the outbox holds back: unpublished events and the oldest one's age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Unpublished events.
    pub unpublished: i64,
    /// When the oldest unpublished event was written.
    pub oldest: Option<DateTime<Utc>>,
}

/// Which events to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events in this status.
    pub status: Option<EventStatus>,
    /// Only this order's events.
    pub order_id: Option<Uuid>,
    /// Only events written after this one (`seq`), for paging.
    pub after: Option<i64>,
}

/// A relay's claim on events: the transaction that holds their locks.
/// Dropping it without [`EventClaim::finish`] rolls it back: the events are
/// free to be claimed again, unchanged.
#[derive(Debug)]
pub struct EventClaim {
    tx: ClaimTx,
    events: Vec<StoredEvent>,
    orphans: Vec<StoredEvent>,
}

#[derive(Debug)]
enum ClaimTx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Mysql(sqlx::Transaction<'static, sqlx::MySql>),
}

/// Runs `$body` on a claim's transaction `$tx` (owned, mutable), with `$sql`
/// as in [`on_pool!`](super::on_pool): the claim's counterpart of it.
macro_rules! on_claim {
    ($claim:expr, |$tx:ident, $sql:ident| $body:expr) => {
        match $claim {
            ClaimTx::Postgres(mut $tx) => {
                let $sql = super::numbered;
                $body
            }
            ClaimTx::Mysql(mut $tx) => {
                let $sql = super::as_is;
                $body
            }
        }
    };
}

/// What the broker said of a claim's events, to be written with
/// [`EventClaim::finish`]. Events in neither list were not sent: they are
/// left as they were.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    /// Confirmed: marked published.
    pub published: Vec<i64>,
    /// Refused: `(seq, the broker's reason, when to try again)`; one more
    /// attempt each.
    pub refused: Vec<(i64, String, DateTime<Utc>)>,
}

impl EventClaim {
    /// The claimed events, oldest first, at most one per order.
    #[must_use]
    pub fn events(&self) -> &[StoredEvent] {
        &self.events
    }

    /// Claimed events whose order is not in `orders` (deleted by hand): they
    /// cannot be rendered, so they are not to be sent; mark them refused.
    #[must_use]
    pub fn orphans(&self) -> &[StoredEvent] {
        &self.orphans
    }

    /// Writes `outcome` and commits, releasing every claimed event. Returns
    /// how many were marked published.
    ///
    /// # Errors
    /// When the database is unreachable (nothing is marked; the events are
    /// sent again by the next claim).
    pub async fn finish(self, outcome: &ClaimOutcome) -> Result<u64, StorageError> {
        let at = now();
        let mut published = 0;
        // The range bounds the statement to an index range scan: an IN list
        // alone, over a table the planner takes for small, is planned as a
        // scan of all of it.
        let published_update = |n: usize| {
            format!(
                "UPDATE order_events SET published_at = ? WHERE seq BETWEEN ? AND ? AND seq IN ({})",
                vec!["?"; n].join(", ")
            )
        };
        let refused_update = "UPDATE order_events SET attempts = attempts + 1, last_error = ?, \
                              next_attempt_at = ? WHERE seq = ?";
        on_claim!(self.tx, |tx, sql| {
            for part in outcome.published.chunks(1000) {
                let text = sql(&published_update(part.len())).into_owned();
                let (low, high) = part.iter().fold((i64::MAX, i64::MIN), |(l, h), seq| {
                    (l.min(*seq), h.max(*seq))
                });
                let mut query = sqlx::query(&text).bind(at).bind(low).bind(high);
                for seq in part {
                    query = query.bind(*seq);
                }
                published += query
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            let text = sql(refused_update).into_owned();
            for (seq, reason, retry_at) in &outcome.refused {
                sqlx::query(&text)
                    .bind(crate::domain::printable_error(reason))
                    .bind(*retry_at)
                    .bind(*seq)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(published)
    }
}

impl Storage {
    /// Claims up to `limit` events ready to publish (see [`CLAIMABLE`]),
    /// oldest first, at most one per order, skipping rows another relay
    /// holds. The claim holds them until it is finished or dropped.
    ///
    /// The claim's statements (this one, the orders' fixed fields, the
    /// marks) are planned at each claim, not prepared once: a plan cached
    /// while the outbox and the orders were nearly empty (a scan instead of
    /// an index) would otherwise outlive the burst that fills them.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn claim_events(&self, limit: u32) -> Result<EventClaim, StorageError> {
        let select = format!(
            "SELECT {EVENT_COLUMNS} FROM order_events e WHERE {CLAIMABLE} \
             ORDER BY e.seq LIMIT ? FOR UPDATE SKIP LOCKED"
        );
        let at = now();
        // The orders' fields are read on the claim's own connection: a
        // claim never waits for a second one while it holds its rows.
        let (tx, rendered) = match self {
            Self::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let rows = sqlx::query_as::<_, EventRow>(&super::numbered(&select))
                    .bind(at)
                    .bind(i64::from(limit))
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?;
                let rendered = Conn::Postgres(&mut tx).render(rows).await?;
                (ClaimTx::Postgres(tx), rendered)
            }
            Self::Mysql(s) => {
                let mut tx = s.pool().begin().await?;
                let rows = sqlx::query_as::<_, EventRow>(&select)
                    .bind(at)
                    .bind(i64::from(limit))
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?;
                let rendered = Conn::Mysql(&mut tx).render(rows).await?;
                (ClaimTx::Mysql(tx), rendered)
            }
        };
        let (mut events, mut orphans) = (Vec::with_capacity(rendered.len()), Vec::new());
        for (event, found) in rendered {
            if found {
                events.push(event);
            } else {
                orphans.push(event);
            }
        }
        Ok(EventClaim {
            tx,
            events,
            orphans,
        })
    }

    /// Events in write order, `limit` of them, as `filter` selects.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn list_events(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let mut select = format!("SELECT {EVENT_COLUMNS} FROM order_events WHERE seq > ?");
        if let Some(status) = filter.status {
            select.push_str(" AND ");
            select.push_str(status.condition());
        }
        if filter.order_id.is_some() {
            select.push_str(" AND order_id = ?");
        }
        select.push_str(" ORDER BY seq LIMIT ?");
        let rows = on_pool!(self, |pool, sql| {
            let text = sql(&select);
            let mut query = sqlx::query_as::<_, EventRow>(&text).bind(filter.after.unwrap_or(0));
            if let Some(order_id) = filter.order_id {
                query = query.bind(order_id);
            }
            query.bind(i64::from(limit)).fetch_all(pool).await?
        });
        let rendered = match self {
            Self::Postgres(s) => {
                let mut c = s.pool().acquire().await?;
                Conn::Postgres(&mut c).render(rows).await?
            }
            Self::Mysql(s) => {
                let mut c = s.pool().acquire().await?;
                Conn::Mysql(&mut c).render(rows).await?
            }
        };
        Ok(rendered.into_iter().map(|(event, _)| event).collect())
    }

    /// How many events are unpublished, and since when.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn event_backlog(&self) -> Result<Backlog, StorageError> {
        let select =
            "SELECT COUNT(*), MIN(created_at) FROM order_events WHERE published_at IS NULL";
        let (unpublished, oldest) = on_pool!(self, |pool, sql| {
            sqlx::query_as::<_, (i64, Option<DateTime<Utc>>)>(&sql(select))
                .fetch_one(pool)
                .await?
        });
        Ok(Backlog {
            unpublished,
            oldest,
        })
    }

    /// Deletes up to `limit` events published before `cutoff`.
    ///
    /// # Errors
    /// When the database is unreachable.
    pub async fn purge_published_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError> {
        dispatch!(self.purge_published_events(cutoff, limit))
    }
}

/// The PostgreSQL channel a commit that wrote events notifies (by the
/// `order_events_notify` trigger).
const CHANNEL: &str = "order_events";

/// Wakes a relay when events may be waiting: at once after a commit that
/// wrote events on PostgreSQL (`LISTEN order_events`), by polling on MySQL.
#[derive(Debug)]
pub struct EventWakeups(Wakeups);

#[derive(Debug)]
enum Wakeups {
    Listen {
        pool: sqlx::PgPool,
        listener: Option<sqlx::postgres::PgListener>,
    },
    Poll,
}

impl Storage {
    /// How a relay on this engine learns of new events.
    #[must_use]
    pub fn event_wakeups(&self) -> EventWakeups {
        EventWakeups(match self {
            Self::Postgres(s) => Wakeups::Listen {
                pool: s.pool().clone(),
                listener: None,
            },
            Self::Mysql(_) => Wakeups::Poll,
        })
    }
}

impl EventWakeups {
    /// Waits at most `at_most` for a commit that wrote events. Returns
    /// early also when a lost listening connection may have missed one.
    pub async fn wait(&mut self, at_most: Duration) {
        let Wakeups::Listen { pool, listener } = &mut self.0 else {
            tokio::time::sleep(at_most).await;
            return;
        };
        let started = tokio::time::Instant::now();
        if listener.is_none() {
            let listen = async {
                let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match tokio::time::timeout(at_most, listen).await {
                Ok(Ok(l)) => *listener = Some(l),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot listen for events yet; polling");
                }
                Err(_) => return,
            }
        }
        let left = at_most.saturating_sub(started.elapsed());
        let Some(l) = listener else {
            tokio::time::sleep(left).await;
            return;
        };
        match tokio::time::timeout(left, l.try_recv()).await {
            // A commit, or the connection was lost and is reopened on the
            // next call (a notification may have been missed): look now.
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "listening for events failed; listening again");
                *listener = None;
            }
        }
    }
}
