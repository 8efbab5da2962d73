//! The routes, one module per resource, mirroring the URLs.

pub mod console;
pub mod docs;
pub mod embedded;
pub mod events;
pub mod failures;
pub mod orders;
pub mod stats;
pub mod users;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use order_core::service::{Failures, Orders};
use order_core::storage::Storage;
use order_runtime::probes::{self, HealthChecks};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Authenticator;
use crate::error::{ApiError, error_response};

/// What every handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub storage: Storage,
    /// Orders: reads through the cache, changes that invalidate it.
    pub orders: Orders,
    /// The failure ledger: reads, retries through the order-creation path,
    /// resolving by hand.
    pub failures: Failures,
    /// Who is calling.
    pub auth: Authenticator,
    /// Longest time a request may take (`server.write_timeout`).
    pub request_timeout: Duration,
    /// Statistics queries running at once, at most a quarter of the pool:
    /// however many arrive, the rest of the API keeps its connections.
    pub stats_slots: Semaphore,
}

/// Every route the API serves: method and OpenAPI path template. The
/// OpenAPI document is checked against this list, and metrics are labelled
/// with these templates.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/orders/{orderId}"),
    ("PUT", "/api/v1/orders/{orderId}/status"),
    ("PUT", "/api/v1/orders/{orderId}/cancel"),
    ("GET", "/api/v1/users/{userId}/orders"),
    ("GET", "/api/v1/stats/orders"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/failures"),
    ("GET", "/api/v1/failures/summary"),
    ("GET", "/api/v1/failures/reasons"),
    ("POST", "/api/v1/failures/retry"),
    ("GET", "/api/v1/failures/{failureId}"),
    ("POST", "/api/v1/failures/{failureId}/retry"),
    ("POST", "/api/v1/failures/{failureId}/resolve"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
];

/// The template of a concrete path, for metric labels (`unmatched` if none).
#[must_use]
pub fn template_of(method: &str, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        // The docs and the console: served, not API operations.
        .chain(docs::ROUTES)
        .chain(console::ROUTES)
        .filter(|(m, _)| *m == method)
        .map(|(_, t)| *t)
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
        .unwrap_or("unmatched")
}

/// The OpenAPI document, served as is.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Runs a handler under the request time limit and renders its error.
pub async fn respond<F>(timeout: Duration, handler: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    match tokio::time::timeout(timeout, handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// A JSON response.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    warp::reply::json(value).into_response()
}

/// Reads a JSON body.
///
/// # Errors
/// 400 naming what is wrong.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request has no body; this operation takes a JSON object".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The whole API.
pub fn router(
    state: Arc<AppState>,
    checks: HealthChecks,
    max_body_bytes: u64,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = warp::header::optional::<String>("authorization");
    // The W3C trace context of a change, stored with its event.
    let trace = warp::header::optional::<String>("traceparent");
    // Every pair, so that a repeated parameter is refused, not half-read.
    let query = warp::query::<Vec<(String, String)>>().and_then(|pairs| async move {
        crate::params::unique(pairs).map_err(warp::reject::custom)
    });
    let json_body = bounded_body(max_body_bytes);
    let timeout = state.request_timeout;

    let get_order = warp::path!("api" / "v1" / "orders" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .then(move |id: String, st: Arc<AppState>, auth| async move {
            respond(timeout, orders::get(st, id, auth)).await
        });
    let set_status = warp::path!("api" / "v1" / "orders" / String / "status")
        .and(warp::put())
        .and(with_state.clone())
        .and(auth)
        .and(trace)
        .and(json_body.clone())
        .then(move |id, st, auth, trace, body| async move {
            respond(timeout, orders::set_status(st, id, auth, trace, body)).await
        });
    let cancel = warp::path!("api" / "v1" / "orders" / String / "cancel")
        .and(warp::put())
        .and(with_state.clone())
        .and(auth)
        .and(trace)
        .then(move |id, st, auth, trace| async move {
            respond(timeout, orders::cancel(st, id, auth, trace)).await
        });
    let user_orders = warp::path!("api" / "v1" / "users" / String / "orders")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(query)
        .then(move |id, st, auth, q| async move {
            respond(timeout, users::orders(st, id, auth, q)).await
        });
    let stats = warp::path!("api" / "v1" / "stats" / "orders")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(query)
        .then(move |st, auth, q| async move { respond(timeout, stats::orders(st, auth, q)).await });
    let list_failures = warp::path!("api" / "v1" / "failures")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(query)
        .then(
            move |st, auth, q| async move { respond(timeout, failures::list(st, auth, q)).await },
        );
    let failure_summary =
        warp::path!("api" / "v1" / "failures" / "summary")
            .and(warp::get())
            .and(with_state.clone())
            .and(auth)
            .and(query)
            .then(move |st, auth, q| async move {
                respond(timeout, failures::summary(st, auth, q)).await
            });
    let failure_reasons =
        warp::path!("api" / "v1" / "failures" / "reasons")
            .and(warp::get())
            .and(with_state.clone())
            .and(auth)
            .and(query)
            .then(move |st, auth, q| async move {
                respond(timeout, failures::reasons(st, auth, q)).await
            });
    let me = warp::path!("api" / "v1" / "me")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .then(move |st, auth| async move { respond(timeout, users::me(st, auth)).await });
    let retry_many = warp::path!("api" / "v1" / "failures" / "retry")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth)
        .and(json_body.clone())
        .then(move |st, auth, body| async move {
            respond(timeout, failures::retry_many(st, auth, body)).await
        });
    let get_failure = warp::path!("api" / "v1" / "failures" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .then(
            move |id, st, auth| async move { respond(timeout, failures::get(st, auth, id)).await },
        );
    let retry_one = warp::path!("api" / "v1" / "failures" / String / "retry")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth)
        .then(move |id, st, auth| async move {
            respond(timeout, failures::retry_one(st, auth, id)).await
        });
    let resolve_one = warp::path!("api" / "v1" / "failures" / String / "resolve")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth)
        .and(json_body.clone())
        .then(move |id, st, auth, body| async move {
            respond(timeout, failures::resolve_one(st, auth, id, body)).await
        });
    let list_events = warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(query)
        .then(move |st, auth, q| async move { respond(timeout, events::list(st, auth, q)).await });
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
        });
    let probes = probes::routes(checks, Some(state.storage.clone())).map(Reply::into_response);

    // Grouped by resource, each group boxed: one chain of every route nests
    // a type so deep that the optimised build's trait solver overflows.
    let orders = get_order
        .or(set_status)
        .unify()
        .or(cancel)
        .unify()
        .or(user_orders)
        .unify()
        .or(me)
        .unify()
        .boxed();
    let operator = stats
        .or(list_failures)
        .unify()
        .or(retry_many)
        .unify()
        // Before `get_failure`, whose `{failureId}` would take these names.
        .or(failure_summary)
        .unify()
        .or(failure_reasons)
        .unify()
        .or(get_failure)
        .unify()
        .or(retry_one)
        .unify()
        .or(resolve_one)
        .unify()
        .or(list_events)
        .unify()
        .boxed();
    let documents_and_probes = openapi
        .or(docs::routes())
        .unify()
        .or(console::routes())
        .unify()
        .or(probes)
        .unify()
        .boxed();
    let api = orders.or(operator).unify().or(documents_and_probes).unify();
    api.or(wrong_method()).unify()
        .recover(move |r| recover(r, max_body_bytes))
        .unify()
        .with(warp::log::custom(|info| {
            let method = method_label(info.method());
            let route = template_of(method, info.path());
            let status = info.status().as_u16().to_string();
            metrics::counter!("http_requests_total", "method" => method, "route" => route, "status" => status)
                .increment(1);
            metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
                .record(info.elapsed().as_secs_f64());
        }))
}

/// A body larger than `api.max_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl warp::reject::Reject for BodyTooLarge {}

/// The request body, at most `max` bytes: a declared `Content-Length` over
/// it is refused before reading, a chunked or HTTP/2 body of unknown length
/// as soon as it passes it. A request without a body has an empty one, as
/// HTTP says (no 411).
fn bounded_body(
    max: u64,
) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared, stream| collect_body(declared, stream, max))
}

async fn collect_body<S, B>(
    declared: Option<u64>,
    stream: S,
    max: u64,
) -> Result<bytes::Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    use futures_util::TryStreamExt as _;
    if declared.is_some_and(|n| n > max) {
        return Err(warp::reject::custom(BodyTooLarge));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let mut stream = std::pin::pin!(stream);
    let mut body = bytes::BytesMut::new();
    while let Some(mut chunk) = stream
        .try_next()
        .await
        .map_err(|_| warp::reject::custom(BodyUnreadable))?
    {
        if body.len() + chunk.remaining() > limit {
            return Err(warp::reject::custom(BodyTooLarge));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            body.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

/// A body the client stopped sending midway.
#[derive(Debug)]
pub struct BodyUnreadable;

impl warp::reject::Reject for BodyUnreadable {}

/// The methods [`ROUTES`] serve on a concrete path.
#[must_use]
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods = Vec::new();
    for (method, _) in ROUTES {
        if !methods.contains(method) && template_of(method, path) != "unmatched" {
            methods.push(*method);
        }
    }
    methods
}

/// A known path asked with a method it does not serve: 405, naming the
/// methods it does in `Allow`. Any other request falls through.
fn wrong_method()
-> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path::full().and(warp::method()).and_then(
        |path: warp::path::FullPath, method: warp::http::Method| async move {
            let allowed = allowed_methods(path.as_str());
            if allowed.is_empty() || allowed.contains(&method.as_str()) {
                return Err(warp::reject::not_found());
            }
            Ok(probes::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!(
                    "{method} is not allowed on {}; allowed: {}",
                    path.as_str(),
                    allowed.join(", ")
                ),
                &allowed,
            ))
        },
    )
}

/// Turns warp's rejections into the API's JSON errors.
async fn recover(rejection: Rejection, max_body_bytes: u64) -> Result<Response, Infallible> {
    use warp::reject::{
        InvalidHeader, InvalidQuery, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType,
    };
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".to_owned(),
        )
    } else if rejection.find::<PayloadTooLarge>().is_some()
        || rejection.find::<BodyTooLarge>().is_some()
    {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {max_body_bytes} bytes"),
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint".to_owned(),
        )
    } else if rejection.find::<BodyUnreadable>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read to its end".to_owned(),
        )
    } else if let Some(repeated) = rejection.find::<crate::params::RepeatedParameter>() {
        (StatusCode::BAD_REQUEST, "bad_request", repeated.to_string())
    } else if rejection.find::<InvalidQuery>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid query string".to_owned(),
        )
    } else if let Some(e) = rejection.find::<InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type".to_owned(),
        )
    } else {
        tracing::error!(rejection = ?rejection, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".to_owned(),
        )
    };
    Ok(error_response(status, code, message))
}

/// The metric label of a method: the standard ones by name, any other
/// token `other` (a client cannot create new series).
#[must_use]
pub fn method_label(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_paths_map_to_their_templates() {
        assert_eq!(
            template_of("GET", "/api/v1/orders/0193"),
            "/api/v1/orders/{orderId}"
        );
        assert_eq!(
            template_of("PUT", "/api/v1/orders/x/status"),
            "/api/v1/orders/{orderId}/status"
        );
        assert_eq!(
            template_of("POST", "/api/v1/failures/retry"),
            "/api/v1/failures/retry"
        );
        assert_eq!(
            template_of("POST", "/api/v1/failures/7/retry"),
            "/api/v1/failures/{failureId}/retry"
        );
        assert_eq!(template_of("GET", "/health/ready"), "/health/ready");
        assert_eq!(template_of("GET", "/nope"), "unmatched");
        assert_eq!(template_of("DELETE", "/api/v1/orders/x"), "unmatched");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        use warp::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        for token in ["FOO", "BREW", "X-ANYTHING-1"] {
            assert_eq!(
                method_label(&Method::from_bytes(token.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
