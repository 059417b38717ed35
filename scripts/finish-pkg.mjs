// Finishes sdk/pkg after wasm-bindgen: copies package.json and README, and
// replaces the generated `InitOutput` (raw Wasm exports, typed with `any`)
// by an opaque type, so the public surface has no `any`.
import { readFileSync, writeFileSync, copyFileSync } from "node:fs";

const pkg = "sdk/pkg";
for (const f of ["package.json", "README.md"]) copyFileSync(`sdk/npm/${f}`, `${pkg}/${f}`);
const dts = `${pkg}/durable_sessions.d.ts`;
const text = readFileSync(dts, "utf8");
const start = text.indexOf("export interface InitOutput {");
const end = text.indexOf("}", start);
if (start < 0 || end < 0) throw new Error("InitOutput not found in " + dts);
const opaque = "/** The instantiated module (internal). */\nexport interface InitOutput {\n    readonly memory: WebAssembly.Memory;\n}";
let out = text.slice(0, start) + opaque + text.slice(end + 1);
// Option parameters are optional in JS; wasm-bindgen cannot say so for a
// parameter with an explicit type.
for (const t of ["ClientOptions", "SessionOptions", "SendOptions"]) {
  out = out.replaceAll(`options: ${t})`, `options?: ${t})`);
}
writeFileSync(dts, out);
if (/\bany\b(?![^\n]*\*)/.test(readFileSync(dts, "utf8").replace(/\/\*\*[\s\S]*?\*\//g, ""))) {
  throw new Error(`${dts} still mentions 'any'`);
}
// Internal Wasm export typings are not part of the public surface.
writeFileSync(`${pkg}/durable_sessions_bg.wasm.d.ts`, "/* tslint:disable */\n/* eslint-disable */\nexport const memory: WebAssembly.Memory;\n");
