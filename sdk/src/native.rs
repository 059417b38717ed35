//! A tokio WebSocket transport for the core: the client the demo agents and
//! the Rust tests use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
//! use durable_sessions::protocol::session::SessionEvent;
//! use durable_sessions::native::{Client, NativeOptions};
//! let client = Client::connect(NativeOptions::new("ws://127.0.0.1:4437/v1/ws"));
//! let mut sub = client.subscribe("sessions/demo", SubscribeOptions { create: true, ..Default::default() }).await;
//! let hello = SessionEvent::UserMessage { id: "m1".into(), author: "ada".into(), text: "hi".into(), mode: Default::default() };
//! client.append_event("sessions/demo", &hello).await?;
//! while let Some(event) = sub.next().await {
//!     if let SubscriptionEvent::Messages(messages) = event {
//!         println!("{} new messages", messages.len());
//!     }
//! }
//! # Ok(()) }
//! ```

mod link;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_session_protocol::session::SessionEvent;
use durable_session_protocol::ws::{ProducerIds, ServerMsg};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::core::ClientError;
use crate::core::client::{ClientCore, Options, Output, SubId, SubscribeOptions, SubscriptionEvent};
use crate::core::endpoints::Endpoints;
use crate::core::outbox::{AppendAck, AppendId};
use crate::core::state::{ConnectionState, StateChange};
use link::{Link, LinkEvent};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A future yielding an access token (a JWT).
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, ClientError>> + Send>>;

/// Gets an access token: called before connecting without a usable token,
/// at about 75 % of the token's lifetime (the new token then replaces the
/// old one on the live connection, with no reconnect), and when the server
/// refuses the token. A failure is retried with backoff.
pub type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// Where to connect and how.
#[derive(Clone)]
pub struct NativeOptions {
    /// `ws://host:port/v1/ws`.
    pub url: String,
    /// More nodes of the same cluster — servers sharing one log (several
    /// nodes on one Redis), so offsets mean the same on each. When a
    /// connection fails or drops, the next attempt goes to the next node, in
    /// order after `url`, round and round: subscriptions resume from their
    /// offsets and unacknowledged appends are resent with their producer
    /// ids, so losing a node costs a reconnect, never an event.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use durable_sessions::native::{Client, NativeOptions};
    /// let mut options = NativeOptions::new("ws://node-a:4437/v1/ws");
    /// options.fallback_urls = vec!["ws://node-b:4437/v1/ws".into()];
    /// let client = Client::connect(options);
    /// # let _ = client; }
    /// ```
    pub fallback_urls: Vec<String>,
    /// Tunables of the core (backoff, heartbeat, producer id …).
    pub core: Options,
    /// Access tokens, for a server with access control on.
    pub token: Option<TokenProvider>,
    /// Most bytes of frames waiting to be sent on the socket (32 MiB by
    /// default). Sending never holds up receiving or heartbeats; a server
    /// that stops reading until this much is waiting is taken for gone: the
    /// client drops the connection, reconnects and resumes (a stalled link
    /// is also noticed by the heartbeat timeout when nothing arrives).
    pub max_unsent_bytes: usize,
}

impl fmt::Debug for NativeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeOptions")
            .field("url", &self.url)
            .field("fallback_urls", &self.fallback_urls)
            .field("core", &self.core)
            .field("token", &self.token.as_ref().map(|_| "<provider>"))
            .field("max_unsent_bytes", &self.max_unsent_bytes)
            .finish()
    }
}

impl NativeOptions {
    /// Defaults for `url`, with a random producer id.
    pub fn new(url: impl Into<String>) -> Self {
        let seed: u64 = rand::random();
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            core: Options::new(format!("native-{:016x}", rand::random::<u64>()), seed),
            token: None,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
        }
    }

    /// Gets access tokens from `provider` (e.g. minted by the app's
    /// backend, or read from a file that a sidecar keeps fresh).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use durable_sessions::native::{Client, NativeOptions};
    /// let options = NativeOptions::new("ws://127.0.0.1:4437/v1/ws").with_token(|| async {
    ///     std::fs::read_to_string("/run/agent.jwt")
    ///         .map(|t| t.trim().to_owned())
    ///         .map_err(|e| durable_sessions::core::ClientError::new("token_failed", e.to_string()))
    /// });
    /// let client = Client::connect(options);
    /// # let _ = client; }
    /// ```
    pub fn with_token<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, ClientError>> + Send + 'static,
    {
        self.token = Some(Arc::new(move || Box::pin(provider()) as TokenFuture));
        self
    }
}

/// Default of [`NativeOptions::max_unsent_bytes`].
pub const DEFAULT_MAX_UNSENT_BYTES: usize = 32 * 1024 * 1024;

/// Milliseconds since the Unix epoch (the core compares them with a token's
/// `exp`).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Command {
    Subscribe {
        path: String,
        opts: SubscribeOptions,
        events: mpsc::UnboundedSender<SubscriptionEvent>,
        id: oneshot::Sender<SubId>,
    },
    Unsubscribe(SubId),
    Append {
        path: String,
        json: String,
        /// Producer ids of the app's choosing ([`Client::append_event_as`]).
        producer: Option<ProducerIds>,
        done: oneshot::Sender<Result<AppendAck, ClientError>>,
    },
    Check(String),
    DropConnection,
    Close,
}

/// A connection to a durable-sessions server that reconnects and resumes
/// by itself. Cheap to clone; the connection closes when the last clone is
/// dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<StateChange>,
}

/// Deliveries of one subscription. Unsubscribes when dropped.
#[must_use = "a subscription ends when dropped"]
pub struct Subscription {
    id: SubId,
    events: mpsc::UnboundedReceiver<SubscriptionEvent>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// The subscription's id within its client.
    pub fn id(&self) -> SubId {
        self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe(self.id));
    }
}

fn closed_error() -> ClientError {
    ClientError::new("client_closed", "the client is closed")
}

impl Client {
    /// Starts connecting in the background. Must be called inside a tokio
    /// runtime.
    pub fn connect(options: NativeOptions) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let initial = StateChange {
            state: ConnectionState::Connecting,
            previous: ConnectionState::Connecting,
            reason: "connect".into(),
            retry_in_ms: None,
            error: None,
        };
        let (state_tx, state) = watch::channel(initial);
        tokio::spawn(Driver::new(options, state_tx).run(rx));
        Self { commands, state }
    }

    /// Subscribes to `path`; events arrive on the returned handle.
    pub async fn subscribe(&self, path: &str, opts: SubscribeOptions) -> Subscription {
        let (tx, events) = mpsc::unbounded_channel();
        let (id_tx, id_rx) = oneshot::channel();
        let _ = self.commands.send(Command::Subscribe {
            path: path.into(),
            opts,
            events: tx,
            id: id_tx,
        });
        // After a close the driver is gone: the handle then yields nothing.
        let id = id_rx.await.unwrap_or(0);
        Subscription {
            id,
            events,
            commands: self.commands.clone(),
        }
    }

    /// Appends a session event and resolves once the server acknowledged it
    /// durably.
    pub async fn append_event(&self, path: &str, event: &SessionEvent) -> Result<AppendAck, ClientError> {
        self.append_json(path, event.to_json()).await
    }

    /// Appends one message given as JSON text.
    pub async fn append_json(&self, path: &str, json: String) -> Result<AppendAck, ClientError> {
        self.append_with(path, json, None).await
    }

    /// [`Client::append_event`] sent with the producer ids `producer`, alone
    /// in its request, on every attempt (docs/protocol.md §4.2): whoever
    /// sends the same ids first stores the event; every later send, from
    /// this client or another, is acknowledged with `duplicate: true` and
    /// stores nothing. Agents claim a message this way (§11).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use durable_sessions::native::{Client, NativeOptions};
    /// use durable_sessions::protocol::session::SessionEvent;
    /// use durable_sessions::protocol::ws::ProducerIds;
    /// let client = Client::connect(NativeOptions::new("ws://127.0.0.1:4437/v1/ws"));
    /// let started = SessionEvent::RunStarted { run_id: "r1".into(), agent: "sim".into(), in_reply_to: "m1".into() };
    /// let claim = ProducerIds { id: "claim-m1".into(), epoch: 0, seq: 0 };
    /// let ack = client.append_event_as("sessions/demo", &started, claim).await?;
    /// if ack.duplicate {
    ///     println!("stored before: by another agent, or by an earlier attempt of ours");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn append_event_as(
        &self,
        path: &str,
        event: &SessionEvent,
        producer: ProducerIds,
    ) -> Result<AppendAck, ClientError> {
        self.append_with(path, event.to_json(), Some(producer)).await
    }

    async fn append_with(
        &self,
        path: &str,
        json: String,
        producer: Option<ProducerIds>,
    ) -> Result<AppendAck, ClientError> {
        if durable_session_protocol::json::parse(&json).is_err() {
            return Err(ClientError::new("invalid_event", "the event is not valid JSON"));
        }
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Append {
                path: path.into(),
                json,
                producer,
                done,
            })
            .map_err(|_| closed_error())?;
        rx.await.unwrap_or_else(|_| Err(closed_error()))
    }

    /// The latest connection state change.
    pub fn state(&self) -> StateChange {
        self.state.borrow().clone()
    }

    /// Waits until the connection is in `state` (or `timeout` passes).
    pub async fn wait_for_state(&self, state: ConnectionState, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| c.state == state))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A watch of state changes.
    pub fn state_changes(&self) -> watch::Receiver<StateChange> {
        self.state.clone()
    }

    /// Probes the link now (as after a network change).
    pub fn check_connection(&self, reason: &str) {
        let _ = self.commands.send(Command::Check(reason.into()));
    }

    /// Kills the socket the way a network failure would (no close frame);
    /// the client reconnects and resumes by itself. For tests and demos.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::DropConnection);
    }

    /// Closes the client: pending appends fail with `client_closed`.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

struct Driver {
    /// The nodes ([`NativeOptions::url`], then the fallbacks).
    urls: Endpoints<String>,
    core: ClientCore,
    epoch: Instant,
    /// Unix time at `epoch`: the core's clock is Unix milliseconds, advanced
    /// by the monotonic clock (so a jumping wall clock does not disturb
    /// heartbeats and backoff).
    epoch_unix_ms: u64,
    token: Option<TokenProvider>,
    tokens_tx: mpsc::UnboundedSender<Result<String, ClientError>>,
    tokens: mpsc::UnboundedReceiver<Result<String, ClientError>>,
    state: watch::Sender<StateChange>,
    subs: HashMap<SubId, mpsc::UnboundedSender<SubscriptionEvent>>,
    appends: HashMap<AppendId, oneshot::Sender<Result<AppendAck, ClientError>>>,
    link: Option<Link>,
    max_unsent_bytes: usize,
    connecting: Option<tokio::task::JoinHandle<Result<Socket, String>>>,
}

impl Driver {
    fn new(options: NativeOptions, state: watch::Sender<StateChange>) -> Self {
        let mut core = options.core;
        core.auth = options.token.is_some();
        let (tokens_tx, tokens) = mpsc::unbounded_channel();
        Self {
            urls: Endpoints::new(options.url, options.fallback_urls),
            core: ClientCore::new(core),
            epoch: Instant::now(),
            epoch_unix_ms: unix_ms(),
            token: options.token,
            tokens_tx,
            tokens,
            state,
            subs: HashMap::new(),
            appends: HashMap::new(),
            link: None,
            max_unsent_bytes: options.max_unsent_bytes,
            connecting: None,
        }
    }

    fn now(&self) -> u64 {
        self.epoch_unix_ms + self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(self.epoch_unix_ms))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.core.start(self.now());
        // Nothing is awaited outside this `select!`: sending goes through
        // the link's writer task, so a socket that does not take bytes never
        // holds up frames, timers or commands.
        loop {
            self.flush();
            if self.core.state() == ConnectionState::Closed {
                break;
            }
            let timer = self.core.next_timer().map(|t| self.at(t));
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => self.core.close(),
                },
                result = connect_result(&mut self.connecting) => {
                    self.connecting = None;
                    let now = self.now();
                    match result {
                        Ok(socket) => {
                            self.link = Some(Link::new(socket, self.max_unsent_bytes));
                            self.core.on_open(now);
                        }
                        Err(reason) => self.core.on_close(now, &reason),
                    }
                }
                Some(token) = self.tokens.recv() => {
                    let now = self.now();
                    match token {
                        Ok(token) => self.core.set_token(now, token),
                        Err(e) => self.core.token_failed(now, &e),
                    }
                }
                event = next_event(&mut self.link) => {
                    let now = self.now();
                    match event {
                        LinkEvent::Received(Some(Ok(WsMessage::Text(text)))) => {
                            if let Ok(msg) = ServerMsg::parse(text.as_str()) {
                                self.core.on_frame(now, msg);
                            }
                        }
                        LinkEvent::Received(Some(Ok(WsMessage::Close(frame)))) => {
                            // Answer the close frame (the closing handshake).
                            if let Some(link) = self.link.take() {
                                link.close();
                            }
                            match frame {
                                Some(f) => {
                                    let code = u16::from(f.code);
                                    self.core.on_close_code(now, code, &format!("closed by server (code {code})"));
                                }
                                None => self.core.on_close(now, "closed by server"),
                            }
                        }
                        LinkEvent::Received(Some(Ok(_))) => {}
                        LinkEvent::Received(Some(Err(e))) => {
                            self.link = None;
                            self.core.on_close(now, &format!("connection error: {e}"));
                        }
                        LinkEvent::Received(None) => {
                            self.link = None;
                            self.core.on_close(now, "connection lost");
                        }
                        LinkEvent::SendFailed(reason) => {
                            self.link = None;
                            self.core.on_close(now, &reason);
                        }
                    }
                }
                () = sleep_until(timer) => {
                    let now = self.now();
                    self.core.on_timer(now);
                }
            }
        }
        self.flush();
        if let Some(link) = self.link.take() {
            link.close();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe { path, opts, events, id } => {
                let sub = self.core.subscribe(&path, opts);
                self.subs.insert(sub, events);
                let _ = id.send(sub);
            }
            Command::Unsubscribe(sub) => {
                self.subs.remove(&sub);
                self.core.unsubscribe(sub);
            }
            Command::Append {
                path,
                json,
                producer,
                done,
            } => {
                let id = match producer {
                    Some(producer) => self.core.append_as(&path, json, producer),
                    None => self.core.append(&path, json),
                };
                self.appends.insert(id, done);
            }
            Command::Check(reason) => {
                let now = self.now();
                self.core.check_connection(now, &reason);
            }
            Command::DropConnection => {
                // Dropped, not closed: no close frame.
                if self.link.take().is_some() {
                    let now = self.now();
                    self.core.on_close(now, "connection dropped");
                }
            }
            Command::Close => self.core.close(),
        }
    }

    /// Carries out everything the core asked for, without waiting.
    fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Connect => {
                    self.link = None;
                    // After a failed or dropped connection: the next node.
                    let url = self.urls.next_attempt().clone();
                    self.connecting = Some(tokio::spawn(async move {
                        tokio_tungstenite::connect_async(url.as_str())
                            .await
                            .map(|(socket, _)| socket)
                            .map_err(|e| format!("connect failed: {e}"))
                    }));
                }
                Output::NeedToken { .. } => {
                    let tx = self.tokens_tx.clone();
                    match &self.token {
                        Some(provider) => {
                            let token = provider();
                            tokio::spawn(async move {
                                let _ = tx.send(token.await);
                            });
                        }
                        None => {
                            let _ = tx.send(Err(ClientError::new("token_failed", "no token provider")));
                        }
                    }
                }
                Output::Send(msg) => {
                    if let Some(link) = &mut self.link
                        && let Err(reason) = link.send(msg.to_json())
                    {
                        self.link = None;
                        let now = self.now();
                        self.core.on_close(now, &reason);
                    }
                }
                Output::Disconnect { .. } => {
                    if let Some(task) = self.connecting.take() {
                        task.abort();
                    }
                    if let Some(link) = self.link.take() {
                        link.close();
                    }
                }
                Output::State(change) => {
                    let _ = self.state.send(change);
                }
                Output::Event { sub, event } => {
                    let ended = matches!(event, SubscriptionEvent::Closed | SubscriptionEvent::Error(_));
                    if let Some(tx) = self.subs.get(&sub) {
                        let _ = tx.send(event);
                    }
                    if ended {
                        self.subs.remove(&sub);
                    }
                }
                Output::Appended { id, result } => {
                    if let Some(done) = self.appends.remove(&id) {
                        let _ = done.send(result);
                    }
                }
            }
        }
    }
}

async fn connect_result(task: &mut Option<tokio::task::JoinHandle<Result<Socket, String>>>) -> Result<Socket, String> {
    match task {
        Some(t) => t.await.unwrap_or_else(|e| Err(format!("connect task failed: {e}"))),
        None => std::future::pending().await,
    }
}

async fn next_event(link: &mut Option<Link>) -> LinkEvent {
    match link {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
