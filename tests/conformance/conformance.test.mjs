// The public Durable Streams conformance suite, pinned in package.json,
// against a freshly started reference server.
import { afterAll, beforeAll, describe } from "vitest";
import { runConformanceTests } from "@durable-streams/server-conformance-tests";
import { startServer } from "../support/server.mjs";

const LONG_POLL_TIMEOUT_MS = 1_000;
const config = { baseUrl: "", longPollTimeoutMs: LONG_POLL_TIMEOUT_MS };
let server;

beforeAll(async () => {
  server = await startServer({ longPollTimeoutMs: LONG_POLL_TIMEOUT_MS });
  config.baseUrl = server.url;
});

afterAll(async () => {
  await server?.stop();
});

describe("durable-session-server", () => {
  runConformanceTests(config);
});
