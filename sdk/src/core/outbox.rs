//! Appends waiting to be acknowledged, with idempotent-producer ids.
//!
//! Appends to one stream go out in order, one request at a time; whatever
//! queued up meanwhile is sent as one batch (a JSON array, which the server
//! flattens back into one message per append). Every request carries the
//! client's producer id, an epoch and a sequence number, so resending it
//! after a reconnect — when its acknowledgement may have been lost — is
//! acknowledged again instead of written twice.

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ProducerIds};

use super::ClientError;

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
    items: Vec<AppendId>,
    body: String,
    bumps: u32,
}

#[derive(Debug, Default)]
struct StreamQueue {
    path: String,
    epoch: u64,
    next_seq: u64,
    queue: Vec<(AppendId, String)>,
    in_flight: Option<InFlight>,
}

/// Whether a `forbidden` error is about a stale producer epoch (the server
/// says "producer epoch is stale …"; the HTTP link words a `403` carrying a
/// `Producer-Epoch` header so) rather than about access rights.
///
/// ```
/// use durable_sessions::core::outbox::is_stale_epoch;
/// assert!(is_stale_epoch("producer epoch is stale (current epoch is 2)"));
/// assert!(!is_stale_epoch("the token of ada has no append right on sessions/x"));
/// ```
pub fn is_stale_epoch(message: &str) -> bool {
    // A byte window, not `str::contains`: the latter's substring search is
    // ~2 KB of Wasm.
    message.as_bytes().windows(14).any(|w| w == b"producer epoch")
}

/// The outcome of some appends.
pub type Resolved = Vec<(AppendId, Result<AppendAck, ClientError>)>;

/// Pending appends of one client.
#[derive(Debug)]
pub struct Outbox {
    producer_id: String,
    /// One queue per stream, in first-use order (few per client).
    streams: Vec<StreamQueue>,
    next_req: u64,
}

impl Outbox {
    /// An empty outbox writing as producer `producer_id`.
    pub fn new(producer_id: String) -> Self {
        Self {
            producer_id,
            streams: Vec::new(),
            next_req: 0,
        }
    }

    /// Queues one event (JSON text) for `path`.
    pub fn push(&mut self, path: &str, id: AppendId, json: String) {
        let at = match self.streams.iter().position(|s| s.path == path) {
            Some(at) => at,
            None => {
                self.streams.push(StreamQueue {
                    path: path.to_owned(),
                    ..StreamQueue::default()
                });
                self.streams.len() - 1
            }
        };
        self.streams[at].queue.push((id, json));
    }

    /// Number of appends not yet resolved.
    pub fn pending(&self) -> usize {
        self.streams
            .iter()
            .map(|s| s.queue.len() + s.in_flight.as_ref().map_or(0, |f| f.items.len()))
            .sum()
    }

    fn frame(&self, path: &str, f: &InFlight) -> ClientMsg {
        ClientMsg::Append {
            req: f.req.clone(),
            path: path.to_owned(),
            // Batches join events that were valid JSON when queued.
            payload: Some(Payload::Json(f.body.clone())),
            producer: Some(ProducerIds {
                id: self.producer_id.clone(),
                epoch: f.epoch,
                seq: f.seq,
            }),
            close: false,
        }
    }

    fn new_req(&mut self) -> String {
        self.next_req += 1;
        format!("a{}", self.next_req)
    }

    /// New batches for streams with nothing in flight. Call when connected.
    pub fn ready(&mut self) -> Vec<ClientMsg> {
        let mut frames = Vec::new();
        for at in 0..self.streams.len() {
            if self.streams[at].in_flight.is_some() || self.streams[at].queue.is_empty() {
                continue;
            }
            let req = self.new_req();
            let stream = &mut self.streams[at];
            let mut items = Vec::new();
            let mut body = String::from("[");
            let mut taken = 0;
            for (id, json) in &stream.queue {
                let fits =
                    items.is_empty() || (body.len() + json.len() < MAX_BATCH_BYTES && items.len() < MAX_BATCH_ITEMS);
                if !fits {
                    break;
                }
                if !items.is_empty() {
                    body.push(',');
                }
                body.push_str(json);
                items.push(*id);
                taken += 1;
            }
            stream.queue.drain(..taken);
            body.push(']');
            let flight = InFlight {
                req,
                epoch: stream.epoch,
                seq: stream.next_seq,
                items,
                body,
                bumps: 0,
            };
            frames.push(self.frame(&self.streams[at].path, &flight));
            self.streams[at].in_flight = Some(flight);
        }
        frames
    }

    /// Requests to send again on a new connection: everything in flight,
    /// with the same producer ids (so the server deduplicates).
    pub fn resend(&mut self) -> Vec<ClientMsg> {
        self.streams
            .iter()
            .filter_map(|s| s.in_flight.as_ref().map(|f| self.frame(&s.path, f)))
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
        stream.epoch = flight.epoch;
        stream.next_seq = flight.seq + 1;
        let ack = AppendAck {
            offset: offset.to_owned(),
            duplicate,
        };
        Some(flight.items.into_iter().map(|id| (id, Ok(ack.clone()))).collect())
    }

    /// An `error` for `req`. A fenced or out-of-sequence producer starts a
    /// new epoch and resends (returned as the frame); other errors fail the
    /// batch's appends. `None` when the request is not ours.
    ///
    /// `forbidden` means a stale producer epoch only when its message says
    /// so (see [`is_stale_epoch`]); otherwise the token does not allow the
    /// append, which fails it.
    pub fn on_error(&mut self, req: &str, code: ErrorCode, message: &str) -> Option<(Resolved, Option<ClientMsg>)> {
        let at = self.flight_of(req)?;
        let fenced = code == ErrorCode::SeqGap || (code == ErrorCode::Forbidden && is_stale_epoch(message));
        let retry = fenced
            && self.streams[at]
                .in_flight
                .as_ref()
                .is_some_and(|f| f.bumps < MAX_EPOCH_BUMPS);
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
            let frame = stream.in_flight.as_ref().map(|f| self.frame(&stream.path, f));
            return Some((Vec::new(), frame));
        }
        let flight = self.streams[at].in_flight.take()?;
        let error = ClientError::new(code.as_str(), message);
        Some((
            flight.items.into_iter().map(|id| (id, Err(error.clone()))).collect(),
            None,
        ))
    }

    /// Fails everything (the client was closed).
    pub fn fail_all(&mut self, error: &ClientError) -> Resolved {
        let mut out = Vec::new();
        for s in &mut self.streams {
            if let Some(f) = s.in_flight.take() {
                out.extend(f.items.into_iter().map(|id| (id, Err(error.clone()))));
            }
            out.extend(s.queue.drain(..).map(|(id, _)| (id, Err(error.clone()))));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn one_request_in_flight_per_stream_and_the_rest_batched() {
        let mut o = Outbox::new("p".into());
        o.push("s", 1, r#"{"a":1}"#.into());
        let first = o.ready();
        assert_eq!(first.len(), 1);
        o.push("s", 2, r#"{"b":2}"#.into());
        o.push("s", 3, r#"{"c":3}"#.into());
        assert!(o.ready().is_empty(), "waits for the ack");
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
        let second = o.ready();
        let (_, epoch, seq, body) = producer_of(&second[0]);
        assert_eq!((epoch, seq, body.as_str()), (0, 1, r#"[{"b":2},{"c":3}]"#));
        assert_eq!(o.pending(), 2);
    }

    #[test]
    fn retries_after_reconnect_reuse_the_producer_ids() {
        let mut o = Outbox::new("p".into());
        o.push("s", 1, "1".into());
        let sent = o.ready();
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
        let mut o = Outbox::new("p".into());
        o.push("s", 1, "1".into());
        let (req, ..) = producer_of(&o.ready()[0]);
        let (done, retry) = o.on_error(&req, ErrorCode::NotFound, "stream not found").unwrap();
        assert!(retry.is_none());
        assert_eq!(done[0].1.as_ref().unwrap_err().code, "not_found");
        o.push("s", 2, "2".into());
        let (_, epoch, seq, _) = producer_of(&o.ready()[0]);
        assert_eq!((epoch, seq), (0, 0), "seq 0 was never accepted");
    }

    #[test]
    fn a_fenced_producer_bumps_its_epoch_and_resends() {
        let mut o = Outbox::new("p".into());
        o.push("s", 1, "1".into());
        let (req, ..) = producer_of(&o.ready()[0]);
        let (done, retry) = o
            .on_error(
                &req,
                ErrorCode::Forbidden,
                "producer epoch is stale (current epoch is 1)",
            )
            .unwrap();
        assert!(done.is_empty());
        let (req2, epoch, seq, _) = producer_of(&retry.unwrap());
        assert_eq!((epoch, seq), (1, 0));
        assert!(o.on_ack(&req2, "o", false).is_some());
    }

    #[test]
    fn an_append_the_token_does_not_allow_fails_at_once() {
        let mut o = Outbox::new("p".into());
        o.push("s", 1, "1".into());
        let (req, ..) = producer_of(&o.ready()[0]);
        let (done, retry) = o
            .on_error(&req, ErrorCode::Forbidden, "the token of ada has no append right on s")
            .unwrap();
        assert!(retry.is_none(), "no epoch bump");
        assert_eq!(done[0].1.as_ref().unwrap_err().code, "forbidden");
        o.push("s", 2, "2".into());
        let (_, epoch, seq, _) = producer_of(&o.ready()[0]);
        assert_eq!((epoch, seq), (0, 0));
    }

    #[test]
    fn streams_are_independent_and_close_fails_everything() {
        let mut o = Outbox::new("p".into());
        o.push("a", 1, "1".into());
        o.push("b", 2, "2".into());
        assert_eq!(o.ready().len(), 2);
        o.push("a", 3, "3".into());
        let failed = o.fail_all(&ClientError::new("closed", "client closed"));
        assert_eq!(failed.len(), 3);
        assert_eq!(o.pending(), 0);
    }
}
