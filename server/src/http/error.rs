//! Errors as HTTP responses: a status, a short plain-text message, and the
//! protocol headers a client needs to react without parsing the body.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use durable_session_protocol::ws::ErrorCode;

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

    /// An error with the status of a protocol error code
    /// ([`ErrorCode::http_status`]).
    pub fn of_code(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, message)
    }

    /// `400 Bad Request` (`bad_request`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::of_code(ErrorCode::BadRequest, message)
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
        if let StoreError::Internal(detail) = &e {
            tracing::error!(%detail, "storage failure");
            return Self::of_code(e.code(), "internal storage error");
        }
        let error = Self::of_code(e.code(), e.to_string());
        match e {
            StoreError::Closed { tail } => error
                .with_header(STREAM_CLOSED, "true")
                .with_header(STREAM_NEXT_OFFSET, format_offset(tail)),
            StoreError::StaleEpoch { current } => error.with_header(PRODUCER_EPOCH, current),
            StoreError::SeqGap { expected, received } => error
                .with_header(PRODUCER_EXPECTED_SEQ, expected)
                .with_header(PRODUCER_RECEIVED_SEQ, received),
            _ => error,
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let unauthorized = matches!(d, Denied::Unauthorized(_));
        let e = Self::of_code(d.code(), d.message());
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
