// The chaos test's checks catch what they are meant to catch (so a passing
// chaos run means something): duplicates, gaps, bad offsets, events after
// run_finished, unhonoured cancels, messages stored twice or lost.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkEvents, offsetClaims, checkRuns, checkActions } from "./checks.mjs";

const um = (id, text = id) => ({ type: "user_message", id, author: "a", text });
const start = (run, m) => ({ type: "run_started", run_id: run, agent: "sim", in_reply_to: m });
const delta = (run, d) => ({ type: "text_delta", run_id: run, agent: "sim", delta: d });
const fin = (run, status = "completed") => ({ type: "run_finished", run_id: run, status });
const cancel = (run, by = "a") => ({ type: "cancel", run_id: run, by });

const log = [um("m1"), start("r1", "m1"), delta("r1", "x"), delta("r1", "x"), fin("r1")];
const off = (i) => String(i).padStart(4, "0");
const delivered = log.map((e, i) => [off(i + 1), e]);

test("checkEvents: equal lists pass; a duplicate, a gap, a missing tail and an extra event are named", () => {
  assert.deepEqual(checkEvents("p", delivered, log), []);
  const dup = [...delivered.slice(0, 2), delivered[1], ...delivered.slice(2)];
  assert.match(checkEvents("p", dup, log)[0], /duplicate/);
  const gap = [...delivered.slice(0, 1), ...delivered.slice(2)];
  assert.match(checkEvents("p", gap, log)[0], /gap of 1/);
  assert.match(checkEvents("p", delivered.slice(0, 3), log)[0], /delivered 3 event\(s\) of the 5/);
  assert.match(checkEvents("p", [...delivered, [off(9), um("m9")]], log)[0], /more than the log/);
  // A list that starts later in the log (after a reload).
  assert.deepEqual(checkEvents("p", delivered.slice(2), log, 2), []);
  // A prefix (what a page had when it reloaded).
  assert.deepEqual(checkEvents("p", delivered.slice(0, 3), log, 0, { prefix: true }), []);
  assert.match(checkEvents("p", [delivered[0], delivered[2]], log, 0, { prefix: true })[0], /gap/);
});

test("offsetClaims: per event offsets strictly increase; HTTP batches share one and claim it at their end", () => {
  assert.deepEqual(offsetClaims("p", delivered, { perEvent: true }).claims.length, 5);
  const same = delivered.map(([, e]) => ["0001", e]);
  assert.match(offsetClaims("p", same, { perEvent: true }).problems[0], /does not follow/);
  const batches = [["0002", log[0]], ["0002", log[1]], ["0005", log[2]], ["0005", log[3]], ["0005", log[4]]];
  const r = offsetClaims("p", batches, { perEvent: false });
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.claims, [{ offset: "0002", index: 1 }, { offset: "0005", index: 4 }]);
  const back = [["0005", log[0]], ["0002", log[1]]];
  assert.match(offsetClaims("p", back, { perEvent: false }).problems[0], /does not follow/);
});

test("checkRuns: events after run_finished, unfinished runs, double answers and unhonoured cancels are caught", () => {
  assert.deepEqual(checkRuns(log), []);
  assert.match(checkRuns([...log, delta("r1", "late")])[0], /after its run_finished/);
  assert.match(checkRuns(log.slice(0, 4))[0], /never finished/);
  assert.match(checkRuns([...log, start("r2", "m1"), fin("r2")])[0], /2 run\(s\) answer it/);
  // A cancel before the end must end the run cancelled...
  const ignored = [um("m1"), start("r1", "m1"), cancel("r1"), delta("r1", "x"), fin("r1", "completed")];
  assert.match(checkRuns(ignored).join("\n"), /was not honoured/);
  const honoured = [um("m1"), start("r1", "m1"), cancel("r1"), fin("r1", "cancelled")];
  assert.deepEqual(checkRuns(honoured), []);
  // ...a cancel after the end changes nothing.
  assert.deepEqual(checkRuns([...log, cancel("r1")]), []);
  assert.match(checkRuns([...log, cancel("r9")])[0], /never started/);
});

test("checkActions: each action exactly once, no unknown user message", () => {
  const acts = [
    { id: "A-1", kind: "send", a: "m1", author: "a" },
    { id: "A-2", kind: "cancel", a: "r1", author: "a" },
  ];
  const withCancel = [...log, cancel("r1")];
  assert.deepEqual(checkActions(acts, withCancel), []);
  assert.match(checkActions(acts, [...withCancel, um("m1b", "m1")])[0], /2 time\(s\)/);
  assert.match(checkActions(acts, log)[0], /A-2 .* 0 time\(s\)/);
  assert.match(checkActions(acts, [...withCancel, um("zz")])[0], /nobody sent/);
});

test("checkAgentOutput: a completed answer has every token once; lost or repeated deltas are caught", async () => {
  const { checkAgentOutput } = await import("./checks.mjs");
  const run = (n, status = "completed") => [um("m1"), start("r1", "m1"), ...Array.from({ length: n }, (_, i) => delta("r1", `t${i}`)), fin("r1", status)];
  assert.deepEqual(checkAgentOutput(run(6), 6), []);
  assert.match(checkAgentOutput(run(5), 6)[0], /expected 6/);
  assert.match(checkAgentOutput(run(7), 6)[0], /expected 6/);
  assert.deepEqual(checkAgentOutput(run(2, "cancelled"), 6), [], "a cancelled answer may have any length");
  const lane = (agent, n) => Array.from({ length: n }, (_, i) => ({ type: "text_delta", run_id: "r2", agent, delta: `${i}` }));
  const multi = [
    um("m2"),
    { type: "run_started", run_id: "r2", agent: "orchestrator", in_reply_to: "m2" },
    ...lane("researcher", 2),
    ...lane("writer", 2),
    { type: "progress", run_id: "r2", agent: "writer", text: "writer: done" },
    ...lane("orchestrator", 1),
    fin("r2"),
  ];
  assert.deepEqual(checkAgentOutput(multi, 6), []);
  assert.match(checkAgentOutput(multi.filter((e, i) => i !== 3), 6)[0], /per sub-agent/);
  const failedNote = multi.map((e) => (e.type === "progress" ? { ...e, text: "writer: failed" } : e));
  assert.match(checkAgentOutput(failedNote, 6)[0], /failed append/);
});
