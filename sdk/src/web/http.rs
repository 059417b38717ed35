//! The HTTP link: the frame model of `/v1/ws` carried out with plain
//! Durable Streams HTTP requests, so the same core works against any
//! Durable Streams server.
//!
//! `subscribe` becomes a catch-up `GET` followed by long-polls (offsets from
//! `Stream-Next-Offset`), `append` a `POST` with the idempotent-producer
//! headers, `create` a `PUT`, `ping` is answered at once. Every request
//! carries the client's current token (`Authorization: Bearer`), read when
//! the request starts, so a refreshed token is used from the next request
//! (the next long-poll) on and `auth` needs no request. A network failure
//! of any request is reported as a lost link: the core then reconnects and
//! resumes every subscription from its offset and resends unacknowledged
//! appends, exactly as over WebSocket.

use std::cell::RefCell;
use std::rc::Weak;

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ServerMsg};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, RequestCache, RequestInit, Response};

use super::client::{Inner, deliver};
use super::socket::js_error_text;

/// Requests of one link (one "connection").
pub(crate) struct HttpLink {
    client: Weak<RefCell<Inner>>,
    generation: u64,
    subs: Vec<(String, AbortController)>,
}

impl Drop for HttpLink {
    fn drop(&mut self) {
        for (_, abort) in self.subs.drain(..) {
            abort.abort();
        }
    }
}

/// A finished HTTP exchange.
struct Reply {
    status: u16,
    headers: Headers,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }
}

fn stream_url(base: &str, path: &str) -> String {
    format!("{base}/v1/stream/{}", durable_session_protocol::path::encode(path))
}

async fn fetch(
    client: &Weak<RefCell<Inner>>,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
    abort: Option<&AbortController>,
) -> Result<Reply, String> {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_cache(RequestCache::NoStore);
    let h = Headers::new().map_err(|e| js_error_text(&e))?;
    for (name, value) in headers {
        h.set(name, value).map_err(|e| js_error_text(&e))?;
    }
    if let Some(token) = client
        .upgrade()
        .and_then(|rc| rc.borrow().core.token().map(str::to_owned))
    {
        h.set("authorization", &format!("Bearer {token}"))
            .map_err(|e| js_error_text(&e))?;
    }
    init.set_headers(&h);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    if let Some(abort) = abort {
        init.set_signal(Some(&abort.signal()));
    }
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| format!("network error: {}", js_error_text(&e)))?;
    let response: Response = response.dyn_into().map_err(|_| "not a response".to_owned())?;
    let text = JsFuture::from(response.text().map_err(|e| js_error_text(&e))?)
        .await
        .map_err(|e| format!("network error: {}", js_error_text(&e)))?;
    Ok(Reply {
        status: response.status(),
        headers: response.headers(),
        body: text.as_string().unwrap_or_default(),
    })
}

/// The error frame for a failed request.
fn error_for(reply: &Reply) -> (ErrorCode, String) {
    let stale_epoch = reply.header("producer-epoch");
    let code = match reply.status {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        410 => ErrorCode::Gone,
        409 if reply
            .header("stream-closed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")) =>
        {
            ErrorCode::Closed
        }
        409 if reply.header("producer-expected-seq").is_some() => ErrorCode::SeqGap,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::TooLarge,
        _ => ErrorCode::Internal,
    };
    let message = reply.body.trim_ascii();
    let message = match stale_epoch {
        // Worded so the outbox tells a fenced producer from an access refusal.
        Some(current) if reply.status == 403 => format!("producer epoch is stale (current epoch is {current})"),
        _ if message.is_empty() => format!("HTTP {}", reply.status),
        _ => message.to_owned(),
    };
    (code, message)
}

/// The `ack` for a successful request.
fn ack(req: String, reply: &Reply, duplicate: bool) -> ServerMsg {
    ServerMsg::Ack {
        req,
        offset: reply.header("stream-next-offset").unwrap_or_default(),
        duplicate,
        closed: reply.header("stream-closed").is_some(),
    }
}

/// The `error` for a failed request.
fn failed(req: String, reply: &Reply) -> ServerMsg {
    let (code, message) = error_for(reply);
    ServerMsg::Error {
        sub: None,
        req: Some(req),
        code,
        message,
    }
}

/// The messages of a read response.
fn messages_of(reply: &Reply) -> Vec<Message> {
    let json = reply
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
    if reply.body.is_empty() {
        return Vec::new();
    }
    if json {
        let Ok(parsed) = durable_session_protocol::json::parse(&reply.body) else {
            return Vec::new();
        };
        parsed
            .array()
            .unwrap_or_default()
            .iter()
            .map(|item| Message {
                offset: String::new(),
                payload: Payload::Json(item.raw.to_owned()),
            })
            .collect()
    } else {
        vec![Message {
            offset: String::new(),
            payload: Payload::Text(reply.body.clone()),
        }]
    }
}

impl HttpLink {
    pub(crate) fn new(client: Weak<RefCell<Inner>>, generation: u64) -> Self {
        Self {
            client,
            generation,
            subs: Vec::new(),
        }
    }

    /// Carries out a frame. Returns an immediate answer, if any; others are
    /// delivered later.
    pub(crate) fn handle(&mut self, msg: ClientMsg) -> Option<ServerMsg> {
        // `handle` runs while the client is borrowed; the requests start
        // later (spawn_local), when they may read the client again.
        match msg {
            ClientMsg::Ping { t } => Some(ServerMsg::Pong { t }),
            // The token is read by each request as it starts.
            ClientMsg::Pong { .. } | ClientMsg::Auth { .. } => None,
            ClientMsg::Unsubscribe { sub } => {
                self.subs.retain(|(s, abort)| {
                    if *s == sub {
                        abort.abort();
                    }
                    *s != sub
                });
                Some(ServerMsg::Unsubscribed { sub })
            }
            ClientMsg::Subscribe { sub, path, offset } => {
                let abort = AbortController::new().ok()?;
                self.subs.push((sub.clone(), abort.clone()));
                let (client, generation) = (self.client.clone(), self.generation);
                wasm_bindgen_futures::spawn_local(read_loop(client, generation, sub, path, offset, abort));
                None
            }
            ClientMsg::Create {
                req,
                path,
                content_type,
            } => {
                let (client, generation) = (self.client.clone(), self.generation);
                wasm_bindgen_futures::spawn_local(async move {
                    let Some(base) = base_of(&client) else { return };
                    let ct = content_type.unwrap_or_else(|| "application/json".into());
                    let url = stream_url(&base, &path);
                    let reply = fetch(&client, "PUT", &url, &[("content-type", ct)], None, None).await;
                    let frame = reply.map(|r| match r.status {
                        200 | 201 => ack(req, &r, r.status == 200),
                        _ => failed(req, &r),
                    });
                    send_back(&client, generation, frame);
                });
                None
            }
            ClientMsg::Append {
                req,
                path,
                payload,
                producer,
                close,
            } => {
                let (client, generation) = (self.client.clone(), self.generation);
                wasm_bindgen_futures::spawn_local(async move {
                    let Some(base) = base_of(&client) else { return };
                    let (content_type, body) = match &payload {
                        Some(Payload::Json(raw)) => ("application/json", Some(raw.clone())),
                        Some(Payload::Text(t)) => ("text/plain", Some(t.clone())),
                        Some(Payload::Base64(_)) | None => ("application/json", None),
                    };
                    let mut headers = vec![("content-type", content_type.to_owned())];
                    if let Some(p) = &producer {
                        headers.push(("producer-id", p.id.clone()));
                        headers.push(("producer-epoch", p.epoch.to_string()));
                        headers.push(("producer-seq", p.seq.to_string()));
                    }
                    if close {
                        headers.push(("stream-closed", "true".into()));
                    }
                    let url = stream_url(&base, &path);
                    let reply = fetch(&client, "POST", &url, &headers, body.as_deref(), None).await;
                    let frame = reply.map(|r| match r.status {
                        // 204 with producer headers and a body marks a duplicate.
                        200 | 204 => ack(req, &r, r.status == 204 && producer.is_some() && body.is_some()),
                        _ => failed(req, &r),
                    });
                    send_back(&client, generation, frame);
                });
                None
            }
        }
    }
}

fn base_of(client: &Weak<RefCell<Inner>>) -> Option<String> {
    client.upgrade().map(|rc| rc.borrow().http_base.clone())
}

fn send_back(client: &Weak<RefCell<Inner>>, generation: u64, frame: Result<ServerMsg, String>) {
    if let Some(rc) = client.upgrade() {
        deliver(&rc, generation, frame);
    }
}

/// Catch-up reads until up to date, then long-polls, forever (until aborted
/// or the link is replaced).
async fn read_loop(
    client: Weak<RefCell<Inner>>,
    generation: u64,
    sub: String,
    path: String,
    offset: String,
    abort: AbortController,
) {
    let Some(base) = base_of(&client) else { return };
    let url = stream_url(&base, &path);
    let mut offset = offset;
    let mut cursor: Option<String> = None;
    let mut live = false;
    let mut announced = false;
    loop {
        let mut query = format!("offset={}", js_sys::encode_uri_component(&offset));
        if live {
            query.push_str("&live=long-poll");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={}", js_sys::encode_uri_component(c)));
            }
        }
        let reply = fetch(&client, "GET", &format!("{url}?{query}"), &[], None, Some(&abort)).await;
        if abort.signal().aborted() {
            return;
        }
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return send_back(&client, generation, Err(e)),
        };
        if !matches!(reply.status, 200 | 204) {
            let (code, message) = error_for(&reply);
            let code = if code == ErrorCode::BadRequest {
                ErrorCode::BadOffset
            } else {
                code
            };
            return send_back(
                &client,
                generation,
                Ok(ServerMsg::Error {
                    sub: Some(sub),
                    req: None,
                    code,
                    message,
                }),
            );
        }
        let next = reply.header("stream-next-offset").unwrap_or_else(|| offset.clone());
        let up_to_date = reply.header("stream-up-to-date").is_some() || reply.status == 204;
        let closed = reply
            .header("stream-closed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        cursor = reply.header("stream-cursor").or(cursor);
        let messages = messages_of(&reply);
        if !messages.is_empty() || !announced || closed {
            announced = true;
            let frame = ServerMsg::Events {
                sub: sub.clone(),
                messages,
                next: next.clone(),
                up_to_date,
                closed,
            };
            send_back(&client, generation, Ok(frame));
        }
        if closed {
            return;
        }
        offset = next;
        live = up_to_date;
    }
}
