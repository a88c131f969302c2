"""Run logs as fixtures: load a JSON-lines log (one wire-format event per line, as
`runengine export` writes it) into validated events.

    from runengine.testing.logs import load_log
    events = load_log(Path(__file__).parent / "fixtures" / "pizza.jsonl")
    state = runengine.fold(events)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from runengine.events import Event
from runengine.logfile import dump_log, parse_log


def load_log(source: str | os.PathLike[str] | Iterable[str]) -> list[Event]:
    """The events of a JSON-lines log: a file path, or the lines themselves. The log is checked by
    folding it with the reducer (one run, seq 1.. without gaps, allowed transitions); a bad line
    raises InvalidRequest naming it."""
    if isinstance(source, (str, os.PathLike)):
        with Path(source).open(encoding="utf-8") as lines:
            return parse_log(lines)
    return parse_log(source)


def save_log(events: Iterable[Event], path: str | os.PathLike[str]) -> None:
    """Write `events` as a JSON-lines log that `load_log` (and `runengine import`) reads."""
    Path(path).write_text(dump_log(events), encoding="utf-8")


__all__ = ["load_log", "save_log"]
