//! Demo agents for durable sessions.
//!
//! An agent is an ordinary client of the server: it discovers sessions by
//! subscribing to the session index stream, subscribes to each session, and
//! answers every `user_message` by appending `run_started`, `text_delta`s and
//! `run_finished` — nothing else. It never tracks clients, never replays
//! history for them and never relays progress: clients read the session.
//!
//! - `cancel` for a run stops it within one token interval (`run_finished`
//!   `cancelled`); a dropped client connection changes nothing.
//! - `steer` is acknowledged with `steer_applied`, and the rest of the run
//!   follows it.
//! - In multi-agent mode (a `user_message` with `"mode":"multi"`) an
//!   orchestrator starts sub-agents, each writing its own `progress` and
//!   `text_delta` events into the session over its own connection; the
//!   orchestrator writes only the final result. A cancel stops them all.
//! - One answer per message, however many agent processes serve a session:
//!   an agent claims a `user_message` by appending its `run_started` with
//!   the producer ids `claim-{message id}` (epoch 0, seq 0); the server
//!   stores the first and acknowledges every later one as a duplicate, so
//!   exactly one process answers ([`runner::claim_ids`]).
//! - A run that cannot write (an append refused for good) ends with
//!   `run_finished` `failed` and the reason; it never stays open.
//! - A restarted agent reads the session history first: messages that
//!   already have a `run_started` are not answered again. A run under its
//!   name that nobody writes to any more (nothing for
//!   [`AgentConfig::orphan_after`]) is closed as `failed`; one that another
//!   process of the same agent is still writing is left alone.

pub mod batch;
pub mod history;
mod model_run;
pub mod openai;
pub mod runner;
pub mod session;
pub mod textgen;
pub mod webhook;

pub use runner::{AgentConfig, run};
