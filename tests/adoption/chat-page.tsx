// An AI SDK `useChat` app on DurableChatTransport (durable-sessions/ai-sdk),
// in StrictMode, resuming on load. Bundled by esbuild
// (tests/adoption/bundle.mjs), type-checked by `tsc --noEmit --strict`.
// The test drives it through its buttons and reads `window.__chat`.
import init, { DurableClient } from "durable-sessions";
import { DurableChatTransport, type DurableRunMetadata } from "durable-sessions/ai-sdk";
import { useChat } from "@ai-sdk/react";
import type { UIMessage } from "ai";
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

type Message = UIMessage<DurableRunMetadata>;

/** What the test reads. */
interface Report {
  status: string;
  messages: Message[];
  error: string | undefined;
  state: string;
}
declare global {
  interface Window {
    __chat?: Report;
    __chatError?: string;
  }
}

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? "";
const sessionId = params.get("session") ?? "chat";

function Chat({ transport, client }: { transport: DurableChatTransport<Message>; client: DurableClient }) {
  const { messages, sendMessage, status, error } = useChat<Message>({
    id: sessionId,
    transport,
    messages: transport.messages(),
    resume: true,
  });
  const [text, setText] = useState("");
  useEffect(() => {
    window.__chat = { status, messages, error: error?.message, state: client.state };
  });
  useEffect(
    () => () => {
      window.__chat = undefined;
    },
    [],
  );
  return (
    <main>
      <p data-testid="status">{status}</p>
      <input data-testid="input" value={text} onChange={(e) => setText(e.target.value)} />
      <button data-testid="send" onClick={() => void sendMessage({ text })}>
        Send
      </button>
      {/* Stop = a `cancel` event: the agent stops and every tab's stream ends. */}
      <button data-testid="stop" onClick={() => void transport.stop()}>
        Stop
      </button>
      <ol data-testid="messages">
        {messages.map((m) => (
          <li key={m.id} data-role={m.role} data-state={m.metadata?.state}>
            {m.parts.map((p, i) => (p.type === "text" || p.type === "reasoning" ? <span key={i}>{p.text}</span> : null))}
          </li>
        ))}
      </ol>
    </main>
  );
}

/** Mounts and unmounts the chat (as navigating away and back in an app would). */
function App(props: { transport: DurableChatTransport<Message>; client: DurableClient }) {
  const [shown, setShown] = useState(true);
  return (
    <>
      <button data-testid="toggle" onClick={() => setShown((s) => !s)}>
        {shown ? "Hide" : "Show"}
      </button>
      {shown ? <Chat {...props} /> : <p data-testid="hidden">hidden</p>}
    </>
  );
}

try {
  await init();
  const client = new DurableClient({ url: server, transport: params.get("transport") === "http" ? "http" : "websocket" });
  const transport = new DurableChatTransport<Message>({ session: client.session(sessionId, { author: "chat-tab" }) });
  // The stored conversation is read and caught up: `messages()` is complete.
  await transport.ready;
  createRoot(document.getElementById("root")!).render(
    <StrictMode>
      <App transport={transport} client={client} />
    </StrictMode>,
  );
} catch (e) {
  window.__chatError = String(e);
}
