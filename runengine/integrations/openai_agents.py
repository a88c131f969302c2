"""An OpenAI Agents SDK `Agent` run as a runengine agent.

`agent_from_openai_agents(agent, name=...)` gives an `AgentSpec` (or `openai_agents_agent(agent)` the
bare agent function) that runs `agent` with `Runner.run` on the run's input and returns its final
output (structured output as JSON data). What the agent does becomes the run's events:

- each model call is one `ctx.stream_step("openai_agents.model", ...)`: the model is asked to stream,
  its text goes out as `message.delta` while it arrives, its reasoning as one `thought`, a function
  call's arguments as `custom` events named TOOL_ARGUMENTS_DELTA; the completed response is
  recorded, so a resumed run gets it back instead of asking the model again; then its `usage`;
- each function tool call is `ctx.tool_call` (`tool.call`, `tool.result`, the model's call id):
  not made again once recorded. An agent used as a tool (`Agent.as_tool`) is one such call;
- a handoff is a `custom` event named HANDOFF (`{"from", "to"}`): the run goes on as the agent
  handed to (child runs do not exist yet), whose model calls and tools are recorded the same way;
- a guardrail that trips (input, output, tool) fails the run with code GUARDRAIL_TRIPPED; more
  turns than `max_turns` with code MAX_TURNS_EXCEEDED; a call of a tool that needs approval
  (not supported yet) with code APPROVAL_NOT_SUPPORTED, the tool not run;
- in a session, the SDK's session memory is a `RunSession`: the items each run adds are recorded
  in its log (steps named SESSION_STEP), and the session's next runs read them back.

The model calls of every agent of the run are recorded: those named by a string (or left to the
default) through the run config's model provider, those given as a `Model` instance directly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..agents import AgentSpec
from ..context import AgentFn, RunContext, StepStream
from ..errors import AgentFailed

try:
    from agents import (
        Agent,
        FunctionTool,
        Handoff,
        InputGuardrailTripwireTriggered,
        MaxTurnsExceeded,
        Model,
        ModelProvider,
        ModelResponse,
        OutputGuardrailTripwireTriggered,
        RunConfig,
        RunContextWrapper,
        RunHooks,
        Runner,
        ToolInputGuardrailTripwireTriggered,
        ToolOutputGuardrailTripwireTriggered,
        Usage,
    )
    from agents.exceptions import ModelBehaviorError
    from agents.memory import SessionABC
    from agents.tool_context import ToolContext
    from openai.types.responses import Response, ResponseCompletedEvent
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "runengine.integrations.openai_agents needs the OpenAI Agents SDK: pip install 'runengine[openai-agents]'"
    ) from exc

#: The name of the step that records each model call (the completed `Response`, as JSON).
MODEL_STEP = "openai_agents.model"
#: The name of the steps that record what the SDK's session memory is told: `{"add": [items]}`,
#: `{"pop": true}` or `{"clear": true}`.
SESSION_STEP = "openai_agents.session"
#: The `custom` event of a handoff: `{"from": agent name, "to": agent name}`.
HANDOFF = "openai_agents.handoff"
#: The error code of a run a guardrail stopped.
GUARDRAIL_TRIPPED = "guardrail_tripped"
#: The error code of a run that took more turns than `max_turns`.
MAX_TURNS_EXCEEDED = "max_turns_exceeded"
#: The error code of a run whose model called a tool that needs approval (`needs_approval`).
APPROVAL_NOT_SUPPORTED = "approval_not_supported"

_GUARDRAIL_TRIPS = (
    InputGuardrailTripwireTriggered,
    OutputGuardrailTripwireTriggered,
    ToolInputGuardrailTripwireTriggered,
    ToolOutputGuardrailTripwireTriggered,
)

Prompt = Callable[[RunContext], Any]


def _default_prompt(ctx: RunContext) -> str:
    return ctx.input if isinstance(ctx.input, str) else json.dumps(ctx.input)


def openai_agents_agent(
    agent: Agent[Any],
    *,
    context: Callable[[RunContext], Any] | None = None,
    prompt: Prompt = _default_prompt,
    run_config: RunConfig | None = None,
    max_turns: int = 10,
    session: bool = True,
) -> AgentFn:
    """The runengine agent function that runs `agent`.

    `context(ctx)` builds the SDK's run context (what tools get as `ctx.context`); `prompt(ctx)` the
    input (by default the run's input, JSON text when it is not a string); `run_config` is the SDK's
    (by default tracing off and the default model provider; its `session_settings.limit` bounds the
    session items a run reads); `max_turns` as for `Runner.run`; `session=False` runs without the
    session's memory."""

    async def run(ctx: RunContext) -> Any:
        durable = _Durable(ctx)
        config = run_config if run_config is not None else RunConfig(tracing_disabled=True)
        config = dataclasses.replace(
            config,
            model_provider=_RecordedProvider(config.model_provider, ctx),
            model=_RecordedModel(config.model, ctx) if isinstance(config.model, Model) else config.model,
        )
        memory = await RunSession.load(ctx) if session and ctx.session_id is not None else None
        try:
            result = await Runner.run(
                durable.agent(agent),
                prompt(ctx),
                context=context(ctx) if context is not None else None,
                max_turns=max_turns,
                hooks=_Recorder(ctx),
                run_config=config,
                session=memory,
            )
        except _GUARDRAIL_TRIPS as exc:
            raise AgentFailed(GUARDRAIL_TRIPPED, _tripped(exc)) from exc
        except MaxTurnsExceeded as exc:
            raise AgentFailed(MAX_TURNS_EXCEEDED, str(exc)) from exc
        if result.interruptions:  # tool approvals: the run would need the SDK's RunState to go on
            names = sorted({item.name or "?" for item in result.interruptions})
            raise AgentFailed(APPROVAL_NOT_SUPPORTED, f"tools that need approval are not supported yet: {', '.join(names)}")
        return to_jsonable_python(result.final_output)

    return run


def agent_from_openai_agents(
    agent: Agent[Any], *, name: str, description: str = "", version: str | None = None, **options: Any
) -> AgentSpec:
    """`agent` as an AgentSpec to register with `engine.agents.add(...)`; `options` as for `openai_agents_agent`."""
    return AgentSpec(name=name, fn=openai_agents_agent(agent, **options), description=description, version=version)


def _tripped(exc: Exception) -> str:
    if isinstance(exc, (ToolInputGuardrailTripwireTriggered, ToolOutputGuardrailTripwireTriggered)):
        kind, name = "tool", exc.guardrail.get_name()
    else:
        kind = "input" if isinstance(exc, InputGuardrailTripwireTriggered) else "output"
        name = exc.guardrail_result.guardrail.get_name()
    return f"the {kind} guardrail {name!r} tripped"


# -- the agents of a run, made durable --------------------------------------------------------


class _Durable:
    """Copies of the run's agents (and of every agent they hand off to) whose function tools go
    through `ctx.tool_call` and whose `Model` instances are recorded; the originals are untouched."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.copies: dict[int, Agent[Any]] = {}

    def agent(self, agent: Agent[Any]) -> Agent[Any]:
        if id(agent) in self.copies:
            return self.copies[id(agent)]
        durable = agent.clone()
        self.copies[id(agent)] = durable  # before the handoffs: they may lead back here
        if isinstance(agent.model, Model):
            durable.model = _RecordedModel(agent.model, self.ctx)
        durable.tools = [self.tool(tool) for tool in agent.tools]
        durable.handoffs = [self.handoff(target) for target in agent.handoffs]
        return durable

    def tool(self, tool: Any) -> Any:
        if not isinstance(tool, FunctionTool):
            return tool  # hosted tools run inside the model call, which is recorded
        invoke = tool.on_invoke_tool
        ctx = self.ctx

        async def recorded(tool_context: ToolContext[Any], arguments: str) -> Any:
            async def execute(**_: Any) -> Any:
                return to_jsonable_python(await invoke(tool_context, arguments), fallback=str)

            taken = {call.call_id for call in ctx.state.tool_calls}
            call_id = tool_context.tool_call_id if tool_context.tool_call_id not in taken else None
            return await ctx.tool_call(tool.name, _arguments(arguments), execute, call_id=call_id)

        durable = copy.copy(tool)
        durable.on_invoke_tool = recorded
        return durable

    def handoff(self, target: Agent[Any] | Handoff[Any, Any]) -> Agent[Any] | Handoff[Any, Any]:
        if isinstance(target, Agent):
            return self.agent(target)
        invoke = target.on_invoke_handoff

        async def durable_target(run_context: RunContextWrapper[Any], input_json: str) -> Agent[Any]:
            return self.agent(await invoke(run_context, input_json))

        return dataclasses.replace(target, on_invoke_handoff=durable_target)


def _arguments(raw: str) -> dict[str, Any]:
    """A function call's JSON arguments as the tool call's arguments (kept whole if not an object)."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": raw}


class _Recorder(RunHooks[Any]):
    """Records each handoff as a `custom` event where it happens."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def on_handoff(self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]) -> None:
        await self.ctx.custom(HANDOFF, {"from": from_agent.name, "to": to_agent.name})


# -- model calls ------------------------------------------------------------------------------


class _RecordedProvider(ModelProvider):
    """The run config's model provider, its models recorded."""

    def __init__(self, wrapped: ModelProvider, ctx: RunContext) -> None:
        self.wrapped = wrapped
        self.ctx = ctx

    def get_model(self, model_name: str | None) -> Model:
        return _RecordedModel(self.wrapped.get_model(model_name), self.ctx)

    async def aclose(self) -> None:
        await self.wrapped.aclose()


class _RecordedModel(Model):
    """A model whose calls are made once per run: streamed live, recorded, replayed from the log."""

    def __init__(self, wrapped: Model, ctx: RunContext) -> None:
        self.wrapped = wrapped
        self.ctx = ctx

    async def close(self) -> None:
        await self.wrapped.close()

    def get_retry_advice(self, request: Any) -> Any:
        return self.wrapped.get_retry_advice(request)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response = await self._recorded(args, kwargs)
        usage = response.usage
        return ModelResponse(
            output=response.output,
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                total_tokens=usage.total_tokens if usage else 0,
            ),
            response_id=response.id,
        )

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        """The recorded call's completed response as the one event a stream ends with (its deltas
        went out as the run's events while it was made)."""
        response = await self._recorded(args, kwargs)
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=0)

    async def _recorded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response:
        async def call(out: StepStream) -> Any:
            return (await _streamed(self.wrapped.stream_response(*args, **kwargs), out)).model_dump(mode="json")

        recorded = await self.ctx.stream_step(MODEL_STEP, call)
        await self.ctx.complete_message()
        response = Response.model_validate(recorded)
        if response.usage is not None and (response.usage.input_tokens or response.usage.output_tokens):
            await self.ctx.usage(input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens)
        return response


async def _streamed(events: AsyncIterator[Any], out: StepStream) -> Response:
    """Forward a streamed response's text, reasoning and function-call arguments; the completed response."""
    calls: dict[int, tuple[str, str]] = {}  # output index -> (call id, tool name)
    reasoning: list[str] = []
    items: list[Any] = []
    completed: Response | None = None
    async for event in events:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta" and event.delta:
            await out.delta(event.delta)
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            reasoning.append(event.delta)
        elif kind == "response.output_item.added" and getattr(event.item, "type", None) == "function_call":
            calls[event.output_index] = (event.item.call_id, event.item.name)
        elif kind == "response.function_call_arguments.delta" and event.output_index in calls and event.delta:
            call_id, tool = calls[event.output_index]
            await out.tool_arguments(call_id, tool, event.delta)
        elif kind == "response.output_item.done":
            items.append(event.item)
        elif kind == "response.completed":
            completed = event.response
        elif kind in ("response.failed", "response.incomplete", "error", "response.error"):
            raise ModelBehaviorError(f"the model's stream ended with {kind}")
    if completed is None:
        raise ModelBehaviorError("the model's stream ended without a completed response")
    if reasoning:
        await out.thought("".join(reasoning))
    if not completed.output and items:  # some backends give the items only as they are done
        completed.output = items
    return completed


# -- session memory ---------------------------------------------------------------------------


class RunSession(SessionABC):
    """The SDK's session memory for a run in a runengine session: the items of the session's
    earlier runs (as they recorded them), then what this run adds, each change recorded in this
    run's log (a step named SESSION_STEP) so a resumed run sees the same memory."""

    def __init__(self, ctx: RunContext, items: list[Any]) -> None:
        assert ctx.session_id is not None
        self.session_id = ctx.session_id
        self.session_settings = None
        self._ctx = ctx
        self._items = items

    @classmethod
    async def load(cls, ctx: RunContext) -> RunSession:
        items: list[Any] = []
        for _, change in await ctx.session_steps(SESSION_STEP):
            _apply(items, change)
        return cls(ctx, items)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        items = self._items if limit is None else self._items[max(0, len(self._items) - limit) :]
        return copy.deepcopy(items)

    async def add_items(self, items: list[Any]) -> None:
        await self._change({"add": to_jsonable_python(items)})

    async def pop_item(self) -> Any:
        last = self._items[-1] if self._items else None
        await self._change({"pop": True})
        return last

    async def clear_session(self) -> None:
        await self._change({"clear": True})

    async def _change(self, change: dict[str, Any]) -> None:
        _apply(self._items, await self._ctx.step(SESSION_STEP, lambda: change))


def _apply(items: list[Any], change: dict[str, Any]) -> None:
    """One recorded change to a session's items."""
    if "add" in change:
        items.extend(change["add"])
    elif change.get("pop") and items:
        items.pop()
    elif change.get("clear"):
        items.clear()


__all__ = [
    "APPROVAL_NOT_SUPPORTED",
    "GUARDRAIL_TRIPPED",
    "HANDOFF",
    "MAX_TURNS_EXCEEDED",
    "MODEL_STEP",
    "SESSION_STEP",
    "RunSession",
    "agent_from_openai_agents",
    "openai_agents_agent",
]
