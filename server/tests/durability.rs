//! `kill -9` right after acknowledgements loses nothing: every append that got
//! a 2xx is read back, at its acknowledged offset, after a restart on the same
//! data directory — of the server on SQLite, or of redis-server under a server
//! on Redis. Runs the real binaries.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::Running;
use common::redis::RedisServer;
use reqwest::StatusCode;

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 200;

fn start(data_dir: &Path, extra: &[&str]) -> Running {
    Running::start(data_dir, extra)
}

/// Appends to the JSON stream at `url` from concurrent writers, each an
/// idempotent producer, and calls `kill` as soon as a good share is
/// acknowledged; the writers stop at their first failure. Returns what was
/// acknowledged: `(Stream-Next-Offset, body)`.
async fn write_and_kill(client: &reqwest::Client, url: &str, kill: impl FnOnce()) -> Vec<(String, String)> {
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, url, acked) = (client.clone(), url.to_owned(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..APPENDS_PER_WRITER {
                if Instant::now() > deadline {
                    break;
                }
                let body = format!(r#"{{"writer":{w},"i":{i}}}"#);
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("producer-id", format!("writer-{w}"))
                    .header("producer-epoch", "0")
                    .header("producer-seq", i.to_string())
                    .body(body.clone())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        let offset = r.headers()["stream-next-offset"].to_str().unwrap().to_owned();
                        acked.lock().unwrap().push((offset, body));
                    }
                    _ => break, // the server (or its store) is gone
                }
            }
        }));
    }
    // Kill mid-stream, as soon as a good share is acknowledged.
    while acked.lock().unwrap().len() < WRITERS * APPENDS_PER_WRITER / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    acked
}

/// Every acknowledged message is stored at its acknowledged offset, and the
/// producers' state survived (a replay is a duplicate).
async fn assert_nothing_lost(client: &reqwest::Client, url: &str, acked: &[(String, String)], what: &str) {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let stored: Vec<serde_json::Value> = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    // Each message's end offset is the stream's incarnation, then its 1-based
    // position in a JSON stream.
    for (offset, body) in acked {
        let (_, pos) = offset.split_once('_').unwrap();
        let pos: usize = pos.parse().unwrap();
        let expected: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            stored.get(pos - 1),
            Some(&expected),
            "acked message at {offset} survives"
        );
    }
    println!(
        "{what}: {} acknowledged appends before the kill, {} messages after restart, none lost",
        acked.len(),
        stored.len()
    );
    // Producer state survived too: replaying writer 0's first append is a duplicate.
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("producer-id", "writer-0")
        .header("producer-epoch", "0")
        .header("producer-seq", "0")
        .body(r#"{"writer":0,"i":0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "duplicate after restart is not stored twice"
    );
}

async fn create_json(client: &reqwest::Client, url: &str) {
    let res = client
        .put(url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/stream/durable", server.base);
    create_json(&client, &url).await;
    let acked = write_and_kill(&client, &url, || {
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
    })
    .await;
    let server = start(dir.path(), &[]);
    let url = format!("{}/v1/stream/durable", server.base);
    assert_nothing_lost(&client, &url, &acked, "kill -9 durability (SQLite)").await;
}

/// The same with the Redis store: redis-server (appendonly yes, appendfsync
/// always) is killed with SIGKILL and started again on the same dir; the
/// server node stays up throughout and carries on once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_redis_after_ack_loses_nothing() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--store", &redis.url()]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/stream/durable", server.base);
    create_json(&client, &url).await;
    let acked = write_and_kill(&client, &url, || redis.kill()).await;
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "while Redis is down");
    redis.restart();
    assert_nothing_lost(&client, &url, &acked, "kill -9 durability (Redis)").await;
}
