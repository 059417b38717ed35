//! Leptos demo chat app for durable sessions.
//!
//! Not built yet: the demo arrives with its own issue. This crate reserves
//! the place in the workspace.
