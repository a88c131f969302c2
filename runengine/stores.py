"""Stores by URL: `memory://`, `sqlite:///runs.db`, `postgresql://...`.

The core does not import its adapters. Stores announce themselves as entry points
in the `runengine.stores` group (name = URL scheme, value = a callable taking the
URL), so a third-party store plugs in the same way the bundled ones do.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import InvalidRequest
from .ports import EventStore

GROUP = "runengine.stores"


def store_schemes() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def open_store(url: str, **options: Any) -> EventStore:
    """Build (not yet open) the store a URL names."""
    scheme, sep, _ = url.partition(":")
    if not sep or not scheme:
        raise InvalidRequest(f"not a store URL: {url!r} (try sqlite:///runengine.db or memory://)")
    for ep in entry_points(group=GROUP):
        if ep.name == scheme:
            factory = ep.load()
            store: EventStore = factory(url, **options)
            return store
    raise InvalidRequest(f"no store for scheme {scheme!r}; known: {', '.join(store_schemes())}")
