//! The browser client: the core driven by a WebSocket (or HTTP), one timer
//! and the page's network and visibility events.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use durable_session_protocol::ws::{ClientMsg, ServerMsg, WS_PATH};
use gloo_events::EventListener;
use gloo_timers::callback::Timeout;

use super::http::{self, Fault, HttpLink};
use super::socket::{Socket, SocketEvent};
use super::{now_ms, random_id, random_u64};
use crate::core::ClientError;
use crate::core::client::{ClientCore, Options, Output, SubId, SubscribeOptions, SubscriptionEvent};
use crate::core::endpoints::Endpoints;
use crate::core::outbox::{AppendAck, AppendId, Lane};
use crate::core::state::{ConnectionState, StateChange};

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One WebSocket to `/v1/ws` (this project's server).
    #[default]
    WebSocket,
    /// Plain Durable Streams HTTP: `fetch` for catch-up and appends,
    /// long-poll for live (works with any Durable Streams server).
    Http,
}

/// A future yielding an access token (a JWT).
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, ClientError>>>>;

/// Gets an access token for a server with access control on. Called before
/// connecting without a usable token, at about 75 % of the token's lifetime
/// (read from its `exp`; the new token then replaces the old one on the
/// live connection: no reconnect, no resubscribe), and when the server
/// refuses the token (`unauthorized`, or close code 4003: the client then
/// reconnects and resumes with no gap and no duplicate). A failure is
/// retried with backoff and reported as a state change (`token_failed: …`).
///
/// The token goes in an `auth` frame (WebSocket) or an
/// `Authorization: Bearer` header (HTTP), never in a URL.
///
/// ```no_run
/// use std::rc::Rc;
/// use durable_sessions::web::{TokenProvider, WebClient, WebOptions};
/// let mut options = WebOptions::new("https://sessions.example.com");
/// let token: TokenProvider = Rc::new(|| {
///     Box::pin(async {
///         // e.g. fetch("/api/session-token") from the app's own backend.
///         Ok("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEiLCJleHAiOjE4MDAwMDAwMDB9.c2ln".to_owned())
///     })
/// });
/// options.token = Some(token);
/// let client = WebClient::new(options).unwrap();
/// # let _ = client;
/// ```
pub type TokenProvider = Rc<dyn Fn() -> TokenFuture>;

/// Where and how to connect.
#[derive(Clone)]
pub struct WebOptions {
    /// The server: `http(s)://host:port` (or a `ws(s)://…/v1/ws` URL). Empty
    /// or `/` means the page's own origin.
    pub url: String,
    /// More nodes of the same cluster — servers sharing one log (several
    /// nodes on Redis), so offsets mean the same on each. When a connection
    /// fails or drops, the next attempt goes to the next server, in order
    /// after `url`, round and round: subscriptions resume from their
    /// offsets and unacknowledged appends are resent with their producer
    /// ids, so losing a node costs a reconnect, never an event.
    ///
    /// ```no_run
    /// use durable_sessions::web::{WebClient, WebOptions};
    /// let mut options = WebOptions::new("https://node-a.example");
    /// options.fallback_urls = vec!["https://node-b.example".into()];
    /// let client = WebClient::new(options).unwrap();
    /// ```
    pub fallback_urls: Vec<String>,
    pub transport: Transport,
    /// Backoff, heartbeat and the rest of the core's tunables.
    pub core: Options,
    /// Access tokens, for a server with access control on (see
    /// [`TokenProvider`]).
    pub token: Option<TokenProvider>,
}

impl WebOptions {
    /// Defaults for `url`: WebSocket, random producer id.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            transport: Transport::WebSocket,
            core: Options::new(random_id("web"), random_u64()),
            token: None,
        }
    }
}

/// `host:port/v1/ws/` → `host:port`.
fn strip_ws_path(rest: &str) -> &str {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.strip_suffix(WS_PATH).unwrap_or(rest)
}

/// The HTTP base (`http://host:port`) and WebSocket URL of a server URL.
pub(crate) fn endpoints(url: &str, origin: Option<String>) -> Result<(String, String), ClientError> {
    let invalid = || {
        ClientError::new(
            "invalid_url",
            format!("not a server URL: \"{url}\" (use http(s)://host:port)"),
        )
    };
    let url = url.trim_ascii();
    let base = if url.is_empty() || url.starts_with('/') {
        origin.ok_or_else(invalid)?
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{}", strip_ws_path(rest))
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{}", strip_ws_path(rest))
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.trim_end_matches('/').to_owned()
    } else {
        return Err(invalid());
    };
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}{WS_PATH}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}{WS_PATH}")
    } else {
        return Err(invalid());
    };
    Ok((base, ws))
}

type EventCallback = Rc<RefCell<dyn FnMut(SubscriptionEvent)>>;
type StateCallback = Rc<RefCell<dyn FnMut(&StateChange)>>;

/// App-facing outputs, dispatched once the client's state is released.
enum AppOut {
    State(StateChange),
    Event(SubId, SubscriptionEvent),
}

enum Link {
    None,
    Socket(Socket),
    Http(HttpLink),
}

pub(crate) struct Inner {
    pub(crate) core: ClientCore,
    transport: Transport,
    /// The servers ([`WebOptions::url`], then the fallbacks): HTTP base
    /// and WebSocket URL; which one is in use.
    servers: Endpoints<(String, String)>,
    token: Option<TokenProvider>,
    link: Link,
    /// Increases with every connection attempt; events of older links are
    /// ignored.
    pub(crate) generation: u64,
    timer: Option<(u64, Timeout)>,
    queue: Vec<AppOut>,
    dispatching: bool,
    subs: Vec<(SubId, EventCallback)>,
    state_listeners: Vec<(u64, StateCallback)>,
    next_listener: u64,
    appends: Vec<(AppendId, super::slot::Sender<Result<AppendAck, ClientError>>)>,
    last_state: StateChange,
    _page_listeners: Vec<EventListener>,
}

impl Inner {
    /// The HTTP base of the server connected to now.
    pub(crate) fn http_base(&self) -> &str {
        &self.servers.current().0
    }

    /// The cluster's name, the same whichever node is connected (the first
    /// server's HTTP base): what persisted state is kept under.
    pub(crate) fn cluster(&self) -> &str {
        &self.servers.first().0
    }

    fn connect(&mut self, weak: &Weak<RefCell<Inner>>) {
        // Every attempt after the first follows a failed or dropped
        // connection: it goes to the next server.
        self.servers.next_attempt();
        self.generation += 1;
        self.link = Link::None;
        let generation = self.generation;
        match self.transport {
            Transport::Http => {
                self.link = Link::Http(HttpLink::new(weak.clone(), generation));
                // After transient failures, a probe answers first: the state
                // stays `connecting` while a proxy keeps answering 503.
                let probe = self.core.first_path().filter(|_| self.core.faults() > 0);
                match probe.map(str::to_owned) {
                    Some(path) => http::probe(weak.clone(), generation, path),
                    None => self.core.on_open(now_ms()),
                }
            }
            Transport::WebSocket => self.open_socket(weak, generation),
        }
    }

    /// Opens the socket. The token, if any, goes in the first frame (the
    /// core sends `auth` on open), never in the URL.
    fn open_socket(&mut self, weak: &Weak<RefCell<Inner>>, generation: u64) {
        let weak = weak.clone();
        let on_event = move |event: SocketEvent| {
            if let Some(rc) = weak.upgrade() {
                on_socket_event(&rc, generation, event);
            }
        };
        match Socket::open(&self.servers.current().1, on_event) {
            Ok(socket) => self.link = Link::Socket(socket),
            Err(e) => self.core.on_close(now_ms(), &e),
        }
    }

    /// Calls the app's token function; the outcome goes to the core (late
    /// answers too: a token is good whichever request it answers).
    fn fetch_token(&mut self, weak: &Weak<RefCell<Inner>>) {
        let Some(provider) = &self.token else {
            let e = ClientError::new("token_failed", "no token function");
            self.core.token_failed(now_ms(), &e);
            return;
        };
        let token = provider();
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let token = token.await;
            let Some(rc) = weak.upgrade() else { return };
            {
                let mut inner = rc.borrow_mut();
                match token {
                    Ok(token) => inner.core.set_token(now_ms(), token),
                    Err(e) => inner.core.token_failed(now_ms(), &e),
                }
            }
            pump(&rc);
        });
    }

    fn send(&mut self, msg: ClientMsg) {
        match &mut self.link {
            Link::Socket(socket) => {
                if let Err(e) = socket.send(&msg.to_json()) {
                    self.link = Link::None;
                    self.core.on_close(now_ms(), &format!("send failed: {e}"));
                }
            }
            Link::Http(http) => {
                if let Some(reply) = http.handle(msg) {
                    self.core.on_frame(now_ms(), reply);
                }
            }
            Link::None => {}
        }
    }

    fn reschedule(&mut self, weak: &Weak<RefCell<Inner>>) {
        let next = self.core.next_timer();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        self.timer = next.map(|at| {
            let delay = at.saturating_sub(now_ms()).min(u64::from(u32::MAX)) as u32;
            let weak = weak.clone();
            let timeout = Timeout::new(delay, move || {
                if let Some(rc) = weak.upgrade() {
                    {
                        let mut inner = rc.borrow_mut();
                        inner.timer = None;
                        inner.core.on_timer(now_ms());
                    }
                    pump(&rc);
                }
            });
            (at, timeout)
        });
    }
}

fn on_socket_event(rc: &Rc<RefCell<Inner>>, generation: u64, event: SocketEvent) {
    {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        let now = now_ms();
        match event {
            SocketEvent::Open => inner.core.on_open(now),
            SocketEvent::Text(text) => {
                if let Ok(msg) = ServerMsg::parse(&text) {
                    inner.core.on_frame(now, msg);
                }
            }
            SocketEvent::Closed { code, reason } => {
                inner.link = Link::None;
                match code {
                    Some(code) => inner.core.on_close_code(now, code, &reason),
                    None => inner.core.on_close(now, &reason),
                }
            }
        }
    }
    pump(rc);
}

/// Delivers what the HTTP link produced: a frame, or a transient failure
/// (a network error, a 5xx, 429 or 408) that drops the link and retries
/// with backoff.
pub(crate) fn deliver(rc: &Rc<RefCell<Inner>>, generation: u64, frame: Result<ServerMsg, Fault>) {
    {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        match frame {
            Ok(msg) => inner.core.on_frame(now_ms(), msg),
            Err(fault) => {
                inner.link = Link::None;
                inner.core.on_fault(now_ms(), &fault.reason, fault.retry_after_ms);
            }
        }
    }
    pump(rc);
}

/// The HTTP link's probe was answered: the link is open.
pub(crate) fn opened(rc: &Rc<RefCell<Inner>>, generation: u64) {
    {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        inner.core.on_open(now_ms());
    }
    pump(rc);
}

/// Carries out the core's outputs, then runs app callbacks with no borrow
/// held. Re-entrant calls (from inside a callback) only queue.
pub(crate) fn pump(rc: &Rc<RefCell<Inner>>) {
    {
        let weak = Rc::downgrade(rc);
        let mut inner = rc.borrow_mut();
        while let Some(output) = inner.core.poll_output() {
            match output {
                Output::Connect => inner.connect(&weak),
                Output::NeedToken { .. } => inner.fetch_token(&weak),
                Output::Send(msg) => inner.send(msg),
                Output::Disconnect { .. } => {
                    inner.generation += 1;
                    inner.link = Link::None;
                }
                Output::State(change) => {
                    inner.last_state = change.clone();
                    inner.queue.push(AppOut::State(change));
                }
                Output::Event { sub, event } => inner.queue.push(AppOut::Event(sub, event)),
                Output::Appended { id, result } => {
                    if let Some(at) = inner.appends.iter().position(|(i, _)| *i == id) {
                        let (_, done) = inner.appends.swap_remove(at);
                        done.send(result);
                    }
                }
            }
        }
        inner.reschedule(&weak);
        if inner.dispatching {
            return;
        }
        inner.dispatching = true;
    }
    loop {
        enum Call {
            State(Vec<StateCallback>, StateChange),
            Event(EventCallback, SubscriptionEvent),
        }
        let call = {
            let mut inner = rc.borrow_mut();
            match (!inner.queue.is_empty()).then(|| inner.queue.remove(0)) {
                None => {
                    inner.dispatching = false;
                    break;
                }
                Some(AppOut::State(change)) => {
                    Call::State(inner.state_listeners.iter().map(|(_, cb)| cb.clone()).collect(), change)
                }
                Some(AppOut::Event(sub, event)) => match inner.subs.iter().find(|(id, _)| *id == sub) {
                    Some((_, cb)) => Call::Event(cb.clone(), event),
                    None => continue,
                },
            }
        };
        match call {
            Call::State(listeners, change) => {
                for cb in listeners {
                    (cb.borrow_mut())(&change);
                }
            }
            Call::Event(cb, event) => (cb.borrow_mut())(event),
        }
    }
}

/// A connection to a durable-sessions server from the browser. Cheap to
/// clone; everything it holds (socket, timer, page listeners) is released
/// when the last clone is dropped or [`WebClient::close`] is called.
///
/// ```no_run
/// use durable_sessions::web::{WebClient, WebOptions};
/// use durable_sessions::core::client::SubscribeOptions;
/// let client = WebClient::new(WebOptions::new("http://127.0.0.1:4437")).unwrap();
/// let _sub = client.subscribe("sessions/demo", SubscribeOptions { create: true, ..Default::default() }, |event| {
///     web_sys::console::log_1(&format!("{event:?}").into());
/// });
/// ```
#[derive(Clone)]
pub struct WebClient {
    pub(crate) inner: Rc<RefCell<Inner>>,
}

/// A registered callback; dropping it unregisters.
#[must_use = "the callback is removed when this is dropped"]
pub struct Listener {
    client: Weak<RefCell<Inner>>,
    id: u64,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(rc) = self.client.upgrade()
            && let Ok(mut inner) = rc.try_borrow_mut()
        {
            inner.state_listeners.retain(|(id, _)| *id != self.id);
        }
    }
}

/// A live subscription; dropping it unsubscribes.
#[must_use = "the subscription ends when this is dropped"]
pub struct SubscriptionHandle {
    client: WebClient,
    id: SubId,
}

impl SubscriptionHandle {
    /// The offset after the last message delivered.
    pub fn offset(&self) -> Option<String> {
        self.client.inner.borrow().core.offset(self.id).map(str::to_owned)
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.client.inner.try_borrow_mut() {
            inner.subs.retain(|(id, _)| *id != self.id);
            inner.core.unsubscribe(self.id);
        }
        pump(&self.client.inner);
    }
}

fn page_origin() -> Option<String> {
    web_sys::window()?.location().origin().ok()
}

impl WebClient {
    /// Starts connecting. Fails only for an unusable URL.
    pub fn new(options: WebOptions) -> Result<Self, ClientError> {
        let origin = page_origin();
        let first = endpoints(&options.url, origin.clone())?;
        let rest = options
            .fallback_urls
            .iter()
            .map(|url| endpoints(url, origin.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let initial = StateChange {
            state: ConnectionState::Connecting,
            previous: ConnectionState::Connecting,
            reason: "connect".into(),
            retry_in_ms: None,
            error: None,
        };
        let mut core = options.core;
        core.auth = options.token.is_some();
        let inner = Rc::new(RefCell::new(Inner {
            core: ClientCore::new(core),
            transport: options.transport,
            servers: Endpoints::new(first, rest),
            token: options.token,
            link: Link::None,
            generation: 0,
            timer: None,
            queue: Vec::new(),
            dispatching: false,
            subs: Vec::new(),
            state_listeners: Vec::new(),
            next_listener: 0,
            appends: Vec::new(),
            last_state: initial,
            _page_listeners: Vec::new(),
        }));
        let listeners = page_listeners(&Rc::downgrade(&inner));
        inner.borrow_mut()._page_listeners = listeners;
        inner.borrow_mut().core.start(now_ms());
        pump(&inner);
        Ok(Self { inner })
    }

    /// Subscribes to `path`; `on_event` hears every delivery, in order,
    /// exactly once, across reconnects.
    pub fn subscribe(
        &self,
        path: &str,
        opts: SubscribeOptions,
        on_event: impl FnMut(SubscriptionEvent) + 'static,
    ) -> SubscriptionHandle {
        let id = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.core.subscribe(path, opts);
            inner.subs.push((id, Rc::new(RefCell::new(on_event))));
            id
        };
        pump(&self.inner);
        SubscriptionHandle {
            client: self.clone(),
            id,
        }
    }

    /// Stream `path` has `content_type`: its appends are sent as what that
    /// type holds (JSON events, text, or bytes given in base64; see
    /// [`crate::core::outbox::StreamKind`]) and, over HTTP, with that
    /// content type, which the server requires of them.
    pub fn set_content_type(&self, path: &str, content_type: &str) {
        self.inner.borrow_mut().core.set_content_type(path, content_type);
    }

    /// Calls `on_change` on every connection state change.
    pub fn on_state(&self, on_change: impl FnMut(&StateChange) + 'static) -> Listener {
        let mut inner = self.inner.borrow_mut();
        inner.next_listener += 1;
        let id = inner.next_listener;
        inner.state_listeners.push((id, Rc::new(RefCell::new(on_change))));
        Listener {
            client: Rc::downgrade(&self.inner),
            id,
        }
    }

    /// The latest state change.
    pub fn state(&self) -> StateChange {
        self.inner.borrow().last_state.clone()
    }

    /// Appends one event (JSON text); resolves once the server acknowledged
    /// it. Queued while offline, retried without duplicates. An event larger
    /// than the limit (`core.max_append_bytes`, and the server's frame limit
    /// over WebSocket) fails at once with `too_large`.
    pub fn append(&self, path: &str, json: String) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        self.append_in(path, json, Lane::Content)
    }

    /// [`WebClient::append`] in `lane`: [`Lane::Control`] for `cancel` and
    /// `steer`, which then never wait behind a message.
    pub fn append_in(
        &self,
        path: &str,
        json: String,
        lane: Lane,
    ) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        let (done, result) = super::slot::channel();
        {
            let mut inner = self.inner.borrow_mut();
            let id = inner.core.append_in(path, json, lane);
            inner.appends.push((id, done));
        }
        pump(&self.inner);
        async move {
            result
                .await
                .unwrap_or_else(|| Err(ClientError::new("client_closed", "the client was closed")))
        }
    }

    /// [`WebClient::append`] with the producer ids `producer`, alone in its
    /// request, on every attempt (see
    /// [`ClientCore::append_as`](crate::core::client::ClientCore::append_as)):
    /// for an append kept across page loads, stored once whichever page load
    /// sends it.
    pub fn append_as(
        &self,
        path: &str,
        json: String,
        producer: durable_session_protocol::ws::ProducerIds,
    ) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        let (done, result) = super::slot::channel();
        {
            let mut inner = self.inner.borrow_mut();
            let id = inner.core.append_as(path, json, producer);
            inner.appends.push((id, done));
        }
        pump(&self.inner);
        async move {
            result
                .await
                .unwrap_or_else(|| Err(ClientError::new("client_closed", "the client was closed")))
        }
    }

    /// Probes the link (or retries at once when waiting to retry).
    pub fn check_connection(&self, reason: &str) {
        check(&self.inner, reason);
    }

    /// Kills the connection the way a network failure would; the client
    /// reconnects and resumes by itself. For demos and tests.
    pub fn drop_connection(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            inner.link = Link::None;
            inner.core.on_close(now_ms(), "connection dropped");
        }
        pump(&self.inner);
    }

    /// Closes the client: the connection, timer and page listeners are
    /// released; pending appends fail with `client_closed`.
    pub fn close(&self) {
        self.inner.borrow_mut().core.close();
        pump(&self.inner);
        let mut inner = self.inner.borrow_mut();
        inner.timer = None;
        inner.link = Link::None;
        inner._page_listeners.clear();
    }
}

fn check(rc: &Rc<RefCell<Inner>>, reason: &str) {
    rc.borrow_mut().core.check_connection(now_ms(), reason);
    pump(rc);
}

/// `online`, `offline`, `pageshow` and `visibilitychange` (to visible)
/// trigger a reconnect check.
fn page_listeners(weak: &Weak<RefCell<Inner>>) -> Vec<EventListener> {
    let mut listeners = Vec::new();
    let Some(window) = web_sys::window() else {
        return listeners;
    };
    for event in ["online", "offline", "pageshow"] {
        let weak = weak.clone();
        listeners.push(EventListener::new(&window, event, move |_| {
            if let Some(rc) = weak.upgrade() {
                check(&rc, event);
            }
        }));
    }
    if let Some(document) = window.document() {
        let weak = weak.clone();
        let doc = document.clone();
        listeners.push(EventListener::new(&document, "visibilitychange", move |_| {
            if !doc.hidden()
                && let Some(rc) = weak.upgrade()
            {
                check(&rc, "page visible");
            }
        }));
    }
    listeners
}

#[cfg(test)]
mod tests {
    use super::endpoints;

    #[test]
    fn server_urls() {
        let ok = |u: &str, o: Option<&str>| endpoints(u, o.map(str::to_owned)).unwrap();
        assert_eq!(ok("http://h:1", None), ("http://h:1".into(), "ws://h:1/v1/ws".into()));
        assert_eq!(ok("https://h/", None), ("https://h".into(), "wss://h/v1/ws".into()));
        assert_eq!(
            ok("ws://h:1/v1/ws", None),
            ("http://h:1".into(), "ws://h:1/v1/ws".into())
        );
        assert_eq!(
            ok("", Some("http://o:8")),
            ("http://o:8".into(), "ws://o:8/v1/ws".into())
        );
        assert!(endpoints("ftp://x", None).is_err());
        assert!(endpoints("/", None).is_err());
    }
}
