// Type-checked by `tsc --noEmit` (tests/package/tsconfig.json): the npm
// package's public surface as an app uses it. It is compiled, not run.
import init, {
  DurableClient,
  type ChatItem,
  type ConnectionState,
  type DurableSessionError,
  type ErrorCode,
  type PersistOptions,
  type SessionEnvelope,
  type StateChange,
  type TokenProvider,
  type ToolCall,
} from "durable-sessions";

export async function demo(): Promise<void> {
  await init();
  const client = new DurableClient({
    url: "http://127.0.0.1:4437",
    transport: "websocket",
    backoff: { minMs: 250, maxMs: 10_000, factor: 2 },
    heartbeatTimeoutMs: 10_000,
    token: async () => "secret",
  });
  // A token function may return a string or a promise of one; a fixed
  // string works too.
  const fromBackend: TokenProvider = async () => (await fetch("/api/session-token")).text();
  const cached: TokenProvider = () => "eyJhbGciOiJIUzI1NiJ9.e30.sig";
  new DurableClient({ transport: "http", token: fromBackend }).close();
  new DurableClient({ token: cached }).close();
  new DurableClient({ token: "eyJhbGciOiJIUzI1NiJ9.e30.sig" }).close();
  const state: ConnectionState = client.state;
  const stop: () => void = client.onStateChange((change: StateChange) => {
    const retry: number | undefined = change.retryInMs;
    console.log(change.state, change.previous, change.reason, retry, state);
    if (change.error?.code === "token_failed") {
      console.warn("cannot get a token:", change.error.message);
    } else if (change.error?.code === "forbidden") {
      console.warn("no access to", change.error.message);
    }
  });
  const session = client.session("demo", { author: "ada", persist: true });
  const other = new DurableClient().session("other");
  await other.send("options are optional");
  // Stored in IndexedDB within limits; storage failures reach the app.
  const limits: PersistOptions = { maxEvents: 10_000, maxBytes: 4 << 20, maxSessions: 5 };
  const bounded = client.session("bounded", { persist: limits });
  await bounded.ready; // the stored transcript is back: items(), offset, received
  console.log(bounded.items().length, bounded.received);
  const unsubscribe: () => void = bounded.onStorageError((e: DurableSessionError) => {
    const code: ErrorCode = e.code;
    if (code === "quota_exceeded") console.warn("storage full; the session keeps working:", e.message);
  });
  unsubscribe();
  await bounded.clearStorage();
  client.session("ephemeral", { persist: false }).close();
  session.onChange((items: ChatItem[]) => {
    for (const item of items) {
      if (item.kind === "run") {
        const lanes: string[] = item.lanes.map((l) => `${l.agent}: ${l.text}`);
        console.log(item.runId, item.state, item.text, lanes);
        // A real model's reasoning and tool calls, folded into the run.
        const tools: string[] = item.toolCalls.map((c: ToolCall) => `${c.name}(${c.arguments}) = ${c.output ?? c.error ?? "…"}`);
        console.log(item.reasoning, tools);
      } else if (item.kind === "user") {
        console.log(item.author, item.text);
      } else {
        // An event of another type, passed through where it appeared.
        console.log(item.event.type);
      }
    }
  });
  session.onError((e: DurableSessionError) => {
    const code: ErrorCode = e.code;
    if (code === "forbidden" || code === "unauthorized") {
      console.error("access denied:", e.message);
    }
  });
  const sent = await session.send("hello", { mode: "multi" });
  const id: string = sent.id;
  const { offset, duplicate } = await session.cancel("run-1");
  await session.steer("run-1", "shorter");
  await session.append({ type: "note", text: "anything with a type" });
  for await (const envelope of session.events()) {
    const e: SessionEnvelope = envelope;
    if (e.event.type === "text_delta") {
      const delta: string = e.event.delta;
      console.log(delta);
    }
    break;
  }
  console.log(id, offset, duplicate, session.offset, session.received);
  // Any Durable Streams stream, not a session: JSON, text or bytes.
  const log = client.stream<string>("logs/build-7", { contentType: "text/plain", persist: true });
  log.onEvent(({ offset: at, data }) => console.log(at, data.length));
  await log.append("step 1 done\n");
  const blobs = client.stream<Uint8Array>("blobs/a", { contentType: "application/octet-stream" });
  await blobs.append(Uint8Array.of(1, 2, 3));
  const records = client.stream<{ n: number }>("metrics/cpu");
  for await (const { data } of records.events()) {
    console.log(data.n);
    break;
  }
  await Promise.all([log.synced, blobs.ready]);
  stop();
  session.close();
  // Signing out: nothing of any session stays in this browser.
  await client.clearStorage();
  client.close();
}
