//! Errors as HTTP responses: a status, a short plain-text message, and the
//! protocol headers a client needs to react without parsing the body.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::headers::{PRODUCER_EPOCH, PRODUCER_EXPECTED_SEQ, PRODUCER_RECEIVED_SEQ, STREAM_CLOSED, STREAM_NEXT_OFFSET};
use crate::auth::Denied;
use crate::offset::format_offset;
use crate::storage::StoreError;

/// An error answer to a request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound | StoreError::ForkSourceNotFound => Self::new(StatusCode::NOT_FOUND, message),
            StoreError::Gone => Self::new(StatusCode::GONE, message),
            StoreError::Closed { tail } => Self::new(StatusCode::CONFLICT, message)
                .with_header(STREAM_CLOSED, "true")
                .with_header(STREAM_NEXT_OFFSET, format_offset(tail)),
            StoreError::ContentTypeMismatch { .. }
            | StoreError::ConfigMismatch(_)
            | StoreError::SeqRegression { .. }
            | StoreError::ForkSourceGone => Self::new(StatusCode::CONFLICT, message),
            StoreError::StaleEpoch { current } => {
                Self::new(StatusCode::FORBIDDEN, message).with_header(PRODUCER_EPOCH, current)
            }
            StoreError::SeqGap { expected, received } => Self::new(StatusCode::CONFLICT, message)
                .with_header(PRODUCER_EXPECTED_SEQ, expected)
                .with_header(PRODUCER_RECEIVED_SEQ, received),
            StoreError::BadRequest(_) | StoreError::OffsetBeyondTail => Self::new(StatusCode::BAD_REQUEST, message),
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "storage failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal storage error")
            }
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let unauthorized = matches!(d, Denied::Unauthorized(_));
        let e = Self::new(d.status(), d.message());
        if unauthorized {
            e.with_header(header::WWW_AUTHENTICATE, "Bearer")
        } else {
            e
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, format!("{}\n", self.message)).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        res
    }
}
