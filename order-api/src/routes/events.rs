//! `/api/v1/events` (operator): the outbox, to see what is pending or stuck.

use std::sync::Arc;

use order_core::storage::{EventFilter, EventStatus, StoredEvent};
use serde::Serialize;
use serde_json::value::RawValue;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// One event as listed: its outbox record and the CloudEvent itself.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    record: StoredEvent,
    /// The CloudEvent as it is sent (`null` when its order was deleted by
    /// hand and it cannot be rendered).
    event: Box<RawValue>,
}

/// `GET /api/v1/events?status=&orderId=&after=&pageSize=`: events in write
/// order, after the event `after` (a `seq`); `next_after` continues the
/// listing when the page was full.
pub async fn list(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(&query, &["status", "orderId", "after", "pageSize"])?;
    let status: Option<EventStatus> = params::optional(&query, "status")?;
    let order_id = match query.get("orderId").map(String::as_str) {
        None | Some("") => None,
        Some(raw) => Some(params::order_id(raw)?),
    };
    let after = match query.get("after").map(String::as_str) {
        None | Some("") => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(seq) if seq >= 0 => Some(seq),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "after: must be an event's seq (a non-negative integer), got {raw:?}"
                )));
            }
        },
    };
    let page_size = params::page_size(&query)?;
    let events = st
        .storage
        .list_events(
            EventFilter {
                status,
                order_id,
                after,
            },
            page_size,
        )
        .await?;
    let next_after = (events.len() == page_size as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let items = events
        .into_iter()
        .map(|record| {
            let event = RawValue::from_string(record.body.clone())
                .map_err(|e| ApiError::Internal(format!("event {}: {e}", record.id)))?;
            Ok(Listed { record, event })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json(&serde_json::json!({
        "items": items,
        "next_after": next_after,
    })))
}
