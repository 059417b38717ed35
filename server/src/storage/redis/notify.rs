//! Live across nodes: every change is published on one Redis channel inside
//! the transaction that makes it (so messages arrive in commit order, and
//! only once the change is durable), and each node keeps one subscription to
//! that channel, which feeds its [`ChangeHub`]: the hub wakes the node's live
//! readers, and an append's data (when small) travels in the message so
//! those readers are served from memory instead of each reading Redis.
//!
//! Pub/sub delivers at most once: if the subscription drops, the node wakes
//! every live reader when it is back, and they read Redis for what they
//! missed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::Client;
use redis::aio::{PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};

use super::stored::CHANGES_CHANNEL;
use crate::changes::{ChangeHub, Published};
use crate::storage::{Expiry, StreamInfo};

/// Appends carrying more data than this are announced without it: readers
/// read it from Redis.
pub const INLINE_DATA_MAX: usize = 64 * 1024;
/// How often the subscription is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a `PING` may take before the subscription is deemed dead.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts to subscribe again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A change message: this header as a JSON line, then the appended data.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    append: Option<AppendHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppendHeader {
    id: i64,
    content_type: String,
    /// Offsets as decimal strings (they are 128-bit).
    tail: String,
    closed: bool,
    ttl: Option<u64>,
    expires_at: Option<i64>,
    start: String,
    /// The length of each piece in the data that follows.
    lens: Vec<usize>,
    touched_ms: i64,
}

/// The message announcing a change of `path`: an append (with its data,
/// unless larger than [`INLINE_DATA_MAX`]) or anything else.
pub fn message(path: &str, append: Option<&Published>) -> Vec<u8> {
    let append = append.filter(|a| a.pieces.iter().map(Bytes::len).sum::<usize>() <= INLINE_DATA_MAX);
    let header = Header {
        path: path.to_owned(),
        append: append.map(|a| {
            let (ttl, expires_at) = match a.info.expiry {
                Expiry::Never => (None, None),
                Expiry::Ttl(s) => (Some(s), None),
                Expiry::At(ms) => (None, Some(ms)),
            };
            AppendHeader {
                id: a.info.id,
                content_type: a.info.content_type.clone(),
                tail: a.info.tail.to_string(),
                closed: a.info.closed,
                ttl,
                expires_at,
                start: a.start.to_string(),
                lens: a.pieces.iter().map(Bytes::len).collect(),
                touched_ms: a.touched_ms,
            }
        }),
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    for piece in append.iter().flat_map(|a| &a.pieces) {
        out.extend_from_slice(piece);
    }
    out
}

/// Reads a [`message`]: the path, and the append if it carries one.
fn parse(message: &[u8]) -> Option<(String, Option<Published>)> {
    let split = message.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&message[..split]).ok()?;
    let Some(a) = header.append else {
        return Some((header.path, None));
    };
    let data = Bytes::copy_from_slice(&message[split + 1..]);
    let mut pieces = Vec::with_capacity(a.lens.len());
    let mut at: usize = 0;
    for len in a.lens {
        let end = at.checked_add(len).filter(|end| *end <= data.len())?;
        pieces.push(data.slice(at..end));
        at = end;
    }
    let expiry = match (a.ttl, a.expires_at) {
        (Some(s), _) => Expiry::Ttl(s),
        (None, Some(ms)) => Expiry::At(ms),
        (None, None) => Expiry::Never,
    };
    let published = Published {
        info: StreamInfo {
            id: a.id,
            content_type: a.content_type,
            tail: a.tail.parse().ok()?,
            closed: a.closed,
            expiry,
        },
        start: a.start.parse().ok()?,
        pieces,
        touched_ms: a.touched_ms,
    };
    Some((header.path, Some(published)))
}

/// Hands a received message to the hub.
fn apply(hub: &ChangeHub, message: &[u8]) {
    match parse(message) {
        Some((path, Some(append))) => hub.publish(&path, append),
        Some((path, None)) => hub.notify(&path),
        None => {
            tracing::warn!("unreadable message on {CHANGES_CHANNEL}; waking every live reader");
            hub.notify_all();
        }
    }
}

/// A subscription to the change channel.
pub struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Subscribes to the change channel.
pub async fn subscribe(client: &Client) -> redis::RedisResult<Subscription> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(CHANGES_CHANNEL).await?;
    Ok(Subscription { sink, stream })
}

/// Feeds `hub` from `subscription`, subscribing again whenever it drops,
/// until `stop` is dropped.
pub async fn listen(
    client: Client,
    hub: ChangeHub,
    subscription: Subscription,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut current = Some(subscription);
    let mut backoff = BACKOFF.0;
    loop {
        let Subscription { mut sink, mut stream } = match current.take() {
            Some(s) => s,
            None => {
                let attempt = tokio::select! {
                    s = subscribe(&client) => s,
                    _ = stop.changed() => return,
                };
                match attempt {
                    Ok(s) => {
                        tracing::info!("subscribed to {CHANGES_CHANNEL} again");
                        // Changes made while it was down were not heard.
                        hub.notify_all();
                        backoff = BACKOFF.0;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to {CHANGES_CHANNEL}");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF.1);
                        continue;
                    }
                }
            }
        };
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                message = stream.next() => match message {
                    Some(message) => apply(&hub, message.get_payload_bytes()),
                    None => break,
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("lost the subscription to {CHANGES_CHANNEL}; subscribing again");
        hub.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(pieces: &[&'static str]) -> Published {
        Published {
            info: StreamInfo {
                id: 7,
                content_type: "application/json".into(),
                tail: u128::MAX - 1,
                closed: true,
                expiry: Expiry::Ttl(30),
            },
            start: 1 << 100,
            pieces: pieces.iter().map(|p| Bytes::from_static(p.as_bytes())).collect(),
            touched_ms: 123,
        }
    }

    #[test]
    fn messages_round_trip() {
        let a = append(&["{\"a\":\"x\\ny\"}", "", "[1]"]);
        let (path, got) = parse(&message("sessions/a b", Some(&a))).unwrap();
        assert_eq!(path, "sessions/a b");
        let got = got.unwrap();
        assert_eq!(
            (got.info, got.start, got.pieces, got.touched_ms),
            (a.info, a.start, a.pieces, 123)
        );
        assert!(matches!(parse(&message("p", None)), Some((p, None)) if p == "p"));
    }

    #[test]
    fn large_appends_travel_without_their_data() {
        let big: &'static str = Box::leak("x".repeat(INLINE_DATA_MAX + 1).into_boxed_str());
        assert!(matches!(parse(&message("p", Some(&append(&[big])))), Some((_, None))));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [&b""[..], b"{}", b"{\"path\":1}\n", b"not json\n"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let mut short = message("p", Some(&append(&["abc"])));
        short.pop();
        assert!(parse(&short).is_none(), "data shorter than its lengths");
    }
}
