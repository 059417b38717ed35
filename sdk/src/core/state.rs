//! The connection state machine.
//!
//! ```text
//!            start                open
//!  (idle) ─────────► connecting ────────► connected
//!                      ▲   │ fail            │ drop / heartbeat timeout
//!          retry timer │   ▼                 ▼
//!                    disconnected ◄──────────┘   (first retry after a drop: immediate)
//!                      │ no success for `suspend_after`
//!                      ▼
//!                    suspended   (keeps retrying every `backoff.max_ms`)
//!  close() from any state ──► closed   (only the app closes)
//! ```

use std::fmt;

use super::ClientError;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Opening a connection.
    Connecting,
    /// Open: subscriptions deliver, appends flow.
    Connected,
    /// Lost; a retry is scheduled (`retry_in_ms`).
    Disconnected,
    /// Lost for longer than `suspend_after`; retrying at the slowest pace.
    Suspended,
    /// Closed by the app. Final.
    Closed,
}

impl ConnectionState {
    /// The state's name as the JS API and the demo show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, with why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub state: ConnectionState,
    pub previous: ConnectionState,
    /// Why: "connect", "opened", "closed by server (code 4002)", "heartbeat
    /// timeout", "network offline", "closed by app", …
    pub reason: String,
    /// When retrying: milliseconds until the next attempt.
    pub retry_in_ms: Option<u64>,
    /// A problem the app may act on, reported with this change: the token
    /// function failed (`token_failed`, retried with backoff), or the token
    /// does not cover a subscribed stream (`forbidden`, that subscription
    /// ended). The state itself may be unchanged.
    pub error: Option<ClientError>,
}
