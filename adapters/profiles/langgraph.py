"""The LangGraph Platform API subset, mounted at /langgraph: enough for the official `langgraph-sdk`
(Python) and `@langchain/langgraph-sdk` (`useStream`) clients, over a RunEngine.

    POST /assistants/search                         [assistant]: one per agent
    GET  /assistants/{assistant_id}                 an agent by its name (LangGraph's graph id) or assistant id
    POST /threads                                   a thread: an engine session of the principal's
    GET  /threads/{thread_id}                       {thread_id, status, values, metadata, ...}
    GET  /threads/{thread_id}/state                 {values, next, tasks, checkpoint, interrupts, ...}
    POST /threads/{thread_id}/history               the thread's state after each of its runs, newest first
    POST /threads/{thread_id}/runs                  a run, started in the background
    POST /threads/{thread_id}/runs/stream           a run, streamed (SSE; Content-Location names the run)
    POST /threads/{thread_id}/runs/wait             a run, waited for: the thread's values
    GET  /threads/{thread_id}/runs/{run_id}         the run
    GET  /threads/{thread_id}/runs/{run_id}/stream  join its stream (Last-Event-ID: resume after it; -1: from the start)
    GET  /threads/{thread_id}/runs/{run_id}/join    wait for its end: the thread's values
    POST /threads/{thread_id}/runs/{run_id}/cancel  cancel it (?action=rollback also deletes it)
    GET  /openapi.json                              this profile's OpenAPI document

Every SSE frame id is a seq of the run's log (docs/frontends.md: what maps to what); the shapes
are in langgraph_shapes.py, the fields and the document in langgraph_openapi.py. A thread is an engine session whose data says it is one (a thread
of /v1 or /platform is another profile's and answers 404 here).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import anyio
import attrs
import structlog

from runengine.agents import AgentSpec
from runengine.engine import RunEngine
from runengine.errors import InvalidRunState, RunEngineError, RunNotFound, SessionExists, SessionNotFound
from runengine.events import Event, RunFailed, RunWaitingForInput
from runengine.http import params
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.cursor import last_event_id
from runengine.http.openstreams import OpenStreams
from runengine.http.router import Router
from runengine.http.sse import KEEPALIVE, sse_comment, sse_frame, sse_response
from runengine.http.streaming import KeptText, server_stop
from runengine.http.limits import MAX_START_DELAY
from runengine.limits import MAX_ID_LENGTH, MAX_INPUT_BYTES, MAX_METADATA_BYTES, MAX_SESSION_METADATA_BYTES
from runengine.ports import SessionRecord
from runengine.state import RunState
from runengine.status import Status
from runengine.wire import dumps, format_time

from .common import invalid, request_owner
from .langgraph_openapi import (
    CANCEL_RUN,
    CREATE_RUN,
    CREATE_THREAD,
    GET_ASSISTANT,
    GET_RUN,
    GET_THREAD,
    HISTORY_FIELDS,
    IGNORED_FIELDS,
    JOIN_RUN,
    JOIN_STREAM,
    MULTITASK,
    OPENAPI,
    REFUSED_FIELDS,
    RUN_FIELDS,
    SEARCH,
    SEARCH_FIELDS,
    STREAM_RUN,
    THREAD_FIELDS,
    THREAD_HISTORY,
    THREAD_STATE,
    WAIT_RUN,
    langgraph_openapi,
)
from .langgraph_shapes import (
    DEFAULT_MODES,
    END,
    META_KEY,
    RUN_STATUS,
    SILENT_MODES,
    STREAM_MODES,
    RunMessages,
    StreamFrames,
    ends_stream,
    input_message_id,
    input_text,
    thread_values,
)

log = structlog.get_logger("runengine.http")

#: A session that is a LangGraph thread says so in its data.
THREAD_KIND = "langgraph.thread"
#: Assistants are listed in this fixed order; created_at is unknown to the engine (agents are code).
AGENT_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ASSISTANT_NS = uuid.UUID("6f1e2d6a-8a7e-4c55-9a3c-1b6f3f1d0a11")


def assistant_id_of(agent: str) -> str:
    """An agent's assistant id: a UUID derived from its name (the same on every server)."""
    return str(uuid.uuid5(_ASSISTANT_NS, agent))


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


@attrs.frozen
class ThreadView:
    """A thread as its runs' logs fold it."""

    record: SessionRecord
    runs: tuple[RunState, ...]
    #: The thread's values after each run, oldest run first.
    values_after: tuple[dict[str, Any], ...]

    @property
    def values(self) -> dict[str, Any]:
        return self.values_after[-1] if self.values_after else {"messages": []}

    @property
    def status(self) -> str:
        if not self.runs:
            return "idle"
        last = self.runs[-1].status
        if last is Status.WAITING_FOR_INPUT:
            return "interrupted"
        if not last.terminal:
            return "busy"
        return "error" if last is Status.FAILED else "idle"

    def interrupts(self) -> list[dict[str, Any]]:
        last = self.runs[-1] if self.runs else None
        if last is None or last.status is not Status.WAITING_FOR_INPUT:
            return []
        return [{"value": last.await_request, "id": f"{last.run_id}:{last.last_seq}"}]


# -- the app ------------------------------------------------------------------------------


@attrs.define
class LangGraphProfile:
    """LangGraph's Platform API subset over `engine`; `runengine serve` mounts it at /langgraph."""

    engine: RunEngine
    auth: AuthHook | None = None
    #: Streams open per principal, bounded (build_app shares one across every surface).
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    keepalive: float = KEEPALIVE
    router: Router = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.router = Router()
        for method, pattern, handler, operation in (
            ("POST", "/assistants/search", self.search_assistants, SEARCH),
            ("GET", "/assistants/{assistant_id}", self.get_assistant, GET_ASSISTANT),
            ("POST", "/threads", self.create_thread, CREATE_THREAD),
            ("GET", "/threads/{thread_id}", self.get_thread, GET_THREAD),
            ("GET", "/threads/{thread_id}/state", self.thread_state, THREAD_STATE),
            ("POST", "/threads/{thread_id}/history", self.thread_history, THREAD_HISTORY),
            ("POST", "/threads/{thread_id}/runs", self.create_run, CREATE_RUN),
            ("POST", "/threads/{thread_id}/runs/stream", self.stream_run, STREAM_RUN),
            ("POST", "/threads/{thread_id}/runs/wait", self.wait_run, WAIT_RUN),
            ("GET", "/threads/{thread_id}/runs/{run_id}", self.get_run, GET_RUN),
            ("GET", "/threads/{thread_id}/runs/{run_id}/stream", self.join_stream, JOIN_STREAM),
            ("GET", "/threads/{thread_id}/runs/{run_id}/join", self.join_run, JOIN_RUN),
            ("POST", "/threads/{thread_id}/runs/{run_id}/cancel", self.cancel_run, CANCEL_RUN),
            ("GET", "/openapi.json", self.openapi, OPENAPI),
        ):
            r.route(method, pattern, guarded(self.auth, handler), operation=operation)

    def routes(self) -> Iterator[tuple[str, str]]:
        return self.router.routes()

    async def __call__(self, request: Request) -> Response | StreamResponse:
        return await self.router(request)

    # -- assistants -------------------------------------------------------------------

    def _agents(self) -> list[AgentSpec]:
        return [spec for spec in self.engine.agents if not spec.metadata.get("internal")]

    def _assistant(self, spec: AgentSpec) -> dict[str, Any]:
        return {
            "assistant_id": assistant_id_of(spec.name),
            "graph_id": spec.name,
            "name": spec.name,
            "description": spec.description or None,
            "config": {},
            "context": {},
            "metadata": {},
            "version": 1,
            "created_at": format_time(AGENT_EPOCH),
            "updated_at": format_time(AGENT_EPOCH),
        }

    def _agent(self, assistant_id: Any) -> AgentSpec:
        """The agent an assistant id names: its name (a graph id) or its derived assistant_id."""
        _check_id(assistant_id, "assistant_id")
        for spec in self._agents():
            if assistant_id in (spec.name, assistant_id_of(spec.name)):
                return spec
        raise HttpError(404, "not_found", f"no assistant {assistant_id[:80]!r}", {"assistant_id": assistant_id[:80]})

    async def search_assistants(self, request: Request) -> Response:
        body = request.json_object() if request.body.strip() else {}
        params.reject_unknown(body, SEARCH_FIELDS)
        graph_id = body.get("graph_id")
        name = body.get("name")
        for field, value in (("graph_id", graph_id), ("name", name)):
            if value is not None and not isinstance(value, str):
                raise invalid(f"{field} must be a string", field=field)
        limit = _int_field(body, "limit", default=10, maximum=1000)
        offset = _int_field(body, "offset", default=0, maximum=10**6)
        found = [
            self._assistant(spec)
            for spec in sorted(self._agents(), key=lambda s: s.name)
            if (graph_id is None or spec.name == graph_id) and (name is None or name.lower() in spec.name.lower())
        ]
        return json_response(found[offset : offset + limit])

    async def get_assistant(self, request: Request) -> Response:
        return json_response(self._assistant(self._agent(request.params["assistant_id"])))

    # -- threads -----------------------------------------------------------------------

    async def _record(self, request: Request, thread_id: str) -> SessionRecord:
        """The thread, if it is this principal's and a LangGraph thread; 404 otherwise."""
        try:
            record = await self.engine.get_session(thread_id, owner=request_owner(self.auth, request))
        except SessionNotFound:
            record = None
        if record is None or record.data.get("kind") != THREAD_KIND:
            raise HttpError(404, "not_found", f"no thread {thread_id[:80]!r}", {"thread_id": thread_id[:80]})
        return record

    async def _new_thread(self, request: Request, thread_id: str, metadata: dict[str, Any]) -> SessionRecord:
        return await self.engine.create_session(
            session_id=thread_id, owner=request_owner(self.auth, request), metadata=metadata, data={"kind": THREAD_KIND}
        )

    async def _view(self, request: Request, thread_id: str) -> ThreadView:
        record = await self._record(request, thread_id)
        owner = request_owner(self.auth, request)
        summaries = []
        before = None
        while True:
            page = await self.engine.list_runs(session_id=thread_id, owner=owner, limit=200, before=before)
            summaries.extend(page.runs)
            before = page.next_before
            if before is None:
                break
        summaries.reverse()  # oldest first
        runs: list[RunState] = []
        values_after: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        for summary in summaries:
            try:
                folded = await self._run_messages(summary.run_id)
                runs.append(await self.engine.status(summary.run_id))
            except RunNotFound:  # deleted meanwhile (a rollback)
                continue
            messages.extend(folded.messages)
            values_after.append(thread_values(messages, folded.output))
        return ThreadView(record=record, runs=tuple(runs), values_after=tuple(values_after))

    async def _run_messages(self, run_id: str, *, upto: int | None = None) -> RunMessages:
        """The run's messages folded from its log (up to seq `upto`)."""
        fold = RunMessages()
        async for event in self._log(run_id, upto=upto):
            fold.apply(event)
        return fold

    async def _log(self, run_id: str, *, upto: int | None = None) -> AsyncIterator[Event]:
        after = 0
        while True:
            page = await self.engine.store.read(run_id, after_seq=after, limit=1000)
            for event in page:
                if upto is not None and event.seq > upto:
                    return
                yield event
            if len(page) < 1000:
                if after == 0 and not page:
                    raise RunNotFound(run_id)
                return
            after = page[-1].seq

    def _thread(self, view: ThreadView) -> dict[str, Any]:
        record = view.record
        updated = max([r.updated_at for r in view.runs if r.updated_at] or [record.created_at])
        return {
            "thread_id": record.session_id,
            "created_at": _time(record.created_at),
            "updated_at": _time(updated),
            "metadata": record.metadata,
            "status": view.status,
            "values": view.values,
            "interrupts": {view.runs[-1].run_id: view.interrupts()} if view.interrupts() else {},
        }

    async def create_thread(self, request: Request) -> Response:
        body = request.json_object() if request.body.strip() else {}
        params.reject_unknown(body, THREAD_FIELDS)
        thread_id = body.get("thread_id") or str(uuid.uuid4())
        _check_id(thread_id, "thread_id")
        metadata = _metadata(body, MAX_SESSION_METADATA_BYTES)
        if_exists = body.get("if_exists") or "raise"
        if if_exists not in ("raise", "do_nothing"):
            raise invalid("if_exists must be raise or do_nothing", field="if_exists")
        for unsupported in ("ttl", "supersteps"):
            if body.get(unsupported) is not None:
                raise invalid(f"{unsupported} is not supported on /langgraph", field=unsupported)
        try:
            await self._new_thread(request, thread_id, metadata)
        except SessionExists:
            if if_exists == "raise":
                raise HttpError(409, "conflict", f"thread {thread_id[:80]!r} already exists", {"thread_id": thread_id[:80]}) from None
        return json_response(self._thread(await self._view(request, thread_id)))  # another's: 404

    async def get_thread(self, request: Request) -> Response:
        return json_response(self._thread(await self._view(request, _path_id(request, "thread_id"))))

    def _state(self, view: ThreadView, index: int) -> dict[str, Any]:
        """The thread's state after its run number `index` (oldest first)."""
        run = view.runs[index]
        waiting = index == len(view.runs) - 1 and view.interrupts()
        parent = view.runs[index - 1].run_id if index > 0 else None
        thread_id = view.record.session_id
        return {
            "values": view.values_after[index],
            "next": [run.agent] if waiting or not run.status.terminal else [],
            "tasks": [{"id": run.run_id, "name": run.agent, "error": None, "interrupts": view.interrupts(), "state": None}]
            if waiting else [],
            "metadata": {"run_id": run.run_id, "step": index, "source": "loop", "graph_id": run.agent},
            "created_at": _time(run.updated_at),
            "checkpoint": _checkpoint(thread_id, run.run_id),
            "parent_checkpoint": _checkpoint(thread_id, parent) if parent else None,
            "interrupts": view.interrupts() if waiting else [],
        }

    async def thread_state(self, request: Request) -> Response:
        view = await self._view(request, _path_id(request, "thread_id"))
        if not view.runs:
            thread_id = view.record.session_id
            return json_response(
                {"values": {"messages": []}, "next": [], "tasks": [], "metadata": {}, "created_at": _time(view.record.created_at),
                 "checkpoint": _checkpoint(thread_id, None), "parent_checkpoint": None, "interrupts": []}
            )
        return json_response(self._state(view, len(view.runs) - 1))

    async def thread_history(self, request: Request) -> Response:
        body = request.json_object() if request.body.strip() else {}
        params.reject_unknown(body, HISTORY_FIELDS)
        limit = _int_field(body, "limit", default=10, maximum=1000)
        for field in ("before", "checkpoint"):
            if body.get(field):
                raise invalid(f"{field} is not supported: checkpoint time travel is not offered", field=field)
        if body.get("metadata"):
            raise invalid("filtering the history by metadata is not supported", field="metadata")
        view = await self._view(request, _path_id(request, "thread_id"))
        states = [self._state(view, i) for i in reversed(range(len(view.runs)))]
        return json_response(states[:limit])

    # -- runs --------------------------------------------------------------------------

    async def _start(self, request: Request) -> tuple[RunState, int, dict[str, Any]]:
        """Validate a run request and start (or, with command.resume, resume) its run:
        (the run's state, the seq its stream starts after, the parsed options)."""
        thread_id = _path_id(request, "thread_id")
        body = request.json_object()
        # Every field is checked before anything is looked up (RUN_BODY states the same rules).
        params.reject_unknown(body, RUN_FIELDS + IGNORED_FIELDS + tuple(REFUSED_FIELDS))
        for field, why in REFUSED_FIELDS.items():
            if body.get(field) is not None:
                raise invalid(why, field=field)
        assistant_id = body.get("assistant_id")
        _check_id(assistant_id, "assistant_id")
        modes = _stream_modes(body.get("stream_mode"))
        strategy = _choice(body, "multitask_strategy", tuple(MULTITASK), "reject")
        if_not_exists = _choice(body, "if_not_exists", ("reject", "create"), "reject")
        on_disconnect = _choice(body, "on_disconnect", ("cancel", "continue"), "continue")
        metadata = _metadata(body, MAX_METADATA_BYTES)
        if META_KEY in metadata:
            raise invalid(f"metadata key {META_KEY!r} is reserved for this profile", field="metadata")
        delay = body.get("after_seconds")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_START_DELAY):
            raise invalid(f"after_seconds must be a number from 0 to {MAX_START_DELAY:g}", field="after_seconds")
        raw_input = params.json_value(body, "input", max_bytes=MAX_INPUT_BYTES)
        command = body.get("command")
        if command is not None:
            if not isinstance(command, dict) or set(command) != {"resume"}:
                raise invalid('command must be {"resume": value}: goto and update are not supported', field="command")
            if raw_input is not None:
                raise invalid("give input or command, not both", field="command")
        spec = self._agent(assistant_id)
        options = {"modes": modes, "on_disconnect": on_disconnect, "thread_id": thread_id}
        owner = request_owner(self.auth, request)
        try:
            await self._record(request, thread_id)
        except HttpError:
            if if_not_exists != "create":
                raise
            try:
                await self._new_thread(request, thread_id, {})
            except SessionExists:
                await self._record(request, thread_id)  # another's: 404; a race with its owner: theirs
        if command is not None:
            state, after = await self._resume(thread_id, owner, command)
            return state, after, options
        active = await self._active_runs(thread_id, owner) if strategy == "rollback" else []
        state = await self.engine.execute(
            spec.name,
            input_text(raw_input),
            mode="async",
            session_id=thread_id,
            owner=owner,
            metadata={
                **metadata,
                META_KEY: {
                    "assistant_id": assistant_id_of(spec.name),
                    "input_id": input_message_id(raw_input),
                    "stream_mode": list(modes),
                    "multitask_strategy": strategy,
                },
            },
            session_policy=MULTITASK[strategy],  # type: ignore[arg-type]
            start_at=self.engine.clock() + timedelta(seconds=delay) if delay else None,
        )
        for run_id in active:  # rollback: the interrupted runs go
            try:
                await self.engine.delete_run(run_id, owner=owner)
            except (InvalidRunState, RunNotFound):
                pass
        return state, 0, options

    async def _active_runs(self, thread_id: str, owner: str | None) -> list[str]:
        found: list[str] = []
        for status in (Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT):
            found += [r.run_id for r in (await self.engine.list_runs(session_id=thread_id, owner=owner, status=status, limit=200)).runs]
        return found

    async def _resume(self, thread_id: str, owner: str | None, command: dict[str, Any]) -> tuple[RunState, int]:
        """command {"resume": value}: the value is the input of the thread's run waiting for it."""
        page = await self.engine.list_runs(session_id=thread_id, owner=owner, status=Status.WAITING_FOR_INPUT, limit=1)
        if not page.runs:
            raise HttpError(409, "conflict", "the thread has no run waiting for input", {"thread_id": thread_id[:80]})
        run_id = page.runs[0].run_id
        waiting = await self.engine.status(run_id)
        state = await self.engine.resume(run_id, command["resume"])  # to_json refuses what is not JSON
        return state, waiting.last_seq

    def _run(self, state: RunState, thread_id: str) -> dict[str, Any]:
        own = state.metadata.get(META_KEY) or {}
        return {
            "run_id": state.run_id,
            "thread_id": thread_id,
            "assistant_id": own.get("assistant_id", assistant_id_of(state.agent)),
            "created_at": _time(state.created_at),
            "updated_at": _time(state.updated_at),
            "status": "timeout" if state.error is not None and state.error.code == "timeout" else RUN_STATUS[state.status],
            "metadata": {k: v for k, v in state.metadata.items() if k != META_KEY},
            "kwargs": {},
            "multitask_strategy": own.get("multitask_strategy", "reject"),
        }

    @staticmethod
    def _location(thread_id: str, run_id: str) -> tuple[tuple[str, str], ...]:
        """Where the run is, relative to the mount (both clients resolve it against their base URL)."""
        return (("content-location", f"/threads/{thread_id}/runs/{run_id}"),)

    async def create_run(self, request: Request) -> Response:
        state, _, options = await self._start(request)
        return json_response(self._run(state, options["thread_id"]), headers=self._location(options["thread_id"], state.run_id))

    async def stream_run(self, request: Request) -> StreamResponse:
        with self.streams.slot(request) as slot:  # a 429 starts no run
            state, after, options = await self._start(request)
            return slot.bind(self._stream(request, state, after, options["modes"], options["on_disconnect"]))

    async def wait_run(self, request: Request) -> Response:
        state, after, options = await self._start(request)
        thread_id = options["thread_id"]
        return await self._values_when_ended(request, thread_id, state.run_id, after, self._location(thread_id, state.run_id))

    async def _values_when_ended(
        self, request: Request, thread_id: str, run_id: str, after: int, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        ended = await self.engine.wait(run_id, after_seq=after)
        view = await self._view(request, thread_id)
        values = dict(view.values)
        if ended.status is Status.FAILED and ended.error is not None:
            values["__error__"] = {"error": ended.error.code, "message": ended.error.message}
        if view.interrupts():
            values["__interrupt__"] = view.interrupts()
        return json_response(values, headers=headers)

    async def _own_run(self, request: Request) -> tuple[str, RunState]:
        """The thread's run named in the path, when both are this principal's; 404 otherwise."""
        thread_id = _path_id(request, "thread_id")
        run_id = _path_id(request, "run_id")
        await self._record(request, thread_id)
        try:
            summary = await self.engine.run_summary(run_id, owner=request_owner(self.auth, request))
        except RunNotFound:
            summary = None
        if summary is None or summary.session_id != thread_id:
            raise HttpError(404, "not_found", f"no run {run_id[:80]!r} in this thread", {"run_id": run_id[:80]})
        return thread_id, await self.engine.status(run_id)

    async def get_run(self, request: Request) -> Response:
        thread_id, state = await self._own_run(request)
        return json_response(self._run(state, thread_id))

    async def join_run(self, request: Request) -> Response:
        thread_id, state = await self._own_run(request)
        return await self._values_when_ended(request, thread_id, state.run_id, 0)

    async def join_stream(self, request: Request) -> StreamResponse:
        thread_id, state = await self._own_run(request)
        query = parse_qsl(request.query_string, keep_blank_values=True)
        asked = [value for name, value in query if name == "stream_mode" and value]
        modes = _stream_modes(asked) if asked else tuple((state.metadata.get(META_KEY) or {}).get("stream_mode") or DEFAULT_MODES)
        cancel = _flag(request.query.get("cancel_on_disconnect"), "cancel_on_disconnect")
        raw = (request.header("last-event-id") or "").strip()
        after = 0 if raw == "-1" else last_event_id(request)
        with self.streams.slot(request) as slot:
            return slot.bind(self._stream(request, state, after, modes, "cancel" if cancel else "continue", thread_id))

    def _stream(
        self, request: Request, state: RunState, after: int, modes: Sequence[str], on_disconnect: str, thread_id: str | None = None
    ) -> StreamResponse:
        thread_id = thread_id or state.session_id or ""
        owner = request_owner(self.auth, request)
        body = self._frames(state, thread_id, owner, after, modes, on_disconnect)
        headers = (*self._location(thread_id, state.run_id), ("location", f"/threads/{thread_id}/runs/{state.run_id}/stream"))
        return sse_response(body, headers=headers)

    async def _frames(
        self, state: RunState, thread_id: str, owner: str | None, after: int, modes: Sequence[str], on_disconnect: str
    ) -> AsyncIterator[bytes]:
        """The run's frames after seq `after` until it ends or waits for input; keep-alives when idle."""
        run_id = state.run_id
        gone = False
        try:
            # The thread's messages before this run, which `values` frames start with.
            earlier = await self._thread_before(thread_id, owner, run_id) if "values" in modes else []
            frames = StreamFrames(modes, run_id=run_id, thread_id=thread_id, node=state.agent, earlier=earlier)
            if after:  # a join: the messages the client already has, folded without frames
                async for event in self._log(run_id, upto=after):
                    frames.run.apply(event)
            kept = KeptText(state.discarded)  # token frames cannot be taken back
            follow = self.engine.follow(run_id, after, idle=self.keepalive)
            async with aclosing(follow) as batches:
                async for batch in batches:
                    if not batch:
                        yield sse_comment()
                        continue
                    out = []
                    for event in kept.filter(batch):
                        out.append(frames.frames(event))
                        last = event is batch[-1]
                        if ends_stream(event, last and await self._still_waiting(event)):
                            if type(event) is not RunFailed:
                                out.append(END)
                            yield b"".join(out)
                            return
                    if out:
                        yield b"".join(out)
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            gone = True
            raise
        except Exception as exc:  # the headers are sent: report in-band, then end the stream
            log.exception("langgraph stream failed", run_id=run_id)
            code = exc.code if isinstance(exc, RunEngineError) else "internal_error"
            yield sse_frame(dumps({"error": code, "message": "the event stream failed; join it again to resume"}), event="error")
        finally:
            if gone and on_disconnect == "cancel" and not server_stop.get().stopping:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.engine.cancel(run_id, reason="client disconnected")
                    except Exception:
                        log.exception("cancel after disconnect failed", run_id=run_id)

    async def _still_waiting(self, event: Event) -> bool:
        if type(event) is not RunWaitingForInput:
            return False
        return (await self.engine.run_summary(event.run_id)).last_seq == event.seq

    async def _thread_before(self, thread_id: str, owner: str | None, run_id: str) -> list[dict[str, Any]]:
        """The messages of the thread's runs created before `run_id`, oldest first."""
        ids: list[str] = []
        before = None
        while True:
            page = await self.engine.list_runs(session_id=thread_id, owner=owner, limit=200, before=before)
            ids.extend(r.run_id for r in page.runs)
            before = page.next_before
            if before is None:
                break
        ids.reverse()
        messages: list[dict[str, Any]] = []
        for other in ids[: ids.index(run_id)] if run_id in ids else ids:
            try:
                messages.extend((await self._run_messages(other)).messages)
            except RunNotFound:
                continue
        return messages

    async def cancel_run(self, request: Request) -> Response:
        thread_id, state = await self._own_run(request)
        action = request.query.get("action") or "interrupt"
        if action not in ("interrupt", "rollback"):
            raise invalid("action must be interrupt or rollback", field="action")
        _flag(request.query.get("wait"), "wait")  # the cancel is waited for either way
        ended = await self.engine.cancel(state.run_id, reason="cancelled by the client")
        if action == "rollback":
            await self.engine.delete_run(state.run_id, owner=request_owner(self.auth, request))
        return json_response(self._run(ended, thread_id))

    async def openapi(self, request: Request) -> Response:
        declared = [(m, p, op) for m, p, op in self.router.declared() if op is not None]
        return json_response(langgraph_openapi(declared, auth=self.auth is not None, rate_limit=request.rate_limit))


# -- field checks -------------------------------------------------------------------------


def _checkpoint(thread_id: str, run_id: str | None) -> dict[str, Any]:
    """A run stands for LangGraph's checkpoint after it (there are no others to go back to)."""
    return {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": run_id, "checkpoint_map": None}


def _path_id(request: Request, name: str) -> str:
    value = request.params[name]
    _check_id(value, name)
    return value


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or params.has_control_characters(value):
        raise invalid(f"{name} must be 1 to {MAX_ID_LENGTH} characters without control characters", field=name)


def _metadata(body: dict[str, Any], limit: int) -> dict[str, Any]:
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise invalid("metadata must be an object", field="metadata")
    size = len(dumps(metadata).encode())
    if size > limit:
        raise HttpError(413, "payload_too_large", f"metadata is {size} bytes; the limit is {limit}",
                        {"field": "metadata", "size_bytes": size, "limit_bytes": limit})
    return metadata


def _choice(body: dict[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if value not in options:
        raise invalid(f"{name} must be one of {', '.join(options)}", field=name, allowed=list(options))
    return str(value)


def _int_field(body: dict[str, Any], name: str, *, default: int, maximum: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise invalid(f"{name} must be an integer from 0 to {maximum}", field=name)
    return value


def _stream_modes(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_MODES
    modes = [value] if isinstance(value, str) else value
    known = STREAM_MODES + SILENT_MODES
    if not isinstance(modes, list) or not all(isinstance(m, str) and m in known for m in modes):
        raise invalid(f"stream_mode must be one of, or a list of: {', '.join(known)}", field="stream_mode", allowed=list(known))
    return tuple(dict.fromkeys(modes))


def _flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid(f"{name} must be true or false", field=name)


__all__ = ["LangGraphProfile", "assistant_id_of"]
