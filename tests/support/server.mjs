// Starts the reference server as a child process on a free loopback port,
// with a fresh data directory, and stops it again.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Path of the server binary: $SERVER_BIN, else the debug build. */
export function serverBinary() {
  const bin = process.env.SERVER_BIN ?? join(root, "target", "debug", "durable-session-server");
  if (!existsSync(bin)) {
    throw new Error(`server binary not found at ${bin}: run 'cargo build -p durable-session-server' first`);
  }
  return bin;
}

/**
 * Starts a server. Resolves once it prints its address. Without `--auth` in
 * `args` it runs with `--auth none` (conformance, benchmarks).
 * @param {{ longPollTimeoutMs?: number, args?: string[] }} [options]
 * @returns {Promise<{ url: string, stop: () => Promise<void>, kill: () => Promise<void>, dataDir: string, pid: number }>}
 */
export async function startServer(options = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "durable-session-test-"));
  const args = ["--listen", "127.0.0.1:0", "--data-dir", dataDir];
  if (options.longPollTimeoutMs !== undefined) {
    args.push("--long-poll-timeout-ms", String(options.longPollTimeoutMs));
  }
  args.push(...(options.args ?? []));
  if (!args.includes("--auth")) args.push("--auth", "none");
  const child = spawn(serverBinary(), args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  child.stderr.on("data", (d) => process.stderr.write(d));
  const url = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start in 20 s: ${out}`)), 20_000);
    child.stdout.on("data", (d) => {
      out += d.toString();
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening: ${out}`));
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const end = async (signal) => {
    if (running()) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill(signal);
      await exited;
    }
  };
  const stop = async () => {
    await end("SIGTERM");
    rmSync(dataDir, { recursive: true, force: true });
  };
  /** SIGKILL, as a crashed node: nothing is closed properly. Resolves once it is gone. */
  const kill = () => end("SIGKILL");
  return { url, stop, kill, dataDir, pid: child.pid };
}
