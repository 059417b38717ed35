//! A session for an app: the subscription, the chat view, the persisted
//! snapshot, and the actions (send, cancel, steer).

use std::cell::{Ref, RefCell};
use std::future::Future;
use std::rc::{Rc, Weak};

use durable_session_protocol::session::{RunMode, session_path};
use gloo_events::EventListener;
use gloo_timers::callback::Timeout;

use super::client::{SubscriptionHandle, WebClient};
use super::persist::OffsetStore;
use super::random_id;
use crate::core::ClientError;
use crate::core::chat::ChatView;
use crate::core::client::{SubscribeOptions, SubscriptionEvent};
use crate::core::outbox::{AppendAck, Lane};
use crate::core::session::{self, Applied, SessionModel};
use crate::core::subscription::{ResetPolicy, StartFrom};

/// How long snapshots wait before being written (they are written at most
/// this often while events stream in, and at once when the page is hidden).
const SAVE_DELAY_MS: u32 = 250;

/// How to open a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Written as `author` of messages sent with [`WebSession::send`] and as
    /// `by` of cancels and steers.
    pub author: String,
    /// Keep the offset and view in `localStorage` so a reload resumes where
    /// the tab left off. Default `true`.
    pub persist: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            author: random_id("user"),
            persist: true,
        }
    }
}

/// What changed in a session, for [`WebSession::on_update`].
#[derive(Debug, Clone, Default)]
pub struct SessionUpdate {
    /// New events (offset and JSON), in order.
    pub events: Vec<crate::core::session::Envelope>,
    /// The view was rebuilt from scratch after the server reset the stream.
    pub reset: bool,
    /// Why the reset happened.
    pub reset_reason: Option<String>,
    /// The subscription ended with this error.
    pub error: Option<ClientError>,
    /// The subscription caught up with the stream.
    pub up_to_date: bool,
}

type UpdateCallback = Rc<RefCell<dyn FnMut(&SessionUpdate)>>;

struct Inner {
    client: WebClient,
    id: String,
    path: String,
    author: String,
    model: RefCell<SessionModel>,
    listeners: RefCell<Vec<(u64, UpdateCallback)>>,
    next_listener: RefCell<u64>,
    sub: RefCell<Option<SubscriptionHandle>>,
    store: Option<OffsetStore>,
    save_timer: RefCell<Option<Timeout>>,
    _pagehide: RefCell<Option<EventListener>>,
}

impl Inner {
    fn save_now(&self) {
        self.save_timer.borrow_mut().take();
        if let (Some(store), Some(snapshot)) = (&self.store, self.model.borrow().snapshot()) {
            store.save(&self.path, &snapshot);
        }
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
    /// Opens session `id` (creating it if needed) on `client`.
    pub fn open(client: &WebClient, id: &str, options: SessionOptions) -> Self {
        let path = session_path(id);
        let store = options
            .persist
            .then(|| OffsetStore::new(&client.inner.borrow().http_base))
            .flatten();
        let restored = store
            .as_ref()
            .and_then(|s| s.load(&path))
            .and_then(|json| SessionModel::restore(&json));
        let start = match restored.as_ref().and_then(|m| m.offset()) {
            Some(offset) => StartFrom::Offset(offset.to_owned()),
            None => StartFrom::Beginning,
        };
        let inner = Rc::new(Inner {
            client: client.clone(),
            id: id.to_owned(),
            path: path.clone(),
            author: options.author,
            model: RefCell::new(restored.unwrap_or_default()),
            listeners: RefCell::new(Vec::new()),
            next_listener: RefCell::new(0),
            sub: RefCell::new(None),
            store,
            save_timer: RefCell::new(None),
            _pagehide: RefCell::new(None),
        });
        let weak = Rc::downgrade(&inner);
        let opts = SubscribeOptions {
            start: start.into(),
            reset: ResetPolicy::FromBeginning,
            create: true,
        };
        let sub = client.subscribe(&path, opts, move |event| {
            if let Some(inner) = weak.upgrade() {
                on_event(&inner, event);
            }
        });
        *inner.sub.borrow_mut() = Some(sub);
        if let Some(window) = web_sys::window() {
            let weak = Rc::downgrade(&inner);
            let listener = EventListener::new(&window, "pagehide", move |_| {
                if let Some(inner) = weak.upgrade() {
                    inner.save_now();
                }
            });
            *inner._pagehide.borrow_mut() = Some(listener);
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

    /// Events received (including those restored from a snapshot).
    pub fn received(&self) -> u64 {
        self.inner.model.borrow().received()
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

    /// Appends an event (JSON text).
    pub fn append(&self, json: String) -> impl Future<Output = Result<AppendAck, ClientError>> + 'static {
        self.inner.client.append(&self.inner.path, json)
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

    /// Ends the subscription and writes the snapshot. The client stays open.
    pub fn close(&self) {
        self.inner.sub.borrow_mut().take();
        self.inner.save_now();
        self.inner._pagehide.borrow_mut().take();
    }
}

fn on_event(inner: &Rc<Inner>, event: SubscriptionEvent) {
    let mut update = SessionUpdate::default();
    match &event {
        SubscriptionEvent::Reset { reason } => update.reset_reason = Some(reason.clone()),
        SubscriptionEvent::Error(e) => update.error = Some(e.clone()),
        SubscriptionEvent::UpToDate { .. } => update.up_to_date = true,
        _ => {}
    }
    let Applied { events, reset, .. } = inner.model.borrow_mut().apply(event);
    update.events = events;
    update.reset = reset;
    if inner.store.is_some() && inner.save_timer.borrow().is_none() {
        let weak = Rc::downgrade(inner);
        *inner.save_timer.borrow_mut() = Some(Timeout::new(SAVE_DELAY_MS, move || {
            if let Some(inner) = weak.upgrade() {
                inner.save_now();
            }
        }));
    }
    let listeners: Vec<UpdateCallback> = inner.listeners.borrow().iter().map(|(_, cb)| cb.clone()).collect();
    for cb in listeners {
        (cb.borrow_mut())(&update);
    }
}
