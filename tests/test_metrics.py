"""Prometheus metrics: /metrics scraped over real HTTP after a run of each kind."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runengine import RunEngine, observe
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.metrics import PrometheusObserver, install_metrics
from runengine.adapters.server import build_app
from runengine.context import RunContext
from httpkit import serve


ANYIO_BACKENDS = ("asyncio",)  # uvicorn


@pytest.fixture
def metrics() -> Iterator[PrometheusObserver]:
    observer = install_metrics()
    yield observer
    observe.remove(observer)


def agents(engine: RunEngine) -> RunEngine:
    @engine.agent("ok")
    async def ok(ctx: RunContext) -> str:
        await ctx.delta("hello ")
        await ctx.delta("world")
        return await ctx.tool_call("add", {"a": 1, "b": 2}, lambda a, b: a + b)

    @engine.agent("boom")
    async def boom(ctx: RunContext) -> None:
        raise RuntimeError("the agent broke")

    @engine.agent("slow")
    async def slow(ctx: RunContext) -> None:
        await ctx.say("started")
        await anyio.sleep_forever()

    @engine.agent("asks")
    async def asks(ctx: RunContext) -> object:
        return await ctx.ask({"question": "continue?"})

    return engine


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.server
@pytest.mark.anyio
async def test_metrics_after_a_run_of_each_kind(metrics: PrometheusObserver) -> None:
    engine = agents(RunEngine("memory://"))
    async with serve(engine_asgi_app(engine, metrics=metrics)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.post("/runs", json={"agent": "ok", "input": None})).json()["status"] == "completed"
        assert (await http.post("/runs", json={"agent": "boom", "input": None})).json()["status"] == "failed"
        waiting = (await http.post("/runs", json={"agent": "asks", "input": None})).json()
        assert waiting["status"] == "waiting_for_input"
        slow = (await http.post("/runs", json={"agent": "slow", "input": None, "mode": "async"})).json()["run_id"]
        async with aconnect_sse(http, "GET", f"/runs/{slow}/events") as source:
            async for sse in source.aiter_sse():
                if sse.event == "message.completed":
                    break  # the run is under way, and this stream is open
            during = samples((await http.get("/metrics")).text)
        assert (await http.post(f"/runs/{slow}/cancel", json={})).json()["status"] == "cancelled"
        response = await http.get("/metrics")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(during, "runengine_sse_subscribers") == 1
    assert value(during, "runengine_runs_active") == 2  # the waiting run and the slow one
    assert value(found, "runengine_sse_subscribers") == 0
    assert value(found, "runengine_runs_active") == 1  # the waiting run stays
    for agent in ("ok", "boom", "asks", "slow"):
        assert value(found, "runengine_runs_started_total", agent=agent, resumed="false") == 1
    assert value(found, "runengine_runs_ended_total", agent="ok", status="completed") == 1
    assert value(found, "runengine_runs_ended_total", agent="boom", status="failed") == 1
    assert value(found, "runengine_runs_ended_total", agent="slow", status="cancelled") == 1
    assert value(found, "runengine_runs_ended_total", agent="asks", status="completed") == 0
    assert value(found, "runengine_run_duration_seconds_count", agent="ok", status="completed") == 1
    assert value(found, "runengine_events_appended_total", type="run.created") == 4
    assert value(found, "runengine_events_appended_total", type="run.waiting_for_input") == 1
    assert value(found, "runengine_events_appended_total", type="message.delta") == 2
    assert value(found, "runengine_events_appended_total", type="tool.call") == 1
    assert value(found, "runengine_events_appended_total", type="run.cancelled") == 1
    assert value(found, "runengine_append_seconds_count") >= 8


@pytest.mark.anyio
async def test_metrics_are_served_only_when_asked() -> None:
    engine = agents(RunEngine("memory://"))
    routes = set(build_app(engine).routes())
    assert ("GET", "/metrics") not in routes
    assert ("GET", "/healthz") in routes


@pytest.mark.anyio
async def test_an_sqlite_store_reports_its_commits(metrics: PrometheusObserver, tmp_path: object) -> None:
    engine = agents(RunEngine(f"sqlite:///{tmp_path}/m.db"))
    async with engine:
        await engine.execute("ok")
    found = samples(metrics.exposition().decode())
    assert value(found, "runengine_store_commit_seconds_count", store="sqlite") >= 1


@pytest.mark.anyio
@pytest.mark.postgres
async def test_queue_depth_and_lease_expiries_on_postgresql(metrics: PrometheusObserver, pg_schema_url: str) -> None:
    engine = agents(RunEngine(pg_schema_url))  # accepts runs; no worker here executes them
    async with serve(engine_asgi_app(engine, metrics=metrics)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(3):
            assert (await http.post("/runs", json={"agent": "ok", "input": None, "mode": "async"})).status_code == 202
        queued = samples((await http.get("/metrics")).text)
        queue = engine.queue
        assert queue is not None
        (held,) = await queue.claim("lost-worker", agents=["ok"], limit=1, lease=0.05)
        taken: list[object] = []
        with anyio.fail_after(10):
            while not taken:  # the lost worker never renews: its lease expires and another takes the run
                taken = [lease for lease in await queue.claim("w2", agents=["ok"], limit=3, lease=30) if lease.run_id == held.run_id]
                await anyio.sleep(0.02)
        claimed = samples((await http.get("/metrics")).text)
    assert value(queued, "runengine_queue_runs", state="queued") == 3
    assert value(queued, "runengine_queue_runs", state="claimed") == 0
    assert value(claimed, "runengine_queue_runs", state="claimed") == 3
    assert value(claimed, "runengine_lease_expiries_total") == 1


def flow_agents(engine: RunEngine, release: anyio.Event) -> RunEngine:
    @engine.agent("per_user", concurrency=1, concurrency_key=lambda input, metadata: metadata.get("user"))
    async def per_user(ctx: RunContext) -> None:
        await release.wait()

    return engine


@pytest.mark.server
@pytest.mark.anyio
async def test_flow_queue_depth_and_wait_time_per_agent_and_key(metrics: PrometheusObserver) -> None:
    release = anyio.Event()
    engine = flow_agents(RunEngine("memory://"), release)
    async with serve(engine_asgi_app(engine, metrics=metrics)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        runs = []
        for user in ("ann", "ann", "ann", "bob", "bob"):
            body = {"agent": "per_user", "mode": "async", "metadata": {"user": user}}
            runs.append((await http.post("/runs", json=body)).json()["run_id"])
        await anyio.sleep(0.05)
        during = samples((await http.get("/metrics")).text)
        release.set()
        with anyio.fail_after(10):
            for run_id in runs:
                await engine.wait(run_id)
        after = samples((await http.get("/metrics")).text)
    assert value(during, "runengine_flow_waiting_runs", agent="per_user", key="ann") == 2
    assert value(during, "runengine_flow_waiting_runs", agent="per_user", key="bob") == 1
    assert value(after, "runengine_flow_waiting_runs", agent="per_user", key="ann") == 0
    assert value(after, "runengine_flow_wait_seconds_count", agent="per_user", key="ann") == 3
    assert value(after, "runengine_flow_wait_seconds_count", agent="per_user", key="bob") == 2
    assert value(after, "runengine_flow_wait_seconds_sum", agent="per_user", key="ann") > 0  # two waited in line


@pytest.mark.anyio
@pytest.mark.postgres
async def test_flow_queue_depth_per_agent_and_key_on_postgresql(metrics: PrometheusObserver, pg_schema_url: str) -> None:
    engine = flow_agents(RunEngine(pg_schema_url), anyio.Event())  # accepts runs; no worker here executes them
    async with serve(engine_asgi_app(engine, metrics=metrics)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for user in ("ann", "ann", "bob"):
            body = {"agent": "per_user", "mode": "async", "metadata": {"user": user}}
            assert (await http.post("/runs", json=body)).status_code == 202
        queued = samples((await http.get("/metrics")).text)
        queue = engine.queue
        assert queue is not None
        spec = engine.agents.get("per_user").flow
        assert spec is not None
        leases = await queue.claim("w", agents=["per_user"], limit=5, lease=30, flow={"per_user": spec})
        claimed = samples((await http.get("/metrics")).text)
    assert len(leases) == 2  # one per key: the second of ann's waits for her slot
    assert value(queued, "runengine_flow_waiting_runs", agent="per_user", key="ann") == 2
    assert value(queued, "runengine_flow_waiting_runs", agent="per_user", key="bob") == 1
    assert value(claimed, "runengine_flow_waiting_runs", agent="per_user", key="ann") == 1
    assert value(claimed, "runengine_flow_waiting_runs", agent="per_user", key="bob") == 0
    assert value(claimed, "runengine_flow_wait_seconds_count", agent="per_user", key="ann") == 1


@pytest.mark.anyio
async def test_the_labelled_metrics_of_each_run_are_looked_up_once(metrics: PrometheusObserver, monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client checks and locks on every labels() (issue 22: several per run): the
    observer keeps each labelled child, so ten runs of one agent look each one up once, and still
    count every run."""
    looked_up: list[tuple[str, tuple[str, ...]]] = []
    for metric in (metrics.runs_started_metric, metrics.runs_ended_metric, metrics.run_duration_metric,
                   metrics.events_appended_metric, metrics.commit_seconds_metric):
        real = metric.labels

        def counted(*labels: str, _real: object = real, _name: str = metric._name) -> object:
            looked_up.append((_name, labels))
            return _real(*labels)  # type: ignore[operator]

        monkeypatch.setattr(metric, "labels", counted)
    async with agents(RunEngine("memory://")) as engine:
        for _ in range(10):
            assert (await engine.execute("ok", None)).status.value == "completed"
    assert len(looked_up) == len(set(looked_up))
    found = samples(generate_latest(metrics.registry).decode())
    assert found[("runengine_runs_ended_total", frozenset({("agent", "ok"), ("status", "completed")}))] == 10
