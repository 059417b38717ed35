//! The HTTP API over a real socket: round trips, live reads, and bad input
//! that must get a clear 4xx and leave stored data untouched.

mod common;

use std::time::Duration;

use common::TestServer;
use durable_session_server::config::ServerConfig;
use reqwest::StatusCode;

async fn read_all(s: &TestServer, path: &str) -> (String, String) {
    let res = s.client.get(s.url(path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let next = res.headers()["stream-next-offset"].to_str().unwrap().to_owned();
    (res.text().await.unwrap(), next)
}

#[tokio::test]
async fn json_round_trip_with_offsets() {
    let s = TestServer::start().await;
    s.create_json("sessions/a", r#"[{"type":"user_message","text":"hi"}]"#)
        .await;
    let (_, after_first) = read_all(&s, "sessions/a").await;
    let res = s
        .client
        .post(s.url("sessions/a"))
        .header("content-type", "application/json")
        .body(r#"[{"n":1},{"n":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let after_append = res.headers()["stream-next-offset"].to_str().unwrap().to_owned();
    let (body, next) = read_all(&s, "sessions/a").await;
    assert_eq!(body, r#"[{"type":"user_message","text":"hi"},{"n":1},{"n":2}]"#);
    assert_eq!(next, after_append);

    // Resuming from the first message's end returns exactly the rest.
    let res = s
        .client
        .get(format!("{}?offset={after_first}", s.url("sessions/a")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), r#"[{"n":1},{"n":2}]"#);
}

#[tokio::test]
async fn long_poll_wakes_on_append() {
    let s = TestServer::start_with(ServerConfig {
        long_poll_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    })
    .await;
    s.create_json("live", "[]").await;
    let (_, tail) = read_all(&s, "live").await;
    let url = format!("{}?offset={tail}&live=long-poll", s.url("live"));
    let client = s.client.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    s.client
        .post(s.url("live"))
        .header("content-type", "application/json")
        .body(r#"{"x":1}"#)
        .send()
        .await
        .unwrap();
    let res = waiter.await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the append, not the timeout"
    );
    assert_eq!(res.text().await.unwrap(), r#"[{"x":1}]"#);
}

/// One bad request and the status it must get.
struct Bad {
    what: &'static str,
    method: reqwest::Method,
    path: &'static str,
    query: &'static str,
    headers: &'static [(&'static str, &'static [u8])],
    body: &'static [u8],
    status: StatusCode,
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = TestServer::start_with(ServerConfig {
        max_body_bytes: 1024,
        long_poll_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    s.create_json("target", r#"{"keep":"me"}"#).await;
    let (before, tail_before) = read_all(&s, "target").await;
    // An offset of the stream's incarnation (the first group), past its tail.
    let (incarnation, _) = tail_before.split_once('_').unwrap();
    let beyond_tail: &'static str = Box::leak(format!("offset={incarnation}_0000000000000099").into_boxed_str());

    use reqwest::Method as M;
    const JSON: &[(&str, &[u8])] = &[("content-type", b"application/json")];
    let cases = [
        Bad {
            what: "invalid JSON",
            method: M::POST,
            path: "target",
            query: "",
            headers: JSON,
            body: b"{nope",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "empty JSON array",
            method: M::POST,
            path: "target",
            query: "",
            headers: JSON,
            body: b"[]",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "empty body",
            method: M::POST,
            path: "target",
            query: "",
            headers: JSON,
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "truncated array",
            method: M::POST,
            path: "target",
            query: "",
            headers: JSON,
            body: b"[{\"a\":1},",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "oversized body",
            method: M::POST,
            path: "target",
            query: "",
            headers: JSON,
            body: &[b' '; 4096],
            status: StatusCode::PAYLOAD_TOO_LARGE,
        },
        Bad {
            what: "wrong content type",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[("content-type", b"text/plain")],
            body: b"hello",
            status: StatusCode::CONFLICT,
        },
        Bad {
            what: "missing content type",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[],
            body: b"{}",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "partial producer headers",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[("content-type", b"application/json"), ("producer-id", b"p")],
            body: b"{}",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "non-integer producer epoch",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[
                ("content-type", b"application/json"),
                ("producer-id", b"p"),
                ("producer-epoch", b"1.5"),
                ("producer-seq", b"0"),
            ],
            body: b"{}",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "producer seq gap",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[
                ("content-type", b"application/json"),
                ("producer-id", b"p"),
                ("producer-epoch", b"0"),
                ("producer-seq", b"3"),
            ],
            body: b"{}",
            status: StatusCode::CONFLICT,
        },
        Bad {
            what: "non-UTF-8 header",
            method: M::POST,
            path: "target",
            query: "",
            headers: &[("content-type", b"application/json"), ("stream-seq", b"\xff\xfe")],
            body: b"{}",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "malformed offset",
            method: M::GET,
            path: "target",
            query: "offset=abc",
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "offset with comma",
            method: M::GET,
            path: "target",
            query: "offset=1,2",
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "offset beyond the tail",
            method: M::GET,
            path: "target",
            query: beyond_tail,
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "duplicate offset",
            method: M::GET,
            path: "target",
            query: "offset=-1&offset=now",
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "unknown live mode",
            method: M::GET,
            path: "target",
            query: "offset=-1&live=websocket",
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "live without offset",
            method: M::GET,
            path: "target",
            query: "live=long-poll",
            headers: &[],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "malformed TTL",
            method: M::PUT,
            path: "target",
            query: "",
            headers: &[("content-type", b"application/json"), ("stream-ttl", b"1e3")],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "TTL and Expires-At",
            method: M::PUT,
            path: "other",
            query: "",
            headers: &[("stream-ttl", b"60"), ("stream-expires-at", b"2030-01-01T00:00:00Z")],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "malformed Expires-At",
            method: M::PUT,
            path: "other",
            query: "",
            headers: &[("stream-expires-at", b"next tuesday")],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "PUT with another config",
            method: M::PUT,
            path: "target",
            query: "",
            headers: &[("content-type", b"text/plain")],
            body: b"",
            status: StatusCode::CONFLICT,
        },
        Bad {
            what: "fork offset without source",
            method: M::PUT,
            path: "other",
            query: "",
            headers: &[("stream-fork-offset", b"0000000000000000_0000000000000000")],
            body: b"",
            status: StatusCode::BAD_REQUEST,
        },
        Bad {
            what: "fork of a missing stream",
            method: M::PUT,
            path: "other",
            query: "",
            headers: &[("stream-forked-from", b"/v1/stream/missing")],
            body: b"",
            status: StatusCode::NOT_FOUND,
        },
        Bad {
            what: "unknown stream",
            method: M::GET,
            path: "missing",
            query: "",
            headers: &[],
            body: b"",
            status: StatusCode::NOT_FOUND,
        },
        Bad {
            what: "wrong method",
            method: M::PATCH,
            path: "target",
            query: "",
            headers: &[],
            body: b"",
            status: StatusCode::METHOD_NOT_ALLOWED,
        },
    ];
    for case in &cases {
        let mut url = s.url(case.path);
        if !case.query.is_empty() {
            url = format!("{url}?{}", case.query);
        }
        let mut req = s.client.request(case.method.clone(), &url).body(case.body.to_vec());
        for (name, value) in case.headers {
            req = req.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = res.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {text}", case.what);
        assert!(
            content_type.starts_with("text/plain"),
            "{}: plain-text error",
            case.what
        );
        assert!(!text.trim().is_empty(), "{}: error has a message", case.what);
    }
    let (after, tail_after) = read_all(&s, "target").await;
    assert_eq!(after, before, "bad input must not change the stream");
    assert_eq!(tail_after, tail_before);
    let res = s.client.head(s.url("other")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "rejected PUTs create nothing");
}

#[tokio::test]
async fn unknown_endpoints_are_404_with_security_headers() {
    let s = TestServer::start().await;
    let res = s.client.get(format!("{}/nope", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "stream-next-offset",
        "stream-cursor",
        "stream-up-to-date",
        "stream-closed",
        "producer-epoch",
        "producer-seq",
        "producer-expected-seq",
        "producer-received-seq",
    ] {
        assert!(exposed.contains(h), "{h} is exposed to browsers");
    }
}

#[tokio::test]
async fn serves_a_static_app_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><p>app</p>").unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
    let s = TestServer::start_with(ServerConfig {
        static_dir: Some(dir.path().to_owned()),
        ..ServerConfig::default()
    })
    .await;
    let res = s.client.get(format!("{}/?session=abc", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("app"));
    let res = s.client.get(format!("{}/app.wasm", s.base)).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/wasm");
    let res = s.client.get(format!("{}/nope.js", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    s.create_json("sessions/x", "[]").await; // the API still answers
}
