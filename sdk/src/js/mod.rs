//! The JavaScript API of the npm package (feature `js`).
//!
//! A thin layer over [`crate::web`]: options are read from plain JS objects,
//! events and views are handed out as plain JS objects, failures are `Error`
//! objects with a `code`, and every method has a real TypeScript type
//! (`types.d.ts` below, checked by `tsc` in the tests).

mod iter;
mod types;

/// A free-list allocator a few hundred bytes large instead of the default
/// dlmalloc (~7 KB): the npm package's budget is 60 KB gzip in all. The Wasm
/// module is single-threaded, which the allocator relies on.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    // SAFETY: browsers run this module on one thread; it never shares memory.
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

use std::cell::RefCell;
use std::rc::Rc;

use durable_session_protocol::json::{self, Json, Obj};
use durable_session_protocol::session::RunMode;
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::core::ClientError;
use crate::core::outbox::{AppendAck, StreamKind};
use crate::core::persist::Limits;
use crate::web::{SessionOptions, SessionUpdate, StreamOptions, Transport, WebClient, WebOptions, WebSession};

/// A JS `Error` with a `code` property.
fn js_error(e: &ClientError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    let _ = Reflect::set(&err, &"code".into(), &e.code.as_str().into());
    err.set_name("DurableSessionError");
    err.into()
}

fn invalid(message: &str) -> JsValue {
    js_error(&ClientError::new("invalid_argument", message))
}

fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    if !obj.is_object() {
        return None;
    }
    Reflect::get(obj, &key.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// Options objects are read as JSON (functions, such as `token`, are read
/// separately): one parser for every option instead of a check per field.
fn options_json(options: &JsValue) -> Result<String, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok("{}".into());
    }
    if !options.is_object() {
        return Err(invalid("options must be an object"));
    }
    js_sys::JSON::stringify(options)
        .map(String::from)
        .map_err(|_| invalid("options must be a plain object"))
}

fn opt_str<'a>(v: &'a Json<'_>, key: &str) -> Result<Option<&'a str>, JsValue> {
    match v.get(key) {
        None => Ok(None),
        Some(s) if s.is_null() => Ok(None),
        Some(s) => s
            .str()
            .map(Some)
            .ok_or_else(|| invalid(&format!("option {key} must be a string"))),
    }
}

fn opt_ms(v: &Json<'_>, key: &str) -> Result<Option<u64>, JsValue> {
    match v.get(key) {
        None => Ok(None),
        Some(n) => n
            .u64()
            .map(Some)
            .ok_or_else(|| invalid(&format!("option {key} must be a whole number ≥ 0"))),
    }
}

/// JSON text to a JS value (objects handed to callbacks and promises).
fn from_json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).unwrap_or(JsValue::NULL)
}

fn ack_json(o: &mut Obj, ack: &AppendAck) -> JsValue {
    o.str("offset", &ack.offset).bool("duplicate", ack.duplicate);
    from_json(&o.finish())
}

fn ack_object(ack: &AppendAck) -> JsValue {
    ack_json(&mut Obj::new(), ack)
}

/// A promise of an append's outcome, mapped to a JS value. Not generic, so
/// the Wasm holds one copy of the future-to-promise glue.
type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendAck, ClientError>>>>;

/// A promise of `undefined` (or a rejection with the error).
fn unit_promise(fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ClientError>>>>) -> Promise {
    future_to_promise(async move {
        fut.await.map_err(|e| js_error(&e))?;
        Ok(JsValue::UNDEFINED)
    })
}

fn to_promise(fut: AckFuture, map: Box<dyn FnOnce(&AppendAck) -> JsValue>) -> Promise {
    future_to_promise(async move {
        match fut.await {
            Ok(ack) => Ok(map(&ack)),
            Err(e) => Err(js_error(&e)),
        }
    })
}

/// A function that runs `f` once when called from JS.
fn unsubscribe_fn(f: impl FnOnce() + 'static) -> Function {
    Closure::once_into_js(f).unchecked_into()
}

fn options_from_js(options: &JsValue) -> Result<WebOptions, JsValue> {
    let text = options_json(options)?;
    let v = json::parse(&text).map_err(|_| invalid("options must be a plain object"))?;
    // `url`: one server, or the nodes of a cluster in order of preference.
    let urls: Vec<&str> = match v.get("url") {
        Some(list) if list.array().is_some() => list
            .array()
            .unwrap_or_default()
            .iter()
            .map(Json::str)
            .collect::<Option<_>>()
            .filter(|l: &Vec<&str>| !l.is_empty())
            .ok_or_else(|| invalid("option url must be a string or a non-empty array of strings"))?,
        _ => opt_str(&v, "url")?.into_iter().collect(),
    };
    let mut o = WebOptions::new(urls.first().copied().unwrap_or_default());
    o.fallback_urls = urls.iter().skip(1).map(|u| (*u).to_owned()).collect();
    match opt_str(&v, "transport")? {
        None | Some("websocket") => o.transport = Transport::WebSocket,
        Some("http") => o.transport = Transport::Http,
        Some(other) => {
            return Err(invalid(&format!(
                "transport must be \"websocket\" or \"http\", not \"{other}\""
            )));
        }
    }
    if let Some(backoff) = v.get("backoff") {
        if let Some(ms) = opt_ms(backoff, "minMs")? {
            o.core.backoff.min_ms = ms;
        }
        if let Some(ms) = opt_ms(backoff, "maxMs")? {
            o.core.backoff.max_ms = ms;
        }
        if let Some(factor) = get(&options.clone(), "backoff").and_then(|b| get(&b, "factor")) {
            o.core.backoff.factor = factor
                .as_f64()
                .filter(|f| *f >= 1.0)
                .ok_or_else(|| invalid("backoff.factor must be a number ≥ 1"))?;
        }
    }
    for (key, slot) in [
        ("pingIntervalMs", &mut o.core.ping_interval_ms),
        ("heartbeatTimeoutMs", &mut o.core.heartbeat_timeout_ms),
        ("connectTimeoutMs", &mut o.core.connect_timeout_ms),
        ("suspendAfterMs", &mut o.core.suspend_after_ms),
        ("maxAppendBytes", &mut o.core.max_append_bytes),
    ] {
        if let Some(ms) = opt_ms(&v, key)? {
            *slot = ms.max(1);
        }
    }
    if let Some(token) = get(options, "token") {
        o.token = Some(token_provider(token)?);
    }
    Ok(o)
}

/// The `token` option: a string (used as is until the server refuses it) or
/// a function returning a string or a promise of one (called again before
/// the token expires and when the server refuses it).
fn token_provider(token: JsValue) -> Result<crate::web::TokenProvider, JsValue> {
    let token = match token.as_string() {
        Some(fixed) if !fixed.is_empty() => {
            return Ok(Rc::new(move || {
                let fixed = fixed.clone();
                Box::pin(async move { Ok(fixed) })
            }));
        }
        _ => token
            .dyn_into::<Function>()
            .map_err(|_| invalid("token must be a non-empty string or a function"))?,
    };
    Ok(Rc::new(move || {
        let token = token.clone();
        Box::pin(async move {
            let failed = |e: &JsValue| ClientError::new("token_failed", crate::web::socket::js_error_text(e));
            let value = token.call0(&JsValue::NULL).map_err(|e| failed(&e))?;
            let value = wasm_bindgen_futures::JsFuture::from(Promise::resolve(&value))
                .await
                .map_err(|e| failed(&e))?;
            value
                .as_string()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ClientError::new("token_failed", "the token function must return a non-empty string"))
        })
    }))
}

/// The `persist` option: a boolean, or the limits (`PersistOptions`).
fn persist_options(v: &Json<'_>, on: &mut bool, limits: &mut Limits) -> Result<(), JsValue> {
    let Some(persist) = v.get("persist") else {
        return Ok(());
    };
    match persist.bool() {
        Some(b) => *on = b,
        None if persist.is_object() => {
            *on = true;
            for (key, slot) in [
                ("maxEvents", &mut limits.max_events),
                ("maxBytes", &mut limits.max_bytes),
            ] {
                if let Some(n) = opt_ms(persist, key)? {
                    *slot = n;
                }
            }
            if let Some(n) = opt_ms(persist, "maxSessions")? {
                limits.max_sessions = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        None => return Err(invalid("persist must be a boolean or an object")),
    }
    Ok(())
}

/// What a `DurableClient` holds. Kept alive (see [`OPEN`]) until `close()`.
pub struct ClientParts {
    client: WebClient,
    listeners: Rc<RefCell<Vec<(u64, crate::web::Listener)>>>,
    next: RefCell<u64>,
    sessions: RefCell<Vec<std::rc::Weak<SessionParts>>>,
}

/// Open clients and open sessions.
type Open = (Vec<Rc<ClientParts>>, Vec<Rc<SessionParts>>);

thread_local! {
    /// Open clients and sessions. A JS app may drop its last reference to
    /// a client or session and still expect events (as with a WebSocket):
    /// they live until `close()`, not until garbage collection.
    static OPEN: RefCell<Open> = RefCell::default();
}

/// A connection to a durable-sessions server.
#[wasm_bindgen(js_name = DurableClient)]
pub struct JsClient {
    parts: Rc<ClientParts>,
}

impl std::ops::Deref for JsClient {
    type Target = ClientParts;

    fn deref(&self) -> &ClientParts {
        &self.parts
    }
}

#[wasm_bindgen(js_class = DurableClient)]
impl JsClient {
    /// Starts connecting. Throws (code `invalid_url` / `invalid_argument`)
    /// for unusable options.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "ClientOptions")] options: Option<Object>,
    ) -> Result<JsClient, JsValue> {
        let options = options_from_js(&options.map_or(JsValue::UNDEFINED, Into::into))?;
        let client = WebClient::new(options).map_err(|e| js_error(&e))?;
        let parts = Rc::new(ClientParts {
            client,
            listeners: Rc::default(),
            next: RefCell::new(0),
            sessions: RefCell::default(),
        });
        OPEN.with(|open| open.borrow_mut().0.push(parts.clone()));
        Ok(Self { parts })
    }

    /// The current connection state.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> JsValue {
        self.client.state().state.as_str().into()
    }

    /// Calls `listener` on every connection state change; returns a function
    /// that removes it.
    #[wasm_bindgen(js_name = onStateChange, unchecked_return_type = "() => void")]
    pub fn on_state_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(change: StateChange) => void")] listener: Function,
    ) -> Function {
        let handle = self.client.on_state(move |change| {
            let mut o = Obj::new();
            o.str("state", change.state.as_str())
                .str("previous", change.previous.as_str())
                .str("reason", &change.reason);
            if let Some(ms) = change.retry_in_ms {
                o.u64("retryInMs", ms);
            }
            if let Some(e) = &change.error {
                let mut eo = Obj::new();
                eo.str("code", &e.code).str("message", &e.message);
                o.raw("error", &eo.finish());
            }
            let _ = listener.call1(&JsValue::NULL, &from_json(&o.finish()));
        });
        let id = {
            let mut next = self.next.borrow_mut();
            *next += 1;
            *next
        };
        self.listeners.borrow_mut().push((id, handle));
        let listeners = Rc::downgrade(&self.listeners);
        unsubscribe_fn(move || {
            if let Some(l) = listeners.upgrade() {
                l.borrow_mut().retain(|(i, _)| *i != id);
            }
        })
    }

    /// Opens a session (creating it if needed). `E` is the union of the
    /// app's own event types (see `AppEvents`): what `append` takes and
    /// `onEvent` and `items()` give, besides the core events.
    #[wasm_bindgen(unchecked_return_type = "Session<E>")]
    pub fn session(
        &self,
        id: &str,
        #[wasm_bindgen(unchecked_param_type = "SessionOptions")] options: Option<Object>,
    ) -> Result<JsSession, JsValue> {
        if id.is_empty() || id.contains('/') {
            return Err(invalid("a session id must be non-empty and contain no '/'"));
        }
        let text = options_json(&options.map_or(JsValue::UNDEFINED, Into::into))?;
        let v = json::parse(&text).map_err(|_| invalid("options must be a plain object"))?;
        let mut o = SessionOptions::default();
        if let Some(author) = opt_str(&v, "author")? {
            o.author = author.to_owned();
        }
        persist_options(&v, &mut o.persist, &mut o.limits)?;
        Ok(self.keep(JsSession::new(WebSession::open(&self.client, id, o), None)))
    }

    /// Opens any Durable Streams stream, not a session: JSON messages,
    /// text or bytes, with offsets, resume, the outbox and (with `persist`)
    /// storage. `T` is what its messages hold.
    #[wasm_bindgen(unchecked_return_type = "DurableStream<T>")]
    pub fn stream(
        &self,
        path: &str,
        #[wasm_bindgen(unchecked_param_type = "StreamOptions")] options: Option<Object>,
    ) -> Result<JsSession, JsValue> {
        if path.is_empty() {
            return Err(invalid("a stream path must be non-empty"));
        }
        let text = options_json(&options.map_or(JsValue::UNDEFINED, Into::into))?;
        let v = json::parse(&text).map_err(|_| invalid("options must be a plain object"))?;
        let mut o = StreamOptions {
            content_type: opt_str(&v, "contentType")?.map(str::to_owned),
            ..StreamOptions::default()
        };
        persist_options(&v, &mut o.persist, &mut o.limits)?;
        let kind = StreamKind::of(o.content_type.as_deref().unwrap_or("application/json"));
        Ok(self.keep(JsSession::new(
            WebSession::open_stream(&self.client, path, o),
            Some(kind),
        )))
    }

    /// Keeps `session` open until it or the client is closed.
    fn keep(&self, session: JsSession) -> JsSession {
        self.sessions.borrow_mut().push(Rc::downgrade(&session.parts));
        OPEN.with(|open| open.borrow_mut().1.push(session.parts.clone()));
        session
    }

    /// Probes the connection now (the SDK also does on `online` and when the
    /// page becomes visible).
    #[wasm_bindgen(js_name = checkConnection)]
    pub fn check_connection(&self) {
        self.client.check_connection("app check");
    }

    /// Kills the connection the way a network failure would; the client
    /// reconnects and resumes by itself.
    #[wasm_bindgen(js_name = dropConnection)]
    pub fn drop_connection(&self) {
        self.client.drop_connection();
    }

    /// Deletes everything the SDK stored in this browser for this origin
    /// (every session's transcript and pending appends); this client's open
    /// sessions store nothing more.
    #[wasm_bindgen(js_name = clearStorage, unchecked_return_type = "Promise<void>")]
    pub fn clear_storage(&self) -> Promise {
        for session in self.sessions.borrow().iter().filter_map(std::rc::Weak::upgrade) {
            // Stops storing at once; the deletion below covers its data.
            drop(session.session.clear_storage());
        }
        unit_promise(Box::pin(crate::web::clear_storage()))
    }

    /// Closes the client and its sessions, and releases its socket, timers
    /// and listeners.
    pub fn close(&self) {
        for session in self.sessions.take() {
            if let Some(parts) = session.upgrade() {
                parts.close();
            }
        }
        self.client.close();
        self.listeners.borrow_mut().clear();
        OPEN.with(|open| open.borrow_mut().0.retain(|c| !Rc::ptr_eq(c, &self.parts)));
    }
}

type JsCallbacks = Rc<RefCell<Vec<(u64, Function)>>>;

/// What a `Session` holds. Kept alive (see [`OPEN`]) until `close()`.
pub struct SessionParts {
    session: WebSession,
    on_event: JsCallbacks,
    on_change: JsCallbacks,
    on_error: JsCallbacks,
    on_reset: JsCallbacks,
    on_storage_error: JsCallbacks,
    /// Resolves once the stored state was read (`session.ready`).
    ready: Promise,
    /// Resolves once the subscription first caught up (`session.synced`).
    synced: Promise,
    iterators: Rc<RefCell<Vec<iter::Feed>>>,
    items: ItemsCache,
    next: Rc<RefCell<u64>>,
    updates: RefCell<Option<crate::web::UpdateListener>>,
    /// A stream opened with `client.stream()` and what it holds; `None`
    /// for a session.
    kind: Option<StreamKind>,
}

impl SessionParts {
    /// Ends the subscription and iterators and forgets the callbacks.
    fn close(self: &Rc<Self>) {
        self.session.close();
        for feed in self.iterators.borrow_mut().drain(..) {
            feed.end();
        }
        self.updates.borrow_mut().take();
        OPEN.with(|open| open.borrow_mut().1.retain(|s| !Rc::ptr_eq(s, self)));
    }
}

/// One session: its events, its chat view, and actions.
#[wasm_bindgen(js_name = Session)]
pub struct JsSession {
    parts: Rc<SessionParts>,
}

impl std::ops::Deref for JsSession {
    type Target = SessionParts;

    fn deref(&self) -> &SessionParts {
        &self.parts
    }
}

fn call_all(callbacks: &JsCallbacks, arg: &JsValue) {
    let callbacks: Vec<Function> = callbacks.borrow().iter().map(|(_, f)| f.clone()).collect();
    for f in callbacks {
        let _ = f.call1(&JsValue::NULL, arg);
    }
}

/// The transcript as JS objects, kept item by item: an update parses only
/// the items it added or changed (`changed`), not the whole transcript, so
/// its cost does not grow with the session. `None` for `changed` (or no
/// copy yet) builds it from scratch. Callers get a shallow copy: a new
/// array (for frameworks comparing identities) sharing the unchanged items.
type ItemsCache = Rc<RefCell<Option<js_sys::Array>>>;

fn items_value(cache: &ItemsCache, session: &WebSession, changed: Option<&[usize]>) -> JsValue {
    let mut slot = cache.borrow_mut();
    let view = session.view();
    match (slot.as_ref(), changed) {
        (Some(items), Some(changed)) => {
            for &i in changed {
                if let Some(item) = view.items().get(i) {
                    items.set(i as u32, from_json(&item.to_json()));
                }
            }
        }
        _ => *slot = Some(from_json(&view.items_json()).unchecked_into()),
    }
    slot.as_ref()
        .map_or(JsValue::NULL, |items| items.slice(0, items.length()).into())
}

impl JsSession {
    fn new(session: WebSession, kind: Option<StreamKind>) -> Self {
        let on_event: JsCallbacks = Rc::default();
        let on_change: JsCallbacks = Rc::default();
        let on_error: JsCallbacks = Rc::default();
        let on_reset: JsCallbacks = Rc::default();
        let on_storage_error: JsCallbacks = Rc::default();
        let iterators: Rc<RefCell<Vec<iter::Feed>>> = Rc::default();
        let (ev, ch, er, rs, se, it) = (
            on_event.clone(),
            on_change.clone(),
            on_error.clone(),
            on_reset.clone(),
            on_storage_error.clone(),
            iterators.clone(),
        );
        let weak_session = session.clone();
        let items: ItemsCache = Rc::default();
        let cache = items.clone();
        let mut resolve_ready = None;
        let ready = Promise::new(&mut |resolve, _| resolve_ready = Some(resolve));
        let mut settle_synced = None;
        let synced = Promise::new(&mut |resolve, reject| settle_synced = Some((resolve, reject)));
        // Awaiting it is the app's choice: a rejection nobody awaits is not
        // an unhandled one.
        if let Some(catch) = get(&synced, "catch").and_then(|c| c.dyn_into::<Function>().ok()) {
            let _ = catch.call1(&synced, &unsubscribe_fn(|| {}));
        }
        if session.loaded()
            && let Some(resolve) = resolve_ready.take()
        {
            let _ = resolve.call0(&JsValue::NULL);
        }
        let updates = session.on_update(move |u: &SessionUpdate| {
            if let Some(reason) = &u.reset_reason {
                call_all(&rs, &reason.as_str().into());
            }
            // One JSON.parse for the whole batch, not one per event.
            if !u.events.is_empty() && (!ev.borrow().is_empty() || !it.borrow().is_empty()) {
                let items: Vec<String> = u
                    .events
                    .iter()
                    .map(|e| {
                        let mut o = Obj::new();
                        o.str("offset", &e.offset)
                            .raw(if kind.is_some() { "data" } else { "event" }, &e.json);
                        o.finish()
                    })
                    .collect();
                let batch: js_sys::Array = from_json(&json::array(items.iter().map(String::as_str))).unchecked_into();
                for value in batch.iter() {
                    if kind == Some(StreamKind::Bytes) {
                        // Bytes travel as base64: the app gets them as bytes.
                        let data = get(&value, "data").and_then(|d| d.as_string()).unwrap_or_default();
                        let bytes = crate::web::from_base64(&data).unwrap_or_default();
                        let _ = Reflect::set(&value, &"data".into(), &js_sys::Uint8Array::from(&bytes[..]));
                    }
                    call_all(&ev, &value);
                    it.borrow_mut().retain(|feed| feed.push(value.clone()));
                }
            }
            if let Some(e) = &u.error {
                let err = js_error(e);
                // It will never catch up.
                if let Some((_, reject)) = settle_synced.take() {
                    let _ = reject.call1(&JsValue::NULL, &err);
                }
                call_all(&er, &err);
                it.borrow_mut().retain(|feed| feed.fail(err.clone()));
            }
            if let Some(e) = &u.storage_error {
                call_all(&se, &js_error(e));
            }
            if !u.events.is_empty() || u.reset || u.restored {
                if ch.borrow().is_empty() {
                    // Nobody keeps it current: rebuilt when next asked for.
                    *cache.borrow_mut() = None;
                } else {
                    let changed = (!u.reset && !u.restored).then_some(&u.items[..]);
                    call_all(&ch, &items_value(&cache, &weak_session, changed));
                }
            }
            if u.loaded
                && let Some(resolve) = resolve_ready.take()
            {
                let _ = resolve.call0(&JsValue::NULL);
            }
            if u.up_to_date
                && let Some((resolve, _)) = settle_synced.take()
            {
                let _ = resolve.call0(&JsValue::NULL);
            }
        });
        let parts = SessionParts {
            session,
            on_event,
            on_change,
            on_error,
            on_reset,
            on_storage_error,
            ready,
            synced,
            iterators,
            items,
            next: Rc::default(),
            updates: RefCell::new(Some(updates)),
            kind,
        };
        Self { parts: Rc::new(parts) }
    }

    fn register(&self, list: &JsCallbacks, listener: Function) -> Function {
        let id = {
            let mut next = self.next.borrow_mut();
            *next += 1;
            *next
        };
        list.borrow_mut().push((id, listener));
        let list = Rc::downgrade(list);
        unsubscribe_fn(move || {
            if let Some(l) = list.upgrade() {
                l.borrow_mut().retain(|(i, _)| *i != id);
            }
        })
    }

    /// `append` on a stream: any JSON value, a string for a text stream,
    /// bytes (`Uint8Array`) for a binary one.
    fn append_data(&self, kind: StreamKind, data: &JsValue) -> Result<Promise, JsValue> {
        let bad = |what: &str| {
            js_error(&ClientError::new(
                "invalid_event",
                ["this stream takes ", what].concat(),
            ))
        };
        let text = match kind {
            StreamKind::Json => js_sys::JSON::stringify(data)
                .ok()
                .and_then(|t| t.as_string())
                .ok_or_else(|| bad("JSON values"))?,
            StreamKind::Text => data.as_string().ok_or_else(|| bad("strings"))?,
            StreamKind::Bytes => crate::web::to_base64(
                &data
                    .dyn_ref::<js_sys::Uint8Array>()
                    .ok_or_else(|| bad("bytes (a Uint8Array)"))?
                    .to_vec(),
            ),
        };
        Ok(to_promise(Box::pin(self.session.append(text)), Box::new(ack_object)))
    }
}

#[wasm_bindgen(js_class = Session)]
impl JsSession {
    /// The session id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.session.id().to_owned()
    }

    /// The offset reached (persist it, or let the SDK do it).
    #[wasm_bindgen(getter)]
    pub fn offset(&self) -> Option<String> {
        self.session.offset()
    }

    /// Resolves once the session's stored state has been read (at once
    /// without `persist`): `items()`, `offset` and `received` then include
    /// what was restored, and the subscription has started.
    #[wasm_bindgen(getter, unchecked_return_type = "Promise<void>")]
    pub fn ready(&self) -> Promise {
        self.parts.ready.clone()
    }

    /// Resolves once the subscription has first caught up with the stream
    /// (after `ready`): `items()` then hold everything the server had when
    /// the session opened — e.g. whether an answer is being written. Rejects
    /// with the error if the subscription fails for good first (`onError`).
    #[wasm_bindgen(getter, unchecked_return_type = "Promise<void>")]
    pub fn synced(&self) -> Promise {
        self.parts.synced.clone()
    }

    /// Session events received so far (restored ones included).
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> f64 {
        self.session.received() as f64
    }

    /// Of the events received, those skipped because they could not be read
    /// as session events (another writer's: not JSON, not an object, a known
    /// type without a field it needs, nested too deep…). The session goes on
    /// past them. Events of other types are not skipped: they are items of
    /// kind "event".
    #[wasm_bindgen(getter)]
    pub fn skipped(&self) -> f64 {
        self.session.skipped() as f64
    }

    /// The transcript: user messages and runs, folded from the events.
    #[wasm_bindgen(unchecked_return_type = "ChatItem<E>[]")]
    pub fn items(&self) -> JsValue {
        items_value(&self.items, &self.session, Some(&[]))
    }

    /// Calls `listener` with every new event, in order, exactly once.
    #[wasm_bindgen(js_name = onEvent, unchecked_return_type = "() => void")]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(envelope: SessionEnvelope<E>) => void")] listener: Function,
    ) -> Function {
        self.register(&self.on_event, listener)
    }

    /// Calls `listener` with the whole transcript after every change.
    #[wasm_bindgen(js_name = onChange, unchecked_return_type = "() => void")]
    pub fn on_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(items: ChatItem<E>[]) => void")] listener: Function,
    ) -> Function {
        self.register(&self.on_change, listener)
    }

    /// Calls `listener` when the subscription fails for good (e.g. `not_found`).
    #[wasm_bindgen(js_name = onError, unchecked_return_type = "() => void")]
    pub fn on_error(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(error: DurableSessionError) => void")] listener: Function,
    ) -> Function {
        self.register(&self.on_error, listener)
    }

    /// Calls `listener` when the server reset the stream; the transcript is
    /// then rebuilt from the beginning (never a silent jump).
    #[wasm_bindgen(js_name = onReset, unchecked_return_type = "() => void")]
    pub fn on_reset(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(reason: string) => void")] listener: Function,
    ) -> Function {
        self.register(&self.on_reset, listener)
    }

    /// Calls `listener` when storing the session in IndexedDB failed: code
    /// `quota_exceeded` (the browser's storage for this origin is full) or
    /// `storage_error`. The session keeps working in memory; its transcript
    /// is not stored further (what was stored stays valid).
    #[wasm_bindgen(js_name = onStorageError, unchecked_return_type = "() => void")]
    pub fn on_storage_error(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(error: DurableSessionError) => void")] listener: Function,
    ) -> Function {
        self.register(&self.on_storage_error, listener)
    }

    /// Deletes what is stored for this session (transcript and pending
    /// appends) and stores nothing more for it; the session keeps working.
    #[wasm_bindgen(js_name = clearStorage, unchecked_return_type = "Promise<void>")]
    pub fn clear_storage(&self) -> Promise {
        unit_promise(Box::pin(self.session.clear_storage()))
    }

    /// New events as an async iterator: `for await (const e of session.events())`.
    #[wasm_bindgen(unchecked_return_type = "AsyncIterableIterator<SessionEnvelope<E>>")]
    pub fn events(&self) -> JsValue {
        let (feed, iterator) = iter::Feed::new();
        self.iterators.borrow_mut().push(feed);
        iterator
    }

    /// Sends a `user_message`. Resolves with its id once stored.
    #[wasm_bindgen(unchecked_return_type = "Promise<SendResult>")]
    pub fn send(
        &self,
        text: &str,
        #[wasm_bindgen(unchecked_param_type = "SendOptions")] options: Option<Object>,
    ) -> Result<Promise, JsValue> {
        let options = options_json(&options.map_or(JsValue::UNDEFINED, Into::into))?;
        let v = json::parse(&options).map_err(|_| invalid("options must be a plain object"))?;
        let mode = match opt_str(&v, "mode")? {
            None | Some("single") => RunMode::Single,
            Some("multi") => RunMode::Multi,
            Some(other) => {
                return Err(invalid(&format!(
                    "mode must be \"single\" or \"multi\", not \"{other}\""
                )));
            }
        };
        let (id, fut) = self.session.send(text, mode);
        Ok(to_promise(
            Box::pin(fut),
            Box::new(move |ack| ack_json(Obj::new().str("id", &id), ack)),
        ))
    }

    /// Asks the agent to stop run `runId` (a `cancel` event).
    #[wasm_bindgen(unchecked_return_type = "Promise<AppendResult>")]
    pub fn cancel(&self, #[wasm_bindgen(js_name = runId)] run_id: &str) -> Promise {
        to_promise(Box::pin(self.session.cancel(run_id)), Box::new(ack_object))
    }

    /// Changes the direction of run `runId` (a `steer` event).
    #[wasm_bindgen(unchecked_return_type = "Promise<AppendResult>")]
    pub fn steer(&self, #[wasm_bindgen(js_name = runId)] run_id: &str, text: &str) -> Promise {
        to_promise(Box::pin(self.session.steer(run_id, text)), Box::new(ack_object))
    }

    /// Appends any session event (a JSON object with a `type`): a core
    /// event, or one of the app's own (`E`; any object with a string `type`
    /// when the session declares none).
    #[wasm_bindgen(unchecked_return_type = "Promise<AppendResult>")]
    pub fn append(
        &self,
        #[wasm_bindgen(unchecked_param_type = "AppendEvent<E>")] event: JsValue,
    ) -> Result<Promise, JsValue> {
        if let Some(kind) = self.kind {
            return self.append_data(kind, &event);
        }
        let is_event =
            event.is_object() && !js_sys::Array::is_array(&event) && get(&event, "type").is_some_and(|t| t.is_string());
        if !is_event {
            return Err(js_error(&ClientError::new(
                "invalid_event",
                "an event is an object with a string `type`",
            )));
        }
        let json = js_sys::JSON::stringify(&event).map_err(|_| {
            js_error(&ClientError::new(
                "invalid_event",
                "the event cannot be serialized as JSON",
            ))
        })?;
        Ok(to_promise(
            Box::pin(self.session.append(String::from(json))),
            Box::new(ack_object),
        ))
    }

    /// Ends the subscription (the client stays open) and ends iterators.
    pub fn close(&self) {
        self.parts.close();
    }
}
