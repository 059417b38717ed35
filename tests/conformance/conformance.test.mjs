// The conformance suite against a server on the embedded SQLite store.
import { conformance } from "./suite.mjs";

conformance("durable-session-server");
