//! The API's one error type: each variant is an HTTP outcome, rendered as
//! `{"error":{"code":"…","message":"…"}}`. Internal detail is logged, never sent.

use order_core::service::{FailureError, OrderError};
use order_core::storage::StorageError;
use warp::http::StatusCode;
use warp::reply::Response;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credential (says what is wrong with it).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller is known and not allowed (or operator endpoints are off).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: refused by the state of the resource.
    #[error("{0}")]
    Conflict(String),
    /// 503: a dependency (the database) does not answer.
    #[error("the database is unavailable, try again later")]
    Unavailable,
    /// 503: the request took longer than `server.write_timeout`.
    #[error("the request timed out")]
    Timeout,
    /// 500: a bug or an unexpected dependency error (logged).
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON response.
    #[must_use]
    pub fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        error_response(self.status(), self.code(), self.to_string())
    }
}

/// A JSON error response with any status (also used for warp's rejections);
/// the shape is the one of every server of the service
/// ([`order_runtime::probes::error_response`]).
#[must_use]
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = order_runtime::probes::error_response(status, code, &message, &[]);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            warp::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound(_) => Self::NotFound(e.to_string()),
            OrderError::Forbidden(why) => Self::Forbidden(why),
            OrderError::Transition(t) => Self::Conflict(t.to_string()),
            OrderError::Storage(e) => e.into(),
        }
    }
}

impl From<FailureError> for ApiError {
    fn from(e: FailureError) -> Self {
        match e {
            FailureError::NotFound(_) => Self::NotFound(e.to_string()),
            FailureError::Refused(why) => Self::Conflict(why),
            FailureError::Invalid(why) => Self::BadRequest(why),
            FailureError::Storage(e) => e.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) | StorageError::Unreachable { .. } => Self::Unavailable,
            StorageError::TimedOut(_) => Self::Timeout,
            StorageError::NotFound => Self::NotFound("not found".into()),
            StorageError::Transition(t) => Self::Conflict(t.to_string()),
            StorageError::Invalid(m) => Self::BadRequest(m),
            other => Self::Internal(other.to_string()),
        }
    }
}
