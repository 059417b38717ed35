//! Wire types shared by the server, the agents and the SDK.
//!
//! - [`ws`]: the frames of the `/v1/ws` WebSocket extension (see
//!   `docs/protocol.md`), with strict parsing that turns every malformed frame
//!   into a [`ws::FrameError`] carrying an error code;
//! - [`session`]: the session event schema — the JSON objects that make up a
//!   session stream;
//! - [`path`]: the one encoding of stream paths in URLs.
//!
//! Pure Rust, no I/O: every part of the project can depend on it.

pub mod json;
pub mod path;
pub mod session;
pub mod ws;
