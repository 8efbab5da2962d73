//! `/api/v1/failures…` (operator).

use std::sync::Arc;

use bytes::Bytes;
use order_core::domain::{Failure, FailureStatus, ResolutionNote};
use order_core::service::{BulkRetried, BulkRetry, MessageOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// `GET /api/v1/failures?status=&page=&pageSize=`
pub async fn list(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(&query, &["status", "page", "pageSize"])?;
    let status: Option<FailureStatus> = params::optional(&query, "status")?;
    let page = params::page(&query)?;
    let found = st.failures.list(status, page).await?;
    Ok(json(&json!({
        "items": found.items,
        "page": page.page,
        "page_size": page.page_size,
        "total": found.total,
    })))
}

/// `GET /api/v1/failures/{failureId}`
pub async fn get(
    st: Arc<AppState>,
    authorization: Option<String>,
    id: String,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    let id = params::positive_id("failureId", &id)?;
    Ok(json(&st.failures.get(id).await?))
}

/// The outcome of one retry, as answered.
#[derive(Debug, Serialize)]
struct Retried {
    failure: Box<Failure>,
    /// `created`, `duplicate`, `failed` or `poison`.
    outcome: &'static str,
    order_id: Option<Uuid>,
    reason: Option<String>,
}

fn retried(failure: Box<Failure>, attempt: &MessageOutcome) -> Retried {
    let (outcome, reason) = match attempt {
        MessageOutcome::Created(_) => ("created", None),
        MessageOutcome::Duplicate(_) => ("duplicate", None),
        MessageOutcome::Failed(r) => ("failed", Some(r.clone())),
        MessageOutcome::Poison(r) => ("poison", Some(r.clone())),
    };
    Retried {
        failure,
        outcome,
        order_id: attempt.order_id(),
        reason,
    }
}

/// `POST /api/v1/failures/{failureId}/retry`: now, through the creation path.
pub async fn retry_one(
    st: Arc<AppState>,
    authorization: Option<String>,
    id: String,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    let id = params::positive_id("failureId", &id)?;
    let (failure, attempt) = st.failures.retry(id).await?;
    Ok(json(&retried(failure, &attempt)))
}

/// `POST /api/v1/failures/{failureId}/resolve` with `{"note":"…"}`: marks a
/// `pending` or `failed` failure resolved by hand, never retried again and
/// kept with the note. Resolving a resolved one answers it as it is (its
/// note unchanged); `processing` and `success` are 409.
pub async fn resolve_one(
    st: Arc<AppState>,
    authorization: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    let id = params::positive_id("failureId", &id)?;
    let note = resolution_note(&body)?;
    Ok(json(&st.failures.resolve_by_hand(id, &note).await?))
}

/// The note of a resolve request: a JSON object with `note` alone.
fn resolution_note(body: &[u8]) -> Result<ResolutionNote, ApiError> {
    let fields: serde_json::Map<String, serde_json::Value> = super::body(body)?;
    if let Some(other) = fields.keys().find(|k| *k != "note") {
        return Err(ApiError::BadRequest(format!(
            "unknown field {other:?}, expected note"
        )));
    }
    match fields.get("note") {
        None | Some(serde_json::Value::Null) => Err(ApiError::BadRequest(
            "note: is required (a non-empty string)".into(),
        )),
        Some(serde_json::Value::String(note)) => {
            ResolutionNote::parse("note", note).map_err(|e| ApiError::BadRequest(e.to_string()))
        }
        Some(_) => Err(ApiError::BadRequest("note: must be a string".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename = "BulkRetry")]
struct BulkRetryBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `POST /api/v1/failures/retry` with `{"status":"pending"|"failed","limit":N}`:
/// retries up to `limit` (default 100, at most 1000) retryable failures of that
/// status (default `pending`), newest first.
pub async fn retry_many(
    st: Arc<AppState>,
    authorization: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    let BulkRetryBody { status, limit } = if body.iter().all(u8::is_ascii_whitespace) {
        BulkRetryBody {
            status: None,
            limit: None,
        }
    } else {
        super::body(&body)?
    };
    let done = st
        .failures
        .retry_many(BulkRetry::new(status.as_deref(), limit)?)
        .await?;
    let (mut succeeded, mut failed, mut refused) = (0, 0, 0);
    let mut results = Vec::with_capacity(done.len());
    for (id, outcome) in done {
        match outcome {
            BulkRetried::Retried(failure, attempt) => {
                if attempt.order_id().is_some() {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
                let r = retried(failure, &attempt);
                results.push(json!({"id": id, "outcome": r.outcome, "order_id": r.order_id, "reason": r.reason}));
            }
            BulkRetried::Refused(why) => {
                refused += 1;
                results.push(json!({"id": id, "outcome": "refused", "reason": why}));
            }
        }
    }
    Ok(json(&json!({
        "attempted": results.len(),
        "succeeded": succeeded,
        "failed": failed,
        "refused": refused,
        "results": results,
    })))
}
