"""Deterministic demo agents: no LLM, no network, the same events every time.

    engine = RunEngine("sqlite:///runengine.db")
    register_demo_agents(engine)

- `echo` streams its input back, token by token.
- `pizza` thinks, calls a (local) menu tool, gets its result, then answers.
- `approval` asks for input, waits for it, then resumes with what it got.

`delay` is the pause between streamed tokens (seconds), so a person watching the
live page sees the stream; tests pass 0.
"""

from __future__ import annotations

import re
from typing import Any

import anyio

from .context import RunContext
from .engine import RunEngine
from .stores import store_schemes
from .wire import dumps


MENU: dict[str, float] = {"margherita": 8.5, "marinara": 7.0, "quattro formaggi": 10.0, "diavola": 9.5}


def default_store_url(path: str = "runengine.db") -> str:
    """`sqlite:///<path>` when the SQLite store is installed, else `memory://`."""
    return f"sqlite:///{path}" if "sqlite" in store_schemes() else "memory://"


def tokens(text: str) -> list[str]:
    """Split text into tokens that join back to exactly the text (each word keeps its following space)."""
    return re.findall(r"\S+\s*|\s+", text)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return dumps(value)


async def stream_text(ctx: RunContext, text: str, delay: float) -> None:
    async with ctx.message() as message:
        for token in tokens(text):
            await message.delta(token)
            if delay:
                await anyio.sleep(delay)


def register_demo_agents(engine: RunEngine, *, delay: float = 0.05) -> RunEngine:
    """Register `echo`, `pizza` and `approval` on `engine` (returns the engine)."""

    @engine.agent("echo", description="Streams its input back, token by token.")
    async def echo(ctx: RunContext) -> None:
        await stream_text(ctx, as_text(ctx.input), delay)

    @engine.agent("pizza", description="Thinks, calls a menu tool, then recommends a pizza.")
    async def pizza(ctx: RunContext) -> dict[str, Any]:
        wish = as_text(ctx.input) or "something classic"
        await ctx.thought(f"The customer asks for: {wish}.")
        await ctx.thought("I should look at the menu before recommending anything.")
        menu = await ctx.tool_call("get_menu", {"restaurant": "Da Michele"}, lambda restaurant: dict(MENU))
        choice = _pick(wish, menu)
        await ctx.thought(f"{choice} fits best, at {menu[choice]:.2f} EUR.")
        await stream_text(ctx, f"I recommend the {choice} ({menu[choice]:.2f} EUR). Buon appetito!", delay)
        await ctx.usage(input_tokens=len(tokens(wish)) + 12, output_tokens=11)
        return {"pizza": choice, "price": menu[choice]}

    @engine.agent("approval", description="Asks for approval, waits for your input, then resumes.")
    async def approval(ctx: RunContext) -> dict[str, Any]:
        action = as_text(ctx.input) or "deploy to production"
        await stream_text(ctx, f"I am about to {action}.", delay)
        answer = await ctx.ask({"question": f"Approve: {action}?", "options": ["yes", "no"]})
        approved = _approves(answer)
        verdict = "Approved: done." if approved else "Not approved: nothing was done."
        await stream_text(ctx, verdict, delay)
        return {"approved": approved, "answer": answer}

    return engine


def _approves(answer: Any) -> bool:
    """A yes: a word such as "yes", or an approval response ({"approved": true}, as /ai gives one)."""
    if isinstance(answer, dict) and isinstance(answer.get("approved"), bool):
        return answer["approved"]
    return as_text(answer).strip().lower() in ("yes", "y", "approve", "approved", "ok")


def _pick(wish: str, menu: dict[str, float]) -> str:
    lowered = wish.lower()
    for name in menu:
        if name in lowered:
            return name
    if "spicy" in lowered or "hot" in lowered:
        return "diavola"
    if "cheese" in lowered:
        return "quattro formaggi"
    if "cheap" in lowered or "vegan" in lowered:
        return "marinara"
    return "margherita"
