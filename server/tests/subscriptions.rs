//! Subscriptions (PROTOCOL.md §6–7, docs/subscriptions.md) over a real
//! socket: what the conformance suite does not check — access control, the
//! SSRF rules, the bounds and their codes, leases that expire, and cursors
//! that survive a restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use durable_session_server::auth::Right;
use durable_session_server::auth::jwt::Keys;
use durable_session_server::config::{AuthMode, ServerConfig};
use durable_session_server::subscriptions::SubscriptionConfig;
use durable_session_server::subscriptions::signing::WebhookKeys;
use durable_session_server::subscriptions::target::TargetPolicy;
use serde_json::{Value, json};

const SECRET: &[u8] = b"a test secret of at least 32 bytes!";

fn subscriptions(targets: TargetPolicy) -> SubscriptionConfig {
    let keys = WebhookKeys::from_keys(vec![ed25519_dalek::SigningKey::from_bytes(&[5; 32])]);
    SubscriptionConfig {
        targets,
        ..SubscriptionConfig::new(Arc::new(keys))
    }
}

fn dev() -> TargetPolicy {
    TargetPolicy {
        allow_hosts: vec![],
        allow_loopback: true,
    }
}

fn config(subs: SubscriptionConfig) -> ServerConfig {
    ServerConfig {
        subscriptions: Some(subs),
        ..ServerConfig::default()
    }
}

async fn put(s: &TestServer, id: &str, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut req = s.client.put(s.url(&format!("__ds/subscriptions/{id}"))).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(s: &TestServer, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut req = s.client.post(s.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn pull(pattern: &str) -> Value {
    json!({ "type": "pull-wake", "pattern": pattern, "wake_stream": "wake/pool", "lease_ttl_ms": 1000 })
}

#[tokio::test]
async fn webhook_targets_follow_the_ssrf_rules() {
    let strict = TestServer::start_with(config(subscriptions(TargetPolicy::default()))).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "http://worker.example/hook",
        "ftp://worker.example/hook",
        "https://user:pw@worker.example/hook",
    ] {
        let (status, body) = put(
            &strict,
            "s",
            json!({"type": "webhook", "pattern": "a/*", "webhook": {"url": url}}),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("WEBHOOK_URL_REJECTED")),
            "{url}"
        );
    }
    let (status, _) = put(
        &strict,
        "ok",
        json!({"type": "webhook", "pattern": "a/*", "webhook": {"url": "https://worker.example/hook"}}),
        None,
    )
    .await;
    assert_eq!(status, 201);

    // An allowlist: only its hosts, wherever they are.
    let listed = TestServer::start_with(config(subscriptions(TargetPolicy {
        allow_hosts: vec!["hooks.internal".into()],
        allow_loopback: false,
    })))
    .await;
    let (status, _) = put(
        &listed,
        "in",
        json!({"type": "webhook", "pattern": "a/*", "webhook": {"url": "https://hooks.internal/x"}}),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = put(
        &listed,
        "out",
        json!({"type": "webhook", "pattern": "a/*", "webhook": {"url": "https://worker.example/x"}}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("WEBHOOK_URL_REJECTED"))
    );
}

#[tokio::test]
async fn bounds_have_their_codes() {
    let subs = SubscriptionConfig {
        max_subscriptions: 2,
        max_streams: 2,
        ..subscriptions(dev())
    };
    let s = TestServer::start_with(config(subs)).await;
    let (status, body) = put(
        &s,
        "many",
        json!({"type": "pull-wake", "streams": ["a", "b", "c"], "wake_stream": "w"}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("TOO_MANY_STREAMS"))
    );
    assert_eq!(
        put(
            &s,
            "one",
            json!({"type": "pull-wake", "streams": ["a", "b"], "wake_stream": "w"}),
            None
        )
        .await
        .0,
        201
    );
    let (status, body) = post(&s, "__ds/subscriptions/one/streams", json!({"streams": ["c"]}), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("TOO_MANY_STREAMS"))
    );
    assert_eq!(put(&s, "two", pull("x/*"), None).await.0, 201);
    let (status, body) = put(&s, "three", pull("y/*"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("TOO_MANY_SUBSCRIPTIONS"))
    );
    // A deleted one frees its place.
    let deleted = s.client.delete(s.url("__ds/subscriptions/two")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(put(&s, "three", pull("y/*"), None).await.0, 201);
    // Same id, other configuration.
    let (status, body) = put(&s, "three", pull("z/*"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("CONFLICT")));
}

#[tokio::test]
async fn with_access_control_only_agents_of_the_streams_manage_subscriptions() {
    let keys = Arc::new(Keys::hs256("k1", SECRET).unwrap());
    let s = TestServer::start_with(ServerConfig {
        auth: AuthMode::Jwt(keys.clone()),
        ..config(subscriptions(dev()))
    })
    .await;
    let mint = |grants: &[(&str, Vec<Right>)]| {
        let grants: Vec<(String, Vec<Right>)> = grants.iter().map(|(p, r)| ((*p).to_owned(), r.clone())).collect();
        keys.mint(None, "someone", &grants, 600).unwrap()
    };
    let agent = mint(&[
        ("sessions/*", vec![Right::Read, Right::Agent]),
        ("wake/pool", vec![Right::Agent]),
    ]);
    let user = mint(&[("sessions/*", vec![Right::Read, Right::Append])]);
    let body = json!({ "type": "pull-wake", "pattern": "sessions/*", "wake_stream": "wake/pool" });

    let (status, _) = put(&s, "a", body.clone(), None).await;
    assert_eq!(status, 401, "no token");
    let (status, body403) = put(&s, "a", body.clone(), Some(&user)).await;
    assert_eq!(
        (status, body403["error"]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "no agent right"
    );
    let (status, _) = put(
        &s,
        "a",
        json!({ "type": "pull-wake", "pattern": "**", "wake_stream": "wake/pool" }),
        Some(&agent),
    )
    .await;
    assert_eq!(status, 403, "a pattern wider than the grant");
    let (status, _) = put(&s, "a", body.clone(), Some(&agent)).await;
    assert_eq!(status, 201);

    let get = |token: Option<String>| {
        let mut req = s.client.get(s.url("__ds/subscriptions/a"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some(user.clone())).await.unwrap().status(), 403);
    assert_eq!(get(Some(agent.clone())).await.unwrap().status(), 200);
    let (status, _) = post(&s, "__ds/subscriptions/a/claim", json!({"worker": "w"}), Some(&user)).await;
    assert_eq!(status, 403);
    let (status, claimed) = post(&s, "__ds/subscriptions/a/claim", json!({"worker": "w"}), Some(&agent)).await;
    assert_eq!(status, 200);
    // The ack takes the claim token, not a service token.
    let ack = json!({"wake_id": claimed["wake_id"], "generation": claimed["generation"], "done": true});
    let (status, _) = post(&s, "__ds/subscriptions/a/ack", ack.clone(), Some(&agent)).await;
    assert_eq!(status, 401);
    let token = claimed["token"].as_str().unwrap();
    let (status, _) = post(&s, "__ds/subscriptions/a/ack", ack, Some(token)).await;
    assert_eq!(status, 200);
    // The JWKS is public.
    let jwks = s.client.get(s.url("__ds/jwks.json")).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
}

#[tokio::test]
async fn an_expired_lease_lets_another_worker_claim_and_fences_the_first() {
    let s = TestServer::start_with(config(subscriptions(dev()))).await;
    assert_eq!(put(&s, "p", pull("events/*"), None).await.0, 201);
    let (status, first) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "one"}), None).await;
    assert_eq!(status, 200);
    let (status, busy) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "two"}), None).await;
    assert_eq!((status, busy["error"]["code"].as_str()), (409, Some("ALREADY_CLAIMED")));
    // The lease (1 s) runs out without a heartbeat: "two" gets the next one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let (status, body) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "two"}), None).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 409);
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second["generation"].as_u64() > first["generation"].as_u64());
    let stale = json!({"wake_id": first["wake_id"], "generation": first["generation"], "done": true});
    let (status, body) = post(&s, "__ds/subscriptions/p/ack", stale, first["token"].as_str()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("FENCED")));
    let release = json!({"wake_id": second["wake_id"], "generation": second["generation"]});
    let (status, _) = post(&s, "__ds/subscriptions/p/release", release, second["token"].as_str()).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn cursors_and_generations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, generation) = {
        let s = TestServer::start_in(dir.path(), config(subscriptions(dev()))).await;
        assert_eq!(
            put(
                &s,
                "p",
                json!({"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake/pool", "lease_ttl_ms": 600000}),
                None
            )
            .await
            .0,
            201
        );
        for path in ["wake/pool", "events/a"] {
            let created = s
                .client
                .put(s.url(path))
                .header("content-type", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
        }
        let tail = s.append_json("events/a", r#"{"n":1}"#).await;
        let (status, claimed) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "w"}), None).await;
        assert_eq!(status, 200);
        let ack = json!({
            "wake_id": claimed["wake_id"], "generation": claimed["generation"],
            "acks": [{"stream": "events/a", "offset": tail}], "done": true,
        });
        let (status, answer) = post(&s, "__ds/subscriptions/p/ack", ack, claimed["token"].as_str()).await;
        assert_eq!((status, answer), (200, json!({"ok": true, "next_wake": false})));
        (tail, claimed["generation"].as_u64().unwrap())
    };
    // A new server on the same database: same subscription, same cursor;
    // a new wake takes a greater generation (no stale token can match).
    let s = TestServer::start_in(dir.path(), config(subscriptions(dev()))).await;
    let got: Value = s
        .client
        .get(s.url("__ds/subscriptions/p"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["streams"][0]["path"], "events/a");
    assert_eq!(got["streams"][0]["acked_offset"], acked.as_str());
    s.append_json("events/a", r#"{"n":2}"#).await;
    let (status, claimed) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "w"}), None).await;
    assert_eq!(status, 200);
    assert!(claimed["generation"].as_u64().unwrap() > generation);
    let stream = &claimed["streams"][0];
    assert_eq!(
        (stream["acked_offset"].as_str(), stream["has_pending"].as_bool()),
        (Some(acked.as_str()), Some(true))
    );
}

#[tokio::test]
async fn the_reserved_prefix_is_not_a_stream() {
    let s = TestServer::start_with(config(subscriptions(dev()))).await;
    let res = s
        .client
        .put(s.url("__ds/mine"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (status, body) = put(
        &s,
        "p",
        json!({"type": "pull-wake", "pattern": "a/*", "wake_stream": "__ds/w"}),
        None,
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BAD_REQUEST")));
    // Without subscriptions configured, the API is absent.
    let plain = TestServer::start().await;
    let (status, _) = put(&plain, "p", pull("a/*"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_pattern_links_existing_streams_at_their_tails() {
    let s = TestServer::start_with(config(subscriptions(dev()))).await;
    for path in ["events/old", "other/x"] {
        let created = s
            .client
            .put(s.url(path))
            .header("content-type", "application/json")
            .body(r#"[{"n":1},{"n":2}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let tail = s.append_json("events/old", r#"{"n":3}"#).await;
    let (status, created) = put(&s, "p", pull("events/*"), None).await;
    assert_eq!(status, 201);
    assert_eq!(
        created["streams"],
        json!([{"path": "events/old", "link_type": "glob", "acked_offset": tail}]),
        "linked at the tail: history is not replayed"
    );
    let (_, claimed) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "w"}), None).await;
    assert_eq!(claimed["streams"][0]["has_pending"], false);
    let release = json!({"wake_id": claimed["wake_id"], "generation": claimed["generation"]});
    assert_eq!(
        post(&s, "__ds/subscriptions/p/release", release, claimed["token"].as_str())
            .await
            .0,
        204
    );
    s.append_json("events/old", r#"{"n":4}"#).await;
    let (_, claimed) = post(&s, "__ds/subscriptions/p/claim", json!({"worker": "w"}), None).await;
    assert_eq!(claimed["streams"][0]["has_pending"], true);
    assert_eq!(claimed["streams"][0]["acked_offset"], tail.as_str());
}
