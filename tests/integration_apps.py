"""Agents of the LLM integrations' process-kill tests, served with `runengine serve --app
integration_apps:NAME` (tests/ is the working directory). As in durable_apps, the store URL comes
from RUNENGINE_DURABLE_STORE and each model request and tool execution is counted in the SQLite
file RUNENGINE_DURABLE_COUNTERS (a transaction of its own), so the test can tell how often each
really happened across the kill. RUNENGINE_KILL_MARKER is a file that does not exist yet: the
agent creates it and SIGKILLs its own process at the point the test is about."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from durable_apps import bump, counters_path, store_url
from runengine.engine import RunEngine
from runengine.integrations.pydantic_ai import agent_from_pydantic_ai


def kill_once() -> None:
    """SIGKILL this process, the first time only (the marker file says it happened)."""
    marker = Path(os.environ["RUNENGINE_KILL_MARKER"])
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def _turn(messages: list[ModelMessage]) -> str:
    """The user prompt of the turn being answered: the last one in the messages."""
    return [p.content for m in messages for p in m.parts if isinstance(p, UserPromptPart)][-1]


def _returns(messages: list[ModelMessage], tool: str) -> list[Any]:
    return [p.content for m in messages for p in m.parts if isinstance(p, ToolReturnPart) and p.tool_name == tool]


async def _memo_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
    """Turn "store": calls `secret`, then says it stored something (not what). Turn "work": calls
    `work`, and its second request is where the process is killed, once. Turn "recall": answers with
    the secret, which only turn 1's tool return holds, and fails the run when it is not there."""
    turn = _turn(messages)
    bump(counters_path(), turn, "model")
    this_turn = messages[max(i for i, m in enumerate(messages) if any(isinstance(p, UserPromptPart) for p in m.parts)) :]
    if turn == "recall":
        secrets = _returns(messages, "secret")
        if not secrets:
            raise AssertionError("turn 1's tool result is not in the model's messages")
        yield f"the secret is {secrets[0]}"
    elif not _returns(this_turn, turn_tool := {"store": "secret", "work": "work"}[turn]):
        yield {0: DeltaToolCall(name=turn_tool, json_args="{}", tool_call_id=f"call_{turn}")}
    else:
        if turn == "work":
            kill_once()  # the tool's result is recorded: this request is in flight at the kill
        yield "stored." if turn == "store" else "worked."


def pydantic_memo_engine() -> RunEngine:
    """`runengine serve --app integration_apps:pydantic_memo_engine`."""
    agent = Agent(FunctionModel(stream_function=_memo_model))

    @agent.tool_plain
    def secret() -> str:
        bump(counters_path(), "store", "secret")
        return uuid.uuid4().hex  # only the recorded result can be told again

    @agent.tool_plain
    def work() -> str:
        bump(counters_path(), "work", "work")
        return "done"

    engine = RunEngine(store_url())
    engine.agents.add(agent_from_pydantic_ai(agent, name="memo"))
    return engine
