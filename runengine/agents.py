"""The agents an engine can run: async functions registered by name."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import attrs

from .context import AgentFn
from .errors import AgentNotFound, InvalidRequest
from .flow import FlowSpec


@attrs.frozen(kw_only=True)
class AgentSpec:
    name: str
    fn: AgentFn
    description: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Change it when a change to the agent would not replay its runs in flight: they then
    #: fail `replay_divergence` at resume instead of replaying against the wrong code.
    version: str | None = None
    #: Concurrency, rate and debounce of its runs (runengine.flow); None: every run starts at once.
    flow: FlowSpec | None = None


class AgentRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, AgentSpec] = {}

    def add(self, spec: AgentSpec) -> None:
        if not spec.name or not isinstance(spec.name, str):
            raise InvalidRequest("an agent needs a non-empty name")
        if not inspect.iscoroutinefunction(spec.fn) and not inspect.iscoroutinefunction(
            getattr(spec.fn, "__call__", None)
        ):
            raise InvalidRequest(f"agent {spec.name!r} must be an async function taking a RunContext")
        if spec.name in self._specs:
            raise InvalidRequest(f"an agent named {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def get(self, name: str) -> AgentSpec:
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise AgentNotFound(str(name), list(self._specs))
        return spec

    def find(self, name: str) -> AgentSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)
