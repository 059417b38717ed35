// A React app on `useDurableSession` (durable-sessions/react), in
// StrictMode, with an event type of its own. Bundled by esbuild
// (tests/adoption/bundle.mjs), type-checked by `tsc --noEmit --strict`.
// The test drives it through its buttons and reads `window.__react`.
import init, { type ChatItem } from "durable-sessions";
import { useDurableSession } from "durable-sessions/react";
import { StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";

/** The app's own event: a vote, appended and read back with its own type. */
type Vote = { type: "app.vote"; choice: number; by: string };

/** What the test reads. */
interface Report {
  state: string;
  items: ChatItem<Vote>[];
  offset: string | undefined;
  received: number;
  loaded: boolean;
  synced: boolean;
  error: string | undefined;
  votes: number[];
  /** User items whose object changed although the item did not. */
  identityChanges: number;
  renders: number;
}
declare global {
  interface Window {
    __react?: Report;
    __reactError?: string;
  }
}

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? "";
const sessionId = params.get("session") ?? "react";
const transport = params.get("transport") === "http" ? "http" : "websocket";

function App() {
  const { items, state, offset, received, loaded, synced, error, send, cancel, append } = useDurableSession<Vote>(sessionId, {
    url: server,
    transport,
    author: "react-tab",
  });
  const [text, setText] = useState("");
  const renders = useRef(0);
  const previous = useRef<ChatItem<Vote>[]>([]);
  const identityChanges = useRef(0);
  renders.current += 1;
  useEffect(() => {
    // Unchanged items keep their identity: user messages never change.
    previous.current.forEach((old, i) => {
      if (old.kind === "user" && items[i] !== old) identityChanges.current += 1;
    });
    previous.current = items;
    const votes: number[] = [];
    for (const item of items) {
      // The app's own event, typed: `choice` is a number.
      if (item.kind === "event" && item.event.type === "app.vote") votes.push(item.event.choice);
    }
    window.__react = {
      state,
      items,
      offset,
      received,
      loaded,
      synced,
      error: error?.code,
      votes,
      identityChanges: identityChanges.current,
      renders: renders.current,
    };
  });
  const streaming = items.findLast((i) => i.kind === "run" && i.state === "streaming");
  const report = (e: unknown) => console.warn("action failed", e);
  return (
    <main>
      <p data-testid="state">{state}</p>
      <input data-testid="input" value={text} onChange={(e) => setText(e.target.value)} />
      <button data-testid="send" onClick={() => send(text).catch(report)}>
        Send
      </button>
      <button data-testid="stop" disabled={streaming?.kind !== "run"} onClick={() => streaming?.kind === "run" && cancel(streaming.runId).catch(report)}>
        Stop
      </button>
      <button data-testid="vote" onClick={() => append({ type: "app.vote", choice: 2, by: "react-tab" }).catch(report)}>
        Vote 2
      </button>
      <ol data-testid="transcript">
        {items.map((item, i) =>
          item.kind === "user" ? (
            <li key={item.id} data-kind="user">
              {item.text}
            </li>
          ) : item.kind === "run" ? (
            <li key={item.runId} data-kind="run" data-state={item.state}>
              {item.text}
            </li>
          ) : (
            <li key={`event-${i}`} data-kind="event">
              {item.event.type}: {item.event.choice}
            </li>
          ),
        )}
      </ol>
    </main>
  );
}

try {
  await init();
  createRoot(document.getElementById("root")!).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
} catch (e) {
  window.__reactError = String(e);
}
