// The public Durable Streams conformance suite, pinned in package.json,
// against a freshly started reference server.
import { afterAll, beforeAll, describe } from "vitest";
import { runConformanceTests } from "@durable-streams/server-conformance-tests";
import { startServer } from "../support/server.mjs";

export const LONG_POLL_TIMEOUT_MS = 1_000;

/**
 * Runs the suite against a server started with `args`, after `before`
 * (which may return extra server args) and stopped before `after`.
 * @param {string} name
 * @param {{ before?: () => Promise<string[]>, after?: () => Promise<void> }} [hooks]
 */
export function conformance(name, hooks = {}) {
  // `subscriptions: true` runs the suite's subscription group (PROTOCOL.md
  // §6-7): its webhook receivers listen on 127.0.0.1, the development
  // exception the server allows only with --webhook-allow-loopback.
  const config = { baseUrl: "", longPollTimeoutMs: LONG_POLL_TIMEOUT_MS, subscriptions: true };
  let server;

  beforeAll(async () => {
    const args = [...((await hooks.before?.()) ?? []), "--webhook-allow-loopback"];
    server = await startServer({ longPollTimeoutMs: LONG_POLL_TIMEOUT_MS, args });
    config.baseUrl = server.url;
  });

  afterAll(async () => {
    await server?.stop();
    await hooks.after?.();
  });

  describe(name, () => {
    runConformanceTests(config);
  });
}
