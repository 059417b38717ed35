//! Following one stream over plain Durable Streams HTTP: catch-up `GET`s
//! until up to date, then long-polls — the decisions, without the fetch.
//!
//! The browser's HTTP link ([`crate::web`]) runs the requests; this type
//! says which request comes next and turns each answer into the frame a
//! WebSocket server would have sent for the subscription (`events`, or an
//! `error` that ends it), so the core sees one frame model on every
//! transport.

use durable_session_protocol::path::encode_query_value;
use durable_session_protocol::ws::{ErrorCode, Message, ServerMsg};

/// What a successful read (`200` or `204`) said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReply {
    /// `Stream-Next-Offset`.
    pub next: Option<String>,
    /// `Stream-Up-To-Date` was present, or the status was `204`.
    pub up_to_date: bool,
    /// `Stream-Closed: true`.
    pub closed: bool,
    /// `Stream-Cursor`, echoed on the next long-poll.
    pub cursor: Option<String>,
    /// The messages of the body, in order (their offsets left empty: HTTP
    /// gives one offset per response, `next`).
    pub messages: Vec<Message>,
}

/// The state of one subscription followed over HTTP.
///
/// ```
/// use durable_sessions::core::http_read::{HttpFollow, ReadReply};
/// use durable_session_protocol::ws::ServerMsg;
///
/// let mut follow = HttpFollow::new("s1".into(), "-1".into());
/// assert_eq!(follow.query(), "offset=-1");
/// let (frame, go_on) = follow.on_reply(Ok(ReadReply {
///     next: Some("0000_0010".into()),
///     up_to_date: true,
///     ..ReadReply::default()
/// }));
/// assert!(matches!(frame, Some(ServerMsg::Events { up_to_date: true, .. })));
/// assert!(go_on);
/// assert_eq!(follow.query(), "offset=0000_0010&live=long-poll");
/// ```
#[derive(Debug, Clone)]
pub struct HttpFollow {
    sub: String,
    offset: String,
    cursor: Option<String>,
    live: bool,
    announced: bool,
}

impl HttpFollow {
    /// Follows subscription `sub` from `offset` (`-1`, `now` or an offset
    /// the server handed out).
    pub fn new(sub: String, offset: String) -> Self {
        Self {
            sub,
            offset,
            cursor: None,
            live: false,
            announced: false,
        }
    }

    /// The query string of the next `GET` (a catch-up read, or a long-poll
    /// once up to date, with the server's cursor).
    pub fn query(&self) -> String {
        let mut query = format!("offset={}", encode_query_value(&self.offset));
        if self.live {
            query.push_str("&live=long-poll");
            if let Some(c) = &self.cursor {
                query.push_str("&cursor=");
                query.push_str(&encode_query_value(c));
            }
        }
        query
    }

    /// A request that got no answer within its deadline. For a long-poll
    /// that only means the stream may have been quiet, so the next request
    /// is a plain read (a live server answers it at once) and this returns
    /// `true`; for a plain read the link is dead: `false`, a fault.
    pub fn timed_out(&mut self) -> bool {
        std::mem::replace(&mut self.live, false)
    }

    /// The frame for an answer (`Ok` for `200`/`204`, else the error code
    /// and message the status maps to), and whether to go on reading.
    /// The first answer is always delivered (it tells the subscriber where
    /// the stream stands), later ones when they carry messages or the end.
    pub fn on_reply(&mut self, reply: Result<ReadReply, (ErrorCode, String)>) -> (Option<ServerMsg>, bool) {
        let reply = match reply {
            Ok(reply) => reply,
            Err((code, message)) => {
                // A read's only client error is its offset.
                let code = if code == ErrorCode::BadRequest {
                    ErrorCode::BadOffset
                } else {
                    code
                };
                let frame = ServerMsg::Error {
                    sub: Some(self.sub.clone()),
                    req: None,
                    code,
                    message,
                };
                return (Some(frame), false);
            }
        };
        let next = reply.next.unwrap_or_else(|| self.offset.clone());
        if let Some(cursor) = reply.cursor {
            self.cursor = Some(cursor);
        }
        let frame = (!reply.messages.is_empty() || !self.announced || reply.closed).then(|| {
            self.announced = true;
            ServerMsg::Events {
                sub: self.sub.clone(),
                messages: reply.messages,
                next: next.clone(),
                up_to_date: reply.up_to_date,
                closed: reply.closed,
            }
        });
        self.offset = next;
        self.live = reply.up_to_date;
        (frame, !reply.closed)
    }
}

#[cfg(test)]
mod tests {
    use durable_session_protocol::ws::Payload;

    use super::*;

    fn json(raw: &str) -> Message {
        Message {
            offset: String::new(),
            payload: Payload::Json(raw.into()),
        }
    }

    #[test]
    fn catches_up_then_long_polls_with_the_cursor() {
        let mut f = HttpFollow::new("s".into(), "-1".into());
        let (frame, go_on) = f.on_reply(Ok(ReadReply {
            next: Some("0_2".into()),
            messages: vec![json("1"), json("2")],
            ..ReadReply::default()
        }));
        assert!(
            matches!(frame, Some(ServerMsg::Events { ref messages, up_to_date: false, .. }) if messages.len() == 2)
        );
        assert!(go_on);
        assert_eq!(f.query(), "offset=0_2", "not up to date: another catch-up read");
        f.on_reply(Ok(ReadReply {
            next: Some("0_3".into()),
            up_to_date: true,
            cursor: Some("c 1".into()),
            messages: vec![json("3")],
            ..ReadReply::default()
        }));
        assert_eq!(f.query(), "offset=0_3&live=long-poll&cursor=c%201");
    }

    #[test]
    fn a_quiet_long_poll_is_not_delivered_but_the_first_answer_is() {
        let mut f = HttpFollow::new("s".into(), "now".into());
        let quiet = ReadReply {
            next: Some("0_9".into()),
            up_to_date: true,
            ..ReadReply::default()
        };
        assert!(
            f.on_reply(Ok(quiet.clone())).0.is_some(),
            "the first answer says where the stream stands"
        );
        assert_eq!(f.on_reply(Ok(quiet)), (None, true));
    }

    #[test]
    fn a_timed_out_long_poll_becomes_a_plain_read_and_a_timed_out_read_is_a_fault() {
        let mut f = HttpFollow::new("s".into(), "0_1".into());
        assert!(!f.timed_out(), "a plain read that times out: the link is dead");
        f.on_reply(Ok(ReadReply {
            up_to_date: true,
            ..ReadReply::default()
        }));
        assert!(f.timed_out());
        assert_eq!(f.query(), "offset=0_1");
    }

    #[test]
    fn the_end_of_a_closed_stream_and_errors_end_the_subscription() {
        let mut f = HttpFollow::new("s".into(), "0_1".into());
        let (frame, go_on) = f.on_reply(Ok(ReadReply {
            up_to_date: true,
            closed: true,
            ..ReadReply::default()
        }));
        assert!(matches!(frame, Some(ServerMsg::Events { closed: true, ref next, .. }) if next == "0_1"));
        assert!(!go_on);

        let mut f = HttpFollow::new("s".into(), "junk".into());
        let (frame, go_on) = f.on_reply(Err((ErrorCode::BadRequest, "bad offset".into())));
        assert!(
            matches!(frame, Some(ServerMsg::Error { code: ErrorCode::BadOffset, sub: Some(ref s), .. }) if s == "s")
        );
        assert!(!go_on);
        let (frame, _) = f.on_reply(Err((ErrorCode::NotFound, "gone".into())));
        assert!(matches!(
            frame,
            Some(ServerMsg::Error {
                code: ErrorCode::NotFound,
                ..
            })
        ));
    }
}
