"""OpenAI-compatible chat completions (the official `openai` package) inside a runengine agent.

`chat(ctx, client, ...)` streams one completion into the run: content deltas become
`message.delta`, reasoning deltas (vLLM, Ollama, DeepSeek) a `thought`, the token counts a `usage`.
The call is durable (`ctx.stream_step`): a resumed run gets the recorded reply instead of calling
the model again. `tool_loop(ctx, client, ...)` calls the tools the model asks for through
`ctx.tool_call` (`tool.call` / `tool.result`) and feeds their results back until the model stops.

Errors: the client retries 429s, 5xx and connection errors before any of the reply streams
(`max_retries` of the client, honouring `retry-after`). A call that still fails, or a stream cut
once it began, is recorded as the step's error and raises `StepFailed` in the agent (its code the
`openai` exception's name, e.g. `RateLimitError`); uncaught, it ends the run `run.failed`.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ..context import RunContext, StepStream, current_idempotency_key
from ..errors import StepFailed
from ..limits import DEFAULT_AGENT_HISTORY

try:
    import pydantic
    from openai import AsyncOpenAI
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("runengine.integrations.openai needs the openai package: pip install '.[openai]' from runengine's clone") from exc


#: The tool parameter that receives the call's idempotency key instead of a model argument.
KEY_PARAMETER = "idempotency_key"


@attrs.frozen(kw_only=True)
class Tool:
    """A function the model may call: its name, a description, a JSON schema of its arguments."""

    name: str
    fn: Callable[..., Any]
    parameters: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    description: str = ""
    #: `fn` takes the call's idempotency key as `idempotency_key` (not an argument the model gives).
    wants_key: bool = False

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> Tool:
        """A tool from a typed function: its name, its docstring, a JSON schema of its parameters
        (built by pydantic from the type hints and defaults). A parameter named `idempotency_key` is
        not the model's to give: the call passes `ctx.idempotency_key()` there (docs/durability.md)."""
        hints = typing.get_type_hints(fn)
        params = inspect.signature(fn).parameters
        fields: dict[str, Any] = {
            param.name: (hints.get(param.name, Any), ... if param.default is param.empty else param.default)
            for param in params.values()
            if param.name != KEY_PARAMETER
        }
        schema = pydantic.create_model(f"{fn.__name__}_arguments", **fields).model_json_schema()
        schema.pop("title", None)
        return cls(
            name=name or fn.__name__,
            fn=fn,
            parameters=schema,
            description=description if description is not None else inspect.getdoc(fn) or "",
            wants_key=KEY_PARAMETER in params,
        )

    def call(self, **arguments: Any) -> Any:
        """`fn` with the model's arguments (and the call's idempotency key, if it takes one)."""
        if self.wants_key:
            return self.fn(**{**arguments, KEY_PARAMETER: current_idempotency_key()})  # not the model's to set
        return self.fn(**arguments)

    def definition(self) -> dict[str, Any]:
        """The tool as the chat completions API takes it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


class ToolLoopLimit(Exception):
    """The model kept calling tools for `max_turns` replies."""


async def chat(
    ctx: RunContext,
    client: AsyncOpenAI,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Tool] = (),
    step: str = "openai.chat",
    limit: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One chat completion, streamed into the run and recorded; returns the assistant's reply as an
    API message (`role`, `content`, `tool_calls` when there are some) plus `finish_reason` and `usage`.

    `params` go to `client.chat.completions.create` as they are (temperature, max_tokens, ...).
    `limit`: the engine step limit the call waits for and spends its tokens from (runengine.step_limits)."""

    async def call(stream: StepStream) -> dict[str, Any]:
        request: dict[str, Any] = {"model": model, "messages": list(messages), **params}
        if tools:
            request["tools"] = [tool.definition() for tool in tools]
        response = await client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        return await _assemble(response, stream)

    reply: dict[str, Any] = await ctx.stream_step(step, call, limit=limit)
    await ctx.complete_message()
    usage = reply.get("usage")
    if usage:
        await ctx.usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"], limit=limit)
    return reply


async def _assemble(response: Any, stream: StepStream) -> dict[str, Any]:
    """Read a streamed completion: stream its text out, put its tool-call fragments together."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    async with response:
        async for chunk in response:
            if chunk.usage is not None:
                usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
            for choice in chunk.choices:
                if choice.index != 0:  # only the first choice (n=1 is the normal case)
                    continue
                delta = choice.delta
                thinking = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                if isinstance(thinking, str) and thinking:
                    reasoning.append(thinking)
                if delta.content:
                    if reasoning:  # the reasoning before the answer goes out as one thought
                        await stream.thought("".join(reasoning))
                        reasoning.clear()
                    content.append(delta.content)
                    await stream.delta(delta.content)
                for fragment in delta.tool_calls or ():
                    call = calls.setdefault(fragment.index, {"id": None, "name": "", "arguments": ""})
                    if fragment.id:
                        call["id"] = fragment.id
                    if fragment.function is not None:
                        call["name"] += fragment.function.name or ""
                        call["arguments"] += fragment.function.arguments or ""
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
    if reasoning:
        await stream.thought("".join(reasoning))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        reply["tool_calls"] = [
            {
                "id": call["id"] or f"call_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for index, call in sorted(calls.items())
        ]
    reply["finish_reason"] = finish_reason
    reply["usage"] = usage
    return reply


async def tool_loop(
    ctx: RunContext,
    client: AsyncOpenAI,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Tool] = (),
    max_turns: int = 20,
    **params: Any,
) -> dict[str, Any]:
    """Chat until the model answers without calling a tool; returns that last reply.

    Each tool call is `ctx.tool_call(name, arguments, fn, call_id=...)`: recorded, not made again on
    a resumed run. A tool that raises (or one the model made up, or arguments that are not JSON)
    is reported to the model as an error result, so it can recover; it does not end the run.
    `params` go to `chat` (a step `limit=` among them: every turn's call waits for it)."""
    toolbox = {tool.name: tool for tool in tools}
    conversation = [dict(message) for message in messages]
    for turn in range(max_turns):
        reply = await chat(ctx, client, model=model, messages=conversation, tools=tools, step=f"openai.chat.{turn}", **params)
        conversation.append(api_message(reply))
        if not reply.get("tool_calls"):
            return reply
        for call in reply["tool_calls"]:
            result = await _call_tool(ctx, toolbox, call)
            conversation.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise ToolLoopLimit(f"the model still called tools after {max_turns} replies")


async def _call_tool(ctx: RunContext, toolbox: Mapping[str, Tool], call: Mapping[str, Any]) -> str:
    """Run one tool call through the run's log; its result (or error) as the text the model reads."""
    name = call["function"]["name"]
    raw = call["function"]["arguments"] or "{}"
    try:
        arguments = json.loads(raw)
        problem = None if isinstance(arguments, dict) else "the arguments are not a JSON object"
    except ValueError:
        arguments, problem = {"arguments": raw}, "the arguments are not valid JSON"
    if not isinstance(arguments, dict):
        arguments = {"arguments": arguments}
    tool = toolbox.get(name)
    if problem is None and tool is None:
        problem = f"there is no tool named {name!r}"
    fn = tool.call if tool is not None and problem is None else _refusal(problem or "")
    try:
        taken = {recorded.call_id for recorded in ctx.state.tool_calls}  # some servers reuse ids across replies
        output = await ctx.tool_call(name, arguments, fn, call_id=None if call["id"] in taken else call["id"])
    except StepFailed as failed:
        return json.dumps({"error": failed.error_message})
    return output if isinstance(output, str) else json.dumps(output)


def _refusal(problem: str) -> Callable[..., Any]:
    def refuse(**_: Any) -> Any:
        raise ValueError(problem)

    return refuse


def api_message(reply: Mapping[str, Any]) -> dict[str, Any]:
    """A reply from `chat` as the message to send back in the conversation."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if reply.get("tool_calls"):
        message["tool_calls"] = reply["tool_calls"]
    return message


async def session_messages(ctx: RunContext, *, limit: int = DEFAULT_AGENT_HISTORY) -> list[dict[str, Any]]:
    """The session's earlier turns (the latest `limit`: `ctx.history(limit=)`) as chat messages:
    inputs as user messages (JSON text when not a string), replies as assistant messages."""
    messages: list[dict[str, Any]] = []
    for turn in await ctx.history(limit=limit):
        content = turn.content if isinstance(turn.content, str) else json.dumps(turn.content)
        messages.append({"role": "user" if turn.role == "user" else "assistant", "content": content})
    return messages


__all__ = ["Tool", "ToolLoopLimit", "api_message", "chat", "session_messages", "tool_loop"]
