"""A Pydantic AI agent served by runengine: streamed replies, a tool, and a tool that waits for approval.

From the repository root:

    $ pip install '.[pydantic-ai,openai]'
    $ OPENAI_API_KEY=sk-... runengine serve --app examples.pydantic_ai_agent:engine   # http://127.0.0.1:8000/
    curl -sN localhost:8000/runs -H 'content-type: application/json' \\
         -d '{"agent": "assistant", "input": "Roll a die for me", "session_id": "demo", "mode": "stream"}'

The model: PYDANTIC_AI_MODEL (default openai:gpt-4o-mini; any Pydantic AI model name, e.g.
anthropic:claude-sonnet-4-5 with its key; `test` runs offline on Pydantic AI's TestModel). Ollama:
OLLAMA_BASE_URL=http://localhost:11434/v1 PYDANTIC_AI_MODEL=ollama:llama3.2; vLLM or another
OpenAI-compatible server: OPENAI_BASE_URL=... PYDANTIC_AI_MODEL=openai-chat:<model>. The store:
RUNENGINE_STORE (default sqlite:///pydantic_ai_agent.db). When the model calls `forget_session`,
the run waits for input: `POST /runs/{id}/input` with `{"content": true}` approves it.
"""

from __future__ import annotations

import os
import random

from pydantic_ai import Agent

from runengine import RunEngine
from runengine.demo import default_store_url
from runengine.integrations.pydantic_ai import agent_from_pydantic_ai

agent = Agent(
    os.environ.get("PYDANTIC_AI_MODEL", "openai:gpt-4o-mini"),
    instructions="Be brief. Use the tools when they help.",
    defer_model_check=True,  # the model (and its API key) is needed at the first run, not at import
)


@agent.tool_plain
def roll_die(sides: int = 6) -> int:
    """Roll a die with `sides` sides."""
    return random.randint(1, sides)


@agent.tool_plain(requires_approval=True)
def forget_session(reason: str) -> str:
    """Forget the conversation so far (asks the user first)."""
    return f"forgotten: {reason}"


engine = RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("pydantic_ai_agent.db"))
engine.agents.add(agent_from_pydantic_ai(agent, name="assistant", description="A Pydantic AI agent with tools"))
