//! What the browser test files share: the servers `scripts/test-wasm.sh`
//! starts, client options for tests, waiting, plain `fetch`es, and
//! recorders of what a session or client reported. Each test file uses a
//! part of it.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use durable_sessions::core::chat::{ChatItem, RunState};
use durable_sessions::core::state::StateChange;
use durable_sessions::web::{SessionOptions, Transport, WebClient, WebOptions, WebSession};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Our server (WebSocket + HTTP, test hooks on, demo agent attached).
pub const SERVER: &str = match option_env!("DS_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4437",
};

/// Options for a test client: short backoff.
pub fn options(url: &str, transport: Transport) -> WebOptions {
    let mut o = WebOptions::new(url);
    o.transport = transport;
    o.core.backoff.min_ms = 50;
    o.core.backoff.max_ms = 500;
    o
}

/// A session of author `wasm-test`, not persisted.
pub fn session_options() -> SessionOptions {
    SessionOptions {
        author: "wasm-test".into(),
        persist: false,
        ..SessionOptions::default()
    }
}

/// Polls `cond` every 20 ms for up to `ms`.
pub async fn wait_until(what: &str, ms: u32, cond: impl Fn() -> bool) {
    let mut waited = 0;
    while !cond() {
        assert!(waited < ms, "timed out after {ms} ms waiting for {what}");
        TimeoutFuture::new(20).await;
        waited += 20;
    }
}

/// A plain request with these headers: its status and body.
pub async fn fetch_headers(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_cache(web_sys::RequestCache::NoStore);
    let h = web_sys::Headers::new().unwrap();
    for (name, value) in headers {
        h.set(name, value).unwrap();
    }
    init.set_headers(&h);
    let window = web_sys::window().unwrap();
    let res: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    let text = JsFuture::from(res.text().unwrap()).await.unwrap().as_string().unwrap();
    (res.status(), text)
}

/// A plain request: its status and body.
pub async fn fetch_text(method: &str, url: &str) -> (u16, String) {
    fetch_headers(method, url, &[]).await
}

/// Every event of a stream as stored (`path` as in a URL), read over plain
/// HTTP from `base`.
pub async fn stored_events(base: &str, path: &str) -> Vec<serde_json::Value> {
    let (status, body) = fetch_text("GET", &format!("{base}/v1/stream/{path}?offset=-1")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every event delivered to a session, with its offset.
pub type Log = Rc<RefCell<Vec<(String, serde_json::Value)>>>;

/// Records what `session` delivers.
pub fn record(session: &WebSession) -> (Log, durable_sessions::web::UpdateListener) {
    let log: Log = Rc::default();
    let l = log.clone();
    let listener = session.on_update(move |u| {
        for e in &u.events {
            l.borrow_mut()
                .push((e.offset.clone(), serde_json::from_str(&e.json).unwrap()));
        }
    });
    (log, listener)
}

/// The events of a [`Log`], without offsets.
pub fn events(log: &Log) -> Vec<serde_json::Value> {
    log.borrow().iter().map(|(_, e)| e.clone()).collect()
}

/// Every state change of `client`.
pub fn state_log(client: &WebClient) -> (Rc<RefCell<Vec<StateChange>>>, durable_sessions::web::Listener) {
    let log: Rc<RefCell<Vec<StateChange>>> = Rc::default();
    let l = log.clone();
    let listener = client.on_state(move |c| l.borrow_mut().push(c.clone()));
    (log, listener)
}

/// The last run of the session's view: id, state, text length.
pub fn latest_run(session: &WebSession) -> Option<(String, RunState, usize)> {
    session.view().items().iter().rev().find_map(|i| match i {
        ChatItem::Run(r) => Some((r.run_id.clone(), r.state, r.text.len())),
        ChatItem::User(_) | ChatItem::Event(_) => None,
    })
}
