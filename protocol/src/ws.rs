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

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
}

/// Machine-readable error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The producer epoch is stale (a newer producer took over).
    Forbidden,
    /// The producer seq skipped ahead.
    SeqGap,
    /// `subscribe` with a `sub` id already in use on this socket.
    DuplicateSub,
    /// `unsubscribe` of a `sub` id that is not subscribed.
    UnknownSub,
    /// The server failed.
    Internal,
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
            Self::SeqGap => "seq_gap",
            Self::DuplicateSub => "duplicate_sub",
            Self::UnknownSub => "unknown_sub",
            Self::Internal => "internal",
        }
    }
}

/// An idempotent producer's identity on one append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIds {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Content of an append or of a delivered message.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A JSON value (JSON-mode streams). On append, an array is flattened
    /// one level into several messages.
    Json(Box<RawValue>),
    /// UTF-8 text (`text/*` streams).
    Text(String),
    /// Bytes in standard base64 (any other content type).
    Base64(String),
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => a.get() == b.get(),
            (Self::Text(a), Self::Text(b)) | (Self::Base64(a), Self::Base64(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Payload {}

impl Payload {
    /// A JSON payload from JSON text.
    pub fn json(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Self::Json)
    }
}

/// One delivered message and the offset to resume from after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The stream offset just after this message.
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

/// The flat wire shape of every frame.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Wire {
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    req: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    producer: Option<ProducerIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    close: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_frame_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<WireMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    up_to_date: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WireMessage {
    offset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

fn split_payload(payload: Option<Payload>) -> (Option<Box<RawValue>>, Option<String>, Option<String>) {
    match payload {
        None => (None, None, None),
        Some(Payload::Json(v)) => (Some(v), None, None),
        Some(Payload::Text(t)) => (None, Some(t), None),
        Some(Payload::Base64(b)) => (None, None, Some(b)),
    }
}

/// At most one of `data`, `text`, `base64`.
fn join_payload(
    data: Option<Box<RawValue>>,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Payload>, &'static str> {
    match (data, text, base64) {
        (None, None, None) => Ok(None),
        (Some(d), None, None) => Ok(Some(Payload::Json(d))),
        (None, Some(t), None) => Ok(Some(Payload::Text(t))),
        (None, None, Some(b)) => Ok(Some(Payload::Base64(b))),
        _ => Err("send at most one of data, text and base64"),
    }
}

fn parse_wire(text: &str) -> Result<Wire, FrameError> {
    serde_json::from_str::<Wire>(text).map_err(|e| {
        // Try to recover the ids so the error can be attributed.
        let ids: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(text).ok();
        let id = |k: &str| {
            ids.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        FrameError {
            code: ErrorCode::BadFrame,
            message: format!("malformed frame: {e}"),
            sub: id("sub"),
            req: id("req"),
        }
    })
}

fn to_json(wire: &Wire) -> String {
    serde_json::to_string(wire).expect("frames always serialize")
}

impl ClientMsg {
    /// Parses a client frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let w = parse_wire(text)?;
        let fail = |code, message: String| FrameError {
            code,
            message,
            sub: w.sub.clone(),
            req: w.req.clone(),
        };
        let need = |field: Option<String>, name: &str| {
            field.ok_or_else(|| fail(ErrorCode::BadFrame, format!("{} needs a string field {name:?}", w.op)))
        };
        Ok(match w.op.as_str() {
            "subscribe" => ClientMsg::Subscribe {
                sub: need(w.sub.clone(), "sub")?,
                path: need(w.path.clone(), "path")?,
                offset: w.offset.clone().unwrap_or_else(|| "-1".into()),
            },
            "unsubscribe" => ClientMsg::Unsubscribe {
                sub: need(w.sub.clone(), "sub")?,
            },
            "create" => ClientMsg::Create {
                req: need(w.req.clone(), "req")?,
                path: need(w.path.clone(), "path")?,
                content_type: w.content_type.clone(),
            },
            "append" => {
                let req = need(w.req.clone(), "req")?;
                let path = need(w.path.clone(), "path")?;
                let payload = join_payload(w.data, w.text, w.base64).map_err(|m| FrameError {
                    code: ErrorCode::BadFrame,
                    message: m.into(),
                    sub: None,
                    req: Some(req.clone()),
                })?;
                ClientMsg::Append {
                    req,
                    path,
                    payload,
                    producer: w.producer,
                    close: w.close.unwrap_or(false),
                }
            }
            "ping" => ClientMsg::Ping { t: w.t },
            "pong" => ClientMsg::Pong { t: w.t },
            other => return Err(fail(ErrorCode::UnknownOp, format!("unknown op {other:?}"))),
        })
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let w = match self.clone() {
            ClientMsg::Subscribe { sub, path, offset } => Wire {
                op: "subscribe".into(),
                sub: Some(sub),
                path: Some(path),
                offset: Some(offset),
                ..Wire::default()
            },
            ClientMsg::Unsubscribe { sub } => Wire {
                op: "unsubscribe".into(),
                sub: Some(sub),
                ..Wire::default()
            },
            ClientMsg::Create {
                req,
                path,
                content_type,
            } => Wire {
                op: "create".into(),
                req: Some(req),
                path: Some(path),
                content_type,
                ..Wire::default()
            },
            ClientMsg::Append {
                req,
                path,
                payload,
                producer,
                close,
            } => {
                let (data, text, base64) = split_payload(payload);
                Wire {
                    op: "append".into(),
                    req: Some(req),
                    path: Some(path),
                    data,
                    text,
                    base64,
                    producer,
                    close: close.then_some(true),
                    ..Wire::default()
                }
            }
            ClientMsg::Ping { t } => Wire {
                op: "ping".into(),
                t,
                ..Wire::default()
            },
            ClientMsg::Pong { t } => Wire {
                op: "pong".into(),
                t,
                ..Wire::default()
            },
        };
        to_json(&w)
    }
}

impl ServerMsg {
    /// Parses a server frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let w = parse_wire(text)?;
        let fail = |message: String| FrameError {
            code: ErrorCode::BadFrame,
            message,
            sub: w.sub.clone(),
            req: w.req.clone(),
        };
        let need = |field: Option<String>, name: &str| {
            field.ok_or_else(|| fail(format!("{} needs a string field {name:?}", w.op)))
        };
        Ok(match w.op.as_str() {
            "hello" => ServerMsg::Hello {
                heartbeat_ms: w.heartbeat_ms.unwrap_or(0),
                max_frame_bytes: w.max_frame_bytes.unwrap_or(0),
            },
            "events" => {
                let sub = need(w.sub.clone(), "sub")?;
                let next = need(w.next.clone(), "next")?;
                let mut messages = Vec::new();
                for m in w.messages.unwrap_or_default() {
                    let payload = join_payload(m.data, m.text, m.base64)
                        .map_err(|e| fail(e.into()))?
                        .ok_or_else(|| fail("a message needs data, text or base64".into()))?;
                    messages.push(Message {
                        offset: m.offset,
                        payload,
                    });
                }
                ServerMsg::Events {
                    sub,
                    messages,
                    next,
                    up_to_date: w.up_to_date.unwrap_or(false),
                    closed: w.closed.unwrap_or(false),
                }
            }
            "ack" => ServerMsg::Ack {
                req: need(w.req.clone(), "req")?,
                offset: need(w.offset.clone(), "offset")?,
                duplicate: w.duplicate.unwrap_or(false),
                closed: w.closed.unwrap_or(false),
            },
            "error" => ServerMsg::Error {
                sub: w.sub.clone(),
                req: w.req.clone(),
                code: w.code.ok_or_else(|| fail("error needs a code".into()))?,
                message: w.message.clone().unwrap_or_default(),
            },
            "unsubscribed" => ServerMsg::Unsubscribed {
                sub: need(w.sub.clone(), "sub")?,
            },
            "ping" => ServerMsg::Ping { t: w.t },
            "pong" => ServerMsg::Pong { t: w.t },
            other => {
                return Err(FrameError {
                    code: ErrorCode::UnknownOp,
                    message: format!("unknown op {other:?}"),
                    sub: w.sub.clone(),
                    req: w.req.clone(),
                });
            }
        })
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let w = match self.clone() {
            ServerMsg::Hello {
                heartbeat_ms,
                max_frame_bytes,
            } => Wire {
                op: "hello".into(),
                heartbeat_ms: Some(heartbeat_ms),
                max_frame_bytes: Some(max_frame_bytes),
                ..Wire::default()
            },
            ServerMsg::Events {
                sub,
                messages,
                next,
                up_to_date,
                closed,
            } => Wire {
                op: "events".into(),
                sub: Some(sub),
                messages: Some(
                    messages
                        .into_iter()
                        .map(|m| {
                            let (data, text, base64) = split_payload(Some(m.payload));
                            WireMessage {
                                offset: m.offset,
                                data,
                                text,
                                base64,
                            }
                        })
                        .collect(),
                ),
                next: Some(next),
                up_to_date: Some(up_to_date),
                closed: closed.then_some(true),
                ..Wire::default()
            },
            ServerMsg::Ack {
                req,
                offset,
                duplicate,
                closed,
            } => Wire {
                op: "ack".into(),
                req: Some(req),
                offset: Some(offset),
                duplicate: duplicate.then_some(true),
                closed: closed.then_some(true),
                ..Wire::default()
            },
            ServerMsg::Error {
                sub,
                req,
                code,
                message,
            } => Wire {
                op: "error".into(),
                sub,
                req,
                code: Some(code),
                message: Some(message),
                ..Wire::default()
            },
            ServerMsg::Unsubscribed { sub } => Wire {
                op: "unsubscribed".into(),
                sub: Some(sub),
                ..Wire::default()
            },
            ServerMsg::Ping { t } => Wire {
                op: "ping".into(),
                t,
                ..Wire::default()
            },
            ServerMsg::Pong { t } => Wire {
                op: "pong".into(),
                t,
                ..Wire::default()
            },
        };
        to_json(&w)
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
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = ClientMsg::parse(r#"{"op":"ping","t":1,"future":"field"}"#).unwrap();
        assert_eq!(f, ClientMsg::Ping { t: Some(1) });
    }
}
