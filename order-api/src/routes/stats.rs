//! `/api/v1/stats/orders` (operator).

use std::sync::Arc;

use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// Counts and amounts of the orders created on whole UTC days. At most a
/// quarter of the pool runs these at once (the others wait for a slot
/// within the request's time); each query runs under the statement timeout.
pub async fn orders(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    params::only(&query, &["date", "from", "to"])?;
    let (from, to) = params::day_range(&query)?;
    let _slot = st
        .stats_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(json(&st.storage.stats(from, to).await?))
}
