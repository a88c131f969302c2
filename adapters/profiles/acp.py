"""The ACP profile (Agent Communication Protocol, seed 003): ACP's REST shapes over a RunEngine.

    GET  /ping                  {}
    GET  /agents                {"agents": [manifest ...]}
    GET  /agents/{name}         one manifest
    POST /runs                  agent_name, session_id | session, input (messages), mode sync|async|stream
    GET  /runs/{run_id}         the ACP run object
    GET  /runs/{run_id}/events  {"events": [...]}, or SSE with `id: <seq>` (Accept: text/event-stream)
    POST /runs/{run_id}         resume: {"await_resume": {"type": "message", "message": ...}, "mode": ...}
    POST /runs/{run_id}/cancel  cancel (idempotent)
    GET  /sessions/{id}         {"id", "history": [message URLs], "state": null}: a page (?limit=, ?cursor=; Link rel=next)
    GET  /sessions/{id}/history/{ref}   one history message (what the history URLs point at)

No run logic here: requests become engine calls, and the engine's state and events
are translated to ACP's run object and events (docs/profiles.md has the table).
Errors carry ACP's top-level `code`/`message`/`data` (what ACP clients read) beside
the common `{"error": {...}}` object.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import quote, urlencode
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, nullcontext
from typing import Any

import attrs

from runengine.engine import RunEngine, SessionPolicy
from runengine.errors import AgentNotFound, InvalidRequest, RunDeleted, RunNotFound, SessionNotFound
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
    RunRequeued,
    RunStarted,
    RunWaitingForInput,
    Thought,
    ToolCall,
    ToolResult,
    Usage,
)
from runengine.http.auth import AuthHook, guarded
from runengine.http import params
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.openstreams import OpenStreams
from runengine.http.router import Router
from runengine.http.cursor import HISTORY_LIMIT, history_before, history_cursor, parse_history_position, resume_after
from runengine.http.sse import KEEPALIVE, sse_comment, sse_frame, sse_response
from runengine.http.streaming import each_event
from runengine.limits import MAX_CONTENT_BYTES, MAX_ID_LENGTH, MAX_INPUT_BYTES
from runengine.reducer import Fold
from runengine.state import RunState
from runengine.status import Status
from runengine.wire import dumps, format_time

from .common import idempotency_key, invalid, request_fingerprint, request_owner, session_policy

STATUS = {
    Status.PENDING: "created",
    Status.RUNNING: "in-progress",
    Status.WAITING_FOR_INPUT: "awaiting",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
}
MODES = ("sync", "async", "stream")
RUN_FIELDS = ("agent_name", "session_id", "session", "input", "mode", "session_policy")
_ROLE_NAME = re.compile(r"^[a-zA-Z0-9_\-]+$")
#: How ACP names our error codes where it has its own (ErrorCode in acp-sdk).
ACP_CODES = {"invalid_request": "invalid_input", "internal_error": "server_error"}


# -- engine state -> ACP shapes ---------------------------------------------------------


def agent_role(agent: str) -> str:
    return f"agent/{agent}" if _ROLE_NAME.match(agent) else "agent"


def text_part(content: str) -> dict[str, Any]:
    return {"content_type": "text/plain", "content": content, "content_encoding": "plain"}


def value_parts(value: Any) -> list[dict[str, Any]]:
    """Parts for an arbitrary value: ACP messages/parts as they are, text as text, the rest as JSON."""
    if isinstance(value, str):
        return [text_part(value)]
    if isinstance(value, dict) and isinstance(value.get("parts"), list):
        return list(value["parts"])
    if isinstance(value, list) and value and all(isinstance(m, dict) and "parts" in m for m in value):
        return [part for m in value for part in m["parts"]]
    return [{"content_type": "application/json", "content": dumps(value), "content_encoding": "plain"}]


def message_json(role: str, parts: list[dict[str, Any]], created: Any, completed: Any) -> dict[str, Any]:
    return {
        "role": role,
        "parts": parts,
        "created_at": format_time(created) if created else None,
        "completed_at": format_time(completed) if completed else None,
    }


def output_messages(state: RunState) -> list[dict[str, Any]]:
    role = agent_role(state.agent)
    when = state.finished_at or state.updated_at
    messages = [
        message_json(role if m.role != "user" else "user", [text_part(m.content)], state.started_at, when)
        for m in state.messages
    ]
    if not messages and state.output is not None:
        messages.append(message_json(role, value_parts(state.output), state.started_at, when))
    return messages


def await_request_json(request: Any) -> dict[str, Any]:
    if isinstance(request, dict) and request.get("type") == "message" and isinstance(request.get("message"), dict):
        return request
    return {"type": "message", "message": message_json("agent", value_parts(request), None, None)}


def run_json(state: RunState) -> dict[str, Any]:
    waiting = state.status is Status.WAITING_FOR_INPUT
    return {
        "run_id": state.run_id,
        "agent_name": state.agent,
        "session_id": state.session_id,
        "status": STATUS[state.status],
        "await_request": await_request_json(state.await_request) if waiting else None,
        "output": output_messages(state),
        "error": {"code": state.error.code, "message": state.error.message, "data": None} if state.error else None,
        "created_at": format_time(state.created_at) if state.created_at else None,
        "finished_at": format_time(state.finished_at) if state.finished_at else None,
    }


class EventMapper:
    """Turns a run's events, in order from seq 1, into ACP events (zero, one or several each)."""

    def __init__(self) -> None:
        self.fold = Fold()
        self.opened: set[str] = set()
        self.role = "agent"

    def _run(self) -> dict[str, Any]:
        # Only run-level events build the whole state: doing it per delta would cost O(n) each.
        state = self.fold.state
        assert state is not None
        return run_json(state)

    def map(self, event: Event) -> list[dict[str, Any]]:
        self.fold.apply(event)
        role = self.role
        if isinstance(event, RunCreated):
            self.role = agent_role(event.agent)
            return [{"type": "run.created", "run": self._run()}]
        if isinstance(event, (RunStarted, RunInput)):
            return [{"type": "run.in-progress", "run": self._run()}]
        if isinstance(event, RunWaitingForInput):
            return [{"type": "run.awaiting", "run": self._run()}]
        if isinstance(event, (RunCompleted, RunFailed, RunCancelled)):
            return [{"type": event.type, "run": self._run()}]
        if isinstance(event, MessageDelta):
            out: list[dict[str, Any]] = []
            if event.message_id not in self.opened:
                self.opened.add(event.message_id)
                out.append({"type": "message.created", "message": message_json(role, [], event.at, None)})
            out.append({"type": "message.part", "part": text_part(event.content)})
            return out
        if isinstance(event, MessageCompleted):
            msg_role = "user" if event.role == "user" else role
            whole = message_json(msg_role, [text_part(event.content)], event.at, event.at)
            if event.message_id in self.opened:
                return [{"type": "message.completed", "message": whole}]
            self.opened.add(event.message_id)
            return [
                {"type": "message.created", "message": whole},
                {"type": "message.part", "part": text_part(event.content)},
                {"type": "message.completed", "message": whole},
            ]
        return [{"type": "generic", "generic": generic_json(event)}]


def generic_json(event: Event) -> dict[str, Any]:
    """Events ACP has no type for (thoughts, tool calls, usage, custom) as `generic` events."""
    base: dict[str, Any] = {"type": event.type, "seq": event.seq}
    if isinstance(event, Thought):
        base.update(content=event.content, source=event.source)
    elif isinstance(event, ToolCall):
        base.update(call_id=event.call_id, name=event.name, arguments=event.arguments)
    elif isinstance(event, ToolResult):
        base.update(call_id=event.call_id, output=event.output)
        if event.error is not None:
            base["error"] = {"code": event.error.code, "message": event.error.message}
    elif isinstance(event, Usage):
        base.update(input_tokens=event.input_tokens, output_tokens=event.output_tokens, cost=event.cost)
    elif isinstance(event, Custom):
        base.update(name=event.name, data=event.data)
    elif isinstance(event, RunRequeued):
        base.update(reason=event.reason)
    elif isinstance(event, MessageDiscarded):  # a resumed run dropped this half-streamed message
        base.update(message_id=event.message_id, reason=event.reason)
    return base


# -- ACP requests -> engine input ----------------------------------------------------------


def parse_parts(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise invalid(f"{where} must be an object with parts", field=where)
    parts = message.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise invalid(f"{where}.parts must be an array of objects", field=f"{where}.parts")
    for i, part in enumerate(parts):
        content = part.get("content")
        if content is not None and not isinstance(content, str):
            raise invalid(f"{where}.parts[{i}].content must be a string", field=f"{where}.parts[{i}].content")
        if content is not None and part.get("content_url") is not None:
            raise invalid(f"{where}.parts[{i}] has both content and content_url", field=f"{where}.parts[{i}]")
    return parts


def is_text(part: dict[str, Any]) -> bool:
    return (
        part.get("content_type") in (None, "text/plain")
        and part.get("content_encoding") in (None, "plain")
        and part.get("content_url") is None
        and isinstance(part.get("content"), str)
        and part.get("name") is None
    )


def engine_input(messages: list[dict[str, Any]]) -> Any:
    """Plain text when every part is plain text (what most agents take), else the ACP messages."""
    parts = [p for m in messages for p in m["parts"]]
    if all(is_text(p) for p in parts):
        return "".join(p["content"] for p in parts)
    return messages


def parse_uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise invalid(f"{field} must be a UUID", field=field) from None


# -- the app ----------------------------------------------------------------------------------


@attrs.define
class AcpProfile:
    """The ACP API over `engine`; mount it anywhere (`runengine serve` uses /acp)."""

    engine: RunEngine
    auth: AuthHook | None = None
    #: The per-session policy when a request names none (None: the engine's default).
    session_policy: SessionPolicy | None = None
    #: Streams open per principal, bounded (build_app shares one across every surface).
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    router: Router = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.router = Router()
        r.route("GET", "/ping", self.ping)
        r.route("GET", "/agents", guarded(self.auth, self.list_agents))
        r.route("GET", "/agents/{name}", guarded(self.auth, self.read_agent))
        r.route("POST", "/runs", guarded(self.auth, self.create_run))
        r.route("GET", "/runs/{run_id}", guarded(self.auth, self.read_run))
        r.route("POST", "/runs/{run_id}", guarded(self.auth, self.resume_run))
        r.route("GET", "/runs/{run_id}/events", guarded(self.auth, self.run_events))
        r.route("POST", "/runs/{run_id}/cancel", guarded(self.auth, self.cancel_run))
        r.route("GET", "/sessions/{session_id}", guarded(self.auth, self.read_session))
        r.route("GET", "/sessions/{session_id}/history/{index}", guarded(self.auth, self.history_message))

    def routes(self) -> Iterator[tuple[str, str]]:
        return self.router.routes()

    async def __call__(self, request: Request) -> Response | StreamResponse:
        response = await self.router(request)
        if isinstance(response, Response) and response.status >= 400:
            return acp_error(response)
        return response

    # -- agents -------------------------------------------------------------------------

    def _manifest(self, spec: Any) -> dict[str, Any]:
        metadata = {k: v for k, v in spec.metadata.items() if k != "internal"}
        return {
            "name": spec.name,
            "description": spec.description or None,
            "metadata": metadata,
            "input_content_types": ["*/*"],
            "output_content_types": ["*/*"],
        }

    async def ping(self, request: Request) -> Response:
        return json_response({})

    async def list_agents(self, request: Request) -> Response:
        agents = [self._manifest(s) for s in self.engine.agents if not s.metadata.get("internal")]
        return json_response({"agents": agents})

    async def read_agent(self, request: Request) -> Response:
        spec = self.engine.agents.get(request.params["name"])
        if spec.metadata.get("internal"):
            raise AgentNotFound(spec.name)
        return json_response(self._manifest(spec))

    # -- runs -----------------------------------------------------------------------------

    async def _state(self, request: Request, raw_id: str) -> RunState:
        """The run named in the path (ACP clients send UUIDs in either spelling)."""
        candidates = [raw_id]
        try:
            parsed = uuid.UUID(raw_id)
            candidates += [c for c in (str(parsed), parsed.hex) if c != raw_id]
        except ValueError:
            pass
        caller = request_owner(self.auth, request)
        for candidate in candidates:
            try:
                await self.engine.run_summary(candidate, owner=caller)  # another's: as missing
            except RunNotFound:
                continue
            return await self.engine.status(candidate)
        raise RunNotFound(raw_id)

    async def create_run(self, request: Request) -> Response | StreamResponse:
        body = request.json_object()
        unknown = sorted(set(body) - set(RUN_FIELDS))
        if unknown:
            raise invalid(f"unknown field(s): {', '.join(unknown)}", unknown=unknown)
        agent = body.get("agent_name")
        if not isinstance(agent, str) or not agent:
            raise invalid("agent_name is required", field="agent_name")
        spec = self.engine.agents.get(agent)
        if spec.metadata.get("internal"):
            raise AgentNotFound(agent)
        mode = body.get("mode", "sync")
        if mode not in MODES:
            raise invalid(f"mode must be one of {', '.join(MODES)}", field="mode")
        messages = body.get("input")
        if not isinstance(messages, list):
            raise invalid("input must be an array of messages", field="input")
        for i, message in enumerate(messages):
            parse_parts(message, f"input[{i}]")
        params.json_value(body, "input", max_bytes=MAX_INPUT_BYTES)
        session_id = self._session_id(body)
        policy = session_policy(body.get("session_policy"), "session_policy") or self.session_policy
        key = idempotency_key(request)
        with self.streams.waiting(request) if mode == "sync" else nullcontext():  # a 429 starts no run
            with self.streams.slot(request) if mode == "stream" else nullcontext() as slot:  # nor here
                state = await self.engine.execute(
                    agent,
                    engine_input(messages),
                    mode="async",
                    session_id=session_id,  # another principal's session: SessionNotFound, a 404
                    owner=request_owner(self.auth, request),
                    idempotency_key=key,
                    idempotency_scope="acp",
                    request_fingerprint=request_fingerprint("acp", body, delivery=("mode",)) if key is not None else None,
                    session_policy=policy,
                    run_id=str(uuid.uuid4()),
                )
                run_header = (("run-id", state.run_id),)
                if slot is not None:
                    return slot.bind(self._sse(state.run_id, after_seq=0, stop_when_awaiting=True, headers=run_header))
            if mode == "async":
                return json_response(run_json(state), status=202, headers=run_header)
            state = await self.engine.wait(state.run_id)
            return json_response(run_json(state), headers=run_header)

    def _session_id(self, body: dict[str, Any]) -> str:
        """ACP sessions are UUIDs; a run without one gets a new session, as in ACP."""
        session_id = body.get("session_id")
        session = body.get("session")
        if session is not None:
            if not isinstance(session, dict) or "id" not in session:
                raise invalid("session must be an object with an id", field="session")
            # The session's history URLs are not fetched: loading URLs a client names
            # would let it make this server request anything (SSRF).
            inline = parse_uuid(session["id"], "session.id")
            if session_id is not None and parse_uuid(session_id, "session_id") != inline:
                raise invalid("session_id and session.id differ", field="session_id")
            return inline
        if session_id is not None:
            return parse_uuid(session_id, "session_id")
        return str(uuid.uuid4())

    async def read_run(self, request: Request) -> Response:
        return json_response(run_json(await self._state(request, request.params["run_id"])))

    async def resume_run(self, request: Request) -> Response | StreamResponse:
        state = await self._state(request, request.params["run_id"])
        body = request.json_object()
        resume = body.get("await_resume")
        if not isinstance(resume, dict) or resume.get("type", "message") != "message":
            raise invalid("await_resume must be {\"type\": \"message\", \"message\": {...}}", field="await_resume")
        parts = parse_parts(resume.get("message"), "await_resume.message")
        params.json_value(resume, "message", max_bytes=MAX_CONTENT_BYTES)
        mode = body.get("mode", "sync")
        if mode not in MODES:
            raise invalid(f"mode must be one of {', '.join(MODES)}", field="mode")
        given = engine_input([{"parts": parts}])
        with self.streams.waiting(request) if mode == "sync" else nullcontext():  # a 429 resumes nothing
            with self.streams.slot(request) if mode == "stream" else nullcontext() as slot:  # nor here
                resumed = await self.engine.resume(state.run_id, given)
                if slot is not None:
                    # From the run.input event on: the client sees run.in-progress first, as in ACP.
                    return slot.bind(self._sse(resumed.run_id, after_seq=resumed.last_seq - 1, stop_when_awaiting=True))
            if mode == "async":
                return json_response(run_json(resumed), status=202)
            return json_response(run_json(await self.engine.wait(resumed.run_id, after_seq=resumed.last_seq)))

    async def cancel_run(self, request: Request) -> Response:
        state = await self._state(request, request.params["run_id"])
        state = await self.engine.cancel(state.run_id, reason="cancelled by the client")
        return json_response(run_json(state), status=202)

    async def run_events(self, request: Request) -> Response | StreamResponse:
        state = await self._state(request, request.params["run_id"])
        after = resume_after(request)
        if "text/event-stream" in (request.header("accept") or ""):
            with self.streams.slot(request) as slot:
                return slot.bind(self._sse(state.run_id, after_seq=after, stop_when_awaiting=False))
        mapper = EventMapper()
        events: list[dict[str, Any]] = []
        async with aclosing(self.engine.events(state.run_id, follow=False)) as stream:  # type: ignore[type-var]
            async for event in stream:
                mapped = mapper.map(event)
                if event.seq > after:
                    events.extend(mapped)
        return json_response({"events": events})

    def _sse(
        self,
        run_id: str,
        *,
        after_seq: int,
        stop_when_awaiting: bool,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> StreamResponse:
        return sse_response(self._sse_body(run_id, after_seq, stop_when_awaiting), headers=headers)

    async def _sse_body(self, run_id: str, after_seq: int, stop_when_awaiting: bool) -> AsyncIterator[bytes]:
        """ACP events, the last frame of each engine event carrying `id: <seq>`.

        Events up to `after_seq` are folded, not sent, so that a resumed stream knows
        which messages it already announced.
        """
        mapper = EventMapper()
        async with aclosing(each_event(self.engine.follow(run_id, 0, idle=KEEPALIVE))) as events:  # type: ignore[type-var]
            try:
                async for event in events:
                    if event is None:
                        yield sse_comment()
                        continue
                    mapped = mapper.map(event)
                    if event.seq <= after_seq:
                        continue
                    for i, item in enumerate(mapped):
                        last = i == len(mapped) - 1
                        yield sse_frame(dumps(item), id=event.seq if last else None)
                    if stop_when_awaiting and isinstance(event, RunWaitingForInput):
                        return
            except RunDeleted as deleted:  # ACP's error event, with the one error format's fields
                error = deleted.error_body()["error"]
                yield sse_frame(dumps({"type": "error", "error": {"code": error["code"], "message": error["message"], "data": error["details"]}}))

    # -- sessions ---------------------------------------------------------------------------

    async def read_session(self, request: Request) -> Response:
        """The session object of seed 003 ({id, history, state}), its `history` one page of message
        URLs (`?limit=`, `?cursor=`; the latest page by default); the page of older ones is the
        `Link: <...>; rel="next"` header, so the object keeps the seed's schema."""
        session_id = parse_uuid(request.params["session_id"], "session_id")
        page = await self.engine.session_history(
            session_id,
            owner=request_owner(self.auth, request),
            limit=HISTORY_LIMIT.parse(request.query),
            before=history_before(request),
        )
        base = f"{_absolute_base(request)}/sessions/{session_id}"
        headers: tuple[tuple[str, str], ...] = ()
        if page.next is not None:
            query = urlencode({"limit": HISTORY_LIMIT.parse(request.query), "cursor": history_cursor(page.next)})
            headers = (("link", f'<{base}?{query}>; rel="next"'),)
        return json_response(
            {
                "id": session_id,
                "history": [f"{base}/history/{quote(history_cursor(p), safe=':')}" for p in page.positions],
                "state": None,
            },
            headers=headers,
        )

    async def history_message(self, request: Request) -> Response:
        """One message of the session (what its `history` URLs point at), reading its run only."""
        session_id = parse_uuid(request.params["session_id"], "session_id")
        reference = request.params["index"]
        try:
            position = parse_history_position(reference)
            item = await self.engine.session_message(session_id, position, owner=request_owner(self.auth, request))
        except (HttpError, InvalidRequest):
            raise SessionNotFound(f"{session_id}/history/{reference[:MAX_ID_LENGTH]}") from None
        role = "user" if item.role == "user" else agent_role(item.agent or "")
        return json_response(message_json(role, value_parts(item.content), item.at, item.at))


def _absolute_base(request: Request) -> str:
    """This profile's absolute URL (ACP session history entries must be absolute URLs)."""
    proto = (request.header("x-forwarded-proto") or "http").split(",")[0].strip()
    host = request.header("host") or "localhost"
    prefix = request.root_path[: len(request.root_path) - len(request.path)] if request.root_path else ""
    return f"{proto}://{host}{prefix.rstrip('/')}"


def acp_error(response: Response) -> Response:
    """Add ACP's top-level error fields (what `acp_sdk` reads) beside the common error object."""
    try:
        body = json.loads(response.body)
        error = body["error"]
    except (ValueError, KeyError, TypeError):
        return response
    body = {
        "code": ACP_CODES.get(error.get("code"), error.get("code")),
        "message": error.get("message", ""),
        "data": error.get("details") or None,
        "error": error,
    }
    return attrs.evolve(response, body=dumps(body).encode())


__all__ = ["AcpProfile", "EventMapper", "run_json", "STATUS"]
