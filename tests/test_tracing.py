"""OpenTelemetry: a span per run execution, child spans per tool call and step, the trace of the
request that created the run continued wherever the run executes. The real SDK, in memory."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from httpkit import serve
from runengine import RunEngine, observe
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.tracing import TracingObserver
from runengine.context import RunContext
from runengine.errors import StepFailed
from runengine.worker import WorkerOptions

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


ANYIO_BACKENDS = ("asyncio",)  # uvicorn, asyncpg


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = observe.add(TracingObserver(provider))
    yield exporter
    observe.remove(tracer)
    provider.shutdown()


def agents(engine: RunEngine) -> RunEngine:
    @engine.agent("tools")
    async def tools(ctx: RunContext) -> int:
        total = await ctx.tool_call("add", {"a": 1, "b": 2}, lambda a, b: a + b)
        return await ctx.step("double", lambda: total * 2)

    @engine.agent("broken_tool")
    async def broken_tool(ctx: RunContext) -> None:
        try:
            await ctx.step("fetch", lambda: {}["missing"])
        except StepFailed:
            pass
        raise RuntimeError("gave up")

    return engine


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(found) == 1, [span.name for span in exporter.get_finished_spans()]
    return found[0]


@pytest.mark.server
@pytest.mark.anyio
async def test_a_request_traceparent_becomes_the_runs_parent(spans: InMemorySpanExporter) -> None:
    engine = agents(RunEngine("memory://"))
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    async with serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        run = (await http.post("/runs", json={"agent": "tools", "input": None}, headers=headers)).json()
        log = (await http.get(f"/runs/{run['run_id']}/events")).json()["events"]
    assert run["status"] == "completed" and run["output"] == 6
    assert run["metadata"][observe.TRACE_METADATA_KEY]["traceparent"].startswith(f"00-{TRACE_ID}-")

    run_span = named(spans, "run tools")
    assert format(run_span.context.trace_id, "032x") == TRACE_ID
    assert run_span.parent is not None and format(run_span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert run_span.attributes["runengine.run_id"] == run["run_id"]
    assert run_span.attributes["runengine.status"] == "completed"
    tool, step = named(spans, "tool add"), named(spans, "step double")
    for child in (tool, step):
        assert child.parent is not None and child.parent.span_id == run_span.context.span_id
        assert child.attributes["runengine.run_id"] == run["run_id"]
    types = {event["seq"]: event["type"] for event in log}
    assert types[tool.attributes["runengine.seq"]] == "tool.call"
    assert types[step.attributes["runengine.seq"]] == "step.completed"


@pytest.mark.anyio
async def test_a_failed_step_and_run_are_errors(spans: InMemorySpanExporter) -> None:
    async with agents(RunEngine("memory://")) as engine:
        state = await engine.execute("broken_tool")
    assert state.status.value == "failed"
    step, run_span = named(spans, "step fetch"), named(spans, "run broken_tool")
    assert step.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in step.events)
    assert run_span.status.status_code is StatusCode.ERROR
    assert run_span.attributes["runengine.status"] == "failed"
    assert run_span.parent is None  # nothing was traced where it was created: a trace of its own


@pytest.mark.anyio
async def test_without_an_observer_nothing_is_recorded() -> None:
    async with agents(RunEngine("memory://")) as engine:
        state = await engine.execute("tools")
    assert observe.TRACE_METADATA_KEY not in state.metadata


@pytest.mark.anyio
@pytest.mark.postgres
async def test_a_worker_continues_the_trace_of_the_request_that_queued_the_run(
    spans: InMemorySpanExporter, pg_schema_url: str
) -> None:
    """The run is queued by an engine without a worker, under a span; another engine's worker (no
    span of its own in context) executes it, and its run span is a child of the queuing span."""
    front = agents(RunEngine(pg_schema_url))  # enqueues only
    tracer = TracingObserver(spans_provider(spans)).tracer
    async with front, agents(RunEngine(pg_schema_url, worker=WorkerOptions(poll=0.2))) as back:
        with tracer.start_as_current_span("POST /runs") as request_span:
            pending = await front.execute("tools", mode="async")
        done = await back.wait(pending.run_id)
    assert done.status.value == "completed"
    run_span = named(spans, "run tools")
    assert run_span.context.trace_id == request_span.get_span_context().trace_id
    assert run_span.parent is not None and run_span.parent.span_id == request_span.get_span_context().span_id


def spans_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider
