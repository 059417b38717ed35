// durable-sessions/ai-sdk: the AI SDK's useChat on a durable session.
// Bundled by the tests (with React and @ai-sdk/react) and type-checked.
import init, { DurableClient } from "durable-sessions";
import { DurableChatTransport, type DurableRunMetadata } from "durable-sessions/ai-sdk";
import { useChat } from "@ai-sdk/react";
import type { UIMessage } from "ai";
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

type Message = UIMessage<DurableRunMetadata>;

await init();
const client = new DurableClient({ url: "http://127.0.0.1:4437" }); // or transport: "http" for any Durable Streams server
const transport = new DurableChatTransport<Message>({ session: client.session("demo") });
await transport.ready; // the stored conversation is read and caught up

function Chat() {
  // resume: a reload, another tab or another device picks up the answer being written.
  const { messages, sendMessage, status } = useChat<Message>({ id: "demo", transport, messages: transport.messages(), resume: true });
  const [text, setText] = useState("");
  return (
    <section>
      {messages.map((m) => (
        <p key={m.id}>
          <b>{m.role}</b> {m.parts.map((p) => (p.type === "text" ? p.text : "")).join("")}
          {m.metadata?.state === "cancelled" ? " (stopped)" : ""}
        </p>
      ))}
      <input value={text} onChange={(e) => setText(e.target.value)} />
      <button disabled={status !== "ready"} onClick={() => void sendMessage({ text })}>
        Send
      </button>
      {/* Stop = a `cancel` event: the agent stops and every tab's stream ends. */}
      <button disabled={status !== "streaming"} onClick={() => void transport.stop()}>
        Stop
      </button>
    </section>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Chat />
  </StrictMode>,
);
