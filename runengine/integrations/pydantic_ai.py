"""A Pydantic AI `Agent` run as a runengine agent.

`agent_from_pydantic_ai(agent, name=...)` gives an `AgentSpec` (or `pydantic_ai_agent(agent)` the bare
agent function) that runs `agent` on the run's input, with the session's earlier turns as its
message history, and returns its output (structured output as JSON data). What the agent does
becomes the run's events:

- each model request is one `ctx.stream_step("pydantic_ai.model", ...)`: its text streams out as
  `message.delta` while it arrives, its thinking as `thought`, and the response is recorded, so a
  resumed run gets it back instead of asking the model again; then its token counts as `usage`;
- a tool call's arguments stream out as they arrive (`custom` events named TOOL_ARGUMENTS_DELTA);
- each tool call is `ctx.tool_call` (`tool.call`, `tool.result`): not made again once recorded.
  Tools run one after another (replay matches calls in order); a `ModelRetry`, `CallDeferred` or
  `ApprovalRequired` a tool raises is recorded as its result and raised again, live and on replay;
- a tool that needs approval (`requires_approval=True`, `ApprovalRequired`) or whose result comes
  from outside (`CallDeferred`, external tools) makes the run wait for input (`ctx.ask`) with
  `{"type": "approval" | "tool_result", "tool", "arguments", "call_id"}`; the input given is the
  approval (`true`, `"yes"`, `{"approved": true}`; anything else denies) or the tool's result;
- the turn's messages as Pydantic AI keeps them (requests, responses, tool calls and returns,
  thinking, usage) are recorded at its end as the step MESSAGES_STEP (`ModelMessagesTypeAdapter`
  JSON): the session's next turns get them back as the same `ModelMessage` objects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..agents import AgentSpec
from ..context import AgentFn, RunContext, StepStream
from ..errors import AgentFailed, EventTooLarge
from ..limits import DEFAULT_AGENT_HISTORY

try:
    from pydantic import TypeAdapter, ValidationError
    from pydantic_ai import Agent, ApprovalRequired, CallDeferred, DeferredToolRequests, DeferredToolResults, ModelRetry
    from pydantic_ai.exceptions import ToolRetryError, UsageLimitExceeded
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import (
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelRequest,
        ModelResponse,
        PartDeltaEvent,
        RetryFeedbackPart,
        PartEndEvent,
        PartStartEvent,
        TextPart,
        TextPartDelta,
        ThinkingPart,
        ThinkingPartDelta,
        ToolCallPart,
        ToolCallPartDelta,
        ToolReturnPart,
    )
    from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models import CompletedStreamedResponse
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.tool_manager import ToolManager
    from pydantic_ai.usage import RunUsage, UsageLimits
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "runengine.integrations.pydantic_ai needs Pydantic AI: pip install '.[pydantic-ai]' "
        "from runengine's clone (and '.[pydantic-ai,openai]' for openai: models)"
    ) from exc

#: The name of the step that records each model request.
MODEL_STEP = "pydantic_ai.model"
#: The name of the step that records a turn's messages (ModelMessagesTypeAdapter JSON) for the session's next turns.
MESSAGES_STEP = "pydantic_ai.messages"
#: The error code of a run that went past its Pydantic AI `UsageLimits`.
USAGE_LIMIT_EXCEEDED = "usage_limit_exceeded"
#: The error code of a run whose `metadata["deps"]` is not what the agent's `deps_type` takes.
INVALID_DEPS = "invalid_deps"
#: Marks a tool's result that is Pydantic AI control flow (a retry, a deferral), not its output.
_CONTROL = "__pydantic_ai_control__"
_RETRY_PART: TypeAdapter[ToolReturnPart | RetryFeedbackPart] = TypeAdapter(ToolReturnPart | RetryFeedbackPart)

Prompt = Callable[[RunContext], Any]


def _default_prompt(ctx: RunContext) -> str:
    return ctx.input if isinstance(ctx.input, str) else json.dumps(ctx.input)


def pydantic_ai_agent(
    agent: Agent[Any, Any],
    *,
    deps: Callable[[RunContext], Any] | None = None,
    prompt: Prompt = _default_prompt,
    model: Model | str | None = None,
    output_type: Any = None,
    usage_limits: UsageLimits | None = None,
    stream: bool = True,
    history: bool = True,
    history_limit: int = DEFAULT_AGENT_HISTORY,
    history_runs: int | None = None,
    limit: str | None = None,
) -> AgentFn:
    """The runengine agent function that runs `agent`.

    `deps(ctx)` builds the agent's dependencies for a run; without it, an agent that declares a
    `deps_type` gets the run's `metadata["deps"]` validated as that type (a run whose metadata does
    not validate fails with code INVALID_DEPS). `prompt(ctx)` gives its user prompt (by default the
    run's input, JSON text when it is not a string); `model` overrides the agent's model;
    `output_type` its output type (the run's output is the output as JSON data); `usage_limits`
    bounds the whole turn (a run past them fails with code USAGE_LIMIT_EXCEEDED; the engine's
    `max_events_per_run` bounds its log whatever they say, code `too_many_events`). `stream=False`
    for a model that cannot stream (its text then goes out once the response is in);
    `history=False` leaves the session's earlier turns out; otherwise the turns of the latest
    `history_limit` messages of them (`ctx.history(limit=)`) are the message history,
    `history_runs=N` keeps only the last N of those turns. `limit`: the engine step limit each
    model request waits for and spends its tokens from (runengine.step_limits)."""
    if history_runs is not None and (not isinstance(history_runs, int) or history_runs < 0):
        raise ValueError(f"history_runs must be a whole number >= 0 or None, not {history_runs!r}")

    async def run(ctx: RunContext) -> Any:
        durable = _Durable(ctx, stream=stream, limit=limit)
        earlier = await session_messages(ctx, runs=history_runs, limit=history_limit) if history else []
        messages: list[ModelMessage] | None = earlier or None
        user_prompt: str | None = prompt(ctx)
        results: DeferredToolResults | None = None
        usage: RunUsage | None = None
        wanted = [output_type if output_type is not None else agent.output_type, DeferredToolRequests]
        run_deps = deps(ctx) if deps is not None else _metadata_deps(agent, ctx)
        with ToolManager.parallel_execution_mode("sequential"):  # replay matches tool calls in order
            while True:
                try:
                    result = await agent.run(
                        user_prompt,
                        output_type=wanted,
                        message_history=messages,
                        deferred_tool_results=results,
                        deps=run_deps,
                        model=model,
                        usage_limits=usage_limits,
                        usage=usage,
                        capabilities=[durable],
                    )
                except UsageLimitExceeded as exc:
                    raise AgentFailed(USAGE_LIMIT_EXCEEDED, str(exc)) from exc
                if not isinstance(result.output, DeferredToolRequests):
                    break
                results = await _ask_for_deferred(ctx, result.output)
                messages, user_prompt, usage = result.all_messages(), None, result.usage
        turn = result.all_messages()[len(earlier) :]
        try:
            await ctx.step(MESSAGES_STEP, lambda: ModelMessagesTypeAdapter.dump_python(turn, mode="json"))
        except EventTooLarge as exc:  # refused, nothing recorded: the turn's answer still counts
            ctx.log.warning("the turn's messages are too large to keep; later turns get its text", error=str(exc))
        return to_jsonable_python(result.output)

    return run


def agent_from_pydantic_ai(
    agent: Agent[Any, Any], *, name: str, description: str = "", version: str | None = None, **options: Any
) -> AgentSpec:
    """`agent` as an AgentSpec to register with `engine.agents.add(...)`; `options` as for `pydantic_ai_agent`."""
    return AgentSpec(name=name, fn=pydantic_ai_agent(agent, **options), description=description, version=version)


async def session_messages(
    ctx: RunContext, *, runs: int | None = None, limit: int = DEFAULT_AGENT_HISTORY
) -> list[ModelMessage]:
    """The session's earlier turns, as Pydantic AI message history: the turns of the latest `limit`
    messages (`ctx.history(limit=)`; the last `runs` of those turns, when given). A turn this
    integration ran, whole in that page, comes back as the messages it recorded (MESSAGES_STEP),
    tool calls, tool returns and thinking included; any other run (another agent's, one that ended
    before recording them, the oldest one cut by the limit) as its input and text messages."""
    turns: dict[str, list[Any]] = {}
    for message in await ctx.history(limit=limit):
        turns.setdefault(message.run_id, []).append(message)
    kept = list(turns)[max(0, len(turns) - runs) :] if runs is not None else list(turns)
    recorded = dict(await ctx.session_steps(MESSAGES_STEP, runs=len(turns))) if kept else {}
    messages: list[ModelMessage] = []
    for run_id in kept:
        whole = turns[run_id][0].role == "user"  # the page holds the run's input: its turn is whole
        if whole and run_id in recorded:
            messages.extend(ModelMessagesTypeAdapter.validate_python(recorded[run_id]))
        else:
            messages.extend(_text_messages(turns[run_id]))
    return messages


def _text_messages(turns: Sequence[Any]) -> list[ModelMessage]:
    """A run's input and text messages (`ctx.history()` entries) as Pydantic AI messages."""
    messages: list[ModelMessage] = []
    for turn in turns:
        content = turn.content if isinstance(turn.content, str) else json.dumps(turn.content)
        if turn.role == "user":
            messages.append(ModelRequest.user_text_prompt(content))
        else:
            messages.append(ModelResponse(parts=[TextPart(content)]))
    return messages


def _metadata_deps(agent: Agent[Any, Any], ctx: RunContext) -> Any:
    """The run's `metadata["deps"]` as the agent's `deps_type` (None for an agent that declares none)."""
    if agent.deps_type is object or agent.deps_type is type(None):
        return None
    try:
        return TypeAdapter(agent.deps_type).validate_python(ctx.metadata.get("deps"))
    except ValidationError as exc:
        wanted = getattr(agent.deps_type, "__name__", repr(agent.deps_type))
        raise AgentFailed(INVALID_DEPS, f"the run's metadata['deps'] is not a {wanted}: {exc}") from exc


async def _ask_for_deferred(ctx: RunContext, requests: DeferredToolRequests) -> DeferredToolResults:
    """Ask the run's client for each approval and each external tool result (recorded inputs)."""
    results = DeferredToolResults()
    for call in requests.approvals:
        answer = await ctx.ask(_request("approval", call))
        results.approvals[call.tool_call_id] = _approved(answer)
    for call in requests.calls:
        results.calls[call.tool_call_id] = await ctx.ask(_request("tool_result", call))
    return results


def _request(kind: str, call: ToolCallPart) -> dict[str, Any]:
    return {"type": kind, "tool": call.tool_name, "arguments": call.args_as_dict(), "call_id": call.tool_call_id}


def _approved(answer: Any) -> bool:
    if isinstance(answer, dict):
        answer = answer.get("approved")
    if isinstance(answer, str):
        return answer.strip().lower() in {"yes", "y", "approve", "approved", "true"}
    return answer is True


class _Durable(AbstractCapability[Any]):
    """Routes the run's model requests through `ctx.stream_step` and its tool calls through `ctx.tool_call`."""

    def __init__(self, ctx: RunContext, *, stream: bool, limit: str | None = None) -> None:
        self.ctx = ctx
        self.stream = stream
        self.limit = limit

    def get_wrapper_model(self, model: Model) -> Model | None:
        return _RecordedModel(model, self.ctx, stream=self.stream, limit=self.limit)

    async def wrap_tool_execute(self, ctx: Any, *, call: ToolCallPart, tool_def: Any, args: Any, handler: Any) -> Any:
        async def execute(**_: Any) -> Any:
            try:
                return to_jsonable_python(await handler(args))
            except (ToolRetryError, ModelRetry, CallDeferred, ApprovalRequired) as flow:
                return _recorded_flow(flow)  # recorded as the result, raised again below, live and on replay

        taken = {recorded.call_id for recorded in self.ctx.state.tool_calls}
        call_id = None if call.tool_call_id in taken else call.tool_call_id
        output = await self.ctx.tool_call(call.tool_name, call.args_as_dict(), execute, call_id=call_id)
        if isinstance(output, dict) and _CONTROL in output:
            raise _flow_exception(output)
        return output


def _recorded_flow(flow: Exception) -> dict[str, Any]:
    if isinstance(flow, ToolRetryError):
        return {_CONTROL: "retry", "part": _RETRY_PART.dump_python(flow.tool_retry, mode="json")}
    if isinstance(flow, ModelRetry):
        return {_CONTROL: "model_retry", "message": flow.message}
    if isinstance(flow, CallDeferred):
        return {_CONTROL: "deferred", "metadata": to_jsonable_python(flow.metadata), "kind": flow.kind}
    assert isinstance(flow, ApprovalRequired)
    return {_CONTROL: "approval", "metadata": to_jsonable_python(flow.metadata)}


def _flow_exception(recorded: dict[str, Any]) -> Exception:
    kind = recorded[_CONTROL]
    if kind == "retry":
        return ToolRetryError(_RETRY_PART.validate_python(recorded["part"]))
    if kind == "model_retry":
        return ModelRetry(recorded["message"])
    if kind == "deferred":
        return CallDeferred(recorded["metadata"], kind=recorded["kind"])
    return ApprovalRequired(recorded["metadata"])


class _RecordedModel(WrapperModel):
    """A model whose requests are made once per run: recorded, streamed live, replayed from the log."""

    def __init__(self, wrapped: Model, ctx: RunContext, *, stream: bool, limit: str | None = None) -> None:
        super().__init__(wrapped)
        self._ctx = ctx
        self._stream = stream
        self._limit = limit

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        return await self._recorded(messages, model_settings, model_request_parameters, None)

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        response = await self._recorded(messages, model_settings, model_request_parameters, run_context)
        yield CompletedStreamedResponse(response, model_request_parameters=model_request_parameters)

    async def _recorded(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        parameters: ModelRequestParameters,
        run_context: Any,
    ) -> ModelResponse:
        async def call(out: StepStream) -> Any:
            if self._stream:
                async with self.wrapped.request_stream(messages, model_settings, parameters, run_context) as streamed:
                    await _forward(streamed, out)
                response = streamed.get()
            else:
                response = await self.wrapped.request(messages, model_settings, parameters)
                for part in response.parts:
                    if isinstance(part, ThinkingPart) and part.content:
                        await out.thought(part.content)
                    elif isinstance(part, TextPart) and part.content:
                        await out.delta(part.content)
            return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]

        recorded = await self._ctx.stream_step(MODEL_STEP, call, limit=self._limit)
        await self._ctx.complete_message()
        response = ModelMessagesTypeAdapter.validate_python([recorded])[0]
        assert isinstance(response, ModelResponse)
        usage = response.usage
        if usage.input_tokens or usage.output_tokens:
            await self._ctx.usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, limit=self._limit)
        return response


async def _forward(streamed: StreamedResponse, out: StepStream) -> None:
    """Stream a model response's text as deltas and each thinking part as one thought."""
    thinking: dict[int, list[str]] = {}
    calls: dict[int, ToolCallPart] = {}  # the tool calls being streamed, by part index
    async for event in streamed:
        if isinstance(event, PartStartEvent):
            if isinstance(event.part, TextPart) and event.part.content:
                await out.delta(event.part.content)
            elif isinstance(event.part, ThinkingPart) and event.part.content:
                thinking.setdefault(event.index, []).append(event.part.content)
            elif isinstance(event.part, ToolCallPart):
                calls[event.index] = event.part
                if event.part.args:
                    await out.tool_arguments(event.part.tool_call_id, event.part.tool_name, _args_text(event.part.args))
        elif isinstance(event, PartDeltaEvent):
            if isinstance(event.delta, TextPartDelta) and event.delta.content_delta:
                await out.delta(event.delta.content_delta)
            elif isinstance(event.delta, ThinkingPartDelta) and event.delta.content_delta:
                thinking.setdefault(event.index, []).append(event.delta.content_delta)
            elif isinstance(event.delta, ToolCallPartDelta) and event.delta.args_delta and event.index in calls:
                call = calls[event.index]
                await out.tool_arguments(call.tool_call_id, call.tool_name, _args_text(event.delta.args_delta))
        elif isinstance(event, PartEndEvent) and event.index in thinking:
            await out.thought("".join(thinking.pop(event.index)))
    for pieces in thinking.values():
        await out.thought("".join(pieces))


def _args_text(args: str | dict[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(args)


__all__ = [
    "INVALID_DEPS",
    "MESSAGES_STEP",
    "MODEL_STEP",
    "USAGE_LIMIT_EXCEEDED",
    "agent_from_pydantic_ai",
    "pydantic_ai_agent",
    "session_messages",
]
