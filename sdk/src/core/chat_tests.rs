//! Property tests of the chat view against docs/protocol.md §11.
//!
//! Random sessions — a few runs interleaved, with duplicates, events after
//! the end, control events for runs nobody started and types this version
//! does not know — are folded by [`ChatView`] and by [`reference`], a
//! deliberately naive fold written sentence by sentence from §11 (quadratic,
//! no state carried from one event to the next). Both must agree on every
//! prefix, however the events are delivered.

use durable_session_protocol::ws::{Message, Payload};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use super::*;
use crate::core::client::SubscriptionEvent;
use crate::core::session::SessionModel;

/// A generated session event, or something a reader must skip.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    User {
        id: String,
        author: String,
        text: String,
    },
    Started {
        run: String,
        agent: String,
        reply: String,
    },
    Delta {
        run: String,
        agent: String,
        delta: String,
    },
    Progress {
        run: String,
        agent: String,
        text: String,
    },
    Cancel {
        run: String,
        by: String,
    },
    Steer {
        run: String,
        text: String,
        by: String,
    },
    Applied {
        run: String,
        text: String,
    },
    Finished {
        run: String,
        status: RunState,
        reason: Option<String>,
    },
    /// Another type (passed through as an item), or valid JSON this
    /// version cannot read: a known type with a missing or unknown field
    /// value, no string type.
    Unknown(String),
}

impl Ev {
    fn json(&self) -> String {
        let v = match self {
            Ev::User { id, author, text } => {
                json!({"type": "user_message", "id": id, "author": author, "text": text})
            }
            Ev::Started { run, agent, reply } => {
                json!({"type": "run_started", "run_id": run, "agent": agent, "in_reply_to": reply})
            }
            Ev::Delta { run, agent, delta } => {
                json!({"type": "text_delta", "run_id": run, "agent": agent, "delta": delta})
            }
            Ev::Progress { run, agent, text } => {
                json!({"type": "progress", "run_id": run, "agent": agent, "text": text})
            }
            Ev::Cancel { run, by } => json!({"type": "cancel", "run_id": run, "by": by}),
            Ev::Steer { run, text, by } => {
                json!({"type": "steer", "run_id": run, "text": text, "by": by})
            }
            Ev::Applied { run, text } => json!({"type": "steer_applied", "run_id": run, "text": text}),
            Ev::Finished { run, status, reason } => {
                let mut v = json!({"type": "run_finished", "run_id": run, "status": status.as_str()});
                if let Some(r) = reason {
                    v["reason"] = json!(r);
                }
                v
            }
            Ev::Unknown(raw) => return raw.clone(),
        };
        v.to_string()
    }

    fn run(&self) -> Option<&str> {
        match self {
            Ev::Started { run, .. }
            | Ev::Delta { run, .. }
            | Ev::Progress { run, .. }
            | Ev::Cancel { run, .. }
            | Ev::Steer { run, .. }
            | Ev::Applied { run, .. }
            | Ev::Finished { run, .. } => Some(run),
            Ev::User { .. } | Ev::Unknown(_) => None,
        }
    }

    /// A run event: written by an agent (§10.1), not a control event.
    fn by_agent(&self) -> bool {
        matches!(
            self,
            Ev::Started { .. } | Ev::Delta { .. } | Ev::Progress { .. } | Ev::Applied { .. } | Ev::Finished { .. }
        )
    }
}

// ---------------------------------------------------------------------------
// The reference: §11 read literally.

/// The transcript: each message id at its first `user_message`, each run at
/// the first event an agent wrote for it.
fn reference(events: &[Ev]) -> Vec<ChatItem> {
    let mut items = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let earlier = &events[..i];
        let first_user_message = |id: &String| !earlier.iter().any(|p| matches!(p, Ev::User { id: q, .. } if q == id));
        let first_by_agent = |run| !earlier.iter().any(|p| p.by_agent() && p.run() == Some(run));
        match e {
            Ev::User { id, author, text } if first_user_message(id) => {
                items.push(ChatItem::User(UserMessage {
                    id: id.clone(),
                    author: author.clone(),
                    text: text.clone(),
                }));
            }
            e if e.by_agent() && first_by_agent(e.run().unwrap()) => {
                items.push(ChatItem::Run(reference_run(e.run().unwrap(), events)));
            }
            Ev::Unknown(raw) => {
                if let Some(event_type) = other_type(raw) {
                    items.push(ChatItem::Event(OtherEvent {
                        event_type,
                        json: raw.clone(),
                    }));
                }
            }
            _ => {}
        }
    }
    items
}

/// The `type` of an event that is not one of §11's types: it passes
/// through as an item of its own.
fn other_type(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let ty = v.get("type")?.as_str()?;
    (!SessionEvent::is_core_type(ty)).then(|| ty.to_owned())
}

/// A run from its own events, in the stream's order, up to and including
/// the first `run_finished` (nothing after the end counts).
fn reference_run(run_id: &str, events: &[Ev]) -> Run {
    let all: Vec<&Ev> = events.iter().filter(|e| e.run() == Some(run_id)).collect();
    let end = all
        .iter()
        .position(|e| matches!(e, Ev::Finished { .. }))
        .map_or(all.len(), |p| p + 1);
    let mine = &all[..end];
    let started = mine.iter().position(|e| matches!(e, Ev::Started { .. }));
    // The run's agent when its k-th event is folded: the first
    // run_started's, once there is one; before, the first agent seen writing.
    let agent_at = |k: usize| -> String {
        if let Some(s) = started.filter(|s| *s <= k) {
            let Ev::Started { agent, .. } = mine[s] else {
                unreachable!()
            };
            return agent.clone();
        }
        mine[..=k]
            .iter()
            .find_map(|e| match e {
                Ev::Delta { agent, .. } | Ev::Progress { agent, .. } => Some(agent.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let mut run = Run {
        run_id: run_id.into(),
        agent: agent_at(mine.len() - 1),
        in_reply_to: match started {
            Some(s) => match mine[s] {
                Ev::Started { reply, .. } => reply.clone(),
                _ => unreachable!(),
            },
            None => String::new(),
        },
        text: String::new(),
        state: RunState::Streaming,
        reason: None,
        cancel_requested_by: mine.iter().find_map(|e| match e {
            Ev::Cancel { by, .. } => Some(by.clone()),
            _ => None,
        }),
        steers: Vec::new(),
        lanes: Vec::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
    };
    if let Some(Ev::Finished { status, reason, .. }) = mine.last() {
        run.state = *status;
        run.reason = reason.clone();
    }
    fn lane<'a>(lanes: &'a mut Vec<Lane>, agent: &str) -> &'a mut Lane {
        if !lanes.iter().any(|l| l.agent == agent) {
            lanes.push(Lane {
                agent: agent.into(),
                text: String::new(),
                progress: Vec::new(),
            });
        }
        lanes.iter_mut().find(|l| l.agent == agent).unwrap()
    }
    for (k, e) in mine.iter().enumerate() {
        match e {
            Ev::Delta { agent, delta, .. } if *agent == agent_at(k) => run.text.push_str(delta),
            Ev::Delta { agent, delta, .. } => lane(&mut run.lanes, agent).text.push_str(delta),
            Ev::Progress { agent, text, .. } => lane(&mut run.lanes, agent).progress.push(text.clone()),
            Ev::Steer { text, by, .. } => run.steers.push(Steer {
                text: text.clone(),
                by: by.clone(),
                applied: false,
            }),
            // Marks the oldest steer with that text not marked yet, if any.
            Ev::Applied { text, .. } => {
                if let Some(s) = run.steers.iter_mut().find(|s| !s.applied && s.text == *text) {
                    s.applied = true;
                }
            }
            _ => {}
        }
    }
    run
}

// ---------------------------------------------------------------------------
// Generators: small alphabets, so ids, agents and texts collide often.

fn run_id() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["r0", "r1", "r2"]).prop_map(String::from)
}
fn agent() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["orch", "flights", "hotels"]).prop_map(String::from)
}
fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "é \"q\"", "\\n\n", ""]).prop_map(String::from)
}
fn msg_id() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["m0", "m1", "m2"]).prop_map(String::from)
}
fn who() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ada", "bob"]).prop_map(String::from)
}
fn status() -> impl Strategy<Value = RunState> {
    prop::sample::select(vec![RunState::Completed, RunState::Cancelled, RunState::Failed])
}

fn unknown(run: String, agent: String) -> impl Strategy<Value = Ev> {
    let raws = vec![
        // Known types without a field they need: unreadable.
        json!({"type": "tool_call", "run_id": run, "agent": agent, "name": "search"}).to_string(),
        json!({"type": "reasoning_delta", "run_id": run, "agent": agent}).to_string(),
        json!({"type": "app.tool_progress", "run_id": run, "agent": agent, "delta": "hm"}).to_string(),
        json!({"type": "app_reaction", "emoji": "+1"}).to_string(),
        json!({"type": "text_delta", "run_id": run, "agent": agent}).to_string(),
        // No status: unreadable (a status it does not know would end the run).
        json!({"type": "run_finished", "run_id": run}).to_string(),
        json!({"type": "cancel", "run_id": 7, "by": "ada"}).to_string(),
        json!({"type": "user_message", "id": "m0"}).to_string(),
        json!({"no_type": true}).to_string(),
        json!({"type": 3}).to_string(),
        "[1,2]".to_string(),
    ];
    prop::sample::select(raws).prop_map(Ev::Unknown)
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        2 => (msg_id(), who(), word()).prop_map(|(id, author, text)| Ev::User { id, author, text }),
        3 => (run_id(), agent(), msg_id()).prop_map(|(run, agent, reply)| Ev::Started { run, agent, reply }),
        6 => (run_id(), agent(), word()).prop_map(|(run, agent, delta)| Ev::Delta { run, agent, delta }),
        2 => (run_id(), agent(), word()).prop_map(|(run, agent, text)| Ev::Progress { run, agent, text }),
        2 => (run_id(), who()).prop_map(|(run, by)| Ev::Cancel { run, by }),
        2 => (run_id(), word(), who()).prop_map(|(run, text, by)| Ev::Steer { run, text, by }),
        2 => (run_id(), word()).prop_map(|(run, text)| Ev::Applied { run, text }),
        2 => (run_id(), status(), prop::option::of(word()))
            .prop_map(|(run, status, reason)| Ev::Finished { run, status, reason }),
        1 => (run_id(), agent()).prop_flat_map(|(r, a)| unknown(r, a)),
    ]
}

/// Copies of some events again, later in the stream (same event, another offset).
fn with_duplicates(events: Vec<Ev>, dups: Vec<(Index, Index)>) -> Vec<Ev> {
    let mut events = events;
    for (from, to) in dups {
        if events.is_empty() {
            break;
        }
        let i = from.index(events.len());
        let at = i + 1 + to.index(events.len() - i);
        let copy = events[i].clone();
        events.insert(at, copy);
    }
    events
}

/// Any mix of events (most sessions here break some rule of §11).
fn soup() -> impl Strategy<Value = Vec<Ev>> {
    (
        prop::collection::vec(event(), 0..60),
        prop::collection::vec((any::<Index>(), any::<Index>()), 0..8),
    )
        .prop_map(|(events, dups)| with_duplicates(events, dups))
}

/// One run as an agent writes it: `run_started` (sometimes missing or
/// late), a body of deltas, progress and steers, `run_finished` (sometimes
/// missing), then stray events after the end.
fn script(run: &'static str, reply: &'static str) -> impl Strategy<Value = Vec<Ev>> {
    let body = prop_oneof![
        5 => (agent(), word()).prop_map(move |(agent, delta)| Ev::Delta { run: run.into(), agent, delta }),
        2 => (agent(), word()).prop_map(move |(agent, text)| Ev::Progress { run: run.into(), agent, text }),
        1 => who().prop_map(move |by| Ev::Cancel { run: run.into(), by }),
        1 => (word(), who()).prop_map(move |(text, by)| Ev::Steer { run: run.into(), text, by }),
        1 => word().prop_map(move |text| Ev::Applied { run: run.into(), text }),
    ];
    let finished = (status(), prop::option::of(word())).prop_map(move |(status, reason)| Ev::Finished {
        run: run.into(),
        status,
        reason,
    });
    (
        agent(),
        0..3usize,
        prop::collection::vec(body.clone(), 0..12),
        prop::option::weighted(0.8, finished),
        prop::collection::vec(body, 0..3),
        any::<bool>(),
    )
        .prop_map(move |(agent, start_at, body, finished, after, finished_twice)| {
            let mut events = body;
            events.insert(
                start_at.min(events.len()),
                Ev::Started {
                    run: run.into(),
                    agent,
                    reply: reply.into(),
                },
            );
            if let Some(f) = finished {
                events.push(f.clone());
                events.extend(after);
                if finished_twice {
                    events.push(f);
                }
            }
            events
        })
}

/// A few runs answering a few messages, interleaved at random (each run's
/// own events keep their order), with duplicates, control events for a run
/// nobody starts and unknown types.
fn interleaved() -> impl Strategy<Value = Vec<Ev>> {
    let lanes = (
        (who(), word()).prop_map(|(author, text)| {
            vec![
                Ev::User {
                    id: "m0".into(),
                    author: author.clone(),
                    text: text.clone(),
                },
                Ev::User {
                    id: "m1".into(),
                    author,
                    text,
                },
            ]
        }),
        script("r0", "m0"),
        script("r1", "m1"),
        script("r2", "m1"),
        prop::collection::vec(
            prop_oneof![
                (word(), who()).prop_map(|(text, by)| Ev::Steer {
                    run: "ghost".into(),
                    text,
                    by
                }),
                who().prop_map(|by| Ev::Cancel {
                    run: "ghost".into(),
                    by
                }),
                (run_id(), agent()).prop_flat_map(|(r, a)| unknown(r, a)),
            ],
            0..4,
        ),
    );
    (
        lanes,
        prop::collection::vec(any::<Index>(), 0..80),
        prop::collection::vec((any::<Index>(), any::<Index>()), 0..6),
    )
        .prop_map(|((users, r0, r1, r2, noise), picks, dups)| {
            let mut queues: Vec<std::collections::VecDeque<Ev>> =
                vec![users.into(), r0.into(), r1.into(), r2.into(), noise.into()];
            let mut events = Vec::new();
            let mut picks = picks.into_iter();
            loop {
                queues.retain(|q| !q.is_empty());
                if queues.is_empty() {
                    break;
                }
                let q = picks.next().map_or(0, |p| p.index(queues.len()));
                events.push(queues[q].pop_front().unwrap());
            }
            with_duplicates(events, dups)
        })
}

fn fold(events: &[Ev]) -> ChatView {
    let mut v = ChatView::default();
    for e in events {
        v.apply_json(&e.json());
    }
    v
}

/// Splits `n` events into batches of the given sizes (the rest in one).
fn batches(n: usize, sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in sizes {
        if at >= n {
            break;
        }
        let end = (at + s).min(n);
        out.push(at..end);
        at = end;
    }
    if at < n {
        out.push(at..n);
    }
    out
}

fn messages(events: &[Ev], range: std::ops::Range<usize>) -> SubscriptionEvent {
    SubscriptionEvent::Messages(
        range
            .map(|i| Message {
                offset: format!("{i:016}"),
                payload: Payload::json(&events[i].json()).unwrap(),
            })
            .collect(),
    )
}

/// `cases` per property; failures are shrunk and printed, not saved to files.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The view is §11's fold, on any mix of events.
    #[test]
    fn matches_the_reference_fold(events in soup()) {
        let v = fold(&events);
        prop_assert_eq!(v.items(), &reference(&events)[..]);
        prop_assert_eq!(v.events_seen(), events.len() as u64);
    }

    /// The view is §11's fold, on sessions shaped like real ones.
    #[test]
    fn matches_the_reference_fold_on_interleaved_runs(events in interleaved()) {
        let v = fold(&events);
        prop_assert_eq!(v.items(), &reference(&events)[..]);
    }

    /// Each event changes at most the one item it reports (and adds only at
    /// the end): what a binding re-renders per event is that item, never
    /// the transcript.
    #[test]
    fn an_event_changes_only_the_item_it_reports(events in prop_oneof![soup(), interleaved()]) {
        let mut v = ChatView::default();
        for e in &events {
            let before = v.items().to_vec();
            let folded = v.apply_json(&e.json());
            let after = v.items();
            match folded {
                Folded::Item(i) => {
                    prop_assert!(after.len() == before.len() || (after.len() == before.len() + 1 && i == before.len()));
                    for (j, item) in before.iter().enumerate() {
                        if j != i {
                            prop_assert_eq!(&after[j], item, "item {} changed by {:?}, reported {}", j, e, i);
                        }
                    }
                }
                Folded::Unchanged | Folded::Skipped => prop_assert_eq!(after, &before[..], "{:?}", e),
            }
        }
    }

    /// Once a run has ended, no later event changes anything about it.
    #[test]
    fn a_finished_run_never_changes(events in prop_oneof![soup(), interleaved()]) {
        let mut v = ChatView::default();
        let mut finished: Vec<Run> = Vec::new();
        for e in &events {
            v.apply_json(&e.json());
            for run in &finished {
                prop_assert_eq!(v.run(&run.run_id), Some(run), "after {:?}", e);
            }
            if let Some(run) = e.run().and_then(|r| v.run(r))
                && run.state != RunState::Streaming
                && !finished.iter().any(|f| f.run_id == run.run_id)
            {
                finished.push(run.clone());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Delivered in batches of any size, with a snapshot restored between
    /// two of them, the view after each batch is the fold of everything so
    /// far, and the end result is exactly the view of one fold of the whole.
    #[test]
    fn incremental_application_is_exact(
        events in prop_oneof![soup(), interleaved()],
        sizes in prop::collection::vec(0..12usize, 0..20),
        restore_after in any::<Index>(),
    ) {
        let whole = fold(&events);
        let batches = batches(events.len(), &sizes);
        let restore_after = restore_after.index(batches.len().max(1));
        let mut model = SessionModel::default();
        for (b, range) in batches.into_iter().enumerate() {
            let end = range.end;
            model.apply(messages(&events, range));
            prop_assert_eq!(model.view().items(), &reference(&events[..end])[..]);
            // A reload: the model comes back from its snapshot (none before
            // the first event).
            if b == restore_after && let Some(snapshot) = model.snapshot() {
                model = SessionModel::restore(&snapshot).unwrap();
            }
        }
        prop_assert_eq!(model.view(), &whole);
    }

    /// Runs exist only where an agent wrote for them: a `cancel` or `steer`
    /// alone never makes one, whatever came before.
    #[test]
    fn control_events_never_create_runs(events in prop_oneof![soup(), interleaved()]) {
        let mut v = ChatView::default();
        for (i, e) in events.iter().enumerate() {
            v.apply_json(&e.json());
            let seen = &events[..=i];
            for item in v.items() {
                if let ChatItem::Run(r) = item {
                    prop_assert!(
                        seen.iter().any(|p| p.by_agent() && p.run() == Some(r.run_id.as_str())),
                        "run {} made by control events alone", r.run_id
                    );
                }
            }
            let runs = v.items().iter().filter(|i| matches!(i, ChatItem::Run(_))).count();
            let mut ids: Vec<&str> = seen.iter().filter(|p| p.by_agent()).filter_map(Ev::run).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(runs, ids.len(), "one item per run an agent wrote for");
        }
    }
}
