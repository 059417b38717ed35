//! `/v1/ws`: one WebSocket multiplexing subscriptions and appends
//! (specified in `docs/protocol.md`).
//!
//! Each connection has a reader loop (frames in, heartbeats), a writer task
//! (frames out, through a byte-bounded queue: a client that falls too far
//! behind is closed as a slow consumer and resumes from its offsets), one task
//! per subscription (catch-up then live, by offset, so the boundary between
//! them has no gap and no duplicate), and one task applying appends in the
//! order they arrived.
//!
//! Everything a client can make the server hold is bounded
//! (`docs/limits.md`): connections per IP and per principal, subscriptions
//! per connection, and appends in flight — at that limit the reader loop
//! stops reading the socket until an append is acknowledged, so a client
//! that sends faster than appends become durable waits in TCP, not in
//! server memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use durable_session_protocol::json::{self, MAX_MESSAGE_DEPTH};
use durable_session_protocol::ws::{
    ClientMsg, ErrorCode, Message, Payload, ProducerIds, ServerMsg, close, events_body, events_frame,
};
use futures_util::{SinkExt, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client_ip::client_ip;
use super::{ApiError, AppState, access, validate_path};
use crate::auth::{Access, Denied, Principal, Right, identity};
use crate::config::AuthMode;
use crate::limits::Slot;
use crate::live_read::LiveRead;
use crate::metrics::ConnectionKind;
use crate::offset::{StartAt, format_offset, parse_start};
use crate::storage::{Append, Chunk, CreateStream, Expiry, Producer, Storage, StoreError, rules};

/// How long a closing connection waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client refused for too many connections is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// `GET /v1/ws`: upgrades to the WebSocket protocol.
pub(super) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    if !access::origin_allowed(&state.config, &headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this origin may not open a WebSocket here (see --allow-origin)",
        )
        .into_response();
    }
    // Without the client's address (a router served without connect info)
    // there is nothing to count by.
    let client = peer.map(|Extension(ConnectInfo(addr))| client_ip(addr.ip(), &headers, &state.config.trusted_proxies));
    let ip_slot = match client {
        Some(ip) => match state.occupancy.ws_per_ip.try_take(ip) {
            Some(slot) => Some(slot),
            None => {
                state.metrics.limit_hit(ErrorCode::TooManyConnections);
                let message = format!(
                    "too_many_connections: this address already has {} WebSockets open (--max-ws-per-ip)",
                    state.occupancy.ws_per_ip.max()
                );
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
                    .with_header(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECS)
                    .into_response();
            }
        },
        None => None,
    };
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
        .on_upgrade(move |socket| {
            // A shutdown waits for the connection's task.
            let tasks = state.ws_tasks.clone();
            tasks.track_future(run(state, socket, ip_slot))
        })
}

/// What the writer task sends.
enum Out {
    Frame(String),
    Close(u16, &'static str),
}

/// How long a connection the server ends gets to take its last frames and
/// the close frame before its TCP connection is dropped: a client that
/// never reads must not hold the server's memory.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why the connection is being cut at once, if it is.
type Cut = Option<(u16, &'static str)>;

/// The sending half of a connection, shared by its tasks.
///
/// Bytes queued for the client are counted. Subscriptions send with
/// [`Outbox::send_paced`]: above `limit` they wait for the client to catch
/// up, and a client that does not within `slow_timeout` is cut as a slow
/// consumer. Replies (acks, errors, pongs) are small and sent at once, but a
/// queue past twice the limit cuts the connection too, so the server never
/// buffers without bound. A cut drops what is queued, sends the close frame
/// (4002) and ends the connection.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<Queued>,
    cut: Arc<watch::Sender<Cut>>,
    limit: usize,
    slow_timeout: Duration,
}

/// Bytes queued for one client, mirrored in the server-wide gauge
/// (`ws_queued_bytes`) until the connection is gone.
struct Queued {
    bytes: AtomicUsize,
    drained: Notify,
    gauge: Gauge,
}

impl Queued {
    fn add(&self, n: usize) -> usize {
        self.gauge.inc_by(n as i64);
        self.bytes.fetch_add(n, Ordering::AcqRel) + n
    }

    fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.gauge.dec_by(n as i64);
        self.drained.notify_waiters();
    }

    fn get(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Frames never written (the client went away) leave the gauge too.
        self.gauge.dec_by(*self.bytes.get_mut() as i64);
    }
}

/// The client is gone or was closed as a slow consumer.
struct Disconnected;

impl Outbox {
    fn send(&self, msg: &ServerMsg) -> Result<(), Disconnected> {
        self.send_json(msg.to_json())
    }

    fn send_json(&self, json: String) -> Result<(), Disconnected> {
        let len = json.len();
        if self.queued.add(len) > self.limit.saturating_mul(2) {
            self.queued.sub(len);
            self.slow_consumer();
            return Err(Disconnected);
        }
        self.tx.send(Out::Frame(json)).map_err(|e| {
            if let Out::Frame(json) = e.0 {
                self.queued.sub(json.len());
            }
            Disconnected
        })
    }

    /// Sends a subscription's frame once the client has room for it.
    async fn send_paced_json(&self, json: String) -> Result<(), Disconnected> {
        let deadline = Instant::now() + self.slow_timeout;
        loop {
            let drained = self.queued.drained.notified();
            if self.queued.get() <= self.limit {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                self.slow_consumer();
                return Err(Disconnected);
            }
        }
        self.send_json(json)
    }

    /// Closes the connection after the frames already queued.
    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Out::Close(code, reason));
    }

    /// Cuts the connection at once: queued frames are dropped (the client
    /// resumes from its offsets), the close frame 4002 goes out.
    fn slow_consumer(&self) {
        self.cut.send_if_modified(|cut| {
            let first = cut.is_none();
            if first {
                *cut = Some((close::SLOW_CONSUMER, "slow consumer: resume from your offsets"));
            }
            first
        });
    }
}

/// Sends what the connection's tasks queue, in order, until a close frame,
/// a cut, or the client going away. Bytes never sent leave the count.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<Queued>,
    cut: Arc<watch::Sender<Cut>>,
    stopping: watch::Receiver<bool>,
) {
    let mut cut = cut.subscribe();
    let close = loop {
        let out = tokio::select! {
            biased;
            why = cut.wait_for(Option::is_some) => break why.ok().and_then(|why| *why),
            out = rx.recv() => out,
        };
        match out {
            // Every sender is gone: on a shutdown, that is after the last
            // append read was answered.
            None if *stopping.borrow() => break Some((close::GOING_AWAY, "server shutting down")),
            None => break None,
            Some(Out::Close(code, reason)) => break Some((code, reason)),
            Some(Out::Frame(json)) => {
                let len = json.len();
                // A client that stopped reading blocks this send; a cut
                // must not wait for it.
                let sent = tokio::select! {
                    biased;
                    why = cut.wait_for(Option::is_some) => Err(why.ok().and_then(|why| *why)),
                    sent = sink.send(WsMessage::Text(Utf8Bytes::from(json))) => Ok(sent.is_ok()),
                };
                queued.sub(len);
                match sent {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(why) => break why,
                }
            }
        }
    };
    rx.close();
    while let Ok(out) = rx.try_recv() {
        if let Out::Frame(json) = out {
            queued.sub(json.len());
        }
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(WsMessage::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
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

async fn run(state: AppState, socket: WebSocket, ip_slot: Option<Slot<std::net::IpAddr>>) {
    let _open = state.metrics.connection(ConnectionKind::WebSocket);
    let _ip_slot = ip_slot;
    // Listen for shutdown and the test hook before anything is sent, so a
    // client that has seen `hello` is sure to be covered.
    let mut shutdown = state.shutdown.clone();
    let mut cut = state.cut_connections.subscribe();
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::unbounded_channel::<Out>();
    let outbox = Outbox {
        tx,
        queued: Arc::new(Queued {
            bytes: AtomicUsize::new(0),
            drained: Notify::new(),
            gauge: state.metrics.ws_queued_bytes(),
        }),
        cut: Arc::new(watch::channel(None).0),
        limit: state.config.ws_max_queued_bytes,
        slow_timeout: state.config.ws_slow_consumer_timeout,
    };
    let mut writer = tokio::spawn(write_frames(
        sink,
        rx,
        outbox.queued.clone(),
        outbox.cut.clone(),
        state.shutdown.clone(),
    ));
    let mut cut_off = outbox.cut.subscribe();

    let _ = outbox.send(&ServerMsg::Hello {
        heartbeat_ms: state.config.ws_heartbeat.as_millis() as u64,
        max_frame_bytes: state.config.ws_max_frame_bytes as u64,
    });
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let mut conn = Connection {
        access: match state.config.auth {
            AuthMode::None => Access::Open,
            AuthMode::Jwt(_) => Access::Anonymous,
        },
        close_at: None,
        state: state.clone(),
        outbox: outbox.clone(),
        subs: HashMap::new(),
        next_serial: 0,
        ended: ended_tx,
        appends: None,
        permit: None,
        principal_slot: None,
        close_with: None,
    };
    // One permit per append in flight: the socket is read only while one is
    // free (backpressure).
    let inflight = Arc::new(Semaphore::new(state.config.limits.ws_inflight_appends.max(1)));
    let mut heartbeat = tokio::time::interval(state.config.ws_heartbeat);
    heartbeat.tick().await;
    let mut last_seen = Instant::now();
    let mut abrupt = false;
    loop {
        tokio::select! {
            permit = inflight.clone().acquire_owned(), if conn.permit.is_none() => {
                let Ok(permit) = permit else { break };
                conn.permit = Some(permit);
                // The client was not heard while the server did not read.
                last_seen = Instant::now();
            }
            frame = stream.next(), if conn.permit.is_some() => {
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
                        if let Some((code, reason)) = conn.close_with.take() {
                            outbox.close(code, reason);
                            break;
                        }
                        if conn.permit.is_none() && inflight.available_permits() == 0 {
                            state.metrics.ws_backpressure();
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
            Some((sub, serial)) = ended.recv() => conn.reap(&sub, serial),
            _ = cut_off.wait_for(Option::is_some) => break,
            _ = heartbeat.tick() => {
                if conn.permit.is_some() && last_seen.elapsed() > state.config.ws_heartbeat_timeout {
                    outbox.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    break;
                }
                if outbox.send(&ServerMsg::Ping { t: None }).is_err() {
                    break;
                }
            }
            () = super::stopped(&mut shutdown) => {
                // Stop reading; the appends already received are applied
                // and acknowledged, then the writer closes with 1001.
                break;
            }
            Ok(()) = cut.recv() => {
                abrupt = true;
                break;
            }
        }
    }
    for (_, Sub { task, .. }) in conn.subs.drain() {
        task.abort();
    }
    drop(conn);
    drop(outbox);
    if abrupt {
        // As a network failure would: no close frame, the TCP connection just ends.
        writer.abort();
        drop(stream);
    } else if tokio::time::timeout(CLOSE_GRACE * 2, &mut writer).await.is_err() {
        // A client that never reads gets no more time than that.
        writer.abort();
    } else {
        // The closing handshake: read (and drop) what the client still
        // sends until its close frame, so that the socket is not torn down
        // with unread data — which resets the connection and can cost the
        // client the acks and the close frame sent before.
        let handshake = async {
            while let Some(Ok(frame)) = stream.next().await
                && !matches!(frame, WsMessage::Close(_))
            {}
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, handshake).await;
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

/// A live subscription: its stream, its task, and a serial number telling
/// it apart from a later subscription with the same `sub` id.
struct Sub {
    path: String,
    task: JoinHandle<()>,
    serial: u64,
}

/// A write to apply, with the in-flight place it holds until it is answered.
type Write = (ClientMsg, Option<OwnedSemaphorePermit>);

struct Connection {
    state: AppState,
    outbox: Outbox,
    /// What the connection's current token allows (`Open` without auth).
    access: Access,
    /// When the connection is closed with 4003 unless a fresh token comes:
    /// the token's expiry plus the grace period.
    close_at: Option<Instant>,
    /// Live subscriptions by `sub` id (at most `limits.ws_subscriptions`).
    subs: HashMap<String, Sub>,
    next_serial: u64,
    /// Where subscription tasks that end by themselves say so, so that
    /// they stop counting against the limit.
    ended: mpsc::UnboundedSender<(String, u64)>,
    /// The append worker, started by the first write (read-only clients
    /// never pay for it).
    /// (Only `create` and `append` frames go there.)
    appends: Option<mpsc::UnboundedSender<Write>>,
    /// The in-flight place the next frame may take if it is a write; the
    /// socket is read only while the connection holds one.
    permit: Option<OwnedSemaphorePermit>,
    /// This connection's place among its principal's (`ws_per_principal`).
    principal_slot: Option<Slot<String>>,
    /// Set when the connection must close after the current frame.
    close_with: Option<(u16, &'static str)>,
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
                Some(Sub { task, .. }) => {
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
                Ok(()) => {
                    // The write holds the connection's in-flight place until
                    // it is answered; the next frame waits for another.
                    let permit = self.permit.take();
                    self.enqueue(write, permit)
                }
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
        if self.principal_slot.is_none() {
            let Some(slot) = self.state.occupancy.ws_per_principal.try_take(principal.sub.clone()) else {
                self.state.metrics.limit_hit(ErrorCode::TooManyConnections);
                self.close_with = Some((
                    close::TOO_MANY_CONNECTIONS,
                    "too_many_connections: this principal holds as many connections as allowed",
                ));
                return Ok(());
            };
            self.principal_slot = Some(slot);
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
            .filter(|(_, s)| !s.task.is_finished() && self.access.check(&s.path, Right::Read).is_err())
            .map(|(sub, _)| sub.clone())
            .collect();
        self.outbox.send(&reply)?;
        for sub in revoked {
            if let Some(Sub { path, task, .. }) = self.subs.remove(&sub) {
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

    fn enqueue(&mut self, req: ClientMsg, permit: Option<OwnedSemaphorePermit>) -> Result<(), Disconnected> {
        let (state, outbox) = (&self.state, &self.outbox);
        self.appends
            .get_or_insert_with(|| spawn_append_worker(state.clone(), outbox.clone()))
            .send((req, permit))
            .map_err(|_| Disconnected)
    }

    /// Forgets a subscription whose task ended by itself (unless `sub` is
    /// now a later subscription).
    fn reap(&mut self, sub: &str, serial: u64) {
        if self.subs.get(sub).is_some_and(|s| s.serial == serial) {
            self.subs.remove(sub);
        }
    }

    fn subscribe(&mut self, sub: String, path: String, offset: &str) -> Result<(), Disconnected> {
        if self.subs.get(&sub).is_some_and(|s| !s.task.is_finished()) {
            return self.outbox.send(&error_frame(
                Some(&sub),
                None,
                ErrorCode::DuplicateSub,
                "this sub id is already subscribed",
            ));
        }
        let limit = self.state.config.limits.ws_subscriptions;
        if self.subs.len() >= limit && !self.subs.contains_key(&sub) {
            self.state.metrics.limit_hit(ErrorCode::TooManySubscriptions);
            let message = format!(
                "this connection holds {limit} subscriptions, the most allowed (--max-subscriptions-per-socket): \
                 unsubscribe from one first"
            );
            return self
                .outbox
                .send(&error_frame(Some(&sub), None, ErrorCode::TooManySubscriptions, message));
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
        let serial = self.next_serial;
        self.next_serial += 1;
        let delivery = deliver(
            self.state.storage.clone(),
            self.state.config.max_read_bytes,
            self.outbox.clone(),
            sub.clone(),
            path.clone(),
            from,
        );
        let (ended, counted, id) = (self.ended.clone(), self.state.metrics.subscription(), sub.clone());
        let task = tokio::spawn(async move {
            let _counted = counted;
            delivery.await;
            let _ = ended.send((id, serial));
        });
        self.subs.insert(sub, Sub { path, task, serial });
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

/// How long a subscription with nothing new waits before it checks again
/// (it is woken at once by an append; this only bounds one wait).
const IDLE_SUBSCRIPTION_WAIT: Duration = Duration::from_secs(3600);

/// Delivers one subscription: catch-up from `from`, then live (one
/// [`LiveRead`], as for SSE and long-poll).
async fn deliver(
    storage: Arc<dyn Storage>,
    max_bytes: usize,
    outbox: Outbox,
    sub: String,
    path: String,
    from: StartAt,
) {
    let mut live = LiveRead::new(storage, path, from, max_bytes);
    let mut announced = false;
    loop {
        // The first frame answers the subscribe at once, even with nothing
        // stored yet; later ones wait for data or the end of the stream.
        let deadline = if announced {
            Instant::now() + IDLE_SUBSCRIPTION_WAIT
        } else {
            Instant::now()
        };
        let chunk = match live.next_until(deadline).await {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = outbox.send(&error_frame(Some(&sub), None, e.code(), store_error_message(&e)));
                return;
            }
        };
        let eof = chunk.info.closed && chunk.up_to_date();
        if chunk.pieces.is_empty() && announced && !eof {
            continue;
        }
        let body = live.shared(&chunk, "ws", |chunk| {
            events_body(&messages(chunk), &format_offset(chunk.next), chunk.up_to_date(), eof)
        });
        if outbox.send_paced_json(events_frame(&sub, &body)).await.is_err() || eof {
            return;
        }
        announced = true;
    }
}

/// Applies creates and appends one after another, in arrival order, so a
/// producer's pipelined appends keep their sequence.
///
/// The queue is unbounded as a channel but holds at most
/// `limits.ws_inflight_appends` writes: each carries one of the
/// connection's in-flight permits, released once it is answered.
fn spawn_append_worker(state: AppState, outbox: Outbox) -> mpsc::UnboundedSender<Write> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    tokio::spawn(async move {
        while let Some((req, _permit)) = rx.recv().await {
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
            index_entry: crate::session_index::entry_for(&path),
        })
        .await;
    match result {
        Ok(created) => ServerMsg::Ack {
            req,
            offset: format_offset(created.info.tail),
            duplicate: !created.created,
            closed: created.info.closed,
        },
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
