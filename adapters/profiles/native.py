"""The native HTTP API over a RunEngine (the shape of seed 004, with the common error format).

    POST /runs                      start a run: mode sync (200 run), async (202 run), stream (SSE)
    GET  /runs                      list runs: session_id, status, limit, before (cursor)
    GET  /runs/{run_id}             the run object
    DELETE /runs/{run_id}           delete an ended run (204): its events, snapshot, idempotency
                                    records; 409 while it is active, 404 for another principal's
    GET  /runs/{run_id}/events      a JSON page, or SSE (Accept: text/event-stream) from after_seq /
                                    Last-Event-ID, live until the terminal event
    POST /runs/{run_id}/cancel      cancel (idempotent)
    POST /runs/{run_id}/input       give input to a run waiting for it (409 otherwise)
    POST /runs/{run_id}/signals/{name}  send a signal to an unfinished run (409 once it ended)
    GET  /runs/{run_id}/children    the child runs it spawned
    POST /runs/{run_id}/fork        a new run replaying this one's log up to an event (native_fork.py)
    /schedules ...                  runs started on a cron schedule (native_schedules.py)
    POST /sessions                  create a session (201): session_id, metadata, ttl, user_id
    GET  /sessions/{id}             the session, with its runs counted by status
    DELETE /sessions/{id}           end it (idempotent): active runs cancelled, new ones refused (409)
    GET  /sessions/{id}/history     the messages of a session's runs
    GET  /agents                    the agents this engine runs
    GET  /openapi.json              this API as an OpenAPI 3.1 document

The reference with every body, response, error and limit is docs/http.md.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote
from contextlib import aclosing
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog

from runengine.agents import AgentSpec
from runengine.engine import MODES, SESSION_POLICIES, RunEngine
from runengine.errors import AgentNotFound, RunDeleted, RunEngineError, RunNotFound, SessionNotFound
from runengine.idempotency import fingerprint
from runengine.ports import RunSummary, SessionRecord, SessionRuns
from runengine.validation import is_run_id
from runengine.events import RunCreated
from runengine.flow import PRIORITY_BOUND
from runengine.wire import dumps, event_to_dict, format_time
from runengine.http import params
from runengine.http.auth import AuthHook, guarded, owner_of
from runengine.http.core import HttpError, Request, Response, StreamResponse, error_response, json_response
from .native_fork import add_fork_route
from .native_schedules import add_schedule_routes
from .native_openapi import RUN_LINKS, SESSION_LINKS, SSE, STATUSES, native_openapi
from runengine.http.openapi import Body, Operation, Reply
from runengine.http.openstreams import OpenStreams
from runengine.http.router import Router
from .native_shapes import history_message_to_json, run_to_json, session_to_json, summary_to_json
from runengine.http.cursor import (
    AFTER_SEQ_PARAMETER,
    HISTORY_CURSOR_PARAMETER,
    HISTORY_LIMIT,
    LAST_EVENT_ID_PARAMETER,
    after_seq_param,
    history_before,
    history_cursor,
    resume_after,
)
from runengine.http.sse import KEEPALIVE, FrameCache, sse_comment, sse_frame, sse_response
from runengine.http.streaming import deleted_frame, server_stop

log = structlog.get_logger("runengine.http")

from runengine.http.limits import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_RUNS_LIMIT,
    MAX_BODY_BYTES,
    MAX_CONTENT_BYTES,
    MAX_EVENTS_LIMIT,
    MAX_ID_LENGTH,
    MAX_INPUT_BYTES,
    MAX_METADATA_BYTES,
    MAX_REASON_LENGTH,
    MAX_RUNS_LIMIT,
    MAX_SESSION_METADATA_BYTES,
    MAX_SESSION_TTL,
    MAX_START_DELAY,
    MAX_TIMEOUT,
    RETRY_MS,
)

ON_DISCONNECT = ("continue", "cancel")

# -- the request rules: read by the handlers and by the OpenAPI document (runengine.http.openapi) --

RUN_BODY = params.BodySpec(
    (
        params.TextField("agent", max_length=MAX_ID_LENGTH, required=True),
        params.JsonField("input", max_bytes=MAX_INPUT_BYTES),
        params.TextField("session_id", max_length=MAX_ID_LENGTH),
        params.ChoiceField("mode", MODES, default="sync"),
        params.ObjectField("metadata", max_bytes=MAX_METADATA_BYTES),
        params.SecondsField("timeout", maximum=MAX_TIMEOUT),
        params.TimeField("start_at", max_ahead=MAX_START_DELAY, description="a delayed run: pending until this time (with an offset)"),
        params.TextField("idempotency_key", max_length=MAX_ID_LENGTH),
        params.ChoiceField("session_policy", SESSION_POLICIES),
        params.ChoiceField("on_disconnect", ON_DISCONNECT, default="continue"),
        params.IntField(
            "priority", minimum=-PRIORITY_BOUND, maximum=PRIORITY_BOUND, default=0,
            description="among the agent's runs waiting for a slot (flow control), higher starts first",
        ),
    )
)
IDEMPOTENCY_KEY = params.TextField("Idempotency-Key", max_length=MAX_ID_LENGTH)
OWNER = params.TextField("owner", max_length=MAX_ID_LENGTH)


def check_created(created: RunCreated) -> None:
    """Hold a recorded `run.created` (`runengine import`) to the rules of a `POST /runs` body:
    the same fields, checked by RUN_BODY as a request made at the event's time. HttpError (400)."""
    body = {
        "agent": created.agent,
        "input": created.input,
        "session_id": created.session_id,
        "mode": created.mode,
        "metadata": created.metadata or None,
        "timeout": created.timeout,
        "start_at": format_time(created.start_at) if created.start_at is not None else None,
        "priority": created.priority,
    }
    RUN_BODY.parse(body, now=created.at)
    OWNER.parse({"owner": created.owner})
CANCEL_BODY = params.BodySpec((params.TextField("reason", max_length=MAX_REASON_LENGTH),))
INPUT_BODY = params.BodySpec((params.JsonField("content", max_bytes=MAX_CONTENT_BYTES, required=True),))
SESSION_BODY = params.BodySpec(
    (
        params.TextField("session_id", max_length=MAX_ID_LENGTH, description="omitted: the server picks one (sess_...); taken: 409"),
        params.ObjectField("metadata", max_bytes=MAX_SESSION_METADATA_BYTES),
        params.SecondsField(
            "ttl", maximum=MAX_SESSION_TTL, description="seconds until the session expires (then it takes no new runs); omitted: never"
        ),
        params.TextField("user_id", max_length=MAX_ID_LENGTH),
    )
)
RUNS_SESSION = params.QueryText("session_id", max_length=MAX_ID_LENGTH)
RUNS_STATUS = params.QueryChoice("status", tuple(STATUSES))
RUNS_LIMIT = params.QueryInt("limit", default=DEFAULT_RUNS_LIMIT, minimum=1, maximum=MAX_RUNS_LIMIT)
RUNS_BEFORE = params.QueryCursor("before", description="the next_before of the previous page")
EVENTS_LIMIT = params.QueryInt("limit", default=DEFAULT_EVENTS_LIMIT, minimum=1, maximum=MAX_EVENTS_LIMIT)
EVENTS_ON_DISCONNECT = params.QueryChoice("on_disconnect", ON_DISCONNECT, default="continue")

# -- what each route does, for the document ---------------------------------------------------

CREATE_RUN = Operation(
    "createRun",
    "Start a run (mode sync, async or stream)",
    parameters=({"name": IDEMPOTENCY_KEY.name, "in": "header", "required": False, "schema": IDEMPOTENCY_KEY.value_schema()},),
    body=Body("CreateRun", RUN_BODY, description=f"at most {MAX_BODY_BYTES} bytes"),
    replies={
        200: Reply("sync: the run once it ended or waits for input; stream: its events from seq 1 as SSE", "Run", SSE, RUN_LINKS),
        202: Reply("async: the run, pending", "Run", links=RUN_LINKS),
    },
    errors=(400, 404, 408, 409, 413, 422, 429),
)
LIST_RUNS = Operation(
    "listRuns",
    "List runs, newest first",
    parameters=(RUNS_SESSION, RUNS_STATUS, RUNS_LIMIT, RUNS_BEFORE),
    replies={200: Reply("a page of runs", "RunList")},
    errors=(400,),
)
GET_RUN = Operation("getRun", "The run object", replies={200: Reply("the run", "Run")}, errors=(404,))
DELETE_RUN = Operation(
    "deleteRun",
    "Delete an ended run: its events, snapshot and idempotency records",
    replies={204: Reply("deleted; the run is not found from now on")},
    errors=(404, 409),
)
RUN_EVENTS = Operation(
    "getRunEvents",
    "The run's events after a seq: a JSON page, or SSE live until the end",
    parameters=(
        AFTER_SEQ_PARAMETER,
        EVENTS_LIMIT,
        EVENTS_ON_DISCONNECT,
        LAST_EVENT_ID_PARAMETER,
    ),
    replies={
        200: Reply("JSON page, or with Accept: text/event-stream an SSE stream", "EventPage", SSE),
        204: Reply("SSE only: the run has ended and nothing comes after the cursor"),
    },
    errors=(400, 404, 429),
)
CANCEL_RUN = Operation(
    "cancelRun",
    "Cancel the run (idempotent: an ended run is returned as it is)",
    body=Body("Cancel", CANCEL_BODY, required=False),
    replies={200: Reply("the run after the cancel", "Run")},
    errors=(400, 404, 408, 413),
)
GIVE_INPUT = Operation(
    "giveInput",
    "Give input to a run waiting for it",
    body=Body("Input", INPUT_BODY),
    replies={200: Reply("the run with the input recorded", "Run")},
    errors=(400, 404, 408, 409, 413),
)
SIGNAL_BODY = params.BodySpec((params.JsonField("payload", max_bytes=MAX_CONTENT_BYTES),))
SEND_SIGNAL = Operation(
    "sendSignal",
    "Send a signal to an unfinished run: recorded in its log (signal.received), taken by its agent's ctx.receive",
    body=Body("Signal", SIGNAL_BODY, required=False, description="no body: a signal without payload"),
    replies={202: Reply("the signal, recorded", "SignalReceipt")},
    errors=(400, 404, 408, 409, 413),
)
LIST_CHILDREN = Operation(
    "listChildren", "The child runs this run spawned, in spawn order", replies={200: Reply("the children", "ChildList")},
    errors=(404,),
)
CREATE_SESSION = Operation(
    "createSession",
    "Create a session, owned by the caller",
    body=Body("CreateSession", SESSION_BODY, required=False, description="every field is optional; no body is an empty object"),
    replies={201: Reply("the new session", "Session", links=SESSION_LINKS)},
    errors=(400, 408, 409, 413),
)
GET_SESSION = Operation(
    "getSession", "The session, with its runs counted by status", replies={200: Reply("the session", "Session")}, errors=(404,)
)
END_SESSION = Operation(
    "endSession",
    "End the session (idempotent): its active runs are cancelled, new ones refused",
    replies={200: Reply("the ended session", "Session")},
    errors=(404,),
)
SESSION_HISTORY = Operation(
    "getSessionHistory",
    "A page of the messages of a session's runs, oldest first: the latest `limit`, or those before `cursor`",
    parameters=(HISTORY_LIMIT, HISTORY_CURSOR_PARAMETER),
    replies={200: Reply("the history", "History")},
    errors=(400, 404),
)
LIST_AGENTS = Operation("listAgents", "The agents this engine runs", replies={200: Reply("the agents", "AgentList")})
OPENAPI = Operation(
    "openapi", "This document", replies={200: Reply("the OpenAPI document", {"type": "object"})}, secured=False
)

#: Fields of POST /runs that say how the answer comes back, not what runs: a retry with the same
#: Idempotency-Key may change them (e.g. stream the run a sync request started).
DELIVERY_FIELDS = ("mode", "on_disconnect", "idempotency_key")


def is_internal(spec: AgentSpec) -> bool:
    """Agents registered with metadata {"internal": true} (webhook delivery, tools ...) are not listed
    nor startable through the API."""
    return bool(spec.metadata.get("internal"))


def wants_sse(request: Request) -> bool:
    return "text/event-stream" in (request.header("accept") or "").lower()


class NativeAPI:
    """The native API as an App: `await api(request)` -> Response | StreamResponse."""

    def __init__(
        self,
        engine: RunEngine,
        *,
        auth: AuthHook | None = None,
        keepalive: float = KEEPALIVE,
        router: Router | None = None,
        streams: OpenStreams | None = None,
    ) -> None:
        self.engine = engine
        self.auth = auth
        self.keepalive = keepalive
        #: SSE responses being sent right now (what a disconnect test watches go back to 0).
        self.open_streams = 0
        #: Streams open per principal, bounded (shared with the other surfaces when given).
        self.streams = streams if streams is not None else OpenStreams()
        self.frames = FrameCache()
        self.router = router if router is not None else Router()
        r = self.router
        r.route("POST", "/runs", guarded(self.auth, self.create_run), operation=CREATE_RUN)
        r.route("GET", "/runs", guarded(self.auth, self.list_runs), operation=LIST_RUNS)
        r.route("GET", "/runs/{run_id}", guarded(self.auth, self.get_run), operation=GET_RUN)
        r.route("DELETE", "/runs/{run_id}", guarded(self.auth, self.delete_run), operation=DELETE_RUN)
        r.route("GET", "/runs/{run_id}/events", guarded(self.auth, self.run_events), operation=RUN_EVENTS)
        r.route("POST", "/runs/{run_id}/cancel", guarded(self.auth, self.cancel_run), operation=CANCEL_RUN)
        r.route("POST", "/runs/{run_id}/input", guarded(self.auth, self.give_input), operation=GIVE_INPUT)
        r.route("POST", "/runs/{run_id}/signals/{name}", guarded(self.auth, self.send_signal), operation=SEND_SIGNAL)
        r.route("GET", "/runs/{run_id}/children", guarded(self.auth, self.list_children), operation=LIST_CHILDREN)
        r.route("POST", "/sessions", guarded(self.auth, self.create_session), operation=CREATE_SESSION)
        r.route("GET", "/sessions/{session_id}", guarded(self.auth, self.get_session), operation=GET_SESSION)
        r.route("DELETE", "/sessions/{session_id}", guarded(self.auth, self.end_session), operation=END_SESSION)
        r.route("GET", "/sessions/{session_id}/history", guarded(self.auth, self.session_history), operation=SESSION_HISTORY)
        # Issue 25: fork from any event, and schedules (their own modules).
        add_fork_route(r, engine, self.auth, self._owner, self._run_id)
        add_schedule_routes(r, engine, self.auth, self._owner, is_internal)
        r.route("GET", "/agents", guarded(self.auth, self.list_agents), operation=LIST_AGENTS)
        r.route("GET", "/openapi.json", self.openapi, operation=OPENAPI)

    async def __call__(self, request: Request) -> Response | StreamResponse:
        return await self.router(request)

    # -- visibility -----------------------------------------------------------------

    def _owner(self, request: Request) -> str | None:
        return owner_of(request.principal) if self.auth is not None else None

    @staticmethod
    def _run_id(request: Request) -> str:
        """The path's run id; one no run can have (runengine.validation.is_run_id) is simply not found."""
        run_id = request.params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id[:MAX_ID_LENGTH])
        return run_id

    async def _visible_summary(self, request: Request, run_id: str) -> RunSummary:
        """The run's listing row; another principal's run is answered exactly as a missing one."""
        return await self.engine.run_summary(run_id, owner=self._owner(request))

    # -- runs -----------------------------------------------------------------------

    async def create_run(self, request: Request) -> Response | StreamResponse:
        body = request.json_object()
        fields = RUN_BODY.parse(body, now=self.engine.clock())
        agent, run_input, session_id, mode = fields["agent"], fields["input"], fields["session_id"], fields["mode"]
        header_key = IDEMPOTENCY_KEY.parse({IDEMPOTENCY_KEY.name: request.header("idempotency-key")})
        key = fields["idempotency_key"] or header_key
        on_disconnect = fields["on_disconnect"]
        assert agent is not None
        spec = self.engine.agents.find(agent)
        if spec is None or is_internal(spec):  # internal agents serve other profiles, not clients
            raise AgentNotFound(agent, [s.name for s in self.engine.agents if not is_internal(s)])
        run_id = uuid.uuid4().hex
        options: dict[str, Any] = dict(
            session_id=session_id,
            metadata=fields["metadata"],
            timeout=fields["timeout"],
            start_at=fields["start_at"],
            owner=self._owner(request),  # joining another principal's session is SessionNotFound
            idempotency_key=key,
            idempotency_scope="native",
            # The body less what only says how to answer: a reuse of the key with another is a 422.
            request_fingerprint=(
                fingerprint({k: v for k, v in body.items() if k not in DELIVERY_FIELDS}) if key is not None else None
            ),
            session_policy=fields["session_policy"],
            priority=fields["priority"],
        )

        if mode == "async":
            state = await self.engine.execute(agent, run_input, mode="async", run_id=run_id, **options)
            return json_response(run_to_json(state), status=202, headers=(("location", f"runs/{state.run_id}"),))

        if mode == "stream":
            with self.streams.slot(request) as slot:  # a 429 here creates no run
                # Created (or, for a repeated Idempotency-Key, found) first: then streamed from seq 1 by
                # this profile's own SSE (the engine's stream is left unread); run.created says "stream".
                run_id = (await self.engine.execute(agent, run_input, mode="stream", run_id=run_id, **options)).run_id
                return slot.bind(
                    self._sse(run_id, after_seq=0, on_disconnect=on_disconnect, extra=(("x-run-id", run_id),))
                )

        try:
            with self.streams.waiting(request):  # a 429 here creates no run
                state = await self.engine.execute(
                    agent, run_input, mode="sync", run_id=run_id, fresh_run_id=True, **options
                )
        except anyio.get_cancelled_exc_class():
            # The client went away while waiting (the binding cancels the handler).
            if on_disconnect == "cancel":
                with anyio.CancelScope(shield=True):
                    await self._cancel_quietly(run_id, "client disconnected")
            raise
        return json_response(run_to_json(state))

    async def get_run(self, request: Request) -> Response:
        run_id = self._run_id(request)
        await self._visible_summary(request, run_id)
        state = await self.engine.status(run_id)
        return json_response(
            run_to_json(
                state, waiting_for_agent=self.engine.waiting_for_agent(state), waiting_for=await self.engine.waiting_for(state)
            )
        )

    async def delete_run(self, request: Request) -> Response:
        run_id = self._run_id(request)
        await self.engine.delete_run(run_id, owner=self._owner(request))  # 404 for another owner's
        return Response(status=204)

    async def list_runs(self, request: Request) -> Response:
        query = request.query
        page = await self.engine.list_runs(
            session_id=RUNS_SESSION.parse(query),
            status=RUNS_STATUS.parse(query), owner=self._owner(request),
            limit=RUNS_LIMIT.parse(query),
            before=RUNS_BEFORE.parse(query),
        )
        return json_response(
            {"runs": [summary_to_json(s) for s in page.runs], "next_before": page.next_before}
        )

    async def cancel_run(self, request: Request) -> Response:
        run_id = self._run_id(request)
        reason = None
        if request.body.strip():
            reason = CANCEL_BODY.parse(request.json_object())["reason"]
        await self._visible_summary(request, run_id)
        state = await self.engine.cancel(run_id, reason=reason)
        return json_response(run_to_json(state))

    async def give_input(self, request: Request) -> Response:
        run_id = self._run_id(request)
        content = INPUT_BODY.parse(request.json_object())["content"]
        await self._visible_summary(request, run_id)
        state = await self.engine.resume(run_id, content)
        return json_response(run_to_json(state))

    async def send_signal(self, request: Request) -> Response:
        run_id = self._run_id(request)
        payload = SIGNAL_BODY.parse(request.json_object())["payload"] if request.body.strip() else None
        signal = await self.engine.signal(run_id, request.params["name"], payload, owner=self._owner(request))
        receipt = {"run_id": run_id, "signal_id": signal.signal_id, "name": signal.name, "seq": signal.seq}
        return json_response(receipt, status=202)

    async def list_children(self, request: Request) -> Response:
        run_id = self._run_id(request)
        children = await self.engine.children(run_id, owner=self._owner(request))
        return json_response({"runs": [summary_to_json(row) for row in children]})

    # -- events -----------------------------------------------------------------------

    async def run_events(self, request: Request) -> Response | StreamResponse:
        run_id = self._run_id(request)
        query = request.query
        on_disconnect = EVENTS_ON_DISCONNECT.parse(query)
        limit = EVENTS_LIMIT.parse(query)
        if wants_sse(request):
            after_seq = resume_after(request)  # a reconnecting EventSource resumes after what it saw
            summary = await self._visible_summary(request, run_id)
            if summary.status.terminal and summary.last_seq <= after_seq:
                # Nothing more will ever come: 204 tells an EventSource to stop reconnecting.
                return Response(status=204, headers=(("cache-control", "no-cache"),))
            with self.streams.slot(request) as slot:
                return slot.bind(self._sse(run_id, after_seq=after_seq, on_disconnect=on_disconnect or "continue"))
        # A JSON page: on_disconnect and Last-Event-ID only concern streams (both validated all the same).
        resume_after(request)
        after_seq = after_seq_param(request)
        summary = await self._visible_summary(request, run_id)
        events = await self.engine.store.read(run_id, after_seq=after_seq, limit=limit)
        next_after = events[-1].seq if events else after_seq
        return json_response(
            {
                "run_id": run_id,
                "events": [event_to_dict(e) for e in events],
                "next_after_seq": next_after,
                # True once the page reaches the run's end: nothing will come after next_after_seq.
                "ended": bool(
                    (events and events[-1].terminal)
                    or (summary.status.terminal and summary.last_seq <= next_after)
                ),
            }
        )

    def _sse(
        self, run_id: str, *, after_seq: int, on_disconnect: str, extra: tuple[tuple[str, str], ...] = ()
    ) -> StreamResponse:
        return sse_response(self._sse_body(run_id, after_seq, on_disconnect), headers=extra)

    async def _sse_body(self, run_id: str, after_seq: int, on_disconnect: str) -> AsyncIterator[bytes]:
        self.open_streams += 1
        gone = False
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            batches = self.engine.follow(run_id, after_seq, idle=self.keepalive)
            async with aclosing(batches):  # closed here, not left to the garbage collector
                async for batch in batches:
                    # One write per batch read from the store, not one per event.
                    yield b"".join(map(self.frames.frame, batch)) or sse_comment()
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            gone = True  # the client disconnected (the binding closed or cancelled us)
            raise
        except RunDeleted as deleted:  # deleted while streamed: said, not a silent end
            yield deleted_frame(deleted)
        except Exception as exc:  # the headers are sent: report in-band, then end the stream
            log.exception("event stream failed", run_id=run_id)
            code = exc.code if isinstance(exc, RunEngineError) else "internal_error"
            error = {"error": {"code": code, "message": "the event stream failed; reconnect to resume", "details": {}}}
            yield sse_frame(dumps(error), event="stream.error")
        finally:
            self.open_streams -= 1
            if gone and on_disconnect == "cancel" and not server_stop.get().stopping:  # not a client's going
                with anyio.CancelScope(shield=True):
                    await self._cancel_quietly(run_id, "client disconnected")

    async def _cancel_quietly(self, run_id: str, reason: str) -> None:
        try:
            await self.engine.cancel(run_id, reason=reason)
        except RunNotFound:
            pass
        except Exception:
            log.exception("cancel after disconnect failed", run_id=run_id)

    # -- sessions -----------------------------------------------------------------------

    @staticmethod
    def _session_id(request: Request) -> str:
        """The path's session id; one no session can have is simply not found."""
        session_id = request.params["session_id"]
        if len(session_id) > MAX_ID_LENGTH or params.has_control_characters(session_id):
            raise SessionNotFound(session_id[:MAX_ID_LENGTH])
        return session_id

    async def _session_runs(self, session_id: str, owner: str | None) -> SessionRuns:
        """The session's runs (only `owner`'s when given) counted by the store: a session read costs
        the same whatever the number of its runs."""
        return await self.engine.count_session_runs(session_id, owner=owner)

    async def _visible_session(self, request: Request, session_id: str) -> tuple[SessionRecord, SessionRuns]:
        """(record, the caller's runs in it). Another principal's session is answered exactly as a
        missing one (runengine.ownership); every session has a record, begun by a run or not."""
        owner = self._owner(request)
        record = await self.engine.get_session(session_id, owner=owner)
        return record, await self._session_runs(session_id, owner)

    async def create_session(self, request: Request) -> Response:
        body = request.json_object() if request.body.strip() else {}
        fields = SESSION_BODY.parse(body)
        user_id = fields["user_id"]
        # A taken id is a 409 whoever holds it (SessionExists says no more); never replaced.
        record = await self.engine.create_session(
            session_id=fields["session_id"],
            owner=self._owner(request),
            metadata=fields["metadata"],
            ttl=fields["ttl"],
            data={"user_id": user_id} if user_id is not None else None,
        )
        return json_response(
            session_to_json(record, SessionRuns(), now=self.engine.clock()),
            status=201,
            # Header values are Latin-1: the id (any Unicode) goes percent-encoded.
            headers=(("location", f"sessions/{quote(record.session_id, safe='')}"),),
        )

    async def get_session(self, request: Request) -> Response:
        record, runs = await self._visible_session(request, self._session_id(request))
        return json_response(session_to_json(record, runs, now=self.engine.clock()))

    async def end_session(self, request: Request) -> Response:
        session_id = self._session_id(request)
        owner = self._owner(request)
        ended = await self.engine.end_session(session_id, owner=owner)  # cancels the session's active runs
        runs = await self._session_runs(session_id, owner)
        return json_response(session_to_json(ended, runs, now=self.engine.clock()))

    # -- history, agents, the document ----------------------------------------------------

    async def session_history(self, request: Request) -> Response:
        session_id = self._session_id(request)
        page = await self.engine.session_history(
            session_id, owner=self._owner(request), limit=HISTORY_LIMIT.parse(request.query), before=history_before(request)
        )
        return json_response(
            {
                "session_id": session_id,
                "messages": [history_message_to_json(m) for m in page.messages],
                "next": history_cursor(page.next) if page.next is not None else None,
            }
        )

    async def list_agents(self, request: Request) -> Response:
        return json_response(
            {
                "agents": [
                    {"name": spec.name, "description": spec.description, "metadata": spec.metadata}
                    for spec in self.engine.agents
                    if not is_internal(spec)
                ]
            }
        )

    async def openapi(self, request: Request) -> Response:
        # The document is public: with auth on, it names no agent (GET /agents tells the principals).
        agents = () if self.auth is not None else tuple(spec.name for spec in self.engine.agents if not is_internal(spec))
        # The router's declared routes: this API's (the page, health and metrics routes a shared
        # router also serves are not declared, nor are mounted profiles, which have their own).
        declared = [(m, p, op) for m, p, op in self.router.declared() if op is not None]
        return json_response(
            native_openapi(declared, auth=self.auth is not None, agents=agents, rate_limit=request.rate_limit)
        )


__all__ = ["NativeAPI", "error_response", "HttpError"]
