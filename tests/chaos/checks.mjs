// The checks of the chaos test, as pure functions over the server's log and
// what the pages recorded. Each returns a list of problems (strings); an
// empty list means the check holds. checks.test.mjs proves each one catches
// what it is meant to catch.

/** Event types only an agent writes; §11: none may follow its run's run_finished. */
export const AGENT_TYPES = new Set(["run_started", "text_delta", "progress", "steer_applied", "run_finished"]);

const brief = (e) => JSON.stringify(e).slice(0, 160);

function equalJson(a, b) {
  return canonical(a) === canonical(b);
}

/** JSON with sorted keys, so objects compare by content. */
export function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => v[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/**
 * The events a page delivered (`[[offset, event], …]`) against the log
 * (events in stream order): same events, same order, nothing missing, nothing
 * repeated. `from` is where in the log the delivered list should start;
 * with `prefix` the list may stop before the end of the log (what a page had
 * when it reloaded).
 */
export function checkEvents(label, delivered, log, from = 0, { prefix = false } = {}) {
  const problems = [];
  const expected = log.slice(from);
  const n = Math.min(delivered.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (!equalJson(delivered[i][1], expected[i])) {
      // Say what happened: a repeat, a gap, or something else.
      const key = canonical(delivered[i][1]);
      const seenBefore = delivered.slice(0, i).some(([, e]) => canonical(e) === key);
      const later = expected.findIndex((e, j) => j > i && canonical(e) === key);
      const what = seenBefore ? "a duplicate" : later > i ? `a gap of ${later - i} event(s)` : "a different event";
      problems.push(
        `${label}: delivered event #${from + i} is ${what}: got ${brief(delivered[i][1])}, the log has ${brief(expected[i])}`,
      );
      return problems;
    }
  }
  if (delivered.length < expected.length && !prefix) {
    problems.push(
      `${label}: delivered ${delivered.length} event(s) of the ${expected.length} the log has from #${from}; first missing: ${brief(expected[delivered.length])}`,
    );
  } else if (delivered.length > expected.length) {
    problems.push(`${label}: delivered ${delivered.length - expected.length} event(s) more than the log has: ${brief(delivered[expected.length][1])}`);
  }
  return problems;
}

/**
 * What a delivered list says about offsets, to be verified against the
 * server. `perEvent` (WebSocket): every event carries the offset just after
 * it, so offsets strictly increase and event #i's offset must have exactly
 * `n - 1 - i` events after it in the log. Otherwise (HTTP: the events of one
 * response share the response's next offset) offsets never decrease and the
 * last event of each run of equal offsets carries its own offset.
 * Returns { claims: [{ offset, index }], problems }.
 */
export function offsetClaims(label, delivered, { perEvent, from = 0 }) {
  const problems = [];
  const claims = [];
  for (let i = 0; i < delivered.length; i++) {
    const [offset] = delivered[i];
    if (typeof offset !== "string" || offset === "") {
      problems.push(`${label}: event #${from + i} has no offset`);
      return { claims, problems };
    }
    if (i > 0) {
      const prev = delivered[i - 1][0];
      if (perEvent ? !(offset > prev) : offset < prev) {
        problems.push(`${label}: offset of event #${from + i} (${offset}) does not follow ${prev}`);
        return { claims, problems };
      }
    }
    const last = i === delivered.length - 1 || delivered[i + 1][0] !== offset;
    if (perEvent || last) claims.push({ offset, index: from + i });
  }
  return { claims, problems };
}

/**
 * Runs, as the log tells them (§11): one run_started per user message, no
 * agent event of a run after its first run_finished, exactly one
 * run_finished, every run finished, every cancel honoured (the run ended
 * `cancelled`, or had already finished before the cancel).
 */
export function checkRuns(log) {
  const problems = [];
  const runs = new Map(); // run_id -> { started, finished, status, inReplyTo }
  const answers = new Map(); // user message id -> run ids
  const messages = new Set();
  log.forEach((e, i) => {
    if (e.type === "user_message") {
      messages.add(e.id);
      return;
    }
    if (!e.run_id) return;
    let run = runs.get(e.run_id);
    if (!run) {
      run = { started: null, finished: null, status: null, finishes: 0 };
      runs.set(e.run_id, run);
    }
    if (e.type === "run_started") {
      if (run.started !== null) problems.push(`run ${e.run_id}: a second run_started at #${i}`);
      else run.started = i;
      if (!answers.has(e.in_reply_to)) answers.set(e.in_reply_to, []);
      answers.get(e.in_reply_to).push(e.run_id);
      if (!messages.has(e.in_reply_to)) problems.push(`run ${e.run_id}: run_started at #${i} answers ${e.in_reply_to}, which is not an earlier user message`);
    } else if (AGENT_TYPES.has(e.type) && run.started === null) {
      problems.push(`run ${e.run_id}: ${e.type} at #${i} before its run_started`);
    }
    if (AGENT_TYPES.has(e.type) && run.finished !== null) {
      problems.push(`run ${e.run_id}: ${e.type} at #${i} after its run_finished at #${run.finished}: ${brief(e)}`);
    }
    if (e.type === "run_finished") {
      run.finishes++;
      if (run.finished === null) {
        run.finished = i;
        run.status = e.status;
      }
    }
  });
  for (const id of messages) {
    const answered = answers.get(id) ?? [];
    if (answered.length !== 1) problems.push(`user message ${id}: ${answered.length} run(s) answer it (${answered.join(", ")}), expected exactly 1`);
  }
  for (const [runId, run] of runs) {
    if (run.started === null) continue; // reported above for agent events; client controls of unknown runs below
    if (run.finished === null) problems.push(`run ${runId}: never finished`);
    if (run.finishes > 1) problems.push(`run ${runId}: ${run.finishes} run_finished events`);
  }
  log.forEach((e, i) => {
    if (e.type !== "cancel" && e.type !== "steer") return;
    const run = runs.get(e.run_id);
    if (!run || run.started === null) {
      problems.push(`${e.type} at #${i} names run ${e.run_id}, which never started`);
      return;
    }
    if (e.type !== "cancel" || run.finished === null) return;
    if (run.finished > i && run.status !== "cancelled") {
      problems.push(
        `cancel at #${i} (by ${e.by}) was not honoured: run ${e.run_id} went on and ended "${run.status}" at #${run.finished}`,
      );
    }
  });
  return problems;
}

/**
 * The actions the pages did, against the log: each sent message is in the
 * log exactly once (and no other user message is), each cancel and each
 * steer exactly once. `actions`: [{ id, kind, a, b, author }].
 */
export function checkActions(actions, log) {
  const problems = [];
  const count = (pred) => log.filter(pred).length;
  const sentTexts = new Set();
  for (const act of actions) {
    let n;
    if (act.kind === "send") {
      sentTexts.add(act.a);
      n = count((e) => e.type === "user_message" && e.text === act.a && e.author === act.author);
    } else if (act.kind === "cancel") {
      n = count((e) => e.type === "cancel" && e.run_id === act.a && e.by === act.author);
    } else if (act.kind === "steer") {
      n = count((e) => e.type === "steer" && e.run_id === act.a && e.text === act.b && e.by === act.author);
    } else continue;
    if (n !== 1) problems.push(`action ${act.id} (${act.kind} ${JSON.stringify(act.kind === "steer" ? act.b : act.a)}) is in the log ${n} time(s), expected exactly once`);
  }
  for (const e of log) {
    if (e.type === "user_message" && !sentTexts.has(e.text)) problems.push(`a user message nobody sent: ${brief(e)}`);
  }
  return problems;
}

/**
 * What the demo agent wrote, counted: a completed single-agent run has
 * exactly `answerTokens` deltas; a completed multi-agent run has
 * `answerTokens / 3` per sub-agent and one summary delta by the
 * orchestrator; no sub-agent reports a failed append. An acknowledged
 * append lost to the server's SIGKILL, or one stored twice after a retry,
 * shows up here.
 */
export function checkAgentOutput(log, answerTokens, { single = "sim", orchestrator = "orchestrator" } = {}) {
  const problems = [];
  const runs = new Map();
  for (const e of log) {
    if (!e.run_id) continue;
    if (!runs.has(e.run_id)) runs.set(e.run_id, { agent: null, status: null, deltas: new Map(), notes: [] });
    const run = runs.get(e.run_id);
    if (e.type === "run_started") run.agent = e.agent;
    if (e.type === "run_finished" && run.status === null) run.status = e.status;
    if (e.type === "text_delta") run.deltas.set(e.agent, (run.deltas.get(e.agent) ?? 0) + 1);
    if (e.type === "progress") run.notes.push(`${e.agent}: ${e.text}`);
  }
  const perLane = Math.max(1, Math.floor(answerTokens / 3));
  for (const [runId, run] of runs) {
    for (const note of run.notes) if (/: failed$/.test(note)) problems.push(`run ${runId}: a sub-agent reports a failed append (${note})`);
    if (run.status !== "completed") continue;
    const counts = Object.fromEntries(run.deltas);
    if (run.agent === single) {
      if ((counts[single] ?? 0) !== answerTokens || run.deltas.size !== 1) {
        problems.push(`run ${runId}: completed with ${JSON.stringify(counts)} deltas, expected ${answerTokens} by ${single}`);
      }
    } else if (run.agent === orchestrator) {
      const lanes = [...run.deltas].filter(([agent]) => agent !== orchestrator);
      if ((counts[orchestrator] ?? 0) !== 1 || lanes.length === 0 || lanes.some(([, n]) => n !== perLane)) {
        problems.push(`run ${runId}: completed with ${JSON.stringify(counts)} deltas, expected ${perLane} per sub-agent and 1 by ${orchestrator}`);
      }
    }
  }
  return problems;
}
