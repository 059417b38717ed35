// Prints what a browser downloads for each entry point of the npm package,
// raw and gzip: the core (`durable-sessions`: the Wasm plus its JS glue),
// and the React and AI SDK bindings (their own code only: React and the AI
// SDK are the app's own dependencies, and an app that does not import a
// binding ships none of it). Builds the package first if it is missing.
import { readFileSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";

const pkg = "sdk/pkg";
const entries = [
  ["durable-sessions", ["durable_sessions_bg.wasm", "durable_sessions.js"]],
  ["durable-sessions/react", ["react.js"]],
  ["durable-sessions/ai-sdk", ["ai-sdk.js"]],
];
if (!entries.flatMap(([, files]) => files).every((f) => existsSync(`${pkg}/${f}`))) {
  execFileSync("bash", ["scripts/build-sdk.sh"], { stdio: "inherit" });
}
const row = (name, raw, gz) =>
  console.log(`${name.padEnd(34)} ${String(raw).padStart(8)} B raw ${String(gz).padStart(8)} B gzip = ${(gz / 1024).toFixed(1)} KiB`);
for (const [entry, files] of entries) {
  let raw = 0;
  let gz = 0;
  for (const f of files) {
    const bytes = readFileSync(`${pkg}/${f}`);
    const zipped = gzipSync(bytes, { level: 9 }).length;
    raw += bytes.length;
    gz += zipped;
    if (files.length > 1) row(`  ${f}`, bytes.length, zipped);
  }
  row(files.length > 1 ? `${entry} (wasm + JS glue)` : entry, raw, gz);
}
