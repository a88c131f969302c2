"""The Threads/Runs profile (seed 004), mounted at /v1: the seed's paths and shapes over a RunEngine.

    POST /threads/{thread_id}/runs      201 {"run_id", "trace_id"}; the run executes in the background
                                        (an Idempotency-Key header makes a retry get the same run)
    GET  /threads/{thread_id}/runs      [{"run_id", "status", "created_at"}]          ?limit=
    GET  /runs                          [{every field the seed lists, x_runengine_waiting_for}]  ?limit= &before= &status=
    GET  /runs/{run_id}                 {"run_id", "org_id", "thread_id", "created_by_user_id", ...}
    POST /runs/{run_id}:cancel          {"ok": true}
    POST /runs/{run_id}/input           {"content": <a string or any JSON but null, 32 KB>} -> {"ok": true} (waiting_for_input)
    GET  /runs/{run_id}/events          SSE: `id: <seq>` + `data: {"seq","type","data","created_at"}`
    GET  /openapi.json                  this profile's OpenAPI document

What the seed leaves open, fixed here: a thread is the run's session (begun by its first run,
owned by its principal); `persona_id` "key@version" runs the agent named `key` when it is at that
version (`@engine.agent(key, version=...)`; another version, or none, is a 404), "key" whatever its
version (the version is kept in the run's metadata), no persona runs `default_agent`; the extension field `input` is
the agent's `ctx.input`, and an input's `content` may be any JSON value (the seed: a string);
`route_id` reaches the agent in `ctx.metadata`. The principal facts the
seed reports (`org_id`, `created_by_*`) are recorded in the run's metadata when it is created,
so listings need no auth hook. docs/profiles.md has the event mapping and the field sources.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs

from runengine.engine import RunEngine
from runengine.errors import AgentNotFound, RunDeleted, RunNotFound
from runengine.events import Event
from runengine.http import params
from runengine.http.auth import AuthHook, Principal, guarded
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.cursor import AFTER_SEQ_PARAMETER, LAST_EVENT_ID_PARAMETER, resume_after
from runengine.http.limits import DEFAULT_RUNS_LIMIT, MAX_ID_LENGTH, MAX_RUNS_LIMIT
from runengine.http.openapi import Body, Operation, Reply
from runengine.http.openstreams import OpenStreams
from runengine.http.router import Router
from runengine.http.sse import KEEPALIVE, sse_comment, sse_frame, sse_response
from runengine.http.streaming import deleted_frame
from runengine.limits import MAX_CONTENT_BYTES, MAX_INPUT_BYTES
from runengine.state import RunState, UsageTotals
from runengine.status import Status
from runengine.wire import dumps, event_data, format_time

from .common import idempotency_key, invalid, request_fingerprint, request_owner
from .native_openapi import STATUSES
from .threads_openapi import SSE, WAITING_FOR, threads_openapi

#: The agent a run without `persona_id` gets (the demo agent under `runengine serve`).
DEFAULT_AGENT = "echo"
#: Fields of the create body: the seed's two, and `input` (this profile's extension).
RUN_FIELDS = ("route_id", "persona_id", "input")
ROUTE_ID = params.TextField("route_id", max_length=MAX_ID_LENGTH, description="provider route id; reaches the agent in ctx.metadata")
RUN_INPUT = params.JsonField(
    "input", max_bytes=MAX_INPUT_BYTES, description=f"the agent's ctx.input (any JSON, at most {MAX_INPUT_BYTES} bytes); an extension"
)
LIMIT = params.QueryInt("limit", default=DEFAULT_RUNS_LIMIT, minimum=1, maximum=MAX_RUNS_LIMIT)
STATUS = params.QueryChoice("status", tuple(STATUSES))
BEFORE = params.QueryText("before", max_length=MAX_ID_LENGTH, description="a run_id: list the runs older than it")
#: Our event types under the seed's names where the two differ; every other type keeps its name.
#: (The seed's eight primary types are spelled as ours: run.started, message.delta, tool.call,
#: tool.result, run.waiting_for_input, run.completed, run.failed, run.cancelled.)
SEED_EVENT_TYPES: dict[str, str] = {}


# -- engine state -> the seed's shapes ---------------------------------------------------


def _time(value: Any) -> str | None:
    return format_time(value) if value is not None else None


def run_detail(state: RunState) -> dict[str, Any]:
    """GET /runs/{run_id}: the seed's fields, then the rest of the listing's."""
    return {
        "run_id": state.run_id,
        "org_id": state.metadata.get("org_id"),
        "thread_id": state.session_id,
        "created_by_user_id": state.metadata.get("created_by_user_id"),
        "status": state.status.value,
        "created_at": _time(state.created_at),
        "trace_id": state.metadata.get("trace_id"),
        **run_row(state),
    }


def run_row(state: RunState) -> dict[str, Any]:
    """A row of GET /runs: every field the seed lists (null where the engine has no such figure)."""
    usage = state.usage if state.usage != UsageTotals() else None  # null when the agent reported none
    started = state.started_at or state.created_at
    ended = state.finished_at if state.status.terminal else None
    meta = state.metadata
    return {
        "run_id": state.run_id,
        "org_id": meta.get("org_id"),
        "thread_id": state.session_id,
        "status": state.status.value,
        "model": None,  # agents report no model; route_id (what selects one) is in the metadata
        "persona_id": meta.get("persona_id"),
        "total_input_tokens": usage.input_tokens if usage else None,
        "total_output_tokens": usage.output_tokens if usage else None,
        "total_cost_usd": usage.cost if usage else None,
        "duration_ms": round((ended - started).total_seconds() * 1000) if ended and started else None,
        "cache_hit_rate": None,  # no cache figures in usage events
        "credits_used": None,  # no credits in the engine
        "created_at": _time(state.created_at),
        "completed_at": _time(ended) if state.status is Status.COMPLETED else None,
        "failed_at": _time(ended) if state.status is Status.FAILED else None,
        "created_by_user_id": meta.get("created_by_user_id"),
        "created_by_user_name": meta.get("created_by_user_name"),
        "created_by_email": meta.get("created_by_email"),
        WAITING_FOR: state.await_request,  # the reducer clears it when the run goes on or ends
    }


def event_json(event: Event) -> dict[str, Any]:
    """One stream frame's data: {"seq", "type", "data", "created_at"}."""
    return {
        "seq": event.seq,
        "type": SEED_EVENT_TYPES.get(event.type, event.type),
        "data": event_data(event),
        "created_at": format_time(event.at),
    }


def principal_metadata(principal: Any, owner: str | None) -> dict[str, Any]:
    """What the seed reports about the run's creator, from the auth hook's principal."""
    if owner is None:
        return {}
    if isinstance(principal, Principal):
        return {
            "org_id": principal.org_id,
            "created_by_user_id": owner,
            "created_by_user_name": principal.user_name,
            "created_by_email": principal.email,
        }
    return {"created_by_user_id": owner}


# -- what each route does, for the document (/v1/openapi.json) ------------------------------

CREATE_RUN = Operation(
    "createRun",
    "Start a run in the thread (begun by its first run); it executes in the background",
    parameters=(
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a retry with it gets the same run",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, **params.NO_CONTROL},
        },
    ),
    # persona_id is read by hand (`_agent`): its rules are stated here, once more.
    body=Body(
        "CreateRun",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                ROUTE_ID.name: ROUTE_ID.schema(),
                "persona_id": {
                    "type": ["string", "null"],
                    "maxLength": MAX_ID_LENGTH,
                    "description": "persona_key@version: runs the agent named persona_key when it is at that version "
                    "(another version, or none, is a 404); persona_key: at whatever version; empty: the default agent",
                },
                RUN_INPUT.name: RUN_INPUT.schema(),
            },
        },
        required=False,
    ),
    replies={201: Reply("the run was created", "Created")},
    errors=(400, 404, 409, 413, 422),
)
THREAD_RUNS = Operation(
    "listThreadRuns",
    "The thread's runs, newest first",
    parameters=(LIMIT,),
    replies={200: Reply("runs", {"type": "array", "items": {"$ref": "#/components/schemas/ThreadRun"}})},
    errors=(400, 404),
)
LIST_RUNS = Operation(
    "listRuns",
    "The principal's runs, newest first",
    parameters=(LIMIT, BEFORE, STATUS),
    replies={200: Reply("runs", {"type": "array", "items": {"$ref": "#/components/schemas/RunRow"}})},
    errors=(400, 404),
)
READ_RUN = Operation("getRun", "A run", replies={200: Reply("the run", "RunDetail")}, errors=(400, 404))
CANCEL_RUN = Operation(
    "cancelRun", "Cancel a run (an ended run stays as it is)", replies={200: Reply("cancelled", "Ok")}, errors=(400, 404)
)
SUBMIT_INPUT = Operation(
    "submitInput",
    "Give input to a run in waiting_for_input",
    # content is read by hand (`_input_content`; over the limit is a 413): stated here, once more.
    body=Body(
        "Input",
        {
            "type": "object",
            "required": ["content"],
            "additionalProperties": False,
            "properties": {
                "content": {
                    "not": {"type": "null"},
                    "description": f"a string (as in the seed), at most {MAX_CONTENT_BYTES} bytes of UTF-8; or, an "
                    f"extension, any other JSON value but null, at most {MAX_CONTENT_BYTES} bytes as compact JSON "
                    '(an approval: true, "yes" or {"approved": true}; a deferred tool: its result)',
                }
            },
        },
    ),
    replies={200: Reply("the input was recorded", "Ok")},
    errors=(400, 404, 409, 413),
)
RUN_EVENTS = Operation(
    "runEvents",
    "The run's events as SSE, after `after_seq` (or Last-Event-ID)",
    parameters=(
        AFTER_SEQ_PARAMETER,
        LAST_EVENT_ID_PARAMETER,
    ),
    replies={200: Reply("the event stream", content=SSE)},
    errors=(400, 404, 429),
)
OPENAPI = Operation(
    "openapi", "This document", replies={200: Reply("the OpenAPI document", {"type": "object"})}, secured=False
)


# -- the app ------------------------------------------------------------------------------


@attrs.define
class ThreadsProfile:
    """Seed 004's Threads/Runs API over `engine`; `runengine serve` mounts it at /v1."""

    engine: RunEngine
    auth: AuthHook | None = None
    #: The agent a run without `persona_id` runs (None: persona_id is required).
    default_agent: str | None = DEFAULT_AGENT
    #: Streams open per principal, bounded (build_app shares one across every surface).
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    router: Router = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.router = Router()
        r.route("POST", "/threads/{thread_id}/runs", guarded(self.auth, self.create_run), operation=CREATE_RUN)
        r.route("GET", "/threads/{thread_id}/runs", guarded(self.auth, self.thread_runs), operation=THREAD_RUNS)
        r.route("GET", "/runs", guarded(self.auth, self.list_runs), operation=LIST_RUNS)
        r.route("GET", "/runs/{run_id}", guarded(self.auth, self.read_run), operation=READ_RUN)
        r.route("POST", "/runs/{run_id}:cancel", guarded(self.auth, self.cancel_run), operation=CANCEL_RUN)
        r.route("POST", "/runs/{run_id}/input", guarded(self.auth, self.submit_input), operation=SUBMIT_INPUT)
        r.route("GET", "/runs/{run_id}/events", guarded(self.auth, self.run_events), operation=RUN_EVENTS)
        r.route("GET", "/openapi.json", self.openapi, operation=OPENAPI)  # public, as the native API's

    def routes(self) -> Iterator[tuple[str, str]]:
        return self.router.routes()

    async def __call__(self, request: Request) -> Response | StreamResponse:
        return await self.router(request)

    # -- runs ---------------------------------------------------------------------------

    async def create_run(self, request: Request) -> Response:
        thread_id = _path_id(request, "thread_id")
        body = request.json_object() if request.body.strip() else {}  # every field is optional
        params.reject_unknown(body, RUN_FIELDS)
        route_id = ROUTE_ID.parse(body)
        persona = body.get("persona_id")
        if persona is not None and not isinstance(persona, str):
            raise invalid("field 'persona_id' must be a string (persona_key@version)", field="persona_id")
        agent, version = self._agent(persona or None)
        run_input = RUN_INPUT.parse(body)
        owner = request_owner(self.auth, request)
        key = idempotency_key(request)
        metadata = {
            "route_id": route_id,
            "persona_id": persona or None,
            "persona_version": version,
            "trace_id": uuid.uuid4().hex,
            **principal_metadata(request.principal, owner),
        }
        state = await self.engine.execute(
            agent,
            run_input,
            mode="async",
            session_id=thread_id,  # another principal's thread: SessionNotFound, a 404
            owner=owner,
            metadata={k: v for k, v in metadata.items() if v is not None},
            idempotency_key=key,
            idempotency_scope="v1",
            request_fingerprint=request_fingerprint(("v1", thread_id), body) if key is not None else None,
        )
        # A retry with the same Idempotency-Key gets the first run, with its trace id.
        return json_response({"run_id": state.run_id, "trace_id": state.metadata.get("trace_id")}, status=201)

    def _agent(self, persona: str | None) -> tuple[str, str | None]:
        """The agent and version a persona_id names ("key@version"), or the default agent."""
        if persona is None:
            if self.default_agent is None or self.default_agent not in self.engine.agents:
                raise invalid("persona_id is required: this server has no default agent", field="persona_id")
            return self.default_agent, None
        key, at, version = persona.partition("@")
        if not key or (at and not version) or len(persona) > MAX_ID_LENGTH or params.has_control_characters(persona):
            raise invalid("persona_id must be persona_key@version (or persona_key)", field="persona_id")
        spec = self.engine.agents.get(key)  # unknown: AgentNotFound, a 404
        if spec.metadata.get("internal"):
            raise AgentNotFound(key)  # hidden agents are answered as missing
        if version and version != spec.version:  # a version names what runs: never another one
            has = "has no version" if spec.version is None else f"is at version {spec.version!r}"
            instead = f"{key!r}" if spec.version is None else f"{key + '@' + spec.version!r} or {key!r}"
            raise HttpError(
                404,
                "not_found",
                f"no persona {persona!r}: agent {key!r} {has}; send persona_id {instead}",
                {"field": "persona_id", "persona_id": persona, "agent": key, "version": spec.version},
            )
        return key, version or None

    async def thread_runs(self, request: Request) -> Response:
        thread_id = _path_id(request, "thread_id")
        limit = LIMIT.parse(request.query)
        owner = request_owner(self.auth, request)
        await self.engine.get_session(thread_id, owner=owner)  # unknown or another's: 404
        page = await self.engine.list_runs(session_id=thread_id, owner=owner, limit=limit)
        return json_response(
            [{"run_id": r.run_id, "status": r.status.value, "created_at": _time(r.created_at)} for r in page.runs]
        )

    async def list_runs(self, request: Request) -> Response:
        query = request.query
        limit = LIMIT.parse(query)
        status = STATUS.parse(query)
        before_id = BEFORE.parse(query)
        owner = request_owner(self.auth, request)
        if before_id is not None:  # the cursor is a run id: the last one of the previous page
            await self.engine.run_summary(before_id, owner=owner)  # unknown or another's: 404
        page = await self.engine.list_runs(status=status, owner=owner, limit=limit, before_run=before_id)
        rows = []
        for summary in page.runs:
            try:
                rows.append(run_row(await self.engine.status(summary.run_id)))
            except RunNotFound:  # deleted between the listing and the read
                continue
        return json_response(rows)

    async def _state(self, request: Request) -> RunState:
        run_id = _path_id(request, "run_id")
        await self.engine.run_summary(run_id, owner=request_owner(self.auth, request))
        return await self.engine.status(run_id)

    async def read_run(self, request: Request) -> Response:
        return json_response(run_detail(await self._state(request)))

    async def cancel_run(self, request: Request) -> Response:
        state = await self._state(request)
        await self.engine.cancel(state.run_id, reason="cancelled by the client")
        return json_response({"ok": True})

    async def submit_input(self, request: Request) -> Response:
        state = await self._state(request)
        body = request.json_object()
        params.reject_unknown(body, ("content",))
        content = _input_content(body)
        await self.engine.resume(state.run_id, content)  # not waiting_for_input: 409
        return json_response({"ok": True})

    async def run_events(self, request: Request) -> Response | StreamResponse:
        state = await self._state(request)
        after = resume_after(request)
        with self.streams.slot(request) as slot:
            return slot.bind(sse_response(self._sse_body(state.run_id, after)))

    async def _sse_body(self, run_id: str, after_seq: int) -> AsyncIterator[bytes]:
        """Frames after `after_seq` until the terminal one; at once nothing for an ended run read to its end."""
        batches = self.engine.follow(run_id, after_seq, idle=KEEPALIVE)
        try:
            async for batch in batches:
                if not batch:
                    yield sse_comment()
                    continue
                yield b"".join(sse_frame(dumps(event_json(e)), id=e.seq) for e in batch)
        except RunDeleted as deleted:  # deleted while streamed: said, not a silent end
            yield deleted_frame(deleted)
        finally:
            await batches.aclose()

    async def openapi(self, request: Request) -> Response:
        declared = [(m, p, op) for m, p, op in self.router.declared() if op is not None]
        return json_response(threads_openapi(declared, auth=self.auth is not None, rate_limit=request.rate_limit))


def _input_content(body: dict[str, Any]) -> Any:
    """The input's `content`: the seed's string, or (an extension) any other JSON value but null, as
    an approval (`true`, `{"approved": true}`) or a deferred tool's result takes it. The seed's 32 KB
    counts a string's UTF-8 bytes, any other value's compact JSON."""
    content = body.get("content")
    if content is None:
        raise invalid(
            "field 'content' is required: a string, or any JSON value but null (e.g. true or {\"approved\": true})",
            field="content",
        )
    try:
        size = len(content.encode() if isinstance(content, str) else dumps(content).encode())
    except RecursionError:
        raise invalid("field 'content' is nested too deeply", field="content") from None
    if size > MAX_CONTENT_BYTES:
        raise HttpError(
            413,
            "payload_too_large",
            f"content is {size} bytes; the limit is {MAX_CONTENT_BYTES} (32 KB)",
            {"field": "content", "size_bytes": size, "limit_bytes": MAX_CONTENT_BYTES},
        )
    return content


def _path_id(request: Request, name: str) -> str:
    value = request.params[name]
    if not value or len(value) > MAX_ID_LENGTH or params.has_control_characters(value):
        raise invalid(f"{name} must be 1 to {MAX_ID_LENGTH} characters without control characters", field=name)
    return value


__all__ = ["DEFAULT_AGENT", "SEED_EVENT_TYPES", "ThreadsProfile", "event_json", "run_detail", "run_row"]
