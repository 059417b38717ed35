//! Access tokens in the client state machine: asking for them, presenting
//! them, refreshing them on the live connection, and recovering when the
//! server refuses them. Times are milliseconds since the Unix epoch.

use base64::Engine as _;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ServerMsg};

use super::*;

/// A fixed "now": 2023-11-14, in ms since the Unix epoch.
const T0: u64 = 1_700_000_000_000;

fn opts() -> Options {
    let mut o = Options::new("p", 7);
    o.backoff = Backoff {
        min_ms: 100,
        max_ms: 1_000,
        factor: 2.0,
    };
    o.ping_interval_ms = 60_000;
    o.heartbeat_timeout_ms = 120_000;
    o.connect_timeout_ms = 2_000;
    o.suspend_after_ms = 600_000;
    o.auth = true;
    o
}

/// A JWT (unsigned: the SDK never verifies) expiring `ttl_ms` after `now`.
fn jwt(name: &str, now: u64, ttl_ms: u64) -> String {
    let payload = format!(r#"{{"sub":"ada","exp":{},"name":"{name}"}}"#, (now + ttl_ms) / 1_000);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.sig", b64.encode(r#"{"alg":"HS256"}"#), b64.encode(payload))
}

fn drain(core: &mut ClientCore) -> Vec<Output> {
    let out: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
    // Tokens never appear in state reasons or errors.
    for o in &out {
        if let Output::State(c) = o {
            assert!(!c.reason.contains(".sig"), "token in a reason: {}", c.reason);
        }
        if let Output::Event {
            event: SubscriptionEvent::Error(e),
            ..
        } = o
        {
            assert!(!e.message.contains(".sig"));
        }
    }
    out
}

fn sent(outputs: &[Output]) -> Vec<ClientMsg> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn need_token(outputs: &[Output]) -> usize {
    outputs.iter().filter(|o| matches!(o, Output::NeedToken { .. })).count()
}

fn connects(outputs: &[Output]) -> usize {
    outputs.iter().filter(|o| **o == Output::Connect).count()
}

fn disconnects(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Disconnect { .. }))
        .count()
}

fn changes(outputs: &[Output]) -> Vec<StateChange> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::State(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn events(sub: &str, offsets: &[&str]) -> ServerMsg {
    ServerMsg::Events {
        sub: sub.into(),
        messages: offsets
            .iter()
            .map(|o| Message {
                offset: (*o).into(),
                payload: Payload::json(r#"{"type":"x"}"#).unwrap(),
            })
            .collect(),
        next: offsets.last().map_or("00".into(), |o| (*o).into()),
        up_to_date: true,
        closed: false,
    }
}

fn error(sub: Option<&str>, req: Option<&str>, code: ErrorCode, message: &str) -> ServerMsg {
    ServerMsg::Error {
        sub: sub.map(Into::into),
        req: req.map(Into::into),
        code,
        message: message.into(),
    }
}

fn auth(req: &str, token: &str) -> ClientMsg {
    ClientMsg::Auth {
        req: Some(req.into()),
        token: token.into(),
    }
}

fn subscribe(sub: &str, path: &str, offset: &str) -> ClientMsg {
    ClientMsg::Subscribe {
        sub: sub.into(),
        path: path.into(),
        offset: offset.into(),
    }
}

/// Connected at `T0` with a token of `ttl_ms` and a subscription to
/// `sessions/a` that received `01`, `02`.
fn connected(ttl_ms: u64) -> (ClientCore, String) {
    let mut c = ClientCore::new(opts());
    c.subscribe("sessions/a", SubscribeOptions::default());
    c.start(T0);
    let token = jwt("first", T0, ttl_ms);
    c.set_token(T0, token.clone());
    c.on_open(T0);
    c.on_frame(T0, events("s1", &["01", "02"]));
    drain(&mut c);
    (c, token)
}

#[test]
fn asks_for_a_token_before_connecting_and_presents_it_before_anything_else() {
    let mut c = ClientCore::new(opts());
    c.subscribe("sessions/a", SubscribeOptions::default());
    c.append("sessions/a", r#"{"type":"note"}"#.into());
    c.start(T0);
    let out = drain(&mut c);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::NeedToken { .. }))
            .collect::<Vec<_>>(),
        [&Output::NeedToken {
            reason: "no token yet".into()
        }]
    );
    assert_eq!(connects(&out), 0, "no connection before the token");
    assert_eq!(c.state(), ConnectionState::Connecting);
    let token = jwt("t", T0, 60_000);
    c.set_token(T0 + 5, token.clone());
    assert_eq!(drain(&mut c), [Output::Connect]);
    c.on_open(T0 + 10);
    let frames = sent(&drain(&mut c));
    assert_eq!(frames[0], auth("t1", &token), "auth first: {frames:?}");
    assert_eq!(frames[1], subscribe("s1", "sessions/a", "-1"));
    assert!(matches!(frames[2], ClientMsg::Append { .. }));
    assert_eq!(frames.len(), 3);
    assert_eq!(c.token(), Some(token.as_str()));
}

#[test]
fn without_auth_no_token_is_asked_for_or_sent() {
    let mut o = opts();
    o.auth = false;
    let mut c = ClientCore::new(o);
    c.start(T0);
    assert_eq!(need_token(&drain(&mut c)), 0);
    c.on_open(T0);
    assert!(
        sent(&drain(&mut c))
            .iter()
            .all(|f| !matches!(f, ClientMsg::Auth { .. }))
    );
}

#[test]
fn refreshes_at_three_quarters_of_the_lifetime_on_the_live_connection() {
    let (mut c, _) = connected(8_000);
    // 75 % of 8 s after receipt.
    assert_eq!(c.next_timer(), Some(T0 + 6_000));
    c.on_timer(T0 + 5_999);
    assert_eq!(need_token(&drain(&mut c)), 0);
    c.on_timer(T0 + 6_000);
    let out = drain(&mut c);
    assert_eq!(
        out,
        [Output::NeedToken {
            reason: "refresh".into()
        }]
    );
    // Not asked again while the request is outstanding.
    c.on_timer(T0 + 6_600);
    assert_eq!(need_token(&drain(&mut c)), 0);
    let fresh = jwt("second", T0 + 7_000, 8_000);
    c.set_token(T0 + 7_000, fresh.clone());
    let out = drain(&mut c);
    // On the live socket: one auth frame, no reconnect, no resubscribe.
    assert_eq!(out, [Output::Send(auth("t2", &fresh))]);
    assert_eq!(c.state(), ConnectionState::Connected);
    c.on_frame(
        T0 + 7_010,
        ServerMsg::Authed {
            req: Some("t2".into()),
            principal: "ada".into(),
            exp: (T0 + 15_000) / 1_000,
        },
    );
    // Delivery goes on from where it was.
    c.on_frame(T0 + 7_020, events("s1", &["02", "03"]));
    let out = drain(&mut c);
    assert!(matches!(&out[..], [Output::Event { event: SubscriptionEvent::Messages(ms), .. }] if ms.len() == 1));
    // The next refresh is timed from the new token.
    assert_eq!(c.next_timer(), Some(T0 + 7_000 + 6_000));
}

#[test]
fn a_lost_token_request_is_asked_again_after_the_connect_timeout() {
    let (mut c, _) = connected(8_000);
    c.on_timer(T0 + 6_000);
    assert_eq!(need_token(&drain(&mut c)), 1);
    assert_eq!(c.next_timer(), Some(T0 + 6_000 + 2_000));
    c.on_timer(T0 + 8_000);
    assert_eq!(need_token(&drain(&mut c)), 1);
}

#[test]
fn short_lived_tokens_are_asked_for_at_most_every_500_ms() {
    let (mut c, _) = connected(600);
    let mut now = T0;
    let mut asks = Vec::new();
    for _ in 0..20 {
        now = c.next_timer().unwrap();
        c.on_timer(now);
        if need_token(&drain(&mut c)) > 0 {
            asks.push(now);
            // The app answers with a token that has already expired.
            c.set_token(now, jwt(&format!("n{now}"), now, 0));
            drain(&mut c);
        }
    }
    assert!(asks.len() >= 10, "{asks:?}");
    assert!(asks.windows(2).all(|w| w[1] - w[0] >= 500), "{asks:?}");
    assert!(now > T0);
}

#[test]
fn the_same_token_again_is_not_resent() {
    let (mut c, token) = connected(8_000);
    c.on_timer(T0 + 6_000);
    drain(&mut c);
    c.set_token(T0 + 6_001, token);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.state(), ConnectionState::Connected);
}

#[test]
fn unauthorized_gets_a_new_token_reconnects_and_resumes_without_loss() {
    let (mut c, _) = connected(60_000);
    let append = c.append("sessions/a", r#"{"type":"note"}"#.into());
    let first = sent(&drain(&mut c));
    let [ClientMsg::Append { producer: Some(p), .. }] = &first[..] else {
        panic!("{first:?}")
    };
    let producer = p.clone();
    c.on_frame(
        T0 + 100,
        error(
            Some("s1"),
            None,
            ErrorCode::Unauthorized,
            "the access token has expired",
        ),
    );
    let out = drain(&mut c);
    assert_eq!(disconnects(&out), 1);
    assert_eq!(
        need_token(&out),
        1,
        "a refused token is replaced before reconnecting: {out:?}"
    );
    assert_eq!(connects(&out), 0);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Event { .. })),
        "the subscription did not end"
    );
    let retry = changes(&out);
    assert_eq!(retry[0].state, ConnectionState::Disconnected);
    assert_eq!(retry[0].retry_in_ms, Some(0), "first retry at once");
    let fresh = jwt("fresh", T0 + 150, 60_000);
    c.set_token(T0 + 150, fresh.clone());
    assert_eq!(drain(&mut c), [Output::Connect]);
    c.on_open(T0 + 160);
    let frames = sent(&drain(&mut c));
    assert_eq!(frames[0], auth("t2", &fresh));
    assert_eq!(
        frames[1],
        subscribe("s1", "sessions/a", "02"),
        "resumes from its offset"
    );
    let ClientMsg::Append { producer: Some(p), .. } = &frames[2] else {
        panic!("{frames:?}")
    };
    assert_eq!(*p, producer, "the unacknowledged append goes again with the same ids");
    assert_eq!(c.pending_appends(), 1);
    let _ = append;
}

#[test]
fn unauthorized_for_a_request_or_unattributed_also_recovers() {
    for frame in [
        error(None, Some("a1"), ErrorCode::Unauthorized, "expired"),
        error(None, Some("t1"), ErrorCode::Unauthorized, "bad signature"),
        error(None, None, ErrorCode::Unauthorized, "no token"),
    ] {
        let (mut c, _) = connected(60_000);
        c.append("sessions/a", "{}".into());
        drain(&mut c);
        c.on_frame(T0 + 1, frame.clone());
        let out = drain(&mut c);
        assert_eq!((disconnects(&out), need_token(&out)), (1, 1), "{frame:?}");
        assert!(
            !out.iter().any(|o| matches!(o, Output::Appended { .. })),
            "the append waits"
        );
    }
}

#[test]
fn close_code_4003_gets_a_new_token_and_resumes() {
    let (mut c, _) = connected(60_000);
    c.on_close_code(T0 + 500, 4003, "closed by server (code 4003)");
    let out = drain(&mut c);
    assert_eq!(need_token(&out), 1);
    assert_eq!(connects(&out), 0);
    assert_eq!(changes(&out)[0].reason, "token expired (closed by server (code 4003))");
    let fresh = jwt("fresh", T0 + 600, 60_000);
    c.set_token(T0 + 600, fresh.clone());
    assert_eq!(drain(&mut c), [Output::Connect]);
    c.on_open(T0 + 610);
    assert_eq!(
        sent(&drain(&mut c))[..2],
        [auth("t2", &fresh), subscribe("s1", "sessions/a", "02")]
    );
    // Other close codes keep the token.
    c.on_close_code(T0 + 700, 1001, "closed by server (code 1001)");
    let out = drain(&mut c);
    assert_eq!((need_token(&out), connects(&out)), (0, 1));
}

#[test]
fn a_token_the_server_keeps_refusing_backs_off() {
    let (mut c, _) = connected(60_000);
    let mut now = T0;
    let mut delays = Vec::new();
    for i in 0..6 {
        c.on_frame(now, error(None, None, ErrorCode::Unauthorized, "bad signature"));
        let out = drain(&mut c);
        let d = changes(&out)[0].retry_in_ms.unwrap();
        delays.push(d);
        now += d;
        c.on_timer(now);
        drain(&mut c);
        c.set_token(now, jwt(&format!("again{i}"), now, 60_000));
        c.on_open(now);
        drain(&mut c);
    }
    assert_eq!(delays[0], 0);
    assert!(delays[1..].iter().sum::<u64>() > 0, "{delays:?}");
    assert!(delays.iter().all(|d| *d <= 1_000));
    // A working token (events flow) resets the count.
    c.on_frame(now, events("s1", &["03"]));
    c.on_frame(now, error(None, None, ErrorCode::Unauthorized, "expired"));
    assert_eq!(changes(&drain(&mut c))[0].retry_in_ms, Some(0));
}

#[test]
fn an_auth_refused_on_the_live_connection_reconnects_with_a_new_token() {
    let (mut c, _) = connected(8_000);
    c.on_timer(T0 + 6_000);
    drain(&mut c);
    c.set_token(T0 + 6_001, jwt("other-principal", T0, 60_000));
    drain(&mut c);
    c.on_frame(
        T0 + 6_010,
        error(None, Some("t2"), ErrorCode::Forbidden, "the principal changed"),
    );
    let out = drain(&mut c);
    assert_eq!((disconnects(&out), need_token(&out)), (1, 1));
}

#[test]
fn forbidden_ends_only_its_subscription_and_is_reported() {
    let (mut c, _) = connected(60_000);
    let b = c.subscribe("sessions/b", SubscribeOptions::default());
    drain(&mut c);
    c.on_frame(
        T0 + 1,
        error(
            Some("s2"),
            None,
            ErrorCode::Forbidden,
            "the token of ada has no read right on sessions/b",
        ),
    );
    let out = drain(&mut c);
    assert_eq!(
        out[0],
        Output::Event {
            sub: b,
            event: SubscriptionEvent::Error(ClientError::new(
                "forbidden",
                "the token of ada has no read right on sessions/b"
            ))
        }
    );
    let [change] = &changes(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (change.state, change.previous, change.reason.as_str()),
        (
            ConnectionState::Connected,
            ConnectionState::Connected,
            "forbidden: sessions/b"
        )
    );
    assert_eq!(change.error, Some(ClientError::new("forbidden", "sessions/b")));
    assert_eq!((disconnects(&out), need_token(&out), sent(&out).len()), (0, 0, 0));
    // The other subscription goes on, and only it is resumed after a drop.
    c.on_frame(T0 + 2, events("s1", &["03"]));
    assert_eq!(drain(&mut c).len(), 1);
    c.on_close(T0 + 3, "connection lost");
    c.on_open(T0 + 4);
    let frames = sent(&drain(&mut c));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[1], subscribe("s1", "sessions/a", "03"));
}

#[test]
fn a_create_the_token_does_not_allow_still_subscribes() {
    let (mut c, _) = connected(60_000);
    c.subscribe(
        "sessions/read-only",
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
    );
    drain(&mut c);
    c.on_frame(
        T0 + 1,
        error(
            None,
            Some("c2"),
            ErrorCode::Forbidden,
            "no create right on sessions/read-only",
        ),
    );
    assert_eq!(sent(&drain(&mut c)), [subscribe("s2", "sessions/read-only", "-1")]);
}

#[test]
fn forbidden_on_an_append_fails_it_and_a_stale_epoch_still_bumps() {
    let (mut c, _) = connected(60_000);
    let id = c.append(
        "sessions/a",
        r#"{"type":"user_message","id":"m","author":"eve","text":"x"}"#.into(),
    );
    let [ClientMsg::Append { req, .. }] = &sent(&drain(&mut c))[..] else {
        panic!()
    };
    c.on_frame(
        T0 + 1,
        error(
            None,
            Some(req),
            ErrorCode::Forbidden,
            "author must be ada, the token's subject",
        ),
    );
    let out = drain(&mut c);
    assert_eq!(
        out,
        [Output::Appended {
            id,
            result: Err(ClientError::new("forbidden", "author must be ada, the token's subject"))
        }]
    );
    c.append("sessions/a", "{}".into());
    let [ClientMsg::Append { req, .. }] = &sent(&drain(&mut c))[..] else {
        panic!()
    };
    c.on_frame(
        T0 + 2,
        error(
            None,
            Some(req),
            ErrorCode::StaleEpoch,
            "producer epoch is stale (current epoch is 1)",
        ),
    );
    let [ClientMsg::Append { producer: Some(p), .. }] = &sent(&drain(&mut c))[..] else {
        panic!()
    };
    assert_eq!((p.epoch, p.seq), (1, 0));
}

#[test]
fn a_failing_token_function_backs_off_and_is_reported() {
    let mut c = ClientCore::new(opts());
    c.start(T0);
    assert_eq!(need_token(&drain(&mut c)), 1);
    let mut now = T0 + 10;
    let mut delays = Vec::new();
    for _ in 0..5 {
        c.token_failed(now, &ClientError::new("token_failed", "backend down"));
        let out = drain(&mut c);
        let [change] = &changes(&out)[..] else {
            panic!("{out:?}")
        };
        assert_eq!(change.state, ConnectionState::Disconnected);
        assert_eq!(change.reason, "token_failed: backend down");
        assert_eq!(change.error, Some(ClientError::new("token_failed", "backend down")));
        assert_eq!((connects(&out), need_token(&out)), (0, 0), "waits");
        let d = change.retry_in_ms.unwrap();
        delays.push(d);
        now += d;
        assert_eq!(c.next_timer(), Some(now));
        c.on_timer(now);
        let out = drain(&mut c);
        assert_eq!((connects(&out), need_token(&out)), (0, 1), "asks again");
    }
    assert!(delays.iter().all(|d| *d <= 1_000));
    assert!(delays.iter().sum::<u64>() > 0, "{delays:?}");
    c.set_token(now, jwt("ok", now, 60_000));
    assert_eq!(drain(&mut c), [Output::Connect]);
}

#[test]
fn a_failed_refresh_keeps_the_connection_and_asks_again_later() {
    let (mut c, _) = connected(8_000);
    c.on_timer(T0 + 6_000);
    drain(&mut c);
    c.token_failed(T0 + 6_010, &ClientError::new("token_failed", "backend down"));
    let out = drain(&mut c);
    let [change] = &changes(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (change.state, change.previous),
        (ConnectionState::Connected, ConnectionState::Connected)
    );
    assert_eq!(change.reason, "token_failed: backend down");
    assert_eq!(disconnects(&out), 0);
    let again = c.next_timer().unwrap();
    assert!(again >= T0 + 6_510, "not sooner than 500 ms");
    c.on_timer(again);
    assert_eq!(need_token(&drain(&mut c)), 1);
}

#[test]
fn a_connect_waiting_for_a_token_times_out_and_asks_again() {
    let mut c = ClientCore::new(opts());
    c.start(T0);
    assert_eq!(need_token(&drain(&mut c)), 1);
    c.on_timer(T0 + 2_000);
    let out = drain(&mut c);
    assert_eq!(changes(&out)[0].reason, "connect timeout");
    let retry = c.next_timer().unwrap();
    c.on_timer(retry);
    assert_eq!(need_token(&drain(&mut c)), 1);
    // A late answer to the first request is still used.
    c.set_token(retry + 1, jwt("late", T0, 60_000));
    assert_eq!(drain(&mut c), [Output::Connect]);
}

#[test]
fn a_token_past_its_refresh_point_is_replaced_before_reconnecting() {
    let (mut c, _) = connected(8_000);
    c.on_close(T0 + 7_000, "connection lost");
    let out = drain(&mut c);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::NeedToken { .. }))
            .collect::<Vec<_>>(),
        [&Output::NeedToken {
            reason: "token expiring".into()
        }]
    );
    assert_eq!(connects(&out), 0);
    // Before that point, a reconnect reuses it.
    let (mut c, _) = connected(8_000);
    c.on_close(T0 + 1_000, "connection lost");
    let out = drain(&mut c);
    assert_eq!((need_token(&out), connects(&out)), (0, 1));
}

#[test]
fn unreadable_tokens_are_used_as_is_and_replaced_only_when_refused() {
    let mut c = ClientCore::new(opts());
    c.start(T0);
    drain(&mut c);
    c.set_token(T0, "opaque".into());
    drain(&mut c);
    c.on_open(T0);
    drain(&mut c);
    assert_eq!(c.next_timer(), Some(T0 + 60_000), "only the ping: no refresh timer");
    c.on_frame(T0 + 1, error(None, None, ErrorCode::Unauthorized, "expired"));
    assert_eq!(need_token(&drain(&mut c)), 1);
}

#[test]
fn without_auth_unauthorized_ends_the_subscription_instead_of_looping() {
    let mut o = opts();
    o.auth = false;
    let mut c = ClientCore::new(o);
    let a = c.subscribe("sessions/a", SubscribeOptions::default());
    c.start(T0);
    c.on_open(T0);
    drain(&mut c);
    c.on_frame(
        T0 + 1,
        error(Some("s1"), None, ErrorCode::Unauthorized, "an access token is required"),
    );
    let out = drain(&mut c);
    assert_eq!(
        out[0],
        Output::Event {
            sub: a,
            event: SubscriptionEvent::Error(ClientError::new("unauthorized", "an access token is required"))
        }
    );
    assert_eq!(changes(&out)[0].reason, "unauthorized: sessions/a");
    assert_eq!((disconnects(&out), need_token(&out)), (0, 0));
}
