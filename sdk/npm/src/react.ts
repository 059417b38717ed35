/**
 * React bindings: `useDurableSession`, a session as React state.
 *
 * ```tsx
 * import init from "durable-sessions";
 * import { useDurableSession } from "durable-sessions/react";
 *
 * await init(); // once, before rendering
 *
 * function Chat() {
 *   const { items, state, send, cancel } = useDurableSession("demo", { url: "https://sessions.example.com" });
 *   return (
 *     <>
 *       <p>{state}</p>
 *       {items.map((item, i) => (item.kind === "run" ? <p key={item.runId}>{item.text}</p> : null))}
 *       <button onClick={() => send("hello")}>Send</button>
 *     </>
 *   );
 * }
 * ```
 *
 * @module durable-sessions/react
 */
import { useCallback, useEffect, useMemo, useSyncExternalStore } from "react";
import {
  DurableClient,
  type AppEvents,
  type AppendEvent,
  type AppendResult,
  type ChatItem,
  type ClientOptions,
  type ConnectionState,
  type DurableSessionError,
  type SendOptions,
  type SendResult,
  type Session,
  type SessionOptions,
  type StateChange,
} from "./durable_sessions.js";

/** Options of {@link useDurableSession}: the client's and the session's. */
export interface UseDurableSessionOptions extends ClientOptions, SessionOptions {
  /**
   * A client to open the session on, shared with other sessions (one
   * connection for all). The hook never closes it. Without one, the hook
   * opens its own client with the other options and closes it when the
   * component unmounts.
   */
  client?: DurableClient;
}

/** The session as React state: what the JS API's `Session` and `DurableClient` report. */
export interface DurableSessionState<E extends AppEvents = never> {
  /** The transcript (`session.items()`), a new array after each change; unchanged items keep their identity. */
  items: ChatItem<E>[];
  /** The connection state. */
  state: ConnectionState;
  /** Why the state last changed. */
  reason: string;
  /** When retrying: milliseconds until the next attempt (at the time of the change). */
  retryInMs: number | undefined;
  /** The offset reached (`session.offset`). */
  offset: string | undefined;
  /** Session events received (`session.received`). */
  received: number;
  /**
   * The last error: the subscription failing (`forbidden`, `not_found`, …),
   * an action of this hook failing, or the token function failing
   * (`token_failed`, retried by itself).
   */
  error: DurableSessionError | undefined;
  /** The stored transcript has been read (`session.ready`): `false` only briefly after opening. */
  loaded: boolean;
  /** The subscription has caught up with the server once (`session.synced`). */
  synced: boolean;
}

/** What {@link useDurableSession} returns: the state, and the actions. */
export interface UseDurableSessionReturn<E extends AppEvents = never> extends DurableSessionState<E> {
  /** The open session (for `onEvent`, `events()`, …); `undefined` before the first commit. */
  session: Session<E> | undefined;
  /** Sends a user message (`session.send`). */
  send: (text: string, options?: SendOptions) => Promise<SendResult>;
  /** Asks the agent to stop run `runId` (a `cancel` event). */
  cancel: (runId: string) => Promise<AppendResult>;
  /** Changes the direction of run `runId` (a `steer` event). */
  steer: (runId: string, text: string) => Promise<AppendResult>;
  /** Appends a core event or one of the app's own (`E`). */
  append: (event: AppendEvent<E>) => Promise<AppendResult>;
}

const INITIAL: DurableSessionState<never> = Object.freeze({
  items: [],
  state: "connecting",
  reason: "connect",
  retryInMs: undefined,
  offset: undefined,
  received: 0,
  error: undefined,
  loaded: false,
  synced: false,
});

function notOpen(): DurableSessionError {
  const e = new Error("the session is not open (the component is not mounted)") as DurableSessionError;
  e.name = "DurableSessionError";
  e.code = "client_closed";
  return e;
}

/**
 * One session of one hook instance: opened by its first subscriber, closed
 * once it has none (after the current task, so React's StrictMode, which
 * unsubscribes and subscribes again at once, reuses it). Reads only from the
 * SDK's callbacks: each change makes a new immutable snapshot.
 */
class SessionStore<E extends AppEvents> {
  private listeners = new Set<() => void>();
  private snapshot: DurableSessionState<E> = INITIAL;
  private open: { client: DurableClient; own: boolean; session: Session<E>; off: (() => void)[] } | undefined;
  private closing = false;

  constructor(
    private readonly id: string,
    public options: UseDurableSessionOptions,
  ) {}

  get session(): Session<E> | undefined {
    return this.open?.session;
  }

  readonly getSnapshot = (): DurableSessionState<E> => this.snapshot;

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && !this.closing) {
        this.closing = true;
        queueMicrotask(() => {
          this.closing = false;
          if (this.listeners.size === 0) this.stop();
        });
      }
    };
  };

  private set(change: Partial<DurableSessionState<E>>): void {
    this.snapshot = { ...this.snapshot, ...change };
    for (const listener of [...this.listeners]) listener();
  }

  private start(): void {
    if (this.open) return;
    const { client: shared, author, persist, token, ...clientOptions } = this.options;
    let client = shared;
    const own = client === undefined;
    try {
      if (!client) {
        // The latest token function of the component, whichever render made it.
        const provider = typeof token === "function" ? () => (this.options.token as () => string | Promise<string>)() : token;
        client = new DurableClient({ ...clientOptions, token: provider });
      }
      const session = client.session<E>(this.id, { author, persist });
      const read = () => ({ offset: session.offset, received: session.received });
      const stateOf = (c: StateChange) => ({
        state: c.state,
        reason: c.reason,
        retryInMs: c.retryInMs,
        ...(c.error ? { error: Object.assign(new Error(c.error.message), c.error, { name: "DurableSessionError" }) as DurableSessionError } : {}),
      });
      const open = { client, own, session, off: [] as (() => void)[] };
      this.open = open;
      open.off.push(
        session.onChange((items) => this.set({ items, ...read() })),
        session.onError((error) => this.set({ error })),
        client.onStateChange((c) => this.set(stateOf(c))),
      );
      const live = () => this.open === open;
      session.ready.then(() => live() && this.set({ loaded: true, items: session.items(), ...read() }));
      // A subscription that fails first rejects it; onError reports that.
      session.synced.then(
        () => live() && this.set({ synced: true, ...read() }),
        () => {},
      );
      this.snapshot = { ...INITIAL, state: client.state, items: session.items(), ...read() };
    } catch (e) {
      if (own) client?.close();
      this.snapshot = { ...INITIAL, state: "closed", error: e as DurableSessionError };
    }
  }

  private stop(): void {
    const open = this.open;
    if (!open) return;
    this.open = undefined;
    for (const off of open.off) off();
    open.session.close();
    if (open.own) open.client.close();
  }

  /** Runs `action` on the open session; its failure is also the state's `error`. */
  act<T>(action: (session: Session<E>) => Promise<T>): Promise<T> {
    const session = this.open?.session;
    if (!session) return Promise.reject(notOpen());
    return action(session).catch((error: DurableSessionError) => {
      if (this.open?.session === session) this.set({ error });
      throw error;
    });
  }
}

/**
 * Opens session `id` for the life of the calling component and returns it
 * as React state (read with `useSyncExternalStore`: consistent under
 * concurrent rendering) with its actions.
 *
 * Safe under StrictMode: the extra mount and unmount React makes in
 * development reuse the open session. A new `id` (or `client`) opens the new
 * session and closes the old one. Other options are read when the session
 * opens, except `token`: the latest function given is called.
 *
 * `E` declares the app's own event types: `append` checks them, and items
 * of kind `"event"` carry them.
 *
 * @example
 * type Vote = { type: "app.vote"; choice: number };
 * const { items, append } = useDurableSession<Vote>("poll", { client });
 * const votes = items.filter((i) => i.kind === "event").map((i) => i.event.choice);
 * append({ type: "app.vote", choice: 2 });
 */
export function useDurableSession<E extends AppEvents = never>(
  id: string,
  options: UseDurableSessionOptions = {},
): UseDurableSessionReturn<E> {
  const store = useMemo(() => new SessionStore<E>(id, options), [id, options.client]);
  useEffect(() => {
    store.options = options;
  });
  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const send = useCallback((text: string, o?: SendOptions) => store.act((s) => s.send(text, o)), [store]);
  const cancel = useCallback((runId: string) => store.act((s) => s.cancel(runId)), [store]);
  const steer = useCallback((runId: string, text: string) => store.act((s) => s.steer(runId, text)), [store]);
  const append = useCallback((event: AppendEvent<E>) => store.act((s) => s.append(event)), [store]);
  return { ...snapshot, session: store.session, send, cancel, steer, append };
}
