//! `/api/v1/users/{userId}/orders`, and `/api/v1/me`: who the caller is.

use std::sync::Arc;

use order_core::domain::OrderStatus;
use order_core::storage::OrderCursor;
use serde_json::json;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// A user's orders, newest first: `page`/`pageSize` with a total, or keyset
/// paging with `cursor` (empty for the first page; `next_cursor` continues).
pub async fn orders(
    st: Arc<AppState>,
    user_id: String,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(authorization.as_deref())?;
    let user_id = params::positive_id("userId", &user_id)?;
    caller.may_list(user_id)?;
    params::only(&query, &["page", "pageSize", "status", "cursor"])?;
    let status: Option<OrderStatus> = params::optional(&query, "status")?;
    if let Some(raw) = query.get("cursor") {
        if query.contains_key("page") {
            return Err(ApiError::BadRequest(
                "page and cursor cannot be combined".into(),
            ));
        }
        let page_size = params::page_size(&query)?;
        let items = st
            .storage
            .list_user_orders_after(user_id, status, params::cursor(raw)?, page_size)
            .await?;
        let next_cursor = (items.len() == page_size as usize)
            .then(|| {
                items
                    .last()
                    .map(|o| params::encode_cursor(OrderCursor::after(o)))
            })
            .flatten();
        return Ok(json(
            &json!({"items": items, "page_size": page_size, "next_cursor": next_cursor}),
        ));
    }
    let page = params::page(&query)?;
    let found = st.storage.list_user_orders(user_id, status, page).await?;
    Ok(json(&json!({
        "items": found.items,
        "page": page.page,
        "page_size": page.page_size,
        "total": found.total,
    })))
}

/// `GET /api/v1/me`: the caller's role (`operator`, `read_only`, `user`,
/// `anyone`), whether it may take operator actions (retry, resolve, change
/// an order's status), and its user id when it is an end user.
pub async fn me(st: Arc<AppState>, authorization: Option<String>) -> Result<Response, ApiError> {
    let caller = st.auth.caller(authorization.as_deref())?;
    let user_id = match caller {
        order_core::service::Caller::User(id) => Some(id),
        _ => None,
    };
    Ok(json(&json!({
        "role": caller.role(),
        "may_act": caller == order_core::service::Caller::Operator,
        "user_id": user_id,
    })))
}
