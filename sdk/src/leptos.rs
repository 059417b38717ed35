//! Leptos hooks (feature `leptos`): a session, or any stream, as signals.
//!
//! ```no_run
//! use leptos::prelude::*;
//! use durable_sessions::leptos::use_session;
//!
//! #[component]
//! fn Chat() -> impl IntoView {
//!     let session = use_session("demo");
//!     let send = session.send;
//!     view! {
//!         <p>{move || session.state.get().as_str()}</p>
//!         <ul>{move || session.items.get().len()} " items"</ul>
//!         <button on:click=move |_| send.run(("hello".to_string(), Default::default()))>"Send"</button>
//!     }
//! }
//! ```
//!
//! The id (or path) may be a signal: the hook then follows it, closing one
//! session and opening the next on the same connection, without remounting.
//! [`use_stream`] opens any Durable Streams stream — JSON, text or bytes —
//! that is not a chat.

use durable_session_protocol::session::RunMode;
use leptos::prelude::*;
use leptos::reactive::effect::ImmediateEffect;
use wasm_bindgen_futures::spawn_local;

use crate::core::ClientError;
use crate::core::chat::ChatItem;
use crate::core::outbox::AppendAck;
use crate::core::persist::Limits;
use crate::core::session::Envelope;
use crate::core::state::{ConnectionState, StateChange};
use crate::web::{
    Listener, SessionOptions, SessionUpdate, StreamOptions, TokenProvider, Transport, UpdateListener, WebClient,
    WebOptions, WebSession,
};

/// Options of [`use_session_with_options`].
#[derive(Clone)]
pub struct UseSessionOptions {
    /// A client to share between sessions; by default the hook opens its own
    /// connection to `url` and closes it on cleanup.
    pub client: Option<WebClient>,
    /// The server (default: the page's origin).
    pub url: String,
    /// More nodes of the same cluster, tried in turn when a connection
    /// fails (see [`WebOptions::fallback_urls`]).
    pub fallback_urls: Vec<String>,
    pub transport: Transport,
    /// Author of sent messages and controls (default: a random id).
    pub author: Option<String>,
    /// Keep the session in IndexedDB (default `true`): its transcript, so a
    /// reload resumes where it left off, and its unacknowledged messages, so
    /// one sent offline is delivered exactly once after a reload.
    pub persist: bool,
    /// How much is stored: per session, and how many sessions (LRU).
    ///
    /// ```no_run
    /// use durable_sessions::core::persist::Limits;
    /// use durable_sessions::leptos::{UseSessionOptions, use_session_with_options};
    /// use leptos::prelude::*;
    /// # fn component() {
    /// let session = use_session_with_options("abc", UseSessionOptions {
    ///     limits: Limits { max_events: 10_000, max_sessions: 5, ..Limits::default() },
    ///     ..UseSessionOptions::default()
    /// });
    /// // Shown when the browser's storage is full; the session keeps working.
    /// let warning = move || session.storage_error.get().map(|e| e.code);
    /// # let _ = warning; }
    /// ```
    pub limits: Limits,
    /// Access tokens for a server with access control on (ignored with a
    /// shared `client`, which has its own). Called before connecting, before
    /// the token expires (the new one replaces it on the live connection)
    /// and when the server refuses it. With access control on, the server
    /// writes the token's `sub` as the author: set `author` to it.
    ///
    /// ```no_run
    /// use std::rc::Rc;
    /// use durable_sessions::core::ClientError;
    /// use durable_sessions::leptos::{UseSessionOptions, use_session_with_options};
    /// # fn component() {
    /// let session = use_session_with_options("abc", UseSessionOptions {
    ///     author: Some("ada".into()),
    ///     token: Some(Rc::new(|| Box::pin(async {
    ///         // Ask the app's backend, e.g. with gloo-net: GET /api/session-token.
    ///         Err::<String, _>(ClientError::new("token_failed", "not signed in"))
    ///     }))),
    ///     ..UseSessionOptions::default()
    /// });
    /// # let _ = session; }
    /// ```
    pub token: Option<TokenProvider>,
}

impl Default for UseSessionOptions {
    fn default() -> Self {
        Self {
            client: None,
            url: String::new(),
            fallback_urls: Vec::new(),
            transport: Transport::WebSocket,
            author: None,
            persist: true,
            limits: Limits::default(),
            token: None,
        }
    }
}

/// What [`use_session`] returns: signals to render and callbacks to act.
#[derive(Clone, Copy)]
pub struct UseSessionReturn {
    /// The transcript: user messages, runs, and the events of other types
    /// (an app's own: [`ChatItem::Event`]) where they appeared.
    pub items: Signal<Vec<ChatItem>>,
    /// The connection state.
    pub state: Signal<ConnectionState>,
    /// When retrying: milliseconds until the next attempt (at the time of the change).
    pub retry_in_ms: Signal<Option<u64>>,
    /// Why the state last changed.
    pub state_reason: Signal<String>,
    /// The offset reached.
    pub offset: Signal<Option<String>>,
    /// Session events received.
    pub received: Signal<u64>,
    /// Of those, the events skipped because they could not be read (a known
    /// type without a field it needs, not an object…; another writer's).
    pub skipped: Signal<u64>,
    /// The last error: a failed append, the subscription failing (e.g.
    /// `forbidden`), or the token function failing (`token_failed`, retried
    /// by itself).
    pub error: Signal<Option<ClientError>>,
    /// The stored state has been read (the transcript restored, if any):
    /// `false` only briefly after the session opens with `persist`.
    pub loaded: Signal<bool>,
    /// The subscription has caught up with the server since the session
    /// opened: the transcript then holds everything the server had.
    pub synced: Signal<bool>,
    /// The last storage failure (`quota_exceeded`, `storage_error`): the
    /// session keeps working in memory, its transcript is not stored further.
    pub storage_error: Signal<Option<ClientError>>,
    /// Deletes what is stored for the session (transcript and pending
    /// messages) and stores nothing more for it (e.g. when the user signs out).
    pub clear_storage: Callback<()>,
    /// Sends a user message.
    pub send: Callback<(String, RunMode)>,
    /// Cancels a run by id.
    pub cancel: Callback<String>,
    /// Steers a run: `(run_id, text)`.
    pub steer: Callback<(String, String)>,
    /// Appends any event, given as JSON text: a core event, or one of the
    /// app's own types (it comes back in `items` as a [`ChatItem::Event`]).
    /// A failure shows in `error`.
    ///
    /// ```no_run
    /// use leptos::prelude::*;
    /// # fn component(session: durable_sessions::leptos::UseSessionReturn) {
    /// session.append.run(r#"{"type":"app.vote","choice":2}"#.to_string());
    /// # }
    /// ```
    pub append: Callback<String>,
    /// Kills the connection as a network failure would (it reconnects by itself).
    pub drop_connection: Callback<()>,
}

/// The connection of a hook: its client (its own, or shared) and the
/// client's state as signals.
#[derive(Clone, Copy)]
struct Connection {
    client: StoredValue<Option<WebClient>, LocalStorage>,
    state: RwSignal<ConnectionState>,
    retry_in_ms: RwSignal<Option<u64>>,
    state_reason: RwSignal<String>,
    error: RwSignal<Option<ClientError>>,
}

impl Connection {
    /// Takes `shared`, or opens a client with the options; closes its own on
    /// cleanup.
    fn open(
        shared: Option<WebClient>,
        url: String,
        fallback_urls: Vec<String>,
        transport: Transport,
        token: Option<TokenProvider>,
    ) -> Self {
        let own = shared.is_none();
        let client = shared.map_or_else(
            || {
                let mut o = WebOptions::new(url);
                o.fallback_urls = fallback_urls;
                o.transport = transport;
                o.token = token;
                WebClient::new(o)
            },
            Ok,
        );
        let c = Self {
            client: StoredValue::new_local(None),
            state: RwSignal::new(ConnectionState::Connecting),
            retry_in_ms: RwSignal::new(None),
            state_reason: RwSignal::new(String::new()),
            error: RwSignal::new(None),
        };
        match client {
            Err(e) => c.error.set(Some(e)),
            Ok(client) => {
                let apply = move |change: &StateChange| {
                    c.state.set(change.state);
                    c.retry_in_ms.set(change.retry_in_ms);
                    c.state_reason.set(change.reason.clone());
                    if let Some(e) = &change.error {
                        c.error.set(Some(e.clone()));
                    }
                };
                apply(&client.state());
                let listener: StoredValue<Option<Listener>, LocalStorage> =
                    StoredValue::new_local(Some(client.on_state(apply)));
                c.client.set_value(Some(client));
                on_cleanup(move || {
                    listener.set_value(None);
                    if let Some(client) = c.client.try_update_value(Option::take).flatten()
                        && own
                    {
                        client.close();
                    }
                });
            }
        }
        c
    }

    fn client(&self) -> Option<WebClient> {
        self.client.try_with_value(Clone::clone).flatten()
    }

    /// Reports a failed action in `error`.
    fn report(self) -> impl Fn(Result<AppendAck, ClientError>) + Copy + Send + Sync {
        let error = self.error;
        move |result| {
            if let Err(e) = result {
                error.set(Some(e));
            }
        }
    }
}

/// The open session (or stream) of a hook and what listens to it. Follows
/// `id`: when it changes, the open one is closed and the new one opened on
/// the same connection; on cleanup, the last one is closed.
#[derive(Clone, Copy)]
struct Opened {
    session: StoredValue<Option<(WebSession, UpdateListener)>, LocalStorage>,
}

impl Opened {
    /// Opens `open(client, id)` for each value of `id`, calling
    /// `reset(session)` first and `on_update` with each of its updates.
    fn follow(
        connection: Connection,
        id: Signal<String>,
        open: impl Fn(&WebClient, &str) -> WebSession + 'static,
        reset: impl Fn(&WebSession) + 'static,
        on_update: impl Fn(&WebSession, &SessionUpdate) + Clone + 'static,
    ) -> Self {
        let session: StoredValue<Option<(WebSession, UpdateListener)>, LocalStorage> = StoredValue::new_local(None);
        let current = StoredValue::new_local(None::<String>);
        let open = StoredValue::new_local((open, reset, on_update));
        // Runs at once, and again as soon as `id` changes: no executor, no
        // remount.
        let effect = ImmediateEffect::new_isomorphic(move || {
            let id = id.get();
            untrack(|| {
                if current.with_value(|c| c.as_deref() == Some(id.as_str())) {
                    return;
                }
                current.set_value(Some(id.clone()));
                if let Some((old, listener)) = session.try_update_value(Option::take).flatten() {
                    drop(listener);
                    old.close();
                }
                let Some(client) = connection.client() else { return };
                open.with_value(|(open, reset, on_update)| {
                    let s = open(&client, &id);
                    reset(&s);
                    let on_update = on_update.clone();
                    let weak = s.clone();
                    let listener = s.on_update(move |u| on_update(&weak, u));
                    session.set_value(Some((s, listener)));
                });
            });
        });
        let effect = StoredValue::new_local(Some(effect));
        on_cleanup(move || {
            effect.set_value(None);
            if let Some((s, listener)) = session.try_update_value(Option::take).flatten() {
                drop(listener);
                s.close();
            }
        });
        Self { session }
    }

    /// The session open now.
    fn get(self) -> impl Fn() -> Option<WebSession> + Copy + Send + Sync {
        let session = self.session;
        move || session.try_with_value(|s| s.as_ref().map(|(s, _)| s.clone())).flatten()
    }
}

/// [`use_session_with_options`] with defaults: the page's own server.
pub fn use_session(id: impl Into<Signal<String>>) -> UseSessionReturn {
    use_session_with_options(id, UseSessionOptions::default())
}

/// Opens session `id` for the life of the calling component (closed in
/// `on_cleanup`) and exposes it as signals. `id` may be a signal: when it
/// changes, the hook closes the session and opens the new one on the same
/// connection (the transcript and the other session signals start over;
/// `state` stays).
///
/// ```no_run
/// use leptos::prelude::*;
/// use durable_sessions::leptos::{UseSessionOptions, use_session_with_options};
///
/// #[component]
/// fn Chat(id: Signal<String>) -> impl IntoView {
///     // A new `id` switches sessions; the component stays mounted.
///     let session = use_session_with_options(id, UseSessionOptions::default());
///     view! { <p>{move || session.items.get().len()} " items"</p> }
/// }
/// ```
pub fn use_session_with_options(id: impl Into<Signal<String>>, options: UseSessionOptions) -> UseSessionReturn {
    let connection = Connection::open(
        options.client,
        options.url,
        options.fallback_urls,
        options.transport,
        options.token,
    );
    let items = RwSignal::new(Vec::<ChatItem>::new());
    let offset = RwSignal::new(None::<String>);
    let received = RwSignal::new(0u64);
    let skipped = RwSignal::new(0u64);
    let storage_error = RwSignal::new(None::<ClientError>);
    let loaded = RwSignal::new(false);
    let synced = RwSignal::new(false);
    let error = connection.error;
    // `None`: everything may have changed; otherwise only these items are
    // cloned, so an update costs the same in a long session as in a short one.
    let refresh = move |s: &WebSession, changed: Option<&[usize]>| {
        let view = s.view();
        match changed {
            None => items.set(view.items().to_vec()),
            Some([]) => {}
            Some(changed) => items.update(|list| {
                for &i in changed {
                    match (list.get_mut(i), view.items().get(i)) {
                        (Some(old), Some(new)) => *old = new.clone(),
                        (None, Some(new)) => list.push(new.clone()),
                        _ => {}
                    }
                }
            }),
        }
        offset.set(s.offset());
        received.set(s.received());
        skipped.set(s.skipped());
    };
    let session_options = SessionOptions {
        persist: options.persist,
        limits: options.limits,
        ..Default::default()
    };
    let author = options.author.unwrap_or_else(|| session_options.author.clone());
    let opened = Opened::follow(
        connection,
        id.into(),
        move |client, id| {
            let o = SessionOptions {
                author: author.clone(),
                ..session_options.clone()
            };
            WebSession::open(client, id, o)
        },
        move |s| {
            error.set(None);
            storage_error.set(None);
            synced.set(false);
            loaded.set(s.loaded());
            refresh(s, None);
        },
        move |s, u| {
            if let Some(e) = &u.error {
                error.set(Some(e.clone()));
            }
            if let Some(e) = &u.storage_error {
                storage_error.set(Some(e.clone()));
            }
            if u.loaded {
                loaded.set(true);
            }
            if u.reset || u.restored {
                refresh(s, None);
            } else if !u.events.is_empty() || u.up_to_date {
                refresh(s, Some(&u.items));
            }
            if u.up_to_date {
                synced.set(true);
            }
        },
    );
    let session = opened.get();
    let report = connection.report();
    let send = Callback::new(move |(text, mode): (String, RunMode)| {
        if let Some(s) = session() {
            let (_, sent) = s.send(&text, mode);
            spawn_local(async move { report(sent.await) });
        }
    });
    let cancel = Callback::new(move |run_id: String| {
        if let Some(s) = session() {
            let done = s.cancel(&run_id);
            spawn_local(async move { report(done.await) });
        }
    });
    let steer = Callback::new(move |(run_id, text): (String, String)| {
        if let Some(s) = session() {
            let done = s.steer(&run_id, &text);
            spawn_local(async move { report(done.await) });
        }
    });
    let append = append_callback(session, report);
    let clear_storage = Callback::new(move |()| {
        if let Some(s) = session() {
            let cleared = s.clear_storage();
            spawn_local(async move {
                if let Err(e) = cleared.await {
                    storage_error.set(Some(e));
                }
            });
        }
    });
    let drop_connection = Callback::new(move |()| {
        if let Some(c) = connection.client() {
            c.drop_connection();
        }
    });
    UseSessionReturn {
        items: items.into(),
        state: connection.state.into(),
        retry_in_ms: connection.retry_in_ms.into(),
        state_reason: connection.state_reason.into(),
        offset: offset.into(),
        received: received.into(),
        skipped: skipped.into(),
        error: error.into(),
        loaded: loaded.into(),
        synced: synced.into(),
        storage_error: storage_error.into(),
        clear_storage,
        send,
        cancel,
        steer,
        append,
        drop_connection,
    }
}

/// A callback appending its text to the session open now.
fn append_callback(
    session: impl Fn() -> Option<WebSession> + Copy + Send + Sync + 'static,
    report: impl Fn(Result<AppendAck, ClientError>) + Copy + Send + Sync + 'static,
) -> Callback<String> {
    Callback::new(move |text: String| {
        if let Some(s) = session() {
            let done = s.append(text);
            spawn_local(async move { report(done.await) });
        }
    })
}

/// Options of [`use_stream_with_options`].
#[derive(Clone)]
pub struct UseStreamOptions {
    /// A client to share; by default the hook opens its own connection to
    /// `url` and closes it on cleanup.
    pub client: Option<WebClient>,
    /// The server (default: the page's origin).
    pub url: String,
    /// More nodes of the same cluster (see [`WebOptions::fallback_urls`]).
    pub fallback_urls: Vec<String>,
    pub transport: Transport,
    /// Access tokens (see [`UseSessionOptions::token`]).
    pub token: Option<TokenProvider>,
    /// The stream's content type (see [`StreamOptions::content_type`]):
    /// JSON by default; when given, the stream is created with it if
    /// missing.
    pub content_type: Option<String>,
    /// Keep the stream in IndexedDB (default `false`, see
    /// [`StreamOptions::persist`]).
    pub persist: bool,
    pub limits: Limits,
    /// How many of the latest messages `messages` holds (default 1,000; the
    /// oldest go first). `received` counts them all.
    pub max_messages: usize,
}

impl Default for UseStreamOptions {
    fn default() -> Self {
        Self {
            client: None,
            url: String::new(),
            fallback_urls: Vec::new(),
            transport: Transport::WebSocket,
            token: None,
            content_type: None,
            persist: false,
            limits: Limits::default(),
            max_messages: 1_000,
        }
    }
}

/// What [`use_stream`] returns.
#[derive(Clone, Copy)]
pub struct UseStreamReturn {
    /// The latest messages, oldest first (at most
    /// [`UseStreamOptions::max_messages`]), each with the offset to resume
    /// from after it. A message is JSON text: a JSON message as is, text as
    /// a JSON string, bytes as a JSON string of their base64.
    pub messages: Signal<Vec<Envelope>>,
    /// The connection state.
    pub state: Signal<ConnectionState>,
    /// The offset reached.
    pub offset: Signal<Option<String>>,
    /// Messages received.
    pub received: Signal<u64>,
    /// The last error (the subscription failing, e.g. `not_found`; a failed
    /// append; the token function failing).
    pub error: Signal<Option<ClientError>>,
    /// The stored messages have been read (at once without `persist`).
    pub loaded: Signal<bool>,
    /// The subscription has caught up with the server.
    pub synced: Signal<bool>,
    /// Appends a message: a JSON text, a text, or bytes in standard base64,
    /// as the stream's content type says.
    pub append: Callback<String>,
}

/// [`use_stream_with_options`] with defaults: a JSON stream on the page's
/// own server, not stored.
pub fn use_stream(path: impl Into<Signal<String>>) -> UseStreamReturn {
    use_stream_with_options(path, UseStreamOptions::default())
}

/// Opens stream `path` — any Durable Streams stream, not a session — for
/// the life of the calling component, with offsets, resume, the outbox and
/// (with `persist`) storage, and exposes its messages as signals. `path` may
/// be a signal: a new path closes the stream and opens the next.
///
/// ```no_run
/// use leptos::prelude::*;
/// use durable_sessions::leptos::{UseStreamOptions, use_stream_with_options};
///
/// #[component]
/// fn BuildLog() -> impl IntoView {
///     let log = use_stream_with_options("logs/build-7", UseStreamOptions {
///         content_type: Some("text/plain".into()),
///         ..UseStreamOptions::default()
///     });
///     view! { <pre>{move || log.messages.get().len()} " chunks"</pre> }
/// }
/// ```
pub fn use_stream_with_options(path: impl Into<Signal<String>>, options: UseStreamOptions) -> UseStreamReturn {
    let connection = Connection::open(
        options.client,
        options.url,
        options.fallback_urls,
        options.transport,
        options.token,
    );
    let messages = RwSignal::new(Vec::<Envelope>::new());
    let offset = RwSignal::new(None::<String>);
    let received = RwSignal::new(0u64);
    let loaded = RwSignal::new(false);
    let synced = RwSignal::new(false);
    let error = connection.error;
    let max = options.max_messages;
    let stream_options = StreamOptions {
        content_type: options.content_type,
        persist: options.persist,
        limits: options.limits,
    };
    let opened = Opened::follow(
        connection,
        path.into(),
        move |client, path| WebSession::open_stream(client, path, stream_options.clone()),
        move |s| {
            messages.set(Vec::new());
            error.set(None);
            synced.set(false);
            loaded.set(s.loaded());
            offset.set(s.offset());
            received.set(s.received());
        },
        move |s, u| {
            if let Some(e) = &u.error {
                error.set(Some(e.clone()));
            }
            if u.loaded {
                loaded.set(true);
            }
            if u.reset {
                messages.set(Vec::new());
            }
            if !u.events.is_empty() {
                messages.update(|list| {
                    list.extend(u.events.iter().cloned());
                    let over = list.len().saturating_sub(max);
                    list.drain(..over);
                });
            }
            if u.up_to_date {
                synced.set(true);
            }
            offset.set(s.offset());
            received.set(s.received());
        },
    );
    UseStreamReturn {
        messages: messages.into(),
        state: connection.state.into(),
        offset: offset.into(),
        received: received.into(),
        error: error.into(),
        loaded: loaded.into(),
        synced: synced.into(),
        append: append_callback(opened.get(), connection.report()),
    }
}
