//! Order events in the fault suite: a consumer of the run's events from
//! before the stack starts, buyers' cancellations and an expiry at the end,
//! and the invariants: every event row published and received (at least
//! once, first deliveries in each order's write order), one event for every
//! order created, cancelled or expired, and the outbox empty of unpublished
//! rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_core::domain::EventType;
use order_core::storage::{EventFilter, StoredEvent};
use order_loadgen::events::ReceivedEvent;
use order_testkit::TestDatabase;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::checks::{Check, check};

/// Every event received so far, in arrival order.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ReceivedEvent>>>);

impl Received {
    /// Collects what `rx` delivers until it ends.
    pub fn collect(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<ReceivedEvent>>,
    ) -> Self {
        let received = Self::default();
        let sink = received.0.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    Ok(event) => sink.lock().await.push(event),
                    Err(e) => crate::say(format!("an order event could not be read: {e:#}")),
                }
            }
        });
        received
    }

    async fn distinct(&self) -> usize {
        let got = self.0.lock().await;
        got.iter().map(|e| e.id).collect::<HashSet<_>>().len()
    }
}

async fn outbox(db: &TestDatabase) -> anyhow::Result<Vec<StoredEvent>> {
    Ok(db
        .storage
        .list_events(EventFilter::default(), 10_000_000)
        .await?)
}

/// Waits until no event is unpublished and every event row was received.
pub async fn settle(db: &TestDatabase, received: &Received, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = db.count("SELECT COUNT(*) FROM order_events").await;
        let unpublished = db
            .count("SELECT COUNT(*) FROM order_events WHERE published_at IS NULL")
            .await;
        let distinct = received.distinct().await;
        if unpublished == 0 && i64::try_from(distinct).unwrap_or(i64::MAX) >= rows {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after {limit:?}: {unpublished} of {rows} events unpublished, {distinct} received"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The invariants of the events.
pub async fn checks(db: &TestDatabase, received: &Received) -> anyhow::Result<Vec<Check>> {
    let rows = outbox(db).await?;
    let got = received.0.lock().await.clone();
    let mut checks = Vec::new();

    let unpublished = rows.iter().filter(|e| e.published_at.is_none()).count();
    checks.push(check(
        "the outbox ends with no unpublished event",
        format!("{unpublished} of {} unpublished", rows.len()),
        unpublished == 0 && !rows.is_empty(),
    ));

    let want: HashSet<Uuid> = rows.iter().map(|e| e.id).collect();
    let ids: HashSet<Uuid> = got.iter().map(|e| e.id).collect();
    let missing = want.difference(&ids).count();
    let unknown = ids.difference(&want).count();
    checks.push(check(
        "consumers received every event row (at least once), and nothing else",
        format!(
            "{} rows, {} received ({} distinct, {} re-sent), {missing} missing, {unknown} unknown",
            want.len(),
            got.len(),
            ids.len(),
            got.len() - ids.len()
        ),
        missing == 0 && unknown == 0,
    ));

    // First deliveries of each order, in the order the rows were written.
    let mut first: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut seen = HashSet::new();
    for e in &got {
        if seen.insert(e.id) {
            first.entry(e.order_id).or_default().push(e.id);
        }
    }
    let mut written: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for e in &rows {
        written.entry(e.order_id).or_default().push(e.id);
    }
    let out_of_order = written
        .iter()
        .filter(|(order, ids)| first.get(order).is_some_and(|f| f != *ids))
        .count();
    checks.push(check(
        "each order's events first arrived in the order written",
        format!("{out_of_order} of {} orders out of order", written.len()),
        out_of_order == 0,
    ));

    let of = |t: EventType| rows.iter().filter(|e| e.event_type == t).count();
    let orders = usize::try_from(db.count("SELECT COUNT(*) FROM orders").await).unwrap_or(0);
    let cancelled = usize::try_from(
        db.count("SELECT COUNT(*) FROM orders WHERE status = 'cancelled'")
            .await,
    )
    .unwrap_or(0);
    let (created, by_hand, expired) = (
        of(EventType::Created),
        of(EventType::Cancelled),
        of(EventType::Expired),
    );
    checks.push(check(
        "one event for every order created, cancelled or expired",
        format!(
            "{created} order.created for {orders} orders; {by_hand} order.cancelled + {expired} order.expired for {cancelled} cancelled orders"
        ),
        created == orders && by_hand + expired == cancelled && by_hand > 0 && expired > 0,
    ));
    Ok(checks)
}
