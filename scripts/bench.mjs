// `npm run bench`: every benchmark, side by side with the peers, written to
// docs/benchmarks.md. `--smoke` runs each once with tiny counts (our server
// and the Node peer only) so `npm test` catches a broken benchmark; it never
// writes the document and its numbers mean nothing. `--soak` runs only the
// soak (2,000 live subscribers, steady appends, RSS every second for 60 s)
// and replaces its section of docs/benchmarks.md, leaving the rest as it was.
// `--scaling` runs only the scale-out measurements behind docs/scaling.md
// (per-node figures on Redis, then the same fan-out over 1, 2 and 3 nodes)
// and replaces that page's measured part (between its `scaling:` markers).
// Both the full run and `--smoke` start their own redis-server (durable
// settings, tests/support/redis.mjs) for the Redis rows.
//
// Peers, installed here from registries and pinned:
//   @durable-streams/server 0.3.7 (npm, package.json; file-backed store)
//   durable-streams-server 0.3.0 (crates.io, `cargo install --locked` into target/peers; file-durable store)
//   a plain-JavaScript WebSocket baseline (tests/bench/page.html) for the browser figures.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { startServer } from "../tests/support/server.mjs";
import { serveStatic } from "../tests/support/static.mjs";
import { launchBrowser } from "../tests/support/browser.mjs";
import { startRedis } from "../tests/support/redis.mjs";

const smoke = process.argv.includes("--smoke");
const soakOnly = process.argv.includes("--soak");
const scalingOnly = process.argv.includes("--scaling");
const root = new URL("..", import.meta.url).pathname;
process.chdir(root);
const RUST_PEER_VERSION = "0.3.0";
// Cargo's output directory (CARGO_TARGET_DIR, else target/).
const cargoTarget = process.env.CARGO_TARGET_DIR ?? "target";
const N = smoke
  ? { seq: 100, conc: 640, catchup: 5_000, fanSubs: 20, fanCount: 20, idle: 200, deltas: 2_000, rounds: 1, longSession: 1_000, batches: 5 }
  : { seq: 3_000, conc: 20_000, catchup: 100_000, fanSubs: 1_000, fanCount: 500, idle: 10_000, deltas: 100_000, rounds: 3, longSession: 10_000, batches: 40 };
/** The soak: live WebSocket subscribers over `streams` sessions, `rate` appends/s for `seconds`. */
const SOAK = smoke ? { subscribers: 50, streams: 5, rate: 20, seconds: 3 } : { subscribers: 2_000, streams: 200, rate: 100, seconds: 60 };
/**
 * The scale-out run (docs/scaling.md): idle WebSocket subscriptions on one
 * Redis-backed node; `producers` writers on node A with node B listening;
 * then one writer at `rate` appends/s for `count` appends, `subs` WebSocket
 * subscribers spread over 1, 2, then 3 nodes.
 */
const SCALE = smoke
  ? { idle: 200, producers: 16, appends: 640, subs: 20, rate: 50, count: 20 }
  : { idle: 10_000, producers: 64, appends: 20_000, subs: 1_000, rate: 100, count: 1_000 };
/** Events per batch in the persistence benchmark. */
const BATCH = 20;
const started = Date.now();
const log = (...a) => console.log(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s]`, ...a);

function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: "inherit", ...opts });
}

/** `--node URL` for each further node and `--cpu-pid PID` for each process to clock. */
const clusterArgs = (nodes = [], pids = []) => [...nodes.flatMap((n) => ["--node", n.url]), ...pids.flatMap((p) => ["--cpu-pid", String(p)])];

/** The load average (1, 5, 15 min) from /proc/loadavg. */
/** A figure for the log: a JSON null (no samples) prints as "none". */
const fmt = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "none");

const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

function bench(url, args, seconds = 60) {
  const out = execFileSync(`${cargoTarget}/release/durable-session-bench`, ["--url", url, "--seconds", String(seconds), ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  return JSON.parse(out.trim().split("\n").pop());
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitHttp(url, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer`);
}

/** Starts a child process server; resolves to { url, pid, stop }. */
async function startChild(cmd, args, env, readyUrl) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 60_000);
    const poll = setInterval(() => {
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m || readyUrl) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve(m ? m[1] : readyUrl);
      }
    }, 50);
    child.on("exit", (c) => reject(new Error(`${cmd} exited with ${c}: ${out}`)));
  });
  if (readyUrl) await waitHttp(`${readyUrl}/healthz`);
  return {
    url,
    pid: child.pid,
    stop: () => new Promise((r) => (child.exitCode !== null ? r() : (child.once("exit", r), child.kill("SIGTERM")))),
  };
}

const servers = {
  // Every client of the load generator comes from 127.0.0.1: the per-IP
  // WebSocket bound (default 4,096) is raised past the 10,000 idle sockets.
  ours: (extra = []) => startServer({ args: ["--max-ws-per-ip", "100000", ...extra] }),
  async node() {
    const dir = mkdtempSync(join(tmpdir(), "bench-node-"));
    const s = await startChild("node", ["tests/support/node-ds-server.mjs", "0", dir], {});
    return { ...s, stop: async () => (await s.stop(), rmSync(dir, { recursive: true, force: true })) };
  },
  async rust() {
    const dir = mkdtempSync(join(tmpdir(), "bench-rust-"));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const s = await startChild(
      "target/peers/bin/durable-streams-server",
      [],
      {
        DS_SERVER__BIND_ADDRESS: `127.0.0.1:${port}`,
        DS_STORAGE__MODE: "file-durable",
        DS_STORAGE__DATA_DIR: dir,
        DS_LIMITS__MAX_STREAM_BYTES: String(1 << 30),
        DS_LIMITS__MAX_MEMORY_BYTES: String(4 * 2 ** 30),
        DS_OBSERVABILITY__RUST_LOG: "warn",
        RUST_LOG: "warn",
      },
      url,
    );
    return { ...s, stop: async () => (await s.stop(), rmSync(dir, { recursive: true, force: true })) };
  },
};

function machine() {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const ver = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8" }).trim().split("\n")[0];
    } catch {
      return "?";
    }
  };
  return {
    cpu: `${cpus().length} × ${cpu}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    kernel: ver("uname", ["-sr"]),
    node: process.version,
    rustc: ver("rustc", ["--version"]),
    chromium: ver("/usr/bin/chromium", ["--version"]),
  };
}

// ---------------------------------------------------------------- build

log(smoke ? "smoke mode: tiny counts, our server and the Node peer" : soakOnly ? "soak only" : "full run");
if (process.argv.includes("--render")) {
  const kept = JSON.parse(readFileSync(`${cargoTarget}/bench-results.json`, "utf8"));
  writeFileSync("docs/benchmarks.md", render(kept.results, kept.machine, kept.seconds));
  log("rendered docs/benchmarks.md again from the last full run's results");
  process.exit(0);
}
if (soakOnly) {
  run("cargo", ["build", "--release", "--quiet", "-p", "durable-session-server", "-p", "durable-session-bench"]);
  process.env.SERVER_BIN = resolve(root, cargoTarget, "release/durable-session-server");
  const soak = await soakRun();
  const doc = readFileSync("docs/benchmarks.md", "utf8");
  writeFileSync("docs/benchmarks.md", withSoakSection(doc, renderSoak(soak, machine())));
  log("wrote the soak section of docs/benchmarks.md");
  process.exit(0);
}
if (scalingOnly) {
  run("cargo", ["build", "--release", "--quiet", "-p", "durable-session-server", "-p", "durable-session-bench"]);
  process.env.SERVER_BIN = resolve(root, cargoTarget, "release/durable-session-server");
  const scaling = await scalingRun();
  writeFileSync(`${cargoTarget}/scaling-results.json`, JSON.stringify(scaling));
  const section = renderScaling(scaling, machine(), (Date.now() - started) / 1000);
  if (smoke) {
    console.log(section); // tiny counts: printed, never written
  } else {
    writeFileSync("docs/scaling.md", withScalingSection(readFileSync("docs/scaling.md", "utf8"), section));
    log("wrote the measured part of docs/scaling.md");
  }
  process.exit(0);
}
run("bash", ["scripts/setup.sh"]);
log("building server, agents and load generator (release)");
run("cargo", ["build", "--release", "--quiet", "-p", "durable-session-server", "-p", "durable-session-agent", "-p", "durable-session-bench"]);
if (!existsSync("sdk/pkg/durable_sessions_bg.wasm")) run("bash", ["scripts/build-sdk.sh"]);
if (!existsSync("target/demo/pkg/demo_bg.wasm")) run("bash", ["scripts/build-demo.sh"]);
process.env.SERVER_BIN = resolve(root, cargoTarget, "release/durable-session-server");

const peers = ["ours", "node"];
if (!smoke) {
  const bin = "target/peers/bin/durable-streams-server";
  if (!existsSync(bin)) {
    log(`installing the Rust peer durable-streams-server ${RUST_PEER_VERSION} (cargo install, a few minutes, once)`);
    run("cargo", ["install", "durable-streams-server", "--version", RUST_PEER_VERSION, "--locked", "--root", "target/peers", "--quiet"]);
  }
  peers.push("rust");
}

// ------------------------------------------------------- server benchmarks

const results = { server: {}, browser: {}, size: {}, load_start: loadavg() };
for (const peer of peers) {
  log(`server benchmarks: ${peer}`);
  const r = (results.server[peer] = {});
  let s = await servers[peer]();
  try {
    // Idle memory first, on a fresh process.
    for (const mode of peer === "ours" ? ["sse", "ws"] : ["sse"]) {
      r[`idle_${mode}`] = bench(s.url, ["idle", "--mode", mode, "--subscriptions", String(N.idle), "--pid", String(s.pid)], 120);
      log(peer, `idle ${mode}:`, r[`idle_${mode}`].kb_per_subscription.toFixed(1), "KB per subscription");
      await s.stop();
      s = await servers[peer]();
    }
    r.append_seq = bench(s.url, ["append", "--producers", "1", "--count", String(N.seq)], 60);
    log(peer, "append sequential:", r.append_seq.rate.toFixed(0), "msg/s");
    r.append_conc = bench(s.url, ["append", "--producers", "64", "--count", String(N.conc)], 60);
    log(peer, "append 64 producers:", r.append_conc.rate.toFixed(0), "msg/s");
    r.catchup = bench(s.url, ["catchup", "--messages", String(N.catchup)], 120);
    log(peer, "catch-up:", r.catchup.rate.toFixed(0), "msg/s");
    for (const mode of peer === "ours" ? ["sse", "ws"] : ["sse"]) {
      const args = ["fanout", "--mode", mode, "--subscribers", String(N.fanSubs), "--rate", "100", "--count", String(N.fanCount)];
      r[`fanout_${mode}`] = bench(s.url, args, 120);
      log(peer, `fan-out ${mode}: p99`, fmt(r[`fanout_${mode}`].p99_ms, 1), "ms");
    }
  } finally {
    await s.stop();
  }
}

// ------------------------------------------------------------- scale-out

/**
 * Benchmark 12: the append and fan-out benchmarks of sections 1 and 3 on
 * the Redis store, on one node and on two nodes sharing one redis-server
 * (started here with the durable settings). Two nodes: the producers are
 * spread over A and B (one producer: on A), the fan-out's writer is on A and
 * its subscribers alternate between A and B, so half of them are served
 * across nodes (their p99 is reported apart too).
 */
async function scaleOutRun() {
  const redis = await startRedis();
  const out = { load_start: loadavg() };
  const nodes = [];
  try {
    for (const count of [1, 2]) {
      while (nodes.length < count) nodes.push(await servers.ours(["--store", redis.url]));
      log(`scale-out: Redis, ${count} node(s)`);
      const [a, ...rest] = nodes;
      const extra = clusterArgs(rest, [...nodes.map((n) => n.pid), redis.pid]);
      const r = (out[count === 1 ? "one" : "two"] = {});
      r.append_seq = bench(a.url, ["append", "--producers", "1", "--count", String(N.seq), ...extra], 60);
      r.append_conc = bench(a.url, ["append", "--producers", "64", "--count", String(N.conc), ...extra], 60);
      log(`Redis ${count} node(s) append: sequential ${r.append_seq.rate.toFixed(0)} msg/s, 64 producers ${r.append_conc.rate.toFixed(0)} msg/s`);
      for (const mode of ["sse", "ws"]) {
        const args = ["fanout", "--mode", mode, "--subscribers", String(N.fanSubs), "--rate", "100", "--count", String(N.fanCount), ...extra];
        r[`fanout_${mode}`] = bench(a.url, args, 120);
        log(`Redis ${count} node(s) fan-out ${mode}: p99`, fmt(r[`fanout_${mode}`].p99_ms, 1), "ms");
      }
    }
  } finally {
    for (const n of nodes) await n.stop();
    await redis.stop();
  }
  out.load_end = loadavg();
  return out;
}

results.scale = await scaleOutRun();
if (smoke) results.scaling = await scalingRun();

// ------------------------------------------------------------------ soak

/**
 * Benchmark 11, on a fresh server: SOAK.subscribers live WebSocket
 * subscribers (one socket each, answering heartbeats) spread over
 * SOAK.streams sessions, SOAK.rate appends per second round-robin over them
 * for SOAK.seconds; the server's VmRSS every second. The slope (least
 * squares) says whether memory grows with traffic; the goal is flat.
 */
async function soakRun() {
  log(`soak: ${SOAK.subscribers} subscribers, ${SOAK.rate} appends/s for ${SOAK.seconds} s`);
  const s = await servers.ours();
  try {
    const args = ["soak", "--subscribers", String(SOAK.subscribers), "--streams", String(SOAK.streams), "--rate", String(SOAK.rate), "--duration", String(SOAK.seconds), "--pid", String(s.pid)];
    const r = bench(s.url, args, SOAK.seconds + 120);
    log(`soak: RSS ${(r.rss_connected_kb / 1024).toFixed(1)} → ${(r.samples.at(-1).rss_kb / 1024).toFixed(1)} MiB, slope ${r.slope_kb_per_s.toFixed(2)} KB/s (second half ${r.slope_second_half_kb_per_s.toFixed(2)} KB/s), delivered ${r.delivered} / ${r.expected}`);
    return r;
  } finally {
    await s.stop();
  }
}

results.soak = await soakRun();

// ------------------------------------------------------ browser benchmarks

log("browser benchmarks");
const ours = await servers.ours(["--static-dir", join(root, "target/demo")]);
const agent = spawn(`${cargoTarget}/release/durable-session-agent`, ["--server", ours.url, "--tokens-per-second", "20", "--answer-tokens", "400"], {
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, RUST_LOG: "warn" },
});
const files = await serveStatic(root);
const browser = await launchBrowser();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const page = await browser.newPage();
  await page.goto(`${files.url}/tests/bench/page.html?server=${encodeURIComponent(ours.url)}`);
  await page.waitForFunction(() => window.ready === true);

  // 5. event throughput: the same stream of text deltas, three ways.
  const tp = {};
  const baseline = [], js = [], leptos = [];
  for (let round = 0; round < N.rounds; round++) {
    const id = `bench-tp-${Date.now().toString(36)}-${round}`;
    bench(ours.url, ["fill", "--path", `sessions/${id}`, "--count", String(N.deltas)], 120);
    baseline.push((await page.evaluate(([p, n]) => window.baseline(p, n), [`sessions/${id}`, N.deltas])).ms);
    js.push((await page.evaluate(([i, n]) => window.sdk(i, n), [id, N.deltas])).ms);
    const demo = await browser.newPage();
    const t0 = Date.now();
    await demo.goto(`${ours.url}/?session=${id}`);
    await demo.waitForFunction((n) => Number(document.querySelector("[data-testid=events-received]")?.textContent) >= n, N.deltas, { timeout: 120_000, polling: 20 });
    leptos.push(Date.now() - t0);
    await demo.close();
  }
  tp.baseline = (N.deltas / median(baseline)) * 1000;
  tp.js = (N.deltas / median(js)) * 1000;
  tp.leptos = (N.deltas / median(leptos)) * 1000;
  results.browser.throughput = tp;
  log("throughput events/s: baseline", tp.baseline.toFixed(0), "SDK JS", tp.js.toFixed(0), "Leptos signal", tp.leptos.toFixed(0));

  // 6. resume latency, and the round trip it is measured against.
  const rtt = await page.evaluate(() => window.rtt(20));
  const resumes = [];
  for (let round = 0; round < N.rounds; round++) {
    const id = `bench-resume-${Date.now().toString(36)}-${round}`;
    await page.evaluate((i) => window.resumeSetup(i), id);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.enable");
    const cut = { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 };
    await cdp.send("Network.emulateNetworkConditions", cut);
    await page.evaluate(() => {
      window.resume.armed = true;
      window.resume.client.dropConnection();
    });
    for (let i = 0; i < 5; i++) {
      await fetch(`${ours.url}/v1/stream/sessions/${id}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ type: "note", i }) });
    }
    await cdp.send("Network.emulateNetworkConditions", { ...cut, offline: false });
    await page.waitForFunction(() => window.resume.first !== null, null, { timeout: 20_000 });
    resumes.push(await page.evaluate(() => window.resume.first - window.resume.opened));
    await page.evaluate(() => window.resume.client.close());
    await cdp.detach();
  }
  results.browser.resume = { ms: median(resumes), rtt_ms: rtt };
  log("resume:", median(resumes).toFixed(1), "ms after the socket opened; RTT", rtt.toFixed(2), "ms");

  // 7. second tab: navigation to the first live delta rendered.
  const liveViews = [];
  const cancels = [];
  for (let round = 0; round < N.rounds; round++) {
    const id = `bench-tab-${Date.now().toString(36)}-${round}`;
    const a = await browser.newPage();
    await a.goto(`${ours.url}/?session=${id}`);
    await a.waitForFunction(() => document.querySelector("[data-testid=connection-status]")?.textContent === "connected");
    await a.fill("[data-testid=message-input]", "benchmark question");
    await a.click("[data-testid=send-button]");
    await a.waitForFunction(() => (document.querySelector("[data-testid=run-text]")?.textContent.length ?? 0) > 20);
    const b = await browser.newPage();
    await b.addInitScript(() => {
      const watch = () => {
        const el = document.querySelector("[data-testid=run-text]");
        if (!el) return requestAnimationFrame(watch);
        const first = el.textContent;
        new MutationObserver(() => {
          const now = document.querySelector("[data-testid=run-text]");
          if (window.__live === undefined && now && now.textContent !== first) window.__live = performance.now();
        }).observe(document.body, { childList: true, subtree: true, characterData: true });
      };
      document.addEventListener("DOMContentLoaded", watch);
    });
    await b.goto(`${ours.url}/?session=${id}`);
    await b.waitForFunction(() => window.__live !== undefined, null, { timeout: 20_000 });
    liveViews.push(await b.evaluate(() => window.__live));

    // 8. cancel: stop pressed in B → cancelled rendered in A.
    await a.evaluate(() => {
      new MutationObserver(() => {
        const runs = document.querySelectorAll("[data-testid=message][data-role=assistant]");
        if (window.__cancelled === undefined && runs[runs.length - 1]?.dataset.runStatus === "cancelled") window.__cancelled = Date.now();
      }).observe(document.body, { childList: true, subtree: true, attributes: true });
    });
    await b.waitForSelector("[data-testid=stop-button]");
    const pressed = await b.evaluate(() => {
      const t = Date.now();
      document.querySelector("[data-testid=stop-button]").click();
      return t;
    });
    await a.waitForFunction(() => window.__cancelled !== undefined, null, { timeout: 20_000 });
    cancels.push((await a.evaluate(() => window.__cancelled)) - pressed);
    await a.close();
    await b.close();
  }
  results.browser.live_view_ms = median(liveViews);
  results.browser.cancel_ms = median(cancels);
  log("second tab to live view:", median(liveViews).toFixed(0), "ms; cancel B → A:", median(cancels), "ms");

  // 10. persistence: one batch applied in a long session vs a short one,
  // and the IndexedDB bytes written per event.
  results.browser.persist = await persistence(ours.url, files.url);
  const p = results.browser.persist;
  log(
    `persistence: one batch of ${BATCH} in a ${N.longSession}-event session ${p.long.ms.toFixed(3)} ms vs 100 events ${p.short.ms.toFixed(3)} ms;`,
    `bytes per event: catch-up ${p.catchup_bytes_per_event.toFixed(1)}, live batches ${p.batch_bytes_per_event.toFixed(1)}, one event per batch ${p.single_bytes_per_event.toFixed(1)} (event JSON ${p.event_bytes.toFixed(1)})`,
  );
} finally {
  await browser.close();
  await files.close();
  agent.kill("SIGTERM");
  await ours.stop();
}

// ------------------------------------------------------------ persistence

/**
 * Benchmark 10. Sessions of 100 and N.longSession events (finished turns of
 * 100 events, then a question whose answer streams), each opened with
 * persistence on in a fresh browser context (tests/package/persist.html: the
 * npm package, IndexedDB instrumented). Then N.batches live batches of BATCH
 * deltas, one at a time: the time to apply one is the time the page spends
 * in the WebSocket's message handler for its frame — parse, fold into the
 * chat view, start the IndexedDB write, run the app's onEvent and onChange
 * callbacks — mean
 * of the middle 80 %. Bytes per event: what IndexedDB `put`s carried (keys
 * and values), over the catch-up, over the live batches, and over live
 * events arriving one per frame.
 */
async function persistence(serverUrl, filesUrl) {
  const post = async (id, events) => {
    const res = await fetch(`${serverUrl}/v1/stream/sessions/${id}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(events) });
    if (!res.ok) throw new Error(`append: HTTP ${res.status}`);
  };
  const delta = (i, run = "live") => ({ type: "text_delta", run_id: run, agent: "bench", delta: ` word${String(i).padStart(6, "0")}` });
  const ask = (run) => [
    { type: "user_message", id: `m-${run}`, author: "bench", text: "a long answer, please" },
    { type: "run_started", run_id: run, agent: "bench", in_reply_to: `m-${run}` },
  ];
  const eventBytes = JSON.stringify(delta(0)).length;
  const out = { event_bytes: eventBytes };
  for (const [name, length] of [["short", 100], ["long", N.longSession]]) {
    const id = `bench-persist-${name}-${Date.now().toString(36)}`;
    await fetch(`${serverUrl}/v1/stream/sessions/${id}`, { method: "PUT", headers: { "content-type": "application/json" } });
    // Finished turns of 100 events (a question, an answer of 97 deltas),
    // then the question whose answer streams live.
    const events = [];
    for (let k = 0; events.length + 102 <= length; k++) {
      events.push(...ask(`r${k}`), ...Array.from({ length: 97 }, (_, d) => delta(d, `r${k}`)));
      events.push({ type: "run_finished", run_id: `r${k}`, status: "completed" });
    }
    events.push(...ask("live"));
    while (events.length < length) events.push(delta(events.length));
    for (let i = 0; i < length; i += 1_000) await post(id, events.slice(i, i + 1_000));
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${filesUrl}/tests/package/persist.html?timing&server=${encodeURIComponent(serverUrl)}`);
    await page.waitForFunction(() => window.t?.ready === true);
    await page.evaluate((id) => t.openLean(id), id);
    const received = (n) => page.waitForFunction(([id, n]) => t.sessions[id].count >= n, [id, n], { timeout: 120_000, polling: 5 });
    await received(length);
    await page.evaluate(() => t.settled(200));
    const caughtUp = await page.evaluate(() => t.stats.stores.chunks);
    let next = length;
    await page.evaluate(() => (t.frameTimes = []));
    const live = await page.evaluate(() => structuredClone(t.stats.stores.chunks));
    for (let b = 0; b < N.batches; b++) {
      await post(id, Array.from({ length: BATCH }, (_, k) => delta(next + k)));
      next += BATCH;
      await received(next);
      await page.evaluate(() => t.settled(20));
    }
    const times = await page.evaluate(() => t.frameTimes);
    const afterBatches = await page.evaluate(() => structuredClone(t.stats.stores.chunks));
    for (let b = 0; b < Math.min(N.batches, 20); b++) {
      await post(id, [delta(next)]);
      next += 1;
      await received(next);
      await page.evaluate(() => t.settled(20));
    }
    const afterSingles = await page.evaluate(() => t.stats.stores.chunks);
    const sorted = [...times].sort((a, b) => a - b);
    const middle = sorted.slice(Math.floor(sorted.length * 0.1), Math.ceil(sorted.length * 0.9));
    out[name] = { events: length, ms: middle.reduce((a, b) => a + b, 0) / middle.length, median_ms: median(times), frames: times.length };
    if (name === "long") {
      out.catchup_bytes_per_event = caughtUp.bytes / length;
      out.batch_bytes_per_event = (afterBatches.bytes - live.bytes) / (N.batches * BATCH);
      out.batch_records_per_batch = (afterBatches.puts - live.puts) / N.batches;
      out.single_bytes_per_event = (afterSingles.bytes - afterBatches.bytes) / Math.min(N.batches, 20);
    }
    await context.close();
  }
  return out;
}

// ------------------------------------------------------------------- size

const gz = (files) => files.reduce((sum, f) => sum + gzipSync(readFileSync(f), { level: 9 }).length, 0);
results.size.package = gz(["sdk/pkg/durable_sessions_bg.wasm", "sdk/pkg/durable_sessions.js"]);
results.size.demo = gz(["target/demo/pkg/demo_bg.wasm", "target/demo/pkg/demo.js", "target/demo/index.html", "target/demo/style.css"]);
log("size: npm package", results.size.package, "B gzip; demo app", results.size.demo, "B gzip");

const seconds = (Date.now() - started) / 1000;
log(`done in ${seconds.toFixed(0)} s`);
if (smoke) {
  // Sanity: every benchmark produced a number.
  const bad = [];
  for (const [peer, r] of Object.entries(results.server)) {
    if (!(r.append_seq.rate > 0 && r.append_conc.rate > 0 && r.catchup.messages === N.catchup)) bad.push(`${peer} append/catch-up`);
    if (!(r.fanout_sse.received > 0)) bad.push(`${peer} fan-out`);
    if (!(r.idle_sse.subscriptions === N.idle)) bad.push(`${peer} idle`);
  }
  for (const [name, r] of Object.entries({ "Redis 1 node": results.scale.one, "Redis 2 nodes": results.scale.two })) {
    if (!(r.append_seq.rate > 0 && r.append_conc.rate > 0)) bad.push(`${name} append`);
    for (const mode of ["sse", "ws"]) {
      const fo = r[`fanout_${mode}`];
      if (!(fo.received === fo.expected && fo.expected > 0 && fo.nodes.every((n) => n.received > 0))) bad.push(`${name} fan-out ${mode}`);
    }
  }
  renderScaleOut(results, machine()); // the section renders (it is written only by a full run)
  const sc = results.scaling;
  if (!(sc.idle.subscriptions === SCALE.idle && sc.append.messages === SCALE.appends && sc.steps.length === 3 && sc.steps.every((r, i) => r.nodes.length === i + 1 && r.received === r.expected && r.expected > 0))) bad.push("scaling");
  else renderScaling(sc, machine(), 0);
  const k = results.soak;
  if (!(k.connected === SOAK.subscribers && k.written > 0 && k.delivered === k.expected && k.samples.length >= SOAK.seconds)) bad.push("soak");
  const b = results.browser;
  if (!(b.throughput.js > 0 && b.throughput.baseline > 0 && b.throughput.leptos > 0 && b.resume.ms >= 0 && b.live_view_ms > 0 && b.cancel_ms >= 0)) bad.push("browser");
  const p = b.persist;
  if (!(p.short.frames >= N.batches && p.long.frames >= N.batches && p.long.ms >= 0 && p.batch_bytes_per_event > 0 && p.catchup_bytes_per_event > 0)) bad.push("persistence");
  if (bad.length) {
    console.error("benchmark smoke run failed:", bad.join(", "));
    process.exit(1);
  }
  console.log("bench smoke: 12 benchmarks and the scaling run ran");
} else {
  results.load_end = loadavg();
  // Kept so that the page can be rendered again without measuring again
  // (`node scripts/bench.mjs --render`).
  writeFileSync(`${cargoTarget}/bench-results.json`, JSON.stringify({ results, machine: machine(), seconds }));
  writeFileSync("docs/benchmarks.md", render(results, machine(), seconds));
  log("wrote docs/benchmarks.md");
}

// --------------------------------------------------------------- report

/** Section 11 of docs/benchmarks.md: the soak, as a plot-ready table. */
function renderSoak(k, m) {
  const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "—");
  const mib = (kb) => f(kb / 1024, 1);
  const rows = k.samples.map((p) => `| ${f(p.t)} | ${mib(p.rss_kb)} | ${f(p.written)} | ${f(p.received)} |`).join("\n");
  const last = k.samples.at(-1);
  return `## 11. Soak: memory over ${f(k.seconds)} s of live traffic

${f(k.subscribers)} live WebSocket subscribers (one socket each, answering heartbeats)
over ${f(k.streams)} sessions; a warm-up of ${f(k.warmup_appends / k.streams)} appends per session fills the
server's caches of recent appends and SQLite's page caches; then ${f(k.rate)} appends of
100-byte JSON per second, round-robin over the sessions, for ${f(k.seconds)} s, with the
server's resident memory (VmRSS) sampled every second. Our server, release build,
default limits; measured ${new Date().toISOString().slice(0, 10)} (${m.cpu}, ${m.memory}).

| | |
|---|---:|
| RSS before the subscribers (MiB) | ${mib(k.rss_before_kb)} |
| RSS with ${f(k.connected)} subscribers connected (MiB) | ${mib(k.rss_connected_kb)} |
| RSS after the warm-up, ${f(k.warmup_appends)} appends (MiB) | ${mib(k.rss_warm_kb)} |
| RSS at the end (MiB) | ${mib(last.rss_kb)} |
| slope over the run (KB/s) | ${f(k.slope_kb_per_s, 2)} |
| slope over the second half (KB/s) | ${f(k.slope_second_half_kb_per_s, 2)} |
| appends written / messages delivered (expected) | ${f(k.written)} / ${f(k.delivered)} (${f(k.expected)}) |

The goal is flat: memory that follows traffic, not time. Plot-ready (t, RSS):

| t (s) | RSS (MiB) | appends written | messages delivered |
|---:|---:|---:|---:|
${rows}
`;
}

/** Section 12 of docs/benchmarks.md: SQLite vs Redis, one and two nodes, beside the Rust peer. */
function renderScaleOut(res, m) {
  const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "—");
  const S = res.server;
  const { one, two } = res.scale;
  const cols = [S.ours, one, two, S.rust];
  const row = (name, pick, d = 0) => `| ${name} | ${cols.map((c) => f(c ? pick(c) : NaN, d)).join(" | ")} |`;
  const redisUs = (r) => (r.append_conc.cpu.at(-1).cpu_seconds / r.append_conc.messages) * 1e6;
  return `## 12. Scale-out: SQLite vs Redis, one and two nodes

The benchmarks of sections 1 and 3 again, on our server with the Redis
store (\`--store redis://…\`): one redis-server 7 started by the benchmark
in a temp dir with the durable settings (\`appendonly yes\`,
\`appendfsync always\`, \`maxmemory-policy noeviction\`), one or two
server nodes on it, all on loopback. The SQLite and Rust-peer columns are
the figures of sections 1 and 3 of this same run. **Two nodes**: the 64
producers alternate between node A and node B (the single producer writes
through A); the fan-out's writer is on A and its subscribers alternate
between A and B, so half of them are served across nodes (their p99 has a
row of its own). Counts as in sections 1 and 3: ${f(N.seq)} sequential
appends, ${f(N.conc)} appends over 64 producers, ${f(N.fanSubs)} subscribers
and ${f(N.fanCount)} messages at 100/s. Load average (1, 5, 15 min)
${res.scale.load_start} before these rows, ${res.scale.load_end} after.
Reproduce with \`npm run bench\`.

| | SQLite, 1 node | Redis, 1 node | Redis, 2 nodes | Rust peer |
|---|---:|---:|---:|---:|
${row("appends/s, sequential, 1 producer", (r) => r.append_seq.rate)}
${row("  ack latency p99 (ms)", (r) => r.append_seq.p99_ms, 2)}
${row("appends/s, 64 producers on 64 streams", (r) => r.append_conc.rate)}
${row("  ack latency p99 (ms)", (r) => r.append_conc.p99_ms, 2)}
${row("fan-out p99, SSE (ms)", (r) => r.fanout_sse.p99_ms, 2)}
${row("fan-out p99, WebSocket (ms)", (r) => r.fanout_ws?.p99_ms, 2)}
| fan-out p99 of the subscribers on node B, SSE / WebSocket (ms) | — | — | ${f(two.fanout_sse.nodes[1].p99_ms, 2)} / ${f(two.fanout_ws.nodes[1].p99_ms, 2)} | — |
${row("fan-out delivered / expected, WebSocket (%)", (r) => (r.fanout_ws ? (100 * r.fanout_ws.received) / r.fanout_ws.expected : NaN), 1)}
| redis-server CPU per append, 64 producers (µs) | — | ${f(redisUs(one), 1)} | ${f(redisUs(two), 1)} | — |

The capacity model built on these figures, and a 1 → 2 → 3 node run, are
in [scaling.md](scaling.md) (\`node scripts/bench.mjs --scaling\`).
`;
}

/** `doc` with its soak section replaced (or added before "Where we fall short"). */
function withSoakSection(doc, section) {
  const start = doc.indexOf("## 11. Soak");
  if (start >= 0) {
    const end = doc.indexOf("\n## ", start + 1);
    return doc.slice(0, start) + section + (end >= 0 ? `\n${doc.slice(end + 1)}` : "");
  }
  const at = doc.indexOf("## Where we fall short");
  return at >= 0 ? doc.slice(0, at) + section + "\n" + doc.slice(at) : `${doc}\n${section}`;
}

function render(res, m, secs) {
  const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "—");
  const ratio = (ours, peer, higherIsBetter = true) =>
    Number.isFinite(ours) && Number.isFinite(peer) && peer > 0 && ours > 0 ? `${f(higherIsBetter ? ours / peer : peer / ours, 2)}×` : "—";
  const S = res.server;
  const row = (name, pick, d, better = true) =>
    `| ${name} | ${f(pick(S.ours), d)} | ${f(pick(S.node), d)} | ${f(pick(S.rust), d)} | ${ratio(pick(S.ours), pick(S.node), better)} | ${ratio(pick(S.ours), pick(S.rust), better)} |`;
  const head = "| | ours | Node peer | Rust peer | ours vs Node | ours vs Rust |\n|---|---:|---:|---:|---:|---:|";
  const tp = res.browser.throughput;
  const P = res.browser.persist;
  const targets = [
    ["appends ≥ 1.5× the Rust peer (sequential, 64 producers)", `${ratio(S.ours.append_seq.rate, S.rust.append_seq.rate)}, ${ratio(S.ours.append_conc.rate, S.rust.append_conc.rate)}`, S.ours.append_seq.rate >= 1.5 * S.rust.append_seq.rate && S.ours.append_conc.rate >= 1.5 * S.rust.append_conc.rate],
    ["catch-up ≥ 1.5× the Rust peer", ratio(S.ours.catchup.rate, S.rust.catchup.rate), S.ours.catchup.rate >= 1.5 * S.rust.catchup.rate],
    ["fan-out p99 ≤ 10 ms at 1,000 subscribers", `SSE ${f(S.ours.fanout_sse.p99_ms, 1)} ms, WebSocket ${f(S.ours.fanout_ws.p99_ms, 1)} ms`, S.ours.fanout_sse.p99_ms <= 10 && S.ours.fanout_ws.p99_ms <= 10],
    ["≤ 15 KB resident per idle live subscription", `SSE ${f(S.ours.idle_sse.kb_per_subscription, 1)} KB, WebSocket ${f(S.ours.idle_ws.kb_per_subscription, 1)} KB`, S.ours.idle_sse.kb_per_subscription <= 15 && S.ours.idle_ws.kb_per_subscription <= 15],
    ["SDK event throughput ≥ 0.5× the plain-JS baseline", `${f(tp.js / tp.baseline, 2)}×`, tp.js >= 0.5 * tp.baseline],
    ["resume ≤ 1 round trip + 5 ms", `${f(res.browser.resume.ms, 1)} ms (RTT ${f(res.browser.resume.rtt_ms, 2)} ms)`, res.browser.resume.ms <= res.browser.resume.rtt_ms + 5],
    ["npm package ≤ 40 KB gzip", `${f(res.size.package / 1000, 1)} KB`, res.size.package <= 40_000],
    [
      `soak: RSS flat with ${f(res.soak.subscribers)} live subscribers and steady appends for ${f(res.soak.seconds)} s (|slope| ≤ 10 KB/s)`,
      `${f(res.soak.slope_kb_per_s, 2)} KB/s (${f(res.soak.rss_warm_kb / 1024, 1)} → ${f(res.soak.samples.at(-1).rss_kb / 1024, 1)} MiB)`,
      Math.abs(res.soak.slope_kb_per_s) <= 10,
    ],
    [
      `one batch applied in a ${f(P.long.events)}-event session as fast as in a 100-event one (within noise: ≤ 1.2× + 0.02 ms)`,
      `${f(P.long.ms, 3)} ms vs ${f(P.short.ms, 3)} ms (${f(P.long.ms / P.short.ms, 2)}×)`,
      P.long.ms <= 1.2 * P.short.ms + 0.02,
    ],
  ];
  return `# Benchmarks

Written by \`npm run bench\` (${new Date().toISOString().slice(0, 10)}, ${f(secs)} s). Absolute times on a
shared machine mean little; the ratios against peers measured in the same
run on the same machine are the figures to compare. Reproduce with:

\`\`\`sh
npm run bench
\`\`\`

Machine: ${m.cpu}, ${m.memory}; ${m.kernel}; Node ${m.node}; ${m.rustc}; ${m.chromium}.
${
  res.load_start
    ? `Load average (1, 5, 15 min) ${res.load_start} at the start, ${res.load_end} at the end`
    : `Load average (1, 5, 15 min) ${res.scale.load_start} → ${res.scale.load_end} around section 12`
}: the machine was shared with other builds, so absolute figures are worse than on an idle one.

Peers: **Node peer** = \`@durable-streams/server\` 0.3.7 (upstream Node reference
server, file-backed store); **Rust peer** = \`durable-streams-server\` ${RUST_PEER_VERSION}
(crates.io, axum, \`file-durable\` store, fsynced). **Ours** = \`durable-session-server\`
(SQLite WAL, \`synchronous=FULL\`, acknowledged only when durable). All on
loopback, one load generator (\`bench/\`, Rust, bounded counts and time).
Ratios are "times better than the peer" (> 1× means we are ahead).

## Where we stand against the release targets

| target | measured | met |
|---|---|:---:|
${targets.map(([t, v, ok]) => `| ${t} | ${v} | ${ok ? "yes" : "**no**"} |`).join("\n")}

## 1. Append throughput (100-byte JSON messages, durable)

${head}
${row("sequential, 1 producer (msg/s)", (r) => r?.append_seq.rate)}
${row("  ack latency p50 (ms)", (r) => r?.append_seq.p50_ms, 2, false)}
${row("  ack latency p99 (ms)", (r) => r?.append_seq.p99_ms, 2, false)}
${row("64 producers on 64 streams (msg/s)", (r) => r?.append_conc.rate)}
${row("  ack latency p50 (ms)", (r) => r?.append_conc.p50_ms, 2, false)}
${row("  ack latency p99 (ms)", (r) => r?.append_conc.p99_ms, 2, false)}

Counts: ${f(N.seq)} sequential appends; ${f(N.conc)} appends over 64 producers.

## 2. Catch-up read (${f(N.catchup)} messages, from -1 to the tail)

${head}
${row("messages/s", (r) => r?.catchup.rate)}
${row("HTTP requests needed", (r) => r?.catchup.requests, 0, false)}

## 3. Live fan-out (1 writer at 100 msg/s, ${f(N.fanSubs)} subscribers, ${f(N.fanCount)} messages)

Delivery latency from append to receipt, over every (message, subscriber) pair.

| | ours SSE | ours WebSocket | Node peer SSE | Rust peer SSE | ours SSE vs Node | ours SSE vs Rust |
|---|---:|---:|---:|---:|---:|---:|
| p50 (ms) | ${f(S.ours.fanout_sse.p50_ms, 2)} | ${f(S.ours.fanout_ws.p50_ms, 2)} | ${f(S.node.fanout_sse.p50_ms, 2)} | ${f(S.rust.fanout_sse.p50_ms, 2)} | ${ratio(S.ours.fanout_sse.p50_ms, S.node.fanout_sse.p50_ms, false)} | ${ratio(S.ours.fanout_sse.p50_ms, S.rust.fanout_sse.p50_ms, false)} |
| p99 (ms) | ${f(S.ours.fanout_sse.p99_ms, 2)} | ${f(S.ours.fanout_ws.p99_ms, 2)} | ${f(S.node.fanout_sse.p99_ms, 2)} | ${f(S.rust.fanout_sse.p99_ms, 2)} | ${ratio(S.ours.fanout_sse.p99_ms, S.node.fanout_sse.p99_ms, false)} | ${ratio(S.ours.fanout_sse.p99_ms, S.rust.fanout_sse.p99_ms, false)} |
| max (ms) | ${f(S.ours.fanout_sse.max_ms, 2)} | ${f(S.ours.fanout_ws.max_ms, 2)} | ${f(S.node.fanout_sse.max_ms, 2)} | ${f(S.rust.fanout_sse.max_ms, 2)} | | |
| delivered / expected | ${f(S.ours.fanout_sse.received)} / ${f(S.ours.fanout_sse.expected)} | ${f(S.ours.fanout_ws.received)} / ${f(S.ours.fanout_ws.expected)} | ${f(S.node.fanout_sse.received)} / ${f(S.node.fanout_sse.expected)} | ${f(S.rust.fanout_sse.received)} / ${f(S.rust.fanout_sse.expected)} | | |

## 4. Idle memory (${f(N.idle)} idle live subscriptions)

Growth of the server's resident memory (VmRSS) divided by the subscriptions held.

| | ours SSE | ours WebSocket | Node peer SSE | Rust peer SSE | ours SSE vs Node | ours SSE vs Rust |
|---|---:|---:|---:|---:|---:|---:|
| KB per subscription | ${f(S.ours.idle_sse.kb_per_subscription, 1)} | ${f(S.ours.idle_ws.kb_per_subscription, 1)} | ${f(S.node.idle_sse.kb_per_subscription, 1)} | ${f(S.rust.idle_sse.kb_per_subscription, 1)} | ${ratio(S.ours.idle_sse.kb_per_subscription, S.node.idle_sse.kb_per_subscription, false)} | ${ratio(S.ours.idle_sse.kb_per_subscription, S.rust.idle_sse.kb_per_subscription, false)} |

## 5. SDK event throughput in Chromium (${f(N.deltas)} text deltas, median of ${N.rounds})

| | events/s | vs plain-JS baseline |
|---|---:|---:|
| plain JS: native WebSocket + JSON.parse into a callback | ${f(tp.baseline)} | 1.00× |
| SDK, JS API (\`session.onEvent\`, chat view folded, persistence off) | ${f(tp.js)} | ${f(tp.js / tp.baseline, 2)}× |
| SDK, Leptos signal (the demo app: navigation to all events counted, Wasm load included) | ${f(tp.leptos)} | ${f(tp.leptos / tp.baseline, 2)}× |

## 6–8. Latencies in Chromium (median of ${N.rounds})

| | ms |
|---|---:|
| resume: socket reopened after a drop → first missed event delivered | ${f(res.browser.resume.ms, 1)} |
| one WebSocket round trip (ping → pong), for comparison | ${f(res.browser.resume.rtt_ms, 2)} |
| second tab: navigation → first live delta rendered in the demo | ${f(res.browser.live_view_ms, 0)} |
| cancel: stop pressed in tab B → \`cancelled\` rendered in tab A | ${f(res.browser.cancel_ms, 0)} |

## 9. Size (gzip level 9)

| | bytes |
|---|---:|
| npm package: Wasm + JS glue | ${f(res.size.package)} |
| demo app: Wasm + JS + HTML + CSS | ${f(res.size.demo)} |

How the package got below 60 KB: see the history in git for \`docs/benchmarks.md\`
(serde replaced by a small JSON module, lists instead of maps, a small
allocator, no panicking string slicing, short import names).

## 10. Persistence in Chromium (IndexedDB, the npm package)

Sessions of 100 and ${f(P.long.events)} events (finished turns of 100 events — a
question, an answer of 97 deltas — then a question whose answer streams),
each opened with persistence on (the default) in a fresh browser context;
then ${N.batches} live batches of ${BATCH} text deltas into the open answer, one at a
time. *Apply one batch* is the time the page spends in the WebSocket's
message handler for the batch's frame: parse, fold into the chat view, start
the IndexedDB write (one \`put\`), run the app's \`onEvent\` and \`onChange\`
callbacks (the transcript as JS objects: only the items the batch changed
are converted; mean of the middle 80 %). Bytes are what IndexedDB \`put\`s
carried (keys and values).

| | 100-event session | ${f(P.long.events)}-event session |
|---|---:|---:|
| apply one batch of ${BATCH} events, mean (ms) | ${f(P.short.ms, 3)} | ${f(P.long.ms, 3)} |
| apply one batch of ${BATCH} events, median (ms) | ${f(P.short.median_ms, 3)} | ${f(P.long.median_ms, 3)} |

| bytes written per event (${f(P.long.events)}-event session) | bytes |
|---|---:|
| the event's JSON, for comparison | ${f(P.event_bytes, 1)} |
| catch-up (${f(P.long.events)} events, in the batches the server sent) | ${f(P.catchup_bytes_per_event, 1)} |
| live, batches of ${BATCH} events (${f(P.batch_records_per_batch, 1)} record per batch) | ${f(P.batch_bytes_per_event, 1)} |
| live, one event per batch | ${f(P.single_bytes_per_event, 1)} |

Each write appends one record — the new events and the offsets they span
(\`core::persist\`) — so neither its time nor its bytes depend on how long
the session is. The \`localStorage\` snapshot this replaced rewrote the whole
transcript (about ${f((P.long.events * P.event_bytes) / 1024)} KiB at ${f(P.long.events)} events) every 250 ms
while events streamed. Before the chat view reported which item each event
changed, \`onChange\` converted the whole transcript for every batch: 1.37 and
1.80 ms per batch in the 10,000-event session against 0.64 and 0.79 ms in the
100-event one (two runs of this benchmark, 2026-12-03, same machine); since,
the two are equal within noise.

${renderSoak(res.soak, m)}
${renderScaleOut(res, m)}
## Where we fall short, and why

The evidence for each shortfall comes from the figures above and from
changes measured one at a time while this page was written.

- **Sequential appends (${ratio(S.ours.append_seq.rate, S.rust.append_seq.rate)} the Rust peer).** Median latency
  ${f(S.ours.append_seq.p50_ms, 2)} ms vs ${f(S.rust.append_seq.p50_ms, 2)} ms: each request is one SQLite transaction —
  a lookup of the stream row, the insert, the tail update, a savepoint and a
  \`COMMIT\` that syncs the WAL — and a single producer gets no group commit.
  With 64 producers group commit shares the sync: ${ratio(S.ours.append_conc.rate, S.rust.append_conc.rate)}.
  Next: keep stream rows in the writer's memory (it owns every write) and
  skip savepoints when a batch holds one request.
- **Catch-up (${ratio(S.ours.catchup.rate, S.rust.catchup.rate)}).** We answer ${f(N.catchup)} messages in ${f(S.ours.catchup.requests)} responses (a 1 MiB
  cap per response) where the Rust peer sends ${f(S.rust.catchup.requests)}, and JSON mode stores one row
  per message, so a read walks 10,000 rows per response. Next: one row per
  append batch, and a larger cap for reads far behind the tail.
- **Fan-out p99 (WebSocket ${f(S.ours.fanout_ws.p99_ms, 1)} ms, SSE ${f(S.ours.fanout_sse.p99_ms, 1)} ms).** Serving live readers from
  the change hub's memory instead of one store read per subscriber took the
  SSE p99 at 1,000 subscribers from 107 ms to about 10 ms. The WebSocket path still builds one frame
  per subscriber (each carries its own subscription id) and passes it
  through the connection's writer task; SSE writes straight into the
  response. The load generator shares the same two cores. Next: render the
  shared part of a frame once per append.
- **Idle SSE connections (${f(S.ours.idle_sse.kb_per_subscription, 1)} KB).** Most of it is hyper's per-connection
  HTTP/1 buffers, which \`axum::serve\` does not let us shrink. WebSocket
  connections went from 124 KB to ${f(S.ours.idle_ws.kb_per_subscription, 1)} KB once tungstenite's 128 KiB buffers
  were cut to 1 KiB and the append worker started on first use.
- **SDK event throughput (${f(tp.js / tp.baseline, 2)}× the plain-JS baseline).** Per event the SDK
  parses the frame in Wasm, folds the event into the chat view and keeps it
  for the reload snapshot, then hands JS the batch (one \`JSON.parse\` per
  frame since this page was first written; one per event took it to 0.37×).
  The baseline does one \`JSON.parse\` per frame and nothing else. Next: fold
  the chat view only when something reads it.
- **Package size (${f(res.size.package / 1000, 1)} KB gzip, release target 40 KB).** The history of the
  reduction from 153 KB and where the remaining bytes go are in the git
  history of this page (commit "docs/benchmarks.md: package size …").
`;
}

// ------------------------------------------------------------ scaling

/**
 * The measurements behind docs/scaling.md, on one redis-server (durable
 * settings): (1) memory per idle WebSocket subscription on a Redis-backed
 * node; (2) appends/s through node A with node B listening, with the CPU
 * time of A, B and Redis; (3) the same fan-out (one writer on A, SCALE.subs
 * WebSocket subscribers) spread over 1, 2, then 3 fresh nodes, with the CPU
 * time of each node and of Redis.
 */
async function scalingRun() {
  log(`scaling: ${SCALE.idle} idle subscriptions; ${SCALE.appends} appends; fan-out to ${SCALE.subs} over 1, 2, 3 nodes`);
  const redis = await startRedis();
  const out = { counts: SCALE, load_start: loadavg() };
  const withNodes = async (count, body) => {
    const nodes = [];
    try {
      while (nodes.length < count) nodes.push(await servers.ours(["--store", redis.url]));
      return await body(nodes);
    } finally {
      for (const n of nodes) await n.stop();
    }
  };
  try {
    out.idle = await withNodes(1, ([a]) => bench(a.url, ["idle", "--mode", "ws", "--subscriptions", String(SCALE.idle), "--pid", String(a.pid)], 120));
    log(`scaling: ${out.idle.kb_per_subscription.toFixed(1)} KB per idle WebSocket subscription`);
    out.append = await withNodes(2, ([a, b]) =>
      bench(a.url, ["append", "--producers", String(SCALE.producers), "--count", String(SCALE.appends), ...clusterArgs([], [a.pid, b.pid, redis.pid])], 120),
    );
    log(`scaling: ${out.append.rate.toFixed(0)} appends/s through node A; CPU A/B/Redis ${out.append.cpu.map((c) => c.cpu_seconds.toFixed(2)).join(" / ")} s`);
    out.steps = [];
    for (const count of [1, 2, 3]) {
      const r = await withNodes(count, (nodes) => {
        const args = ["fanout", "--mode", "ws", "--subscribers", String(SCALE.subs), "--rate", String(SCALE.rate), "--count", String(SCALE.count)];
        return bench(nodes[0].url, [...args, ...clusterArgs(nodes.slice(1), [...nodes.map((n) => n.pid), redis.pid])], 180);
      });
      r.load = loadavg();
      out.steps.push(r);
      log(`scaling: ${count} node(s): p99 ${fmt(r.p99_ms, 1)} ms, delivered ${r.received} / ${r.expected}, node CPU ${r.cpu.slice(0, -1).map((c) => c.cpu_seconds.toFixed(2)).join(" + ")} s`);
    }
  } finally {
    await redis.stop();
  }
  out.load_end = loadavg();
  return out;
}

/**
 * The capacity model of docs/scaling.md from the figures of `scalingRun`.
 * Per node: memory per subscription, CPU per delivered message, CPU per
 * append it only hears about (every node receives every append on the one
 * change channel); Redis: appends/s measured and CPU per append.
 */
function capacityModel(k) {
  const [a, b, redis] = k.append.cpu.map((c) => c.cpu_seconds);
  const appends = k.append.messages;
  const one = k.steps[0];
  const cPub = b / appends; // CPU of a node per append it only hears about
  const cAppend = (a - b) / appends; // the HTTP append itself, on the node that takes it
  const cRedis = redis / appends;
  const cDeliver = (one.cpu[0].cpu_seconds - one.written * (cPub + cAppend)) / one.received;
  const m = {
    kbPerSub: k.idle.kb_per_subscription,
    cPub,
    cAppend,
    cRedis,
    cDeliver,
    redisRate: k.append.rate,
    redisUtil: k.append.cpu[2].utilization,
  };
  // The 1 → 2 → 3 check: each node's CPU predicted from the 1-node run.
  m.check = k.steps.map((r, i) => {
    const nodes = i + 1;
    const predicted = r.nodes.map((n, j) => n.received * cDeliver + r.written * (cPub + (j === 0 ? cAppend : 0)));
    const measured = r.cpu.slice(0, nodes).map((c) => c.cpu_seconds);
    return { nodes, r, predicted, measured };
  });
  // Past this machine: 1,000,000 subscribers, 10,000 appends/s.
  const node = { cores: 2, gib: 4, busy: 0.5, memShare: 0.7 };
  m.node = node;
  m.scenarios = [2, 50].map((perAppend) => {
    const subs = 1_000_000;
    const rate = 10_000;
    const deliveries = rate * perAppend;
    const cpuFree = node.cores * node.busy - rate * cPub;
    const cpuNodes = cpuFree > 0 ? Math.ceil((deliveries * cDeliver + rate * cAppend) / cpuFree) : Infinity;
    const memNodes = Math.ceil((subs * k.idle.kb_per_subscription * 1024) / (node.gib * 2 ** 30 * node.memShare));
    const redisCpuShards = Math.ceil((rate * cRedis) / 0.7);
    const redisRateShards = Math.ceil(rate / k.append.rate);
    return { perAppend, subs, rate, deliveries, cpuFree, cpuNodes, memNodes, nodes: Math.max(cpuNodes, memNodes), redisCpuShards, redisRateShards };
  });
  return m;
}

/** The measured part of docs/scaling.md (between its markers). */
function renderScaling(k, mach, secs) {
  const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "—");
  const us = (s) => f(s * 1e6, 1);
  const m = capacityModel(k);
  const C = k.counts;
  const check = m.check
    .map(({ nodes, r, predicted, measured }) => {
      const sum = (xs) => xs.reduce((x, y) => x + y, 0);
      const reached = r.written / r.seconds;
      const cross = r.nodes.length > 1 ? f(Math.max(...r.nodes.slice(1).map((n) => n.p99_ms)), 1) : "—";
      return `| ${nodes} | ${r.nodes.map((n) => f(n.subscribers)).join(" / ")} | ${predicted.map((x) => f(x, 2)).join(" / ")} | ${measured.map((x) => f(x, 2)).join(" / ")} | ${f(sum(predicted), 2)} | ${f(sum(measured), 2)} | ${f(reached)} | ${f(r.received / r.seconds)} | ${f(r.received)} / ${f(r.expected)} | ≤ ${f(m.check[0].r.p99_ms, 1)} | ${f(r.p99_ms, 1)} | ${cross} | ${f(r.cpu.at(-1).cpu_seconds, 2)} | ${r.load} |`;
    })
    .join("\n");
  const scen = m.scenarios
    .map((s) => `| ${f(s.perAppend)} | ${f(s.deliveries)} | ${f(s.cpuFree, 2)} | ${f(s.cpuNodes)} | ${f(s.memNodes)} | **${f(s.nodes)}** (${s.cpuNodes >= s.memNodes ? "CPU" : "memory"}) | ${f(s.redisRateShards)} | ${f(s.redisCpuShards)} |`)
    .join("\n");
  return `<!-- scaling: begin (written by \`node scripts/bench.mjs --scaling\`; do not edit by hand) -->

Measured ${new Date().toISOString().slice(0, 10)} in ${f(secs)} s on ${mach.cpu}, ${mach.memory}; ${mach.kernel}; ${mach.rustc}.
Load average (1, 5, 15 min) ${k.load_start} at the start, ${k.load_end} at the end (the machine is shared with other builds).
One redis-server 7 (\`appendonly yes\`, \`appendfsync always\`), release builds, all on loopback, the load generator on the same 2 cores.

**Per-node figures**

| figure | value | how |
|---|---:|---|
| memory per idle live WebSocket subscription (KB) | ${f(m.kbPerSub, 1)} | RSS growth of one Redis-backed node over ${f(k.idle.subscriptions)} idle subscriptions |
| node CPU per delivered message (µs) | ${us(m.cDeliver)} | node CPU time over the 1-node fan-out (${f(C.subs)} WebSocket subscribers, ${f(C.rate)} appends/s, ${f(C.count)} appends) ÷ messages delivered, the append costs below taken out |
| node CPU per append it only hears about (µs) | ${us(m.cPub)} | CPU time of node B (no clients) while ${f(k.append.messages)} appends went through node A |
| node CPU per HTTP append it takes (µs) | ${us(m.cAppend)} | node A's CPU time minus node B's, ÷ appends |
| Redis CPU per append (µs) | ${us(m.cRedis)} | redis-server's CPU time over the same appends (two nodes subscribed to the change channel) |
| appends/s through one Redis | ${f(m.redisRate)} | ${f(C.producers)} producers on ${f(C.producers)} streams, one node; ack p99 ${f(k.append.p99_ms, 1)} ms; Redis busy ${f(m.redisUtil * 100)} % of one core |

**The model's projection** (1,000,000 live subscribers, 10,000 appends/s; a node = ${m.node.cores} cores at ≤ ${f(m.node.busy * 100)} % busy and ${m.node.gib} GiB, ≤ ${f(m.node.memShare * 100)} % of it for subscriptions)

| subscribers per append | deliveries/s | CPU per node left after hearing every append (cores) | nodes for CPU | nodes for memory | nodes | Redis shards by measured appends/s | Redis shards by CPU (≤ 70 % of a core) |
|---:|---:|---:|---:|---:|---:|---:|---:|
${scen}

**The check: the same fan-out over 1 → 2 → 3 nodes** (one writer on node A at ${f(C.rate)} appends/s, ${f(C.count)} appends; ${f(C.subs)} WebSocket subscribers spread round-robin over the nodes; CPU seconds over the writing window; predicted from the 1-node run and the per-append costs)

| nodes | subscribers per node | node CPU predicted (s, per node) | node CPU measured (s, per node) | total predicted (s) | total measured (s) | appends/s the writer reached (of ${f(C.rate)}) | deliveries/s | delivered / expected | p99 predicted on own cores (ms) | p99 measured (ms) | p99 on nodes B, C (ms) | Redis CPU (s) | load average after |
|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
${check}

<!-- scaling: end -->`;
}

/** `doc` with its measured part replaced (or appended). */
function withScalingSection(doc, section) {
  const start = doc.indexOf("<!-- scaling: begin");
  const endMark = "<!-- scaling: end -->";
  const end = doc.indexOf(endMark);
  if (start >= 0 && end > start) return doc.slice(0, start) + section + doc.slice(end + endMark.length);
  return `${doc}\n${section}\n`;
}
