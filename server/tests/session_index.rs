//! A session and its `_index/sessions` entry are stored together or not at
//! all (docs/protocol.md §10): a storage failure between the two never
//! leaves a session that no agent will see. The failure is a real one, in
//! the real SQLite database: a trigger makes every write to the index fail.

mod common;

use common::TestServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, ServerMsg};
use durable_session_server::config::ServerConfig;
use reqwest::StatusCode;

const INDEX: &str = "_index/sessions";

/// Makes every write of an index entry fail inside the server's transaction
/// (until [`heal`]): SQLite aborts the statement, as a full disk or an I/O
/// error would.
fn break_index_writes(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER index_fault BEFORE INSERT ON chunks \
         WHEN NEW.stream_id = (SELECT id FROM streams WHERE path = '_index/sessions') \
         BEGIN SELECT RAISE(ABORT, 'injected fault: index write failed'); END;",
    )
    .unwrap();
}

fn heal(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    conn.execute_batch("DROP TRIGGER index_fault").unwrap();
}

/// The session ids listed in the index.
async fn indexed(s: &TestServer) -> Vec<String> {
    let res = s.client.get(s.url(&format!("{INDEX}?offset=-1"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let events: Vec<serde_json::Value> = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    events
        .iter()
        .map(|e| e["session_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn exists(s: &TestServer, path: &str) -> bool {
    let res = s.client.head(s.url(path)).send().await.unwrap();
    match res.status() {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("HEAD {path}: {other}"),
    }
}

async fn put_session(s: &TestServer, id: &str) -> StatusCode {
    let res = s
        .client
        .put(s.url(&format!("sessions/{id}")))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    res.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_created_with_its_index_entry_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("streams.sqlite3");
    let s = TestServer::start_in(dir.path(), ServerConfig::default()).await;
    // The server creates the index before it serves anything.
    assert!(exists(&s, INDEX).await);
    break_index_writes(&db);

    // HTTP: the create fails as a whole, with the storage's error.
    let status = put_session(&s, "http-one").await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the create cannot be recorded"
    );
    assert!(
        !exists(&s, "sessions/http-one").await,
        "no session without its index entry"
    );

    // WebSocket: the same.
    let mut ws = Client::connect(&s.base).await;
    ws.send(ClientMsg::Create {
        req: "c1".into(),
        path: "sessions/ws-one".into(),
        content_type: None,
    })
    .await;
    match ws.next().await {
        ServerMsg::Error { req, code, .. } => {
            assert_eq!(req.as_deref(), Some("c1"));
            assert_eq!(code, ErrorCode::Internal);
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert!(!exists(&s, "sessions/ws-one").await);
    // Other streams have no index entry and are not affected.
    assert_eq!(
        s.client
            .put(s.url("notes/one"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert!(indexed(&s).await.is_empty());

    // Once storage works again, both are created, each listed once.
    heal(&db);
    assert_eq!(put_session(&s, "http-one").await, StatusCode::CREATED);
    ws.send(ClientMsg::Create {
        req: "c2".into(),
        path: "sessions/ws-one".into(),
        content_type: None,
    })
    .await;
    assert!(matches!(ws.next().await, ServerMsg::Ack { req, duplicate: false, .. } if req == "c2"));
    // Confirming an existing session writes no second entry.
    assert_eq!(put_session(&s, "http-one").await, StatusCode::OK);
    assert_eq!(indexed(&s).await, ["http-one", "ws-one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_index_is_created_with_the_first_session() {
    let s = TestServer::start().await;
    let res = s.client.delete(s.url(INDEX)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(put_session(&s, "after-delete").await, StatusCode::CREATED);
    assert_eq!(indexed(&s).await, ["after-delete"]);
}
