// The demo app end to end in headless Chromium, as `npm start` serves it:
// the app backend (page + token endpoint), the durable-session server with
// access control on (--auth jwt, the app's origin allowed), and the demo
// agents with an agent token.
// Tabs A and B are separate browser contexts (two devices) unless a test
// says otherwise. Each test saves screenshots under tests/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawn, execFileSync } from "node:child_process";
import { startServer, serverBinary } from "../support/server.mjs";
import { launchBrowser } from "../support/browser.mjs";
import { startAppServer, mintSessionToken } from "../../scripts/demo-app-server.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const artifacts = join(root, "tests", "artifacts");
mkdirSync(artifacts, { recursive: true });

let server, app, agent, browser, keyDir;
const secretText = randomBytes(32).toString("base64");
const secret = new TextEncoder().encode(secretText);

before(async () => {
  keyDir = mkdtempSync(join(tmpdir(), "durable-e2e-key-"));
  const keyFile = join(keyDir, "key");
  writeFileSync(keyFile, secretText);
  const jwtKey = `hs256:e2e:file:${keyFile}`;
  let apiUrl = "";
  app = await startAppServer({ staticDir: join(root, "target", "demo"), secret, kid: "e2e", api: () => apiUrl });
  server = await startServer({ args: ["--auth", "jwt", "--jwt-key", jwtKey, "--allow-origin", app.url] });
  apiUrl = server.url;
  const agentToken = join(keyDir, "agent.jwt");
  const token = execFileSync(serverBinary(), [
    "token", "--jwt-key", jwtKey, "--sub", "e2e-agent",
    "--grant", "sessions/*:read,agent", "--grant", "_index/sessions:read", "--ttl", "1h",
  ]);
  writeFileSync(agentToken, token);
  const agentBin = process.env.AGENT_BIN ?? join(root, "target", "debug", "durable-session-agent");
  agent = spawn(agentBin, ["--server", server.url, "--token-file", agentToken, "--tokens-per-second", "30", "--answer-tokens", "150"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  agent?.kill("SIGTERM");
  await server?.stop();
  await app?.close();
  rmSync(keyDir, { recursive: true, force: true });
});

/** A new tab in its own browser context (its own storage: another device). */
async function device(url = `${app.url}/`) {
  const context = await browser.newContext({ viewport: { width: 720, height: 900 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector("[data-testid=message-input]");
  await waitFor(page, () => document.querySelector("[data-testid=connection-status]")?.textContent === "connected");
  return page;
}

function waitFor(page, fn, arg, timeout = 20_000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}

async function send(page, text, { team = false } = {}) {
  if (team) await page.check("[data-testid=multi-agent]");
  await page.fill("[data-testid=message-input]", text);
  await page.click("[data-testid=send-button]");
}

/** The transcript as the page shows it. */
function transcript(page) {
  return page.$$eval("[data-testid=message]", (els) =>
    els.map((e) => ({
      role: e.dataset.role,
      status: e.dataset.runStatus ?? null,
      text: e.querySelector("[data-testid=run-text], .text")?.textContent ?? "",
      lanes: [...e.querySelectorAll("[data-testid=lane]")].map((l) => `${l.dataset.agent}: ${l.querySelector("[data-testid=lane-text]").textContent}`),
    })),
  );
}

/** Text of the last assistant message. */
function answer(page) {
  return page.evaluate(() => {
    const runs = document.querySelectorAll('[data-testid=message][data-role=assistant] [data-testid=run-text]');
    return runs.length ? runs[runs.length - 1].textContent : "";
  });
}

const answerLongerThan = (page, n) =>
  waitFor(page, (n) => {
    const runs = document.querySelectorAll('[data-testid=message][data-role=assistant] [data-testid=run-text]');
    return runs.length > 0 && runs[runs.length - 1].textContent.length > n;
  }, n);

const lastRunIs = (page, status, timeout) =>
  waitFor(page, (status) => {
    const runs = document.querySelectorAll('[data-testid=message][data-role=assistant]');
    return runs.length > 0 && runs[runs.length - 1].dataset.runStatus === status;
  }, status, timeout);

/** Records every text the connection badge shows from now on. */
function recordStates(page) {
  return page.evaluate(() => {
    window.__states = [];
    const el = document.querySelector("[data-testid=connection-status]");
    new MutationObserver(() => window.__states.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
  });
}

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}

/** Every event stored in the session, read over plain HTTP. */
async function storedEvents(page) {
  const id = new URL(page.url()).searchParams.get("session");
  const token = await mintSessionToken({ secret, kid: "e2e", sub: "e2e-reader", sessionId: id, ttlSeconds: 60 });
  const res = await fetch(`${server.url}/v1/stream/sessions/${id}?offset=-1`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  return res.json();
}

test("second tab: B opened mid-answer shows what was written, then the live text; both end identical", async () => {
  const a = await device();
  await send(a, "tell me about durable streams");
  await answerLongerThan(a, 60);
  const b = await device(a.url());
  await answerLongerThan(b, 0);
  const first = await answer(b);
  assert.ok(first.length > 40, `B shows the text already written (${first.length} chars)`);
  await lastRunIs(a, "completed");
  await lastRunIs(b, "completed");
  const final = await answer(b);
  assert.ok(final.length > first.length && final.startsWith(first), "then the live text followed");
  assert.deepEqual(await transcript(b), await transcript(a));
  await shot(a, "second-tab-a");
  await shot(b, "second-tab-b");
  assert.deepEqual([...a.errors, ...b.errors], []);
});

test("resilient delivery: the drop button cuts A mid-answer; it reconnects and ends equal to B", async () => {
  const a = await device();
  const b = await device(a.url());
  await recordStates(a);
  await send(a, "explain resumable subscriptions");
  await answerLongerThan(a, 60);
  await a.click("[data-testid=drop-connection]");
  await waitFor(a, () => window.__states.some((s) => s !== "connected") && window.__states.at(-1) === "connected");
  await lastRunIs(a, "completed");
  await lastRunIs(b, "completed");
  assert.deepEqual(await transcript(a), await transcript(b), "no word missing or repeated");
  const states = await a.evaluate(() => window.__states);
  assert.ok(states.includes("disconnected") || states.includes("connecting"), `A showed reconnecting: ${states}`);
  await shot(a, "drop-button-a");
});

test("resilient delivery: a network cut (devtools offline) is noticed by the heartbeat; A resumes and ends equal to B", async () => {
  const a = await device();
  const b = await device(a.url());
  const cdp = await a.context().newCDPSession(a);
  await recordStates(a);
  await send(a, "describe a long train journey");
  await answerLongerThan(a, 40);
  const cut = { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 };
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", cut);
  await waitFor(a, () => document.querySelector("[data-testid=connection-status]").textContent !== "connected", undefined, 15_000);
  await shot(a, "network-cut-offline-a");
  await cdp.send("Network.emulateNetworkConditions", { ...cut, offline: false });
  await waitFor(a, () => document.querySelector("[data-testid=connection-status]").textContent === "connected");
  await lastRunIs(b, "completed");
  await lastRunIs(a, "completed");
  assert.deepEqual(await transcript(a), await transcript(b), "no word missing or repeated");
  await shot(a, "network-cut-resumed-a");
});

test("reload: A reloads mid-answer and comes back at the same place", async () => {
  const a = await device();
  const b = await device(a.url());
  await send(a, "write about rivers");
  await answerLongerThan(a, 80);
  const before = await answer(a);
  await a.reload();
  await a.waitForSelector("[data-testid=run-text]");
  const restored = await answer(a);
  assert.ok(restored.startsWith(before), "the text written before the reload is there at once");
  await lastRunIs(a, "completed");
  await lastRunIs(b, "completed");
  assert.deepEqual(await transcript(a), await transcript(b));
  await shot(a, "reload-a");
});

test("live control: stop from B cancels A's run everywhere; the agent writes nothing after run_finished", async () => {
  const a = await device();
  const b = await device(a.url());
  await send(a, "list every planet in detail");
  await answerLongerThan(b, 40);
  await b.click("[data-testid=stop-button]");
  await lastRunIs(a, "cancelled", 5_000);
  await lastRunIs(b, "cancelled", 5_000);
  await new Promise((r) => setTimeout(r, 500));
  const events = await storedEvents(a);
  const end = events.findIndex((e) => e.type === "run_finished");
  assert.equal(events[end].status, "cancelled");
  assert.ok(!events.slice(end + 1).some((e) => e.type === "text_delta"), "no delta after run_finished");
  assert.deepEqual(await transcript(a), await transcript(b));
  await shot(a, "stop-from-b-a");
});

test("live control: steer from B changes the answer in A", async () => {
  const a = await device();
  const b = await device(a.url());
  await send(a, "describe mountains");
  await answerLongerThan(b, 30);
  await b.fill("[data-testid=steer-input]", "talk about volcanoes");
  await b.click("[data-testid=steer-button]");
  await waitFor(a, () => {
    const runs = document.querySelectorAll('[data-testid=message][data-role=assistant] [data-testid=run-text]');
    return runs[runs.length - 1]?.textContent.includes("volcanoes");
  });
  await waitFor(a, () => document.querySelector("[data-testid=steer-note]")?.textContent.includes("steered"));
  await lastRunIs(a, "completed");
  const text = await answer(a);
  assert.ok(text.indexOf("Changing course") > 0, "the answer changed direction mid-way");
  await shot(a, "steer-from-b-a");
});

test("multi-agent: every sub-agent's lane fills in both tabs", async () => {
  const a = await device();
  const b = await device(a.url());
  await send(a, "plan a product launch", { team: true });
  await lastRunIs(a, "completed");
  await lastRunIs(b, "completed");
  const lanes = await a.$$eval("[data-testid=lane]", (els) => els.map((e) => [e.dataset.agent, e.querySelector("[data-testid=lane-text]").textContent.length]));
  assert.deepEqual(lanes.map(([agent]) => agent).sort(), ["analyst", "researcher", "writer"]);
  assert.ok(lanes.every(([, len]) => len > 20), `every lane has text: ${JSON.stringify(lanes)}`);
  assert.deepEqual(await transcript(b), await transcript(a));
  await shot(a, "multi-agent-a");
});
