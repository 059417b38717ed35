// Failover in headless Chromium (issue 13): one real redis-server, two real
// server nodes on it (A and B), the demo agent on node B. Tab 1 opens the
// session with url [A, B], tab 2 with node B only (separate browser
// contexts). Tab 1 sends a message; once it shows the first text_delta,
// node A is SIGKILLed mid-answer. Tab 1 must move to node B by itself; when
// the run has finished, each tab's (offset, event) list equals the log read
// over HTTP from node B — no gap, no duplicate, every offset right — and
// tab 2, which never left node B, saw the whole answer live.
//
// Both transports run (WebSocket and HTTP). SERVER_BIN / AGENT_BIN pick the
// binaries (default target/debug/…), SDK_PKG the npm package (default
// sdk/pkg; copied at start).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { launchBrowser } from "../support/browser.mjs";
import { servePageWithPackage } from "../support/static.mjs";
import { startServer } from "../support/server.mjs";
import { startRedis } from "../support/redis.mjs";
import { readLog, verifyOffsets } from "../support/log.mjs";
import { checkEvents, checkRuns, offsetClaims } from "../chaos/checks.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const TOKENS_PER_SECOND = 20;
const ANSWER_TOKENS = 60;
/** Bound of every wait: the answer takes 3 s. */
const WAIT_MS = 20_000;

let browser, files;

before(async () => {
  files = await servePageWithPackage(root, join(here, "page.html"), "failover");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await files?.close();
});

/** The demo agent on `server`; resolves to a function that stops it. */
function startAgent(server) {
  const bin = process.env.AGENT_BIN ?? join(root, "target", "debug", "durable-session-agent");
  const agent = spawn(bin, ["--server", server, "--tokens-per-second", String(TOKENS_PER_SECOND), "--answer-tokens", String(ANSWER_TOKENS)], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  return async () => {
    if (agent.exitCode === null && agent.signalCode === null) {
      const gone = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGTERM");
      await gone;
    }
  };
}

/** A tab in its own browser context, connected to the first of `servers`. */
async function openTab({ servers, transport, session, author }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.pageErrors = [];
  page.on("pageerror", (e) => page.pageErrors.push(String(e)));
  const query = new URLSearchParams({ servers: servers.join(","), transport, session, author });
  await page.goto(`${files.url}/page.html?${query}`);
  await page.waitForFunction(() => window.ready || window.fatal, null, { timeout: WAIT_MS });
  const fatal = await page.evaluate(() => window.fatal);
  if (fatal) throw new Error(`${author}: ${fatal}`);
  await page.waitForFunction(() => window.client.state === "connected", null, { timeout: WAIT_MS });
  return page;
}

const record = (page) => page.evaluate(() => ({ delivered: window.delivered, states: window.states, errors: window.errors }));

for (const transport of ["websocket", "http"]) {
  test(`${transport}: node A is SIGKILLed mid-answer; tab 1 fails over to B by itself and equals the log; tab 2 on B saw it all live`, async () => {
    const redis = await startRedis();
    const cleanup = [redis.stop];
    try {
      const a = await startServer({ args: ["--store", redis.url] });
      cleanup.unshift(a.stop);
      const b = await startServer({ args: ["--store", redis.url] });
      cleanup.unshift(b.stop);
      cleanup.unshift(startAgent(b.url));
      const session = `failover-${transport}-${Date.now()}`;
      const tab1 = await openTab({ servers: [a.url, b.url], transport, session, author: "tab-1" });
      cleanup.unshift(() => tab1.context().close());
      const tab2 = await openTab({ servers: [b.url], transport, session, author: "tab-2" });
      cleanup.unshift(() => tab2.context().close());

      await tab1.evaluate(() => window.session.send("tell me about failover"));
      await tab1.waitForFunction(() => window.delivered.some(([, e]) => e.type === "text_delta"), null, { timeout: WAIT_MS });
      // What tab 1 had just before A died (its states from then on must
      // show the loss).
      const atKill = await record(tab1);
      await a.kill();
      assert.ok(!atKill.delivered.some(([, e]) => e.type === "run_finished"), "the answer was still streaming when A died");

      const finished = () => window.delivered.some(([, e]) => e.type === "run_finished");
      await tab1.waitForFunction(finished, null, { timeout: WAIT_MS });
      await tab2.waitForFunction(finished, null, { timeout: WAIT_MS });
      const log = (await readLog(b.url, session)).events;
      const one = await record(tab1);
      const two = await record(tab2);

      // Tab 1 was on A: it lost its connection when A died and came back
      // (on B, the only node left) by itself.
      const since = one.states.slice(atKill.states.length).map((s) => s.state);
      assert.ok(since.some((s) => s !== "connected"), `tab 1 noticed A die: ${since}`);
      assert.equal(await tab1.evaluate(() => window.client.state), "connected");
      // Tab 2 never left B: what it shows arrived live.
      assert.deepEqual(two.states.slice(1).filter((s) => s.state !== "connected"), [], "tab 2 stayed connected");

      const perEvent = transport === "websocket";
      const problems = [...checkRuns(log)];
      const claims = new Map();
      for (const [label, r] of [["tab 1", one], ["tab 2", two]]) {
        problems.push(...checkEvents(label, r.delivered, log));
        const oc = offsetClaims(label, r.delivered, { perEvent });
        problems.push(...oc.problems);
        claims.set(label, oc.claims);
      }
      problems.push(...(await verifyOffsets(b.url, session, log.length, claims)));
      assert.deepEqual(problems, []);
      const deltas = log.filter((e) => e.type === "text_delta").length;
      assert.equal(deltas, ANSWER_TOKENS, "every token of the answer once");
      assert.equal(log.at(-1).status, "completed");
      assert.deepEqual([...one.errors, ...two.errors, ...tab1.pageErrors, ...tab2.pageErrors], []);
      const shown = atKill.delivered.filter(([, e]) => e.type === "text_delta").length;
      console.log(`# ${transport}: A killed after ${shown} of ${ANSWER_TOKENS} deltas; tab 1 went ${since.join(" → ")}; both tabs equal the log (${log.length} events)`);
    } finally {
      for (const step of cleanup) await step();
    }
  });
}
