//! The HTTP link: the frame model of `/v1/ws` carried out with plain
//! Durable Streams HTTP requests, so the same core works against any
//! Durable Streams server.
//!
//! `subscribe` becomes a catch-up `GET` followed by long-polls (offsets from
//! `Stream-Next-Offset`), `append` a `POST` with the idempotent-producer
//! headers, `create` a `PUT`, `ping` is answered at once. Every request
//! carries the client's current token (`Authorization: Bearer`), read when
//! the request starts, so a refreshed token is used from the next request
//! (the next long-poll) on and `auth` needs no request.
//!
//! Error statuses become the codes a WebSocket server would send
//! ([`ErrorCode::from_http_status`]) and are classified by the core
//! ([`crate::core::errors::classify`]): a network failure, a 5xx (a proxy's
//! 502/503/504 included), 429 or 408 is a transient fault of the link — the
//! core drops it, shows `disconnected` with the reason (`HTTP 503`), waits
//! (backoff, at least the `Retry-After`), probes the server with a `HEAD`
//! before reporting the link open again, then resumes every subscription
//! from its offset and resends unacknowledged appends, exactly as over
//! WebSocket. Other statuses end that subscription or fail that append.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use durable_session_protocol::ws::{ClientMsg, ErrorCode, HttpHints, Message, Payload, ServerMsg};
use gloo_timers::callback::Timeout;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, Headers, RequestCache, RequestInit, Response};

use super::client::{Inner, deliver, opened};
use super::socket::js_error_text;
use crate::core::errors::{ErrorClass, classify, retry_after_ms};
use crate::core::http_read::{HttpFollow, ReadReply};
use crate::core::outbox::StreamKind;

/// A transient failure of the link: the core retries with backoff.
pub(crate) struct Fault {
    pub(crate) reason: String,
    pub(crate) retry_after_ms: Option<u64>,
    /// No answer within the request's deadline ([`deadline_ms`]).
    timed_out: bool,
}

impl Fault {
    fn network(e: String) -> Self {
        Self {
            reason: e,
            retry_after_ms: None,
            timed_out: false,
        }
    }
}

/// The slowest link served, in bytes per millisecond (16 KB/s): a request
/// gets this long to move its bytes on top of the heartbeat timeout.
const MIN_BYTES_PER_MS: u64 = 16;

/// How long a request carrying `bytes` (its body going up, or its answer
/// coming down) may take. A connection that stops moving bytes without
/// closing — a half-open link, a black-holed proxy — never fails a fetch
/// by itself: past this deadline it is aborted and counts as a transient
/// fault, as a missed heartbeat does on the WebSocket.
fn deadline_ms(heartbeat_timeout_ms: u64, bytes: usize) -> u32 {
    let ms = heartbeat_timeout_ms.saturating_add(bytes as u64 / MIN_BYTES_PER_MS);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

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
    /// The body: text, or for a binary stream's read its bytes in base64.
    body: String,
    /// `body` holds bytes (in base64).
    binary: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }
}

fn stream_url(base: &str, path: &str) -> String {
    format!("{base}/v1/stream/{}", durable_session_protocol::path::encode(path))
}

/// A request body and its length in bytes.
type Body = Option<(JsValue, usize)>;

async fn fetch(
    client: &Weak<RefCell<Inner>>,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Body,
    abort: Option<&AbortController>,
) -> Result<Reply, Fault> {
    let js_fault = |e: JsValue| Fault::network(js_error_text(&e));
    let init = RequestInit::new();
    init.set_method(method);
    init.set_cache(RequestCache::NoStore);
    let h = Headers::new().map_err(js_fault)?;
    for (name, value) in headers {
        h.set(name, value).map_err(js_fault)?;
    }
    let (token, heartbeat_ms) = match client.upgrade() {
        Some(rc) => {
            let inner = rc.borrow();
            (
                inner.core.token().map(str::to_owned),
                inner.core.options().heartbeat_timeout_ms,
            )
        }
        None => return Err(Fault::network("client closed".into())),
    };
    if let Some(token) = token {
        h.set("authorization", &format!("Bearer {token}")).map_err(js_fault)?;
    }
    init.set_headers(&h);
    let body_len = body.as_ref().map_or(0, |(_, len)| *len);
    if let Some((body, _)) = body {
        init.set_body(&body);
    }
    // This request's own deadline, and the caller's abort (the
    // subscription ended), whichever comes first.
    let request = AbortController::new().map_err(js_fault)?;
    let signal = match abort {
        Some(abort) => AbortSignal::any(&js_sys::Array::of2(&abort.signal(), &request.signal())),
        None => request.signal(),
    };
    init.set_signal(Some(&signal));
    let timed_out = Rc::new(Cell::new(None));
    let arm = |ms: u32| {
        let (request, timed_out) = (request.clone(), timed_out.clone());
        Timeout::new(ms, move || {
            timed_out.set(Some(ms));
            request.abort();
        })
    };
    let failed = |e: JsValue| match timed_out.get() {
        Some(ms) => Fault {
            reason: format!("no answer within {ms} ms"),
            retry_after_ms: None,
            timed_out: true,
        },
        None => Fault::network(format!("network error: {}", js_error_text(&e))),
    };
    // Until the answer's headers, then until the end of its body.
    let headers_due = arm(deadline_ms(heartbeat_ms, body_len));
    let window = web_sys::window().ok_or_else(|| Fault::network("no window".into()))?;
    let response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(failed)?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| Fault::network("not a response".into()))?;
    let length = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    drop(headers_due);
    let body_due = arm(deadline_ms(heartbeat_ms, length));
    // A successful read of a stream that is not text comes as bytes.
    let binary = method == "GET"
        && response.ok()
        && response
            .headers()
            .get("content-type")
            .ok()
            .flatten()
            .is_some_and(|t| StreamKind::of(&t) == StreamKind::Bytes);
    let read = if binary {
        response.array_buffer()
    } else {
        response.text()
    };
    let value = JsFuture::from(read.map_err(js_fault)?).await.map_err(failed)?;
    drop(body_due);
    let body = if binary {
        super::to_base64(&js_sys::Uint8Array::new(&value).to_vec())
    } else {
        value.as_string().unwrap_or_default()
    };
    Ok(Reply {
        status: response.status(),
        headers: response.headers(),
        body,
        binary,
    })
}

/// The code and message of a failed request, or the transient fault it is.
fn error_for(reply: &Reply) -> Result<(ErrorCode, String), Fault> {
    let hints = HttpHints {
        producer_epoch: reply.header("producer-epoch").is_some(),
        stream_closed: reply
            .header("stream-closed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        expected_seq: reply.header("producer-expected-seq").is_some(),
    };
    let code = ErrorCode::from_http_status(reply.status, hints);
    let status = format!("HTTP {}", reply.status);
    if classify(code) == ErrorClass::Transient {
        return Err(Fault {
            reason: status,
            retry_after_ms: reply.header("retry-after").and_then(|v| retry_after_ms(&v)),
            timed_out: false,
        });
    }
    let message = reply.body.trim_ascii();
    let message = if message.is_empty() { status } else { message.to_owned() };
    Ok((code, message))
}

/// A finished request: the frame to deliver (an `ack` for a success
/// status, else an `error` for `req`), or the transient fault.
fn answer(
    req: String,
    reply: Result<Reply, Fault>,
    ok: impl FnOnce(String, &Reply) -> Option<ServerMsg>,
) -> Result<ServerMsg, Fault> {
    let reply = reply?;
    if let Some(frame) = ok(req.clone(), &reply) {
        return Ok(frame);
    }
    let (code, message) = error_for(&reply)?;
    Ok(ServerMsg::Error {
        sub: None,
        req: Some(req),
        code,
        message,
    })
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
            payload: if reply.binary {
                Payload::Base64(reply.body.clone())
            } else {
                Payload::Text(reply.body.clone())
            },
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
                    let frame = answer(req, reply, |req, r| {
                        matches!(r.status, 200 | 201).then(|| ack(req, r, r.status == 200))
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
                    // A text or binary stream's own content type (set when
                    // it was opened), which its appends must carry.
                    let own = client
                        .upgrade()
                        .and_then(|rc| rc.borrow().core.content_type(&path).map(str::to_owned));
                    let (content_type, body): (&str, Body) = match &payload {
                        Some(Payload::Json(raw)) => ("application/json", Some((raw.as_str().into(), raw.len()))),
                        Some(Payload::Text(t)) => ("text/plain", Some((t.as_str().into(), t.len()))),
                        Some(Payload::Base64(b)) => {
                            let bytes = super::from_base64(b).unwrap_or_default();
                            let len = bytes.len();
                            (
                                "application/octet-stream",
                                Some((js_sys::Uint8Array::from(&bytes[..]).into(), len)),
                            )
                        }
                        None => ("application/json", None),
                    };
                    let has_body = body.is_some();
                    let content_type = match (&payload, own) {
                        (Some(Payload::Text(_) | Payload::Base64(_)), Some(own)) => own,
                        _ => content_type.to_owned(),
                    };
                    let mut headers = vec![("content-type", content_type)];
                    if let Some(p) = &producer {
                        headers.push(("producer-id", p.id.clone()));
                        headers.push(("producer-epoch", p.epoch.to_string()));
                        headers.push(("producer-seq", p.seq.to_string()));
                    }
                    if close {
                        headers.push(("stream-closed", "true".into()));
                    }
                    let url = stream_url(&base, &path);
                    let reply = fetch(&client, "POST", &url, &headers, body, None).await;
                    let frame = answer(req, reply, |req, r| {
                        // 204 with producer headers and a body marks a duplicate.
                        let duplicate = r.status == 204 && producer.is_some() && has_body;
                        matches!(r.status, 200 | 204).then(|| ack(req, r, duplicate))
                    });
                    send_back(&client, generation, frame);
                });
                None
            }
        }
    }
}

fn base_of(client: &Weak<RefCell<Inner>>) -> Option<String> {
    client.upgrade().map(|rc| rc.borrow().http_base().to_owned())
}

fn send_back(client: &Weak<RefCell<Inner>>, generation: u64, frame: Result<ServerMsg, Fault>) {
    if let Some(rc) = client.upgrade() {
        deliver(&rc, generation, frame);
    }
}

/// Asks the server whether it answers (a `HEAD` of `path`) before the link
/// is reported open again after transient faults: any answer but a
/// transient one opens it; a transient one is another fault.
pub(crate) fn probe(client: Weak<RefCell<Inner>>, generation: u64, path: String) {
    wasm_bindgen_futures::spawn_local(async move {
        let Some(base) = base_of(&client) else { return };
        let reply = fetch(&client, "HEAD", &stream_url(&base, &path), &[], None, None).await;
        let fault = match reply {
            Ok(r) if r.status < 400 => None,
            Ok(r) => error_for(&r).err(),
            Err(fault) => Some(fault),
        };
        match (fault, client.upgrade()) {
            (Some(fault), _) => send_back(&client, generation, Err(fault)),
            (None, Some(rc)) => opened(&rc, generation),
            (None, None) => {}
        }
    });
}

/// Catch-up reads until up to date, then long-polls, forever (until aborted
/// or the link is replaced); what to ask and what each answer means is the
/// core's [`HttpFollow`].
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
    let mut follow = HttpFollow::new(sub, offset);
    loop {
        let reply = fetch(
            &client,
            "GET",
            &format!("{url}?{}", follow.query()),
            &[],
            None,
            Some(&abort),
        )
        .await;
        if abort.signal().aborted() {
            return;
        }
        let reply = match reply {
            Ok(r) => r,
            // A long-poll that outlived its deadline: the stream was quiet
            // (the server holds a long-poll up to its own timeout), or the
            // link is dead. A plain read, answered at once by a live
            // server, tells which.
            Err(fault) if fault.timed_out && follow.timed_out() => continue,
            Err(fault) => return send_back(&client, generation, Err(fault)),
        };
        let outcome = if matches!(reply.status, 200 | 204) {
            Ok(ReadReply {
                next: reply.header("stream-next-offset"),
                up_to_date: reply.header("stream-up-to-date").is_some() || reply.status == 204,
                closed: reply
                    .header("stream-closed")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                cursor: reply.header("stream-cursor"),
                messages: messages_of(&reply),
            })
        } else {
            match error_for(&reply) {
                Ok(error) => Err(error),
                Err(fault) => return send_back(&client, generation, Err(fault)),
            }
        };
        let (frame, go_on) = follow.on_reply(outcome);
        if let Some(frame) = frame {
            send_back(&client, generation, Ok(frame));
        }
        if !go_on {
            return;
        }
    }
}
