"""Sync runs: what one costs the store, and the request path's answers (issue 22, part 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from httpkit import serve
from runengine import observe
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.sqlite import SQLiteStore
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.errors import StoreError
from runengine.status import Status
from tests.kit import count_calls, echo_engine, full_log

ANYIO_BACKENDS = ("asyncio",)  # the SQLite store needs asyncio


class Commits(observe.Observer):
    """Counts the store's commits (each one transaction, so one fsync on SQLite FULL)."""

    def __init__(self) -> None:
        self.count = 0

    def store_commit(self, *, store: str, seconds: float) -> None:
        self.count += 1


@pytest.fixture
def commits() -> Iterator[Commits]:
    counter = observe.add(Commits())
    try:
        yield counter
    finally:
        observe.remove(counter)


@pytest.mark.anyio
async def test_a_sync_run_that_says_one_message_costs_one_commit(tmp_path: Path, commits: Commits) -> None:
    engine = echo_engine(tmp_path / "runs.db")

    async with engine:
        await engine.execute("echo", "warm-up", mode="sync")
        before = commits.count
        state = await engine.execute("echo", "hello", mode="sync")
        assert state.status is Status.COMPLETED and state.output == "hello"
        # run.created commits with the run's first batch: here created, started, the message and the end in one.
        assert commits.count - before == 1
        log = await full_log(engine, state.run_id)
        assert [e.type for e in log] == ["run.created", "run.started", "message.completed", "run.completed"]
        assert await engine.status(state.run_id) == state


@pytest.mark.parametrize("where", ["memory", "sqlite"])
@pytest.mark.anyio
async def test_a_sync_run_of_many_commits_is_answered_without_reading_its_log_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Its writer folded every event it committed: the answer is that state, not the log read and
    folded once more (a run of 100,000 events read them all again at its end)."""
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db") if where == "sqlite" else "memory://")

    @engine.agent("steps")
    async def steps(ctx: RunContext) -> int:
        for i in range(int(ctx.input)):
            await ctx.step("add", lambda i=i: i)  # each step commits before the next one
        await ctx.say("asked")
        return int(await ctx.ask("more?"))

    async with engine:
        loads = count_calls(monkeypatch, RunEngine, "_load")  # a state read from the store and folded
        waiting = await engine.execute("steps", 30, mode="sync")
        assert waiting.status is Status.WAITING_FOR_INPUT and waiting.steps == 30
        assert loads.count == 0
        assert await engine.status(waiting.run_id) == waiting  # the same state the log folds to
        await engine.resume(waiting.run_id, 12)
        ended = await engine.wait(waiting.run_id, after_seq=waiting.last_seq)
        assert ended.status is Status.COMPLETED and ended.output == 12
        assert await engine.status(ended.run_id) == ended

        loads.count = 0
        state = await engine.execute("steps", 40, mode="sync")  # (waits for input again)
        assert loads.count == 0
        assert await engine.status(state.run_id) == state and state.steps == 40


@pytest.mark.anyio
async def test_an_async_run_is_answered_once_its_creation_is_committed(tmp_path: Path, commits: Commits) -> None:
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    go_on = anyio.Event()

    @engine.agent("slow")
    async def slow(ctx: RunContext) -> None:
        await go_on.wait()

    async with engine:
        before = commits.count
        run = await engine.execute("slow", None, mode="async")
        assert commits.count - before == 1  # run.created, alone, before the 202
        assert [e.type for e in await full_log(engine, run.run_id)][:1] == ["run.created"]
        go_on.set()
        assert (await engine.wait(run.run_id)).status is Status.COMPLETED


@pytest.mark.anyio
async def test_a_long_sync_run_is_recorded_within_the_flush_window(tmp_path: Path) -> None:
    """Its run.created waits for no end: it commits within the flush window (listed, cancellable)."""
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    begun = anyio.Event()

    @engine.agent("forever")
    async def forever(ctx: RunContext) -> None:
        begun.set()
        await anyio.sleep_forever()

    async with engine, anyio.create_task_group() as tg:
        answer: list[object] = []

        async def call() -> None:
            answer.append(await engine.execute("forever", None, mode="sync"))

        tg.start_soon(call)
        await begun.wait()
        with anyio.fail_after(5):
            while not (runs := (await engine.list_runs()).runs) or runs[0].status is not Status.RUNNING:
                await anyio.sleep(0.005)
        (row,) = runs
        await engine.cancel(row.run_id)
        with anyio.fail_after(5):
            while not answer:
                await anyio.sleep(0.005)
        assert getattr(answer[0], "status") is Status.CANCELLED


@pytest.mark.anyio
async def test_a_sync_run_whose_first_commit_fails_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    engine = RunEngine(store)

    @engine.agent("echo")
    async def echo(ctx: RunContext) -> None:
        await ctx.say(str(ctx.input))

    async with engine:
        await engine.execute("echo", "warm-up", mode="sync")
        real_append = store.append

        async def failing_append(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        store.append = failing_append  # type: ignore[method-assign]
        try:
            with anyio.fail_after(10), pytest.raises(StoreError):
                await engine.execute("echo", "lost", mode="sync")
        finally:
            store.append = real_append  # type: ignore[method-assign]
        page = await engine.list_runs()
        assert [r.status for r in page.runs] == [Status.COMPLETED]  # only the warm-up


@pytest.mark.anyio
async def test_a_said_message_commits_within_the_flush_window_while_the_agent_goes_on(tmp_path: Path) -> None:
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    said, go_on = anyio.Event(), anyio.Event()

    @engine.agent("talker")
    async def talker(ctx: RunContext) -> None:
        await ctx.say("working on it")
        said.set()
        await go_on.wait()  # no further event: only the flush window commits the message

    async with engine:
        run = await engine.execute("talker", None, mode="async")
        await said.wait()
        with anyio.fail_after(5):
            while not any(e.type == "message.completed" for e in await full_log(engine, run.run_id)):
                await anyio.sleep(0.005)
        go_on.set()
        assert (await engine.wait(run.run_id)).status is Status.COMPLETED


@pytest.mark.server  # real uvicorn on loopback
@pytest.mark.anyio
async def test_post_runs_in_sync_mode_costs_one_commit(tmp_path: Path, commits: Commits) -> None:
    """The native profile makes the run id itself (to cancel the run if the client goes): still one commit."""
    engine = echo_engine(tmp_path / "runs.db")

    async with engine, serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.post("/runs", json={"agent": "echo", "input": "warm-up"})).status_code == 200
        before = commits.count
        response = await http.post("/runs", json={"agent": "echo", "input": "hello", "mode": "sync"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed" and response.json()["output"] == "hello"
        assert commits.count - before == 1
        run_id = response.json()["run_id"]
        assert (await http.get(f"/runs/{run_id}")).json()["status"] == "completed"
        before = commits.count
        response = await http.post("/runs", json={"agent": "echo", "input": "later", "mode": "async"})
        assert response.status_code == 202 and commits.count - before >= 1  # answered once run.created is durable


@pytest.mark.server  # real uvicorn on loopback
@pytest.mark.anyio
async def test_concurrent_sync_requests_run_at_once_and_share_commits(tmp_path: Path, commits: Commits) -> None:
    """Eight clients' sync runs are all running at once (nothing serializes them: each agent waits
    until the eight have started), and their ends share commits (group commit: fewer fsyncs than
    runs); every answered run is in the store, completed."""
    engine = RunEngine(SQLiteStore(tmp_path / "runs.db"))
    clients = 8
    started = 0
    all_started = anyio.Event()

    @engine.agent("together")
    async def together(ctx: RunContext) -> None:
        nonlocal started
        started += 1
        if started == clients:
            all_started.set()
        await all_started.wait()
        await ctx.say(str(ctx.input))

    async with engine, serve(engine_asgi_app(engine)) as url:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            answers: list[dict[str, object]] = []

            async def one(i: int) -> None:
                response = await http.post("/runs", json={"agent": "together", "input": f"hello {i}", "mode": "sync"})
                assert response.status_code == 200, response.text
                answers.append(response.json())

            before = commits.count
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(clients):
                        tg.start_soon(one, i)
            assert commits.count - before < clients
        assert sorted(a["output"] for a in answers) == sorted(f"hello {i}" for i in range(clients))
        for answer in answers:
            assert (await engine.status(str(answer["run_id"]))).status is Status.COMPLETED


@pytest.mark.anyio
async def test_a_run_that_ends_within_its_flush_window_makes_no_flush_task(tmp_path: Path) -> None:
    """The flush loop is a task only once it has work (events still queued a window after the
    first, or a whole batch): a run that ends sooner commits with its end and makes one task, its
    own. A run that waits longer still gets its events committed by the loop (tests above)."""
    import asyncio

    engine = echo_engine(tmp_path / "runs.db", pause=True)

    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[object]] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> asyncio.Task[object]:
        task = asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]
        made.append(task)  # named by the loop once made: anyio names it after its function unless told a name
        return task

    async with engine:
        await engine.execute("echo", "warm-up", mode="sync")
        loop.set_task_factory(factory)
        try:
            for i in range(3):
                assert (await engine.execute("echo", f"hello {i}", mode="sync")).output == f"hello {i}"
            quick = list(made)
            made.clear()
            assert (await engine.execute("pause", None, mode="sync")).status is Status.COMPLETED
        finally:
            loop.set_task_factory(previous)
    names = [task.get_name() for task in quick]
    assert len(names) == 3 and all(name.startswith("run ") for name in names), names  # RunDriver.launch's names
    names = [task.get_name() for task in made]
    assert sum(name.endswith("RunWriter.flush_loop") for name in names) == 1, names  # its message waited past the window


@pytest.mark.anyio
async def test_a_run_ending_beside_others_gives_them_a_turn_to_queue_their_ends(tmp_path: Path) -> None:
    """Group commit: a run that ends while other runs are under way lets the loop turn once before
    its end is queued for the writer, so runs ending at about the same time commit together (the
    runs of 8 clients shared commits less once a run needed fewer turns of the loop); a run
    alone queues its end at once (a sequential run waits for nothing)."""
    import asyncio

    store = SQLiteStore(tmp_path / "runs.db")
    engine = RunEngine(store)
    order: list[str] = []
    forever = anyio.Event()

    @engine.agent("mark")
    async def mark(ctx: RunContext) -> None:
        asyncio.get_running_loop().call_soon(order.append, "a turn of the loop")

    @engine.agent("busy")
    async def busy(ctx: RunContext) -> None:
        await forever.wait()

    real_append = store.append

    async def append(run_id: str, events: Any, *, expected_seq: int) -> None:
        if events[-1].terminal and events[-1].type == "run.completed":
            order.append("end queued")
        await real_append(run_id, events, expected_seq=expected_seq)

    store.append = append  # type: ignore[method-assign]
    async with engine:
        await engine.execute("mark", None)
        alone = list(order)
        order.clear()
        other = await engine.execute("busy", None, mode="async")
        await engine.execute("mark", None)
        beside = list(order)
        forever.set()
        await engine.wait(other.run_id)
    assert alone == ["end queued", "a turn of the loop"]
    assert beside[:2] == ["a turn of the loop", "end queued"]
