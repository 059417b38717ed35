// The built npm package (sdk/pkg) in a real browser: a page imports it as a
// plain ES module and completes a send/receive round trip with the server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { randomBytes } from "node:crypto";
import { startServer } from "../support/server.mjs";
import { serveStatic } from "../support/static.mjs";
import { launchBrowser } from "../support/browser.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let server, authServer, files, browser;
const keyDir = mkdtempSync(join(tmpdir(), "durable-session-key-"));

before(async () => {
  server = await startServer();
  // The same server with access control on (a random HS256 secret).
  writeFileSync(join(keyDir, "test.key"), randomBytes(32).toString("base64"));
  authServer = await startServer({
    args: ["--auth", "jwt", "--jwt-key", `hs256:test:file:${join(keyDir, "test.key")}`, "--test-hooks", "--allow-origin", "*"],
  });
  files = await serveStatic(root);
  browser = await launchBrowser(["--js-flags=--expose-gc"]);
});

after(async () => {
  await browser?.close();
  await files?.close();
  await server?.stop();
  await authServer?.stop();
  rmSync(keyDir, { recursive: true, force: true });
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

test("the token option: a function refreshed on the live socket, a string, forbidden and token_failed as typed errors", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${files.url}/tests/package/auth.html?server=${encodeURIComponent(authServer.url)}`);
  await page.waitForFunction(() => window.__auth !== undefined, null, { timeout: 40_000 });
  const r = await page.evaluate(() => window.__auth);
  assert.equal(r.error, undefined, r.error);
  assert.deepEqual(errors, []);
  assert.ok(r.calls >= 2, `refreshed: ${r.calls} calls`);
  assert.deepEqual(r.states, ["connected"], "a refresh never reconnects");
  assert.ok(r.events.includes("user_message") && r.events.includes("note"));
  assert.equal(r.forbidden.name, "DurableSessionError");
  assert.equal(r.forbidden.code, "forbidden");
  assert.equal(r.forbiddenChange.code, "forbidden");
  assert.match(r.forbiddenChange.message, /^sessions\/pkg-auth-/);
  assert.deepEqual(r.tokenFailed, { code: "token_failed", message: "not signed in" });
  assert.equal(r.tokenFailedReason, "token_failed: not signed in");
  assert.notEqual(r.failingState, "connected");
  assert.equal(r.badOption, "invalid_argument");
  assert.deepEqual(r.badUrls, ["invalid_argument", "invalid_argument"]);
  assert.ok(r.failover.connected, `moved to the second node: ${JSON.stringify(r.failover.seen)}`);
  assert.ok(r.failover.seen.includes("disconnected"), `the first node failed first: ${JSON.stringify(r.failover.seen)}`);
});

for (const transport of ["websocket", "http"]) {
  test(`${transport}: 3-second tokens are refreshed while an answer streams: no gap, no duplicate, no reconnect`, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(
      `${files.url}/tests/package/refresh.html?server=${encodeURIComponent(authServer.url)}&transport=${transport}`,
    );
    await page.waitForFunction(() => window.__refresh !== undefined, null, { timeout: 60_000 });
    const r = await page.evaluate(() => window.__refresh);
    assert.equal(r.error, undefined, r.error);
    assert.deepEqual(errors, []);
    // 8 s of deltas, as fast as the machine allows (about 100 when idle).
    assert.ok(r.deltas >= 40, `an answer of ${r.deltas} deltas`);
    // ~8 s of 3 s tokens: at least two refreshes after the first token.
    assert.ok(r.readerTokens >= 3, `token function called ${r.readerTokens} times`);
    assert.deepEqual(r.deliveredEvents, r.stored, "the reader got exactly the server's log");
    assert.ok(r.offsets.every((o, i) => i === 0 || o >= r.offsets[i - 1]), "offsets never go back");
    assert.ok(!r.readerStates.includes("disconnected"), `states: ${r.readerStates}`);
    if (transport === "websocket") {
      // Two clients, one socket each: a refresh never reconnects.
      assert.equal(r.socketsOpened, 2);
    }
  });
}
