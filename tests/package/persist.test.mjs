// The npm package's persistence in Chromium (tests/package/persist.html):
// sessions kept in IndexedDB, written incrementally and within limits, the
// durable outbox (an append made offline survives a reload and is stored
// exactly once), and storage failures reported while the session keeps
// working.
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
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await files?.close();
  await server?.stop();
});

const uid = (name) => `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

/** The server's log of session `id`: every event, in order. */
async function serverLog(id) {
  const res = await fetch(`${server.url}/v1/stream/sessions/${encodeURIComponent(id)}?offset=-1`);
  return res.status === 404 ? [] : res.json();
}

/** Appends `events` to session `id` in one request (one batch for readers). */
async function post(id, events) {
  const res = await fetch(`${server.url}/v1/stream/sessions/${encodeURIComponent(id)}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
  });
  assert.ok(res.ok || res.status === 409 || res.status === 200, `create: ${res.status}`);
  const appended = await fetch(`${server.url}/v1/stream/sessions/${encodeURIComponent(id)}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(events),
  });
  assert.ok(appended.ok, `append: ${appended.status}`);
}

/** `n` note events of equal size. */
const notes = (n, from = 0) =>
  Array.from({ length: n }, (_, i) => ({ type: "note", n: String(from + i).padStart(6, "0"), text: "x".repeat(40) }));

/**
 * A page of its own browser context (its own IndexedDB) on persist.html.
 * Its WebSocket to the server goes through a relay the test controls:
 * `net.mode = "online"` forwards both ways; `"offline"` silences the open
 * socket and answers nothing — what Chromium's offline emulation does to an
 * open WebSocket (docs: DESIGN.md), done here in the relay because that
 * emulation does not apply to a relayed socket — and keeps the page's
 * files reachable, so it can reload as an installed app would.
 * `net.online()` goes online and closes the sockets that lost frames (a
 * dead link ends in a reset sooner or later; the SDK then reconnects).
 * `net.loseAcks()`: the sockets open now never deliver an acknowledgement
 * again (new sockets do).
 */
async function openPage(context) {
  const page = await (context ?? (await browser.newContext())).newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  const net = { mode: "online", appends: [], sockets: [] };
  await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const link = { ws, lossy: net.mode !== "online" };
    net.sockets.push(link);
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      if (String(m).includes('"op":"append"')) net.appends.push(JSON.parse(m));
      if (net.mode === "offline" || link.lossy) return void (link.lossy = true);
      upstream.send(m);
    });
    upstream.onMessage((m) => {
      if (net.mode === "offline" || link.lossy) return void (link.lossy = true);
      if (link.loseAcks && String(m).includes('"op":"ack"')) return;
      ws.send(m);
    });
  });
  net.loseAcks = () => net.sockets.forEach((l) => (l.loseAcks = true));
  net.online = async () => {
    net.mode = "online";
    for (const link of net.sockets.filter((l) => l.lossy)) await link.ws.close().catch(() => {});
  };
  page.net = net;
  await page.goto(`${files.url}/tests/package/persist.html?server=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.t?.ready === true);
  return page;
}

/** Opens session `id` on `page` (see `t.open`) and waits until it is connected. */
async function openSession(page, id, options = {}, clientOptions = {}) {
  await page.evaluate(([id, o, c]) => void t.open(id, o, c), [id, options, clientOptions]);
  await page.waitForFunction((id) => t.sessions[id].state === "connected", id, { timeout: 15_000 });
}

/** Waits until the page's stored outbox holds `n` appends. */
async function pendingCount(page, n, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const dump = await page.evaluate(() => t.dump());
    if ((dump?.outbox.length ?? 0) === n) return;
    if (Date.now() > deadline) throw new Error(`the stored outbox holds ${dump?.outbox.length}, not ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const waitEvents = (page, id, n, timeout = 15_000) =>
  page.waitForFunction(([id, n]) => t.view(id).received >= n, [id, n], { timeout });

/** The chat view of a fresh page that keeps nothing: the reference. */
async function freshView(id) {
  const page = await openPage();
  await openSession(page, id, { persist: false });
  const n = (await serverLog(id)).length;
  await waitEvents(page, id, n);
  const view = await page.evaluate((id) => t.view(id), id);
  await page.context().close();
  return view;
}

test("offline send, reload, online: the message is kept across the reload and stored exactly once", async () => {
  const id = uid("pkg-offline");
  await post(id, notes(3));
  const page = await openPage();
  const heartbeat = { heartbeatTimeoutMs: 1500, pingIntervalMs: 500 };
  await openSession(page, id, {}, heartbeat);
  await waitEvents(page, id, 3);

  // The network goes away (the socket stays open, silent); the user sends.
  page.net.mode = "offline";
  await page.evaluate((id) => void t.sessions[id].session.send("typed while offline").catch(() => {}), id);
  await pendingCount(page, 1);
  const [[, kept]] = (await page.evaluate(() => t.dump())).outbox;
  const [order, epoch, seq, producer] = kept.split(" ");
  assert.ok(Number(order) > 0);
  assert.deepEqual([epoch, seq], ["0", "0"], "stored with its producer epoch and seq");
  assert.equal((await serverLog(id)).length, 3, "nothing reached the server");

  // Reload while the server is still unreachable (through a few
  // reconnects: heartbeat timeouts of 1.5 s): the transcript comes back
  // from storage, the kept append waits.
  await page.reload();
  await page.waitForFunction(() => window.t?.ready === true);
  const before = page.net.appends.length;
  await page.evaluate(([id, c]) => void t.open(id, {}, c), [id, heartbeat]);
  // `session.ready`: the stored state has been read.
  assert.equal(await page.evaluate((id) => t.sessions[id].session.ready.then(() => t.view(id).received), id), 3, "transcript restored from storage");
  await new Promise((r) => setTimeout(r, 3_500));
  assert.equal((await serverLog(id)).length, 3, "still nothing on the server");

  // Online: sent with the producer ids it was stored with, stored once,
  // and forgotten.
  await page.net.online();
  await waitEvents(page, id, 4);
  await pendingCount(page, 0);
  await new Promise((r) => setTimeout(r, 500));
  const resent = page.net.appends.slice(before);
  assert.ok(resent.length >= 1);
  for (const frame of resent) {
    assert.deepEqual(frame.producer, { id: producer, epoch: 0, seq: 0 });
    assert.equal(frame.data[0].text, "typed while offline");
  }
  const log = await serverLog(id);
  assert.equal(log.filter((e) => e.type === "user_message" && e.text === "typed while offline").length, 1, JSON.stringify(log));
  assert.equal(log.length, 4);
  assert.deepEqual(await page.evaluate((id) => t.view(id), id), await freshView(id));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("over HTTP too: a message sent while the server is unreachable survives a reload and is stored once", async () => {
  const id = uid("pkg-offline-http");
  const page = await openPage();
  const http = { transport: "http" };
  await openSession(page, id, {}, http);
  await page.evaluate((id) => t.sessions[id].session.send("before"), id);
  await waitEvents(page, id, 1);
  // Every request to the server fails (the page's own files still load).
  await page.route(`${server.url}/**`, (route) => route.abort("internetdisconnected"));
  await page.evaluate((id) => void t.sessions[id].session.send("typed while unreachable").catch(() => {}), id);
  await pendingCount(page, 1);
  await page.reload();
  await page.waitForFunction(() => window.t?.ready === true);
  await page.evaluate(([id, c]) => void t.open(id, {}, c), [id, http]);
  await page.evaluate((id) => t.sessions[id].session.ready, id);
  assert.equal((await page.evaluate((id) => t.view(id), id)).received, 1, "restored");
  await new Promise((r) => setTimeout(r, 1_000));
  assert.equal((await serverLog(id)).length, 1, "not delivered while unreachable");
  await page.unroute(`${server.url}/**`);
  await waitEvents(page, id, 2, 20_000);
  await pendingCount(page, 0);
  const log = await serverLog(id);
  assert.deepEqual(
    log.map((e) => e.text),
    ["before", "typed while unreachable"],
  );
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the acknowledgement is lost and the page reloads: the kept append is resent with the same ids, acknowledged as a duplicate, stored once", async () => {
  const id = uid("pkg-lost-ack");
  await post(id, notes(1));
  const page = await openPage();
  await openSession(page, id);
  await waitEvents(page, id, 1);
  page.net.loseAcks();
  await page.evaluate((id) => void t.sessions[id].session.send("sent, ack lost").catch(() => {}), id);
  // The server stored it; the page never heard back, so it keeps it.
  for (let i = 0; i < 100 && (await serverLog(id)).length === 1; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal((await serverLog(id)).length, 2);
  await waitEvents(page, id, 2);
  assert.equal((await page.evaluate(() => t.dump())).outbox.length, 1, "kept until acknowledged");

  await page.reload();
  await page.waitForFunction(() => window.t?.ready === true);
  await openSession(page, id);
  await pendingCount(page, 0);
  const [first, again] = page.net.appends.filter((f) => f.data?.[0]?.text === "sent, ack lost");
  assert.deepEqual(again.producer, first.producer, "the same producer ids after the reload");
  const log = await serverLog(id);
  assert.equal(log.filter((e) => e.text === "sent, ack lost").length, 1, JSON.stringify(log));
  // The note (an event of the app's own type, passed through) and the message, once each.
  assert.deepEqual((await page.evaluate((id) => t.view(id), id)).items.map((i) => i.kind), ["event", "user"]);
  assert.equal((await page.evaluate((id) => t.view(id), id)).received, 2);
  await page.context().close();
});

test("storage quota exceeded (simulated): the error reaches the app, the session keeps working, what was stored stays valid", async () => {
  const id = uid("pkg-quota");
  await post(id, notes(5));
  const page = await openPage();
  await openSession(page, id);
  await waitEvents(page, id, 5);
  await page.evaluate(() => t.settled());
  // Every IndexedDB put now throws QuotaExceededError (see persist.html).
  await page.evaluate(() => (t.failPuts = true));
  await post(id, notes(5, 5));
  await waitEvents(page, id, 10);
  await page.waitForFunction((id) => t.sessions[id].storageErrors.length > 0, id);
  const [error] = await page.evaluate((id) => t.sessions[id].storageErrors, id);
  assert.equal(error.code, "quota_exceeded");
  assert.equal(error.name, "DurableSessionError");
  assert.match(error.message, /QuotaExceededError/);

  // Still live: events keep arriving, sends are stored by the server.
  await post(id, notes(2, 10));
  await waitEvents(page, id, 12);
  const sent = await page.evaluate((id) => t.sessions[id].session.send("still working"), id);
  assert.equal(sent.duplicate, false);
  await waitEvents(page, id, 13);
  assert.deepEqual(await page.evaluate(() => t.localStorageWrites), 0, "no fallback to localStorage");

  // After a reload (storage healthy again) the stored prefix is restored
  // and the rest comes from the server: no gap, no duplicate.
  await page.reload();
  await page.waitForFunction(() => window.t?.ready === true);
  await openSession(page, id);
  await waitEvents(page, id, 13);
  const view = await page.evaluate((id) => t.view(id), id);
  assert.deepEqual(view, await freshView(id));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a full disk at load (simulated): the session still comes back and its kept message is still delivered, once", async () => {
  const id = uid("pkg-full-at-load");
  await post(id, notes(2));
  const page = await openPage();
  await openSession(page, id);
  await waitEvents(page, id, 2);
  page.net.mode = "offline";
  await page.evaluate((id) => void t.sessions[id].session.send("kept, then the disk filled up").catch(() => {}), id);
  await pendingCount(page, 1);

  // Next load: every put fails from the start (reading and deleting work).
  await page.goto(`${page.url()}&full`);
  await page.waitForFunction(() => window.t?.ready === true && t.failPuts);
  await page.net.online();
  await page.evaluate((id) => void t.open(id), id);
  await page.evaluate((id) => t.sessions[id].session.ready, id);
  assert.equal((await page.evaluate((id) => t.view(id), id)).received, 2, "restored from storage");
  await waitEvents(page, id, 3);
  await page.waitForFunction((id) => t.sessions[id].storageErrors.length > 0, id);
  assert.equal((await page.evaluate((id) => t.sessions[id].storageErrors[0].code, id)), "quota_exceeded");
  await pendingCount(page, 0);
  const log = await serverLog(id);
  assert.equal(log.filter((e) => e.text === "kept, then the disk filled up").length, 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("incremental: the records and bytes written per batch do not grow with the session", async () => {
  const perBatch = {};
  for (const length of [100, 2_000]) {
    const id = uid(`pkg-incr-${length}`).padEnd(40, "x");
    for (let i = 0; i < length; i += 500) await post(id, notes(Math.min(500, length - i), i));
    const page = await openPage();
    await openSession(page, id);
    await waitEvents(page, id, length, 30_000);
    await page.evaluate(() => t.settled(200));
    const runs = [];
    for (let batch = 0; batch < 5; batch++) {
      const before = await page.evaluate(() => structuredClone(t.stats));
      await post(id, notes(10, length + batch * 10));
      await waitEvents(page, id, length + (batch + 1) * 10);
      await page.evaluate(() => t.settled(50));
      const after = await page.evaluate(() => t.stats);
      runs.push({ puts: after.puts - before.puts, bytes: after.bytes - before.bytes });
    }
    perBatch[length] = runs;
    await page.context().close();
  }
  const small = perBatch[100];
  const large = perBatch[2_000];
  for (const run of [...small, ...large]) assert.equal(run.puts, 1, `one record per batch: ${JSON.stringify(perBatch)}`);
  const bytes = (runs) => runs.reduce((n, r) => n + r.bytes, 0) / runs.length;
  // The same events cost the same bytes, whatever came before.
  assert.ok(Math.abs(bytes(large) - bytes(small)) <= 8, JSON.stringify(perBatch));
  assert.ok(bytes(large) < 10 * 200, `about one event's JSON per event: ${bytes(large)} bytes for 10`);
});

test("limits: at most maxSessions transcripts (least recently opened evicted), at most maxEvents per session", async () => {
  const page = await openPage();
  const ids = [uid("pkg-lru-a"), uid("pkg-lru-b"), uid("pkg-lru-c")];
  for (const id of ids) {
    await post(id, notes(4));
    await openSession(page, id, { persist: { maxSessions: 2 } });
    await waitEvents(page, id, 4);
    await page.evaluate(() => t.settled());
  }
  const stored = async () => {
    const dump = await page.evaluate(() => t.dump());
    const sessions = new Set(dump.chunks.map(([[key]]) => key.split(" sessions/")[1]));
    return { sessions, meta: dump.meta.map(([key]) => key.split(" sessions/")[1]), dump };
  };
  const { sessions, meta } = await stored();
  assert.deepEqual([...sessions].sort(), [ids[1], ids[2]].sort(), "the least recently opened was evicted");
  assert.deepEqual(meta.sort(), [ids[1], ids[2]].sort());

  // A cap of 5 events: 12 events, only a prefix of at most 5 stored.
  const capped = uid("pkg-cap");
  await post(capped, notes(3));
  await openSession(page, capped, { persist: { maxEvents: 5 } });
  await waitEvents(page, capped, 3);
  await post(capped, notes(4, 3));
  await waitEvents(page, capped, 7);
  await post(capped, notes(5, 7));
  await waitEvents(page, capped, 12);
  await page.evaluate(() => t.settled());
  const chunks = (await stored()).dump.chunks.filter(([[key]]) => key.endsWith(capped));
  const kept = chunks.reduce((n, [, v]) => n + JSON.parse(v).e.length, 0);
  assert.ok(kept > 0 && kept <= 5, `stored ${kept} events`);
  await page.context().close();

  // The stored prefix comes back after a reload; the rest from the server.
  const again = await openPage();
  await openSession(again, capped, { persist: { maxEvents: 5 } });
  await waitEvents(again, capped, 12);
  assert.deepEqual(await again.evaluate((id) => t.view(id), capped), await freshView(capped));
  await again.context().close();
});

test("clear: session.clearStorage() forgets one session and stores nothing more for it; client.clearStorage() forgets everything", async () => {
  const page = await openPage();
  const [a, b] = [uid("pkg-clear-a"), uid("pkg-clear-b")];
  for (const id of [a, b]) {
    await post(id, notes(3));
    await openSession(page, id);
    await waitEvents(page, id, 3);
  }
  await page.evaluate(() => t.settled());
  const keysOf = async (id) => {
    const dump = await page.evaluate(() => t.dump());
    return ["meta", "chunks", "outbox"].flatMap((s) => dump[s].filter(([k]) => JSON.stringify(k).includes(id)));
  };
  assert.ok((await keysOf(a)).length > 0);
  await page.evaluate((a) => t.sessions[a].session.clearStorage(), a);
  assert.deepEqual(await keysOf(a), []);
  // The session keeps working, and stores nothing more.
  await post(a, notes(2, 3));
  await waitEvents(page, a, 5);
  await page.evaluate(() => t.settled());
  assert.deepEqual(await keysOf(a), []);
  assert.ok((await keysOf(b)).length > 0, "the other session is untouched");

  await page.evaluate((b) => t.sessions[b].client.clearStorage(), b);
  const dump = await page.evaluate(() => t.dump());
  assert.deepEqual([dump.meta, dump.chunks, dump.outbox], [[], [], []]);
  await post(b, notes(1, 3));
  await waitEvents(page, b, 4);
  await page.evaluate(() => t.settled());
  assert.deepEqual(await keysOf(b), [], "nothing stored after the client cleared the storage");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
