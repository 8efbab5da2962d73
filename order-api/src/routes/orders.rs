//! `/api/v1/orders/{orderId}…`

use std::sync::Arc;

use bytes::Bytes;
use order_core::cache::CachedJson;
use order_core::domain::OrderStatus;
use order_core::storage::StorageError;
use serde::Deserialize;
use uuid::Uuid;
use warp::Reply;
use warp::reply::Response;

use super::{AppState, json, operator};
use crate::error::ApiError;
use crate::params;

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}

/// `GET /api/v1/orders/{orderId}`: read-through cache, then the database.
/// A cache hit is answered with the stored JSON as is.
pub async fn get(st: Arc<AppState>, id: String) -> Result<Response, ApiError> {
    let id = params::order_id(&id)?;
    match st.cache.get_json(id).await {
        CachedJson::Hit(json) => return Ok(raw_json(json)),
        CachedJson::Missing => return Err(not_found(id)),
        CachedJson::Unknown => {}
    }
    match st.storage.get_order(id).await? {
        Some(order) => {
            let json =
                serde_json::to_string(&order).map_err(|e| ApiError::Internal(e.to_string()))?;
            st.cache.put_json(id, &json).await;
            Ok(raw_json(json))
        }
        None => {
            st.cache.put_missing(id).await;
            Err(not_found(id))
        }
    }
}

fn raw_json(json: String) -> Response {
    warp::reply::with_header(json, "content-type", "application/json").into_response()
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

/// `PUT /api/v1/orders/{orderId}/status` (operator).
pub async fn set_status(
    st: Arc<AppState>,
    id: String,
    authorization: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    operator(&st, authorization.as_deref())?;
    let id = params::order_id(&id)?;
    let StatusBody { status } = super::body(&body)?;
    let to: OrderStatus = status
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    let order = st
        .storage
        .transition_order(id, to)
        .await
        .map_err(|e| match e {
            StorageError::NotFound => not_found(id),
            other => other.into(),
        })?;
    st.cache.invalidate(&[id]).await;
    Ok(json(&order))
}

/// `PUT /api/v1/orders/{orderId}/cancel`: pending → cancelled; cancelling a
/// cancelled order answers 200 with it.
pub async fn cancel(st: Arc<AppState>, id: String) -> Result<Response, ApiError> {
    let id = params::order_id(&id)?;
    let current = st
        .storage
        .get_order(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if current.status == OrderStatus::Cancelled {
        return Ok(json(&current));
    }
    match st
        .storage
        .transition_order(id, OrderStatus::Cancelled)
        .await
    {
        Ok(order) => {
            st.cache.invalidate(&[id]).await;
            Ok(json(&order))
        }
        // Cancelled by someone else in between: the outcome asked for.
        Err(StorageError::Transition(t)) if t.from == OrderStatus::Cancelled => {
            let order = st
                .storage
                .get_order(id)
                .await?
                .ok_or_else(|| not_found(id))?;
            Ok(json(&order))
        }
        Err(StorageError::NotFound) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}
