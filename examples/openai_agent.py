"""A chat agent on any OpenAI-compatible API (OpenAI, Ollama, vLLM, LiteLLM), with a tool, served by runengine.

From the repository root:

    $ pip install '.[openai]'
    $ OPENAI_API_KEY=sk-... runengine serve --app examples.openai_agent:engine   # http://127.0.0.1:8000/
    curl -sN localhost:8000/runs -H 'content-type: application/json' \\
         -d '{"agent": "assistant", "input": "What is 17 * 23?", "session_id": "demo", "mode": "stream"}'

Another server: OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama OPENAI_MODEL=llama3.2
(Ollama). The store: RUNENGINE_STORE (default sqlite:///openai_agent.db). Each reply streams as
message.delta events; the model call and the tool calls are recorded, so a run resumed after a
restart does not call them again. Runs in one session see the earlier turns (ctx.history()).
"""

from __future__ import annotations

import os
from functools import cache

from openai import AsyncOpenAI

from runengine import RunEngine
from runengine.demo import default_store_url
from runengine.integrations.openai import Tool, session_messages, tool_loop

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

engine = RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("openai_agent.db"))


@cache
def client() -> AsyncOpenAI:
    """Made at the first run (reads OPENAI_API_KEY and OPENAI_BASE_URL), so importing needs no key."""
    return AsyncOpenAI()


def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


TOOLS = [Tool.from_function(multiply)]


@engine.agent("assistant", description="Chat on an OpenAI-compatible model, with a multiply tool")
async def assistant(ctx):
    messages = [{"role": "system", "content": "Be brief. Use the multiply tool for products."}]
    messages += await session_messages(ctx)
    messages.append({"role": "user", "content": str(ctx.input)})
    reply = await tool_loop(ctx, client(), model=MODEL, messages=messages, tools=TOOLS)
    return reply["content"]
