//! The native transport's driver against a peer that stops reading: its
//! sends stall (the TCP window fills), yet frames keep arriving, the
//! heartbeat timeout still fires, and a send queue past its bound gives the
//! link up. The peer is a real WebSocket server on loopback that speaks
//! just enough of docs/protocol.md.

use std::time::Duration;

use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::core::state::ConnectionState;
use durable_sessions::native::{Client, NativeOptions};
use durable_sessions::protocol::ws::{ClientMsg, Message as WireMessage, Payload, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Peer = WebSocketStream<tokio::net::TcpStream>;

/// Everything a test waits for happens within this.
const BOUND: Duration = Duration::from_secs(20);
/// Appends queued on the client: far more than loopback socket buffers hold.
const APPENDS: usize = 24;
const APPEND_BYTES: usize = 1024 * 1024;

/// Accepts the next connection and says `hello` (frames up to 64 MiB).
async fn accept(listener: &TcpListener) -> Peer {
    let (tcp, _) = tokio::time::timeout(BOUND, listener.accept())
        .await
        .expect("a connection")
        .unwrap();
    let mut peer = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let hello = ServerMsg::Hello {
        heartbeat_ms: 15_000,
        max_frame_bytes: 64 * 1024 * 1024,
    };
    peer.send(Message::text(hello.to_json())).await.unwrap();
    peer
}

/// Reads client frames until the `subscribe`; returns its `sub`. The peer
/// reads nothing after this.
async fn read_subscribe(peer: &mut Peer) -> String {
    loop {
        let frame = tokio::time::timeout(BOUND, peer.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame
            && let Ok(ClientMsg::Subscribe { sub, .. }) = ClientMsg::parse(text.as_str())
        {
            return sub;
        }
    }
}

fn events(sub: &str, i: u64) -> Message {
    let offset = format!("{:016}_{:016}", 1, i);
    let frame = ServerMsg::Events {
        sub: sub.into(),
        messages: vec![WireMessage {
            offset: offset.clone(),
            payload: Payload::json(&format!(r#"{{"n":{i}}}"#)).unwrap(),
        }],
        next: offset,
        up_to_date: true,
        closed: false,
    };
    Message::text(frame.to_json())
}

/// Queues big appends to many streams (each stream has one request in
/// flight at a time): the client has about `APPENDS` MiB to send.
fn flood(client: &Client) {
    let big = format!("\"{}\"", "x".repeat(APPEND_BYTES));
    for i in 0..APPENDS {
        let (client, big) = (client.clone(), big.clone());
        tokio::spawn(async move {
            let _ = client.append_json(&format!("big/{i}"), big).await;
        });
    }
}

fn options(url: String) -> NativeOptions {
    let mut options = NativeOptions::new(url);
    options.core.ping_interval_ms = 500;
    options.core.heartbeat_timeout_ms = 2_000;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_the_heartbeat_timeout_go_on_while_the_server_does_not_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = options(format!("ws://{}/v1/ws", listener.local_addr().unwrap()));
    // The byte bound is not what this test is about.
    opts.max_unsent_bytes = 4 * APPENDS * APPEND_BYTES;
    let client = Client::connect(opts);
    let mut peer = accept(&listener).await;
    let mut sub = client.subscribe("s", SubscribeOptions::default()).await;
    let wire_sub = read_subscribe(&mut peer).await;

    // The peer stops reading; the client queues far more than the socket
    // buffers hold, so its sends stall.
    flood(&client);
    // Frames from the peer still arrive and are delivered, one by one.
    const FRAMES: u64 = 10;
    for i in 1..=FRAMES {
        if i > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await; // a paced peer
        }
        peer.send(events(&wire_sub, i)).await.unwrap();
        let got = tokio::time::timeout(BOUND, async {
            loop {
                match sub.next().await {
                    Some(SubscriptionEvent::Messages(ms)) => return ms,
                    Some(_) => continue,
                    None => panic!("the subscription ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("frame {i} was not delivered: the driver is stuck"));
        assert_eq!(got.len(), 1);
    }
    // The peer falls silent: the heartbeat timeout fires as documented
    // (nothing received for heartbeat_timeout_ms, 2 s here) and the client
    // reconnects — not before.
    let silent = tokio::time::Instant::now();
    assert_eq!(client.state().state, ConnectionState::Connected);
    let _again = accept(&listener).await;
    let after = silent.elapsed();
    // (The client heard the last frame a little before the test did.)
    assert!(
        after >= Duration::from_millis(1_500),
        "reconnected before the timeout ({after:?})"
    );
    println!("{FRAMES} frames delivered while sends stalled; reconnected {after:?} after the peer fell silent");
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_read_is_given_up_past_the_unsent_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = options(format!("ws://{}/v1/ws", listener.local_addr().unwrap()));
    opts.max_unsent_bytes = APPENDS * APPEND_BYTES / 2;
    opts.core.heartbeat_timeout_ms = 600_000;
    let client = Client::connect(opts);
    let mut peer = accept(&listener).await;
    let _sub = client.subscribe("s", SubscribeOptions::default()).await;
    read_subscribe(&mut peer).await;
    // The peer keeps the link alive (pings) but never reads again.
    let pinger = tokio::spawn(async move {
        loop {
            if peer
                .send(Message::text(ServerMsg::Ping { t: None }.to_json()))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    flood(&client);
    // Frames keep arriving, so only the byte bound can end the link.
    let t0 = tokio::time::Instant::now();
    let _again = accept(&listener).await;
    println!("gave the link up and reconnected after {:?}", t0.elapsed());
    pinger.abort();
}
