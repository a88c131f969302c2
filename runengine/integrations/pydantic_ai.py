"""A Pydantic AI `Agent` run as a runengine agent.

`agent_from_pydantic_ai(agent, name=...)` gives an `AgentSpec` (or `pydantic_ai_agent(agent)` the bare
agent function) that runs `agent` on the run's input, with the session's earlier turns
(`ctx.history()`) as its message history, and returns its output. What the agent does becomes the
run's events:

- each model request is one `ctx.stream_step("pydantic_ai.model", ...)`: its text streams out as
  `message.delta` while it arrives, its thinking as `thought`, and the response is recorded, so a
  resumed run gets it back instead of asking the model again; then its token counts as `usage`;
- each tool call is `ctx.tool_call` (`tool.call`, `tool.result`): not made again once recorded.
  Tools run one after another (replay matches calls in order); a `ModelRetry`, `CallDeferred` or
  `ApprovalRequired` a tool raises is recorded as its result and raised again, live and on replay;
- a tool that needs approval (`requires_approval=True`, `ApprovalRequired`) or whose result comes
  from outside (`CallDeferred`, external tools) makes the run wait for input (`ctx.ask`) with
  `{"type": "approval" | "tool_result", "tool", "arguments", "call_id"}`; the input given is the
  approval (`true`, `"yes"`, `{"approved": true}`; anything else denies) or the tool's result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..agents import AgentSpec
from ..context import AgentFn, RunContext, StepStream
from ..limits import DEFAULT_AGENT_HISTORY

try:
    from pydantic import TypeAdapter
    from pydantic_ai import Agent, ApprovalRequired, CallDeferred, DeferredToolRequests, DeferredToolResults, ModelRetry
    from pydantic_ai.exceptions import ToolRetryError
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
        ToolReturnPart,
    )
    from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models import CompletedStreamedResponse
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.tool_manager import ToolManager
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "runengine.integrations.pydantic_ai needs Pydantic AI: pip install '.[pydantic-ai]' "
        "from runengine's clone (and '.[pydantic-ai,openai]' for openai: models)"
    ) from exc

#: The name of the step that records each model request.
MODEL_STEP = "pydantic_ai.model"
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
    stream: bool = True,
    history: bool = True,
    history_limit: int = DEFAULT_AGENT_HISTORY,
) -> AgentFn:
    """The runengine agent function that runs `agent`.

    `deps(ctx)` builds the agent's dependencies for a run; `prompt(ctx)` its user prompt (by default
    the run's input, JSON text when it is not a string); `model` overrides the agent's model;
    `stream=False` for a model that cannot stream (its text then goes out once the response is in);
    `history=False` leaves the session's earlier turns out; otherwise the latest `history_limit`
    messages of them are the message history (`ctx.history(limit=)`)."""

    async def run(ctx: RunContext) -> Any:
        durable = _Durable(ctx, stream=stream)
        messages: list[ModelMessage] | None = _model_messages(await ctx.history(limit=history_limit)) if history else None
        user_prompt: str | None = prompt(ctx)
        results: DeferredToolResults | None = None
        output_type = [agent.output_type, DeferredToolRequests]
        with ToolManager.parallel_execution_mode("sequential"):  # replay matches tool calls in order
            while True:
                result = await agent.run(
                    user_prompt,
                    output_type=output_type,
                    message_history=messages,
                    deferred_tool_results=results,
                    deps=deps(ctx) if deps is not None else None,
                    model=model,
                    capabilities=[durable],
                )
                if not isinstance(result.output, DeferredToolRequests):
                    return to_jsonable_python(result.output)
                results = await _ask_for_deferred(ctx, result.output)
                messages, user_prompt = result.all_messages(), None

    return run


def agent_from_pydantic_ai(
    agent: Agent[Any, Any], *, name: str, description: str = "", version: str | None = None, **options: Any
) -> AgentSpec:
    """`agent` as an AgentSpec to register with `engine.agents.add(...)`; `options` as for `pydantic_ai_agent`."""
    return AgentSpec(name=name, fn=pydantic_ai_agent(agent, **options), description=description, version=version)


def _model_messages(turns: Sequence[Any]) -> list[ModelMessage]:
    """The session's earlier turns (text only) as Pydantic AI message history."""
    messages: list[ModelMessage] = []
    for turn in turns:
        content = turn.content if isinstance(turn.content, str) else json.dumps(turn.content)
        if turn.role == "user":
            messages.append(ModelRequest.user_text_prompt(content))
        else:
            messages.append(ModelResponse(parts=[TextPart(content)]))
    return messages


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

    def __init__(self, ctx: RunContext, *, stream: bool) -> None:
        self.ctx = ctx
        self.stream = stream

    def get_wrapper_model(self, model: Model) -> Model | None:
        return _RecordedModel(model, self.ctx, stream=self.stream)

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

    def __init__(self, wrapped: Model, ctx: RunContext, *, stream: bool) -> None:
        super().__init__(wrapped)
        self._ctx = ctx
        self._stream = stream

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

        recorded = await self._ctx.stream_step(MODEL_STEP, call)
        await self._ctx.complete_message()
        response = ModelMessagesTypeAdapter.validate_python([recorded])[0]
        assert isinstance(response, ModelResponse)
        usage = response.usage
        if usage.input_tokens or usage.output_tokens:
            await self._ctx.usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        return response


async def _forward(streamed: StreamedResponse, out: StepStream) -> None:
    """Stream a model response's text as deltas and each thinking part as one thought."""
    thinking: dict[int, list[str]] = {}
    async for event in streamed:
        if isinstance(event, PartStartEvent):
            if isinstance(event.part, TextPart) and event.part.content:
                await out.delta(event.part.content)
            elif isinstance(event.part, ThinkingPart) and event.part.content:
                thinking.setdefault(event.index, []).append(event.part.content)
        elif isinstance(event, PartDeltaEvent):
            if isinstance(event.delta, TextPartDelta) and event.delta.content_delta:
                await out.delta(event.delta.content_delta)
            elif isinstance(event.delta, ThinkingPartDelta) and event.delta.content_delta:
                thinking.setdefault(event.index, []).append(event.delta.content_delta)
        elif isinstance(event, PartEndEvent) and event.index in thinking:
            await out.thought("".join(thinking.pop(event.index)))
    for pieces in thinking.values():
        await out.thought("".join(pieces))


__all__ = ["MODEL_STEP", "agent_from_pydantic_ai", "pydantic_ai_agent"]
