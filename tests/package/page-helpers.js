// Helpers shared by the package check pages (served as a plain ES module).

/** Resolves once `cond()` holds; rejects after `ms`, naming `what`. */
export const until = (what, cond, ms = 15_000) =>
  new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });

/** A token from the server's test hook (`--test-hooks`, `--auth jwt`). */
export async function mint(server, sub, grant, ttlMs) {
  const res = await fetch(`${server}/v1/test/token?sub=${sub}&grant=${encodeURIComponent(grant)}&ttl_ms=${ttlMs}`);
  if (!res.ok) throw new Error(`mint: HTTP ${res.status}`);
  return res.text();
}
