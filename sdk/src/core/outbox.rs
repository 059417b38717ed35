//! Appends waiting to be acknowledged, with idempotent-producer ids.
//!
//! Appends to one stream go out in order, one request at a time; whatever
//! queued up meanwhile is sent as one batch (a JSON array, which the server
//! flattens back into one message per append). Every request carries the
//! client's producer id, an epoch and a sequence number, so resending it
//! after a reconnect — when its acknowledgement may have been lost — is
//! acknowledged again instead of written twice.
//!
//! Two lanes per stream: [`Lane::Content`] (messages, agent output) and
//! [`Lane::Control`] (`cancel`, `steer`). Each lane is its own idempotent
//! producer (`{id}` and `{id}-control`, with their own epochs and seqs, as
//! docs/protocol.md §4.2 requires consecutive seqs per producer), so a
//! control event never waits for a message's acknowledgement: a Stop
//! pressed while a long message is being uploaded goes out at once.
//!
//! A stream that is not in JSON mode ([`StreamKind::Text`],
//! [`StreamKind::Bytes`]) takes each append in a request of its own, as is:
//! its messages have no boundaries a batch could keep.
//!
//! Nothing waits forever behind a failed request: an append larger than
//! the limit (the configured one, and the server's `hello.max_frame_bytes`
//! over WebSocket) fails at once with `too_large` without being sent, and a
//! request the server refuses for good fails only its own appends.

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ProducerIds};

use super::ClientError;
use super::errors::{ErrorClass, classify};

/// Identifies one `append` call.
pub type AppendId = u64;

/// A successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendAck {
    /// The stream's tail offset after the request that carried the append.
    pub offset: String,
    /// The server had already stored it (a retry after a lost ack).
    pub duplicate: bool,
}

/// Which queue of a stream an append waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// Messages and everything else, in order.
    #[default]
    Content,
    /// Control events (`cancel`, `steer`): in order among themselves, never
    /// behind content.
    Control,
}

/// What a stream holds, and so how appends to it travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamKind {
    /// JSON messages (`application/json`): appends are JSON texts, batched
    /// into arrays.
    #[default]
    Json,
    /// Text (`text/*`): an append is its text, sent alone.
    Text,
    /// Bytes (any other content type): an append is its bytes in standard
    /// base64, sent alone.
    Bytes,
}

impl StreamKind {
    /// The kind of a stream of `content_type`.
    ///
    /// ```
    /// use durable_sessions::core::outbox::StreamKind;
    /// assert_eq!(StreamKind::of("application/json; charset=utf-8"), StreamKind::Json);
    /// assert_eq!(StreamKind::of("text/markdown"), StreamKind::Text);
    /// assert_eq!(StreamKind::of("image/png"), StreamKind::Bytes);
    /// ```
    pub fn of(content_type: &str) -> Self {
        let media = content_type.split(';').next().unwrap_or_default().trim_ascii();
        if media.eq_ignore_ascii_case("application/json") {
            Self::Json
        } else if media.get(..5).is_some_and(|t| t.eq_ignore_ascii_case("text/")) {
            Self::Text
        } else {
            Self::Bytes
        }
    }

    /// An append's text as it travels in a frame.
    fn payload(self, body: String) -> Payload {
        match self {
            Self::Json => Payload::Json(body),
            Self::Text => Payload::Text(body),
            Self::Bytes => Payload::Base64(body),
        }
    }
}

/// The producer id of the control lane is the client's with this suffix.
pub const CONTROL_SUFFIX: &str = "-control";

/// The default largest append request (the server's default HTTP body
/// limit, 16 MiB). Over WebSocket the server's `hello.max_frame_bytes`
/// (1 MiB by default) applies as well.
pub const DEFAULT_MAX_APPEND_BYTES: u64 = 16 * 1024 * 1024;

/// Most bytes in one batch (a single larger event is still sent alone).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most events in one batch.
const MAX_BATCH_ITEMS: usize = 1_000;
/// Epoch bumps tried for one batch before giving up.
const MAX_EPOCH_BUMPS: u32 = 3;

#[derive(Debug)]
struct InFlight {
    req: String,
    epoch: u64,
    seq: u64,
    /// The appends in the batch and the length of each one's JSON.
    items: Vec<(AppendId, usize)>,
    body: String,
    bumps: u32,
    /// Sent again after a reconnect: an earlier attempt may have been stored
    /// even though its answer was lost.
    resent: bool,
    /// Producer ids chosen by the app ([`Outbox::push_as`]): the request
    /// carries them instead of the lane's, and its one append alone.
    fixed: Option<ProducerIds>,
}

impl InFlight {
    /// The batch's appends with their JSON, in order.
    fn split(self) -> Vec<(AppendId, String)> {
        let mut at = 1;
        let mut out = Vec::with_capacity(self.items.len());
        for (id, len) in self.items {
            // `get`, not indexing: no panic path (and its formatting) in the Wasm.
            out.push((id, self.body.get(at..at + len).unwrap_or_default().to_owned()));
            at += len + 1;
        }
        out
    }
}

#[derive(Debug)]
struct StreamQueue {
    path: String,
    lane: Lane,
    kind: StreamKind,
    /// The producer id of this lane.
    producer: String,
    /// Bytes of a request's frame besides its JSON array.
    overhead: usize,
    epoch: u64,
    next_seq: u64,
    queue: Vec<(AppendId, String)>,
    in_flight: Option<InFlight>,
}

/// Bytes of an append frame for `path` besides its JSON array (an upper
/// bound: the largest request id, epoch and seq).
fn frame_overhead(path: &str, producer: &str) -> usize {
    let frame = ClientMsg::Append {
        req: format!("a{}", u64::MAX),
        path: path.to_owned(),
        payload: Some(Payload::Json(String::new())),
        producer: Some(ProducerIds {
            id: producer.to_owned(),
            epoch: u64::MAX,
            seq: u64::MAX,
        }),
        close: false,
    };
    frame.to_json().len()
}

/// The outcome of some appends.
pub type Resolved = Vec<(AppendId, Result<AppendAck, ClientError>)>;

/// Pending appends of one client.
#[derive(Debug)]
pub struct Outbox {
    producer_id: String,
    /// One queue per stream and lane, in first-use order (few per client).
    streams: Vec<StreamQueue>,
    next_req: u64,
    /// The configured largest request.
    max_request: u64,
    /// The server's largest frame (`hello.max_frame_bytes`), once known.
    server_limit: Option<u64>,
    /// Largest batch; halved when the server refused a batch as too large.
    batch_cap: usize,
    /// Streams whose appends wait (their creation is not confirmed yet).
    held: Vec<String>,
    /// Queued appends with producer ids of their own ([`Outbox::push_as`]).
    fixed: Vec<(AppendId, ProducerIds)>,
    /// Streams whose content type the client was told
    /// ([`Outbox::set_content_type`]).
    types: Vec<(String, String)>,
}

impl Outbox {
    /// An empty outbox writing as producer `producer_id` (and
    /// `{producer_id}-control` for control events), sending requests of at
    /// most `max_request_bytes`.
    pub fn new(producer_id: String, max_request_bytes: u64) -> Self {
        Self {
            producer_id,
            streams: Vec::new(),
            next_req: 0,
            max_request: max_request_bytes,
            server_limit: None,
            batch_cap: MAX_BATCH_BYTES,
            held: Vec::new(),
            fixed: Vec::new(),
            types: Vec::new(),
        }
    }

    /// Stream `path` has `content_type`: its appends are of that
    /// [`StreamKind`] (default [`StreamKind::Json`]). Call before appending
    /// to it.
    pub fn set_content_type(&mut self, path: &str, content_type: &str) {
        match self.types.iter_mut().find(|(p, _)| p == path) {
            Some((_, t)) => content_type.clone_into(t),
            None => self.types.push((path.to_owned(), content_type.to_owned())),
        }
    }

    /// The content type of `path`, if set.
    pub fn content_type(&self, path: &str) -> Option<&str> {
        self.types.iter().find(|(p, _)| p == path).map(|(_, t)| t.as_str())
    }

    /// The largest request (frame) sent now.
    pub fn limit(&self) -> u64 {
        self.server_limit.map_or(self.max_request, |s| s.min(self.max_request))
    }

    /// The server announced its largest frame (`hello`).
    pub fn set_server_limit(&mut self, bytes: u64) {
        self.server_limit = Some(bytes);
    }

    /// Appends to `paths` wait in [`Outbox::ready`] (the client is still
    /// creating those streams: over HTTP an append racing the `PUT` would
    /// find no stream).
    pub fn hold(&mut self, paths: Vec<String>) {
        self.held = paths;
    }

    /// Why an event of `json_len` bytes cannot be sent on `stream`, if so.
    fn too_large(&self, stream: &StreamQueue, json_len: usize) -> Option<ClientError> {
        let size = (stream.overhead + json_len + 2) as u64;
        let limit = self.limit();
        (size > limit).then(|| {
            ClientError::new(
                ErrorCode::TooLarge.as_str(),
                format!("an append of {size} bytes is larger than the limit of {limit} bytes"),
            )
        })
    }

    fn queue_of(&mut self, path: &str, lane: Lane) -> usize {
        if let Some(at) = self.streams.iter().position(|s| s.path == path && s.lane == lane) {
            return at;
        }
        let producer = match lane {
            Lane::Content => self.producer_id.clone(),
            Lane::Control => [self.producer_id.as_str(), CONTROL_SUFFIX].concat(),
        };
        let kind = self.content_type(path).map(StreamKind::of).unwrap_or_default();
        self.streams.push(StreamQueue {
            path: path.to_owned(),
            lane,
            kind,
            overhead: frame_overhead(path, &producer),
            producer,
            epoch: 0,
            next_seq: 0,
            queue: Vec::new(),
            in_flight: None,
        });
        self.streams.len() - 1
    }

    /// Queues one event (JSON text) for `path` in `lane`. An event that can
    /// never be sent (larger than [`Outbox::limit`]) is refused at once
    /// with `too_large`.
    pub fn push(&mut self, path: &str, lane: Lane, id: AppendId, json: String) -> Result<(), ClientError> {
        let at = self.queue_of(path, lane);
        if let Some(e) = self.too_large(&self.streams[at], json.len()) {
            return Err(e);
        }
        self.streams[at].queue.push((id, json));
        Ok(())
    }

    /// Number of appends not yet resolved.
    pub fn pending(&self) -> usize {
        self.streams
            .iter()
            .map(|s| s.queue.len() + s.in_flight.as_ref().map_or(0, |f| f.items.len()))
            .sum()
    }

    fn frame(s: &StreamQueue, f: &InFlight) -> ClientMsg {
        ClientMsg::Append {
            req: f.req.clone(),
            path: s.path.clone(),
            // Batches join events that were valid JSON when queued.
            payload: Some(s.kind.payload(f.body.clone())),
            producer: Some(f.fixed.clone().unwrap_or_else(|| ProducerIds {
                id: s.producer.clone(),
                epoch: f.epoch,
                seq: f.seq,
            })),
            close: false,
        }
    }

    fn new_req(&mut self) -> String {
        self.next_req += 1;
        format!("a{}", self.next_req)
    }

    /// Queue indexes, control lanes first.
    fn order(&self) -> Vec<usize> {
        let (mut control, content): (Vec<usize>, Vec<usize>) =
            (0..self.streams.len()).partition(|at| self.streams[*at].lane == Lane::Control);
        control.extend(content);
        control
    }

    /// New batches for queues with nothing in flight (control lanes first),
    /// and the appends failed because they no longer fit the limit (learned
    /// from the server after they were queued). Call when connected.
    pub fn ready(&mut self) -> (Vec<ClientMsg>, Resolved) {
        let mut frames = Vec::new();
        let mut failed = Vec::new();
        for at in self.order() {
            let stream = &self.streams[at];
            if stream.in_flight.is_some() || self.held.contains(&stream.path) {
                continue;
            }
            let queue = std::mem::take(&mut self.streams[at].queue);
            for (id, json) in queue {
                match self.too_large(&self.streams[at], json.len()) {
                    Some(e) => {
                        self.fixed.retain(|(i, _)| *i != id);
                        failed.push((id, Err(e)));
                    }
                    None => self.streams[at].queue.push((id, json)),
                }
            }
            if self.streams[at].queue.is_empty() {
                continue;
            }
            let req = self.new_req();
            let limit = usize::try_from(self.limit()).unwrap_or(usize::MAX);
            let stream = &mut self.streams[at];
            let cap = self.batch_cap.min(limit.saturating_sub(stream.overhead));
            let mut items = Vec::new();
            let batched = stream.kind == StreamKind::Json;
            let mut body = String::from(if batched { "[" } else { "" });
            // An append with its own producer ids goes alone, as does each
            // one to a stream not in JSON mode.
            let fixed_at = |id: AppendId| self.fixed.iter().position(|(i, _)| *i == id);
            let first_fixed = stream.queue.first().and_then(|(id, _)| fixed_at(*id));
            for (id, json) in &stream.queue {
                let alone = first_fixed.is_some() || fixed_at(*id).is_some() || !batched;
                let fits =
                    items.is_empty() || (!alone && body.len() + json.len() + 2 <= cap && items.len() < MAX_BATCH_ITEMS);
                if !fits {
                    break;
                }
                if !items.is_empty() {
                    body.push(',');
                }
                body.push_str(json);
                items.push((*id, json.len()));
            }
            stream.queue.drain(..items.len());
            if batched {
                body.push(']');
            }
            let flight = InFlight {
                req,
                epoch: stream.epoch,
                seq: stream.next_seq,
                items,
                body,
                bumps: 0,
                resent: false,
                fixed: first_fixed.map(|at| self.fixed.swap_remove(at).1),
            };
            frames.push(Self::frame(stream, &flight));
            stream.in_flight = Some(flight);
        }
        (frames, failed)
    }

    /// Requests to send again on a new connection: everything in flight,
    /// with the same producer ids (so the server deduplicates), control
    /// lanes first.
    pub fn resend(&mut self) -> Vec<ClientMsg> {
        self.order()
            .into_iter()
            .filter_map(|at| {
                self.streams[at].in_flight.as_mut()?.resent = true;
                let s = &self.streams[at];
                s.in_flight.as_ref().map(|f| Self::frame(s, f))
            })
            .collect()
    }

    /// The stream whose in-flight request is `req`.
    fn flight_of(&self, req: &str) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.in_flight.as_ref().is_some_and(|f| f.req == req))
    }

    /// An `ack` for `req`. `None` when the request is not ours.
    pub fn on_ack(&mut self, req: &str, offset: &str, duplicate: bool) -> Option<Resolved> {
        let at = self.flight_of(req)?;
        let stream = &mut self.streams[at];
        let flight = stream.in_flight.take()?;
        if flight.fixed.is_none() {
            stream.epoch = flight.epoch;
            stream.next_seq = flight.seq + 1;
        }
        let ack = AppendAck {
            offset: offset.to_owned(),
            duplicate,
        };
        Some(flight.items.into_iter().map(|(id, _)| (id, Ok(ack.clone()))).collect())
    }

    /// An `error` for `req` (one the client does not retry as transient).
    /// A fenced producer (`stale_epoch`, `seq_gap`) starts a new epoch and
    /// resends (returned as the frame); a batch of several appends refused
    /// as `too_large` goes back to the queue to be sent in smaller batches;
    /// any other error fails the batch's appends, and the queue moves on.
    /// The refused request's seq was not stored, so the next request reuses
    /// it. `None` when the request is not ours.
    pub fn on_error(&mut self, req: &str, code: ErrorCode, message: &str) -> Option<(Resolved, Option<ClientMsg>)> {
        let at = self.flight_of(req)?;
        let flight = self.streams[at].in_flight.as_ref()?;
        // Ids chosen by the app are never renumbered: a new epoch could
        // store again what an earlier page load already stored.
        let retry = classify(code) == ErrorClass::Fenced && flight.bumps < MAX_EPOCH_BUMPS && flight.fixed.is_none();
        if retry {
            let new_req = self.new_req();
            let stream = &mut self.streams[at];
            stream.epoch += 1;
            stream.next_seq = 0;
            let epoch = stream.epoch;
            let flight = stream.in_flight.as_mut()?;
            flight.epoch = epoch;
            flight.seq = 0;
            flight.bumps += 1;
            flight.req = new_req;
            let stream = &self.streams[at];
            let frame = stream.in_flight.as_ref().map(|f| Self::frame(stream, f));
            return Some((Vec::new(), frame));
        }
        let flight = self.streams[at].in_flight.take()?;
        if flight.resent && flight.fixed.is_none() {
            // An earlier attempt may have been stored under this seq: the
            // next batch must not reuse it, or the server would take it for
            // that attempt and drop it as a duplicate. A new epoch starts
            // the lane's seqs afresh.
            let stream = &mut self.streams[at];
            stream.epoch += 1;
            stream.next_seq = 0;
        }
        if code == ErrorCode::TooLarge && flight.items.len() > 1 {
            // The server takes less than we thought: smaller batches (the
            // events are retried one by one at worst).
            self.batch_cap = (flight.body.len() / 2).max(1);
            let stream = &mut self.streams[at];
            let mut queue = flight.split();
            queue.append(&mut stream.queue);
            stream.queue = queue;
            return Some((Vec::new(), None));
        }
        let error = ClientError::new(code.as_str(), message);
        Some((
            flight
                .items
                .into_iter()
                .map(|(id, _)| (id, Err(error.clone())))
                .collect(),
            None,
        ))
    }

    /// Fails everything (the client was closed).
    pub fn fail_all(&mut self, error: &ClientError) -> Resolved {
        let mut out = Vec::new();
        for s in &mut self.streams {
            if let Some(f) = s.in_flight.take() {
                out.extend(f.items.into_iter().map(|(id, _)| (id, Err(error.clone()))));
            }
            out.extend(s.queue.drain(..).map(|(id, _)| (id, Err(error.clone()))));
        }
        self.fixed.clear();
        out
    }

    /// Queues one event for `path` (content lane) to be sent with the
    /// producer ids `producer`, alone in its request, every time — for an
    /// append kept across page loads: whichever page load sends it, and
    /// however often, the server stores it once (docs/protocol.md §4.2). A
    /// refusal fails it; it is never renumbered.
    ///
    /// ```
    /// use durable_sessions::core::outbox::{Outbox, Lane};
    /// use durable_sessions::protocol::ws::{ClientMsg, ProducerIds};
    /// let mut o = Outbox::new("p".into(), 1 << 20);
    /// let ids = ProducerIds { id: "kept-1".into(), epoch: 0, seq: 0 };
    /// o.push_as("s", 1, r#"{"type":"note"}"#.into(), ids.clone()).unwrap();
    /// o.push("s", Lane::Content, 2, r#"{"type":"note"}"#.into()).unwrap();
    /// let (frames, _) = o.ready();
    /// assert!(matches!(&frames[0], ClientMsg::Append { producer: Some(p), .. } if *p == ids));
    /// ```
    pub fn push_as(
        &mut self,
        path: &str,
        id: AppendId,
        json: String,
        producer: ProducerIds,
    ) -> Result<(), ClientError> {
        self.push(path, Lane::Content, id, json)?;
        self.fixed.push((id, producer));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Lane = Lane::Content;

    fn outbox() -> Outbox {
        Outbox::new("p".into(), DEFAULT_MAX_APPEND_BYTES)
    }

    /// Pushes an event that fits.
    fn push(o: &mut Outbox, path: &str, id: AppendId, json: &str) {
        o.push(path, C, id, json.into()).unwrap();
    }

    fn frames(o: &mut Outbox) -> Vec<ClientMsg> {
        let (frames, failed) = o.ready();
        assert!(failed.is_empty(), "{failed:?}");
        frames
    }

    fn producer_of(m: &ClientMsg) -> (String, u64, u64, String) {
        match m {
            ClientMsg::Append {
                req,
                producer: Some(p),
                payload: Some(Payload::Json(body)),
                ..
            } => (req.clone(), p.epoch, p.seq, body.clone()),
            other => panic!("not an append: {other:?}"),
        }
    }

    fn producer_id_of(m: &ClientMsg) -> String {
        match m {
            ClientMsg::Append { producer: Some(p), .. } => p.id.clone(),
            other => panic!("not an append: {other:?}"),
        }
    }

    #[test]
    fn text_and_bytes_streams_take_each_append_alone_and_as_is() {
        let mut o = outbox();
        o.set_content_type("t", "text/plain; charset=utf-8");
        o.set_content_type("b", "image/png");
        for (id, text) in [(1, "a\n"), (2, "[b]"), (3, "c")] {
            o.push("t", C, id, text.into()).unwrap();
        }
        o.push("b", C, 4, "AAE=".into()).unwrap();
        let mut sent = Vec::new();
        loop {
            let frames = frames(&mut o);
            if frames.is_empty() {
                break;
            }
            for f in frames {
                let ClientMsg::Append {
                    req,
                    payload,
                    producer: Some(p),
                    ..
                } = f
                else {
                    panic!("not an append: {f:?}")
                };
                sent.push((payload.unwrap(), p.seq));
                assert!(o.on_ack(&req, "o", false).is_some());
            }
        }
        assert_eq!(
            sent,
            [
                (Payload::Text("a\n".into()), 0),
                (Payload::Base64("AAE=".into()), 0),
                (Payload::Text("[b]".into()), 1),
                (Payload::Text("c".into()), 2),
            ],
            "one request each, in order, unchanged"
        );
    }

    #[test]
    fn one_request_in_flight_per_stream_and_the_rest_batched() {
        let mut o = outbox();
        push(&mut o, "s", 1, r#"{"a":1}"#);
        let first = frames(&mut o);
        assert_eq!(first.len(), 1);
        push(&mut o, "s", 2, r#"{"b":2}"#);
        push(&mut o, "s", 3, r#"{"c":3}"#);
        assert!(frames(&mut o).is_empty(), "waits for the ack");
        let (req, epoch, seq, body) = producer_of(&first[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 0, r#"[{"a":1}]"#));
        let done = o.on_ack(&req, "o1", false).unwrap();
        assert_eq!(
            done,
            vec![(
                1,
                Ok(AppendAck {
                    offset: "o1".into(),
                    duplicate: false
                })
            )]
        );
        let second = frames(&mut o);
        let (_, epoch, seq, body) = producer_of(&second[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 1, r#"[{"b":2},{"c":3}]"#));
        assert_eq!(o.pending(), 2);
    }

    #[test]
    fn retries_after_reconnect_reuse_the_producer_ids() {
        let mut o = outbox();
        push(&mut o, "s", 1, "1");
        let sent = frames(&mut o);
        // The connection drops before the ack: the same request goes again.
        let again = o.resend();
        assert_eq!(sent, again);
        let (req, ..) = producer_of(&again[0]);
        // The server saw it the first time: a duplicate ack resolves it once.
        let done = o.on_ack(&req, "o1", true).unwrap();
        assert_eq!(done.len(), 1);
        assert!(o.on_ack(&req, "o1", true).is_none(), "a second ack is ignored");
        assert!(o.resend().is_empty());
    }

    #[test]
    fn a_rejected_batch_fails_without_consuming_its_seq() {
        let mut o = outbox();
        push(&mut o, "s", 1, "1");
        let (req, ..) = producer_of(&frames(&mut o)[0]);
        let (done, retry) = o.on_error(&req, ErrorCode::NotFound, "stream not found").unwrap();
        assert!(retry.is_none());
        assert_eq!(done[0].1.as_ref().unwrap_err().code, "not_found");
        push(&mut o, "s", 2, "2");
        let (_, epoch, seq, _) = producer_of(&frames(&mut o)[0]);
        assert_eq!((epoch, seq), (0, 0), "seq 0 was never accepted");
    }

    #[test]
    fn a_refused_resend_never_lends_its_seq_to_the_next_batch() {
        let mut o = outbox();
        push(&mut o, "s", 1, "1");
        frames(&mut o);
        // Reconnect: the first attempt may have been stored, its ack lost.
        let (req, ..) = producer_of(&o.resend()[0]);
        let (done, retry) = o.on_error(&req, ErrorCode::Closed, "stream is closed").unwrap();
        assert!(retry.is_none() && done[0].1.is_err());
        push(&mut o, "s", 2, "2");
        let (_, epoch, seq, _) = producer_of(&frames(&mut o)[0]);
        assert_eq!(
            (epoch, seq),
            (1, 0),
            "(0, 0) might be stored already: reusing it would drop this batch as a duplicate"
        );
    }

    #[test]
    fn a_fenced_producer_bumps_its_epoch_and_resends() {
        for code in [ErrorCode::StaleEpoch, ErrorCode::SeqGap] {
            let mut o = outbox();
            push(&mut o, "s", 1, "1");
            let (req, ..) = producer_of(&frames(&mut o)[0]);
            let (done, retry) = o.on_error(&req, code, "current epoch is 1").unwrap();
            assert!(done.is_empty());
            let (req2, epoch, seq, _) = producer_of(&retry.unwrap());
            assert_eq!((epoch, seq), (1, 0));
            assert!(o.on_ack(&req2, "o", false).is_some());
        }
    }

    #[test]
    fn a_forbidden_append_fails_at_once_whatever_its_message_says() {
        // The code decides, not the text: `forbidden` is about rights.
        for message in [
            "the token of ada has no append right on s",
            "producer epoch is stale (current epoch is 1)",
        ] {
            let mut o = outbox();
            push(&mut o, "s", 1, "1");
            let (req, ..) = producer_of(&frames(&mut o)[0]);
            let (done, retry) = o.on_error(&req, ErrorCode::Forbidden, message).unwrap();
            assert!(retry.is_none(), "no epoch bump");
            assert_eq!(done[0].1.as_ref().unwrap_err().code, "forbidden");
            push(&mut o, "s", 2, "2");
            let (_, epoch, seq, _) = producer_of(&frames(&mut o)[0]);
            assert_eq!((epoch, seq), (0, 0));
        }
    }

    #[test]
    fn streams_are_independent_and_close_fails_everything() {
        let mut o = outbox();
        push(&mut o, "a", 1, "1");
        push(&mut o, "b", 2, "2");
        assert_eq!(frames(&mut o).len(), 2);
        push(&mut o, "a", 3, "3");
        o.push("a", Lane::Control, 4, "4".into()).unwrap();
        let failed = o.fail_all(&ClientError::new("closed", "client closed"));
        assert_eq!(failed.len(), 4);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn control_events_never_wait_behind_content() {
        let mut o = outbox();
        let big = format!(r#"{{"type":"user_message","text":"{}"}}"#, "x".repeat(500_000));
        push(&mut o, "s", 1, &big);
        let first = frames(&mut o);
        assert_eq!(producer_id_of(&first[0]), "p");
        // The message is in flight (a slow upload, a lost ack …) and another
        // one queues behind it; a cancel does not.
        push(&mut o, "s", 2, r#"{"type":"user_message"}"#);
        o.push("s", Lane::Control, 3, r#"{"type":"cancel"}"#.into()).unwrap();
        let now = frames(&mut o);
        assert_eq!(now.len(), 1, "only the cancel goes: {now:?}");
        let (req, epoch, seq, body) = producer_of(&now[0]);
        assert_eq!(producer_id_of(&now[0]), "p-control", "its own producer");
        assert_eq!((epoch, seq, body.as_str()), (0, 0, r#"[{"type":"cancel"}]"#));
        assert_eq!(o.on_ack(&req, "o9", false).unwrap()[0].0, 3);
        // On a new connection both lanes' in-flight requests go again,
        // control first.
        o.push("s", Lane::Control, 4, r#"{"type":"steer"}"#.into()).unwrap();
        frames(&mut o);
        let again = o.resend();
        assert_eq!(again.iter().map(producer_id_of).collect::<Vec<_>>(), ["p-control", "p"]);
        assert_eq!(producer_of(&again[0]).2, 1, "the control lane's own seq");
    }

    #[test]
    fn an_append_larger_than_the_limit_is_refused_at_once() {
        let mut o = Outbox::new("p".into(), 1_000);
        let e = o.push("s", C, 1, format!("\"{}\"", "x".repeat(1_000))).unwrap_err();
        assert_eq!(e.code, "too_large");
        assert_eq!(o.pending(), 0, "never queued");
        // The server's limit (hello) applies too, when smaller.
        let mut o = outbox();
        o.set_server_limit(2_000);
        assert_eq!(o.limit(), 2_000);
        let big = format!("\"{}\"", "x".repeat(2_000));
        assert_eq!(o.push("s", Lane::Control, 1, big).unwrap_err().code, "too_large");
        let fits = format!("\"{}\"", "x".repeat(1_700));
        o.push("s", C, 2, fits).unwrap();
        let sent = frames(&mut o);
        assert!(sent[0].to_json().len() <= 2_000, "the frame fits the limit");
    }

    #[test]
    fn appends_queued_before_the_limit_was_known_fail_when_it_is() {
        let mut o = outbox();
        push(&mut o, "s", 1, &format!("\"{}\"", "x".repeat(1_500_000)));
        push(&mut o, "s", 2, r#"{"small":true}"#);
        // Connected: the server says 1 MiB.
        o.set_server_limit(1 << 20);
        let (sent, failed) = o.ready();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 1);
        assert_eq!(failed[0].1.as_ref().unwrap_err().code, "too_large");
        let (_, epoch, seq, body) = producer_of(&sent[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 0, r#"[{"small":true}]"#));
    }

    #[test]
    fn too_large_from_the_server_fails_that_append_and_the_next_goes_out() {
        let mut o = outbox();
        push(&mut o, "s", 1, &format!("\"{}\"", "x".repeat(300_000)));
        let (req, ..) = producer_of(&frames(&mut o)[0]);
        push(&mut o, "s", 2, r#"{"type":"user_message"}"#);
        let (done, retry) = o.on_error(&req, ErrorCode::TooLarge, "frame too large").unwrap();
        assert!(retry.is_none());
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1.as_ref().unwrap_err().code, "too_large");
        let next = frames(&mut o);
        let (_, epoch, seq, body) = producer_of(&next[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 0, r#"[{"type":"user_message"}]"#));
    }

    #[test]
    fn a_batch_refused_as_too_large_is_split_not_failed() {
        let mut o = outbox();
        push(&mut o, "s", 1, "0");
        let (req, ..) = producer_of(&frames(&mut o)[0]);
        for id in 2..=5 {
            push(&mut o, "s", id, &format!(r#"{{"n":{id}}}"#));
        }
        o.on_ack(&req, "o1", false).unwrap();
        let (req, _, seq, body) = producer_of(&frames(&mut o)[0]);
        assert_eq!((seq, body.as_str()), (1, r#"[{"n":2},{"n":3},{"n":4},{"n":5}]"#));
        let (done, retry) = o.on_error(&req, ErrorCode::TooLarge, "too large").unwrap();
        assert!(done.is_empty() && retry.is_none());
        assert_eq!(o.pending(), 4, "back in the queue");
        // Smaller batches, from the same seq on, until all are stored in order.
        let (mut acked, mut seqs) = (Vec::new(), Vec::new());
        while o.pending() > 0 {
            let (req, _, seq, body) = producer_of(&frames(&mut o)[0]);
            assert!(body.len() < 33, "smaller than the refused batch: {body}");
            seqs.push(seq);
            acked.extend(o.on_ack(&req, "o", false).unwrap().into_iter().map(|(id, _)| id));
        }
        assert_eq!(acked, [2, 3, 4, 5]);
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn an_append_with_its_own_ids_goes_alone_with_them_and_leaves_the_lane_alone() {
        let mut o = outbox();
        let kept = ProducerIds {
            id: "kept".into(),
            epoch: 0,
            seq: 0,
        };
        push(&mut o, "s", 1, "1");
        o.push_as("s", 2, "2".into(), kept.clone()).unwrap();
        push(&mut o, "s", 3, "3");
        // The first batch stops before it; it goes alone, with its ids.
        let (req, _, seq, body) = producer_of(&frames(&mut o)[0]);
        assert_eq!((seq, body.as_str()), (0, "[1]"));
        o.on_ack(&req, "o1", false).unwrap();
        let sent = frames(&mut o);
        assert_eq!(producer_id_of(&sent[0]), "kept");
        let (req, epoch, seq, body) = producer_of(&sent[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 0, "[2]"));
        // After a reconnect: the same ids again; a duplicate ack resolves it.
        assert_eq!(o.resend(), sent);
        assert_eq!(o.on_ack(&req, "o2", true).unwrap()[0].0, 2);
        // The lane's own producer goes on at seq 1.
        let (_, epoch, seq, body) = producer_of(&frames(&mut o)[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 1, "[3]"));
    }

    #[test]
    fn an_append_with_its_own_ids_is_never_renumbered() {
        let mut o = outbox();
        let kept = ProducerIds {
            id: "kept".into(),
            epoch: 0,
            seq: 0,
        };
        o.push_as("s", 1, "1".into(), kept).unwrap();
        let (req, ..) = producer_of(&frames(&mut o)[0]);
        let (done, retry) = o.on_error(&req, ErrorCode::SeqGap, "seq gap").unwrap();
        assert!(retry.is_none(), "no new epoch");
        assert_eq!(done[0].1.as_ref().unwrap_err().code, "seq_gap");
        assert_eq!(o.pending(), 0);
    }
}
