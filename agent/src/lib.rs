//! Demo agents for durable sessions.
//!
//! Not built yet: the agents arrive with their own issue. This crate reserves
//! the name and the place in the workspace.
