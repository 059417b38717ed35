//! Browser transports and integration (feature `web`, target wasm32).
//!
//! [`WebClient`] drives the pure [`crate::core::client::ClientCore`] with a
//! browser `WebSocket` (or HTTP, see [`Transport`]), one `setTimeout`, and
//! listeners for `online`, `offline`, `visibilitychange` and `pageshow` that
//! make it probe or retry the link at once. Callbacks to the app run only
//! after the client released its own state, from a queue, so an app callback
//! may call back into the client freely. Everything — socket, timer,
//! listeners — is released by [`WebClient::close`] or when the last handle
//! is dropped. [`WebSession`] keeps each session in IndexedDB (transcript
//! and pending appends, see [`crate::core::persist`]).

mod client;
mod http;
mod persist;
mod session;
mod slot;
pub(crate) mod socket;

pub use client::{Listener, SubscriptionHandle, TokenFuture, TokenProvider, Transport, WebClient, WebOptions};
pub use persist::clear_storage;
pub use session::{SessionOptions, SessionUpdate, StreamOptions, UpdateListener, WebSession};

/// Milliseconds since the Unix epoch, from the browser clock.
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A random 64-bit value from `Math.random` (jitter seeds and ids; not for
/// secrets).
pub(crate) fn random_u64() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}

/// Bytes in standard base64, by the browser's `btoa` (smaller than a
/// base64 crate's encoder in the Wasm).
pub(crate) fn to_base64(bytes: &[u8]) -> String {
    let binary: String = bytes.iter().map(|&b| char::from(b)).collect();
    web_sys::window().and_then(|w| w.btoa(&binary).ok()).unwrap_or_default()
}

/// Standard base64 to bytes, by the browser's `atob`; `None` if it is not
/// base64.
pub(crate) fn from_base64(text: &str) -> Option<Vec<u8>> {
    let binary = web_sys::window()?.atob(text).ok()?;
    binary.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// A short random id (`prefix-` and 12 hex digits).
pub fn random_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 13);
    id.push_str(prefix);
    id.push('-');
    let bits = random_u64();
    for shift in (0..48).step_by(4).rev() {
        id.push(char::from_digit(((bits >> shift) & 0xf) as u32, 16).unwrap_or('0'));
    }
    id
}
