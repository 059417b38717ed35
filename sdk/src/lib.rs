//! Client SDK for durable sessions.
//!
//! Not built yet: the SDK arrives with its own issue. This crate reserves the
//! name and the place in the workspace.
