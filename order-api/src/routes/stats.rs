//! `/api/v1/stats/orders`

use std::sync::Arc;

use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// Counts and amounts of the orders created on whole UTC days.
pub async fn orders(st: Arc<AppState>, query: Query) -> Result<Response, ApiError> {
    params::only(&query, &["date", "from", "to"])?;
    let (from, to) = params::day_range(&query)?;
    Ok(json(&st.storage.stats(from, to).await?))
}
