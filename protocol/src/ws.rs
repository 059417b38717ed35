//! Frames of the `/v1/ws` WebSocket extension.
//!
//! Every frame is one JSON object in a text message, with an `op` field.
//! Clients send [`ClientMsg`]s and receive [`ServerMsg`]s; both sides parse
//! strictly (an unusable frame becomes a [`FrameError`] with an
//! [`ErrorCode`]) and ignore fields they do not know, so the protocol can
//! grow. `docs/protocol.md` is the specification.
//!
//! ```
//! use durable_session_protocol::ws::{ClientMsg, ServerMsg};
//! let frame = ClientMsg::Subscribe { sub: "s1".into(), path: "sessions/a".into(), offset: "-1".into() }.to_json();
//! assert_eq!(ClientMsg::parse(&frame).unwrap(), ClientMsg::Subscribe {
//!     sub: "s1".into(), path: "sessions/a".into(), offset: "-1".into() });
//! assert!(ServerMsg::parse(r#"{"op":"pong"}"#).is_ok());
//! ```

use crate::json::{self, Json, Obj};

/// Where the WebSocket endpoint is mounted.
pub const WS_PATH: &str = "/v1/ws";

/// WebSocket close codes used by the server.
pub mod close {
    /// The client or the server ended the connection normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down. Reconnect (to another node) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was larger than the hard limit. Reconnect and resume.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Nothing was received from the peer within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The client read too slowly: its unsent frames passed the server's
    /// limit. Reconnect and resume from the last offsets received.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// The connection's token expired and no fresh one arrived (in an
    /// `auth` frame) within the server's grace period. Get a new token,
    /// reconnect and resume.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The connection's principal (the token's `sub`) already holds as many
    /// connections as the server allows (`--max-ws-per-principal`). Close
    /// another connection, or reconnect later with backoff.
    pub const TOO_MANY_CONNECTIONS: u16 = 4004;
}

/// Machine-readable error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not a JSON object, not UTF-8, or a field of the wrong type/missing.
    BadFrame,
    /// An `op` this server does not know.
    UnknownOp,
    /// The frame or its payload is larger than the server accepts.
    TooLarge,
    /// An offset that is neither `-1`, `now`, nor one this server issued.
    BadOffset,
    /// A request the protocol rejects (empty JSON array, invalid JSON …).
    BadRequest,
    /// No such stream.
    NotFound,
    /// The stream was deleted, or the offset is no longer retained.
    Gone,
    /// Content type or configuration conflict, or `Stream-Seq` regression.
    Conflict,
    /// The stream is closed; nothing more can be appended.
    Closed,
    /// The token does not cover this path and right (or names another
    /// principal). Final for that request or subscription.
    Forbidden,
    /// The producer epoch is stale: a newer epoch of this producer id took
    /// over. A client starts a new epoch (at seq 0) and resends.
    StaleEpoch,
    /// The producer seq skipped ahead.
    SeqGap,
    /// `subscribe` with a `sub` id already in use on this socket.
    DuplicateSub,
    /// `unsubscribe` of a `sub` id that is not subscribed.
    UnknownSub,
    /// The server failed.
    Internal,
    /// No valid token: missing, expired, malformed, signed with an unknown
    /// key or algorithm. Get a fresh token and try again.
    Unauthorized,
    /// `subscribe` past the server's limit of live subscriptions per
    /// connection. Final for that subscription; the others go on.
    TooManySubscriptions,
    /// A connection past the server's limit per client address or per
    /// principal (HTTP `429` on the upgrade, or close code 4004). Transient:
    /// reconnect with backoff.
    TooManyConnections,
    /// A long-poll or SSE read past the server's limit of live HTTP readers
    /// of one stream (HTTP `503` with `Retry-After`). Transient.
    TooManyReaders,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownOp => "unknown_op",
            Self::TooLarge => "too_large",
            Self::BadOffset => "bad_offset",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::Conflict => "conflict",
            Self::Closed => "closed",
            Self::Forbidden => "forbidden",
            Self::StaleEpoch => "stale_epoch",
            Self::SeqGap => "seq_gap",
            Self::DuplicateSub => "duplicate_sub",
            Self::UnknownSub => "unknown_sub",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyReaders => "too_many_readers",
        }
    }

    /// Every code.
    pub const ALL: [Self; 19] = [
        Self::BadFrame,
        Self::UnknownOp,
        Self::TooLarge,
        Self::BadOffset,
        Self::BadRequest,
        Self::NotFound,
        Self::Gone,
        Self::Conflict,
        Self::Closed,
        Self::Forbidden,
        Self::StaleEpoch,
        Self::SeqGap,
        Self::DuplicateSub,
        Self::UnknownSub,
        Self::Internal,
        Self::Unauthorized,
        Self::TooManySubscriptions,
        Self::TooManyConnections,
        Self::TooManyReaders,
    ];

    /// The code of a wire name.
    ///
    /// ```
    /// use durable_session_protocol::ws::ErrorCode;
    /// assert!(ErrorCode::ALL.iter().all(|c| ErrorCode::parse(c.as_str()) == Some(*c)));
    /// assert_eq!(ErrorCode::parse("nope"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status that carries this code (the one mapping between
    /// statuses and codes, `docs/protocol.md` §6.1): the server answers an
    /// HTTP request with it, and [`ErrorCode::from_http_status`] reads it
    /// back. Codes only the WebSocket uses (`bad_frame`, `unknown_op`,
    /// `duplicate_sub`, `unknown_sub`, `too_many_subscriptions`) are `400`,
    /// like `bad_offset`. `429` and `503` (`too_many_connections`,
    /// `too_many_readers`) read back as `internal`: transient all the same.
    ///
    /// ```
    /// use durable_session_protocol::ws::ErrorCode;
    /// assert_eq!(ErrorCode::TooLarge.http_status(), 413);
    /// assert_eq!(ErrorCode::StaleEpoch.http_status(), 403);
    /// ```
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadFrame
            | Self::UnknownOp
            | Self::BadOffset
            | Self::BadRequest
            | Self::DuplicateSub
            | Self::UnknownSub
            | Self::TooManySubscriptions => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::StaleEpoch => 403,
            Self::NotFound => 404,
            Self::Conflict | Self::Closed | Self::SeqGap => 409,
            Self::Gone => 410,
            Self::TooLarge => 413,
            Self::TooManyConnections => 429,
            Self::Internal => 500,
            Self::TooManyReaders => 503,
        }
    }

    /// The code an HTTP error response carries: its status, refined by the
    /// Durable Streams headers in `hints` where one status serves several
    /// codes. Statuses that mean "try again later" — every 5xx (a proxy's
    /// `502`/`503`/`504` included), `429 Too Many Requests`, `408 Request
    /// Timeout` and anything that is neither 4xx nor 5xx — are `internal`
    /// (transient, §6.1); another 4xx is `bad_request`.
    ///
    /// ```
    /// use durable_session_protocol::ws::{ErrorCode, HttpHints};
    /// let none = HttpHints::default();
    /// assert_eq!(ErrorCode::from_http_status(503, none), ErrorCode::Internal);
    /// assert_eq!(ErrorCode::from_http_status(404, none), ErrorCode::NotFound);
    /// assert_eq!(ErrorCode::from_http_status(413, none), ErrorCode::TooLarge);
    /// let fenced = HttpHints { producer_epoch: true, ..none };
    /// assert_eq!(ErrorCode::from_http_status(403, fenced), ErrorCode::StaleEpoch);
    /// ```
    pub fn from_http_status(status: u16, hints: HttpHints) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 if hints.producer_epoch => Self::StaleEpoch,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            408 | 429 => Self::Internal,
            409 if hints.stream_closed => Self::Closed,
            409 if hints.expected_seq => Self::SeqGap,
            409 => Self::Conflict,
            410 => Self::Gone,
            413 => Self::TooLarge,
            400..=499 => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// What an HTTP error response says besides its status: the Durable Streams
/// headers that tell apart the codes sharing a status
/// ([`ErrorCode::from_http_status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpHints {
    /// A `Producer-Epoch` header (on a `403`: the epoch is stale).
    pub producer_epoch: bool,
    /// `Stream-Closed: true` (on a `409`: the stream is closed).
    pub stream_closed: bool,
    /// A `Producer-Expected-Seq` header (on a `409`: a seq gap).
    pub expected_seq: bool,
}

/// An idempotent producer's identity on one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerIds {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Content of an append or of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// JSON text (JSON-mode streams). On append, an array is flattened one
    /// level into several messages.
    Json(String),
    /// UTF-8 text (`text/*` streams).
    Text(String),
    /// Bytes in standard base64 (any other content type).
    Base64(String),
}

impl Payload {
    /// A JSON payload from JSON text, validated.
    ///
    /// ```
    /// use durable_session_protocol::ws::Payload;
    /// assert_eq!(Payload::json(" [1] ").unwrap(), Payload::Json("[1]".into()));
    /// assert!(Payload::json("{").is_err());
    /// ```
    pub fn json(text: &str) -> Result<Self, json::JsonError> {
        json::parse(text).map(|v| Self::Json(v.raw.to_owned()))
    }

    fn write(&self, o: &mut Obj) {
        match self {
            Self::Json(raw) => o.raw("data", raw),
            Self::Text(t) => o.str("text", t),
            Self::Base64(b) => o.str("base64", b),
        };
    }
}

/// One delivered message and the offset to resume from after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The stream offset just after this message (empty when the transport
    /// only knows the offset after the whole batch).
    pub offset: String,
    pub payload: Payload,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Deliver `path` from `offset` (`-1`, `now`, or an issued offset) under
    /// the client-chosen id `sub`.
    Subscribe { sub: String, path: String, offset: String },
    /// Stop delivering `sub`.
    Unsubscribe { sub: String },
    /// Create a stream if it does not exist (default content type
    /// `application/json`). Answered by an `ack`.
    Create {
        req: String,
        path: String,
        content_type: Option<String>,
    },
    /// Append to (and/or close) a stream. Answered by an `ack` or an `error`
    /// carrying the same `req`.
    Append {
        req: String,
        path: String,
        payload: Option<Payload>,
        producer: Option<ProducerIds>,
        close: bool,
    },
    /// Heartbeat; answered by `pong` with the same `t`.
    Ping { t: Option<u64> },
    /// Answer to a server `ping`.
    Pong { t: Option<u64> },
    /// Presents an access token (a JWT) for this connection; a later `auth`
    /// replaces the token on the live connection without touching its
    /// subscriptions. Answered by `authed` or an `unauthorized` error, both
    /// carrying `req` when given.
    Auth { req: Option<String>, token: String },
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// First frame on every connection.
    Hello {
        /// The server pings at this interval and expects the client to send
        /// something at least this often.
        heartbeat_ms: u64,
        /// Largest frame the server accepts.
        max_frame_bytes: u64,
    },
    /// Messages of a subscription, in order. `next` is the offset to resume
    /// from; `up_to_date` says the subscription reached the tail; `closed`
    /// says the stream is closed and no more messages will ever come.
    Events {
        sub: String,
        messages: Vec<Message>,
        next: String,
        up_to_date: bool,
        closed: bool,
    },
    /// An append or create was applied (or was a duplicate). `offset` is the
    /// stream's tail after it.
    Ack {
        req: String,
        offset: String,
        duplicate: bool,
        closed: bool,
    },
    /// A request, a subscription or a frame failed. With `sub`, that
    /// subscription has ended; with `req`, that request failed; with
    /// neither, the frame could not be attributed.
    Error {
        sub: Option<String>,
        req: Option<String>,
        code: ErrorCode,
        message: String,
    },
    /// `sub` has ended at the client's request.
    Unsubscribed { sub: String },
    /// Heartbeat; answer with `pong`.
    Ping { t: Option<u64> },
    /// Answer to a client `ping`.
    Pong { t: Option<u64> },
    /// The token of an `auth` frame was accepted: it now governs the
    /// connection. `principal` is the token's `sub`; `exp` its expiry
    /// (seconds since the Unix epoch).
    Authed {
        req: Option<String>,
        principal: String,
        exp: u64,
    },
}

/// A frame that could not be used, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub sub: Option<String>,
    pub req: Option<String>,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for FrameError {}

/// A parsed frame being read field by field.
struct Fields<'a> {
    v: Json<'a>,
    op: String,
}

impl<'a> Fields<'a> {
    fn parse(text: &'a str) -> Result<Self, FrameError> {
        let fail = |message: String| FrameError {
            code: ErrorCode::BadFrame,
            message,
            sub: None,
            req: None,
        };
        let v = json::parse(text).map_err(|e| fail(format!("malformed frame: {e}")))?;
        if !v.is_object() {
            return Err(fail("a frame is a JSON object".into()));
        }
        let op = v
            .get("op")
            .and_then(Json::str)
            .ok_or_else(|| fail("a frame needs a string field \"op\"".into()))?;
        Ok(Self { op: op.to_owned(), v })
    }

    fn id(&self, key: &str) -> Option<String> {
        self.v.get(key).and_then(Json::str).map(str::to_owned)
    }

    fn fail(&self, code: ErrorCode, message: String) -> FrameError {
        FrameError {
            code,
            message,
            sub: self.id("sub"),
            req: self.id("req"),
        }
    }

    fn wrong(&self, key: &str, kind: &str) -> FrameError {
        self.fail(
            ErrorCode::BadFrame,
            format!("{}: field \"{key}\" must be {kind}", self.op),
        )
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, FrameError> {
        match self.v.get(key) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => v
                .str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| self.wrong(key, "a string")),
        }
    }

    fn str(&self, key: &str) -> Result<String, FrameError> {
        self.opt_str(key)?.ok_or_else(|| self.wrong(key, "a string"))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, FrameError> {
        match self.v.get(key) {
            None => Ok(None),
            Some(v) => v
                .u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, FrameError> {
        match self.v.get(key) {
            None => Ok(None),
            Some(v) => v.bool().map(Some).ok_or_else(|| self.wrong(key, "a boolean")),
        }
    }

    /// At most one of `data`, `text`, `base64`, from `v`.
    fn payload_of(&self, v: &Json<'_>) -> Result<Option<Payload>, FrameError> {
        let string = |key| match v.get(key) {
            None => Ok(None),
            Some(s) => s
                .str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| self.wrong(key, "a string")),
        };
        let data = v.get("data").map(|d| Payload::Json(d.raw.to_owned()));
        let text = string("text")?.map(Payload::Text);
        let base64 = string("base64")?.map(Payload::Base64);
        let mut present = [data, text, base64].into_iter().flatten();
        let first = present.next();
        if present.next().is_some() {
            return Err(self.fail(ErrorCode::BadFrame, "send at most one of data, text and base64".into()));
        }
        Ok(first)
    }
}

impl ClientMsg {
    /// The subscription id and request id the frame carries, if any: an
    /// error about the frame names them.
    ///
    /// ```
    /// use durable_session_protocol::ws::ClientMsg;
    /// let f = ClientMsg::Unsubscribe { sub: "s1".into() };
    /// assert_eq!(f.ids(), (Some("s1"), None));
    /// ```
    pub fn ids(&self) -> (Option<&str>, Option<&str>) {
        match self {
            ClientMsg::Subscribe { sub, .. } | ClientMsg::Unsubscribe { sub } => (Some(sub), None),
            ClientMsg::Create { req, .. } | ClientMsg::Append { req, .. } => (None, Some(req)),
            ClientMsg::Auth { req, .. } => (None, req.as_deref()),
            ClientMsg::Ping { .. } | ClientMsg::Pong { .. } => (None, None),
        }
    }

    /// Parses a client frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let f = Fields::parse(text)?;
        Ok(match f.op.as_str() {
            "subscribe" => ClientMsg::Subscribe {
                sub: f.str("sub")?,
                path: f.str("path")?,
                offset: f.opt_str("offset")?.unwrap_or_else(|| "-1".into()),
            },
            "unsubscribe" => ClientMsg::Unsubscribe { sub: f.str("sub")? },
            "create" => ClientMsg::Create {
                req: f.str("req")?,
                path: f.str("path")?,
                content_type: f.opt_str("content_type")?,
            },
            "append" => {
                let producer = match f.v.get("producer") {
                    None => None,
                    Some(p) => {
                        let id = p.get("id").and_then(Json::str);
                        let epoch = p.get("epoch").and_then(Json::u64);
                        let seq = p.get("seq").and_then(Json::u64);
                        match (id, epoch, seq) {
                            (Some(id), Some(epoch), Some(seq)) => Some(ProducerIds {
                                id: id.to_owned(),
                                epoch,
                                seq,
                            }),
                            _ => return Err(f.wrong("producer", "{id: string, epoch: integer ≥ 0, seq: integer ≥ 0}")),
                        }
                    }
                };
                ClientMsg::Append {
                    req: f.str("req")?,
                    path: f.str("path")?,
                    payload: f.payload_of(&f.v)?,
                    producer,
                    close: f.opt_bool("close")?.unwrap_or(false),
                }
            }
            "ping" => ClientMsg::Ping { t: f.opt_u64("t")? },
            "pong" => ClientMsg::Pong { t: f.opt_u64("t")? },
            "auth" => ClientMsg::Auth {
                req: f.opt_str("req")?,
                token: f.str("token")?,
            },
            other => return Err(f.fail(ErrorCode::UnknownOp, format!("unknown op \"{other}\""))),
        })
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut o = Obj::new();
        match self {
            ClientMsg::Subscribe { sub, path, offset } => o
                .str("op", "subscribe")
                .str("sub", sub)
                .str("path", path)
                .str("offset", offset),
            ClientMsg::Unsubscribe { sub } => o.str("op", "unsubscribe").str("sub", sub),
            ClientMsg::Create {
                req,
                path,
                content_type,
            } => o
                .str("op", "create")
                .str("req", req)
                .str("path", path)
                .opt_str("content_type", content_type.as_deref()),
            ClientMsg::Append {
                req,
                path,
                payload,
                producer,
                close,
            } => {
                o.str("op", "append").str("req", req).str("path", path);
                if let Some(p) = payload {
                    p.write(&mut o);
                }
                if let Some(p) = producer {
                    let mut po = Obj::new();
                    po.str("id", &p.id).u64("epoch", p.epoch).u64("seq", p.seq);
                    o.raw("producer", &po.finish());
                }
                if *close {
                    o.bool("close", true);
                }
                &mut o
            }
            ClientMsg::Ping { t } => ping(&mut o, "ping", *t),
            ClientMsg::Pong { t } => ping(&mut o, "pong", *t),
            ClientMsg::Auth { req, token } => o.str("op", "auth").opt_str("req", req.as_deref()).str("token", token),
        };
        o.finish()
    }
}

fn ping<'o>(o: &'o mut Obj, op: &str, t: Option<u64>) -> &'o mut Obj {
    o.str("op", op);
    if let Some(t) = t {
        o.u64("t", t);
    }
    o
}

/// The part of an `events` frame that does not name the subscription — its
/// messages, `next`, `up_to_date` and `closed` — as a JSON object. A server
/// delivering one batch to many subscribers of a stream writes it once and
/// [`events_frame`] adds each subscriber's `sub`.
///
/// ```
/// use durable_session_protocol::ws::{Message, Payload, ServerMsg, events_body, events_frame};
///
/// let messages = [Message { offset: "0_1".into(), payload: Payload::Json("{}".into()) }];
/// let body = events_body(&messages, "0_1", true, false);
/// assert_eq!(body, r#"{"messages":[{"offset":"0_1","data":{}}],"next":"0_1","up_to_date":true}"#);
/// let frame = events_frame("s1", &body);
/// let ServerMsg::Events { sub, messages, .. } = ServerMsg::parse(&frame).unwrap() else { panic!() };
/// assert_eq!((sub.as_str(), messages.len()), ("s1", 1));
/// ```
pub fn events_body(messages: &[Message], next: &str, up_to_date: bool, closed: bool) -> String {
    let items: Vec<String> = messages
        .iter()
        .map(|m| {
            let mut mo = Obj::new();
            mo.str("offset", &m.offset);
            m.payload.write(&mut mo);
            mo.finish()
        })
        .collect();
    let mut o = Obj::new();
    o.raw("messages", &json::array(items.iter().map(String::as_str)))
        .str("next", next)
        .bool("up_to_date", up_to_date);
    if closed {
        o.bool("closed", true);
    }
    o.finish()
}

/// The `events` frame for subscription `sub` from a body written by
/// [`events_body`] (the same text [`ServerMsg::to_json`] writes).
pub fn events_frame(sub: &str, body: &str) -> String {
    let mut head = Obj::new();
    head.str("op", "events").str("sub", sub);
    let head = head.finish();
    // `{"op":…,"sub":…}` + `,` + the body without its `{`.
    let mut frame = String::with_capacity(head.len() + body.len());
    frame.push_str(&head[..head.len() - 1]);
    frame.push(',');
    frame.push_str(body.strip_prefix('{').unwrap_or(body));
    frame
}

impl ServerMsg {
    /// Parses a server frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let f = Fields::parse(text)?;
        Ok(match f.op.as_str() {
            "hello" => ServerMsg::Hello {
                heartbeat_ms: f.opt_u64("heartbeat_ms")?.unwrap_or(0),
                max_frame_bytes: f.opt_u64("max_frame_bytes")?.unwrap_or(0),
            },
            "events" => {
                let mut messages = Vec::new();
                for m in f.v.get("messages").and_then(Json::array).unwrap_or_default() {
                    let offset = m
                        .get("offset")
                        .and_then(Json::str)
                        .ok_or_else(|| f.wrong("messages", "offset-carrying messages"))?;
                    let payload = f
                        .payload_of(m)?
                        .ok_or_else(|| f.wrong("messages", "messages with data, text or base64"))?;
                    messages.push(Message {
                        offset: offset.to_owned(),
                        payload,
                    });
                }
                ServerMsg::Events {
                    sub: f.str("sub")?,
                    messages,
                    next: f.str("next")?,
                    up_to_date: f.opt_bool("up_to_date")?.unwrap_or(false),
                    closed: f.opt_bool("closed")?.unwrap_or(false),
                }
            }
            "ack" => ServerMsg::Ack {
                req: f.str("req")?,
                offset: f.str("offset")?,
                duplicate: f.opt_bool("duplicate")?.unwrap_or(false),
                closed: f.opt_bool("closed")?.unwrap_or(false),
            },
            "error" => ServerMsg::Error {
                sub: f.opt_str("sub")?,
                req: f.opt_str("req")?,
                code: ErrorCode::parse(&f.str("code")?).ok_or_else(|| f.wrong("code", "a known error code"))?,
                message: f.opt_str("message")?.unwrap_or_default(),
            },
            "unsubscribed" => ServerMsg::Unsubscribed { sub: f.str("sub")? },
            "ping" => ServerMsg::Ping { t: f.opt_u64("t")? },
            "pong" => ServerMsg::Pong { t: f.opt_u64("t")? },
            "authed" => ServerMsg::Authed {
                req: f.opt_str("req")?,
                principal: f.str("principal")?,
                exp: f.opt_u64("exp")?.unwrap_or(0),
            },
            other => return Err(f.fail(ErrorCode::UnknownOp, format!("unknown op \"{other}\""))),
        })
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut o = Obj::new();
        match self {
            ServerMsg::Hello {
                heartbeat_ms,
                max_frame_bytes,
            } => o
                .str("op", "hello")
                .u64("heartbeat_ms", *heartbeat_ms)
                .u64("max_frame_bytes", *max_frame_bytes),
            ServerMsg::Events {
                sub,
                messages,
                next,
                up_to_date,
                closed,
            } => return events_frame(sub, &events_body(messages, next, *up_to_date, *closed)),
            ServerMsg::Ack {
                req,
                offset,
                duplicate,
                closed,
            } => {
                o.str("op", "ack").str("req", req).str("offset", offset);
                if *duplicate {
                    o.bool("duplicate", true);
                }
                if *closed {
                    o.bool("closed", true);
                }
                &mut o
            }
            ServerMsg::Error {
                sub,
                req,
                code,
                message,
            } => o
                .str("op", "error")
                .opt_str("sub", sub.as_deref())
                .opt_str("req", req.as_deref())
                .str("code", code.as_str())
                .str("message", message),
            ServerMsg::Unsubscribed { sub } => o.str("op", "unsubscribed").str("sub", sub),
            ServerMsg::Ping { t } => ping(&mut o, "ping", *t),
            ServerMsg::Pong { t } => ping(&mut o, "pong", *t),
            ServerMsg::Authed { req, principal, exp } => o
                .str("op", "authed")
                .opt_str("req", req.as_deref())
                .str("principal", principal)
                .u64("exp", *exp),
        };
        o.finish()
    }
}

impl From<FrameError> for ServerMsg {
    fn from(e: FrameError) -> Self {
        ServerMsg::Error {
            sub: e.sub,
            req: e.req,
            code: e.code,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_round_trip() {
        let frames = [
            ClientMsg::Subscribe {
                sub: "s".into(),
                path: "p".into(),
                offset: "now".into(),
            },
            ClientMsg::Unsubscribe { sub: "s".into() },
            ClientMsg::Create {
                req: "r".into(),
                path: "p".into(),
                content_type: Some("text/plain".into()),
            },
            ClientMsg::Append {
                req: "r".into(),
                path: "p".into(),
                payload: Some(Payload::json(r#"{"a":[1,2]}"#).unwrap()),
                producer: Some(ProducerIds {
                    id: "w".into(),
                    epoch: 1,
                    seq: 2,
                }),
                close: true,
            },
            ClientMsg::Append {
                req: "r".into(),
                path: "p".into(),
                payload: Some(Payload::Text("hi".into())),
                producer: None,
                close: false,
            },
            ClientMsg::Ping { t: Some(5) },
            ClientMsg::Pong { t: None },
            ClientMsg::Auth {
                req: Some("a1".into()),
                token: "x.y.z".into(),
            },
            ClientMsg::Auth {
                req: None,
                token: "x.y.z".into(),
            },
        ];
        for f in frames {
            assert_eq!(ClientMsg::parse(&f.to_json()).unwrap(), f);
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = [
            ServerMsg::Hello {
                heartbeat_ms: 15_000,
                max_frame_bytes: 1 << 20,
            },
            ServerMsg::Events {
                sub: "s".into(),
                messages: vec![Message {
                    offset: "o1".into(),
                    payload: Payload::json("[1]").unwrap(),
                }],
                next: "o1".into(),
                up_to_date: true,
                closed: false,
            },
            ServerMsg::Ack {
                req: "r".into(),
                offset: "o".into(),
                duplicate: true,
                closed: false,
            },
            ServerMsg::Error {
                sub: Some("s".into()),
                req: None,
                code: ErrorCode::NotFound,
                message: "m".into(),
            },
            ServerMsg::Unsubscribed { sub: "s".into() },
            ServerMsg::Ping { t: Some(1) },
            ServerMsg::Authed {
                req: Some("a1".into()),
                principal: "ada".into(),
                exp: 1_800_000_000,
            },
        ];
        for f in frames {
            assert_eq!(ServerMsg::parse(&f.to_json()).unwrap(), f);
        }
    }

    #[test]
    fn bad_frames_have_codes_and_keep_ids() {
        let e = ClientMsg::parse("not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        let e = ClientMsg::parse(r#"{"op":"teleport","req":"r9"}"#).unwrap_err();
        assert_eq!((e.code, e.req.as_deref()), (ErrorCode::UnknownOp, Some("r9")));
        let e = ClientMsg::parse(r#"{"op":"subscribe","sub":"s1"}"#).unwrap_err();
        assert_eq!((e.code, e.sub.as_deref()), (ErrorCode::BadFrame, Some("s1")));
        let e = ClientMsg::parse(r#"{"op":"subscribe","sub":5,"path":"p"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        let e = ClientMsg::parse(r#"{"op":"append","req":"r","path":"p","data":1,"text":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.req.as_deref()), (ErrorCode::BadFrame, Some("r")));
        for bad in [
            "[1]",
            "{}",
            r#"{"op":5}"#,
            r#"{"op":"ping","t":-1}"#,
            r#"{"op":"append","req":"r","path":"p","producer":{"id":"p"}}"#,
        ] {
            assert_eq!(ClientMsg::parse(bad).unwrap_err().code, ErrorCode::BadFrame, "{bad}");
        }
    }

    #[test]
    fn json_payloads_keep_their_exact_text() {
        let f = ClientMsg::parse(r#"{"op":"append","req":"r","path":"p","data":{"b": [1, 2],"a":"é"}}"#).unwrap();
        let ClientMsg::Append {
            payload: Some(Payload::Json(raw)),
            ..
        } = f
        else {
            panic!()
        };
        assert_eq!(raw, r#"{"b": [1, 2],"a":"é"}"#);
    }

    #[test]
    fn http_statuses_and_codes_map_both_ways() {
        let ws_only = [
            ErrorCode::BadFrame,
            ErrorCode::UnknownOp,
            ErrorCode::BadOffset,
            ErrorCode::DuplicateSub,
            ErrorCode::UnknownSub,
            ErrorCode::TooManySubscriptions,
        ];
        // Capacity refusals read back as `internal`: transient all the same.
        let capacity = [ErrorCode::TooManyConnections, ErrorCode::TooManyReaders];
        for code in ErrorCode::ALL {
            let status = code.http_status();
            assert!((400..600).contains(&status), "{code:?}");
            // The headers a server sends with the code.
            let hints = HttpHints {
                producer_epoch: code == ErrorCode::StaleEpoch,
                stream_closed: code == ErrorCode::Closed,
                expected_seq: code == ErrorCode::SeqGap,
            };
            let back = ErrorCode::from_http_status(status, hints);
            if ws_only.contains(&code) {
                assert_eq!(back, ErrorCode::BadRequest, "{code:?}");
            } else if capacity.contains(&code) {
                assert_eq!(back, ErrorCode::Internal, "{code:?}");
            } else {
                assert_eq!(back, code, "{code:?}");
            }
        }
        let none = HttpHints::default();
        for status in [500, 502, 503, 504, 429, 408, 599, 302] {
            assert_eq!(
                ErrorCode::from_http_status(status, none),
                ErrorCode::Internal,
                "{status}"
            );
        }
        for status in [405, 411, 422] {
            assert_eq!(
                ErrorCode::from_http_status(status, none),
                ErrorCode::BadRequest,
                "{status}"
            );
        }
    }

    #[test]
    fn a_deeply_nested_payload_leaves_the_frame_readable() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let frame = format!(r#"{{"op":"append","req":"r1","path":"p","data":{deep}}}"#);
        let ClientMsg::Append {
            req,
            payload: Some(Payload::Json(raw)),
            ..
        } = ClientMsg::parse(&frame).unwrap()
        else {
            panic!()
        };
        assert_eq!((req.as_str(), raw.len()), ("r1", deep.len()));
        let events = format!(
            r#"{{"op":"events","sub":"s","messages":[{{"offset":"1","data":{deep}}},{{"offset":"2","data":{{"type":"x"}}}}],"next":"2"}}"#
        );
        let ServerMsg::Events { messages, .. } = ServerMsg::parse(&events).unwrap() else {
            panic!()
        };
        assert_eq!(messages[1].payload, Payload::Json(r#"{"type":"x"}"#.into()));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = ClientMsg::parse(r#"{"op":"ping","t":1,"future":"field"}"#).unwrap();
        assert_eq!(f, ClientMsg::Ping { t: Some(1) });
    }
}
