//! `/v1/ws`: one WebSocket multiplexing subscriptions and appends
//! (specified in `docs/protocol.md`).
//!
//! Each connection has a reader loop (frames in, heartbeats), a writer task
//! (frames out, through a byte-bounded queue: a client that falls too far
//! behind is closed as a slow consumer and resumes from its offsets), one task
//! per subscription (catch-up then live, by offset, so the boundary between
//! them has no gap and no duplicate), and one task applying appends in the
//! order they arrived.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use durable_session_protocol::json::{self, MAX_MESSAGE_DEPTH};
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ProducerIds, ServerMsg, close};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ApiError, AppState, access, validate_path};
use crate::auth::{Access, Denied, Principal, Right, identity};
use crate::config::AuthMode;
use crate::offset::{StartAt, format_offset, parse_start};
use crate::storage::{Append, Chunk, CreateStream, Expiry, Producer, Read, Storage, StoreError, rules};

/// `GET /v1/ws`: upgrades to the WebSocket protocol.
pub(super) async fn upgrade(State(state): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if !access::origin_allowed(&state.config, &headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this origin may not open a WebSocket here (see --allow-origin)",
        )
        .into_response();
    }
    state
        .stats
        .ws_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hard_limit = state.config.max_body_bytes.max(state.config.ws_max_frame_bytes);
    // Small socket buffers (the defaults are 128 KiB each way): an idle
    // subscriber should cost kilobytes, not a quarter megabyte. Larger
    // frames still pass; the buffers grow while they do.
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(1024)
        .write_buffer_size(1024)
        .on_upgrade(move |socket| run(state, socket))
}

/// What the writer task sends.
enum Out {
    Frame(String),
    Close(u16, &'static str),
}

/// The sending half of a connection, shared by its tasks.
///
/// Bytes queued for the client are counted. Subscriptions send with
/// [`Outbox::send_paced`]: above `limit` they wait for the client to catch
/// up, and a client that does not within `slow_timeout` is closed as a slow
/// consumer. Replies (acks, errors, pongs) are small and sent at once, but a
/// queue past twice the limit closes the connection too, so the server never
/// buffers without bound.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    limit: usize,
    slow_timeout: Duration,
}

/// The client is gone or was closed as a slow consumer.
struct Disconnected;

impl Outbox {
    fn send(&self, msg: &ServerMsg) -> Result<(), Disconnected> {
        let json = msg.to_json();
        let len = json.len();
        let queued = self.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.limit.saturating_mul(2) {
            self.close(close::SLOW_CONSUMER, "slow consumer: resume from your offsets");
            return Err(Disconnected);
        }
        self.tx.send(Out::Frame(json)).map_err(|_| Disconnected)
    }

    async fn send_paced(&self, msg: &ServerMsg) -> Result<(), Disconnected> {
        let deadline = Instant::now() + self.slow_timeout;
        loop {
            let drained = self.drained.notified();
            if self.queued.load(Ordering::Acquire) <= self.limit {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                self.close(close::SLOW_CONSUMER, "slow consumer: resume from your offsets");
                return Err(Disconnected);
            }
        }
        self.send(msg)
    }

    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Out::Close(code, reason));
    }
}

fn error_frame(sub: Option<&str>, req: Option<&str>, code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error {
        sub: sub.map(str::to_owned),
        req: req.map(str::to_owned),
        code,
        message: message.into(),
    }
}

fn store_error_message(e: &StoreError) -> String {
    match e {
        StoreError::Internal(detail) => {
            tracing::error!(%detail, "storage failure");
            "internal storage error".into()
        }
        other => other.to_string(),
    }
}

async fn run(state: AppState, socket: WebSocket) {
    // Listen for shutdown and the test hook before anything is sent, so a
    // client that has seen `hello` is sure to be covered.
    let mut shutdown = state.shutdown.clone();
    let mut cut = state.cut_connections.subscribe();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let outbox = Outbox {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        drained: Arc::new(Notify::new()),
        limit: state.config.ws_max_queued_bytes,
        slow_timeout: state.config.ws_slow_consumer_timeout,
    };
    let writer = {
        let queued = outbox.queued.clone();
        let drained = outbox.drained.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match out {
                    Out::Frame(json) => {
                        let len = json.len();
                        let sent = sink.send(WsMessage::Text(Utf8Bytes::from(json))).await;
                        queued.fetch_sub(len, Ordering::AcqRel);
                        drained.notify_waiters();
                        if sent.is_err() {
                            break;
                        }
                    }
                    Out::Close(code, reason) => {
                        let frame = CloseFrame {
                            code,
                            reason: Utf8Bytes::from_static(reason),
                        };
                        let _ = sink.send(WsMessage::Close(Some(frame))).await;
                        break;
                    }
                }
            }
            let _ = sink.close().await;
        })
    };

    let _ = outbox.send(&ServerMsg::Hello {
        heartbeat_ms: state.config.ws_heartbeat.as_millis() as u64,
        max_frame_bytes: state.config.ws_max_frame_bytes as u64,
    });
    let mut conn = Connection {
        access: match state.config.auth {
            AuthMode::None => Access::Open,
            AuthMode::Jwt(_) => Access::Anonymous,
        },
        close_at: None,
        state: state.clone(),
        outbox: outbox.clone(),
        subs: HashMap::new(),
        appends: None,
    };
    let mut heartbeat = tokio::time::interval(state.config.ws_heartbeat);
    heartbeat.tick().await;
    let mut last_seen = Instant::now();
    let mut abrupt = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) if past_hard_limit(&e) => {
                        outbox.close(close::MESSAGE_TOO_BIG, "frame larger than the server accepts");
                        break;
                    }
                    _ => break,
                };
                last_seen = Instant::now();
                match frame {
                    WsMessage::Text(text) => {
                        if conn.handle_text(text.as_str()).is_err() {
                            break;
                        }
                    }
                    WsMessage::Binary(_) => {
                        let msg = error_frame(None, None, ErrorCode::BadFrame, "binary frames are not supported: send JSON text frames");
                        if outbox.send(&msg).is_err() {
                            break;
                        }
                    }
                    WsMessage::Close(_) => break,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                }
            }
            () = sleep_until_some(conn.close_at) => {
                outbox.close(close::TOKEN_EXPIRED, "token expired: send a fresh one in an auth frame, or reconnect with it");
                break;
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > state.config.ws_heartbeat_timeout {
                    outbox.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    break;
                }
                if outbox.send(&ServerMsg::Ping { t: None }).is_err() {
                    break;
                }
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {
                outbox.close(close::GOING_AWAY, "server shutting down");
                break;
            }
            Ok(()) = cut.recv() => {
                abrupt = true;
                break;
            }
        }
    }
    for (_, (_, task)) in conn.subs.drain() {
        task.abort();
    }
    drop(conn);
    drop(outbox);
    if abrupt {
        // As a network failure would: no close frame, the TCP connection just ends.
        writer.abort();
        drop(stream);
    } else {
        let _ = writer.await;
    }
}

/// Whether the WebSocket layer refused a frame for its size (the hard
/// limit): the connection then ends with 1009.
fn past_hard_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Completes at `at`, or never.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Connection {
    state: AppState,
    outbox: Outbox,
    /// What the connection's current token allows (`Open` without auth).
    access: Access,
    /// When the connection is closed with 4003 unless a fresh token comes:
    /// the token's expiry plus the grace period.
    close_at: Option<Instant>,
    /// Live subscriptions by `sub` id: the stream path and the task.
    subs: HashMap<String, (String, JoinHandle<()>)>,
    /// The append worker, started by the first write (read-only clients
    /// never pay for it).
    /// (Only `create` and `append` frames go there.)
    appends: Option<mpsc::UnboundedSender<ClientMsg>>,
}

impl Connection {
    fn handle_text(&mut self, text: &str) -> Result<(), Disconnected> {
        // Frames up to the hard limit (the WebSocket layer closes with 1009
        // above it) are parsed, so that a refusal for size names the request
        // or subscription it ends: a client waiting for that ack must hear.
        let limit = self.state.config.ws_max_frame_bytes;
        let too_large = (text.len() > limit).then(|| {
            format!(
                "frame of {} bytes is larger than the limit of {limit} bytes",
                text.len()
            )
        });
        let msg = match ClientMsg::parse(text) {
            Ok(msg) => msg,
            Err(mut e) => {
                if let Some(message) = too_large {
                    (e.code, e.message) = (ErrorCode::TooLarge, message);
                }
                return self.outbox.send(&ServerMsg::from(e));
            }
        };
        if let Some(message) = too_large {
            let (sub, req) = msg.ids();
            return self.outbox.send(&error_frame(sub, req, ErrorCode::TooLarge, message));
        }
        if let Err(message) = check_nesting(text, &msg) {
            let (sub, req) = msg.ids();
            return self.outbox.send(&error_frame(sub, req, ErrorCode::BadRequest, message));
        }
        match msg {
            ClientMsg::Subscribe { sub, path, offset } => self.subscribe(sub, path, &offset),
            ClientMsg::Unsubscribe { sub } => match self.subs.remove(&sub) {
                Some((_, task)) => {
                    task.abort();
                    self.outbox.send(&ServerMsg::Unsubscribed { sub })
                }
                None => self.outbox.send(&error_frame(
                    Some(&sub),
                    None,
                    ErrorCode::UnknownSub,
                    "no such subscription",
                )),
            },
            mut write @ (ClientMsg::Create { .. } | ClientMsg::Append { .. }) => match self.authorize_write(&mut write)
            {
                Ok(()) => self.enqueue(write),
                Err(refusal) => self.outbox.send(&refusal),
            },
            ClientMsg::Ping { t } => self.outbox.send(&ServerMsg::Pong { t }),
            ClientMsg::Pong { .. } => Ok(()),
            ClientMsg::Auth { req, token } => self.authenticate(req, &token),
        }
    }

    /// An `auth` frame: a valid token replaces the connection's token
    /// (same principal only) and subscriptions it no longer covers end.
    fn authenticate(&mut self, req: Option<String>, token: &str) -> Result<(), Disconnected> {
        let AuthMode::Jwt(keys) = &self.state.config.auth else {
            // Without auth every token is as good as none.
            return self.outbox.send(&ServerMsg::Authed {
                req,
                principal: String::new(),
                exp: 0,
            });
        };
        let principal = match keys.verify(token) {
            Ok(p) => p,
            Err(denied) => {
                return self
                    .outbox
                    .send(&error_frame(None, req.as_deref(), denied.code(), denied.message()));
            }
        };
        if let Some(current) = self.access.principal().filter(|c| c.sub != principal.sub) {
            let message = format!(
                "this connection belongs to {}: a token for {} needs a new connection",
                current.sub, principal.sub
            );
            return self
                .outbox
                .send(&error_frame(None, req.as_deref(), ErrorCode::Forbidden, message));
        }
        self.close_at = Some(expiry_instant(&principal) + self.state.config.auth_grace);
        let reply = ServerMsg::Authed {
            req,
            principal: principal.sub.clone(),
            exp: principal.exp,
        };
        self.access = Access::Token(principal);
        let revoked: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, (path, task))| !task.is_finished() && self.access.check(path, Right::Read).is_err())
            .map(|(sub, _)| sub.clone())
            .collect();
        self.outbox.send(&reply)?;
        for sub in revoked {
            if let Some((path, task)) = self.subs.remove(&sub) {
                task.abort();
                let message = format!("the new token does not cover {path}");
                self.outbox
                    .send(&error_frame(Some(&sub), None, ErrorCode::Forbidden, message))?;
            }
        }
        Ok(())
    }

    /// Checks a `create` or `append` against the connection's token; an
    /// append to a session gets its writer's identity filled in.
    fn authorize_write(&self, write: &mut ClientMsg) -> Result<(), ServerMsg> {
        let refuse = |req: &str, d: Denied| error_frame(None, Some(req), d.code(), d.message());
        match write {
            ClientMsg::Create {
                req,
                path,
                content_type,
            } => super::write::check_create(&self.access, path, content_type.as_deref(), None)
                .map_err(|d| refuse(req, d)),
            ClientMsg::Append {
                req,
                path,
                payload,
                close,
                ..
            } if self.access != Access::Open => {
                let (body, json) = match payload {
                    None => (Bytes::new(), true),
                    Some(Payload::Json(v)) => (Bytes::from(std::mem::take(v)), true),
                    Some(Payload::Text(t) | Payload::Base64(t)) => (Bytes::copy_from_slice(t.as_bytes()), false),
                };
                let checked =
                    identity::authorize_append(&self.access, path, body, *close, json).map_err(|d| refuse(req, d))?;
                if let Some(Payload::Json(v)) = payload {
                    *v = String::from_utf8_lossy(&checked).into_owned();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn enqueue(&mut self, req: ClientMsg) -> Result<(), Disconnected> {
        let (state, outbox) = (&self.state, &self.outbox);
        self.appends
            .get_or_insert_with(|| spawn_append_worker(state.clone(), outbox.clone()))
            .send(req)
            .map_err(|_| Disconnected)
    }

    fn subscribe(&mut self, sub: String, path: String, offset: &str) -> Result<(), Disconnected> {
        if self.subs.get(&sub).is_some_and(|(_, t)| !t.is_finished()) {
            return self.outbox.send(&error_frame(
                Some(&sub),
                None,
                ErrorCode::DuplicateSub,
                "this sub id is already subscribed",
            ));
        }
        if let Err(e) = validate_path(&path) {
            return self
                .outbox
                .send(&error_frame(Some(&sub), None, ErrorCode::BadRequest, e.message));
        }
        if let Err(d) = self.access.check(&path, Right::Read) {
            return self.outbox.send(&error_frame(Some(&sub), None, d.code(), d.message()));
        }
        let from = match parse_start(offset) {
            Ok(from) => from,
            Err(e) => {
                return self
                    .outbox
                    .send(&error_frame(Some(&sub), None, ErrorCode::BadOffset, e.to_string()));
            }
        };
        let task = tokio::spawn(deliver(
            self.state.storage.clone(),
            self.state.config.max_read_bytes,
            self.outbox.clone(),
            sub.clone(),
            path.clone(),
            from,
        ));
        self.subs.insert(sub, (path, task));
        Ok(())
    }
}

/// Bounds nesting as over HTTP, before anything is done with the frame: a
/// frame nests at most [`MAX_MESSAGE_DEPTH`] + 2 levels (the frame, a batch
/// array, its messages), and an append's messages at most
/// [`MAX_MESSAGE_DEPTH`] ([`rules::json_text`], the rule of HTTP bodies).
fn check_nesting(text: &str, msg: &ClientMsg) -> Result<(), String> {
    json::check_depth(text, MAX_MESSAGE_DEPTH + 2).map_err(|e| {
        format!(
            "frame nested too deep: a message may nest at most {MAX_MESSAGE_DEPTH} arrays and objects (byte {})",
            e.offset
        )
    })?;
    match msg {
        ClientMsg::Append {
            payload: Some(Payload::Json(data)),
            ..
        } => rules::json_text(data.as_bytes()).map(drop).map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// When `principal`'s token expires, as an instant.
fn expiry_instant(principal: &Principal) -> Instant {
    let now_ms = rules::now_ms().max(0) as u64;
    Instant::now() + Duration::from_millis((principal.exp * 1000).saturating_sub(now_ms))
}

/// The messages of a chunk, each with the offset just after it.
fn messages(chunk: &Chunk) -> Vec<Message> {
    let json = chunk.info.is_json();
    let text = rules::is_text(&chunk.info.content_type);
    chunk
        .pieces
        .iter()
        .zip(&chunk.offsets)
        .map(|(piece, &end)| {
            // Stored JSON pieces were validated when they were appended.
            let payload = if json {
                Payload::Json(String::from_utf8_lossy(piece).into_owned())
            } else if text {
                Payload::Text(String::from_utf8_lossy(piece).into_owned())
            } else {
                Payload::Base64(base64::engine::general_purpose::STANDARD.encode(piece))
            };
            Message {
                offset: format_offset(end),
                payload,
            }
        })
        .collect()
}

/// Delivers one subscription: catch-up from `from`, then live, reading by
/// offset every time so nothing is skipped or repeated at the boundary.
async fn deliver(
    storage: Arc<dyn Storage>,
    max_bytes: usize,
    outbox: Outbox,
    sub: String,
    path: String,
    from: StartAt,
) {
    let mut feed = storage.changes(&path);
    let mut from = from;
    let mut announced = false;
    loop {
        let chunk = match storage
            .read(Read {
                path: path.clone(),
                from,
                max_bytes,
            })
            .await
        {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = outbox.send(&error_frame(Some(&sub), None, e.code(), store_error_message(&e)));
                return;
            }
        };
        let eof = chunk.info.closed && chunk.up_to_date();
        if !chunk.pieces.is_empty() || !announced || eof {
            let frame = ServerMsg::Events {
                sub: sub.clone(),
                messages: messages(&chunk),
                next: format_offset(chunk.next),
                up_to_date: chunk.up_to_date(),
                closed: eof,
            };
            if outbox.send_paced(&frame).await.is_err() {
                return;
            }
            announced = true;
        }
        if eof {
            return;
        }
        from = StartAt::Pos(chunk.next);
        if chunk.up_to_date() {
            feed.wait(Duration::from_secs(3600)).await;
        }
    }
}

/// Applies creates and appends one after another, in arrival order, so a
/// producer's pipelined appends keep their sequence.
fn spawn_append_worker(state: AppState, outbox: Outbox) -> mpsc::UnboundedSender<ClientMsg> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ClientMsg>();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let reply = match req {
                ClientMsg::Create {
                    req,
                    path,
                    content_type,
                } => create(&state, req, path, content_type).await,
                ClientMsg::Append {
                    req,
                    path,
                    payload,
                    producer,
                    close,
                } => append(&state, req, path, payload, producer, close).await,
                _ => continue, // only writes are queued here
            };
            if outbox.send(&reply).is_err() {
                break;
            }
        }
    });
    tx
}

async fn create(state: &AppState, req: String, path: String, content_type: Option<String>) -> ServerMsg {
    if let Err(e) = validate_path(&path) {
        return error_frame(None, Some(&req), ErrorCode::BadRequest, e.message);
    }
    let result = state
        .storage
        .create(CreateStream {
            path: path.clone(),
            content_type: Some(content_type.unwrap_or_else(|| "application/json".into())),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
            fork: None,
        })
        .await;
    match result {
        Ok(created) => {
            if created.created {
                crate::session_index::record(state.storage.as_ref(), &path).await;
            }
            ServerMsg::Ack {
                req,
                offset: format_offset(created.info.tail),
                duplicate: !created.created,
                closed: created.info.closed,
            }
        }
        Err(e) => error_frame(None, Some(&req), e.code(), store_error_message(&e)),
    }
}

async fn append(
    state: &AppState,
    req: String,
    path: String,
    payload: Option<Payload>,
    producer: Option<ProducerIds>,
    close: bool,
) -> ServerMsg {
    if let Err(e) = validate_path(&path) {
        return error_frame(None, Some(&req), ErrorCode::BadRequest, e.message);
    }
    // JSON payloads name their content type; text and bytes take the stream's.
    let (content_type, body) = match payload {
        None => (None, Bytes::new()),
        Some(Payload::Json(v)) => (Some("application/json".to_owned()), Bytes::from(v)),
        Some(other) => {
            let info = match state.storage.head(&path).await {
                Ok(info) => info,
                Err(e) => {
                    return error_frame(None, Some(&req), e.code(), store_error_message(&e));
                }
            };
            let body = match other {
                Payload::Text(t) if rules::is_text(&info.content_type) && !info.is_json() => Bytes::from(t),
                Payload::Base64(b) if !rules::is_text(&info.content_type) => {
                    match base64::engine::general_purpose::STANDARD.decode(b.as_bytes()) {
                        Ok(bytes) => Bytes::from(bytes),
                        Err(_) => {
                            return error_frame(
                                None,
                                Some(&req),
                                ErrorCode::BadFrame,
                                "base64 is not valid standard base64",
                            );
                        }
                    }
                }
                _ => {
                    return error_frame(
                        None,
                        Some(&req),
                        ErrorCode::Conflict,
                        format!(
                            "this payload does not fit the stream's content type ({})",
                            info.content_type
                        ),
                    );
                }
            };
            (Some(info.content_type), body)
        }
    };
    if producer.as_ref().is_some_and(|p| p.id.is_empty()) {
        return error_frame(None, Some(&req), ErrorCode::BadRequest, "producer.id must not be empty");
    }
    if body.is_empty() && !close {
        return error_frame(
            None,
            Some(&req),
            ErrorCode::BadRequest,
            "append needs data, text or base64 (or close: true)",
        );
    }
    let result = state
        .storage
        .append(Append {
            path,
            content_type,
            body,
            close,
            stream_seq: None,
            producer: producer.map(|p| Producer {
                id: p.id,
                epoch: p.epoch,
                seq: p.seq,
            }),
        })
        .await;
    match result {
        Ok(appended) => ServerMsg::Ack {
            req,
            offset: format_offset(appended.info.tail),
            duplicate: appended.duplicate,
            closed: appended.info.closed,
        },
        Err(e) => error_frame(None, Some(&req), e.code(), store_error_message(&e)),
    }
}
