"""An OpenAI Agents SDK agent served by runengine: streamed replies, a tool, a handoff, a guardrail
and the session's memory, every model call and tool call recorded in the run's log.

From the repository root:

    $ pip install '.[openai-agents]'
    $ OPENAI_API_KEY=sk-... runengine serve --app examples.openai_agents_agent:engine   # http://127.0.0.1:8000/
    curl -sN localhost:8000/runs -H 'content-type: application/json' \\
         -d '{"agent": "assistant", "input": "What is 17 * 23?", "session_id": "demo", "mode": "stream"}'

The model: OPENAI_MODEL (default gpt-4o-mini) on OpenAI's Responses API. Another OpenAI-compatible
server (Ollama, vLLM, LiteLLM) through its chat completions: OPENAI_BASE_URL=http://localhost:11434/v1
OPENAI_API_KEY=ollama OPENAI_MODEL=llama3.2. The store: RUNENGINE_STORE (default
sqlite:///openai_agents_agent.db). Questions about refunds are handed off to the `billing` agent
(a `custom` event records it); an input naming a password trips the guardrail (the run fails
with code guardrail_tripped). Runs in one session share the SDK's session memory.
"""

from __future__ import annotations

import os
from typing import Any

from agents import Agent, GuardrailFunctionOutput, OpenAIProvider, RunConfig, function_tool, input_guardrail

from runengine import RunEngine
from runengine.demo import default_store_url
from runengine.integrations.openai_agents import agent_from_openai_agents

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


@function_tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@function_tool
def refund(order: str) -> str:
    """Refund an order."""
    return f"order {order} refunded"


@input_guardrail(run_in_parallel=False)
def no_passwords(context: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
    """Stops the run before any model call when the input names a password."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in str(input).lower())


billing = Agent(name="billing", instructions="Refund orders. Be brief.", model=MODEL, tools=[refund])
assistant = Agent(
    name="assistant",
    instructions="Be brief. Use the multiply tool for products. Hand refunds to billing.",
    model=MODEL,
    tools=[multiply],
    handoffs=[billing],
    input_guardrails=[no_passwords],
)

# The Responses API on OpenAI; chat completions on any other OpenAI-compatible server. The
# provider makes its client at the first run, so importing needs no key.
config = RunConfig(model_provider=OpenAIProvider(use_responses="OPENAI_BASE_URL" not in os.environ), tracing_disabled=True)

engine = RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("openai_agents_agent.db"))
engine.agents.add(
    agent_from_openai_agents(assistant, name="assistant", description="An OpenAI Agents SDK agent", run_config=config)
)
