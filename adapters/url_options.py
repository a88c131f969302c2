"""A store URL's query parameters as the store's options (`sqlite:///runs.db?flush_max=512`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from runengine.errors import InvalidRequest


def url_options(
    query: str, known: Mapping[str, Callable[[str], Any]], *, others: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The `known` options of a URL query, each converted by its type; InvalidRequest for a bad
    value, and for an unknown name unless `others` collects them (to pass on to a driver)."""
    found: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        kind = known.get(name)
        if kind is None:
            if others is None:
                raise InvalidRequest(f"unknown store URL option {name!r}; known: {', '.join(sorted(known))}")
            others.append((name, value))
            continue
        try:
            found[name] = kind(value)
        except ValueError:
            raise InvalidRequest(f"bad value for store URL option {name!r}: {value!r}") from None
    return found


__all__ = ["url_options"]
