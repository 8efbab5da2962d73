//! `/api/v1/orders/{orderId}…`

use std::sync::Arc;

use bytes::Bytes;
use order_core::domain::OrderStatus;
use order_core::service::Caller;
use serde::Deserialize;
use warp::Reply;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params;

/// `GET /api/v1/orders/{orderId}`: read-through cache, then the database.
/// A cache hit is answered with the stored JSON as is. Another user's order
/// is 404, as an unknown one.
pub async fn get(
    st: Arc<AppState>,
    id: String,
    authorization: Option<String>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(authorization.as_deref())?;
    let id = params::order_id(&id)?;
    let json = st.orders.get_json(caller, id).await?;
    Ok(warp::reply::with_header(json, "content-type", "application/json").into_response())
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

/// `PUT /api/v1/orders/{orderId}/status` (operator). A `traceparent`
/// header is stored with the change's event.
pub async fn set_status(
    st: Arc<AppState>,
    id: String,
    authorization: Option<String>,
    traceparent: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    let id = params::order_id(&id)?;
    let StatusBody { status } = super::body(&body)?;
    let to: OrderStatus = status
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    Ok(json(
        &st.orders
            .set_status(Caller::Operator, id, to, traceparent.as_deref())
            .await?,
    ))
}

/// `PUT /api/v1/orders/{orderId}/cancel`: pending → cancelled, for its
/// buyer or the operator; cancelling a cancelled order answers 200 with it.
pub async fn cancel(
    st: Arc<AppState>,
    id: String,
    authorization: Option<String>,
    traceparent: Option<String>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(authorization.as_deref())?;
    let id = params::order_id(&id)?;
    Ok(json(
        &st.orders.cancel(caller, id, traceparent.as_deref()).await?,
    ))
}
