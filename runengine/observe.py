"""The instrumentation hook: what the engine reports to metrics and tracing, with no dependency.

The driver, writer, stores, streams and webhooks report through `observe.current`; by default
nothing listens and each report is one call to a no-op. An adapter subclasses `Observer`
(runengine.adapters.metrics: Prometheus; runengine.adapters.tracing: OpenTelemetry) and is
installed with `add`:

    from runengine import observe
    observe.add(MyObserver())            # every engine of this process reports to it
    observe.remove(my_observer)

Observers must not raise and must not block: they run inside the engine's hot paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Event
    from .state import RunState

#: The run.created metadata key holding the trace context of the request that created the run
#: (W3C `traceparent` / `tracestate`), so whichever process executes the run continues the trace.
TRACE_METADATA_KEY = "trace_context"


class Observer:
    """Every report the engine makes; each does nothing here. Override the ones you need."""

    # -- runs (in the process that executes them) --------------------------------------

    def run_started(self, *, agent: str, resumed: bool) -> None:
        """An execution began: run.started, or run.resumed for a run taken up again."""

    def run_ended(self, *, run_id: str, agent: str, status: str, seconds: float | None) -> None:
        """A run ended (status: completed, failed, cancelled); `seconds` since it was created."""

    def active_runs(self, delta: int) -> None:
        """Runs executing in this process went up or down by `delta`."""

    # -- the log -------------------------------------------------------------------------

    def events_appended(self, *, types: Mapping[str, int], seconds: float) -> None:
        """A batch of a run's events was committed: counts by event type, the append's wall time."""

    def store_commit(self, *, store: str, seconds: float) -> None:
        """A store committed one transaction (one or more appends) in `seconds`."""

    # -- delivery ------------------------------------------------------------------------

    def stream_opened(self) -> None:
        """An SSE subscriber connected (any surface)."""

    def stream_closed(self) -> None:
        """An SSE subscriber went away or its stream ended."""

    def webhook_delivered(self, *, ok: bool, attempts: int) -> None:
        """A webhook delivery ended, delivered or given up."""

    # -- a shared store's work queue ---------------------------------------------------------

    def queue_depth(self, *, queued: int, claimed: int) -> None:
        """The work queue's size when last looked at."""

    def leases_expired(self, count: int) -> None:
        """A worker took over `count` runs whose lease had expired (their worker was lost)."""

    # -- flow control (runengine.flow) -------------------------------------------------------

    def flow_depth(self, depths: Mapping[tuple[str, str | None], int]) -> None:
        """Pending runs held back by their agent's limits, per (agent, concurrency key); a scope
        left out has none."""

    def flow_waited(self, scope: tuple[str, str | None], seconds: float) -> None:
        """A run held back by its agent's limits started after `seconds` in line."""

    # -- tracing ---------------------------------------------------------------------------

    def trace_context(self) -> dict[str, str]:
        """The current trace context as headers (traceparent ...), to record on a new run."""
        return {}

    def request(self, *, headers: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
        """Around handling an HTTP request: continue the trace its headers carry."""
        return contextlib.nullcontext()

    def run_span(self, *, run_id: str, agent: str, attempt: int, carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
        """Around one execution of a run; `carrier`: the trace context recorded when it was created."""
        return contextlib.nullcontext()

    def step_span(self, *, kind: str, name: str, run_id: str, seq: int) -> contextlib.AbstractContextManager[Any]:
        """Around a tool call or a durable step of a run (`seq`: the event that records it)."""
        return contextlib.nullcontext()


class _Observers(Observer):
    """The installed observers as one: each report goes to every one of them. Each report's
    fan-out is made once, when they are installed, and kept as an attribute of its own: a report
    is then a plain attribute look-up (a `__getattribute__` in Python cost a call per report, ~9
    a sync run)."""

    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self.observers = observers
        for name in _REPORTS:
            setattr(self, name, _fan_out(name, observers))


def _fan_out(name: str, observers: tuple[Observer, ...]) -> Any:
    """One callable for report `name` calling it on each observer that does something with it."""
    base = getattr(Observer, name)
    methods = [method for method in (getattr(o, name) for o in observers) if getattr(method, "__func__", None) is not base]
    if len(methods) <= 1:  # one that listens (or none): called directly, no loop, no ExitStack
        return methods[0] if methods else getattr(Observer(), name)
    if name in _CONTEXTS:
        return lambda **kwargs: _all_contexts(methods, kwargs)
    if name == "trace_context":
        return lambda: {k: v for method in methods for k, v in method().items()}

    def report(*args: Any, **kwargs: Any) -> None:
        for method in methods:
            method(*args, **kwargs)

    return report


_CONTEXTS = frozenset({"request", "run_span", "step_span"})
#: Every report an Observer has (its public methods).
_REPORTS = tuple(name for name, value in vars(Observer).items() if not name.startswith("_") and callable(value))


@contextlib.contextmanager
def _all_contexts(methods: list[Any], kwargs: dict[str, Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for method in methods:
            stack.enter_context(method(**kwargs))
        yield


#: What the engine reports to: a no-op until an observer is added.
current: Observer = Observer()
_installed: tuple[Observer, ...] = ()


def add(observer: Observer) -> Observer:
    """Install `observer` for the whole process (once: adding it again changes nothing)."""
    global current, _installed
    if observer not in _installed:
        _installed = (*_installed, observer)
        current = _installed[0] if len(_installed) == 1 else _Observers(_installed)
    return observer


def remove(observer: Observer) -> None:
    """Uninstall `observer` (nothing happens if it is not installed)."""
    global current, _installed
    _installed = tuple(o for o in _installed if o is not observer)
    current = Observer() if not _installed else _installed[0] if len(_installed) == 1 else _Observers(_installed)


def installed() -> tuple[Observer, ...]:
    return _installed


def appended(batch: Sequence[Event], state: RunState | Callable[[], RunState], seconds: float) -> None:
    """Report a committed batch of one run's events (`state`: the run right after it, or how to
    get it: a writer's state is frozen only for a run's last batch, not for every batch)."""
    if not _installed:
        return  # nobody listens: not even the counting is done
    observer = current
    types: dict[str, int] = {}  # a plain count: Counter's constructor costs several Python calls a batch
    for event in batch:
        kind = event.type
        types[kind] = types.get(kind, 0) + 1
    observer.events_appended(types=types, seconds=seconds)
    last = batch[-1]
    if last.terminal:
        state = state() if callable(state) else state
        took = (state.finished_at - state.created_at).total_seconds() if state.finished_at and state.created_at else None
        observer.run_ended(run_id=state.run_id, agent=state.agent, status=state.status.value, seconds=took)


__all__ = ["Observer", "TRACE_METADATA_KEY", "add", "appended", "current", "installed", "remove"]
