//! Writes: `PUT` (create or fork), `POST` (append and/or close), `DELETE`.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::headers::{
    self, PRODUCER_EPOCH, PRODUCER_SEQ, STREAM_CLOSED, STREAM_FORKED_FROM, STREAM_NEXT_OFFSET, STREAM_SEQ,
};
use super::{ApiError, AppState, STREAM_PREFIX, body, source_path};
use crate::auth::{Access, Denied, Right, identity};
use crate::offset::format_offset;
use crate::storage::{Append, CreateStream, ForkFrom, StreamInfo, rules};

fn set(h: &mut HeaderMap, name: header::HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        h.insert(name, v);
    }
}

/// A body declared JSON is refused at once when a message nests too deep
/// ([`rules::json_text`]), before identity checks or storage see it. (The
/// storage applies the same rule to every JSON-mode body, declared or not.)
fn json_body(body: Bytes, content_type: Option<&str>) -> Result<Bytes, ApiError> {
    if content_type.is_some_and(rules::is_json) && !body.is_empty() {
        rules::json_text(&body)?;
    }
    Ok(body)
}

fn content_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    Ok(headers::text(headers, &header::CONTENT_TYPE)?
        .filter(|v| !v.is_empty())
        .map(str::to_owned))
}

fn describe(h: &mut HeaderMap, info: &StreamInfo) {
    set(h, header::CONTENT_TYPE, &info.content_type);
    set(h, STREAM_NEXT_OFFSET, format_offset(info.tail));
    if info.closed {
        set(h, STREAM_CLOSED, "true");
    }
}

/// With auth on, what creating `path` needs beyond the `create` right:
/// sessions are JSON streams, and a fork into a session must come from a
/// session (whose events were identity-checked when they were written).
pub(crate) fn check_create(
    access: &Access,
    path: &str,
    content_type: Option<&str>,
    fork_source: Option<&str>,
) -> Result<(), Denied> {
    access.check(path, Right::Create)?;
    if let Some(source) = fork_source {
        access.check(source, Right::Read)?;
    }
    if !access.is_enforced() || !path.starts_with(durable_session_protocol::session::SESSIONS_PREFIX) {
        return Ok(());
    }
    if fork_source.is_some_and(|s| !s.starts_with(durable_session_protocol::session::SESSIONS_PREFIX)) {
        return Err(Denied::Forbidden(
            "a session can only be forked from another session".into(),
        ));
    }
    if content_type.is_some_and(|ct| !rules::is_json(ct)) {
        return Err(Denied::BadRequest(
            "a session is a JSON stream (application/json)".into(),
        ));
    }
    Ok(())
}

/// `PUT`: create a stream, fork one, or confirm an identical one.
pub(super) async fn put(state: AppState, path: String, req: Request, access: &Access) -> Result<Response, ApiError> {
    let (parts, raw) = req.into_parts();
    let h = &parts.headers;
    let fork = match headers::text(h, &STREAM_FORKED_FROM)? {
        Some(source) => Some(ForkFrom {
            source: source_path(source)?,
            offset: headers::fork_offset(h)?,
            sub_offset: headers::fork_sub_offset(h)?,
        }),
        None if h.contains_key(headers::STREAM_FORK_OFFSET) || h.contains_key(headers::STREAM_FORK_SUB_OFFSET) => {
            return Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        None => None,
    };
    let content_type = content_type(h)?;
    check_create(
        access,
        &path,
        content_type.as_deref(),
        fork.as_ref().map(|f| f.source.as_str()),
    )?;
    let closed = headers::closed(h);
    let body = json_body(
        body::read(raw, h, state.config.max_body_bytes).await?,
        content_type.as_deref(),
    )?;
    let json = content_type.as_deref().is_none_or(rules::is_json);
    let body = identity::authorize_append(access, &path, body, closed, json)?;
    let create = CreateStream {
        content_type,
        expiry: headers::expiry(h)?,
        closed,
        body,
        fork,
        index_entry: crate::session_index::entry_for(&path),
        path,
    };
    // An absolute URL when the Host is known (clients resolve it either way).
    let url_path = durable_session_protocol::path::encode(&create.path);
    let location = match headers::text(&parts.headers, &header::HOST).ok().flatten() {
        Some(host) => format!("http://{host}{STREAM_PREFIX}{url_path}"),
        None => format!("{STREAM_PREFIX}{url_path}"),
    };
    let created = state.storage.create(create).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut res = status.into_response();
    let h = res.headers_mut();
    describe(h, &created.info);
    if created.created {
        set(h, header::LOCATION, location);
    }
    Ok(res)
}

/// `POST`: append (with optional producer and `Stream-Seq`) and/or close.
pub(super) async fn post(state: AppState, path: String, req: Request, access: &Access) -> Result<Response, ApiError> {
    let (parts, raw) = req.into_parts();
    let h = &parts.headers;
    let content_type = content_type(h)?;
    let close = headers::closed(h);
    // Refuse a request without a token before reading its body.
    if *access == Access::Anonymous {
        access.check(&path, Right::Append)?;
    }
    let body = json_body(
        body::read(raw, h, state.config.max_body_bytes).await?,
        content_type.as_deref(),
    )?;
    let json = content_type.as_deref().is_none_or(rules::is_json);
    let append = Append {
        close,
        stream_seq: headers::text(h, &STREAM_SEQ)?.map(str::to_owned),
        producer: headers::producer(h)?,
        body: identity::authorize_append(access, &path, body, close, json)?,
        content_type,
        path,
    };
    if append.body.is_empty() && !append.close {
        return Err(ApiError::bad_request(
            "empty body: send data to append, or Stream-Closed: true to close",
        ));
    }
    let wrote_data = !append.body.is_empty();
    let appended = state.storage.append(append).await?;
    // 200 marks new data from an idempotent producer; everything else,
    // duplicates and close-only requests included, is 204.
    let status = if appended.producer.is_some() && !appended.duplicate && wrote_data {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut res = status.into_response();
    let h = res.headers_mut();
    set(h, STREAM_NEXT_OFFSET, format_offset(appended.info.tail));
    if appended.info.closed {
        set(h, STREAM_CLOSED, "true");
    }
    if let Some((epoch, seq)) = appended.producer {
        set(h, PRODUCER_EPOCH, epoch.to_string());
        set(h, PRODUCER_SEQ, seq.to_string());
    }
    Ok(res)
}

/// `DELETE`: remove a stream (soft-deleted while forks read from it).
pub(super) async fn delete(state: AppState, path: String) -> Result<Response, ApiError> {
    state.storage.delete(&path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
