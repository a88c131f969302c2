"""RunContext: what an agent function receives. Every method records an event of the run."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog

from .errors import InvalidRunState
from .events import (
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    RunInput,
    RunWaitingForInput,
    Thought,
    ToolCall,
    ToolResult,
    Usage,
)
from .ports import EventStore, SessionRecord
from .state import RunState
from .writer import RunEndedElsewhere, RunWriter


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class RunContext:
    """The run as its agent sees it. Create one only through the engine."""

    def __init__(
        self,
        writer: RunWriter,
        store: EventStore,
        clock: Callable[[], datetime],
        session: SessionRecord | None,
    ) -> None:
        self._writer = writer
        self._store = store
        self._clock = clock
        state = writer.state
        self.run_id: str = state.run_id
        self.agent: str = state.agent
        self.input: Any = state.input
        self.session_id: str | None = state.session_id
        self.metadata: dict[str, Any] = state.metadata
        self.owner: str | None = state.owner
        #: The session this run belongs to, with its metadata, when there is one.
        self.session = session
        self.log = structlog.get_logger("runengine.agent").bind(run_id=self.run_id, agent=self.agent)

    @property
    def state(self) -> RunState:
        """The run so far, including events still being committed."""
        return self._writer.state

    @property
    def attempt(self) -> int:
        return self._writer.state.attempt

    async def _add(self, build: Callable[[int], Event], durable: bool = True) -> Event:
        return await self._writer.add(build, durable=durable)

    # -- messages -------------------------------------------------------------

    async def delta(self, content: str, *, message_id: str | None = None) -> None:
        """Stream a piece of the assistant's message (opens a message if none is open)."""
        if not isinstance(content, str):
            raise TypeError(f"delta content must be str, not {type(content).__name__}")
        if message_id is None:
            message_id = self._writer.fold.open_message_id or new_id("msg")
        await self._writer.add_delta(message_id, content, self._clock())

    async def complete_message(
        self, *, role: str = "assistant", content: str | None = None, durable: bool = True
    ) -> str | None:
        """Close the message being streamed, if any; returns its id."""
        partial = self.state.partial
        if partial is None:
            return None
        text = partial.content if content is None else content
        await self._add(
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=partial.message_id, role=role, content=text
            ),
            durable,
        )
        return partial.message_id

    async def say(self, content: str, *, role: str = "assistant") -> str:
        """Record a whole message at once (no deltas)."""
        await self.complete_message()
        message_id = new_id("msg")
        await self._add(
            lambda seq: MessageCompleted(
                run_id=self.run_id, seq=seq, at=self._clock(), message_id=message_id, role=role, content=content
            )
        )
        return message_id

    @asynccontextmanager
    async def message(self, *, role: str = "assistant") -> AsyncIterator[MessageStream]:
        """`async with ctx.message() as m: await m.delta("...")` streams one message and completes it."""
        await self.complete_message()
        stream = MessageStream(self, new_id("msg"))
        yield stream
        if self.state.partial is not None and self.state.partial.message_id == stream.message_id:
            await self.complete_message(role=role)
        elif not stream.started:
            await self._add(
                lambda seq: MessageCompleted(
                    run_id=self.run_id, seq=seq, at=self._clock(), message_id=stream.message_id, role=role, content=""
                )
            )

    # -- the rest of what an agent does ---------------------------------------

    async def thought(self, content: str, *, source: str | None = None) -> None:
        await self._add(
            lambda seq: Thought(run_id=self.run_id, seq=seq, at=self._clock(), content=content, source=source),
            durable=False,
        )

    async def tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> Any:
        """Record a tool call, run `fn(**arguments)` (sync or async), record its result, return it.

        If `fn` raises, the error is recorded as the tool's result and the exception re-raised.
        """
        args = dict(arguments or {})
        cid = call_id or new_id("call")
        await self._add(
            lambda seq: ToolCall(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, name=name, arguments=args)
        )
        if fn is None:
            return None
        try:
            result = fn(**args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            error = ErrorInfo(code="tool_error", message=f"{type(exc).__name__}: {exc}")
            await self._add(
                lambda seq: ToolResult(run_id=self.run_id, seq=seq, at=self._clock(), call_id=cid, error=error)
            )
            raise
        await self.tool_result(cid, result)
        return result

    async def tool_result(self, call_id: str, output: Any = None, *, error: ErrorInfo | None = None) -> None:
        """Record the result of a tool call made with `tool_call(name, arguments)` and no fn."""
        await self._add(
            lambda seq: ToolResult(
                run_id=self.run_id, seq=seq, at=self._clock(), call_id=call_id, output=output, error=error
            )
        )

    async def ask(self, request: Any = None) -> Any:
        """Wait for input: records run.waiting_for_input, returns what `engine.resume` gives."""
        await self.complete_message()
        waiting = await self._add(
            lambda seq: RunWaitingForInput(run_id=self.run_id, seq=seq, at=self._clock(), request=request)
        )
        seen = waiting.seq
        while True:
            await self._store.wait(self.run_id, after_seq=seen)
            news = await self._store.read(self.run_id, after_seq=seen)
            if not news:
                continue
            await self._writer.accept(news)
            seen = news[-1].seq
            for event in news:
                if isinstance(event, RunInput):
                    return event.content
                if event.terminal:
                    raise RunEndedElsewhere(event)

    async def custom(self, name: str, data: Any = None) -> None:
        await self._add(
            lambda seq: Custom(run_id=self.run_id, seq=seq, at=self._clock(), name=name, data=data), durable=False
        )

    async def usage(self, *, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        await self._add(
            lambda seq: Usage(
                run_id=self.run_id,
                seq=seq,
                at=self._clock(),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
            ),
            durable=False,
        )

    async def flush(self) -> None:
        """Make everything recorded so far durable now (normally done for you)."""
        await self._writer.flush()


class MessageStream:
    """One message being streamed inside `async with ctx.message()`."""

    def __init__(self, ctx: RunContext, message_id: str) -> None:
        self._ctx = ctx
        self.message_id = message_id
        self.started = False

    async def delta(self, content: str) -> None:
        self.started = True
        await self._ctx.delta(content, message_id=self.message_id)


AgentFn = Callable[[RunContext], Awaitable[Any]]

__all__ = ["RunContext", "MessageStream", "AgentFn", "InvalidRunState", "new_id"]
