//! The reserved `__ds` API under `/v1/stream/` (PROTOCOL.md §6–7): the
//! webhook signing keys and the subscription resources. Thin: the work is in
//! [`crate::subscriptions`].
//!
//! With access control on, managing or claiming a subscription needs the
//! `agent` right on its pattern (as a path: a `prefix/*` grant covering the
//! pattern's literal part), on each of its streams and on its wake stream.
//! Callbacks, acks and releases carry the wake's own token instead.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, access, body};
use crate::auth::{Access, Denied, Right};
use crate::subscriptions::spec::{self, Spec};
use crate::subscriptions::{AckBody, SubError, Subscriptions};

/// Largest body of a subscription request.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Answers a request for `/v1/stream/__ds/{rest}`.
pub(super) async fn handle(state: AppState, rest: &str, req: Request) -> Response {
    let result = route(state, rest, req).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(state: AppState, rest: &str, req: Request) -> Result<Response, SubError> {
    let method = req.method().clone();
    let Some(subs) = state.subscriptions.clone() else {
        return Err(SubError::not_found_with("subscriptions are not enabled on this server"));
    };
    if rest == "jwks.json" {
        if method != Method::GET && method != Method::HEAD {
            return Err(method_not_allowed());
        }
        let jwks = serde_json::to_vec(&subs.jwks()).unwrap_or_default();
        return Ok((
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            jwks,
        )
            .into_response());
    }
    let Some(rest) = rest.strip_prefix("subscriptions/") else {
        return Err(SubError::not_found_with("no such endpoint"));
    };
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    spec::check_id(id)?;
    let (parts, body) = req.into_parts();
    let read_body = || async {
        body::read(body, &parts.headers, MAX_BODY_BYTES)
            .await
            .map_err(|e| SubError::bad_request(e.message))
    };
    match (action, &method) {
        ("", &Method::PUT) => {
            let access = access_of(&state, &parts.headers)?;
            let body = read_body().await?;
            let cfg = subs.config();
            let spec = Spec::parse(&body, &cfg.targets, cfg.max_streams)?;
            authorize(&access, &spec, &[])?;
            let base = base_url(cfg.public_url.as_deref(), &parts.headers);
            let (status, view) = subs.put(id, spec, base).await?;
            subs.persisted().await?;
            Ok(json(status, &view))
        }
        ("", &Method::GET) => {
            authorize_existing(&state, &subs, id, &parts.headers, &[])?;
            Ok(json(StatusCode::OK, &subs.get(id)?))
        }
        ("", &Method::DELETE) => {
            authorize_existing(&state, &subs, id, &parts.headers, &[])?;
            subs.delete(id)?;
            subs.persisted().await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("streams", &Method::POST) => {
            #[derive(Deserialize)]
            struct Streams {
                streams: Vec<String>,
            }
            let body = read_body().await?;
            let streams: Streams =
                serde_json::from_slice(&body).map_err(|e| SubError::bad_request(format!("bad body: {e}")))?;
            spec::check_streams(&streams.streams, subs.config().max_streams)?;
            authorize_existing(&state, &subs, id, &parts.headers, &streams.streams)?;
            subs.add_streams(id, &streams.streams).await?;
            subs.persisted().await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("claim", &Method::POST) => {
            #[derive(Deserialize)]
            struct Claim {
                worker: String,
            }
            authorize_existing(&state, &subs, id, &parts.headers, &[])?;
            let body = read_body().await?;
            let claim: Claim =
                serde_json::from_slice(&body).map_err(|e| SubError::bad_request(format!("bad body: {e}")))?;
            if claim.worker.is_empty() || claim.worker.len() > spec::MAX_FIELD_BYTES {
                return Err(SubError::bad_request("worker must be 1 to 1024 bytes"));
            }
            Ok(json(StatusCode::OK, &subs.claim(id, &claim.worker)?))
        }
        ("callback" | "ack", &Method::POST) => {
            let token = bearer(&parts.headers);
            let body = read_body().await?;
            let ack: AckBody =
                serde_json::from_slice(&body).map_err(|e| SubError::bad_request(format!("bad body: {e}")))?;
            if ack.acks.len() > subs.config().max_streams {
                return Err(SubError::too_many_streams(subs.config().max_streams));
            }
            let answer = subs.ack(id, token.as_deref(), ack)?;
            subs.persisted().await?;
            Ok(json(StatusCode::OK, &answer))
        }
        ("release", &Method::POST) => {
            #[derive(Deserialize)]
            struct Release {
                wake_id: String,
                generation: u64,
            }
            let token = bearer(&parts.headers);
            let body = read_body().await?;
            let r: Release =
                serde_json::from_slice(&body).map_err(|e| SubError::bad_request(format!("bad body: {e}")))?;
            subs.release(id, token.as_deref(), &r.wake_id, r.generation)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (action, &Method::DELETE) if action.starts_with("streams/") => {
            let path = &action["streams/".len()..];
            spec::check_stream(path)?;
            authorize_existing(&state, &subs, id, &parts.headers, &[])?;
            subs.remove_stream(id, path)?;
            subs.persisted().await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("" | "streams" | "claim" | "callback" | "ack" | "release", _) => Err(method_not_allowed()),
        _ => Err(SubError::not_found_with("no such endpoint")),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(value)).into_response()
}

fn method_not_allowed() -> SubError {
    let mut e = SubError::bad_request("method not allowed here");
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.code = "METHOD_NOT_ALLOWED";
    e
}

/// The request's bearer token (a callback or claim token).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if value.len() > crate::auth::MAX_TOKEN_BYTES {
        return None;
    }
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
}

fn denied(d: Denied) -> SubError {
    match d {
        Denied::Unauthorized(m) => SubError::unauthorized(m),
        Denied::Forbidden(m) => {
            let mut e = SubError::bad_request(m);
            e.status = StatusCode::FORBIDDEN;
            e.code = "FORBIDDEN";
            e
        }
        Denied::BadRequest(m) => SubError::bad_request(m),
    }
}

fn access_of(state: &AppState, headers: &HeaderMap) -> Result<Access, SubError> {
    access::of_headers(&state.config, headers).map_err(denied)
}

/// The `agent` right on everything the subscription reads and writes.
fn authorize(access: &Access, spec: &Spec, more: &[String]) -> Result<(), SubError> {
    let paths = spec
        .pattern
        .iter()
        .chain(&spec.streams)
        .chain(&spec.wake_stream)
        .chain(more);
    for path in paths {
        access.check(path, Right::Agent).map_err(denied)?;
    }
    Ok(())
}

fn authorize_existing(
    state: &AppState,
    subs: &Subscriptions,
    id: &str,
    headers: &HeaderMap,
    more: &[String],
) -> Result<(), SubError> {
    let access = access_of(state, headers)?;
    if !access.is_enforced() {
        return Ok(());
    }
    // Whether it exists is not told to those without rights on it.
    let spec = subs.spec(id).ok_or_else(|| {
        if matches!(access, Access::Anonymous) {
            SubError::unauthorized("an access token is required")
        } else {
            SubError::not_found()
        }
    })?;
    authorize(&access, &spec, more)
}

/// The server's base URL: `--public-url`, else `http://` and the `Host`.
fn base_url(public: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(public) = public {
        return public.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.len() <= 255 && !h.contains(['/', '@', ' ']))
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}
