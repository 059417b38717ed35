//! Sessions kept in IndexedDB between page loads: each session's
//! transcript, written incrementally, and its pending appends (the durable
//! outbox). The rules — chunks chained by offset, limits, LRU, outbox
//! records — are in [`crate::core::persist`]; this module only moves them
//! in and out of IndexedDB.
//!
//! One database per origin, `durable-sessions`, with three object stores:
//! `meta` (per session: when it was last opened, for the LRU), `chunks`
//! (key `[session, from]`: the events after offset `from`) and `outbox`
//! (key `[session, order, producer id]`: an append not yet acknowledged).
//! A session's key is its server's base URL and stream path.
//!
//! A write of events is one transaction with one `put`, started (and
//! committed) as soon as a batch is applied, so a reload right after finds
//! it: its cost depends on the batch, never on the session. A failed write
//! (quota exceeded, storage unavailable) is reported to the app and ends
//! writing for that session; what was stored stays a valid prefix of the
//! session (chunks after a failed one are off the chain), and the session
//! keeps working in memory.

use std::cell::RefCell;
use std::rc::Rc;

use gloo_events::EventListener;
use js_sys::{Array, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    EventTarget, IdbDatabase, IdbKeyRange, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode,
};

use super::now_ms;
use super::slot;
use crate::core::ClientError;
use crate::core::persist::{self, Limits, Meta, PendingAppend, Restored, Usage};
use crate::core::session::Envelope;

const DB_NAME: &str = "durable-sessions";
const META: &str = "meta";
const CHUNKS: &str = "chunks";
const OUTBOX: &str = "outbox";
const STORES: [&str; 3] = [META, CHUNKS, OUTBOX];

thread_local! {
    /// The page's connection to the database, once open.
    static DB: RefCell<Option<IdbDatabase>> = const { RefCell::new(None) };
}

/// A storage failure as the app sees it: `quota_exceeded` when the
/// browser's storage for the origin is full, else `storage_error`.
fn storage_error(name: &str, message: &str) -> ClientError {
    let code = if name == "QuotaExceededError" {
        "quota_exceeded"
    } else {
        "storage_error"
    };
    ClientError::new(code, [name, ": ", message].concat())
}

/// A thrown value (usually a `DOMException`) as a storage error.
fn thrown(e: JsValue) -> ClientError {
    let field = |k: &str| {
        Reflect::get(&e, &k.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    storage_error(&field("name"), &field("message"))
}

/// Waits until `target` fires `ok` (true) or `fail` (false).
async fn settle(target: &EventTarget, ok: &'static str, fail: &'static str) -> bool {
    let (tx, rx) = slot::channel();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let t = tx.clone();
    let _ok = EventListener::once(target, ok, move |_| {
        if let Some(s) = t.borrow_mut().take() {
            s.send(true);
        }
    });
    let _fail = EventListener::once(target, fail, move |_| {
        if let Some(s) = tx.borrow_mut().take() {
            s.send(false);
        }
    });
    rx.await.unwrap_or(false)
}

/// The page's database, opened (and created) on first use.
async fn database() -> Result<IdbDatabase, ClientError> {
    if let Some(db) = DB.with(|d| d.borrow().clone()) {
        return Ok(db);
    }
    let factory = web_sys::window()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or_else(|| storage_error("UnknownError", "IndexedDB is not available"))?;
    let req: IdbOpenDbRequest = factory.open_with_u32(DB_NAME, 1).map_err(thrown)?;
    let r = req.clone();
    let _upgrade = EventListener::once(&req, "upgradeneeded", move |_| {
        if let Some(db) = r.result().ok().and_then(|v| v.dyn_into::<IdbDatabase>().ok()) {
            for name in STORES {
                let _ = db.create_object_store(name);
            }
        }
    });
    if !settle(&req, "success", "error").await {
        return Err(thrown(match req.error() {
            Ok(e) => e.map_or(JsValue::NULL, JsValue::from),
            Err(e) => e,
        }));
    }
    let db: IdbDatabase = req.result().map_err(thrown)?.unchecked_into();
    // A newer version of the SDK upgrading the database in another tab:
    // step aside (the next write reopens it).
    let d = db.clone();
    EventListener::new(&db, "versionchange", move |_| {
        d.close();
        DB.with(|slot| slot.borrow_mut().take());
    })
    .forget();
    DB.with(|d| *d.borrow_mut() = Some(db.clone()));
    Ok(db)
}

/// All keys `[session, …]` of one session: arrays sort after strings, so
/// `[session, []]` is above every `[session, "…"]` and `[session, n, "…"]`.
fn session_range(session: &str) -> JsValue {
    let lower = Array::of1(&session.into());
    let upper = Array::of2(&session.into(), &Array::new());
    IdbKeyRange::bound(&lower, &upper).map_or(JsValue::NULL, JsValue::from)
}

fn chunk_key(session: &str, from: &str) -> JsValue {
    Array::of2(&session.into(), &from.into()).into()
}

fn outbox_key(session: &str, p: &PendingAppend) -> JsValue {
    Array::of3(
        &session.into(),
        &(p.order as f64).into(),
        &p.producer.id.as_str().into(),
    )
    .into()
}

/// The string values of a `getAll` request's result.
fn strings(req: &IdbRequest) -> Vec<String> {
    req.result()
        .ok()
        .and_then(|v| v.dyn_into::<Array>().ok())
        .map(|a| a.iter().filter_map(|v| v.as_string()).collect())
        .unwrap_or_default()
}

/// One request of a transaction.
enum Op {
    Put(&'static str, JsValue, String),
    /// A key or a key range.
    Delete(&'static str, JsValue),
    Clear(&'static str),
    /// Every value in a key range (the request is returned).
    GetAll(&'static str, JsValue),
}

/// Starts one read-write transaction over every store with `ops`, and
/// commits it at once (so it is on its way before anything else — a reload
/// — can happen).
fn write(db: &IdbDatabase, ops: &[Op]) -> Result<IdbTransaction, ClientError> {
    run(db, ops, IdbTransactionMode::Readwrite).map(|(tx, _)| tx)
}

/// Starts one transaction over every store with `ops` and commits it;
/// returns it with the requests of the `GetAll`s.
fn run(
    db: &IdbDatabase,
    ops: &[Op],
    mode: IdbTransactionMode,
) -> Result<(IdbTransaction, Vec<IdbRequest>), ClientError> {
    let names: Array = STORES.iter().map(|s| JsValue::from_str(s)).collect();
    let tx = db.transaction_with_str_sequence_and_mode(&names, mode).map_err(|e| {
        // The connection was closed under us (versionchange): reopen
        // next time.
        DB.with(|slot| slot.borrow_mut().take());
        thrown(e)
    })?;
    let mut reads = Vec::new();
    let mut issue = || -> Result<(), JsValue> {
        for op in ops {
            match op {
                Op::Put(store, key, value) => tx.object_store(store)?.put_with_key(&JsValue::from_str(value), key)?,
                Op::Delete(store, key) => tx.object_store(store)?.delete(key)?,
                Op::Clear(store) => tx.object_store(store)?.clear()?,
                Op::GetAll(store, range) => {
                    let req = tx.object_store(store)?.get_all_with_key(range)?;
                    reads.push(req.clone());
                    req
                }
            };
        }
        Ok(())
    };
    if let Err(e) = issue() {
        let _ = tx.abort();
        return Err(thrown(e));
    }
    // `commit()` is in every browser since 2021; web-sys calls it deprecated
    // because its WebIDL marks it experimental.
    #[allow(deprecated)]
    let _ = tx.commit();
    Ok((tx, reads))
}

/// Waits for a transaction to end.
async fn finish(tx: &IdbTransaction) -> Result<(), ClientError> {
    if settle(tx, "complete", "abort").await {
        return Ok(());
    }
    Err(match tx.error() {
        Some(e) => storage_error(&e.name(), &e.message()),
        None => storage_error("AbortError", "the transaction was aborted"),
    })
}

/// Runs `ops` in the page's database and waits until they are stored.
async fn apply(ops: &[Op]) -> Result<(), ClientError> {
    let db = database().await?;
    finish(&write(&db, ops)?).await
}

/// What the store does with new events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Appends them.
    Keep,
    /// The transcript reached its limits: what is stored stays, nothing is
    /// added (after a reload, the rest comes from the server).
    Full,
    /// A write failed, or the app cleared the storage: no events are
    /// written for this session any more.
    Off,
}

struct State {
    mode: Mode,
    usage: Usage,
    /// The `from` of the next chunk: the offset the stored chain reaches.
    tail: String,
    /// The app cleared the storage: pending appends are not kept either.
    cleared: bool,
    last_order: u64,
}

/// One session's storage.
pub(crate) struct SessionStore {
    db: IdbDatabase,
    key: String,
    limits: Limits,
    /// A stream that is not a session: messages are stored with their
    /// offsets ([`persist::raw_message`]).
    raw: bool,
    st: RefCell<State>,
    on_error: Box<dyn Fn(ClientError)>,
}

/// What a session finds in storage when it opens.
pub(crate) struct Loaded {
    pub(crate) store: Rc<SessionStore>,
    pub(crate) restored: Restored,
    /// Appends not acknowledged before, oldest first.
    pub(crate) pending: Vec<PendingAppend>,
}

impl SessionStore {
    /// Opens the storage of session `key`: reads its transcript and pending
    /// appends and marks it used; then deletes its chunks off the chain and
    /// evicts the least recently used sessions beyond `limits.max_sessions`
    /// (their transcripts: pending appends stay until delivered).
    /// `on_error` hears every later failure.
    pub(crate) async fn open(
        key: String,
        limits: Limits,
        raw: bool,
        on_error: impl Fn(ClientError) + 'static,
    ) -> Result<Loaded, ClientError> {
        let db = database().await?;
        // Reading only: a full disk must not keep the session from coming
        // back, nor its pending appends from being sent.
        let (tx, reads) = run(
            &db,
            &[
                Op::GetAll(CHUNKS, session_range(&key)),
                Op::GetAll(OUTBOX, session_range(&key)),
                Op::GetAll(META, JsValue::UNDEFINED),
            ],
            IdbTransactionMode::Readonly,
        )?;
        finish(&tx).await?;
        let [chunks, outbox, metas] = &reads[..] else {
            return Err(storage_error("UnknownError", "unexpected reads"));
        };
        let restored = persist::restore(strings(chunks).iter().map(String::as_str), raw);
        // Keys `[session, order, id]`: already in order.
        let pending: Vec<PendingAppend> = strings(outbox).iter().filter_map(|t| PendingAppend::parse(t)).collect();
        let stored: Vec<Meta> = strings(metas).iter().filter_map(|t| Meta::parse(t)).collect();
        let mut cleanup: Vec<Op> = restored
            .garbage
            .iter()
            .map(|from| Op::Delete(CHUNKS, chunk_key(&key, from)))
            .collect();
        for victim in persist::lru_victims(&stored, limits.max_sessions, &key) {
            cleanup.push(Op::Delete(CHUNKS, session_range(&victim)));
            cleanup.push(Op::Delete(META, victim.into()));
        }
        let store = Rc::new(Self {
            db,
            limits,
            raw,
            st: RefCell::new(State {
                mode: Mode::Keep,
                usage: restored.usage,
                tail: restored.tail.clone(),
                cleared: false,
                last_order: pending.last().map_or(0, |p| p.order),
            }),
            on_error: Box::new(on_error),
            key,
        });
        // Deletions first, on their own: they free space even when the disk
        // is full.
        if !cleanup.is_empty() {
            store.spawn(cleanup, false);
        }
        let used = Meta {
            key: store.key.clone(),
            used: now_ms(),
        };
        store.spawn(vec![Op::Put(META, store.key.as_str().into(), used.to_text())], false);
        Ok(Loaded {
            store,
            restored,
            pending,
        })
    }

    /// Starts writing `ops` now; reports a failure (and stops storing
    /// events when they were a `chunk`).
    fn spawn(self: &Rc<Self>, ops: Vec<Op>, chunk: bool) {
        let started = write(&self.db, &ops);
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = match started {
                Ok(tx) => finish(&tx).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                if chunk {
                    // Chunks after this one would be off the chain.
                    this.st.borrow_mut().mode = Mode::Off;
                }
                (this.on_error)(e);
            }
        });
    }

    /// Stores newly applied events (one batch, in order) as one chunk.
    pub(crate) fn append(self: &Rc<Self>, events: &[Envelope]) {
        let Some(last) = events.last() else { return };
        let op = {
            let mut st = self.st.borrow_mut();
            if st.mode != Mode::Keep {
                return;
            }
            let raw: Vec<String>;
            let text = if self.raw {
                raw = events
                    .iter()
                    .map(|e| persist::raw_message(&e.offset, &e.json))
                    .collect();
                persist::chunk(&st.tail, &last.offset, raw.iter().map(String::as_str))
            } else {
                persist::chunk(&st.tail, &last.offset, events.iter().map(|e| e.json.as_str()))
            };
            let limits = self.limits;
            if !st.usage.admit(events.len() as u64, text.len() as u64, &limits) {
                st.mode = Mode::Full;
                return;
            }
            let from = std::mem::replace(&mut st.tail, last.offset.clone());
            Op::Put(CHUNKS, chunk_key(&self.key, &from), text)
        };
        self.spawn(vec![op], true);
    }

    /// The stream was reset: the stored transcript is dropped and starts
    /// again from the beginning.
    pub(crate) fn reset(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            if st.mode == Mode::Off {
                return;
            }
            st.mode = Mode::Keep;
            st.usage = Usage::default();
            st.tail = persist::BEGINNING.to_owned();
        }
        self.spawn(vec![Op::Delete(CHUNKS, session_range(&self.key))], false);
    }

    /// A new pending append's order: now, strictly after the previous one.
    pub(crate) fn next_order(&self) -> u64 {
        let mut st = self.st.borrow_mut();
        st.last_order = now_ms().max(st.last_order + 1);
        st.last_order
    }

    /// Keeps `p` until [`SessionStore::forget_pending`].
    pub(crate) fn keep_pending(self: &Rc<Self>, p: &PendingAppend) {
        if !self.st.borrow().cleared {
            self.spawn(vec![Op::Put(OUTBOX, outbox_key(&self.key, p), p.to_text())], false);
        }
    }

    /// `p` was acknowledged (or failed for good).
    pub(crate) fn forget_pending(self: &Rc<Self>, p: &PendingAppend) {
        self.spawn(vec![Op::Delete(OUTBOX, outbox_key(&self.key, p))], false);
    }

    /// Stops storing (the app cleared the storage): neither events nor new
    /// pending appends are written; pending ones are still forgotten once
    /// acknowledged.
    pub(crate) fn stop(&self) {
        let mut st = self.st.borrow_mut();
        st.mode = Mode::Off;
        st.cleared = true;
    }
}

/// Deletes everything stored for the session `key` (its transcript and
/// pending appends). Resolves once done.
pub(crate) async fn clear_session(key: String) -> Result<(), ClientError> {
    apply(&[
        Op::Delete(META, key.as_str().into()),
        Op::Delete(CHUNKS, session_range(&key)),
        Op::Delete(OUTBOX, session_range(&key)),
    ])
    .await
}

/// Deletes everything the SDK stored in this browser for this origin:
/// every session's transcript and pending appends. Sessions open meanwhile
/// keep storing what arrives next; close them first (or call
/// [`super::WebSession::clear_storage`] on each) to store nothing more.
///
/// ```no_run
/// # async fn sign_out() {
/// durable_sessions::web::clear_storage().await.unwrap();
/// # }
/// ```
pub async fn clear_storage() -> Result<(), ClientError> {
    apply(&[Op::Clear(META), Op::Clear(CHUNKS), Op::Clear(OUTBOX)]).await
}
