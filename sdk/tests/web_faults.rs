//! Fault paths of the browser SDK in headless Chromium, against the servers
//! started by `scripts/test-wasm.sh`: an append too large for the server
//! next to a Stop that must still work; the HTTP transport behind a proxy
//! that answers `503` for a while (tests/support/fault-proxy.mjs); a
//! non-ASCII session id over both transports; a stream deleted and created
//! again under live and resuming subscriptions.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use durable_sessions::core::ClientError;
use durable_sessions::core::chat::{ChatItem, RunState};
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::core::outbox::AppendAck;
use durable_sessions::core::state::{ConnectionState, StateChange};
use durable_sessions::core::subscription::StartFrom;
use durable_sessions::protocol::session::RunMode;
use durable_sessions::protocol::ws::Payload;
use durable_sessions::web::{Transport, WebClient, WebSession, random_id};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod support;
use support::*;

/// The fault proxy in front of [`SERVER`].
const PROXY: &str = match option_env!("DS_PROXY") {
    Some(s) => s,
    None => "http://127.0.0.1:4440",
};
/// A second fault proxy in front of [`SERVER`]: with [`PROXY`], two nodes
/// of one cluster (one log, the same offsets).
const PROXY_B: &str = match option_env!("DS_PROXY_B") {
    Some(s) => s,
    None => "http://127.0.0.1:4441",
};

type Outcome = Rc<RefCell<Option<Result<AppendAck, ClientError>>>>;

/// Runs an append's future in the background; its outcome lands in the cell.
fn watch(fut: impl Future<Output = Result<AppendAck, ClientError>> + 'static) -> Outcome {
    let outcome: Outcome = Rc::default();
    let o = outcome.clone();
    wasm_bindgen_futures::spawn_local(async move {
        *o.borrow_mut() = Some(fut.await);
    });
    outcome
}

/// A 1.5 MB message pasted while an answer streams, then Stop: the message
/// fails at once with a typed `too_large` (it is never sent), the cancel is
/// stored and honoured. Before the fix the oversized append waited for an
/// acknowledgement forever and the cancel queued behind it.
async fn a_big_append_fails_at_once_and_a_cancel_still_lands(transport: Transport) {
    let mut opts = options(SERVER, transport);
    if transport == Transport::Http {
        // HTTP has no `hello`: the configured limit applies (the server
        // itself takes 16 MiB bodies).
        opts.core.max_append_bytes = 1 << 20;
    }
    let client = WebClient::new(opts).unwrap();
    let session = WebSession::open(&client, &random_id("big"), session_options());
    let (_, sent) = session.send("describe mountains", RunMode::Single);
    sent.await.unwrap();
    wait_until("answer underway", 15_000, || {
        latest_run(&session).is_some_and(|(_, _, len)| len > 10)
    })
    .await;
    let (run_id, ..) = latest_run(&session).unwrap();
    let document = "lorem ipsum ".repeat(125_000);
    assert!(document.len() >= 1_500_000);
    let (_, big) = session.send(&document, RunMode::Single);
    let big = watch(big);
    let cancel = watch(session.cancel(&run_id));
    wait_until("the cancel acknowledged", 10_000, || cancel.borrow().is_some()).await;
    cancel
        .borrow()
        .as_ref()
        .unwrap()
        .as_ref()
        .expect("the cancel is stored");
    wait_until("the big append settled", 1_000, || big.borrow().is_some()).await;
    let error = big.borrow().clone().unwrap().expect_err("too large");
    assert_eq!(error.code, "too_large", "{error}");
    wait_until("the run cancelled", 15_000, || {
        session
            .view()
            .run(&run_id)
            .is_some_and(|r| r.state == RunState::Cancelled)
    })
    .await;
    // The server's log: the cancel is there, the document is not.
    let stored = stored_events(SERVER, session.path()).await;
    assert!(
        stored
            .iter()
            .any(|e| e["type"] == "cancel" && e["run_id"] == run_id.as_str() && e["by"] == "wasm-test"),
        "the cancel is in the log"
    );
    assert!(
        stored
            .iter()
            .all(|e| e["text"].as_str().is_none_or(|t| t.len() < 1_000)),
        "the document was never stored"
    );
    // The session goes on: the next message is sent and answered.
    session.send("and now rivers", RunMode::Single).1.await.unwrap();
    assert_eq!(client.state().state, ConnectionState::Connected);
    client.close();
}

#[wasm_bindgen_test]
async fn websocket_a_1_5_mb_append_fails_with_too_large_and_the_cancel_lands() {
    a_big_append_fails_at_once_and_a_cancel_still_lands(Transport::WebSocket).await;
}

#[wasm_bindgen_test]
async fn http_a_1_5_mb_append_fails_with_too_large_and_the_cancel_lands() {
    a_big_append_fails_at_once_and_a_cancel_still_lands(Transport::Http).await;
}

/// The HTTP transport behind a proxy that answers `503` (with
/// `Retry-After: 1`) for 10 s while events keep being written: the page
/// shows `disconnected` with the reason, retries by itself, and once the
/// proxy recovers it has exactly what the server stored — no gap, no
/// duplicate. Before the fix the first 503 ended the subscription for good
/// and the state never changed.
#[wasm_bindgen_test]
async fn http_behind_a_proxy_answering_503_for_10_s_catches_up_by_itself() {
    let id = random_id("proxy");
    let path = format!("sessions/{id}");
    // A writer straight to the server (not through the proxy).
    let writer = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let ready = Rc::new(RefCell::new(false));
    let r = ready.clone();
    let _writer_sub = writer.subscribe(
        &path,
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
        move |e| {
            if let SubscriptionEvent::UpToDate { .. } = e {
                *r.borrow_mut() = true;
            }
        },
    );
    wait_until("the session created", 10_000, || *ready.borrow()).await;
    let note = |i: u32| format!(r#"{{"type":"note","i":{i}}}"#);
    let reader = WebClient::new(options(PROXY, Transport::Http)).unwrap();
    let (states, _s) = state_log(&reader);
    let session = WebSession::open(&reader, &id, session_options());
    let (log, _l) = record(&session);
    for i in 0..5 {
        writer.append(&path, note(i)).await.unwrap();
    }
    wait_until("the first events through the proxy", 10_000, || log.borrow().len() == 5).await;
    assert_eq!(reader.state().state, ConnectionState::Connected);
    let (status, _) = fetch_text("POST", &format!("{PROXY}/__fault/503?ms=10000&retry_after=1")).await;
    assert_eq!(status, 200);
    // Written during the outage, one every 500 ms.
    for i in 5..25 {
        writer.append(&path, note(i)).await.unwrap();
        TimeoutFuture::new(500).await;
    }
    let disconnected = |s: &StateChange| s.state == ConnectionState::Disconnected && s.reason.contains("HTTP 503");
    assert!(
        states.borrow().iter().any(disconnected),
        "the outage shows as disconnected: {:?}",
        states
            .borrow()
            .iter()
            .map(|s| (s.state, s.reason.clone()))
            .collect::<Vec<_>>()
    );
    wait_until("caught up after the outage", 30_000, || log.borrow().len() == 25).await;
    // And live again.
    writer.append(&path, note(25)).await.unwrap();
    wait_until("live after the outage", 10_000, || log.borrow().len() == 26).await;
    let stored = stored_events(SERVER, &path).await;
    assert_eq!(events(&log), stored, "no gap, no duplicate");
    assert_eq!(reader.state().state, ConnectionState::Connected);
    // Retries were spaced (Retry-After: 1 s), not a loop.
    let retries = states
        .borrow()
        .iter()
        .filter(|s| s.state == ConnectionState::Disconnected)
        .count();
    assert!((1..=12).contains(&retries), "{retries} retries in ~10 s");
    assert!(
        states
            .borrow()
            .iter()
            .all(|s| s.retry_in_ms.is_none_or(|ms| ms >= 1_000)),
        "each retry waited at least the Retry-After"
    );
    reader.close();
    writer.close();
}

fn user_texts(session: &WebSession) -> Vec<String> {
    session
        .view()
        .items()
        .iter()
        .filter_map(|i| match i {
            ChatItem::User(u) => Some(u.text.clone()),
            ChatItem::Run(_) | ChatItem::Event(_) => None,
        })
        .collect()
}

/// A session id with non-ASCII characters and a `/` names one stream over
/// both transports: what a WebSocket page sends, an HTTP page sees, and the
/// other way round, and the server stores both under the one canonical URL
/// path (`protocol::path`). Before the fix the WebSocket sent the id raw
/// and HTTP percent-encoded it: two streams, two conversations.
#[wasm_bindgen_test]
async fn a_non_ascii_session_id_is_one_stream_over_both_transports() {
    let id = format!("café/ß-{}", random_id("ü"));
    let ws = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let http = WebClient::new(options(SERVER, Transport::Http)).unwrap();
    let over_ws = WebSession::open(&ws, &id, session_options());
    let over_http = WebSession::open(&http, &id, session_options());
    over_ws.send("sent over the socket", RunMode::Single).1.await.unwrap();
    over_http.send("sent over HTTP", RunMode::Single).1.await.unwrap();
    wait_until("both messages on both pages", 15_000, || {
        user_texts(&over_ws).len() == 2 && user_texts(&over_http).len() == 2
    })
    .await;
    assert_eq!(user_texts(&over_ws), user_texts(&over_http));
    let url_path = durable_sessions::protocol::path::encode(over_ws.path());
    assert!(url_path.starts_with("sessions/caf%C3%A9/%C3%9F-"), "{url_path}");
    let stored: Vec<String> = stored_events(SERVER, &url_path)
        .await
        .iter()
        .filter(|e| e["type"] == "user_message")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, user_texts(&over_ws));
    ws.close();
    http.close();
}

/// What one subscription saw: each message's JSON, resets and errors.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Message(String),
    Reset,
    Error(String),
}

type SeenLog = Rc<RefCell<Vec<Seen>>>;

fn subscribe_seen(
    client: &WebClient,
    path: &str,
    opts: SubscribeOptions,
) -> (SeenLog, durable_sessions::web::SubscriptionHandle) {
    let seen: SeenLog = Rc::default();
    let s = seen.clone();
    let handle = client.subscribe(path, opts, move |e| match e {
        SubscriptionEvent::Messages(ms) => {
            for m in ms {
                let Payload::Json(raw) = m.payload else { panic!("json") };
                s.borrow_mut().push(Seen::Message(raw));
            }
        }
        SubscriptionEvent::Reset { .. } => s.borrow_mut().push(Seen::Reset),
        SubscriptionEvent::Error(e) => s.borrow_mut().push(Seen::Error(e.code)),
        _ => {}
    });
    (seen, handle)
}

/// A stream deleted and created again under the same path is a new stream.
/// A subscription live at the delete is told with a `reset` (then, the
/// stream being missing, `not_found`); one resuming later from an offset of
/// the old stream gets a `reset` and then exactly the new stream's events —
/// never the old ones again, never a silent jump past the new ones. Before
/// the fix offsets carried no incarnation, and the resumed reader silently
/// skipped the new stream's first events.
async fn delete_and_recreate_resets(transport: Transport) {
    let path = format!("test/{}", random_id("recreate"));
    let url = format!("{SERVER}/v1/stream/{path}");
    let note = |i: u32| format!(r#"{{"type":"note","i":{i}}}"#);
    assert!(matches!(
        fetch_headers("PUT", &url, &[("content-type", "application/json")])
            .await
            .0,
        200 | 201
    ));
    let writer = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    for i in 0..4 {
        writer.append(&path, note(i)).await.unwrap();
    }
    let client = WebClient::new(options(SERVER, transport)).unwrap();
    let (live, live_sub) = subscribe_seen(&client, &path, SubscribeOptions::default());
    wait_until("the old stream read", 10_000, || live.borrow().len() == 4).await;
    let old_offset = live_sub.offset().expect("an offset");
    assert_eq!(fetch_text("DELETE", &url).await.0, 204);
    wait_until("the live subscription told", 10_000, || live.borrow().len() == 6).await;
    assert_eq!(live.borrow()[4..], [Seen::Reset, Seen::Error("not_found".into())]);

    // Created again, shorter than before: the old offset points past the
    // new stream's first events.
    assert!(matches!(
        fetch_headers("PUT", &url, &[("content-type", "application/json")])
            .await
            .0,
        200 | 201
    ));
    for i in 10..12 {
        writer.append(&path, note(i)).await.unwrap();
    }
    let opts = SubscribeOptions {
        start: StartFrom::Offset(old_offset).into(),
        ..Default::default()
    };
    let (resumed, _resumed) = subscribe_seen(&client, &path, opts);
    wait_until("the new stream read", 10_000, || resumed.borrow().len() == 3).await;
    writer.append(&path, note(12)).await.unwrap();
    wait_until("live on the new stream", 10_000, || resumed.borrow().len() == 4).await;
    let expected: Vec<Seen> = [Seen::Reset]
        .into_iter()
        .chain((10..13).map(|i| Seen::Message(note(i))))
        .collect();
    assert_eq!(*resumed.borrow(), expected);
    client.close();
    writer.close();
}

#[wasm_bindgen_test]
async fn websocket_delete_and_recreate_is_a_reset_never_a_mix() {
    delete_and_recreate_resets(Transport::WebSocket).await;
}

#[wasm_bindgen_test]
async fn http_delete_and_recreate_is_a_reset_never_a_mix() {
    delete_and_recreate_resets(Transport::Http).await;
}

/// Requests and WebSocket upgrades a fault proxy has passed on.
async fn forwarded(proxy: &str) -> u64 {
    let (status, body) = fetch_text("GET", &format!("{proxy}/__fault")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["forwarded"]
        .as_u64()
        .unwrap()
}

/// Two nodes of one cluster (two proxies in front of one server: one log,
/// the same offsets). A page connected to node A with node B as fallback;
/// mid-answer node A dies — every connection cut, new ones refused. The
/// client moves to node B by itself; its transcript equals the log, no gap,
/// no duplicate, and a message sent after the failover is delivered once.
async fn fails_over_to_the_next_node(transport: Transport) {
    let mut opts = options(PROXY, transport);
    opts.fallback_urls = vec![PROXY_B.into()];
    let client = WebClient::new(opts).unwrap();
    let (states, _s) = state_log(&client);
    let session = WebSession::open(&client, &random_id("failover"), session_options());
    let (log, _l) = record(&session);
    session.send("a long answer, please", RunMode::Single).1.await.unwrap();
    wait_until("the answer underway", 15_000, || {
        latest_run(&session).is_some_and(|(_, _, len)| len > 10)
    })
    .await;
    let on_b = forwarded(PROXY_B).await;
    let (status, _) = fetch_text("POST", &format!("{PROXY}/__fault/down?ms=60000")).await;
    assert_eq!(status, 200);
    wait_until("the answer finished", 30_000, || {
        latest_run(&session).is_some_and(|(_, state, _)| state != RunState::Streaming)
    })
    .await;
    assert!(forwarded(PROXY_B).await > on_b, "node B took over");
    assert!(
        states.borrow().iter().any(|s| s.state != ConnectionState::Connected),
        "the failover shows as a reconnect"
    );
    // Sent on node B, answered, delivered once.
    session.send("and another", RunMode::Single).1.await.unwrap();
    wait_until("the second answer", 30_000, || {
        user_texts(&session).len() == 2
            && latest_run(&session).is_some_and(|(_, state, _)| state != RunState::Streaming)
            && session.view().items().len() == 4
    })
    .await;
    let (status, _) = fetch_text("POST", &format!("{PROXY}/__fault/clear")).await;
    assert_eq!(status, 200);
    assert_eq!(
        events(&log),
        stored_events(SERVER, session.path()).await,
        "no gap, no duplicate"
    );
    assert_eq!(client.state().state, ConnectionState::Connected);
    client.close();
}

#[wasm_bindgen_test]
async fn websocket_fails_over_to_the_next_node_without_a_gap() {
    fails_over_to_the_next_node(Transport::WebSocket).await;
}

#[wasm_bindgen_test]
async fn http_fails_over_to_the_next_node_without_a_gap() {
    fails_over_to_the_next_node(Transport::Http).await;
}
