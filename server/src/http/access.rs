//! Who a request is: the `Authorization: Bearer` token of an HTTP request,
//! verified against the configured keys, and the browser-origin allowlist.

use axum::http::{HeaderMap, header};

use crate::auth::{Access, Denied, MAX_TOKEN_BYTES};
use crate::config::{AuthMode, ServerConfig};

/// The access of a request with these headers. A token that is present but
/// not valid is refused (`401`), never treated as anonymous.
pub fn of_headers(config: &ServerConfig, headers: &HeaderMap) -> Result<Access, Denied> {
    let keys = match &config.auth {
        AuthMode::None => return Ok(Access::Open),
        AuthMode::Jwt(keys) => keys,
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Access::Anonymous);
    };
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(Denied::Unauthorized("the Authorization header is too long".into()));
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| Denied::Unauthorized("Authorization must be \"Bearer <token>\"".into()))?;
    keys.verify(token).map(Access::Token)
}

/// Whether the request's `Origin` (if any) may use this server.
pub fn origin_allowed(config: &ServerConfig, headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    config.allowed_origins.allows(text(header::ORIGIN), text(header::HOST))
}
