// A session's log read over plain HTTP, straight from a server, and the
// offsets pages delivered checked against it (the chaos and failover tests).

/** Reads a session's whole log over plain HTTP (directly from the server) from `offset`. */
export async function readLog(serverUrl, sessionId, offset = "-1") {
  const events = [];
  let next = offset;
  for (let i = 0; i < 1000; i++) {
    const res = await fetch(`${serverUrl}/v1/stream/sessions/${encodeURIComponent(sessionId)}?offset=${encodeURIComponent(next)}`);
    if (res.status === 404) return { events, tail: null };
    if (res.status !== 200 && res.status !== 204) throw new Error(`reading the log: HTTP ${res.status} ${await res.text()}`);
    const body = res.status === 200 ? await res.text() : "";
    if (body) events.push(...JSON.parse(body));
    next = res.headers.get("stream-next-offset") ?? next;
    if (res.headers.get("stream-up-to-date") !== null || res.status === 204) return { events, tail: next };
  }
  throw new Error("reading the log did not reach its end in 1000 requests");
}

/** The pages' delivered offsets, checked against the server: offset o of event #i must have exactly n-1-i events after it. */
export async function verifyOffsets(serverUrl, sessionId, n, claimsByLabel) {
  const problems = [];
  const cache = new Map();
  const after = async (offset) => {
    if (!cache.has(offset)) cache.set(offset, readLog(serverUrl, sessionId, offset).then((r) => r.events.length));
    return cache.get(offset);
  };
  for (const [label, claims] of claimsByLabel) {
    // A few requests at a time; stop at the first wrong offset of a page.
    for (let i = 0; i < claims.length; i += 8) {
      const batch = claims.slice(i, i + 8);
      const counts = await Promise.all(batch.map((c) => after(c.offset).catch((e) => `error: ${e.message}`)));
      const bad = batch.findIndex((c, j) => counts[j] !== n - 1 - c.index);
      if (bad >= 0) {
        const c = batch[bad];
        problems.push(`${label}: offset ${c.offset} of event #${c.index} has ${counts[bad]} event(s) after it on the server, expected ${n - 1 - c.index}`);
        break;
      }
    }
  }
  return problems;
}
