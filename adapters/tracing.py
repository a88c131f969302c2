"""OpenTelemetry traces for the engine (`pip install '.[otel]'` from the clone): a span per run execution,
a child span per tool call and durable step.

    from runengine.adapters.tracing import install_tracing
    install_tracing()            # spans go to the global TracerProvider (configure it as usual)

The trace context of the request that creates a run (its `traceparent` header, or the span
current where `engine.execute` is called) is recorded in the run's metadata
(`observe.TRACE_METADATA_KEY`), so the run's span continues that trace in whichever process
executes it: a PostgreSQL worker elsewhere, or this one after a restart. Attributes:
`runengine.run_id`, `runengine.agent`, `runengine.attempt`, `runengine.seq` (the event recording
a tool call or step) and, at the run's end, `runengine.status`.

`runengine serve` and `runengine worker` install it when opentelemetry-api is importable; without
an SDK configured, the API's spans are no-ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from runengine import __version__, observe

#: What `request` and `run_span` give when there is no trace to continue nor a span to make
#: (reusable: nullcontext keeps no state).
_NOTHING = contextlib.nullcontext()
#: The run span of the execution this task belongs to: (run id, span).
_run_span: ContextVar[tuple[str, Span] | None] = ContextVar("runengine_run_span", default=None)


class TracingObserver(observe.Observer):
    """Spans for runs, tool calls and steps, through `tracer_provider` (default: the global one)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("runengine", __version__, tracer_provider=tracer_provider)
        self._own_provider = tracer_provider is not None

    def _no_span(self, carrier: Mapping[str, str] | None = None) -> bool:
        """No SDK has been set up (the global provider is still the API's proxy) and there is no trace
        to continue: the span would be the invalid one, so it is not made (a few µs per run and step)."""
        return not self._own_provider and not carrier and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def trace_context(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(carrier)
        return carrier

    def request(self, *, headers: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
        # A request with no trace to continue (most): one shared no-op, not a generator per request.
        return self._continued(headers) if "traceparent" in headers else _NOTHING

    @contextlib.contextmanager
    def _continued(self, headers: Mapping[str, str]) -> Iterator[None]:
        token = otel_context.attach(propagate.extract(dict(headers)))
        try:
            yield
        finally:
            otel_context.detach(token)

    def run_span(self, *, run_id: str, agent: str, attempt: int, carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
        if self._no_span(carrier) and not trace.get_current_span().get_span_context().is_valid:
            return _NOTHING  # no span would be made: one shared no-op, not a generator per run
        return self._run_span(run_id=run_id, agent=agent, attempt=attempt, carrier=carrier)

    @contextlib.contextmanager
    def _run_span(self, *, run_id: str, agent: str, attempt: int, carrier: Mapping[str, str]) -> Iterator[None]:
        parent = propagate.extract(dict(carrier)) if carrier else None
        with self.tracer.start_as_current_span(
            f"run {agent}",
            context=parent,
            kind=SpanKind.CONSUMER if carrier else SpanKind.INTERNAL,
            attributes={"runengine.run_id": run_id, "runengine.agent": agent, "runengine.attempt": attempt},
        ) as span:
            token = _run_span.set((run_id, span))
            try:
                yield
            finally:
                _run_span.reset(token)

    def step_span(self, *, kind: str, name: str, run_id: str, seq: int) -> contextlib.AbstractContextManager[Any]:
        if self._no_span() and not trace.get_current_span().get_span_context().is_valid:
            return _NOTHING
        return self.tracer.start_as_current_span(
            f"{kind} {name}",
            attributes={"runengine.run_id": run_id, "runengine.seq": seq, f"runengine.{kind}": name},
        )

    def run_ended(self, *, run_id: str, agent: str, status: str, seconds: float | None) -> None:
        current = _run_span.get()
        if current is None or current[0] != run_id:
            return  # ended from elsewhere (a cancel by another request): no span of ours to close
        span = current[1]
        span.set_attribute("runengine.status", status)
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, "the run failed"))


def install_tracing(tracer_provider: trace.TracerProvider | None = None) -> TracingObserver:
    """A TracingObserver, installed for every engine of this process (runengine.observe)."""
    tracer = TracingObserver(tracer_provider)
    observe.add(tracer)
    return tracer


__all__ = ["TracingObserver", "install_tracing"]
