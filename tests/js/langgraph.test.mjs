// The /langgraph profile with @langchain/langgraph-sdk's Client (what useStream streams with):
// a run streamed and assembled from messages-tuple, the stream dropped mid-run and joined with
// the last event id (no gap, no duplicate), and runs.wait's values. LANGGRAPH_URL names the server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";

const apiUrl = process.env.LANGGRAPH_URL;
assert.ok(apiUrl, "LANGGRAPH_URL must name the /langgraph mount");
const client = new Client({ apiUrl });
const MODES = ["values", "messages-tuple", "updates"];

// The distinct ids the client saw, in order (only an event's last frame carries its seq).
function idsOf(parts) {
  const seen = [];
  for (const part of parts) {
    if (part.id !== undefined && part.id !== null && Number(part.id) !== seen[seen.length - 1]) seen.push(Number(part.id));
  }
  return seen;
}

// messages-tuple chunks joined by message id, as useStream assembles them.
function assembled(parts) {
  const text = new Map();
  for (const part of parts) {
    if (part.event !== "messages") continue;
    const [chunk] = part.data;
    if (chunk.type === "AIMessageChunk") text.set(chunk.id, (text.get(chunk.id) ?? "") + chunk.content);
  }
  return [...text.values()];
}

test("a streamed run assembles its text from messages-tuple", async () => {
  const thread = await client.threads.create();
  const parts = [];
  let created;
  for await (const part of client.runs.stream(thread.thread_id, "echo", {
    input: { messages: [{ type: "human", content: "hello from node" }] },
    streamMode: MODES,
    onRunCreated: (meta) => { created = meta; },
  })) parts.push(part);
  assert.equal(parts[0].event, "metadata");
  assert.equal(parts.at(-1).event, "end");
  assert.equal(created.run_id, parts[0].data.run_id);
  assert.deepEqual(assembled(parts), ["hello from node"]);
  const ids = idsOf(parts);
  assert.deepEqual(ids, [...new Set(ids)].sort((a, b) => a - b));
  const values = parts.filter((p) => p.event === "values").at(-1).data;
  assert.deepEqual(values.messages.map((m) => [m.type, m.content]), [["human", "hello from node"], ["ai", "hello from node"]]);
});

test("a dropped stream joined with its last event id has no gap and no duplicate", async () => {
  const thread = await client.threads.create();
  const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ");
  const first = [];
  for await (const part of client.runs.stream(thread.thread_id, "echo", {
    input: { messages: [{ type: "human", content: words }] },
    streamMode: MODES,
  })) {
    first.push(part);
    if (first.filter((p) => p.event === "messages").length === 8) break; // the client drops the stream
  }
  const runId = first[0].data.run_id;
  const lastEventId = idsOf(first).at(-1);
  const rest = [];
  for await (const part of client.runs.joinStream(thread.thread_id, runId, { lastEventId: String(lastEventId), streamMode: MODES })) {
    rest.push(part);
  }
  const ids = idsOf([...first, ...rest]);
  assert.deepEqual(ids, [...new Set(ids)].sort((a, b) => a - b), "an id came twice or out of order");
  assert.ok(idsOf(rest)[0] > lastEventId);
  assert.deepEqual(assembled([...first, ...rest]), [words]);
  assert.equal(rest.at(-1).event, "end");
  const run = await client.runs.get(thread.thread_id, runId);
  assert.equal(run.status, "success");
});

test("runs.wait returns the thread's values; the state and history follow", async () => {
  const thread = await client.threads.create();
  const values = await client.runs.wait(thread.thread_id, "pizza", { input: { messages: [{ type: "human", content: "pizza" }] } });
  assert.deepEqual(values.messages.map((m) => m.type), ["human", "ai", "tool", "ai"]);
  const state = await client.threads.getState(thread.thread_id);
  assert.equal(state.values.messages.length, 4);
  const history = await client.threads.getHistory(thread.thread_id);
  assert.equal(history.length, 1);
});
