// docs/security.md's Node example, run as it stands in the document: the
// token it mints is accepted by a real server with the same key, and grants
// exactly what it says (one session; nothing elsewhere).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startServer } from "../support/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const doc = readFileSync(join(here, "..", "..", "docs", "security.md"), "utf8");

/** The first ```js block after the heading that starts with `heading`. */
function codeBlockAfter(heading) {
  const at = doc.indexOf(`\n${heading}`);
  assert.ok(at >= 0, `docs/security.md has a section "${heading}"`);
  const m = /```js\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(m, `a js block follows "${heading}"`);
  return m[1];
}

let server, keyDir, mintToken;
const secretText = randomBytes(32).toString("base64");

before(async () => {
  keyDir = mkdtempSync(join(tmpdir(), "durable-docs-"));
  writeFileSync(join(keyDir, "key"), secretText);
  server = await startServer({ args: ["--auth", "jwt", "--jwt-key", `hs256:app-1:file:${join(keyDir, "key")}`] });
  // The example imports "jose": run it from inside the project so it resolves.
  const file = join(here, `.docs-example-${process.pid}.mjs`);
  writeFileSync(file, codeBlockAfter("### Node"));
  try {
    ({ mintToken } = await import(pathToFileURL(file).href));
  } finally {
    rmSync(file, { force: true });
  }
});

after(async () => {
  await server?.stop();
  rmSync(keyDir, { recursive: true, force: true });
});

const call = (path, token, init = {}) =>
  fetch(`${server.url}/v1/stream/${path}`, {
    ...init,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...init.headers },
  });

test("the Node example's token is accepted for its session and nothing else", async () => {
  const secret = new TextEncoder().encode(secretText);
  const token = await mintToken({ secret, kid: "app-1", sub: "user-42", sessionId: "docs" });
  assert.equal((await call("sessions/docs", token, { method: "PUT" })).status, 201);
  const sent = await call("sessions/docs", token, {
    method: "POST",
    body: JSON.stringify({ type: "user_message", id: "m1", text: "hi" }),
  });
  assert.equal(sent.status, 204);
  const read = await call("sessions/docs?offset=-1", token);
  assert.equal(read.status, 200);
  assert.deepEqual(await read.json(), [{ author: "user-42", type: "user_message", id: "m1", text: "hi" }]);
  assert.equal((await call("sessions/other?offset=-1", token)).status, 403);
  assert.equal((await call("sessions/docs", token, { method: "DELETE" })).status, 403);
  // The same token signed with another key is refused.
  const forged = await mintToken({ secret: new TextEncoder().encode("x".repeat(40)), kid: "app-1", sub: "user-42", sessionId: "docs" });
  assert.equal((await call("sessions/docs?offset=-1", forged)).status, 401);
});
