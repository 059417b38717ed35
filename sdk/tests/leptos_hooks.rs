//! The Leptos hooks in headless Chromium, against the servers started by
//! `scripts/test-wasm.sh` (ours with the demo agent, ours with access
//! control on): `use_session_with_options` follows a reactive id without
//! remounting, appends an app's own event type, takes a token function;
//! `use_stream_with_options` reads and appends a text stream and follows
//! its path; cleanup closes what the hook opened and nothing else.

#![cfg(all(target_arch = "wasm32", feature = "leptos"))]

use std::rc::Rc;

use durable_sessions::core::ClientError;
use durable_sessions::core::chat::{ChatItem, RunState};
use durable_sessions::core::state::ConnectionState;
use durable_sessions::leptos::{
    UseSessionOptions, UseStreamOptions, use_session_with_options, use_stream_with_options,
};
use durable_sessions::protocol::session::RunMode;
use durable_sessions::web::{TokenProvider, Transport, WebClient, random_id};
use leptos::prelude::*;
use leptos::reactive::owner::Owner;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod support;
use support::*;

/// Our server with `--auth jwt` and `--test-hooks`.
const AUTH_SERVER: &str = match option_env!("DS_AUTH_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:4439",
};

fn kinds(items: &[ChatItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            ChatItem::User(_) => "user".to_owned(),
            ChatItem::Run(_) => "run".to_owned(),
            ChatItem::Event(e) => e.event_type.clone(),
        })
        .collect()
}

/// Appends `json` to `path` from another client, as another tab would.
async fn append_elsewhere(path: &str, json: &str) {
    let other = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    other.append(path, json.to_owned()).await.unwrap();
    other.close();
}

#[wasm_bindgen_test]
async fn use_session_follows_a_reactive_id_and_carries_app_events() {
    let owner = Owner::new();
    let first = random_id("hook-a");
    let id = owner.with(|| RwSignal::new(first.clone()));
    let session = owner.with(|| {
        use_session_with_options(
            id,
            UseSessionOptions {
                url: SERVER.into(),
                persist: false,
                author: Some("leptos-hook".into()),
                ..UseSessionOptions::default()
            },
        )
    });
    wait_until("connected and caught up", 10_000, || {
        session.state.get_untracked() == ConnectionState::Connected && session.synced.get_untracked()
    })
    .await;
    session.send.run(("hello from a hook".into(), RunMode::Single));
    wait_until("the agent answering", 20_000, || {
        session.items.with_untracked(|items| {
            items
                .iter()
                .any(|i| matches!(i, ChatItem::Run(r) if r.state == RunState::Completed && !r.text.is_empty()))
        })
    })
    .await;
    session.append.run(r#"{"type":"app.vote","choice":2}"#.into());
    wait_until("the app's event", 10_000, || {
        session
            .items
            .with_untracked(|items| kinds(items).contains(&"app.vote".to_owned()))
    })
    .await;
    assert_eq!(session.items.with_untracked(|i| kinds(i)), ["user", "run", "app.vote"]);
    assert!(matches!(
        &session.items.get_untracked()[2],
        ChatItem::Event(e) if e.json == r#"{"type":"app.vote","choice":2}"#
    ));
    let first_offset = session.offset.get_untracked();

    // A new id: the hook switches sessions on the same connection, without
    // remounting; everything about the old session starts over.
    let second = random_id("hook-b");
    id.set(second.clone());
    assert!(
        session.items.get_untracked().is_empty(),
        "the old transcript is gone at once"
    );
    assert_eq!(session.received.get_untracked(), 0);
    assert!(!session.synced.get_untracked());
    wait_until("the second session caught up", 10_000, || {
        session.synced.get_untracked()
    })
    .await;
    assert_eq!(session.state.get_untracked(), ConnectionState::Connected);
    session.append.run(r#"{"type":"app.note","text":"second"}"#.into());
    wait_until("the note", 10_000, || session.items.with_untracked(|i| !i.is_empty())).await;
    // The old session no longer feeds the hook.
    append_elsewhere(&format!("sessions/{first}"), r#"{"type":"app.vote","choice":9}"#).await;
    append_elsewhere(&format!("sessions/{second}"), r#"{"type":"app.vote","choice":3}"#).await;
    wait_until("the second session's vote", 10_000, || {
        session.items.with_untracked(|i| i.len() == 2)
    })
    .await;
    assert_eq!(session.items.with_untracked(|i| kinds(i)), ["app.note", "app.vote"]);
    assert!(
        session
            .items
            .with_untracked(|i| matches!(&i[1], ChatItem::Event(e) if e.json.contains("\"choice\":3")))
    );
    assert_ne!(session.offset.get_untracked(), first_offset);
    let stored = stored_events(SERVER, &format!("sessions/{second}")).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    owner.cleanup();
}

#[wasm_bindgen_test]
async fn use_session_takes_a_token_function() {
    let owner = Owner::new();
    let id = random_id("hook-auth");
    let grant = format!("sessions/{id}:read,append,create");
    let token: TokenProvider = Rc::new(move || {
        let grant = grant.clone();
        Box::pin(async move {
            let url = format!(
                "{AUTH_SERVER}/v1/test/token?sub=ada&ttl_ms=60000&grant={}",
                String::from(js_sys::encode_uri_component(&grant))
            );
            match fetch_text("GET", &url).await {
                (200, t) => Ok(t.trim().to_owned()),
                (status, body) => Err(ClientError::new("token_failed", format!("HTTP {status}: {body}"))),
            }
        })
    });
    let session = owner.with(|| {
        use_session_with_options(
            id.as_str(),
            UseSessionOptions {
                url: AUTH_SERVER.into(),
                transport: Transport::Http,
                persist: false,
                author: Some("ada".into()),
                token: Some(token),
                ..UseSessionOptions::default()
            },
        )
    });
    wait_until("connected with a token", 10_000, || {
        session.state.get_untracked() == ConnectionState::Connected && session.synced.get_untracked()
    })
    .await;
    session.append.run(r#"{"type":"app.note","text":"signed"}"#.into());
    wait_until("the note", 10_000, || session.items.with_untracked(|i| i.len() == 1)).await;
    assert_eq!(session.error.get_untracked(), None);
    // A refused append shows in `error`: the token grants no `control`.
    session.cancel.run("run-1".into());
    wait_until("forbidden", 10_000, || {
        session.error.get_untracked().is_some_and(|e| e.code == "forbidden")
    })
    .await;
    owner.cleanup();
}

#[wasm_bindgen_test]
async fn use_stream_reads_and_appends_a_text_stream_and_follows_its_path() {
    let owner = Owner::new();
    let client = WebClient::new(options(SERVER, Transport::WebSocket)).unwrap();
    let first = format!("raw/{}", random_id("hook-log"));
    let path = owner.with(|| RwSignal::new(first.clone()));
    let stream = owner.with(|| {
        use_stream_with_options(
            path,
            UseStreamOptions {
                client: Some(client.clone()),
                content_type: Some("text/plain".into()),
                max_messages: 2,
                ..UseStreamOptions::default()
            },
        )
    });
    wait_until("caught up", 10_000, || stream.synced.get_untracked()).await;
    for line in ["one\n", "two\n", "three\n"] {
        stream.append.run(line.into());
    }
    wait_until("three messages", 10_000, || stream.received.get_untracked() == 3).await;
    let texts: Vec<String> = stream
        .messages
        .get_untracked()
        .iter()
        .map(|m| serde_json::from_str::<String>(&m.json).unwrap())
        .collect();
    assert_eq!(texts, ["two\n", "three\n"], "the latest max_messages");
    assert_eq!(
        stream.offset.get_untracked().as_deref(),
        stream
            .messages
            .with_untracked(|m| m.last().map(|e| e.offset.clone()))
            .as_deref()
    );
    let (status, body) = fetch_text("GET", &format!("{SERVER}/v1/stream/{first}?offset=-1")).await;
    assert_eq!((status, body.as_str()), (200, "one\ntwo\nthree\n"));

    // A new path: the stream is switched without remounting.
    let second = format!("raw/{}", random_id("hook-log"));
    path.set(second.clone());
    assert!(stream.messages.get_untracked().is_empty());
    wait_until("the second stream caught up", 10_000, || stream.synced.get_untracked()).await;
    stream.append.run("fresh\n".into());
    wait_until("its message", 10_000, || stream.received.get_untracked() == 1).await;
    let (_, body) = fetch_text("GET", &format!("{SERVER}/v1/stream/{second}?offset=-1")).await;
    assert_eq!(body, "fresh\n");

    // Cleanup closes the stream, not the shared client.
    owner.cleanup();
    assert_eq!(
        client.state().state,
        ConnectionState::Connected,
        "a shared client stays open"
    );
    client.close();
}
