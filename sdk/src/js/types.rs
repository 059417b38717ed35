//! The TypeScript declarations of the plain objects the API takes and gives.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Where the connection stands. */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "suspended" | "closed";

/** A change of connection state and why it happened. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** e.g. "opened", "connection lost", "heartbeat timeout", "closed by app". */
  reason: string;
  /** When retrying: milliseconds until the next attempt. */
  retryInMs?: number;
}

/** Exponential backoff with full jitter between reconnect attempts. */
export interface BackoffOptions {
  /** Ceiling of the first delay (default 500). */
  minMs?: number;
  /** Largest delay (default 15000). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
}

export interface ClientOptions {
  /** The server, e.g. "http://127.0.0.1:4437". Default: the page's origin. */
  url?: string;
  /** "websocket" (default; this project's server) or "http" (any Durable Streams server). */
  transport?: "websocket" | "http";
  backoff?: BackoffOptions;
  /** How often to ping while connected (default 5000). */
  pingIntervalMs?: number;
  /** Declare the link dead after this long without any frame (default 12000). */
  heartbeatTimeoutMs?: number;
  /** Give up on one connection attempt after this long (default 10000). */
  connectTimeoutMs?: number;
  /** Report "suspended" after this long without a connection (default 60000). */
  suspendAfterMs?: number;
  /** Called before each connection; the token is sent as `access_token`. */
  token?: () => string | Promise<string>;
}

export interface SessionOptions {
  /** Author of sent messages and `by` of cancels and steers. Default: a random id. */
  author?: string;
  /** Keep offset and transcript in localStorage so a reload resumes there. Default true. */
  persist?: boolean;
}

export interface SendOptions {
  /** "multi" asks for an orchestrator with sub-agents. Default "single". */
  mode?: "single" | "multi";
}

export type RunStatus = "completed" | "cancelled" | "failed";

export type SessionEvent =
  | { type: "user_message"; id: string; author: string; text: string; mode?: "single" | "multi" }
  | { type: "run_started"; run_id: string; agent: string; in_reply_to: string }
  | { type: "text_delta"; run_id: string; agent: string; delta: string }
  | { type: "progress"; run_id: string; agent: string; text: string }
  | { type: "cancel"; run_id: string; by: string }
  | { type: "steer"; run_id: string; text: string; by: string }
  | { type: "steer_applied"; run_id: string; text: string }
  | { type: "run_finished"; run_id: string; status: RunStatus; reason?: string };

/** A delivered event and the offset to resume from after it. */
export interface SessionEnvelope {
  offset: string;
  event: SessionEvent;
}

export interface AppendResult {
  /** The stream's tail after the append. */
  offset: string;
  /** The server already had it (a retry after a lost acknowledgement). */
  duplicate: boolean;
}

export interface SendResult extends AppendResult {
  /** The id of the sent user_message. */
  id: string;
}

export type RunState = "streaming" | "completed" | "cancelled" | "failed";

export interface Steer {
  text: string;
  by: string;
  applied: boolean;
}

/** What one sub-agent contributed to a run. */
export interface Lane {
  agent: string;
  text: string;
  progress: string[];
}

export interface UserItem {
  kind: "user";
  id: string;
  author: string;
  text: string;
}

export interface RunItem {
  kind: "run";
  runId: string;
  agent: string;
  inReplyTo: string;
  text: string;
  state: RunState;
  reason: string | null;
  cancelRequestedBy: string | null;
  steers: Steer[];
  lanes: Lane[];
}

export type ChatItem = UserItem | RunItem;

/** Errors thrown or rejected by the SDK carry a machine-readable code. */
export interface DurableSessionError extends Error {
  code: string;
}
"#;
