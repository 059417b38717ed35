// Type checks of an app's own event types (`tsc --noEmit --strict`, see
// tsconfig.json): compiled, not run. Each `@ts-expect-error` line must fail
// to compile — tsc reports an unused one — so these lines prove the types
// refuse what they should.
import { DurableClient, type AppendEvent, type ChatItem, type SessionEnvelope } from "durable-sessions";
import { useDurableSession } from "durable-sessions/react";

type Vote = { type: "app.vote"; choice: number; by: string };
type Note = { type: "app.note"; text: string };
type Mine = Vote | Note;

export async function roundTrip(client: DurableClient): Promise<number[]> {
  const session = client.session<Mine>("poll");
  // Appending: the app's own events, checked field by field, and core events.
  await session.append({ type: "app.vote", choice: 2, by: "ada" });
  await session.append({ type: "app.note", text: "hi" });
  await session.append({ type: "cancel", run_id: "r1", by: "ada" });
  // @ts-expect-error: `choice` is a number
  await session.append({ type: "app.vote", choice: "two", by: "ada" });
  // @ts-expect-error: a type the session does not declare
  await session.append({ type: "app.other" });
  // @ts-expect-error: `by` is missing
  await session.append({ type: "app.vote", choice: 2 });

  // Receiving: the event narrows to its own type.
  const choices: number[] = [];
  session.onEvent((envelope: SessionEnvelope<Mine>) => {
    const e = envelope.event;
    if (e.type === "app.vote") choices.push(e.choice);
    if (e.type === "text_delta") console.log(e.delta.length);
    // @ts-expect-error: a note has no `choice`
    if (e.type === "app.note") console.log(e.choice);
  });
  for await (const { event } of session.events()) {
    if (event.type === "app.note") console.log(event.text.toUpperCase());
    break;
  }
  // In the transcript: items of kind "event" carry the app's events.
  const items: ChatItem<Mine>[] = session.items();
  for (const item of items) {
    if (item.kind === "event" && item.event.type === "app.vote") choices.push(item.event.choice);
  }

  // Without declared events, any object with a string `type` goes.
  const loose = client.session("loose");
  await loose.append({ type: "anything", n: 1 });
  const other: AppendEvent = { type: "whatever", nested: { ok: true } };
  await loose.append(other);
  for (const item of loose.items()) {
    if (item.kind === "event") console.log(item.event.type, item.event["n"]);
  }
  return choices;
}

export function useVotes(client: DurableClient): number[] {
  const { items, append } = useDurableSession<Vote>("poll", { client });
  void append({ type: "app.vote", choice: 1, by: "bob" });
  // @ts-expect-error: not a Vote
  void append({ type: "app.vote", choice: 1 });
  return items.flatMap((i) => (i.kind === "event" ? [i.event.choice] : []));
}
