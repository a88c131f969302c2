// A chat page on runengine's /ai profile: the AI SDK's useChat, resumable (README.md).
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import { useState } from "react";
import { createRoot } from "react-dom/client";

// Where runengine serve is (?api=...), which agent answers (?agent=...), and an API key if it needs one (?key=...).
const query = new URLSearchParams(location.search);
const API = (query.get("api") ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const AGENT = query.get("agent") ?? "pizza";
const KEY = query.get("key");
const headers = KEY ? { authorization: `Bearer ${KEY}` } : {};

// One chat per address: a reload keeps the id (the run's session), so resume finds its stream.
function chatId() {
  const found = new URLSearchParams(location.hash.slice(1)).get("chat");
  if (found) return found;
  const id = crypto.randomUUID();
  history.replaceState(null, "", `#chat=${id}`);
  return id;
}

// The messages of earlier turns are this page's to keep (the server keeps the runs, not UI messages).
const stored = (id) => JSON.parse(sessionStorage.getItem(`chat:${id}`) ?? "[]");

function Part({ part, onApprove }) {
  if (part.type === "text") return <span>{part.text}</span>;
  if (part.type === "reasoning") return <div className="reasoning">{part.text}</div>;
  if (part.type.startsWith("tool-")) {
    const name = part.type.slice("tool-".length);
    return (
      <div className="tool">
        {name}({JSON.stringify(part.input)}) {part.state}
        {part.state === "output-available" && <> → {JSON.stringify(part.output)}</>}
        {part.state === "approval-requested" && (
          <>
            {" "}<button onClick={() => onApprove(part.approval.id, true)}>Approve</button>
            {" "}<button onClick={() => onApprove(part.approval.id, false)}>Deny</button>
          </>
        )}
      </div>
    );
  }
  return null;
}

function Chat({ id }) {
  const [input, setInput] = useState("");
  const { messages, sendMessage, status, stop, addToolApprovalResponse, error } = useChat({
    id,
    messages: stored(id),
    resume: true, // on load: GET /ai/chat/{id}/stream (204: nothing under way)
    transport: new DefaultChatTransport({ api: `${API}/ai/chat`, headers, body: { agent: AGENT } }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses, // the answer goes back by itself
    onFinish: ({ messages }) => sessionStorage.setItem(`chat:${id}`, JSON.stringify(messages)),
  });
  const busy = status === "submitted" || status === "streaming";
  const stopRun = async () => {
    stop(); // stops reading; the run goes on unless the server is told:
    await fetch(`${API}/ai/chat/${encodeURIComponent(id)}/stop`, { method: "POST", headers });
  };
  return (
    <>
      {messages.map((message) => (
        <div key={message.id} className={`message ${message.role}`}>
          {message.parts.map((part, index) => (
            <Part key={index} part={part} onApprove={(approvalId, approved) => addToolApprovalResponse({ id: approvalId, approved })} />
          ))}
        </div>
      ))}
      {error && <p className="status">error: {String(error.message ?? error)}</p>}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (input.trim()) sendMessage({ text: input });
          setInput("");
        }}
      >
        <input type="text" value={input} onChange={(event) => setInput(event.target.value)} placeholder={`Ask ${AGENT}…`} />
        {busy ? <button type="button" onClick={stopRun}>Stop</button> : <button type="submit">Send</button>}
      </form>
      <p className="status">{status}</p>
    </>
  );
}

createRoot(document.getElementById("root")).render(<Chat id={chatId()} />);
