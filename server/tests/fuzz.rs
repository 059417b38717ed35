//! Structured fuzzing of both transports against a real server on a real
//! socket (issue 12, "Done when"): WebSocket frames and HTTP requests from
//! proptest generators — valid-ish and garbage: random ops, ids, paths
//! (percent-encoding, `..`, unicode), offsets, headers, huge and deeply
//! nested payloads, wrong types.
//!
//! For every case: the server never panics (a panic hook counts panics in
//! this process, which runs the server), never answers 5xx or `internal`,
//! always answers (every request within a deadline, every WebSocket frame
//! before the `pong` that follows it, every `append`/`create` with its
//! `req`), sends only well-formed frames, and a refused write changes
//! nothing (the stream it names looks the same before and after). At the
//! end every JSON stream reads back as JSON within the depth limit.
//!
//! The case count is bounded for CI (`FUZZ_CASES`, default
//! [`DEFAULT_CASES`] per transport); `FUZZ_CASES=20000 cargo test -p
//! durable-session-server --test fuzz --release` fuzzes longer, and
//! `PROPTEST_RNG_SEED=…` replays a run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use common::TestServer;
use durable_session_protocol::json::{MAX_MESSAGE_DEPTH, check_depth};
use durable_session_protocol::ws::{ErrorCode, ServerMsg};
use durable_session_server::config::ServerConfig;
use futures_util::{SinkExt, StreamExt};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Cases per transport when `FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 500;
/// Every answer comes within this.
const DEADLINE: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 512 * 1024;
const MAX_FRAME: usize = 256 * 1024;

/// Streams that exist when fuzzing starts (and that PUTs may recreate).
const KNOWN: [(&str, &str); 5] = [
    ("fz/json", "application/json"),
    ("fz/text", "text/plain"),
    ("fz/bytes", "application/octet-stream"),
    ("sessions/fz", "application/json"),
    ("fz/closed", "application/json"),
];

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in this process: the server runs in it.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    })
}

/// A server with small limits (so size cases are cheap) and short live
/// reads (so long-polls and SSE end quickly), and the known streams.
async fn start() -> TestServer {
    let s = TestServer::start_with(ServerConfig {
        max_body_bytes: MAX_BODY,
        ws_max_frame_bytes: MAX_FRAME,
        long_poll_timeout: Duration::from_millis(100),
        sse_max_duration: Duration::from_millis(300),
        sse_keepalive: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    for (path, content_type) in KNOWN {
        let res = s
            .client
            .put(s.url(path))
            .header("content-type", content_type)
            .body(if content_type == "application/json" {
                "[{\"n\":0}]"
            } else {
                "x"
            })
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{path}");
    }
    let res = s
        .client
        .post(s.url("fz/closed"))
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    s
}

// ---------------------------------------------------------------- generators

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map("[a-z_]{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A session event, often well-formed, often not.
fn session_event() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        prop::sample::select(vec![
            "user_message",
            "run_started",
            "text_delta",
            "progress",
            "cancel",
            "steer",
            "steer_applied",
            "run_finished",
            "tool_call",
            "snapshot",
        ])
        .prop_map(Value::from),
        json_value(),
    ];
    let field = prop::sample::select(vec![
        "id",
        "author",
        "text",
        "run_id",
        "agent",
        "delta",
        "by",
        "status",
        "in_reply_to",
        "mode",
    ]);
    (ty, btree_map(field, json_value(), 0..6)).prop_map(|(ty, fields)| {
        let mut o: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        o.insert("type".into(), ty);
        Value::Object(o)
    })
}

/// `levels` nested arrays or objects around `1`.
fn nested(levels: usize, objects: bool) -> String {
    if objects {
        r#"{"a":"#.repeat(levels) + "1" + &"}".repeat(levels)
    } else {
        "[".repeat(levels) + "1" + &"]".repeat(levels)
    }
}

/// A JSON text to append: values, events, batches, nesting around the
/// depth limit and far past it, huge strings, and text that is not JSON.
fn payload() -> impl Strategy<Value = String> {
    let depth = prop::sample::select(vec![
        MAX_MESSAGE_DEPTH - 1,
        MAX_MESSAGE_DEPTH,
        MAX_MESSAGE_DEPTH + 1,
        MAX_MESSAGE_DEPTH + 2,
        127,
        128,
        129,
        1_000,
        100_000,
    ]);
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        3 => session_event().prop_map(|v| v.to_string()),
        2 => vec(session_event(), 0..4).prop_map(|v| Value::Array(v).to_string()),
        2 => (depth.clone(), any::<bool>()).prop_map(|(d, o)| nested(d, o)),
        1 => (depth, any::<bool>()).prop_map(|(d, o)| format!("[{{\"n\":1}},{}]", nested(d, o))),
        1 => (1usize..700_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        1 => "\\PC{0,40}",
        1 => "[\\[\\]{}\",:0-9a-z ]{0,40}",
    ]
}

/// A stream path as a WebSocket frame carries it (decoded).
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[a-z0-9]{1,6}",
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just(String::new()),
        Just("café".to_owned()),
        Just("%2e%2e".to_owned()),
        "\\PC{1,4}",
        (1000usize..1100).prop_map(|n| "p".repeat(n)),
    ];
    prop_oneof![
        4 => prop::sample::select(KNOWN.map(|(p, _)| p).to_vec()).prop_map(str::to_owned),
        2 => "fz/new-[a-z0-9]{1,4}",
        2 => vec(segment, 1..4).prop_map(|s| s.join("/")),
    ]
}

/// An offset: valid ones, forms a server may or may not have issued, junk.
fn offset() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-1".to_owned()),
        Just("now".to_owned()),
        "[0-9]{16}_[0-9]{16}",
        "[0-9]{1,20}",
        Just("9999999999999999_9999999999999999".to_owned()),
        Just("0000000000000000_0000000000000000".to_owned()),
        "\\PC{0,20}",
    ]
}

/// A JSON text for a field: usually the right type, sometimes not.
fn string_or_not(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => s.prop_map(|s| Value::String(s).to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
    ]
}

/// Text for a failure report: long texts keep their ends and their length.
fn abbreviated(text: &str) -> String {
    if text.len() <= 300 {
        return format!("{text:?}");
    }
    let cut = |at: usize| (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let (head, tail) = (cut(150), cut(text.len() - 150));
    format!("{:?} … ({} bytes) … {:?}", &text[..head], text.len(), &text[tail..])
}

/// One WebSocket frame.
#[derive(Clone)]
enum Frame {
    /// A JSON object (as text): `req` is the id an `append`/`create` must
    /// be answered with, `path` the stream it writes.
    Object {
        text: String,
        req: Option<String>,
        path: Option<String>,
    },
    /// Any text.
    Text(String),
    Binary(Vec<u8>),
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Object { text, req, .. } => write!(f, "Object(req {req:?}) {}", abbreviated(text)),
            Frame::Text(text) => write!(f, "Text {}", abbreviated(text)),
            Frame::Binary(b) => write!(f, "Binary {b:?}"),
        }
    }
}

/// A field's JSON text: usually `s` as a JSON string, sometimes absent,
/// sometimes a value of the wrong type.
fn field(s: impl Strategy<Value = String>, absent: u32, wrong: u32) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        20 => s.prop_map(|s| Some(Value::String(s).to_string())),
        absent => Just(None),
        wrong => json_value().prop_map(|v| Some(v.to_string())),
    ]
}

fn ws_frame() -> impl Strategy<Value = Frame> {
    let op = prop_oneof![
        16 => Just("append"),
        2 => Just("create"),
        4 => Just("subscribe"),
        1 => Just("unsubscribe"),
        1 => Just("ping"),
        1 => Just("pong"),
        1 => Just("auth"),
        1 => Just("teleport"),
    ]
    .prop_map(str::to_owned);
    let producer = prop_oneof![
        12 => Just(None),
        6 => ("[a-z]{1,3}", 0u64..3, 0u64..4).prop_map(|(id, epoch, seq)| {
            Some(serde_json::json!({ "id": id, "epoch": epoch, "seq": seq }).to_string())
        }),
        1 => json_value().prop_map(|v| Some(v.to_string())),
    ];
    let body = prop_oneof![
        16 => payload().prop_map(|p| Some(("data", p))),
        2 => string_or_not(".{0,20}").prop_map(|t| Some(("text", t))),
        2 => string_or_not("[A-Za-z0-9+/=]{0,24}").prop_map(|b| Some(("base64", b))),
        1 => Just(None),
    ];
    let close = prop_oneof![
        30 => Just(None),
        1 => Just(Some("true".to_owned())),
        1 => json_value().prop_map(|v| Some(v.to_string())),
    ];
    let content_type = prop::sample::select(vec!["application/json", "text/plain", "application/octet-stream", "x"]);
    let object = (
        (
            op,
            field("[a-z0-9]{1,6}", 4, 1),
            field("[a-z0-9]{1,6}", 2, 1),
            field(path(), 1, 1),
        ),
        (field(offset(), 4, 1), body, producer, close),
        (
            field(content_type.prop_map(str::to_owned), 10, 1),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |((op, sub, req, path), (offset, body, producer, close), (content_type, t))| {
                let mut fields = vec![("op".to_owned(), Value::String(op.clone()).to_string())];
                let mut add = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        fields.push((k.to_owned(), v));
                    }
                };
                add("sub", sub);
                add("req", req.clone());
                add("path", path.clone());
                add("offset", offset);
                if let Some((k, v)) = body {
                    add(k, Some(v));
                }
                add("producer", producer);
                add("close", close);
                add("content_type", content_type);
                add("t", t.map(|t| t.to_string()));
                let members: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                    .collect();
                let text = format!("{{{}}}", members.join(","));
                let as_str = |v: &Option<String>| {
                    v.as_deref()
                        .and_then(|v| serde_json::from_str::<Value>(v).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                };
                let writes = op == "append" || op == "create";
                // A frame that cannot be parsed (an invalid payload) cannot
                // be attributed: no req is promised then.
                let parses = durable_session_protocol::json::parse(&text).is_ok();
                Frame::Object {
                    req: as_str(&req).filter(|_| writes && parses),
                    path: as_str(&path),
                    text,
                }
            },
        );
    prop_oneof![
        18 => object,
        1 => "\\PC{0,60}".prop_map(Frame::Text),
        1 => vec(any::<u8>(), 0..40).prop_map(Frame::Binary),
    ]
}

/// One HTTP request, as raw as the wire: method, target, headers, body.
#[derive(Clone)]
struct Request {
    method: String,
    /// The URL path (percent-encoded or not, `..` kept as is).
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        write!(
            f,
            "{} {}?{} {headers:?} chunked={} body {}",
            self.method,
            self.path,
            self.query,
            self.chunked,
            abbreviated(&String::from_utf8_lossy(&self.body))
        )
    }
}

fn http_request() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        6 => Just("POST"),
        4 => Just("GET"),
        2 => Just("PUT"),
        1 => Just("HEAD"),
        1 => Just("OPTIONS"),
        1 => Just("DELETE"),
        1 => prop::sample::select(vec!["PATCH", "TRACE", "CONNECT", "FOO"]),
    ]
    .prop_map(str::to_owned);
    let encoded_path = path().prop_map(|p| format!("/v1/stream/{}", durable_session_protocol::path::encode(&p)));
    let raw_segment = prop_oneof![
        "[a-z0-9]{1,6}",
        prop::sample::select(vec![
            "..", ".", "%2e%2e", "%2E", "%FF", "%C3%A9", "%00", "a%2Fb", "%", "%zz", ""
        ])
        .prop_map(str::to_owned),
        Just("café".to_owned()),
    ];
    let path = prop_oneof![
        6 => encoded_path,
        3 => vec(raw_segment, 1..5).prop_map(|s| format!("/v1/stream/{}", s.join("/"))),
        1 => prop::sample::select(vec!["/", "/healthz", "/v1/ws", "/v1/stream", "/v1/stream/", "/v1/test/token", "/nope"]).prop_map(str::to_owned),
    ];
    let query_part = prop_oneof![
        offset().prop_map(|o| format!("offset={}", urlencode(&o))),
        prop::sample::select(vec![
            "live=long-poll",
            "live=sse",
            "live=x",
            "live=",
            "cursor=123",
            "cursor=x",
            "encoding=base64",
            "x=%FF"
        ])
        .prop_map(str::to_owned),
    ];
    let query = vec(query_part, 0..3).prop_map(|q| q.join("&"));
    let header_value = prop_oneof![
        4 => "[ -~]{0,20}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..10),
    ];
    let header = prop_oneof![
        (
            prop::sample::select(vec![
                "content-type",
                "stream-seq",
                "producer-id",
                "producer-epoch",
                "producer-seq",
                "stream-ttl",
                "stream-expires-at",
                "stream-closed",
                "stream-forked-from",
                "stream-fork-offset",
                "stream-fork-sub-offset",
                "if-none-match",
                "authorization",
                "origin",
                "expect",
            ])
            .prop_map(str::to_owned),
            header_value,
        ),
        (
            prop::sample::select(vec!["content-type"]).prop_map(str::to_owned),
            prop::sample::select(vec![
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                "application/octet-stream",
                "APPLICATION/JSON"
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
        ),
        (
            prop::sample::select(vec![
                "producer-epoch",
                "producer-seq",
                "stream-ttl",
                "stream-fork-sub-offset"
            ])
            .prop_map(str::to_owned),
            prop_oneof![
                Just("0".to_owned()),
                "[0-9]{1,20}",
                Just("-1".to_owned()),
                Just("01".to_owned()),
                Just("1.5".to_owned())
            ]
            .prop_map(String::into_bytes),
        ),
        (
            Just("stream-forked-from".to_owned()),
            prop::sample::select(KNOWN.map(|(p, _)| p).to_vec()).prop_map(|p| format!("/v1/stream/{p}").into_bytes()),
        ),
        (
            Just("producer-id".to_owned()),
            "[a-z]{0,3}".prop_map(String::into_bytes),
        ),
    ];
    let body = prop_oneof![
        3 => payload().prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ];
    let anything = (method, path, query, vec(header, 0..6), body, any::<bool>()).prop_map(
        |(method, path, query, headers, body, chunked)| Request {
            method,
            path,
            query,
            headers,
            body,
            chunked,
        },
    );
    prop_oneof![1 => anything, 1 => append_request()]
}

/// A well-formed append to a known stream (whose payload may still be
/// refused: deep, huge, not JSON, a producer out of sequence).
fn append_request() -> impl Strategy<Value = Request> {
    let producer = proptest::option::of(("[a-z]{1,3}", 0u64..3, 0u64..4));
    let stream_seq = proptest::option::weighted(0.2, "[0-9a-z]{1,4}");
    let close = proptest::option::weighted(0.03, Just(()));
    let body = prop_oneof![
        8 => (prop::sample::select(vec!["fz/json", "sessions/fz"]), payload()).prop_map(|(p, b)| (p, "application/json", b.into_bytes())),
        1 => ".{1,30}".prop_map(|t| ("fz/text", "text/plain", t.into_bytes())),
        1 => vec(any::<u8>(), 1..64).prop_map(|b| ("fz/bytes", "application/octet-stream", b)),
    ];
    (body, producer, stream_seq, close, any::<bool>()).prop_map(
        |((path, content_type, body), producer, seq, close, chunked)| {
            let mut headers = vec![("content-type".to_owned(), content_type.as_bytes().to_vec())];
            if let Some((id, epoch, seq)) = producer {
                headers.push(("producer-id".into(), id.into_bytes()));
                headers.push(("producer-epoch".into(), epoch.to_string().into_bytes()));
                headers.push(("producer-seq".into(), seq.to_string().into_bytes()));
            }
            if let Some(seq) = seq {
                headers.push(("stream-seq".into(), seq.into_bytes()));
            }
            if close.is_some() {
                headers.push(("stream-closed".into(), b"true".to_vec()));
            }
            Request {
                method: "POST".into(),
                path: format!("/v1/stream/{path}"),
                query: String::new(),
                headers,
                body,
                chunked,
            }
        },
    )
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------- HTTP

/// An answer: status and headers (lower-case names).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `req` on a new connection and reads the answer to its end.
async fn send(addr: &str, req: &Request) -> Result<Answer, String> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let target = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        let mut head = format!(
            "{} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n",
            req.method
        )
        .into_bytes();
        for (name, value) in &req.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        let mut body = Vec::new();
        if req.chunked && !req.body.is_empty() {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            for chunk in req.body.chunks(8192) {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        } else {
            head.extend_from_slice(format!("content-length: {}\r\n\r\n", req.body.len()).as_bytes());
            body.extend_from_slice(&req.body);
        }
        // The server may answer (413, 400) before it reads everything: a
        // write error then is no failure, the answer is what counts.
        head.extend_from_slice(&body);
        let _ = tcp.write_all(&head).await;
        let mut answer = Vec::new();
        let read = tcp.read_to_end(&mut answer).await;
        if answer.is_empty() {
            return Err(format!("no answer ({read:?})"));
        }
        parse_answer(&answer)
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| format!("no answer within {DEADLINE:?}"))?
}

fn parse_answer(bytes: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer { status, headers })
}

/// What a stream looks like from outside: `HEAD` status, tail, closed.
async fn state_of(addr: &str, path: &str) -> Result<(u16, Option<String>, Option<String>), String> {
    let head = Request {
        method: "HEAD".into(),
        path: path.to_owned(),
        query: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        chunked: false,
    };
    let a = send(addr, &head).await?;
    Ok((
        a.status,
        a.header("stream-next-offset").map(str::to_owned),
        a.header("stream-closed").map(str::to_owned),
    ))
}

/// Creates a known stream again if a fuzzed request deleted it (an
/// idempotent `PUT`), so cases keep finding it.
async fn ensure_known(addr: &str, path: &str) -> Result<(), String> {
    let Some((_, content_type)) = KNOWN.iter().find(|(p, _)| path == format!("/v1/stream/{p}")) else {
        return Ok(());
    };
    let put = Request {
        method: "PUT".into(),
        path: path.to_owned(),
        query: String::new(),
        headers: vec![("content-type".into(), content_type.as_bytes().to_vec())],
        body: Vec::new(),
        chunked: false,
    };
    send(addr, &put).await.map(drop)
}

async fn check_http(addr: &str, req: &Request) -> Result<(), String> {
    ensure_known(addr, &req.path).await?;
    let before = state_of(addr, &req.path).await?;
    let answer = send(addr, req).await?;
    if answer.status >= 500 {
        return Err(format!("{} answered", answer.status));
    }
    let writes = matches!(req.method.as_str(), "PUT" | "POST" | "DELETE");
    if writes && answer.status >= 400 {
        let after = state_of(addr, &req.path).await?;
        if after != before {
            return Err(format!(
                "a refused write ({}) changed the stream: {before:?} -> {after:?}",
                answer.status
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- WebSocket

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str) -> Result<Socket, String> {
    let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Sends `frame`, then a `ping`, and reads until the `pong` and (for an
/// append or create) the answer naming its `req` have come. Checks every
/// frame the server sends on the way.
async fn exchange(socket: &mut Socket, frame: &Frame, t: u64) -> Result<Option<ServerMsg>, String> {
    let message = match frame {
        Frame::Object { text, .. } | Frame::Text(text) => Message::text(text.clone()),
        Frame::Binary(b) => Message::binary(b.clone()),
    };
    socket.send(message).await.map_err(|e| format!("send: {e}"))?;
    socket
        .send(Message::text(format!(r#"{{"op":"ping","t":{t}}}"#)))
        .await
        .map_err(|e| format!("send ping: {e}"))?;
    let want = match frame {
        Frame::Object { req, .. } => req.clone(),
        _ => None,
    };
    let mut ponged = false;
    let mut answer = None;
    let read = async {
        while !ponged || (want.is_some() && answer.is_none()) {
            let msg = match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    ServerMsg::parse(text.as_str()).map_err(|e| format!("malformed server frame {e}: {text}"))?
                }
                Some(Ok(Message::Close(close))) => return Err(format!("closed by the server: {close:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("socket error: {e}")),
                None => return Err("socket ended".to_owned()),
            };
            match &msg {
                ServerMsg::Pong { t: Some(n) } if *n == t => ponged = true,
                ServerMsg::Error {
                    code: ErrorCode::Internal,
                    message,
                    ..
                } => return Err(format!("internal error: {message}")),
                ServerMsg::Ack { req, .. } | ServerMsg::Error { req: Some(req), .. } if Some(req) == want.as_ref() => {
                    answer = Some(msg.clone());
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .map_err(|_| format!("no pong or answer within {DEADLINE:?}"))??;
    Ok(answer)
}

/// A frame past the hard limit (the larger of the body and frame limits)
/// ends the connection with 1009 (`docs/protocol.md` §3.1), writing
/// nothing.
async fn oversized(socket: &mut Socket, frame: &Frame) -> Result<(), String> {
    let text = match frame {
        Frame::Object { text, .. } | Frame::Text(text) => text.clone(),
        Frame::Binary(_) => unreachable!("binary frames are small"),
    };
    let _ = socket.send(Message::text(text)).await;
    let closed = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(close)))) => return Ok(u16::from(close.code)),
                Some(Ok(Message::Text(text))) => {
                    ServerMsg::parse(text.as_str()).map_err(|e| format!("malformed server frame {e}: {text}"))?;
                }
                Some(Ok(_)) => {}
                other => return Err(format!("expected a close frame, got {other:?}")),
            }
        }
    };
    match tokio::time::timeout(DEADLINE, closed).await {
        Ok(Ok(1009)) => Ok(()),
        Ok(Ok(code)) => Err(format!("closed with {code}, expected 1009")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no close within the deadline".into()),
    }
}

async fn check_ws(base: &str, frames: &[Frame]) -> Result<(), String> {
    let addr = base.trim_start_matches("http://");
    let mut socket = connect(base).await?;
    for (i, frame) in frames.iter().enumerate() {
        let len = match frame {
            Frame::Object { text, .. } | Frame::Text(text) => text.len(),
            Frame::Binary(b) => b.len(),
        };
        // The stream a write names, as HTTP addresses it.
        let target = match frame {
            Frame::Object {
                req: Some(_),
                path: Some(path),
                ..
            } => Some(format!("/v1/stream/{}", durable_session_protocol::path::encode(path))),
            _ => None,
        };
        let before = match &target {
            Some(t) => Some(state_of(addr, t).await?),
            None => None,
        };
        let answer = if len > MAX_BODY.max(MAX_FRAME) {
            oversized(&mut socket, frame).await?;
            socket = connect(base).await?;
            Some(ServerMsg::Error {
                sub: None,
                req: None,
                code: ErrorCode::TooLarge,
                message: String::new(),
            })
        } else {
            exchange(&mut socket, frame, i as u64).await?
        };
        if let (Some(ServerMsg::Error { .. }), Some(target), Some(before)) = (&answer, &target, before) {
            let after = state_of(addr, target).await?;
            if after != before {
                return Err(format!("a refused write changed {target}: {before:?} -> {after:?}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the runs

/// The server still answers, and every JSON stream it holds reads back as
/// JSON within the depth limit.
async fn check_health(s: &TestServer) {
    let res = s.client.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 200, "the server still answers");
    for (path, content_type) in KNOWN {
        let res = s.client.get(format!("{}?offset=-1", s.url(path))).send().await.unwrap();
        if res.status() != 200 || content_type != "application/json" {
            continue;
        }
        let body = res.text().await.unwrap();
        assert!(
            check_depth(&body, MAX_MESSAGE_DEPTH + 1).is_ok(),
            "{path} holds a message nested too deep"
        );
        serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{path} reads back as JSON: {e}"));
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}

fn run<S: Strategy>(strategy: S, check: impl Fn(&S::Value) -> Result<(), String>) {
    let started = std::time::Instant::now();
    let result = runner().run(&strategy, |case| {
        let panics = PANICS.load(Ordering::SeqCst);
        let outcome = check(&case);
        if PANICS.load(Ordering::SeqCst) != panics {
            return Err(TestCaseError::fail("the server panicked"));
        }
        outcome.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("{} cases in {:?}", cases(), started.elapsed());
}

#[test]
fn fuzzed_http_requests_get_clear_answers_and_refusals_write_nothing() {
    count_panics();
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let s = rt.block_on(start());
    let addr = s.base.trim_start_matches("http://").to_owned();
    run(http_request(), |req| rt.block_on(check_http(&addr, req)));
    rt.block_on(check_health(&s));
}

#[test]
fn fuzzed_websocket_frames_get_clear_answers_and_refusals_write_nothing() {
    count_panics();
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let s = rt.block_on(start());
    run(vec(ws_frame(), 1..6), |frames| rt.block_on(check_ws(&s.base, frames)));
    rt.block_on(check_health(&s));
}
