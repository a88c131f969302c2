"""The `digest` agent in three codes, for the patching and replay-checker tests (issue 26):

- "old": retrieve, summarize, publish;
- "changed": a `rank` step inserted before summarize (replaying an old run that got past
  summarize diverges there);
- "patched": the same change behind `ctx.patched("rank")`, which old runs replay.

Used in process (`register`) and served by `runengine serve|check-replay --app patching_apps:NAME`
(tests/ is the working directory there; the store URL comes from RUNENGINE_PATCHING_STORE). The
served old code blocks inside its `publish` step, where the test kills its process.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from runengine.context import RunContext
from runengine.engine import RunEngine

CODES = ("old", "changed", "patched")
PATCH = "rank"


def register(
    engine: RunEngine, code: str, effects: list[str] | None = None, *, blocks: Callable[[str], Awaitable[None]] | None = None
) -> RunEngine:
    """`digest` in `code`; each step function appends its name to `effects` and, with `blocks`,
    awaits `blocks(name)` first (a test holds a step in flight there)."""
    assert code in CODES

    def work(name: str, result: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any) -> Any:
            if blocks is not None:
                await blocks(name)
            if effects is not None:
                effects.append(name)
            return result(*args)

        return run

    retrieve = work("retrieve", lambda topic: [f"{topic}-1", f"{topic}-2"])
    rank = work("rank", lambda docs: sorted(docs, reverse=True))
    summarize = work("summarize", lambda docs: " + ".join(docs))
    publish = work("publish", lambda summary: f"published {summary}")

    @engine.agent("digest", description=f"retrieve, summarize, publish ({code} code)")
    async def digest(ctx: RunContext) -> dict[str, Any]:
        docs = await ctx.step("retrieve", retrieve, ctx.input or "topic")
        if code == "changed" or (code == "patched" and await ctx.patched(PATCH)):
            docs = await ctx.step("rank", rank, docs)
        summary = await ctx.step("summarize", summarize, docs)
        return {"published": await ctx.step("publish", publish, summary)}

    return engine


def _store_url() -> str:
    return os.environ["RUNENGINE_PATCHING_STORE"]


async def _publish_never_returns(name: str) -> None:
    if name == "publish":
        await anyio.sleep_forever()


def old_engine() -> RunEngine:
    """The old code, served: its runs stay inside `publish` until the process is killed."""
    return register(RunEngine(_store_url()), "old", blocks=_publish_never_returns)


def changed_engine() -> RunEngine:
    return register(RunEngine(_store_url()), "changed")


def patched_engine() -> RunEngine:
    return register(RunEngine(_store_url()), "patched")
