//! Leptos hooks (feature `leptos`): a session as signals.
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

use durable_session_protocol::session::RunMode;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::core::ClientError;
use crate::core::chat::ChatItem;
use crate::core::persist::Limits;
use crate::core::state::ConnectionState;
use crate::web::{SessionOptions, TokenProvider, Transport, WebClient, WebOptions, WebSession};

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
    /// The transcript: user messages and runs.
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
    /// Of those, the events skipped because they could not be read as
    /// session events (another writer's: an unknown type, not an object…).
    pub skipped: Signal<u64>,
    /// The last error: a failed append, the subscription failing (e.g.
    /// `forbidden`), or the token function failing (`token_failed`, retried
    /// by itself).
    pub error: Signal<Option<ClientError>>,
    /// The stored state has been read (the transcript restored, if any):
    /// `false` only briefly after the session opens with `persist`.
    pub loaded: Signal<bool>,
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
    /// Kills the connection as a network failure would (it reconnects by itself).
    pub drop_connection: Callback<()>,
}

/// [`use_session_with_options`] with defaults: the page's own server.
pub fn use_session(id: &str) -> UseSessionReturn {
    use_session_with_options(id, UseSessionOptions::default())
}

/// Opens session `id` for the life of the calling component (closed in
/// `on_cleanup`) and exposes it as signals.
pub fn use_session_with_options(id: &str, options: UseSessionOptions) -> UseSessionReturn {
    let own_client = options.client.is_none();
    let client = match options.client {
        Some(c) => Ok(c),
        None => {
            let mut o = WebOptions::new(options.url);
            o.fallback_urls = options.fallback_urls;
            o.transport = options.transport;
            o.token = options.token;
            WebClient::new(o)
        }
    };
    let items = RwSignal::new(Vec::<ChatItem>::new());
    let state = RwSignal::new(ConnectionState::Connecting);
    let retry_in_ms = RwSignal::new(None::<u64>);
    let state_reason = RwSignal::new(String::new());
    let offset = RwSignal::new(None::<String>);
    let received = RwSignal::new(0u64);
    let skipped = RwSignal::new(0u64);
    let error = RwSignal::new(None::<ClientError>);
    let storage_error = RwSignal::new(None::<ClientError>);
    let loaded = RwSignal::new(false);
    let session = StoredValue::new_local(None::<WebSession>);
    let client_slot = StoredValue::new_local(None::<WebClient>);
    match client {
        Err(e) => error.set(Some(e)),
        Ok(client) => {
            let mut session_options = SessionOptions {
                persist: options.persist,
                limits: options.limits,
                ..Default::default()
            };
            if let Some(author) = options.author {
                session_options.author = author;
            }
            let s = WebSession::open(&client, id, session_options);
            // `None`: everything may have changed; otherwise only these
            // items are cloned, so an update costs the same in a long
            // session as in a short one.
            let refresh = {
                let s = s.clone();
                move |changed: Option<&[usize]>| {
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
                }
            };
            refresh(None);
            loaded.set(s.loaded());
            let updates = s.on_update({
                let refresh = refresh.clone();
                move |u| {
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
                        refresh(None);
                    } else if !u.events.is_empty() || u.up_to_date {
                        refresh(Some(&u.items));
                    }
                }
            });
            let apply = move |c: &crate::core::state::StateChange| {
                state.set(c.state);
                retry_in_ms.set(c.retry_in_ms);
                state_reason.set(c.reason.clone());
                if let Some(e) = &c.error {
                    error.set(Some(e.clone()));
                }
            };
            apply(&client.state());
            let states = client.on_state(apply);
            let listeners = StoredValue::new_local(Some((updates, states)));
            session.set_value(Some(s));
            client_slot.set_value(Some(client));
            on_cleanup(move || {
                listeners.set_value(None);
                if let Some(s) = session.try_update_value(Option::take).flatten() {
                    s.close();
                }
                if let Some(c) = client_slot.try_update_value(Option::take).flatten()
                    && own_client
                {
                    c.close();
                }
            });
        }
    }
    let report = move |result: Result<crate::core::outbox::AppendAck, ClientError>| {
        if let Err(e) = result {
            error.set(Some(e));
        }
    };
    let send = Callback::new(move |(text, mode): (String, RunMode)| {
        if let Some(s) = session.with_value(Clone::clone) {
            let (_, sent) = s.send(&text, mode);
            spawn_local(async move { report(sent.await) });
        }
    });
    let cancel = Callback::new(move |run_id: String| {
        if let Some(s) = session.with_value(Clone::clone) {
            let done = s.cancel(&run_id);
            spawn_local(async move { report(done.await) });
        }
    });
    let steer = Callback::new(move |(run_id, text): (String, String)| {
        if let Some(s) = session.with_value(Clone::clone) {
            let done = s.steer(&run_id, &text);
            spawn_local(async move { report(done.await) });
        }
    });
    let clear_storage = Callback::new(move |()| {
        if let Some(s) = session.with_value(Clone::clone) {
            let cleared = s.clear_storage();
            spawn_local(async move {
                if let Err(e) = cleared.await {
                    storage_error.set(Some(e));
                }
            });
        }
    });
    let drop_connection = Callback::new(move |()| {
        if let Some(c) = client_slot.with_value(Clone::clone) {
            c.drop_connection();
        }
    });
    UseSessionReturn {
        items: items.into(),
        state: state.into(),
        retry_in_ms: retry_in_ms.into(),
        state_reason: state_reason.into(),
        offset: offset.into(),
        received: received.into(),
        skipped: skipped.into(),
        error: error.into(),
        loaded: loaded.into(),
        storage_error: storage_error.into(),
        clear_storage,
        send,
        cancel,
        steer,
        drop_connection,
    }
}
