//! Two server nodes on one Redis (a real redis-server): whatever is written
//! through node A reads the same through node B — catch-up, long-poll, SSE
//! and WebSocket, with identical offsets — and a live reader on B wakes on
//! an append to A. Measures the cross-node wake-up.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::redis::RedisServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, Payload, ServerMsg};
use durable_session_server::storage::redis::RedisOptions;
use reqwest::StatusCode;

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()[name].to_str().unwrap().to_owned()
}

/// A GET through `s`: status, `Stream-Next-Offset`, body.
async fn get(s: &TestServer, path: &str, query: &str) -> (StatusCode, String, String) {
    let res = s.client.get(format!("{}?{query}", s.url(path))).send().await.unwrap();
    let status = res.status();
    let next = res
        .headers()
        .get("stream-next-offset")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, next, res.text().await.unwrap())
}

/// An SSE response read as it arrives.
struct Sse {
    res: reqwest::Response,
    text: String,
}

impl Sse {
    async fn open(s: &TestServer, path: &str, offset: &str) -> Self {
        let res = s
            .client
            .get(format!("{}?offset={offset}&live=sse", s.url(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        Self {
            res,
            text: String::new(),
        }
    }

    /// Reads until the text so far contains `needle` (10 s at most).
    async fn until(&mut self, needle: &str) {
        while !self.text.contains(needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("{needle:?} within 10 s; got {:?}", self.text))
                .unwrap()
                .expect("the SSE response goes on");
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

fn json_and_offsets(messages: &[durable_session_protocol::ws::Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| match &m.payload {
            Payload::Json(v) => (v.clone(), m.offset.clone()),
            other => panic!("expected JSON, got {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_on_a_reads_the_same_on_b() {
    let redis = RedisServer::start();
    let a = TestServer::start_on_redis(&redis.url()).await;
    let b = TestServer::start_on_redis(&redis.url()).await;
    a.create_json("sessions/x", r#"[{"n":0}]"#).await;
    let mut offsets = vec![get(&a, "sessions/x", "offset=now").await.1];
    for n in 1..=4 {
        offsets.push(a.append_json("sessions/x", &format!(r#"{{"n":{n}}}"#)).await);
    }

    // Catch-up from the start and from every offset: the same answer on
    // both nodes.
    for offset in std::iter::once("-1").chain(offsets.iter().map(String::as_str)) {
        let query = format!("offset={offset}");
        let on_a = get(&a, "sessions/x", &query).await;
        let on_b = get(&b, "sessions/x", &query).await;
        assert_eq!(on_a, on_b, "catch-up from {offset}");
        assert_eq!(on_b.1, offsets[4]);
    }
    let (_, _, all) = get(&b, "sessions/x", "offset=-1").await;
    assert_eq!(all, r#"[{"n":0},{"n":1},{"n":2},{"n":3},{"n":4}]"#);
    let counted = |s: &TestServer| {
        let text = s.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix("durable_session_appends_total "))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    assert_eq!(
        (counted(&a), counted(&b)),
        (Some(4.0), Some(0.0)),
        "/metrics counts each node's appends"
    );

    // Long-poll from an offset with data after it answers at once.
    let (status, next, body) = get(&b, "sessions/x", &format!("offset={}&live=long-poll", offsets[2])).await;
    assert_eq!(
        (status, next.as_str(), body.as_str()),
        (StatusCode::OK, offsets[4].as_str(), r#"[{"n":3},{"n":4}]"#)
    );

    // SSE: the data, then where it ends.
    let mut sse = Sse::open(&b, "sessions/x", &offsets[1]).await;
    sse.until(&format!(r#""streamNextOffset":"{}""#, offsets[4])).await;
    assert!(sse.text.contains(r#"[{"n":2},{"n":3},{"n":4}]"#), "{}", sse.text);

    // WebSocket: every message with the offset A issued for it.
    let mut ws = Client::connect(&b.base).await;
    ws.send(ClientMsg::Subscribe {
        sub: "s".into(),
        path: "sessions/x".into(),
        offset: "-1".into(),
    })
    .await;
    let mut got = Vec::new();
    while got.len() < 5 {
        if let ServerMsg::Events { messages, .. } = ws.next().await {
            got.extend(json_and_offsets(&messages));
        }
    }
    let expected: Vec<(String, String)> = (0..=4)
        .map(|n| (format!(r#"{{"n":{n}}}"#), offsets[n].clone()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reader_on_b_wakes_on_an_append_to_a() {
    let redis = RedisServer::start();
    let a = TestServer::start_on_redis(&redis.url()).await;
    let b = TestServer::start_on_redis(&redis.url()).await;
    a.create_json("sessions/live", "[]").await;

    // Both live readers on B are waiting (each has said it is up to date)
    // before anything is appended.
    let mut sse = Sse::open(&b, "sessions/live", "-1").await;
    sse.until(r#""upToDate":true"#).await;
    let mut ws = Client::connect(&b.base).await;
    ws.send(ClientMsg::Subscribe {
        sub: "s".into(),
        path: "sessions/live".into(),
        offset: "-1".into(),
    })
    .await;
    loop {
        if let ServerMsg::Events { up_to_date: true, .. } = ws.next().await {
            break;
        }
    }

    // Each append on A reaches both readers on B; the time from sending it
    // to A to the frame on B is the cross-node latency.
    const APPENDS: usize = 50;
    let mut sse_ms = Vec::new();
    let mut ws_ms = Vec::new();
    for n in 0..APPENDS {
        let body = format!(r#"{{"n":{n}}}"#);
        let sent = Instant::now();
        let offset = a.append_json("sessions/live", &body).await;
        let ws_wait = async {
            loop {
                if let ServerMsg::Events { messages, .. } = ws.next().await
                    && !messages.is_empty()
                {
                    let got = json_and_offsets(&messages);
                    assert_eq!(got, [(body.clone(), offset.clone())]);
                    return sent.elapsed();
                }
            }
        };
        let sse_wait = async {
            sse.until(&format!(r#""streamNextOffset":"{offset}""#)).await;
            sent.elapsed()
        };
        let (w, s) = tokio::join!(ws_wait, sse_wait);
        ws_ms.push(w.as_secs_f64() * 1e3);
        sse_ms.push(s.as_secs_f64() * 1e3);
    }
    assert!(sse.text.contains(r#"[{"n":49}]"#));

    // A long-poll on B from the tail answers with the next append on A.
    let tail = get(&b, "sessions/live", "offset=now").await.1;
    let long_poll = {
        let url = format!("{}?offset={tail}&live=long-poll", b.url("sessions/live"));
        let client = b.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    let next = a.append_json("sessions/live", r#"{"n":"last"}"#).await;
    let res = long_poll.await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "stream-next-offset"), next);
    assert_eq!(res.text().await.unwrap(), r#"[{"n":"last"}]"#);

    for (name, ms) in [("SSE", &mut sse_ms), ("WebSocket", &mut ws_ms)] {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "cross-node latency, append sent to A → {name} frame on B ({APPENDS} appends): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        assert!(at(0.5) < 1_000.0, "{name} wakes promptly");
    }
}

/// Writers on both nodes append to one stream at once: the nodes' optimistic
/// transactions conflict and run again, and every append is stored exactly
/// once, at the offset it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_both_nodes_are_each_stored_once() {
    const WRITERS_PER_NODE: usize = 4;
    const APPENDS: usize = 50;
    let redis = RedisServer::start();
    let a = TestServer::start_on_redis(&redis.url()).await;
    let b = TestServer::start_on_redis(&redis.url()).await;
    a.create_json("shared", "[]").await;
    let mut tasks = Vec::new();
    for (node, server) in [&a, &b].into_iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let (client, url) = (server.client.clone(), server.url("shared"));
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..APPENDS {
                    let body = format!(r#"{{"node":{node},"w":{w},"i":{i}}}"#);
                    let res = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("producer-id", format!("n{node}w{w}"))
                        .header("producer-epoch", "0")
                        .header("producer-seq", i.to_string())
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert!(res.status().is_success(), "append: {}", res.status());
                    acked.push((header(&res, "stream-next-offset"), body));
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let (_, tail, body) = get(&b, "shared", "offset=-1").await;
    let stored: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(stored.len(), 2 * WRITERS_PER_NODE * APPENDS, "each append once");
    let mut offsets: Vec<&String> = acked.iter().map(|(o, _)| o).collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), acked.len(), "no two appends share an offset");
    assert_eq!(offsets.last(), Some(&&tail));
    for (offset, body) in &acked {
        let position: usize = offset.split_once('_').unwrap().1.parse().unwrap();
        let expected: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(stored[position - 1], expected, "the message acknowledged at {offset}");
    }
}

/// With `--redis-wait-replicas 1` an append is acknowledged only once the
/// replica has it; with the replica gone, appends fail (500) after the wait
/// timeout instead of being acknowledged unreplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_a_replica_when_asked() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let client = redis::Client::open(replica.url()).unwrap();
    let mut on_replica = client.get_multiplexed_async_connection().await.unwrap();
    let linked = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut on_replica)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < linked, "the replica links up within 10 s: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let options = RedisOptions {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..RedisOptions::new(primary.url())
    };
    let node = TestServer::start_on_redis_with(options).await;
    node.create_json("replicated", "[]").await;
    for n in 1..=3 {
        node.append_json("replicated", &format!("{n}")).await;
        // Acknowledged means the replica has it already.
        let stored: Option<String> = redis::cmd("GET")
            .arg("ds:path:replicated")
            .query_async(&mut on_replica)
            .await
            .unwrap();
        let id = stored
            .expect("the stream is on the replica")
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        let len: usize = redis::cmd("XLEN")
            .arg(format!("ds:data:{id}"))
            .query_async(&mut on_replica)
            .await
            .unwrap();
        assert_eq!(len, n, "append {n} is on the replica when acknowledged");
    }
    replica.kill();
    let started = Instant::now();
    let res = node
        .client
        .post(node.url("replicated"))
        .header("content-type", "application/json")
        .body("4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "not replicated: not acknowledged"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "after the wait timeout"
    );
}
