//! The database's own limit, for benchmarks: the rows the worker would write
//! for a stream, inserted by a plain loop of multi-row
//! `INSERT … ON CONFLICT DO NOTHING` statements of the same batch size — no
//! broker, no worker, no validation. PostgreSQL only.

use std::time::{Duration, Instant};

use order_core::domain::SeckillMessage;
use sqlx::{Connection, PgConnection, QueryBuilder};
use uuid::Uuid;

use crate::{Kind, Message};

/// Inserts the distinct purchases of `messages` in batches of `batch_size`,
/// one transaction per batch, through one connection. Returns the time taken.
///
/// # Errors
/// When the database refuses.
pub async fn insert(
    database_url: &str,
    messages: &[Message],
    batch_size: usize,
) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        database_url.starts_with("postgres"),
        "the SQL baseline runs on PostgreSQL only"
    );
    let purchases: Vec<SeckillMessage> = messages
        .iter()
        .filter(|m| m.kind == Kind::New)
        .map(|m| SeckillMessage::parse(&m.payload))
        .collect::<Result<_, _>>()?;
    let mut conn = PgConnection::connect(database_url).await?;
    let started = Instant::now();
    for chunk in purchases.chunks(batch_size.max(1)) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        let now = chrono::Utc::now();
        let mut tx = conn.begin().await?;
        let mut q = QueryBuilder::new(
            "INSERT INTO idempotency_records (user_id, product_id, order_id, created_at) ",
        );
        q.push_values(chunk.iter().zip(&ids), |mut row, (m, id)| {
            row.push_bind(m.user_id.get())
                .push_bind(m.product_id.get())
                .push_bind(*id)
                .push_bind(now);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::new(
            "INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_amount, status, seckill_id, created_at, updated_at) ",
        );
        q.push_values(chunk.iter().zip(&ids), |mut row, (m, id)| {
            row.push_bind(*id)
                .push_bind(m.user_id.get())
                .push_bind(m.product_id.get())
                .push_bind(m.quantity.get())
                .push_bind(m.unit_price.as_decimal())
                .push_bind(m.total_amount().as_decimal())
                .push_bind("pending")
                .push_bind(m.seckill_id.as_str())
                .push_bind(now)
                .push_bind(now);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::new(
            "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_price, total_price) ",
        );
        q.push_values(chunk.iter().zip(&ids), |mut row, (m, id)| {
            row.push_bind(*id)
                .push_bind(m.product_id.get())
                .push_bind(m.product_name.as_deref())
                .push_bind(m.quantity.get())
                .push_bind(m.unit_price.as_decimal())
                .push_bind(m.total_amount().as_decimal());
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}
