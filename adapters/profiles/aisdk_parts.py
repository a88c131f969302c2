"""A run's events as the Vercel AI SDK's UI message stream (protocol v1): the parts `useChat` and
`readUIMessageStream` assemble into one assistant message, as SSE frames.

    run.created                 start {messageId: run_id}           (a stream from the run's start)
    message.delta               text-start (first), text-delta
    message.completed           the unstreamed rest, text-end       (assistant messages)
    thought                     reasoning-start, -delta, -end
    tool.call / tool.result     tool-input-available / tool-output-available (-error)
    run.waiting_for_input       tool-input-available + tool-approval-request of the tool `ask`, finish-step
    run.input                   tool-output-available of that `ask` call (its output: the input)
    custom                      data-<name> {data}
    run.completed               text-end of open parts, finish-step, finish, [DONE]
    run.failed / run.cancelled  error / abort, finish, [DONE]

Steps: a start-step opens before the first content part, and a finish-step closes it after tool
results (the next content starts a new step, as an LLM's next call does) and at the run's end.

Every frame carries `id:`, the seq a reconnect resumes after without losing anything: an event's
last part has the event's own seq, the parts leading up to it the seq before it (a client cut off
between them gets the event again, not half of it). The part types and fields are those the `ai`
package validates (uiMessageChunkSchema); tests/js drives the real client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from runengine.events import (
    Custom,
    Event,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunInput,
    RunInputTimedOut,
    RunWaitingForInput,
    Thought,
    ToolCall,
    ToolResult,
)
from runengine.wire import dumps

#: What the AI SDK's client checks on a UI message stream response (beside SSE's own headers).
UI_STREAM_HEADERS: tuple[tuple[str, str], ...] = (("x-vercel-ai-ui-message-stream", "v1"),)
#: The tool name under which a run waiting for input asks for approval.
ASK_TOOL = "ask"
#: The stream's last data line, after the run's end (or the end of a turn waiting for input).
DONE = "[DONE]"

Part = dict[str, Any] | str  # a part's JSON object, or DONE


def ask_call_id(seq: int) -> str:
    """The tool call (and approval) id of the wait for input recorded at `seq`."""
    return f"ask-{seq}"


class UIMessageParts:
    """One stream's mapping: what it has opened (text parts, a step, a wait) decides the next parts.

    `discarded`: messages a resumed run dropped (`RunState.discarded`): their deltas are left out,
    so a message streamed afresh after a crash shows once. `open_message`, `live_after`: the message
    the run was streaming when a replay began (`RunState.partial`) and the seq the log then ended
    at. The replayed text of that message is held back until the run goes on: a live delta or its
    completion sends it, its `message.discarded` (its process was lost, as the next process finds
    out: after a lease, on PostgreSQL) drops it, since sent text cannot be taken back.
    Give a stream that starts after a seq the events up to that seq first (`prime`): it then goes
    on where the client left off (text parts open there are opened again for the new connection)."""

    def __init__(
        self, run_id: str, *, discarded: Iterable[str] = (), open_message: str | None = None, live_after: int = 0
    ) -> None:
        self.run_id = run_id
        self._dropped = set(discarded)
        self._held = open_message if open_message not in self._dropped else None
        self._held_until = live_after
        self._held_text: list[str] = []
        #: Text parts open at a resumed stream's cursor: the new connection needs their text-start.
        self._reopen: set[str] = set()
        #: Open text parts: message id -> characters sent.
        self._text: dict[str, int] = {}
        self._step_open = False
        self._step_has_results = False
        #: The call id of the wait for input the stream showed, until its input comes.
        self._asking: str | None = None
        #: The seq of the last event that was a wait for input (0: none).
        self.waiting_at = 0

    def prime(self, events: Iterable[Event]) -> None:
        """Take in events the client already has (up to its cursor) without framing them."""
        for event in events:
            self.parts(event)
        self._reopen = set(self._text)

    def frames(self, batch: Iterable[Event]) -> bytes:
        """The frames of a batch of events, joined (one write per batch)."""
        out: list[str] = []
        for event in batch:
            parts = self.parts(event)
            if not parts:
                continue
            seq = event.seq
            last = len(parts) - 1
            for index, part in enumerate(parts):
                data = part if isinstance(part, str) else dumps(part)
                out.append(f"id: {seq if index == last else seq - 1}\ndata: {data}\n\n")
        return "".join(out).encode()

    def end_of_turn(self, seq: int) -> bytes:
        """The end of a stream whose run waits for input (the approval request was its last part)."""
        return f'id: {seq}\ndata: {{"type":"finish","finishReason":"tool-calls"}}\n\nid: {seq}\ndata: {DONE}\n\n'.encode()

    # -- one event -----------------------------------------------------------------------------

    def parts(self, event: Event) -> list[Part]:
        handler = _HANDLERS.get(type(event))
        return handler(self, event) if handler is not None else []

    def _created(self, event: RunCreated) -> list[Part]:
        return [{"type": "start", "messageId": self.run_id}]

    def _discarded(self, event: MessageDiscarded) -> list[Part]:
        self._dropped.add(event.message_id)
        if event.message_id == self._held:
            self._held, self._held_text = None, []
        if self._text.pop(event.message_id, None) is not None:  # sent live: it cannot be taken back
            return [{"type": "text-end", "id": event.message_id}]
        return []

    def _thought(self, event: Thought) -> list[Part]:
        part_id = f"reasoning-{event.seq}"
        return [
            *self._content(),
            {"type": "reasoning-start", "id": part_id},
            {"type": "reasoning-delta", "id": part_id, "delta": event.content},
            {"type": "reasoning-end", "id": part_id},
        ]

    def _tool_call(self, event: ToolCall) -> list[Part]:
        call = {"type": "tool-input-available", "toolCallId": event.call_id, "toolName": event.name, "input": event.arguments}
        return [*self._content(), call]

    def _tool_result(self, event: ToolResult) -> list[Part]:
        self._step_has_results = True
        if event.error is not None:
            return [{"type": "tool-output-error", "toolCallId": event.call_id, "errorText": _error_text(event.error)}]
        return [{"type": "tool-output-available", "toolCallId": event.call_id, "output": event.output}]

    def _waiting(self, event: RunWaitingForInput) -> list[Part]:
        call_id = self._asking = ask_call_id(event.seq)
        self.waiting_at = event.seq
        parts: list[Part] = [
            *self._content(),
            *self._close_text(),
            {"type": "tool-input-available", "toolCallId": call_id, "toolName": ASK_TOOL, "input": event.request},
            {"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id},
            {"type": "finish-step"},  # the approval request ends the step, as the AI SDK's own do
        ]
        self._step_open = False
        return parts

    def _input(self, event: RunInput) -> list[Part]:
        return self._answered({"type": "tool-output-available", "output": event.content})

    def _input_timed_out(self, event: RunInputTimedOut) -> list[Part]:
        return self._answered({"type": "tool-output-error", "errorText": "no input came in time"})

    def _custom(self, event: Custom) -> list[Part]:
        return [{"type": f"data-{event.name}", "data": event.data}]

    def _run_completed(self, event: RunCompleted) -> list[Part]:
        return [*self._close(), {"type": "finish", "finishReason": "stop"}, DONE]

    def _run_failed(self, event: RunFailed) -> list[Part]:
        error = {"type": "error", "errorText": _error_text(event.error)}
        return [*self._close(), error, {"type": "finish", "finishReason": "error"}, DONE]

    def _run_cancelled(self, event: RunCancelled) -> list[Part]:
        return [*self._close(), {"type": "abort", "reason": event.reason or "cancelled"}, DONE]

    def _delta(self, event: MessageDelta) -> list[Part]:
        message_id = event.message_id
        if message_id in self._dropped or not event.content:
            return []
        if message_id == self._held:
            if event.seq <= self._held_until:  # replayed: held until the run goes on
                self._held_text.append(event.content)
                return []
            return self._release(event.content)
        sent = self._text.get(message_id)
        self._text[message_id] = (sent or 0) + len(event.content)
        delta = {"type": "text-delta", "id": message_id, "delta": event.content}
        if sent is None:
            return [*self._content(), {"type": "text-start", "id": message_id}, delta]
        if message_id in self._reopen:
            self._reopen.discard(message_id)
            return [{"type": "text-start", "id": message_id}, delta]
        return [delta]

    def _release(self, more: str = "") -> list[Part]:
        """The held message's text so far (and `more`), as a text part opened now."""
        message_id, text = self._held, "".join(self._held_text) + more
        assert message_id is not None
        self._held, self._held_text = None, []
        self._text[message_id] = len(text)
        delta: list[Part] = [{"type": "text-delta", "id": message_id, "delta": text}] if text else []
        return [*self._content(), {"type": "text-start", "id": message_id}, *delta]

    def _completed(self, event: MessageCompleted) -> list[Part]:
        if event.role != "assistant" or event.message_id in self._dropped:
            return []
        message_id = event.message_id
        if message_id == self._held:
            self._held, self._held_text = None, []  # the whole content comes below
        sent = self._text.pop(message_id, None)
        if sent is None or message_id in self._reopen:
            self._reopen.discard(message_id)
            parts: list[Part] = [*self._content()] if sent is None else []
            parts.append({"type": "text-start", "id": message_id})
        else:
            parts = []
        rest = event.content[sent or 0 :]  # a message recorded whole (say), or its unstreamed end
        if rest:
            parts.append({"type": "text-delta", "id": message_id, "delta": rest})
        parts.append({"type": "text-end", "id": message_id})
        return parts

    def _content(self) -> list[Part]:
        """What comes before a content part: a new step after tool results, a step if none is open."""
        parts: list[Part] = []
        if self._step_open and self._step_has_results:
            parts += [*self._close_text(), {"type": "finish-step"}]
            self._step_open = False
        if not self._step_open:
            parts.append({"type": "start-step"})
            self._step_open, self._step_has_results = True, False
        return parts

    def _close_text(self) -> list[Part]:
        # A part still to be opened again on this connection needs no end on it.
        parts: list[Part] = [{"type": "text-end", "id": m} for m in self._text if m not in self._reopen]
        self._text.clear()
        self._reopen.clear()
        return parts

    def _close(self) -> list[Part]:
        parts = self._release() if self._held is not None and self._held_text else []  # the run ended: it was real
        parts += self._close_text()
        if self._step_open:
            parts.append({"type": "finish-step"})
            self._step_open = False
        return parts

    def _answered(self, part: dict[str, Any]) -> list[Part]:
        call_id, self._asking = self._asking, None
        return [{**part, "toolCallId": call_id}] if call_id is not None else []


#: Each event type's parts; other events (run.started, usage, steps ...) have none.
_HANDLERS: dict[type[Event], Callable[[UIMessageParts, Any], list[Part]]] = {
    MessageDelta: UIMessageParts._delta,
    MessageCompleted: UIMessageParts._completed,
    RunCreated: UIMessageParts._created,
    MessageDiscarded: UIMessageParts._discarded,
    Thought: UIMessageParts._thought,
    ToolCall: UIMessageParts._tool_call,
    ToolResult: UIMessageParts._tool_result,
    RunWaitingForInput: UIMessageParts._waiting,
    RunInput: UIMessageParts._input,
    RunInputTimedOut: UIMessageParts._input_timed_out,
    Custom: UIMessageParts._custom,
    RunCompleted: UIMessageParts._run_completed,
    RunFailed: UIMessageParts._run_failed,
    RunCancelled: UIMessageParts._run_cancelled,
}


def _error_text(error: Any) -> str:
    return f"{error.code}: {error.message}" if error.message else error.code


__all__ = ["ASK_TOOL", "DONE", "UI_STREAM_HEADERS", "UIMessageParts", "ask_call_id"]
