//! The client state machine (sans I/O).
//!
//! ```
//! use durable_sessions::core::client::{ClientCore, Options, Output, SubscribeOptions};
//! let mut core = ClientCore::new(Options::new("producer-1", 7));
//! let sub = core.subscribe("sessions/a", SubscribeOptions::default());
//! core.start(0);
//! core.on_open(5);
//! let frames: Vec<_> = std::iter::from_fn(|| core.poll_output())
//!     .filter_map(|o| match o { Output::Send(f) => Some(f.to_json()), _ => None })
//!     .collect();
//! assert!(frames[0].contains(r#""op":"subscribe""#));
//! # let _ = sub;
//! ```

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, ServerMsg, close as close_code};

use super::ClientError;
use super::backoff::Backoff;
use super::errors::{ErrorClass, classify};
use super::outbox::{AppendAck, AppendId, DEFAULT_MAX_APPEND_BYTES, Lane, Outbox, Resolved};
use super::rng::Rng;
use super::state::{ConnectionState, StateChange};
use super::subscription::{Cursor, ResetPolicy, StartFrom};
use super::token::TokenState;

/// Identifies a subscription of one client.
pub type SubId = u64;

/// Tunables of a client. Times in milliseconds.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Send a `ping` this often while connected.
    pub ping_interval_ms: u64,
    /// Declare the link dead when nothing arrived for this long — the only
    /// way to notice a half-dead link that never reports a close. The HTTP
    /// transport gives each request this long (plus time for its bytes).
    pub heartbeat_timeout_ms: u64,
    /// Give up on a connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// After this long without a connection, the state becomes `suspended`.
    pub suspend_after_ms: u64,
    /// How long a probe (after `online` or the page becoming visible) waits
    /// for any frame before declaring the link dead.
    pub probe_timeout_ms: u64,
    /// Idempotent-producer id of this client's appends.
    pub producer_id: String,
    /// Seed of the jitter random source.
    pub seed: u64,
    /// Access control: the client holds a token, asks for one
    /// ([`Output::NeedToken`]) before connecting and before it expires, and
    /// presents it first on every connection. Transports set this when the
    /// app gave them a token (or a token function). Times passed to the core
    /// are then milliseconds since the Unix epoch, to compare with the
    /// token's `exp`.
    pub auth: bool,
    /// The largest append request sent (default 16 MiB, the server's
    /// default HTTP body limit). A larger append fails at once with
    /// `too_large`, unsent. Over WebSocket the server's
    /// `hello.max_frame_bytes` applies as well.
    pub max_append_bytes: u64,
}

impl Options {
    /// Defaults with the given producer id and random seed.
    pub fn new(producer_id: impl Into<String>, seed: u64) -> Self {
        Self {
            backoff: Backoff::default(),
            ping_interval_ms: 5_000,
            heartbeat_timeout_ms: 12_000,
            connect_timeout_ms: 10_000,
            suspend_after_ms: 60_000,
            probe_timeout_ms: 3_000,
            producer_id: producer_id.into(),
            seed,
            auth: false,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
        }
    }
}

/// How to subscribe.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Where to start.
    pub start: StartFromOption,
    /// What to do when the server says the position is gone.
    pub reset: ResetPolicy,
    /// Create the stream first if it does not exist.
    pub create: bool,
    /// The content type to create it with (default `application/json`).
    pub content_type: Option<String>,
}

/// [`StartFrom`] with a default (the beginning).
#[derive(Debug, Clone, Default)]
pub struct StartFromOption(pub Option<StartFrom>);

impl From<StartFrom> for StartFromOption {
    fn from(s: StartFrom) -> Self {
        Self(Some(s))
    }
}

/// What a subscription reports to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// New messages, in order, each exactly once.
    Messages(Vec<Message>),
    /// The subscription has caught up with the stream (after catch-up, and
    /// again after each reconnect's catch-up).
    UpToDate { offset: String },
    /// The server said the position is gone; the subscription restarted per
    /// its [`ResetPolicy`]. Drop state derived from earlier messages.
    Reset { reason: String },
    /// The stream is closed: no message will ever follow. The subscription ended.
    Closed,
    /// The subscription failed for good and ended (`not_found`,
    /// `forbidden`, `conflict`, `bad_offset`, …; see
    /// [`crate::core::errors`]). Transient failures never end a
    /// subscription: they show as connection states while the client
    /// retries.
    Error(ClientError),
}

/// What the core asks of its transport and tells the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a new connection (and report `on_open` or `on_close`).
    Connect,
    /// Call the app's token function and report the outcome with
    /// [`ClientCore::set_token`] or [`ClientCore::token_failed`]. Asked only
    /// with [`Options::auth`]: before connecting without a usable token,
    /// before the token expires, and after the server refused it.
    NeedToken { reason: String },
    /// Send this frame on the open connection.
    Send(ClientMsg),
    /// Close the current connection; the core already moved on.
    Disconnect { reason: String },
    /// The connection state changed.
    State(StateChange),
    /// Something happened on a subscription.
    Event { sub: SubId, event: SubscriptionEvent },
    /// An append was resolved.
    Appended {
        id: AppendId,
        result: Result<AppendAck, ClientError>,
    },
}

/// Subscriptions in creation order (few per client: a list beats a map).
#[derive(Debug, Default)]
struct Subs(Vec<(SubId, Sub)>);

impl Subs {
    fn get(&self, id: &SubId) -> Option<&Sub> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn get_mut(&mut self, id: &SubId) -> Option<&mut Sub> {
        self.0.iter_mut().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn insert(&mut self, id: SubId, sub: Sub) {
        self.0.push((id, sub));
    }

    fn remove(&mut self, id: &SubId) -> Option<Sub> {
        let at = self.0.iter().position(|(i, _)| i == id)?;
        Some(self.0.remove(at).1)
    }

    fn ids(&self) -> Vec<SubId> {
        self.0.iter().map(|(i, _)| *i).collect()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The wire id of subscription `id` (`s{id}`), and back.
fn wire_sub(id: SubId) -> String {
    format!("s{id}")
}

fn sub_of_wire(wire: &str) -> Option<SubId> {
    wire.strip_prefix('s')?.parse().ok()
}

/// Whether `req` is the id of an `auth` frame (`t{n}`).
fn is_auth_req(req: &str) -> bool {
    req.strip_prefix('t').is_some_and(|n| n.parse::<u64>().is_ok())
}

/// The request id of subscription `id`'s create (`c{id}`), and back.
fn create_req(id: SubId) -> String {
    format!("c{id}")
}

fn sub_of_create(req: &str) -> Option<SubId> {
    req.strip_prefix('c')?.parse().ok()
}

#[derive(Debug)]
struct Sub {
    path: String,
    start: StartFrom,
    cursor: Cursor,
    reset: ResetPolicy,
    /// Create still to be confirmed before subscribing.
    needs_create: bool,
    content_type: Option<String>,
    up_to_date: bool,
}

/// The client state machine.
#[derive(Debug)]
pub struct ClientCore {
    opts: Options,
    state: ConnectionState,
    outputs: Vec<Output>,
    subs: Subs,
    outbox: Outbox,
    rng: Rng,
    next_id: u64,
    /// Reconnect attempts since the last successful connection.
    attempt: u32,
    lost_since: Option<u64>,
    retry_at: Option<u64>,
    connect_deadline: Option<u64>,
    last_received: u64,
    next_ping_at: u64,
    probe_deadline: Option<u64>,
    started: bool,
    /// Access token, with [`Options::auth`].
    token: TokenState,
    /// Connecting, but waiting for a token before opening the link.
    awaiting_token: bool,
    /// The server refused a token this many times in a row (reset by any
    /// sign the token works: `authed`, events, acks).
    auth_failures: u32,
    next_auth_req: u64,
    /// Transient failures in a row (server errors, HTTP 5xx/429, network
    /// errors of the HTTP link): each one backs off further. Reset once a
    /// connection answered a ping.
    faults: u32,
    /// The server asked to wait this long before the next attempt
    /// (`Retry-After`).
    retry_after: Option<u64>,
}

impl ClientCore {
    /// A client that has not connected yet.
    pub fn new(opts: Options) -> Self {
        let rng = Rng::new(opts.seed);
        let outbox = Outbox::new(opts.producer_id.clone(), opts.max_append_bytes);
        Self {
            opts,
            state: ConnectionState::Connecting,
            outputs: Vec::new(),
            subs: Subs::default(),
            outbox,
            rng,
            next_id: 0,
            attempt: 0,
            lost_since: None,
            retry_at: None,
            connect_deadline: None,
            last_received: 0,
            next_ping_at: 0,
            probe_deadline: None,
            started: false,
            token: TokenState::default(),
            awaiting_token: false,
            auth_failures: 0,
            next_auth_req: 0,
            faults: 0,
            retry_after: None,
        }
    }

    /// The access token to present now (HTTP transports send it with every
    /// request, so a refreshed token is used from the next request on).
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options};
    /// let mut core = ClientCore::new(Options::new("p", 1));
    /// assert_eq!(core.token(), None);
    /// core.set_token(0, "opaque-token".into());
    /// assert_eq!(core.token(), Some("opaque-token"));
    /// ```
    pub fn token(&self) -> Option<&str> {
        self.token.get()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The offset after the last message delivered on `sub`.
    pub fn offset(&self, sub: SubId) -> Option<&str> {
        self.subs.get(&sub).and_then(|s| s.cursor.offset())
    }

    /// Appends not yet acknowledged.
    pub fn pending_appends(&self) -> usize {
        self.outbox.pending()
    }

    /// Transient failures in a row since the link last proved to work (an
    /// answered ping). An HTTP transport that sees some probes the server
    /// before it reports the link open, so a page behind a proxy that keeps
    /// answering `503` shows `connecting` / `disconnected`, never
    /// `connected`.
    pub fn faults(&self) -> u32 {
        self.faults
    }

    /// The path of the first live subscription (what an HTTP transport
    /// probes).
    pub fn first_path(&self) -> Option<&str> {
        self.subs.0.first().map(|(_, s)| s.path.as_str())
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    /// When [`ClientCore::on_timer`] should run next (absolute ms).
    pub fn next_timer(&self) -> Option<u64> {
        match self.state {
            ConnectionState::Connected => {
                let dead_at = self.last_received + self.opts.heartbeat_timeout_ms;
                let mut t = dead_at.min(self.next_ping_at);
                if let Some(p) = self.probe_deadline {
                    t = t.min(p);
                }
                if let Some(r) = self.token_due_at() {
                    t = t.min(r);
                }
                Some(t)
            }
            ConnectionState::Connecting => self.connect_deadline,
            ConnectionState::Disconnected | ConnectionState::Suspended => self.retry_at,
            ConnectionState::Closed => None,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn set_state(&mut self, state: ConnectionState, reason: impl Into<String>, retry_in_ms: Option<u64>) {
        self.set_state_with(state, reason.into(), retry_in_ms, None);
    }

    fn set_state_with(
        &mut self,
        state: ConnectionState,
        reason: String,
        retry_in_ms: Option<u64>,
        error: Option<ClientError>,
    ) {
        let previous = self.state;
        self.state = state;
        self.outputs.push(Output::State(StateChange {
            state,
            previous,
            reason,
            retry_in_ms,
            error,
        }));
    }

    /// Reports `error` as a state change that keeps the state, with reason
    /// `code: message`.
    fn report(&mut self, error: ClientError) {
        let reason = [error.code.as_str(), ": ", &error.message].concat();
        self.set_state_with(self.state, reason, None, Some(error));
    }

    fn send(&mut self, msg: ClientMsg) {
        self.outputs.push(Output::Send(msg));
    }

    fn emit(&mut self, sub: SubId, event: SubscriptionEvent) {
        self.outputs.push(Output::Event { sub, event });
    }

    fn resolve(&mut self, resolved: Resolved) {
        for (id, result) in resolved {
            self.outputs.push(Output::Appended { id, result });
        }
    }

    /// Begins connecting. Call once, after creating the client.
    pub fn start(&mut self, now: u64) {
        if self.started || self.state == ConnectionState::Closed {
            return;
        }
        self.started = true;
        self.connect(now, "connect");
    }

    fn connect(&mut self, now: u64, reason: &str) {
        self.retry_at = None;
        self.connect_deadline = Some(now + self.opts.connect_timeout_ms);
        self.set_state(ConnectionState::Connecting, reason, None);
        if self.opts.auth && !self.token.usable(now) {
            // The connect timeout also bounds the wait for the token.
            self.awaiting_token = true;
            let why = self.token.why();
            self.request_token(now, why);
        } else {
            self.outputs.push(Output::Connect);
        }
    }

    /// Asks for a token unless a request is already outstanding (one older
    /// than the connect timeout counts as lost).
    fn request_token(&mut self, now: u64, reason: &str) {
        if self.token.may_request(now, self.opts.connect_timeout_ms) {
            self.token.requested(now);
            self.outputs.push(Output::NeedToken { reason: reason.into() });
        }
    }

    /// When the next proactive token request is due, while connected.
    fn token_due_at(&self) -> Option<u64> {
        self.opts
            .auth
            .then(|| self.token.due_at(self.opts.connect_timeout_ms))
            .flatten()
    }

    /// Presents the current token on the open connection.
    fn send_auth(&mut self) {
        if let Some(token) = self.token.get() {
            let token = token.to_owned();
            self.next_auth_req += 1;
            let req = Some(format!("t{}", self.next_auth_req));
            self.send(ClientMsg::Auth { req, token });
        }
    }

    /// The app's token function returned `token` (at `now`, ms since the
    /// Unix epoch). A client waiting for it connects; a connected client
    /// presents it on the live connection (subscriptions are untouched).
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// let mut opts = Options::new("p", 1);
    /// opts.auth = true;
    /// let mut core = ClientCore::new(opts);
    /// core.start(0);
    /// let out: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
    /// assert!(out.iter().any(|o| matches!(o, Output::NeedToken { .. })));
    /// core.set_token(10, "opaque-token".into());
    /// assert!(std::iter::from_fn(|| core.poll_output()).any(|o| o == Output::Connect));
    /// ```
    pub fn set_token(&mut self, now: u64, token: String) {
        if self.state == ConnectionState::Closed {
            return;
        }
        let changed = self.token.set(now, token);
        if self.awaiting_token && self.state == ConnectionState::Connecting {
            // Even a token that looks expired: the server has the last word.
            self.awaiting_token = false;
            self.outputs.push(Output::Connect);
        } else if changed && self.state == ConnectionState::Connected {
            self.send_auth();
        }
    }

    /// The app's token function failed. A client waiting for a token to
    /// connect retries with backoff; a connected one keeps its current token
    /// and asks again later. Either way the failure is reported as a state
    /// change with reason `token_failed: …`.
    ///
    /// ```
    /// use durable_sessions::core::ClientError;
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// use durable_sessions::core::state::ConnectionState;
    /// let mut opts = Options::new("p", 1);
    /// opts.auth = true;
    /// let mut core = ClientCore::new(opts);
    /// core.start(0);
    /// core.token_failed(5, &ClientError::new("token_failed", "backend down"));
    /// let change = std::iter::from_fn(|| core.poll_output())
    ///     .filter_map(|o| match o { Output::State(c) => Some(c), _ => None })
    ///     .last()
    ///     .unwrap();
    /// assert_eq!(change.state, ConnectionState::Disconnected);
    /// assert_eq!(change.reason, "token_failed: backend down");
    /// assert!(change.retry_in_ms.is_some());
    /// ```
    pub fn token_failed(&mut self, now: u64, error: &ClientError) {
        let error = ClientError::new("token_failed", error.message.clone());
        let unit = self.rng.unit();
        let delay = self
            .opts
            .backoff
            .delay_ms(self.token.failures().saturating_add(1), unit);
        self.token.failed(now, delay);
        match self.state {
            ConnectionState::Connecting if self.awaiting_token => {
                self.awaiting_token = false;
                let reason = [error.code.as_str(), ": ", &error.message].concat();
                self.on_close_with(now, &reason, Some(error));
            }
            ConnectionState::Connected => self.report(error),
            _ => {}
        }
    }

    /// The transport opened the connection.
    pub fn on_open(&mut self, now: u64) {
        if self.state != ConnectionState::Connecting {
            return;
        }
        self.attempt = 0;
        if self.faults == 0 {
            self.lost_since = None;
        }
        self.connect_deadline = None;
        self.probe_deadline = None;
        self.awaiting_token = false;
        self.last_received = now;
        self.next_ping_at = now + self.opts.ping_interval_ms;
        self.set_state(ConnectionState::Connected, "opened", None);
        // Frames are processed in order: the token governs what follows.
        if self.opts.auth {
            self.send_auth();
        }
        let ids = self.subs.ids();
        for id in ids {
            self.open_sub(id);
        }
        let resend = self.outbox.resend();
        for frame in resend {
            self.send(frame);
        }
        self.flush_appends();
    }

    /// Sends the create or subscribe that (re)opens `id` on this connection.
    fn open_sub(&mut self, id: SubId) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        sub.up_to_date = false;
        let msg = if sub.needs_create {
            ClientMsg::Create {
                req: create_req(id),
                path: sub.path.clone(),
                content_type: sub.content_type.clone(),
            }
        } else {
            ClientMsg::Subscribe {
                sub: wire_sub(id),
                path: sub.path.clone(),
                offset: sub.cursor.resume_from().to_owned(),
            }
        };
        self.send(msg);
    }

    fn flush_appends(&mut self) {
        if self.state == ConnectionState::Connected {
            // A stream this client creates takes appends once the create is
            // confirmed: the WebSocket applies frames in order, but an HTTP
            // append could overtake its create.
            let creating = self.subs.0.iter().filter(|(_, s)| s.needs_create);
            self.outbox.hold(creating.map(|(_, s)| s.path.clone()).collect());
            let (frames, failed) = self.outbox.ready();
            self.resolve(failed);
            for frame in frames {
                self.send(frame);
            }
        }
    }

    /// A frame arrived.
    pub fn on_frame(&mut self, now: u64, frame: ServerMsg) {
        if self.state != ConnectionState::Connected {
            return;
        }
        self.last_received = now;
        self.probe_deadline = None;
        if matches!(
            frame,
            ServerMsg::Authed { .. } | ServerMsg::Events { .. } | ServerMsg::Ack { .. }
        ) {
            self.auth_failures = 0;
        }
        match frame {
            ServerMsg::Hello { max_frame_bytes, .. } => self.outbox.set_server_limit(max_frame_bytes),
            // The link answers: it works end to end.
            ServerMsg::Pong { .. } => {
                self.faults = 0;
                self.lost_since = None;
            }
            ServerMsg::Unsubscribed { .. } | ServerMsg::Authed { .. } => {}
            ServerMsg::Error {
                code: ErrorCode::Unauthorized,
                message,
                ..
            } if self.opts.auth => self.refused(now, &format!("unauthorized: {message}")),
            // Any refusal of a token presented on the live connection (e.g.
            // a different principal): start over on a new connection.
            ServerMsg::Error {
                req: Some(req),
                code,
                message,
                ..
            } if self.opts.auth && is_auth_req(&req) => self.refused(now, &format!("{}: {message}", code.as_str())),
            // The server failed for now: every transport, the same path
            // (errors::classify). Unattributed errors concern no request.
            ServerMsg::Error {
                sub,
                req,
                code,
                message,
                ..
            } if classify(code) == ErrorClass::Transient && (sub.is_some() || req.is_some()) => {
                self.on_fault(now, &format!("{}: {message}", code.as_str()), None);
            }
            ServerMsg::Ping { t } => self.send(ClientMsg::Pong { t }),
            ServerMsg::Events {
                sub,
                messages,
                next,
                up_to_date,
                closed,
            } => self.on_events(&sub, messages, &next, up_to_date, closed),
            ServerMsg::Ack {
                req, offset, duplicate, ..
            } => {
                if let Some(id) = self.pending_create(&req) {
                    self.created(id);
                } else if let Some(resolved) = self.outbox.on_ack(&req, &offset, duplicate) {
                    self.resolve(resolved);
                    self.flush_appends();
                }
            }
            ServerMsg::Error {
                sub: Some(wire),
                code,
                message,
                ..
            } => self.on_sub_error(&wire, code, message),
            ServerMsg::Error {
                req: Some(req),
                code,
                message,
                ..
            } => {
                if let Some(id) = self.pending_create(&req) {
                    if matches!(code, ErrorCode::Conflict | ErrorCode::Forbidden) {
                        // It exists with another configuration, or the token
                        // may read but not create it: read it anyway (the
                        // subscribe says whether that is allowed).
                        self.created(id);
                    } else {
                        self.sub_failed(id, code, message);
                    }
                } else if let Some((resolved, retry)) = self.outbox.on_error(&req, code, &message) {
                    self.resolve(resolved);
                    if let Some(frame) = retry {
                        self.send(frame);
                    }
                    self.flush_appends();
                }
            }
            ServerMsg::Error { .. } => {}
        }
    }

    fn created(&mut self, id: SubId) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.needs_create = false;
            self.open_sub(id);
            self.flush_appends();
        }
    }

    fn on_events(&mut self, wire: &str, messages: Vec<Message>, next: &str, up_to_date: bool, closed: bool) {
        let Some(id) = sub_of_wire(wire) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let fresh = sub.cursor.accept(messages, next);
        let caught_up = up_to_date && !sub.up_to_date;
        sub.up_to_date = up_to_date;
        let offset = sub.cursor.resume_from().to_owned();
        if !fresh.is_empty() {
            self.emit(id, SubscriptionEvent::Messages(fresh));
        }
        if caught_up {
            self.emit(id, SubscriptionEvent::UpToDate { offset });
        }
        if closed {
            self.end_sub(id, SubscriptionEvent::Closed);
        }
    }

    fn on_sub_error(&mut self, wire: &str, code: ErrorCode, message: String) {
        let Some(id) = sub_of_wire(wire) else {
            return;
        };
        // `not_found` for a subscription that has read the stream means the
        // stream was deleted under it (a server answers `not_found` until it
        // is created again, `gone` after): its offset no longer names
        // anything, exactly as with `gone`. Only a stream this subscription
        // never saw is a permanent `not_found`.
        let deleted = code == ErrorCode::NotFound && self.subs.get(&id).is_some_and(|s| s.cursor.offset().is_some());
        if !deleted && classify(code) != ErrorClass::Reset {
            self.sub_failed(id, code, message);
            return;
        }
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let policy = sub.reset;
        self.emit(id, SubscriptionEvent::Reset { reason: message });
        let restart = match policy {
            ResetPolicy::Stop => {
                self.remove_sub(id);
                return;
            }
            ResetPolicy::FromBeginning => StartFrom::Beginning,
            ResetPolicy::FromNow => StartFrom::Now,
        };
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.cursor.restart(restart);
            self.open_sub(id);
        }
    }

    /// Ends subscription `id` with a permanent error. Access errors are also reported
    /// as a state change (`forbidden: sessions/abc`), so an app watching the
    /// connection sees them.
    fn sub_failed(&mut self, id: SubId, code: ErrorCode, message: String) {
        let Some(path) = self.subs.get(&id).map(|s| s.path.clone()) else {
            return;
        };
        self.end_sub(id, SubscriptionEvent::Error(ClientError::new(code.as_str(), message)));
        if matches!(code, ErrorCode::Forbidden | ErrorCode::Unauthorized) {
            self.report(ClientError::new(code.as_str(), path));
        }
    }

    /// The server refused the token (an `unauthorized` error, or the
    /// connection closed for an expired token): drop the link, get a new
    /// token and reconnect; subscriptions resume from their offsets and
    /// unacknowledged appends are resent with the same producer ids. The
    /// first retry is immediate, later ones in a row back off.
    fn refused(&mut self, now: u64, reason: &str) {
        self.token.refused();
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.attempt = self.attempt.max(self.auth_failures - 1);
        if self.state == ConnectionState::Connected {
            self.drop_link(now, reason);
        } else {
            self.on_close(now, reason);
        }
    }

    fn end_sub(&mut self, id: SubId, event: SubscriptionEvent) {
        self.emit(id, event);
        self.remove_sub(id);
    }

    fn remove_sub(&mut self, id: SubId) {
        if self.subs.remove(&id).is_some_and(|s| s.needs_create) {
            // Appends held for its create go now (and meet their own fate).
            self.flush_appends();
        }
    }

    /// The subscription whose create `req` answers, if it awaits one.
    fn pending_create(&self, req: &str) -> Option<SubId> {
        sub_of_create(req).filter(|id| self.subs.get(id).is_some_and(|s| s.needs_create))
    }

    /// The connection closed or failed to open.
    pub fn on_close(&mut self, now: u64, reason: &str) {
        self.on_close_with(now, reason, None);
    }

    /// The connection closed with WebSocket close `code`. Code 4003 (the
    /// token expired and no fresh one came in time) makes the client get a
    /// new token before reconnecting.
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// let mut opts = Options::new("p", 1);
    /// opts.auth = true;
    /// let mut core = ClientCore::new(opts);
    /// core.start(0);
    /// core.set_token(0, "opaque-token".into());
    /// core.on_open(1);
    /// std::iter::from_fn(|| core.poll_output()).count();
    /// core.on_close_code(2, 4003, "closed by server (code 4003)");
    /// assert!(std::iter::from_fn(|| core.poll_output()).any(|o| matches!(o, Output::NeedToken { .. })));
    /// ```
    pub fn on_close_code(&mut self, now: u64, code: u16, reason: &str) {
        let open = matches!(self.state, ConnectionState::Connected | ConnectionState::Connecting);
        if code == close_code::TOKEN_EXPIRED && self.opts.auth && open {
            self.refused(now, &format!("token expired ({reason})"));
        } else {
            self.on_close(now, reason);
        }
    }

    fn on_close_with(&mut self, now: u64, reason: &str, error: Option<ClientError>) {
        match self.state {
            ConnectionState::Closed | ConnectionState::Disconnected | ConnectionState::Suspended => return,
            ConnectionState::Connected | ConnectionState::Connecting => {}
        }
        if self.state == ConnectionState::Connecting {
            // Only a drop of a working connection earns an immediate retry.
            self.attempt = self.attempt.max(1);
        }
        self.connect_deadline = None;
        self.probe_deadline = None;
        self.awaiting_token = false;
        let lost_since = *self.lost_since.get_or_insert(now);
        let suspended = now.saturating_sub(lost_since) >= self.opts.suspend_after_ms;
        // Transient failures in a row back off further, even though each
        // reconnect opened a link (an HTTP link opens at once).
        self.attempt = self.attempt.max(self.faults);
        let mut delay = if suspended {
            self.opts.backoff.max_ms
        } else {
            let unit = self.rng.unit();
            self.opts.backoff.delay_ms(self.attempt, unit)
        };
        if let Some(wait) = self.retry_after.take() {
            delay = delay.max(wait);
        }
        self.attempt = self.attempt.saturating_add(1);
        self.retry_at = Some(now + delay);
        let state = if suspended {
            ConnectionState::Suspended
        } else {
            ConnectionState::Disconnected
        };
        self.set_state_with(state, reason.to_owned(), Some(delay), error);
        if delay == 0 {
            self.connect(now, "retrying");
        }
    }

    /// Time passed: heartbeats, timeouts and retries.
    pub fn on_timer(&mut self, now: u64) {
        match self.state {
            ConnectionState::Connected => {
                let dead = now >= self.last_received + self.opts.heartbeat_timeout_ms
                    || self.probe_deadline.is_some_and(|d| now >= d);
                if dead {
                    self.drop_link(now, "heartbeat timeout");
                    return;
                }
                if now >= self.next_ping_at {
                    self.next_ping_at = now + self.opts.ping_interval_ms;
                    self.send(ClientMsg::Ping { t: Some(now) });
                }
                if self.token_due_at().is_some_and(|t| now >= t) {
                    self.request_token(now, "refresh");
                }
            }
            ConnectionState::Connecting => {
                if self.connect_deadline.is_some_and(|d| now >= d) {
                    self.drop_link(now, "connect timeout");
                }
            }
            ConnectionState::Disconnected | ConnectionState::Suspended => {
                if self.retry_at.is_some_and(|t| now >= t) {
                    self.connect(now, "retrying");
                }
            }
            ConnectionState::Closed => {}
        }
    }

    /// A transient failure: the server failed for now (`internal`, or over
    /// HTTP a 5xx, `429`, `408`), or a request of the HTTP link failed on
    /// the network. The link is dropped and the state becomes
    /// `disconnected` with `reason` and a retry delay that grows with each
    /// failure in a row (at least `retry_after_ms`, the server's
    /// `Retry-After`, when given). On the new connection every subscription
    /// resumes from its offset (no gap, no duplicate) and unacknowledged
    /// appends are resent with the same producer ids (stored once).
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// use durable_sessions::core::state::ConnectionState;
    /// let mut core = ClientCore::new(Options::new("p", 1));
    /// core.start(0);
    /// core.on_open(1);
    /// core.on_fault(2, "HTTP 503", Some(2_000));
    /// let change = std::iter::from_fn(|| core.poll_output())
    ///     .filter_map(|o| match o { Output::State(c) => Some(c), _ => None })
    ///     .last()
    ///     .unwrap();
    /// assert_eq!((change.state, change.reason.as_str()), (ConnectionState::Disconnected, "HTTP 503"));
    /// assert!(change.retry_in_ms.unwrap() >= 2_000);
    /// ```
    pub fn on_fault(&mut self, now: u64, reason: &str, retry_after_ms: Option<u64>) {
        if !matches!(self.state, ConnectionState::Connected | ConnectionState::Connecting) {
            return;
        }
        self.faults = self.faults.saturating_add(1);
        self.retry_after = retry_after_ms;
        if self.state == ConnectionState::Connected {
            self.drop_link(now, reason);
        } else {
            self.on_close(now, reason);
        }
    }

    fn drop_link(&mut self, now: u64, reason: &str) {
        self.outputs.push(Output::Disconnect { reason: reason.into() });
        self.on_close(now, reason);
    }

    /// A hint that the network may have changed (browser `online`,
    /// `visibilitychange`, `pageshow`): when connected, probe the link; when
    /// waiting to retry, retry now.
    pub fn check_connection(&mut self, now: u64, reason: &str) {
        match self.state {
            ConnectionState::Connected => {
                if self.probe_deadline.is_none() {
                    self.probe_deadline = Some(now + self.opts.probe_timeout_ms);
                    self.send(ClientMsg::Ping { t: Some(now) });
                }
            }
            ConnectionState::Disconnected | ConnectionState::Suspended => self.connect(now, reason),
            ConnectionState::Connecting | ConnectionState::Closed => {}
        }
    }

    /// The options this client was made with.
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options};
    /// let core = ClientCore::new(Options::new("tab-1", 7));
    /// assert_eq!(core.options().heartbeat_timeout_ms, 12_000);
    /// ```
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Subscribes to `path`. Delivery starts once connected and survives
    /// reconnects with no app code.
    pub fn subscribe(&mut self, path: &str, opts: SubscribeOptions) -> SubId {
        let id = self.next_id();
        let start = opts.start.0.unwrap_or(StartFrom::Beginning);
        self.subs.insert(
            id,
            Sub {
                path: path.to_owned(),
                cursor: Cursor::new(start.clone()),
                start,
                reset: opts.reset,
                needs_create: opts.create,
                content_type: opts.content_type,
                up_to_date: false,
            },
        );
        if self.state == ConnectionState::Connected {
            self.open_sub(id);
        }
        id
    }

    /// Ends a subscription.
    pub fn unsubscribe(&mut self, id: SubId) {
        if self.subs.get(&id).is_some() && self.state == ConnectionState::Connected {
            self.send(ClientMsg::Unsubscribe { sub: wire_sub(id) });
        }
        self.remove_sub(id);
    }

    /// The start a subscription was created with.
    pub fn start_of(&self, id: SubId) -> Option<&StartFrom> {
        self.subs.get(&id).map(|s| &s.start)
    }

    /// Stream `path` has `content_type`: appends to it travel as what that
    /// type holds (JSON events by default, text, or bytes in base64; see
    /// [`crate::core::outbox::StreamKind`]). Call before appending to it.
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// use durable_sessions::protocol::ws::{ClientMsg, Payload};
    /// let mut core = ClientCore::new(Options::new("p", 1));
    /// core.start(0);
    /// core.on_open(1);
    /// core.set_content_type("logs/a", "text/plain");
    /// core.append("logs/a", "one line\n".into());
    /// let sent = std::iter::from_fn(|| core.poll_output()).any(|o| matches!(o,
    ///     Output::Send(ClientMsg::Append { payload: Some(Payload::Text(t)), .. }) if t == "one line\n"));
    /// assert!(sent);
    /// assert_eq!(core.content_type("logs/a"), Some("text/plain"));
    /// ```
    pub fn set_content_type(&mut self, path: &str, content_type: &str) {
        self.outbox.set_content_type(path, content_type);
    }

    /// The content type of `path`, if set ([`ClientCore::set_content_type`]).
    pub fn content_type(&self, path: &str) -> Option<&str> {
        self.outbox.content_type(path)
    }

    /// Queues one event (JSON text) for `path`. It is sent when connected,
    /// retried across reconnects without duplicates, and resolved by an
    /// [`Output::Appended`] with the returned id.
    pub fn append(&mut self, path: &str, json: String) -> AppendId {
        self.append_in(path, json, Lane::Content)
    }

    /// Queues one event in `lane`: [`Lane::Control`] for `cancel` and
    /// `steer`, which then never wait for a message's acknowledgement. An
    /// event larger than the limit ([`Options::max_append_bytes`], and the
    /// server's `max_frame_bytes` once known) fails at once with
    /// `too_large`.
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// use durable_sessions::core::outbox::Lane;
    /// let mut opts = Options::new("p", 1);
    /// opts.max_append_bytes = 1_000;
    /// let mut core = ClientCore::new(opts);
    /// let id = core.append_in("sessions/a", format!("\"{}\"", "x".repeat(2_000)), Lane::Content);
    /// let failed = std::iter::from_fn(|| core.poll_output()).any(|o| matches!(o,
    ///     Output::Appended { id: i, result: Err(e) } if i == id && e.code == "too_large"));
    /// assert!(failed);
    /// ```
    pub fn append_in(&mut self, path: &str, json: String, lane: Lane) -> AppendId {
        let id = self.next_id();
        if self.state == ConnectionState::Closed {
            self.outputs.push(Output::Appended {
                id,
                result: Err(ClientError::new("client_closed", "the client is closed")),
            });
            return id;
        }
        match self.outbox.push(path, lane, id, json) {
            Ok(()) => self.flush_appends(),
            Err(e) => self.outputs.push(Output::Appended { id, result: Err(e) }),
        }
        id
    }

    /// Queues one event (content lane) sent with the producer ids
    /// `producer`, alone in its request, on every attempt: for an append
    /// kept across page loads, so that whichever page load sends it, and
    /// however often, the server stores it once (docs/protocol.md §4.2).
    ///
    /// ```
    /// use durable_sessions::core::client::{ClientCore, Options, Output};
    /// use durable_sessions::protocol::ws::{ClientMsg, ProducerIds};
    /// let mut core = ClientCore::new(Options::new("p", 1));
    /// core.start(0);
    /// core.on_open(1);
    /// let ids = ProducerIds { id: "kept-1".into(), epoch: 0, seq: 0 };
    /// core.append_as("sessions/a", r#"{"type":"note"}"#.into(), ids.clone());
    /// let sent = std::iter::from_fn(|| core.poll_output()).any(|o| matches!(o,
    ///     Output::Send(ClientMsg::Append { producer: Some(p), .. }) if p == ids));
    /// assert!(sent);
    /// ```
    pub fn append_as(
        &mut self,
        path: &str,
        json: String,
        producer: durable_session_protocol::ws::ProducerIds,
    ) -> AppendId {
        let id = self.next_id();
        if self.state == ConnectionState::Closed {
            self.outputs.push(Output::Appended {
                id,
                result: Err(ClientError::new("client_closed", "the client is closed")),
            });
            return id;
        }
        match self.outbox.push_as(path, id, json, producer) {
            Ok(()) => self.flush_appends(),
            Err(e) => self.outputs.push(Output::Appended { id, result: Err(e) }),
        }
        id
    }

    /// Closes the client for good: the connection ends, pending appends fail
    /// with `client_closed`, subscriptions end.
    pub fn close(&mut self) {
        if self.state == ConnectionState::Closed {
            return;
        }
        if matches!(self.state, ConnectionState::Connected | ConnectionState::Connecting) {
            self.outputs.push(Output::Disconnect {
                reason: "closed by app".into(),
            });
        }
        self.set_state(ConnectionState::Closed, "closed by app", None);
        let failed = self
            .outbox
            .fail_all(&ClientError::new("client_closed", "the client was closed"));
        self.resolve(failed);
        self.subs.clear();
        self.retry_at = None;
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "auth_tests.rs"]
mod auth_tests;

#[cfg(test)]
#[path = "fault_tests.rs"]
mod fault_tests;
