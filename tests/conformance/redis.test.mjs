// The conformance suite against a server on the Redis store: a redis-server
// of its own (durable settings, temp dir, loopback port), killed at the end.
import { startRedis } from "../support/redis.mjs";
import { conformance } from "./suite.mjs";

let redis;
conformance("durable-session-server --store redis", {
  before: async () => {
    redis = await startRedis();
    return ["--store", redis.url];
  },
  after: async () => {
    await redis?.stop();
  },
});
