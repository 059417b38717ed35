//! The client state machine driven by hand: no sockets, no clock.

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ServerMsg};

use super::*;

pub(super) fn opts() -> Options {
    let mut o = Options::new("p", 1);
    o.backoff = Backoff {
        min_ms: 100,
        max_ms: 1_000,
        factor: 2.0,
    };
    o.ping_interval_ms = 1_000;
    o.heartbeat_timeout_ms = 3_000;
    o.connect_timeout_ms = 2_000;
    o.suspend_after_ms = 10_000;
    o
}

pub(super) fn drain(core: &mut ClientCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

pub(super) fn sent(outputs: &[Output]) -> Vec<ClientMsg> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn states(outputs: &[Output]) -> Vec<(ConnectionState, Option<u64>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::State(c) => Some((c.state, c.retry_in_ms)),
            _ => None,
        })
        .collect()
}

fn delivered(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event {
                event: SubscriptionEvent::Messages(ms),
                ..
            } => Some(ms.iter().map(|m| m.offset.clone()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn msg(offset: &str) -> Message {
    Message {
        offset: offset.into(),
        payload: Payload::json(r#"{"type":"x"}"#).unwrap(),
    }
}

fn events(sub: &str, offsets: &[&str], up_to_date: bool) -> ServerMsg {
    ServerMsg::Events {
        sub: sub.into(),
        messages: offsets.iter().map(|o| msg(o)).collect(),
        next: offsets.last().map_or("00".into(), |o| (*o).into()),
        up_to_date,
        closed: false,
    }
}

fn connected() -> ClientCore {
    let mut c = ClientCore::new(opts());
    c.start(0);
    c.on_open(0);
    drain(&mut c);
    c
}

#[test]
fn connects_and_reports_each_state_with_a_reason() {
    let mut c = ClientCore::new(opts());
    c.start(0);
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![
            Output::State(StateChange {
                state: ConnectionState::Connecting,
                previous: ConnectionState::Connecting,
                reason: "connect".into(),
                retry_in_ms: None,
                error: None,
            }),
            Output::Connect,
        ]
    );
    c.on_open(10);
    assert_eq!(states(&drain(&mut c)), [(ConnectionState::Connected, None)]);
    c.close();
    let out = drain(&mut c);
    assert!(out.contains(&Output::Disconnect {
        reason: "closed by app".into()
    }));
    assert_eq!(states(&out), [(ConnectionState::Closed, None)]);
    c.on_close(20, "socket closed");
    c.on_timer(100_000);
    assert!(drain(&mut c).is_empty(), "closed is final");
}

#[test]
fn first_retry_after_a_drop_is_immediate_then_backoff_with_jitter() {
    let mut c = connected();
    c.on_close(1_000, "network error");
    let out = drain(&mut c);
    assert_eq!(
        states(&out),
        [
            (ConnectionState::Disconnected, Some(0)),
            (ConnectionState::Connecting, None)
        ]
    );
    assert!(out.contains(&Output::Connect));
    // That retry fails: now a jittered delay within the first ceiling.
    c.on_close(1_010, "refused");
    let out = drain(&mut c);
    let [(ConnectionState::Disconnected, Some(d1))] = states(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(d1 <= 100);
    assert_eq!(c.next_timer(), Some(1_010 + d1));
    c.on_timer(1_010 + d1);
    assert!(drain(&mut c).contains(&Output::Connect));
    c.on_close(1_500, "refused");
    let [(ConnectionState::Disconnected, Some(d2))] = states(&drain(&mut c))[..] else {
        panic!()
    };
    assert!(d2 <= 200);
}

#[test]
fn long_outages_become_suspended_and_online_retries_at_once() {
    let mut c = connected();
    let mut now = 1_000;
    c.on_close(now, "network error");
    drain(&mut c);
    loop {
        now += 2_500;
        c.on_timer(now);
        c.on_close(now, "refused");
        let out = drain(&mut c);
        if states(&out).iter().any(|(s, _)| *s == ConnectionState::Suspended) {
            assert_eq!(states(&out).last(), Some(&(ConnectionState::Suspended, Some(1_000))));
            break;
        }
        assert!(now < 20_000, "suspends after 10 s");
    }
    assert!(now - 1_000 >= 10_000);
    c.check_connection(now + 1, "online");
    assert!(drain(&mut c).contains(&Output::Connect));
    c.on_open(now + 2);
    assert_eq!(c.state(), ConnectionState::Connected);
}

#[test]
fn heartbeat_timeout_declares_a_silent_link_dead() {
    let mut c = connected();
    c.on_timer(1_000);
    assert_eq!(sent(&drain(&mut c)), [ClientMsg::Ping { t: Some(1_000) }]);
    // Frames keep it alive.
    c.on_frame(2_500, ServerMsg::Pong { t: Some(1_000) });
    c.on_timer(5_000);
    assert_eq!(c.state(), ConnectionState::Connected);
    drain(&mut c);
    // Then silence (a half-dead link reports nothing): dead after 3 s.
    c.on_timer(5_499);
    assert_eq!(c.state(), ConnectionState::Connected);
    c.on_timer(5_500);
    let out = drain(&mut c);
    assert!(out.contains(&Output::Disconnect {
        reason: "heartbeat timeout".into()
    }));
    assert!(out.contains(&Output::Connect), "and retries at once");
}

#[test]
fn a_probe_without_answer_drops_the_link() {
    let mut c = connected();
    c.check_connection(100, "visible");
    assert_eq!(sent(&drain(&mut c)), [ClientMsg::Ping { t: Some(100) }]);
    c.on_timer(100 + 3_000);
    assert!(drain(&mut c).contains(&Output::Disconnect {
        reason: "heartbeat timeout".into()
    }));
}

#[test]
fn subscriptions_resume_from_their_last_offset_exactly_once() {
    let mut c = connected();
    let a = c.subscribe("a", SubscribeOptions::default());
    let b = c.subscribe(
        "b",
        SubscribeOptions {
            start: StartFrom::Now.into(),
            ..Default::default()
        },
    );
    let subs = sent(&drain(&mut c));
    assert_eq!(
        subs,
        [
            ClientMsg::Subscribe {
                sub: "s1".into(),
                path: "a".into(),
                offset: "-1".into()
            },
            ClientMsg::Subscribe {
                sub: "s2".into(),
                path: "b".into(),
                offset: "now".into()
            },
        ]
    );
    c.on_frame(1, events("s1", &["01", "02"], false));
    c.on_frame(2, events("s1", &["03"], true));
    c.on_frame(3, events("s2", &[], true));
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["01", "02", "03"]);
    assert!(out.contains(&Output::Event {
        sub: a,
        event: SubscriptionEvent::UpToDate { offset: "03".into() }
    }));
    assert!(out.contains(&Output::Event {
        sub: b,
        event: SubscriptionEvent::UpToDate { offset: "00".into() }
    }));

    // Drop and reconnect: each subscription resumes from its own offset.
    c.on_close(10, "network error");
    c.on_open(11);
    let resub = sent(&drain(&mut c));
    assert_eq!(
        resub,
        [
            ClientMsg::Subscribe {
                sub: "s1".into(),
                path: "a".into(),
                offset: "03".into()
            },
            ClientMsg::Subscribe {
                sub: "s2".into(),
                path: "b".into(),
                offset: "00".into()
            },
        ]
    );
    // A frame replaying old messages, duplicates and out-of-order ones.
    c.on_frame(12, events("s1", &["02", "03", "04"], false));
    c.on_frame(13, events("s1", &["04", "05"], true));
    c.on_frame(14, events("s1", &["05"], true));
    assert_eq!(delivered(&drain(&mut c)), ["04", "05"]);
    assert_eq!(c.offset(a), Some("05"));
}

#[test]
fn frames_for_unknown_or_ended_subscriptions_are_ignored() {
    let mut c = connected();
    let a = c.subscribe("a", SubscribeOptions::default());
    drain(&mut c);
    c.unsubscribe(a);
    assert_eq!(sent(&drain(&mut c)), [ClientMsg::Unsubscribe { sub: "s1".into() }]);
    c.on_frame(1, events("s1", &["01"], true));
    c.on_frame(1, events("zz", &["01"], true));
    assert!(delivered(&drain(&mut c)).is_empty());
}

#[test]
fn gone_resets_per_policy_and_errors_end_the_subscription() {
    let mut c = connected();
    let a = c.subscribe("a", SubscribeOptions::default());
    let b = c.subscribe(
        "b",
        SubscribeOptions {
            reset: ResetPolicy::Stop,
            ..Default::default()
        },
    );
    let m = c.subscribe("missing", SubscribeOptions::default());
    drain(&mut c);
    c.on_frame(1, events("s1", &["05"], true));
    drain(&mut c);
    c.on_frame(
        2,
        ServerMsg::Error {
            sub: Some("s1".into()),
            req: None,
            code: ErrorCode::Gone,
            message: "offset gone".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&Output::Event {
        sub: a,
        event: SubscriptionEvent::Reset {
            reason: "offset gone".into()
        }
    }));
    assert_eq!(
        sent(&out),
        [ClientMsg::Subscribe {
            sub: "s1".into(),
            path: "a".into(),
            offset: "-1".into()
        }],
        "never a silent jump"
    );
    c.on_frame(
        3,
        ServerMsg::Error {
            sub: Some("s2".into()),
            req: None,
            code: ErrorCode::Gone,
            message: "gone".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&Output::Event {
        sub: b,
        event: SubscriptionEvent::Reset { reason: "gone".into() }
    }));
    assert!(sent(&out).is_empty());
    c.on_frame(
        4,
        ServerMsg::Error {
            sub: Some("s3".into()),
            req: None,
            code: ErrorCode::NotFound,
            message: "stream not found".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&Output::Event {
        sub: m,
        event: SubscriptionEvent::Error(ClientError::new("not_found", "stream not found"))
    }));
    // Ended subscriptions are not resubscribed after a reconnect.
    c.on_close(5, "drop");
    c.on_open(6);
    let resub = sent(&drain(&mut c));
    assert_eq!(resub.len(), 1);
}

#[test]
fn not_found_after_reading_is_a_delete_and_resets() {
    // A stream deleted under a live subscription: the server answers
    // `not_found` until the stream is created again. The subscription's
    // offset names nothing any more — a reset, as with `gone`, not an end.
    let mut c = connected();
    let a = c.subscribe("a", SubscribeOptions::default());
    drain(&mut c);
    c.on_frame(1, events("s1", &["05"], true));
    drain(&mut c);
    let not_found = |t| {
        (
            t,
            ServerMsg::Error {
                sub: Some("s1".into()),
                req: None,
                code: ErrorCode::NotFound,
                message: "stream not found".into(),
            },
        )
    };
    let (t, e) = not_found(2);
    c.on_frame(t, e);
    let out = drain(&mut c);
    assert!(out.contains(&Output::Event {
        sub: a,
        event: SubscriptionEvent::Reset {
            reason: "stream not found".into()
        }
    }));
    assert_eq!(
        sent(&out),
        [ClientMsg::Subscribe {
            sub: "s1".into(),
            path: "a".into(),
            offset: "-1".into()
        }]
    );
    // Still missing when it starts over: now that is final.
    let (t, e) = not_found(3);
    c.on_frame(t, e);
    let out = drain(&mut c);
    assert!(out.contains(&Output::Event {
        sub: a,
        event: SubscriptionEvent::Error(ClientError::new("not_found", "stream not found"))
    }));
    assert!(sent(&out).is_empty());
}

#[test]
fn create_is_confirmed_before_subscribing() {
    let mut c = connected();
    c.subscribe(
        "sessions/x",
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
    );
    let out = sent(&drain(&mut c));
    assert_eq!(
        out,
        [ClientMsg::Create {
            req: "c1".into(),
            path: "sessions/x".into(),
            content_type: None
        }]
    );
    c.on_frame(
        1,
        ServerMsg::Ack {
            req: "c1".into(),
            offset: "00".into(),
            duplicate: false,
            closed: false,
        },
    );
    assert!(matches!(&sent(&drain(&mut c))[..], [ClientMsg::Subscribe { offset, .. }] if offset == "-1"));
    // After a reconnect it is not created again.
    c.on_close(2, "drop");
    c.on_open(3);
    assert!(matches!(&sent(&drain(&mut c))[..], [ClientMsg::Subscribe { .. }]));
}

#[test]
fn appends_wait_while_offline_and_retry_without_duplicates() {
    let mut c = ClientCore::new(opts());
    c.start(0);
    drain(&mut c);
    let id = c.append("s", r#"{"type":"cancel","run_id":"r","by":"me"}"#.into());
    assert!(sent(&drain(&mut c)).is_empty(), "queued while connecting");
    c.on_open(1);
    let first = sent(&drain(&mut c));
    let [
        ClientMsg::Append {
            req, producer: Some(p), ..
        },
    ] = &first[..]
    else {
        panic!("{first:?}")
    };
    assert_eq!((p.epoch, p.seq), (0, 0));
    // The connection drops before the ack arrives: the same request again.
    c.on_close(2, "drop");
    c.on_open(3);
    let again = sent(&drain(&mut c));
    assert_eq!(again, first);
    c.on_frame(
        4,
        ServerMsg::Ack {
            req: req.clone(),
            offset: "07".into(),
            duplicate: true,
            closed: false,
        },
    );
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![Output::Appended {
            id,
            result: Ok(AppendAck {
                offset: "07".into(),
                duplicate: true
            })
        }]
    );
    assert_eq!(c.pending_appends(), 0);
    // The next append uses the next seq.
    c.append("s", "{}".into());
    let [ClientMsg::Append { producer: Some(p), .. }] = &sent(&drain(&mut c))[..] else {
        panic!()
    };
    assert_eq!((p.epoch, p.seq), (0, 1));
}

#[test]
fn close_fails_pending_appends() {
    let mut c = connected();
    let id = c.append("s", "{}".into());
    drain(&mut c);
    c.close();
    let out = drain(&mut c);
    assert!(out.contains(&Output::Appended {
        id,
        result: Err(ClientError::new("client_closed", "the client was closed"))
    }));
    let late = c.append("s", "{}".into());
    assert!(matches!(&drain(&mut c)[..], [Output::Appended { id, result: Err(_) }] if *id == late));
}

#[test]
fn answers_server_pings() {
    let mut c = connected();
    c.on_frame(1, ServerMsg::Ping { t: Some(9) });
    assert_eq!(sent(&drain(&mut c)), [ClientMsg::Pong { t: Some(9) }]);
}

#[test]
fn a_connect_attempt_times_out() {
    let mut c = ClientCore::new(opts());
    c.start(0);
    drain(&mut c);
    assert_eq!(c.next_timer(), Some(2_000));
    c.on_timer(2_000);
    let out = drain(&mut c);
    assert!(out.contains(&Output::Disconnect {
        reason: "connect timeout".into()
    }));
    assert_eq!(c.state(), ConnectionState::Disconnected);
}
