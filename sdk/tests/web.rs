//! The browser SDK in headless Chromium, against real servers started by
//! `scripts/test-wasm.sh`: ours (WebSocket and HTTP, with the demo agent) and
//! the upstream Node reference server (HTTP).

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use durable_sessions::core::chat::RunState;
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::core::state::ConnectionState;
use durable_sessions::core::subscription::StartFrom;
use durable_sessions::protocol::session::RunMode;
use durable_sessions::protocol::ws::Payload;
use durable_sessions::web::{SessionOptions, Transport, WebClient, WebOptions, WebSession, random_id};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Our server (WebSocket + HTTP, test hooks on, demo agent attached).
const SERVER: &str = match option_env!("DS_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4437",
};
/// The upstream Node reference server.
const NODE_SERVER: &str = match option_env!("DS_NODE_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4438",
};

fn options(url: &str, transport: Transport) -> WebOptions {
    let mut o = WebOptions::new(url);
    o.transport = transport;
    o.core.backoff.min_ms = 50;
    o.core.backoff.max_ms = 500;
    o
}

fn session_options() -> SessionOptions {
    SessionOptions {
        author: "wasm-test".into(),
        persist: false,
    }
}

/// Polls `cond` every 20 ms for up to `ms`.
async fn wait_until(what: &str, ms: u32, cond: impl Fn() -> bool) {
    let mut waited = 0;
    while !cond() {
        assert!(waited < ms, "timed out after {ms} ms waiting for {what}");
        TimeoutFuture::new(20).await;
        waited += 20;
    }
}

async fn fetch_text(method: &str, url: &str) -> (u16, String) {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_cache(web_sys::RequestCache::NoStore);
    let window = web_sys::window().unwrap();
    let res: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    let text = JsFuture::from(res.text().unwrap()).await.unwrap().as_string().unwrap();
    (res.status(), text)
}

/// Every event of a session as stored, read over plain HTTP.
async fn stored_events(base: &str, path: &str) -> Vec<serde_json::Value> {
    let (status, body) = fetch_text("GET", &format!("{base}/v1/stream/{path}?offset=-1")).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Every event delivered to a session, with its offset.
type Log = Rc<RefCell<Vec<(String, serde_json::Value)>>>;

fn record(session: &WebSession) -> (Log, durable_sessions::web::UpdateListener) {
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

fn latest_run(session: &WebSession) -> Option<(String, RunState, usize)> {
    session.view().items().iter().rev().find_map(|i| match i {
        durable_sessions::core::chat::ChatItem::Run(r) => Some((r.run_id.clone(), r.state, r.text.len())),
        _ => None,
    })
}

#[wasm_bindgen_test]
async fn websocket_subscribe_receive_and_append() {
    let client = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let session = WebSession::open(&client, &random_id("recv"), session_options());
    let (log, _l) = record(&session);
    for i in 0..5 {
        session.append(format!(r#"{{"type":"note","i":{i}}}"#)).await.unwrap();
    }
    wait_until("5 events", 5_000, || log.borrow().len() == 5).await;
    let got: Vec<i64> = log.borrow().iter().map(|(_, v)| v["i"].as_i64().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(client.state().state, ConnectionState::Connected);
    client.close();
    assert_eq!(client.state().state, ConnectionState::Closed);
}

#[wasm_bindgen_test]
async fn a_server_side_kill_mid_answer_reconnects_and_resumes_without_gap_or_duplicate() {
    let client = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let states: Rc<RefCell<Vec<ConnectionState>>> = Rc::default();
    let s = states.clone();
    let _state = client.on_state(move |c| s.borrow_mut().push(c.state));
    let session = WebSession::open(&client, &random_id("kill"), session_options());
    let (log, _l) = record(&session);
    let (_, sent) = session.send("tell me about resumable streams", RunMode::Single);
    sent.await.unwrap();
    wait_until("answer underway", 10_000, || {
        latest_run(&session).is_some_and(|(_, _, len)| len > 20)
    })
    .await;
    let before = log.borrow().len();
    states.borrow_mut().clear();
    let (status, _) = fetch_text("POST", &format!("{SERVER}/v1/test/drop-connections")).await;
    assert_eq!(status, 200);
    wait_until("reconnected", 10_000, || {
        let s = states.borrow();
        s.contains(&ConnectionState::Disconnected) && s.last() == Some(&ConnectionState::Connected)
    })
    .await;
    wait_until("answer finished", 20_000, || {
        latest_run(&session).is_some_and(|(_, st, _)| st != RunState::Streaming)
    })
    .await;
    let (_, state, _) = latest_run(&session).unwrap();
    assert_eq!(state, RunState::Completed);
    assert!(log.borrow().len() > before, "events kept arriving after the kill");
    // Exactly what the server stored: no gap, no duplicate.
    let stored = stored_events(SERVER, session.path()).await;
    let received: Vec<serde_json::Value> = log.borrow().iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(received, stored);
    let offsets: Vec<String> = log.borrow().iter().map(|(o, _)| o.clone()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets strictly increase");
    client.close();
}

#[wasm_bindgen_test]
async fn cancel_and_steer_round_trips() {
    let client = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let session = WebSession::open(&client, &random_id("control"), session_options());
    let (_, sent) = session.send("describe mountains", RunMode::Single);
    sent.await.unwrap();
    wait_until("answer underway", 10_000, || {
        latest_run(&session).is_some_and(|(_, _, len)| len > 10)
    })
    .await;
    let (run_id, _, _) = latest_run(&session).unwrap();
    session.steer(&run_id, "talk about oceans").await.unwrap();
    wait_until("steer applied", 10_000, || {
        session
            .view()
            .run(&run_id)
            .is_some_and(|r| r.steers.iter().any(|s| s.applied))
    })
    .await;
    wait_until("steered text", 10_000, || {
        session.view().run(&run_id).is_some_and(|r| r.text.contains("oceans"))
    })
    .await;
    session.cancel(&run_id).await.unwrap();
    wait_until("cancelled", 10_000, || {
        session
            .view()
            .run(&run_id)
            .is_some_and(|r| r.state == RunState::Cancelled)
    })
    .await;
    assert_eq!(
        session.view().run(&run_id).unwrap().cancel_requested_by.as_deref(),
        Some("wasm-test")
    );
    client.close();
}

/// Catch-up, live, and resume from a stored offset over plain HTTP.
async fn http_transport_against(base: &str) {
    let path = format!("sessions/{}", random_id("http"));
    let writer = WebClient::new(options(base, Transport::Http)).unwrap();
    let collected: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
    let c = collected.clone();
    let reader = WebClient::new(options(base, Transport::Http)).unwrap();
    let _sub = reader.subscribe(
        &path,
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
        move |e| {
            if let SubscriptionEvent::Messages(ms) = e {
                for m in ms {
                    let Payload::Json(raw) = m.payload else { panic!("json") };
                    c.borrow_mut().push((m.offset, raw));
                }
            }
        },
    );
    // Catch-up: appended before the reader's first read completes or after.
    for i in 0..3 {
        writer
            .append(&path, format!(r#"{{"type":"note","i":{i}}}"#))
            .await
            .unwrap();
    }
    wait_until("catch-up", 10_000, || collected.borrow().len() == 3).await;
    // Live: long-poll wakes on the next append.
    writer.append(&path, r#"{"type":"note","i":3}"#.into()).await.unwrap();
    wait_until("live", 10_000, || collected.borrow().len() == 4).await;
    let texts: Vec<String> = collected.borrow().iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(
        texts,
        (0..4)
            .map(|i| format!(r#"{{"type":"note","i":{i}}}"#))
            .collect::<Vec<_>>()
    );
    // Resume from a stored offset: only what came after it.
    let stored = collected.borrow()[1].0.clone();
    let resumed: Rc<RefCell<Vec<String>>> = Rc::default();
    let r = resumed.clone();
    let third = WebClient::new(options(base, Transport::Http)).unwrap();
    let opts = SubscribeOptions {
        start: StartFrom::Offset(stored).into(),
        ..Default::default()
    };
    let _sub3 = third.subscribe(&path, opts, move |e| {
        if let SubscriptionEvent::Messages(ms) = e {
            for m in ms {
                let Payload::Json(raw) = m.payload else { panic!("json") };
                r.borrow_mut().push(raw);
            }
        }
    });
    wait_until("resume", 10_000, || !resumed.borrow().is_empty()).await;
    TimeoutFuture::new(200).await;
    assert!(
        resumed.borrow().iter().all(|t| !t.contains(r#""i":0"#)),
        "nothing before the stored offset"
    );
    assert!(resumed.borrow().iter().any(|t| t.contains(r#""i":3"#)));
    for c in [writer, reader, third] {
        c.close();
    }
}

#[wasm_bindgen_test]
async fn http_transport_against_our_server() {
    http_transport_against(SERVER).await;
}

#[wasm_bindgen_test]
async fn http_transport_against_the_node_reference_server() {
    http_transport_against(NODE_SERVER).await;
}
