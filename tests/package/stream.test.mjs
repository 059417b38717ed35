// client.stream(path) in Chromium, over WebSocket and HTTP: a JSON, a text
// and a binary stream (any Durable Streams path, not a session) — appends,
// delivery with offsets, storage across a reload (the stored messages come
// back first, with their offsets, then the subscription resumes: nothing
// twice), and what the server stored, read back over plain HTTP.
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

async function stored(path) {
  const res = await fetch(`${server.url}/v1/stream/${path}?offset=-1`);
  assert.equal(res.status, 200, path);
  return { type: res.headers.get("content-type"), body: Buffer.from(await res.arrayBuffer()) };
}

for (const transport of ["websocket", "http"]) {
  test(`${transport}: JSON, text and binary streams — append, deliver with offsets, restore after a reload without duplicates`, async () => {
    const id = `${transport}-${Date.now()}`;
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const url = `${files.url}/tests/package/stream.html?server=${encodeURIComponent(server.url)}&transport=${transport}&id=${id}`;
    await page.goto(`${url}&phase=write`);
    await page.waitForFunction(() => window.__stream !== undefined, null, { timeout: 30_000 });
    const first = await page.evaluate(() => window.__stream);
    assert.equal(first.error, undefined, first.error);
    assert.deepEqual(first.restored, { json: 0, text: 0, bytes: 0 });
    assert.deepEqual(first.json.map((m) => m.data), [1, { a: "b" }, [1, 2], "s"], "JSON values, an array as one message");
    assert.equal(first.text.map((m) => m.data).join(""), "hello\nwörld");
    assert.deepEqual(first.bytes.flatMap((m) => m.data), [0, 1, 2, 255, 128]);
    // Offsets never go back (over HTTP the messages of one response share
    // its end offset, the only one the response names).
    for (const list of [first.json, first.text, first.bytes]) {
      assert.ok(list.every((m, i) => i === 0 || m.offset >= list[i - 1].offset), "offsets never go back");
      if (transport === "websocket") assert.ok(list.every((m, i) => i === 0 || m.offset > list[i - 1].offset), "offsets increase");
    }
    assert.equal(first.acks, 8);
    assert.equal(first.duplicates, 0);
    assert.deepEqual(first.badAppends, ["invalid_event", "invalid_event", "invalid_event"]);
    assert.equal(first.missing, "not_found", "a stream opened without contentType must exist");
    assert.equal(first.missingSynced, "not_found");

    // What the server stored, with the streams' own content types.
    const json = await stored(`raw/${id}/json`);
    assert.match(json.type, /^application\/json/);
    assert.deepEqual(JSON.parse(json.body.toString()), [1, { a: "b" }, [1, 2], "s"]);
    const text = await stored(`raw/${id}/text`);
    assert.match(text.type, /^text\/plain/);
    assert.equal(text.body.toString(), "hello\nwörld");
    const bin = await stored(`raw/${id}/bin`);
    assert.equal(bin.type, "application/octet-stream");
    assert.deepEqual([...bin.body], [0, 1, 2, 255, 128]);

    // A reload: the stored messages come back first, with their offsets,
    // and the subscription resumes after them — nothing twice.
    await page.goto(url);
    await page.waitForFunction(() => window.__stream !== undefined, null, { timeout: 30_000 });
    const again = await page.evaluate(() => window.__stream);
    assert.equal(again.error, undefined, again.error);
    assert.deepEqual(again.restored, { json: first.json.length, text: first.text.length, bytes: first.bytes.length });
    assert.deepEqual(again.json, first.json);
    assert.deepEqual(again.text, first.text);
    assert.deepEqual(again.bytes, first.bytes);
    assert.deepEqual(again.offsets, first.offsets);
    assert.deepEqual(errors, []);
    await context.close();
  });
}
