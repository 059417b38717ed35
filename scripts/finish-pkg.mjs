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
for (const t of ["ClientOptions", "SessionOptions", "SendOptions", "StreamOptions"]) {
  out = out.replaceAll(`options: ${t})`, `options?: ${t})`);
}
// A session is generic in the app's own event types (`E`), which
// wasm-bindgen cannot declare: its methods already name `E`.
out = replaceOnce(out, "export class Session {", "export class Session<E extends AppEvents = never> {");
out = replaceOnce(out, "session(id: string, options?: SessionOptions): Session<E>;",
  "session<E extends AppEvents = never>(id: string, options?: SessionOptions): Session<E>;");
out = replaceOnce(out, "stream(path: string, options?: StreamOptions): DurableStream<T>;",
  "stream<T = unknown>(path: string, options?: StreamOptions): DurableStream<T>;");
// The module's own page in the API reference (TypeDoc).
out = out.replace(
  "/* tslint:disable */\n/* eslint-disable */\n",
  "/* tslint:disable */\n/* eslint-disable */\n/**\n * The core: `DurableClient`, sessions (`client.session`) and any stream\n * (`client.stream`). Call `init()` once first.\n *\n * @module durable-sessions\n */\n",
);
writeFileSync(dts, out);
if (/\bany\b(?![^\n]*\*)/.test(readFileSync(dts, "utf8").replace(/\/\*\*[\s\S]*?\*\//g, ""))) {
  throw new Error(`${dts} still mentions 'any'`);
}
// Shorter import names. wasm-bindgen names each JS function the Wasm imports
// `__wbg_<name>_<16 hex digits>`; those hashes are most of the import
// section and barely compress. Rename them (in the Wasm and in the glue) to
// short names.
minifyImports(`${pkg}/durable_sessions_bg.wasm`, `${pkg}/durable_sessions.js`);

// Internal Wasm export typings are not part of the public surface.
writeFileSync(`${pkg}/durable_sessions_bg.wasm.d.ts`, "/* tslint:disable */\n/* eslint-disable */\nexport const memory: WebAssembly.Memory;\n");

/** `text` with `from` (which must occur exactly once) replaced by `to`. */
function replaceOnce(text, from, to) {
  const n = text.split(from).length - 1;
  if (n !== 1) throw new Error(`expected one "${from}" in ${dts}, found ${n}`);
  return text.replace(from, to);
}

function leb(bytes, at) {
  let value = 0, shift = 0, byte;
  do {
    byte = bytes[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [value, at];
}

function encodeLeb(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return out;
}

function shortName(i) {
  const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  let name = "";
  do {
    name = letters[i % 52] + name;
    i = Math.floor(i / 52) - 1;
  } while (i >= 0);
  return `$${name}`;
}

function minifyImports(wasmPath, jsPath) {
  const bytes = readFileSync(wasmPath);
  const text = new TextDecoder();
  const enc = new TextEncoder();
  let at = 8;
  const out = [bytes.subarray(0, 8)];
  const renames = new Map();
  while (at < bytes.length) {
    const id = bytes[at];
    let [size, body] = leb(bytes, at + 1);
    const end = body + size;
    if (id !== 2) {
      out.push(bytes.subarray(at, end));
      at = end;
      continue;
    }
    let [count, p] = leb(bytes, body);
    const section = [...encodeLeb(count)];
    for (let n = 0; n < count; n++) {
      let len;
      [len, p] = leb(bytes, p);
      const module = bytes.subarray(p, p + len);
      p += len;
      [len, p] = leb(bytes, p);
      const name = text.decode(bytes.subarray(p, p + len));
      p += len;
      const descStart = p;
      const kind = bytes[p++];
      if (kind === 0) [, p] = leb(bytes, p);
      else if (kind === 1 || kind === 2) {
        if (kind === 1) p++; // reference type
        const flags = bytes[p++];
        [, p] = leb(bytes, p);
        if (flags & 1) [, p] = leb(bytes, p);
      } else if (kind === 3) p += 2;
      else throw new Error(`unknown import kind ${kind}`);
      let newName = name;
      if (/_[0-9a-f]{16}$/.test(name)) {
        if (!renames.has(name)) renames.set(name, shortName(renames.size));
        newName = renames.get(name);
      }
      const nameBytes = enc.encode(newName);
      section.push(...encodeLeb(module.length), ...module, ...encodeLeb(nameBytes.length), ...nameBytes);
      section.push(...bytes.subarray(descStart, p));
    }
    out.push(Uint8Array.of(2, ...encodeLeb(section.length)), Uint8Array.from(section));
    at = end;
  }
  let js = readFileSync(jsPath, "utf8");
  for (const [from, to] of renames) {
    const occurrences = js.split(from).length - 1;
    if (occurrences !== 1) throw new Error(`${from} occurs ${occurrences} times in the glue`);
    js = js.replace(from, to);
  }
  writeFileSync(wasmPath, Buffer.concat(out.map((b) => Buffer.from(b))));
  writeFileSync(jsPath, js);
}
