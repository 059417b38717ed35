//! One live WebSocket of the native driver, split in two so that sending
//! never holds up receiving, timers or commands.
//!
//! Frames out go to a writer task that owns the sending half, through a
//! small bounded channel; frames the channel cannot take yet wait in the
//! link's own queue, which is bounded in bytes. The driver only ever awaits
//! [`Link::next`] inside its `select!`, so a peer that stops reading (a full
//! TCP window) stalls the writer task, never the driver: heartbeats still
//! fire, frames still arrive, and past the byte bound the link is given up
//! and the client reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::Socket;

/// Frames handed to the writer task ahead of the one it is sending: the
/// link's own queue, bounded in bytes, holds the rest.
const WRITER_CAPACITY: usize = 1;
/// How long a closing link may take to send what it holds and a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What happened on a link.
pub(super) enum LinkEvent {
    /// A frame arrived, the stream failed, or it ended (`None`).
    Received(Option<Result<WsMessage, WsError>>),
    /// Sending failed; the link is unusable.
    SendFailed(String),
}

/// A connected WebSocket: the receiving half, and the writer task with the
/// sending half. Dropping it ends the connection at once, without a close
/// frame, as a network failure would; [`Link::close`] closes it properly.
pub(super) struct Link {
    incoming: SplitStream<Socket>,
    outgoing: mpsc::Sender<WsMessage>,
    writer: Option<JoinHandle<Result<(), String>>>,
    /// Frames the writer task cannot take yet, with their total length.
    unsent: VecDeque<String>,
    unsent_bytes: usize,
    max_unsent_bytes: usize,
}

impl Link {
    /// Starts the writer task of `socket`.
    pub(super) fn new(socket: Socket, max_unsent_bytes: usize) -> Self {
        let (sink, incoming) = socket.split();
        let (outgoing, frames) = mpsc::channel(WRITER_CAPACITY);
        Self {
            incoming,
            outgoing,
            writer: Some(tokio::spawn(write_frames(sink, frames))),
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            max_unsent_bytes,
        }
    }

    /// Queues a text frame without waiting. Fails when more than the bound
    /// of bytes would be waiting: the peer is not reading.
    pub(super) fn send(&mut self, text: String) -> Result<(), String> {
        if self.unsent_bytes + text.len() > self.max_unsent_bytes && !self.unsent.is_empty() {
            return Err(format!(
                "send queue full: {} bytes unsent (the server is not reading)",
                self.unsent_bytes + text.len()
            ));
        }
        self.unsent_bytes += text.len();
        self.unsent.push_back(text);
        self.hand_over();
        Ok(())
    }

    /// Moves waiting frames to the writer task while it has room.
    fn hand_over(&mut self) {
        while !self.unsent.is_empty() {
            let Ok(permit) = self.outgoing.try_reserve() else {
                return;
            };
            if let Some(text) = self.unsent.pop_front() {
                self.unsent_bytes -= text.len();
                permit.send(WsMessage::text(text));
            }
        }
    }

    /// The next thing that happens on the link; meanwhile hands waiting
    /// frames to the writer task as it takes them. Cancel-safe.
    pub(super) async fn next(&mut self) -> LinkEvent {
        loop {
            let Some(writer) = self.writer.as_mut() else {
                return LinkEvent::SendFailed("the link is closed".into());
            };
            tokio::select! {
                frame = self.incoming.next() => return LinkEvent::Received(frame),
                ended = writer => {
                    self.writer = None;
                    return LinkEvent::SendFailed(match ended {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => "the writer stopped".into(),
                        Err(e) => format!("the writer failed: {e}"),
                    });
                }
                // The writer took something: the permit, dropped at once,
                // gives its room back for the waiting frames.
                Ok(_room) = self.outgoing.reserve(), if !self.unsent.is_empty() => {}
            }
            self.hand_over();
        }
    }

    /// Closes the connection with a close frame, in the background: the
    /// writer sends what it holds and the close frame, and is stopped after
    /// a second at most. Frames not handed to it yet are dropped.
    pub(super) fn close(mut self) {
        if let Some(mut writer) = self.writer.take() {
            // Dropping the sender (with `self`) ends the writer's loop.
            tokio::spawn(async move {
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await.is_err() {
                    writer.abort();
                }
            });
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

/// The writer task: sends frames in order until the link lets go of it,
/// then closes the socket (bounded by [`CLOSE_TIMEOUT`]).
async fn write_frames(
    mut sink: SplitSink<Socket, WsMessage>,
    mut frames: mpsc::Receiver<WsMessage>,
) -> Result<(), String> {
    while let Some(frame) = frames.recv().await {
        sink.send(frame).await.map_err(|e| format!("send failed: {e}"))?;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    Ok(())
}
