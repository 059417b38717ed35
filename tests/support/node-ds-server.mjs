// Runs the upstream Node reference server (@durable-streams/server, pinned in
// package.json) on loopback and prints its URL — the "any Durable Streams
// server" the SDK's HTTP transport is tested against.
//   node tests/support/node-ds-server.mjs [port] [dataDir]
import { DurableStreamTestServer } from "@durable-streams/server";

const port = Number(process.argv[2] ?? 0);
const dataDir = process.argv[3];
const server = new DurableStreamTestServer({ port, host: "127.0.0.1", longPollTimeout: 2_000, ...(dataDir ? { dataDir } : {}) });
await server.start();
console.log(`node-ds-server listening on ${server.url}`);
const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
