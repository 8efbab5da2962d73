//! Reads of committed orders through the API: a sample of the orders the
//! database holds, and a reader that fetches them over and over during the
//! Redis cut and compares each answer with the stored order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use order_loadgen::{Kind, Message};
use order_testkit::{TestDatabase, http};

use crate::auth::Auth;

/// Up to 100 committed orders (id and stored JSON) of the stream's first buyers.
pub async fn sample_orders(
    db: &TestDatabase,
    messages: &[Message],
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let mut sample = Vec::new();
    for message in messages.iter().filter(|m| m.kind == Kind::New).take(300) {
        let found = db
            .storage
            .list_user_orders_after(message.user_id, None, None, 10)
            .await?;
        for order in found {
            let stored = db
                .storage
                .get_order(order.order_id)
                .await?
                .context("an order just listed")?;
            sample.push((order.order_id.to_string(), serde_json::to_value(&stored)?));
        }
        if sample.len() >= 100 {
            break;
        }
    }
    sample.dedup_by(|a, b| a.0 == b.0);
    Ok(sample)
}

/// Reads from the API during the Redis cut.
#[derive(Debug, Default)]
pub struct Reads {
    pub right: usize,
    pub wrong: Vec<String>,
}

pub async fn read_orders(
    api: SocketAddr,
    sample: Vec<(String, serde_json::Value)>,
    auth: Auth,
    going: Arc<AtomicBool>,
) -> Reads {
    let mut reads = Reads::default();
    let mut i = 0;
    while going.load(Ordering::Relaxed) {
        let (id, stored) = &sample[i % sample.len()];
        i += 1;
        let path = format!("/api/v1/orders/{id}");
        let bearer = auth.user_bearer(stored);
        match http::try_request(api, "GET", &path, &[("Authorization", &bearer)], None).await {
            Ok(r) if r.status == 200 => {
                let served: serde_json::Value =
                    serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
                if same_order(stored, &served) {
                    reads.right += 1;
                } else {
                    reads
                        .wrong
                        .push(format!("{id}: served {served}, stored {stored}"));
                }
            }
            Ok(r) => reads.wrong.push(format!("{id}: {} {}", r.status, r.body)),
            Err(e) => reads.wrong.push(format!("{id}: {e}")),
        }
    }
    reads
}

/// Every field the stored order has, the served one has with the same value.
fn same_order(stored: &serde_json::Value, served: &serde_json::Value) -> bool {
    stored.as_object().is_some_and(|fields| {
        fields
            .iter()
            .all(|(key, value)| served.get(key) == Some(value))
    })
}
