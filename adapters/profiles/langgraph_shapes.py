"""LangGraph's shapes of a run's events, for the /langgraph profile: LangChain message dicts, a
thread's `values`, and the SSE frames of each stream mode. Pure: events in, JSON-ready data out.

A run folds into LangChain messages in log order: its input as a `human` message (when it has
one), each completed message as an `ai` one, a tool call as an `ai` message carrying `tool_calls`,
its result as a `tool` message. The thread's values are the messages of its runs, oldest first,
plus the latest run's output under OUTPUT_KEY.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from runengine.events import (
    Custom,
    Event,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunWaitingForInput,
    ToolCall,
    ToolResult,
)
from runengine.http.sse import sse_frame
from runengine.status import Status
from runengine.wire import dumps

#: Stream modes with frames here, as LangGraph names them (`messages-tuple` frames are named `messages`).
STREAM_MODES = ("values", "messages-tuple", "updates", "custom", "events")
#: LangGraph modes about graph internals (steps, checkpoints, tasks) that this engine does not have:
#: accepted, so a client that always asks for them works, and never sent.
SILENT_MODES = ("debug", "tasks", "checkpoints", "tools")
#: The modes a run streams when the request names none (LangGraph's default).
DEFAULT_MODES = ("values",)
#: The key of the thread's values holding the latest run's output (what the agent returned).
OUTPUT_KEY = "output"
#: Where the profile keeps its own facts in a run's metadata (the client's keys stay beside it).
META_KEY = "langgraph"

#: Run statuses as LangGraph names them. A run waiting for input is still `running` (it holds its
#: thread, whose status is `interrupted`); `interrupted` is a cancelled run.
RUN_STATUS = {
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.WAITING_FOR_INPUT: "running",
    Status.COMPLETED: "success",
    Status.FAILED: "error",
    Status.CANCELLED: "interrupted",
}

_MESSAGE_TYPES = {"assistant": "ai", "user": "human", "system": "system"}


# -- LangChain messages -----------------------------------------------------------------


def _base(kind: str, content: Any, message_id: str) -> dict[str, Any]:
    return {"type": kind, "content": content, "id": message_id, "name": None, "additional_kwargs": {}, "response_metadata": {}}


def human_message(content: Any, message_id: str) -> dict[str, Any]:
    return {**_base("human", content, message_id), "example": False}


def ai_message(content: str, message_id: str, tool_calls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {
        **_base("ai", content, message_id),
        "example": False,
        "tool_calls": list(tool_calls),
        "invalid_tool_calls": [],
        "usage_metadata": None,
    }


def ai_chunk(content: str, message_id: str, tool_call_chunks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """An `AIMessageChunk`, what messages-tuple streams while a message is written."""
    return {
        **_base("AIMessageChunk", content, message_id),
        "example": False,
        "tool_calls": [],
        "invalid_tool_calls": [],
        "tool_call_chunks": list(tool_call_chunks),
        "usage_metadata": None,
    }


def tool_message(event: ToolResult, name: str | None) -> dict[str, Any]:
    failed = event.error is not None
    content = event.error.message if event.error is not None else event.output
    return {
        **_base("tool", content if isinstance(content, str) else dumps(content), tool_result_id(event.call_id)),
        "name": name,
        "tool_call_id": event.call_id,
        "status": "error" if failed else "success",
        "artifact": None,
    }


def tool_call_message_id(call_id: str) -> str:
    return f"{call_id}:call"


def tool_result_id(call_id: str) -> str:
    return f"{call_id}:result"


def input_text(value: Any) -> Any:
    """A run's `ctx.input` from a LangGraph input: the text of the last human message when the
    input has `messages`, the input object otherwise."""
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return value
    for message in reversed(value["messages"]):
        if isinstance(message, dict) and message.get("type", message.get("role")) in ("human", "user"):
            return _text_of(message.get("content"))
        if isinstance(message, str):  # LangGraph takes a bare string as a human message
            return message
    return value


def input_message_id(value: Any) -> str | None:
    """The id the client gave its last human message (kept, so its optimistic copy is replaced)."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        for message in reversed(value["messages"]):
            if isinstance(message, dict) and message.get("type", message.get("role")) in ("human", "user"):
                found = message.get("id")
                return found if isinstance(found, str) and found else None
    return None


def _text_of(content: Any) -> Any:
    if isinstance(content, list):  # content blocks: the text ones, joined
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content


class RunMessages:
    """One run's LangChain messages, folded from its events in log order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.output: Any = None
        self._tool_names: dict[str, str] = {}

    def apply(self, event: Event) -> dict[str, Any] | None:
        """Fold `event`; the message it adds, if any."""
        message: dict[str, Any] | None = None
        kind = type(event)
        if kind is RunCreated:
            assert isinstance(event, RunCreated)
            if event.input is not None:
                own = event.metadata.get(META_KEY, {}).get("input_id") if isinstance(event.metadata.get(META_KEY), dict) else None
                text = event.input if isinstance(event.input, str) else dumps(event.input)
                message = human_message(text, own or f"{event.run_id}:input")
        elif kind is MessageCompleted:
            assert isinstance(event, MessageCompleted)
            role = _MESSAGE_TYPES.get(event.role, "ai")
            message = ai_message(event.content, event.message_id) if role == "ai" else _base(role, event.content, event.message_id)
        elif kind is ToolCall:
            assert isinstance(event, ToolCall)
            self._tool_names[event.call_id] = event.name
            call = {"name": event.name, "args": event.arguments, "id": event.call_id, "type": "tool_call"}
            message = ai_message("", tool_call_message_id(event.call_id), [call])
        elif kind is ToolResult:
            assert isinstance(event, ToolResult)
            message = tool_message(event, self._tool_names.get(event.call_id))
        elif kind is RunCompleted:
            assert isinstance(event, RunCompleted)
            self.output = event.output
        if message is not None:
            self.messages.append(message)
        return message


def thread_values(messages: Iterable[dict[str, Any]], output: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"messages": list(messages)}
    if output is not None:
        values[OUTPUT_KEY] = output
    return values


# -- stream frames ------------------------------------------------------------------------


def error_data(event: RunFailed) -> dict[str, Any]:
    return {"error": event.error.code, "message": event.error.message}


class StreamFrames:
    """The SSE frames of a run's events in the stream modes asked for.

    Every frame that ends an event's frames carries `id: <seq>` (only that one: ids stay unique
    and increasing), so a join with Last-Event-ID resumes after the last event the client had
    whole. A failure is an `error` frame; the stream's closing `end` frame (END) is the caller's,
    sent where the stream stops (`ends_stream`)."""

    def __init__(
        self, modes: Iterable[str], *, run_id: str, thread_id: str, node: str, earlier: Sequence[dict[str, Any]] = ()
    ) -> None:
        self.modes = frozenset(modes)
        self.run_id = run_id
        self.node = node
        self.meta = {"run_id": run_id, "thread_id": thread_id, "langgraph_node": node}
        self.earlier = list(earlier)
        self.run = RunMessages()
        self._tuple = "messages-tuple" in self.modes
        # An AIMessageChunk's fields after content and id, and the frame's metadata (dumps escapes
        # every line break, so the data is one line).
        constant = dumps(ai_chunk("", ""))
        assert constant.startswith('{"type":"AIMessageChunk","content":"","id":""')
        self._chunk_tail = ',"type":"AIMessageChunk"' + constant[len('{"type":"AIMessageChunk","content":"","id":""'):] + "," + dumps(self.meta) + "]"
        self._last_id = ""
        self._last_id_json = '""'

    def values(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        values = thread_values([*self.earlier, *self.run.messages], self.run.output)
        return {**values, **(extra or {})}

    def frames(self, event: Event) -> bytes:
        """The frames of `event`, the last with its seq as id (b"" when it has none)."""
        if type(event) is MessageDelta and self._tuple and "events" not in self.modes:
            # The hot path, one frame per token: the chunk's constant fields are encoded once.
            assert isinstance(event, MessageDelta)
            data = f'[{{"content":{dumps(event.content)},"id":{self._id_json(event.message_id)}{self._chunk_tail}'
            return f"id: {event.seq}\nevent: messages\ndata: {data}\n\n".encode()
        return self._encode(self._parts(event), event.seq)

    def _id_json(self, message_id: str) -> str:
        if message_id != self._last_id:
            self._last_id, self._last_id_json = message_id, dumps(message_id)
        return self._last_id_json

    def _parts(self, event: Event) -> list[tuple[str, str]]:
        modes = self.modes
        parts: list[tuple[str, Any]] = []
        added = self.run.apply(event)
        kind = type(event)
        if kind is RunCreated:
            parts.append(("metadata", {"run_id": self.run_id, "attempt": 1}))
            if "events" in modes:
                parts.append(("events", self._lc_event("on_chain_start", {"input": getattr(event, "input", None)})))
        elif kind is MessageDelta:
            assert isinstance(event, MessageDelta)
            chunk = ai_chunk(event.content, event.message_id)
            if self._tuple:
                parts.append(("messages", [chunk, self.meta]))
            if "events" in modes:
                parts.append(("events", self._lc_event("on_chat_model_stream", {"chunk": chunk})))
        elif kind is ToolCall:
            assert isinstance(event, ToolCall)
            if self._tuple:
                chunk = {"name": event.name, "args": dumps(event.arguments), "id": event.call_id, "index": 0, "type": "tool_call_chunk"}
                parts.append(("messages", [ai_chunk("", tool_call_message_id(event.call_id), [chunk]), self.meta]))
            if "events" in modes:
                parts.append(("events", self._lc_event("on_tool_start", {"input": event.arguments}, name=event.name)))
        elif kind is ToolResult:
            assert isinstance(event, ToolResult) and added is not None
            if self._tuple:
                parts.append(("messages", [added, self.meta]))
            if "events" in modes:
                parts.append(("events", self._lc_event("on_tool_end", {"output": added["content"]}, name=added["name"])))
        elif kind is Custom and "custom" in modes:
            assert isinstance(event, Custom)
            parts.append(("custom", {"name": event.name, "data": event.data}))
        if added is not None and kind is not RunCreated:  # the input is no node's update
            if "updates" in modes:
                parts.append(("updates", {self.node: {"messages": [added]}}))
            if "values" in modes:
                parts.append(("values", self.values()))
        if kind is RunCreated and "values" in modes:
            parts.append(("values", self.values()))
        if kind is RunWaitingForInput:
            assert isinstance(event, RunWaitingForInput)
            interrupt = {"value": event.request, "id": f"{self.run_id}:{event.seq}"}
            if "updates" in modes:
                parts.append(("updates", {"__interrupt__": [interrupt]}))
            if "values" in modes:
                parts.append(("values", self.values({"__interrupt__": [interrupt]})))
        elif kind is RunCompleted:
            if "values" in modes:
                parts.append(("values", self.values()))
            if "events" in modes:
                parts.append(("events", self._lc_event("on_chain_end", {"output": self.run.output})))
        elif kind is RunFailed:
            assert isinstance(event, RunFailed)
            parts.append(("error", error_data(event)))
        return [(name, dumps(data)) for name, data in parts]

    def _lc_event(self, kind: str, data: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
        """A LangChain `astream_events` (v2) record."""
        return {
            "event": kind,
            "name": name or self.node,
            "run_id": self.run_id,
            "tags": [],
            "metadata": self.meta,
            "data": data,
            "parent_ids": [],
        }

    @staticmethod
    def _encode(parts: Sequence[tuple[str, str]], seq: int) -> bytes:
        last = len(parts) - 1
        return b"".join(sse_frame(data, event=name, id=seq if i == last else None) for i, (name, data) in enumerate(parts))


#: The frame that closes a stream at the run's end or wait (no id: it adds nothing to resume after).
END = sse_frame("", event="end")


def ends_stream(event: Event, now_waiting: bool) -> bool:
    """Whether a LangGraph stream stops after `event`: at the run's end, or at its wait for input
    when the run is still waiting (`now_waiting`; LangGraph's run stops at an interrupt)."""
    return event.terminal or (type(event) is RunWaitingForInput and now_waiting)


__all__ = [
    "DEFAULT_MODES",
    "END",
    "META_KEY",
    "OUTPUT_KEY",
    "RUN_STATUS",
    "SILENT_MODES",
    "STREAM_MODES",
    "RunMessages",
    "StreamFrames",
    "ends_stream",
    "input_message_id",
    "input_text",
    "thread_values",
]
