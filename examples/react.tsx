// durable-sessions/react: a chat component on useDurableSession. Bundled by
// the tests (with React, without the AI SDK) and type-checked.
import init, { DurableClient } from "durable-sessions";
import { useDurableSession } from "durable-sessions/react";
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

await init();
// One connection for every session of the app.
const client = new DurableClient({ url: "http://127.0.0.1:4437", token: async () => (await fetch("/api/session-token")).text() });

function Chat({ id }: { id: string }) {
  const { items, state, send, cancel, error } = useDurableSession(id, { client });
  const [text, setText] = useState("");
  const running = items.findLast((i) => i.kind === "run" && i.state === "streaming");
  return (
    <section>
      <p>
        {state}
        {error ? ` — ${error.code}` : ""}
      </p>
      {items.map((item, i) =>
        item.kind === "user" ? (
          <p key={item.id}>
            <b>{item.author}</b> {item.text}
          </p>
        ) : item.kind === "run" ? (
          <p key={item.runId}>{item.text}</p>
        ) : (
          <small key={i}>{item.event.type}</small>
        ),
      )}
      <input value={text} onChange={(e) => setText(e.target.value)} />
      <button onClick={() => void send(text)}>Send</button>
      {/* Stop is a `cancel` event: the agent stops, in every tab. */}
      {running?.kind === "run" && <button onClick={() => void cancel(running.runId)}>Stop</button>}
    </section>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Chat id="demo" />
  </StrictMode>,
);
