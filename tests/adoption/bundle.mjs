// Bundles the adoption pages (and the package's examples) with esbuild the
// way an app's bundler would: `durable-sessions` resolved through the built
// package's `exports` (sdk/pkg), React and the AI SDK from node_modules,
// React in development mode (StrictMode's extra mount and unmount only happen
// there). Writes tests/adoption/dist: each page's bundle, its HTML, and the
// Wasm next to them (where `init()` looks for it).
//   node tests/adoption/bundle.mjs   (or import { bundle })
import { build } from "esbuild";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const dist = join(root, "tests", "adoption", "dist");

/** The page bundles, by name. */
export const PAGES = ["react-page", "chat-page"];

/**
 * Bundles `entries` ({ name: path }) into `outdir` with the package installed
 * as an app would have it. Returns esbuild's metafile.
 */
export async function bundleEntries(entries, outdir, { minify = false, production = false } = {}) {
  // A node_modules of one package, the built one, so that "durable-sessions"
  // and its subpaths resolve through sdk/pkg/package.json's `exports`.
  const modules = mkdtempSync(join(tmpdir(), "durable-sessions-modules-"));
  try {
    symlinkSync(join(root, "sdk", "pkg"), join(modules, "durable-sessions"), "dir");
    const result = await build({
      entryPoints: entries,
      outdir,
      bundle: true,
      format: "esm",
      target: "es2022",
      platform: "browser",
      jsx: "automatic",
      minify,
      nodePaths: [modules, join(root, "node_modules")],
      define: { "process.env.NODE_ENV": JSON.stringify(production ? "production" : "development") },
      logLevel: "warning",
      metafile: true,
    });
    return result.metafile;
  } finally {
    rmSync(modules, { recursive: true, force: true });
  }
}

/** Builds tests/adoption/dist. */
export async function bundle() {
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(dist, { recursive: true });
  const entries = Object.fromEntries(PAGES.map((p) => [p, join(root, "tests", "adoption", `${p}.tsx`)]));
  await bundleEntries(entries, dist);
  copyFileSync(join(root, "sdk", "pkg", "durable_sessions_bg.wasm"), join(dist, "durable_sessions_bg.wasm"));
  for (const page of PAGES) {
    writeFileSync(
      join(dist, `${page}.html`),
      `<!doctype html>\n<meta charset="utf-8">\n<title>${page}</title>\n<div id="root"></div>\n<script type="module" src="./${page}.js"></script>\n`,
    );
  }
  return dist;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await bundle();
  console.log(`bundled into ${dist}`);
}
