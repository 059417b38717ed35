//! # durable-sessions
//!
//! The client SDK for durable sessions: subscribe to a session once and get
//! every event exactly once, in order, across network drops, reloads and
//! devices; append with retries that never duplicate; stop and steer agents
//! with explicit `cancel` / `steer` events.
//!
//! - [`core`]: the pure state machine (offsets, reconnect policy, connection
//!   states, outbox, chat view) — no I/O, unit-tested natively;
//! - `native` (feature `native`): a tokio WebSocket transport, used by the
//!   demo agents and Rust tests;
//! - `web` (feature `web`, wasm32): browser WebSocket and HTTP transports,
//!   page integration (network and visibility events; sessions kept in
//!   IndexedDB: transcript written incrementally, and a durable outbox) and
//!   [`web::WebSession`], the session API the bindings share;
//! - the JavaScript API of the npm package (feature `js`);
//! - `leptos` (feature `leptos`): `use_session` and `use_stream`, returning
//!   signals.

pub mod core;

#[cfg(feature = "native")]
pub mod native;

#[cfg(feature = "web")]
pub mod web;

#[cfg(feature = "js")]
mod js;

#[cfg(feature = "leptos")]
pub mod leptos;

pub use durable_session_protocol as protocol;
