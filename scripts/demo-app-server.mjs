// The demo's app backend: it serves the built demo page (target/demo) and a
// token endpoint, the shape an app's own backend has. The page asks
// GET /token?session=ID and gets a short-lived JWT scoped to that one
// session, for this visitor (a cookie), plus the durable-session server's
// URL (`server`) and, for several nodes on one Redis, every node's URL in
// order (`servers`: the page fails over along it). The durable-session
// server only verifies the tokens (docs/security.md).
//
//   node scripts/demo-app-server.mjs --port 8080 --api-port 8081[,8082…] \
//     --key-file .data/dev-hs256.key --kid dev [--host 127.0.0.1] [--static target/demo]
//
// Prints "app listening on http://HOST:PORT" once ready. Importable too:
// startAppServer({...}) resolves to { url, close }.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { extname, join, normalize, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { SignJWT } from "jose";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
};

// The rights a visitor gets on the session they opened: read it, write
// messages, stop and steer runs, create it. Not `delete`, not `agent`.
const VISITOR_RIGHTS = ["read", "append", "control", "create"];

/**
 * Mints a token for `sub` on one session with the HS256 `secret` (a
 * Uint8Array) under key id `kid`, valid for `ttlSeconds`.
 */
export async function mintSessionToken({ secret, kid, sub, sessionId, ttlSeconds }) {
  return new SignJWT({ grants: [{ path: `sessions/${sessionId}`, rights: VISITOR_RIGHTS }] })
    .setProtectedHeader({ alg: "HS256", kid })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(secret);
}

/** Session ids the demo hands out tokens for: one path segment, bounded. */
const validSessionId = (id) => typeof id === "string" && id.length > 0 && id.length <= 128 && !id.includes("/");

function visitorOf(req) {
  const m = /(?:^|;\s*)visitor=(guest-[0-9a-f]{12})(?:;|$)/.exec(req.headers.cookie ?? "");
  return m?.[1];
}

/**
 * Starts the app server.
 * @param {{ port?: number, host?: string, staticDir?: string, secret: Uint8Array, kid: string,
 *   api: string | string[] | (() => string | string[]) | { port: number | number[] }, ttlSeconds?: number }} options
 *   `api` is the durable-session server's URL (or its nodes' URLs, in order), or `{ port }`
 *   (one port or the nodes' ports) to use the page's own host name.
 */
export function startAppServer(options) {
  const staticDir = options.staticDir ?? join(root, "target", "demo");
  const ttlSeconds = options.ttlSeconds ?? 600;
  // The durable-session nodes for this request, in order.
  const apiFor = (req) => {
    const api = typeof options.api === "function" ? options.api() : options.api;
    if (typeof api === "string" || Array.isArray(api)) return [api].flat();
    const host = (req.headers.host ?? "127.0.0.1").replace(/:\d+$/, "");
    return [api.port].flat().map((port) => `http://${host}:${port}`);
  };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://app");
    if (url.pathname === "/token") {
      const sessionId = url.searchParams.get("session");
      if (!validSessionId(sessionId)) {
        res.writeHead(400, { "content-type": "text/plain" }).end("session must be one path segment\n");
        return;
      }
      // A real app knows who is signed in; the demo gives each browser a
      // visitor id in a cookie.
      let sub = visitorOf(req);
      const headers = { "content-type": "application/json", "cache-control": "no-store" };
      if (!sub) {
        sub = `guest-${randomBytes(6).toString("hex")}`;
        headers["set-cookie"] = `visitor=${sub}; Path=/; HttpOnly; SameSite=Strict`;
      }
      const token = await mintSessionToken({ secret: options.secret, kid: options.kid, sub, sessionId, ttlSeconds });
      const servers = apiFor(req);
      res.writeHead(200, headers).end(JSON.stringify({ token, sub, server: servers[0], servers }));
      return;
    }
    let path = normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, "");
    if (path.endsWith("/")) path += "index.html";
    try {
      const body = await readFile(join(staticDir, path));
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      const { port } = server.address();
      const host = options.host && options.host !== "0.0.0.0" ? options.host : "127.0.0.1";
      resolve({ url: `http://${host}:${port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  // The same bytes the durable-session server reads from the file: trimmed.
  const secret = new TextEncoder().encode(readFileSync(arg("key-file"), "utf8").trim());
  const app = await startAppServer({
    port: Number(arg("port", "8080")),
    host: arg("host", "127.0.0.1"),
    staticDir: arg("static", undefined),
    secret,
    kid: arg("kid", "dev"),
    api: { port: arg("api-port", "8081").split(",").map(Number) },
    ttlSeconds: Number(arg("ttl", "600")),
  });
  console.log(`app listening on ${app.url}`);
}
