// Drives a runengine /ai endpoint with the real AI SDK client (the `ai` package), as useChat does.
//
//   node aisdk_driver.mjs '<json options>'
//
// Options: {scenario, api (the chat URL, e.g. http://127.0.0.1:8000/ai/chat), chatId, text,
// agent, headers, after (characters of text to see before "ready")}. Prints one JSON object per
// line: {"ready": ...} where the scenario waits for a "go" line on stdin, then {"result": ...}.
// tests/test_profile_aisdk.py runs it.

import { createInterface } from "node:readline";
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  readUIMessageStream,
} from "ai";

const options = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({
  api: options.api,
  headers: options.headers ?? {},
  body: options.agent ? { agent: options.agent } : {},
});
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const textOf = (message) =>
  (message?.parts ?? []).filter((part) => part.type === "text").map((part) => part.text).join("");

function userMessage(text) {
  return { id: `user-${Date.now()}`, role: "user", parts: [{ type: "text", text }] };
}

// The chunks' types as they pass, and the messages readUIMessageStream assembles from them.
async function read(stream, { message, onMessage } = {}) {
  const types = [];
  const errors = [];
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        controller.enqueue(chunk);
      },
    }),
  );
  let last = message;
  for await (const assembled of readUIMessageStream({ stream: recorded, message, onError: (e) => errors.push(String(e)) })) {
    last = assembled;
    if (onMessage) await onMessage(assembled);
  }
  return { message: last, types, errors };
}

async function send(text) {
  return transport.sendMessages({
    chatId: options.chatId,
    messages: [userMessage(text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
}

const scenarios = {
  // One turn: the assembled message.
  async send() {
    return read(await send(options.text));
  },

  // A turn read until `after` characters arrived; then (after "go": the test kills and restarts
  // the server meanwhile) reconnectToStream, whose stream is read into a fresh message.
  async crash() {
    let announced = false;
    const first = await read(await send(options.text), {
      onMessage: async (message) => {
        if (!announced && textOf(message).length >= options.after) {
          announced = true;
          say({ ready: textOf(message) });
          await lines.next(); // "go": the server was killed and started again
        }
      },
    });
    if (!announced) throw new Error(`the stream ended before ${options.after} characters: ${textOf(first.message)}`);
    const again = await transport.reconnectToStream({ chatId: options.chatId });
    if (again === null) return { before: first, reconnected: null };
    return { before: first, reconnected: await read(again) };
  },

  // A turn stopped (POST /chat/{id}/stop) once its first text arrived.
  async stop() {
    let stopped = null;
    const turn = await read(await send(options.text), {
      onMessage: async (message) => {
        if (stopped === null && textOf(message).length > 0) {
          const response = await fetch(`${options.api}/${encodeURIComponent(options.chatId)}/stop`, {
            method: "POST",
            headers: options.headers ?? {},
          });
          stopped = { status: response.status, body: await response.json() };
        }
      },
    });
    return { ...turn, stopped };
  },

  // reconnectToStream alone: null when the server answers 204.
  async reconnect() {
    const stream = await transport.reconnectToStream({ chatId: options.chatId });
    return stream === null ? null : read(stream);
  },

  // useChat's own logic (AbstractChat, which useChat wraps): a turn whose run asks for approval,
  // approved with addToolApprovalResponse; sendAutomaticallyWhen sends the approval back.
  async approve() {
    const chat = new Chat({
      id: options.chatId,
      transport,
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    });
    await chat.sendMessage({ text: options.text });
    const asked = chat.messages.at(-1).parts.find((part) => part.state === "approval-requested");
    if (!asked) throw new Error(`no approval request: ${JSON.stringify(chat.messages)}`);
    const before = structuredClone(chat.messages);
    await chat.addToolApprovalResponse({ id: asked.approval.id, approved: options.approved ?? true });
    const deadline = Date.now() + 20000;
    while (chat.status !== "ready" || textOf(chat.messages.at(-1)) === textOf(before.at(-1))) {
      if (Date.now() > deadline) throw new Error(`no answer after the approval: ${chat.status} ${JSON.stringify(chat.messages)}`);
      if (chat.status === "error") throw chat.error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return { before, messages: chat.messages, status: chat.status, error: chat.error ? String(chat.error) : null };
  },
};

// The state React's useChat keeps, without React: plain arrays replaced on each change.
class ChatState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => { this.messages = this.messages.concat(message); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new ChatState() });
  }
}

try {
  say({ result: await scenarios[options.scenario]() });
  process.exit(0);
} catch (error) {
  say({ error: String(error?.stack ?? error) });
  process.exit(1);
}
