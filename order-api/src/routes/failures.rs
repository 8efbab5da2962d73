//! `/api/v1/failures…` (operator).

use std::sync::Arc;

use bytes::Bytes;
use order_core::domain::{Failure, ResolutionNote};
use order_core::service::{BulkRetried, BulkRetry, MessageOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;

use super::{AppState, json};
use crate::error::ApiError;
use crate::params::{self, Query};

/// Most reason groups one request answers.
const MAX_REASON_GROUPS: u32 = 100;

/// `GET /api/v1/failures?<filter>&page=&pageSize=` (the filter:
/// [`params::failure_filter`]), newest first.
pub async fn list(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(
        &query,
        &[params::FAILURE_FILTER, &["page", "pageSize"]].concat(),
    )?;
    let filter = params::failure_filter(&query)?;
    let page = params::page(&query)?;
    let found = st.failures.list(&filter, page).await?;
    Ok(json(&json!({
        "items": found.items,
        "page": page.page,
        "page_size": page.page_size,
        "total": found.total,
        "total_capped": found.capped,
    })))
}

/// `GET /api/v1/failures/reasons?<filter>&limit=`: the failures the filter
/// matches grouped by reason, the largest `limit` groups (default 20, at
/// most 100) first, and how many match in all.
pub async fn reasons(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(&query, &[params::FAILURE_FILTER, &["limit"]].concat())?;
    let filter = params::failure_filter(&query)?;
    let limit = params::number(&query, "limit", 20, MAX_REASON_GROUPS)?;
    let (groups, total) = st.failures.reasons(&filter, limit).await?;
    Ok(json(&json!({ "groups": groups, "total": total })))
}

/// `GET /api/v1/failures/summary`: failures by status.
pub async fn summary(
    st: Arc<AppState>,
    authorization: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    st.auth.observer(authorization.as_deref())?;
    params::only(&query, &[])?;
    Ok(json(&st.failures.summary().await?))
}

/// `GET /api/v1/failures/{failureId}`: the failure and its retry history.
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename = "BulkRetry")]
struct BulkRetryBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    dry_run: bool,
}

impl BulkRetryBody {
    /// The filter fields as the query parameters of a listing.
    fn filter(&self) -> Query {
        let fields = [
            ("status", self.status.clone()),
            ("source", self.source.clone()),
            ("retryable", self.retryable.map(|r| r.to_string())),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("q", self.q.clone()),
            ("reason", self.reason.clone()),
        ];
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect()
    }
}

/// `POST /api/v1/failures/retry` with a filter (the fields of the listing's
/// query, [`params::failure_filter`]; `status` `pending`, the default, or
/// `failed`), `limit` and `dry_run`: retries up to `limit` (default 100, at
/// most 1000) retryable failures the filter matches, newest first. With
/// `"dry_run": true` it retries nothing and says how many match.
pub async fn retry_many(
    st: Arc<AppState>,
    authorization: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.operator(authorization.as_deref())?;
    let asked: BulkRetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        BulkRetryBody::default()
    } else {
        super::body(&body)?
    };
    let request = BulkRetry::new(params::failure_filter(&asked.filter())?, asked.limit)?;
    if asked.dry_run {
        let matched = st.failures.dry_run(&request).await?;
        return Ok(json(&json!({
            "dry_run": true,
            "matched": matched,
            "limit": request.limit(),
        })));
    }
    let done = st.failures.retry_many(request).await?;
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
