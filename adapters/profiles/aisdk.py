"""The Vercel AI SDK's chat transport (`useChat`, `DefaultChatTransport`) as a profile, mounted at /ai.

    POST /chat                   the body useChat sends ({id, messages, trigger, messageId}, and an
                                 `agent` of the app's `body`): the chat id is the run's session, the
                                 last user message the run's input; the answer is the run's UI message
                                 stream. While the chat's run waits for input, the request answers it
                                 instead (the approval response in the last assistant message, or the
                                 last user message's text) and streams the rest of that run.
    GET  /chat/{chat_id}/stream  204 when the chat has no active run; else that run's stream from its
                                 start (useChat's resume replays), or after Last-Event-ID / after_seq
    POST /chat/{chat_id}/stop    cancels the chat's active run (204 when there is none)
    GET  /openapi.json           this profile's OpenAPI document

No run logic lives here: a chat turn is `engine.execute` in the chat's session, stop is
`engine.cancel`, an answer is `engine.resume`; the parts are aisdk_parts. A chat that does not
exist and another principal's chat are answered alike (204 on the stream and stop, 404 on a POST).
docs/frontends.md has the whole mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import attrs

from runengine.engine import ACTIVE_STATUSES, RunEngine
from runengine.errors import AgentNotFound
from runengine.events import RunWaitingForInput
from runengine.http import params
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.cursor import AFTER_SEQ_PARAMETER, LAST_EVENT_ID_PARAMETER, resume_after
from runengine.http.openapi import Body, Operation, Reply
from runengine.http.openstreams import OpenStreams
from runengine.http.router import Router
from runengine.http.sse import KEEPALIVE, sse_comment, sse_response
from runengine.limits import MAX_ID_LENGTH, MAX_INPUT_BYTES
from runengine.ports import RunSummary
from runengine.state import RunState
from runengine.status import Status

from .aisdk_openapi import UI_MESSAGE_STREAM, aisdk_openapi
from .aisdk_parts import UI_STREAM_HEADERS, UIMessageParts, ask_call_id
from .common import invalid, request_owner

#: The triggers DefaultChatTransport sends on POST (a resume is the GET).
TRIGGERS = ("submit-message", "regenerate-message")
CHAT_ID = params.TextField("id", max_length=MAX_ID_LENGTH, required=True, description="the chat id: the runs' session")
TRIGGER = params.ChoiceField("trigger", TRIGGERS, default="submit-message")
MESSAGE_ID = params.TextField("messageId", max_length=MAX_ID_LENGTH, description="the message to regenerate")
AGENT = params.TextField("agent", max_length=MAX_ID_LENGTH, description="the agent to run (default: the server's)")
#: Events read per page while a stream that starts after a seq takes in what the client has.
PRIME_PAGE = 1000
#: How far back from a waiting run's last event its `run.waiting_for_input` is looked for.
WAIT_TAIL = 32

CHAT = Operation(
    "chat",
    "Start a chat turn (a run in the chat's session), or answer the chat's run waiting for input; "
    "the answer is the run's UI message stream",
    body=Body(
        "ChatRequest",
        {
            "type": "object",
            "required": ["id", "messages"],
            "properties": {
                CHAT_ID.name: CHAT_ID.schema(),
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "description": f"the chat's UIMessages; the last is a user message (its text parts are the "
                    "input, at most {MAX_INPUT_BYTES} bytes) or, to answer an approval request, the assistant "
                    "message with the approval response",
                    "items": {
                        "type": "object",
                        "required": ["role", "parts"],
                        "properties": {"role": {"type": "string"}, "parts": {"type": "array", "items": {"type": "object"}}},
                    },
                },
                TRIGGER.name: TRIGGER.schema(),
                MESSAGE_ID.name: MESSAGE_ID.schema(),
                AGENT.name: AGENT.schema(),
            },
        },
    ),
    replies={200: Reply("the run's UI message stream", content=UI_MESSAGE_STREAM)},
    errors=(400, 404, 409, 413, 429),
)
RESUME = Operation(
    "resumeChatStream",
    "The chat's active run's UI message stream, from its start or after Last-Event-ID / after_seq",
    parameters=(AFTER_SEQ_PARAMETER, LAST_EVENT_ID_PARAMETER),
    replies={
        200: Reply("the run's UI message stream", content=UI_MESSAGE_STREAM),
        204: Reply("the chat has no active run (or no such chat)"),
    },
    errors=(400, 429),
)
STOP = Operation(
    "stopChat",
    "Cancel the chat's active run",
    replies={200: Reply("the run was cancelled", "Stopped"), 204: Reply("the chat has no active run (or no such chat)")},
    errors=(400,),
)
OPENAPI = Operation("openapi", "This document", replies={200: Reply("the OpenAPI document", {"type": "object"})})


@attrs.define
class AiSdkProfile:
    """The AI SDK UI message stream over `engine`; `runengine serve` mounts it at /ai."""

    engine: RunEngine
    auth: AuthHook | None = None
    #: The agent a chat without `agent` runs (None: `agent` is required).
    default_agent: str | None = None
    #: Streams open per principal, bounded (build_app shares one across every surface).
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    keepalive: float = KEEPALIVE
    router: Router = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.router = Router()
        r.route("POST", "/chat", guarded(self.auth, self.chat), operation=CHAT)
        r.route("GET", "/chat/{chat_id}/stream", guarded(self.auth, self.resume), operation=RESUME)
        r.route("POST", "/chat/{chat_id}/stop", guarded(self.auth, self.stop), operation=STOP)
        r.route("GET", "/openapi.json", guarded(self.auth, self.openapi), operation=OPENAPI)

    def routes(self) -> Iterator[tuple[str, str]]:
        return self.router.routes()

    async def __call__(self, request: Request) -> Response | StreamResponse:
        return await self.router(request)

    # -- routes ---------------------------------------------------------------------------------

    async def chat(self, request: Request) -> StreamResponse:
        body = request.json_object()
        chat_id = CHAT_ID.parse(body)
        assert chat_id is not None  # required
        TRIGGER.parse(body)  # checked only: every trigger is a turn (regenerate: a new run of the last user message)
        MESSAGE_ID.parse(body)
        last = _last_message(body.get("messages"))
        owner = request_owner(self.auth, request)
        with self.streams.slot(request) as slot:  # a 429 starts (or answers) nothing
            active = await self._active_run(chat_id, owner)
            if active is not None and active.status is Status.WAITING_FOR_INPUT:
                waiting = await self.engine.status(active.run_id)
                await self.engine.resume(waiting.run_id, _answer(last, ask_call_id(await self._wait_seq(waiting))))
                return slot.bind(self._stream(waiting, waiting.last_seq))
            text = _user_text(last)
            agent = self._agent(AGENT.parse(body))
            state = await self.engine.execute(
                agent, text, mode="async", session_id=chat_id, owner=owner, session_policy="reject"
            )  # another principal's chat: SessionNotFound, a 404; a run under way: SessionBusy, a 409
            return slot.bind(self._stream(state, 0))

    async def resume(self, request: Request) -> Response | StreamResponse:
        chat_id = params_id(request, "chat_id")
        after = resume_after(request)
        active = await self._active_run(chat_id, request_owner(self.auth, request))
        if active is None:
            return Response(status=204)
        state = await self.engine.status(active.run_id)
        with self.streams.slot(request) as slot:
            return slot.bind(self._stream(state, after))

    async def stop(self, request: Request) -> Response:
        chat_id = params_id(request, "chat_id")
        active = await self._active_run(chat_id, request_owner(self.auth, request))
        if active is None:
            return Response(status=204)
        state = await self.engine.cancel(active.run_id, reason="stopped by the client")
        return json_response({"run_id": state.run_id, "status": state.status.value})

    async def openapi(self, request: Request) -> Response:
        declared = [(m, p, op) for m, p, op in self.router.declared() if op is not None]
        return json_response(aisdk_openapi(declared, auth=self.auth is not None, rate_limit=request.rate_limit))

    # -- helpers --------------------------------------------------------------------------------

    def _agent(self, name: str | None) -> str:
        name = name or self.default_agent
        if name is None:
            raise invalid("field 'agent' is required: this server has no default agent", field="agent")
        if self.engine.agents.get(name).metadata.get("internal"):  # unknown: AgentNotFound, a 404
            raise AgentNotFound(name)  # hidden agents are answered as missing
        return name

    async def _active_run(self, chat_id: str, owner: str | None) -> RunSummary | None:
        """The chat's newest active run of `owner`'s (None: none, or not `owner`'s chat)."""
        active: list[RunSummary] = []
        for status in ACTIVE_STATUSES:
            active += (await self.engine.list_runs(session_id=chat_id, status=status, owner=owner, limit=1)).runs
        return max(active, key=lambda run: (run.created_at is not None, run.created_at), default=None)

    async def _wait_seq(self, state: RunState) -> int:
        """The seq of the wait a waiting run is in: its last `run.waiting_for_input` (events such as a
        restart's may follow it)."""
        tail = await self.engine.store.read(state.run_id, after_seq=max(0, state.last_seq - WAIT_TAIL), limit=WAIT_TAIL)
        return max((e.seq for e in tail if isinstance(e, RunWaitingForInput)), default=state.last_seq)

    def _stream(self, state: RunState, after_seq: int) -> StreamResponse:
        return sse_response(self._frames(state, after_seq), headers=UI_STREAM_HEADERS)

    async def _frames(self, state: RunState, after_seq: int) -> AsyncIterator[bytes]:
        """The parts of the run (as `state` was when the stream began) after `after_seq` until its end,
        or until it waits for input with nothing after the wait (the client answers with its next
        POST); keep-alives when idle."""
        run_id = state.run_id
        open_message = state.partial.message_id if state.partial is not None else None
        parts = UIMessageParts(run_id, discarded=state.discarded, open_message=open_message, live_after=state.last_seq)
        seen = 0
        while seen < after_seq:  # what the client has: the parts open at its cursor
            page = await self.engine.store.read(run_id, after_seq=seen, limit=min(PRIME_PAGE, after_seq - seen))
            if not page:
                break
            parts.prime(page)
            seen = page[-1].seq
        if after_seq and parts.waiting_at == after_seq and not await self.engine.store.read(run_id, after_seq=after_seq, limit=1):
            yield parts.end_of_turn(after_seq)  # the client has the turn up to the wait: this stream ends too
            return
        async with aclosing(self.engine.follow(run_id, after_seq, idle=self.keepalive)) as batches:
            async for batch in batches:
                if not batch:
                    yield sse_comment()
                    continue
                frames = parts.frames(batch)
                last = batch[-1].seq
                if parts.waiting_at == last and not await self.engine.store.read(run_id, after_seq=last, limit=1):
                    yield frames + parts.end_of_turn(last)
                    return
                if frames:
                    yield frames


def params_id(request: Request, name: str) -> str:
    """A path id: 1 to MAX_ID_LENGTH characters without control characters (else a 400)."""
    value = request.params[name]
    if not value or len(value) > MAX_ID_LENGTH or params.has_control_characters(value):
        raise invalid(f"{name} must be 1 to {MAX_ID_LENGTH} characters without control characters", field=name)
    return value


def _last_message(messages: Any) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise invalid("field 'messages' must be a non-empty array of UI messages", field="messages")
    last = messages[-1]
    if not isinstance(last, dict) or not isinstance(last.get("role"), str) or not isinstance(last.get("parts"), list):
        raise invalid("the last message must be an object with a string 'role' and an array 'parts'", field="messages")
    return last


def _user_text(message: dict[str, Any]) -> str:
    """The run's input: the text parts of the last message, a user's."""
    if message["role"] != "user":
        raise invalid("the last message must be the user's (or answer the chat's run waiting for input)", field="messages")
    texts = [part.get("text") for part in message["parts"] if isinstance(part, dict) and part.get("type") == "text"]
    if not texts or not all(isinstance(text, str) for text in texts) or not "".join(texts).strip():
        raise invalid("the last user message has no text part", field="messages")
    text = "".join(texts)
    size = len(text.encode())
    if size > MAX_INPUT_BYTES:
        raise HttpError(
            413, "payload_too_large", f"the user message is {size} bytes; the limit is {MAX_INPUT_BYTES}",
            {"field": "messages", "size_bytes": size, "limit_bytes": MAX_INPUT_BYTES},
        )
    return text


def _answer(message: dict[str, Any], call_id: str) -> Any:
    """The input for a run waiting at `call_id`: the approval response to it in the last (assistant)
    message, {"approved": bool, "reason": ...}, or the text of the last (user) message."""
    if message["role"] == "user":
        return _user_text(message)
    for part in message["parts"]:
        approval = part.get("approval") if isinstance(part, dict) and part.get("toolCallId") == call_id else None
        if isinstance(approval, dict) and approval.get("id") == call_id and isinstance(approval.get("approved"), bool):
            reason = approval.get("reason")
            return {"approved": approval["approved"], **({"reason": reason} if isinstance(reason, str) else {})}
    raise invalid(
        f"the chat's run waits for input: send the approval response to {call_id} or a user message",
        field="messages", tool_call_id=call_id,
    )


__all__ = ["AiSdkProfile", "TRIGGERS"]
