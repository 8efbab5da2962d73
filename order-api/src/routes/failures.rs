//! `/api/v1/failures…` (operator).

use std::sync::Arc;

use bytes::Bytes;
use order_core::domain::{Failure, FailureStatus, ResolutionNote};
use order_core::service::{Attempt, RetryOne};
use order_core::storage::ResolvedByHand;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// Most failures one bulk retry takes.
pub const MAX_BULK_RETRY: u32 = 1000;

/// `GET /api/v1/failures?status=&page=&pageSize=`
pub async fn list(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    params::only(&query, &["status", "page", "pageSize"])?;
    let status: Option<FailureStatus> = params::optional(&query, "status")?;
    let page = params::page(&query)?;
    let found = st.storage.list_failures(status, page).await?;
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
    st.auth.operator(authorization.as_deref())?;
    let id = params::positive_id("failureId", &id)?;
    let failure = st
        .storage
        .get_failure(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("failure {id} not found")))?;
    Ok(json(&failure))
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

fn retried(failure: Box<Failure>, attempt: &Attempt) -> Retried {
    let (outcome, reason) = match attempt {
        Attempt::Created(_) => ("created", None),
        Attempt::Duplicate(_) => ("duplicate", None),
        Attempt::Failed(r) => ("failed", Some(r.clone())),
        Attempt::Poison(r) => ("poison", Some(r.clone())),
    };
    Retried {
        failure,
        outcome,
        order_id: attempt.order_id(),
        reason,
    }
}

/// Why a failure cannot be retried now.
fn refusal(failure: &Failure) -> String {
    match (failure.status, failure.retryable) {
        (FailureStatus::Resolved, _) => format!(
            "failure {} was resolved by hand and is not retried again",
            failure.id
        ),
        (FailureStatus::Success, _) => format!(
            "failure {} already succeeded{}",
            failure.id,
            failure
                .order_id
                .map(|o| format!(" (order {o})"))
                .unwrap_or_default()
        ),
        (FailureStatus::Processing, _) => {
            format!("failure {} is being retried right now", failure.id)
        }
        (_, false) => format!(
            "failure {} is not retryable: {}",
            failure.id, failure.error_message
        ),
        _ => format!("failure {} cannot be retried now", failure.id),
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
    match st.retrier.retry_one(id).await? {
        RetryOne::Retried(failure, attempt) => Ok(json(&retried(failure, &attempt))),
        RetryOne::NotFound => Err(ApiError::NotFound(format!("failure {id} not found"))),
        RetryOne::Refused(failure) => Err(ApiError::Conflict(refusal(&failure))),
    }
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
    match st.storage.resolve_failure_by_hand(id, &note).await? {
        ResolvedByHand::Resolved { failure, previous } => {
            tracing::info!(
                failure.id = id,
                failure.previous_status = %previous,
                "failure resolved by hand"
            );
            metrics::counter!("failures_resolved_by_hand_total", "previous_status" => previous.as_str())
                .increment(1);
            Ok(json(&failure))
        }
        ResolvedByHand::AlreadyResolved(failure) => Ok(json(&failure)),
        ResolvedByHand::Refused(_, why) => Err(ApiError::Conflict(format!(
            "failure {id} cannot be resolved by hand: {why}"
        ))),
        ResolvedByHand::NotFound => Err(ApiError::NotFound(format!("failure {id} not found"))),
    }
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
struct BulkRetry {
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
    let BulkRetry { status, limit } = if body.iter().all(u8::is_ascii_whitespace) {
        BulkRetry {
            status: None,
            limit: None,
        }
    } else {
        super::body(&body)?
    };
    let status = match status.as_deref() {
        None | Some("pending") => FailureStatus::Pending,
        Some("failed") => FailureStatus::Failed,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status: must be pending or failed, got {other:?}"
            )));
        }
    };
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_BULK_RETRY).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be from 1 to {MAX_BULK_RETRY}, got {limit}"
        )));
    }
    // Retryable ones only, chosen by the query: poison rows never take
    // the place of retryable ones within the limit.
    let candidates = st.storage.retryable_failure_ids(status, limit).await?;
    let (mut succeeded, mut failed, mut refused) = (0, 0, 0);
    let mut results = Vec::new();
    for id in candidates {
        match st.retrier.retry_one(id).await? {
            RetryOne::Retried(f, attempt) => {
                if attempt.order_id().is_some() {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
                let r = retried(f, &attempt);
                results.push(json!({"id": id, "outcome": r.outcome, "order_id": r.order_id, "reason": r.reason}));
            }
            RetryOne::NotFound => {}
            RetryOne::Refused(f) => {
                refused += 1;
                results.push(json!({"id": id, "outcome": "refused", "reason": refusal(&f)}));
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
