// Prints the gzip size of the npm package's Wasm plus its JS glue (what a
// browser downloads). Builds the package first if it is missing.
import { readFileSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";

const pkg = "sdk/pkg";
const files = ["durable_sessions_bg.wasm", "durable_sessions.js"];
if (!files.every((f) => existsSync(`${pkg}/${f}`))) {
  execFileSync("bash", ["scripts/build-sdk.sh"], { stdio: "inherit" });
}
let raw = 0;
let gz = 0;
for (const f of files) {
  const bytes = readFileSync(`${pkg}/${f}`);
  const zipped = gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length;
  gz += zipped;
  console.log(`${f.padEnd(28)} ${String(bytes.length).padStart(8)} B raw ${String(zipped).padStart(8)} B gzip`);
}
console.log(`${"total (wasm + JS glue)".padEnd(28)} ${String(raw).padStart(8)} B raw ${String(gz).padStart(8)} B gzip = ${(gz / 1024).toFixed(1)} KiB`);
