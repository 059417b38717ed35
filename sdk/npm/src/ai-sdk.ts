/**
 * Vercel AI SDK bindings: {@link DurableChatTransport}, a `ChatTransport` for
 * `useChat` (AI SDK 5 or later) backed by a durable session.
 *
 * ```tsx
 * import init, { DurableClient } from "durable-sessions";
 * import { DurableChatTransport } from "durable-sessions/ai-sdk";
 * import { useChat } from "@ai-sdk/react";
 *
 * await init();
 * const session = new DurableClient({ url: "https://sessions.example.com" }).session("abc");
 * const transport = new DurableChatTransport({ session });
 * await transport.ready; // the stored transcript is read and caught up
 *
 * function Chat() {
 *   const { messages, sendMessage, status } = useChat({ id: "abc", transport, messages: transport.messages(), resume: true });
 *   // Stop: transport.stop() — a `cancel` event; every tab's stream ends.
 * }
 * ```
 *
 * This module imports nothing from `ai` at run time (only its types).
 *
 * @module durable-sessions/ai-sdk
 */
import type { ChatTransport, UIMessage, UIMessageChunk } from "ai";
import type { AppEvents, ChatItem, DurableSessionError, RunItem, RunState, SendOptions, Session } from "./durable_sessions.js";

/** The `metadata` of an assistant message: the run it shows. */
export interface DurableRunMetadata {
  runId: string;
  agent: string;
  state: RunState;
  /** Why the run ended, when it says. */
  reason: string | null;
}

/** Options of {@link DurableChatTransport}. */
export interface DurableChatTransportOptions {
  /**
   * The session the chat lives in (`client.session(id)`), over WebSocket or
   * plain Durable Streams HTTP. The transport never closes it.
   */
  session: Session<AppEvents>;
  /** How messages are sent (`"multi"` asks for an orchestrator with sub-agents). */
  send?: SendOptions;
}

type Item = ChatItem<AppEvents>;

/** A tool call's arguments (JSON text) as the part's `input`; text that is no JSON stays text. */
function input(args: string): unknown {
  try {
    return JSON.parse(args);
  } catch {
    return args;
  }
}

function metadata(run: RunItem): DurableRunMetadata {
  return { runId: run.runId, agent: run.agent, state: run.state, reason: run.reason };
}

/** The parts of a run, in the order a live stream creates them. */
function partsOf(run: RunItem, done: boolean): UIMessage["parts"] {
  const state = done ? "done" : "streaming";
  const parts: UIMessage["parts"] = [];
  if (run.reasoning) parts.push({ type: "reasoning", text: run.reasoning, state });
  for (const t of run.toolCalls) {
    const call = { type: "dynamic-tool", toolName: t.name, toolCallId: t.callId, input: input(t.arguments) } as const;
    parts.push(
      t.error !== null
        ? { ...call, state: "output-error", errorText: t.error }
        : t.output !== null
          ? { ...call, state: "output-available", output: t.output }
          : { ...call, state: "input-available" },
    );
  }
  if (run.text) parts.push({ type: "text", text: run.text, state });
  for (const lane of run.lanes) {
    if (lane.text) parts.push({ type: "text", text: lane.text, state });
  }
  return parts;
}

/** What {@link followRun} is told. */
interface Follow {
  /** The first item from which the run (and its events) may appear. */
  from: number;
  /** Whether `item` is the run to follow. */
  match: (item: RunItem) => boolean;
  /** Ends the stream (not the run). */
  signal?: AbortSignal;
  /** The run was found. */
  found?: (runId: string) => void;
  /** The stream ended without the run being found. */
  lost?: () => void;
}

/**
 * A stream of `UIMessageChunk`s for one run of the session: its parts so far
 * at once (a replay from the start), then what the agent adds, until the run
 * ends. Items are read from `from` on, each once, so an update costs the
 * same in a long session as in a short one. `poke()` reads the transcript
 * now (after `match` changed).
 */
function followRun(session: Session<AppEvents>, follow: Follow): { stream: ReadableStream<UIMessageChunk>; poke: () => void; fail: (e: unknown) => void } {
  let controller!: ReadableStreamDefaultController<UIMessageChunk>;
  let scanned = follow.from;
  let run: { index: number; id: string } | undefined;
  const sent = { start: false, reasoning: 0, text: new Map<string, number>(), tools: new Map<string, "input" | "output">() };
  let finished = false;
  const offs: (() => void)[] = [];
  const end = () => {
    finished = true;
    for (const off of offs.splice(0)) off();
    if (!run) follow.lost?.();
  };
  const emit = (chunk: UIMessageChunk) => controller.enqueue(chunk);
  const text = (id: string, value: string) => {
    const at = sent.text.get(id);
    if (at === undefined && !value) return;
    if (at === undefined) emit({ type: "text-start", id });
    if (value.length > (at ?? 0)) emit({ type: "text-delta", id, delta: value.slice(at ?? 0) });
    sent.text.set(id, Math.max(value.length, at ?? 0));
  };
  const update = (items: Item[]) => {
    if (finished) return;
    if (!run) {
      for (; scanned < items.length; scanned++) {
        const item = items[scanned];
        if (item.kind === "run" && follow.match(item)) {
          run = { index: scanned, id: item.runId };
          follow.found?.(item.runId);
          if (finished) return;
          break;
        }
      }
      if (!run) return;
    }
    const item = items[run.index];
    if (item?.kind !== "run" || item.runId !== run.id) return;
    if (!sent.start) {
      sent.start = true;
      emit({ type: "start", messageId: run.id, messageMetadata: metadata(item) });
    }
    const reasoningId = `${run.id}:reasoning`;
    if (item.reasoning.length > sent.reasoning) {
      if (sent.reasoning === 0) emit({ type: "reasoning-start", id: reasoningId });
      emit({ type: "reasoning-delta", id: reasoningId, delta: item.reasoning.slice(sent.reasoning) });
      sent.reasoning = item.reasoning.length;
    }
    for (const t of item.toolCalls) {
      const was = sent.tools.get(t.callId);
      if (was === undefined) {
        emit({ type: "tool-input-available", toolCallId: t.callId, toolName: t.name, input: input(t.arguments), dynamic: true });
        sent.tools.set(t.callId, "input");
      }
      if ((t.output !== null || t.error !== null) && was !== "output") {
        emit(
          t.error !== null
            ? { type: "tool-output-error", toolCallId: t.callId, errorText: t.error, dynamic: true }
            : { type: "tool-output-available", toolCallId: t.callId, output: t.output, dynamic: true },
        );
        sent.tools.set(t.callId, "output");
      }
    }
    text(run.id, item.text);
    for (const lane of item.lanes) text(`${run.id}:${lane.agent}`, lane.text);
    if (item.state === "streaming") return;
    if (sent.reasoning > 0) emit({ type: "reasoning-end", id: reasoningId });
    for (const id of sent.text.keys()) emit({ type: "text-end", id });
    if (item.state === "failed") {
      emit({ type: "error", errorText: item.reason ?? "the run failed" });
    } else {
      emit({ type: "finish", finishReason: item.state === "completed" ? "stop" : "other", messageMetadata: metadata(item) });
    }
    end();
    controller.close();
  };
  const stream = new ReadableStream<UIMessageChunk>({
    start(c) {
      controller = c;
      offs.push(
        session.onChange(update),
        // The transcript was rebuilt from the start: find the run again.
        session.onReset(() => {
          scanned = 0;
          run = undefined;
        }),
      );
      // Detaching (useChat's stop(), an unmount, StrictMode's extra unmount)
      // ends this stream only: the run goes on, and a reload resumes it.
      const detach = () => {
        if (finished) return;
        end();
        try {
          controller.close();
        } catch {
          // The reader was cancelled already.
        }
      };
      const signal = follow.signal;
      if (signal?.aborted) return detach();
      signal?.addEventListener("abort", detach, { once: true });
      offs.push(() => signal?.removeEventListener("abort", detach));
    },
    cancel() {
      end();
    },
  });
  return {
    stream,
    poke: () => update(session.items()),
    fail: (e) => {
      if (finished) return;
      end();
      controller.error(e);
    },
  };
}

/**
 * A `ChatTransport` for the AI SDK's `useChat` (AI SDK 5 or later) on a
 * durable session: the conversation lives in the session's log, not in one
 * HTTP response.
 *
 * - **send**: `sendMessage` appends a `user_message` (queued while offline,
 *   stored once) and streams the run that answers it, as `UIMessage` parts:
 *   text (one part per agent), reasoning (the run's `reasoning`, from
 *   `reasoning_delta` events) and tool calls (its `toolCalls`, from
 *   `tool_call` / `tool_result` events, as dynamic tools whose `input` is
 *   the parsed `arguments`).
 * - **resume**: with `useChat({ resume: true, messages: transport.messages() })`
 *   a reloaded tab — or another tab, or another device — shows the history
 *   and picks up the answer being written: the resumed stream replays the
 *   run from its start (`resumeStreamIsReplay`), so the message and its
 *   parts are never duplicated.
 * - **stop**: {@link DurableChatTransport.stop} appends a `cancel` event. The
 *   agent stops, and every tab's stream ends with the run, wherever it was
 *   started. `useChat`'s own `stop()` only detaches this tab (as closing it
 *   would): the answer goes on, and a reload resumes it — that is how stop
 *   and resume work together.
 *
 * @typeParam UI - the app's `UIMessage` type.
 */
export class DurableChatTransport<UI extends UIMessage = UIMessage> implements ChatTransport<UI> {
  /** A resumed stream replays the run from its start (the chat replaces the message, never duplicates it). */
  readonly resumeStreamIsReplay = true;
  /** The session. */
  readonly session: Session<AppEvents>;
  /**
   * Resolves once the stored transcript is read and the session caught up
   * with the server: {@link messages} is then complete. Rejects if the
   * session fails for good first (e.g. `forbidden`).
   */
  readonly ready: Promise<void>;
  private readonly sendOptions: SendOptions | undefined;
  /** Ids of messages this transport sent whose answer has not started (and is followed). */
  private readonly unanswered = new Set<Promise<string>>();

  constructor(options: DurableChatTransportOptions) {
    this.session = options.session;
    this.sendOptions = options.send;
    this.ready = this.session.ready.then(() => this.session.synced);
    // Rejected (the session failed for good, e.g. `forbidden`) for whoever
    // awaits it; not an unhandled rejection otherwise.
    this.ready.catch(() => {});
  }

  /**
   * The session's conversation as `UIMessage`s: user messages, and one
   * assistant message per run (id = the run id, `metadata` =
   * {@link DurableRunMetadata}). Give it to `useChat({ messages })` after
   * {@link ready}.
   */
  messages(): UI[] {
    const items = this.session.items();
    const out: UIMessage[] = [];
    for (const item of items) {
      if (item.kind === "user") {
        out.push({ id: item.id, role: "user", parts: [{ type: "text", text: item.text }] });
      } else if (item.kind === "run") {
        const parts = partsOf(item, item.state !== "streaming");
        out.push({ id: item.runId, role: "assistant", metadata: metadata(item), parts });
      }
    }
    return out as UI[];
  }

  /**
   * Stops the agent: appends a `cancel` for every run of the session still
   * streaming, and for the run answering a message this transport sent
   * that the agent has not started yet (as soon as it starts). Every tab
   * following those runs sees them end. Resolves once the cancels for the
   * streaming runs are stored.
   */
  async stop(): Promise<void> {
    const items = this.session.items();
    const runs = items.filter((i): i is RunItem => i.kind === "run" && i.state === "streaming").map((r) => r.runId);
    const waiting = [...this.unanswered];
    const last = [...items].reverse().find((i) => i.kind !== "event");
    if (last?.kind === "user") waiting.push(Promise.resolve(last.id));
    for (const id of waiting) void id.then((messageId) => this.cancelAnswerTo(messageId)).catch(() => {});
    await Promise.all(runs.map((id) => this.session.cancel(id)));
  }

  /** Cancels the run answering `messageId` as soon as it appears. */
  private cancelAnswerTo(messageId: string): void {
    const follow = followRun(this.session, {
      from: 0,
      match: (r) => r.inReplyTo === messageId,
      found: (runId) => {
        void follow.stream.cancel();
        this.session.cancel(runId).catch(() => {});
      },
    });
    follow.poke();
  }

  /** `useChat`'s send: appends the last user message and streams the run answering it. */
  async sendMessages(options: Parameters<ChatTransport<UI>["sendMessages"]>[0]): Promise<ReadableStream<UIMessageChunk>> {
    if (options.trigger !== "submit-message") {
      throw new Error("DurableChatTransport: regenerating a message is not supported; send it again");
    }
    const last = options.messages[options.messages.length - 1];
    if (last?.role !== "user") throw new Error("DurableChatTransport: the last message must be the user's");
    const text = last.parts.map((p) => (p.type === "text" ? p.text : "")).join("");
    let messageId: string | undefined;
    const id = this.session.send(text, this.sendOptions).then((r) => r.id);
    this.unanswered.add(id);
    const forget = () => this.unanswered.delete(id);
    const follow = followRun(this.session, {
      from: this.session.items().length,
      match: (r) => r.inReplyTo === messageId,
      signal: options.abortSignal,
      found: forget,
      lost: forget,
    });
    id.then(
      (sentId) => {
        messageId = sentId;
        follow.poke();
      },
      (e: DurableSessionError) => follow.fail(e),
    );
    return follow.stream;
  }

  /**
   * `useChat`'s resume: once {@link ready}, the stream of the run being
   * written (or of the answer to the last message, which the agent has not
   * started yet), replayed from its start; `null` when nothing is being
   * written.
   */
  async reconnectToStream(options: Parameters<ChatTransport<UI>["reconnectToStream"]>[0]): Promise<ReadableStream<UIMessageChunk> | null> {
    await this.ready;
    if (options.abortSignal?.aborted) return null;
    const items = this.session.items();
    for (let i = items.length - 1; i >= 0; i--) {
      const item = items[i];
      if (item.kind === "event") continue;
      if (item.kind === "run" && item.state !== "streaming") return null;
      const match =
        item.kind === "run"
          ? (r: RunItem) => r.runId === item.runId
          : // The answer to the last message has not started yet.
            (r: RunItem) => r.inReplyTo === item.id;
      const follow = followRun(this.session, { from: i, match, signal: options.abortSignal });
      follow.poke();
      return follow.stream;
    }
    return null;
  }
}
