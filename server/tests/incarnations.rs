//! Stream identity in offsets (protocol.md §2, §5.3, §6): a stream created
//! again at a deleted path is a new incarnation. Its offsets sort after every
//! offset of the old one, and resuming with an old offset — HTTP catch-up,
//! long-poll or SSE, or a WebSocket `subscribe` — is `410 Gone` / `gone`,
//! never the new stream's data. Over a real socket, and across restarts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ServerMsg};
use durable_session_server::config::ServerConfig;
use reqwest::StatusCode;

async fn put(s: &TestServer, path: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
    let mut req = s.client.put(s.url(path)).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body.to_owned()).send().await.unwrap()
}

async fn create(s: &TestServer, path: &str) {
    assert_eq!(put(s, path, &[], "[]").await.status(), StatusCode::CREATED);
}

async fn delete(s: &TestServer, path: &str) {
    let res = s.client.delete(s.url(path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

fn next_offset(res: &reqwest::Response) -> String {
    res.headers()["stream-next-offset"].to_str().unwrap().to_owned()
}

async fn get(s: &TestServer, path: &str, query: &str) -> reqwest::Response {
    s.client.get(format!("{}?{query}", s.url(path))).send().await.unwrap()
}

/// A catch-up read: status, body, `Stream-Next-Offset`.
async fn read(s: &TestServer, path: &str, offset: &str) -> (StatusCode, String, Option<String>) {
    let res = get(s, path, &format!("offset={offset}")).await;
    let status = res.status();
    let next = res
        .headers()
        .get("stream-next-offset")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, res.text().await.unwrap(), next)
}

/// A stream at `path` with `old` messages; then deleted, created again and
/// given `new` messages. Returns the offsets the old one issued (after each
/// message) and those the new one issued.
async fn recreate(s: &TestServer, path: &str, old: usize, new: usize) -> (Vec<String>, Vec<String>) {
    create(s, path).await;
    let mut old_offsets = Vec::new();
    for i in 1..=old {
        old_offsets.push(s.append_json(path, &format!(r#"{{"old":{i}}}"#)).await);
    }
    delete(s, path).await;
    create(s, path).await;
    let mut new_offsets = Vec::new();
    for i in 1..=new {
        new_offsets.push(s.append_json(path, &format!(r#"{{"new":{i}}}"#)).await);
    }
    (old_offsets, new_offsets)
}

/// Every offset of the new incarnation differs from, and sorts after, every
/// offset of the old one.
fn assert_apart(old: &[String], new: &[String]) {
    for n in new {
        for o in old {
            assert!(n > o, "new offset {n} sorts after old offset {o}");
        }
    }
}

#[tokio::test]
async fn http_reads_from_an_old_incarnation_are_gone() {
    let s = TestServer::start().await;
    // The new incarnation is longer than the old one: without incarnations an
    // old offset is a valid position in it, and reads the new data.
    let (old, new) = recreate(&s, "sessions/r", 3, 5).await;
    assert_apart(&old, &new);

    for offset in &old {
        let (status, body, _) = read(&s, "sessions/r", offset).await;
        assert_eq!(status, StatusCode::GONE, "catch-up from {offset}: {body}");
        assert!(!body.contains("new"), "no data of the new stream: {body}");
        let res = get(&s, "sessions/r", &format!("offset={offset}&live=long-poll")).await;
        assert_eq!(res.status(), StatusCode::GONE, "long-poll from {offset}");
        let res = get(&s, "sessions/r", &format!("offset={offset}&live=sse")).await;
        assert_eq!(res.status(), StatusCode::GONE, "SSE from {offset}");
        assert!(!res.text().await.unwrap().contains("new"));
    }

    // -1 reads the new incarnation only; its offsets are the new ones.
    let (status, body, next) = read(&s, "sessions/r", "-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"[{"new":1},{"new":2},{"new":3},{"new":4},{"new":5}]"#);
    assert_eq!(next.as_ref(), new.last());
    // New offsets read as ever; past the tail of this incarnation is still 400.
    let (status, body, _) = read(&s, "sessions/r", &new[2]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"new":4},{"new":5}]"#));
    let (incarnation, _) = new[4].split_once('_').unwrap();
    let beyond = format!("{incarnation}_0000000000000099");
    assert_eq!(read(&s, "sessions/r", &beyond).await.0, StatusCode::BAD_REQUEST);
    // `now` and the all-zero offset (the beginning, for every stream) as ever.
    let (status, body, next) = read(&s, "sessions/r", "now").await;
    assert_eq!(
        (status, body.as_str(), next.as_ref()),
        (StatusCode::OK, "[]", new.last())
    );
    let (status, body, _) = read(&s, "sessions/r", "0000000000000000_0000000000000000").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(r#"[{"new":1}"#));
}

#[tokio::test]
async fn ws_subscribe_from_an_old_incarnation_is_gone() {
    let s = TestServer::start().await;
    let (old, new) = recreate(&s, "sessions/w", 2, 4).await;
    let mut c = Client::connect(&s.base).await;
    for (i, offset) in old.iter().enumerate() {
        let sub = format!("old{i}");
        c.send(subscribe(&sub, "sessions/w", offset)).await;
        match c.next().await {
            ServerMsg::Error { sub: Some(s), code, .. } => {
                assert_eq!((s.as_str(), code), (sub.as_str(), ErrorCode::Gone));
            }
            other => panic!("expected gone for {sub}, got {other:?}"),
        }
    }
    // -1: the new incarnation's messages, with its offsets.
    c.send(subscribe("fresh", "sessions/w", "-1")).await;
    let messages = collect(&mut c, "fresh", 4).await;
    assert_eq!(
        json_of(&messages),
        [r#"{"new":1}"#, r#"{"new":2}"#, r#"{"new":3}"#, r#"{"new":4}"#]
    );
    let offsets: Vec<String> = messages.iter().map(|m| m.offset.clone()).collect();
    assert_eq!(offsets, new);
    assert_apart(&old, &offsets);
}

#[tokio::test]
async fn a_live_reader_never_reads_on_into_the_next_incarnation() {
    let s = TestServer::start_with(ServerConfig {
        long_poll_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    })
    .await;
    create(&s, "sessions/l").await;
    let tail = s.append_json("sessions/l", r#"{"old":1}"#).await;
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("live", "sessions/l", "-1")).await;
    assert_eq!(json_of(&collect(&mut c, "live", 1).await), [r#"{"old":1}"#]);
    let poll = {
        let (client, url) = (
            s.client.clone(),
            format!("{}?offset={tail}&live=long-poll", s.url("sessions/l")),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    delete(&s, "sessions/l").await;
    create(&s, "sessions/l").await;
    s.append_json("sessions/l", r#"{"new":1}"#).await;
    s.append_json("sessions/l", r#"{"new":2}"#).await;

    // Woken by the delete, they read either before the stream was created
    // again (`not_found`) or after (`gone`); never its data.
    match c.next().await {
        ServerMsg::Error {
            sub: Some(sub), code, ..
        } => {
            assert_eq!(sub, "live");
            assert!(matches!(code, ErrorCode::Gone | ErrorCode::NotFound), "{code:?}");
        }
        other => panic!("expected the subscription to end, got {other:?}"),
    }
    let res = poll.await.unwrap();
    assert!(
        matches!(res.status(), StatusCode::GONE | StatusCode::NOT_FOUND),
        "{}",
        res.status()
    );
    // Resuming from where they were is `gone`.
    c.send(subscribe("again", "sessions/l", &tail)).await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::Gone,
            ..
        }
    ));
    assert_eq!(
        get(&s, "sessions/l", &format!("offset={tail}&live=long-poll"))
            .await
            .status(),
        StatusCode::GONE
    );
}

#[tokio::test]
async fn incarnations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ServerConfig {
        long_poll_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    // First run: a stream, deleted; another one kept.
    let s = TestServer::start_in(dir.path(), config()).await;
    create(&s, "sessions/a").await;
    let mut old = Vec::new();
    for i in 1..=3 {
        old.push(s.append_json("sessions/a", &format!(r#"{{"old":{i}}}"#)).await);
    }
    delete(&s, "sessions/a").await;
    create(&s, "sessions/kept").await;
    let kept = s.append_json("sessions/kept", r#"{"k":1}"#).await;
    stop(s).await;

    // Second run: the path is created again; its incarnation is new although
    // the old stream's row is gone and the server restarted.
    let s = TestServer::start_in(dir.path(), config()).await;
    create(&s, "sessions/a").await;
    let mut new = Vec::new();
    for i in 1..=5 {
        new.push(s.append_json("sessions/a", &format!(r#"{{"new":{i}}}"#)).await);
    }
    assert_apart(&old, &new);
    assert_eq!(read(&s, "sessions/a", &old[0]).await.0, StatusCode::GONE);
    // The kept stream's offsets still read.
    let (status, body, _) = read(&s, "sessions/kept", "-1").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"k":1}]"#));
    assert_eq!(read(&s, "sessions/kept", &kept).await.0, StatusCode::OK);
    stop(s).await;

    // Third run: the offsets of every incarnation mean what they meant.
    let s = TestServer::start_in(dir.path(), config()).await;
    assert_eq!(read(&s, "sessions/a", &old[2]).await.0, StatusCode::GONE);
    let (status, body, _) = read(&s, "sessions/a", &new[3]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"new":5}]"#));
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("s", "sessions/a", &old[1])).await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::Gone,
            ..
        }
    ));
}

#[tokio::test]
async fn a_fork_created_again_is_a_new_incarnation_and_shares_its_source_offsets() {
    let s = TestServer::start().await;
    create(&s, "src").await;
    let mut src = Vec::new();
    for i in 1..=3 {
        src.push(s.append_json("src", &format!(r#"{{"s":{i}}}"#)).await);
    }
    let fork_from = [("stream-forked-from", "/v1/stream/src")];
    let res = put(&s, "fork", &fork_from, "").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(next_offset(&res), src[2], "a fork starts at its source's offset");
    let mut fork = Vec::new();
    for i in 1..=2 {
        fork.push(s.append_json("fork", &format!(r#"{{"f":{i}}}"#)).await);
    }
    assert_apart(&src, &fork);
    // Inherited data keeps the source's offsets, over HTTP and WebSocket.
    let (status, body, _) = read(&s, "fork", &src[0]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"[{"s":2},{"s":3},{"f":1},{"f":2}]"#)
    );
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("f", "fork", "-1")).await;
    let offsets: Vec<String> = collect(&mut c, "f", 5).await.into_iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [&src[..], &fork[..]].concat());
    c.send(ClientMsg::Unsubscribe { sub: "f".into() }).await;
    assert!(matches!(c.next().await, ServerMsg::Unsubscribed { .. }));

    // The fork is deleted, the source grows, and the fork is made again at
    // the source's new tail: the old fork's positions 4 and 5 are now the
    // source's data. The old fork's offsets are gone; the shared ones hold.
    delete(&s, "fork").await;
    src.push(s.append_json("src", r#"{"s":4}"#).await);
    src.push(s.append_json("src", r#"{"s":5}"#).await);
    assert_eq!(put(&s, "fork", &fork_from, "").await.status(), StatusCode::CREATED);
    for (i, offset) in fork.iter().enumerate() {
        assert_eq!(read(&s, "fork", offset).await.0, StatusCode::GONE, "{offset}");
        c.send(subscribe(&format!("old{i}"), "fork", offset)).await;
        assert!(matches!(
            c.next().await,
            ServerMsg::Error {
                code: ErrorCode::Gone,
                ..
            }
        ));
    }
    let (status, body, next) = read(&s, "fork", &src[2]).await;
    assert_eq!(
        (status, body.as_str(), next.as_ref()),
        (StatusCode::OK, r#"[{"s":4},{"s":5}]"#, src.last())
    );
    // The source's offsets past a fork point are not the fork's.
    let res = put(&s, "early", &[fork_from[0], ("stream-fork-offset", &src[1])], "").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(read(&s, "early", &src[3]).await.0, StatusCode::GONE);
    let (status, body, _) = read(&s, "early", &src[0]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"s":2}]"#));

    // A fork of an empty stream shares its first offset too.
    create(&s, "empty").await;
    let start = next_offset(&s.client.head(s.url("empty")).send().await.unwrap());
    let res = put(&s, "of-empty", &[("stream-forked-from", "/v1/stream/empty")], "").await;
    assert_eq!((res.status(), next_offset(&res)), (StatusCode::CREATED, start.clone()));
    let own = s.append_json("of-empty", r#"{"e":1}"#).await;
    assert!(own > start);
    let (status, body, next) = read(&s, "of-empty", &start).await;
    assert_eq!(
        (status, body.as_str(), next),
        (StatusCode::OK, r#"[{"e":1}]"#, Some(own))
    );
}

/// A database written before incarnations existed: its streams are
/// incarnation 0 and their offsets read as before.
#[tokio::test]
async fn streams_from_before_incarnations_keep_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy_database(dir.path());
    let s = TestServer::start_in(dir.path(), ServerConfig::default()).await;
    let zero = |p: u64| format!("0000000000000000_{p:016}");

    let (status, body, next) = read(&s, "legacy", "-1").await;
    assert_eq!(
        (status, body.as_str(), next),
        (StatusCode::OK, r#"[{"n":1},{"n":2},{"n":3}]"#, Some(zero(3)))
    );
    let (status, body, _) = read(&s, "legacy", &zero(1)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"n":2},{"n":3}]"#));
    assert_eq!(read(&s, "legacy", &zero(9)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.append_json("legacy", r#"{"n":4}"#).await, zero(4));
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("l", "legacy", &zero(2))).await;
    let offsets: Vec<String> = collect(&mut c, "l", 2).await.into_iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [zero(3), zero(4)]);

    // An old fork reads as before; a new fork of an old stream shares its
    // offsets, then continues in its own incarnation.
    let (status, body, next) = read(&s, "legacy-fork", "-1").await;
    assert_eq!(
        (status, body.as_str(), next),
        (StatusCode::OK, r#"[{"n":1},{"n":2},{"f":3}]"#, Some(zero(3)))
    );
    let res = put(
        &s,
        "new-fork",
        &[
            ("stream-forked-from", "/v1/stream/legacy"),
            ("stream-fork-offset", &zero(2)),
        ],
        "",
    )
    .await;
    assert_eq!((res.status(), next_offset(&res)), (StatusCode::CREATED, zero(2)));
    let own = s.append_json("new-fork", r#"{"g":3}"#).await;
    assert!(own > zero(9) && !own.starts_with("0000000000000000_"), "{own}");
    let (status, body, _) = read(&s, "new-fork", &zero(1)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"n":2},{"g":3}]"#));

    // Deleted (with its forks) and created again: a new incarnation.
    delete(&s, "legacy-fork").await;
    delete(&s, "new-fork").await;
    delete(&s, "legacy").await;
    create(&s, "legacy").await;
    let new = s.append_json("legacy", r#"{"new":1}"#).await;
    assert_apart(&[zero(1), zero(4)], std::slice::from_ref(&new));
    for p in [1, 2, 4] {
        assert_eq!(read(&s, "legacy", &zero(p)).await.0, StatusCode::GONE, "{}", zero(p));
    }
    let (status, body, _) = read(&s, "legacy", "-1").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"[{"new":1}]"#));
}

/// The schema and rows an earlier version of the server wrote: a JSON stream
/// `legacy` with three messages and a fork `legacy-fork` of it at 2 with one
/// message of its own.
fn write_legacy_database(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("streams.sqlite3")).unwrap();
    conn.execute_batch(
        r#"
        CREATE TABLE streams (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT UNIQUE,
            content_type TEXT NOT NULL,
            ttl_seconds INTEGER,
            expires_at_ms INTEGER,
            touched_ms INTEGER NOT NULL,
            closed INTEGER NOT NULL DEFAULT 0,
            closed_by_id TEXT,
            closed_by_epoch INTEGER,
            closed_by_seq INTEGER,
            tail INTEGER NOT NULL,
            last_stream_seq TEXT,
            fork_source INTEGER,
            fork_source_path TEXT,
            fork_offset INTEGER,
            fork_req_offset INTEGER,
            fork_sub INTEGER NOT NULL DEFAULT 0,
            deleted INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX streams_fork_source ON streams(fork_source);
        CREATE TABLE chunks (
            stream_id INTEGER NOT NULL,
            start_pos INTEGER NOT NULL,
            end_pos INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (stream_id, end_pos)
        ) WITHOUT ROWID;
        CREATE TABLE producers (
            stream_id INTEGER NOT NULL,
            producer_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (stream_id, producer_id)
        ) WITHOUT ROWID;
        INSERT INTO streams (id, path, content_type, touched_ms, tail)
            VALUES (1, 'legacy', 'application/json', 0, 3);
        INSERT INTO streams (id, path, content_type, touched_ms, tail, fork_source,
                             fork_source_path, fork_offset, fork_req_offset)
            VALUES (2, 'legacy-fork', 'application/json', 0, 3, 1, 'legacy', 2, 2);
        INSERT INTO chunks VALUES (1, 0, 1, CAST('{"n":1}' AS BLOB));
        INSERT INTO chunks VALUES (1, 1, 2, CAST('{"n":2}' AS BLOB));
        INSERT INTO chunks VALUES (1, 2, 3, CAST('{"n":3}' AS BLOB));
        INSERT INTO chunks VALUES (2, 2, 3, CAST('{"f":3}' AS BLOB));
        "#,
    )
    .unwrap();
}

/// Stops a server and lets its storage close.
async fn stop(s: TestServer) {
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn subscribe(sub: &str, path: &str, offset: &str) -> ClientMsg {
    ClientMsg::Subscribe {
        sub: sub.into(),
        path: path.into(),
        offset: offset.into(),
    }
}

fn json_of(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match &m.payload {
            Payload::Json(v) => v.clone(),
            other => panic!("expected JSON, got {other:?}"),
        })
        .collect()
}

/// Collects events of `sub` until `count` messages arrived.
async fn collect(c: &mut Client, sub: &str, count: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < count {
        match c.next().await {
            ServerMsg::Events { sub: s, messages, .. } if s == sub => out.extend(messages),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    out
}
