// The built npm package (sdk/pkg) in a real browser: a page imports it as a
// plain ES module and completes a send/receive round trip with the server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../support/server.mjs";
import { serveStatic } from "../support/static.mjs";
import { launchBrowser } from "../support/browser.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let server, files, browser;

before(async () => {
  server = await startServer();
  files = await serveStatic(root);
  browser = await launchBrowser(["--js-flags=--expose-gc"]);
});

after(async () => {
  await browser?.close();
  await files?.close();
  await server?.stop();
});

test("a page imports sdk/pkg as a module and completes a round trip", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${files.url}/tests/package/page.html?server=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 20_000 });
  const result = await page.evaluate(() => window.__result);
  assert.equal(result.error, undefined, result.error);
  assert.deepEqual(errors, []);
  assert.equal(result.receivedId, result.sentId);
  assert.equal(result.text, "round trip");
  assert.match(result.offset, /^\d{16}_\d{16}$/);
  assert.equal(result.state, "connected");
  assert.equal(result.items, 1);
  assert.equal(result.iterated, "user_message", "for await … of session.events() yields the event");
});

test("clients and sessions the app keeps no reference to live until close(), not until garbage collection", async () => {
  const page = await browser.newPage();
  await page.goto(`${files.url}/tests/package/page.html?server=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 20_000 });
  const id = await page.evaluate(() => window.__detachedId);
  // Let the detached session subscribe, then collect garbage hard.
  await page.waitForTimeout(300);
  await page.evaluate(() => {
    for (let i = 0; i < 5; i++) {
      new Array(1e6).fill({ x: i });
      globalThis.gc();
    }
  });
  const res = await fetch(`${server.url}/v1/stream/sessions/${id}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "note", text: "after gc" }),
  });
  assert.ok(res.ok);
  await page.waitForFunction(() => window.__detached.includes("note"), null, { timeout: 10_000 });
});
