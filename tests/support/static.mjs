// A minimal static file server on loopback for test pages.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { copyFileSync, cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css",
};

/** Serves files under `root`; resolves to { url, close }. */
export function serveStatic(root) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(root, path));
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

/**
 * A test page beside a private copy of the npm package (`SDK_PKG`, default
 * sdk/pkg, as `pkg/`), served from a temp dir; resolves to
 * { url, close } (close also removes the dir).
 */
export async function servePageWithPackage(root, page, label) {
  const pkg = process.env.SDK_PKG ?? join(root, "sdk", "pkg");
  if (!existsSync(join(pkg, "durable_sessions.js"))) {
    throw new Error(`npm package not found at ${pkg}: run 'bash scripts/build-sdk.sh' first`);
  }
  const dir = mkdtempSync(join(tmpdir(), `durable-${label}-web-`));
  cpSync(pkg, join(dir, "pkg"), { recursive: true });
  copyFileSync(page, join(dir, "page.html"));
  const files = await serveStatic(dir);
  return {
    url: files.url,
    close: async () => {
      await files.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
