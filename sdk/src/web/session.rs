//! A session for an app: the subscription, the chat view, the stored
//! transcript and outbox, and the actions (send, cancel, steer).

use std::cell::{Cell, Ref, RefCell};
use std::future::Future;
use std::rc::{Rc, Weak};

use durable_session_protocol::session::{RunMode, session_path};

use super::client::{SubscriptionHandle, WebClient};
use super::persist::{SessionStore, clear_session};
use super::{random_id, slot};
use crate::core::ClientError;
use crate::core::chat::ChatView;
use crate::core::client::{SubscribeOptions, SubscriptionEvent};
use crate::core::outbox::{AppendAck, Lane};
use crate::core::persist::{Limits, PendingAppend};
use crate::core::session::{self, Applied, SessionModel};
use crate::core::subscription::{ResetPolicy, StartFrom};

/// How to open a session (the defaults draw a random producer id from the
/// browser, so this runs in a browser only).
///
/// ```no_run
/// use durable_sessions::core::persist::Limits;
/// use durable_sessions::web::SessionOptions;
/// let options = SessionOptions {
///     author: "ada".into(),
///     limits: Limits { max_events: 5_000, max_sessions: 5, ..Limits::default() },
///     ..SessionOptions::default()
/// };
/// assert!(options.persist);
/// ```
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Written as `author` of messages sent with [`WebSession::send`] and as
    /// `by` of cancels and steers.
    pub author: String,
    /// Keep the session in IndexedDB: its transcript (so a reload resumes
    /// where the tab left off, with no gap and no duplicate) and its
    /// unacknowledged appends (so a message sent offline is delivered,
    /// exactly once, after a reload). Default `true`.
    pub persist: bool,
    /// How much is kept (per session, and how many sessions).
    pub limits: Limits,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            author: random_id("user"),
            persist: true,
            limits: Limits::default(),
        }
    }
}

/// How to open a stream that is not a session, with
/// [`WebSession::open_stream`]: any Durable Streams path, JSON, text or
/// bytes.
///
/// ```no_run
/// use durable_sessions::web::{StreamOptions, WebClient, WebOptions, WebSession};
/// let client = WebClient::new(WebOptions::new("http://127.0.0.1:4437")).unwrap();
/// let log = WebSession::open_stream(&client, "logs/build-7", StreamOptions {
///     content_type: Some("text/plain".into()),
///     persist: true,
///     ..StreamOptions::default()
/// });
/// let _sent = log.append("step 1 done\n".into());
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The stream's content type: JSON messages (`application/json`, the
    /// default), text (`text/*`: an append is its text) or bytes (any other:
    /// an append is its bytes in base64). When given, the stream is
    /// created with it if it does not exist; without, it must exist.
    pub content_type: Option<String>,
    /// Keep the stream in IndexedDB: its messages (on the next page load,
    /// delivered again with their offsets, before the new ones, and the
    /// subscription resumes after them) and its unacknowledged appends
    /// (delivered exactly once after a reload). Default `false`.
    pub persist: bool,
    /// How much is kept.
    pub limits: Limits,
}

/// What changed in a session, for [`WebSession::on_update`].
#[derive(Debug, Clone, Default)]
pub struct SessionUpdate {
    /// New events (offset and JSON), in order. For a stream opened with
    /// [`WebSession::open_stream`], also the messages restored from
    /// storage (with [`SessionUpdate::restored`]), and each message is JSON:
    /// a JSON message as is, text as a JSON string, bytes as a JSON string
    /// of their base64.
    pub events: Vec<crate::core::session::Envelope>,
    /// Indices of the view's items these events added or changed,
    /// ascending: re-render those (unless `reset` or `restored`, after
    /// which everything may have changed).
    pub items: Vec<usize>,
    /// The view was rebuilt from scratch after the server reset the stream.
    pub reset: bool,
    /// Why the reset happened.
    pub reset_reason: Option<String>,
    /// The subscription ended with this error.
    pub error: Option<ClientError>,
    /// The subscription caught up with the stream.
    pub up_to_date: bool,
    /// The view was restored from storage (after the session opened).
    pub restored: bool,
    /// The stored state has been read (once, after the session opened with
    /// [`SessionOptions::persist`]; see [`WebSession::loaded`]), whether or
    /// not it restored anything.
    pub loaded: bool,
    /// Storing failed (`quota_exceeded`, `storage_error`). The session keeps
    /// working in memory; nothing more is stored for its transcript.
    pub storage_error: Option<ClientError>,
}

type UpdateCallback = Rc<RefCell<dyn FnMut(&SessionUpdate)>>;

type Done = slot::Sender<Result<AppendAck, ClientError>>;

/// Where the session's storage stands.
enum Storage {
    /// Not stored (`persist: false`, storage unavailable, or cleared).
    Off,
    /// Being read; appends made meanwhile wait (they go after the ones
    /// restored).
    Loading(Vec<(String, Done)>),
    Ready(Rc<SessionStore>),
}

struct Inner {
    client: WebClient,
    id: String,
    path: String,
    author: String,
    model: RefCell<SessionModel>,
    listeners: RefCell<Vec<(u64, UpdateCallback)>>,
    next_listener: RefCell<u64>,
    sub: RefCell<Option<SubscriptionHandle>>,
    storage: RefCell<Storage>,
    /// The key of the session in storage (server and path).
    store_key: String,
    /// A session (its messages folded into the chat view), not a stream
    /// opened with [`WebSession::open_stream`].
    chat: bool,
    /// A stream's content type ([`StreamOptions::content_type`]).
    content_type: Option<String>,
    closed: Cell<bool>,
    /// The stored state has been read (or there is none to read).
    loaded: Cell<bool>,
}

impl Inner {
    fn store(&self) -> Option<Rc<SessionStore>> {
        match &*self.storage.borrow() {
            Storage::Ready(store) => Some(store.clone()),
            _ => None,
        }
    }

    fn subscribe(self: &Rc<Self>, start: StartFrom) {
        let weak = Rc::downgrade(self);
        let opts = SubscribeOptions {
            start: start.into(),
            reset: ResetPolicy::FromBeginning,
            create: self.chat || self.content_type.is_some(),
            content_type: self.content_type.clone(),
        };
        let sub = self.client.subscribe(&self.path, opts, move |event| {
            if let Some(inner) = weak.upgrade() {
                on_event(&inner, event);
            }
        });
        *self.sub.borrow_mut() = Some(sub);
    }

    /// Sends `json`: kept in storage until acknowledged when the session is
    /// stored, held until the storage is read while it is being read.
    fn route(&self, json: String, done: Done) {
        let store = {
            let mut storage = self.storage.borrow_mut();
            match &mut *storage {
                Storage::Loading(waiting) => return waiting.push((json, done)),
                Storage::Ready(store) => Some(store.clone()),
                Storage::Off => None,
            }
        };
        match store {
            Some(store) => {
                let pending = PendingAppend::new(store.next_order(), random_id("out"), json);
                store.keep_pending(&pending);
                self.resend(&store, pending, Some(done));
            }
            None => {
                let sent = self.client.append(&self.path, json);
                wasm_bindgen_futures::spawn_local(async move { done.send(sent.await) });
            }
        }
    }

    /// Sends a pending append with its own producer ids, and forgets it
    /// once the server acknowledged it (or refused it for good). Closing the
    /// client (`client_closed`) keeps it for the next page load.
    fn resend(&self, store: &Rc<SessionStore>, pending: PendingAppend, done: Option<Done>) {
        let sent = self
            .client
            .append_as(&self.path, pending.json.clone(), pending.producer.clone());
        let store = store.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = sent.await;
            if !matches!(&result, Err(e) if e.code == "client_closed") {
                store.forget_pending(&pending);
            }
            if let Some(done) = done {
                done.send(result);
            }
        });
    }
}

/// Calls the listeners with `update`.
fn notify(inner: &Inner, update: &SessionUpdate) {
    let listeners: Vec<UpdateCallback> = inner.listeners.borrow().iter().map(|(_, cb)| cb.clone()).collect();
    for cb in listeners {
        (cb.borrow_mut())(update);
    }
}

/// A session: subscribe once, render [`WebSession::view`], act with
/// [`WebSession::send`], [`WebSession::cancel`], [`WebSession::steer`].
/// Reconnects, resume, deduplication and persistence are handled inside.
#[derive(Clone)]
pub struct WebSession {
    inner: Rc<Inner>,
}

/// A registered update callback; dropping it unregisters.
#[must_use = "the callback is removed when this is dropped"]
pub struct UpdateListener {
    session: Weak<Inner>,
    id: u64,
}

impl Drop for UpdateListener {
    fn drop(&mut self) {
        if let Some(inner) = self.session.upgrade()
            && let Ok(mut listeners) = inner.listeners.try_borrow_mut()
        {
            listeners.retain(|(id, _)| *id != self.id);
        }
    }
}

impl WebSession {
    /// Opens session `id` (creating it if needed) on `client`. With
    /// [`SessionOptions::persist`], the stored transcript is read first (the
    /// view is then restored, see [`SessionUpdate::restored`]), the
    /// subscription resumes from the offset it reaches, and appends left
    /// unacknowledged by an earlier page load are sent again, with their
    /// producer ids, before any new one.
    pub fn open(client: &WebClient, id: &str, options: SessionOptions) -> Self {
        Self::start(client, id, session_path(id), options, None)
    }

    /// Opens stream `path` — any Durable Streams stream, not a session —
    /// with the same guarantees: offsets, resume with no gap and no
    /// duplicate, the outbox, and (with [`StreamOptions::persist`])
    /// storage. Its messages come as [`SessionUpdate::events`]; nothing is
    /// folded ([`WebSession::view`] stays empty), and
    /// [`WebSession::append`] takes a JSON text, a text or base64 bytes, as
    /// the stream's content type says.
    pub fn open_stream(client: &WebClient, path: &str, options: StreamOptions) -> Self {
        if let Some(content_type) = &options.content_type {
            client.set_content_type(path, content_type);
        }
        let session = SessionOptions {
            author: String::new(),
            persist: options.persist,
            limits: options.limits,
        };
        Self::start(client, path, path.to_owned(), session, Some(options.content_type))
    }

    /// Opens a session (`stream` is `None`) or a stream with its content
    /// type.
    fn start(
        client: &WebClient,
        id: &str,
        path: String,
        options: SessionOptions,
        stream: Option<Option<String>>,
    ) -> Self {
        let store_key = [client.inner.borrow().cluster(), " ", &path].concat();
        let chat = stream.is_none();
        let inner = Rc::new(Inner {
            client: client.clone(),
            id: id.to_owned(),
            path,
            author: options.author,
            chat,
            content_type: stream.flatten(),
            model: RefCell::new(if chat {
                SessionModel::without_snapshots()
            } else {
                SessionModel::raw()
            }),
            listeners: RefCell::new(Vec::new()),
            next_listener: RefCell::new(0),
            sub: RefCell::new(None),
            storage: RefCell::new(if options.persist {
                Storage::Loading(Vec::new())
            } else {
                Storage::Off
            }),
            store_key,
            closed: Cell::new(false),
            loaded: Cell::new(!options.persist),
        });
        if options.persist {
            wasm_bindgen_futures::spawn_local(load(Rc::downgrade(&inner), options.limits));
        } else {
            inner.subscribe(StartFrom::Beginning);
        }
        Self { inner }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The stream path (`sessions/{id}`).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The author name used for sent messages and controls.
    pub fn author(&self) -> &str {
        &self.inner.author
    }

    /// The chat view. Do not hold the borrow across calls into the session.
    pub fn view(&self) -> Ref<'_, ChatView> {
        Ref::map(self.inner.model.borrow(), SessionModel::view)
    }

    /// The offset reached.
    pub fn offset(&self) -> Option<String> {
        self.inner.model.borrow().offset().map(str::to_owned)
    }

    /// Whether the stored state has been read: the view then holds what
    /// was stored (and the subscription has started). Always `true` without
    /// [`SessionOptions::persist`]; otherwise an update with
    /// [`SessionUpdate::loaded`] tells when.
    pub fn loaded(&self) -> bool {
        self.inner.loaded.get()
    }

    /// Events received (including those restored from storage).
    pub fn received(&self) -> u64 {
        self.inner.model.borrow().received()
    }

    /// Of the events received, those skipped because they could not be read
    /// as session events (written by another writer: not JSON, not an
    /// object, a known type without a field it needs, nested too deep…).
    /// Events of other types are not skipped: they pass through
    /// ([`crate::core::chat::ChatItem::Event`]).
    pub fn skipped(&self) -> u64 {
        self.inner.model.borrow().skipped()
    }

    /// Calls `on_update` after each change.
    pub fn on_update(&self, on_update: impl FnMut(&SessionUpdate) + 'static) -> UpdateListener {
        let mut next = self.inner.next_listener.borrow_mut();
        *next += 1;
        self.inner
            .listeners
            .borrow_mut()
            .push((*next, Rc::new(RefCell::new(on_update))));
        UpdateListener {
            session: Rc::downgrade(&self.inner),
            id: *next,
        }
    }

    /// Appends an event (JSON text). With [`SessionOptions::persist`] it is
    /// kept in IndexedDB with its own producer ids until the server
    /// acknowledges it: after a reload (offline, or before the ack came) the
    /// next page load sends it again and the server stores it once.
    pub fn append(&self, json: String) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        let (done, result) = slot::channel();
        self.inner.route(json, done);
        settled(result)
    }

    /// Sends a `user_message`; returns its id and the append's outcome.
    pub fn send(
        &self,
        text: &str,
        mode: RunMode,
    ) -> (String, impl Future<Output = Result<AppendAck, ClientError>> + 'static) {
        let id = random_id("msg");
        let json = session::user_message(&id, &self.inner.author, text, mode);
        (id, self.append(json))
    }

    /// Sends a `cancel` for `run_id`. Control events have their own lane:
    /// they never wait behind a message still being sent.
    pub fn cancel(&self, run_id: &str) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        let json = session::cancel(run_id, &self.inner.author);
        self.inner.client.append_in(&self.inner.path, json, Lane::Control)
    }

    /// Sends a `steer` for `run_id` (in the control lane, like `cancel`).
    pub fn steer(&self, run_id: &str, text: &str) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        let json = session::steer(run_id, text, &self.inner.author);
        self.inner.client.append_in(&self.inner.path, json, Lane::Control)
    }

    /// Deletes what is stored for this session (its transcript and pending
    /// appends) and stores nothing more for it; the session keeps working
    /// in memory. Resolves once deleted.
    ///
    /// ```no_run
    /// # async fn demo(session: durable_sessions::web::WebSession) {
    /// // The user signs out: nothing of the session stays in this browser.
    /// session.clear_storage().await.unwrap();
    /// # }
    /// ```
    pub fn clear_storage(&self) -> impl Future<Output = Result<(), ClientError>> + 'static {
        let old = std::mem::replace(&mut *self.inner.storage.borrow_mut(), Storage::Off);
        match old {
            Storage::Ready(store) => store.stop(),
            // Loading notices `Off` and drops what it read.
            Storage::Loading(waiting) => {
                for (json, done) in waiting {
                    self.inner.route(json, done);
                }
            }
            Storage::Off => {}
        }
        clear_session(self.inner.store_key.clone())
    }

    /// Ends the subscription. The client stays open; appends not yet
    /// acknowledged are still delivered (and stay stored until they are).
    pub fn close(&self) {
        self.inner.closed.set(true);
        self.inner.sub.borrow_mut().take();
    }
}

/// The outcome of an append, `client_closed` if it never comes.
async fn settled(result: slot::Receiver<Result<AppendAck, ClientError>>) -> Result<AppendAck, ClientError> {
    result
        .await
        .unwrap_or_else(|| Err(ClientError::new("client_closed", "the client was closed")))
}

/// Reads the session's storage, restores the view, subscribes from the
/// offset it reaches, and sends the appends left pending (with their ids)
/// before those made while loading.
async fn load(weak: Weak<Inner>, limits: Limits) {
    let Some((key, chat)) = weak.upgrade().map(|inner| (inner.store_key.clone(), inner.chat)) else {
        return;
    };
    let on_error = {
        let weak = weak.clone();
        move |e: ClientError| {
            if let Some(inner) = weak.upgrade() {
                let update = SessionUpdate {
                    storage_error: Some(e),
                    ..SessionUpdate::default()
                };
                notify(&inner, &update);
            }
        }
    };
    let loaded = SessionStore::open(key, limits, !chat, on_error).await;
    let Some(inner) = weak.upgrade() else { return };
    // `Off` now unless the app cleared the storage meanwhile (then what was
    // read is dropped).
    let waiting = match std::mem::replace(&mut *inner.storage.borrow_mut(), Storage::Off) {
        Storage::Loading(waiting) => Some(waiting),
        _ => None,
    };
    let mut update = SessionUpdate {
        loaded: true,
        ..SessionUpdate::default()
    };
    inner.loaded.set(true);
    let mut pending = Vec::new();
    match loaded {
        Ok(loaded) if waiting.is_some() => {
            if loaded.restored.model.offset().is_some() {
                *inner.model.borrow_mut() = loaded.restored.model;
                update.restored = true;
                // A stream's stored messages are delivered again.
                update.events = loaded.restored.messages;
            }
            pending = loaded.pending;
            *inner.storage.borrow_mut() = Storage::Ready(loaded.store);
        }
        Ok(_) => {}
        Err(e) => update.storage_error = Some(e),
    }
    if !inner.closed.get() {
        let start = match inner.model.borrow().offset() {
            Some(offset) => StartFrom::Offset(offset.to_owned()),
            None => StartFrom::Beginning,
        };
        inner.subscribe(start);
    }
    if let Some(store) = inner.store() {
        for p in pending {
            inner.resend(&store, p, None);
        }
    }
    for (json, done) in waiting.unwrap_or_default() {
        inner.route(json, done);
    }
    notify(&inner, &update);
}

fn on_event(inner: &Rc<Inner>, event: SubscriptionEvent) {
    let mut update = SessionUpdate::default();
    match &event {
        SubscriptionEvent::Reset { reason } => update.reset_reason = Some(reason.clone()),
        SubscriptionEvent::Error(e) => update.error = Some(e.clone()),
        SubscriptionEvent::UpToDate { .. } => update.up_to_date = true,
        _ => {}
    }
    let Applied {
        events, reset, items, ..
    } = inner.model.borrow_mut().apply(event);
    if let Some(store) = inner.store() {
        if reset {
            store.reset();
        }
        store.append(&events);
    }
    update.events = events;
    update.reset = reset;
    update.items = items;
    notify(inner, &update);
}
