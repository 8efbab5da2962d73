//! `/api/v1/stats/orders` (operator).

use std::sync::Arc;

use order_core::storage::Granularity;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query, StatsQuery};

/// Counts and amounts of the orders created on whole UTC days, as one
/// figure or as a series of days or hours, from the rollups. At most a
/// quarter of the pool runs these at once (the others wait for a slot
/// within the request's time); each query runs under the statement timeout.
pub async fn orders(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(&query, &["date", "from", "to", "granularity"])?;
    let asked = params::stats_query(&query, chrono::Utc::now())?;
    let _slot = st
        .stats_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(match asked {
        StatsQuery::Range(from, to) => json(&st.storage.stats(from, to).await?),
        StatsQuery::Days(from, to) => json(&serde_json::json!({
            "granularity": Granularity::Day,
            "from": from,
            "to": to,
            "entries": st.storage.stats_by_day(from, to).await?,
        })),
        StatsQuery::Hours(from, to) => json(&serde_json::json!({
            "granularity": Granularity::Hour,
            "from": from,
            "to": to,
            "entries": st.storage.stats_by_hour(from, to).await?,
        })),
    })
}
