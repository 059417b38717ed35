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
  /**
   * e.g. "opened", "connection lost", "heartbeat timeout", "closed by app",
   * "token_failed: …", "forbidden: sessions/abc". Never contains a token.
   */
  reason: string;
  /** When retrying: milliseconds until the next attempt. */
  retryInMs?: number;
  /**
   * A problem the app may act on, reported with this change (the state may be
   * unchanged): `token_failed` (the token function failed; retried with
   * backoff), `forbidden` (the token does not cover that stream; its
   * subscription ended), `unauthorized` (no token was given to a server that
   * requires one).
   */
  error?: { code: ErrorCode; message: string };
}

/**
 * Machine-readable error codes. The server's (`not_found`, `gone`, `closed`,
 * `forbidden`, `unauthorized`, …) and the SDK's own (`client_closed`,
 * `invalid_event`, `invalid_argument`, `invalid_url`, `token_failed`).
 */
export type ErrorCode =
  | "bad_frame"
  | "unknown_op"
  /**
   * An append larger than the limit (`maxAppendBytes`, and the server's frame
   * limit over WebSocket): rejected at once, never sent. Only that append fails.
   */
  | "too_large"
  | "bad_offset"
  | "bad_request"
  | "not_found"
  | "gone"
  | "conflict"
  | "closed"
  /** The token does not cover this stream or right. Final. */
  | "forbidden"
  /** A newer epoch of this producer took over; the SDK starts a new epoch and resends by itself. */
  | "stale_epoch"
  | "seq_gap"
  | "duplicate_sub"
  | "unknown_sub"
  /** The connection holds as many subscriptions as the server allows. Final for that subscription. */
  | "too_many_subscriptions"
  /** The server refused the connection for now (too many from this client or principal). Retried with backoff. */
  | "too_many_connections"
  /** The server holds as many HTTP live readers of this stream as it allows. Retried with backoff. */
  | "too_many_readers"
  /**
   * The server failed for now. Never ends a subscription or an append: the
   * SDK retries with backoff, as for an HTTP 5xx, 429 or a network error.
   */
  | "internal"
  /** No valid token (missing, expired, invalid). With a `token` option the SDK gets a new one and retries by itself. */
  | "unauthorized"
  | "client_closed"
  | "invalid_event"
  | "invalid_argument"
  | "invalid_url"
  /** The `token` function threw, rejected, or returned no string. Retried with backoff. */
  | "token_failed"
  /** Storing the session failed: the browser's storage for this origin is full (`onStorageError`). */
  | "quota_exceeded"
  /** Storing the session failed: IndexedDB is unavailable or refused a write (`onStorageError`). */
  | "storage_error";

/**
 * Gets an access token (a JWT minted by the app's backend) for a server with
 * access control on. Called before connecting, again at about 75% of the
 * token's lifetime (read from its `exp`; the new token replaces the old one
 * on the live connection: no reconnect, nothing missed), and when the server
 * refuses the token (the client then reconnects and resumes with no gap and
 * no duplicate). A failure (throw or rejection) is retried with backoff and
 * reported as a state change with `error.code === "token_failed"`.
 *
 * @example
 * const token: TokenProvider = async () => (await fetch("/api/session-token")).text();
 */
export type TokenProvider = () => string | Promise<string>;

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
  /**
   * The server, e.g. "http://127.0.0.1:4437" (default: the page's origin), or
   * the nodes of one cluster — servers sharing one log, such as several nodes
   * on Redis — in order of preference: when a connection fails or drops, the
   * next attempt goes to the next node, and subscriptions and unacknowledged
   * sends carry on there with no gap and no duplicate.
   */
  url?: string | string[];
  /** "websocket" (default; this project's server) or "http" (any Durable Streams server). */
  transport?: "websocket" | "http";
  backoff?: BackoffOptions;
  /** How often to ping while connected (default 5000). */
  pingIntervalMs?: number;
  /**
   * Declare the link dead after this long without any frame (default 12000).
   * Over HTTP every request gets this long for an answer (plus time for its
   * bytes at 16 KB/s); past it the request is aborted and the link retried.
   */
  heartbeatTimeoutMs?: number;
  /** Give up on one connection attempt after this long (default 10000). */
  connectTimeoutMs?: number;
  /** Report "suspended" after this long without a connection (default 60000). */
  suspendAfterMs?: number;
  /**
   * The largest append request the SDK sends, in bytes (default 16777216 = 16 MiB,
   * the server's default HTTP body limit). A larger event is rejected at once
   * with `too_large`, unsent, and nothing waits behind it. Over WebSocket the
   * server's own frame limit (1 MiB by default) applies too.
   */
  maxAppendBytes?: number;
  /**
   * Access token for a server with access control on: a function (refreshed
   * before it expires, see `TokenProvider`) or a fixed string. Sent in the
   * first WebSocket frame or as `Authorization: Bearer`, never in a URL.
   */
  token?: string | TokenProvider;
}

/**
 * How much of its sessions a browser keeps in IndexedDB. A session's stored
 * transcript never grows past `maxEvents` / `maxBytes` (after a reload, what
 * is not stored comes from the server); beyond `maxSessions`, the least
 * recently opened sessions' transcripts are evicted. Pending appends are
 * never evicted: they stay until the server acknowledged them.
 */
export interface PersistOptions {
  /** Most events stored per session (default 50000). */
  maxEvents?: number;
  /** Most bytes of event JSON stored per session (default 8388608, 8 MiB). */
  maxBytes?: number;
  /** Most sessions whose transcript is stored (default 20). */
  maxSessions?: number;
}

export interface SessionOptions {
  /** Author of sent messages and `by` of cancels and steers. Default: a random id. */
  author?: string;
  /**
   * Keep the session in IndexedDB (default true): its transcript, so a reload
   * resumes where the tab left off, and its unacknowledged appends, so a
   * message sent offline is delivered exactly once after a reload. An object
   * sets the limits (`PersistOptions`); `false` keeps nothing.
   */
  persist?: boolean | PersistOptions;
}

/** How to open a stream that is not a session (`client.stream(path, options)`). */
export interface StreamOptions {
  /**
   * The stream's content type: JSON messages (`"application/json"`, the
   * default), text (`"text/…"`: `append` takes a string) or bytes (any other:
   * `append` takes a `Uint8Array`). When given, the stream is created with it
   * if it does not exist; without, it must exist (else `onError` with
   * `not_found`). Over HTTP, appends to a text or binary stream carry it.
   */
  contentType?: string;
  /**
   * Keep the stream in IndexedDB (default false): its messages — delivered
   * again, with their offsets, on the next page load before the new ones, the
   * subscription resuming after them — and its unacknowledged appends,
   * delivered exactly once after a reload. An object sets the limits.
   */
  persist?: boolean | PersistOptions;
}

/** A message of a stream and the offset to resume from after it. */
export interface StreamMessage<T = unknown> {
  offset: string;
  /** A JSON value, a string (text stream) or a `Uint8Array` (binary stream). */
  data: T;
}

/**
 * Any Durable Streams stream, opened with `client.stream(path)`: what a
 * session has besides the chat — offsets, resume with no gap and no
 * duplicate, the outbox, storage — for data that is not a chat.
 *
 * @example
 * const log = client.stream<string>("logs/build-7", { contentType: "text/plain" });
 * log.onEvent(({ offset, data }) => console.log(offset, data));
 * await log.append("step 1 done\n");
 */
export interface DurableStream<T = unknown> {
  /** The stream path. */
  readonly id: string;
  /** The offset reached. */
  readonly offset: string | undefined;
  /** Messages received so far (restored ones included). */
  readonly received: number;
  /** Resolves once the stored messages (with `persist`) have been read and delivered. */
  readonly ready: Promise<void>;
  /** Resolves once the subscription has first caught up with the stream; rejects if it fails for good first. */
  readonly synced: Promise<void>;
  /** Calls `listener` with every message, in order, exactly once; returns a function that removes it. */
  onEvent(listener: (message: StreamMessage<T>) => void): () => void;
  /** New messages as an async iterator. */
  events(): AsyncIterableIterator<StreamMessage<T>>;
  /** Appends a message; resolves once the server stored it (queued while offline, never duplicated). */
  append(data: T): Promise<AppendResult>;
  /** The subscription failed for good (`not_found`, `forbidden`, …). */
  onError(listener: (error: DurableSessionError) => void): () => void;
  /** The server no longer has the position: delivery restarts from the beginning. */
  onReset(listener: (reason: string) => void): () => void;
  /** Storing the stream in IndexedDB failed (`quota_exceeded`, `storage_error`). */
  onStorageError(listener: (error: DurableSessionError) => void): () => void;
  /** Deletes what is stored for this stream and stores nothing more for it. */
  clearStorage(): Promise<void>;
  /** Ends the subscription (the client stays open). */
  close(): void;
}

export interface SendOptions {
  /** "multi" asks for an orchestrator with sub-agents. Default "single". */
  mode?: "single" | "multi";
}

export type RunStatus = "completed" | "cancelled" | "failed";

/** The core session events (docs/protocol.md §11). */
export type CoreEvent =
  | { type: "user_message"; id: string; author: string; text: string; mode?: "single" | "multi" }
  | { type: "run_started"; run_id: string; agent: string; in_reply_to: string }
  | { type: "text_delta"; run_id: string; agent: string; delta: string }
  | { type: "progress"; run_id: string; agent: string; text: string }
  | { type: "cancel"; run_id: string; by: string }
  | { type: "steer"; run_id: string; text: string; by: string }
  | { type: "steer_applied"; run_id: string; text: string }
  | { type: "run_finished"; run_id: string; status: RunStatus; reason?: string };

/**
 * What an app's own events must be: JSON objects with a string `type`. Give
 * them as a union of object types with literal `type`s (names of the app's
 * own, e.g. `"app.vote"`, never a core type's) to `client.session<E>()`:
 *
 * @example
 * type Vote = { type: "app.vote"; choice: number; by: string };
 * const session = client.session<Vote>("poll");
 * await session.append({ type: "app.vote", choice: 2, by: "ada" }); // checked against Vote
 * session.onEvent(({ event }) => {
 *   if (event.type === "app.vote") console.log(event.choice); // a number
 * });
 */
export type AppEvents = { type: string };

/** An event of a type the app did not declare: any JSON object with a string `type`. */
export interface UnknownEvent {
  type: string;
  [key: string]: unknown;
}

/** A session event: a core event, or one of the app's own (`E`). */
export type SessionEvent<E extends AppEvents = never> = CoreEvent | E;

/**
 * What `append` takes: a core event or one of the app's own (`E`); any object
 * with a string `type` when the session declares no events of its own.
 */
export type AppendEvent<E extends AppEvents = never> = [E] extends [never] ? CoreEvent | UnknownEvent : CoreEvent | E;

/**
 * The events of other types than the core ones, as the transcript passes
 * them through: the app's own (`E`), or any when it declares none.
 */
export type OtherEvent<E extends AppEvents = never> = [E] extends [never] ? UnknownEvent : E;

/**
 * A delivered event and the offset to resume from after it. Events of types
 * the session does not declare are delivered too: declare the app's own with
 * `client.session<E>()`.
 */
export interface SessionEnvelope<E extends AppEvents = never> {
  offset: string;
  event: SessionEvent<E>;
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

/** A tool call of a run (`tool_call`), with its `tool_result` once it arrived. */
export interface ToolCall {
  callId: string;
  name: string;
  /** The arguments as the model wrote them: JSON text, normally an object. */
  arguments: string;
  /** The tool's output; `null` until its result arrives. */
  output: string | null;
  /** The tool failed, and why. */
  error: string | null;
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
  /** The model's reasoning (`reasoning_delta` events), apart from the answer. */
  reasoning: string;
  /** The run's tool calls (`tool_call` events), with their results. */
  toolCalls: ToolCall[];
}

/**
 * An event of another type than the core ones (an app's own, or a later
 * version's), where it appeared in the session, unchanged.
 */
export interface EventItem<E extends AppEvents = never> {
  kind: "event";
  event: OtherEvent<E>;
}

/** One entry of the transcript. */
export type ChatItem<E extends AppEvents = never> = UserItem | RunItem | EventItem<E>;

/** Errors thrown or rejected by the SDK carry a machine-readable code. */
export interface DurableSessionError extends Error {
  code: ErrorCode;
}
"#;
