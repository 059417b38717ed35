// The core entry point alone: a session with an event type of the app's own,
// and a raw stream. Bundled by the tests (an app importing only the core
// ships no React and no AI SDK code) and type-checked with `tsc --strict`.
import init, { DurableClient } from "durable-sessions";

/** The app's own event: a poll vote, stored in the session next to the chat. */
type Vote = { type: "app.vote"; choice: number; by: string };

await init();
const client = new DurableClient({ url: "http://127.0.0.1:4437" });

// A session: the chat, plus the app's votes, in one ordered log.
const session = client.session<Vote>("demo", { author: "ada" });
session.onChange((items) => {
  for (const item of items) {
    if (item.kind === "user") console.log(`${item.author}: ${item.text}`);
    else if (item.kind === "run") console.log(`${item.agent} (${item.state}): ${item.text}`);
    else console.log(`vote for ${item.event.choice} by ${item.event.by}`);
  }
});
await session.send("Which option?");
await session.append({ type: "app.vote", choice: 2, by: "ada" });

// Any Durable Streams stream: a build log, as text, kept across reloads.
const log = client.stream<string>("logs/build-7", { contentType: "text/plain", persist: true });
log.onEvent(({ offset, data }) => console.log(offset, data));
await log.append("step 1 done\n");
