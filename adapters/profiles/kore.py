"""The Kore profile (seeds 000 and 001, the Kore.ai Agent Platform "Runs API") over a RunEngine.

    POST /apps/{app_id}/environments/{env}/runs/execute         sync, isAsync, or a stream
    POST /apps/{app_id}/environments/{env}/runs/{run_id}/status the run, checked against sessionIdentity

Sessions: the identifiers in `sessionIdentity` name one engine session. `sessionReference`
defaults to `userReference` (as the platform does); a session is keyed by (app, env,
userReference, sessionReference), so its engine id is a stable `s-<uuid5>`; a bare
`sessionIdentity` names that engine session directly. Request `metadata` is kept as the
session's metadata, attachments as session data. No run logic lives here: the request
becomes `engine.execute`, the run's state and events become Kore's shapes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, nullcontext, suppress
from typing import Any

import anyio
import attrs

from runengine import ownership
from runengine.engine import RunEngine, SessionPolicy
from runengine.errors import RunDeleted, RunNotFound, SessionExists, SessionNotFound
from runengine.events import Custom, MessageCompleted, MessageDelta, RunWaitingForInput, Thought, ToolResult
from runengine.http import params
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.openstreams import OpenStreams, Slot
from runengine.http.router import Router
from runengine.http.sse import KEEPALIVE, sse_comment, sse_frame, sse_response
from runengine.http.streaming import each_event
from runengine.keylock import KeyLocks
from runengine.limits import (
    MAX_ACTIVE_ATTACHMENTS,
    MAX_ATTACHMENTS,
    MAX_CALLBACK_TOKEN_LENGTH,
    MAX_FILE_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_INPUT_BYTES,
    MAX_METADATA_BYTES,
    MAX_SESSION_METADATA_BYTES,
    MAX_TEXT_CHARS,
    MAX_URL_LENGTH,
)
from runengine.idempotency import IdempotencyStore, bind_key
from runengine.ports import IdempotencyRecord, SessionRecord, required
from runengine.context import RunContext
from runengine.state import RunState
from runengine.status import Status
from runengine.wire import dumps, format_time

from ..webhook_deliveries import WebhookDeliveries
from .common import boolean, idempotency_key, invalid, request_fingerprint, request_owner, session_policy

#: Identifier types, highest priority first.
IDENTITY_TYPES = ("userReference", "sessionReference", "sessionIdentity")
STREAM_MODES = ("tokens", "messages", "custom")
DEBUG_MODES = ("thoughts", "function-call", "all")
EXECUTE_FIELDS = (
    "sessionIdentity", "input", "debug", "stream", "isAsync", "attachments", "Attachments", "metadata",
    "invoke", "callbackUrl", "callbackToken", "multitaskStrategy",
)
KORE_STATUS = {
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.WAITING_FOR_INPUT: "running",
    Status.COMPLETED: "success",
    Status.FAILED: "failed",
    Status.CANCELLED: "failed",
}
#: The fields of an `invoke` task (seed 001).
TASK_FIELDS = ("type", "name", "toolType", "agentName")
TOOL_AGENT = "kore.tool"
CALLBACK_FORMAT = "kore.execute"
_NAMESPACE = uuid.UUID("6f1c2a52-5a8e-4c43-9d3e-7d3c5b0e4a11")  # fixed: session ids stay stable across restarts

Tool = Callable[..., Any]


# -- request parsing -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Identity:
    user_reference: str | None = None
    session_reference: str | None = None
    session_identity: str | None = None


def parse_identity(body: Mapping[str, Any]) -> Identity:
    items = body.get("sessionIdentity")
    if not isinstance(items, list) or not items:
        raise invalid("sessionIdentity must be a non-empty array of {type, value}", field="sessionIdentity")
    found: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") not in IDENTITY_TYPES:
            raise invalid(
                f"sessionIdentity[{i}].type must be one of {', '.join(IDENTITY_TYPES)}", field=f"sessionIdentity[{i}]"
            )
        value = item.get("value")
        if not isinstance(value, str) or not value or len(value) > 200:
            raise invalid(f"sessionIdentity[{i}].value must be a 1-200 character string", field=f"sessionIdentity[{i}]")
        if item["type"] in found and found[item["type"]] != value:
            raise invalid(f"sessionIdentity names two different {item['type']}s", field="sessionIdentity")
        found[item["type"]] = value
    return Identity(
        user_reference=found.get("userReference"),
        session_reference=found.get("sessionReference"),
        session_identity=found.get("sessionIdentity"),
    )


def file_ids(value: Any, field: str) -> list[str]:
    """File ids: an array, or the seed sample's string form "[f-123, f-456]"."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",") if v.strip()]
    if not isinstance(value, list):
        raise invalid(f"{field} must be an array of file ids", field=field)
    if len(value) > MAX_ATTACHMENTS:
        raise invalid(f"{field} may name at most {MAX_ATTACHMENTS} files", field=field, limit=MAX_ATTACHMENTS)
    ids = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("fileId")
        if not isinstance(item, str) or not item or len(item) > MAX_FILE_ID_LENGTH:
            raise invalid(
                f"{field} must hold file ids (strings of 1 to {MAX_FILE_ID_LENGTH} characters)",
                field=field,
                max_length=MAX_FILE_ID_LENGTH,
            )
        ids.append(item)
    return ids


def parse_input(body: Mapping[str, Any], tool: bool) -> tuple[Any, list[dict[str, Any]]]:
    """(engine input, the input as given). Text items join into one string; tool_input gives an object."""
    items = body.get("input")
    if not isinstance(items, list) or not items:
        raise invalid("input must be a non-empty array of {type, content}", field="input")
    texts: list[str] = []
    tool_args: dict[str, Any] | None = None
    for i, item in enumerate(items):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            content = item.get("content")
            if not isinstance(content, str) or len(content) > MAX_TEXT_CHARS:
                raise invalid(
                    f"input[{i}].content must be a string of at most {MAX_TEXT_CHARS} characters", field=f"input[{i}]"
                )
            texts.append(content)
        elif kind == "tool_input":
            if not isinstance(item.get("content"), dict):
                raise invalid(f"input[{i}].content must be an object of tool parameters", field=f"input[{i}]")
            tool_args = {**(tool_args or {}), **item["content"]}
        else:
            raise invalid(f"input[{i}].type must be \"text\" or \"tool_input\"", field=f"input[{i}]")
    params.json_value(body, "input", max_bytes=MAX_INPUT_BYTES)
    if tool:
        return {"arguments": tool_args or {}, "text": "\n".join(texts) or None}, items
    if tool_args is not None and not texts:
        return tool_args, items
    return "\n".join(texts), items


def options(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object", field=name)
    return value


# -- engine state -> Kore shapes -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Turn:
    """Where one request's part of a run starts (a run answered after waiting for input)."""

    after_seq: int = 0
    skip_messages: int = 0
    debug: dict[str, Any] | None = None


@attrs.frozen
class KeyedAnswer:
    """A session's run waiting for input that this request answers, and the key it bound to it."""

    run_id: str
    key: IdempotencyRecord | None


@attrs.frozen(kw_only=True)
class ExecuteRequest:
    """An execute request, checked."""

    identity: Identity
    agent: str
    tool_task: dict[str, Any] | None
    #: The request named what to run (`invoke`): never an answer to a waiting run.
    invoked: bool
    run_input: Any
    given_input: list[dict[str, Any]]
    debug: dict[str, Any]
    stream: dict[str, Any]
    is_async: bool
    metadata: dict[str, Any] | None
    include: list[str]
    exclude: list[str]
    callback_url: str | None
    token: str | None
    policy: SessionPolicy | None


def text_output(value: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "content": value if isinstance(value, str) else dumps(value)}]


def run_output(state: RunState, *, skip: int = 0) -> list[dict[str, Any]]:
    """The assistant's messages (from message `skip` on: a turn's own), else the return value."""
    out = [{"type": "text", "content": m.content} for m in state.messages[skip:] if m.role != "user"]
    if not out and state.output is not None and skip == 0:
        out = text_output(state.output)
    if state.status is Status.WAITING_FOR_INPUT and state.await_request is not None:
        out += text_output(state.await_request)  # what the agent asks: the next execute answers it
    return out


def debug_items(state: RunState, mode: str, *, after_seq: int = 0) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if mode in ("thoughts", "all"):
        items += [
            {"type": "thought", "content": t.content, "source": t.source} for t in state.thoughts if t.seq > after_seq
        ]
    if mode in ("function-call", "all"):
        items += [
            {"type": "function-call", "name": c.name, "arguments": c.arguments, "output": c.output}
            for c in state.tool_calls
        ]
    return items


def kore_meta(state: RunState) -> dict[str, Any]:
    meta = state.metadata.get("kore")
    return meta if isinstance(meta, dict) else {}


def message_id(state: RunState) -> str:
    for message in reversed(state.messages):
        return message.message_id
    return f"msg-{state.run_id}"


def session_info(state: RunState, *, status: str, attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta = kore_meta(state)
    info: dict[str, Any] = {
        "status": status,
        "conversationState": {
            Status.COMPLETED: "COMPLETED",
            Status.FAILED: "FAILED",
            Status.CANCELLED: "CANCELLED",
            Status.WAITING_FOR_INPUT: "WAITING_FOR_INPUT",
        }.get(state.status, "IN_PROGRESS"),
        "userReference": meta.get("userReference"),
        "sessionReference": meta.get("sessionReference"),
        "userId": meta.get("userId"),
        "sessionId": state.session_id,
        "runId": state.run_id,
        "appId": meta.get("appId"),
        "envName": meta.get("envName"),
        "attachments": attachments if attachments is not None else meta.get("attachments", []),
    }
    return {k: v for k, v in info.items() if v is not None}


def execute_response(state: RunState, *, session_status: str, turn: Turn | None = None) -> dict[str, Any]:
    """The synchronous execute response (also the completion callback's payload).

    `turn`: when this request answered a run waiting for input, only what followed it."""
    meta = kore_meta(state)
    turn = turn or Turn()
    body: dict[str, Any] = {
        "messageId": message_id(state),
        "output": run_output(state, skip=turn.skip_messages),
        "sessionInfo": session_info(state, status=session_status),
    }
    debug = turn.debug if turn.debug is not None else (meta.get("debug") or {})
    if debug.get("enable"):
        body["debug"] = debug_items(state, debug.get("debugMode", "thoughts"), after_seq=turn.after_seq)
    if state.error is not None:
        body["error"] = {"code": state.error.code, "message": state.error.message}
    return body


def callback_payload(state: RunState) -> dict[str, Any]:
    return execute_response(state, session_status="idle")


def status_response(state: RunState) -> dict[str, Any]:
    meta = kore_meta(state)
    if state.status is Status.COMPLETED:
        output: list[dict[str, Any]] = run_output(state)
    elif state.error is not None:
        output = [{"type": "error", "content": {"code": state.error.code, "message": state.error.message}}]
    elif state.status is Status.CANCELLED:
        output = [{"type": "error", "content": {"code": "cancelled", "message": state.cancel_reason or "cancelled"}}]
    else:
        output = run_output(state)
    callback = meta.get("callbackUrl")
    return {
        "run": {
            "_id": state.run_id,
            "sessionId": state.session_id,
            "status": KORE_STATUS[state.status],
            "metadata": {
                "isInternalCall": False,
                "runtimeContext": {
                    "userId": meta.get("userId"),
                    "userReference": meta.get("userReference"),
                    "sessionId": state.session_id,
                    "sessionReference": meta.get("sessionReference"),
                    "appId": meta.get("appId"),
                    "envName": meta.get("envName"),
                    "asyncConfig": {
                        "isAsync": bool(meta.get("isAsync")),
                        "post_url": callback,
                        # The run of the `webhook.delivery` agent that posts the result.
                        "deliveryRunId": meta.get("deliveryRunId"),
                    },
                },
            },
            "kwargs": {
                "input": meta.get("input", []),
                "debug": meta.get("debug", {}),
                "stream": meta.get("stream", {}),
                "output": output,
            },
            "multitaskStrategy": meta.get("multitaskStrategy"),
            "createdAt": format_time(state.created_at) if state.created_at else None,
            "updatedAt": format_time(state.updated_at) if state.updated_at else None,
        }
    }


# -- the app ------------------------------------------------------------------------------------


@attrs.define
class KoreProfile:
    """The Kore Runs API over `engine`; `runengine serve` mounts it under /kore.

    agent: the agent that answers when the request invokes none (the orchestrator).
    tools: functions that `invoke` may run directly (`{"type": "tool", "name": ...}`).
    deliveries: completion callbacks (`callbackUrl`); without it callbackUrl is refused.
    """

    engine: RunEngine
    auth: AuthHook | None = None
    agent: str | None = None
    tools: Mapping[str, Tool] = attrs.field(factory=dict)
    deliveries: WebhookDeliveries | None = None
    #: The multitask strategy when a request names none (None: the engine's default).
    session_policy: SessionPolicy | None = None
    #: Streams open per principal, bounded (build_app shares one across every surface).
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    router: Router = attrs.field(init=False)
    #: Serialises read-modify-write of a session's record (metadata, attachments) in this process.
    _session_writes: KeyLocks = attrs.field(init=False, factory=KeyLocks)

    def __attrs_post_init__(self) -> None:
        if TOOL_AGENT not in self.engine.agents:
            self.engine.agent(TOOL_AGENT, description="Runs one tool directly", metadata={"internal": True})(
                self._tool_agent
            )
        if self.deliveries is not None:
            self.deliveries.add_format(CALLBACK_FORMAT, callback_payload)
        r = self.router = Router()
        base = "/apps/{app_id}/environments/{env}/runs"
        r.route("POST", base + "/execute", guarded(self.auth, self.execute))
        r.route("POST", base + "/{run_id}/status", guarded(self.auth, self.status))

    def routes(self) -> Iterator[tuple[str, str]]:
        return self.router.routes()

    async def __call__(self, request: Request) -> Response | StreamResponse:
        return await self.router(request)

    # -- the built-in tool agent: `invoke` of a tool becomes a run of it ----------------------

    async def _tool_agent(self, ctx: RunContext) -> Any:
        spec = ctx.input if isinstance(ctx.input, dict) else {}
        name = spec.get("tool")
        fn = self.tools.get(name) if isinstance(name, str) else None
        if fn is None or not isinstance(name, str):
            raise LookupError(f"no tool named {name!r}")
        result = await ctx.tool_call(name, spec.get("arguments") or {}, fn)
        await ctx.say(result if isinstance(result, str) else dumps(result))
        return result

    # -- sessions -------------------------------------------------------------------------------

    def _session_key(self, app_id: str, env: str, identity: Identity, owner: str | None) -> str | None:
        session_ref = identity.session_reference or identity.user_reference
        if session_ref is None:
            return None
        # The owner is part of the key: two principals naming the same reference get two sessions.
        name = f"{owner or ''}/{app_id}/{env}/{identity.user_reference or ''}/{session_ref}"
        return f"s-{uuid.uuid5(_NAMESPACE, name)}"

    async def _session(self, request: Request, app_id: str, env: str, identity: Identity) -> SessionRecord:
        """The session the identity names, created on first use (a bare sessionIdentity must exist)."""
        owner = request_owner(self.auth, request)
        session_id = self._session_key(app_id, env, identity, owner)
        if session_id is None:
            session_id = identity.session_identity
            assert session_id is not None
            existing = await self.engine.get_session(session_id, owner=owner)
            if not _same_app(existing, app_id, env):
                raise SessionNotFound(session_id)
            return existing
        try:
            return await self.engine.get_session(session_id, owner=owner)
        except SessionNotFound:
            pass  # created below; another principal's is SessionExists there, so not found
        user = identity.user_reference or identity.session_reference or ""
        data: dict[str, Any] = {
            "kore": {
                "appId": app_id,
                "envName": env,
                "userReference": identity.user_reference,
                "sessionReference": identity.session_reference or identity.user_reference,
                "userId": f"u-{uuid.uuid5(_NAMESPACE, f'{app_id}/user/{user}')}",
                "attachments": {},
            }
        }
        try:
            return await self.engine.create_session(session_id=session_id, owner=owner, data=data)
        except SessionExists:  # a request racing this one created it first: it is used if it is ours
            return await self.engine.get_session(session_id, owner=owner)

    async def _session_status(self, session_id: str | None, owner: str | None) -> str:
        if session_id is None:
            return "idle"
        for status in (Status.PENDING, Status.RUNNING):
            if (await self.engine.list_runs(session_id=session_id, status=status, owner=owner, limit=1)).runs:
                return "busy"
        return "idle"

    # -- execute --------------------------------------------------------------------------------

    def _target(self, body: Mapping[str, Any], app_id: str) -> tuple[str, dict[str, Any] | None]:
        """(agent to run, the tool task if a tool is invoked). Only the first task counts."""
        invoke = options(body, "invoke")
        tasks = invoke.get("tasks")
        if invoke and (not isinstance(tasks, list) or not tasks or not isinstance(tasks[0], dict)):
            raise invalid("invoke.tasks must be a non-empty array of {type, name}", field="invoke.tasks")
        if tasks:
            # Only the fields the seeds name are kept (the task is recorded with the run).
            task = {k: tasks[0][k] for k in TASK_FIELDS if tasks[0].get(k) is not None}
            for field, value in task.items():
                if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
                    raise invalid(
                        f"invoke.tasks[0].{field} must be a string of at most {MAX_ID_LENGTH} characters",
                        field=f"invoke.tasks[0].{field}",
                    )
            name = task.get("name")
            if not name:
                raise invalid("invoke.tasks[0].name is required", field="invoke.tasks[0].name")
            if task.get("type") == "agent":
                spec = self.engine.agents.get(name)
                if spec.metadata.get("internal"):
                    raise invalid(f"agent {name!r} cannot be invoked", field="invoke.tasks[0].name")
                return name, None
            if task.get("type") == "tool":
                if name not in self.tools:
                    raise invalid(f"no tool named {name!r}", field="invoke.tasks[0].name", known=sorted(self.tools))
                return TOOL_AGENT, task
            raise invalid("invoke.tasks[0].type must be \"agent\" or \"tool\"", field="invoke.tasks[0].type")
        return self._default_agent(app_id), None

    def _default_agent(self, app_id: str) -> str:
        """The profile's agent, else the agent the app id names (as in the Platform profile),
        else one called `orchestrator`, else the only public agent."""
        if self.agent is not None:
            return self.agent
        public = [s.name for s in self.engine.agents if not s.metadata.get("internal")]
        if app_id in public:
            return app_id
        if "orchestrator" in public:
            return "orchestrator"
        if len(public) == 1:
            return public[0]
        raise invalid("no default agent is configured: name one with invoke.tasks", agents=public)

    def _parse(self, body: Mapping[str, Any], app_id: str) -> ExecuteRequest:
        """Every field of an execute request, checked (a 400 naming the field otherwise)."""
        unknown = sorted(set(body) - set(EXECUTE_FIELDS))
        if unknown:
            raise invalid(f"unknown field(s): {', '.join(unknown)}", unknown=unknown)
        identity = parse_identity(body)
        agent, tool_task = self._target(body, app_id)
        run_input, given_input = parse_input(body, tool=tool_task is not None)
        if tool_task is not None:
            run_input = {"tool": tool_task["name"], "agent": tool_task.get("agentName"), **run_input}
        debug = options(body, "debug")
        debug_mode = debug.get("debugMode", "thoughts")
        if debug_mode not in DEBUG_MODES:
            raise invalid(f"debug.debugMode must be one of {', '.join(DEBUG_MODES)}", field="debug.debugMode")
        stream = options(body, "stream")
        stream_mode = stream.get("streamMode", "tokens")
        if stream_mode not in STREAM_MODES:
            raise invalid(f"stream.streamMode must be one of {', '.join(STREAM_MODES)}", field="stream.streamMode")
        metadata = params.json_object(body, "metadata", max_bytes=MAX_METADATA_BYTES)
        attachments = options(body, "attachments") or options(body, "Attachments")
        callback_url = body.get("callbackUrl")
        if callback_url is not None:
            if not isinstance(callback_url, str) or len(callback_url) > MAX_URL_LENGTH:
                raise invalid(f"callbackUrl must be a URL string of at most {MAX_URL_LENGTH} characters", field="callbackUrl")
            if self.deliveries is None:
                raise invalid("completion callbacks are not enabled on this server", field="callbackUrl")
        token = body.get("callbackToken")
        if token is not None and (not isinstance(token, str) or not token or len(token) > MAX_CALLBACK_TOKEN_LENGTH):
            raise invalid(
                f"callbackToken must be a string of 1 to {MAX_CALLBACK_TOKEN_LENGTH} characters", field="callbackToken"
            )
        return ExecuteRequest(
            identity=identity,
            agent=agent,
            tool_task=tool_task,
            invoked="invoke" in body,
            run_input=run_input,
            given_input=given_input,
            debug={"enable": boolean(debug.get("enable"), "debug.enable"), "debugMode": debug_mode},
            stream={"enable": boolean(stream.get("enable"), "stream.enable"), "streamMode": stream_mode},
            is_async=boolean(body.get("isAsync"), "isAsync"),
            metadata=metadata,
            include=file_ids(attachments.get("includeFiles"), "attachments.includeFiles"),
            exclude=file_ids(
                attachments.get("excludeFiles", attachments.get("exludeFiles")), "attachments.excludeFiles"
            ),
            callback_url=callback_url,
            token=token,
            policy=session_policy(body.get("multitaskStrategy"), "multitaskStrategy") or self.session_policy,
        )

    async def execute(self, request: Request) -> Response | StreamResponse:
        app_id, env = request.params["app_id"], request.params["env"]
        body = request.json_object()
        req = self._parse(body, app_id)
        key = idempotency_key(request)
        key_fingerprint = (
            request_fingerprint(["kore", app_id, env], body, delivery=("isAsync", "stream")) if key is not None else None
        )
        if req.callback_url is not None and self.deliveries is not None:
            await self.deliveries.sender.check_async(req.callback_url)  # UnsafeURL: a 400 before anything runs
        owner = request_owner(self.auth, request)
        streamed = req.stream["enable"] and not req.is_async
        waits = not req.is_async and not streamed  # a sync request, answered when the turn ends
        with self.streams.waiting(request) if waits else nullcontext():  # a 429 changes nothing
            with self.streams.slot(request) if streamed else nullcontext() as slot:  # nor here
                return await self._execute(request, req, app_id, env, key, key_fingerprint, owner, slot)

    async def _execute(
        self,
        request: Request,
        req: ExecuteRequest,
        app_id: str,
        env: str,
        key: str | None,
        key_fingerprint: str | None,
        owner: str | None,
        slot: Slot | None,
    ) -> Response | StreamResponse:
        session = await self._session(request, app_id, env, req.identity)
        session = await self._update_session(session, req.metadata, req.include, req.exclude)
        if not req.invoked:
            waiting = await self._waiting_run(session.session_id, owner, key, key_fingerprint)
            if waiting is not None:
                return await self._answer(waiting, req, owner, slot)

        kore = session.data.get("kore", {})
        files = _attachment_list(kore.get("attachments", {}))
        delivery_id = f"d-{uuid.uuid4()}" if req.callback_url is not None else None
        run_meta: dict[str, Any] = {
            "kore": {
                "appId": app_id,
                "envName": env,
                "userReference": kore.get("userReference"),
                "sessionReference": kore.get("sessionReference"),
                "userId": kore.get("userId"),
                "input": req.given_input,
                "debug": req.debug,
                "stream": req.stream,
                "isAsync": req.is_async,
                "invoke": req.tool_task or ({"type": "agent", "name": req.agent} if req.invoked else None),
                "callbackUrl": req.callback_url,
                "deliveryRunId": delivery_id,
                # The strategy the engine applies: the request's, else this profile's, else the engine's.
                "multitaskStrategy": req.policy or self.engine.session_policy,
                "attachments": files,
            },
            "attachments": [f["fileId"] for f in files if f["isActive"]],
        }
        state = await self.engine.execute(
            req.agent,
            req.run_input,
            mode="async",
            session_id=session.session_id,
            metadata=run_meta,
            owner=owner,
            idempotency_key=key,
            idempotency_scope="kore",
            request_fingerprint=key_fingerprint,
            session_policy=req.policy,
            run_id=f"r-{uuid.uuid4()}",
        )
        if req.callback_url is not None and self.deliveries is not None and state.last_seq == 1:
            # (a repeat with the same Idempotency-Key finds the delivery already scheduled)
            await self.deliveries.schedule(
                state.run_id, req.callback_url, format=CALLBACK_FORMAT, token=req.token, owner=owner,
                delivery_id=delivery_id,
            )
        return await self._respond(state.run_id, req, Turn(), slot)

    async def _respond(
        self, run_id: str, req: ExecuteRequest, turn: Turn, slot: Slot | None
    ) -> Response | StreamResponse:
        """Answer as the request asked: at once (isAsync), as a stream, or once the run stops."""
        if req.is_async:
            return json_response(
                {"status": "processing", "runId": run_id, "message": "Request is being processed asynchronously"},
                status=202,
            )
        if req.stream["enable"]:
            assert slot is not None
            return slot.bind(sse_response(self._stream(run_id, req, turn)))
        final = await self.engine.wait(run_id, after_seq=turn.after_seq)
        status = await self._session_status(final.session_id, final.owner)
        return json_response(execute_response(final, session_status=status, turn=turn))

    # -- a session's run waiting for input: the next execute answers it ------------------------

    async def _waiting_run(
        self, session_id: str, owner: str | None, key: str | None, key_fingerprint: str | None
    ) -> KeyedAnswer | None:
        """The session's run waiting for input, if any (and if this request is not a repeat)."""
        page = await self.engine.list_runs(session_id=session_id, status=Status.WAITING_FOR_INPUT, owner=owner, limit=1)
        if not page.runs:
            return None
        run_id = page.runs[0].run_id
        if key is None or key_fingerprint is None:
            return KeyedAnswer(run_id, None)
        # The engine's key space for this profile: a repeat of this request finds the run it answered.
        record = IdempotencyRecord(
            principal=ownership.idempotency_principal(owner),
            scope="kore",
            key=key,
            fingerprint=key_fingerprint,
            run_id=run_id,
            created_at=self.engine.clock(),
        )
        engine = self.engine
        bound = await bind_key(
            engine.store, self._keys(), record, ttl=engine.retention.idempotency_ttl, now=engine.clock
        )
        if not (bound.create and bound.run_id == record.run_id):
            return None  # execute() answers with the run the key named
        return KeyedAnswer(run_id, record)

    def _keys(self) -> IdempotencyStore:
        """The engine's idempotency records (InvalidRequest when its store keeps none)."""
        return required(self.engine.idempotency_store, self.engine.store, "idempotency records")

    async def _answer(
        self, answer: KeyedAnswer, req: ExecuteRequest, owner: str | None, slot: Slot | None
    ) -> Response | StreamResponse:
        """Give this request's input to the run waiting for it; answer with what follows."""
        run_id = answer.run_id
        before = await self.engine.status(run_id)
        try:
            resumed = await self.engine.resume(run_id, req.run_input)
        except BaseException:
            if answer.key is not None:  # not answered: the key was not used
                with anyio.CancelScope(shield=True):
                    await self._keys().release_idempotency_key(answer.key)
            raise
        if req.callback_url is not None and self.deliveries is not None:
            await self.deliveries.schedule(run_id, req.callback_url, format=CALLBACK_FORMAT, token=req.token, owner=owner)
        turn = Turn(after_seq=resumed.last_seq, skip_messages=len(before.messages), debug=req.debug)
        return await self._respond(run_id, req, turn, slot)

    async def _update_session(
        self, session: SessionRecord, metadata: dict[str, Any] | None, include: list[str], exclude: list[str]
    ) -> SessionRecord:
        """Merge request metadata into the session's metadata and apply attachment changes."""
        if metadata is None and not include and not exclude:
            return session
        async with self._session_writes(session.session_id):
            with suppress(SessionNotFound):  # the latest record, unless it went meanwhile
                session = await self.engine.get_session(session.session_id, owner=session.owner)
            return await self._write_session(session, metadata, include, exclude)

    async def _write_session(
        self, session: SessionRecord, metadata: dict[str, Any] | None, include: list[str], exclude: list[str]
    ) -> SessionRecord:
        kore = dict(session.data.get("kore", {}))
        files = {k: dict(v) for k, v in kore.get("attachments", {}).items()}
        for file_id in include:
            files[file_id] = {**files.get(file_id, {"fileId": file_id}), "isActive": True}
        for file_id in exclude:
            # Re-inserted last: the files listed first are the ones excluded longest ago.
            files[file_id] = {**files.pop(file_id, {"fileId": file_id}), "isActive": False}
        active = sum(1 for f in files.values() if f["isActive"])
        if active > MAX_ACTIVE_ATTACHMENTS:
            raise _over_limit(
                f"a session may have at most {MAX_ACTIVE_ATTACHMENTS} active attachments; exclude some first",
                "attachments.includeFiles", MAX_ACTIVE_ATTACHMENTS, active,
            )
        for file_id in [k for k, f in files.items() if not f["isActive"]][: max(0, len(files) - MAX_ATTACHMENTS)]:
            del files[file_id]  # the session keeps at most MAX_ATTACHMENTS: forget the longest excluded
        kore["attachments"] = files
        merged = {**session.metadata, **(metadata or {})}
        size = len(dumps(merged).encode())
        if size > MAX_SESSION_METADATA_BYTES:
            raise _over_limit(
                f"the session's metadata would be {size} bytes of JSON; the limit is {MAX_SESSION_METADATA_BYTES}",
                "metadata", MAX_SESSION_METADATA_BYTES, size,
            )
        updated = attrs.evolve(session, metadata=merged, data={**session.data, "kore": kore})
        await self.engine.save_session(updated)
        return updated

    async def _stream(self, run_id: str, req: ExecuteRequest, turn: Turn) -> AsyncIterator[bytes]:
        """Kore's series of stream events: a first one with the session, then output and
        thoughts as they come, then a last one with the final session info (isLastEvent),
        sent when the run ends or waits for input."""
        mode, debug_on, debug_mode = req.stream["streamMode"], req.debug["enable"], req.debug["debugMode"]
        index = 0

        def frame(item: dict[str, Any], seq: int | None = None) -> bytes:
            nonlocal index
            item = {"eventIndex": index, **item}
            index += 1
            return sse_frame(dumps(item), id=seq)

        state = await self.engine.status(run_id)
        yield frame({"messageId": f"msg-{run_id}", "sessionInfo": session_info(state, status="busy")})
        short = {"runId": run_id}
        streamed: set[str] = set()  # messages already sent token by token
        follow = self.engine.follow(run_id, turn.after_seq, idle=KEEPALIVE)
        async with aclosing(each_event(follow, discarded=state.discarded)) as events:  # type: ignore[type-var]
            try:
                async for event in events:
                    if event is None:
                        yield sse_comment()
                        continue
                    if isinstance(event, Thought) and debug_on and debug_mode in ("thoughts", "all"):
                        item = {"type": "thought", "content": event.content, "source": event.source}
                        yield frame({"messageId": f"msg-{run_id}", "debug": [item], "sessionInfo": short}, event.seq)
                    elif isinstance(event, ToolResult) and debug_on and debug_mode in ("function-call", "all"):
                        item = {"type": "function-call", "callId": event.call_id, "output": event.output}
                        yield frame({"messageId": f"msg-{run_id}", "debug": [item], "sessionInfo": short}, event.seq)
                    elif isinstance(event, MessageDelta) and mode == "tokens":
                        out = [{"type": "text", "content": event.content}]
                        yield frame({"messageId": event.message_id, "output": out, "sessionInfo": short}, event.seq)
                    elif isinstance(event, MessageCompleted) and event.role != "user":
                        if mode != "tokens" or event.message_id not in streamed:
                            out = [{"type": "text", "content": event.content}]
                            yield frame({"messageId": event.message_id, "output": out, "sessionInfo": short}, event.seq)
                    elif isinstance(event, Custom) and mode == "custom":
                        custom = {"name": event.name, "data": event.data}
                        yield frame({"messageId": f"msg-{run_id}", "custom": custom, "sessionInfo": short}, event.seq)
                    if isinstance(event, MessageDelta):
                        streamed.add(event.message_id)
                    if isinstance(event, RunWaitingForInput) and event.request is not None:
                        out = text_output(event.request)
                        yield frame({"messageId": f"msg-{run_id}", "output": out, "sessionInfo": short}, event.seq)
                    if event.terminal or isinstance(event, RunWaitingForInput):
                        final = await self.engine.status(run_id)
                        info = session_info(final, status=await self._session_status(final.session_id, final.owner))
                        info["output"] = run_output(final, skip=turn.skip_messages)
                        last: dict[str, Any] = {"messageId": message_id(final), "sessionInfo": info, "isLastEvent": True}
                        if final.error is not None:
                            last["error"] = {"code": final.error.code, "message": final.error.message}
                        yield frame(last, event.seq)
                        return
            except RunDeleted as deleted:  # the last event says so, with the one error format's code and message
                error = deleted.error_body()["error"]
                gone = {"messageId": f"msg-{run_id}", "sessionInfo": short, "isLastEvent": True}
                yield frame({**gone, "error": {"code": error["code"], "message": error["message"]}})

    # -- status -----------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        app_id, env, run_id = request.params["app_id"], request.params["env"], request.params["run_id"]
        body = request.json_object() if request.body.strip() else {}
        identity = parse_identity(body)
        await self.engine.run_summary(run_id, owner=request_owner(self.auth, request))
        state = await self.engine.status(run_id)
        meta = kore_meta(state)
        if meta.get("appId") != app_id or meta.get("envName") != env or not _identity_matches(state, meta, identity):
            raise RunNotFound(run_id)  # another app's or another session's run is not there at all
        body = status_response(state)
        delivery_id = meta.get("deliveryRunId")
        if delivery_id:
            async_config = body["run"]["metadata"]["runtimeContext"]["asyncConfig"]
            try:
                async_config["deliveryStatus"] = (await self.engine.run_summary(delivery_id)).status.value
            except RunNotFound:
                async_config["deliveryStatus"] = None
        return json_response(body)


def _identity_matches(state: RunState, meta: Mapping[str, Any], identity: Identity) -> bool:
    """Every identifier given must name the run's session."""
    if identity.session_identity is not None and identity.session_identity != state.session_id:
        return False
    if identity.session_reference is not None and identity.session_reference != meta.get("sessionReference"):
        return False
    if identity.user_reference is not None and identity.user_reference != meta.get("userReference"):
        return False
    return True


def _same_app(session: SessionRecord, app_id: str, env: str) -> bool:
    kore = session.data.get("kore", {})
    return kore.get("appId") == app_id and kore.get("envName") == env


def _over_limit(message: str, field: str, limit: int, value: int) -> HttpError:
    """A request that would take the session past a limit: refused, the session unchanged."""
    return invalid(message, field=field, limit=limit, value=value)


def _attachment_list(files: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(v) for v in files.values()]


__all__ = ["KoreProfile", "execute_response", "status_response", "callback_payload"]
