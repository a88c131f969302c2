"""The Agent Platform API (seed 002) as a profile: its requests mapped onto engine calls.

    app = build_platform_app(engine, api_keys={"sk-app-123": "team-a"}, apps={"app_123": "support_agent"})
    router.mount("/platform", app)

No run logic lives here: execute is `engine.execute`, streaming is `engine.events`,
sessions are the engine's sessions, history is `engine.session_history`. See
docs/platform.md for the whole mapping.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

import attrs

from runengine.engine import HistoryPage, RunEngine
from runengine.errors import InvalidRequest, RunDeleted, RunNotFound, SessionExists, SessionNotFound
from runengine.events import (
    Event,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    ToolCall,
    ToolResult,
)
from runengine.adapters.webhook_deliveries import DELIVERY_AGENT as WEBHOOK_DELIVERY_AGENT
from runengine.adapters.webhooks import WebhookSender
from runengine.http import HttpError, Request, Response, Router, StreamResponse, json_response, sse_comment, sse_frame
from runengine.http.apikeys import api_key_auth
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import App
from runengine.http.openstreams import OpenStreams
from runengine.http.ratelimit import RateLimited
from runengine.http.cursor import HISTORY_LIMIT, history_before, history_cursor, last_event_id, resume_after
from runengine.http.sse import KEEPALIVE, sse_response
from runengine.http.streaming import KeptText, deleted_frame
from runengine.keylock import KeyLocks
from runengine.limits import MAX_ID_LENGTH, MAX_MESSAGE_CHARS, MAX_METADATA_BYTES, MAX_SESSION_METADATA_BYTES
from runengine.ports import SessionRecord
from runengine.state import RunState
from runengine.status import Status
from runengine.wire import dumps

from .common import idempotency_key, request_fingerprint
from .platform_webhooks import WebhookDispatcher, WebhookRegistry, format_timestamp, parse_registration, public

_KIND = "platform.session"


def bearer_keys(keys: Mapping[str, str]) -> AuthHook:
    """An auth hook accepting `Authorization: Bearer <key>` (or `x-api-key`) for the keys given (key -> principal)."""
    return api_key_auth(keys)


@attrs.frozen(kw_only=True)
class PlatformSettings:
    #: app_id -> agent name; apps not listed run `default_agent` (404 when that is None).
    apps: Mapping[str, str] = attrs.field(factory=dict)
    default_agent: str | None = None
    #: Seconds a session lives after its creation or its last execute.
    session_ttl: float = 3600.0
    new_session_id: Callable[[], str] = lambda: f"sess_{uuid.uuid4().hex}"
    new_trace_id: Callable[[], str] = lambda: f"trace_{uuid.uuid4().hex}"
    keepalive: float = KEEPALIVE


class PlatformProfile:
    """The seed-002 routes over one engine."""

    def __init__(
        self, engine: RunEngine, settings: PlatformSettings, webhooks: WebhookDispatcher, streams: OpenStreams | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.webhooks = webhooks
        #: Streams open per principal, bounded (build_app shares one across every surface).
        self.streams = streams if streams is not None else OpenStreams()
        # Serialise this process's read-modify-write of a session record (execute vs. end).
        self._session_lock = KeyLocks()
        self.router = Router()
        r = self.router
        r.route("POST", "/apps/{app_id}/execute", self.execute)
        r.route("POST", "/apps/{app_id}/execute/stream", self.execute_stream)
        r.route("GET", "/apps/{app_id}/traces/{trace_id}/stream", self.resume_stream)
        r.route("POST", "/apps/{app_id}/sessions", self.create_session)
        r.route("GET", "/apps/{app_id}/sessions/{session_id}/history", self.history)
        r.route("DELETE", "/apps/{app_id}/sessions/{session_id}", self.end_session)
        r.route("POST", "/apps/{app_id}/webhooks", self.register_webhook)
        r.route("GET", "/apps/{app_id}/webhooks", self.list_webhooks)
        r.route("DELETE", "/apps/{app_id}/webhooks/{webhook_id}", self.remove_webhook)

    # -- helpers -------------------------------------------------------------------

    def _agent_for(self, app_id: str) -> str:
        """The agent an app runs: its mapping, else the default agent, else the agent named like the app."""
        agent = self.settings.apps.get(app_id, self.settings.default_agent)
        if agent is None:
            spec = self.engine.agents.find(app_id)
            if spec is not None and not spec.metadata.get("internal") and app_id != WEBHOOK_DELIVERY_AGENT:
                agent = app_id
        if agent is None:
            raise HttpError(404, "not_found", f"no app {app_id!r}", {"app_id": app_id})
        return agent

    @staticmethod
    def _owner(request: Request) -> str | None:
        return None if request.principal is None else str(request.principal)

    async def _own_session(self, request: Request, session_id: str) -> SessionRecord:
        """The app's session, visible to this principal; 404 otherwise (whoever else owns it)."""
        app_id = request.params["app_id"]
        try:
            record = await self.engine.get_session(session_id, owner=self._owner(request))
        except SessionNotFound:
            record = None
        if record is None or record.data.get("kind") != _KIND or record.data.get("app_id") != app_id:
            raise HttpError(404, "not_found", "Session not found", {"session_id": session_id})
        return record

    async def _start_session(
        self, request: Request, user_id: str | None, metadata: dict[str, Any], session_id: str | None = None
    ) -> SessionRecord:
        app_id = request.params["app_id"]
        record = await self.engine.create_session(
            session_id=session_id or self.settings.new_session_id(),
            owner=self._owner(request),
            metadata=metadata,
            ttl=self.settings.session_ttl,
            data={"kind": _KIND, "app_id": app_id, "user_id": user_id},
        )
        await self.webhooks.emit(
            app_id,
            record.owner,
            "session.started",
            {"session_id": record.session_id, "user_id": user_id, "metadata": metadata},
        )
        return record

    async def _session_for_execute(
        self, request: Request, session_id: Any, metadata: dict[str, Any], key: str | None
    ) -> SessionRecord:
        if session_id is None and key is not None:
            # A repeat of a keyed request must change nothing: its session id follows from the key,
            # so the repeat finds the session the first request started instead of starting another.
            derived = "sess_" + hashlib.sha256(f"{self._owner(request)}\0{request.params['app_id']}\0{key}".encode()).hexdigest()[:32]
            async with self._session_lock(derived):
                try:
                    return await self.engine.get_session(derived, owner=self._owner(request))
                except SessionNotFound:
                    pass
                try:
                    return await self._start_session(request, None, metadata, derived)
                except SessionExists:  # another process's repeat of this request started it
                    return await self.engine.get_session(derived, owner=self._owner(request))
        if session_id is None:
            return await self._start_session(request, None, metadata)
        if not isinstance(session_id, str) or not session_id:
            raise HttpError(400, "invalid_request", "session_id must be a non-empty string", {"field": "session_id"})
        async with self._session_lock(session_id):
            return await self._touch_session(request, session_id, metadata)

    async def _touch_session(self, request: Request, session_id: str, metadata: dict[str, Any]) -> SessionRecord:
        """Check the session can take a turn; merge the request's metadata and extend its life."""
        try:
            record = await self._own_session(request, session_id)
        except HttpError:
            # The body names a session that does not exist: the seed's own error example.
            raise HttpError(400, "invalid_request", "Session not found", {"session_id": session_id}) from None
        now = self.engine.clock()
        if record.ended:
            raise HttpError(404, "not_found", "Session has ended", {"session_id": session_id, "ended_at": format_timestamp(record.ended_at or now)})
        if record.expires_at is not None and record.expires_at <= now:
            raise HttpError(404, "not_found", "Session has expired", {"session_id": session_id, "expired_at": format_timestamp(record.expires_at)})
        # Request metadata joins the session's metadata ("sessionMeta"); the session lives on.
        merged = {**record.metadata, **metadata}
        _check_metadata(merged, MAX_SESSION_METADATA_BYTES, "the session's metadata would be")
        record = attrs.evolve(record, metadata=merged, expires_at=now + timedelta(seconds=self.settings.session_ttl))
        await self.engine.save_session(record)
        return record

    async def _start_run(self, request: Request) -> tuple[RunState, bool]:
        """Validate an execute request and start its run (mode async); (state, created by this request)."""
        app_id = request.params["app_id"]
        agent = self._agent_for(app_id)
        body = request.json_object()
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            raise HttpError(400, "invalid_request", "message must be a non-empty string", {"field": "message"})
        if len(message) > MAX_MESSAGE_CHARS:
            raise HttpError(400, "invalid_request", f"message is longer than {MAX_MESSAGE_CHARS} characters", {"field": "message"})
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise HttpError(400, "invalid_request", "metadata must be an object", {"field": "metadata"})
        _check_metadata(metadata, MAX_METADATA_BYTES, "metadata is")
        key = idempotency_key(request)
        # /execute and /execute/stream alike: a stream may resume the run a sync request started.
        key_fingerprint = request_fingerprint(["platform", app_id], body) if key is not None else None
        if agent not in self.engine.agents:
            raise HttpError(404, "not_found", f"app {app_id!r} runs agent {agent!r}, which is not registered", {"app_id": app_id, "agent": agent})
        session = await self._session_for_execute(request, body.get("session_id"), metadata, key)
        trace_id = self.settings.new_trace_id()
        state = await self.engine.execute(
            agent,
            message,
            mode="async",
            session_id=session.session_id,
            metadata=metadata,
            owner=self._owner(request),
            idempotency_key=key,
            idempotency_scope="platform",
            request_fingerprint=key_fingerprint,
            run_id=trace_id,
        )
        created = state.run_id == trace_id
        if created:
            await self.webhooks.watch(app_id, session.owner, state.run_id, session.session_id)
        return state, created

    # -- execute ---------------------------------------------------------------------

    async def execute(self, request: Request) -> Response:
        with self.streams.waiting(request):  # a 429 starts no run
            state, _ = await self._start_run(request)
            state = await self.engine.wait(state.run_id)
        if state.status is Status.FAILED:
            error = state.error
            raise HttpError(
                500,
                "internal_error",
                "The agent failed to respond",
                {"trace_id": state.run_id, "reason": error.code if error else None},
            )
        if state.status is Status.CANCELLED:
            raise HttpError(409, "conflict", "The conversation turn was cancelled", {"trace_id": state.run_id, "reason": state.cancel_reason})
        return json_response(execute_response(state))

    async def execute_stream(self, request: Request) -> StreamResponse:
        resume_from = last_event_id(request)
        if resume_from and idempotency_key(request) is None:
            # Without the key a repeated POST would start a second run: resume by trace instead.
            raise HttpError(
                400,
                "invalid_request",
                "Last-Event-ID on POST needs the original Idempotency-Key; or GET /apps/{app_id}/traces/{trace_id}/stream",
                {"header": "last-event-id"},
            )
        with self.streams.slot(request) as slot:  # a 429 starts no run
            state, created = await self._start_run(request)
            return slot.bind(self._stream(state.run_id, 0 if created else resume_from, discarded=state.discarded))

    async def resume_stream(self, request: Request) -> StreamResponse:
        trace_id = request.params["trace_id"]
        after = resume_after(request)
        try:
            summary = await self.engine.run_summary(trace_id, owner=self._owner(request))
            if summary.session_id is None:
                raise RunNotFound(trace_id)
            await self._own_session(request, summary.session_id)
        except (RunNotFound, HttpError):
            raise HttpError(404, "not_found", "Trace not found", {"trace_id": trace_id}) from None
        with self.streams.slot(request) as slot:
            return slot.bind(self._stream(trace_id, after))

    def _stream(self, run_id: str, after_seq: int, *, discarded: Sequence[str] | None = None) -> StreamResponse:
        return sse_response(self._frames(run_id, after_seq, discarded), headers=(("x-trace-id", run_id),))

    async def _frames(self, run_id: str, after_seq: int, discarded: Sequence[str] | None) -> AsyncIterator[bytes]:
        """The run's events as the seed's named SSE events, each with `id: <seq>`; keep-alives when idle.
        `discarded`: the run's discarded messages if the caller has its state (else it is loaded)."""
        mapper = _StreamMapper(self.engine, run_id, after_seq)
        if discarded is None:
            discarded = (await self.engine.status(run_id)).discarded
        kept = KeptText(discarded)  # token frames cannot be taken back
        follow = self.engine.follow(run_id, after_seq, idle=self.settings.keepalive)
        async with contextlib.aclosing(follow) as batches:
            try:
                async for batch in batches:
                    if not batch:
                        yield sse_comment()
                        continue
                    frames = [frame for event in kept.filter(batch) for frame in await mapper.frames(event)]
                    if frames:  # one write per batch, not per frame
                        yield b"".join(frames)
            except RunDeleted as deleted:  # the seed's `error` event, in its error format
                yield deleted_frame(deleted, event="error")

    # -- sessions ----------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        self._agent_for(request.params["app_id"])
        body = request.json_object() if request.body.strip() else {}
        user_id = body.get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID_LENGTH):
            raise HttpError(
                400, "invalid_request", f"user_id must be a string of 1 to {MAX_ID_LENGTH} characters", {"field": "user_id"}
            )
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise HttpError(400, "invalid_request", "metadata must be an object", {"field": "metadata"})
        _check_metadata(metadata, MAX_SESSION_METADATA_BYTES, "metadata is")
        record = await self._start_session(request, user_id, metadata)
        return json_response(
            {
                "session_id": record.session_id,
                "created_at": format_timestamp(record.created_at or self.engine.clock()),
                "expires_at": format_timestamp(record.expires_at) if record.expires_at else None,
            },
            status=201,
        )

    async def history(self, request: Request) -> Response:
        session_id = request.params["session_id"]
        await self._own_session(request, session_id)
        limit, before = HISTORY_LIMIT.parse(request.query), history_before(request)
        try:
            page = await self.engine.session_history(session_id, owner=self._owner(request), limit=limit, before=before)
        except SessionNotFound:
            page = HistoryPage(messages=[], positions=[])
        out = []
        for message in page.messages:
            item: dict[str, Any] = {
                "role": message.role,
                "content": message.content,
                "timestamp": format_timestamp(message.at) if message.at else None,
            }
            if message.agent is not None:
                item["agent"] = message.agent
            out.append(item)
        next_cursor = history_cursor(page.next) if page.next is not None else None
        return json_response({"session_id": session_id, "messages": out, "next": next_cursor})

    async def end_session(self, request: Request) -> Response:
        session_id = request.params["session_id"]
        async with self._session_lock(session_id):
            record = await self._own_session(request, session_id)
            ended = None if record.ended else await self.engine.end_session(session_id, owner=record.owner)
        if ended is not None:
            await self.webhooks.emit(
                request.params["app_id"],
                record.owner,
                "session.ended",
                {"session_id": session_id, "user_id": record.data.get("user_id"), "reason": "ended_by_client",
                 "ended_at": format_timestamp(ended.ended_at or self.engine.clock())},
            )
        return Response(status=204)

    # -- webhooks ----------------------------------------------------------------------

    async def register_webhook(self, request: Request) -> Response:
        app_id = request.params["app_id"]
        self._agent_for(app_id)
        url, events, secret = parse_registration(request.json_object())
        await self.webhooks.sender.check_async(url)  # the SSRF guard: UnsafeURL is a 400
        registration = await self.webhooks.registry.add(app_id, url, events, secret, self._owner(request))
        return json_response(public(registration), status=201)

    async def list_webhooks(self, request: Request) -> Response:
        registrations = await self.webhooks.registry.of_owner(request.params["app_id"], self._owner(request))
        return json_response({"webhooks": [public(r) for r in registrations]})

    async def remove_webhook(self, request: Request) -> Response:
        app_id, webhook_id = request.params["app_id"], request.params["webhook_id"]
        if not await self.webhooks.registry.remove(app_id, webhook_id, self._owner(request)):
            raise HttpError(404, "not_found", "Webhook not found", {"webhook_id": webhook_id})
        return Response(status=204)


def execute_response(state: RunState) -> dict[str, Any]:
    """A finished run in the seed's execute response shape."""
    output = state.output
    response = output if isinstance(output, str) else _last_assistant(state)
    return {
        "response": response,
        "session_id": state.session_id,
        "trace_id": state.run_id,
        "agent": state.agent,
        "tools_used": list(dict.fromkeys(call.name for call in state.tool_calls)),
        "usage": {"input_tokens": state.usage.input_tokens, "output_tokens": state.usage.output_tokens},
    }


def _last_assistant(state: RunState) -> str:
    for message in reversed(state.messages):
        if message.role == "assistant":
            return message.content
    return state.text


class _StreamMapper:
    """Engine events -> the seed's SSE events (start, token, tool_call, done; error when a run fails)."""

    def __init__(self, engine: RunEngine, run_id: str, after_seq: int) -> None:
        self._engine = engine
        self._run_id = run_id
        self._after_seq = after_seq
        #: Characters of each open message already sent as tokens (by this stream or, on resume, before it).
        self._sent: dict[str, int] = {}
        self._tools: dict[str, str] = {}

    async def frames(self, event: Event) -> list[bytes]:
        seq = event.seq
        if isinstance(event, RunCreated):
            return [_frame("start", {"trace_id": event.run_id, "session_id": event.session_id}, seq)]
        if isinstance(event, MessageDelta):
            if event.message_id not in self._sent:
                self._sent[event.message_id] = await self._sent_before(event.message_id)
            self._sent[event.message_id] += len(event.content)
            return [_frame("token", {"content": event.content}, seq)] if event.content else []
        if isinstance(event, MessageCompleted):
            if event.role != "assistant":
                return []
            sent = self._sent.pop(event.message_id, None)
            if sent is None:
                sent = await self._sent_before(event.message_id)
            rest = event.content[sent:]  # a message recorded whole (say) or its unstreamed end
            return [_frame("token", {"content": rest}, seq)] if rest else []
        if isinstance(event, ToolCall):
            self._tools[event.call_id] = event.name
            return [_frame("tool_call", {"tool": event.name, "status": "started"}, seq)]
        if isinstance(event, ToolResult):
            name = self._tools.pop(event.call_id, None) or await self._tool_name(event.call_id)
            data: dict[str, Any] = {"tool": name, "status": "completed" if event.error is None else "failed"}
            if event.error is not None:
                data["error"] = {"code": event.error.code, "message": event.error.message}
            return [_frame("tool_call", data, seq)]
        if isinstance(event, RunCompleted):
            state = await self._engine.status(self._run_id)
            usage = {"input_tokens": state.usage.input_tokens, "output_tokens": state.usage.output_tokens}
            return [_frame("done", {"usage": usage}, seq)]
        if isinstance(event, RunFailed):
            details: dict[str, Any] = {"trace_id": self._run_id, "reason": event.error.code}
            return [_frame("error", {"error": {"code": "internal_error", "message": "The agent failed to respond", "details": details}}, seq)]
        if isinstance(event, RunCancelled):
            details = {"trace_id": self._run_id, "reason": event.reason}
            return [_frame("error", {"error": {"code": "conflict", "message": "The conversation turn was cancelled", "details": details}}, seq)]
        return []

    async def _sent_before(self, message_id: str) -> int:
        """On a resumed stream, how much of `message_id` was streamed up to the cursor (read once, lazily)."""
        if self._after_seq == 0:
            return 0
        sent = 0
        replay = self._engine.events(self._run_id, follow=False)
        async with contextlib.aclosing(cast(AsyncGenerator[Event, None], replay)) as events:
            async for event in events:
                if event.seq > self._after_seq:
                    break
                if isinstance(event, MessageDelta) and event.message_id == message_id:
                    sent += len(event.content)
        return sent

    async def _tool_name(self, call_id: str) -> str | None:
        call = (await self._engine.status(self._run_id)).tool_call(call_id)
        return call.name if call else None


def _check_metadata(metadata: dict[str, Any], limit: int, what: str) -> None:
    """Metadata over `limit` bytes of JSON is refused (400), nothing kept."""
    size = len(dumps(metadata).encode())
    if size > limit:
        raise HttpError(
            400, "invalid_request", f"{what} {size} bytes of JSON; the limit is {limit}",
            {"field": "metadata", "size_bytes": size, "limit_bytes": limit},
        )


def _frame(event: str, data: dict[str, Any], seq: int) -> bytes:
    return sse_frame(dumps(data), event=event, id=seq)


class _Authenticated:
    """Runs the auth hook (401 `authentication_error` when it refuses), then the profile."""

    def __init__(self, inner: App, auth: AuthHook | None) -> None:
        self._inner = inner
        self._guarded = guarded(auth, inner)

    def routes(self) -> Iterator[tuple[str, str]]:
        listing = getattr(self._inner, "routes", None)
        return listing() if listing is not None else iter([("*", "/*")])

    async def __call__(self, request: Request) -> Response | StreamResponse:
        try:
            return await self._guarded(request)
        except HttpError as exc:  # the router below answers its own errors: only a refusal comes here
            return exc.response()


def build_platform_app(
    engine: RunEngine,
    *,
    api_keys: Mapping[str, str] | None = None,
    auth: AuthHook | None = None,
    apps: Mapping[str, str] | None = None,
    default_agent: str | None = None,
    session_ttl: float = 3600.0,
    webhook_sender: WebhookSender | None = None,
    rate_limit: int | None = None,
    rate_window: float = 60.0,
    new_session_id: Callable[[], str] | None = None,
    new_trace_id: Callable[[], str] | None = None,
    keepalive: float = KEEPALIVE,
    streams: OpenStreams | None = None,
) -> App:
    """The seed-002 API over `engine`, ready to mount (e.g. under /platform).

    Authentication: `api_keys` (key -> principal) or any `auth` hook (headers -> principal);
    neither means auth off. `apps` maps app ids to agent names; other app ids run
    `default_agent`. `rate_limit` requests per `rate_window` seconds per principal,
    with the X-RateLimit-* headers (off when None). `streams`: the count of open streams per
    principal to share with other surfaces (a new one when None).
    """
    if api_keys is not None and auth is not None:
        raise InvalidRequest("give api_keys or auth, not both")
    if not session_ttl > 0:
        raise InvalidRequest("session_ttl must be a positive number of seconds")
    settings = PlatformSettings(
        apps=dict(apps or {}),
        default_agent=default_agent,
        session_ttl=session_ttl,
        keepalive=keepalive,
        **({"new_session_id": new_session_id} if new_session_id else {}),
        **({"new_trace_id": new_trace_id} if new_trace_id else {}),
    )
    dispatcher = WebhookDispatcher(engine, WebhookRegistry(engine), webhook_sender or WebhookSender())
    profile = PlatformProfile(engine, settings, dispatcher, streams)
    inner: App = profile.router
    if rate_limit is not None:
        inner = RateLimited(inner, limit=rate_limit, window=rate_window)
    hook = bearer_keys(api_keys) if api_keys is not None else auth
    return _Authenticated(inner, hook)


__all__ = ["PlatformProfile", "PlatformSettings", "bearer_keys", "build_platform_app", "execute_response"]
