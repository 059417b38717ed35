//! The browser SDK in headless Chromium, against real servers started by
//! `scripts/test-wasm.sh`: ours (WebSocket and HTTP, with the demo agent),
//! ours with access control on (JWT, 2 s grace after expiry, test hooks that
//! mint tokens and count WebSocket connections), and the upstream Node
//! reference server (HTTP).

#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use durable_sessions::core::ClientError;
use durable_sessions::core::chat::RunState;
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::core::state::ConnectionState;
use durable_sessions::core::subscription::StartFrom;
use durable_sessions::protocol::session::RunMode;
use durable_sessions::protocol::ws::Payload;
use durable_sessions::web::{SessionOptions, TokenProvider, Transport, WebClient, WebOptions, WebSession, random_id};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod support;
use support::*;

async fn fetch_with(method: &str, url: &str, bearer: Option<&str>) -> (u16, String) {
    match bearer {
        Some(token) => fetch_headers(method, url, &[("authorization", &format!("Bearer {token}"))]).await,
        None => fetch_text(method, url).await,
    }
}

/// Our server with `--auth jwt` and `--test-hooks`.
const AUTH_SERVER: &str = match option_env!("DS_AUTH_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4439",
};
/// The upstream Node reference server.
const NODE_SERVER: &str = match option_env!("DS_NODE_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4438",
};

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
    // The stream exists before the writer's first append (the reader's own
    // create would race it).
    let (status, _) = fetch_headers(
        "PUT",
        &format!("{base}/v1/stream/{path}"),
        &[("content-type", "application/json")],
    )
    .await;
    assert!(matches!(status, 200 | 201), "create: {status}");
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

// ---- Access control (the server started with --auth jwt) ----

/// A token minted by the auth server's test hook: `grants` as
/// `path:right,right`, valid for `ttl_ms`.
async fn mint(sub: &str, grants: &[String], ttl_ms: u64) -> Result<String, ClientError> {
    let mut url = format!("{AUTH_SERVER}/v1/test/token?sub={sub}&ttl_ms={ttl_ms}");
    for g in grants {
        url.push_str("&grant=");
        url.push_str(&String::from(js_sys::encode_uri_component(g)));
    }
    match fetch_text("GET", &url).await {
        (200, token) => Ok(token.trim().to_owned()),
        (status, body) => Err(ClientError::new("token_failed", format!("HTTP {status}: {body}"))),
    }
}

/// WebSocket connections the auth server accepted since it started.
async fn ws_connections() -> u64 {
    let (status, body) = fetch_text("GET", &format!("{AUTH_SERVER}/v1/test/stats")).await;
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    stats["ws_connections"].as_u64().unwrap()
}

/// A token function minting `ttl_ms` tokens for `sub` with `grants`, and the
/// number of times it was called. While `failing` is set it fails instead.
fn minting(sub: &str, grants: Vec<String>, ttl_ms: u64) -> (TokenProvider, Rc<Cell<u32>>, Rc<Cell<bool>>) {
    let calls = Rc::new(Cell::new(0));
    let failing = Rc::new(Cell::new(false));
    let (c, f, sub) = (calls.clone(), failing.clone(), sub.to_owned());
    let provider: TokenProvider = Rc::new(move || {
        c.set(c.get() + 1);
        let (fail, sub, grants) = (f.get(), sub.clone(), grants.clone());
        Box::pin(async move {
            if fail {
                return Err(ClientError::new("token_failed", "token backend down"));
            }
            mint(&sub, &grants, ttl_ms).await
        })
    });
    (provider, calls, failing)
}

fn auth_options(transport: Transport, token: TokenProvider) -> WebOptions {
    let mut o = options(AUTH_SERVER, transport);
    o.token = Some(token);
    o
}

/// An agent-like writer on the auth server: a long-lived token with the
/// `agent` right on `path`, the session created and subscribed to.
async fn writer_for(path: &str) -> (WebClient, durable_sessions::web::SubscriptionHandle) {
    let (token, _, _) = minting("writer", vec![format!("{path}:read,append,create,agent")], 120_000);
    let writer = WebClient::new(auth_options(Transport::WebSocket, token)).unwrap();
    let ready = Rc::new(Cell::new(false));
    let r = ready.clone();
    let sub = writer.subscribe(
        path,
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
        move |e| {
            if let SubscriptionEvent::UpToDate { .. } = e {
                r.set(true);
            }
        },
    );
    wait_until("the writer created the session", 10_000, || ready.get()).await;
    (writer, sub)
}

/// Streams one answer into `path`: `run_started`, `deltas` text deltas at
/// about 20 per second, `run_finished`.
async fn stream_answer(writer: &WebClient, path: &str, run_id: &str, deltas: usize) {
    let event = |json: String| writer.append(path, json);
    event(format!(
        r#"{{"type":"run_started","run_id":"{run_id}","agent":"writer","in_reply_to":"m1"}}"#
    ))
    .await
    .unwrap();
    for i in 0..deltas {
        event(format!(
            r#"{{"type":"text_delta","run_id":"{run_id}","agent":"writer","delta":"w{i} "}}"#
        ))
        .await
        .unwrap();
        TimeoutFuture::new(50).await;
    }
    event(format!(
        r#"{{"type":"run_finished","run_id":"{run_id}","status":"completed"}}"#
    ))
    .await
    .unwrap();
}

/// The reader got exactly what the server stored (read over HTTP with a
/// fresh token): no gap, no duplicate, offsets increasing — strictly over
/// WebSocket; over HTTP the messages of one response share the response's
/// `Stream-Next-Offset` (HTTP gives no per-message offsets).
async fn assert_same_as_stored(log: &Log, path: &str, transport: Transport) {
    let token = mint("auditor", &[format!("{path}:read")], 60_000).await.unwrap();
    let (status, body) = fetch_with(
        "GET",
        &format!("{AUTH_SERVER}/v1/stream/{path}?offset=-1"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let received: Vec<serde_json::Value> = log.borrow().iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(received.len(), stored.len(), "as many events as stored");
    assert_eq!(received, stored);
    let offsets: Vec<String> = log.borrow().iter().map(|(o, _)| o.clone()).collect();
    match transport {
        Transport::WebSocket => assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets strictly increase"),
        Transport::Http => assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets increase"),
    }
}

/// A reader holding 3-second tokens follows a ~10 s answer: the tokens are
/// refreshed on the live socket (no reconnect: the server's socket count
/// rises only by the two clients opened) and nothing is lost or repeated.
async fn a_long_answer_outlives_short_tokens(transport: Transport) {
    let id = random_id("auth");
    let path = format!("sessions/{id}");
    let before = ws_connections().await;
    let (writer, _writer_sub) = writer_for(&path).await;
    let (token, calls, _) = minting("ada", vec![format!("{path}:read,append,control")], 3_000);
    let reader = WebClient::new(auth_options(transport, token)).unwrap();
    let (states, _s) = state_log(&reader);
    let session = WebSession::open(
        &reader,
        &id,
        SessionOptions {
            author: "ada".into(),
            persist: false,
            ..SessionOptions::default()
        },
    );
    let (log, _l) = record(&session);
    let (_, sent) = session.send("a long answer, please", RunMode::Single);
    sent.await.unwrap();
    stream_answer(&writer, &path, "r1", 200).await;
    wait_until("the whole answer", 15_000, || log.borrow().len() == 203).await;
    assert_same_as_stored(&log, &path, transport).await;
    assert!(calls.get() >= 3, "the token was refreshed: {} calls", calls.get());
    let reconnects: Vec<String> = states
        .borrow()
        .iter()
        .filter(|c| c.state != ConnectionState::Connected)
        .map(|c| c.reason.clone())
        .collect();
    assert!(reconnects.is_empty(), "never disconnected: {reconnects:?}");
    if transport == Transport::WebSocket {
        assert_eq!(
            ws_connections().await - before,
            2,
            "one socket per client, no reconnect"
        );
    }
    reader.close();
    writer.close();
}

#[wasm_bindgen_test]
async fn websocket_tokens_are_refreshed_on_the_live_socket_without_a_gap() {
    a_long_answer_outlives_short_tokens(Transport::WebSocket).await;
}

#[wasm_bindgen_test]
async fn http_tokens_are_refreshed_between_requests_without_a_gap() {
    a_long_answer_outlives_short_tokens(Transport::Http).await;
}

/// A token for another session: the subscription ends with a typed
/// `forbidden` error, reported on the connection too, and is not retried.
async fn a_token_for_another_session_is_forbidden(transport: Transport) {
    let id = random_id("forbid");
    let before = ws_connections().await;
    let grants = vec![format!("sessions/{}:read,append,create", random_id("other"))];
    let (token, calls, _) = minting("ada", grants, 60_000);
    let client = WebClient::new(auth_options(transport, token)).unwrap();
    let (states, _s) = state_log(&client);
    let session = WebSession::open(
        &client,
        &id,
        SessionOptions {
            author: "ada".into(),
            persist: false,
            ..SessionOptions::default()
        },
    );
    let error: Rc<RefCell<Option<ClientError>>> = Rc::default();
    let e = error.clone();
    let _u = session.on_update(move |u| {
        if let Some(err) = &u.error {
            *e.borrow_mut() = Some(err.clone());
        }
    });
    wait_until("the subscription failed", 10_000, || error.borrow().is_some()).await;
    assert_eq!(error.borrow().as_ref().unwrap().code, "forbidden");
    let reported = states
        .borrow()
        .iter()
        .find_map(|c| c.error.clone())
        .expect("reported as a state change");
    assert_eq!(reported, ClientError::new("forbidden", format!("sessions/{id}")));
    // Nothing retries: watch for a second (a loop would ask for tokens and
    // reconnect many times in that time).
    TimeoutFuture::new(1_000).await;
    assert_eq!(calls.get(), 1, "one token for the whole test");
    assert_eq!(client.state().state, ConnectionState::Connected);
    if transport == Transport::WebSocket {
        assert_eq!(ws_connections().await - before, 1, "no reconnect");
    }
    // An append there is refused too, with the same typed error.
    let err = session.append(r#"{"type":"note"}"#.into()).await.unwrap_err();
    assert_eq!(err.code, "forbidden");
    client.close();
}

#[wasm_bindgen_test]
async fn websocket_a_token_for_another_session_ends_the_subscription_with_forbidden() {
    a_token_for_another_session_is_forbidden(Transport::WebSocket).await;
}

#[wasm_bindgen_test]
async fn http_a_token_for_another_session_ends_the_subscription_with_forbidden() {
    a_token_for_another_session_is_forbidden(Transport::Http).await;
}

/// The token function fails while the token runs out: the server closes the
/// socket (4003) after its grace period, the client keeps asking with
/// backoff and reports `token_failed`; once tokens come again it reconnects
/// and resumes with no gap and no duplicate.
#[wasm_bindgen_test]
async fn an_expired_token_and_a_failing_token_function_recover_without_a_gap() {
    let id = random_id("expire");
    let path = format!("sessions/{id}");
    let (writer, _writer_sub) = writer_for(&path).await;
    let (token, calls, failing) = minting("ada", vec![format!("{path}:read,append,control")], 2_000);
    let reader = WebClient::new(auth_options(Transport::WebSocket, token)).unwrap();
    let (states, _s) = state_log(&reader);
    let session = WebSession::open(
        &reader,
        &id,
        SessionOptions {
            author: "ada".into(),
            persist: false,
            ..SessionOptions::default()
        },
    );
    let (log, _l) = record(&session);
    wait_until("connected", 10_000, || {
        reader.state().state == ConnectionState::Connected
    })
    .await;
    failing.set(true);
    let written = Rc::new(Cell::new(false));
    let (w, p, done) = (writer.clone(), path.clone(), written.clone());
    wasm_bindgen_futures::spawn_local(async move {
        stream_answer(&w, &p, "r1", 120).await;
        done.set(true);
    });
    {
        wait_until("the server closed the expired connection", 15_000, || {
            states.borrow().iter().any(|c| c.reason.contains("token expired"))
        })
        .await;
        wait_until("token failures reported", 10_000, || {
            states
                .borrow()
                .iter()
                .filter(|c| c.error.as_ref().is_some_and(|e| e.code == "token_failed"))
                .count()
                >= 2
        })
        .await;
        assert_ne!(reader.state().state, ConnectionState::Connected);
        failing.set(false);
    }
    wait_until("the answer written", 20_000, || written.get()).await;
    wait_until("the whole answer", 20_000, || log.borrow().len() == 122).await;
    assert_same_as_stored(&log, &path, Transport::WebSocket).await;
    let asked = calls.get();
    assert!(
        (3..40).contains(&asked),
        "asked again with backoff, not in a loop: {asked}"
    );
    assert!(
        states.borrow().iter().all(|c| !c.reason.contains("eyJ")),
        "no token in a reason"
    );
    reader.close();
    writer.close();
}
