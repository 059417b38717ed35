// The npm package's React and AI SDK entry points in headless Chromium, with
// the real `react`, `react-dom`, `ai` and `@ai-sdk/react` packages, bundled
// by esbuild as an app would be (bundle.mjs), against our server and the
// demo agent: a React page on useDurableSession and a page on useChat with
// DurableChatTransport, both in StrictMode — send; reload mid-answer
// (resumes, no duplicate message or part); stop from a second tab (both
// stop).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawn } from "node:child_process";
import { startServer } from "../support/server.mjs";
import { serveStatic } from "../support/static.mjs";
import { launchBrowser } from "../support/browser.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { bundle, bundleEntries } from "./bundle.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let server, quiet, agent, files, browser;

before(async () => {
  await bundle();
  server = await startServer();
  // A server no agent watches: the test writes the runs itself.
  quiet = await startServer();
  const agentBin = process.env.AGENT_BIN ?? join(root, "target", "debug", "durable-session-agent");
  agent = spawn(agentBin, ["--server", server.url, "--tokens-per-second", "30", "--answer-tokens", "200"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  files = await serveStatic(root);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await files?.close();
  agent?.kill("SIGTERM");
  await server?.stop();
  await quiet?.stop();
});

const page = (name, base, session, transport = "websocket") =>
  `${files.url}/tests/adoption/dist/${name}.html?server=${encodeURIComponent(base)}&session=${encodeURIComponent(session)}&transport=${transport}`;

/** A tab of `context` at `url`, recording page errors and counting the WebSockets it opens. */
async function tab(context, url) {
  const p = await context.newPage();
  p.errors = [];
  p.on("pageerror", (e) => p.errors.push(String(e)));
  await p.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = 0;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets += 1;
      }
    };
  });
  await p.goto(url);
  return p;
}

function waitFor(p, fn, arg, timeout = 30_000) {
  return p.waitForFunction(fn, arg, { timeout, polling: 50 });
}

/** Every event of a session, as the server stores it. */
async function log(base, id) {
  const res = await fetch(`${base}/v1/stream/sessions/${encodeURIComponent(id)}?offset=-1`);
  assert.equal(res.status, 200);
  return res.json();
}

/** A run's text by docs/protocol.md §11 (single agent): its deltas up to its first run_finished. */
function runText(events, runId) {
  let text = "";
  for (const e of events) {
    if (e.run_id !== runId) continue;
    if (e.type === "run_finished") break;
    if (e.type === "text_delta") text += e.delta;
  }
  return text;
}

async function append(base, id, events) {
  const res = await fetch(`${base}/v1/stream/sessions/${encodeURIComponent(id)}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(events),
  });
  assert.ok(res.ok, `append: HTTP ${res.status}`);
}

test("React: useDurableSession in StrictMode — one socket, send, reload mid-answer, stop from a second tab, an app's own event type", async () => {
  const id = `react-${Date.now()}`;
  const context = await browser.newContext();
  const a = await tab(context, page("react-page", server.url, id));
  await waitFor(a, () => window.__react?.state === "connected" && window.__react.synced);
  // StrictMode mounted, unmounted and mounted the component again: one
  // session, one client, one socket.
  assert.equal(await a.evaluate(() => window.__sockets), 1, "StrictMode opened one connection");

  await a.fill("[data-testid=input]", "hello from react");
  await a.click("[data-testid=send]");
  await waitFor(a, () => window.__react.items.some((i) => i.kind === "run" && i.state === "streaming" && i.text.length > 30));

  // Reload mid-answer: the stored transcript comes back at once, the answer
  // goes on where it was, nothing twice.
  const beforeReload = await a.evaluate(() => window.__react.items.find((i) => i.kind === "run").text.length);
  await a.reload();
  await waitFor(a, () => window.__react?.loaded);
  const restored = await a.evaluate(() => window.__react.items.map((i) => i.kind));
  assert.deepEqual(restored, ["user", "run"], "restored from storage, once");
  await waitFor(a, (n) => window.__react.items[1]?.text.length > n + 10, beforeReload);

  // A second tab shows the answer being written, and stops it for both.
  const b = await tab(context, page("react-page", server.url, id));
  await waitFor(b, () => window.__react?.items.some((i) => i.kind === "run" && i.state === "streaming"));
  await b.click("[data-testid=stop]");
  for (const p of [a, b]) await waitFor(p, () => window.__react.items.some((i) => i.kind === "run" && i.state === "cancelled"));

  // The app's own event type, appended in one tab, read back typed in both.
  await b.click("[data-testid=vote]");
  for (const p of [a, b]) await waitFor(p, () => window.__react.votes.length === 1);

  const events = await log(server.url, id);
  const run = events.find((e) => e.type === "run_started");
  for (const p of [a, b]) {
    const r = await p.evaluate(() => window.__react);
    assert.deepEqual(r.items.map((i) => i.kind), ["user", "run", "event"]);
    assert.equal(r.items[0].text, "hello from react");
    assert.equal(r.items[1].runId, run.run_id);
    assert.equal(r.items[1].text, runText(events, run.run_id), "exactly the server's answer: no gap, no duplicate");
    assert.equal(r.items[1].cancelRequestedBy, "react-tab");
    assert.deepEqual(r.items[2].event, { type: "app.vote", choice: 2, by: "react-tab" });
    assert.deepEqual(r.votes, [2]);
    assert.equal(r.identityChanges, 0, "unchanged items keep their identity across renders");
    assert.equal(r.error, undefined);
    assert.deepEqual(p.errors, []);
  }
  assert.equal(events.filter((e) => e.type === "user_message").length, 1);
  assert.equal(events.filter((e) => e.type === "cancel").length, 1);
  await context.close();
});

for (const transport of ["websocket", "http"]) {
  test(`useChat + DurableChatTransport (${transport}), StrictMode: send; reload mid-answer resumes with no duplicate message or part; stop from a second tab stops both`, async () => {
    const id = `chat-${transport}-${Date.now()}`;
    const context = await browser.newContext();
    const a = await tab(context, page("chat-page", server.url, id, transport));
    await waitFor(a, () => window.__chat?.status === "ready");
    await a.fill("[data-testid=input]", "hello from useChat");
    await a.click("[data-testid=send]");
    await waitFor(a, () => window.__chat.status === "streaming" && window.__chat.messages[1]?.parts.some((p) => p.type === "text" && p.text.length > 30));

    const textOf = () => {
      const m = window.__chat.messages.find((x) => x.role === "assistant");
      return m ? m.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : "";
    };
    const beforeReload = (await a.evaluate(textOf)).length;
    await a.reload();
    await waitFor(a, () => window.__chat !== undefined);
    // The history (from storage and the server) has the message and the
    // partial answer; resuming replaces that answer in place.
    assert.deepEqual(await a.evaluate(() => window.__chat.messages.map((m) => m.role)), ["user", "assistant"]);
    await waitFor(a, () => window.__chat.status === "streaming");
    await waitFor(a, (n) => {
      const m = window.__chat.messages[1];
      return m.parts.length === 1 && m.parts[0].text.length > n + 10;
    }, beforeReload);

    // Unmounting the chat (useChat's cleanup calls its stop(), which aborts
    // the stream) only detaches this tab: the answer goes on, and mounting
    // it again resumes it.
    const atUnmount = (await a.evaluate(textOf)).length;
    await a.click("[data-testid=toggle]");
    await waitFor(a, () => document.querySelector("[data-testid=hidden]") !== null && window.__chat === undefined);
    await a.click("[data-testid=toggle]");
    await waitFor(a, () => window.__chat?.status === "streaming");
    await waitFor(a, (n) => window.__chat.messages[1]?.parts[0]?.text.length > n + 10, atUnmount);

    const b = await tab(context, page("chat-page", server.url, id, transport));
    await waitFor(b, () => window.__chat?.status === "streaming");
    await b.click("[data-testid=stop]");
    for (const p of [a, b]) {
      await waitFor(p, () => window.__chat.status === "ready" && window.__chat.messages[1]?.metadata?.state === "cancelled");
    }

    const events = await log(server.url, id);
    const run = events.find((e) => e.type === "run_started");
    const user = events.find((e) => e.type === "user_message");
    for (const p of [a, b]) {
      const r = await p.evaluate(() => window.__chat);
      assert.equal(r.error, undefined, r.error);
      assert.deepEqual(r.messages.map((m) => m.role), ["user", "assistant"], "one message each: none duplicated");
      assert.deepEqual(r.messages[0].parts, [{ type: "text", text: "hello from useChat" }]);
      assert.equal(r.messages[1].id, run.run_id);
      assert.equal(r.messages[1].parts.length, 1, `one part: ${JSON.stringify(r.messages[1].parts.map((x) => x.type))}`);
      assert.equal(r.messages[1].parts[0].type, "text");
      assert.equal(r.messages[1].parts[0].text, runText(events, run.run_id), "exactly the server's answer");
      assert.deepEqual(p.errors, []);
    }
    assert.equal(await b.evaluate(() => window.__chat.messages[0].id), user.id, "the history names messages by their session ids");
    assert.equal(events.filter((e) => e.type === "user_message").length, 1, "sent once");
    assert.equal(events.filter((e) => e.type === "cancel").length, 1, "stopped with one cancel event");
    const finished = events.filter((e) => e.type === "run_finished");
    assert.deepEqual(finished.map((e) => e.status), ["cancelled"]);
    await context.close();
  });
}

test("useChat + DurableChatTransport: reasoning, a tool call and text become parts, the same live and after a reload", async () => {
  const id = `chat-parts-${Date.now()}`;
  const context = await browser.newContext();
  const a = await tab(context, page("chat-page", quiet.url, id));
  await waitFor(a, () => window.__chat?.status === "ready");
  await a.fill("[data-testid=input]", "what is the weather");
  await a.click("[data-testid=send]");
  // The test is the agent here.
  let message;
  for (let i = 0; i < 200 && !message; i++) {
    message = (await log(quiet.url, id)).find((e) => e.type === "user_message");
    if (!message) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(message, "the message reached the server");
  const run = (e) => ({ run_id: "run-1", agent: "model", ...e });
  await append(quiet.url, id, [
    run({ type: "run_started", in_reply_to: message.id }),
    run({ type: "reasoning_delta", delta: "The user wants " }),
    run({ type: "reasoning_delta", delta: "the weather." }),
    run({ type: "tool_call", call_id: "call-1", name: "weather", arguments: '{"city":"Oslo"}' }),
  ]);
  await waitFor(a, () => window.__chat.messages[1]?.parts.some((p) => p.type === "dynamic-tool"));
  await append(quiet.url, id, [
    { type: "tool_result", run_id: "run-1", call_id: "call-1", output: '{"celsius":4}' },
    run({ type: "text_delta", delta: "It is 4 °C " }),
    run({ type: "text_delta", delta: "in Oslo." }),
    { type: "app.unrelated", run_id: "run-1" },
    run({ type: "run_finished", status: "completed" }),
  ]);
  await waitFor(a, () => window.__chat.status === "ready" && window.__chat.messages[1]?.metadata?.state === "completed");
  const expected = [
    { type: "reasoning", text: "The user wants the weather.", state: "done" },
    { type: "dynamic-tool", toolName: "weather", toolCallId: "call-1", state: "output-available", input: { city: "Oslo" }, output: '{"celsius":4}' },
    { type: "text", text: "It is 4 °C in Oslo.", state: "done" },
  ];
  const shape = (parts) =>
    parts.map(({ type, text, state, toolName, toolCallId, input, output }) => ({ type, text, state, toolName, toolCallId, input, output }));
  const live = await a.evaluate(() => window.__chat.messages[1]);
  assert.deepEqual(shape(live.parts), shape(expected), "live");
  assert.equal(live.id, "run-1");
  await a.reload();
  await waitFor(a, () => window.__chat?.status === "ready");
  const restored = await a.evaluate(() => window.__chat.messages);
  assert.deepEqual(restored.map((m) => m.role), ["user", "assistant"]);
  assert.deepEqual(shape(restored[1].parts), shape(expected), "after a reload");
  assert.deepEqual(restored[1].metadata, { runId: "run-1", agent: "model", state: "completed", reason: null });
  assert.deepEqual(a.errors, []);
  await context.close();
});

test("each entry point's example bundles; an app importing only the core ships no React and no AI SDK code", async () => {
  const out = mkdtempSync(join(tmpdir(), "durable-sessions-examples-"));
  try {
    const examples = join(root, "examples");
    const inputs = async (name, file) => {
      const meta = await bundleEntries({ [name]: join(examples, file) }, join(out, name), { minify: true, production: true });
      return Object.keys(meta.inputs).map((p) => p.replaceAll("\\", "/"));
    };
    const from = (list, pattern) => list.filter((p) => pattern.test(p));
    const core = await inputs("core", "core.ts");
    assert.ok(from(core, /sdk\/pkg\/durable_sessions\.js$/).length === 1, core.join("\n"));
    assert.deepEqual(from(core, /node_modules\/(react|react-dom|ai|@ai-sdk)\//), [], "no React, no AI SDK");
    assert.deepEqual(from(core, /sdk\/pkg\/(react|ai-sdk)\.js$/), [], "none of the other entry points");
    const react = await inputs("react", "react.tsx");
    assert.ok(from(react, /node_modules\/react\//).length > 0);
    assert.ok(from(react, /sdk\/pkg\/react\.js$/).length === 1);
    assert.deepEqual(from(react, /node_modules\/(ai|@ai-sdk)\/|sdk\/pkg\/ai-sdk\.js$/), [], "no AI SDK in a React app without it");
    const ai = await inputs("ai", "ai-sdk.tsx");
    assert.ok(from(ai, /sdk\/pkg\/ai-sdk\.js$/).length === 1);
    assert.ok(from(ai, /node_modules\/@ai-sdk\/react\//).length > 0);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
