//! Fault paths of the client state machine: transient errors retried with
//! backoff on both transports, permanent ones ending only what they concern,
//! oversized appends, and control events that never wait behind content.

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ServerMsg};

use super::*;

use super::tests::{drain, opts, sent};

fn changes(outputs: &[Output]) -> Vec<StateChange> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::State(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn sub_events(outputs: &[Output]) -> Vec<SubscriptionEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn appended(outputs: &[Output]) -> Vec<(AppendId, Result<AppendAck, ClientError>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Appended { id, result } => Some((*id, result.clone())),
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

fn connected() -> ClientCore {
    let mut c = ClientCore::new(opts());
    c.start(0);
    c.on_open(0);
    drain(&mut c);
    c
}

fn append_req(m: &ClientMsg) -> (String, String, u64, u64) {
    match m {
        ClientMsg::Append {
            req, producer: Some(p), ..
        } => (req.clone(), p.id.clone(), p.epoch, p.seq),
        other => panic!("not an append: {other:?}"),
    }
}

/// Runs the retry timer to the next connect and opens the link.
fn reconnect(c: &mut ClientCore, now: u64) -> Vec<Output> {
    let at = c.next_timer().expect("a retry is scheduled");
    assert!(at >= now);
    c.on_timer(at);
    let mut out = drain(c);
    assert!(out.contains(&Output::Connect), "{out:?}");
    c.on_open(at);
    out.extend(drain(c));
    out
}

#[test]
fn an_internal_error_on_a_subscription_is_retried_from_its_offset() {
    let mut c = connected();
    let a = c.subscribe("a", SubscribeOptions::default());
    let b = c.subscribe("b", SubscribeOptions::default());
    drain(&mut c);
    c.on_frame(1, events("s1", &["03"]));
    c.on_frame(1, events("s2", &["07"]));
    drain(&mut c);
    c.on_frame(2, error(Some("s1"), None, ErrorCode::Internal, "storage failure"));
    let out = drain(&mut c);
    assert!(sub_events(&out).is_empty(), "the app hears no error: {out:?}");
    assert!(out.contains(&Output::Disconnect {
        reason: "internal: storage failure".into()
    }));
    let [change] = &changes(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(change.state, ConnectionState::Disconnected);
    assert_eq!(change.reason, "internal: storage failure");
    let delay = change.retry_in_ms.unwrap();
    assert!(delay <= 100, "backs off from the first ceiling: {delay}");
    let out = reconnect(&mut c, 2);
    // Both subscriptions resume where they were.
    assert_eq!(
        sent(&out),
        [
            ClientMsg::Subscribe {
                sub: "s1".into(),
                path: "a".into(),
                offset: "03".into()
            },
            ClientMsg::Subscribe {
                sub: "s2".into(),
                path: "b".into(),
                offset: "07".into()
            },
        ]
    );
    assert_eq!(c.offset(a), Some("03"));
    assert_eq!(c.offset(b), Some("07"));
}

#[test]
fn an_internal_error_on_an_append_resends_it_with_the_same_producer_ids() {
    let mut c = connected();
    let id = c.append("s", "{}".into());
    let first = sent(&drain(&mut c));
    let (req, ..) = append_req(&first[0]);
    c.on_frame(1, error(None, Some(&req), ErrorCode::Internal, "disk full"));
    let out = drain(&mut c);
    assert!(appended(&out).is_empty(), "not failed: {out:?}");
    assert_eq!(c.state(), ConnectionState::Disconnected);
    let again = sent(&reconnect(&mut c, 1));
    assert_eq!(again, first, "the same request: stored once");
    c.on_frame(
        5_000,
        ServerMsg::Ack {
            req,
            offset: "09".into(),
            duplicate: true,
            closed: false,
        },
    );
    assert_eq!(
        appended(&drain(&mut c)),
        [(
            id,
            Ok(AppendAck {
                offset: "09".into(),
                duplicate: true
            })
        )]
    );
}

#[test]
fn an_internal_error_for_a_create_is_retried_too() {
    let mut c = connected();
    c.subscribe(
        "sessions/x",
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
    );
    drain(&mut c);
    c.on_frame(1, error(None, Some("c1"), ErrorCode::Internal, "busy"));
    let out = drain(&mut c);
    assert!(sub_events(&out).is_empty());
    assert!(matches!(&sent(&reconnect(&mut c, 1))[..], [ClientMsg::Create { req, .. }] if req == "c1"));
}

/// The HTTP link: a 503 answered to every request (a proxy in front of a
/// restarting server). The link opens at once each time, yet the delays
/// grow, `Retry-After` is honoured, the state never claims `connected`
/// between failures once probing (`faults() > 0`), it becomes `suspended`
/// after `suspend_after_ms`, and one answered ping ends it all.
#[test]
fn transient_link_faults_back_off_and_honour_retry_after() {
    let mut c = connected();
    c.subscribe("a", SubscribeOptions::default());
    drain(&mut c);
    let mut now = 10;
    c.on_fault(now, "HTTP 503", None);
    let mut ceilings = Vec::new();
    let mut states = Vec::new();
    let mut round = 0;
    while now < 12_000 {
        let out = drain(&mut c);
        for ch in changes(&out) {
            states.push(ch.state);
            if let Some(d) = ch.retry_in_ms {
                ceilings.push(d);
                if round == 3 {
                    assert!(d >= 700, "Retry-After honoured: {d}");
                }
            }
        }
        now = c.next_timer().unwrap();
        c.on_timer(now);
        states.extend(changes(&drain(&mut c)).iter().map(|ch| ch.state));
        assert!(c.faults() > 0);
        // The transport probes before opening: the probe fails too.
        let retry_after = (round == 2).then_some(700);
        c.on_fault(now, "HTTP 503", retry_after);
        round += 1;
    }
    assert!(states.contains(&ConnectionState::Connecting));
    assert!(!states.contains(&ConnectionState::Connected), "{states:?}");
    assert!(
        states.contains(&ConnectionState::Suspended),
        "{states:?} after {now} ms"
    );
    // Attempts 1, 2, 3 …: ceilings of 100, 200, 400 … 1000 (with jitter).
    assert!(ceilings.iter().all(|d| *d <= 1_000));
    assert!(ceilings.iter().skip(5).any(|d| *d > 100), "grows: {ceilings:?}");
    // The server is back: the probe answers, the link opens and a ping is
    // answered; the next drop is retried at once again.
    now = c.next_timer().unwrap();
    c.on_timer(now);
    drain(&mut c);
    c.on_open(now);
    assert_eq!(changes(&drain(&mut c))[0].state, ConnectionState::Connected);
    c.on_frame(now + 1, ServerMsg::Pong { t: None });
    assert_eq!(c.faults(), 0);
    c.on_close(now + 2, "network changed");
    assert_eq!(changes(&drain(&mut c))[0].retry_in_ms, Some(0));
}

#[test]
fn permanent_errors_end_only_their_subscription_and_never_retry() {
    for code in [
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::BadRequest,
        ErrorCode::BadOffset,
        ErrorCode::TooLarge,
    ] {
        let mut c = connected();
        let bad = c.subscribe("bad", SubscribeOptions::default());
        c.subscribe("good", SubscribeOptions::default());
        drain(&mut c);
        c.on_frame(1, error(Some("s1"), None, code, "no"));
        let out = drain(&mut c);
        assert!(
            out.contains(&Output::Event {
                sub: bad,
                event: SubscriptionEvent::Error(ClientError::new(code.as_str(), "no"))
            }),
            "{code:?}: {out:?}"
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
        assert_eq!(c.state(), ConnectionState::Connected);
        // It stays ended across a reconnect; the other one resumes.
        c.on_close(2, "drop");
        c.on_open(2);
        assert!(matches!(&sent(&drain(&mut c))[..], [ClientMsg::Subscribe { path, .. }] if path == "good"));
    }
}

#[test]
fn too_large_from_the_server_fails_that_append_and_the_next_ones_go_out() {
    let mut c = connected();
    let big = c.append("s", format!("\"{}\"", "x".repeat(2_000_000)));
    let first = sent(&drain(&mut c));
    let (req, ..) = append_req(&first[0]);
    let next = c.append("s", r#"{"type":"user_message"}"#.into());
    assert!(sent(&drain(&mut c)).is_empty(), "behind the big one");
    c.on_frame(1, error(None, Some(&req), ErrorCode::TooLarge, "frame too large"));
    let out = drain(&mut c);
    let [(id, Err(e))] = &appended(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, e.code.as_str()), (big, "too_large"));
    let [m] = &sent(&out)[..] else { panic!("{out:?}") };
    let (req, _, epoch, seq) = append_req(m);
    assert_eq!((epoch, seq), (0, 0), "the refused request consumed no seq");
    c.on_frame(
        2,
        ServerMsg::Ack {
            req,
            offset: "01".into(),
            duplicate: false,
            closed: false,
        },
    );
    assert!(matches!(&appended(&drain(&mut c))[..], [(id, Ok(_))] if *id == next));
    assert_eq!(c.state(), ConnectionState::Connected);
}

#[test]
fn an_append_over_the_servers_frame_limit_fails_at_once_unsent() {
    let mut c = connected();
    c.on_frame(
        1,
        ServerMsg::Hello {
            heartbeat_ms: 15_000,
            max_frame_bytes: 1 << 20,
        },
    );
    drain(&mut c);
    let id = c.append("s", format!("\"{}\"", "x".repeat(1_500_000)));
    let out = drain(&mut c);
    assert!(sent(&out).is_empty(), "never sent");
    let [(i, Err(e))] = &appended(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!((*i, e.code.as_str()), (id, "too_large"));
    assert_eq!(c.pending_appends(), 0);
    // The limit is kept across reconnects; smaller appends go.
    c.on_close(2, "drop");
    c.on_open(2);
    drain(&mut c);
    c.append("s", format!("\"{}\"", "x".repeat(1_000_000)));
    assert_eq!(sent(&drain(&mut c)).len(), 1);
}

#[test]
fn a_cancel_goes_out_while_a_message_awaits_its_ack() {
    let mut c = connected();
    c.append("sessions/a", r#"{"type":"user_message","id":"m","text":"long"}"#.into());
    let msg = sent(&drain(&mut c));
    let cancel = c.append_in(
        "sessions/a",
        r#"{"type":"cancel","run_id":"r","by":"me"}"#.into(),
        Lane::Control,
    );
    let out = sent(&drain(&mut c));
    let [frame] = &out[..] else {
        panic!("the cancel is sent at once: {out:?}")
    };
    let (req, producer, epoch, seq) = append_req(frame);
    assert_eq!((producer.as_str(), epoch, seq), ("p-control", 0, 0));
    c.on_frame(
        1,
        ServerMsg::Ack {
            req,
            offset: "05".into(),
            duplicate: false,
            closed: false,
        },
    );
    assert!(matches!(&appended(&drain(&mut c))[..], [(id, Ok(_))] if *id == cancel));
    assert_eq!(c.pending_appends(), 1, "the message still waits for its ack");
    let (msg_req, producer, ..) = append_req(&msg[0]);
    assert_eq!(producer, "p");
    c.on_frame(
        2,
        ServerMsg::Ack {
            req: msg_req,
            offset: "06".into(),
            duplicate: false,
            closed: false,
        },
    );
    assert_eq!(c.pending_appends(), 0);
}

/// A session opened and written to at once (`create: true`, then a send):
/// the append waits for the create's acknowledgement. Over WebSocket the
/// server applies frames in order anyway, but over HTTP the `POST` could
/// overtake the `PUT` and find no stream (`not_found`), which is what made a
/// browser test flaky on a busy machine.
#[test]
fn appends_to_a_stream_being_created_wait_for_the_create() {
    let mut c = connected();
    c.subscribe(
        "sessions/new",
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
    );
    let id = c.append("sessions/new", r#"{"type":"user_message"}"#.into());
    c.append("sessions/other", "{}".into());
    let out = sent(&drain(&mut c));
    assert!(matches!(&out[0], ClientMsg::Create { req, .. } if req == "c1"));
    assert_eq!(out.len(), 2, "only the other stream's append goes: {out:?}");
    assert!(matches!(&out[1], ClientMsg::Append { path, .. } if path == "sessions/other"));
    c.on_frame(
        1,
        ServerMsg::Ack {
            req: "c1".into(),
            offset: "00".into(),
            duplicate: false,
            closed: false,
        },
    );
    let out = sent(&drain(&mut c));
    assert!(
        matches!(&out[..], [ClientMsg::Subscribe { .. }, ClientMsg::Append { path, .. }] if path == "sessions/new")
    );
    // A create that fails for good releases the appends too (they then get
    // their own answer).
    let mut c = connected();
    c.subscribe(
        "sessions/bad",
        SubscribeOptions {
            create: true,
            ..Default::default()
        },
    );
    c.append("sessions/bad", "{}".into());
    drain(&mut c);
    c.on_frame(1, error(None, Some("c1"), ErrorCode::BadRequest, "invalid path"));
    let out = drain(&mut c);
    assert!(matches!(&sent(&out)[..], [ClientMsg::Append { path, .. }] if path == "sessions/bad"));
    let _ = id;
}
