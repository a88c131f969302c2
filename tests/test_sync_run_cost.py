"""What a sync run over HTTP costs the server's event loop, counted (issue 22, sync part): the
Python calls of `POST /runs` (mode sync, a trivial agent) through the ASGI app `runengine serve`
builds, with its observers (tracing, metrics) installed, on SQLite; the cancel scopes a run
without a timeout enters; a report to several observers. Counts, not timings: a count is the same
on a busy machine."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio._backends import _asyncio as anyio_asyncio
from prometheus_client import CollectorRegistry

from runengine import observe
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.metrics import PrometheusObserver
from runengine.adapters.server import PLATFORM_RATE
from runengine.adapters.sqlite import SQLiteStore
from runengine.adapters.tracing import TracingObserver
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.status import Status
from kit import CallCount, PythonCalls, count_calls, echo_engine

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio (and `runengine serve` is uvicorn's asyncio)

RUNS = 40

#: Python calls (frames entered, a coroutine's resumption included) per sync run: 1,041 before
#: this bound was set (the flush loop a task in every run, a cancel scope for no timeout, a
#: Python `__getattribute__` per report to the observers, a state frozen for the output, the log
#: context bound by scanning the whole context, a cancel delivered to an empty task group, tracing
#: and counting contexts, a task group per run for its helper tasks, a disconnect timer per
#: request), 765 after; 716 after the fifth round (a decoder and the body's field names made
#: once, one RunState and one anyio Event fewer a run).
MAX_CALLS_PER_RUN = 750


@pytest.fixture
def serve_observers() -> Iterator[None]:
    """The observers `runengine serve` installs (tracing when OpenTelemetry is there, metrics)."""
    installed = [observe.add(TracingObserver()), observe.add(PrometheusObserver(CollectorRegistry()))]
    try:
        yield
    finally:
        for observer in installed:
            observe.remove(observer)


def _request(body: bytes) -> tuple[dict[str, Any], Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/runs", "raw_path": b"/runs", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    return scope, receive


@pytest.mark.anyio
async def test_a_sync_run_over_http_makes_few_python_calls(tmp_path: Path, serve_observers: None) -> None:
    engine = echo_engine(tmp_path / "runs.db")

    app = engine_asgi_app(engine, platform_rate=PLATFORM_RATE)
    answers: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    async def one(i: int) -> None:
        scope, receive = _request(json.dumps({"agent": "echo", "input": f"hello {i}", "mode": "sync"}).encode())
        await app(scope, receive, send)

    calls = PythonCalls()

    async with engine:
        for i in range(10):  # warm-up: imports, caches, the prepared statements
            await one(i)
        answers.clear()
        sys.setprofile(calls)
        try:
            for i in range(RUNS):
                await one(100 + i)
        finally:
            sys.setprofile(None)
    bodies = [json.loads(m["body"]) for m in answers if m["type"] == "http.response.body"]
    assert [b["status"] for b in bodies] == ["completed"] * RUNS
    assert calls.count / RUNS <= MAX_CALLS_PER_RUN, calls.count / RUNS


@pytest.fixture
def scopes_entered(monkeypatch: pytest.MonkeyPatch) -> CallCount:
    """How many anyio cancel scopes were entered (anyio's asyncio backend)."""
    return count_calls(monkeypatch, anyio_asyncio.CancelScope, "__enter__")


@pytest.mark.anyio
async def test_a_run_without_a_timeout_has_no_timeout_scope(tmp_path: Path, scopes_entered: CallCount) -> None:
    """The timeout's cancel scope is entered only for a run that has a timeout."""
    engine = echo_engine(tmp_path / "runs.db")

    async with engine:
        await engine.execute("echo", "warm-up")
        entered: dict[float | None, int] = {}
        for timeout in (None, 30.0):
            before = scopes_entered.count
            state = await engine.execute("echo", "hello", timeout=timeout)
            assert state.status is Status.COMPLETED
            entered[timeout] = scopes_entered.count - before
    assert entered[30.0] == entered[None] + 1, entered


def test_a_report_to_several_observers_is_one_attribute_look_up() -> None:
    """Two observers installed: a report is its fan-out and the two methods, no Python-level
    attribute look-up before them."""
    heard: list[int] = []

    class Listener(observe.Observer):
        def active_runs(self, delta: int) -> None:
            heard.append(delta)

    first, second = observe.add(Listener()), observe.add(Listener())
    calls = PythonCalls()

    try:
        current = observe.current
        sys.setprofile(calls)
        try:
            current.active_runs(1)
        finally:
            sys.setprofile(None)
    finally:
        observe.remove(first)
        observe.remove(second)
    assert heard == [1, 1]
    assert calls.count == 3, calls.count  # the fan-out, the two listeners


@pytest.mark.anyio
async def test_a_run_binds_its_log_context_without_scanning_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's id and agent are bound for its log lines in its task's own context: nothing
    copies and scans the whole context (structlog's `get_contextvars`, which `bound_contextvars`
    calls to restore it afterwards) for a run, and the agent's lines still carry both."""
    import structlog

    scans = 0
    real = structlog.contextvars.get_contextvars

    def counted() -> dict[str, Any]:
        nonlocal scans
        scans += 1
        return real()

    monkeypatch.setattr(structlog.contextvars, "get_contextvars", counted)
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    seen: list[dict[str, Any]] = []

    @engine.agent("echo")
    async def echo(ctx: RunContext) -> None:
        seen.append(real())  # what a log line of the agent is given (merge_contextvars reads it)
        await ctx.say(str(ctx.input))

    async with engine:
        await engine.execute("echo", "warm-up")
        scans = 0
        state = await engine.execute("echo", "hello")
        assert real().get("run_id") is None  # not bound in the caller's context
    assert scans == 0
    assert seen[-1]["run_id"] == state.run_id and seen[-1]["agent"] == "echo"


@pytest.mark.anyio
async def test_a_run_that_started_no_helper_task_cancels_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a task group delivers the cancel through a callback on the loop, even when the
    group has no task: a run whose flush loop (and park watcher) never started cancels nothing at
    its end; one whose flush loop started stops it."""
    cancels = 0
    real = anyio_asyncio.CancelScope.cancel

    def counted(self: Any, *args: Any) -> Any:
        nonlocal cancels
        cancels += 1
        return real(self, *args)

    engine = echo_engine(tmp_path / "runs.db", pause=True)

    async with engine:
        await engine.execute("echo", "warm-up")
        monkeypatch.setattr(anyio_asyncio.CancelScope, "cancel", counted)
        assert (await engine.execute("echo", "hello")).status is Status.COMPLETED
        quick = cancels
        assert (await engine.execute("pause", None)).status is Status.COMPLETED
    assert quick == 0
    assert cancels >= 1


def test_no_trace_to_continue_costs_no_generator() -> None:
    """With no SDK configured and no trace to continue (`runengine serve`'s default), a request's
    and a run's tracing contexts are one shared no-op (the method, enter, exit), not a
    generator-based context manager per request and per run (6 and 17 calls before, 3 and 14)."""
    tracer = TracingObserver()
    calls = PythonCalls()

    made: dict[str, int] = {}
    for name, open_context in (
        ("request", lambda: tracer.request(headers={"host": "h"})),
        ("run_span", lambda: tracer.run_span(run_id="r", agent="a", attempt=1, carrier={})),
    ):
        calls.count = 0
        sys.setprofile(calls)
        try:
            with open_context():
                pass
        finally:
            sys.setprofile(None)
        made[name] = calls.count - 1  # less the lambda
    # run_span also asks OpenTelemetry whether a span is current (11 calls of its own)
    assert made["request"] <= 3 and made["run_span"] <= 14, made


def test_a_committed_batch_is_counted_by_type_without_counter() -> None:
    """`observe.appended` counts a batch's events by type in a plain loop: the report and the
    listener, no Counter constructor and generator per batch."""
    from datetime import datetime, timezone

    from runengine.events import MessageDelta

    counted: list[dict[str, int]] = []

    class Listener(observe.Observer):
        def events_appended(self, *, types: Any, seconds: float) -> None:
            counted.append(dict(types))

    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    batch = [MessageDelta(run_id="r", seq=s, at=at, message_id="m", content="x") for s in range(2, 6)]
    listener = observe.add(Listener())
    calls = PythonCalls()

    try:
        sys.setprofile(calls)
        try:
            observe.appended(batch, lambda: None, 0.001)  # type: ignore[arg-type, return-value]
        finally:
            sys.setprofile(None)
    finally:
        observe.remove(listener)
    assert counted == [{"message.delta": 4}]
    assert calls.count <= 2, calls.count  # appended, the listener


@pytest.mark.anyio
async def test_a_run_that_needs_no_helper_makes_no_task_group(tmp_path: Path, scopes_entered: CallCount) -> None:
    """A run's helper tasks (flush loop, park watcher) start only when needed, in the group that
    runs the run itself: a short run enters no task group of its own. The cancel scopes a sync
    run enters (anyio's task and checkpoints, the run's scope, the shields around its end and
    its commit): 8, 10 with the run's own task group."""
    engine = echo_engine(tmp_path / "runs.db")

    async with engine:
        await engine.execute("echo", "warm-up")
        before = scopes_entered.count
        state = await engine.execute("echo", "hello")
        assert state.status is Status.COMPLETED
    assert scopes_entered.count - before <= 8, scopes_entered.count - before


@pytest.mark.anyio
async def test_a_run_output_from_its_message_freezes_no_state_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that returns nothing ends with its last message as its output, read from the
    fold's messages: no state is frozen for it, nor for its context (which reads only what
    run.created set, from the state the run was launched with): a RunState is built at the
    creation and at the end, 2 a sync run (3 before the context's went)."""
    from runengine.reducer import Fold

    engine = echo_engine(tmp_path / "runs.db")

    async with engine:
        await engine.execute("echo", "warm-up")
        freezes = count_calls(monkeypatch, Fold, "_freeze")
        state = await engine.execute("echo", "hello")
    assert state.output == "hello"
    assert freezes.count == 2, freezes.count


@pytest.mark.anyio
async def test_a_run_nobody_waits_for_makes_no_done_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's "done" is an anyio Event only once someone waits for it: a sync run makes one
    Event fewer (4, not 5: its writer's three and its task's), and a waiter before or after the
    end is still woken."""
    engine = echo_engine(tmp_path / "runs.db")
    async with engine:
        await engine.execute("echo", "warm-up")
        made = count_calls(monkeypatch, anyio.Event, "__new__")
        state = await engine.execute("echo", "hello")
        monkeypatch.undo()
    assert state.status is Status.COMPLETED
    assert made.count <= 4, made.count

    from runengine.driver import RunDone

    done = RunDone()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await done.wait()
        woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "before")
        await anyio.sleep(0.01)
        assert not done.is_set() and woken == []
        done.set()
    assert done.is_set() and woken == ["before"]
    await waiter("after")
    assert woken == ["before", "after"]
    with anyio.CancelScope() as scope:  # a wait on a set one is still a cancellation point
        scope.cancel()
        await done.wait()
        woken.append("not reached")
    assert woken == ["before", "after"]
