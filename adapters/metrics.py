"""Prometheus metrics for the engine (`pip install '.[metrics]'` from the clone): an observer and `/metrics`.

    observer = install_metrics()                       # reports of every engine in this process
    add_metrics_route(router, engine, observer)        # GET /metrics, text exposition format

`runengine serve` does both when prometheus-client is installed (`--no-metrics` to leave it
out). The metrics live in the observer's own registry; pass `registry=prometheus_client.REGISTRY`
to expose them beside the application's others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runengine import observe
from runengine.engine import RunEngine
from runengine.http.core import Request, Response
from runengine.http.router import Router

#: Histogram buckets (seconds) for appends and commits: from a memory append to a slow disk.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Histogram buckets (seconds) for whole runs: a chat turn to an hours-long job.
RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0)


class PrometheusObserver(observe.Observer):
    """The engine's reports as Prometheus metrics, all named `runengine_*`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: Labelled children of the metrics the engine reports per run or per commit (`_child`).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.runs_started_metric = Counter(
            "runengine_runs_started", "Executions begun, by agent; resumed: a run taken up again.", ["agent", "resumed"], registry=r
        )
        self.runs_ended_metric = Counter("runengine_runs_ended", "Runs ended, by agent and final status.", ["agent", "status"], registry=r)
        self.run_duration_metric = Histogram(
            "runengine_run_duration_seconds", "From run.created to the run's end.", ["agent", "status"], buckets=RUN_BUCKETS, registry=r
        )
        self.runs_active_metric = Gauge("runengine_runs_active", "Runs executing in this process.", registry=r)
        self.events_appended_metric = Counter("runengine_events_appended", "Events committed, by type.", ["type"], registry=r)
        self.append_seconds_metric = Histogram(
            "runengine_append_seconds", "A batch of a run's events, from append to committed.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.commit_seconds_metric = Histogram(
            "runengine_store_commit_seconds", "One store transaction (group commit).", ["store"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.sse_subscribers_metric = Gauge("runengine_sse_subscribers", "Open SSE streams, every surface.", registry=r)
        self.queue_runs_metric = Gauge(
            "runengine_queue_runs", "The work queue (PostgreSQL): queued or claimed runs, at the last scrape.", ["state"], registry=r
        )
        self.lease_expiries_metric = Counter(
            "runengine_lease_expiries", "Runs taken over from a worker whose lease had expired.", registry=r
        )
        self.flow_waiting_metric = Gauge(
            "runengine_flow_waiting_runs", "Runs in line to start, by agent and concurrency key (\"\": none): held back"
            " by flow control; on PostgreSQL every queued run not yet claimed, at the last scrape.", ["agent", "key"], registry=r,
        )
        self.flow_wait_metric = Histogram(
            "runengine_flow_wait_seconds", "How long a run held back by flow control waited in line before it started.",
            ["agent", "key"], buckets=RUN_BUCKETS, registry=r,
        )
        self._flow_scopes: set[tuple[str, str]] = set()
        self.webhook_deliveries_metric = Counter(
            "runengine_webhook_deliveries", "Webhook deliveries ended, by outcome.", ["outcome"], registry=r
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: prometheus_client checks and locks on every `labels()`
        (~3 µs), and the engine reports several per run (issue 22); the child is the same object."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def run_started(self, *, agent: str, resumed: bool) -> None:
        self._child(self.runs_started_metric, agent, "true" if resumed else "false").inc()

    def run_ended(self, *, run_id: str, agent: str, status: str, seconds: float | None) -> None:
        self._child(self.runs_ended_metric, agent, status).inc()
        if seconds is not None:
            self._child(self.run_duration_metric, agent, status).observe(seconds)

    def active_runs(self, delta: int) -> None:
        self.runs_active_metric.inc(delta)

    def events_appended(self, *, types: Mapping[str, int], seconds: float) -> None:
        for kind, count in types.items():
            self._child(self.events_appended_metric, kind).inc(count)
        self.append_seconds_metric.observe(seconds)

    def store_commit(self, *, store: str, seconds: float) -> None:
        self._child(self.commit_seconds_metric, store).observe(seconds)

    def stream_opened(self) -> None:
        self.sse_subscribers_metric.inc()

    def stream_closed(self) -> None:
        self.sse_subscribers_metric.dec()

    def webhook_delivered(self, *, ok: bool, attempts: int) -> None:
        self.webhook_deliveries_metric.labels("delivered" if ok else "failed").inc()

    def queue_depth(self, *, queued: int, claimed: int) -> None:
        self.queue_runs_metric.labels("queued").set(queued)
        self.queue_runs_metric.labels("claimed").set(claimed)

    def leases_expired(self, count: int) -> None:
        self.lease_expiries_metric.inc(count)

    def flow_depth(self, depths: Mapping[tuple[str, str | None], int]) -> None:
        now = {(agent, key or ""): count for (agent, key), count in depths.items()}
        for gone in self._flow_scopes - now.keys():
            self.flow_waiting_metric.labels(*gone).set(0)
        for labels, count in now.items():
            self.flow_waiting_metric.labels(*labels).set(count)
        self._flow_scopes = set(now)

    def flow_waited(self, scope: tuple[str, str | None], seconds: float) -> None:
        self.flow_wait_metric.labels(scope[0], scope[1] or "").observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def install_metrics(registry: CollectorRegistry | None = None) -> PrometheusObserver:
    """A PrometheusObserver, installed for every engine of this process (runengine.observe)."""
    return observe.add(PrometheusObserver(registry))  # type: ignore[return-value]


def add_metrics_route(router: Router, engine: RunEngine, observer: PrometheusObserver, path: str = "/metrics") -> None:
    """GET `path`: the metrics in Prometheus' text format (the work queue is measured per scrape)."""

    async def metrics(request: Request) -> Response:
        depth = getattr(engine.queue, "depth", None)
        if depth is not None and engine.running:
            await depth()  # reported to the observers, this one included
        return Response(status=200, headers=(("content-type", CONTENT_TYPE_LATEST),), body=observer.exposition())

    router.route("GET", path, metrics)


__all__ = ["PrometheusObserver", "add_metrics_route", "install_metrics"]
