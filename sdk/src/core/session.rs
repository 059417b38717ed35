//! A session as an app sees it: the chat view folded from its events, the
//! offset it has reached, and a snapshot of both that survives a reload.

use durable_session_protocol::json::{self, Json, Obj};
use durable_session_protocol::session::{RunMode, SessionEvent};
use durable_session_protocol::ws::Payload;

use super::chat::{ChatView, Folded};
use super::client::SubscriptionEvent;

/// One delivered session event and the offset to resume from after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub offset: String,
    /// The event as JSON text.
    pub json: String,
}

/// What one subscription event changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// New events, in order.
    pub events: Vec<Envelope>,
    /// The view was rebuilt from scratch (after a `reset`).
    pub reset: bool,
    /// The view changed.
    pub changed: bool,
    /// Indices of the view's items this batch added or changed, ascending
    /// (all of them may have changed after a `reset`).
    pub items: Vec<usize>,
}

/// Version of the snapshot format: `{"version":2,"offset":…,"events":[…]}`.
const SNAPSHOT_VERSION: u64 = 2;

/// The state of one session for an app.
///
/// ```
/// use durable_sessions::core::session::SessionModel;
/// use durable_sessions::core::client::SubscriptionEvent;
/// use durable_sessions::protocol::ws::{Message, Payload};
/// let mut model = SessionModel::default();
/// let json = r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#;
/// let applied = model.apply(SubscriptionEvent::Messages(vec![Message {
///     offset: "0000000000000000_0000000000000001".into(),
///     payload: Payload::json(json).unwrap(),
/// }]));
/// assert!(applied.changed);
/// assert_eq!(model.view().items().len(), 1);
/// let restored = SessionModel::restore(&model.snapshot().unwrap()).unwrap();
/// assert_eq!(restored.view(), model.view());
/// assert_eq!(restored.offset(), model.offset());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionModel {
    view: ChatView,
    offset: Option<String>,
    received: u64,
    /// Every event folded in, as JSON text (what a snapshot stores), unless
    /// the model was made [`SessionModel::without_snapshots`].
    events: Option<Vec<String>>,
    /// Messages are session events, folded into the view (not
    /// [`SessionModel::raw`]).
    chat: bool,
}

impl Default for SessionModel {
    fn default() -> Self {
        Self {
            view: ChatView::default(),
            offset: None,
            received: 0,
            events: Some(Vec::new()),
            chat: true,
        }
    }
}

impl SessionModel {
    /// The chat view.
    pub fn view(&self) -> &ChatView {
        &self.view
    }

    /// The offset after the last event folded in.
    pub fn offset(&self) -> Option<&str> {
        self.offset.as_deref()
    }

    /// Session events received (since the model started, snapshots included).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Of the events received, those skipped because they could not be read
    /// as session events ([`ChatView::events_skipped`]).
    pub fn skipped(&self) -> u64 {
        self.view.events_skipped()
    }

    /// A model that keeps no copy of the events it folds in (its memory does
    /// not grow with the session's events; [`SessionModel::snapshot`] is
    /// then `None`). For an app that persists events itself, incrementally
    /// (as the browser SDK does in IndexedDB).
    ///
    /// ```
    /// use durable_sessions::core::session::SessionModel;
    /// use durable_sessions::core::client::SubscriptionEvent;
    /// use durable_sessions::protocol::ws::{Message, Payload};
    /// let mut model = SessionModel::without_snapshots();
    /// model.apply(SubscriptionEvent::Messages(vec![Message {
    ///     offset: "01".into(),
    ///     payload: Payload::json(r#"{"type":"note"}"#).unwrap(),
    /// }]));
    /// assert_eq!(model.received(), 1);
    /// assert_eq!(model.snapshot(), None);
    /// ```
    pub fn without_snapshots() -> Self {
        Self {
            events: None,
            ..Self::default()
        }
    }

    /// A model of any stream, not a session: it tracks the offset and counts
    /// messages, folds nothing and keeps no copy. Its envelopes carry each
    /// message as JSON: a JSON message as is, text as a JSON string, bytes
    /// as a JSON string of their standard base64.
    ///
    /// ```
    /// use durable_sessions::core::session::SessionModel;
    /// use durable_sessions::core::client::SubscriptionEvent;
    /// use durable_sessions::protocol::ws::{Message, Payload};
    /// let mut model = SessionModel::raw();
    /// let applied = model.apply(SubscriptionEvent::Messages(vec![
    ///     Message { offset: "01".into(), payload: Payload::Text("a \"line\"".into()) },
    ///     Message { offset: "02".into(), payload: Payload::Json(r#"{"type":"vote"}"#.into()) },
    /// ]));
    /// assert_eq!(applied.events[0].json, r#""a \"line\"""#);
    /// assert!(model.view().items().is_empty(), "nothing is folded");
    /// assert_eq!((model.offset(), model.received()), (Some("02"), 2));
    /// ```
    pub fn raw() -> Self {
        Self {
            chat: false,
            ..Self::without_snapshots()
        }
    }

    /// A [`SessionModel::raw`] model that has received `received` messages
    /// and reached `offset`.
    pub fn raw_at(offset: &str, received: u64) -> Self {
        Self {
            offset: Some(offset.to_owned()),
            received,
            ..Self::raw()
        }
    }

    /// A model (without snapshots) folded from stored `events`, which reach
    /// `offset`.
    ///
    /// ```
    /// use durable_sessions::core::session::SessionModel;
    /// let json = r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#;
    /// let model = SessionModel::restore_events("0007", [json]);
    /// assert_eq!(model.offset(), Some("0007"));
    /// assert_eq!(model.view().items().len(), 1);
    /// ```
    pub fn restore_events<'a>(offset: &str, events: impl IntoIterator<Item = &'a str>) -> Self {
        let mut model = Self::without_snapshots();
        for event in events {
            model.view.apply_json(event);
            model.received += 1;
        }
        model.offset = Some(offset.to_owned());
        model
    }

    /// Folds a subscription event in.
    pub fn apply(&mut self, event: SubscriptionEvent) -> Applied {
        let mut applied = Applied::default();
        match event {
            SubscriptionEvent::Messages(messages) => {
                for m in messages {
                    let raw = match m.payload {
                        Payload::Json(raw) => raw,
                        // A session holds JSON events only.
                        _ if self.chat => continue,
                        Payload::Text(t) | Payload::Base64(t) => {
                            let mut out = String::with_capacity(t.len() + 2);
                            json::push_str(&mut out, &t);
                            out
                        }
                    };
                    // Kept ascending without duplicates as they come (no
                    // sort: smaller in the Wasm, and a batch touches few items).
                    if self.chat
                        && let Folded::Item(i) = self.view.apply_json(&raw)
                        && let Err(at) = applied.items.binary_search(&i)
                    {
                        applied.items.insert(at, i);
                    }
                    self.offset = Some(m.offset.clone());
                    self.received += 1;
                    if let Some(events) = &mut self.events {
                        events.push(raw.clone());
                    }
                    applied.events.push(Envelope {
                        offset: m.offset,
                        json: raw,
                    });
                    applied.changed = true;
                }
            }
            SubscriptionEvent::UpToDate { offset } => {
                if self.offset.as_deref().is_none_or(|o| offset.as_str() > o) {
                    self.offset = Some(offset);
                }
            }
            SubscriptionEvent::Reset { .. } => {
                self.view = ChatView::default();
                self.offset = None;
                self.received = 0;
                if let Some(events) = &mut self.events {
                    events.clear();
                }
                applied.reset = true;
                applied.changed = true;
            }
            SubscriptionEvent::Closed | SubscriptionEvent::Error(_) => {}
        }
        applied
    }

    /// The model as JSON, to store and [`SessionModel::restore`] later.
    /// `None` before anything was received, and for a model made
    /// [`SessionModel::without_snapshots`].
    pub fn snapshot(&self) -> Option<String> {
        let events = self.events.as_ref()?;
        let mut o = Obj::new();
        o.u64("version", SNAPSHOT_VERSION)
            .str("offset", self.offset.as_deref()?)
            .raw("events", &json::array(events.iter().map(String::as_str)));
        Some(o.finish())
    }

    /// A model from a snapshot (its events folded again); `None` if it is
    /// unreadable or from another version (the caller then starts from the
    /// beginning).
    pub fn restore(text: &str) -> Option<Self> {
        let v = json::parse(text).ok()?;
        if v.get("version").and_then(Json::u64) != Some(SNAPSHOT_VERSION) {
            return None;
        }
        let mut model = Self {
            offset: Some(v.get("offset").and_then(Json::str)?.to_owned()),
            ..Self::default()
        };
        let mut events = Vec::new();
        for event in v.get("events").and_then(Json::array)? {
            model.view.apply_json(event.raw);
            events.push(event.raw.to_owned());
        }
        model.received = events.len() as u64;
        model.events = Some(events);
        Some(model)
    }
}

/// A `user_message` event as JSON.
pub fn user_message(id: &str, author: &str, text: &str, mode: RunMode) -> String {
    SessionEvent::UserMessage {
        id: id.into(),
        author: author.into(),
        text: text.into(),
        mode,
    }
    .to_json()
}

/// A `cancel` event as JSON.
pub fn cancel(run_id: &str, by: &str) -> String {
    SessionEvent::Cancel {
        run_id: run_id.into(),
        by: by.into(),
    }
    .to_json()
}

/// A `steer` event as JSON.
pub fn steer(run_id: &str, text: &str, by: &str) -> String {
    SessionEvent::Steer {
        run_id: run_id.into(),
        text: text.into(),
        by: by.into(),
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use durable_session_protocol::ws::Message;

    use super::*;
    use crate::core::chat::RunState;

    fn messages(events: &[(&str, &str)]) -> SubscriptionEvent {
        SubscriptionEvent::Messages(
            events
                .iter()
                .map(|(o, j)| Message {
                    offset: (*o).into(),
                    payload: Payload::json(j).unwrap(),
                })
                .collect(),
        )
    }

    #[test]
    fn folds_counts_and_tracks_the_offset() {
        let mut m = SessionModel::default();
        let a = m.apply(messages(&[
            (
                "01",
                r#"{"type":"run_started","run_id":"r","agent":"a","in_reply_to":"m"}"#,
            ),
            ("02", r#"{"type":"text_delta","run_id":"r","agent":"a","delta":"hi"}"#),
        ]));
        assert_eq!(a.events.len(), 2);
        assert_eq!(m.offset(), Some("02"));
        assert_eq!(m.received(), 2);
        assert_eq!(m.view().run("r").unwrap().state, RunState::Streaming);
        m.apply(SubscriptionEvent::UpToDate { offset: "02".into() });
        assert_eq!(m.offset(), Some("02"));
    }

    #[test]
    fn a_reset_starts_the_view_over() {
        let mut m = SessionModel::default();
        m.apply(messages(&[(
            "01",
            r#"{"type":"user_message","id":"m","author":"a","text":"x"}"#,
        )]));
        let a = m.apply(SubscriptionEvent::Reset { reason: "gone".into() });
        assert!(a.reset && a.changed);
        assert!(m.view().items().is_empty());
        assert_eq!(m.offset(), None);
        assert_eq!(m.snapshot(), None);
    }

    #[test]
    fn snapshots_round_trip_and_reject_garbage() {
        let mut m = SessionModel::default();
        m.apply(messages(&[(
            "07",
            r#"{"type":"user_message","id":"m","author":"a","text":"x"}"#,
        )]));
        let restored = SessionModel::restore(&m.snapshot().unwrap()).unwrap();
        assert_eq!(restored, m);
        assert!(SessionModel::restore("{}").is_none());
        assert!(
            SessionModel::restore(
                r#"{"version":99,"offset":"1","received":0,"view":{"items":[],"runs":{},"events":0}}"#
            )
            .is_none()
        );
    }

    #[test]
    fn event_builders() {
        assert_eq!(cancel("r", "me"), r#"{"type":"cancel","run_id":"r","by":"me"}"#);
        assert_eq!(
            steer("r", "go", "me"),
            r#"{"type":"steer","run_id":"r","text":"go","by":"me"}"#
        );
        assert!(user_message("m", "a", "t", RunMode::Multi).contains(r#""mode":"multi""#));
    }
}
