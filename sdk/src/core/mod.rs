//! The pure core of the SDK: no I/O, no clock, no browser.
//!
//! [`client::ClientCore`] is a sans-I/O state machine. A transport feeds it
//! what happened (socket opened, a frame arrived, the socket closed, time
//! passed) and carries out what it asks for ([`client::Output`]: connect,
//! send a frame, close the socket), while the app hears about state changes,
//! delivered messages and resolved appends through the same outputs. Because
//! nothing here touches a socket or a timer, every rule — backoff, heartbeat,
//! exactly-once delivery, resume, outbox retries, resets — is unit-tested
//! natively, and the browser and tokio transports stay thin.

pub mod backoff;
pub mod chat;
pub mod client;
pub mod endpoints;
pub mod errors;
pub mod http_read;
pub mod outbox;
pub mod persist;
pub mod rng;
pub mod session;
pub mod state;
pub mod subscription;
pub mod token;

use std::fmt;

/// An error the SDK reports: a machine-readable `code` and a short message.
///
/// Codes are the server's error codes (`not_found`, `gone`, `closed`,
/// `conflict`, `bad_request`, `too_large`, …, see `docs/protocol.md`;
/// [`errors::classify`] says which are retried) plus the SDK's own:
/// `client_closed` (the client was closed before the operation finished),
/// `invalid_event` (the app passed something that is not a JSON object) and
/// `token_failed` (the app's token function failed or returned no string).
/// With access control on, `unauthorized` means the token is missing,
/// expired or invalid (the SDK gets a fresh one and retries by itself) and
/// `forbidden` that the token does not cover the stream or the right (final
/// for that subscription or append).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: String,
    pub message: String,
}

impl ClientError {
    /// An error with a code and a message.
    ///
    /// ```
    /// let e = durable_sessions::core::ClientError::new("not_found", "stream not found");
    /// assert_eq!(e.to_string(), "not_found: stream not found");
    /// ```
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}
